//! The embedded SQLite store.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Row};
use turnpike_l402::{PaymentHash, TokenId};

use crate::{
    Consumption, IdempotencyBegin, InvoiceRecord, Store, StoreError, StoredResponse, TokenUsage,
    Verdict, to_i64, to_u64,
};

/// Schema migrations, applied in order; each runs once per database.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (
        2,
        include_str!("../migrations/sqlite/0002_free_tier_idempotency.sql"),
    ),
];

/// Consumes one call of `token` — the one statement behind [`Store::consume_call`], also run
/// inside [`Store::idempotency_begin`]'s transaction.
async fn consume<'e, E>(
    executor: E,
    token: &TokenId,
    service: &str,
    calls_total: u64,
    now_unix: u64,
) -> Result<Consumption, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    if calls_total == 0 {
        return Ok(Consumption::Exhausted);
    }
    // The batch statement with one row: insert on first use, else count one more call, but
    // only while calls remain. No row back means nothing was consumed.
    let request = crate::batch::ConsumeRequest {
        token: *token,
        service: service.to_owned(),
        calls_total,
        now_unix,
    };
    let outcome = consume_rows(executor, std::slice::from_ref(&request)).await?;
    outcome
        .first()
        .copied()
        .ok_or(StoreError::Corrupt("consume answered no row"))
}

/// Gives back one call of `token` — the statement behind [`Store::refund_call`], also run inside
/// [`Store::idempotency_abort`]'s transaction.
async fn refund<'e, E>(executor: E, token: &TokenId) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    sqlx::query("UPDATE token_usage SET used = used - 1 WHERE token_id = ?1 AND used > 0")
        .bind(&token.0[..])
        .execute(executor)
        .await?;
    Ok(())
}

/// A [`Store`] in one SQLite file (WAL mode), shared safely by several connections and processes.
/// Single-statement operations are atomic on their own; multi-step ones (idempotency begin and
/// abort) run in a `BEGIN IMMEDIATE` transaction, which takes the database's write lock first.
///
///
/// Durability: `synchronous=NORMAL` in WAL mode, so a crash of the process (even SIGKILL) loses
/// no committed write; only a power loss may drop the last few commits.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Group commit of consumed calls: one writer, as SQLite has one write lock.
    batcher: crate::batch::Batcher,
}

/// The statements a batch is written with: consumed calls as in [`consume`], invoices as in
/// [`Store::record_invoice`], one multi-row statement each.
struct SqliteBatch(SqlitePool);

async fn consume_rows<'e, E>(
    executor: E,
    batch: &[crate::batch::ConsumeRequest],
) -> Result<Vec<Consumption>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "INSERT INTO token_usage (token_id, service, calls_total, used, first_used_at, last_used_at) ",
    );
    query.push_values(batch, |mut row, r| {
        row.push_bind(r.token.0.to_vec())
            .push_bind(r.service.clone())
            .push_bind(to_i64(r.calls_total))
            .push("1")
            .push_bind(to_i64(r.now_unix))
            .push_bind(to_i64(r.now_unix));
    });
    query.push(
        " ON CONFLICT (token_id) DO UPDATE
            SET used = token_usage.used + 1,
                calls_total = MIN(token_usage.calls_total, excluded.calls_total),
                last_used_at = excluded.last_used_at
          WHERE token_usage.used < MIN(token_usage.calls_total, excluded.calls_total)
         RETURNING token_id, used, calls_total",
    );
    let rows = query
        .build_query_as::<(Vec<u8>, i64, i64)>()
        .fetch_all(executor)
        .await?;
    crate::batch_outcomes(batch, rows)
}

async fn invoice_rows<'e, E>(executor: E, batch: &[InvoiceRecord]) -> Result<Vec<bool>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "INSERT INTO invoices (payment_hash, token_id, service, amount_msat, calls, created_at, expires_at) ",
    );
    query.push_values(batch, |mut row, inv| {
        row.push_bind(inv.payment_hash.0.to_vec())
            .push_bind(inv.token_id.0.to_vec())
            .push_bind(inv.service.clone())
            .push_bind(to_i64(inv.amount.0))
            .push_bind(inv.calls.map(to_i64))
            .push_bind(to_i64(inv.created_at))
            .push_bind(to_i64(inv.expires_at));
    });
    query.push(" ON CONFLICT (payment_hash) DO NOTHING RETURNING payment_hash");
    let rows = query
        .build_query_scalar::<Vec<u8>>()
        .fetch_all(executor)
        .await?;
    Ok(crate::recorded_outcomes(batch, rows))
}

#[async_trait]
impl crate::batch::BatchWriter for SqliteBatch {
    async fn write_batch(
        &self,
        consumes: &[crate::batch::ConsumeRequest],
        invoices: &[InvoiceRecord],
    ) -> Result<(Vec<Consumption>, Vec<bool>), StoreError> {
        match (consumes.is_empty(), invoices.is_empty()) {
            (_, true) => Ok((consume_rows(&self.0, consumes).await?, Vec::new())),
            (true, false) => Ok((Vec::new(), invoice_rows(&self.0, invoices).await?)),
            (false, false) => {
                let mut tx = self.0.begin().await?;
                let consumed = consume_rows(&mut *tx, consumes).await?;
                let recorded = invoice_rows(&mut *tx, invoices).await?;
                tx.commit().await?;
                Ok((consumed, recorded))
            }
        }
    }

    async fn refund(&self, token: &TokenId) -> Result<(), StoreError> {
        refund(&self.0, token).await
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://PATH` or `sqlite::memory:`)
    /// and applies pending migrations.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(options)
            .await?;
        let batcher =
            crate::batch::Batcher::start(std::sync::Arc::new(SqliteBatch(pool.clone())), 1);
        let store = SqliteStore { pool, batcher };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS turnpike_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )
        .execute(&mut *conn)
        .await?;
        for &(version, sql) in MIGRATIONS {
            // BEGIN IMMEDIATE takes the write lock first, so two processes starting together
            // cannot both apply the same migration.
            sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
            let applied: Option<i64> =
                sqlx::query_scalar("SELECT version FROM turnpike_migrations WHERE version = ?1")
                    .bind(version)
                    .fetch_optional(&mut *conn)
                    .await?;
            if applied.is_some() {
                sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
                continue;
            }
            let result = async {
                sqlx::raw_sql(sql).execute(&mut *conn).await?;
                sqlx::query("INSERT INTO turnpike_migrations (version, applied_at) VALUES (?1, strftime('%s','now'))")
                    .bind(version)
                    .execute(&mut *conn)
                    .await
            }
            .await;
            match result {
                Ok(_) => {
                    sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
                    tracing::info!(version, "applied store migration");
                }
                Err(source) => {
                    let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
                    return Err(StoreError::Migration { version, source });
                }
            }
        }
        conn.ping().await?;
        Ok(())
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn consume_call(
        &self,
        token: &TokenId,
        service: &str,
        calls_total: u64,
        now_unix: u64,
    ) -> Result<Consumption, StoreError> {
        if calls_total == 0 {
            return Ok(Consumption::Exhausted);
        }
        let written = self
            .batcher
            .write(crate::batch::Write::Consume(crate::batch::ConsumeRequest {
                token: *token,
                service: service.to_owned(),
                calls_total,
                now_unix,
            }))
            .await?;
        crate::consume_outcome(written)
    }

    async fn refund_call(&self, token: &TokenId) -> Result<(), StoreError> {
        refund(&self.pool, token).await
    }

    async fn token_usage(&self, token: &TokenId) -> Result<Option<TokenUsage>, StoreError> {
        let row = sqlx::query("SELECT calls_total, used FROM token_usage WHERE token_id = ?1")
            .bind(&token.0[..])
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(TokenUsage {
                calls_total: to_u64(row.try_get(0)?, "token_usage.calls_total")?,
                used: to_u64(row.try_get(1)?, "token_usage.used")?,
            })
        })
        .transpose()
    }

    async fn record_invoice(&self, inv: &InvoiceRecord) -> Result<(), StoreError> {
        let written = self
            .batcher
            .write(crate::batch::Write::Invoice(inv.clone()))
            .await?;
        crate::invoice_outcome(written)
    }

    async fn invoice(&self, hash: &PaymentHash) -> Result<Option<InvoiceRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT token_id, service, amount_msat, calls, created_at, expires_at FROM invoices WHERE payment_hash = ?1",
        )
        .bind(&hash.0[..])
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        crate::invoice_from_row(*hash, &row).map(Some)
    }

    async fn prune_expired_invoices(&self, now_unix: u64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM invoices WHERE expires_at < ?1
               AND NOT EXISTS (SELECT 1 FROM token_usage u WHERE u.token_id = invoices.token_id)",
        )
        .bind(to_i64(now_unix))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn take_free_call(
        &self,
        service: &str,
        client: &str,
        limit: u64,
        window_secs: u64,
        now_unix: u64,
    ) -> Result<bool, StoreError> {
        let (window_start, window_end) = crate::free_window(now_unix, window_secs)?;
        if limit == 0 {
            return Ok(false);
        }
        // One statement: a row from an earlier window restarts at 1; otherwise count one more
        // while under the limit. No row back means refused, nothing changed. A row from a later
        // window (another replica's clock ahead) is counted against, never reset.
        let row = sqlx::query(
            "INSERT INTO free_tier (service, client, window_start, window_end, used)
             VALUES (?1, ?2, ?3, ?4, 1)
             ON CONFLICT (service, client) DO UPDATE
                SET used = CASE WHEN free_tier.window_start < excluded.window_start
                                THEN 1 ELSE free_tier.used + 1 END,
                    window_end = CASE WHEN free_tier.window_start < excluded.window_start
                                      THEN excluded.window_end ELSE free_tier.window_end END,
                    window_start = MAX(free_tier.window_start, excluded.window_start)
              WHERE free_tier.window_start < excluded.window_start OR free_tier.used < ?5
             RETURNING used",
        )
        .bind(service)
        .bind(client)
        .bind(window_start)
        .bind(window_end)
        .bind(to_i64(limit))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    async fn prune_free_tier(&self, now_unix: u64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM free_tier WHERE window_end <= ?1")
            .bind(to_i64(now_unix))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn idempotency_begin(
        &self,
        token: &TokenId,
        key: &str,
        fingerprint: &[u8; 32],
        service: &str,
        calls_total: Option<u64>,
        now_unix: u64,
        stale_after_secs: u64,
    ) -> Result<IdempotencyBegin, StoreError> {
        // BEGIN IMMEDIATE takes the database's write lock first: begins, completes and aborts
        // of every process run one after another, and the entry and the charge commit together.
        // Dropping `tx` before commit (error, cancellation) rolls everything back.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(
            "SELECT fingerprint, state, started_at, status, headers, body
               FROM idempotency WHERE token_id = ?1 AND idem_key = ?2",
        )
        .bind(&token.0[..])
        .bind(key.as_bytes())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            let entry = crate::entry_from_row(&row)?;
            return match crate::judge(entry, fingerprint, now_unix, stale_after_secs)? {
                Verdict::Answer(answer) => {
                    tx.rollback().await?;
                    Ok(answer)
                }
                Verdict::TakeOver => {
                    sqlx::query(
                        "UPDATE idempotency SET started_at = ?3 WHERE token_id = ?1 AND idem_key = ?2",
                    )
                    .bind(&token.0[..])
                    .bind(key.as_bytes())
                    .bind(to_i64(now_unix))
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(IdempotencyBegin::TakenOver)
                }
            };
        }
        let remaining = match calls_total {
            None => None,
            Some(total) => match consume(&mut *tx, token, service, total, now_unix).await? {
                Consumption::Granted { remaining } => Some(remaining),
                Consumption::Exhausted => {
                    tx.rollback().await?;
                    return Ok(IdempotencyBegin::Exhausted);
                }
            },
        };
        sqlx::query(
            "INSERT INTO idempotency
                (token_id, idem_key, fingerprint, service, state, charged, created_at, started_at)
             VALUES (?1, ?2, ?3, ?4, 'in_flight', ?5, ?6, ?6)",
        )
        .bind(&token.0[..])
        .bind(key.as_bytes())
        .bind(&fingerprint[..])
        .bind(service)
        .bind(i64::from(calls_total.is_some()))
        .bind(to_i64(now_unix))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(IdempotencyBegin::Charged { remaining })
    }

    async fn idempotency_complete(
        &self,
        token: &TokenId,
        key: &str,
        response: &StoredResponse,
        now_unix: u64,
    ) -> Result<(), StoreError> {
        let headers = crate::encode_headers(&response.headers)?;
        sqlx::query(
            "UPDATE idempotency
                SET state = 'done', status = ?3, headers = ?4, body = ?5, completed_at = ?6
              WHERE token_id = ?1 AND idem_key = ?2 AND state = 'in_flight'",
        )
        .bind(&token.0[..])
        .bind(key.as_bytes())
        .bind(i64::from(response.status))
        .bind(headers)
        .bind(&response.body[..])
        .bind(to_i64(now_unix))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn idempotency_abort(
        &self,
        token: &TokenId,
        key: &str,
        refund_call: bool,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let charged: Option<i64> = sqlx::query_scalar(
            "DELETE FROM idempotency
              WHERE token_id = ?1 AND idem_key = ?2 AND state = 'in_flight'
             RETURNING charged",
        )
        .bind(&token.0[..])
        .bind(key.as_bytes())
        .fetch_optional(&mut *tx)
        .await?;
        if refund_call && charged == Some(1) {
            refund(&mut *tx, token).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn prune_idempotency(&self, older_than_unix: u64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM idempotency WHERE state = 'done' AND created_at < ?1")
            .bind(to_i64(older_than_unix))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
