//! Fills a gateway's store with used single-call tokens, to measure charging a call on a store
//! that has grown (scenario e with a million tokens already used).

use anyhow::Context;

/// Arguments of `turnpike-bench fill`.
#[derive(clap::Args)]
pub struct Args {
    /// The gateway's store (`sqlite://…` or `postgres://…`), already migrated (started once).
    #[arg(long)]
    store: String,
    /// Used tokens to add, each with a random id.
    #[arg(long)]
    rows: u64,
    /// The service they were used on (`served-check` leaves this one out of its counts).
    #[arg(long, default_value = crate::served::FILLED_SERVICE)]
    service: String,
}

/// One statement generating the rows in the database itself (random 32-byte ids, one call
/// bought and used).
const SQLITE_FILL: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
    INSERT INTO token_usage (token_id, service, calls_total, used, first_used_at, last_used_at, charges)
    SELECT randomblob(32), ?2, 1, 1, ?3, ?3, 1 FROM n";
const POSTGRES_FILL: &str = "INSERT INTO token_usage
    (token_id, service, calls_total, used, first_used_at, last_used_at, charges)
    SELECT decode(md5(random()::text || i::text) || md5(i::text || random()::text), 'hex'), $2, 1, 1, $3, $3, 1
    FROM generate_series(1, $1) AS i";

/// Adds the rows; prints how many the table holds afterwards.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rows = i64::try_from(args.rows).context("--rows is too large")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("clock before 1970")?;
    let now = i64::try_from(now.as_secs()).context("clock")?;
    let total: i64 = rt.block_on(async {
        let count = "SELECT COUNT(*) FROM token_usage";
        if args.store.starts_with("postgres") {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&args.store).await?;
            sqlx::query(POSTGRES_FILL)
                .bind(rows)
                .bind(&args.service)
                .bind(now)
                .execute(&mut conn)
                .await?;
            Ok::<_, anyhow::Error>(sqlx::query_scalar(count).fetch_one(&mut conn).await?)
        } else {
            let mut conn =
                <sqlx::SqliteConnection as sqlx::Connection>::connect(&args.store).await?;
            sqlx::query(SQLITE_FILL)
                .bind(rows)
                .bind(&args.service)
                .bind(now)
                .execute(&mut conn)
                .await?;
            Ok(sqlx::query_scalar(count).fetch_one(&mut conn).await?)
        }
    })?;
    println!("{total}");
    Ok(())
}
