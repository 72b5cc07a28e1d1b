//! CONTRACT FAKE of phoenixd's HTTP API, from phoenixd's API documentation
//! (phoenix.acinq.co/server/api) and its source (`Api.kt`, `json/JsonSerializers.kt`,
//! lightning-kmp's `FinalFailure`) where the documentation is silent.
//!
//! Reproduced:
//!
//! - HTTP basic auth; the user name is ignored, the password is `http-password` (full access)
//!   or `http-password-limited-access` (everything but paying). A wrong or missing password is
//!   `401` with the text `Invalid authentication (use basic auth with the http password set in
//!   phoenix.conf)` and `WWW-Authenticate: Basic realm="Ktor Server", charset=UTF-8`.
//! - Form-encoded requests; JSON answers in camelCase with satoshi amounts (`...Sat`), hashes
//!   and preimages as hex, times in milliseconds, `null` fields omitted; errors as plain text
//!   (`400` for bad parameters, e.g. a description over 128 characters, `404 Not found` for an
//!   unknown payment).
//! - `POST /createinvoice`, `GET /payments/incoming/{paymentHash}` (with `isPaid`, `isExpired`,
//!   and the `preimage` even before payment, as phoenixd does), `POST /payinvoice` (`200`
//!   either way: `PaymentSent` or `PaymentFailed {paymentHash, reason}`, with lightning-kmp's
//!   reasons, e.g. `this invoice has already been paid`), `GET /getbalance`, `GET /getinfo`.
//! - `GET /payments/outgoingbyhash/{paymentHash}` (phoenixd 0.5+): the outgoing payment with
//!   `isPaid`, `preimage` once paid, `sent` in satoshis (fees included), `fees` in
//!   millisatoshis, `completedAt` once it succeeded or failed; `404 Not found` when phoenixd
//!   never sent it. A payment the recipient rejected is kept as failed (completed, not paid).
//! - Testnet invoices (`lntb...`); phoenixd runs on mainnet or testnet.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Form, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use lightning_invoice::Currency;
use serde_json::json;
use turnpike_l402::bolt11::Invoice;
use turnpike_lightning::phoenixd::PhoenixdConfig;
use turnpike_lightning::{PaymentHash, Preimage, SecretSource};

use super::{Common, Fault, Gate, Node, Remote, lock, now_ms};

/// The full-access password (`http-password`).
pub const PASSWORD: &str = "c0ffee5e1ec7ab1e0ddba11c0ffee5e1ec7ab1e0ddba11c0ffee5e1ec7ab1e00";
/// The limited-access password (`http-password-limited-access`).
pub const LIMITED_PASSWORD: &str =
    "1eaf1eaf1eaf1eaf1eaf1eaf1eaf1eaf1eaf1eaf1eaf1eaf1eaf1eaf1eaf1eaf";

/// Routing fee the fake charges per payment, sat.
pub const ROUTE_FEE_SAT: u64 = 4;

/// Balance the fake starts with, sat.
pub const START_BALANCE_SAT: u64 = 1_000_000;

/// Fee credit the fake reports, sat.
pub const FEE_CREDIT_SAT: u64 = 21;

struct FakeInvoice {
    preimage: Preimage,
    description: String,
    bolt11: String,
    requested_sat: u64,
    created_ms: u64,
    expiry_secs: u64,
    completed_ms: Option<u64>,
}

#[derive(Default)]
struct Ledger {
    invoices: HashMap<PaymentHash, FakeInvoice>,
    paid: HashMap<PaymentHash, Preimage>,
    outgoing: HashMap<PaymentHash, OutRecord>,
    balance_sat: u64,
}

struct OutRecord {
    preimage: Option<Preimage>,
    sent_sat: u64,
    fees_msat: u64,
    invoice: String,
    created_ms: u64,
    completed_ms: Option<u64>,
}

/// The fake phoenixd.
pub struct Phoenixd {
    common: Common,
    node: Node,
    /// The fake network's payees.
    pub remote: Remote,
    ledger: Mutex<Ledger>,
}

/// A running fake phoenixd.
pub struct PhoenixdFake {
    /// Its address.
    pub addr: SocketAddr,
    /// Its state.
    pub phoenixd: Arc<Phoenixd>,
}

impl PhoenixdFake {
    /// Starts a fake phoenixd on `127.0.0.1:0` (plain HTTP, as phoenixd serves).
    pub async fn start() -> PhoenixdFake {
        let phoenixd = Arc::new(Phoenixd {
            common: Common::default(),
            node: Node::new(),
            remote: Remote::default(),
            ledger: Mutex::new(Ledger {
                balance_sat: START_BALANCE_SAT,
                ..Ledger::default()
            }),
        });
        let addr = super::serve_http(router(phoenixd.clone())).await;
        PhoenixdFake { addr, phoenixd }
    }

    /// A backend configuration for this fake with the full-access password.
    pub fn config(&self) -> PhoenixdConfig {
        PhoenixdConfig {
            url: self.url(),
            password: SecretSource::Inline(PASSWORD.to_owned()),
            limits: turnpike_lightning::rules::CallLimits {
                timeout_secs: 5,
                retries: 2,
                payment_timeout_secs: 10,
            },
        }
    }

    /// Sets how the fake misbehaves.
    pub fn set_fault(&self, fault: Fault) {
        self.phoenixd.common.set_fault(fault);
    }

    /// The base URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    /// Outgoing payments recorded (paid, pending or failed).
    pub fn payments_sent(&self) -> usize {
        lock(&self.phoenixd.ledger).outgoing.len()
    }

    /// API requests received so far.
    pub fn requests(&self) -> usize {
        self.phoenixd.common.requests()
    }

    /// Marks an invoice of this node paid, as if a payer had paid it.
    pub fn settle(&self, hash: &PaymentHash) {
        let mut ledger = lock(&self.phoenixd.ledger);
        let inv = ledger
            .invoices
            .get_mut(hash)
            .expect("an invoice of this node");
        inv.completed_ms = Some(now_ms());
    }

    /// Makes an invoice of this node expire now.
    pub fn expire(&self, hash: &PaymentHash) {
        let mut ledger = lock(&self.phoenixd.ledger);
        let inv = ledger
            .invoices
            .get_mut(hash)
            .expect("an invoice of this node");
        inv.created_ms = now_ms() - inv.expiry_secs * 1000 - 1000;
    }

    /// A remote invoice (testnet) the fake can pay.
    pub fn remote_invoice(&self, amount_msat: u64) -> String {
        self.phoenixd
            .remote
            .invoice(Currency::BitcoinTestnet, amount_msat, 600)
    }

    /// Balance, sat.
    pub fn balance_sat(&self) -> u64 {
        lock(&self.phoenixd.ledger).balance_sat
    }

    /// Sets the balance, sat.
    pub fn set_balance_sat(&self, sat: u64) {
        lock(&self.phoenixd.ledger).balance_sat = sat;
    }

    /// The node id, hex.
    pub fn node_id(&self) -> String {
        self.phoenixd.node.id_hex()
    }

    /// Records a payment of `bolt11` as sent and not yet completed.
    pub fn hold_pending(&self, bolt11: &str) -> PaymentHash {
        let invoice = Invoice::parse(bolt11).expect("a valid invoice");
        let hash = invoice.payment_hash();
        lock(&self.phoenixd.ledger).outgoing.insert(
            hash,
            OutRecord {
                preimage: None,
                sent_sat: invoice.amount().map_or(0, |a| a.0.div_ceil(1000)),
                fees_msat: 0,
                invoice: bolt11.to_owned(),
                created_ms: now_ms(),
                completed_ms: None,
            },
        );
        hash
    }
}

fn router(phoenixd: Arc<Phoenixd>) -> Router {
    Router::new()
        .route("/createinvoice", post(create_invoice))
        .route("/payments/incoming/{payment_hash}", get(incoming_payment))
        .route("/payinvoice", post(pay_invoice))
        .route(
            "/payments/outgoingbyhash/{payment_hash}",
            get(outgoing_payment),
        )
        .route("/getbalance", get(get_balance))
        .route("/getinfo", get(get_info))
        .fallback(|| async { (StatusCode::NOT_FOUND, "Unknown endpoint (check api doc)") })
        .with_state(phoenixd)
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Access {
    Limited,
    Full,
}

/// Ktor's basic authentication as phoenixd configures it.
fn access(headers: &HeaderMap) -> Option<Access> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (_user, password) = decoded.split_once(':')?;
    match password {
        PASSWORD => Some(Access::Full),
        LIMITED_PASSWORD => Some(Access::Limited),
        _ => None,
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"Ktor Server\", charset=UTF-8",
        )],
        "Invalid authentication (use basic auth with the http password set in phoenix.conf)",
    )
        .into_response()
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, message.to_owned()).into_response()
}

/// Gate + authentication with at least `needed` access.
async fn admit(p: &Phoenixd, headers: &HeaderMap, needed: Access) -> Result<Fault, Response> {
    match p.common.gate().await {
        Gate::Unavailable => Err(super::unavailable()),
        Gate::Serve(fault) => match access(headers) {
            Some(a) if a >= needed => Ok(fault),
            _ => Err(unauthorized()),
        },
    }
}

fn ok(value: serde_json::Value, fault: Fault) -> Response {
    if fault == Fault::MalformedJson {
        return super::malformed(StatusCode::OK);
    }
    super::json(StatusCode::OK, value)
}

/// An optional integer parameter; the error is phoenixd's `400` text.
fn optional_long(form: &HashMap<String, String>, name: &str) -> Result<Option<u64>, String> {
    match form.get(name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            format!("Request parameter {name} couldn't be parsed/converted to integer")
        }),
    }
}

async fn create_invoice(
    State(p): State<Arc<Phoenixd>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let fault = match admit(&p, &headers, Access::Limited).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let amount_sat = match optional_long(&form, "amountSat") {
        Ok(a) => a,
        Err(msg) => return bad_request(&msg),
    };
    let Some(description) = form.get("description") else {
        return bad_request("Must provide either a description or descriptionHash");
    };
    if description.encode_utf16().count() > 128 {
        return bad_request("Request parameter description is too long (max 128 characters)");
    }
    let expiry = match optional_long(&form, "expirySeconds") {
        Ok(e) => e.unwrap_or(3600),
        Err(msg) => return bad_request(&msg),
    };
    let Some(amount_sat) = amount_sat else {
        return bad_request("this fake only issues invoices with an amount");
    };
    let preimage = Preimage::random();
    let hash = preimage.payment_hash();
    let created_ms = now_ms();
    let signed_sat = if fault == Fault::WrongAmount {
        amount_sat + 1
    } else {
        amount_sat
    };
    let bolt11 = p.node.invoice(
        Currency::BitcoinTestnet,
        signed_sat * 1000,
        description,
        &hash,
        created_ms / 1000,
        expiry,
    );
    lock(&p.ledger).invoices.insert(
        hash,
        FakeInvoice {
            preimage,
            description: description.clone(),
            bolt11: bolt11.clone(),
            requested_sat: amount_sat,
            created_ms,
            expiry_secs: expiry,
            completed_ms: None,
        },
    );
    ok(
        json!({ "amountSat": amount_sat, "paymentHash": hash.to_hex(), "serialized": bolt11 }),
        fault,
    )
}

async fn incoming_payment(
    State(p): State<Arc<Phoenixd>>,
    headers: HeaderMap,
    UrlPath(payment_hash): UrlPath<String>,
) -> Response {
    let fault = match admit(&p, &headers, Access::Limited).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let Ok(hash) = payment_hash.parse::<PaymentHash>() else {
        return bad_request("Request parameter paymentHash couldn't be parsed/converted to hex32");
    };
    let ledger = lock(&p.ledger);
    let Some(inv) = ledger.invoices.get(&hash) else {
        return (StatusCode::NOT_FOUND, "Not found").into_response();
    };
    let preimage = if fault == Fault::WrongPreimage && inv.completed_ms.is_some() {
        Preimage::random()
    } else {
        inv.preimage
    };
    let expires_at = inv.created_ms + inv.expiry_secs * 1000;
    let mut value = json!({
        "subType": "lightning",
        "paymentHash": hash.to_hex(),
        "preimage": preimage.to_hex(),
        "description": inv.description,
        "invoice": inv.bolt11,
        "isPaid": inv.completed_ms.is_some(),
        "isExpired": now_ms() > expires_at,
        "requestedSat": inv.requested_sat,
        "receivedSat": if inv.completed_ms.is_some() { inv.requested_sat } else { 0 },
        "fees": 0,
        "expiresAt": expires_at,
        "createdAt": inv.created_ms,
    });
    if let Some(completed) = inv.completed_ms {
        value["completedAt"] = json!(completed);
    }
    ok(value, fault)
}

async fn pay_invoice(
    State(p): State<Arc<Phoenixd>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let fault = match admit(&p, &headers, Access::Full).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let Some(text) = form.get("invoice") else {
        return bad_request("Request parameter invoice is missing");
    };
    let Ok(invoice) = Invoice::parse(text) else {
        return bad_request(
            "Request parameter invoice couldn't be parsed/converted to bolt11invoice",
        );
    };
    let hash = invoice.payment_hash();
    let amount_msat = match (optional_long(&form, "amountSat"), invoice.amount()) {
        (Err(msg), _) => return bad_request(&msg),
        (Ok(Some(sat)), _) => sat * 1000,
        (Ok(None), Some(a)) => a.0,
        (Ok(None), None) => return bad_request("Request parameter amountSat is missing"),
    };
    let failure = |reason: &str| {
        ok(
            json!({ "paymentHash": hash.to_hex(), "reason": reason }),
            fault,
        )
    };
    let mut ledger = lock(&p.ledger);
    if ledger.paid.contains_key(&hash) {
        return failure("this invoice has already been paid");
    }
    let cost_sat = amount_msat.div_ceil(1000) + ROUTE_FEE_SAT;
    if cost_sat > ledger.balance_sat {
        return failure("not enough funds in wallet to afford payment");
    }
    let Some(preimage) = p.remote.preimage(&hash) else {
        ledger.outgoing.insert(
            hash,
            OutRecord {
                preimage: None,
                sent_sat: 0,
                fees_msat: 0,
                invoice: text.clone(),
                created_ms: now_ms(),
                completed_ms: Some(now_ms()),
            },
        );
        return failure("the recipient rejected the payment");
    };
    ledger.balance_sat -= cost_sat;
    ledger.paid.insert(hash, preimage);
    ledger.outgoing.insert(
        hash,
        OutRecord {
            preimage: Some(preimage),
            sent_sat: cost_sat,
            fees_msat: ROUTE_FEE_SAT * 1000,
            invoice: text.clone(),
            created_ms: now_ms(),
            completed_ms: Some(now_ms()),
        },
    );
    let reported_preimage = if fault == Fault::WrongPreimage {
        Preimage::random()
    } else {
        preimage
    };
    let recipient_sat = if fault == Fault::WrongAmount {
        amount_msat / 1000 + 1
    } else {
        amount_msat / 1000
    };
    ok(
        json!({
            "recipientAmountSat": recipient_sat,
            "routingFeeSat": ROUTE_FEE_SAT,
            "paymentId": "7c6f0d2a-9b4e-4c61-8a5d-3f1e2b7c9d10",
            "paymentHash": hash.to_hex(),
            "paymentPreimage": reported_preimage.to_hex(),
        }),
        fault,
    )
}

async fn outgoing_payment(
    State(p): State<Arc<Phoenixd>>,
    headers: HeaderMap,
    UrlPath(payment_hash): UrlPath<String>,
) -> Response {
    let fault = match admit(&p, &headers, Access::Limited).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let Ok(hash) = payment_hash.parse::<PaymentHash>() else {
        return bad_request("Request parameter paymentHash couldn't be parsed/converted to hex32");
    };
    let ledger = lock(&p.ledger);
    let Some(out) = ledger.outgoing.get(&hash) else {
        return (StatusCode::NOT_FOUND, "Not found").into_response();
    };
    let mut body = json!({
        "paymentId": "5d1c0a7e-3b2f-4e8a-9c6d-0f1e2d3c4b5a",
        "paymentHash": hash.to_hex(),
        "isPaid": out.preimage.is_some(),
        "sent": out.sent_sat,
        "fees": out.fees_msat,
        "invoice": out.invoice,
        "createdAt": out.created_ms,
    });
    if let Some(preimage) = out.preimage {
        let reported = if fault == Fault::WrongPreimage {
            Preimage::random()
        } else {
            preimage
        };
        body["preimage"] = json!(reported.to_hex());
    }
    if let Some(t) = out.completed_ms {
        body["completedAt"] = json!(t);
    }
    ok(body, fault)
}

async fn get_balance(State(p): State<Arc<Phoenixd>>, headers: HeaderMap) -> Response {
    let fault = match admit(&p, &headers, Access::Limited).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let balance = lock(&p.ledger).balance_sat;
    ok(
        json!({ "balanceSat": balance, "feeCreditSat": FEE_CREDIT_SAT }),
        fault,
    )
}

async fn get_info(State(p): State<Arc<Phoenixd>>, headers: HeaderMap) -> Response {
    let fault = match admit(&p, &headers, Access::Limited).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let balance = lock(&p.ledger).balance_sat;
    ok(
        json!({
            "nodeId": p.node.id_hex(),
            "channels": [{
                "state": "Normal",
                "channelId": hex::encode([5u8; 32]),
                "balanceSat": balance,
                "inboundLiquiditySat": 100_000,
                "capacitySat": balance + 100_000,
                "fundingTxId": hex::encode([6u8; 32]),
            }],
            "chain": "testnet",
            "blockHeight": 2_900_000,
            "version": "0.6.2",
        }),
        fault,
    )
}
