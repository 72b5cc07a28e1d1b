//! After a run of single-call tokens: no token was used beyond its calls, and the upstream
//! served exactly the calls the store charged (so none was served twice or unpaid).

use std::path::PathBuf;

use anyhow::Context;
use sqlx::Row;

/// Arguments of `turnpike-bench served-check`.
#[derive(clap::Args)]
pub struct Args {
    /// The gateway's store (`sqlite://…` or `postgres://…`).
    #[arg(long)]
    store: String,
    /// The upstream's address (`host:port`); its `/_bench/count` is read directly.
    #[arg(long)]
    upstream: std::net::SocketAddr,
    /// The load generator's JSON result for the run (for its count of 2xx answers).
    #[arg(long)]
    wrk: PathBuf,
    /// Connections the load generator used (answers in flight when it stopped are uncounted).
    #[arg(long)]
    connections: u64,
    /// JSON file to write.
    #[arg(long)]
    out: PathBuf,
    /// An earlier check's JSON of the same store: the calls it counted are not this run's.
    #[arg(long)]
    before: Option<PathBuf>,
}

/// The service `turnpike-bench fill` charges its rows to; never counted here.
pub const FILLED_SERVICE: &str = "bench-fill";

fn upstream_count(addr: std::net::SocketAddr) -> anyhow::Result<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "GET /_bench/count HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .context("no body from the upstream counter")?;
    Ok(body.trim().parse()?)
}

/// Checks and writes the JSON verdict; fails if a call was served twice or unpaid.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (rows, sum_used, over): (i64, i64, i64) = rt.block_on(async {
        let sql = "SELECT COUNT(*), CAST(COALESCE(SUM(used), 0) AS BIGINT), \
                   CAST(COALESCE(SUM(CASE WHEN used > calls_total THEN 1 ELSE 0 END), 0) AS BIGINT) \
                   FROM token_usage WHERE service <> 'bench-fill'";
        let (a, b, c) = if args.store.starts_with("postgres") {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&args.store).await?;
            let row = sqlx::query(sql).fetch_one(&mut conn).await?;
            (row.try_get::<i64, _>(0)?, row.try_get::<i64, _>(1)?, row.try_get::<i64, _>(2)?)
        } else {
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&args.store).await?;
            let row = sqlx::query(sql).fetch_one(&mut conn).await?;
            (row.try_get::<i64, _>(0)?, row.try_get::<i64, _>(1)?, row.try_get::<i64, _>(2)?)
        };
        Ok::<_, anyhow::Error>((a, b, c))
    })?;
    let (rows, sum_used) = match &args.before {
        Some(path) => {
            let before: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
            let earlier = |k: &str| before[k].as_i64().unwrap_or(0);
            (
                rows - earlier("tokens_used"),
                sum_used - earlier("calls_charged"),
            )
        }
        None => (rows, sum_used),
    };
    let served = upstream_count(args.upstream)?;
    let wrk: serde_json::Value = serde_json::from_slice(&std::fs::read(&args.wrk)?)?;
    let ok_2xx = wrk["ok"].as_u64().unwrap_or(0);
    let sum_used = u64::try_from(sum_used).unwrap_or(0);
    // Every answer the client got was charged, no token was used beyond its calls, and the
    // upstream served every charged call. The upstream may have served a few more than were
    // charged: requests whose client hung up before the answer are given back (at most one per
    // connection in flight when the load generator stopped).
    let served_once = over == 0 && ok_2xx <= sum_used;
    let counts_agree = sum_used <= served && served <= sum_used + args.connections;
    let verdict = served_once && counts_agree;
    crate::write_json(
        &args.out,
        &serde_json::json!({
            "tokens_used": rows,
            "calls_charged": sum_used,
            "tokens_over_limit": over,
            "upstream_served": served,
            "wrk_2xx": ok_2xx,
            "no_call_served_twice": served_once,
            "ok": verdict,
        }),
    )?;
    if !verdict {
        anyhow::bail!("served-check failed: see {}", args.out.display());
    }
    Ok(())
}
