//! # turnpike-store
//!
//! Turnpike's durable state behind one narrow trait, [`Store`]:
//! - how many calls each paid token has used (consumed with one atomic statement), and
//! - the invoices issued with 402 challenges (pruned once they expire unpaid).
//!
//! Credentials themselves are verified without the store (root keys are derived), so the store
//! is touched only to count calls. [`SqliteStore`] is the embedded default.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod postgres;
mod sqlite;

use async_trait::async_trait;
use turnpike_l402::{Msat, PaymentHash, TokenId};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Errors from a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL is not one this build understands.
    #[error("unsupported store URL {0:?}: expected sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A schema migration failed.
    #[error("migration {version} failed: {source}")]
    Migration {
        /// The migration that failed.
        version: i64,
        /// Why.
        source: sqlx::Error,
    },
    /// A value read back from the database is out of range.
    #[error("corrupt value in store: {0}")]
    Corrupt(&'static str),
}

/// The result of trying to consume one call of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumption {
    /// One call was consumed; `remaining` calls are left after it.
    Granted {
        /// Calls left after this one.
        remaining: u64,
    },
    /// The token has no calls left; nothing was consumed.
    Exhausted,
}

/// An invoice issued with a 402 challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceRecord {
    /// The invoice's payment hash.
    pub payment_hash: PaymentHash,
    /// The token minted with it.
    pub token_id: TokenId,
    /// The service it pays for.
    pub service: String,
    /// The amount asked.
    pub amount: Msat,
    /// Calls one payment buys (`None`: unlimited until the token expires).
    pub calls: Option<u64>,
    /// When it was issued (unix seconds).
    pub created_at: u64,
    /// When the invoice expires (unix seconds).
    pub expires_at: u64,
}

/// Usage of one token as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUsage {
    /// Calls the token grants.
    pub calls_total: u64,
    /// Calls consumed so far.
    pub used: u64,
}

/// Turnpike's durable state. Implementations must make [`Store::consume_call`] atomic: under any
/// concurrency, across processes sharing the database, a token never serves more calls than it
/// grants.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Consumes one call of `token`, which grants `calls_total` calls for `service`. When the
    /// token's earlier use recorded a different total, the smaller one applies (caveats only
    /// ever narrow a token).
    async fn consume_call(
        &self,
        token: &TokenId,
        service: &str,
        calls_total: u64,
        now_unix: u64,
    ) -> Result<Consumption, StoreError>;

    /// Gives back one call consumed by [`Store::consume_call`] (the call failed upstream).
    async fn refund_call(&self, token: &TokenId) -> Result<(), StoreError>;

    /// The recorded usage of `token`, if it was ever used.
    async fn token_usage(&self, token: &TokenId) -> Result<Option<TokenUsage>, StoreError>;

    /// Records an invoice issued with a challenge.
    async fn record_invoice(&self, invoice: &InvoiceRecord) -> Result<(), StoreError>;

    /// Looks up an issued invoice.
    async fn invoice(&self, hash: &PaymentHash) -> Result<Option<InvoiceRecord>, StoreError>;

    /// Deletes invoices that expired before `now_unix` and whose token was never used.
    /// Returns how many were deleted.
    async fn prune_expired_invoices(&self, now_unix: u64) -> Result<u64, StoreError>;
}

/// Opens the store named by `url` — `sqlite://PATH` (created if missing) or
/// `postgres://…` / `postgresql://…` — and brings its schema up to date.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PgStore::open(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64, what: &'static str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(what))
}

/// Reads an invoice row of `SELECT token_id, service, amount_msat, calls, created_at, expires_at`.
pub(crate) fn invoice_from_row<'r, R>(
    hash: PaymentHash,
    row: &'r R,
) -> Result<InvoiceRecord, StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let token: Vec<u8> = row.try_get(0)?;
    let token: [u8; 32] = token
        .try_into()
        .map_err(|_| StoreError::Corrupt("invoices.token_id"))?;
    let calls: Option<i64> = row.try_get(3)?;
    Ok(InvoiceRecord {
        payment_hash: hash,
        token_id: TokenId(token),
        service: row.try_get(1)?,
        amount: Msat(to_u64(row.try_get(2)?, "invoices.amount_msat")?),
        calls: calls.map(|c| to_u64(c, "invoices.calls")).transpose()?,
        created_at: to_u64(row.try_get(4)?, "invoices.created_at")?,
        expires_at: to_u64(row.try_get(5)?, "invoices.expires_at")?,
    })
}
