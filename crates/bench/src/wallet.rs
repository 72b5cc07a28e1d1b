//! What the agent's wallet (ledger and budget) adds to a paid fetch, against a running gateway
//! with the dev backend:
//!
//! - the latency of one paid fetch (402, dev payment, retry) without and with accounting, in
//!   interleaved pairs so that both see the same conditions; the difference is the ledger and
//!   budget (reservation in a `BEGIN IMMEDIATE` transaction, settlement, token bookkeeping);
//! - paid fetches per second with 100 concurrent fetchers sharing one ledger (each one
//!   reservation), checked against the ledger afterwards;
//! - the ledger alone: reserve + settle per second with 100 concurrent callers, no network.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use turnpike_client::budget::{Budget, Period, Window};
use turnpike_client::ledger::{Ledger, NewPayment, PaymentState, Reservation, now_unix};
use turnpike_client::spend::Accounting;
use turnpike_client::{FetchRequest, L402Client};
use turnpike_l402::{Msat, Preimage, Sats};
use turnpike_lightning::DevPayWallet;

/// Arguments of `turnpike-bench wallet`.
#[derive(clap::Args)]
pub struct Args {
    /// A paid single-call URL on a gateway with the dev backend.
    #[arg(long)]
    url: reqwest::Url,
    /// An empty directory for the ledgers.
    #[arg(long)]
    data_dir: PathBuf,
    /// Sequential paid fetches of each kind (without and with accounting).
    #[arg(long, default_value_t = 200)]
    fetches: usize,
    /// Concurrent fetchers (and ledger callers).
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Seconds of each concurrent run.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// JSON file to write.
    #[arg(long)]
    out: PathBuf,
}

/// Limits that never refuse in this run but are all checked on every payment.
fn budget() -> Budget {
    Budget {
        max_per_call: Some(1_000),
        per_host: Some(Window {
            sats: 1_000_000_000,
            per: Period::Day,
        }),
        per_period: Some(Window {
            sats: 1_000_000_000,
            per: Period::Day,
        }),
        total: Some(1_000_000_000),
        approve_above: None,
    }
}

async fn paid_fetch(client: &L402Client, url: &reqwest::Url) -> anyhow::Result<()> {
    let fetched = client.fetch(FetchRequest::get(url.clone())).await?;
    let status = fetched.response.status();
    fetched.response.bytes().await?;
    if !status.is_success() || fetched.receipt.is_none() {
        bail!("expected a paid 2xx, got {status}");
    }
    Ok(())
}

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    crate::quantile(&v, 0.5)
}

async fn bench(args: &Args) -> anyhow::Result<serde_json::Value> {
    let wallet = Arc::new(DevPayWallet::for_origin(&args.url).context("dev wallet")?);
    let plain = L402Client::new(wallet.clone(), Sats(1_000))?;
    let ledger = Ledger::open_in(&args.data_dir.join("sequential")).await?;
    let accounted = L402Client::new(wallet.clone(), Sats(1_000))?.with_accounting(Accounting::new(
        ledger.clone(),
        "bench",
        budget(),
        Msat::ZERO,
    ));
    // Interleaved pairs, after one warm-up each.
    paid_fetch(&plain, &args.url).await?;
    paid_fetch(&accounted, &args.url).await?;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..args.fetches {
        let t = Instant::now();
        paid_fetch(&plain, &args.url).await?;
        without.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        paid_fetch(&accounted, &args.url).await?;
        with.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (without, with) = (median_ms(without), median_ms(with));

    // 100 concurrent fetchers on one ledger.
    let ledger = Ledger::open_in(&args.data_dir.join("concurrent")).await?;
    let client = Arc::new(
        L402Client::new(wallet, Sats(1_000))?.with_accounting(Accounting::new(
            ledger.clone(),
            "bench",
            budget(),
            Msat::ZERO,
        )),
    );
    let url = args.url.clone();
    let (fetched, elapsed) = concurrently(args.concurrency, args.secs, move || {
        let (client, url) = (client.clone(), url.clone());
        async move { paid_fetch(&client, &url).await }
    })
    .await?;
    let rows = ledger.payments(Some("bench"), None).await?;
    let paid = rows
        .iter()
        .filter(|r| r.state == PaymentState::Paid)
        .count() as u64;
    if paid != fetched || rows.len() as u64 != fetched {
        bail!(
            "{fetched} paid fetches but {paid} paid ledger rows of {}",
            rows.len()
        );
    }

    // The ledger alone.
    let ledger = Ledger::open_in(&args.data_dir.join("ledger-only")).await?;
    let (reservations, ledger_elapsed) = concurrently(args.concurrency, args.secs, move || {
        let ledger = ledger.clone();
        async move { reserve_and_settle(&ledger).await }
    })
    .await?;

    Ok(serde_json::json!({
        "fetches": args.fetches,
        "fetch_ms_p50_without": without,
        "fetch_ms_p50_with": with,
        "added_ms_p50": with - without,
        "concurrency": args.concurrency,
        "concurrent_paid_fetches": fetched,
        "concurrent_paid_fetches_per_s": fetched as f64 / elapsed,
        "ledger_reservations": reservations,
        "ledger_reservations_per_s": reservations as f64 / ledger_elapsed,
    }))
}

/// Runs `op` again and again from `n` tasks for `secs` seconds; returns how many completed and
/// the seconds it took (until the last task finished).
async fn concurrently<F, Fut>(n: usize, secs: u64, op: F) -> anyhow::Result<(u64, f64)>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (op, done) = (op.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                op().await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((
        done.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
    ))
}

/// One reservation of a fresh payment hash within the budget, then its settlement.
async fn reserve_and_settle(ledger: &Ledger) -> anyhow::Result<()> {
    let preimage = Preimage::random();
    let new = NewPayment {
        wallet: "bench",
        url: "http://127.0.0.1/call/x",
        origin: "http://127.0.0.1",
        service: Some("call"),
        invoice: "lnbcrt10n1bench",
        macaroon: "bench",
        payment_hash: preimage.payment_hash(),
        amount: Msat(1_000),
        reserve: Msat(1_000),
    };
    match ledger.reserve(&new, &budget(), None, now_unix()).await? {
        Reservation::New(id) => {
            ledger
                .settle(id, Msat(1_000), Msat::ZERO, &preimage, now_unix())
                .await?;
            Ok(())
        }
        Reservation::Existing(_) => bail!("a fresh payment hash was already reserved"),
    }
}

/// Runs `turnpike-bench wallet`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    turnpike_lightning::ensure_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let value = rt.block_on(bench(args))?;
    crate::write_json(&args.out, &value)
}
