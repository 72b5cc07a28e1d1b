//! LND, through its REST API (the grpc-gateway in front of lnd's gRPC services).
//!
//! Calls (paths and JSON fields as in lnd's API reference, lightning.engineering/api-docs):
//!
//! | what | call |
//! | --- | --- |
//! | create an invoice | `POST /v1/invoices` `{value_msat, memo, expiry}` → `r_hash` (base64), `payment_request` |
//! | look one up | `GET /v1/invoice/{r_hash hex}` → `state`, `r_preimage` (base64), `amt_paid_msat`, ... |
//! | pay | `POST /v2/router/send` (`SendPaymentV2`, a stream of JSON lines) |
//! | balance | `GET /v1/balance/channels` → `local_balance.msat` |
//! | describe | `GET /v1/getinfo` → `alias`, `identity_pubkey`, `chains[].network` |
//!
//! Paying uses `SendPaymentV2` (`/v2/router/send`) rather than the older
//! `SendPaymentSync` (`/v1/channels/transactions`): lnd deprecated the latter in 0.20 and removed
//! it (with its REST route) in 0.21, while `/v2/router/send` exists since lnd 0.10. The request
//! sets `no_inflight_updates`, so lnd streams one final `{"result": Payment}` line (or an
//! `{"error": ...}` line); hashes and preimages in `Payment` are hex strings.
//!
//! Every call sends the macaroon (hex) in the `Grpc-Metadata-macaroon` header. lnd's REST port
//! serves its self-signed `tls.cert`, which has `CA:TRUE` and is therefore rejected by standard
//! certificate verification; with `tls_cert_path` the backend pins that exact certificate
//! instead (see [`LndConfig::tls_cert_path`]).
//!
//! What comes back is checked: the invoice lnd returns must parse, carry the requested amount and
//! the hash lnd reports; a settled invoice's preimage must hash to its payment hash and the
//! amount paid must cover the amount requested; a payment's preimage is checked with
//! [`check_payment`](crate::check_payment), and the amount delivered must be the invoice's. Anything else is
//! [`BackendError::InvalidResponse`].

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use turnpike_l402::bolt11::Invoice;

use crate::http::{self, AttemptError, Idempotency, NodeHttp, RetryPolicy};
use crate::rules;
use crate::{
    BackendError, CreateInvoice, Diagnose, InvoiceBackend, InvoiceState, InvoiceStatus,
    IssuedInvoice, Msat, NodeInfo, OutgoingState, Payment, PaymentBackend, PaymentHash, Preimage,
    Sats, SecretSource,
};

/// The header carrying the macaroon (hex) on every REST call.
pub const MACAROON_HEADER: &str = "Grpc-Metadata-macaroon";

pub use crate::rules::{DEFAULT_PAYMENT_TIMEOUT_SECS, DEFAULT_RETRIES, DEFAULT_TIMEOUT_SECS};

pub use crate::rules::{MAX_PAYMENT_TIMEOUT_SECS, MAX_RETRIES, MAX_TIMEOUT_SECS};
/// Time allowed to establish a connection (also bounded by the call's timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Configuration of the LND backend (`[backend] kind = "lnd"`).
///
/// ```toml
/// url = "https://127.0.0.1:8080"                  # lnd's REST listener (restlisten)
/// macaroon = { env = "LND_MACAROON_HEX" }         # hex of a macaroon...
/// # macaroon_file = "/home/lnd/.lnd/data/chain/bitcoin/mainnet/invoice.macaroon"  # ...or the file
/// tls_cert_path = "/home/lnd/.lnd/tls.cert"        # pin lnd's self-signed certificate
/// timeout_secs = 10                               # each call, retries included
/// retries = 2                                     # for calls that are safe to repeat
/// payment_timeout_secs = 60                       # a payment, from request to final state
/// ```
///
/// Exactly one of `macaroon` and `macaroon_file` must be given. The gateway needs the invoice
/// macaroon (`invoice.macaroon`: create and look up invoices); a payer needs a macaroon that may
/// send payments (`admin.macaroon`, or one baked with `offchain:read offchain:write info:read`).
/// lnd is told to stop looking for a route before `payment_timeout_secs`; a payment unresolved
/// then has an unknown outcome: look at lnd.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LndConfig {
    /// Base URL of lnd's REST API, e.g. `https://127.0.0.1:8080`.
    pub url: String,
    /// The macaroon as hex text (as printed by `xxd -p -c 1000 admin.macaroon`): inline, from an
    /// environment variable or from a text file holding the hex.
    #[serde(default)]
    pub macaroon: Option<SecretSource>,
    /// Path to lnd's binary macaroon file (e.g. `invoice.macaroon`); read and hex-encoded at
    /// start.
    #[serde(default)]
    pub macaroon_file: Option<PathBuf>,
    /// Path to lnd's `tls.cert` (PEM). When set, the server must present exactly this
    /// certificate (nothing else is trusted, and no host name or CA check applies). When not
    /// set, an `https` URL is verified against the usual trusted authorities (for nodes behind
    /// a proxy with a public certificate).
    #[serde(default)]
    pub tls_cert_path: Option<PathBuf>,
    /// Call timeouts and retries (`timeout_secs`, `retries`, `payment_timeout_secs`).
    #[serde(flatten)]
    pub limits: rules::CallLimits,
}

/// Why an [`LndBackend`] could not be set up from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LndConfigError {
    /// The URL is not a usable `http(s)` URL.
    #[error("lnd: invalid url: {0}")]
    InvalidUrl(String),
    /// The macaroon is missing, given twice, unreadable or not hex.
    #[error("lnd: macaroon: {0}")]
    Macaroon(String),
    /// The TLS certificate file cannot be read or holds no certificate.
    #[error("lnd: tls_cert_path: {0}")]
    TlsCert(String),
    /// Another setting is out of range.
    #[error("lnd: {0}")]
    Invalid(String),
    /// The HTTP client could not be built.
    #[error("lnd: cannot build the HTTP client: {0}")]
    HttpClient(String),
}

http::node_setup_error!(LndConfigError: InvalidUrl, Invalid, TlsCert, HttpClient);

/// An LND node over REST: an [`InvoiceBackend`] for the gateway and a [`PaymentBackend`] for
/// payers. Cheap to share (`Arc`); `Debug` never prints the macaroon.
#[derive(Debug)]
pub struct LndBackend {
    http: NodeHttp,
    macaroon: HeaderValue,
}

impl LndBackend {
    /// Builds the backend: resolves the macaroon, reads the pinned certificate and prepares the
    /// HTTP client. No network I/O (use [`Diagnose::info`] to check the connection).
    pub fn new(config: &LndConfig) -> Result<Self, LndConfigError> {
        let settings = http::node_settings!(
            config,
            "lnd REST",
            "macaroon",
            config.tls_cert_path.as_deref()
        );
        Self::build(config, settings)
    }

    /// Builds the backend from values rather than files (a hub provider's payout): the macaroon
    /// as hex, lnd's `tls.cert` as PEM text (pinned exactly as with `tls_cert_path`), default
    /// timeouts; with `public_only`, it connects to public addresses only
    /// ([`crate::net_guard::PublicOnly`]).
    pub fn from_values(
        url: &str,
        macaroon_hex: &str,
        tls_cert_pem: Option<&str>,
        public_only: bool,
    ) -> Result<Self, LndConfigError> {
        let config = LndConfig {
            url: url.to_owned(),
            macaroon: Some(SecretSource::Inline(macaroon_hex.to_owned())),
            macaroon_file: None,
            tls_cert_path: None,
            limits: rules::CallLimits::default(),
        };
        let cert = tls_cert_pem.map(http::PinnedCert::Pem);
        http::node_from_values!(config, "lnd REST", "macaroon", cert, public_only)
    }

    fn build(config: &LndConfig, settings: http::NodeSettings<'_>) -> Result<Self, LndConfigError> {
        let base = NodeHttp::check(&settings)?;
        let macaroon_hex = match (&config.macaroon, &config.macaroon_file) {
            (Some(source), None) => {
                let secret = source
                    .resolve()
                    .map_err(|e| LndConfigError::Macaroon(e.to_string()))?;
                let text = secret.expose().trim();
                if hex::decode(text).is_err() {
                    return Err(LndConfigError::Macaroon(
                        "`macaroon` must be the macaroon as hex (use `macaroon_file` for the \
                         binary file)"
                            .into(),
                    ));
                }
                text.to_ascii_lowercase()
            }
            (None, Some(path)) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    LndConfigError::Macaroon(format!("cannot read {}: {e}", path.display()))
                })?;
                if bytes.is_empty() {
                    return Err(LndConfigError::Macaroon(format!(
                        "{} is empty",
                        path.display()
                    )));
                }
                hex::encode(bytes)
            }
            (Some(_), Some(_)) => {
                return Err(LndConfigError::Macaroon(
                    "give either `macaroon` or `macaroon_file`, not both".into(),
                ));
            }
            (None, None) => {
                return Err(LndConfigError::Macaroon(
                    "`macaroon` (hex) or `macaroon_file` is required".into(),
                ));
            }
        };
        let mut macaroon = HeaderValue::from_str(&macaroon_hex)
            .map_err(|_| LndConfigError::Macaroon("not a valid header value".into()))?;
        macaroon.set_sensitive(true);

        let http = NodeHttp::connect(base, &settings, CONNECT_TIMEOUT)?;
        Ok(LndBackend { http, macaroon })
    }

    http::with_timeouts_method!();

    fn url(&self, path: &str) -> Result<Url, BackendError> {
        self.http
            .base
            .join(path)
            .map_err(|e| BackendError::Rejected(format!("cannot build the URL for {path}: {e}")))
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        self.http
            .client
            .request(method, url)
            .header(MACAROON_HEADER, self.macaroon.clone())
    }

    /// A unary call: JSON answer on success, lnd's `{code, message}` error otherwise.
    async fn call<T: DeserializeOwned>(
        &self,
        what: &'static str,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, BackendError> {
        let url = self.url(path)?;
        let attempts = http::retry(RetryPolicy::new(self.http.retries), what, || {
            let mut req = self.request(method.clone(), url.clone());
            if let Some(body) = &body {
                req = req.json(body);
            }
            http::json_attempt(
                req,
                Idempotency::Idempotent,
                rules::MAX_RESPONSE_BYTES,
                ("lnd", what),
                map_error,
            )
        });
        http::within(self.http.timeout, what, attempts)
            .await
            .map_err(|e| self.tls_hint(e))
    }

    /// Without a pinned certificate, lnd's own certificate fails standard verification
    /// (`CaUsedAsEndEntity`, `UnknownIssuer`): say how to fix it.
    fn tls_hint(&self, error: BackendError) -> BackendError {
        self.http.tls_hint(
            error,
            "lnd serves a self-signed certificate: set tls_cert_path to lnd's tls.cert to pin it",
        )
    }

    async fn channel_balance(&self) -> Result<Msat, BackendError> {
        let resp: ChannelBalanceResponse = self
            .call("channel balance", Method::GET, "v1/balance/channels", None)
            .await?;
        match resp.local_balance {
            Some(amount) => Ok(Msat(amount.msat)),
            // lnd before 0.13 only had the deprecated `balance`, in satoshis.
            None => Sats(resp.balance).to_msat().ok_or_else(|| {
                BackendError::InvalidResponse("lnd channel balance overflows".into())
            }),
        }
    }
}

#[async_trait]
impl InvoiceBackend for LndBackend {
    fn name(&self) -> &'static str {
        "lnd"
    }

    async fn create_invoice(&self, req: CreateInvoice) -> Result<IssuedInvoice, BackendError> {
        rules::check_create_request(&req)?;
        let body = serde_json::json!({
            "memo": req.memo,
            "value_msat": req.amount.0.to_string(),
            "expiry": req.expiry_secs.to_string(),
        });
        let resp: AddInvoiceResponse = self
            .call("add invoice", Method::POST, "v1/invoices", Some(body))
            .await?;
        let r_hash = decode_bytes32(&resp.r_hash, "r_hash")?;
        let issued = rules::check_issued(
            "lnd",
            &resp.payment_request,
            &req,
            Some(PaymentHash(r_hash)),
        )?;
        tracing::debug!(payment_hash = %issued.payment_hash, amount = %issued.amount, "lnd invoice created");
        Ok(issued)
    }

    async fn lookup_invoice(&self, hash: &PaymentHash) -> Result<InvoiceStatus, BackendError> {
        let path = format!("v1/invoice/{}", hash.to_hex());
        let inv: LndInvoice = self
            .call("lookup invoice", Method::GET, &path, None)
            .await?;
        if !inv.r_hash.is_empty() && decode_bytes32(&inv.r_hash, "r_hash")? != hash.0 {
            return Err(BackendError::InvalidResponse(format!(
                "lnd answered the lookup of {hash} with another invoice"
            )));
        }
        let amount = Msat(inv.value_msat);
        let expired = crate::now_unix() >= inv.creation_date.saturating_add(inv.expiry);
        let state = match inv.state.as_str() {
            "SETTLED" => {
                let preimage = Preimage(decode_bytes32(&inv.r_preimage, "r_preimage")?);
                let paid = Some(Msat(inv.amt_paid_msat));
                rules::check_settled("lnd", hash, preimage, paid, amount, inv.settle_date)?
            }
            // An HTLC is held (hold invoices): not paid yet.
            "ACCEPTED" => InvoiceState::Pending,
            "OPEN" if expired => InvoiceState::Expired,
            "OPEN" => InvoiceState::Pending,
            // lnd cancels invoices when they expire: report why it was canceled.
            "CANCELED" if expired => InvoiceState::Expired,
            "CANCELED" => InvoiceState::Canceled,
            other => {
                return Err(BackendError::InvalidResponse(format!(
                    "lnd reports an unknown invoice state {other:?}"
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
impl PaymentBackend for LndBackend {
    fn name(&self) -> &'static str {
        "lnd"
    }

    /// Pays with `SendPaymentV2`, limiting routing fees to `max_fee` (`fee_limit_msat`).
    async fn pay_invoice(&self, bolt11: &str, max_fee: Msat) -> Result<Payment, BackendError> {
        let (invoice, _) = rules::check_payable(bolt11, crate::now_unix())?;
        let url = self.url("v2/router/send")?;
        // Ask lnd to give up looking for routes a little before we give up waiting.
        let lnd_timeout = (self.http.payment_timeout.as_secs() * 4 / 5).clamp(1, i32::MAX as u64);
        let body = serde_json::json!({
            "payment_request": invoice.as_str(),
            "fee_limit_msat": max_fee.0.min(i64::MAX as u64).to_string(),
            "timeout_seconds": lnd_timeout,
            "no_inflight_updates": true,
        });
        let attempts = http::retry(RetryPolicy::new(self.http.retries), "lnd pay", || {
            let req = self.request(Method::POST, url.clone()).json(&body);
            async move {
                let resp = req
                    .send()
                    .await
                    .map_err(|e| http::attempt_error(&e, Idempotency::ConnectOnly))?;
                let status = resp.status();
                let bytes = http::read_limited(resp, rules::MAX_PAYMENT_BYTES)
                    .await
                    .map_err(AttemptError::fatal)?;
                if !status.is_success() {
                    return Err(AttemptError::fatal(map_error(status, &bytes)));
                }
                Ok(bytes)
            }
        });
        let bytes = http::within(self.http.payment_timeout, "lnd pay", attempts)
            .await
            .map_err(|e| self.tls_hint(e))?;
        let final_update = last_payment_update(&bytes)?;
        payment_outcome(&invoice, final_update, max_fee)
    }

    async fn balance(&self) -> Result<Msat, BackendError> {
        self.channel_balance().await
    }

    /// `TrackPaymentV2` (`GET /v2/router/track/{payment_hash}`, the hash as URL-safe base64):
    /// only the stream's first update is read, the payment's current state. lnd answers
    /// `NotFound` ("payment isn't initiated") for a hash it never sent.
    async fn lookup_payment(&self, hash: &PaymentHash) -> Result<OutgoingState, BackendError> {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::URL_SAFE.encode(hash.0);
        let mut url = self.url(&format!("v2/router/track/{encoded}"))?;
        url.query_pairs_mut()
            .append_pair("no_inflight_updates", "false");
        let call = async {
            let mut resp = self
                .request(Method::GET, url)
                .send()
                .await
                .map_err(|e| http::map_transport_error(&e))?;
            let status = resp.status();
            if !status.is_success() {
                let bytes = http::read_limited(resp, rules::MAX_PAYMENT_BYTES).await?;
                return Ok(Err((status, bytes)));
            }
            let mut buf = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| http::map_transport_error(&e))?
            {
                buf.extend_from_slice(&chunk);
                if buf.len() > rules::MAX_PAYMENT_BYTES {
                    return Err(BackendError::InvalidResponse(
                        "lnd payment stream: update larger than the limit".into(),
                    ));
                }
                if let Some(end) = buf.iter().position(|b| *b == b'\n') {
                    buf.truncate(end);
                    break;
                }
            }
            Ok(Ok(buf))
        };
        let answer = http::within(self.http.timeout, "lnd track payment", call)
            .await
            .map_err(|e| self.tls_hint(e))?;
        let line = match answer {
            Ok(line) => line,
            Err((status, body)) => return track_error(status, &body),
        };
        let chunk: StreamChunk = serde_json::from_slice(&line).map_err(|e| {
            BackendError::InvalidResponse(format!(
                "lnd payment stream: {e}: {}",
                http::snippet(&line)
            ))
        })?;
        if let Some(error) = chunk.error {
            return track_rpc_error(StatusCode::OK, error.code, &error.message);
        }
        let update = chunk
            .result
            .ok_or_else(|| BackendError::InvalidResponse("lnd sent no payment update".into()))?;
        if !update.payment_hash.is_empty()
            && parse_hex32(&update.payment_hash, "payment_hash")? != hash.0
        {
            return Err(BackendError::InvalidResponse(format!(
                "lnd answered the look-up of {hash} with another payment"
            )));
        }
        match update.status.as_str() {
            "SUCCEEDED" => OutgoingState::succeeded(
                hash,
                parse_hex32(&update.payment_preimage, "payment_preimage").map(Preimage)?,
                Msat(update.value_msat),
                Msat(update.fee_msat),
            ),
            "FAILED" => Ok(OutgoingState::Failed(format!(
                "lnd: payment failed: {}",
                update.failure_reason
            ))),
            "IN_FLIGHT" | "INITIATED" => Ok(OutgoingState::Pending),
            other => Err(BackendError::InvalidResponse(format!(
                "lnd reports an unknown payment status {:?}",
                http::snippet(other.as_bytes())
            ))),
        }
    }
}

/// A `TrackPaymentV2` error answer: `NotFound` means lnd never sent this payment.
fn track_error(status: StatusCode, body: &[u8]) -> Result<OutgoingState, BackendError> {
    let rpc = serde_json::from_slice::<StreamError>(body)
        .map(|e| e.error)
        .or_else(|_| serde_json::from_slice::<RpcStatus>(body));
    match rpc {
        Ok(rpc) => track_rpc_error(status, rpc.code, &rpc.message),
        Err(_) => Err(map_error(status, body)),
    }
}

fn track_rpc_error(
    status: StatusCode,
    code: i64,
    message: &str,
) -> Result<OutgoingState, BackendError> {
    if code == GRPC_NOT_FOUND || message.to_ascii_lowercase().contains("isn't initiated") {
        return Ok(OutgoingState::Unknown);
    }
    Err(map_rpc_error(status, code, message))
}

#[async_trait]
impl Diagnose for LndBackend {
    /// `GetInfo`, then the channel balance (left out when the macaroon may not read it).
    async fn info(&self) -> Result<NodeInfo, BackendError> {
        let info: GetInfoResponse = self
            .call("get info", Method::GET, "v1/getinfo", None)
            .await?;
        let balance = match self.channel_balance().await {
            Ok(balance) => Some(balance),
            Err(BackendError::Unauthorized(_)) => None,
            Err(e) => return Err(e),
        };
        Ok(NodeInfo {
            backend: "lnd",
            alias: Some(info.alias).filter(|a| !a.is_empty()),
            node_id: Some(info.identity_pubkey).filter(|id| !id.is_empty()),
            network: info
                .chains
                .first()
                .map(|c| rules::normalize_network(&c.network))
                .filter(|n| !n.is_empty()),
            balance,
        })
    }
}

/// The last `Payment` of a `SendPaymentV2` stream; an `{"error": ...}` line is mapped.
fn last_payment_update(stream: &[u8]) -> Result<LndPayment, BackendError> {
    let mut last = None;
    for line in stream.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let chunk: StreamChunk = serde_json::from_slice(line).map_err(|e| {
            BackendError::InvalidResponse(format!(
                "lnd payment stream: {e}: {}",
                http::snippet(line)
            ))
        })?;
        if let Some(error) = chunk.error {
            return Err(map_rpc_error(StatusCode::OK, error.code, &error.message));
        }
        if let Some(result) = chunk.result {
            last = Some(result);
        }
    }
    last.ok_or_else(|| BackendError::InvalidResponse("lnd sent no payment update".into()))
}

/// Turns lnd's final `Payment` into a checked [`Payment`] or the precise failure.
fn payment_outcome(
    invoice: &Invoice,
    update: LndPayment,
    max_fee: Msat,
) -> Result<Payment, BackendError> {
    match update.status.as_str() {
        "SUCCEEDED" => {
            let payment = Payment {
                payment_hash: parse_hex32(&update.payment_hash, "payment_hash").map(PaymentHash)?,
                preimage: parse_hex32(&update.payment_preimage, "payment_preimage")
                    .map(Preimage)?,
                amount: Msat(update.value_msat),
                fee: Msat(update.fee_msat),
            };
            rules::check_paid("lnd", invoice, payment, max_fee)
        }
        "FAILED" => Err(match update.failure_reason.as_str() {
            "FAILURE_REASON_INSUFFICIENT_BALANCE" => BackendError::InsufficientBalance,
            "FAILURE_REASON_NO_ROUTE" => BackendError::Rejected(
                "no route to the payee within the fee limit (lnd: FAILURE_REASON_NO_ROUTE)".into(),
            ),
            "FAILURE_REASON_TIMEOUT" => BackendError::Rejected(
                "lnd gave up finding a route in time (FAILURE_REASON_TIMEOUT)".into(),
            ),
            "FAILURE_REASON_INCORRECT_PAYMENT_DETAILS" => BackendError::Rejected(
                "the payee rejected the payment: unknown payment hash, wrong amount or already \
                 paid (lnd: FAILURE_REASON_INCORRECT_PAYMENT_DETAILS)"
                    .into(),
            ),
            "FAILURE_REASON_CANCELED" => {
                BackendError::Rejected("the payment was canceled (lnd)".into())
            }
            other => BackendError::Rejected(format!("lnd: payment failed: {other}")),
        }),
        other => Err(BackendError::Rejected(format!(
            "lnd ended the payment stream with the payment in state {other:?}; its outcome is \
             not known yet"
        ))),
    }
}

/// Maps an lnd error answer (`{code, message, details}`, or a stream's `{"error": {...}}`).
fn map_error(status: StatusCode, body: &[u8]) -> BackendError {
    if let Ok(StreamError { error }) = serde_json::from_slice::<StreamError>(body) {
        return map_rpc_error(status, error.code, &error.message);
    }
    match serde_json::from_slice::<RpcStatus>(body) {
        Ok(rpc) if !rpc.message.is_empty() || rpc.code != 0 => {
            map_rpc_error(status, rpc.code, &rpc.message)
        }
        _ => map_rpc_error(
            status,
            0,
            &format!("HTTP {status}: {}", http::snippet(body)),
        ),
    }
}

/// gRPC status codes lnd uses.
const GRPC_DEADLINE_EXCEEDED: i64 = 4;
const GRPC_NOT_FOUND: i64 = 5;
const GRPC_PERMISSION_DENIED: i64 = 7;
const GRPC_UNAVAILABLE: i64 = 14;
const GRPC_UNAUTHENTICATED: i64 = 16;

fn map_rpc_error(status: StatusCode, code: i64, message: &str) -> BackendError {
    let lower = message.to_ascii_lowercase();
    let text = if message.is_empty() {
        format!("HTTP {status}")
    } else {
        message.to_owned()
    };
    if lower.contains("invoice is already paid") {
        BackendError::AlreadyPaid
    } else if lower.contains("invoice expired") {
        BackendError::InvoiceExpired
    } else if lower.contains("unable to locate invoice") || lower.contains("no existing invoices") {
        BackendError::UnknownInvoice
    } else if lower.contains("payment is in transition") {
        BackendError::Rejected(
            "a payment of this invoice is already in flight (lnd: payment is in transition)".into(),
        )
    } else if status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
        || code == GRPC_UNAUTHENTICATED
        || code == GRPC_PERMISSION_DENIED
        || lower.contains("verification failed")
        || lower.contains("macaroon")
        || lower.contains("permission denied")
    {
        BackendError::Unauthorized(format!("lnd: {text}"))
    } else if lower.contains("wallet locked")
        || lower.contains("wallet not created")
        || lower.contains("waiting to start")
        || lower.contains("in the process of starting")
    {
        BackendError::Unreachable(format!("lnd is not ready: {text}"))
    } else if code == GRPC_DEADLINE_EXCEEDED {
        BackendError::Timeout
    } else if code == GRPC_UNAVAILABLE || http::is_unavailable_status(status) {
        BackendError::Unreachable(format!("lnd: {text}"))
    } else if code == GRPC_NOT_FOUND || status == StatusCode::NOT_FOUND {
        BackendError::Rejected(format!("lnd: not found: {text}"))
    } else {
        BackendError::Rejected(format!("lnd: {text}"))
    }
}

fn decode_bytes32(b64: &str, field: &str) -> Result<[u8; 32], BackendError> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let bytes = [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(b64).ok())
        .ok_or_else(|| BackendError::InvalidResponse(format!("lnd: {field} is not base64")))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        BackendError::InvalidResponse(format!("lnd: {field} is {} bytes, not 32", bytes.len()))
    })
}

fn parse_hex32(text: &str, field: &str) -> Result<[u8; 32], BackendError> {
    rules::hex32("lnd", text, field)
}

/// An int64/uint64 in lnd's JSON: a string (as protojson writes them) or a number.
fn de_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Text(String),
        Number(u64),
    }
    match Int::deserialize(d)? {
        Int::Text(s) => s.parse().map_err(serde::de::Error::custom),
        Int::Number(n) => Ok(n),
    }
}

fn default_open() -> String {
    "OPEN".to_owned()
}

#[derive(Deserialize)]
struct AddInvoiceResponse {
    r_hash: String,
    payment_request: String,
}

#[derive(Deserialize)]
struct LndInvoice {
    #[serde(default)]
    r_hash: String,
    #[serde(default)]
    r_preimage: String,
    #[serde(default, deserialize_with = "de_u64")]
    value_msat: u64,
    #[serde(default, deserialize_with = "de_u64")]
    creation_date: u64,
    #[serde(default, deserialize_with = "de_u64")]
    settle_date: u64,
    #[serde(default, deserialize_with = "de_u64")]
    expiry: u64,
    #[serde(default, deserialize_with = "de_u64")]
    amt_paid_msat: u64,
    #[serde(default = "default_open")]
    state: String,
}

#[derive(Deserialize)]
struct LndAmount {
    #[serde(default, deserialize_with = "de_u64")]
    msat: u64,
}

#[derive(Deserialize)]
struct ChannelBalanceResponse {
    #[serde(default, deserialize_with = "de_u64")]
    balance: u64,
    #[serde(default)]
    local_balance: Option<LndAmount>,
}

#[derive(Deserialize)]
struct LndChain {
    #[serde(default)]
    network: String,
}

#[derive(Deserialize)]
struct GetInfoResponse {
    #[serde(default)]
    alias: String,
    #[serde(default)]
    identity_pubkey: String,
    #[serde(default)]
    chains: Vec<LndChain>,
}

#[derive(Deserialize)]
struct LndPayment {
    #[serde(default)]
    payment_hash: String,
    #[serde(default)]
    payment_preimage: String,
    #[serde(default, deserialize_with = "de_u64")]
    value_msat: u64,
    #[serde(default, deserialize_with = "de_u64")]
    fee_msat: u64,
    #[serde(default)]
    status: String,
    #[serde(default)]
    failure_reason: String,
}

#[derive(Deserialize)]
struct RpcStatus {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct StreamError {
    error: RpcStatus,
}

#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    result: Option<LndPayment>,
    #[serde(default)]
    error: Option<RpcStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Result<LndConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c = config(r#"{"url": "https://127.0.0.1:8080", "macaroon": "0201"}"#).unwrap();
        assert_eq!(c.limits.timeout_secs, 10);
        assert_eq!(c.limits.retries, 2);
        assert_eq!(c.limits.payment_timeout_secs, 60);
        assert!(config(r#"{"url": "https://x", "macaroon": "01", "macaron": "01"}"#).is_err());
        let backend = LndBackend::new(&c).unwrap();
        let dbg = format!("{backend:?} {c:?}");
        assert!(!dbg.contains("0201"), "{dbg}");
    }

    #[test]
    fn macaroon_rules() {
        let both = config(r#"{"url": "https://x:1", "macaroon": "01", "macaroon_file": "/nope"}"#)
            .unwrap();
        assert!(matches!(
            LndBackend::new(&both),
            Err(LndConfigError::Macaroon(_))
        ));
        let none = config(r#"{"url": "https://x:1"}"#).unwrap();
        assert!(matches!(
            LndBackend::new(&none),
            Err(LndConfigError::Macaroon(_))
        ));
        let not_hex = config(r#"{"url": "https://x:1", "macaroon": "not hex"}"#).unwrap();
        let err = LndBackend::new(&not_hex).unwrap_err();
        assert!(!err.to_string().contains("not hex"), "{err}");
        let bad_url = config(r#"{"url": "ftp://x", "macaroon": "01"}"#).unwrap();
        assert!(matches!(
            LndBackend::new(&bad_url),
            Err(LndConfigError::InvalidUrl(_))
        ));
    }

    #[test]
    fn error_mapping() {
        let m = |status: u16, body: &str| {
            map_error(StatusCode::from_u16(status).unwrap(), body.as_bytes())
        };
        assert_eq!(
            m(
                409,
                r#"{"error":{"code":6,"message":"invoice is already paid","details":[]}}"#
            ),
            BackendError::AlreadyPaid
        );
        assert_eq!(
            m(
                500,
                r#"{"code":2,"message":"invoice expired. Valid until 2026-01-01 00:00:00 +0000 UTC","details":[]}"#
            ),
            BackendError::InvoiceExpired
        );
        assert_eq!(
            m(
                404,
                r#"{"code":5,"message":"unable to locate invoice","details":[]}"#
            ),
            BackendError::UnknownInvoice
        );
        assert!(matches!(
            m(
                500,
                r#"{"code":2,"message":"verification failed: signature mismatch after caveat verification","details":[]}"#
            ),
            BackendError::Unauthorized(_)
        ));
        assert!(matches!(
            m(
                500,
                r#"{"code":2,"message":"expected 1 macaroon, got 0","details":[]}"#
            ),
            BackendError::Unauthorized(_)
        ));
        assert!(matches!(
            m(
                500,
                r#"{"code":2,"message":"wallet locked, unlock it to enable full RPC access","details":[]}"#
            ),
            BackendError::Unreachable(_)
        ));
        assert!(matches!(m(502, "<html>"), BackendError::Unreachable(_)));
        assert!(matches!(m(500, "oops"), BackendError::Rejected(_)));
    }

    #[test]
    fn int64_fields_as_strings_or_numbers() {
        let inv: LndInvoice =
            serde_json::from_str(r#"{"value_msat": "1000", "expiry": 60, "state": "SETTLED"}"#)
                .unwrap();
        assert_eq!((inv.value_msat, inv.expiry), (1000, 60));
        assert!(serde_json::from_str::<LndInvoice>(r#"{"value_msat": "-5"}"#).is_err());
    }
}
