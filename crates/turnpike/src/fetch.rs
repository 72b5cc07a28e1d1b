//! `turnpike fetch`: curl-like, paying L402 challenges (and x402 ones, from a wallet with an
//! `[x402]` key) within a limit.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use http::Method;
use turnpike_client::ledger::Ledger;
use turnpike_client::spend::{Accounting, Quote};
use turnpike_client::{ClientError, Event, FetchRequest, L402Client, Quoted};
use turnpike_l402::Sats;
use turnpike_lightning::PaymentBackend;
use turnpike_lightning::config::BackendConfig;
use turnpike_lightning::dev_wallet::DevPayWallet;

/// Exit code when a payment was refused (budget, approval, per-call limit).
const EXIT_REFUSED: u8 = 1;

/// TEST ONLY: when set to a file path, `turnpike fetch` writes that file right after a payment
/// succeeded and before it records it, then waits, so a test can kill the process there.
pub const TEST_HOLD_AFTER_PAYMENT: &str = "TURNPIKE_TEST_HOLD_AFTER_PAYMENT";

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
    /// Neither reuse nor keep tokens (payments are still budgeted and recorded).
    #[arg(long)]
    no_cache: bool,
    /// Show what would be paid, and whether the budget allows it; pay nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON object: status, headers, body, payment.
    #[arg(long)]
    json: bool,
    /// The URL to fetch.
    url: String,
}

/// The paying backend, the accounting and the x402 side of wallet `name`.
pub async fn wallet_named(
    name: &str,
    url: &reqwest::Url,
    file: Option<&std::path::Path>,
) -> anyhow::Result<(
    Arc<dyn PaymentBackend>,
    Accounting,
    crate::wallets::WalletEntry,
)> {
    let entry = crate::wallets::wallet_entry(name, file)?;
    let backend: Arc<dyn PaymentBackend> = match entry.backend {
        Some(BackendConfig::Dev(_)) => {
            Arc::new(DevPayWallet::for_origin(url).context("building the dev wallet")?)
        }
        Some(_) => crate::wallets::connect_entry(name, &entry)?,
        None => Arc::new(NoWallet::X402_ONLY),
    };
    let accounting = accounting_for(name, &entry).await?;
    Ok((backend, accounting, entry))
}

/// The accounting of wallet `name`: the default ledger, its budget and fee reserve.
pub async fn accounting_for(
    name: &str,
    entry: &crate::wallets::WalletEntry,
) -> anyhow::Result<Accounting> {
    let ledger = Ledger::open_default()
        .await
        .context("opening the ledger (set TURNPIKE_DATA_DIR to choose where)")?;
    let max_fee = Sats(entry.max_fee_sats())
        .to_msat()
        .context("max_fee_sats is too large")?;
    Ok(Accounting::new(ledger, name, entry.budget, max_fee))
}

/// Asks on the terminal whether a payment above `approve_above` may go ahead; refuses when
/// standard input is not a terminal.
fn ask_on_terminal(quote: &Quote) -> bool {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        eprintln!(
            "turnpike: paying {} for {} needs approval, and there is no terminal to ask",
            quote.price(),
            quote.url
        );
        return false;
    }
    let mut question = quote.question();
    if let Some(first) = question.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    eprint!("{question}? [y/N] ");
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes")
}

/// A Lightning wallet that refuses to pay: used when no `--wallet` is given, and for a wallet
/// that pays x402 only.
pub(crate) struct NoWallet {
    why: &'static str,
}

impl NoWallet {
    /// No `--wallet` given.
    const NONE_GIVEN: NoWallet = NoWallet {
        why: "no wallet configured: pass --wallet dev (or another wallet) to pay",
    };
    /// A wallet without a Lightning backend.
    pub(crate) const X402_ONLY: NoWallet = NoWallet {
        why: "this wallet has no Lightning backend (it pays x402 only)",
    };
}

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
        Err(turnpike_lightning::BackendError::Rejected(self.why.into()))
    }
    async fn balance(&self) -> Result<turnpike_l402::Msat, turnpike_lightning::BackendError> {
        Err(turnpike_lightning::BackendError::Unsupported(self.why))
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
    let mut client = match &args.wallet {
        Some(name) => {
            let (wallet, mut accounting, entry) =
                wallet_named(name, &url, args.wallet_config.as_deref()).await?;
            accounting.cache = !args.no_cache;
            accounting.approver = Some(Arc::new(|quote: Quote| {
                Box::pin(async move {
                    tokio::task::spawn_blocking(move || ask_on_terminal(&quote))
                        .await
                        .unwrap_or(false)
                })
            }));
            if let Some(marker) = std::env::var_os(TEST_HOLD_AFTER_PAYMENT) {
                accounting.after_payment = Some(Arc::new(move || {
                    let _ = std::fs::write(&marker, b"paid");
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(60));
                    }
                }));
            }
            let client = L402Client::new(wallet, Sats(args.max_sats))?
                .with_accounting(accounting)
                .with_x402(entry.x402_wallet(name)?, entry.prefer());
            match entry.backend {
                Some(_) => client,
                None => client.without_lightning(),
            }
        }
        None => L402Client::new(Arc::new(NoWallet::NONE_GIVEN), Sats(args.max_sats))?,
    };
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
            Event::X402Paying {
                asset,
                amount_units,
                pay_to,
                resent,
            } => {
                let what = if *resent {
                    "sending again the x402 payment signed earlier for this challenge"
                } else {
                    "paying over x402"
                };
                eprintln!("* {what}: {amount_units} base units of {asset} to {pay_to}");
            }
            Event::RailCannotPay { rail, reason } => {
                eprintln!("* the {rail} rail cannot pay: {reason}");
            }
            Event::X402Answered {
                settled,
                transaction,
            } => {
                let tx = transaction.as_deref().unwrap_or("not reported");
                eprintln!("* x402 settled: {settled}, transaction {tx}");
            }
        });
    }
    if args.verbose {
        eprintln!("> {method} {url}");
    }
    let request = FetchRequest {
        method,
        url,
        headers,
        body,
    };
    if args.dry_run {
        return dry_run(&client, request, args.json).await;
    }
    let fetched = match client.fetch(request).await {
        Ok(f) => f,
        Err(e) => return refused_or_failed(e, args.json),
    };
    if let Some(x) = &fetched.x402 {
        note_unsettled(x);
    }
    if args.json {
        return print_json(fetched).await;
    }
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
    if let Some(x) = &fetched.x402
        && args.verbose
    {
        eprintln!(
            "* x402: {} base units of {} (ledger row {}, {:?})",
            x.amount_units, x.asset, x.ledger_id, x.state
        );
    }
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

/// Says on standard error what became of an x402 payment that did not settle.
fn note_unsettled(x: &turnpike_client::x402pay::X402Receipt) {
    use turnpike_client::ledger::PaymentState;
    match x.state {
        PaymentState::Paid => {}
        PaymentState::Failed => eprintln!(
            "turnpike: the server reported that the x402 payment did not settle (ledger row {}): \
             released, nothing moved",
            x.ledger_id
        ),
        PaymentState::Reserved | PaymentState::Unknown => eprintln!(
            "turnpike: the server did not report settling the x402 payment (ledger row {}); it \
             stays charged to the budget until its outcome is known, and a fetch of the same \
             challenge sends the same authorisation again rather than a new one",
            x.ledger_id
        ),
    }
}

/// Prints a refusal (exit 3) or returns other errors.
fn refused_or_failed(e: ClientError, json: bool) -> anyhow::Result<ExitCode> {
    let refused = e.is_refusal();
    if !refused {
        return Err(e.into());
    }
    if json {
        let detail = match &e {
            ClientError::OverBudget(r) => serde_json::to_value(r).unwrap_or_default(),
            ClientError::OverTokenBudget(r) => serde_json::to_value(r).unwrap_or_default(),
            _ => serde_json::Value::Null,
        };
        println!(
            "{}",
            serde_json::json!({ "error": e.to_string(), "refusal": detail, "paid": false })
        );
    }
    eprintln!("turnpike: {e}");
    Ok(ExitCode::from(EXIT_REFUSED))
}

async fn dry_run(client: &L402Client, req: FetchRequest, json: bool) -> anyhow::Result<ExitCode> {
    let quoted = match client.quote(req).await {
        Ok(q) => q,
        Err(e) => return refused_or_failed(e, json),
    };
    match quoted {
        Quoted::Free(resp) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "status": resp.status().as_u16(), "payment_required": false })
                );
            } else {
                eprintln!("turnpike: no payment asked (HTTP {})", resp.status());
            }
        }
        Quoted::Priced(q) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "payment_required": true, "quote": q })
                );
            } else {
                println!(
                    "would pay {} sats (up to {} with the fee reserve) for {}{}; payment hash {}",
                    turnpike_l402::Msat(q.amount_msat).to_sats_ceil().0,
                    turnpike_l402::Msat(q.reserve_msat).to_sats_ceil().0,
                    q.url,
                    q.service
                        .as_deref()
                        .map(|s| format!(" (service {s})"))
                        .unwrap_or_default(),
                    q.payment_hash
                );
                match &q.refusal {
                    Some(r) => println!("the budget would refuse it: {r}"),
                    None if q.needs_approval => println!("it would need approval (approve_above)"),
                    None => println!("the budget allows it; nothing was paid (--dry-run)"),
                }
            }
        }
        Quoted::X402(q) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "payment_required": true, "x402_quote": q })
                );
            } else {
                println!(
                    "would pay {} base units of {} over x402 to {} for {}",
                    q.amount_units, q.asset, q.pay_to, q.url
                );
                match &q.refusal {
                    Some(r) => println!("the budget would refuse it: {r}"),
                    None if q.needs_approval => println!("it would need approval (approve_above)"),
                    None => println!("the budget allows it; nothing was signed (--dry-run)"),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn print_json(fetched: turnpike_client::Fetched) -> anyhow::Result<ExitCode> {
    use base64::Engine as _;
    let response = fetched.response;
    let status = response.status();
    let headers: serde_json::Map<String, serde_json::Value> = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                serde_json::Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let bytes = response
        .bytes()
        .await
        .context("reading the response body")?;
    let (body, encoding) = match std::str::from_utf8(&bytes) {
        Ok(text) => (text.to_owned(), "text"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(&bytes),
            "base64",
        ),
    };
    let payment = fetched.receipt.map(|r| {
        serde_json::json!({
            "amount_sats": r.amount.to_sats_ceil().0,
            "amount_msat": r.amount.0,
            "fee_msat": r.fee.0,
            "payment_hash": r.payment_hash.to_hex(),
        })
    });
    println!(
        "{}",
        serde_json::json!({
            "status": status.as_u16(),
            "headers": headers,
            "body": body,
            "body_encoding": encoding,
            "payment": payment,
            "x402_payment": fetched.x402,
            "reused_token": fetched.reused_token,
        })
    );
    if status.is_client_error() || status.is_server_error() {
        return Ok(ExitCode::from(EXIT_HTTP_ERROR));
    }
    Ok(ExitCode::SUCCESS)
}
