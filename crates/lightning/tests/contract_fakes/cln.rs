//! CONTRACT FAKE of Core Lightning's REST plugin `clnrest`, from CLN's documentation (clnrest,
//! `lightning-invoice(7)`, `lightning-listinvoices(7)`, `lightning-pay(7)`,
//! `lightning-listfunds(7)`, `lightning-getinfo(7)` and their JSON schemas) and the plugin's
//! source (`plugins/rest-plugin`) where the documentation is silent.
//!
//! Reproduced:
//!
//! - `POST /v1/<method>` with a JSON object of parameters; success is `201 Created` with the
//!   command's result; errors are `{"code": <JSON-RPC code>, "message": "...", "data": ...}`:
//!   `403` + code 1501 `Not authorized: Missing rune` without a `Rune` header, `401` + code 1501
//!   `Not authorized: Not derived from master` for a foreign rune, `404` + code -32601 for an
//!   unknown command, `500` for a command's failure (its own code: 900 duplicate label, 207
//!   invoice expired, 215 insufficient funds, 206 route too expensive, 203 permanent failure at
//!   the destination).
//! - HTTPS with clnrest's certificates: a CA (`ca.pem`) and a server certificate it signed
//!   (`server.pem`); or plain HTTP (`clnrest-protocol=http`).
//! - Amounts as integer msat, hashes and preimages as hex, invoice statuses `unpaid` → `paid`
//!   (a test "pays" with [`ClnFake::settle`]) or `expired`.
//! - `pay` of an invoice this node already paid does not pay again: it answers the earlier
//!   successful result (`plugins/pay.c`, `payment_listsendpays_previous`).
//! - `listpays` (`lightning-listpays(7)`) filtered by `payment_hash`: `{"pays": [...]}`, one
//!   entry per payment with `status` `pending`, `failed` or `complete` (`preimage`,
//!   `amount_msat`, `amount_sent_msat` when complete). A payment the destination rejected
//!   (203) is listed as failed; one refused before any HTLC left (expired, funds, fee budget)
//!   is not listed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use lightning_invoice::Currency;
use serde_json::{Value, json};
use turnpike_l402::bolt11::Invoice;
use turnpike_lightning::cln::ClnConfig;
use turnpike_lightning::{PaymentHash, Preimage, SecretSource};

use super::{Common, Fault, Gate, Node, Remote, TlsIdentity, lock, now};

/// The fake's rune.
pub const RUNE: &str = "zFMd1fjhrAYxUeFA54TjloZqOt8JrA_i_nYwIgXkag49MA==";

/// The methods of [`invoice_rune`].
pub const INVOICE_METHODS: &[&str] = &["invoice", "listinvoices"];

/// A rune restricted to `invoice` and `listinvoices`, which the fake also accepts (for those
/// methods only; it checks no hash).
pub fn invoice_rune() -> String {
    turnpike_lightning::spend_rights::test_credentials::cln_rune(
        "=1&method=invoice|method=listinvoices",
    )
}

/// Routing fee the fake network charges per payment, msat.
pub const ROUTE_FEE_MSAT: u64 = 1_000;

/// Spendable balance (channels in `CHANNELD_NORMAL`) the fake starts with, msat.
pub const START_BALANCE_MSAT: u64 = 1_000_000_000;

/// Balance of a closed channel the fake also lists (not spendable), msat.
pub const CLOSED_CHANNEL_MSAT: u64 = 42_000;

struct FakeInvoice {
    label: String,
    description: String,
    preimage: Preimage,
    amount_msat: u64,
    bolt11: String,
    expires_at: u64,
    created_index: u64,
    paid: Option<(u64, u64, u64)>, // (paid_at, pay_index, amount_received_msat)
}

#[derive(Clone)]
struct OutPayment {
    preimage: Preimage,
    destination: String,
    amount_msat: u64,
    amount_sent_msat: u64,
    created_at: f64,
}

#[derive(Default)]
struct Ledger {
    invoices: HashMap<PaymentHash, FakeInvoice>,
    labels: HashMap<String, PaymentHash>,
    payments: HashMap<PaymentHash, OutPayment>,
    /// Payments that did not complete: `(bolt11, amount_msat, status)`.
    unfinished: HashMap<PaymentHash, (String, u64, &'static str)>,
    balance_msat: u64,
    next_index: u64,
    pays: usize,
}

/// The fake CLN node.
pub struct Cln {
    common: Common,
    node: Node,
    /// The fake network's payees.
    pub remote: Remote,
    ledger: Mutex<Ledger>,
}

/// A running fake clnrest.
pub struct ClnFake {
    /// Its address.
    pub addr: SocketAddr,
    /// Its state.
    pub cln: Arc<Cln>,
    /// `(ca.pem, server.pem)` when serving HTTPS.
    pub certs: Option<(TlsIdentity, TlsIdentity)>,
    /// Completed TLS handshakes (HTTPS only).
    pub handshakes: Arc<AtomicUsize>,
}

impl ClnFake {
    /// Starts a fake clnrest over HTTPS with clnrest-style certificates.
    pub async fn start_https() -> ClnFake {
        turnpike_lightning::ensure_crypto_provider();
        let cln = new_cln();
        let (ca, server) = super::clnrest_style_certificates();
        let (addr, handshakes) = super::serve_https(router(cln.clone()), &server).await;
        ClnFake {
            addr,
            cln,
            certs: Some((ca, server)),
            handshakes,
        }
    }

    /// Starts a fake clnrest over plain HTTP.
    pub async fn start_http() -> ClnFake {
        let cln = new_cln();
        let addr = super::serve_http(router(cln.clone())).await;
        ClnFake {
            addr,
            cln,
            certs: None,
            handshakes: Arc::default(),
        }
    }

    /// The base URL.
    pub fn url(&self) -> String {
        let scheme = if self.certs.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.addr.port())
    }

    /// A backend configuration for this fake: the right rune, and (HTTPS) `server.pem` written
    /// to `dir` and pinned.
    pub fn config(&self, dir: &Path) -> ClnConfig {
        ClnConfig {
            url: self.url(),
            rune: SecretSource::Inline(RUNE.to_owned()),
            tls_cert_path: self
                .certs
                .as_ref()
                .map(|(_, server)| server.write_pem(dir, "server.pem")),
            limits: turnpike_lightning::rules::CallLimits {
                timeout_secs: 5,
                retries: 2,
                payment_timeout_secs: 10,
            },
        }
    }

    /// Sets how the fake misbehaves.
    pub fn set_fault(&self, fault: Fault) {
        self.cln.common.set_fault(fault);
    }

    /// API requests received so far.
    pub fn requests(&self) -> usize {
        self.cln.common.requests()
    }

    /// Marks an invoice of this node paid, as if a payer had paid it.
    pub fn settle(&self, hash: &PaymentHash) {
        let mut ledger = lock(&self.cln.ledger);
        ledger.next_index += 1;
        let index = ledger.next_index;
        let inv = ledger
            .invoices
            .get_mut(hash)
            .expect("an invoice of this node");
        inv.paid = Some((now(), index, inv.amount_msat));
    }

    /// Makes an invoice of this node expire now.
    pub fn expire(&self, hash: &PaymentHash) {
        let mut ledger = lock(&self.cln.ledger);
        let inv = ledger
            .invoices
            .get_mut(hash)
            .expect("an invoice of this node");
        inv.expires_at = now() - 1;
    }

    /// A remote invoice (regtest) the fake can pay.
    pub fn remote_invoice(&self, amount_msat: u64) -> String {
        self.cln.remote.invoice(Currency::Regtest, amount_msat, 600)
    }

    /// Spendable balance, msat.
    pub fn balance_msat(&self) -> u64 {
        lock(&self.cln.ledger).balance_msat
    }

    /// Sets the spendable balance, msat.
    pub fn set_balance_msat(&self, msat: u64) {
        lock(&self.cln.ledger).balance_msat = msat;
    }

    /// Payments actually sent (a replayed `pay` does not count).
    pub fn payments_sent(&self) -> usize {
        lock(&self.cln.ledger).pays
    }

    /// The node id, hex.
    pub fn node_id(&self) -> String {
        self.cln.node.id_hex()
    }

    /// Records a payment of `bolt11` as sent and still `pending`.
    pub fn hold_pending(&self, bolt11: &str) -> PaymentHash {
        let invoice = Invoice::parse(bolt11).expect("a valid invoice");
        let hash = invoice.payment_hash();
        let amount = invoice.amount().map_or(0, |a| a.0);
        lock(&self.cln.ledger)
            .unfinished
            .insert(hash, (bolt11.to_owned(), amount, "pending"));
        hash
    }
}

fn new_cln() -> Arc<Cln> {
    Arc::new(Cln {
        common: Common::default(),
        node: Node::new(),
        remote: Remote::default(),
        ledger: Mutex::new(Ledger {
            balance_msat: START_BALANCE_MSAT,
            ..Ledger::default()
        }),
    })
}

fn router(cln: Arc<Cln>) -> Router {
    Router::new()
        .route("/v1/{method}", post(call_rpc_method))
        .with_state(cln)
}

/// clnrest's error body: cln-rpc's `RpcError` serialised.
fn rpc_error(status: StatusCode, code: i64, message: &str) -> Response {
    super::json(
        status,
        json!({ "code": code, "message": message, "data": null }),
    )
}

fn failed(code: i64, message: &str) -> Response {
    rpc_error(StatusCode::INTERNAL_SERVER_ERROR, code, message)
}

fn ok(value: Value, fault: Fault) -> Response {
    if fault == Fault::MalformedJson {
        return super::malformed(StatusCode::CREATED);
    }
    super::json(StatusCode::CREATED, value)
}

/// An `msat` parameter: a number, or a string with an optional `msat` suffix. The error is
/// CLN's parameter error message.
fn msat_param(v: Option<&Value>, name: &str) -> Result<Option<u64>, String> {
    let invalid = || format!("{name}: should be a millisatoshi amount: invalid token");
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(invalid),
        Some(Value::String(s)) => s
            .trim_end_matches("msat")
            .parse()
            .map(Some)
            .map_err(|_| invalid()),
        Some(_) => Err(invalid()),
    }
}

async fn call_rpc_method(
    State(cln): State<Arc<Cln>>,
    UrlPath(method): UrlPath<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let fault = match cln.common.gate().await {
        Gate::Unavailable => return super::unavailable(),
        Gate::Serve(f) => f,
    };
    if let Some(ct) = headers.get("content-type").and_then(|v| v.to_str().ok())
        && !ct.contains("application/json")
    {
        return rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            -32602,
            &format!("Unsupported content-type header: {ct}"),
        );
    }
    let params: serde_json::Map<String, Value> = if body.is_empty() {
        serde_json::Map::new()
    } else {
        match serde_json::from_str(&body) {
            Ok(p) => p,
            Err(e) => {
                return failed(
                    -32700,
                    &format!("Could not parse `{body}` JSON request: {e}"),
                );
            }
        }
    };
    // clnrest's verify_rune: no header is 403, a rune checkrune refuses is 401.
    match headers.get("rune").and_then(|v| v.to_str().ok()) {
        None => return rpc_error(StatusCode::FORBIDDEN, 1501, "Not authorized: Missing rune"),
        Some(r) if r == invoice_rune() && !INVOICE_METHODS.contains(&method.as_str()) => {
            return rpc_error(
                StatusCode::UNAUTHORIZED,
                1502,
                "Not permitted: method is not equal to invoice",
            );
        }
        Some(r) if r != RUNE && r != invoice_rune() => {
            return rpc_error(
                StatusCode::UNAUTHORIZED,
                1501,
                "Not authorized: Not derived from master",
            );
        }
        Some(_) => {}
    }
    match method.as_str() {
        "invoice" => invoice(&cln, &params, fault),
        "listinvoices" => listinvoices(&cln, &params, fault),
        "pay" => pay(&cln, &params, fault),
        "listpays" => listpays(&cln, &params, fault),
        "listfunds" => listfunds(&cln, fault),
        "getinfo" => getinfo(&cln, fault),
        other => rpc_error(
            StatusCode::NOT_FOUND,
            -32601,
            &format!("Unknown command '{other}'"),
        ),
    }
}

fn invoice(cln: &Cln, params: &serde_json::Map<String, Value>, fault: Fault) -> Response {
    let amount = match msat_param(params.get("amount_msat"), "amount_msat") {
        Ok(Some(a)) => a,
        Ok(None) => return failed(-32602, "missing required parameter: amount_msat"),
        Err(msg) => return failed(-32602, &msg),
    };
    let label = match params.get("label") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return failed(-32602, "missing required parameter: label"),
    };
    let Some(description) = params.get("description").and_then(Value::as_str) else {
        return failed(-32602, "missing required parameter: description");
    };
    let expiry = match params.get("expiry") {
        None => 604_800,
        Some(v) => match v.as_u64() {
            Some(e) => e,
            None => return failed(-32602, "expiry: should be an unsigned 64 bit integer"),
        },
    };
    let mut ledger = lock(&cln.ledger);
    if ledger.labels.contains_key(&label) {
        return failed(900, &format!("Duplicate label '{label}'"));
    }
    let preimage = Preimage::random();
    let hash = preimage.payment_hash();
    let created = now();
    let signed_amount = if fault == Fault::WrongAmount {
        amount + 1_000
    } else {
        amount
    };
    let bolt11 = cln.node.invoice(
        Currency::Regtest,
        signed_amount,
        description,
        &hash,
        created,
        expiry,
    );
    ledger.next_index += 1;
    let created_index = ledger.next_index;
    ledger.labels.insert(label.clone(), hash);
    ledger.invoices.insert(
        hash,
        FakeInvoice {
            label,
            description: description.to_owned(),
            preimage,
            amount_msat: amount,
            bolt11: bolt11.clone(),
            expires_at: created + expiry,
            created_index,
            paid: None,
        },
    );
    ok(
        json!({
            "payment_hash": hash.to_hex(),
            "expires_at": created + expiry,
            "bolt11": bolt11,
            "payment_secret": hex::encode([7u8; 32]),
            "created_index": created_index,
        }),
        fault,
    )
}

fn listinvoices(cln: &Cln, params: &serde_json::Map<String, Value>, fault: Fault) -> Response {
    let ledger = lock(&cln.ledger);
    let wanted = match params.get("payment_hash").and_then(Value::as_str) {
        Some(h) => match h.parse::<PaymentHash>() {
            Ok(h) => Some(h),
            Err(_) => return failed(-32602, "payment_hash: should be a 32 byte hex value"),
        },
        None => None,
    };
    let now = now();
    let invoices: Vec<Value> = ledger
        .invoices
        .iter()
        .filter(|(hash, _)| wanted.is_none_or(|w| w == **hash))
        .map(|(hash, inv)| {
            let mut v = json!({
                "label": inv.label,
                "bolt11": inv.bolt11,
                "payment_hash": hash.to_hex(),
                "amount_msat": inv.amount_msat,
                "description": inv.description,
                "expires_at": inv.expires_at,
                "created_index": inv.created_index,
            });
            match inv.paid {
                Some((paid_at, pay_index, received)) => {
                    let preimage = if fault == Fault::WrongPreimage {
                        Preimage::random()
                    } else {
                        inv.preimage
                    };
                    v["status"] = json!("paid");
                    v["pay_index"] = json!(pay_index);
                    v["amount_received_msat"] = json!(received);
                    v["paid_at"] = json!(paid_at);
                    v["payment_preimage"] = json!(preimage.to_hex());
                    v["updated_index"] = json!(pay_index);
                }
                None if now >= inv.expires_at => v["status"] = json!("expired"),
                None => v["status"] = json!("unpaid"),
            }
            v
        })
        .collect();
    ok(json!({ "invoices": invoices }), fault)
}

fn pay_result(hash: &PaymentHash, p: &OutPayment) -> Value {
    json!({
        "destination": p.destination,
        "payment_hash": hash.to_hex(),
        "created_at": p.created_at,
        "parts": 1,
        "amount_msat": p.amount_msat,
        "amount_sent_msat": p.amount_sent_msat,
        "payment_preimage": p.preimage.to_hex(),
        "status": "complete",
    })
}

fn pay(cln: &Cln, params: &serde_json::Map<String, Value>, fault: Fault) -> Response {
    let Some(bolt11) = params
        .get("bolt11")
        .or_else(|| params.get("invstring"))
        .and_then(Value::as_str)
    else {
        return failed(-32602, "missing required parameter: bolt11");
    };
    let invoice = match Invoice::parse(bolt11) {
        Ok(i) => i,
        Err(e) => return failed(-32602, &format!("bolt11: Invalid bolt11: {e}")),
    };
    let maxfee = match msat_param(params.get("maxfee"), "maxfee") {
        Ok(m) => m,
        Err(msg) => return failed(-32602, &msg),
    };
    let hash = invoice.payment_hash();
    let amount = invoice.amount().map_or(0, |a| a.0);
    let mut ledger = lock(&cln.ledger);
    // pay.c: a previous complete payment of this hash is answered again, not repeated.
    if let Some(previous) = ledger.payments.get(&hash) {
        return ok(pay_result(&hash, previous), fault);
    }
    if invoice.is_expired(now()) {
        return failed(207, "Invoice expired");
    }
    if amount > ledger.balance_msat {
        return failed(
            215,
            &format!(
                "Insufficient funds to perform the payment: spendable={}msat < payment={amount}msat",
                ledger.balance_msat
            ),
        );
    }
    if let Some(maxfee) = maxfee
        && ROUTE_FEE_MSAT > maxfee
    {
        return failed(
            206,
            &format!(
                "Fee exceeds our fee budget: {ROUTE_FEE_MSAT}msat > {maxfee}msat, discarding route"
            ),
        );
    }
    let Some(preimage) = cln.remote.preimage(&hash) else {
        ledger
            .unfinished
            .insert(hash, (bolt11.to_owned(), amount, "failed"));
        return failed(
            203,
            "failed: WIRE_INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS (reply from remote)",
        );
    };
    let payment = OutPayment {
        preimage,
        destination: invoice.payee_hex(),
        amount_msat: amount,
        amount_sent_msat: amount + ROUTE_FEE_MSAT,
        created_at: super::now_ms() as f64 / 1000.0,
    };
    ledger.balance_msat -= amount + ROUTE_FEE_MSAT;
    ledger.pays += 1;
    ledger.payments.insert(hash, payment.clone());
    let mut result = pay_result(&hash, &payment);
    match fault {
        Fault::WrongPreimage => result["payment_preimage"] = json!(Preimage::random().to_hex()),
        Fault::WrongAmount => result["amount_msat"] = json!(amount + 1_000),
        _ => {}
    }
    ok(result, fault)
}

fn listpays(cln: &Cln, params: &serde_json::Map<String, Value>, fault: Fault) -> Response {
    let wanted = match params.get("payment_hash").and_then(Value::as_str) {
        Some(text) => match text.parse::<PaymentHash>() {
            Ok(h) => Some(h),
            Err(_) => return failed(-32602, "payment_hash: should be a 32 byte hex value"),
        },
        None => None,
    };
    let ledger = lock(&cln.ledger);
    let mut pays = Vec::new();
    for (hash, p) in &ledger.payments {
        if wanted.is_some_and(|w| w != *hash) {
            continue;
        }
        let preimage = if fault == Fault::WrongPreimage {
            Preimage::random()
        } else {
            p.preimage
        };
        pays.push(json!({
            "payment_hash": hash.to_hex(),
            "status": "complete",
            "destination": p.destination,
            "created_at": p.created_at as u64,
            "completed_at": p.created_at as u64,
            "number_of_parts": 1,
            "preimage": preimage.to_hex(),
            "amount_msat": p.amount_msat,
            "amount_sent_msat": p.amount_sent_msat,
        }));
    }
    for (hash, (bolt11, amount, status)) in &ledger.unfinished {
        if wanted.is_some_and(|w| w != *hash) {
            continue;
        }
        pays.push(json!({
            "payment_hash": hash.to_hex(),
            "status": status,
            "bolt11": bolt11,
            "created_at": now(),
            "amount_msat": amount,
        }));
    }
    ok(json!({ "pays": pays }), fault)
}

fn listfunds(cln: &Cln, fault: Fault) -> Response {
    let balance = lock(&cln.ledger).balance_msat;
    let channel = |state: &str, ours: u64, peer: &str| {
        json!({
            "peer_id": peer,
            "connected": state == "CHANNELD_NORMAL",
            "state": state,
            "channel_id": hex::encode(rand::random::<[u8; 32]>()),
            "short_channel_id": "103x1x0",
            "our_amount_msat": ours,
            "amount_msat": ours + 500_000_000,
            "funding_txid": hex::encode(rand::random::<[u8; 32]>()),
            "funding_output": 0,
        })
    };
    ok(
        json!({
            "outputs": [{
                "txid": hex::encode([3u8; 32]),
                "output": 1,
                "amount_msat": 2_000_000_000u64,
                "scriptpubkey": "0014".to_owned() + &hex::encode([4u8; 20]),
                "address": "bcrt1qqsqsqsqsqsqsqsqsqsqsqsqsqsqsqsqsqs7s9lz",
                "status": "confirmed",
                "blockheight": 101,
                "reserved": false,
            }],
            "channels": [
                channel("CHANNELD_NORMAL", balance, &cln.remote.id_hex()),
                channel("ONCHAIN", CLOSED_CHANNEL_MSAT, &cln.remote.id_hex()),
            ],
        }),
        fault,
    )
}

fn getinfo(cln: &Cln, fault: Fault) -> Response {
    ok(
        json!({
            "id": cln.node.id_hex(),
            "alias": "turnpike-fake-cln",
            "color": "02a1b2",
            "num_peers": 1,
            "num_pending_channels": 0,
            "num_active_channels": 1,
            "num_inactive_channels": 0,
            "address": [],
            "binding": [{ "type": "ipv4", "address": "127.0.0.1", "port": 9735 }],
            "version": "v25.09",
            "blockheight": 850000,
            "network": "regtest",
            "fees_collected_msat": 0,
            "lightning-dir": "/home/cln/.lightning/regtest",
            "our_features": { "init": "08a0000a8a5961", "node": "88a0000a8a5961", "channel": "", "invoice": "02000002024100" },
        }),
        fault,
    )
}
