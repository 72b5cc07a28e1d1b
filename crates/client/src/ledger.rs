//! The ledger: every payment and every reusable token, in one SQLite file in the user's data
//! directory (`$TURNPIKE_DATA_DIR`, else `$XDG_DATA_HOME/turnpike/`, else
//! `~/.local/share/turnpike/`; directory 0700, file 0600).
//!
//! A payment is a row written **before** the invoice is paid (state `reserved`, with the
//! invoice and the macaroon), in the same `BEGIN IMMEDIATE` transaction that checks the budget,
//! so two processes sharing a wallet cannot both reserve the last sats. It then becomes `paid`
//! (amount, fee, preimage), `failed` (released: it counts for nothing) or `unknown` (the wallet
//! could not say; the reservation stays). A payment hash has at most one live row, so the same
//! challenge is never paid twice.
//!
//! x402 payments (rail `x402`) go through the same rows and states: the row is reserved within
//! the asset's [`TokenBudget`] before the EIP-3009 authorisation is signed (its random nonce in
//! `payment_hash`), the signed payment is stored before it is sent, and a later fetch of the
//! same challenge sends that same authorisation again instead of signing another (on chain a
//! nonce transfers once). Amounts are in the asset's base units (`amount_units`).
//!
//! Schema versions (`PRAGMA user_version`): 0 is the L402-only ledger; 1 adds the x402 columns.
//! Opening an older file migrates it in place; its rows read as L402 payments.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use turnpike_l402::{Msat, PaymentHash, Preimage, Sats};

use crate::budget::{self, Budget, Refusal, Spent, TokenBudget, TokenRefusal, TokenSpent};

/// The ledger's file name inside the data directory.
pub const FILE_NAME: &str = "ledger.sqlite";

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS payments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    wallet TEXT NOT NULL,
    url TEXT NOT NULL,
    origin TEXT NOT NULL,
    service TEXT,
    amount_msat INTEGER NOT NULL,
    reserved_msat INTEGER NOT NULL,
    fee_msat INTEGER,
    payment_hash TEXT NOT NULL,
    preimage TEXT,
    invoice TEXT NOT NULL,
    macaroon TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('reserved', 'paid', 'failed', 'unknown')),
    http_status INTEGER,
    pid INTEGER NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS payments_wallet_time ON payments (wallet, created_at);
CREATE UNIQUE INDEX IF NOT EXISTS payments_live_hash ON payments (payment_hash)
    WHERE state <> 'failed';
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    service TEXT NOT NULL,
    path TEXT NOT NULL,
    authorization TEXT NOT NULL,
    payment_id INTEGER,
    calls_remaining INTEGER,
    valid_until INTEGER,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE INDEX IF NOT EXISTS tokens_origin ON tokens (origin, id);
"#;

/// Migrations by `user_version`: entry `i` takes a ledger from version `i` to `i + 1` (and
/// sets that version).
const MIGRATIONS: &[&str] = &[r#"
ALTER TABLE payments ADD COLUMN rail TEXT NOT NULL DEFAULT 'l402';
ALTER TABLE payments ADD COLUMN asset TEXT;
ALTER TABLE payments ADD COLUMN amount_units INTEGER;
ALTER TABLE payments ADD COLUMN valid_before INTEGER;
ALTER TABLE payments ADD COLUMN challenge TEXT;
ALTER TABLE payments ADD COLUMN payer TEXT;
ALTER TABLE payments ADD COLUMN x402_payment TEXT;
ALTER TABLE payments ADD COLUMN tx_hash TEXT;
CREATE INDEX IF NOT EXISTS payments_challenge ON payments (wallet, challenge)
    WHERE challenge IS NOT NULL;
PRAGMA user_version = 1;
"#];

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database failed.
    #[error("ledger database: {0}")]
    Db(#[from] sqlx::Error),
    /// The data directory or file could not be set up.
    #[error("ledger file {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// No data directory could be found.
    #[error("no data directory: set TURNPIKE_DATA_DIR (or XDG_DATA_HOME, or HOME)")]
    NoDataDir,
    /// The budget refuses the payment: nothing was reserved or paid.
    #[error(transparent)]
    OverBudget(#[from] Refusal),
    /// The x402 budget of an asset refuses the payment: nothing was reserved or signed.
    #[error(transparent)]
    OverTokenBudget(#[from] TokenRefusal),
    /// The ledger was written by a newer Turnpike.
    #[error("the ledger's schema version {0} is newer than this turnpike knows: upgrade it")]
    TooNew(i64),
    /// An amount does not fit the database's integers.
    #[error("amount out of range: {0}")]
    OutOfRange(u64),
    /// A stored row could not be read back.
    #[error("corrupt ledger row: {0}")]
    Corrupt(String),
}

/// The state of a payment row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentState {
    /// Reserved before paying; the outcome is not recorded yet.
    Reserved,
    /// Paid: amount, fee and preimage recorded.
    Paid,
    /// Provably not paid: the reservation is released.
    Failed,
    /// The wallet could not say whether it paid: the reservation stays until it can.
    Unknown,
}

impl PaymentState {
    fn as_str(self) -> &'static str {
        match self {
            PaymentState::Reserved => "reserved",
            PaymentState::Paid => "paid",
            PaymentState::Failed => "failed",
            PaymentState::Unknown => "unknown",
        }
    }

    fn parse(s: &str) -> Option<PaymentState> {
        Some(match s {
            "reserved" => PaymentState::Reserved,
            "paid" => PaymentState::Paid,
            "failed" => PaymentState::Failed,
            "unknown" => PaymentState::Unknown,
            _ => return None,
        })
    }
}

/// One payment as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentRow {
    /// Row id.
    pub id: i64,
    /// When it was reserved, unix seconds.
    pub created_at: u64,
    /// Last change, unix seconds.
    pub updated_at: u64,
    /// The wallet's name.
    pub wallet: String,
    /// The URL fetched.
    pub url: String,
    /// Its origin (`scheme://host:port`).
    pub origin: String,
    /// The service named by the macaroon's caveats.
    pub service: Option<String>,
    /// The invoice's amount.
    pub amount_msat: u64,
    /// What was reserved (amount plus fee reserve).
    pub reserved_msat: u64,
    /// The fee paid, once paid.
    pub fee_msat: Option<u64>,
    /// The payment hash, hex.
    pub payment_hash: String,
    /// The preimage, hex, once paid.
    pub preimage: Option<String>,
    /// The BOLT11 invoice.
    pub invoice: String,
    /// The macaroon, base64.
    pub macaroon: String,
    /// Where it stands.
    pub state: PaymentState,
    /// The HTTP status of the call it paid for.
    pub http_status: Option<u16>,
    /// The process that reserved it.
    pub pid: u32,
    /// Why it failed or is unknown.
    pub error: Option<String>,
    /// `l402` or `x402`.
    pub rail: String,
    /// x402: the asset paid, `network/address` (lowercase).
    pub asset: Option<String>,
    /// x402: the amount, in the asset's base units.
    pub amount_units: Option<u64>,
    /// x402: the authorisation is valid while now < this (unix seconds).
    pub valid_before: Option<u64>,
    /// x402: the challenge answered (URL and terms, hashed), to send the same payment again.
    pub challenge: Option<String>,
    /// x402: the paying address.
    pub payer: Option<String>,
    /// x402: the signed payment header sent (a bearer payment until it settles: never shown).
    #[serde(skip)]
    pub x402_payment: Option<String>,
    /// x402: the settlement's transaction hash, when the server reported it.
    pub tx_hash: Option<String>,
}

impl PaymentRow {
    /// What this payment counts against the budget: amount plus fee once paid, nothing once
    /// failed, the reservation otherwise.
    pub fn charged_msat(&self) -> u64 {
        match self.state {
            PaymentState::Paid => self.amount_msat.saturating_add(self.fee_msat.unwrap_or(0)),
            PaymentState::Failed => 0,
            PaymentState::Reserved | PaymentState::Unknown => self.reserved_msat,
        }
    }

    /// The payment hash, parsed.
    pub fn hash(&self) -> Result<PaymentHash, LedgerError> {
        self.payment_hash
            .parse()
            .map_err(|_| LedgerError::Corrupt(format!("payment hash of row {}", self.id)))
    }
}

/// A payment about to be made.
#[derive(Debug, Clone)]
pub struct NewPayment<'a> {
    /// The wallet's name.
    pub wallet: &'a str,
    /// The URL fetched.
    pub url: &'a str,
    /// Its origin.
    pub origin: &'a str,
    /// The service named by the macaroon, if any.
    pub service: Option<&'a str>,
    /// The BOLT11 invoice.
    pub invoice: &'a str,
    /// The macaroon, base64.
    pub macaroon: &'a str,
    /// The invoice's payment hash.
    pub payment_hash: PaymentHash,
    /// The invoice's amount.
    pub amount: Msat,
    /// The most the payment may cost: amount plus fee reserve.
    pub reserve: Msat,
}

/// What [`Ledger::reserve`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// A new row, reserved: go ahead and pay.
    New(i64),
    /// This payment hash already has a live row: do not pay it again.
    Existing(Box<PaymentRow>),
}

/// A reusable credential for an origin and service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredToken {
    /// Row id.
    pub id: i64,
    /// The origin it is used on.
    pub origin: String,
    /// The service its caveats name.
    pub service: String,
    /// The path of the request it was bought for.
    pub path: String,
    /// The `Authorization` value.
    #[serde(skip)]
    pub authorization: String,
    /// The payment that bought it.
    pub payment_id: Option<i64>,
    /// Calls left, when it counts calls.
    pub calls_remaining: Option<u64>,
    /// Valid while now < this (unix seconds), when it expires.
    pub valid_until: Option<u64>,
    /// When it was stored.
    pub created_at: u64,
}

/// A token to store.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    /// The origin.
    pub origin: &'a str,
    /// The service.
    pub service: &'a str,
    /// The request path.
    pub path: &'a str,
    /// The `Authorization` value.
    pub authorization: &'a str,
    /// The payment that bought it.
    pub payment_id: Option<i64>,
    /// Calls left.
    pub calls_remaining: Option<u64>,
    /// Expiry, unix seconds.
    pub valid_until: Option<u64>,
}

/// The ledger database.
#[derive(Debug, Clone)]
pub struct Ledger {
    pool: SqlitePool,
    path: PathBuf,
}

/// The default data directory: `$TURNPIKE_DATA_DIR`, else `$XDG_DATA_HOME/turnpike`, else
/// `$HOME/.local/share/turnpike`.
pub fn default_data_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(d) = var("TURNPIKE_DATA_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = var("XDG_DATA_HOME") {
        return Some(PathBuf::from(d).join("turnpike"));
    }
    var("HOME").map(|h| PathBuf::from(h).join(".local/share/turnpike"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(unix)]
fn private_dir(dir: &Path) -> Result<(), LedgerError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err(dir))
}

#[cfg(unix)]
fn private_file(file: &Path) -> Result<(), LedgerError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)
        .map_err(io_err(file))?;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).map_err(io_err(file))
}

/// Makes an existing file 0600; one that another process just removed is left alone.
#[cfg(unix)]
fn restrict_existing(file: &Path) -> Result<(), LedgerError> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(file)(e)),
        _ => Ok(()),
    }
}

#[cfg(not(unix))]
fn restrict_existing(_file: &Path) -> Result<(), LedgerError> {
    Ok(())
}

#[cfg(not(unix))]
fn private_dir(dir: &Path) -> Result<(), LedgerError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))
}

#[cfg(not(unix))]
fn private_file(_file: &Path) -> Result<(), LedgerError> {
    Ok(())
}

fn to_i64(v: u64) -> Result<i64, LedgerError> {
    i64::try_from(v).map_err(|_| LedgerError::OutOfRange(v))
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The current time, unix seconds.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn row_to_payment(row: &sqlx::sqlite::SqliteRow) -> Result<PaymentRow, LedgerError> {
    let state: String = row.try_get("state")?;
    let state = PaymentState::parse(&state)
        .ok_or_else(|| LedgerError::Corrupt(format!("payment state {state:?}")))?;
    Ok(PaymentRow {
        id: row.try_get("id")?,
        created_at: to_u64(row.try_get("created_at")?),
        updated_at: to_u64(row.try_get("updated_at")?),
        wallet: row.try_get("wallet")?,
        url: row.try_get("url")?,
        origin: row.try_get("origin")?,
        service: row.try_get("service")?,
        amount_msat: to_u64(row.try_get("amount_msat")?),
        reserved_msat: to_u64(row.try_get("reserved_msat")?),
        fee_msat: row.try_get::<Option<i64>, _>("fee_msat")?.map(to_u64),
        payment_hash: row.try_get("payment_hash")?,
        preimage: row.try_get("preimage")?,
        invoice: row.try_get("invoice")?,
        macaroon: row.try_get("macaroon")?,
        state,
        http_status: row
            .try_get::<Option<i64>, _>("http_status")?
            .and_then(|s| u16::try_from(s).ok()),
        pid: u32::try_from(row.try_get::<i64, _>("pid")?).unwrap_or(0),
        error: row.try_get("error")?,
        rail: row.try_get("rail")?,
        asset: row.try_get("asset")?,
        amount_units: row.try_get::<Option<i64>, _>("amount_units")?.map(to_u64),
        valid_before: row.try_get::<Option<i64>, _>("valid_before")?.map(to_u64),
        challenge: row.try_get("challenge")?,
        payer: row.try_get("payer")?,
        x402_payment: row.try_get("x402_payment")?,
        tx_hash: row.try_get("tx_hash")?,
    })
}

fn row_to_token(row: &sqlx::sqlite::SqliteRow) -> Result<StoredToken, LedgerError> {
    Ok(StoredToken {
        id: row.try_get("id")?,
        origin: row.try_get("origin")?,
        service: row.try_get("service")?,
        path: row.try_get("path")?,
        authorization: row.try_get("authorization")?,
        payment_id: row.try_get("payment_id")?,
        calls_remaining: row
            .try_get::<Option<i64>, _>("calls_remaining")?
            .map(to_u64),
        valid_until: row.try_get::<Option<i64>, _>("valid_until")?.map(to_u64),
        created_at: to_u64(row.try_get("created_at")?),
    })
}

/// The SQL value of what a row counts against the budget.
macro_rules! charged {
    () => {
        "(CASE state WHEN 'paid' THEN amount_msat + COALESCE(fee_msat, 0) \
         WHEN 'failed' THEN 0 ELSE reserved_msat END)"
    };
}

/// The id of the token to use on origin `?1` for path `?2` at time `?3`: with calls left and
/// not expired, bought for the same path first, else the newest.
macro_rules! usable_token {
    () => {
        "(SELECT id FROM tokens WHERE origin = ?1 \
         AND (calls_remaining IS NULL OR calls_remaining > 0) \
         AND (valid_until IS NULL OR valid_until > ?3) \
         ORDER BY (path = ?2) DESC, id DESC LIMIT 1)"
    };
}

/// What a wallet was charged: in the origin's window, in the period's window, ever.
const SPENT_SQL: &str = concat!(
    "SELECT COALESCE(SUM(CASE WHEN origin = ?2 AND created_at > ?3 THEN ",
    charged!(),
    " END), 0), COALESCE(SUM(CASE WHEN created_at > ?4 THEN ",
    charged!(),
    " END), 0), COALESCE(SUM(",
    charged!(),
    "), 0) FROM payments WHERE wallet = ?1"
);

impl Ledger {
    /// Opens (creating if needed) the ledger in `dir`: the directory 0700, the file 0600.
    pub async fn open_in(dir: &Path) -> Result<Ledger, LedgerError> {
        private_dir(dir)?;
        let path = dir.join(FILE_NAME);
        private_file(&path)?;
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let mut conn = begin_immediate(&pool).await?;
        let migrated = migrate(&mut conn).await;
        finish(&mut conn, migrated).await?;
        drop(conn);
        // SQLite creates the WAL and shared-memory files with the process's umask.
        for suffix in ["-wal", "-shm"] {
            let side = dir.join(format!("{FILE_NAME}{suffix}"));
            restrict_existing(&side)?;
        }
        Ok(Ledger { pool, path })
    }

    /// Opens the ledger in [`default_data_dir`].
    pub async fn open_default() -> Result<Ledger, LedgerError> {
        let dir = default_data_dir().ok_or(LedgerError::NoDataDir)?;
        Ledger::open_in(&dir).await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What `wallet` has been charged in each budget scope, as of `now`.
    pub async fn spent(
        &self,
        wallet: &str,
        origin: &str,
        budget: &Budget,
        now: u64,
    ) -> Result<Spent, LedgerError> {
        let mut conn = self.pool.acquire().await?;
        spent_on(&mut conn, wallet, origin, budget, now).await
    }

    /// Checks the budget and writes the reservation row in one `BEGIN IMMEDIATE` transaction.
    /// A payment hash that already has a live row is not reserved again:
    /// [`Reservation::Existing`] returns that row.
    pub async fn reserve(
        &self,
        new: &NewPayment<'_>,
        budget: &Budget,
        call_cap: Option<Sats>,
        now: u64,
    ) -> Result<Reservation, LedgerError> {
        let mut conn = begin_immediate(&self.pool).await?;
        let result = async {
            let existing =
                sqlx::query("SELECT * FROM payments WHERE payment_hash = ?1 AND state <> 'failed'")
                    .bind(new.payment_hash.to_hex())
                    .fetch_optional(&mut *conn)
                    .await?;
            if let Some(row) = existing {
                return Ok(Reservation::Existing(Box::new(row_to_payment(&row)?)));
            }
            let spent = spent_on(&mut conn, new.wallet, new.origin, budget, now).await?;
            budget::check(budget, call_cap, new.reserve, &spent)?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO payments (created_at, updated_at, wallet, url, origin, service, \
                 amount_msat, reserved_msat, payment_hash, invoice, macaroon, state, pid) \
                 VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'reserved', ?11) \
                 RETURNING id",
            )
            .bind(to_i64(now)?)
            .bind(new.wallet)
            .bind(new.url)
            .bind(new.origin)
            .bind(new.service)
            .bind(to_i64(new.amount.0)?)
            .bind(to_i64(new.reserve.0)?)
            .bind(new.payment_hash.to_hex())
            .bind(new.invoice)
            .bind(new.macaroon)
            .bind(i64::from(std::process::id()))
            .fetch_one(&mut *conn)
            .await?;
            Ok(Reservation::New(id))
        }
        .await;
        finish(&mut conn, result).await
    }

    /// What `wallet` has been charged in `asset` (x402), in base units, in each scope of
    /// `budget`, as of `now`.
    pub async fn spent_units(
        &self,
        wallet: &str,
        asset: &str,
        origin: &str,
        budget: &TokenBudget,
        now: u64,
    ) -> Result<TokenSpent, LedgerError> {
        let mut conn = self.pool.acquire().await?;
        spent_units_on(&mut conn, wallet, asset, origin, budget, now).await
    }

    /// Checks the asset's budget and writes an x402 reservation in one `BEGIN IMMEDIATE`
    /// transaction, before anything is signed. Returns the row id.
    pub async fn reserve_x402(
        &self,
        new: &NewX402Payment<'_>,
        budget: &TokenBudget,
        now: u64,
    ) -> Result<i64, LedgerError> {
        let mut conn = begin_immediate(&self.pool).await?;
        let result = async {
            let spent =
                spent_units_on(&mut conn, new.wallet, new.asset, new.origin, budget, now).await?;
            budget::check_tokens(budget, new.asset, u128::from(new.amount), &spent)?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO payments (created_at, updated_at, wallet, url, origin, amount_msat, \
                 reserved_msat, payment_hash, invoice, macaroon, state, pid, rail, asset, \
                 amount_units, valid_before, challenge, payer) VALUES (?1, ?1, ?2, ?3, ?4, 0, 0, \
                 ?5, '', '', 'reserved', ?6, 'x402', ?7, ?8, ?9, ?10, ?11) RETURNING id",
            )
            .bind(to_i64(now)?)
            .bind(new.wallet)
            .bind(new.url)
            .bind(new.origin)
            .bind(hex_of(&new.nonce))
            .bind(i64::from(std::process::id()))
            .bind(new.asset)
            .bind(to_i64(new.amount)?)
            .bind(to_i64(new.valid_before)?)
            .bind(new.challenge)
            .bind(new.payer)
            .fetch_one(&mut *conn)
            .await?;
            Ok(id)
        }
        .await;
        finish(&mut conn, result).await
    }

    /// Stores the signed payment of an x402 reservation, before it is sent.
    pub async fn set_x402_payment(&self, id: i64, header: &str) -> Result<(), LedgerError> {
        sqlx::query("UPDATE payments SET x402_payment = ?2 WHERE id = ?1")
            .bind(id)
            .bind(header)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records an x402 payment as settled, with its transaction when known.
    pub async fn settle_x402(
        &self,
        id: i64,
        tx_hash: Option<&str>,
        now: u64,
    ) -> Result<(), LedgerError> {
        sqlx::query(
            "UPDATE payments SET state = 'paid', tx_hash = COALESCE(?2, tx_hash), \
             updated_at = ?3, error = NULL WHERE id = ?1",
        )
        .bind(id)
        .bind(tx_hash)
        .bind(to_i64(now)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest x402 payment of `wallet` for `challenge` whose outcome is not recorded and
    /// whose signed authorisation is still valid at `now` (with `margin` seconds to spare):
    /// send it again rather than sign another.
    pub async fn reusable_x402(
        &self,
        wallet: &str,
        challenge: &str,
        now: u64,
        margin: u64,
    ) -> Result<Option<PaymentRow>, LedgerError> {
        let row = sqlx::query(
            "SELECT * FROM payments WHERE wallet = ?1 AND challenge = ?2 AND rail = 'x402' \
             AND state IN ('reserved', 'unknown') AND x402_payment IS NOT NULL \
             AND valid_before > ?3 ORDER BY id DESC LIMIT 1",
        )
        .bind(wallet)
        .bind(challenge)
        .bind(to_i64(now.saturating_add(margin))?)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(row_to_payment).transpose()
    }

    /// Records a payment as paid, at its real amount and fee.
    pub async fn settle(
        &self,
        id: i64,
        amount: Msat,
        fee: Msat,
        preimage: &Preimage,
        now: u64,
    ) -> Result<(), LedgerError> {
        sqlx::query(
            "UPDATE payments SET state = 'paid', amount_msat = ?2, fee_msat = ?3, preimage = ?4, \
             updated_at = ?5, error = NULL WHERE id = ?1",
        )
        .bind(id)
        .bind(to_i64(amount.0)?)
        .bind(to_i64(fee.0)?)
        .bind(preimage.to_hex())
        .bind(to_i64(now)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Releases a reservation whose payment provably failed.
    pub async fn release(&self, id: i64, reason: &str, now: u64) -> Result<(), LedgerError> {
        self.set_state(id, PaymentState::Failed, reason, now).await
    }

    /// Keeps a reservation whose outcome the wallet could not tell.
    pub async fn mark_unknown(&self, id: i64, reason: &str, now: u64) -> Result<(), LedgerError> {
        self.set_state(id, PaymentState::Unknown, reason, now).await
    }

    async fn set_state(
        &self,
        id: i64,
        state: PaymentState,
        reason: &str,
        now: u64,
    ) -> Result<(), LedgerError> {
        sqlx::query("UPDATE payments SET state = ?2, error = ?3, updated_at = ?4 WHERE id = ?1")
            .bind(id)
            .bind(state.as_str())
            .bind(reason)
            .bind(to_i64(now)?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records the HTTP status of the call a payment was for.
    pub async fn set_http_status(&self, id: i64, status: u16) -> Result<(), LedgerError> {
        sqlx::query("UPDATE payments SET http_status = ?2 WHERE id = ?1")
            .bind(id)
            .bind(i64::from(status))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Rows of `wallet` on `rail` (`l402` or `x402`) whose outcome is not recorded
    /// (`reserved` or `unknown`).
    pub async fn unresolved(
        &self,
        wallet: &str,
        rail: &str,
    ) -> Result<Vec<PaymentRow>, LedgerError> {
        let rows = sqlx::query(
            "SELECT * FROM payments WHERE wallet = ?1 AND rail = ?2 \
             AND state IN ('reserved', 'unknown') ORDER BY id",
        )
        .bind(wallet)
        .bind(rail)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_payment).collect()
    }

    /// One payment by id.
    pub async fn payment(&self, id: i64) -> Result<Option<PaymentRow>, LedgerError> {
        let row = sqlx::query("SELECT * FROM payments WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row_to_payment).transpose()
    }

    /// Payments, oldest first, optionally of one wallet and since a time.
    pub async fn payments(
        &self,
        wallet: Option<&str>,
        since: Option<u64>,
    ) -> Result<Vec<PaymentRow>, LedgerError> {
        let rows = sqlx::query(
            "SELECT * FROM payments WHERE (?1 IS NULL OR wallet = ?1) AND created_at >= ?2 \
             ORDER BY id",
        )
        .bind(wallet)
        .bind(to_i64(since.unwrap_or(0))?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_payment).collect()
    }

    /// Stores a reusable token.
    pub async fn store_token(&self, t: &NewToken<'_>, now: u64) -> Result<i64, LedgerError> {
        let id = sqlx::query_scalar(
            "INSERT INTO tokens (origin, service, path, authorization, payment_id, \
             calls_remaining, valid_until, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             RETURNING id",
        )
        .bind(t.origin)
        .bind(t.service)
        .bind(t.path)
        .bind(t.authorization)
        .bind(t.payment_id)
        .bind(t.calls_remaining.map(to_i64).transpose()?)
        .bind(t.valid_until.map(to_i64).transpose()?)
        .bind(to_i64(now)?)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    /// A token usable on `origin` now: one bought for the same path first, else the newest;
    /// tokens with no calls left or past their expiry are not returned.
    pub async fn find_token(
        &self,
        origin: &str,
        path: &str,
        now: u64,
    ) -> Result<Option<StoredToken>, LedgerError> {
        let row = sqlx::query(concat!("SELECT * FROM tokens WHERE id = ", usable_token!()))
            .bind(origin)
            .bind(path)
            .bind(to_i64(now)?)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row_to_token).transpose()
    }

    /// Takes one call of a token usable on `origin` now, atomically (one statement): the one
    /// bought for the same path first, else the newest. A token that counts calls has one less
    /// left afterwards, so concurrent fetches never share out more calls than it has.
    pub async fn claim_token(
        &self,
        origin: &str,
        path: &str,
        now: u64,
    ) -> Result<Option<StoredToken>, LedgerError> {
        let row = sqlx::query(concat!(
            "UPDATE tokens SET last_used_at = ?3, calls_remaining = CASE \
                 WHEN calls_remaining IS NULL THEN NULL ELSE calls_remaining - 1 END WHERE id = ",
            usable_token!(),
            " RETURNING *"
        ))
        .bind(origin)
        .bind(path)
        .bind(to_i64(now)?)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(row_to_token).transpose()
    }

    /// Records the calls a token has left (from the server's `Turnpike-Calls-Remaining`); only
    /// ever lowers the count, as answers to concurrent calls may arrive out of order.
    pub async fn set_calls_remaining(&self, id: i64, remaining: u64) -> Result<(), LedgerError> {
        sqlx::query(
            "UPDATE tokens SET calls_remaining = MIN(COALESCE(calls_remaining, ?2), ?2) \
             WHERE id = ?1",
        )
        .bind(id)
        .bind(to_i64(remaining)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Counts one call made with a token that counts calls; the server's header, when sent,
    /// overrides this with [`Ledger::set_calls_remaining`].
    pub async fn use_token(&self, id: i64, now: u64) -> Result<(), LedgerError> {
        sqlx::query(
            "UPDATE tokens SET last_used_at = ?2, calls_remaining = CASE \
             WHEN calls_remaining IS NULL THEN NULL WHEN calls_remaining > 0 \
             THEN calls_remaining - 1 ELSE 0 END WHERE id = ?1",
        )
        .bind(id)
        .bind(to_i64(now)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets a token. Returns whether it was there.
    pub async fn drop_token(&self, id: i64) -> Result<bool, LedgerError> {
        let done = sqlx::query("DELETE FROM tokens WHERE id = ?1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Every stored token, newest first.
    pub async fn tokens(&self) -> Result<Vec<StoredToken>, LedgerError> {
        let rows = sqlx::query("SELECT * FROM tokens ORDER BY id DESC")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row_to_token).collect()
    }
}

/// An x402 payment about to be signed.
#[derive(Debug, Clone)]
pub struct NewX402Payment<'a> {
    /// The wallet's name.
    pub wallet: &'a str,
    /// The URL fetched.
    pub url: &'a str,
    /// Its origin.
    pub origin: &'a str,
    /// The asset, `network/address` (lowercase).
    pub asset: &'a str,
    /// The amount, base units.
    pub amount: u64,
    /// The authorisation's random nonce.
    pub nonce: [u8; 32],
    /// The authorisation's `validBefore`.
    pub valid_before: u64,
    /// The challenge answered (see [`PaymentRow::challenge`]).
    pub challenge: &'a str,
    /// The paying address.
    pub payer: &'a str,
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn begin_immediate(
    pool: &SqlitePool,
) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>, LedgerError> {
    let mut conn = pool.acquire().await?;
    sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    Ok(conn)
}

/// Commits after `result` succeeded, else rolls back; returns `result`.
async fn finish<T>(
    conn: &mut sqlx::SqliteConnection,
    result: Result<T, LedgerError>,
) -> Result<T, LedgerError> {
    match &result {
        Ok(_) => {
            sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
        }
        Err(_) => {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
        }
    }
    result
}

/// Creates the tables and brings an older ledger to the current version (inside the caller's
/// transaction).
async fn migrate(conn: &mut sqlx::SqliteConnection) -> Result<(), LedgerError> {
    sqlx::raw_sql(SCHEMA).execute(&mut *conn).await?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await?;
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if version > known {
        return Err(LedgerError::TooNew(version));
    }
    for step in &MIGRATIONS[usize::try_from(version).unwrap_or(0)..] {
        sqlx::raw_sql(*step).execute(&mut *conn).await?;
    }
    Ok(())
}

/// What a wallet was charged in one x402 asset: in the origin's window, in the period's
/// window, ever (failed rows count for nothing; open ones for their amount).
const SPENT_UNITS_SQL: &str = "SELECT \
     COALESCE(SUM(CASE WHEN origin = ?2 AND created_at > ?3 THEN amount_units END), 0), \
     COALESCE(SUM(CASE WHEN created_at > ?4 THEN amount_units END), 0), \
     COALESCE(SUM(amount_units), 0) \
     FROM payments WHERE wallet = ?1 AND rail = 'x402' AND asset = ?5 AND state <> 'failed'";

async fn spent_units_on(
    conn: &mut sqlx::SqliteConnection,
    wallet: &str,
    asset: &str,
    origin: &str,
    budget: &TokenBudget,
    now: u64,
) -> Result<TokenSpent, LedgerError> {
    let windows = [
        budget.per_host.map(|w| w.per),
        budget.per_period.map(|w| w.per),
    ];
    let [host, period, total] = sums(
        conn,
        SPENT_UNITS_SQL,
        wallet,
        origin,
        windows,
        Some(asset),
        now,
    )
    .await?;
    Ok(TokenSpent {
        host_window: u128::from(host),
        period_window: u128::from(period),
        total: u128::from(total),
    })
}

async fn spent_on(
    conn: &mut sqlx::SqliteConnection,
    wallet: &str,
    origin: &str,
    budget: &Budget,
    now: u64,
) -> Result<Spent, LedgerError> {
    let windows = [
        budget.per_host.map(|w| w.per),
        budget.per_period.map(|w| w.per),
    ];
    let [host, period, total] = sums(conn, SPENT_SQL, wallet, origin, windows, None, now).await?;
    Ok(Spent {
        host_window: Msat(host),
        period_window: Msat(period),
        total: Msat(total),
    })
}

/// Runs one of the spending sums: `?1` wallet, `?2` origin, `?3`/`?4` the start of the
/// per-host and per-period windows (none: never), `?5` the asset when given.
async fn sums(
    conn: &mut sqlx::SqliteConnection,
    sql: &'static str,
    wallet: &str,
    origin: &str,
    windows: [Option<budget::Period>; 2],
    asset: Option<&str>,
    now: u64,
) -> Result<[u64; 3], LedgerError> {
    let since = |w: Option<budget::Period>| {
        w.map_or(Ok(i64::MAX), |per| {
            to_i64(now.saturating_sub(per.seconds()))
        })
    };
    let mut query = sqlx::query(sql)
        .bind(wallet)
        .bind(origin)
        .bind(since(windows[0])?)
        .bind(since(windows[1])?);
    if let Some(asset) = asset {
        query = query.bind(asset);
    }
    let row = query.fetch_one(&mut *conn).await?;
    let get = |i: usize| -> Result<u64, LedgerError> { Ok(to_u64(row.try_get::<i64, _>(i)?)) };
    Ok([get(0)?, get(1)?, get(2)?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{Limit, Period, Window};

    fn payment<'a>(hash: PaymentHash, origin: &'a str, sats: u64) -> NewPayment<'a> {
        NewPayment {
            wallet: "w",
            url: "http://x/",
            origin,
            service: Some("svc"),
            invoice: "lnbcrt1...",
            macaroon: "AgE...",
            payment_hash: hash,
            amount: Msat(sats * 1000),
            reserve: Msat(sats * 1000),
        }
    }

    fn per_period(sats: u64) -> Budget {
        Budget {
            per_period: Some(Window {
                sats,
                per: Period::Hour,
            }),
            ..Budget::default()
        }
    }

    #[tokio::test]
    async fn the_file_is_private_and_the_schema_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let ledger = Ledger::open_in(&data).await.unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&data), 0o700);
            assert_eq!(mode(ledger.path()), 0o600);
        }
        drop(ledger);
        Ledger::open_in(&data).await.unwrap();
    }

    #[tokio::test]
    async fn reserve_settle_release_and_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open_in(dir.path()).await.unwrap();
        let budget = per_period(100);
        let h = |b: u8| PaymentHash([b; 32]);

        let Reservation::New(a) = ledger
            .reserve(&payment(h(1), "o1", 60), &budget, None, 1000)
            .await
            .unwrap()
        else {
            panic!("not reserved")
        };
        // 60 reserved: 50 more is over, and the refusal says what is left.
        let err = ledger
            .reserve(&payment(h(2), "o1", 50), &budget, None, 1000)
            .await
            .unwrap_err();
        match err {
            LedgerError::OverBudget(r) => {
                assert_eq!(r.limit, Limit::PerPeriod { per: Period::Hour });
                assert_eq!((r.asked.0, r.left.0), (50, 40));
            }
            other => panic!("{other:?}"),
        }
        // Settled below the reservation (no fee): 40 left.
        ledger
            .settle(a, Msat(55_000), Msat(1_000), &Preimage([1; 32]), 1001)
            .await
            .unwrap();
        let spent = ledger.spent("w", "o1", &budget, 1002).await.unwrap();
        assert_eq!(spent.period_window, Msat(56_000));

        // The same hash is never reserved twice.
        assert!(matches!(
            ledger
                .reserve(&payment(h(1), "o1", 1), &budget, None, 1002)
                .await
                .unwrap(),
            Reservation::Existing(row) if row.id == a && row.state == PaymentState::Paid
        ));

        // A released reservation counts for nothing.
        let Reservation::New(b) = ledger
            .reserve(&payment(h(3), "o2", 44), &budget, None, 1003)
            .await
            .unwrap()
        else {
            panic!("not reserved")
        };
        assert!(
            ledger
                .reserve(&payment(h(4), "o2", 1), &budget, None, 1003)
                .await
                .is_err()
        );
        ledger.release(b, "no route", 1004).await.unwrap();
        assert!(matches!(
            ledger
                .reserve(&payment(h(4), "o2", 44), &budget, None, 1005)
                .await
                .unwrap(),
            Reservation::New(_)
        ));
        // The window rolls: an hour later the old spending no longer counts.
        let later = 1000 + 3600 + 10;
        assert_eq!(
            ledger
                .spent("w", "o1", &budget, later)
                .await
                .unwrap()
                .period_window,
            Msat(0)
        );
        let rows = ledger.payments(Some("w"), None).await.unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].state, PaymentState::Failed);
        assert_eq!(rows[1].charged_msat(), 0);
    }

    #[tokio::test]
    async fn concurrent_reservations_never_exceed_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        // Two handles, as two processes would have.
        let one = Ledger::open_in(dir.path()).await.unwrap();
        let two = Ledger::open_in(dir.path()).await.unwrap();
        let budget = per_period(100);
        let mut tasks = Vec::new();
        for i in 0..40u8 {
            let ledger = if i % 2 == 0 { one.clone() } else { two.clone() };
            tasks.push(tokio::spawn(async move {
                ledger
                    .reserve(&payment(PaymentHash([i; 32]), "o", 7), &budget, None, 5000)
                    .await
            }));
        }
        let mut reserved = 0;
        for t in tasks {
            if let Ok(Reservation::New(_)) = t.await.unwrap() {
                reserved += 1;
            }
        }
        assert_eq!(reserved, 100 / 7);
        let spent = one.spent("w", "o", &budget, 5000).await.unwrap();
        assert!(spent.period_window <= Msat(100_000));
    }

    #[tokio::test]
    async fn tokens_are_found_by_origin_and_path_until_used_up_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open_in(dir.path()).await.unwrap();
        let token = |path: &'static str, calls: Option<u64>, until: Option<u64>| NewToken {
            origin: "http://a:1",
            service: "svc",
            path,
            authorization: "L402 x:y",
            payment_id: None,
            calls_remaining: calls,
            valid_until: until,
        };
        let bundle = ledger
            .store_token(&token("/a", Some(2), None), 10)
            .await
            .unwrap();
        let pass = ledger
            .store_token(&token("/b", None, Some(100)), 10)
            .await
            .unwrap();
        let found = |path: &'static str, now: u64| {
            let ledger = ledger.clone();
            async move {
                ledger
                    .find_token("http://a:1", path, now)
                    .await
                    .unwrap()
                    .map(|t| t.id)
            }
        };
        assert_eq!(found("/a", 20).await, Some(bundle));
        assert_eq!(found("/b", 20).await, Some(pass));
        assert_eq!(found("/c", 20).await, Some(pass));
        // The time pass expires; the bundle runs out.
        assert_eq!(found("/b", 100).await, Some(bundle));
        ledger.use_token(bundle, 30).await.unwrap();
        ledger.use_token(bundle, 31).await.unwrap();
        assert_eq!(found("/a", 100).await, None);
        // The server's count only ever lowers ours.
        ledger.set_calls_remaining(bundle, 1).await.unwrap();
        assert_eq!(found("/a", 100).await, None);
        let again = ledger
            .store_token(&token("/a", Some(2), None), 40)
            .await
            .unwrap();
        let claim = || ledger.claim_token("http://a:1", "/a", 50);
        assert_eq!(claim().await.unwrap().map(|t| t.id), Some(again));
        assert_eq!(claim().await.unwrap().map(|t| t.id), Some(again));
        // Used up: the time pass expired at 100 but not yet at 50, so it is next.
        assert_eq!(claim().await.unwrap().map(|t| t.id), Some(pass));
        assert!(ledger.drop_token(again).await.unwrap());
        assert!(ledger.drop_token(bundle).await.unwrap());
        assert_eq!(found("/a", 20).await, Some(pass));
        assert!(
            ledger
                .find_token("http://other", "/a", 20)
                .await
                .unwrap()
                .is_none()
        );
    }
    fn x402_payment<'a>(nonce: u8, amount: u64, challenge: &'a str) -> NewX402Payment<'a> {
        NewX402Payment {
            wallet: "w",
            url: "http://x/paid",
            origin: "http://x",
            asset: "eip155:84532/0xabc",
            amount,
            nonce: [nonce; 32],
            valid_before: 2_000,
            challenge,
            payer: "0x01",
        }
    }

    #[tokio::test]
    async fn an_l402_only_ledger_is_migrated_in_place_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A ledger as the L402-only version wrote it (schema 0, one paid row).
            let pool = SqlitePool::connect_with(
                SqliteConnectOptions::new()
                    .filename(dir.path().join(FILE_NAME))
                    .create_if_missing(true),
            )
            .await
            .unwrap();
            sqlx::raw_sql(SCHEMA).execute(&pool).await.unwrap();
            sqlx::raw_sql(
                "INSERT INTO payments (created_at, updated_at, wallet, url, origin, amount_msat, \
                 reserved_msat, fee_msat, payment_hash, preimage, invoice, macaroon, state, pid) \
                 VALUES (1, 1, 'w', 'http://x/', 'http://x', 5000, 5000, 0, 'aa', 'bb', 'lnbc', \
                 'AgE', 'paid', 1)",
            )
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
        let ledger = Ledger::open_in(dir.path()).await.unwrap();
        let rows = ledger.payments(None, None).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].rail.as_str(), rows[0].amount_msat), ("l402", 5000));
        assert_eq!(rows[0].amount_units, None);
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&ledger.pool)
            .await
            .unwrap();
        assert_eq!(version, 1);
        ledger
            .reserve_x402(&x402_payment(1, 10, "c"), &TokenBudget::default(), 1000)
            .await
            .unwrap();
        drop(ledger);
        // Reopening a migrated ledger changes nothing; a newer one is refused.
        let ledger = Ledger::open_in(dir.path()).await.unwrap();
        assert_eq!(ledger.payments(None, None).await.unwrap().len(), 2);
        sqlx::raw_sql("PRAGMA user_version = 9")
            .execute(&ledger.pool)
            .await
            .unwrap();
        drop(ledger);
        assert!(matches!(
            Ledger::open_in(dir.path()).await,
            Err(LedgerError::TooNew(9))
        ));
    }

    #[tokio::test]
    async fn x402_reservations_keep_to_the_asset_budget_apart_from_sats() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open_in(dir.path()).await.unwrap();
        let budget = TokenBudget {
            max_per_call: Some(100),
            total: Some(250),
            ..TokenBudget::default()
        };
        let a = ledger
            .reserve_x402(&x402_payment(1, 100, "c1"), &budget, 1000)
            .await
            .unwrap();
        ledger
            .reserve_x402(&x402_payment(2, 100, "c2"), &budget, 1000)
            .await
            .unwrap();
        let r = ledger
            .reserve_x402(&x402_payment(3, 100, "c3"), &budget, 1000)
            .await
            .unwrap_err();
        match r {
            LedgerError::OverTokenBudget(r) => {
                assert_eq!((r.limit, r.asked, r.left), (budget::Limit::Total, 100, 50));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ledger
                .reserve_x402(
                    &x402_payment(4, 101, "c4"),
                    &TokenBudget {
                        max_per_call: Some(100),
                        ..TokenBudget::default()
                    },
                    1000
                )
                .await,
            Err(LedgerError::OverTokenBudget(_))
        ));
        // Another asset has its own budget; sats spending is untouched.
        let other = NewX402Payment {
            asset: "eip155:8453/0xdef",
            ..x402_payment(5, 100, "c5")
        };
        ledger.reserve_x402(&other, &budget, 1000).await.unwrap();
        let sats = ledger
            .spent("w", "http://x", &per_period(1), 1000)
            .await
            .unwrap();
        assert_eq!(sats, Spent::default());
        // Released, a reservation counts for nothing; settled, it counts for its amount.
        ledger.release(a, "refused", 1001).await.unwrap();
        let c = ledger
            .reserve_x402(&x402_payment(6, 100, "c6"), &budget, 1002)
            .await
            .unwrap();
        ledger.settle_x402(c, Some("0xtx"), 1003).await.unwrap();
        let spent = ledger
            .spent_units("w", "eip155:84532/0xabc", "http://x", &budget, 1004)
            .await
            .unwrap();
        assert_eq!(spent.total, 200);
        let row = ledger.payment(c).await.unwrap().unwrap();
        assert_eq!(
            (row.state, row.tx_hash.as_deref(), row.amount_units),
            (PaymentState::Paid, Some("0xtx"), Some(100))
        );
    }

    #[tokio::test]
    async fn an_open_x402_payment_is_offered_again_only_while_valid_and_signed() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open_in(dir.path()).await.unwrap();
        let none = TokenBudget::default();
        let id = ledger
            .reserve_x402(&x402_payment(1, 10, "same"), &none, 1000)
            .await
            .unwrap();
        let found = |now: u64| {
            let ledger = ledger.clone();
            async move {
                ledger
                    .reusable_x402("w", "same", now, 10)
                    .await
                    .unwrap()
                    .map(|r| r.id)
            }
        };
        // Not signed yet: nothing to send again.
        assert_eq!(found(1000).await, None);
        ledger.set_x402_payment(id, "eyJ4...").await.unwrap();
        assert_eq!(found(1000).await, Some(id));
        ledger.mark_unknown(id, "no answer", 1001).await.unwrap();
        assert_eq!(found(1985).await, Some(id));
        // Too close to validBefore (2000), another challenge, or settled: not offered.
        assert_eq!(found(1990).await, None);
        assert_eq!(
            ledger.reusable_x402("w", "other", 1000, 10).await.unwrap(),
            None
        );
        ledger.settle_x402(id, None, 1002).await.unwrap();
        assert_eq!(found(1000).await, None);
        assert_eq!(
            ledger.unresolved("w", "x402").await.unwrap(),
            Vec::<PaymentRow>::new()
        );
    }

    #[tokio::test]
    async fn concurrent_x402_reservations_never_exceed_the_asset_budget() {
        let dir = tempfile::tempdir().unwrap();
        // Two handles, as two processes would have.
        let one = Ledger::open_in(dir.path()).await.unwrap();
        let two = Ledger::open_in(dir.path()).await.unwrap();
        let budget = TokenBudget {
            per_period: Some(budget::UnitsWindow {
                units: 100,
                per: budget::Period::Hour,
            }),
            ..TokenBudget::default()
        };
        let mut tasks = Vec::new();
        for i in 0..40u8 {
            let ledger = if i % 2 == 0 { one.clone() } else { two.clone() };
            tasks.push(tokio::spawn(async move {
                let challenge = format!("c{i}");
                ledger
                    .reserve_x402(&x402_payment(i, 7, &challenge), &budget, 5000)
                    .await
            }));
        }
        let mut reserved = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                reserved += 1;
            }
        }
        assert_eq!(reserved, 100 / 7);
        let spent = one
            .spent_units("w", "eip155:84532/0xabc", "http://x", &budget, 5000)
            .await
            .unwrap();
        assert_eq!(spent.period_window, 7 * (100 / 7));
    }
}
