//! The PostgreSQL store, for several gateway replicas sharing one database.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use turnpike_l402::{PaymentHash, TokenId};

use crate::{
    Consumption, IdempotencyBegin, InvoiceRecord, Store, StoreError, StoredResponse, TokenUsage,
    Verdict, to_i64, to_u64,
};

/// Schema migrations, applied in order; each runs once per database.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (
        2,
        include_str!("../migrations/postgres/0002_free_tier_idempotency.sql"),
    ),
];

/// How often [`Store::idempotency_begin`] retries when the entry it conflicted with vanished
/// (aborted or pruned) before it could read it. Each retry needs another begin and abort of the
/// same key to interleave exactly, so this bound is never reached in practice.
const BEGIN_ATTEMPTS: usize = 16;

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
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
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
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    sqlx::query("UPDATE token_usage SET used = used - 1 WHERE token_id = $1 AND used > 0")
        .bind(&token.0[..])
        .execute(executor)
        .await?;
    Ok(())
}

/// Advisory lock key taken while migrating, so replicas starting together migrate once.
const MIGRATION_LOCK: i64 = 0x7475_726e_7069_6b65; // "turnpike"

/// A [`Store`] in PostgreSQL. Every operation is one atomic statement or one transaction with
/// row locks, so any number of gateway processes can share one database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Group commit of consumed calls.
    batcher: crate::batch::Batcher,
}

/// Concurrent batch writers per gateway (each holds one connection while it writes).
const BATCH_WRITERS: usize = 4;

/// The statements a batch is written with: consumed calls as in [`consume`], invoices as in
/// [`Store::record_invoice`]; one prepared statement each whatever the batch size, rows in
/// token order (no deadlock between replicas).
struct PgBatch(PgPool);

async fn consume_rows<'e, E>(
    executor: E,
    batch: &[crate::batch::ConsumeRequest],
) -> Result<Vec<Consumption>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let tokens: Vec<Vec<u8>> = batch.iter().map(|r| r.token.0.to_vec()).collect();
    let services: Vec<&str> = batch.iter().map(|r| r.service.as_str()).collect();
    let totals: Vec<i64> = batch.iter().map(|r| to_i64(r.calls_total)).collect();
    let nows: Vec<i64> = batch.iter().map(|r| to_i64(r.now_unix)).collect();
    let rows = sqlx::query_as::<_, (Vec<u8>, i64, i64)>(
        "INSERT INTO token_usage (token_id, service, calls_total, used, first_used_at, last_used_at)
         SELECT t, s, c, 1, n, n
           FROM UNNEST($1::bytea[], $2::text[], $3::int8[], $4::int8[]) WITH ORDINALITY AS u(t, s, c, n, o)
          ORDER BY o
         ON CONFLICT (token_id) DO UPDATE
            SET used = token_usage.used + 1,
                calls_total = LEAST(token_usage.calls_total, EXCLUDED.calls_total),
                last_used_at = EXCLUDED.last_used_at
          WHERE token_usage.used < LEAST(token_usage.calls_total, EXCLUDED.calls_total)
         RETURNING token_id, used, calls_total",
    )
    .bind(tokens)
    .bind(services)
    .bind(totals)
    .bind(nows)
    .fetch_all(executor)
    .await?;
    crate::batch_outcomes(batch, rows)
}

async fn invoice_rows<'e, E>(executor: E, batch: &[InvoiceRecord]) -> Result<Vec<bool>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let hashes: Vec<Vec<u8>> = batch.iter().map(|i| i.payment_hash.0.to_vec()).collect();
    let tokens: Vec<Vec<u8>> = batch.iter().map(|i| i.token_id.0.to_vec()).collect();
    let services: Vec<&str> = batch.iter().map(|i| i.service.as_str()).collect();
    let amounts: Vec<i64> = batch.iter().map(|i| to_i64(i.amount.0)).collect();
    let calls: Vec<Option<i64>> = batch.iter().map(|i| i.calls.map(to_i64)).collect();
    let created: Vec<i64> = batch.iter().map(|i| to_i64(i.created_at)).collect();
    let expires: Vec<i64> = batch.iter().map(|i| to_i64(i.expires_at)).collect();
    let rows = sqlx::query_scalar::<_, Vec<u8>>(
        "INSERT INTO invoices (payment_hash, token_id, service, amount_msat, calls, created_at, expires_at)
         SELECT * FROM UNNEST($1::bytea[], $2::bytea[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::int8[])
         ON CONFLICT (payment_hash) DO NOTHING
         RETURNING payment_hash",
    )
    .bind(hashes)
    .bind(tokens)
    .bind(services)
    .bind(amounts)
    .bind(calls)
    .bind(created)
    .bind(expires)
    .fetch_all(executor)
    .await?;
    Ok(crate::recorded_outcomes(batch, rows))
}

#[async_trait]
impl crate::batch::BatchWriter for PgBatch {
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

impl PgStore {
    /// Connects to `url` (`postgres://…`) and applies pending migrations.
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        PgStore::open_with(options).await
    }

    /// Connects with explicit options (for example a `search_path`) and migrates.
    pub async fn open_with(options: PgConnectOptions) -> Result<PgStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        let batcher =
            crate::batch::Batcher::start(std::sync::Arc::new(PgBatch(pool.clone())), BATCH_WRITERS);
        let store = PgStore { pool, batcher };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS turnpike_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        for &(version, sql) in MIGRATIONS {
            let applied: Option<i64> =
                sqlx::query_scalar("SELECT version FROM turnpike_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if applied.is_some() {
                continue;
            }
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .map_err(|source| StoreError::Migration { version, source })?;
            sqlx::query(
                "INSERT INTO turnpike_migrations (version, applied_at) VALUES ($1, extract(epoch from now())::bigint)",
            )
            .bind(version)
            .execute(&mut *tx)
            .await?;
            tracing::info!(version, "applied store migration");
        }
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl Store for PgStore {
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
        let row = sqlx::query("SELECT calls_total, used FROM token_usage WHERE token_id = $1")
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
            "SELECT token_id, service, amount_msat, calls, created_at, expires_at FROM invoices WHERE payment_hash = $1",
        )
        .bind(&hash.0[..])
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        crate::invoice_from_row(*hash, &row).map(Some)
    }

    async fn prune_expired_invoices(&self, now_unix: u64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM invoices WHERE expires_at < $1
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
        // One statement (see the SQLite store); ON CONFLICT locks the row and the WHERE sees its
        // latest version, so concurrent takes never exceed the limit.
        let row = sqlx::query(
            "INSERT INTO free_tier (service, client, window_start, window_end, used)
             VALUES ($1, $2, $3, $4, 1)
             ON CONFLICT (service, client) DO UPDATE
                SET used = CASE WHEN free_tier.window_start < EXCLUDED.window_start
                                THEN 1 ELSE free_tier.used + 1 END,
                    window_end = CASE WHEN free_tier.window_start < EXCLUDED.window_start
                                      THEN EXCLUDED.window_end ELSE free_tier.window_end END,
                    window_start = GREATEST(free_tier.window_start, EXCLUDED.window_start)
              WHERE free_tier.window_start < EXCLUDED.window_start OR free_tier.used < $5
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
        let done = sqlx::query("DELETE FROM free_tier WHERE window_end <= $1")
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
        // One transaction (READ COMMITTED). Claiming the key with INSERT … ON CONFLICT DO NOTHING
        // first means a concurrent begin of the same key waits for ours to commit or roll back,
        // then reads the committed entry FOR UPDATE. Locks are always taken entry first, then
        // token_usage, so begins and aborts cannot deadlock. Dropping `tx` rolls back.
        let mut tx = self.pool.begin().await?;
        for _ in 0..BEGIN_ATTEMPTS {
            let claimed = sqlx::query(
                "INSERT INTO idempotency
                    (token_id, idem_key, fingerprint, service, state, charged, created_at, started_at)
                 VALUES ($1, $2, $3, $4, 'in_flight', $5, $6, $6)
                 ON CONFLICT (token_id, idem_key) DO NOTHING",
            )
            .bind(&token.0[..])
            .bind(key.as_bytes())
            .bind(&fingerprint[..])
            .bind(service)
            .bind(calls_total.is_some())
            .bind(to_i64(now_unix))
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if claimed {
                let remaining = match calls_total {
                    None => None,
                    Some(total) => {
                        match consume(&mut *tx, token, service, total, now_unix).await? {
                            Consumption::Granted { remaining } => Some(remaining),
                            Consumption::Exhausted => {
                                tx.rollback().await?;
                                return Ok(IdempotencyBegin::Exhausted);
                            }
                        }
                    }
                };
                tx.commit().await?;
                return Ok(IdempotencyBegin::Charged { remaining });
            }
            let row = sqlx::query(
                "SELECT fingerprint, state, started_at, status, headers, body
                   FROM idempotency WHERE token_id = $1 AND idem_key = $2
                    FOR UPDATE",
            )
            .bind(&token.0[..])
            .bind(key.as_bytes())
            .fetch_optional(&mut *tx)
            .await?;
            // The entry we conflicted with was deleted since: claim the key again.
            let Some(row) = row else { continue };
            let entry = crate::entry_from_row(&row)?;
            return match crate::judge(entry, fingerprint, now_unix, stale_after_secs)? {
                Verdict::Answer(answer) => {
                    tx.rollback().await?;
                    Ok(answer)
                }
                Verdict::TakeOver => {
                    sqlx::query(
                        "UPDATE idempotency SET started_at = $3 WHERE token_id = $1 AND idem_key = $2",
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
        tx.rollback().await?;
        Err(StoreError::Contention)
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
                SET state = 'done', status = $3, headers = $4, body = $5, completed_at = $6
              WHERE token_id = $1 AND idem_key = $2 AND state = 'in_flight'",
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
        let mut tx = self.pool.begin().await?;
        let charged: Option<bool> = sqlx::query_scalar(
            "DELETE FROM idempotency
              WHERE token_id = $1 AND idem_key = $2 AND state = 'in_flight'
             RETURNING charged",
        )
        .bind(&token.0[..])
        .bind(key.as_bytes())
        .fetch_optional(&mut *tx)
        .await?;
        if refund_call && charged == Some(true) {
            refund(&mut *tx, token).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn prune_idempotency(&self, older_than_unix: u64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM idempotency WHERE state = 'done' AND created_at < $1")
            .bind(to_i64(older_than_unix))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
