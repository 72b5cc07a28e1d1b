//! CONTRACT FAKE of LND's REST API (the grpc-gateway proxy on lnd's `restlisten` port), from
//! lnd's API reference (lightning.engineering/api-docs, `lightning.proto`, `router.proto`,
//! `lightning.yaml`, `router.yaml`) and lnd's source where the reference is silent.
//!
//! Reproduced:
//!
//! - HTTPS with a self-signed certificate that has `CA:TRUE`, like lnd's `tls.cert`.
//! - The macaroon in the `Grpc-Metadata-macaroon` header (hex). lnd checks it in a gRPC
//!   interceptor, so a failure is a gRPC `Unknown` (2) error, which grpc-gateway turns into
//!   HTTP `500` with `{"code": 2, "message": "...", "details": []}`: `expected 1 macaroon, got
//!   0` without one, `verification failed: signature mismatch after caveat verification` for a
//!   wrong one. A stream (`/v2/router/send`) carries the same error as `{"error": {...}}`.
//! - JSON as grpc-gateway writes it (protojson, `UseProtoNames`, `EmitUnpopulated`): proto field
//!   names, `bytes` as standard base64, 64-bit integers as strings, enums by name; requests
//!   accept 64-bit integers as strings or numbers.
//! - `POST /v1/invoices` (AddInvoice), `GET /v1/invoice/{r_hash_str}` (LookupInvoice: `404`
//!   `{"code": 5, "message": "unable to locate invoice"}` when unknown), `POST /v2/router/send`
//!   (SendPaymentV2: JSON lines `{"result": Payment}`; already paid → `409` `{"error": {"code":
//!   6, "message": "invoice is already paid"}}`; expired → `500` `invoice expired. Valid until
//!   ...`; routing failures as a `FAILED` payment with a `failure_reason`), `GET
//!   /v1/balance/channels`, `GET /v1/getinfo`; anything else `404` `{"code": 5, "message": "Not
//!   Found"}`; `GET /v2/router/track/{payment_hash}` (TrackPaymentV2: the hash as base64, URL-safe
//!   or standard; a stream of `{"result": Payment}` lines starting with the current state, held
//!   open while the payment is `IN_FLIGHT`; `404` `{"error": {"code": 5, "message": "payment
//!   isn't initiated"}}` for a hash lnd never sent). Failed payments stay in the payment
//!   database (`FAILED` with their `failure_reason`) and may be tried again; a payment in flight
//!   refuses a second send with `payment is in transition`.
//! - Invoice states OPEN → SETTLED (a test "pays" with [`LndFake::settle`]), OPEN → CANCELED
//!   at expiry (lnd's expiry watcher); `r_preimage` is reported for open invoices too, as lnd
//!   does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::StreamExt as _;
use lightning_invoice::Currency;
use serde_json::{Value, json};
use turnpike_l402::bolt11::Invoice;
use turnpike_lightning::lnd::LndConfig;
use turnpike_lightning::{PaymentHash, Preimage, SecretSource};

use super::{Common, Fault, Gate, Node, Remote, TlsIdentity, lock, now};

/// The fake's macaroon (hex of some bytes; the fake only compares).
pub const MACAROON_HEX: &str = "0201036c6e6402f801030a10c1f7aa8f0b2d6e2b0b7f3e1a7c6d5e4f1201301a160a0761646472657373120472656164120577726974651a130a04696e666f120472656164120577726974651a170a08696e766f69636573120472656164120577726974651a210a086d616361726f6f6e120867656e6572617465120472656164120577726974651a160a076d6573736167651204726561641205777269746512";

/// Routing fee the fake network charges per payment, msat.
pub const ROUTE_FEE_MSAT: u64 = 1_000;

/// Channel balance the fake starts with, msat.
pub const START_BALANCE_MSAT: u64 = 1_000_000_000;

struct FakeInvoice {
    memo: String,
    preimage: Preimage,
    value_msat: u64,
    bolt11: String,
    creation_date: u64,
    expiry: u64,
    add_index: u64,
    settled: Option<(u64, u64, u64)>, // (settle_date, settle_index, amt_paid_msat)
    canceled: bool,
}

struct OutPayment {
    preimage: Preimage,
    value_msat: u64,
    fee_msat: u64,
    bolt11: String,
    created_ns: u64,
    index: u64,
}

#[derive(Default)]
struct Ledger {
    invoices: HashMap<PaymentHash, FakeInvoice>,
    payments: HashMap<PaymentHash, OutPayment>,
    /// Payments that did not succeed: `(payment, status, failure_reason)`.
    attempts: HashMap<PaymentHash, (OutPayment, &'static str, &'static str)>,
    balance_msat: u64,
    next_add_index: u64,
    next_settle_index: u64,
    next_payment_index: u64,
}

/// The fake lnd.
pub struct Lnd {
    common: Common,
    node: Node,
    /// The fake network's payees.
    pub remote: Remote,
    ledger: Mutex<Ledger>,
}

/// A running fake lnd.
pub struct LndFake {
    /// Its address.
    pub addr: SocketAddr,
    /// Its state.
    pub lnd: Arc<Lnd>,
    /// Its TLS certificate (lnd's `tls.cert`).
    pub identity: TlsIdentity,
    /// Completed TLS handshakes.
    pub handshakes: Arc<AtomicUsize>,
}

impl LndFake {
    /// Starts a fake lnd on `127.0.0.1:0`, over HTTPS with an lnd-style certificate.
    pub async fn start() -> LndFake {
        turnpike_lightning::ensure_crypto_provider();
        let lnd = Arc::new(Lnd {
            common: Common::default(),
            node: Node::new(),
            remote: Remote::default(),
            ledger: Mutex::new(Ledger {
                balance_msat: START_BALANCE_MSAT,
                ..Ledger::default()
            }),
        });
        let identity = super::lnd_style_certificate();
        let (addr, handshakes) = super::serve_https(router(lnd.clone()), &identity).await;
        LndFake {
            addr,
            lnd,
            identity,
            handshakes,
        }
    }

    /// The base URL (`https://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// A backend configuration for this fake: the right macaroon, and lnd's certificate written
    /// to `dir` and pinned.
    pub fn config(&self, dir: &Path) -> LndConfig {
        LndConfig {
            url: self.url(),
            macaroon: Some(SecretSource::Inline(MACAROON_HEX.to_owned())),
            macaroon_file: None,
            tls_cert_path: Some(self.cert_path(dir)),
            limits: turnpike_lightning::rules::CallLimits {
                timeout_secs: 5,
                retries: 2,
                payment_timeout_secs: 10,
            },
        }
    }

    /// Writes lnd's certificate into `dir`; returns its path.
    pub fn cert_path(&self, dir: &Path) -> PathBuf {
        self.identity.write_pem(dir, "tls.cert")
    }

    /// Sets how the fake misbehaves.
    pub fn set_fault(&self, fault: Fault) {
        self.lnd.common.set_fault(fault);
    }

    /// API requests received so far.
    pub fn requests(&self) -> usize {
        self.lnd.common.requests()
    }

    /// Settles an invoice this node issued, as if a payer had paid it.
    pub fn settle(&self, hash: &PaymentHash) {
        let mut ledger = lock(&self.lnd.ledger);
        ledger.next_settle_index += 1;
        let index = ledger.next_settle_index;
        let inv = ledger
            .invoices
            .get_mut(hash)
            .expect("an invoice of this node");
        inv.settled = Some((now(), index, inv.value_msat));
    }

    /// Makes an invoice of this node expire now (lnd then reports it `CANCELED`).
    pub fn expire(&self, hash: &PaymentHash) {
        let mut ledger = lock(&self.lnd.ledger);
        let inv = ledger
            .invoices
            .get_mut(hash)
            .expect("an invoice of this node");
        inv.creation_date = now() - inv.expiry - 1;
    }

    /// A remote invoice (regtest) the fake can pay.
    pub fn remote_invoice(&self, amount_msat: u64) -> String {
        self.lnd.remote.invoice(Currency::Regtest, amount_msat, 600)
    }

    /// The channel balance, msat.
    pub fn balance_msat(&self) -> u64 {
        lock(&self.lnd.ledger).balance_msat
    }

    /// Sets the channel balance, msat.
    pub fn set_balance_msat(&self, msat: u64) {
        lock(&self.lnd.ledger).balance_msat = msat;
    }

    /// The node id, hex.
    pub fn node_id(&self) -> String {
        self.lnd.node.id_hex()
    }

    /// Records a payment of `bolt11` as sent and still `IN_FLIGHT` (its HTLC unresolved).
    pub fn hold_in_flight(&self, bolt11: &str) -> PaymentHash {
        let invoice = Invoice::parse(bolt11).expect("a valid invoice");
        let hash = invoice.payment_hash();
        let mut ledger = lock(&self.lnd.ledger);
        ledger.next_payment_index += 1;
        let payment = OutPayment {
            preimage: Preimage([0; 32]),
            value_msat: invoice.amount().map_or(0, |a| a.0),
            fee_msat: 0,
            bolt11: bolt11.to_owned(),
            created_ns: super::now_ms() * 1_000_000,
            index: ledger.next_payment_index,
        };
        ledger
            .attempts
            .insert(hash, (payment, "IN_FLIGHT", "FAILURE_REASON_NONE"));
        hash
    }
}

fn router(lnd: Arc<Lnd>) -> Router {
    Router::new()
        .route("/v1/invoices", post(add_invoice))
        .route("/v1/invoice/{r_hash_str}", get(lookup_invoice))
        .route("/v2/router/send", post(send_payment_v2))
        .route("/v2/router/track/{payment_hash}", get(track_payment_v2))
        .route("/v1/balance/channels", get(channel_balance))
        .route("/v1/getinfo", get(get_info))
        .fallback(|| async { rpc_error(StatusCode::NOT_FOUND, 5, "Not Found") })
        .with_state(lnd)
}

/// grpc-gateway's error body for a unary call.
fn rpc_error(status: StatusCode, code: i64, message: &str) -> Response {
    super::json(
        status,
        json!({ "code": code, "message": message, "details": [] }),
    )
}

/// grpc-gateway's error for a server stream that fails before its first message.
fn stream_error(status: StatusCode, code: i64, message: &str) -> Response {
    super::json(
        status,
        json!({ "error": { "code": code, "message": message, "details": [] } }),
    )
}

/// The permissions of lnd's `invoice.macaroon`.
pub const INVOICE_PERMISSIONS: &[&str] = &[
    "address:read",
    "address:write",
    "invoices:read",
    "invoices:write",
    "onchain:read",
];

/// An invoice macaroon (hex) the fake also accepts, for invoice calls only (its identifier
/// lists [`INVOICE_PERMISSIONS`]; the fake does not check signatures).
pub fn invoice_macaroon_hex() -> String {
    turnpike_lightning::spend_rights::test_credentials::lnd_macaroon(INVOICE_PERMISSIONS)
}

/// lnd's macaroon interceptor: `Err((code, message))` as lnd reports it. The invoice macaroon
/// passes only for invoice calls (`invoices`).
fn check_macaroon(headers: &HeaderMap, invoices: bool) -> Result<(), (i64, &'static str)> {
    let invoice_macaroon = |v: &axum::http::HeaderValue| {
        v.as_bytes()
            .eq_ignore_ascii_case(invoice_macaroon_hex().as_bytes())
    };
    match headers.get("grpc-metadata-macaroon") {
        None => Err((2, "expected 1 macaroon, got 0")),
        Some(v) if v.as_bytes().eq_ignore_ascii_case(MACAROON_HEX.as_bytes()) => Ok(()),
        Some(v) if invoice_macaroon(v) && invoices => Ok(()),
        Some(v) if invoice_macaroon(v) => Err((2, "verification failed: permission denied")),
        Some(v) if hex::decode(v.as_bytes()).is_err() => {
            Err((2, "unable to decode macaroon: encoding/hex: invalid byte"))
        }
        Some(_) => Err((
            2,
            "verification failed: signature mismatch after caveat verification",
        )),
    }
}

/// Gate + macaroon check for a unary call (an invoice call when `invoices`).
async fn admit(lnd: &Lnd, headers: &HeaderMap, invoices: bool) -> Result<Fault, Response> {
    match lnd.common.gate().await {
        Gate::Unavailable => Err(super::unavailable()),
        Gate::Serve(fault) => {
            check_macaroon(headers, invoices)
                .map_err(|(code, msg)| rpc_error(StatusCode::INTERNAL_SERVER_ERROR, code, msg))?;
            Ok(fault)
        }
    }
}

/// A protojson int64: accepts a string or a number.
fn int64(v: Option<&Value>) -> Result<i64, String> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| format!("invalid value for int64 field: {s:?}")),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| format!("invalid value for int64 field: {n}")),
        Some(other) => Err(format!("invalid value for int64 field: {other}")),
    }
}

fn invoice_json(hash: &PaymentHash, inv: &FakeInvoice, fault: Fault, now: u64) -> Value {
    let expired = now >= inv.creation_date + inv.expiry;
    let state = match (&inv.settled, inv.canceled || expired) {
        (Some(_), _) => "SETTLED",
        (None, true) => "CANCELED",
        (None, false) => "OPEN",
    };
    let (settle_date, settle_index, amt_paid_msat) = inv.settled.unwrap_or((0, 0, 0));
    let preimage = if fault == Fault::WrongPreimage {
        Preimage::random()
    } else {
        inv.preimage
    };
    json!({
        "memo": inv.memo,
        "r_preimage": B64.encode(preimage.0),
        "r_hash": B64.encode(hash.0),
        "value": (inv.value_msat / 1000).to_string(),
        "value_msat": inv.value_msat.to_string(),
        "settled": inv.settled.is_some(),
        "creation_date": inv.creation_date.to_string(),
        "settle_date": settle_date.to_string(),
        "payment_request": inv.bolt11,
        "description_hash": "",
        "expiry": inv.expiry.to_string(),
        "fallback_addr": "",
        "cltv_expiry": "80",
        "route_hints": [],
        "private": false,
        "add_index": inv.add_index.to_string(),
        "settle_index": settle_index.to_string(),
        "amt_paid": (amt_paid_msat / 1000).to_string(),
        "amt_paid_sat": (amt_paid_msat / 1000).to_string(),
        "amt_paid_msat": amt_paid_msat.to_string(),
        "state": state,
        "htlcs": [],
        "features": {},
        "is_keysend": false,
        "payment_addr": B64.encode([7u8; 32]),
        "is_amp": false,
        "amp_invoice_state": {},
    })
}

async fn add_invoice(State(lnd): State<Arc<Lnd>>, headers: HeaderMap, body: String) -> Response {
    let fault = match admit(&lnd, &headers, true).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let Ok(req) = serde_json::from_str::<Value>(&body) else {
        return rpc_error(StatusCode::BAD_REQUEST, 3, "unexpected EOF");
    };
    let (value, value_msat) = match (int64(req.get("value")), int64(req.get("value_msat"))) {
        (Ok(v), Ok(m)) => (v, m),
        (Err(e), _) | (_, Err(e)) => return rpc_error(StatusCode::BAD_REQUEST, 3, &e),
    };
    if value != 0 && value_msat != 0 {
        return rpc_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            2,
            "value and value_msat are mutually exclusive",
        );
    }
    let value_msat = if value != 0 { value * 1000 } else { value_msat };
    if value_msat < 0 {
        return rpc_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            2,
            "payments of negative value are not allowed",
        );
    }
    let expiry = match int64(req.get("expiry")) {
        Ok(0) => 86_400,
        Ok(e) if e > 0 => e as u64,
        _ => {
            return rpc_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                2,
                "expiry must be positive",
            );
        }
    };
    let memo = req.get("memo").and_then(Value::as_str).unwrap_or_default();
    let value_msat = value_msat as u64;
    let preimage = Preimage::random();
    let hash = preimage.payment_hash();
    let created = now();
    let signed_amount = if fault == Fault::WrongAmount {
        value_msat + 1_000
    } else {
        value_msat
    };
    let bolt11 = lnd.node.invoice(
        Currency::Regtest,
        signed_amount,
        memo,
        &hash,
        created,
        expiry,
    );
    let mut ledger = lock(&lnd.ledger);
    ledger.next_add_index += 1;
    let add_index = ledger.next_add_index;
    ledger.invoices.insert(
        hash,
        FakeInvoice {
            memo: memo.to_owned(),
            preimage,
            value_msat,
            bolt11: bolt11.clone(),
            creation_date: created,
            expiry,
            add_index,
            settled: None,
            canceled: false,
        },
    );
    if fault == Fault::MalformedJson {
        return super::malformed(StatusCode::OK);
    }
    super::json(
        StatusCode::OK,
        json!({
            "r_hash": B64.encode(hash.0),
            "payment_request": bolt11,
            "add_index": add_index.to_string(),
            "payment_addr": B64.encode([7u8; 32]),
        }),
    )
}

async fn lookup_invoice(
    State(lnd): State<Arc<Lnd>>,
    headers: HeaderMap,
    UrlPath(r_hash_str): UrlPath<String>,
) -> Response {
    let fault = match admit(&lnd, &headers, true).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let bytes = match hex::decode(&r_hash_str) {
        Ok(b) => b,
        Err(e) => {
            return rpc_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                2,
                &format!("encoding/hex: {e}"),
            );
        }
    };
    let Ok(hash) = <[u8; 32]>::try_from(bytes.as_slice()).map(PaymentHash) else {
        return rpc_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            2,
            &format!(
                "payment hash must be exactly 32 bytes, is instead {}",
                bytes.len()
            ),
        );
    };
    if fault == Fault::MalformedJson {
        return super::malformed(StatusCode::OK);
    }
    let ledger = lock(&lnd.ledger);
    match ledger.invoices.get(&hash) {
        Some(inv) => super::json(StatusCode::OK, invoice_json(&hash, inv, fault, now())),
        None => rpc_error(StatusCode::NOT_FOUND, 5, "unable to locate invoice"),
    }
}

fn payment_json(hash: &PaymentHash, p: &OutPayment, status: &str, reason: &str) -> Value {
    json!({
        "payment_hash": hash.to_hex(),
        "value": (p.value_msat / 1000).to_string(),
        "creation_date": (p.created_ns / 1_000_000_000).to_string(),
        "fee": (p.fee_msat / 1000).to_string(),
        "payment_preimage": p.preimage.to_hex(),
        "value_sat": (p.value_msat / 1000).to_string(),
        "value_msat": p.value_msat.to_string(),
        "payment_request": p.bolt11,
        "status": status,
        "fee_sat": (p.fee_msat / 1000).to_string(),
        "fee_msat": p.fee_msat.to_string(),
        "creation_time_ns": p.created_ns.to_string(),
        "htlcs": [],
        "payment_index": p.index.to_string(),
        "failure_reason": reason,
        "first_hop_custom_records": {},
    })
}

/// One JSON line of a grpc-gateway stream.
fn line(result: Value) -> String {
    format!("{}\n", json!({ "result": result }))
}

async fn send_payment_v2(
    State(lnd): State<Arc<Lnd>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let fault = match lnd.common.gate().await {
        Gate::Unavailable => return super::unavailable(),
        Gate::Serve(f) => f,
    };
    if let Err((code, msg)) = check_macaroon(&headers, false) {
        return stream_error(StatusCode::INTERNAL_SERVER_ERROR, code, msg);
    }
    let Ok(req) = serde_json::from_str::<Value>(&body) else {
        return stream_error(StatusCode::BAD_REQUEST, 3, "unexpected EOF");
    };
    let pay_req = req
        .get("payment_request")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let invoice = match Invoice::parse(pay_req) {
        Ok(i) => i,
        Err(e) => {
            return stream_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                2,
                &format!("invalid payment request: {e}"),
            );
        }
    };
    let fee_limit = match int64(req.get("fee_limit_msat")) {
        Ok(f) => f.max(0) as u64,
        Err(e) => return stream_error(StatusCode::BAD_REQUEST, 3, &e),
    };
    let no_inflight = req
        .get("no_inflight_updates")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if invoice.is_expired(now()) {
        return stream_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            2,
            &format!(
                "invoice expired. Valid until {} +0000 UTC",
                invoice.expires_at()
            ),
        );
    }
    let hash = invoice.payment_hash();
    let amount = invoice.amount().map_or(0, |a| a.0);
    let mut ledger = lock(&lnd.ledger);
    if ledger.payments.contains_key(&hash) {
        return stream_error(StatusCode::CONFLICT, 6, "invoice is already paid");
    }
    if matches!(ledger.attempts.get(&hash), Some((_, "IN_FLIGHT", _))) {
        return stream_error(StatusCode::CONFLICT, 6, "payment is in transition");
    }
    ledger.next_payment_index += 1;
    let mut payment = OutPayment {
        preimage: Preimage([0; 32]),
        value_msat: amount,
        fee_msat: 0,
        bolt11: pay_req.to_owned(),
        created_ns: super::now_ms() * 1_000_000,
        index: ledger.next_payment_index,
    };
    let failure = if ROUTE_FEE_MSAT > fee_limit {
        Some("FAILURE_REASON_NO_ROUTE")
    } else if amount + ROUTE_FEE_MSAT > ledger.balance_msat {
        Some("FAILURE_REASON_INSUFFICIENT_BALANCE")
    } else if lnd.remote.preimage(&hash).is_none() {
        Some("FAILURE_REASON_INCORRECT_PAYMENT_DETAILS")
    } else {
        None
    };
    let mut stream = String::new();
    if !no_inflight {
        stream.push_str(&line(payment_json(
            &hash,
            &payment,
            "IN_FLIGHT",
            "FAILURE_REASON_NONE",
        )));
    }
    match failure {
        Some(reason) => {
            stream.push_str(&line(payment_json(&hash, &payment, "FAILED", reason)));
            ledger.attempts.insert(hash, (payment, "FAILED", reason));
        }
        None => {
            payment.preimage = lnd.remote.preimage(&hash).unwrap_or(Preimage([0; 32]));
            payment.fee_msat = ROUTE_FEE_MSAT;
            ledger.balance_msat -= amount + ROUTE_FEE_MSAT;
            let mut reported = payment_json(&hash, &payment, "SUCCEEDED", "FAILURE_REASON_NONE");
            match fault {
                Fault::WrongPreimage => {
                    reported["payment_preimage"] = json!(Preimage::random().to_hex());
                }
                Fault::WrongAmount => {
                    reported["value_msat"] = json!((amount + 1_000).to_string());
                }
                _ => {}
            }
            stream.push_str(&line(reported));
            ledger.attempts.remove(&hash);
            ledger.payments.insert(hash, payment);
        }
    }
    if fault == Fault::MalformedJson {
        return super::malformed(StatusCode::OK);
    }
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        stream,
    )
        .into_response()
}

async fn track_payment_v2(
    State(lnd): State<Arc<Lnd>>,
    headers: HeaderMap,
    UrlPath(payment_hash): UrlPath<String>,
) -> Response {
    use base64::engine::general_purpose::URL_SAFE;
    let fault = match lnd.common.gate().await {
        Gate::Unavailable => return super::unavailable(),
        Gate::Serve(f) => f,
    };
    if let Err((code, msg)) = check_macaroon(&headers, false) {
        return stream_error(StatusCode::INTERNAL_SERVER_ERROR, code, msg);
    }
    // grpc-gateway decodes a `bytes` path parameter as standard, then URL-safe, base64.
    let bytes = B64
        .decode(&payment_hash)
        .or_else(|_| URL_SAFE.decode(&payment_hash));
    let Some(hash) = bytes
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .map(PaymentHash)
    else {
        return stream_error(
            StatusCode::BAD_REQUEST,
            3,
            &format!("type mismatch, parameter: payment_hash, error: {payment_hash}"),
        );
    };
    let (first, held) = {
        let ledger = lock(&lnd.ledger);
        if let Some(p) = ledger.payments.get(&hash) {
            let mut reported = payment_json(&hash, p, "SUCCEEDED", "FAILURE_REASON_NONE");
            if fault == Fault::WrongPreimage {
                reported["payment_preimage"] = json!(Preimage::random().to_hex());
            }
            (line(reported), false)
        } else if let Some((p, status, reason)) = ledger.attempts.get(&hash) {
            (
                line(payment_json(&hash, p, status, reason)),
                *status == "IN_FLIGHT",
            )
        } else {
            return stream_error(StatusCode::NOT_FOUND, 5, "payment isn't initiated");
        }
    };
    if fault == Fault::MalformedJson {
        return super::malformed(StatusCode::OK);
    }
    let head = futures_util::stream::once(async move {
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(first))
    });
    let body = if held {
        // lnd keeps the stream open until the payment resolves.
        axum::body::Body::from_stream(head.chain(futures_util::stream::pending()))
    } else {
        axum::body::Body::from_stream(head)
    };
    (StatusCode::OK, [("content-type", "application/json")], body).into_response()
}

async fn channel_balance(State(lnd): State<Arc<Lnd>>, headers: HeaderMap) -> Response {
    let fault = match admit(&lnd, &headers, false).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    if fault == Fault::MalformedJson {
        return super::malformed(StatusCode::OK);
    }
    let msat = lock(&lnd.ledger).balance_msat;
    let amount = |msat: u64| json!({ "sat": (msat / 1000).to_string(), "msat": msat.to_string() });
    super::json(
        StatusCode::OK,
        json!({
            "balance": (msat / 1000).to_string(),
            "pending_open_balance": "0",
            "local_balance": amount(msat),
            "remote_balance": amount(500_000_000),
            "unsettled_local_balance": amount(0),
            "unsettled_remote_balance": amount(0),
            "pending_open_local_balance": amount(0),
            "pending_open_remote_balance": amount(0),
            "custom_channel_data": "",
        }),
    )
}

async fn get_info(State(lnd): State<Arc<Lnd>>, headers: HeaderMap) -> Response {
    let fault = match admit(&lnd, &headers, false).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    if fault == Fault::MalformedJson {
        return super::malformed(StatusCode::OK);
    }
    super::json(
        StatusCode::OK,
        json!({
            "version": "0.20.0-beta commit=v0.20.0-beta",
            "commit_hash": "0000000000000000000000000000000000000000",
            "identity_pubkey": lnd.node.id_hex(),
            "alias": "turnpike-fake-lnd",
            "color": "#3399ff",
            "num_pending_channels": 0,
            "num_active_channels": 1,
            "num_inactive_channels": 0,
            "num_peers": 1,
            "block_height": 850000,
            "block_hash": "00000000000000000000a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6",
            "best_header_timestamp": now().to_string(),
            "synced_to_chain": true,
            "synced_to_graph": true,
            "testnet": false,
            "chains": [{ "chain": "bitcoin", "network": "regtest" }],
            "uris": [],
            "features": {},
            "require_htlc_interceptor": false,
            "store_final_htlc_resolutions": false,
        }),
    )
}
