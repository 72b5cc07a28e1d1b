//! A NIP-47 **wallet service** for tests, on an in-process nostr relay (shared by the
//! lightning crate's `nwc_relay.rs` and the turnpike crate's hub tests, included with
//! `#[path]`).
//!
//! The relay is `nostr-relay-builder`'s [`LocalRelay`], in process, bound to 127.0.0.1, with a
//! write policy that records every event it is sent (what the relay sees). The **wallet
//! service** is written here, over its own relay connection: it subscribes to kind-23194 requests
//! for its key, decrypts them with the scheme the request names (NIP-44 when tagged
//! `["encryption", "nip44_v2"]`, NIP-04 otherwise), and answers kind-23195 responses, encrypted
//! the same way, tagged `e` (the request) and `p` (the client). Behind it is a small wallet model
//! on a shared fake "network": wallets issue real signed regtest BOLT11 invoices, and a wallet
//! pays another's invoice by moving the balance and revealing the preimage.
//!
//! Each wallet can be told to misbehave ([`Knobs`]): stay silent, answer a wrong preimage or an
//! invoice for another amount, send decoy responses tagged for other requests, answer a given
//! error code, refuse methods (`RESTRICTED`), or hold one answer back.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bitcoin::hashes::{Hash as _, sha256};
use bitcoin::secp256k1::Secp256k1;
use lightning_invoice::{Bolt11Invoice, Currency, InvoiceBuilder, PaymentSecret};
use nostr::nips::{nip04, nip44};
use nostr::util::BoxedFuture;
use nostr::{Event, EventBuilder, EventId, Filter, Keys, Kind, Tag, TagKind};
use nostr_relay_builder::builder::{PolicyResult, RateLimit, WritePolicy};
use nostr_relay_builder::{LocalRelay, RelayBuilder};
use nostr_relay_pool::{RelayOptions, RelayPool, RelayPoolNotification, SubscribeOptions};
use serde_json::{Value, json};
use turnpike_lightning::SecretSource;
use turnpike_lightning::nwc::{NwcBackend, NwcConfig};

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A relay write policy that accepts everything and keeps a copy: what the relay received.
#[derive(Debug, Default, Clone)]
pub struct Recorder(Arc<Mutex<Vec<Event>>>);

impl WritePolicy for Recorder {
    fn admit_event<'a>(
        &'a self,
        event: &'a Event,
        _addr: &'a SocketAddr,
    ) -> BoxedFuture<'a, PolicyResult> {
        lock(&self.0).push(event.clone());
        Box::pin(async { PolicyResult::Accept })
    }
}

impl Recorder {
    pub fn of_kind(&self, kind: Kind) -> Vec<Event> {
        lock(&self.0)
            .iter()
            .filter(|e| e.kind == kind)
            .cloned()
            .collect()
    }
}

/// A relay on 127.0.0.1 and its recorder.
pub async fn relay() -> (LocalRelay, String, Recorder) {
    let recorder = Recorder::default();
    let builder = RelayBuilder::default()
        .addr("127.0.0.1".parse().unwrap())
        .rate_limit(RateLimit {
            max_reqs: 500,
            notes_per_minute: 100_000,
        })
        .write_policy(recorder.clone());
    let relay = LocalRelay::new(builder);
    relay.run().await.unwrap();
    let url = relay.url().await.to_string();
    (relay, url, recorder)
}

/// An invoice on the fake network.
pub struct NetInvoice {
    pub payee: usize,
    pub preimage: [u8; 32],
    pub amount: u64,
    pub bolt11: String,
    pub description: String,
    pub created_at: u64,
    pub expires_at: u64,
    pub settled_at: Option<u64>,
}

/// An outgoing payment: `(state, amount msat, preimage)`.
pub type Sent = (&'static str, u64, Option<[u8; 32]>);

/// The fake Lightning network the test wallets share: invoices by payment hash, balances by
/// wallet.
#[derive(Default)]
pub struct Network {
    pub invoices: Mutex<HashMap<[u8; 32], NetInvoice>>,
    pub balances: Mutex<HashMap<usize, u64>>,
    /// Outgoing payments by (payer wallet, payment hash): `(state, amount msat, preimage)`.
    pub outgoing: Mutex<HashMap<(usize, [u8; 32]), Sent>>,
}

impl Network {
    pub fn balance(&self, wallet: usize) -> u64 {
        lock(&self.balances).get(&wallet).copied().unwrap_or(0)
    }

    pub fn set_balance(&self, wallet: usize, msat: u64) {
        lock(&self.balances).insert(wallet, msat);
    }
}

/// How a test wallet service behaves.
#[derive(Debug, Clone, Default)]
pub struct Knobs {
    /// Offers NIP-44 in its info event (and accepts NIP-44 requests).
    pub nip44: bool,
    /// Never answers.
    pub silent: bool,
    /// Reports preimages that do not hash to the payment hash.
    pub wrong_preimage: bool,
    /// Makes invoices for 1 sat more than asked.
    pub wrong_amount: bool,
    /// Before each answer, sends a response tagged for another request id, with a bogus result.
    pub decoys: bool,
    /// Answers every request with this error code and message.
    pub error: Option<(&'static str, &'static str)>,
    /// Methods this connection may not use (`RESTRICTED`).
    pub restricted: HashSet<&'static str>,
    /// Holds back the answer to `make_invoice` for this amount (msat) for this long.
    pub delay: Option<(u64, Duration)>,
}

/// A wallet service on the relay.
pub struct Wallet {
    pub id: usize,
    pub keys: Keys,
    pub client: Keys,
    pub node: bitcoin::secp256k1::SecretKey,
    pub knobs: Mutex<Knobs>,
    pub network: Arc<Network>,
    pub pool: RelayPool,
    /// Decrypted requests, in arrival order.
    pub requests: Mutex<Vec<String>>,
    /// Answered request ids with a label, in answer order.
    pub answers: Mutex<Vec<(EventId, String)>>,
}

impl Wallet {
    pub async fn start(relay: &str, network: Arc<Network>, id: usize, knobs: Knobs) -> Arc<Wallet> {
        let pool = RelayPool::new();
        pool.add_relay(relay, RelayOptions::default())
            .await
            .unwrap();
        let connected = pool.try_connect(Duration::from_secs(5)).await;
        assert!(connected.failed.is_empty(), "{:?}", connected.failed);
        let wallet = Arc::new(Wallet {
            id,
            keys: Keys::generate(),
            client: Keys::generate(),
            node: bitcoin::secp256k1::SecretKey::from_slice(&rand::random::<[u8; 32]>()).unwrap(),
            knobs: Mutex::new(knobs.clone()),
            network,
            pool: pool.clone(),
            requests: Mutex::new(Vec::new()),
            answers: Mutex::new(Vec::new()),
        });
        let mut notifications = pool.notifications();
        let filter = Filter::new()
            .kind(Kind::WalletConnectRequest)
            .pubkey(wallet.keys.public_key());
        pool.subscribe(filter, SubscribeOptions::default())
            .await
            .unwrap();
        let mut info = EventBuilder::new(
            Kind::WalletConnectInfo,
            "pay_invoice make_invoice lookup_invoice get_balance get_info",
        );
        if knobs.nip44 {
            info = info.tag(Tag::custom(
                TagKind::custom("encryption"),
                ["nip44_v2 nip04"],
            ));
        }
        // Sent after the REQ on the same connection: once it is OK'd, the relay has the
        // subscription too.
        let info = info.sign_with_keys(&wallet.keys).unwrap();
        let sent = pool.send_event(&info).await.unwrap();
        assert!(!sent.success.is_empty(), "{:?}", sent.failed);
        let serving = wallet.clone();
        tokio::spawn(async move {
            while let Ok(notification) = notifications.recv().await {
                if let RelayPoolNotification::Event { event, .. } = notification
                    && event.kind == Kind::WalletConnectRequest
                {
                    tokio::spawn(serving.clone().handle(*event));
                }
            }
        });
        wallet
    }

    pub fn uri(&self, relay: &str) -> String {
        format!(
            "nostr+walletconnect://{}?relay={relay}&secret={}&lud16=test%40example.com",
            self.keys.public_key().to_hex(),
            self.client.secret_key().to_secret_hex()
        )
    }

    /// A backend for this wallet's connection, with the given call and payment timeouts.
    pub fn backend(&self, relay: &str, timeout: Duration) -> NwcBackend {
        let config = NwcConfig {
            uri: SecretSource::Inline(self.uri(relay)),
            timeout_secs: 30,
            payment_timeout_secs: 60,
        };
        NwcBackend::new(&config)
            .unwrap()
            .with_timeouts(timeout, timeout)
    }

    pub fn set(&self, change: impl FnOnce(&mut Knobs)) {
        change(&mut lock(&self.knobs));
    }

    pub async fn handle(self: Arc<Self>, request: Event) {
        let knobs = lock(&self.knobs).clone();
        if knobs.silent {
            return;
        }
        let nip44 = request
            .tags
            .iter()
            .any(|t| t.as_slice() == ["encryption", "nip44_v2"]);
        let secret = self.keys.secret_key();
        let decrypted = if nip44 {
            nip44::decrypt(secret, &request.pubkey, &request.content).map_err(|e| e.to_string())
        } else {
            nip04::decrypt(secret, &request.pubkey, &request.content).map_err(|e| e.to_string())
        };
        let Ok(plaintext) = decrypted else {
            return;
        };
        lock(&self.requests).push(plaintext.clone());
        let parsed: Value = serde_json::from_str(&plaintext).unwrap_or(Value::Null);
        let method = parsed["method"].as_str().unwrap_or("").to_owned();
        let params = &parsed["params"];
        let error = |code: &str, message: &str| json!({"result_type": method, "error": {"code": code, "message": message}, "result": null});
        let answer = if request.pubkey != self.client.public_key() {
            error("UNAUTHORIZED", "no wallet is connected to this key")
        } else if nip44 && !knobs.nip44 {
            error("UNSUPPORTED_ENCRYPTION", "nip04 only")
        } else if let Some((code, message)) = knobs.error {
            error(code, message)
        } else if knobs.restricted.contains(method.as_str()) {
            error("RESTRICTED", "this connection may not do that")
        } else {
            match self.execute(&method, params, &knobs) {
                Ok(result) => json!({"result_type": method, "error": null, "result": result}),
                Err((code, message)) => error(code, &message),
            }
        };
        if let Some((amount, delay)) = knobs.delay
            && method == "make_invoice"
            && params["amount"].as_u64() == Some(amount)
        {
            tokio::time::sleep(delay).await;
        }
        if knobs.decoys {
            let other = EventId::from_byte_array(rand::random());
            let bogus = json!({"result_type": method, "error": null,
                "result": {"balance": 1, "preimage": "00".repeat(32), "invoice": "lnbcrt1bogus"}});
            self.respond(&request, other, &bogus, nip44).await;
        }
        let label = params["amount"]
            .as_u64()
            .map_or_else(|| method.clone(), |a| format!("{method} {a}"));
        // Recorded before sending: the client may read it as soon as it has the answer.
        lock(&self.answers).push((request.id, label));
        self.respond(&request, request.id, &answer, nip44).await;
    }

    /// Sends `answer` to the request's author, tagged as answering `answering`.
    pub async fn respond(&self, request: &Event, answering: EventId, answer: &Value, nip44: bool) {
        let secret = self.keys.secret_key();
        let text = answer.to_string();
        let content = if nip44 {
            nip44::encrypt(secret, &request.pubkey, &text, nip44::Version::V2).unwrap()
        } else {
            nip04::encrypt(secret, &request.pubkey, &text).unwrap()
        };
        let response = EventBuilder::new(Kind::WalletConnectResponse, content)
            .tag(Tag::public_key(request.pubkey))
            .tag(Tag::event(answering))
            .sign_with_keys(&self.keys)
            .unwrap();
        self.pool.send_event(&response).await.unwrap();
    }

    /// Runs one method against the wallet model: the `result`, or an error code and message.
    pub fn execute(
        &self,
        method: &str,
        params: &Value,
        knobs: &Knobs,
    ) -> Result<Value, (&'static str, String)> {
        match method {
            "make_invoice" => {
                let amount = params["amount"]
                    .as_u64()
                    .ok_or(("OTHER", "amount".into()))?;
                let description = params["description"].as_str().unwrap_or("").to_owned();
                let expiry = params["expiry"].as_u64().unwrap_or(3600);
                let preimage: [u8; 32] = rand::random();
                let hash = sha256::Hash::hash(&preimage).to_byte_array();
                let invoiced = if knobs.wrong_amount {
                    amount + 1000
                } else {
                    amount
                };
                let bolt11 = self.sign_invoice(hash, invoiced, &description, expiry);
                let created_at = now();
                lock(&self.network.invoices).insert(
                    hash,
                    NetInvoice {
                        payee: self.id,
                        preimage,
                        amount: invoiced,
                        bolt11: bolt11.clone(),
                        description: description.clone(),
                        created_at,
                        expires_at: created_at + expiry,
                        settled_at: None,
                    },
                );
                Ok(json!({
                    "type": "incoming", "state": "pending", "invoice": bolt11,
                    "description": description, "payment_hash": hex::encode(hash),
                    "amount": invoiced, "created_at": created_at, "expires_at": created_at + expiry,
                }))
            }
            "lookup_invoice" => {
                let hash = params["payment_hash"].as_str().unwrap_or("");
                let sent = hex_32(hash)
                    .and_then(|h| lock(&self.network.outgoing).get(&(self.id, h)).copied());
                if let Some((state, amount, preimage)) = sent {
                    let preimage =
                        preimage.map(|p| if knobs.wrong_preimage { [7u8; 32] } else { p });
                    return Ok(json!({
                        "type": "outgoing", "state": state, "payment_hash": hash,
                        "preimage": preimage.map(hex::encode), "amount": amount, "fees_paid": 0,
                        "created_at": now(), "settled_at": preimage.map(|_| now()),
                    }));
                }
                let invoices = lock(&self.network.invoices);
                let found = hex_32(hash)
                    .and_then(|h| invoices.get(&h).map(|i| (h, i)))
                    .filter(|(_, i)| i.payee == self.id);
                let Some((hash, inv)) = found else {
                    return Err(("NOT_FOUND", "no such invoice".into()));
                };
                let settled = inv.settled_at.is_some();
                let preimage = if knobs.wrong_preimage {
                    [7u8; 32]
                } else {
                    inv.preimage
                };
                Ok(json!({
                    "type": "incoming",
                    "state": if settled { "settled" } else { "pending" },
                    "invoice": inv.bolt11, "description": inv.description,
                    "preimage": if settled { Value::from(hex::encode(preimage)) } else { Value::Null },
                    "payment_hash": hex::encode(hash), "amount": inv.amount, "fees_paid": 0,
                    "created_at": inv.created_at, "expires_at": inv.expires_at,
                    "settled_at": inv.settled_at,
                }))
            }
            "pay_invoice" => {
                let text = params["invoice"].as_str().unwrap_or("");
                let invoice = Bolt11Invoice::from_str(text)
                    .map_err(|e| ("OTHER", format!("bad invoice: {e}")))?;
                let hash = invoice.payment_hash().to_byte_array();
                let amount = invoice.amount_milli_satoshis().unwrap_or(0);
                let mut invoices = lock(&self.network.invoices);
                let Some(inv) = invoices.get_mut(&hash) else {
                    lock(&self.network.outgoing).insert((self.id, hash), ("failed", amount, None));
                    return Err(("PAYMENT_FAILED", "no route to the payee".to_owned()));
                };
                if inv.settled_at.is_some() {
                    return Err(("PAYMENT_FAILED", "invoice has already been paid".into()));
                }
                let mut balances = lock(&self.network.balances);
                let mine = balances.get(&self.id).copied().unwrap_or(0);
                if mine < amount {
                    return Err(("INSUFFICIENT_BALANCE", format!("{mine} msat available")));
                }
                balances.insert(self.id, mine - amount);
                *balances.entry(inv.payee).or_insert(0) += amount;
                inv.settled_at = Some(now());
                lock(&self.network.outgoing)
                    .insert((self.id, hash), ("settled", amount, Some(inv.preimage)));
                let preimage = if knobs.wrong_preimage {
                    [7u8; 32]
                } else {
                    inv.preimage
                };
                Ok(json!({"preimage": hex::encode(preimage), "fees_paid": 0}))
            }
            "get_balance" => Ok(json!({"balance": self.network.balance(self.id)})),
            "get_info" => {
                let secp = Secp256k1::new();
                let node_id = bitcoin::secp256k1::PublicKey::from_secret_key(&secp, &self.node);
                // The methods this connection may use.
                let methods: Vec<&str> = [
                    "pay_invoice",
                    "make_invoice",
                    "lookup_invoice",
                    "get_balance",
                    "get_info",
                    "sign_message",
                ]
                .into_iter()
                .filter(|m| !knobs.restricted.contains(m))
                .collect();
                Ok(json!({
                    "alias": format!("test wallet {}", self.id), "color": "#ff9900",
                    "pubkey": node_id.to_string(), "network": "regtest", "block_height": 1,
                    "block_hash": "00".repeat(32),
                    "methods": methods,
                }))
            }
            other => Err(("NOT_IMPLEMENTED", format!("{other} is not implemented"))),
        }
    }

    pub fn sign_invoice(&self, hash: [u8; 32], amount: u64, memo: &str, expiry: u64) -> String {
        let secp = Secp256k1::new();
        InvoiceBuilder::new(Currency::Regtest)
            .description(memo.to_owned())
            .amount_milli_satoshis(amount)
            .payment_hash(sha256::Hash::from_byte_array(hash))
            .payment_secret(PaymentSecret(rand::random()))
            .duration_since_epoch(Duration::from_secs(now()))
            .expiry_time(Duration::from_secs(expiry))
            .min_final_cltv_expiry_delta(80)
            .build_signed(|msg| secp.sign_ecdsa_recoverable(msg, &self.node))
            .expect("a valid invoice")
            .to_string()
    }
}

pub fn hex_32(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}
