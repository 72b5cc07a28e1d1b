//! `turnpike fetch`: curl-like, paying L402 challenges within a limit.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use http::Method;
use turnpike_client::{Event, FetchRequest, L402Client};
use turnpike_l402::Sats;
use turnpike_lightning::PaymentBackend;
use turnpike_lightning::dev_wallet::DevPayWallet;

/// Exit code for an HTTP error status (as curl's `--fail`).
const EXIT_HTTP_ERROR: u8 = 22;

/// Arguments of `turnpike fetch`.
#[derive(Args)]
pub struct FetchArgs {
    /// HTTP method (default GET, or POST with -d).
    #[arg(short = 'X', long = "request")]
    method: Option<String>,
    /// Extra header, 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Request body; '@FILE' reads a file, '@-' standard input.
    #[arg(short = 'd', long = "data")]
    data: Option<String>,
    /// Most this command may pay for one call, in sats.
    #[arg(long, default_value_t = 100)]
    max_sats: u64,
    /// Wallet that pays: 'dev' pays through the gateway's dev endpoint (no real money); any
    /// other name is looked up in the wallet file.
    #[arg(long)]
    wallet: Option<String>,
    /// The wallet file (default: $TURNPIKE_WALLETS, else ~/.config/turnpike/wallets.toml).
    #[arg(long)]
    wallet_config: Option<std::path::PathBuf>,
    /// Print the handshake (challenge, payment, retry) to standard error.
    #[arg(short, long)]
    pub verbose: bool,
    /// The URL to fetch.
    url: String,
}

fn wallet_named(
    name: &str,
    url: &reqwest::Url,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Arc<dyn PaymentBackend>> {
    if name == "dev" {
        return Ok(Arc::new(
            DevPayWallet::for_origin(url).context("building the dev wallet")?,
        ));
    }
    let backend = crate::wallets::connect(name, file)?;
    Ok(backend)
}

/// A wallet that refuses to pay: used when no `--wallet` is given.
struct NoWallet;

#[async_trait::async_trait]
impl PaymentBackend for NoWallet {
    fn name(&self) -> &'static str {
        "none"
    }
    async fn pay_invoice(
        &self,
        _bolt11: &str,
        _max_fee: turnpike_l402::Msat,
    ) -> Result<turnpike_lightning::Payment, turnpike_lightning::BackendError> {
        Err(turnpike_lightning::BackendError::Rejected(
            "no wallet configured: pass --wallet dev (or another wallet) to pay".into(),
        ))
    }
    async fn balance(&self) -> Result<turnpike_l402::Msat, turnpike_lightning::BackendError> {
        Err(turnpike_lightning::BackendError::Unsupported(
            "no wallet configured",
        ))
    }
    async fn lookup_payment(
        &self,
        _hash: &turnpike_l402::PaymentHash,
    ) -> Result<turnpike_lightning::OutgoingState, turnpike_lightning::BackendError> {
        // This wallet never pays, so it never sent anything.
        Ok(turnpike_lightning::OutgoingState::Unknown)
    }
}

fn read_body(data: &str) -> anyhow::Result<bytes::Bytes> {
    if data == "@-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .context("reading the body from standard input")?;
        Ok(buf.into())
    } else if let Some(path) = data.strip_prefix('@') {
        Ok(std::fs::read(path)
            .with_context(|| format!("reading the body from {path}"))?
            .into())
    } else {
        Ok(bytes::Bytes::copy_from_slice(data.as_bytes()))
    }
}

/// Runs `turnpike fetch`.
pub async fn run(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let url: reqwest::Url = args
        .url
        .parse()
        .with_context(|| format!("invalid URL {:?}", args.url))?;
    let body = args.data.as_deref().map(read_body).transpose()?;
    let method = match &args.method {
        Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .with_context(|| format!("invalid method {m:?}"))?,
        None if body.is_some() => Method::POST,
        None => Method::GET,
    };
    let headers = turnpike_client::parse_header_lines(args.headers.iter().map(String::as_str))
        .map_err(anyhow::Error::msg)?;
    let wallet: Arc<dyn PaymentBackend> = match &args.wallet {
        Some(name) => wallet_named(name, &url, args.wallet_config.as_deref())?,
        None => Arc::new(NoWallet),
    };
    let mut client = L402Client::new(wallet, Sats(args.max_sats))?;
    if args.verbose {
        client = client.on_event(|event| match event {
            Event::Challenged { invoice, macaroon } => {
                eprintln!("< 402 Payment Required");
                eprintln!(
                    "* challenge: invoice for {} ({}), payment hash {}, expires at {}",
                    invoice
                        .amount()
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| "no amount".into()),
                    invoice.network(),
                    invoice.payment_hash(),
                    invoice.expires_at(),
                );
                eprintln!("* macaroon: {macaroon}");
            }
            Event::Paid {
                payment_hash,
                preimage,
                amount,
                fee,
            } => {
                eprintln!("* paid {amount} (fee {fee}) for {payment_hash}; preimage {preimage}");
            }
            Event::Retrying { authorization } => {
                eprintln!("> Authorization: {authorization}");
            }
        });
    }
    if args.verbose {
        eprintln!("> {method} {url}");
    }
    let fetched = client
        .fetch(FetchRequest {
            method,
            url,
            headers,
            body,
        })
        .await?;
    let mut response = fetched.response;
    let status = response.status();
    if args.verbose {
        eprintln!("< {:?} {}", response.version(), status);
        for (name, value) in response.headers() {
            eprintln!("< {}: {}", name, String::from_utf8_lossy(value.as_bytes()));
        }
        eprintln!("<");
    }
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = response
        .chunk()
        .await
        .context("reading the response body")?
    {
        out.write_all(&chunk)?;
        out.flush()?;
    }
    drop(out);
    if let Some(receipt) = fetched.receipt
        && args.verbose
    {
        eprintln!(
            "* paid {} sats in all; credential reusable while the token has calls left",
            receipt.amount.to_sats_ceil().0
        );
    }
    if status.is_client_error() || status.is_server_error() {
        eprintln!("turnpike: HTTP {status}");
        return Ok(ExitCode::from(EXIT_HTTP_ERROR));
    }
    Ok(ExitCode::SUCCESS)
}
