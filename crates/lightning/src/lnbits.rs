//! [LNbits](https://lnbits.com) backend: one LNbits wallet, through its REST API.
//!
//! - As an [`InvoiceBackend`] (the gateway) it needs the wallet's **invoice key** (read key):
//!   `POST /api/v1/payments` with `out: false` creates an invoice, `GET /api/v1/payments/{hash}`
//!   looks it up.
//! - As a [`PaymentBackend`] (a payer) it needs the wallet's **admin key**:
//!   `POST /api/v1/payments` with `out: true` pays, `GET /api/v1/wallet` reads the balance.
//! - As a [`Diagnose`] it reads `GET /api/v1/wallet` (wallet name and balance).
//!
//! LNbits counts invoice amounts in whole satoshis, so an amount with a sub-satoshi part is
//! refused rather than rounded. Everything LNbits answers is checked: the invoice it returns must
//! parse and carry the payment hash and amount asked for, and every preimage must hash to its
//! payment hash.
//!
//! Every call has a timeout. Reads and invoice creation are retried (with a short backoff) after
//! transient failures; a payment is retried only when no connection could be established, never
//! once the request may have reached LNbits. API keys are sent only in the `X-Api-Key` header,
//! never logged nor put in errors, and redirects are not followed (they would carry the key
//! elsewhere).
//!
//! Checked against LNbits 1.6.2. Facts of that version the code relies on:
//! - an unknown API key is answered `404 {"detail": "Wallet not found."}` (not 401); paying with
//!   an invoice key `403 "Invoice (or Admin) key required."`;
//! - payment errors are HTTP `520 {"detail": "...", "status": "failed"}`: `"Internal invoice
//!   already paid."`, `"Insufficient balance."`...;
//! - a fractional `amount` is silently truncated (hence the whole-sat rule here);
//! - it pays an expired invoice of its own wallets (hence the expiry check before paying), and
//!   after such an invoice has been marked expired, a payment attempt is answered `201` with the
//!   *payee's* failed record (hence the checks on the record a payment returns);
//! - `GET /api/v1/payments/{hash}` answers with or without a valid key; only with the key of
//!   the wallet that holds the payment does it include `details`.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use turnpike_l402::bolt11::Invoice;

use crate::http::{self, Idempotency, RetryPolicy, snippet};
use crate::rules;
use crate::secret::{Secret, SecretSource};
use crate::{
    BackendError, CreateInvoice, Diagnose, InvoiceBackend, InvoiceState, InvoiceStatus,
    IssuedInvoice, Msat, NodeInfo, OutgoingState, Payment, PaymentBackend, PaymentHash, Preimage,
    check_payment,
};

pub use crate::rules::{DEFAULT_RETRIES, DEFAULT_TIMEOUT_SECS};

pub use crate::rules::{MAX_RETRIES, MAX_TIMEOUT_SECS};

/// Longest time allowed to establish a connection (less when the timeout is shorter).
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between two status checks of a payment LNbits reports as pending.
const PENDING_POLL_INTERVAL: Duration = Duration::from_millis(500);

const PAYMENTS_PATH: &str = "/api/v1/payments";
const WALLET_PATH: &str = "/api/v1/wallet";

/// Configuration of an [`LnbitsBackend`], as written in TOML:
///
/// ```toml
/// url = "https://lnbits.example.com"     # LNbits' base URL (a path prefix is kept)
/// invoice_key = { env = "LNBITS_INVOICE_KEY" }   # enough for the gateway
/// admin_key = { file = "/run/secrets/lnbits-admin" }  # needed to pay
/// timeout_secs = 10
/// retries = 2
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LnbitsConfig {
    /// Base URL of the LNbits instance, `http` or `https`, e.g. `https://lnbits.example.com`
    /// or `https://example.com/lnbits`. No credentials, query or fragment.
    pub url: String,
    /// The wallet's invoice/read key: creates and looks up invoices, reads the balance. Enough
    /// for the gateway. Optional when `admin_key` is given.
    #[serde(default)]
    pub invoice_key: Option<SecretSource>,
    /// The wallet's admin key: needed to pay invoices; can also do everything the invoice key
    /// does.
    #[serde(default)]
    pub admin_key: Option<SecretSource>,
    /// Time allowed for each call to LNbits, retries included, in seconds (1 to 600).
    /// Default 10.
    #[serde(default = "rules::default_timeout_secs")]
    pub timeout_secs: u64,
    /// Retries of calls that are safe to repeat (0 to 10). Default 2.
    #[serde(default = "rules::default_retries")]
    pub retries: u32,
}

impl LnbitsConfig {
    /// A configuration for `url` with no keys and the default timeout and retries; set the keys
    /// with struct update syntax.
    pub fn new(url: impl Into<String>) -> LnbitsConfig {
        LnbitsConfig {
            url: url.into(),
            invoice_key: None,
            admin_key: None,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            retries: DEFAULT_RETRIES,
        }
    }
}

/// One LNbits wallet as a Lightning backend. Cheap to clone (clones share one connection pool).
///
/// Its `Debug` output shows no key.
#[derive(Debug, Clone)]
pub struct LnbitsBackend {
    client: reqwest::Client,
    /// The base URL without a trailing slash.
    base: String,
    /// For reading and creating invoices: the invoice key, else the admin key.
    read_key: Secret,
    /// Whether `read_key` is the invoice key.
    has_invoice_key: bool,
    admin_key: Option<Secret>,
    retry: RetryPolicy,
    timeout: Duration,
}

fn config_error(detail: impl std::fmt::Display) -> BackendError {
    BackendError::Rejected(format!("invalid LNbits configuration: {detail}"))
}

impl LnbitsBackend {
    /// Checks `config` and reads its keys now.
    ///
    /// Errors are [`BackendError::Rejected`] with a message starting `invalid LNbits
    /// configuration:` and naming the field: a URL that is not `http(s)` or carries credentials,
    /// no key at all, a key whose environment variable is not set or whose file cannot be read,
    /// a timeout or retry count out of range.
    pub fn new(config: &LnbitsConfig) -> Result<LnbitsBackend, BackendError> {
        let base = parse_base_url(&config.url)?;
        let resolve = |name: &str, source: &Option<SecretSource>| {
            source
                .as_ref()
                .map(|s| {
                    s.resolve()
                        .map_err(|e| config_error(format!("{name}: {e}")))
                })
                .transpose()
        };
        let invoice_key = resolve("invoice_key", &config.invoice_key)?;
        let admin_key = resolve("admin_key", &config.admin_key)?;
        let has_invoice_key = invoice_key.is_some();
        let read_key = invoice_key.or_else(|| admin_key.clone()).ok_or_else(|| {
            config_error("give invoice_key (enough for the gateway) or admin_key (needed to pay)")
        })?;
        rules::check_limits(config.timeout_secs, config.retries, None).map_err(config_error)?;
        let timeout = Duration::from_secs(config.timeout_secs);
        let client = http::api_client(timeout.min(MAX_CONNECT_TIMEOUT), timeout)
            .map_err(|e| config_error(format!("cannot build the HTTP client: {e}")))?;
        if base.starts_with("http://") && !Url::parse(&base).is_ok_and(|u| http::is_loopback(&u)) {
            tracing::warn!(
                "LNbits URL {base} is plain http: its API keys travel unencrypted; use https"
            );
        }
        Ok(LnbitsBackend {
            client,
            base,
            read_key,
            has_invoice_key,
            admin_key,
            retry: RetryPolicy::new(config.retries),
            timeout,
        })
    }

    /// This backend, connecting to public addresses only (the SSRF guard's resolver, checked
    /// at every connection): for a wallet URL a third party gave, such as a hub provider's
    /// payout. (An IP literal in the URL is not resolved: check it once with
    /// [`crate::net_guard::check_public_url`].)
    pub fn public_only(mut self) -> Result<LnbitsBackend, BackendError> {
        let timeout = self.timeout;
        self.client = http::public_api_client(timeout.min(MAX_CONNECT_TIMEOUT), timeout)
            .map_err(|e| config_error(format!("cannot build the HTTP client: {e}")))?;
        Ok(self)
    }

    /// The base URL calls go to (without a trailing slash).
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Whether an admin key is configured, so that this backend can pay.
    pub fn can_pay(&self) -> bool {
        self.admin_key.is_some()
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path` with `key`, retried after transient failures, within the timeout.
    async fn get(
        &self,
        path: &str,
        key: &Secret,
        what: &str,
    ) -> Result<(StatusCode, Vec<u8>), BackendError> {
        let url = self.endpoint(path);
        let call = http::send_with_retries(self.retry, Idempotency::Idempotent, what, || {
            self.client
                .get(&url)
                .header("X-Api-Key", key.expose())
                .header("Accept", "application/json")
        });
        http::within(self.timeout, what, call).await
    }

    /// `POST /api/v1/payments` with `key` and a JSON body, retried as `idempotency` allows,
    /// within the timeout.
    async fn post_payments<B: Serialize + Sync>(
        &self,
        body: &B,
        key: &Secret,
        idempotency: Idempotency,
        what: &str,
    ) -> Result<(StatusCode, Vec<u8>), BackendError> {
        let url = self.endpoint(PAYMENTS_PATH);
        let call = http::send_with_retries(self.retry, idempotency, what, || {
            self.client
                .post(&url)
                .header("X-Api-Key", key.expose())
                .header("Accept", "application/json")
                .json(body)
        });
        http::within(self.timeout, what, call).await
    }

    /// `GET /api/v1/wallet` with `key`.
    async fn wallet(&self, key: &Secret) -> Result<WalletBody, BackendError> {
        let (status, body) = self.get(WALLET_PATH, key, "lnbits wallet").await?;
        if !status.is_success() {
            return Err(map_error(status, &body));
        }
        parse_json(&body, "wallet")
    }

    /// `GET /api/v1/payments/{hash}` with `key`: `None` when LNbits does not know the hash.
    async fn payment_status(
        &self,
        hash: &PaymentHash,
        key: &Secret,
    ) -> Result<Option<LookupBody>, BackendError> {
        let path = format!("{PAYMENTS_PATH}/{}", hash.to_hex());
        let (status, body) = self.get(&path, key, "lnbits payment lookup").await?;
        if status.is_success() {
            return parse_json(&body, "payment status").map(Some);
        }
        match map_error(status, &body) {
            BackendError::UnknownInvoice => Ok(None),
            e => Err(e),
        }
    }

    /// When a lookup gives no `details` (the payment is not this wallet's, or LNbits did not
    /// recognise the key): tells the two apart with a wallet read.
    async fn not_ours(&self, key: &Secret) -> BackendError {
        match self.wallet(key).await {
            Ok(_) => BackendError::UnknownInvoice,
            Err(e) => e,
        }
    }

    /// Follows an outgoing payment of this wallet until it settles or fails, for at most the
    /// configured timeout. `Ok(None)`: LNbits has no outgoing payment of this hash in the wallet.
    async fn follow_outgoing(
        &self,
        invoice: &Invoice,
        key: &Secret,
    ) -> Result<Option<Payment>, BackendError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let Some(answer) = self.payment_status(&invoice.payment_hash(), key).await? else {
                return Ok(None);
            };
            let Some(record) = answer.details.as_ref().filter(|d| d.amount < 0) else {
                return Ok(None);
            };
            match record.state() {
                RecordState::Success => {
                    let preimage = answer.preimage.as_deref().or(record.preimage.as_deref());
                    return payment_from_record(invoice, record, preimage).map(Some);
                }
                RecordState::Failed => {
                    return Err(BackendError::Rejected(
                        "LNbits reports the payment as failed".into(),
                    ));
                }
                RecordState::Pending => {}
            }
            if tokio::time::Instant::now() + PENDING_POLL_INTERVAL > deadline {
                return Err(BackendError::Timeout);
            }
            tokio::time::sleep(PENDING_POLL_INTERVAL).await;
        }
    }
}

fn parse_base_url(url: &str) -> Result<String, BackendError> {
    let parsed = Url::parse(url.trim()).map_err(|e| config_error(format!("url: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || !parsed.has_host() {
        return Err(config_error(
            "url: must be an http or https URL with a host",
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(config_error(
            "url: must not carry credentials (give the keys as invoice_key / admin_key)",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(config_error("url: must not have a query or fragment"));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

// ---------------------------------------------------------------------------------------------
// Wire types.

#[derive(Serialize)]
struct CreateInvoiceBody<'a> {
    out: bool,
    amount: u64,
    unit: &'static str,
    memo: &'a str,
    expiry: u32,
}

#[derive(Serialize)]
struct PayBody<'a> {
    out: bool,
    bolt11: &'a str,
}

/// LNbits' payment record (its `Payment` model); only the fields used.
#[derive(Debug, Deserialize)]
struct PaymentRecord {
    payment_hash: String,
    #[serde(default)]
    bolt11: Option<String>,
    #[serde(default)]
    payment_request: Option<String>,
    /// Millisatoshis: positive for an incoming invoice, negative for an outgoing payment.
    amount: i64,
    /// Millisatoshis (negative or zero for outgoing payments).
    #[serde(default)]
    fee: i64,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    preimage: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
    #[serde(default)]
    labels: Vec<String>,
}

enum RecordState {
    Pending,
    Success,
    Failed,
}

impl PaymentRecord {
    fn state(&self) -> RecordState {
        match self.status.as_deref() {
            Some("success") => RecordState::Success,
            Some("failed") => RecordState::Failed,
            _ => RecordState::Pending,
        }
    }
}

/// The answer of `GET /api/v1/payments/{hash}`.
#[derive(Debug, Deserialize)]
struct LookupBody {
    paid: bool,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    preimage: Option<String>,
    /// Present only when the key given is the key of the wallet holding the payment.
    #[serde(default)]
    details: Option<PaymentRecord>,
}

/// The answer of `GET /api/v1/wallet`.
#[derive(Debug, Deserialize)]
struct WalletBody {
    name: String,
    /// Millisatoshis.
    balance: u64,
    /// Present only when the key is the admin key.
    #[serde(default)]
    id: Option<String>,
}

/// Parses a successful answer. The body is not quoted in errors: it may hold a preimage.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, BackendError> {
    serde_json::from_slice(body).map_err(|e| {
        BackendError::InvalidResponse(format!("LNbits {what}: unexpected answer: {e}"))
    })
}

/// The `detail` of an LNbits error answer (`{"detail": "..."}`; validation errors carry a list),
/// or a snippet of the body.
fn error_detail(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => match map.get("detail") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => snippet(other.to_string().as_bytes()),
            None => snippet(body),
        },
        _ => snippet(body),
    }
}

/// Maps an LNbits error answer to a [`BackendError`].
fn map_error(status: StatusCode, body: &[u8]) -> BackendError {
    let detail = error_detail(body);
    let lower = detail.to_ascii_lowercase();
    let message = || {
        if detail.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {detail}")
        }
    };
    match status.as_u16() {
        401 | 403 => BackendError::Unauthorized(message()),
        // LNbits answers an unknown API key with 404 "Wallet not found.".
        404 if lower.contains("wallet not found") => BackendError::Unauthorized(format!(
            "{} (LNbits knows no wallet with this key)",
            message()
        )),
        404 if lower.contains("does not exist") => BackendError::UnknownInvoice,
        404 | 405 => BackendError::Rejected(format!(
            "{} (is the URL the base URL of an LNbits instance?)",
            message()
        )),
        408 | 504 => BackendError::Timeout,
        502 | 503 => BackendError::Unreachable(message()),
        300..=399 => BackendError::Rejected(format!(
            "{} (LNbits answered a redirect, which is not followed: check the URL, and that \
             LNbits is set up)",
            message()
        )),
        _ if lower.contains("already paid") => BackendError::AlreadyPaid,
        _ if lower.contains("insufficient balance") || lower.contains("reserve at least") => {
            BackendError::InsufficientBalance
        }
        _ if lower.contains("expired") => BackendError::InvoiceExpired,
        _ => BackendError::Rejected(message()),
    }
}

fn parse_preimage(text: Option<&str>) -> Result<Preimage, BackendError> {
    let text = text.ok_or_else(|| {
        BackendError::InvalidResponse(
            "LNbits reports the payment settled without a preimage".into(),
        )
    })?;
    text.parse().map_err(|_| {
        BackendError::InvalidResponse(
            "the preimage LNbits returned is not 64 hex characters".into(),
        )
    })
}

/// The [`Payment`] an LNbits outgoing record describes, checked against `invoice`.
fn payment_from_record(
    invoice: &Invoice,
    record: &PaymentRecord,
    preimage: Option<&str>,
) -> Result<Payment, BackendError> {
    let expected = invoice.payment_hash();
    let hash: PaymentHash = record.payment_hash.parse().map_err(|_| {
        BackendError::InvalidResponse("LNbits returned a malformed payment hash".into())
    })?;
    let amount = invoice.amount().unwrap_or_default();
    if record.amount >= 0 || record.amount.unsigned_abs() != amount.0 {
        return Err(BackendError::InvalidResponse(format!(
            "LNbits answered with a record of {} msat, not an outgoing payment of {} msat",
            record.amount, amount.0
        )));
    }
    let payment = Payment {
        payment_hash: hash,
        preimage: parse_preimage(preimage)?,
        amount,
        fee: Msat(record.fee.unsigned_abs()),
    };
    if hash != expected {
        return Err(BackendError::InvalidResponse(format!(
            "LNbits paid payment hash {hash}, not the invoice's {expected}"
        )));
    }
    check_payment(invoice, &payment)?;
    Ok(payment)
}

#[async_trait]
impl InvoiceBackend for LnbitsBackend {
    fn name(&self) -> &'static str {
        "lnbits"
    }

    /// Creates an invoice in the wallet. The amount must be whole satoshis (LNbits' unit).
    /// Retried after transient failures: at worst an unused invoice is left behind.
    async fn create_invoice(&self, req: CreateInvoice) -> Result<IssuedInvoice, BackendError> {
        rules::check_create_request(&req)?;
        let sats = rules::whole_sats("LNbits", req.amount)?;

        let body = CreateInvoiceBody {
            out: false,
            amount: sats.0,
            unit: "sat",
            memo: &req.memo,
            expiry: req.expiry_secs,
        };
        let (status, answer) = self
            .post_payments(
                &body,
                &self.read_key,
                Idempotency::Idempotent,
                "lnbits create invoice",
            )
            .await?;
        if !status.is_success() {
            return Err(map_error(status, &answer));
        }
        let record: PaymentRecord = parse_json(&answer, "invoice")?;
        let text = record
            .bolt11
            .as_deref()
            .or(record.payment_request.as_deref())
            .ok_or_else(|| BackendError::InvalidResponse("LNbits returned no invoice".into()))?;
        let hash: PaymentHash = record.payment_hash.parse().map_err(|_| {
            BackendError::InvalidResponse("LNbits returned a malformed payment hash".into())
        })?;
        rules::check_issued("LNbits", text, &req, Some(hash))
    }

    /// Looks up an invoice of this wallet. A payment hash LNbits knows only in another wallet
    /// (or as an outgoing payment) is [`BackendError::UnknownInvoice`].
    async fn lookup_invoice(&self, hash: &PaymentHash) -> Result<InvoiceStatus, BackendError> {
        let key = &self.read_key;
        let answer = self
            .payment_status(hash, key)
            .await?
            .ok_or(BackendError::UnknownInvoice)?;
        let Some(record) = answer.details.as_ref() else {
            return Err(self.not_ours(key).await);
        };
        if record.payment_hash.parse::<PaymentHash>().ok() != Some(*hash) {
            return Err(BackendError::InvalidResponse(format!(
                "asked for payment {hash}, LNbits answered about {}",
                snippet(record.payment_hash.as_bytes())
            )));
        }
        if record.amount <= 0 {
            // An outgoing payment of this wallet, not an invoice.
            return Err(BackendError::UnknownInvoice);
        }
        let amount = Msat(record.amount.unsigned_abs());

        let settled = answer.paid || matches!(record.state(), RecordState::Success);
        let state = if settled {
            let preimage =
                parse_preimage(answer.preimage.as_deref().or(record.preimage.as_deref()))?;
            let settled_at = record
                .updated_at
                .as_deref()
                .and_then(parse_rfc3339)
                .unwrap_or_else(crate::now_unix);
            // LNbits reports the invoice's amount, not what was received.
            rules::check_settled("LNbits", hash, preimage, None, amount, settled_at)?
        } else if matches!(record.state(), RecordState::Failed)
            || answer.status.as_deref() == Some("failed")
        {
            let expired = record.labels.iter().any(|l| l == "expired")
                || record
                    .bolt11
                    .as_deref()
                    .and_then(|b| Invoice::parse(b).ok())
                    .is_some_and(|i| i.is_expired(crate::now_unix()));
            if expired {
                InvoiceState::Expired
            } else {
                InvoiceState::Canceled
            }
        } else {
            InvoiceState::Pending
        };
        Ok(InvoiceStatus {
            payment_hash: *hash,
            amount,
            state,
        })
    }
}

#[async_trait]
impl PaymentBackend for LnbitsBackend {
    fn name(&self) -> &'static str {
        "lnbits"
    }

    /// Pays `bolt11` from the wallet (admin key needed) and checks the preimage.
    ///
    /// LNbits takes no fee limit through its API: it reserves fees by its own settings
    /// (`LNBITS_RESERVE_FEE_MIN`, `LNBITS_RESERVE_FEE_PERCENT`; nothing for payments between
    /// its own wallets). A fee above `max_fee` is logged as a warning.
    ///
    /// The request is repeated only if no connection could be established. When it fails after
    /// it may have reached LNbits (a timeout, a reset), the wallet's payments are checked once
    /// before giving up, so that a payment that did go through is returned rather than an error.
    async fn pay_invoice(&self, bolt11: &str, max_fee: Msat) -> Result<Payment, BackendError> {
        // Checked here too: LNbits would pay an expired invoice of one of its own wallets.
        let (invoice, _) = rules::check_payable(bolt11, crate::now_unix())?;
        let key = self.admin_key.as_ref().ok_or(BackendError::Unsupported(
            "paying with LNbits needs the wallet's admin key (admin_key)",
        ))?;

        let body = PayBody {
            out: true,
            bolt11: invoice.as_str(),
        };
        let sent = self
            .post_payments(&body, key, Idempotency::ConnectOnly, "lnbits pay")
            .await;
        let payment = match sent {
            Ok((status, answer)) if status.is_success() => {
                let record: PaymentRecord = parse_json(&answer, "payment")?;
                match record.state() {
                    RecordState::Success => {
                        payment_from_record(&invoice, &record, record.preimage.as_deref())?
                    }
                    RecordState::Pending if record.amount < 0 => {
                        self.follow_outgoing(&invoice, key).await?.ok_or_else(|| {
                            BackendError::InvalidResponse(
                                "LNbits reported a pending payment it then did not know".into(),
                            )
                        })?
                    }
                    _ if record.labels.iter().any(|l| l == "expired") => {
                        return Err(BackendError::InvoiceExpired);
                    }
                    _ => {
                        return Err(BackendError::Rejected(format!(
                            "LNbits did not pay (status {})",
                            record.status.as_deref().unwrap_or("unknown")
                        )));
                    }
                }
            }
            Ok((status, answer)) => {
                let detail = error_detail(&answer);
                if detail.to_ascii_lowercase().contains("still pending") {
                    // An earlier attempt is in flight: follow it.
                    self.follow_outgoing(&invoice, key)
                        .await?
                        .ok_or_else(|| map_error(status, &answer))?
                } else {
                    return Err(map_error(status, &answer));
                }
            }
            Err(e) if e.is_transient() => {
                // The request may have reached LNbits: see whether it paid.
                match self.follow_outgoing(&invoice, key).await {
                    Ok(Some(payment)) => payment,
                    _ => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        // LNbits takes no fee limit: one above `max_fee` is only logged.
        rules::check_paid("LNbits", &invoice, payment, max_fee)
    }

    /// The wallet's balance (with the admin key when configured, else the invoice key).
    async fn balance(&self) -> Result<Msat, BackendError> {
        let key = self.admin_key.as_ref().unwrap_or(&self.read_key);
        Ok(Msat(self.wallet(key).await?.balance))
    }

    /// `GET /api/v1/payments/<hash>` with the wallet's key: the wallet's outgoing record of
    /// this hash (a negative amount), by its status.
    async fn lookup_payment(&self, hash: &PaymentHash) -> Result<OutgoingState, BackendError> {
        let key = self.admin_key.as_ref().unwrap_or(&self.read_key);
        let Some(answer) = self.payment_status(hash, key).await? else {
            return Ok(OutgoingState::Unknown);
        };
        let Some(record) = answer.details.as_ref().filter(|d| d.amount < 0) else {
            return Ok(OutgoingState::Unknown);
        };
        if record.payment_hash.parse::<PaymentHash>().ok() != Some(*hash) {
            return Err(BackendError::InvalidResponse(format!(
                "asked for payment {hash}, LNbits answered about {}",
                snippet(record.payment_hash.as_bytes())
            )));
        }
        match record.state() {
            RecordState::Success => {
                let preimage =
                    parse_preimage(answer.preimage.as_deref().or(record.preimage.as_deref()))?;
                OutgoingState::succeeded(
                    hash,
                    preimage,
                    Msat(record.amount.unsigned_abs()),
                    Msat(record.fee.unsigned_abs()),
                )
            }
            RecordState::Failed => Ok(OutgoingState::Failed(
                "LNbits reports the payment as failed".into(),
            )),
            RecordState::Pending => Ok(OutgoingState::Pending),
        }
    }
}

#[async_trait]
impl Diagnose for LnbitsBackend {
    /// Reads the wallet with each configured key: the wallet name as alias and the balance.
    /// A configured admin key that LNbits does not take as an admin key is
    /// [`BackendError::Unauthorized`].
    async fn info(&self) -> Result<NodeInfo, BackendError> {
        let wallet = self.wallet(&self.read_key).await?;
        // LNbits includes the wallet id only when the key is an admin key.
        let admin_ok = match &self.admin_key {
            None => true,
            Some(_) if !self.has_invoice_key => wallet.id.is_some(),
            Some(admin) => self.wallet(admin).await?.id.is_some(),
        };
        if !admin_ok {
            return Err(BackendError::Unauthorized(
                "admin_key is not the admin key of an LNbits wallet".into(),
            ));
        }
        Ok(NodeInfo {
            backend: "lnbits",
            alias: Some(wallet.name),
            node_id: None,
            network: None,
            balance: Some(Msat(wallet.balance)),
        })
    }
}

/// Parses an RFC 3339 / ISO 8601 time as LNbits writes it (`2026-11-22T02:42:02.135799+00:00`;
/// without an offset it is UTC) into unix seconds.
fn parse_rfc3339(s: &str) -> Option<u64> {
    let s = s.trim();
    let (date, rest) = s.split_once(['T', ' '])?;
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    let (time, offset_secs) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0i64)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (t, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (h, m) = off[1..].split_once(':').unwrap_or((&off[1..], "0"));
        let h: i64 = h.parse().ok()?;
        let m: i64 = m.parse().ok()?;
        (t, sign * (h * 3600 + m * 60))
    } else {
        (rest, 0)
    };
    let time = time.split('.').next()?;
    let mut t = time.splitn(3, ':');
    let hour: i64 = t.next()?.parse().ok()?;
    let minute: i64 = t.next()?.parse().ok()?;
    let second: i64 = t.next().unwrap_or("0").parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    u64::try_from(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: LnbitsConfig = serde_json::from_str(
            r#"{"url": "http://127.0.0.1:5000/", "invoice_key": {"env": "X"}}"#,
        )
        .unwrap();
        assert_eq!(c.timeout_secs, DEFAULT_TIMEOUT_SECS);
        assert_eq!(c.retries, DEFAULT_RETRIES);
        assert_eq!(c.admin_key, None);
        assert!(
            serde_json::from_str::<LnbitsConfig>(r#"{"url": "http://x", "invoce_key": "k"}"#)
                .is_err()
        );

        // Usable inside an internally tagged enum, as a gateway config would hold it.
        #[derive(Deserialize)]
        #[serde(tag = "kind", rename_all = "lowercase")]
        enum Backend {
            Lnbits(LnbitsConfig),
        }
        let Backend::Lnbits(c) = serde_json::from_str::<Backend>(
            r#"{"kind": "lnbits", "url": "https://l.example", "admin_key": "k", "retries": 0}"#,
        )
        .unwrap();
        assert_eq!(c.retries, 0);
    }

    #[test]
    fn config_errors_name_the_field_and_never_the_secret() {
        let err = |c: LnbitsConfig| LnbitsBackend::new(&c).unwrap_err().to_string();
        let key = Some(SecretSource::Inline("sup3rsecret".into()));

        let e = err(LnbitsConfig {
            invoice_key: Some(SecretSource::Env {
                env: "TURNPIKE_TEST_SURELY_UNSET_LNBITS_KEY".into(),
            }),
            ..LnbitsConfig::new("http://127.0.0.1:5000")
        });
        assert!(e.contains("invoice_key") && e.contains("TURNPIKE_TEST_SURELY_UNSET_LNBITS_KEY"));

        assert!(err(LnbitsConfig::new("http://127.0.0.1:5000")).contains("invoice_key"));
        for bad in ["ftp://x", "not a url", "http://u:p@host", "http://h/?a=1"] {
            let e = err(LnbitsConfig {
                invoice_key: key.clone(),
                ..LnbitsConfig::new(bad)
            });
            assert!(e.contains("url"), "{bad}: {e}");
            assert!(!e.contains("sup3rsecret"));
        }
        assert!(
            err(LnbitsConfig {
                invoice_key: key.clone(),
                timeout_secs: 0,
                ..LnbitsConfig::new("http://h")
            })
            .contains("timeout_secs")
        );
        assert!(
            err(LnbitsConfig {
                invoice_key: key.clone(),
                retries: 11,
                ..LnbitsConfig::new("http://h")
            })
            .contains("retries")
        );

        let b = LnbitsBackend::new(&LnbitsConfig {
            admin_key: key,
            ..LnbitsConfig::new("https://h.example/lnbits/")
        })
        .unwrap();
        assert_eq!(b.url(), "https://h.example/lnbits");
        assert!(b.can_pay());
        assert!(!format!("{b:?}").contains("sup3rsecret"));
    }

    #[test]
    fn errors_map_to_precise_kinds() {
        let m = |status: u16, body: &str| {
            map_error(StatusCode::from_u16(status).unwrap(), body.as_bytes())
        };
        assert_eq!(
            m(
                520,
                r#"{"detail":"Internal invoice already paid.","status":"failed"}"#
            ),
            BackendError::AlreadyPaid
        );
        assert_eq!(
            m(
                520,
                r#"{"detail":"Insufficient balance.","status":"failed"}"#
            ),
            BackendError::InsufficientBalance
        );
        assert_eq!(
            m(
                520,
                r#"{"detail":"You must reserve at least (2  sat) to cover potential routing fees.","status":"failed"}"#
            ),
            BackendError::InsufficientBalance
        );
        assert!(matches!(
            m(404, r#"{"detail":"Wallet not found."}"#),
            BackendError::Unauthorized(_)
        ));
        assert!(matches!(
            m(401, r#"{"detail":"No Api Key provided."}"#),
            BackendError::Unauthorized(_)
        ));
        assert!(matches!(
            m(403, r#"{"detail":"Invoice (or Admin) key required."}"#),
            BackendError::Unauthorized(_)
        ));
        assert_eq!(
            m(404, r#"{"detail":"Payment does not exist."}"#),
            BackendError::UnknownInvoice
        );
        assert!(matches!(
            m(404, r#"{"detail":"Not Found"}"#),
            BackendError::Rejected(_)
        ));
        assert!(matches!(m(307, ""), BackendError::Rejected(_)));
        assert!(matches!(m(503, "<html>"), BackendError::Unreachable(_)));
        assert_eq!(m(504, ""), BackendError::Timeout);
        assert!(matches!(
            m(520, r#"{"detail":"Bolt11 decoding failed.","status":"failed"}"#),
            BackendError::Rejected(ref s) if s.contains("Bolt11 decoding failed")
        ));
        assert!(matches!(
            m(400, r#"{"detail":[{"loc":["body","memo"],"msg":"too long"}]}"#),
            BackendError::Rejected(ref s) if s.contains("too long")
        ));
    }

    /// A stand-in for LNbits answering fixed bodies, recording what it was sent.
    mod fake {
        use std::sync::{Arc, Mutex};

        use axum::Router;
        use axum::extract::State;
        use axum::http::{HeaderMap, StatusCode as Status};
        use axum::routing::{get, post};

        /// Fixed answers (status, body) and the requests seen: (path, API key, body).
        #[derive(Clone, Default)]
        pub(super) struct Fake {
            pub(super) post: (u16, String),
            pub(super) get: (u16, String),
            pub(super) seen: Arc<Mutex<Vec<(String, String, String)>>>,
        }

        fn answer(
            (status, body): &(u16, String),
        ) -> (Status, [(&'static str, &'static str); 1], String) {
            (
                Status::from_u16(*status).unwrap(),
                [("content-type", "application/json")],
                body.clone(),
            )
        }

        fn record(fake: &Fake, path: &str, headers: &HeaderMap, body: String) {
            let key = headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            fake.seen.lock().unwrap().push((path.to_owned(), key, body));
        }

        /// Serves `fake` on a free port; returns its base URL.
        pub(super) async fn serve(fake: Fake) -> String {
            let app = Router::new()
                .route(
                    "/api/v1/payments",
                    post(
                        |State(f): State<Fake>, headers: HeaderMap, body: String| async move {
                            record(&f, "POST /api/v1/payments", &headers, body);
                            answer(&f.post)
                        },
                    ),
                )
                .route(
                    "/api/v1/payments/{hash}",
                    get(|State(f): State<Fake>, headers: HeaderMap| async move {
                        record(&f, "GET /api/v1/payments/{hash}", &headers, String::new());
                        answer(&f.get)
                    }),
                )
                .with_state(fake);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("http://{addr}")
        }
    }

    fn backend(url: &str) -> LnbitsBackend {
        LnbitsBackend::new(&LnbitsConfig {
            invoice_key: Some(SecretSource::Inline("inkey".into())),
            admin_key: Some(SecretSource::Inline("adminkey".into())),
            retries: 0,
            ..LnbitsConfig::new(url)
        })
        .unwrap()
    }

    /// A real (dev backend, regtest) invoice and the preimage that pays it.
    async fn dev_invoice(msat: u64) -> (crate::IssuedInvoice, Preimage) {
        let dev = crate::DevBackend::random();
        let issued = dev
            .create_invoice(CreateInvoice {
                amount: Msat(msat),
                memo: "m".into(),
                expiry_secs: 600,
            })
            .await
            .unwrap();
        let paid = dev.pay_invoice(&issued.bolt11, Msat(0)).await.unwrap();
        (issued, paid.preimage)
    }

    fn created(bolt11: &str, hash: &PaymentHash) -> (u16, String) {
        let body = serde_json::json!({
            "checking_id": hash.to_hex(), "payment_hash": hash.to_hex(), "wallet_id": "w",
            "amount": 1000, "fee": 0, "bolt11": bolt11, "payment_request": bolt11,
            "status": "pending", "memo": "m", "preimage": null,
        });
        (201, body.to_string())
    }

    fn invalid<T: std::fmt::Debug>(r: Result<T, BackendError>, what: &str) {
        assert!(
            matches!(r, Err(BackendError::InvalidResponse(_))),
            "{what}: {r:?}"
        );
    }

    /// A name resolving to an internal address is refused at connection time, before
    /// anything is sent, once the backend is limited to public addresses.
    #[tokio::test]
    async fn public_only_refuses_internal_names_at_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = LnbitsConfig {
            invoice_key: Some(SecretSource::Inline("k".repeat(32))),
            retries: 0,
            ..LnbitsConfig::new(format!("http://localhost:{port}"))
        };
        let backend = LnbitsBackend::new(&config).unwrap().public_only().unwrap();
        let req = CreateInvoice {
            amount: Msat(1000),
            memo: "x".into(),
            expiry_secs: 60,
        };
        let err = backend.create_invoice(req).await.unwrap_err();
        assert!(matches!(err, BackendError::Unreachable(_)), "{err}");
        // Nothing connected to the listener (a connection made would be ready to accept now).
        let accepted = futures_util::FutureExt::now_or_never(listener.accept());
        assert!(
            accepted.is_none(),
            "a connection reached the internal address"
        );
    }

    #[tokio::test]
    async fn create_invoice_checks_what_lnbits_returns() {
        crate::ensure_crypto_provider();
        let (one, _) = dev_invoice(1000).await;
        let (two, _) = dev_invoice(2000).await;
        let req = |msat| CreateInvoice {
            amount: Msat(msat),
            memo: "a memo".into(),
            expiry_secs: 300,
        };

        // A good answer, and what was sent.
        let fake = fake::Fake {
            post: created(&one.bolt11, &one.payment_hash),
            ..Default::default()
        };
        let b = backend(&fake::serve(fake.clone()).await);
        let issued = b.create_invoice(req(1000)).await.unwrap();
        assert_eq!(issued.payment_hash, one.payment_hash);
        assert_eq!(issued.bolt11, one.bolt11);
        let (path, key, body) = fake.seen.lock().unwrap()[0].clone();
        assert_eq!(path, "POST /api/v1/payments");
        assert_eq!(key, "inkey", "the invoice key is preferred for invoices");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"out": false, "amount": 1, "unit": "sat", "memo": "a memo", "expiry": 300})
        );

        // Sub-satoshi amounts are refused before any call (LNbits would truncate them).
        assert!(matches!(
            b.create_invoice(req(1500)).await,
            Err(BackendError::Rejected(_))
        ));
        assert_eq!(fake.seen.lock().unwrap().len(), 1);

        // An invoice for another amount.
        invalid(b.create_invoice(req(2000)).await, "another amount");

        let serve = |post: (u16, String)| async move {
            backend(
                &fake::serve(fake::Fake {
                    post,
                    ..Default::default()
                })
                .await,
            )
        };
        // Malformed JSON, a body that is not a payment, a bolt11 that does not parse.
        invalid(
            serve((201, "{\"payment_hash\": ".into()))
                .await
                .create_invoice(req(1000))
                .await,
            "malformed JSON",
        );
        invalid(
            serve((201, "[1, 2]".into()))
                .await
                .create_invoice(req(1000))
                .await,
            "not an object",
        );
        invalid(
            serve(created("lnbcgarbage", &one.payment_hash))
                .await
                .create_invoice(req(1000))
                .await,
            "bad bolt11",
        );
        // The payment hash reported is not the invoice's.
        invalid(
            serve(created(&one.bolt11, &two.payment_hash))
                .await
                .create_invoice(req(1000))
                .await,
            "another payment hash",
        );
        invalid(
            serve(created(&one.bolt11, &PaymentHash([0; 32])))
                .await
                .create_invoice(req(1000))
                .await,
            "zero payment hash",
        );
    }

    #[tokio::test]
    async fn lookup_checks_the_preimage() {
        crate::ensure_crypto_provider();
        let (one, preimage) = dev_invoice(1000).await;
        let lookup = |answer: serde_json::Value| async move {
            backend(
                &fake::serve(fake::Fake {
                    get: (200, answer.to_string()),
                    ..Default::default()
                })
                .await,
            )
            .lookup_invoice(&one.payment_hash)
            .await
        };
        let paid = |preimage: &str, hash: &str| {
            serde_json::json!({
                "paid": true, "preimage": preimage,
                "details": {"payment_hash": hash, "amount": 1000, "status": "success",
                            "preimage": preimage, "updated_at": "2026-11-22T02:42:02+00:00"},
            })
        };
        let hash = one.payment_hash.to_hex();

        let ok = lookup(paid(&preimage.to_hex(), &hash)).await.unwrap();
        assert_eq!(
            ok.state,
            InvoiceState::Settled {
                preimage,
                settled_at: 1_795_315_322
            }
        );
        assert_eq!(ok.amount, Msat(1000));

        invalid(
            lookup(paid(&"00".repeat(32), &hash)).await,
            "a preimage that does not hash",
        );
        invalid(
            lookup(paid("xyz", &hash)).await,
            "a preimage that is not hex",
        );
        invalid(
            lookup(paid(&preimage.to_hex(), &"11".repeat(32))).await,
            "details about another payment",
        );
        invalid(
            lookup(serde_json::json!({"paid": true, "details": {"payment_hash": hash, "amount": 1000, "status": "success"}}))
                .await,
            "settled without a preimage",
        );
        invalid(
            lookup(serde_json::json!({"paid": "yes"})).await,
            "malformed",
        );

        let pending = lookup(serde_json::json!({
            "paid": false, "status": "pending", "preimage": null,
            "details": {"payment_hash": hash, "amount": 1000, "status": "pending"},
        }))
        .await
        .unwrap();
        assert_eq!(pending.state, InvoiceState::Pending);
        let expired = lookup(serde_json::json!({
            "paid": false, "status": "failed",
            "details": {"payment_hash": hash, "amount": 1000, "status": "failed", "labels": ["expired"]},
        }))
        .await
        .unwrap();
        assert_eq!(expired.state, InvoiceState::Expired);
    }

    #[tokio::test]
    async fn pay_checks_what_lnbits_returns() {
        crate::ensure_crypto_provider();
        let (one, preimage) = dev_invoice(1000).await;
        let hash = one.payment_hash.to_hex();
        let pay = |post: (u16, serde_json::Value), get: serde_json::Value| {
            let bolt11 = one.bolt11.clone();
            async move {
                let fake = fake::Fake {
                    post: (post.0, post.1.to_string()),
                    get: (200, get.to_string()),
                    ..Default::default()
                };
                let r = backend(&fake::serve(fake.clone()).await)
                    .pay_invoice(&bolt11, Msat(0))
                    .await;
                let seen = fake.seen.lock().unwrap().clone();
                (r, seen)
            }
        };
        let record = |amount: i64, status: &str, preimage: &str| {
            serde_json::json!({
                "payment_hash": hash, "amount": amount, "fee": 0, "status": status,
                "preimage": preimage, "bolt11": one.bolt11,
            })
        };

        let (r, seen) = pay(
            (201, record(-1000, "success", &preimage.to_hex())),
            json_null(),
        )
        .await;
        let payment = r.unwrap();
        assert_eq!(payment.preimage, preimage);
        assert_eq!(payment.amount, Msat(1000));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].1, "adminkey");
        let body: serde_json::Value = serde_json::from_str(&seen[0].2).unwrap();
        assert_eq!(body, serde_json::json!({"out": true, "bolt11": one.bolt11}));

        let (r, _) = pay(
            (201, record(-1000, "success", &"00".repeat(32))),
            json_null(),
        )
        .await;
        invalid(r, "a preimage that does not hash");
        let (r, _) = pay(
            (201, record(-2000, "success", &preimage.to_hex())),
            json_null(),
        )
        .await;
        invalid(r, "another amount");
        let (r, _) = pay((201, serde_json::json!("ok")), json_null()).await;
        invalid(r, "not a payment record");

        // LNbits 1.6.2, paying an invoice of its own that it has marked expired: 201 with the
        // payee's failed record, preimage included. Nothing was paid.
        let mut payee_record = record(1000, "failed", &preimage.to_hex());
        payee_record["labels"] = serde_json::json!(["expired"]);
        let (r, _) = pay((201, payee_record), json_null()).await;
        assert_eq!(r, Err(BackendError::InvoiceExpired));
        let (r, _) = pay(
            (201, record(-1000, "failed", &preimage.to_hex())),
            json_null(),
        )
        .await;
        assert!(matches!(r, Err(BackendError::Rejected(_))), "{r:?}");

        // Pending, then settled: followed through the status endpoint.
        let settled = serde_json::json!({
            "paid": true, "preimage": preimage.to_hex(),
            "details": record(-1000, "success", &preimage.to_hex()),
        });
        let (r, seen) = pay((201, record(-1000, "pending", "")), settled).await;
        assert_eq!(r.map(|p| p.preimage), Ok(preimage));
        assert_eq!(seen.len(), 2);

        // Payment errors are final: the request is not repeated.
        let (r, seen) = pay(
            (
                520,
                serde_json::json!({"detail": "Internal invoice already paid.", "status": "failed"}),
            ),
            json_null(),
        )
        .await;
        assert_eq!(r, Err(BackendError::AlreadyPaid));
        assert_eq!(seen.len(), 1);
    }

    #[tokio::test]
    async fn a_silent_lnbits_times_out_within_the_timeout() {
        crate::ensure_crypto_provider();
        // Accepts connections, never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        let b = LnbitsBackend::new(&LnbitsConfig {
            invoice_key: Some(SecretSource::Inline("k".into())),
            admin_key: Some(SecretSource::Inline("k".into())),
            timeout_secs: 1,
            ..LnbitsConfig::new(url)
        })
        .unwrap();
        let started = std::time::Instant::now();
        let r = b
            .create_invoice(CreateInvoice {
                amount: Msat(1000),
                memo: String::new(),
                expiry_secs: 60,
            })
            .await;
        assert_eq!(r, Err(BackendError::Timeout));
        assert!(
            started.elapsed() < Duration::from_millis(1800),
            "{:?}",
            started.elapsed()
        );

        // Paying: the request may have arrived, so it is not repeated; the status check that
        // follows has its own timeout.
        let (one, _) = dev_invoice(1000).await;
        let started = std::time::Instant::now();
        assert_eq!(
            b.pay_invoice(&one.bolt11, Msat(0)).await,
            Err(BackendError::Timeout)
        );
        assert!(
            started.elapsed() < Duration::from_millis(3500),
            "{:?}",
            started.elapsed()
        );
    }

    fn json_null() -> serde_json::Value {
        serde_json::Value::Null
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00+00:00"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-11-22T02:42:02.135799+00:00"),
            Some(1_795_315_322)
        );
        assert_eq!(parse_rfc3339("2026-11-22T02:42:02"), Some(1_795_315_322));
        assert_eq!(
            parse_rfc3339("2026-11-22T03:42:02+01:00"),
            Some(1_795_315_322)
        );
        assert_eq!(parse_rfc3339("2026-11-22T02:42:02Z"), Some(1_795_315_322));
        assert_eq!(parse_rfc3339("2000-02-29T12:00:00Z"), Some(951_825_600));
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
    }
}
