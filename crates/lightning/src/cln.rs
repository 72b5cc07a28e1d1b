//! Core Lightning, through its REST plugin `clnrest` (shipped with CLN since v23.08; rewritten in
//! Rust in v24.11).
//!
//! clnrest maps `POST /v1/<method>` with a JSON object of parameters to the JSON-RPC command of
//! that name, authorised by a rune in the `Rune` header; it answers `201` with the command's
//! result, or an error status with `{"code": <JSON-RPC error code>, "message": "...", "data":
//! ...}` (`401`/`403` for runes, `500` for command failures). Calls used (fields as in CLN's JSON
//! schemas):
//!
//! | what | command |
//! | --- | --- |
//! | create an invoice | `invoice {amount_msat, label, description, expiry}` → `bolt11`, `payment_hash`, `expires_at` |
//! | look one up | `listinvoices {payment_hash}` → `invoices[].status` (`unpaid`/`paid`/`expired`), `payment_preimage`, `amount_received_msat` |
//! | pay | `pay {bolt11, maxfee, retry_for}` → `payment_preimage`, `amount_msat`, `amount_sent_msat`, `status` |
//! | balance | `listfunds` → `channels[].our_amount_msat` (channels in `CHANNELD_NORMAL`) |
//! | describe | `getinfo` → `id`, `alias`, `network` |
//!
//! Amounts are integer millisatoshis, hashes and preimages hex. Every invoice gets a fresh label
//! `turnpike-<32 hex>`.
//!
//! Paying an invoice this node has already paid: CLN's `pay` does not pay again but answers
//! with the earlier successful result (same preimage, status `complete`); this backend returns
//! that result as a [`Payment`] (checked like any other), so the proof of payment is not lost.
//! The errors `201` ("Already succeeded ...") and `219` ("Already paid this invoice
//! successfully", from `xpay`) map to [`BackendError::AlreadyPaid`].
//!
//! What comes back is checked: the invoice CLN returns must parse and carry the requested amount
//! and the hash CLN reports; a paid invoice's preimage must hash to its payment hash and the
//! amount received must cover the amount requested; a payment's preimage is checked with
//! [`check_payment`](crate::check_payment) and the amount delivered must be the invoice's.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::http::{self, Idempotency, NodeHttp, RetryPolicy};
use crate::rules::{self, Attempt};
use crate::{
    BackendError, CreateInvoice, Diagnose, InvoiceBackend, InvoiceState, InvoiceStatus,
    IssuedInvoice, Msat, NodeInfo, OutgoingState, Payment, PaymentBackend, PaymentHash, Preimage,
    SecretSource,
};
use turnpike_l402::bolt11::Invoice;

/// The header carrying the rune.
pub const RUNE_HEADER: &str = "Rune";

pub use crate::rules::{DEFAULT_PAYMENT_TIMEOUT_SECS, DEFAULT_RETRIES, DEFAULT_TIMEOUT_SECS};

/// Prefix of the labels of the invoices this backend creates.
pub const LABEL_PREFIX: &str = "turnpike-";

/// The channel state in which a channel's balance can be spent.
const CHANNEL_NORMAL: &str = "CHANNELD_NORMAL";
/// Time allowed to establish a connection (also bounded by the call's timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

// JSON-RPC error codes of Core Lightning (common/jsonrpc_errors.h) this backend maps.
const METHOD_NOT_FOUND: i64 = -32601;
const PAY_IN_PROGRESS: i64 = 200;
const PAY_RHASH_ALREADY_USED: i64 = 201;
const PAY_DESTINATION_PERM_FAIL: i64 = 203;
const PAY_ROUTE_NOT_FOUND: i64 = 205;
const PAY_ROUTE_TOO_EXPENSIVE: i64 = 206;
const PAY_INVOICE_EXPIRED: i64 = 207;
const PAY_STOPPED_RETRYING: i64 = 210;
const PAY_INSUFFICIENT_FUNDS: i64 = 215;
const PAY_UNREACHABLE: i64 = 216;
const PAY_INJECTPAYMENTONION_ALREADY_PAID: i64 = 219;
const RUNE_NOT_AUTHORIZED: i64 = 1501;
const RUNE_BLACKLISTED: i64 = 1503;

/// Configuration of the Core Lightning backend (`[backend] kind = "cln"`).
///
/// ```toml
/// url = "https://127.0.0.1:3010"                      # clnrest (clnrest-port, clnrest-host)
/// rune = { env = "CLN_RUNE" }                         # a rune allowing the methods used
/// tls_cert_path = "/home/cln/.lightning/bitcoin/server.pem"  # pin clnrest's certificate
/// timeout_secs = 10                                   # each call, retries included
/// retries = 2                                         # for calls that are safe to repeat
/// payment_timeout_secs = 60                           # a payment, from request to result
/// ```
///
/// A rune for the gateway only needs `invoice`, `listinvoices` and `getinfo`, e.g.
/// `lightning-cli createrune restrictions='[["method=invoice","method=listinvoices","method=getinfo"]]'`;
/// a payer needs `pay`, `listfunds` and `getinfo`. CLN's `retry_for` is set a little below
/// `payment_timeout_secs`; a payment unresolved then: look at `lightning-cli listpays`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClnConfig {
    /// Base URL of clnrest, e.g. `https://127.0.0.1:3010`.
    pub url: String,
    /// The rune (`lightning-cli createrune`), sent in the `Rune` header.
    pub rune: SecretSource,
    /// clnrest's server certificate (PEM; by default `server.pem` in the node's network
    /// directory, signed by clnrest's own CA `ca.pem`). When set, the server must present
    /// exactly this certificate (pin the server certificate, not `ca.pem`). When not set, an
    /// `https` URL is verified against the usual trusted authorities.
    #[serde(default)]
    pub tls_cert_path: Option<PathBuf>,
    /// Call timeouts and retries (`timeout_secs`, `retries`, `payment_timeout_secs`).
    #[serde(flatten)]
    pub limits: rules::CallLimits,
}

/// Why a [`ClnBackend`] could not be set up from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClnConfigError {
    /// The URL is not a usable `http(s)` URL.
    #[error("cln: invalid url: {0}")]
    InvalidUrl(String),
    /// The rune cannot be read.
    #[error("cln: rune: {0}")]
    Rune(String),
    /// The TLS certificate file cannot be read or holds no certificate.
    #[error("cln: tls_cert_path: {0}")]
    TlsCert(String),
    /// Another setting is out of range.
    #[error("cln: {0}")]
    Invalid(String),
    /// The HTTP client could not be built.
    #[error("cln: cannot build the HTTP client: {0}")]
    HttpClient(String),
}

http::node_setup_error!(ClnConfigError: InvalidUrl, Invalid, TlsCert, HttpClient);

/// A Core Lightning node over clnrest: an [`InvoiceBackend`] for the gateway and a
/// [`PaymentBackend`] for payers. `Debug` never prints the rune.
#[derive(Debug)]
pub struct ClnBackend {
    http: NodeHttp,
    rune: HeaderValue,
}

impl ClnBackend {
    /// Builds the backend: resolves the rune, reads the pinned certificate and prepares the
    /// HTTP client. No network I/O (use [`Diagnose::info`] to check the connection).
    pub fn new(config: &ClnConfig) -> Result<Self, ClnConfigError> {
        let settings =
            http::node_settings!(config, "clnrest", "rune", config.tls_cert_path.as_deref());
        Self::build(config, settings)
    }

    /// Builds the backend from values (a hub provider's payout): clnrest at `url`, the rune,
    /// default timeouts, the certificate checked against the usual trusted authorities; with
    /// `public_only`, it connects to public addresses only ([`crate::net_guard::PublicOnly`]).
    pub fn from_values(url: &str, rune: &str, public_only: bool) -> Result<Self, ClnConfigError> {
        let config = ClnConfig {
            url: url.to_owned(),
            rune: SecretSource::Inline(rune.to_owned()),
            tls_cert_path: None,
            limits: rules::CallLimits::default(),
        };
        http::node_from_values!(config, "clnrest", "rune", None, public_only)
    }

    fn build(config: &ClnConfig, settings: http::NodeSettings<'_>) -> Result<Self, ClnConfigError> {
        let base = NodeHttp::check(&settings)?;
        let rune = config
            .rune
            .resolve()
            .map_err(|e| ClnConfigError::Rune(e.to_string()))?;
        let mut rune = HeaderValue::from_str(rune.expose().trim()).map_err(|_| {
            ClnConfigError::Rune("not a valid header value (a rune is base64url text)".into())
        })?;
        rune.set_sensitive(true);
        let http = NodeHttp::connect(base, &settings, CONNECT_TIMEOUT)?;
        Ok(ClnBackend { http, rune })
    }

    http::with_timeouts_method!();

    /// Calls `method` with the parameters `params` makes (called once per attempt, so each
    /// attempt may differ, e.g. by invoice label).
    async fn rpc<T: DeserializeOwned>(
        &self,
        method: &'static str,
        idempotency: Idempotency,
        deadline: Duration,
        params: impl Fn() -> serde_json::Value,
    ) -> Result<T, BackendError> {
        let url = self
            .http
            .base
            .join(&format!("v1/{method}"))
            .map_err(|e| BackendError::Rejected(format!("cannot build the URL: {e}")))?;
        let params = &params;
        let attempts = http::retry(RetryPolicy::new(self.http.retries), method, || {
            let req = self
                .http
                .client
                .post(url.clone())
                .header(RUNE_HEADER, self.rune.clone())
                .json(&params());
            http::json_attempt(
                req,
                idempotency,
                rules::MAX_PAYMENT_BYTES,
                ("cln", method),
                map_error,
            )
        });
        http::within(deadline, method, attempts).await.map_err(|e| {
            self.http.tls_hint(
                e,
                "clnrest's certificate is signed by its own CA: set tls_cert_path to \
                     clnrest's server.pem to pin it",
            )
        })
    }

    async fn spendable(&self) -> Result<Msat, BackendError> {
        let funds: ListFunds = self
            .rpc(
                "listfunds",
                Idempotency::Idempotent,
                self.http.timeout,
                || serde_json::json!({}),
            )
            .await?;
        funds
            .channels
            .iter()
            .filter(|c| c.state == CHANNEL_NORMAL)
            .try_fold(0u64, |sum, c| sum.checked_add(c.our_amount_msat))
            .map(Msat)
            .ok_or_else(|| BackendError::InvalidResponse("cln channel balances overflow".into()))
    }
}

#[async_trait]
impl InvoiceBackend for ClnBackend {
    fn name(&self) -> &'static str {
        "cln"
    }

    async fn create_invoice(&self, req: CreateInvoice) -> Result<IssuedInvoice, BackendError> {
        rules::check_create_request(&req)?;
        // A fresh label per attempt: a retry after a lost answer must not hit "Duplicate label".
        let resp: ClnInvoice = self
            .rpc("invoice", Idempotency::Idempotent, self.http.timeout, || {
                serde_json::json!({
                    "amount_msat": req.amount.0,
                    "label": format!("{LABEL_PREFIX}{}", hex::encode(rand::random::<[u8; 16]>())),
                    "description": req.memo,
                    "expiry": req.expiry_secs,
                })
            })
            .await?;
        let hash = parse_hex32(&resp.payment_hash, "payment_hash").map(PaymentHash)?;
        let issued = rules::check_issued("cln", &resp.bolt11, &req, Some(hash))?;
        tracing::debug!(payment_hash = %issued.payment_hash, amount = %issued.amount, "cln invoice created");
        Ok(issued)
    }

    async fn lookup_invoice(&self, hash: &PaymentHash) -> Result<InvoiceStatus, BackendError> {
        let list: ListInvoices = self
            .rpc(
                "listinvoices",
                Idempotency::Idempotent,
                self.http.timeout,
                || serde_json::json!({ "payment_hash": hash.to_hex() }),
            )
            .await?;
        let wanted = hash.to_hex();
        let Some(inv) = list
            .invoices
            .into_iter()
            .find(|i| i.payment_hash.eq_ignore_ascii_case(&wanted))
        else {
            return Err(BackendError::UnknownInvoice);
        };
        let amount = match (inv.amount_msat, &inv.bolt11) {
            (Some(amount), _) => Msat(amount),
            (None, Some(bolt11)) => Invoice::parse(bolt11)
                .ok()
                .and_then(|i| i.amount())
                .ok_or_else(|| {
                    BackendError::InvalidResponse(format!(
                        "cln reports no amount for invoice {hash}"
                    ))
                })?,
            (None, None) => {
                return Err(BackendError::InvalidResponse(format!(
                    "cln reports no amount for invoice {hash}"
                )));
            }
        };
        let state = match inv.status.as_str() {
            "paid" => {
                let preimage = inv
                    .payment_preimage
                    .as_deref()
                    .ok_or_else(|| {
                        BackendError::InvalidResponse(format!(
                            "cln reports invoice {hash} paid without a preimage"
                        ))
                    })
                    .and_then(|p| parse_hex32(p, "payment_preimage"))
                    .map(Preimage)?;
                // No amount received reported: nothing received.
                let received = Some(Msat(inv.amount_received_msat.unwrap_or(0)));
                let settled_at = inv.paid_at.unwrap_or(0);
                rules::check_settled("cln", hash, preimage, received, amount, settled_at)?
            }
            "unpaid" if crate::now_unix() >= inv.expires_at => InvoiceState::Expired,
            "unpaid" => InvoiceState::Pending,
            "expired" => InvoiceState::Expired,
            other => {
                return Err(BackendError::InvalidResponse(format!(
                    "cln reports an unknown invoice status {other:?}"
                )));
            }
        };
        Ok(InvoiceStatus {
            payment_hash: *hash,
            amount,
            state,
        })
    }
}

#[async_trait]
impl PaymentBackend for ClnBackend {
    fn name(&self) -> &'static str {
        "cln"
    }

    /// Pays with `pay`, limiting routing fees to `max_fee` (`maxfee`).
    async fn pay_invoice(&self, bolt11: &str, max_fee: Msat) -> Result<Payment, BackendError> {
        let (invoice, _) = rules::check_payable(bolt11, crate::now_unix())?;
        let retry_for = (self.http.payment_timeout.as_secs() * 4 / 5).clamp(1, u64::from(u16::MAX));
        let resp: ClnPay = self
            .rpc(
                "pay",
                Idempotency::ConnectOnly,
                self.http.payment_timeout,
                || {
                    serde_json::json!({
                        "bolt11": invoice.as_str(),
                        "maxfee": max_fee.0,
                        "retry_for": retry_for,
                    })
                },
            )
            .await?;
        match resp.status.as_str() {
            "complete" => {}
            "pending" => {
                return Err(BackendError::Rejected(
                    "cln reports the payment still pending; its outcome is not known yet \
                     (see `lightning-cli listpays`)"
                        .into(),
                ));
            }
            other => {
                return Err(BackendError::Rejected(format!(
                    "cln: payment {other} (status {other:?})"
                )));
            }
        }
        let payment = Payment {
            payment_hash: parse_hex32(&resp.payment_hash, "payment_hash").map(PaymentHash)?,
            preimage: parse_hex32(&resp.payment_preimage, "payment_preimage").map(Preimage)?,
            amount: Msat(resp.amount_msat),
            fee: resp
                .amount_sent_msat
                .checked_sub(resp.amount_msat)
                .map(Msat)
                .ok_or_else(|| {
                    BackendError::InvalidResponse(format!(
                        "cln reports {} msat sent for {} msat delivered",
                        resp.amount_sent_msat, resp.amount_msat
                    ))
                })?,
        };
        rules::check_paid("cln", &invoice, payment, max_fee)
    }

    /// The sum of `our_amount_msat` over channels in `CHANNELD_NORMAL` (channel reserves
    /// included: CLN's `listfunds` does not report them).
    async fn balance(&self) -> Result<Msat, BackendError> {
        self.spendable().await
    }

    /// `listpays` with `payment_hash`: one entry per payment attempt group; a `complete` one
    /// wins, then a `pending` one; only `failed` entries mean failed; none means unknown.
    async fn lookup_payment(&self, hash: &PaymentHash) -> Result<OutgoingState, BackendError> {
        let found: ClnListPays = self
            .rpc(
                "listpays",
                Idempotency::Idempotent,
                self.http.timeout,
                || serde_json::json!({ "payment_hash": hash.to_hex() }),
            )
            .await?;
        let attempts = found.pays.iter().map(|pay| {
            if parse_hex32(&pay.payment_hash, "payment_hash")? != hash.0 {
                return Err(BackendError::InvalidResponse(format!(
                    "cln listpays answered the look-up of {hash} with another payment"
                )));
            }
            Ok(match pay.status.as_str() {
                "complete" => {
                    let preimage = pay.preimage.as_deref().ok_or_else(|| {
                        BackendError::InvalidResponse(
                            "cln lists a complete payment without a preimage".into(),
                        )
                    })?;
                    let amount = pay.amount_msat.unwrap_or_default();
                    let sent = pay.amount_sent_msat.unwrap_or(amount);
                    Attempt::Succeeded(OutgoingState::succeeded(
                        hash,
                        parse_hex32(preimage, "preimage").map(Preimage)?,
                        Msat(amount),
                        Msat(sent.saturating_sub(amount)),
                    )?)
                }
                "pending" => Attempt::Pending,
                "failed" => Attempt::Failed,
                other => {
                    return Err(BackendError::InvalidResponse(format!(
                        "cln lists a payment in an unknown status {:?}",
                        http::snippet(other.as_bytes())
                    )));
                }
            })
        });
        rules::outgoing_from_attempts(attempts, "cln: every attempt of this payment failed")
    }
}

#[derive(Deserialize)]
struct ClnListPays {
    #[serde(default)]
    pays: Vec<ClnListedPay>,
}

#[derive(Deserialize)]
struct ClnListedPay {
    payment_hash: String,
    status: String,
    #[serde(default)]
    preimage: Option<String>,
    #[serde(default)]
    amount_msat: Option<u64>,
    #[serde(default)]
    amount_sent_msat: Option<u64>,
}

#[async_trait]
impl Diagnose for ClnBackend {
    /// `getinfo`, then `listfunds` (balance left out when the rune does not allow it).
    async fn info(&self) -> Result<NodeInfo, BackendError> {
        let info: GetInfo = self
            .rpc(
                "getinfo",
                Idempotency::Idempotent,
                self.http.timeout,
                || serde_json::json!({}),
            )
            .await?;
        let balance = match self.spendable().await {
            Ok(balance) => Some(balance),
            Err(BackendError::Unauthorized(_)) => None,
            Err(e) => return Err(e),
        };
        Ok(NodeInfo {
            backend: "cln",
            alias: Some(info.alias).filter(|a| !a.is_empty()),
            node_id: Some(info.id).filter(|id| !id.is_empty()),
            network: Some(info.network.to_ascii_lowercase()).filter(|n| !n.is_empty()),
            balance,
        })
    }
}

/// Maps a clnrest error answer `{code, message, data}`.
fn map_error(status: StatusCode, body: &[u8]) -> BackendError {
    let (code, message) = match serde_json::from_slice::<RpcError>(body) {
        Ok(e) => (e.code, e.message),
        Err(_) => (None, format!("HTTP {status}: {}", http::snippet(body))),
    };
    let text = match code {
        Some(code) => format!("cln error {code}: {message}"),
        None => format!("cln: {message}"),
    };
    if status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
        || code.is_some_and(|c| (RUNE_NOT_AUTHORIZED..=RUNE_BLACKLISTED).contains(&c))
    {
        return BackendError::Unauthorized(text);
    }
    match code {
        Some(PAY_RHASH_ALREADY_USED) if message.contains("Already succeeded") => {
            BackendError::AlreadyPaid
        }
        Some(PAY_INJECTPAYMENTONION_ALREADY_PAID) => BackendError::AlreadyPaid,
        Some(PAY_INVOICE_EXPIRED) => BackendError::InvoiceExpired,
        Some(PAY_INSUFFICIENT_FUNDS) => BackendError::InsufficientBalance,
        Some(PAY_ROUTE_NOT_FOUND) => {
            BackendError::Rejected(format!("no route to the payee ({text})"))
        }
        Some(PAY_ROUTE_TOO_EXPENSIVE) => BackendError::Rejected(format!(
            "every route costs more than the fee limit ({text})"
        )),
        Some(PAY_STOPPED_RETRYING) => BackendError::Rejected(format!("payment failed ({text})")),
        Some(PAY_DESTINATION_PERM_FAIL) => {
            BackendError::Rejected(format!("the payee rejected the payment ({text})"))
        }
        Some(PAY_UNREACHABLE) => {
            BackendError::Rejected(format!("the payee cannot be reached ({text})"))
        }
        Some(PAY_IN_PROGRESS | PAY_RHASH_ALREADY_USED) => BackendError::Rejected(format!(
            "a payment of this invoice is already in progress ({text})"
        )),
        Some(METHOD_NOT_FOUND) => BackendError::Rejected(format!(
            "clnrest does not know this method; is the plugin providing it enabled? ({text})"
        )),
        _ if http::is_unavailable_status(status) => BackendError::Unreachable(text),
        _ => BackendError::Rejected(text),
    }
}

fn parse_hex32(text: &str, field: &str) -> Result<[u8; 32], BackendError> {
    rules::hex32("cln", text, field)
}

#[derive(Deserialize)]
struct RpcError {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct ClnInvoice {
    bolt11: String,
    payment_hash: String,
}

#[derive(Deserialize)]
struct ListInvoices {
    invoices: Vec<ListedInvoice>,
}

#[derive(Deserialize)]
struct ListedInvoice {
    payment_hash: String,
    status: String,
    #[serde(default)]
    expires_at: u64,
    #[serde(default)]
    amount_msat: Option<u64>,
    #[serde(default)]
    bolt11: Option<String>,
    #[serde(default)]
    amount_received_msat: Option<u64>,
    #[serde(default)]
    paid_at: Option<u64>,
    #[serde(default)]
    payment_preimage: Option<String>,
}

#[derive(Deserialize)]
struct ClnPay {
    payment_preimage: String,
    payment_hash: String,
    amount_msat: u64,
    amount_sent_msat: u64,
    status: String,
}

#[derive(Deserialize)]
struct FundsChannel {
    our_amount_msat: u64,
    #[serde(default)]
    state: String,
}

#[derive(Deserialize)]
struct ListFunds {
    #[serde(default)]
    channels: Vec<FundsChannel>,
}

#[derive(Deserialize)]
struct GetInfo {
    #[serde(default)]
    id: String,
    #[serde(default)]
    alias: String,
    #[serde(default)]
    network: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_redaction_and_unknown_fields() {
        let c: ClnConfig =
            serde_json::from_str(r#"{"url": "http://127.0.0.1:3010", "rune": "s3cretrune"}"#)
                .unwrap();
        assert_eq!(
            (
                c.limits.timeout_secs,
                c.limits.retries,
                c.limits.payment_timeout_secs
            ),
            (10, 2, 60)
        );
        let b = ClnBackend::new(&c).unwrap();
        let dbg = format!("{b:?} {c:?}");
        assert!(!dbg.contains("s3cretrune"), "{dbg}");
        assert!(
            serde_json::from_str::<ClnConfig>(
                r#"{"url": "http://x", "rune": "r", "macaroon": "m"}"#
            )
            .is_err()
        );
        let pinned_http: ClnConfig = serde_json::from_str(
            r#"{"url": "http://127.0.0.1:3010", "rune": "r", "tls_cert_path": "/x.pem"}"#,
        )
        .unwrap();
        assert!(matches!(
            ClnBackend::new(&pinned_http),
            Err(ClnConfigError::TlsCert(_))
        ));
    }

    #[test]
    fn error_mapping() {
        let m = |status: u16, body: &str| {
            map_error(StatusCode::from_u16(status).unwrap(), body.as_bytes())
        };
        assert!(matches!(
            m(
                403,
                r#"{"code":1501,"message":"Not authorized: Missing rune","data":null}"#
            ),
            BackendError::Unauthorized(_)
        ));
        assert!(matches!(
            m(
                401,
                r#"{"code":1502,"message":"Not permitted: method is not equal to invoice","data":null}"#
            ),
            BackendError::Unauthorized(_)
        ));
        assert_eq!(
            m(
                500,
                r#"{"code":207,"message":"Invoice expired","data":null}"#
            ),
            BackendError::InvoiceExpired
        );
        assert_eq!(
            m(
                500,
                r#"{"code":219,"message":"Already paid this invoice successfully","data":null}"#
            ),
            BackendError::AlreadyPaid
        );
        assert_eq!(
            m(
                500,
                r#"{"code":201,"message":"Already succeeded with amount 1000msat (not 2000msat)","data":null}"#
            ),
            BackendError::AlreadyPaid
        );
        assert_eq!(
            m(
                500,
                r#"{"code":215,"message":"Insufficient funds to perform the payment: spendable=0msat < payment=1000msat","data":null}"#
            ),
            BackendError::InsufficientBalance
        );
        assert!(
            matches!(m(500, r#"{"code":205,"message":"Could not find a route","data":null}"#), BackendError::Rejected(ref s) if s.contains("no route"))
        );
        assert!(matches!(m(503, "busy"), BackendError::Unreachable(_)));
    }
}
