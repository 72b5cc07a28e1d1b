//! `turnpike-bench`: the tools behind `bench/run.sh`.
//!
//! - `upstream`: the small API every scenario proxies to (JSON, SSE, a request counter);
//! - `tokens`: pre-paid credentials minted with the gateway's master key, for the load generator;
//! - `startup`: time from process start to the first served request, and resident memory idle
//!   and with many open connections;
//! - `sse`: per-event delay of a server-sent-events stream;
//! - `wallet`: what the agent's wallet (ledger and budget) adds to a paid fetch, and ledger
//!   reservations per second under 100 concurrent fetches;
//! - `served-check`: after a paid-call run, that no call was served twice or unpaid;
//! - `report`: the markdown results table, with ratios and targets.

mod fill;
mod probe;
mod report;
mod served;
mod sse;
mod tokens;
mod upstream;
mod wallet;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Turnpike's benchmark tools (see bench/README.md).
#[derive(Parser)]
#[command(name = "turnpike-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the benchmark upstream.
    Upstream {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:18000")]
        listen: SocketAddr,
        /// Runtime worker threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Mint pre-paid credentials (`Authorization` values), split over several files.
    Tokens(tokens::Args),
    /// Measure start-up time and resident memory of a `turnpike serve` process.
    Startup(probe::Args),
    /// Measure per-event delay of an SSE stream.
    Sse(sse::Args),
    /// Measure what the ledger and budget add to a paid fetch, and reservations per second.
    Wallet(wallet::Args),
    /// Add used single-call tokens to a gateway's store (to measure charging on a grown store).
    Fill(fill::Args),
    /// Check a paid-call run: no token used beyond its calls, every served call charged once.
    ServedCheck(served::Args),
    /// Write the markdown results table from a results directory.
    Report {
        /// Directory with the scenario JSON files.
        #[arg(long)]
        dir: PathBuf,
        /// Markdown file to write.
        #[arg(long)]
        out: PathBuf,
        /// Directory of criterion results (target/criterion), for the micro-benchmarks.
        #[arg(long)]
        criterion: Option<PathBuf>,
        /// A previous run's results.json, shown as the "before" column.
        #[arg(long)]
        baseline: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Upstream { listen, threads } => upstream::run(listen, threads),
        Command::Tokens(args) => tokens::run(&args),
        Command::Startup(args) => probe::run(&args),
        Command::Sse(args) => sse::run(&args),
        Command::Wallet(args) => wallet::run(&args),
        Command::ServedCheck(args) => served::run(&args),
        Command::Fill(args) => fill::run(&args),
        Command::Report {
            dir,
            out,
            criterion,
            baseline,
        } => report::run(&dir, &out, criterion.as_deref(), baseline.as_deref()),
    }
}

/// Writes `value` as pretty JSON to `path` and prints it.
fn write_json(path: &std::path::Path, value: &serde_json::Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, &text)?;
    println!("{text}");
    Ok(())
}

/// Current time in nanoseconds since the Unix epoch.
fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The `q`-quantile (0..=1) of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}
