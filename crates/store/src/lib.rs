//! # turnpike-store
//!
//! Turnpike's durable state behind one narrow trait, [`Store`]:
//! - how many calls each paid token has used (consumed with one atomic statement), and
//! - the invoices issued with 402 challenges (pruned once they expire unpaid),
//! - free-tier calls taken per (service, client) in fixed windows, and
//! - idempotency entries, so a retried request carrying an `Idempotency-Key` is executed and
//!   charged once (created together with the charge, in one transaction), and
//! - x402 payments claimed before settlement, so one authorisation serves at most once.
//!
//! Credentials themselves are verified without the store (root keys are derived), so the store
//! is touched only to count calls. [`SqliteStore`] is the embedded default, [`PgStore`] lets
//! several gateway replicas share one database. Every operation is atomic across processes
//! sharing the database.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod batch;
mod health;
mod postgres;
mod sql;
mod sqlite;
mod stats;

use async_trait::async_trait;
use turnpike_l402::{Msat, PaymentHash, TokenId};

pub use admin::{
    AdminStore, BillRecord, FeeRecord, FeeStanding, FeeTotals, PaymentRecord, ProviderRecord,
    StoredService, TokenQuery, TokenRecord, VerifyRecord,
};
pub use health::{HealthCounts, HealthDelta, HealthStore, HealthSummary, ProbeOutcome};
pub use postgres::PgStore;
pub use sql::{Codec, Dialect, SqlStore};
pub use sqlite::SqliteStore;
pub use stats::{DailyStats, Day, DayError, StatCounts, StatsStore};

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
    /// An argument is outside what the operation accepts (for example a zero-length window).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// An idempotency entry kept changing under concurrent begins and aborts; nothing was
    /// recorded or consumed. Retrying is safe.
    #[error("too much contention on idempotency key; nothing was charged, retry")]
    Contention,
    /// The batch holding this call failed; nothing in it was consumed.
    #[error("database error (batched write): {0}")]
    Batch(String),
    /// The store's writer has stopped (the runtime is shutting down); nothing was consumed.
    #[error("the store is closed")]
    Closed,
}

/// The result of trying to consume one call of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumption {
    /// One call was consumed; `remaining` calls are left after it.
    Granted {
        /// Calls left after this one.
        remaining: u64,
        /// This was the token's first paid use (its usage row was created): one payment.
        /// A call given back does not make the next one a first use again.
        first_use: bool,
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
#[cfg(any(test, feature = "test-support"))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUsage {
    /// Calls the token grants.
    pub calls_total: u64,
    /// Calls consumed so far.
    pub used: u64,
}

/// A response recorded for an idempotency key, replayed byte for byte to a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers, in order (names as given, values as raw bytes).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The complete response body.
    pub body: Vec<u8>,
}

/// The outcome of [`Store::idempotency_begin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// A new entry was created in state in-flight and, in the same transaction, one call was
    /// consumed exactly as [`Store::consume_call`] would (`remaining` calls left after it; `None`
    /// when the token counts no calls and nothing was consumed). Forward the request, then call
    /// [`Store::idempotency_complete`] or [`Store::idempotency_abort`].
    Charged {
        /// Calls left after this one (`None`: the token is not counted).
        remaining: Option<u64>,
        /// The consume was the token's first paid use (as [`Consumption::Granted`]'s).
        first_use: bool,
    },
    /// The token has no call left: nothing was recorded and nothing consumed.
    Exhausted,
    /// The request was completed earlier with the same fingerprint: answer this response,
    /// nothing was consumed.
    Replay(StoredResponse),
    /// The key was used under this token for a different request (another fingerprint): `422`.
    /// Nothing was consumed.
    Mismatch,
    /// The same request is being executed right now: `409`. Nothing was consumed.
    InFlight,
    /// The entry was in flight for longer than `stale_after_secs` (its gateway presumably died):
    /// the caller now owns it and must forward, then complete or abort it. The call was already
    /// charged by the first attempt, so nothing was consumed again.
    TakenOver,
}

/// A request to [`Store::idempotency_begin`]: the request identified by `key` under `token`,
/// whose content hashes to `fingerprint`.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyRequest<'a> {
    /// The paid token the request is made with.
    pub token: &'a TokenId,
    /// The request's `Idempotency-Key` (at most 255 bytes).
    pub key: &'a str,
    /// The hash of the request's content.
    pub fingerprint: &'a [u8; 32],
    /// The service it is for.
    pub service: &'a str,
    /// Calls the token grants (`None`: the token counts no calls, nothing is consumed).
    pub calls_total: Option<u64>,
    /// Now (unix seconds).
    pub now_unix: u64,
    /// How long an entry may stay in flight before another begin takes it over.
    pub stale_after_secs: u64,
}

/// Turnpike's durable state. Every operation is atomic across processes sharing the database:
/// under any concurrency a token never serves more calls than it grants, a paid call is never
/// charged twice nor lost, and a free tier never grants more than its limit per window.
///
/// Every store also keeps the statistics of [`StatsStore`].
#[async_trait]
pub trait Store: StatsStore + Send + Sync + 'static {
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

    /// Records an invoice issued with a challenge.
    async fn record_invoice(&self, invoice: &InvoiceRecord) -> Result<(), StoreError>;

    /// Deletes invoices that expired before `now_unix` and whose token was never used.
    /// Returns how many were deleted.
    async fn prune_expired_invoices(&self, now_unix: u64) -> Result<u64, StoreError>;

    /// Takes one free call of `service` for `client` if fewer than `limit` were taken in the
    /// current window, and returns whether it was granted. Windows are fixed, `window_secs`
    /// long, aligned to `now_unix - now_unix % window_secs`; a refused call changes nothing.
    /// One atomic statement. `window_secs == 0` is [`StoreError::InvalidArgument`].
    async fn take_free_call(
        &self,
        service: &str,
        client: &str,
        limit: u64,
        window_secs: u64,
        now_unix: u64,
    ) -> Result<bool, StoreError>;

    /// Deletes the free-tier counters whose window ended at or before `now_unix` (a new window
    /// starts from zero anyway), so the table stays bounded. Returns how many were deleted.
    async fn prune_free_tier(&self, now_unix: u64) -> Result<u64, StoreError>;

    /// Begins executing the request `r`. For a new key the entry is created in-flight and one
    /// call is consumed in ONE transaction, with the rule of [`Store::consume_call`]
    /// (`calls_total` `None`: the token counts no calls, nothing is consumed); if the token is
    /// exhausted nothing is recorded. An existing entry gives [`IdempotencyBegin::Mismatch`]
    /// (other fingerprint), [`IdempotencyBegin::Replay`] (completed),
    /// [`IdempotencyBegin::InFlight`], or, when it has been in flight for more than
    /// `stale_after_secs`, [`IdempotencyBegin::TakenOver`] (its lease restarts at `now_unix`).
    /// Keys are at most 255 bytes.
    ///
    /// Of any number of concurrent begins with one (token, key), at most one is `Charged`.
    async fn idempotency_begin(
        &self,
        r: &IdempotencyRequest<'_>,
    ) -> Result<IdempotencyBegin, StoreError>;

    /// Records `response` for an in-flight entry, which becomes done: later begins with the
    /// same fingerprint replay it. Does nothing when the entry is not in flight (already
    /// completed by an owner that took it over, aborted, or pruned): the first completion wins.
    async fn idempotency_complete(
        &self,
        token: &TokenId,
        key: &str,
        response: &StoredResponse,
        now_unix: u64,
    ) -> Result<(), StoreError>;

    /// Deletes an in-flight entry (the upstream failed) and, when `refund` is set and its begin
    /// consumed a call, gives that call back — in ONE transaction, so a retry executes afresh
    /// and is charged afresh. Does nothing for a done or missing entry.
    async fn idempotency_abort(
        &self,
        token: &TokenId,
        key: &str,
        refund: bool,
    ) -> Result<(), StoreError>;

    /// Deletes done entries created before `older_than_unix` (their retry window has passed;
    /// a later request with such a key is executed and charged afresh). In-flight entries are
    /// kept. Returns how many were deleted.
    async fn prune_idempotency(&self, older_than_unix: u64) -> Result<u64, StoreError>;

    /// Claims the x402 payment named `replay_key` (its authorisation's
    /// `network/asset/payer/nonce`, at most [`MAX_X402_KEY_LEN`] bytes) until `expires_at` (its
    /// `validBefore`, after which it can no longer be settled): [`X402Claim::Claimed`] for the
    /// one caller that inserted it; every other, concurrent or later, in any process sharing
    /// the database, learns whether it was settled ([`Store::record_x402_settlement`]). One
    /// atomic insert. The gateway claims a payment before settling it, so one authorisation is
    /// sent for settlement at most once.
    async fn claim_x402_payment(
        &self,
        replay_key: &str,
        now_unix: u64,
        expires_at: u64,
    ) -> Result<X402Claim, StoreError>;

    /// Records that the claimed payment `replay_key` settled, with its `PAYMENT-RESPONSE`
    /// value. Does nothing for a key not claimed.
    async fn record_x402_settlement(
        &self,
        replay_key: &str,
        settle_header: &str,
    ) -> Result<(), StoreError>;

    /// Releases a claim, so the same authorisation may be presented again. Only for a claim
    /// whose payment was provably never sent for settlement (the facilitator refused or could
    /// not be asked to verify it). Releasing a missing key does nothing.
    async fn release_x402_payment(&self, replay_key: &str) -> Result<(), StoreError>;

    /// Deletes claims whose `expires_at` is before `now_unix` (those authorisations can no
    /// longer be settled, so a replay fails on chain and offline). Returns how many.
    async fn prune_x402_payments(&self, now_unix: u64) -> Result<u64, StoreError>;
}

/// The outcome of [`Store::claim_x402_payment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum X402Claim {
    /// This caller holds the payment now: settle it, then record the settlement (or release
    /// the claim if nothing was sent).
    Claimed,
    /// Another caller holds it and has not recorded a settlement (in progress, refused, or of
    /// unknown outcome).
    Taken,
    /// It was settled earlier; its `PAYMENT-RESPONSE` value.
    Settled {
        /// The header value recorded with the settlement.
        settle_header: String,
    },
}

/// Longest x402 replay key a store accepts (`network/asset/payer/nonce` is about 190 bytes).
pub const MAX_X402_KEY_LEN: usize = 512;

/// Read-back queries for tests, kept off [`Store`]: the gateway never reads usage or invoices
/// back. Enabled by the `test-support` feature.
#[cfg(any(test, feature = "test-support"))]
#[async_trait]
pub trait Inspect: Store {
    /// The recorded usage of `token`, if it was ever used.
    async fn token_usage(&self, token: &TokenId) -> Result<Option<TokenUsage>, StoreError>;

    /// Looks up an issued invoice.
    async fn invoice(&self, hash: &PaymentHash) -> Result<Option<InvoiceRecord>, StoreError>;
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

/// Opens the store named by `url` like [`open`], returning it both as the request path's
/// [`Store`] and as the admin API's [`AdminStore`] (one pool).
pub async fn open_with_admin(
    url: &str,
) -> Result<(std::sync::Arc<dyn Store>, std::sync::Arc<dyn AdminStore>), StoreError> {
    if url.starts_with("sqlite:") {
        let store = std::sync::Arc::new(SqliteStore::open(url).await?);
        Ok((store.clone(), store))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = std::sync::Arc::new(PgStore::open(url).await?);
        Ok((store.clone(), store))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }
}

/// A row a batched consume returned: `token_id, used, calls_total, charges`.
pub(crate) type ConsumedRow = (Vec<u8>, i64, i64, i64);

/// Maps the rows a batched consume returned back to the batch's requests: a request without a
/// row consumed nothing; `charges = 1` marks the token's first paid use.
pub(crate) fn batch_outcomes(
    batch: &[batch::ConsumeRequest],
    rows: Vec<ConsumedRow>,
) -> Result<Vec<Consumption>, StoreError> {
    let mut granted = std::collections::HashMap::with_capacity(rows.len());
    for (token, used, total, charges) in rows {
        let used = to_u64(used, "token_usage.used")?;
        let total = to_u64(total, "token_usage.calls_total")?;
        let charges = to_u64(charges, "token_usage.charges")?;
        granted.insert(token, (total.saturating_sub(used), charges == 1));
    }
    Ok(batch
        .iter()
        .map(|r| match granted.get(&r.token.0[..]) {
            Some(&(remaining, first_use)) => Consumption::Granted {
                remaining,
                first_use,
            },
            None => Consumption::Exhausted,
        })
        .collect())
}

/// Which invoices of a batch were new, from the payment hashes the insert returned (a hash
/// repeated within the batch counts once, for its first occurrence).
pub(crate) fn recorded_outcomes(invoices: &[InvoiceRecord], returned: Vec<Vec<u8>>) -> Vec<bool> {
    let mut new: std::collections::HashSet<Vec<u8>> = returned.into_iter().collect();
    invoices
        .iter()
        .map(|i| new.remove(&i.payment_hash.0[..]))
        .collect()
}

/// The answer to recording an invoice whose payment hash was recorded before.
pub(crate) fn invoice_outcome(written: batch::Written) -> Result<(), StoreError> {
    match written {
        batch::Written::Recorded(true) => Ok(()),
        batch::Written::Recorded(false) => Err(StoreError::InvalidArgument(
            "an invoice with this payment hash is already recorded",
        )),
        batch::Written::Consumed(_) => Err(StoreError::Corrupt("batch answered the wrong kind")),
    }
}

/// The answer to a consume.
pub(crate) fn consume_outcome(written: batch::Written) -> Result<Consumption, StoreError> {
    match written {
        batch::Written::Consumed(c) => Ok(c),
        batch::Written::Recorded(_) => Err(StoreError::Corrupt("batch answered the wrong kind")),
    }
}

/// `(window_start, window_end)` of the fixed window holding `now_unix`.
pub(crate) fn free_window(now_unix: u64, window_secs: u64) -> Result<(i64, i64), StoreError> {
    if window_secs == 0 {
        return Err(StoreError::InvalidArgument(
            "window_secs must be at least 1",
        ));
    }
    let start = now_unix - now_unix % window_secs;
    Ok((to_i64(start), to_i64(start.saturating_add(window_secs))))
}

/// An idempotency entry as read inside a begin's transaction.
pub(crate) struct ExistingEntry {
    pub fingerprint: Vec<u8>,
    pub done: bool,
    pub started_at: u64,
    pub response: Option<StoredResponse>,
}

/// What a begin does with an existing entry.
pub(crate) enum Verdict {
    /// Answer this without changing anything.
    Answer(IdempotencyBegin),
    /// Restart the stale entry's lease at now and answer [`IdempotencyBegin::TakenOver`].
    TakeOver,
}

/// The one rule for an existing entry, shared by both databases.
pub(crate) fn judge(
    entry: ExistingEntry,
    fingerprint: &[u8; 32],
    now_unix: u64,
    stale_after_secs: u64,
) -> Result<Verdict, StoreError> {
    if entry.fingerprint.as_slice() != fingerprint.as_slice() {
        return Ok(Verdict::Answer(IdempotencyBegin::Mismatch));
    }
    if entry.done {
        let response = entry.response.ok_or(StoreError::Corrupt(
            "idempotency: done entry without a response",
        ))?;
        return Ok(Verdict::Answer(IdempotencyBegin::Replay(response)));
    }
    if now_unix.saturating_sub(entry.started_at) > stale_after_secs {
        Ok(Verdict::TakeOver)
    } else {
        Ok(Verdict::Answer(IdempotencyBegin::InFlight))
    }
}

/// Reads an idempotency row of
/// `SELECT fingerprint, state, started_at, status, headers, body`.
pub(crate) fn entry_from_row<'r, R>(row: &'r R) -> Result<ExistingEntry, StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<Vec<u8>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let state: String = row.try_get(1)?;
    let done = match state.as_str() {
        "done" => true,
        "in_flight" => false,
        _ => return Err(StoreError::Corrupt("idempotency.state")),
    };
    let status: Option<i64> = row.try_get(3)?;
    let headers: Option<Vec<u8>> = row.try_get(4)?;
    let body: Option<Vec<u8>> = row.try_get(5)?;
    let response = match (status, headers, body) {
        (Some(status), Some(headers), Some(body)) => Some(stored_response(status, &headers, body)?),
        _ => None,
    };
    Ok(ExistingEntry {
        fingerprint: row.try_get(0)?,
        done,
        started_at: to_u64(row.try_get(2)?, "idempotency.started_at")?,
        response,
    })
}

/// Serialises headers as `(u32 BE name length, name, u32 BE value length, value)*`.
pub(crate) fn encode_headers(headers: &[(String, Vec<u8>)]) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(
        headers
            .iter()
            .map(|(n, v)| 8 + n.len() + v.len())
            .sum::<usize>(),
    );
    for (name, value) in headers {
        for part in [name.as_bytes(), value.as_slice()] {
            let len = u32::try_from(part.len())
                .map_err(|_| StoreError::InvalidArgument("header longer than 4 GiB"))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    Ok(out)
}

/// The inverse of [`encode_headers`].
pub(crate) fn decode_headers(mut bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    const CORRUPT: StoreError = StoreError::Corrupt("idempotency.headers");
    fn take<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], StoreError> {
        let (len, rest) = bytes.split_first_chunk::<4>().ok_or(CORRUPT)?;
        let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| CORRUPT)?;
        if rest.len() < len {
            return Err(CORRUPT);
        }
        let (part, rest) = rest.split_at(len);
        *bytes = rest;
        Ok(part)
    }
    let mut headers = Vec::new();
    while !bytes.is_empty() {
        let name = String::from_utf8(take(&mut bytes)?.to_vec()).map_err(|_| CORRUPT)?;
        let value = take(&mut bytes)?.to_vec();
        headers.push((name, value));
    }
    Ok(headers)
}

/// Builds a stored response from its columns.
pub(crate) fn stored_response(
    status: i64,
    headers: &[u8],
    body: Vec<u8>,
) -> Result<StoredResponse, StoreError> {
    Ok(StoredResponse {
        status: u16::try_from(status).map_err(|_| StoreError::Corrupt("idempotency.status"))?,
        headers: decode_headers(headers)?,
        body,
    })
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64, what: &'static str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(what))
}

#[cfg(any(test, feature = "test-support"))]
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
