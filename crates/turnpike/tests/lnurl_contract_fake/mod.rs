//! # CONTRACT FAKE: an LNURL-pay server (Lightning addresses)
//!
//! LNbits' `lnurlp` extension cannot be installed offline, so this stands in for the LNURL-pay
//! service behind a Lightning address, built from the specifications:
//!
//! - **LUD-16**: `GET /.well-known/lnurlp/<user>` answers the LUD-06 `payRequest` of `user`
//!   (its metadata holds `text/plain` and the `text/identifier` LUD-16 asks for).
//! - **LUD-06**: `GET <callback>?amount=<msat>` answers `{"pr", "routes": []}` with a real BOLT11
//!   invoice whose description hash is `sha256(metadata)`; an amount outside
//!   `minSendable..=maxSendable`, or not a whole satoshi, is `{"status":"ERROR","reason"}`.
//! - **LUD-21**: the callback's answer carries `verify`; `GET verify` answers
//!   `{"status":"OK","settled","preimage","pr"}`, or `{"status":"ERROR","reason":"Not found"}`.
//!
//! The invoices are real: each user's wallet is a real LNbits wallet (its invoice key), which
//! creates them with the description hash and reports them paid. A user can be told to lie
//! ([`Mode`]): an invoice for another amount, or with another description hash.
#![allow(dead_code)] // not every test binary uses all of it

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// How a user's callback behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As LUD-06 says.
    Honest,
    /// An invoice for one satoshi more than asked.
    WrongAmount,
    /// An invoice whose description hash is not `sha256(metadata)`.
    WrongHash,
}

struct User {
    invoice_key: String,
    mode: Mode,
}

#[derive(Clone)]
struct Fake {
    addr: SocketAddr,
    lnbits: String,
    http: reqwest::Client,
    users: Arc<Mutex<HashMap<String, User>>>,
}

/// A running LNURL-pay contract fake on `127.0.0.1`.
pub struct LnurlFake {
    fake: Fake,
}

const MIN_SENDABLE: u64 = 1_000;
const MAX_SENDABLE: u64 = 1_000_000_000;

impl LnurlFake {
    /// Starts the fake; its users' wallets are on the LNbits at `lnbits_url`.
    pub async fn start(lnbits_url: &str) -> LnurlFake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Fake {
            addr: listener.local_addr().unwrap(),
            lnbits: lnbits_url.to_owned(),
            http: reqwest::Client::new(),
            users: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/.well-known/lnurlp/{user}", get(pay_request))
            .route("/lnurlp/{user}/callback", get(callback))
            .route("/lnurlp/{user}/verify/{hash}", get(verify))
            .with_state(fake.clone());
        tokio::spawn(axum::serve(listener, app).into_future());
        LnurlFake { fake }
    }

    /// Adds `user`, paid into the LNbits wallet of `invoice_key`; its Lightning address.
    pub fn add_user(&self, user: &str, invoice_key: &str) -> String {
        self.fake.users.lock().unwrap().insert(
            user.to_owned(),
            User {
                invoice_key: invoice_key.to_owned(),
                mode: Mode::Honest,
            },
        );
        format!("{user}@{}", self.fake.addr)
    }

    /// Makes `user`'s callback behave as `mode` from now on.
    pub fn set_mode(&self, user: &str, mode: Mode) {
        self.fake.users.lock().unwrap().get_mut(user).unwrap().mode = mode;
    }

    /// The LUD-21 verify URL of an invoice of `user`.
    pub fn verify_url(&self, user: &str, payment_hash: &str) -> String {
        self.fake.verify_url(user, payment_hash)
    }
}

impl Fake {
    fn metadata(&self, user: &str) -> String {
        json!([
            ["text/plain", format!("Pay {user}")],
            ["text/identifier", format!("{user}@{}", self.addr)]
        ])
        .to_string()
    }

    fn verify_url(&self, user: &str, payment_hash: &str) -> String {
        format!("http://{}/lnurlp/{user}/verify/{payment_hash}", self.addr)
    }

    fn user(&self, user: &str) -> Option<(String, Mode)> {
        let users = self.users.lock().unwrap();
        users.get(user).map(|u| (u.invoice_key.clone(), u.mode))
    }
}

fn error(reason: &str) -> Json<Value> {
    Json(json!({ "status": "ERROR", "reason": reason }))
}

async fn pay_request(State(f): State<Fake>, Path(user): Path<String>) -> Json<Value> {
    if f.user(&user).is_none() {
        return error("Unknown user.");
    }
    Json(json!({
        "tag": "payRequest",
        "callback": format!("http://{}/lnurlp/{user}/callback", f.addr),
        "minSendable": MIN_SENDABLE,
        "maxSendable": MAX_SENDABLE,
        "metadata": f.metadata(&user),
        "commentAllowed": 0,
    }))
}

async fn callback(
    State(f): State<Fake>,
    Path(user): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let Some((key, mode)) = f.user(&user) else {
        return error("Unknown user.");
    };
    let Some(msat) = q.get("amount").and_then(|a| a.parse::<u64>().ok()) else {
        return error("amount is required, in millisatoshis.");
    };
    if !(MIN_SENDABLE..=MAX_SENDABLE).contains(&msat) || msat % 1000 != 0 {
        return error("Amount out of range (whole satoshis from 1 sat).");
    }
    let sats = match mode {
        Mode::WrongAmount => msat / 1000 + 1,
        _ => msat / 1000,
    };
    let described = match mode {
        Mode::WrongHash => "something else".to_owned(),
        _ => f.metadata(&user),
    };
    let hash = hex::encode(Sha256::digest(described.as_bytes()));
    let created: Value = f
        .http
        .post(format!("{}/api/v1/payments", f.lnbits))
        .header("X-Api-Key", key)
        .json(&json!({ "out": false, "amount": sats, "memo": "lnurl", "description_hash": hash }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pr = created["bolt11"]
        .as_str()
        .or(created["payment_request"].as_str())
        .unwrap_or_default();
    let payment_hash = created["payment_hash"].as_str().unwrap_or_default();
    Json(json!({
        "pr": pr,
        "routes": [],
        "verify": f.verify_url(&user, payment_hash),
    }))
}

async fn verify(State(f): State<Fake>, Path((user, hash)): Path<(String, String)>) -> Json<Value> {
    let Some((key, _)) = f.user(&user) else {
        return error("Not found");
    };
    let resp = f
        .http
        .get(format!("{}/api/v1/payments/{hash}", f.lnbits))
        .header("X-Api-Key", key)
        .send()
        .await
        .unwrap();
    if !resp.status().is_success() {
        return error("Not found");
    }
    let status: Value = resp.json().await.unwrap();
    let settled = status["paid"].as_bool().unwrap_or(false);
    let preimage = status["preimage"]
        .as_str()
        .filter(|p| settled && p.len() == 64);
    Json(json!({
        "status": "OK",
        "settled": settled,
        "preimage": preimage,
        "pr": status["details"]["bolt11"],
    }))
}
