//! [phoenixd](https://phoenix.acinq.co/server), ACINQ's Lightning server, through its HTTP API.
//!
//! Authentication is HTTP basic auth with an empty user name and the password from
//! `phoenix.conf`: `http-password` (full access) or `http-password-limited-access` (everything
//! but paying). Requests are form-encoded; answers are JSON, errors plain text. Calls used:
//!
//! | what | call |
//! | --- | --- |
//! | create an invoice | `POST /createinvoice` (`amountSat`, `description`, `expirySeconds`) → `paymentHash`, `serialized` |
//! | look one up | `GET /payments/incoming/{paymentHash}` → `isPaid`, `isExpired`, `preimage`, `receivedSat`, `requestedSat`, `completedAt` |
//! | pay | `POST /payinvoice` (`invoice`) → `paymentPreimage`, `paymentHash`, `routingFeeSat`, `recipientAmountSat`, or `reason` |
//! | balance | `GET /getbalance` → `balanceSat`, `feeCreditSat` |
//! | describe | `GET /getinfo` → `nodeId`, `chain` |
//!
//! phoenixd counts in whole satoshis: an invoice for an amount with a sub-satoshi part is
//! refused (never rounded), and descriptions are limited to 128 characters. phoenixd has no
//! routing-fee limit parameter: `max_fee` cannot be enforced before paying (a fee above it is
//! logged as a warning afterwards). phoenixd answers a failed payment with `200` and
//! `{"paymentHash": ..., "reason": "..."}`; paying an invoice it already paid fails with the
//! reason `this invoice has already been paid` ([`BackendError::AlreadyPaid`]).
//!
//! What comes back is checked: the invoice phoenixd returns must parse and carry the requested
//! amount and the hash it reports; a paid invoice's preimage must hash to its payment hash (an
//! unpaid one's `preimage` is ignored: phoenixd reports it before payment too) and the amount
//! received must cover the amount requested; a payment's preimage is checked with
//! [`check_payment`](crate::check_payment) and the amount delivered must be the invoice's.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use turnpike_l402::bolt11::Invoice;

use crate::http::{self, Idempotency, NodeHttp, RetryPolicy};
use crate::rules::{self, Attempt};
use crate::{
    BackendError, CreateInvoice, Diagnose, InvoiceBackend, InvoiceState, InvoiceStatus,
    IssuedInvoice, Msat, NodeInfo, OutgoingState, Payment, PaymentBackend, PaymentHash, Preimage,
    Secret, SecretSource,
};

pub use crate::rules::{DEFAULT_PAYMENT_TIMEOUT_SECS, DEFAULT_RETRIES, DEFAULT_TIMEOUT_SECS};
/// Longest invoice description phoenixd accepts, in characters (UTF-16 code units).
pub const MAX_DESCRIPTION_CHARS: usize = 128;

/// Time allowed to establish a connection (also bounded by the call's timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Configuration of the phoenixd backend (`[backend] kind = "phoenixd"`).
///
/// ```toml
/// url = "http://127.0.0.1:9740"             # phoenixd's HTTP API (http-bind-ip, http-bind-port)
/// password = { env = "PHOENIXD_PASSWORD" }  # http-password from ~/.phoenix/phoenix.conf
/// timeout_secs = 10                         # each call, retries included
/// retries = 2                               # for calls that are safe to repeat
/// payment_timeout_secs = 60                 # a payment, from request to result
/// ```
///
/// The gateway can use the limited-access password (`http-password-limited-access`); paying
/// needs the full-access one. A payment unresolved after `payment_timeout_secs`: see
/// `GET /payments/outgoing`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoenixdConfig {
    /// Base URL of phoenixd's HTTP API, e.g. `http://127.0.0.1:9740`.
    pub url: String,
    /// The API password (basic auth, empty user name).
    pub password: SecretSource,
    /// Call timeouts and retries (`timeout_secs`, `retries`, `payment_timeout_secs`).
    #[serde(flatten)]
    pub limits: rules::CallLimits,
}

/// Why a [`PhoenixdBackend`] could not be set up from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoenixdConfigError {
    /// The URL is not a usable `http(s)` URL.
    #[error("phoenixd: invalid url: {0}")]
    InvalidUrl(String),
    /// The password cannot be read.
    #[error("phoenixd: password: {0}")]
    Password(String),
    /// Another setting is out of range.
    #[error("phoenixd: {0}")]
    Invalid(String),
    /// The HTTP client could not be built.
    #[error("phoenixd: cannot build the HTTP client: {0}")]
    HttpClient(String),
}

// phoenixd takes no certificate to pin: no TlsCert error can arise.
http::node_setup_error!(PhoenixdConfigError: InvalidUrl, Invalid, HttpClient, HttpClient);

/// A phoenixd node: an [`InvoiceBackend`] for the gateway and a [`PaymentBackend`] for payers.
/// `Debug` never prints the password.
#[derive(Debug)]
pub struct PhoenixdBackend {
    http: NodeHttp,
    password: Secret,
}

impl PhoenixdBackend {
    /// Builds the backend: resolves the password and prepares the HTTP client. No network I/O
    /// (use [`Diagnose::info`] to check the connection).
    pub fn new(config: &PhoenixdConfig) -> Result<Self, PhoenixdConfigError> {
        let settings = http::node_settings!(config, "phoenixd", "password", None);
        Self::build(config, settings)
    }

    /// Builds the backend from values (a hub provider's payout): phoenixd at `url`, its
    /// password, default timeouts; with `public_only`, it connects to public addresses only
    /// ([`crate::net_guard::PublicOnly`]).
    pub fn from_values(
        url: &str,
        password: &str,
        public_only: bool,
    ) -> Result<Self, PhoenixdConfigError> {
        let config = PhoenixdConfig {
            url: url.to_owned(),
            password: SecretSource::Inline(password.to_owned()),
            limits: rules::CallLimits::default(),
        };
        http::node_from_values!(config, "phoenixd", "password", None, public_only)
    }

    fn build(
        config: &PhoenixdConfig,
        settings: http::NodeSettings<'_>,
    ) -> Result<Self, PhoenixdConfigError> {
        let base = NodeHttp::check(&settings)?;
        let password = config
            .password
            .resolve()
            .map_err(|e| PhoenixdConfigError::Password(e.to_string()))?;
        let http = NodeHttp::connect(base, &settings, CONNECT_TIMEOUT)?;
        Ok(PhoenixdBackend { http, password })
    }

    http::with_timeouts_method!();

    /// One API call. `form` is sent form-encoded (POST); `None` makes a GET. `not_found` is the
    /// error for a `404` (phoenixd's answer to a lookup of an unknown payment).
    async fn call<T: DeserializeOwned>(
        &self,
        what: &'static str,
        path: &str,
        form: Option<&[(&str, String)]>,
        idempotency: Idempotency,
        not_found: Option<BackendError>,
    ) -> Result<T, BackendError> {
        let url = self
            .http
            .base
            .join(path)
            .map_err(|e| BackendError::Rejected(format!("cannot build the URL: {e}")))?;
        let (method, deadline) = match (form, idempotency) {
            (None, _) => (Method::GET, self.http.timeout),
            (Some(_), Idempotency::Idempotent) => (Method::POST, self.http.timeout),
            (Some(_), Idempotency::ConnectOnly) => (Method::POST, self.http.payment_timeout),
        };
        let not_found = &not_found;
        let attempts = http::retry(RetryPolicy::new(self.http.retries), what, || {
            let mut req = self
                .http
                .client
                .request(method.clone(), url.clone())
                .basic_auth("", Some(self.password.expose()));
            if let Some(form) = form {
                req = req.form(form);
            }
            http::json_attempt(
                req,
                idempotency,
                rules::MAX_RESPONSE_BYTES,
                ("phoenixd", what),
                move |status, bytes: &[u8]| match (status, not_found) {
                    (StatusCode::NOT_FOUND, Some(e)) => e.clone(),
                    _ => map_error(status, bytes),
                },
            )
        });
        http::within(deadline, what, attempts).await
    }

    /// Whether the password may pay (`http-password`) or not (`http-password-limited-access`),
    /// asked without paying anything: `POST /payinvoice` with no invoice at all, which phoenixd
    /// refuses with `401` for the limited-access password (authentication comes first) and with
    /// `400` (a missing parameter) for the full-access one.
    pub async fn can_pay(&self) -> Result<bool, BackendError> {
        let url = self
            .http
            .base
            .join("payinvoice")
            .map_err(|e| BackendError::Rejected(format!("cannot build the URL: {e}")))?;
        let probe = self
            .http
            .client
            .post(url)
            .basic_auth("", Some(self.password.expose()))
            .form(&[("probe", "no invoice")])
            .send();
        let resp = tokio::time::timeout(self.http.timeout, probe)
            .await
            .map_err(|_| BackendError::Timeout)?
            .map_err(|e| http::map_transport_error(&e))?;
        match resp.status() {
            StatusCode::UNAUTHORIZED => Ok(false),
            StatusCode::BAD_REQUEST => Ok(true),
            other => Err(BackendError::InvalidResponse(format!(
                "phoenixd answered {other} to a payment without an invoice"
            ))),
        }
    }

    async fn spendable(&self) -> Result<Msat, BackendError> {
        let balance: GetBalance = self
            .call(
                "get balance",
                "getbalance",
                None,
                Idempotency::Idempotent,
                None,
            )
            .await?;
        sats_to_msat(balance.balance_sat, "balanceSat")
    }
}

fn sats_to_msat(sats: u64, field: &str) -> Result<Msat, BackendError> {
    rules::sats_field("phoenixd", sats, field)
}

#[async_trait]
impl InvoiceBackend for PhoenixdBackend {
    fn name(&self) -> &'static str {
        "phoenixd"
    }

    async fn create_invoice(&self, req: CreateInvoice) -> Result<IssuedInvoice, BackendError> {
        rules::check_create_request(&req)?;
        let sats = rules::whole_sats("phoenixd", req.amount)?;
        if req.memo.encode_utf16().count() > MAX_DESCRIPTION_CHARS {
            return Err(BackendError::Rejected(format!(
                "phoenixd accepts descriptions of at most {MAX_DESCRIPTION_CHARS} characters"
            )));
        }
        let form = [
            ("amountSat", sats.0.to_string()),
            ("description", req.memo.clone()),
            ("expirySeconds", req.expiry_secs.to_string()),
        ];
        let resp: GeneratedInvoice = self
            .call(
                "create invoice",
                "createinvoice",
                Some(&form),
                Idempotency::Idempotent,
                None,
            )
            .await?;
        let hash = parse_hex32(&resp.payment_hash, "paymentHash").map(PaymentHash)?;
        let issued = rules::check_issued("phoenixd", &resp.serialized, &req, Some(hash))?;
        tracing::debug!(payment_hash = %issued.payment_hash, amount = %issued.amount, "phoenixd invoice created");
        Ok(issued)
    }

    async fn lookup_invoice(&self, hash: &PaymentHash) -> Result<InvoiceStatus, BackendError> {
        let path = format!("payments/incoming/{}", hash.to_hex());
        let inc: IncomingPayment = self
            .call(
                "lookup invoice",
                &path,
                None,
                Idempotency::Idempotent,
                Some(BackendError::UnknownInvoice),
            )
            .await?;
        if parse_hex32(&inc.payment_hash, "paymentHash")? != hash.0 {
            return Err(BackendError::InvalidResponse(format!(
                "phoenixd answered the lookup of {hash} with another payment"
            )));
        }
        let requested_sat = match (inc.requested_sat, &inc.invoice) {
            (Some(sats), _) => sats,
            (None, Some(bolt11)) => Invoice::parse(bolt11)
                .ok()
                .and_then(|i| i.amount())
                // phoenixd counts whole satoshis, rounded down.
                .map(|a| a.to_sats_floor().0)
                .ok_or_else(|| {
                    BackendError::InvalidResponse(format!(
                        "phoenixd reports no amount for invoice {hash}"
                    ))
                })?,
            (None, None) => {
                return Err(BackendError::InvalidResponse(format!(
                    "phoenixd reports no amount for invoice {hash}"
                )));
            }
        };
        let amount = sats_to_msat(requested_sat, "requestedSat")?;
        let state = if inc.is_paid {
            let preimage = parse_hex32(&inc.preimage, "preimage").map(Preimage)?;
            let received = sats_to_msat(inc.received_sat, "receivedSat")?;
            let settled_at = inc.completed_at.map_or(0, |ms| ms / 1000);
            rules::check_settled(
                "phoenixd",
                hash,
                preimage,
                Some(received),
                amount,
                settled_at,
            )?
        } else if inc.is_expired {
            InvoiceState::Expired
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
impl PaymentBackend for PhoenixdBackend {
    fn name(&self) -> &'static str {
        "phoenixd"
    }

    /// Pays with `/payinvoice`. phoenixd takes no fee limit: `max_fee` is only checked after
    /// the fact (a warning is logged when the fee exceeded it).
    async fn pay_invoice(&self, bolt11: &str, max_fee: Msat) -> Result<Payment, BackendError> {
        let (invoice, amount) = rules::check_payable(bolt11, crate::now_unix())?;
        let form = [("invoice", invoice.as_str().to_owned())];
        let resp: PayResult = self
            .call(
                "pay invoice",
                "payinvoice",
                Some(&form),
                Idempotency::ConnectOnly,
                None,
            )
            .await?;
        let (sent, reason) = (resp.sent(), resp.reason);
        let Some((hash, preimage, recipient_sat, fee_sat)) = sent else {
            let reason = reason.unwrap_or_default();
            return Err(map_payment_failure(&reason));
        };
        let payment = Payment {
            payment_hash: parse_hex32(&hash, "paymentHash").map(PaymentHash)?,
            preimage: parse_hex32(&preimage, "paymentPreimage").map(Preimage)?,
            amount,
            fee: sats_to_msat(fee_sat, "routingFeeSat")?,
        };
        // phoenixd reports whole satoshis, rounded down.
        if crate::Sats(recipient_sat) != amount.to_sats_floor() {
            return Err(BackendError::InvalidResponse(format!(
                "phoenixd reports {recipient_sat} sat delivered for an invoice of {amount}"
            )));
        }
        // phoenixd takes no fee limit: one above `max_fee` is only logged.
        rules::check_paid("phoenixd", &invoice, payment, max_fee)
    }

    /// `balanceSat` (what channels can send; the fee credit cannot be spent).
    async fn balance(&self) -> Result<Msat, BackendError> {
        self.spendable().await
    }

    /// `GET /payments/outgoingbyhash/{paymentHash}` (`404 Not found` when phoenixd never sent
    /// it): `isPaid` with the preimage, else failed once `completedAt` is set, else pending.
    /// `sent` is in satoshis (fees included), `fees` in millisatoshis.
    async fn lookup_payment(&self, hash: &PaymentHash) -> Result<OutgoingState, BackendError> {
        let path = format!("payments/outgoingbyhash/{}", hash.to_hex());
        let found: OneOrMany<OutgoingPayment> = match self
            .call(
                "lookup payment",
                &path,
                None,
                Idempotency::Idempotent,
                Some(BackendError::UnknownInvoice),
            )
            .await
        {
            Ok(found) => found,
            Err(BackendError::UnknownInvoice) => return Ok(OutgoingState::Unknown),
            Err(e) => return Err(e),
        };
        let payments = match found {
            OneOrMany::One(p) => vec![p],
            OneOrMany::Many(ps) => ps,
        };
        let attempts = payments.iter().map(|p| {
            if parse_hex32(&p.payment_hash, "paymentHash")? != hash.0 {
                return Err(BackendError::InvalidResponse(format!(
                    "phoenixd answered the look-up of {hash} with another payment"
                )));
            }
            if p.is_paid {
                let preimage = p.preimage.as_deref().ok_or_else(|| {
                    BackendError::InvalidResponse(
                        "phoenixd reports a paid payment without a preimage".into(),
                    )
                })?;
                let fee = Msat(p.fees);
                let sent = sats_to_msat(p.sent, "sent")?;
                return Ok(Attempt::Succeeded(OutgoingState::succeeded(
                    hash,
                    parse_hex32(preimage, "preimage").map(Preimage)?,
                    Msat(sent.0.saturating_sub(fee.0)),
                    fee,
                )?));
            }
            Ok(if p.completed_at.is_some_and(|t| t > 0) {
                Attempt::Failed
            } else {
                Attempt::Pending
            })
        });
        rules::outgoing_from_attempts(attempts, "phoenixd reports the payment as failed")
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutgoingPayment {
    payment_hash: String,
    #[serde(default)]
    preimage: Option<String>,
    #[serde(default)]
    is_paid: bool,
    #[serde(default)]
    sent: u64,
    #[serde(default)]
    fees: u64,
    #[serde(default)]
    completed_at: Option<u64>,
}

#[async_trait]
impl Diagnose for PhoenixdBackend {
    /// `getinfo`, then `getbalance`.
    async fn info(&self) -> Result<NodeInfo, BackendError> {
        let info: GetInfo = self
            .call("get info", "getinfo", None, Idempotency::Idempotent, None)
            .await?;
        let balance = match self.spendable().await {
            Ok(balance) => Some(balance),
            Err(BackendError::Unauthorized(_)) => None,
            Err(e) => return Err(e),
        };
        Ok(NodeInfo {
            backend: "phoenixd",
            alias: None,
            node_id: Some(info.node_id).filter(|id| !id.is_empty()),
            network: Some(rules::normalize_network(&info.chain)).filter(|n| !n.is_empty()),
            balance,
        })
    }
}

/// Maps the `reason` of a failed payment (lightning-kmp's failure texts).
fn map_payment_failure(reason: &str) -> BackendError {
    let lower = reason.to_ascii_lowercase();
    if lower.contains("already been paid") {
        BackendError::AlreadyPaid
    } else if lower.contains("not enough funds") || lower.contains("insufficient") {
        BackendError::InsufficientBalance
    } else if lower.contains("expired") {
        BackendError::InvoiceExpired
    } else if reason.is_empty() {
        BackendError::InvalidResponse(
            "phoenixd answered neither a payment nor a failure reason".into(),
        )
    } else {
        BackendError::Rejected(format!("phoenixd: payment failed: {reason}"))
    }
}

/// Maps a phoenixd error answer (plain text).
fn map_error(status: StatusCode, body: &[u8]) -> BackendError {
    let text = format!("phoenixd: HTTP {status}: {}", http::snippet(body));
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => BackendError::Unauthorized(text),
        s if http::is_unavailable_status(s) => BackendError::Unreachable(text),
        _ => BackendError::Rejected(text),
    }
}

fn parse_hex32(text: &str, field: &str) -> Result<[u8; 32], BackendError> {
    rules::hex32("phoenixd", text, field)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeneratedInvoice {
    payment_hash: String,
    serialized: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IncomingPayment {
    payment_hash: String,
    #[serde(default)]
    preimage: String,
    #[serde(default)]
    invoice: Option<String>,
    is_paid: bool,
    #[serde(default)]
    is_expired: bool,
    #[serde(default)]
    requested_sat: Option<u64>,
    #[serde(default)]
    received_sat: u64,
    #[serde(default)]
    completed_at: Option<u64>,
}

/// `PaymentSent` or `PaymentFailed`, told apart by their fields.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PayResult {
    #[serde(default)]
    payment_hash: Option<String>,
    #[serde(default)]
    payment_preimage: Option<String>,
    #[serde(default)]
    recipient_amount_sat: Option<u64>,
    #[serde(default)]
    routing_fee_sat: Option<u64>,
    #[serde(default)]
    reason: Option<String>,
}

impl PayResult {
    /// `(paymentHash, paymentPreimage, recipientAmountSat, routingFeeSat)` of a `PaymentSent`.
    fn sent(&self) -> Option<(String, String, u64, u64)> {
        Some((
            self.payment_hash.clone()?,
            self.payment_preimage.clone()?,
            self.recipient_amount_sat?,
            self.routing_fee_sat?,
        ))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetBalance {
    balance_sat: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetInfo {
    #[serde(default)]
    node_id: String,
    #[serde(default)]
    chain: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_redaction_and_unknown_fields() {
        let c: PhoenixdConfig = serde_json::from_str(
            r#"{"url": "http://127.0.0.1:9740", "password": "hunter2hunter2"}"#,
        )
        .unwrap();
        assert_eq!(
            (
                c.limits.timeout_secs,
                c.limits.retries,
                c.limits.payment_timeout_secs
            ),
            (10, 2, 60)
        );
        let b = PhoenixdBackend::new(&c).unwrap();
        let dbg = format!("{b:?} {c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(
            serde_json::from_str::<PhoenixdConfig>(
                r#"{"url": "http://x", "password": "p", "rune": "r"}"#
            )
            .is_err()
        );
        let bad = PhoenixdConfig {
            limits: crate::rules::CallLimits {
                retries: 11,
                ..c.limits
            },
            ..c.clone()
        };
        assert!(matches!(
            PhoenixdBackend::new(&bad),
            Err(PhoenixdConfigError::Invalid(_))
        ));
    }

    #[test]
    fn failure_reasons() {
        assert_eq!(
            map_payment_failure("this invoice has already been paid"),
            BackendError::AlreadyPaid
        );
        assert_eq!(
            map_payment_failure("not enough funds in wallet to afford payment"),
            BackendError::InsufficientBalance
        );
        assert!(matches!(
            map_payment_failure(
                "the recipient was offline or did not have enough liquidity to receive the payment"
            ),
            BackendError::Rejected(_)
        ));
        assert_eq!(rules::normalize_network("mainnet"), "bitcoin");
        assert_eq!(rules::normalize_network("testnet3"), "testnet");
        assert_eq!(rules::normalize_network("regtest"), "regtest");
    }
}
