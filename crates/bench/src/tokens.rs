//! Pre-paid credentials for the load generator: each is a token the gateway would have minted
//! for a paid invoice (same master key, service and caveats), with its preimage.

use std::io::Write;
use std::path::PathBuf;

use turnpike_l402::credential::Credential;
use turnpike_l402::root_key::MasterKey;
use turnpike_l402::token::{MintRequest, Minter};
use turnpike_l402::{Preimage, TokenId};

/// Arguments of `turnpike-bench tokens`.
#[derive(clap::Args)]
pub struct Args {
    /// The gateway's master key (64 hex characters).
    #[arg(long, env = "TURNPIKE_BENCH_MASTER_KEY")]
    master_key: String,
    /// Service name the tokens are for.
    #[arg(long)]
    service: String,
    /// Calls each token buys; 0 for a time pass.
    #[arg(long, default_value_t = 1)]
    calls: u64,
    /// Seconds each token stays valid (a time pass needs it).
    #[arg(long)]
    valid_secs: Option<u64>,
    /// How many tokens.
    #[arg(long)]
    count: usize,
    /// How many files to spread them over (one per load-generator thread).
    #[arg(long, default_value_t = 1)]
    files: usize,
    /// Files are written as PREFIX.0, PREFIX.1, …
    #[arg(long)]
    out: PathBuf,
}

/// Writes the credentials, one `Authorization` value per line.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let master = MasterKey::from_hex(args.master_key.trim())
        .map_err(|_| anyhow::anyhow!("--master-key must be 64 hex characters"))?;
    let minter = Minter::new(master);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let files = args.files.max(1);
    let mut writers = (0..files)
        .map(|i| {
            let path = format!("{}.{i}", args.out.display());
            std::fs::File::create(&path).map(std::io::BufWriter::new)
        })
        .collect::<Result<Vec<_>, _>>()?;
    for n in 0..args.count {
        let preimage = Preimage::random();
        let req = MintRequest {
            payment_hash: preimage.payment_hash(),
            service: &args.service,
            calls: (args.calls > 0).then_some(args.calls),
            valid_until: args.valid_secs.map(|s| now + s),
            capabilities: &[],
            max_price_msat: None,
        };
        let macaroon = minter.mint_with_token_id(&req, TokenId::time_ordered());
        let value = Credential { macaroon, preimage }.authorization_value();
        writeln!(writers[n % files], "{value}")?;
    }
    for w in &mut writers {
        w.flush()?;
    }
    eprintln!(
        "{} tokens for {} in {files} file(s)",
        args.count, args.service
    );
    Ok(())
}
