//! The store written once for SQLite and PostgreSQL: [`SqlStore`] is generic over the sqlx
//! database, every statement the two agree on is here (sqlx binds `$N` on both), and a
//! [`Dialect`] holds only what truly differs: how a batch of rows is passed, how a writing
//! transaction starts, the row lock on an idempotency entry, and the migrations.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Type};
use turnpike_l402::TokenId;

use crate::batch::{self, BatchWriter, ConsumeRequest};
use crate::{
    Consumption, IdempotencyBegin, IdempotencyRequest, InvoiceRecord, Store, StoreError,
    StoredResponse, Verdict, X402Claim, to_i64,
};

/// The first half of the batched consume: the dialect appends its rows, then `consume_upsert!`.
/// Each row is `(token_id, service, calls_total, 1, now, now)`.
macro_rules! consume_insert {
    () => {
        "INSERT INTO token_usage (token_id, service, calls_total, used, first_used_at, last_used_at) "
    };
}

/// Insert on first use, else count one more call, but only while calls remain; when a token's
/// earlier use recorded another total, the smaller one applies. No row back for a token means
/// nothing was consumed.
macro_rules! consume_upsert {
    () => {
        " ON CONFLICT (token_id) DO UPDATE
    SET used = token_usage.used + 1,
        calls_total = CASE WHEN excluded.calls_total < token_usage.calls_total
                           THEN excluded.calls_total ELSE token_usage.calls_total END,
        last_used_at = excluded.last_used_at,
        charges = token_usage.charges + 1
  WHERE token_usage.used < token_usage.calls_total AND token_usage.used < excluded.calls_total
 RETURNING token_id, used, calls_total, charges"
    };
}

/// The first half of the batched invoice insert; the dialect appends its rows (in the column
/// order here), then `invoice_upsert!`.
macro_rules! invoice_insert {
    () => {
        "INSERT INTO invoices
        (payment_hash, token_id, service, amount_msat, calls, created_at, expires_at) "
    };
}

/// A payment hash recorded before is left alone and not returned.
macro_rules! invoice_upsert {
    () => {
        " ON CONFLICT (payment_hash) DO NOTHING RETURNING payment_hash"
    };
}

/// Schema migrations in `migrations/$dir`, applied in order; each runs once per database.
macro_rules! migrations {
    ($dir:literal) => {
        &[
            (
                1,
                include_str!(concat!("../migrations/", $dir, "/0001_init.sql")),
            ),
            (
                2,
                include_str!(concat!(
                    "../migrations/",
                    $dir,
                    "/0002_free_tier_idempotency.sql"
                )),
            ),
            (
                3,
                include_str!(concat!("../migrations/", $dir, "/0003_admin.sql")),
            ),
            (
                4,
                include_str!(concat!("../migrations/", $dir, "/0004_stats.sql")),
            ),
            (
                5,
                include_str!(concat!("../migrations/", $dir, "/0005_x402.sql")),
            ),
            (
                6,
                include_str!(concat!("../migrations/", $dir, "/0006_hub.sql")),
            ),
            (
                7,
                include_str!(concat!("../migrations/", $dir, "/0007_health.sql")),
            ),
            (
                8,
                include_str!(concat!("../migrations/", $dir, "/0008_hub_verify.sql")),
            ),
        ]
    };
}

pub(crate) use {consume_insert, consume_upsert, invoice_insert, invoice_upsert, migrations};

const REFUND: &str = "UPDATE token_usage SET used = used - 1 WHERE token_id = $1 AND used > 0";

const PRUNE_INVOICES: &str = "DELETE FROM invoices WHERE expires_at < $1
    AND NOT EXISTS (SELECT 1 FROM token_usage u WHERE u.token_id = invoices.token_id)
    AND NOT EXISTS (SELECT 1 FROM token_passes p WHERE p.token_id = invoices.token_id)";

/// One statement: a row from an earlier window restarts at 1; otherwise count one more while
/// under the limit. No row back means refused, nothing changed. A row from a later window
/// (another replica's clock ahead) is counted against, never reset. ON CONFLICT locks the row
/// and the WHERE sees its latest version, so concurrent takes never exceed the limit.
const TAKE_FREE_CALL: &str =
    "INSERT INTO free_tier (service, client, window_start, window_end, used)
    VALUES ($1, $2, $3, $4, 1)
    ON CONFLICT (service, client) DO UPDATE
       SET used = CASE WHEN free_tier.window_start < excluded.window_start
                       THEN 1 ELSE free_tier.used + 1 END,
           window_end = CASE WHEN free_tier.window_start < excluded.window_start
                             THEN excluded.window_end ELSE free_tier.window_end END,
           window_start = CASE WHEN free_tier.window_start < excluded.window_start
                               THEN excluded.window_start ELSE free_tier.window_start END
     WHERE free_tier.window_start < excluded.window_start OR free_tier.used < $5
    RETURNING used";

const PRUNE_FREE_TIER: &str = "DELETE FROM free_tier WHERE window_end <= $1";

/// Claims a key: a new entry, in flight. An existing one is left alone (and not locked).
const CLAIM_ENTRY: &str = "INSERT INTO idempotency
    (token_id, idem_key, fingerprint, service, state, charged, created_at, started_at)
    VALUES ($1, $2, $3, $4, 'in_flight', $5, $6, $6)
    ON CONFLICT (token_id, idem_key) DO NOTHING";

/// The columns [`crate::entry_from_row`] reads, of one entry; `$lock` follows (the dialect's
/// row lock).
macro_rules! select_entry {
    ($lock:literal) => {
        concat!(
            "SELECT fingerprint, state, started_at, status, headers, body
               FROM idempotency WHERE token_id = $1 AND idem_key = $2",
            $lock
        )
    };
}
pub(crate) use select_entry;

const TAKE_OVER: &str =
    "UPDATE idempotency SET started_at = $3 WHERE token_id = $1 AND idem_key = $2";

const COMPLETE: &str = "UPDATE idempotency
    SET state = 'done', status = $3, headers = $4, body = $5, completed_at = $6
  WHERE token_id = $1 AND idem_key = $2 AND state = 'in_flight'";

const ABORT: &str = "DELETE FROM idempotency
  WHERE token_id = $1 AND idem_key = $2 AND state = 'in_flight'
  RETURNING charged";

const PRUNE_IDEMPOTENCY: &str = "DELETE FROM idempotency WHERE state = 'done' AND created_at < $1";

/// Claims an x402 payment: a new row, or nothing when the key is already held (one statement,
/// atomic across processes sharing the database).
const CLAIM_X402: &str = "INSERT INTO x402_payments (replay_key, claimed_at, expires_at)
    VALUES ($1, $2, $3) ON CONFLICT (replay_key) DO NOTHING";

const X402_SETTLED: &str = "SELECT settle_header FROM x402_payments WHERE replay_key = $1";

const RECORD_X402_SETTLEMENT: &str =
    "UPDATE x402_payments SET settle_header = $2 WHERE replay_key = $1";

const RELEASE_X402: &str = "DELETE FROM x402_payments WHERE replay_key = $1";

const PRUNE_X402: &str = "DELETE FROM x402_payments WHERE expires_at < $1";

const MIGRATION_APPLIED: &str = "SELECT version FROM turnpike_migrations WHERE version = $1";

const RECORD_MIGRATION: &str =
    "INSERT INTO turnpike_migrations (version, applied_at) VALUES ($1, $2)";

/// How often [`Store::idempotency_begin`] retries when the entry it conflicted with vanished
/// (aborted or pruned) before it could read it. Each retry needs another begin and abort of the
/// same key to interleave exactly, so this bound is never reached in practice.
const BEGIN_ATTEMPTS: usize = 16;

mod sealed {
    pub trait Sealed {}
    impl Sealed for sqlx::Sqlite {}
    impl Sealed for sqlx::Postgres {}
}

/// How many rows a statement changed.
pub trait RowsAffected {
    /// How many rows a statement changed.
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// What differs between the databases a [`SqlStore`] runs on: SQLite and PostgreSQL.
pub trait Dialect:
    Database<Arguments: IntoArguments<Self>, QueryResult: RowsAffected> + sealed::Sealed
{
    /// Starts a transaction that writes. SQLite's `BEGIN IMMEDIATE` takes the database's write
    /// lock first, so begins, completes and aborts of every process run one after another.
    const BEGIN_WRITE: &'static str;
    /// Reads an idempotency entry inside a begin, locking it where the database locks rows.
    const SELECT_ENTRY: &'static str;
    /// Creates the table of applied migrations if it is missing.
    const CREATE_MIGRATIONS: &'static str;
    /// Run first in the migrating transaction, so processes starting together migrate once.
    const LOCK_MIGRATIONS: Option<&'static str>;
    /// Schema migrations (`migrations!`), applied in order; each runs once per database.
    const MIGRATIONS: &'static [(i64, &'static str)];
    /// Concurrent batch writers per store (each holds one connection while it writes).
    const BATCH_WRITERS: usize;

    /// Runs `consume_insert!`, the batch's rows, `consume_upsert!`: the rows returned.
    #[doc(hidden)]
    fn consume_rows(
        conn: &mut Self::Connection,
        batch: &[ConsumeRequest],
    ) -> impl Future<Output = Result<Vec<crate::ConsumedRow>, sqlx::Error>> + Send;

    /// Runs `invoice_insert!`, the batch's rows, `invoice_upsert!`: the hashes returned.
    #[doc(hidden)]
    fn invoice_rows(
        conn: &mut Self::Connection,
        batch: &[InvoiceRecord],
    ) -> impl Future<Output = Result<Vec<Vec<u8>>, sqlx::Error>> + Send;
}

/// A type read and written as one column.
pub trait Codec<DB: Database>: for<'a> Encode<'a, DB> + for<'a> Decode<'a, DB> + Type<DB> {}

impl<DB: Database, T> Codec<DB> for T where
    T: for<'a> Encode<'a, DB> + for<'a> Decode<'a, DB> + Type<DB>
{
}

/// A [`Store`] in a SQL database `DB` (a [`Dialect`]): see [`crate::SqliteStore`] and
/// [`crate::PgStore`]. Every operation is one atomic statement or one transaction.
pub struct SqlStore<DB: Database> {
    pub(crate) pool: Pool<DB>,
    /// Group commit of consumed calls and recorded invoices.
    batcher: batch::Batcher,
}

impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
            batcher: self.batcher.clone(),
        }
    }
}

impl<DB: Database> std::fmt::Debug for SqlStore<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("pool", &self.pool)
            .finish()
    }
}

impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Codec<DB>,
    Vec<u8>: Codec<DB>,
{
    /// Brings the schema in `pool` up to date and starts the batch writers.
    pub(crate) async fn start(pool: Pool<DB>) -> Result<Self, StoreError> {
        let mut tx = pool.begin_with(DB::BEGIN_WRITE).await?;
        if let Some(lock) = DB::LOCK_MIGRATIONS {
            sqlx::raw_sql(lock).execute(&mut *tx).await?;
        }
        sqlx::raw_sql(DB::CREATE_MIGRATIONS)
            .execute(&mut *tx)
            .await?;
        for &(version, sql) in DB::MIGRATIONS {
            let applied: Option<i64> = sqlx::query_scalar(MIGRATION_APPLIED)
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
            sqlx::query(RECORD_MIGRATION)
                .bind(version)
                .bind(to_i64(unix_now()))
                .execute(&mut *tx)
                .await?;
            tracing::info!(version, "applied store migration");
        }
        tx.commit().await?;
        let batcher = batch::Batcher::start(Arc::new(pool.clone()), DB::BATCH_WRITERS);
        Ok(SqlStore { pool, batcher })
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Consumes one call of `token`: the batch statement with one row. The statement behind
/// [`Store::consume_call`], run inside [`Store::idempotency_begin`]'s transaction.
async fn consume<DB: Dialect>(
    conn: &mut DB::Connection,
    request: ConsumeRequest,
) -> Result<Consumption, StoreError> {
    if request.calls_total == 0 {
        return Ok(Consumption::Exhausted);
    }
    let batch = std::slice::from_ref(&request);
    let rows = DB::consume_rows(conn, batch).await?;
    crate::batch_outcomes(batch, rows)?
        .first()
        .copied()
        .ok_or(StoreError::Corrupt("consume answered no row"))
}

/// Gives back one call of `token`: the statement behind [`Store::refund_call`], also run inside
/// [`Store::idempotency_abort`]'s transaction.
async fn refund<'e, DB: Dialect>(
    executor: impl Executor<'e, Database = DB>,
    token: &TokenId,
) -> Result<(), StoreError>
where
    Vec<u8>: Codec<DB>,
{
    sqlx::query(REFUND)
        .bind(token.0.to_vec())
        .execute(executor)
        .await?;
    Ok(())
}

/// Runs a `DELETE … WHERE … $1` with `arg`: how many rows it deleted.
async fn delete<'e, DB: Dialect>(
    executor: impl Executor<'e, Database = DB>,
    sql: &'static str,
    arg: u64,
) -> Result<u64, StoreError>
where
    i64: Codec<DB>,
{
    let done = sqlx::query(sql).bind(to_i64(arg)).execute(executor).await?;
    Ok(done.rows_affected())
}

/// Writes a batch with the dialect's statements: consumed calls, invoices, one multi-row
/// statement each (in one transaction when both are present).
#[async_trait]
impl<DB: Dialect> BatchWriter for Pool<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    Vec<u8>: Codec<DB>,
{
    async fn write_batch(
        &self,
        consumes: &[ConsumeRequest],
        invoices: &[InvoiceRecord],
    ) -> Result<(Vec<Consumption>, Vec<bool>), StoreError> {
        let consumed = |rows| crate::batch_outcomes(consumes, rows);
        let recorded = |rows| crate::recorded_outcomes(invoices, rows);
        if invoices.is_empty() {
            let rows = DB::consume_rows(&mut *self.acquire().await?, consumes).await?;
            return Ok((consumed(rows)?, Vec::new()));
        }
        if consumes.is_empty() {
            let rows = DB::invoice_rows(&mut *self.acquire().await?, invoices).await?;
            return Ok((Vec::new(), recorded(rows)));
        }
        let mut tx = self.begin().await?;
        let consume_rows = DB::consume_rows(&mut tx, consumes).await?;
        let invoice_rows = DB::invoice_rows(&mut tx, invoices).await?;
        tx.commit().await?;
        Ok((consumed(consume_rows)?, recorded(invoice_rows)))
    }

    async fn refund(&self, token: &TokenId) -> Result<(), StoreError> {
        refund(self, token).await
    }
}

#[async_trait]
impl<DB: Dialect> Store for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Codec<DB>,
    bool: Codec<DB>,
    Vec<u8>: Codec<DB>,
    String: Codec<DB>,
{
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
            .write(batch::Write::Consume(ConsumeRequest {
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

    async fn record_invoice(&self, inv: &InvoiceRecord) -> Result<(), StoreError> {
        let written = self
            .batcher
            .write(batch::Write::Invoice(inv.clone()))
            .await?;
        crate::invoice_outcome(written)
    }

    async fn prune_expired_invoices(&self, now_unix: u64) -> Result<u64, StoreError> {
        delete(&self.pool, PRUNE_INVOICES, now_unix).await
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
        let row = sqlx::query(TAKE_FREE_CALL)
            .bind(service.to_owned())
            .bind(client.to_owned())
            .bind(window_start)
            .bind(window_end)
            .bind(to_i64(limit))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn prune_free_tier(&self, now_unix: u64) -> Result<u64, StoreError> {
        delete(&self.pool, PRUNE_FREE_TIER, now_unix).await
    }

    async fn idempotency_begin(
        &self,
        r: &IdempotencyRequest<'_>,
    ) -> Result<IdempotencyBegin, StoreError> {
        // One transaction. Claiming the key first (INSERT … ON CONFLICT DO NOTHING) means a
        // concurrent begin of the same key waits for ours to commit or roll back (PostgreSQL),
        // or for the database's write lock (SQLite), then reads the committed entry, locked.
        // Locks are always taken entry first, then token_usage, so begins and aborts cannot
        // deadlock. Dropping `tx` before commit (error, cancellation) rolls everything back.
        let (token, key) = (r.token.0.to_vec(), r.key.as_bytes().to_vec());
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        for _ in 0..BEGIN_ATTEMPTS {
            let claimed = sqlx::query(CLAIM_ENTRY)
                .bind(token.clone())
                .bind(key.clone())
                .bind(r.fingerprint.to_vec())
                .bind(r.service.to_owned())
                .bind(r.calls_total.is_some())
                .bind(to_i64(r.now_unix))
                .execute(&mut *tx)
                .await?;
            if claimed.rows_affected() == 1 {
                let (remaining, first_use) = match r.calls_total {
                    None => (None, false),
                    Some(calls_total) => {
                        let request = ConsumeRequest {
                            token: *r.token,
                            service: r.service.to_owned(),
                            calls_total,
                            now_unix: r.now_unix,
                        };
                        match consume::<DB>(&mut tx, request).await? {
                            Consumption::Granted {
                                remaining,
                                first_use,
                            } => (Some(remaining), first_use),
                            Consumption::Exhausted => {
                                tx.rollback().await?;
                                return Ok(IdempotencyBegin::Exhausted);
                            }
                        }
                    }
                };
                tx.commit().await?;
                return Ok(IdempotencyBegin::Charged {
                    remaining,
                    first_use,
                });
            }
            let row = sqlx::query(DB::SELECT_ENTRY)
                .bind(token.clone())
                .bind(key.clone())
                .fetch_optional(&mut *tx)
                .await?;
            // The entry we conflicted with was deleted since: claim the key again.
            let Some(row) = row else { continue };
            let entry = crate::entry_from_row(&row)?;
            return match crate::judge(entry, r.fingerprint, r.now_unix, r.stale_after_secs)? {
                Verdict::Answer(answer) => {
                    tx.rollback().await?;
                    Ok(answer)
                }
                Verdict::TakeOver => {
                    sqlx::query(TAKE_OVER)
                        .bind(token)
                        .bind(key)
                        .bind(to_i64(r.now_unix))
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
        sqlx::query(COMPLETE)
            .bind(token.0.to_vec())
            .bind(key.as_bytes().to_vec())
            .bind(i64::from(response.status))
            .bind(crate::encode_headers(&response.headers)?)
            .bind(response.body.clone())
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
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let charged: Option<bool> = sqlx::query_scalar(ABORT)
            .bind(token.0.to_vec())
            .bind(key.as_bytes().to_vec())
            .fetch_optional(&mut *tx)
            .await?;
        if refund_call && charged == Some(true) {
            refund(&mut *tx, token).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn prune_idempotency(&self, older_than_unix: u64) -> Result<u64, StoreError> {
        delete(&self.pool, PRUNE_IDEMPOTENCY, older_than_unix).await
    }

    async fn claim_x402_payment(
        &self,
        replay_key: &str,
        now_unix: u64,
        expires_at: u64,
    ) -> Result<X402Claim, StoreError> {
        if replay_key.is_empty() || replay_key.len() > crate::MAX_X402_KEY_LEN {
            return Err(StoreError::InvalidArgument(
                "an x402 replay key is 1 to 512 bytes",
            ));
        }
        let done = sqlx::query(CLAIM_X402)
            .bind(replay_key.to_owned())
            .bind(to_i64(now_unix))
            .bind(to_i64(expires_at))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 1 {
            return Ok(X402Claim::Claimed);
        }
        let settled: Option<Option<String>> = sqlx::query_scalar(X402_SETTLED)
            .bind(replay_key.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match settled.flatten() {
            Some(settle_header) => X402Claim::Settled { settle_header },
            None => X402Claim::Taken,
        })
    }

    async fn record_x402_settlement(
        &self,
        replay_key: &str,
        settle_header: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(RECORD_X402_SETTLEMENT)
            .bind(replay_key.to_owned())
            .bind(settle_header.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn release_x402_payment(&self, replay_key: &str) -> Result<(), StoreError> {
        sqlx::query(RELEASE_X402)
            .bind(replay_key.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn prune_x402_payments(&self, now_unix: u64) -> Result<u64, StoreError> {
        delete(&self.pool, PRUNE_X402, now_unix).await
    }
}

/// Adds one delta to its row: created at the delta, else each column summed.
const ADD_DAILY: &str = "INSERT INTO stats_daily
    (day, service, earned_msat, challenges, payments, calls_served, calls_refunded, free_calls,
     rate_limited)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (day, service) DO UPDATE
       SET earned_msat = stats_daily.earned_msat + excluded.earned_msat,
           challenges = stats_daily.challenges + excluded.challenges,
           payments = stats_daily.payments + excluded.payments,
           calls_served = stats_daily.calls_served + excluded.calls_served,
           calls_refunded = stats_daily.calls_refunded + excluded.calls_refunded,
           free_calls = stats_daily.free_calls + excluded.free_calls,
           rate_limited = stats_daily.rate_limited + excluded.rate_limited";

/// The columns [`daily_row`] reads, of days `$1..=$2`; a service filter may follow.
macro_rules! select_daily {
    ($filter:literal) => {
        concat!(
            "SELECT day, service, earned_msat, challenges, payments, calls_served, calls_refunded,
                    free_calls, rate_limited
               FROM stats_daily WHERE day >= $1 AND day <= $2",
            $filter,
            " ORDER BY day, service"
        )
    };
}

/// A time pass's first use: its row in `token_passes` (later uses move `last_used_at` through
/// the admin store's `note_pass_use`).
const RECORD_PASS_USE: &str =
    "INSERT INTO token_passes (token_id, service, first_used_at, last_used_at)
    VALUES ($1, $2, $3, $3)
    ON CONFLICT (token_id) DO NOTHING";

/// Reads a `stats_daily` row of `select_daily!`.
fn daily_row<'r, R>(row: &'r R) -> Result<crate::DailyStats, StoreError>
where
    R: sqlx::Row,
    usize: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let count = |i: usize, what: &'static str| -> Result<u64, StoreError> {
        crate::to_u64(row.try_get(i)?, what)
    };
    let day: String = row.try_get(0)?;
    Ok(crate::DailyStats {
        day: day
            .parse()
            .map_err(|_| StoreError::Corrupt("stats_daily.day"))?,
        service: row.try_get(1)?,
        counts: crate::StatCounts {
            earned_msat: count(2, "stats_daily.earned_msat")?,
            challenges: count(3, "stats_daily.challenges")?,
            payments: count(4, "stats_daily.payments")?,
            calls_served: count(5, "stats_daily.calls_served")?,
            calls_refunded: count(6, "stats_daily.calls_refunded")?,
            free_calls: count(7, "stats_daily.free_calls")?,
            rate_limited: count(8, "stats_daily.rate_limited")?,
        },
    })
}

#[async_trait]
impl<DB: Dialect> crate::StatsStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Codec<DB>,
    Vec<u8>: Codec<DB>,
    String: Codec<DB>,
{
    async fn add_daily_stats(&self, deltas: &[crate::DailyStats]) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        for d in deltas {
            let c = &d.counts;
            sqlx::query(ADD_DAILY)
                .bind(d.day.to_string())
                .bind(d.service.clone())
                .bind(to_i64(c.earned_msat))
                .bind(to_i64(c.challenges))
                .bind(to_i64(c.payments))
                .bind(to_i64(c.calls_served))
                .bind(to_i64(c.calls_refunded))
                .bind(to_i64(c.free_calls))
                .bind(to_i64(c.rate_limited))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn daily_stats(
        &self,
        from: crate::Day,
        to: crate::Day,
        service: Option<&str>,
    ) -> Result<Vec<crate::DailyStats>, StoreError> {
        let sql = match service {
            None => select_daily!(""),
            Some(_) => select_daily!(" AND service = $3"),
        };
        let mut query = sqlx::query(sql).bind(from.to_string()).bind(to.to_string());
        if let Some(s) = service {
            query = query.bind(s.to_owned());
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(daily_row).collect()
    }

    async fn record_pass_use(
        &self,
        token: &TokenId,
        service: &str,
        now_unix: u64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(RECORD_PASS_USE)
            .bind(token.0.to_vec())
            .bind(service.to_owned())
            .bind(to_i64(now_unix))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(any(test, feature = "test-support"))]
#[async_trait]
impl<DB: Dialect> crate::Inspect for SqlStore<DB>
where
    Self: Store,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Codec<DB>,
    Vec<u8>: Codec<DB>,
    String: Codec<DB>,
{
    async fn token_usage(&self, token: &TokenId) -> Result<Option<crate::TokenUsage>, StoreError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT calls_total, used FROM token_usage WHERE token_id = $1")
                .bind(token.0.to_vec())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(calls_total, used)| {
            Ok(crate::TokenUsage {
                calls_total: crate::to_u64(calls_total, "token_usage.calls_total")?,
                used: crate::to_u64(used, "token_usage.used")?,
            })
        })
        .transpose()
    }

    async fn invoice(
        &self,
        hash: &turnpike_l402::PaymentHash,
    ) -> Result<Option<InvoiceRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT token_id, service, amount_msat, calls, created_at, expires_at
               FROM invoices WHERE payment_hash = $1",
        )
        .bind(hash.0.to_vec())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| crate::invoice_from_row(*hash, &row))
            .transpose()
    }
}

const NEXT_SEQUENCE: &str = "UPDATE admin_sequence SET seq = seq + 1 WHERE id = 1 RETURNING seq";

const SEQUENCE: &str = "SELECT seq FROM admin_sequence WHERE id = 1";

const STORED_SERVICES: &str =
    "SELECT name, config, updated_at, seq FROM admin_services ORDER BY name";

const PUT_SERVICE: &str = "INSERT INTO admin_services (name, config, updated_at, seq)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (name) DO UPDATE
       SET config = excluded.config, updated_at = excluded.updated_at, seq = excluded.seq";

const REVOKE: &str = "INSERT INTO revocations (token_id, revoked_at, seq) VALUES ($1, $2, $3)
    ON CONFLICT (token_id) DO NOTHING";

const REVOCATIONS_SINCE: &str = "SELECT token_id FROM revocations WHERE seq > $1";

/// Tokens minted (an invoice), with their use, newest first. `$1` service ('' = any), `$2` 0
/// any / 1 paid / 2 unpaid, `$3`/`$4` the cursor position, `$5` the limit.
const LIST_TOKENS: &str = "SELECT i.token_id, i.service, i.amount_msat, i.created_at,
        u.calls_total, u.used, COALESCE(u.first_used_at, p.first_used_at),
        COALESCE(u.last_used_at, p.last_used_at), r.revoked_at
   FROM invoices i
   LEFT JOIN token_usage u ON u.token_id = i.token_id
   LEFT JOIN token_passes p ON p.token_id = i.token_id
   LEFT JOIN revocations r ON r.token_id = i.token_id
  WHERE ($1 = '' OR i.service = $1)
    AND ($2 = 0
         OR ($2 = 1 AND (u.token_id IS NOT NULL OR p.token_id IS NOT NULL))
         OR ($2 = 2 AND u.token_id IS NULL AND p.token_id IS NULL))
    AND (i.created_at < $3 OR (i.created_at = $3 AND i.token_id < $4))
  ORDER BY i.created_at DESC, i.token_id DESC
  LIMIT $5";

/// First uses of counted tokens and of time passes, newest first.
const RECENT_PAYMENTS: &str = "SELECT token_id, service, amount_msat, paid_at FROM (
    SELECT u.token_id AS token_id, i.service AS service, i.amount_msat AS amount_msat,
           u.first_used_at AS paid_at
      FROM token_usage u JOIN invoices i ON i.token_id = u.token_id
    UNION ALL
    SELECT p.token_id, i.service, i.amount_msat, p.first_used_at
      FROM token_passes p JOIN invoices i ON i.token_id = p.token_id
     WHERE NOT EXISTS (SELECT 1 FROM token_usage u2 WHERE u2.token_id = p.token_id)
  ) paid ORDER BY paid_at DESC, token_id DESC LIMIT $1";

const NOTE_PASS: &str = "INSERT INTO token_passes (token_id, service, first_used_at, last_used_at)
    VALUES ($1, $2, $3, $3)
    ON CONFLICT (token_id) DO UPDATE
       SET last_used_at = CASE WHEN excluded.last_used_at > token_passes.last_used_at
                               THEN excluded.last_used_at ELSE token_passes.last_used_at END";

const CREATE_PROVIDER: &str = "INSERT INTO hub_providers
    (slug, name, contact, payout, token_hash, status, created_at, trial_ends_at, seq)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING";

const PROVIDERS: &str = "SELECT slug, name, contact, payout, token_hash, status, created_at,
    trial_ends_at FROM hub_providers ORDER BY slug";

const RECORD_FEE: &str = "INSERT INTO hub_fees
    (token_id, provider, service, price_msat, fee_msat, issued_at, payment_hash)
    VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (token_id) DO NOTHING";

const FEE_PAID_BY_HASH: &str =
    "UPDATE hub_fees SET paid_at = $2 WHERE payment_hash = $1 AND paid_at IS NULL";

const RECORD_VERIFY: &str = "INSERT INTO hub_verify
    (payment_hash, provider, url, amount_msat, expires_at, next_at, wait_secs)
    VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (payment_hash) DO NOTHING";

const FORGET_EXPIRED_VERIFY: &str = "DELETE FROM hub_verify WHERE expires_at <= $1";

const VERIFY_DUE: &str = "SELECT payment_hash, provider, url, amount_msat, expires_at, next_at,
        wait_secs
   FROM hub_verify WHERE next_at <= $1 AND expires_at > $1 ORDER BY next_at LIMIT $2";

/// Taken only by the replica that still sees `next_at` as `$2`.
const CLAIM_VERIFY: &str =
    "UPDATE hub_verify SET next_at = $3, wait_secs = $4 WHERE payment_hash = $1 AND next_at = $2";

const FORGET_VERIFY: &str = "DELETE FROM hub_verify WHERE payment_hash = $1";

const FEE_PAID: &str = "UPDATE hub_fees SET paid_at = $2 WHERE token_id = $1 AND paid_at IS NULL";

/// `$1` a provider's slug ('' = every provider).
const FEE_TOTALS: &str = "SELECT provider, COUNT(*), CAST(SUM(price_msat) AS BIGINT),
        CAST(SUM(fee_msat) AS BIGINT)
   FROM hub_fees WHERE paid_at >= $2 AND paid_at < $3 AND ($1 = '' OR provider = $1)
  GROUP BY provider ORDER BY provider";

/// `$1` a provider's slug ('' = every provider). Fee rows by the state of their bill, and the
/// amounts of the paid bills (a provider with bills but no paid token has only those).
const FEE_STANDING: &str = "SELECT p.provider,
        (SELECT COUNT(*) FROM hub_fees f WHERE f.provider = p.provider AND f.paid_at IS NOT NULL),
        (SELECT CAST(COALESCE(SUM(f.price_msat), 0) AS BIGINT) FROM hub_fees f
          WHERE f.provider = p.provider AND f.paid_at IS NOT NULL),
        (SELECT CAST(COALESCE(SUM(f.fee_msat), 0) AS BIGINT) FROM hub_fees f
          WHERE f.provider = p.provider AND f.paid_at IS NOT NULL AND f.bill IS NULL),
        (SELECT CAST(COALESCE(SUM(f.fee_msat), 0) AS BIGINT) FROM hub_fees f JOIN hub_bills b
             ON b.payment_hash = f.bill
          WHERE f.provider = p.provider AND b.paid_at IS NULL),
        (SELECT CAST(COALESCE(SUM(f.fee_msat), 0) AS BIGINT) FROM hub_fees f JOIN hub_bills b
             ON b.payment_hash = f.bill
          WHERE f.provider = p.provider AND b.paid_at IS NOT NULL),
        (SELECT CAST(COALESCE(SUM(b.amount_msat), 0) AS BIGINT) FROM hub_bills b
          WHERE b.provider = p.provider AND b.paid_at IS NOT NULL)
   FROM (SELECT provider FROM hub_fees WHERE paid_at IS NOT NULL
         UNION SELECT provider FROM hub_bills) p
  WHERE $1 = '' OR p.provider = $1
  ORDER BY p.provider";

const UNBILLED_FEES: &str = "SELECT provider, CAST(SUM(fee_msat) AS BIGINT) FROM hub_fees f
  WHERE paid_at IS NOT NULL AND paid_at < $1 AND bill IS NULL
    AND NOT EXISTS (SELECT 1 FROM hub_bills b WHERE b.provider = f.provider AND b.paid_at IS NULL)
  GROUP BY provider ORDER BY provider";

const OPEN_BILL_EXISTS: &str =
    "SELECT COUNT(*) FROM hub_bills WHERE provider = $1 AND paid_at IS NULL";

const BILL_FEES: &str = "UPDATE hub_fees SET bill = $3
  WHERE provider = $1 AND paid_at IS NOT NULL AND paid_at < $2 AND bill IS NULL
  RETURNING fee_msat";

const INSERT_BILL: &str = "INSERT INTO hub_bills
    (payment_hash, provider, fees_msat, amount_msat, bolt11, created_at, due_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// `$1` a provider's slug ('' = every provider), `$2` 1: unpaid only, `$3` the limit.
const BILLS: &str = "SELECT payment_hash, provider, fees_msat, amount_msat, bolt11, created_at,
        due_at, paid_at
   FROM hub_bills WHERE ($1 = '' OR provider = $1) AND ($2 = 0 OR paid_at IS NULL)
  ORDER BY created_at DESC, payment_hash DESC LIMIT $3";

/// Moves an unpaid bill (`$1`) to a new invoice (`$2`, `$3`).
const REISSUE_BILL: &str = "UPDATE hub_bills SET payment_hash = $2, bolt11 = $3
  WHERE payment_hash = $1 AND paid_at IS NULL";

/// Its fee rows follow it.
const MOVE_BILLED_FEES: &str = "UPDATE hub_fees SET bill = $2 WHERE bill = $1";

const BILL_PAID: &str =
    "UPDATE hub_bills SET paid_at = $2 WHERE payment_hash = $1 AND paid_at IS NULL";

type BillRow = (Vec<u8>, String, i64, i64, String, i64, i64, Option<i64>);

fn bill_record(row: BillRow) -> Result<crate::BillRecord, StoreError> {
    let (hash, provider, fees, amount, bolt11, created, due, paid) = row;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| StoreError::Corrupt("hub_bills.payment_hash"))?;
    Ok(crate::BillRecord {
        payment_hash: turnpike_l402::PaymentHash(hash),
        provider,
        fees: turnpike_l402::Msat(crate::to_u64(fees, "hub_bills.fees_msat")?),
        amount: turnpike_l402::Msat(crate::to_u64(amount, "hub_bills.amount_msat")?),
        bolt11,
        created_at: crate::to_u64(created, "hub_bills.created_at")?,
        due_at: crate::to_u64(due, "hub_bills.due_at")?,
        paid_at: paid
            .map(|p| crate::to_u64(p, "hub_bills.paid_at"))
            .transpose()?,
    })
}

const SET_PROVIDER_PAYOUT: &str = "UPDATE hub_providers SET payout = $2, seq = $3 WHERE slug = $1";

const SET_PROVIDER_STATUS: &str = "UPDATE hub_providers SET status = $2, seq = $3 WHERE slug = $1";

type ProviderRow = (String, String, String, String, Vec<u8>, String, i64, i64);

fn provider_record(row: ProviderRow) -> Result<crate::ProviderRecord, StoreError> {
    let (slug, name, contact, payout, hash, status, created, trial) = row;
    Ok(crate::ProviderRecord {
        slug,
        name,
        contact,
        payout,
        token_hash: hash
            .try_into()
            .map_err(|_| StoreError::Corrupt("hub_providers.token_hash"))?,
        status,
        created_at: crate::to_u64(created, "hub_providers.created_at")?,
        trial_ends_at: crate::to_u64(trial, "hub_providers.trial_ends_at")?,
    })
}

type VerifyRow = (Vec<u8>, String, String, i64, i64, i64, i64);

fn verify_record(row: VerifyRow) -> Result<crate::VerifyRecord, StoreError> {
    let (hash, provider, url, amount, expires, next, wait) = row;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| StoreError::Corrupt("hub_verify.payment_hash"))?;
    Ok(crate::VerifyRecord {
        payment_hash: turnpike_l402::PaymentHash(hash),
        provider,
        url,
        amount: turnpike_l402::Msat(crate::to_u64(amount, "hub_verify.amount_msat")?),
        expires_at: crate::to_u64(expires, "hub_verify.expires_at")?,
        next_at: crate::to_u64(next, "hub_verify.next_at")?,
        wait_secs: crate::to_u64(wait, "hub_verify.wait_secs")?,
    })
}

type TokenRow = (
    Vec<u8>,
    String,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

fn token_record(row: TokenRow) -> Result<crate::TokenRecord, StoreError> {
    let (token, service, amount, issued, total, used, first, last, revoked) = row;
    let opt = |v: Option<i64>, what| v.map(|v| crate::to_u64(v, what)).transpose();
    let first_used = opt(first, "token.first_used_at")?;
    Ok(crate::TokenRecord {
        token_id: crate::admin::token_id(token, "invoices.token_id")?,
        service,
        amount: turnpike_l402::Msat(crate::to_u64(amount, "invoices.amount_msat")?),
        issued_at: crate::to_u64(issued, "invoices.created_at")?,
        paid: first_used.is_some(),
        calls_total: opt(total, "token_usage.calls_total")?,
        calls_used: opt(used, "token_usage.used")?.unwrap_or(0),
        first_used,
        last_used: opt(last, "token.last_used_at")?,
        revoked: revoked.is_some(),
    })
}

impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Codec<DB>,
{
    /// Runs `write` (binding the change's sequence number) in one writing transaction that first
    /// takes the next sequence number.
    async fn with_next_sequence(
        &self,
        write: impl FnOnce(i64) -> sqlx::query::Query<'static, DB, <DB as Database>::Arguments>,
    ) -> Result<u64, StoreError> {
        self.sequenced(write, false)
            .await?
            .ok_or(StoreError::Corrupt("a sequenced write vanished"))
    }

    async fn select_bills(
        &self,
        provider: Option<&str>,
        open_only: bool,
        limit: u32,
    ) -> Result<Vec<crate::BillRecord>, StoreError>
    where
        String: Codec<DB>,
        Vec<u8>: Codec<DB>,
        Option<i64>: Codec<DB>,
    {
        let rows: Vec<BillRow> = sqlx::query_as(BILLS)
            .bind(provider.unwrap_or_default().to_owned())
            .bind(i64::from(open_only))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(bill_record).collect()
    }

    /// Runs `sql` (`$1` a provider's slug, `$2` a value, `$3` the change's sequence number):
    /// the change's number, or `None` when there is no such provider.
    async fn update_provider(
        &self,
        sql: &'static str,
        slug: &str,
        value: &str,
    ) -> Result<Option<u64>, StoreError>
    where
        String: Codec<DB>,
    {
        let (slug, value) = (slug.to_owned(), value.to_owned());
        self.with_next_sequence_if_changed(move |seq| {
            sqlx::query(sql).bind(slug).bind(value).bind(seq)
        })
        .await
    }

    /// Like [`Self::with_next_sequence`], but only when `write` changes a row: otherwise
    /// nothing is kept (the sequence number included) and the answer is `None`.
    async fn with_next_sequence_if_changed(
        &self,
        write: impl FnOnce(i64) -> sqlx::query::Query<'static, DB, <DB as Database>::Arguments>,
    ) -> Result<Option<u64>, StoreError> {
        self.sequenced(write, true).await
    }

    async fn sequenced(
        &self,
        write: impl FnOnce(i64) -> sqlx::query::Query<'static, DB, <DB as Database>::Arguments>,
        must_change: bool,
    ) -> Result<Option<u64>, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let seq: i64 = sqlx::query_scalar(NEXT_SEQUENCE)
            .fetch_one(&mut *tx)
            .await?;
        let done = write(seq).execute(&mut *tx).await?;
        if must_change && done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        tx.commit().await?;
        crate::to_u64(seq, "admin_sequence.seq").map(Some)
    }
}

#[async_trait]
impl<DB: Dialect> crate::AdminStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Codec<DB>,
    Vec<u8>: Codec<DB>,
    String: Codec<DB>,
    Option<String>: Codec<DB>,
    Option<i64>: Codec<DB>,
{
    async fn sequence(&self) -> Result<u64, StoreError> {
        let seq: i64 = sqlx::query_scalar(SEQUENCE).fetch_one(&self.pool).await?;
        crate::to_u64(seq, "admin_sequence.seq")
    }

    async fn stored_services(&self) -> Result<Vec<crate::StoredService>, StoreError> {
        let rows: Vec<(String, Option<String>, i64, i64)> = sqlx::query_as(STORED_SERVICES)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|(name, config, updated_at, seq)| {
                Ok(crate::StoredService {
                    name,
                    config,
                    updated_at: crate::to_u64(updated_at, "admin_services.updated_at")?,
                    seq: crate::to_u64(seq, "admin_services.seq")?,
                })
            })
            .collect()
    }

    async fn put_service(
        &self,
        name: &str,
        config: Option<&str>,
        now_unix: u64,
    ) -> Result<u64, StoreError> {
        let (name, config) = (name.to_owned(), config.map(str::to_owned));
        self.with_next_sequence(move |seq| {
            sqlx::query(PUT_SERVICE)
                .bind(name)
                .bind(config)
                .bind(to_i64(now_unix))
                .bind(seq)
        })
        .await
    }

    async fn revoke_token(&self, token: &TokenId, now_unix: u64) -> Result<u64, StoreError> {
        let token = token.0.to_vec();
        self.with_next_sequence(move |seq| {
            sqlx::query(REVOKE)
                .bind(token)
                .bind(to_i64(now_unix))
                .bind(seq)
        })
        .await
    }

    async fn revocations_since(&self, after: u64) -> Result<Vec<TokenId>, StoreError> {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(REVOCATIONS_SINCE)
            .bind(to_i64(after))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|t| crate::admin::token_id(t, "revocations.token_id"))
            .collect()
    }

    async fn list_tokens(
        &self,
        q: &crate::TokenQuery<'_>,
    ) -> Result<Vec<crate::TokenRecord>, StoreError> {
        let paid: i64 = match q.paid {
            None => 0,
            Some(true) => 1,
            Some(false) => 2,
        };
        let (before_at, before_id) = q.before.map_or((i64::MAX, vec![0xff; 33]), |(at, id)| {
            (to_i64(at), id.0.to_vec())
        });
        let rows: Vec<TokenRow> = sqlx::query_as(LIST_TOKENS)
            .bind(q.service.unwrap_or_default().to_owned())
            .bind(paid)
            .bind(before_at)
            .bind(before_id)
            .bind(i64::from(q.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(token_record).collect()
    }

    async fn recent_payments(&self, limit: u32) -> Result<Vec<crate::PaymentRecord>, StoreError> {
        let rows: Vec<(Vec<u8>, String, i64, i64)> = sqlx::query_as(RECENT_PAYMENTS)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|(token, service, amount, paid_at)| {
                Ok(crate::PaymentRecord {
                    token_id: crate::admin::token_id(token, "token_usage.token_id")?,
                    service,
                    amount: turnpike_l402::Msat(crate::to_u64(amount, "invoices.amount_msat")?),
                    paid_at: crate::to_u64(paid_at, "token_usage.first_used_at")?,
                })
            })
            .collect()
    }

    async fn note_pass_use(
        &self,
        token: &TokenId,
        service: &str,
        now_unix: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(NOTE_PASS)
            .bind(token.0.to_vec())
            .bind(service.to_owned())
            .bind(to_i64(now_unix))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn create_provider(&self, p: &crate::ProviderRecord) -> Result<Option<u64>, StoreError> {
        let p = p.clone();
        self.with_next_sequence_if_changed(move |seq| {
            sqlx::query(CREATE_PROVIDER)
                .bind(p.slug)
                .bind(p.name)
                .bind(p.contact)
                .bind(p.payout)
                .bind(p.token_hash.to_vec())
                .bind(p.status)
                .bind(to_i64(p.created_at))
                .bind(to_i64(p.trial_ends_at))
                .bind(seq)
        })
        .await
    }

    async fn providers(&self) -> Result<Vec<crate::ProviderRecord>, StoreError> {
        let rows: Vec<ProviderRow> = sqlx::query_as(PROVIDERS).fetch_all(&self.pool).await?;
        rows.into_iter().map(provider_record).collect()
    }

    async fn record_fee(&self, f: &crate::FeeRecord) -> Result<(), StoreError> {
        sqlx::query(RECORD_FEE)
            .bind(f.token_id.0.to_vec())
            .bind(f.provider.clone())
            .bind(f.service.clone())
            .bind(to_i64(f.price.0))
            .bind(to_i64(f.fee.0))
            .bind(to_i64(f.issued_at))
            .bind(f.payment_hash.0.to_vec())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn fee_paid(&self, token: &TokenId, now_unix: u64) -> Result<bool, StoreError> {
        let done = sqlx::query(FEE_PAID)
            .bind(token.0.to_vec())
            .bind(to_i64(now_unix))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn fee_paid_by_hash(
        &self,
        hash: &turnpike_l402::PaymentHash,
        now_unix: u64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(FEE_PAID_BY_HASH)
            .bind(hash.0.to_vec())
            .bind(to_i64(now_unix))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_verify(&self, v: &crate::VerifyRecord) -> Result<(), StoreError> {
        sqlx::query(RECORD_VERIFY)
            .bind(v.payment_hash.0.to_vec())
            .bind(v.provider.clone())
            .bind(v.url.clone())
            .bind(to_i64(v.amount.0))
            .bind(to_i64(v.expires_at))
            .bind(to_i64(v.next_at))
            .bind(to_i64(v.wait_secs))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn verify_due(
        &self,
        now_unix: u64,
        limit: u32,
    ) -> Result<Vec<crate::VerifyRecord>, StoreError> {
        sqlx::query(FORGET_EXPIRED_VERIFY)
            .bind(to_i64(now_unix))
            .execute(&self.pool)
            .await?;
        let rows: Vec<VerifyRow> = sqlx::query_as(VERIFY_DUE)
            .bind(to_i64(now_unix))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(verify_record).collect()
    }

    async fn claim_verify(
        &self,
        hash: &turnpike_l402::PaymentHash,
        seen_next_at: u64,
        (next_at, wait_secs): (u64, u64),
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(CLAIM_VERIFY)
            .bind(hash.0.to_vec())
            .bind(to_i64(seen_next_at))
            .bind(to_i64(next_at))
            .bind(to_i64(wait_secs))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn forget_verify(&self, hash: &turnpike_l402::PaymentHash) -> Result<(), StoreError> {
        sqlx::query(FORGET_VERIFY)
            .bind(hash.0.to_vec())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_provider_payout(
        &self,
        slug: &str,
        payout: &str,
    ) -> Result<Option<u64>, StoreError> {
        self.update_provider(SET_PROVIDER_PAYOUT, slug, payout)
            .await
    }

    async fn set_provider_status(
        &self,
        slug: &str,
        status: &str,
    ) -> Result<Option<u64>, StoreError> {
        self.update_provider(SET_PROVIDER_STATUS, slug, status)
            .await
    }

    async fn fee_totals(
        &self,
        provider: Option<&str>,
        paid: std::ops::Range<u64>,
    ) -> Result<Vec<crate::FeeTotals>, StoreError> {
        let rows: Vec<(String, i64, Option<i64>, Option<i64>)> = sqlx::query_as(FEE_TOTALS)
            .bind(provider.unwrap_or_default().to_owned())
            .bind(to_i64(paid.start))
            .bind(to_i64(paid.end))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|(provider, n, revenue, fees)| {
                Ok(crate::FeeTotals {
                    provider,
                    payments: crate::to_u64(n, "hub_fees count")?,
                    revenue: turnpike_l402::Msat(crate::to_u64(
                        revenue.unwrap_or(0),
                        "hub_fees.price_msat",
                    )?),
                    fees: turnpike_l402::Msat(crate::to_u64(
                        fees.unwrap_or(0),
                        "hub_fees.fee_msat",
                    )?),
                })
            })
            .collect()
    }

    async fn fee_standing(
        &self,
        provider: Option<&str>,
    ) -> Result<Vec<crate::FeeStanding>, StoreError> {
        let rows: Vec<(String, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(FEE_STANDING)
            .bind(provider.unwrap_or_default().to_owned())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|(provider, n, revenue, unbilled, unpaid, paid, earned)| {
                let msat = |v, what| crate::to_u64(v, what).map(turnpike_l402::Msat);
                let (unbilled, billed_unpaid, billed_paid) = (
                    msat(unbilled, "hub_fees.fee_msat")?,
                    msat(unpaid, "hub_fees.fee_msat")?,
                    msat(paid, "hub_fees.fee_msat")?,
                );
                let fees = unbilled
                    .0
                    .checked_add(billed_unpaid.0)
                    .and_then(|f| f.checked_add(billed_paid.0))
                    .ok_or(StoreError::Corrupt("hub_fees.fee_msat sum"))?;
                Ok(crate::FeeStanding {
                    provider,
                    payments: crate::to_u64(n, "hub_fees count")?,
                    revenue: msat(revenue, "hub_fees.price_msat")?,
                    fees: turnpike_l402::Msat(fees),
                    unbilled,
                    billed_unpaid,
                    billed_paid,
                    earned: msat(earned, "hub_bills.amount_msat")?,
                })
            })
            .collect()
    }

    async fn unbilled_fees(
        &self,
        before: u64,
    ) -> Result<Vec<(String, turnpike_l402::Msat)>, StoreError> {
        let rows: Vec<(String, Option<i64>)> = sqlx::query_as(UNBILLED_FEES)
            .bind(to_i64(before))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|(provider, fees)| {
                let fees = crate::to_u64(fees.unwrap_or(0), "hub_fees.fee_msat")?;
                Ok((provider, turnpike_l402::Msat(fees)))
            })
            .collect()
    }

    async fn open_bill(&self, b: &crate::BillRecord, before: u64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let open: i64 = sqlx::query_scalar(OPEN_BILL_EXISTS)
            .bind(b.provider.clone())
            .fetch_one(&mut *tx)
            .await?;
        let billed: Vec<i64> = match open {
            0 => {
                sqlx::query_scalar(BILL_FEES)
                    .bind(b.provider.clone())
                    .bind(to_i64(before))
                    .bind(b.payment_hash.0.to_vec())
                    .fetch_all(&mut *tx)
                    .await?
            }
            _ => Vec::new(),
        };
        let sum = billed
            .iter()
            .try_fold(0u64, |acc, f| acc.checked_add(u64::try_from(*f).ok()?));
        if open != 0 || billed.is_empty() || sum != Some(b.fees.0) {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(INSERT_BILL)
            .bind(b.payment_hash.0.to_vec())
            .bind(b.provider.clone())
            .bind(to_i64(b.fees.0))
            .bind(to_i64(b.amount.0))
            .bind(b.bolt11.clone())
            .bind(to_i64(b.created_at))
            .bind(to_i64(b.due_at))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn reissue_bill(
        &self,
        old: &turnpike_l402::PaymentHash,
        new: (&turnpike_l402::PaymentHash, &str),
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let moved = sqlx::query(REISSUE_BILL)
            .bind(old.0.to_vec())
            .bind(new.0.0.to_vec())
            .bind(new.1.to_owned())
            .execute(&mut *tx)
            .await?;
        if moved.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(MOVE_BILLED_FEES)
            .bind(old.0.to_vec())
            .bind(new.0.0.to_vec())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn open_bills(&self) -> Result<Vec<crate::BillRecord>, StoreError> {
        self.select_bills(None, true, u32::MAX).await
    }

    async fn bills(
        &self,
        provider: Option<&str>,
        limit: u32,
    ) -> Result<Vec<crate::BillRecord>, StoreError> {
        self.select_bills(provider, false, limit).await
    }

    async fn bill_paid(
        &self,
        hash: &turnpike_l402::PaymentHash,
        now_unix: u64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(BILL_PAID)
            .bind(hash.0.to_vec())
            .bind(to_i64(now_unix))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: i64 = sqlx::query_scalar(SEQUENCE).fetch_one(&self.pool).await?;
        Ok(())
    }
}
