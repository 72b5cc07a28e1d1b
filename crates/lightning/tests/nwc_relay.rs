//! The NWC backend against a real nostr relay on loopback.
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

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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
use turnpike_lightning::nwc::{Encryption, NwcBackend, NwcConfig, NwcConfigError};
use turnpike_lightning::{
    BackendError, CreateInvoice, Diagnose, InvoiceBackend, InvoiceState, Msat, PaymentBackend,
    PaymentHash, SecretSource,
};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A relay write policy that accepts everything and keeps a copy: what the relay received.
#[derive(Debug, Default, Clone)]
struct Recorder(Arc<Mutex<Vec<Event>>>);

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
    fn of_kind(&self, kind: Kind) -> Vec<Event> {
        lock(&self.0)
            .iter()
            .filter(|e| e.kind == kind)
            .cloned()
            .collect()
    }
}

/// A relay on 127.0.0.1 and its recorder.
async fn relay() -> (LocalRelay, String, Recorder) {
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
struct NetInvoice {
    payee: usize,
    preimage: [u8; 32],
    amount: u64,
    bolt11: String,
    description: String,
    created_at: u64,
    expires_at: u64,
    settled_at: Option<u64>,
}

/// An outgoing payment: `(state, amount msat, preimage)`.
type Sent = (&'static str, u64, Option<[u8; 32]>);

/// The fake Lightning network the test wallets share: invoices by payment hash, balances by
/// wallet.
#[derive(Default)]
struct Network {
    invoices: Mutex<HashMap<[u8; 32], NetInvoice>>,
    balances: Mutex<HashMap<usize, u64>>,
    /// Outgoing payments by (payer wallet, payment hash): `(state, amount msat, preimage)`.
    outgoing: Mutex<HashMap<(usize, [u8; 32]), Sent>>,
}

impl Network {
    fn balance(&self, wallet: usize) -> u64 {
        lock(&self.balances).get(&wallet).copied().unwrap_or(0)
    }

    fn set_balance(&self, wallet: usize, msat: u64) {
        lock(&self.balances).insert(wallet, msat);
    }
}

/// How a test wallet service behaves.
#[derive(Debug, Clone, Default)]
struct Knobs {
    /// Offers NIP-44 in its info event (and accepts NIP-44 requests).
    nip44: bool,
    /// Never answers.
    silent: bool,
    /// Reports preimages that do not hash to the payment hash.
    wrong_preimage: bool,
    /// Makes invoices for 1 sat more than asked.
    wrong_amount: bool,
    /// Before each answer, sends a response tagged for another request id, with a bogus result.
    decoys: bool,
    /// Answers every request with this error code and message.
    error: Option<(&'static str, &'static str)>,
    /// Methods this connection may not use (`RESTRICTED`).
    restricted: HashSet<&'static str>,
    /// Holds back the answer to `make_invoice` for this amount (msat) for this long.
    delay: Option<(u64, Duration)>,
}

/// A wallet service on the relay.
struct Wallet {
    id: usize,
    keys: Keys,
    client: Keys,
    node: bitcoin::secp256k1::SecretKey,
    knobs: Mutex<Knobs>,
    network: Arc<Network>,
    pool: RelayPool,
    /// Decrypted requests, in arrival order.
    requests: Mutex<Vec<String>>,
    /// Answered request ids with a label, in answer order.
    answers: Mutex<Vec<(EventId, String)>>,
}

impl Wallet {
    async fn start(relay: &str, network: Arc<Network>, id: usize, knobs: Knobs) -> Arc<Wallet> {
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

    fn uri(&self, relay: &str) -> String {
        format!(
            "nostr+walletconnect://{}?relay={relay}&secret={}&lud16=test%40example.com",
            self.keys.public_key().to_hex(),
            self.client.secret_key().to_secret_hex()
        )
    }

    /// A backend for this wallet's connection, with the given call and payment timeouts.
    fn backend(&self, relay: &str, timeout: Duration) -> NwcBackend {
        let config = NwcConfig {
            uri: SecretSource::Inline(self.uri(relay)),
            timeout_secs: 30,
            payment_timeout_secs: 60,
        };
        NwcBackend::new(&config)
            .unwrap()
            .with_timeouts(timeout, timeout)
    }

    fn set(&self, change: impl FnOnce(&mut Knobs)) {
        change(&mut lock(&self.knobs));
    }

    async fn handle(self: Arc<Self>, request: Event) {
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
    async fn respond(&self, request: &Event, answering: EventId, answer: &Value, nip44: bool) {
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
    fn execute(
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
                Ok(json!({
                    "alias": format!("test wallet {}", self.id), "color": "#ff9900",
                    "pubkey": node_id.to_string(), "network": "regtest", "block_height": 1,
                    "block_hash": "00".repeat(32),
                    "methods": ["pay_invoice", "make_invoice", "lookup_invoice", "get_balance", "get_info", "sign_message"],
                }))
            }
            other => Err(("NOT_IMPLEMENTED", format!("{other} is not implemented"))),
        }
    }

    fn sign_invoice(&self, hash: [u8; 32], amount: u64, memo: &str, expiry: u64) -> String {
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

fn hex_32(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

fn invoice_req(msat: u64, memo: &str) -> CreateInvoice {
    CreateInvoice {
        amount: Msat(msat),
        memo: memo.into(),
        expiry_secs: 600,
    }
}

const CALL: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_payments_are_looked_up_by_hash() {
    use turnpike_lightning::OutgoingState;
    let (_relay, url, _recorder) = relay().await;
    let network = Arc::new(Network::default());
    let payee = Wallet::start(&url, network.clone(), 1, Knobs::default()).await;
    let payer = Wallet::start(&url, network.clone(), 2, Knobs::default()).await;
    network.set_balance(2, 100_000);
    let gateway = payee.backend(&url, CALL);
    let client = payer.backend(&url, CALL);

    let issued = gateway
        .create_invoice(invoice_req(21_000, "lookup"))
        .await
        .unwrap();
    // Not paid yet: the payer's wallet has no outgoing payment of it.
    assert_eq!(
        client.lookup_payment(&issued.payment_hash).await.unwrap(),
        OutgoingState::Unknown
    );
    let paid = client.pay_invoice(&issued.bolt11, Msat(0)).await.unwrap();
    assert_eq!(
        client.lookup_payment(&issued.payment_hash).await.unwrap(),
        OutgoingState::Succeeded(paid)
    );
    // The payee's wallet sees an incoming payment, not one it sent.
    assert_eq!(
        gateway.lookup_payment(&issued.payment_hash).await.unwrap(),
        OutgoingState::Unknown
    );

    // A payment that found no route is failed.
    let stranger = payee.sign_invoice(rand::random(), 5_000, "nobody", 600);
    assert!(client.pay_invoice(&stranger, Msat(0)).await.is_err());
    let hash = turnpike_l402::bolt11::Invoice::parse(&stranger)
        .unwrap()
        .payment_hash();
    assert!(matches!(
        client.lookup_payment(&hash).await.unwrap(),
        OutgoingState::Failed(_)
    ));

    payer.set(|k| k.wrong_preimage = true);
    assert!(matches!(
        client.lookup_payment(&issued.payment_hash).await,
        Err(BackendError::InvalidResponse(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoice_lifecycle_and_payment_across_two_wallets() {
    let (_relay, url, _recorder) = relay().await;
    let network = Arc::new(Network::default());
    // The gateway's wallet speaks NIP-44, the payer's NIP-04 only.
    let payee = Wallet::start(
        &url,
        network.clone(),
        1,
        Knobs {
            nip44: true,
            ..Knobs::default()
        },
    )
    .await;
    let payer = Wallet::start(&url, network.clone(), 2, Knobs::default()).await;
    network.set_balance(2, 100_000);
    let gateway = payee.backend(&url, CALL);
    let client = payer.backend(&url, CALL);

    let issued = gateway
        .create_invoice(invoice_req(21_000, "a coffee"))
        .await
        .unwrap();
    assert_eq!(issued.amount, Msat(21_000));
    assert!(
        issued.bolt11.starts_with("lnbcrt210n1"),
        "{}",
        issued.bolt11
    );
    assert_eq!(gateway.encryption(), Some(Encryption::Nip44));

    let pending = gateway.lookup_invoice(&issued.payment_hash).await.unwrap();
    assert_eq!(pending.state, InvoiceState::Pending);
    assert_eq!(pending.amount, Msat(21_000));

    let paid = client.pay_invoice(&issued.bolt11, Msat(0)).await.unwrap();
    assert_eq!(client.encryption(), Some(Encryption::Nip04));
    assert_eq!(paid.payment_hash, issued.payment_hash);
    assert!(paid.preimage.matches(&issued.payment_hash));
    assert_eq!((paid.amount, paid.fee), (Msat(21_000), Msat(0)));

    let settled = gateway.lookup_invoice(&issued.payment_hash).await.unwrap();
    match settled.state {
        InvoiceState::Settled {
            preimage,
            settled_at,
        } => {
            assert_eq!(preimage, paid.preimage);
            assert!(settled_at > 0);
        }
        other => panic!("not settled: {other:?}"),
    }

    assert_eq!(client.balance().await.unwrap(), Msat(79_000));
    assert_eq!(gateway.balance().await.unwrap(), Msat(21_000));

    // Paying twice: the wallet's PAYMENT_FAILED says so.
    assert_eq!(
        client.pay_invoice(&issued.bolt11, Msat(0)).await,
        Err(BackendError::AlreadyPaid)
    );

    let info = gateway.info().await.unwrap();
    assert_eq!(info.backend, "nwc");
    assert_eq!(info.alias.as_deref(), Some("test wallet 1"));
    assert_eq!(info.network.as_deref(), Some("regtest"));
    assert_eq!(info.node_id.as_ref().map(String::len), Some(66));
    assert_eq!(info.balance, Some(Msat(21_000)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_relay_sees_is_encrypted() {
    let (_relay, url, recorder) = relay().await;
    let network = Arc::new(Network::default());
    for (id, nip44) in [(1, true), (2, false)] {
        let wallet = Wallet::start(
            &url,
            network.clone(),
            id,
            Knobs {
                nip44,
                ..Knobs::default()
            },
        )
        .await;
        let backend = wallet.backend(&url, CALL);
        let issued = backend
            .create_invoice(invoice_req(5_000, "secret memo"))
            .await
            .unwrap();

        // The wallet service decrypted the request we sent...
        let plaintexts = lock(&wallet.requests).clone();
        assert!(
            plaintexts
                .iter()
                .any(|p| p.contains("make_invoice") && p.contains("secret memo")),
            "{plaintexts:?}"
        );
        // ...but the relay only ever held ciphertext.
        let mine = |e: &Event| {
            e.pubkey == wallet.keys.public_key() || e.pubkey == wallet.client.public_key()
        };
        let requests: Vec<Event> = recorder
            .of_kind(Kind::WalletConnectRequest)
            .into_iter()
            .filter(mine)
            .collect();
        let responses: Vec<Event> = recorder
            .of_kind(Kind::WalletConnectResponse)
            .into_iter()
            .filter(mine)
            .collect();
        assert_eq!((requests.len(), responses.len()), (1, 1));
        for event in requests.iter().chain(&responses) {
            for plain in [
                "make_invoice",
                "method",
                "result_type",
                "secret memo",
                "lnbcrt",
                &issued.payment_hash.to_hex(),
            ] {
                assert!(
                    !event.content.contains(plain),
                    "{plain} in {}",
                    event.content
                );
            }
            assert!(serde_json::from_str::<Value>(&event.content).is_err());
            assert_eq!(event.content.contains("?iv="), !nip44, "{}", event.content);
        }
        let request = &requests[0];
        let tags: Vec<Vec<String>> = request.tags.iter().map(|t| t.as_slice().to_vec()).collect();
        assert!(tags.contains(&vec!["p".into(), wallet.keys.public_key().to_hex()]));
        assert!(tags.iter().any(|t| t[0] == "expiration"));
        assert_eq!(
            tags.contains(&vec!["encryption".into(), "nip44_v2".into()]),
            nip44
        );
        assert!(responses[0].tags.event_ids().any(|id| *id == request.id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_get_their_own_answers() {
    let (_relay, url, recorder) = relay().await;
    let network = Arc::new(Network::default());
    // The first request's answer is held back until after the second's.
    let wallet = Wallet::start(
        &url,
        network.clone(),
        1,
        Knobs {
            nip44: true,
            delay: Some((1_000, Duration::from_millis(700))),
            ..Knobs::default()
        },
    )
    .await;
    let backend = wallet.backend(&url, CALL);
    backend.connect().await.unwrap();
    let (slow, fast) = tokio::join!(backend.create_invoice(invoice_req(1_000, "slow")), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        backend.create_invoice(invoice_req(2_000, "fast")).await
    });
    let (slow, fast) = (slow.unwrap(), fast.unwrap());
    assert_eq!((slow.amount, fast.amount), (Msat(1_000), Msat(2_000)));
    let order: Vec<String> = lock(&wallet.answers).iter().map(|a| a.1.clone()).collect();
    assert_eq!(order, ["make_invoice 2000", "make_invoice 1000"]);

    // Decoys: before each answer, a response signed by the wallet service, for this client,
    // tagged with another request id and carrying a bogus result. The client must skip it.
    network.set_balance(1, 42_000);
    wallet.set(|k| k.decoys = true);
    let before = recorder.of_kind(Kind::WalletConnectResponse).len();
    assert_eq!(backend.balance().await.unwrap(), Msat(42_000));
    let issued = backend
        .create_invoice(invoice_req(3_000, "after decoy"))
        .await
        .unwrap();
    assert_eq!(issued.amount, Msat(3_000));
    let status = backend.lookup_invoice(&issued.payment_hash).await.unwrap();
    assert_eq!(status.state, InvoiceState::Pending);
    // The decoys really went through the relay (two responses per call).
    assert_eq!(
        recorder.of_kind(Kind::WalletConnectResponse).len() - before,
        6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_errors_map_to_backend_errors() {
    let (_relay, url, _recorder) = relay().await;
    let network = Arc::new(Network::default());
    let payee = Wallet::start(&url, network.clone(), 1, Knobs::default()).await;
    let payer = Wallet::start(
        &url,
        network.clone(),
        2,
        Knobs {
            nip44: true,
            restricted: HashSet::from(["make_invoice"]),
            ..Knobs::default()
        },
    )
    .await;
    let gateway = payee.backend(&url, CALL);
    let client = payer.backend(&url, CALL);

    // INSUFFICIENT_BALANCE: the payer has nothing.
    let issued = gateway
        .create_invoice(invoice_req(10_000, "too much"))
        .await
        .unwrap();
    assert_eq!(
        client.pay_invoice(&issued.bolt11, Msat(0)).await,
        Err(BackendError::InsufficientBalance)
    );
    // NOT_FOUND: an invoice nobody made.
    assert_eq!(
        gateway
            .lookup_invoice(&PaymentHash(rand::random()))
            .await
            .unwrap_err(),
        BackendError::UnknownInvoice
    );
    // RESTRICTED: this connection may not make invoices.
    let e = client
        .create_invoice(invoice_req(1_000, "x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, BackendError::Unauthorized(m) if m.contains("RESTRICTED")),
        "{e:?}"
    );

    // Every other code, answered to get_balance.
    type Check = fn(&BackendError) -> bool;
    let cases: [(&str, Check); 8] = [
        ("UNAUTHORIZED", |e| {
            matches!(e, BackendError::Unauthorized(_))
        }),
        ("NOT_IMPLEMENTED", |e| {
            matches!(e, BackendError::Unsupported(_))
        }),
        ("RATE_LIMITED", |e| e.is_transient()),
        (
            "QUOTA_EXCEEDED",
            |e| matches!(e, BackendError::Rejected(m) if m.contains("QUOTA_EXCEEDED")),
        ),
        ("INTERNAL", |e| matches!(e, BackendError::Rejected(_))),
        ("OTHER", |e| matches!(e, BackendError::Rejected(_))),
        ("PAYMENT_FAILED", |e| matches!(e, BackendError::Rejected(_))),
        ("INSUFFICIENT_BALANCE", |e| {
            *e == BackendError::InsufficientBalance
        }),
    ];
    for (code, expected) in cases {
        payer.set(|k| k.error = Some((code, "as told")));
        let e = client.balance().await.unwrap_err();
        assert!(expected(&e), "{code}: {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_answers_are_invalid_responses() {
    let (_relay, url, _recorder) = relay().await;
    let network = Arc::new(Network::default());
    let payee = Wallet::start(&url, network.clone(), 1, Knobs::default()).await;
    let payer = Wallet::start(
        &url,
        network.clone(),
        2,
        Knobs {
            wrong_preimage: true,
            ..Knobs::default()
        },
    )
    .await;
    network.set_balance(2, 50_000);
    let gateway = payee.backend(&url, CALL);
    let client = payer.backend(&url, CALL);

    let issued = gateway
        .create_invoice(invoice_req(1_000, "x"))
        .await
        .unwrap();
    // The payer's wallet pays but reports a preimage that does not hash to the payment hash.
    let e = client
        .pay_invoice(&issued.bolt11, Msat(0))
        .await
        .unwrap_err();
    assert!(matches!(e, BackendError::InvalidResponse(_)), "{e:?}");
    // The payee's wallet reports the paid invoice with a wrong preimage too.
    payee.set(|k| k.wrong_preimage = true);
    let e = gateway
        .lookup_invoice(&issued.payment_hash)
        .await
        .unwrap_err();
    assert!(matches!(e, BackendError::InvalidResponse(_)), "{e:?}");
    payee.set(|k| k.wrong_preimage = false);
    assert!(
        gateway
            .lookup_invoice(&issued.payment_hash)
            .await
            .unwrap()
            .state
            .is_settled()
    );
    // An invoice for another amount than asked.
    payee.set(|k| k.wrong_amount = true);
    let e = gateway
        .create_invoice(invoice_req(1_000, "x"))
        .await
        .unwrap_err();
    assert!(matches!(e, BackendError::InvalidResponse(_)), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_wallet_times_out() {
    let (_relay, url, _recorder) = relay().await;
    let network = Arc::new(Network::default());
    let wallet = Wallet::start(
        &url,
        network.clone(),
        1,
        Knobs {
            silent: true,
            ..Knobs::default()
        },
    )
    .await;
    let backend = wallet.backend(&url, Duration::from_millis(1_500));
    let started = Instant::now();
    assert_eq!(backend.balance().await, Err(BackendError::Timeout));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1_400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // A payment too (its own timeout).
    let other = Wallet::start(&url, network.clone(), 2, Knobs::default()).await;
    let issued = other
        .backend(&url, CALL)
        .create_invoice(invoice_req(1_000, "x"))
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        backend.pay_invoice(&issued.bolt11, Msat(0)).await,
        Err(BackendError::Timeout)
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_relay_is_reported() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let keys = Keys::generate();
    let config = NwcConfig {
        uri: SecretSource::Inline(format!(
            "nostr+walletconnect://{}?relay=ws%3A%2F%2F127.0.0.1%3A{port}&secret={}",
            Keys::generate().public_key().to_hex(),
            keys.secret_key().to_secret_hex()
        )),
        timeout_secs: 10,
        payment_timeout_secs: 10,
    };
    let backend = NwcBackend::new(&config).unwrap();
    let started = Instant::now();
    let e = backend.balance().await.unwrap_err();
    assert!(
        matches!(&e, BackendError::Unreachable(m) if m.contains(&port.to_string())),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_relay_beside_a_live_one_does_not_block() {
    let (_relay, url, _recorder) = relay().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("ws://{}", listener.local_addr().unwrap());
    drop(listener);
    let network = Arc::new(Network::default());
    let wallet = Wallet::start(&url, network.clone(), 1, Knobs::default()).await;
    network.set_balance(1, 7_000);
    // Two relays in the URI: the first one refuses connections.
    let backend = wallet.backend(&format!("{dead}&relay={url}"), CALL);
    assert_eq!(backend.relays().len(), 2);
    let started = Instant::now();
    assert_eq!(backend.balance().await.unwrap(), Msat(7_000));
    assert_eq!(backend.balance().await.unwrap(), Msat(7_000));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn a_malformed_uri_is_a_clear_error() {
    let secret = "71a8c14c1407c113601079c4302dab36460f0ccd0ad506f1f2dc73b5100e4f3c";
    for (uri, hint) in [
        (
            "nostr+walletconnect://not-a-key?relay=wss://r.example",
            "64 hex",
        ),
        (
            &format!("nostr+walletconnect://{}?secret={secret}", "ab".repeat(32)),
            "no relay=",
        ),
        (
            &format!(
                "nostr+walletconnect://{}?relay=wss://r.example",
                "ab".repeat(32)
            ),
            "no secret=",
        ),
        (
            &format!("wallet://x?secret={secret}"),
            "nostr+walletconnect://",
        ),
    ] {
        let config = NwcConfig {
            uri: SecretSource::Inline(uri.to_owned()),
            timeout_secs: 30,
            payment_timeout_secs: 60,
        };
        let e = NwcBackend::new(&config).unwrap_err();
        assert!(matches!(e, NwcConfigError::InvalidUri(_)), "{e:?}");
        let shown = e.to_string();
        assert!(shown.contains(hint), "{uri}: {shown}");
        assert!(!shown.contains(secret), "{shown}");
    }
}
