//! [Nostr Wallet Connect](https://github.com/nostr-protocol/nips/blob/master/47.md) (NIP-47): a
//! wallet reached through nostr relays, from a `nostr+walletconnect://` connection URI.
//!
//! The URI names the **wallet service**'s public key, one or more relays and a client secret key
//! (`nostr+walletconnect://<wallet pubkey hex>?relay=wss://…&secret=<64 hex>[&lud16=…]`).
//! Whoever holds the URI can spend within the connection's limits: it is configured as a
//! [`SecretSource`], never logged, and `Debug` never prints it.
//!
//! Each call is one request/response exchange: the client signs a kind-23194 event with the URI's
//! secret key, its content the encrypted JSON `{"method", "params"}`, tagged `p` (the wallet
//! service) and `expiration` (the end of the call's deadline, so a wallet service that receives
//! it late ignores it); the wallet service answers with a kind-23195 event, tagged `e` (the
//! request's id) and `p` (the client), its content the encrypted
//! `{"result_type", "error", "result"}`. Calls used:
//!
//! | what | method | result |
//! | --- | --- | --- |
//! | create an invoice | `make_invoice` (`amount` msat, `description`, `expiry`) | `invoice`, `payment_hash` |
//! | look one up | `lookup_invoice` (`payment_hash`) | `type`, `state`, `invoice`, `preimage`, `amount`, `expires_at`, `settled_at` |
//! | pay | `pay_invoice` (`invoice`) | `preimage`, `fees_paid` |
//! | balance | `get_balance` | `balance` (msat) |
//! | describe | `get_info` | `alias`, `pubkey`, `network` |
//!
//! **Encryption.** On its first call the backend reads the wallet service's info event (kind
//! 13194) from the relays: if its `encryption` tag offers `nip44_v2`, requests are encrypted with
//! NIP-44 (and carry `["encryption", "nip44_v2"]`); otherwise (no tag, or `nip04` only, as
//! NIP-47 prescribes) with NIP-04. Answers are decrypted with the scheme their content uses.
//!
//! **Matching.** The backend holds one subscription per relay for responses from the wallet
//! service to its key; an answer is taken only if it is a kind-23195 event signed by the wallet
//! service (signature checked), tagged `e` with this request's id (and `p` with our key, when
//! tagged), for the method asked. Anything else is ignored, so concurrent calls each get their
//! own answer.
//!
//! **Errors.** NIP-47 error codes map to [`BackendError`]: `INSUFFICIENT_BALANCE` →
//! [`BackendError::InsufficientBalance`]; `RESTRICTED`, `UNAUTHORIZED` →
//! [`BackendError::Unauthorized`]; `NOT_IMPLEMENTED` (and `UNSUPPORTED_ENCRYPTION`) →
//! [`BackendError::Unsupported`]; `NOT_FOUND` → [`BackendError::UnknownInvoice`];
//! `RATE_LIMITED` → [`BackendError::Unreachable`] (transient: retrying later may succeed);
//! `QUOTA_EXCEEDED`, `INTERNAL`, `OTHER` and unknown codes → [`BackendError::Rejected`];
//! `PAYMENT_FAILED` → [`BackendError::AlreadyPaid`] or [`BackendError::InvoiceExpired`] when its
//! message says so, [`BackendError::Rejected`] otherwise. No relay reachable →
//! [`BackendError::Unreachable`]; no answer within the call's timeout →
//! [`BackendError::Timeout`] (for a payment, its outcome is then unknown).
//!
//! **Checks.** The invoice a wallet makes must parse and carry the amount asked and the hash it
//! reports; a settled invoice's preimage must hash to its payment hash and the amount received
//! must cover the invoice; a lookup answered with an outgoing payment is refused; a payment's
//! preimage is checked with [`check_payment`](crate::check_payment). NIP-47 has no routing-fee limit: `max_fee` cannot
//! be enforced before paying (a fee above it is logged as a warning afterwards).

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use nostr::nips::{nip04, nip44};
use nostr::{
    Event, EventBuilder, EventId, Filter, Keys, Kind, PublicKey, RelayUrl, SecretKey,
    SubscriptionId, Tag, TagKind, Timestamp, Url,
};
use nostr_relay_pool::relay::ReqExitPolicy;
use nostr_relay_pool::{
    Relay, RelayOptions, RelayPool, RelayPoolNotification, RelayStatus, SubscribeOptions,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Mutex, OnceCell};
use tokio::task::JoinSet;
use turnpike_l402::bolt11::Invoice;

use crate::rules;
use crate::{
    BackendError, CreateInvoice, Diagnose, InvoiceBackend, InvoiceState, InvoiceStatus,
    IssuedInvoice, Msat, NodeInfo, OutgoingState, Payment, PaymentBackend, PaymentHash, Preimage,
    SecretSource,
};

/// Default for [`NwcConfig::timeout_secs`].
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
pub use crate::rules::DEFAULT_PAYMENT_TIMEOUT_SECS;
/// The URI scheme of NWC connection strings.
pub const URI_SCHEME: &str = "nostr+walletconnect";

/// Longest wait for a relay connection (also bounded by half the call's timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the wallet service's info event (also bounded by half the call's timeout).
const INFO_TIMEOUT: Duration = Duration::from_secs(5);
/// The id of the per-relay subscription to responses.
const RESPONSES_SUBSCRIPTION: &str = "turnpike-nwc-responses";
/// Longest text taken from a wallet service's error message.
const MAX_MESSAGE_CHARS: usize = 300;

fn default_timeout_secs() -> u64 {
    DEFAULT_TIMEOUT_SECS
}
/// Configuration of the NWC backend (`[backend] kind = "nwc"`).
///
/// ```toml
/// uri = { env = "NWC_URI" }   # nostr+walletconnect://<wallet pubkey>?relay=wss://…&secret=…
/// timeout_secs = 30           # each call (invoice, lookup, balance, info), relay connection included
/// payment_timeout_secs = 60   # a payment, from request to result
/// ```
///
/// The URI holds the client's secret key: prefer `{ env = … }` or `{ file = … }` to an inline
/// value. The gateway needs a connection allowed to `make_invoice` and `lookup_invoice`; a payer
/// needs `pay_invoice` (and `get_balance`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NwcConfig {
    /// The `nostr+walletconnect://` connection URI (a secret).
    pub uri: SecretSource,
    /// Time allowed for each call (invoice, lookup, balance, info), in seconds: connecting to
    /// the relays, sending the request and receiving the answer.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Time allowed for a payment, in seconds. A payment still unanswered when it expires gives
    /// [`BackendError::Timeout`]; its outcome is then unknown (the request carries an
    /// `expiration` tag, so a wallet service that receives it later must ignore it).
    #[serde(default = "rules::default_payment_timeout_secs")]
    pub payment_timeout_secs: u64,
}

/// Why an [`NwcBackend`] could not be set up from its configuration. Messages never contain the
/// URI's secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NwcConfigError {
    /// The URI cannot be read (unset variable, unreadable file, empty).
    #[error("nwc: uri: {0}")]
    Secret(String),
    /// The URI is not a valid NWC connection string.
    #[error("nwc: invalid connection URI: {0}")]
    InvalidUri(String),
    /// Another setting is out of range.
    #[error("nwc: {0}")]
    Invalid(String),
}

/// A parsed `nostr+walletconnect://` URI. `Debug` never prints the secret.
#[derive(Clone)]
struct ConnectionUri {
    wallet: PublicKey,
    relays: Vec<RelayUrl>,
    secret: SecretKey,
    lud16: Option<String>,
}

/// Parses a connection URI, with an error that says what is wrong and never quotes the secret.
fn parse_uri(text: &str) -> Result<ConnectionUri, NwcConfigError> {
    let invalid = |m: String| NwcConfigError::InvalidUri(m);
    let text = text.trim();
    let scheme_ok = text
        .get(..URI_SCHEME.len() + 1)
        .is_some_and(|s| s.eq_ignore_ascii_case(&format!("{URI_SCHEME}:")));
    if !scheme_ok {
        return Err(invalid(format!(
            "expected a {URI_SCHEME}://<wallet pubkey>?relay=…&secret=… URI"
        )));
    }
    let url = Url::parse(text).map_err(|e| invalid(format!("not a valid URI ({e})")))?;
    // `nostr+walletconnect://<pubkey>?…` puts the key in the host; `nostr+walletconnect:<pubkey>`
    // in the path.
    let key_text = match url.host_str() {
        Some(host) if !host.is_empty() => host.to_owned(),
        _ => url.path().trim_matches('/').to_owned(),
    };
    if key_text.len() != 64 || !key_text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(
            "the wallet service public key (after ://) must be 64 hex characters".into(),
        ));
    }
    let wallet = PublicKey::from_hex(&key_text).map_err(|_| {
        invalid("the wallet service public key is not a valid secp256k1 x-only key".into())
    })?;
    let mut relays: Vec<RelayUrl> = Vec::new();
    let mut secret: Option<SecretKey> = None;
    let mut lud16 = None;
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "relay" => {
                let relay = RelayUrl::parse(value.trim()).map_err(|e| {
                    invalid(format!(
                        "relay {:?} is not a ws:// or wss:// URL ({e})",
                        value.chars().take(200).collect::<String>()
                    ))
                })?;
                if !relays.contains(&relay) {
                    relays.push(relay);
                }
            }
            "secret" => {
                if secret.is_some() {
                    return Err(invalid("more than one secret= parameter".into()));
                }
                let value = value.trim();
                if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(invalid("the secret must be 64 hex characters".into()));
                }
                secret = Some(SecretKey::from_hex(value).map_err(|_| {
                    invalid("the secret is not a valid secp256k1 secret key".into())
                })?);
            }
            "lud16" => lud16 = Some(value.into_owned()).filter(|v| !v.is_empty()),
            _ => {}
        }
    }
    if relays.is_empty() {
        return Err(invalid("no relay= parameter".into()));
    }
    let secret = secret.ok_or_else(|| invalid("no secret= parameter".into()))?;
    Ok(ConnectionUri {
        wallet,
        relays,
        secret,
        lud16,
    })
}

/// How request and response contents are encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// NIP-04 (AES-256-CBC): the NIP-47 default, used when the wallet service offers nothing else.
    Nip04,
    /// NIP-44 v2 (ChaCha20 + HMAC-SHA256), used when the wallet service's info event offers
    /// `nip44_v2`.
    Nip44,
}

/// The encryption a wallet service's info event (kind 13194) offers; NIP-04 without one.
fn negotiate(info: Option<&Event>) -> Encryption {
    let Some(info) = info else {
        return Encryption::Nip04;
    };
    let offers_nip44 = info
        .tags
        .iter()
        .map(Tag::as_slice)
        .filter(|t| t.first().is_some_and(|k| k == "encryption"))
        .flat_map(|t| t.iter().skip(1))
        .flat_map(|v| v.split_whitespace())
        .any(|scheme| scheme == "nip44_v2");
    if offers_nip44 {
        Encryption::Nip44
    } else {
        Encryption::Nip04
    }
}

/// A Nostr Wallet Connect wallet: an [`InvoiceBackend`] for the gateway and a [`PaymentBackend`]
/// for payers. `Debug` never prints the connection secret.
///
/// Building it does no network I/O; the relays are connected on the first call (and reconnected
/// when needed), or eagerly with [`NwcBackend::connect`].
pub struct NwcBackend {
    wallet: PublicKey,
    keys: Keys,
    relays: Vec<RelayUrl>,
    lud16: Option<String>,
    timeout: Duration,
    payment_timeout: Duration,
    pool: OnceCell<RelayPool>,
    /// Relays are reached only if `wss` and public ([`crate::relay_guard::PublicRelays`]).
    public_only: bool,
    /// Serialises connecting and subscribing.
    connect_lock: Mutex<()>,
    encryption: OnceLock<Encryption>,
}

impl fmt::Debug for NwcBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NwcBackend")
            .field("wallet", &self.wallet.to_hex())
            .field("client", &self.keys.public_key().to_hex())
            .field(
                "relays",
                &self.relays.iter().map(RelayUrl::as_str).collect::<Vec<_>>(),
            )
            .field("lud16", &self.lud16)
            .field("secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("payment_timeout", &self.payment_timeout)
            .finish()
    }
}

impl NwcBackend {
    /// Builds the backend: resolves and parses the connection URI and checks the timeouts. No
    /// network I/O (use [`NwcBackend::connect`] or [`Diagnose::info`] to check the connection).
    pub fn new(config: &NwcConfig) -> Result<Self, NwcConfigError> {
        rules::check_limits(config.timeout_secs, 0, Some(config.payment_timeout_secs))
            .map_err(NwcConfigError::Invalid)?;
        let uri = config
            .uri
            .resolve()
            .map_err(|e| NwcConfigError::Secret(e.to_string()))?;
        let parsed = parse_uri(uri.expose())?;
        // wss:// relays go through rustls: make sure it has its provider.
        crate::ensure_crypto_provider();
        Ok(NwcBackend {
            wallet: parsed.wallet,
            keys: Keys::new(parsed.secret),
            relays: parsed.relays,
            lud16: parsed.lud16,
            timeout: Duration::from_secs(config.timeout_secs),
            payment_timeout: Duration::from_secs(config.payment_timeout_secs),
            pool: OnceCell::new(),
            public_only: false,
            connect_lock: Mutex::new(()),
            encryption: OnceLock::new(),
        })
    }

    /// Replaces the timeouts: `call` for each call, `payment` for a payment. For tests and
    /// embedding; the configuration has whole seconds.
    pub fn with_timeouts(mut self, call: Duration, payment: Duration) -> Self {
        self.timeout = call;
        self.payment_timeout = payment;
        self
    }

    /// Reaches the relays only if they are `wss` and resolve to public addresses, checked at
    /// each connection, connecting to the addresses checked
    /// ([`crate::relay_guard::PublicRelays`]; for a URI a third party gave: a hub provider's
    /// payout).
    pub fn public_only(mut self) -> Self {
        self.public_only = true;
        self
    }

    /// The spending methods this connection may use, as its `get_info` answer lists them
    /// (`pay_invoice`, `multi_pay_invoice`, `pay_keysend`, `multi_pay_keysend`); an error when
    /// the wallet service does not say (no `get_info`, or no `methods` in it).
    pub async fn spending_methods(&self) -> Result<Vec<String>, BackendError> {
        const SPENDING: [&str; 4] = [
            "pay_invoice",
            "multi_pay_invoice",
            "pay_keysend",
            "multi_pay_keysend",
        ];
        let info = self
            .call_as::<InfoResult>("get_info", json!({}), self.timeout)
            .await?;
        let methods = info.methods.ok_or_else(|| {
            BackendError::InvalidResponse("nwc get_info: no methods listed".into())
        })?;
        Ok(methods
            .into_iter()
            .filter(|m| SPENDING.contains(&m.as_str()))
            .collect())
    }

    /// The wallet service's public key (hex), from the URI.
    pub fn wallet_pubkey(&self) -> String {
        self.wallet.to_hex()
    }

    /// This client's public key (hex), derived from the URI's secret.
    pub fn client_pubkey(&self) -> String {
        self.keys.public_key().to_hex()
    }

    /// The relays named by the URI.
    pub fn relays(&self) -> Vec<String> {
        self.relays.iter().map(|r| r.as_str().to_owned()).collect()
    }

    /// The encryption in use, once negotiated (after the first call).
    pub fn encryption(&self) -> Option<Encryption> {
        self.encryption.get().copied()
    }

    /// Connects to the relays, subscribes to responses and reads the wallet service's info
    /// event, within the call timeout. [`BackendError::Unreachable`] if no relay can be reached.
    pub async fn connect(&self) -> Result<Encryption, BackendError> {
        let deadline = self.timeout;
        within(deadline, "connect", async {
            let (pool, relays) = self.ready(deadline).await?;
            Ok(self.negotiated(pool, &relays, deadline).await)
        })
        .await
    }

    /// The relay pool, built on first use.
    async fn pool(&self) -> Result<&RelayPool, BackendError> {
        self.pool
            .get_or_try_init(|| async {
                let pool = if self.public_only {
                    RelayPool::builder()
                        .websocket_transport(crate::relay_guard::PublicRelays)
                        .build()
                } else {
                    RelayPool::new()
                };
                for url in &self.relays {
                    // Answers are checked here (author, signature, tags), not by the pool.
                    pool.add_relay(url.clone(), RelayOptions::default())
                        .await
                        .map_err(|e| {
                            BackendError::Unreachable(format!("nwc: cannot add relay {url}: {e}"))
                        })?;
                }
                Ok(pool)
            })
            .await
    }

    /// The pool and the relays that are connected and subscribed to responses.
    ///
    /// When no relay is connected, every relay is tried at once and the call goes on as soon as
    /// one connects (the others keep trying in the background); when none can be reached,
    /// [`BackendError::Unreachable`] with each relay's reason. When one is connected, relays
    /// that are not are reconnected in the background, without delaying the call.
    async fn ready(&self, deadline: Duration) -> Result<(&RelayPool, Vec<RelayUrl>), BackendError> {
        let pool = self.pool().await?;
        let wait = CONNECT_TIMEOUT.min(deadline / 2);
        let _guard = self.connect_lock.lock().await;
        let relays: Vec<Relay> = pool.relays().await.into_values().collect();
        let mut failures = Vec::new();
        if relays.iter().any(|r| r.status() == RelayStatus::Connected) {
            for relay in &relays {
                if matches!(
                    relay.status(),
                    RelayStatus::Initialized | RelayStatus::Terminated
                ) {
                    relay.connect();
                }
            }
        } else {
            let mut attempts = JoinSet::new();
            for relay in &relays {
                let relay = relay.clone();
                attempts.spawn(async move {
                    let result = connect_relay(&relay, wait).await;
                    (relay.url().clone(), result)
                });
            }
            while let Some(joined) = attempts.join_next().await {
                match joined {
                    Ok((_, Ok(()))) => break,
                    Ok((url, Err(e))) => failures.push(format!("{url}: {e}")),
                    Err(e) => failures.push(format!("connection task failed: {e}")),
                }
            }
            attempts.detach_all();
        }
        let mut ready = Vec::new();
        for relay in relays {
            if relay.status() != RelayStatus::Connected {
                continue;
            }
            match self.subscribe(&relay).await {
                Ok(()) => ready.push(relay.url().clone()),
                Err(e) => failures.push(format!("{}: cannot subscribe: {e}", relay.url())),
            }
        }
        if ready.is_empty() {
            return Err(BackendError::Unreachable(format!(
                "nwc: no relay reachable ({})",
                failures.join("; ")
            )));
        }
        if !failures.is_empty() {
            tracing::debug!(failures = %failures.join("; "), "nwc: some relays are unreachable");
        }
        Ok((pool, ready))
    }

    /// Subscribes `relay` to responses from the wallet service to us, unless it already is (a
    /// relay re-sends its subscriptions when it reconnects).
    async fn subscribe(&self, relay: &Relay) -> Result<(), String> {
        let id = SubscriptionId::new(RESPONSES_SUBSCRIPTION);
        if relay.subscription(&id).await.is_some() {
            return Ok(());
        }
        // No `since`: a wallet service whose clock lags must still be heard. No `limit(0)`
        // either: the pool would drop live events that reach it before it records the relay's
        // EOSE. Stored responses (relays rarely keep ephemeral events) are ignored like any
        // answer to another request.
        let filter = Filter::new()
            .kind(Kind::WalletConnectResponse)
            .author(self.wallet)
            .pubkey(self.keys.public_key());
        relay
            .subscribe_with_id(id, filter, SubscribeOptions::default())
            .await
            .map_err(|e| e.to_string())
    }

    /// The encryption to use: negotiated once from the wallet service's info event. When the
    /// info event cannot be read (the relays failed to answer), NIP-04 is used for this call and
    /// negotiation is tried again on the next.
    async fn negotiated(
        &self,
        pool: &RelayPool,
        relays: &[RelayUrl],
        deadline: Duration,
    ) -> Encryption {
        if let Some(encryption) = self.encryption.get() {
            return *encryption;
        }
        let filter = Filter::new()
            .kind(Kind::WalletConnectInfo)
            .author(self.wallet)
            .limit(1);
        let wait = INFO_TIMEOUT.min(deadline / 2);
        match pool
            .fetch_events_from(relays.to_vec(), filter, wait, ReqExitPolicy::ExitOnEOSE)
            .await
        {
            Ok(events) => {
                let info = events
                    .into_iter()
                    .filter(|e| e.pubkey == self.wallet && e.kind == Kind::WalletConnectInfo)
                    .max_by_key(|e| e.created_at);
                let encryption = negotiate(info.as_ref());
                tracing::debug!(
                    wallet = %self.wallet,
                    info_event = info.is_some(),
                    ?encryption,
                    "nwc: encryption negotiated"
                );
                *self.encryption.get_or_init(|| encryption)
            }
            Err(e) => {
                tracing::debug!(error = %e, "nwc: cannot read the wallet service's info event; using NIP-04 for now");
                Encryption::Nip04
            }
        }
    }

    /// One NIP-47 exchange, within `deadline`: returns the `result` of a successful answer.
    async fn call(
        &self,
        method: &'static str,
        params: Value,
        deadline: Duration,
    ) -> Result<Value, BackendError> {
        within(deadline, method, self.exchange(method, params, deadline)).await
    }

    async fn exchange(
        &self,
        method: &'static str,
        params: Value,
        deadline: Duration,
    ) -> Result<Value, BackendError> {
        let (pool, relays) = self.ready(deadline).await?;
        let encryption = self.negotiated(pool, &relays, deadline).await;
        let request = self.request_event(method, params, encryption, deadline)?;
        // Listen before sending: the answer may arrive before the relay's OK.
        let mut notifications = pool.notifications();
        let output = pool.send_event_to(relays, &request).await.map_err(|e| {
            BackendError::Unreachable(format!("nwc: cannot send the {method} request: {e}"))
        })?;
        if output.success.is_empty() {
            let reasons: Vec<String> = output
                .failed
                .iter()
                .map(|(url, reason)| format!("{url}: {reason}"))
                .collect();
            let text = format!(
                "nwc: no relay accepted the {method} request ({})",
                reasons.join("; ")
            );
            return Err(if output.failed.values().all(|r| is_relay_refusal(r)) {
                BackendError::Rejected(text)
            } else {
                BackendError::Unreachable(text)
            });
        }
        tracing::debug!(method, request = %request.id, ?encryption, "nwc: request sent");
        loop {
            match notifications.recv().await {
                Ok(RelayPoolNotification::Event { event, .. }) => {
                    if let Some(result) = self.answer(&event, &request.id, method)? {
                        return Ok(result);
                    }
                }
                Ok(RelayPoolNotification::Shutdown) | Err(RecvError::Closed) => {
                    return Err(BackendError::Unreachable(
                        "nwc: the relay pool shut down".into(),
                    ));
                }
                Ok(RelayPoolNotification::Message { .. }) => {}
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "nwc: relay notifications were dropped");
                }
            }
        }
    }

    /// The signed, encrypted request event.
    fn request_event(
        &self,
        method: &'static str,
        params: Value,
        encryption: Encryption,
        deadline: Duration,
    ) -> Result<Event, BackendError> {
        let plaintext = json!({ "method": method, "params": params }).to_string();
        let secret = self.keys.secret_key();
        let content = match encryption {
            Encryption::Nip04 => {
                nip04::encrypt(secret, &self.wallet, &plaintext).map_err(|e| e.to_string())
            }
            Encryption::Nip44 => {
                nip44::encrypt(secret, &self.wallet, &plaintext, nip44::Version::V2)
                    .map_err(|e| e.to_string())
            }
        }
        .map_err(|e| BackendError::Rejected(format!("nwc: cannot encrypt the request: {e}")))?;
        // Whole seconds, rounded up.
        let expires =
            Timestamp::now() + deadline.as_secs() + u64::from(deadline.subsec_nanos() > 0);
        let mut builder = EventBuilder::new(Kind::WalletConnectRequest, content)
            .tag(Tag::public_key(self.wallet))
            .tag(Tag::expiration(expires));
        if encryption == Encryption::Nip44 {
            builder = builder.tag(Tag::custom(TagKind::custom("encryption"), ["nip44_v2"]));
        }
        builder
            .sign_with_keys(&self.keys)
            .map_err(|e| BackendError::Rejected(format!("nwc: cannot sign the request: {e}")))
    }

    /// Whether `event` answers request `id`: `Ok(None)` for events that do not (ignored),
    /// the `result` of a successful answer, or the mapped error of a failed one.
    fn answer(
        &self,
        event: &Event,
        id: &EventId,
        method: &'static str,
    ) -> Result<Option<Value>, BackendError> {
        if event.kind != Kind::WalletConnectResponse || event.pubkey != self.wallet {
            return Ok(None);
        }
        if !event.tags.event_ids().any(|e| e == id) {
            return Ok(None);
        }
        let me = self.keys.public_key();
        let mut tagged = event.tags.public_keys().peekable();
        if tagged.peek().is_some() && !tagged.any(|p| *p == me) {
            return Ok(None);
        }
        if event.verify().is_err() {
            tracing::warn!(event = %event.id, "nwc: ignoring a response with an invalid signature");
            return Ok(None);
        }
        let plaintext = self.decrypt(&event.content).map_err(|e| {
            BackendError::InvalidResponse(format!("nwc: cannot decrypt the {method} answer: {e}"))
        })?;
        let envelope: Envelope = serde_json::from_str(&plaintext).map_err(|e| {
            BackendError::InvalidResponse(format!("nwc: malformed {method} answer: {e}"))
        })?;
        if envelope.result_type != method {
            return Err(BackendError::InvalidResponse(format!(
                "nwc: the wallet service answered the {method} request with a {} result",
                clip(&envelope.result_type)
            )));
        }
        if let Some(error) = envelope.error {
            return Err(map_error(method, &error.code, &error.message));
        }
        match envelope.result {
            Some(result) if !result.is_null() => Ok(Some(result)),
            _ => Err(BackendError::InvalidResponse(format!(
                "nwc: the {method} answer has neither a result nor an error"
            ))),
        }
    }

    /// Decrypts a response with the scheme its content uses (NIP-04 contents end with `?iv=`).
    fn decrypt(&self, content: &str) -> Result<String, String> {
        let secret = self.keys.secret_key();
        if content.contains("?iv=") {
            nip04::decrypt(secret, &self.wallet, content).map_err(|e| e.to_string())
        } else {
            nip44::decrypt(secret, &self.wallet, content).map_err(|e| e.to_string())
        }
    }

    /// A call whose result is decoded as `T`.
    async fn call_as<T: DeserializeOwned>(
        &self,
        method: &'static str,
        params: Value,
        deadline: Duration,
    ) -> Result<T, BackendError> {
        let result = self.call(method, params, deadline).await?;
        serde_json::from_value(result).map_err(|e| {
            BackendError::InvalidResponse(format!("nwc: malformed {method} result: {e}"))
        })
    }

    async fn spendable(&self) -> Result<Msat, BackendError> {
        let balance: BalanceResult = self.call_as("get_balance", json!({}), self.timeout).await?;
        Ok(Msat(balance.balance))
    }
}

/// Runs `fut` within `deadline`; [`BackendError::Timeout`] when it expires.
async fn within<T>(
    deadline: Duration,
    what: &'static str,
    fut: impl Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
    match tokio::time::timeout(deadline, fut).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                call = what,
                ?deadline,
                "nwc: no answer from the wallet service in time"
            );
            Err(BackendError::Timeout)
        }
    }
}

/// Connects `relay` (or waits for its connection task) for at most `wait`.
async fn connect_relay(relay: &Relay, wait: Duration) -> Result<(), String> {
    // Tries now if the relay was never connected or was given up; otherwise does nothing.
    relay.try_connect(wait).await.map_err(|e| e.to_string())?;
    if relay.status() != RelayStatus::Connected {
        relay.wait_for_connection(wait).await;
    }
    match relay.status() {
        RelayStatus::Connected => Ok(()),
        status => Err(format!("not connected ({status})")),
    }
}

/// Whether a relay's reason for refusing an event is a deliberate refusal (NIP-01 `OK` false
/// prefixes) rather than a connection failure or a rate limit.
fn is_relay_refusal(reason: &str) -> bool {
    [
        "blocked:",
        "restricted:",
        "invalid:",
        "pow:",
        "auth-required:",
    ]
    .iter()
    .any(|p| reason.starts_with(p))
}

/// At most [`MAX_MESSAGE_CHARS`] printable characters of a peer's text.
fn clip(text: &str) -> String {
    let mut out: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if text.chars().count() > MAX_MESSAGE_CHARS {
        out.push('…');
    }
    out
}

/// What a NIP-47 method is called in [`BackendError::Unsupported`].
fn unsupported(method: &str) -> &'static str {
    match method {
        "make_invoice" => "the NWC wallet service does not implement make_invoice",
        "lookup_invoice" => "the NWC wallet service does not implement lookup_invoice",
        "pay_invoice" => "the NWC wallet service does not implement pay_invoice",
        "get_balance" => "the NWC wallet service does not implement get_balance",
        "get_info" => "the NWC wallet service does not implement get_info",
        _ => "the NWC wallet service does not implement this method",
    }
}

/// Maps a NIP-47 error answer.
fn map_error(method: &str, code: &str, message: &str) -> BackendError {
    let message = clip(message);
    let text = format!("nwc {method}: {}: {message}", clip(code));
    match code {
        "INSUFFICIENT_BALANCE" => BackendError::InsufficientBalance,
        "RESTRICTED" | "UNAUTHORIZED" => BackendError::Unauthorized(text),
        "NOT_IMPLEMENTED" => BackendError::Unsupported(unsupported(method)),
        "UNSUPPORTED_ENCRYPTION" => BackendError::Unsupported(
            "the NWC wallet service does not support the encryption offered in its info event",
        ),
        "NOT_FOUND" => BackendError::UnknownInvoice,
        // "It should retry in a few seconds": transient.
        "RATE_LIMITED" => BackendError::Unreachable(text),
        "PAYMENT_FAILED" => {
            let lower = message.to_ascii_lowercase();
            if lower.contains("already paid") || lower.contains("already been paid") {
                BackendError::AlreadyPaid
            } else if lower.contains("expired") {
                BackendError::InvoiceExpired
            } else {
                BackendError::Rejected(text)
            }
        }
        // QUOTA_EXCEEDED, INTERNAL, OTHER, and codes this version does not know.
        _ => BackendError::Rejected(text),
    }
}

fn parse_hex32(text: &str, field: &str) -> Result<[u8; 32], BackendError> {
    rules::hex32("nwc", text, field)
}

/// Non-empty text, or `None`.
fn non_empty(text: Option<String>) -> Option<String> {
    text.filter(|t| !t.trim().is_empty())
}

#[async_trait]
impl InvoiceBackend for NwcBackend {
    fn name(&self) -> &'static str {
        "nwc"
    }

    async fn create_invoice(&self, req: CreateInvoice) -> Result<IssuedInvoice, BackendError> {
        rules::check_create_request(&req)?;
        let params = json!({
            "amount": req.amount.0,
            "description": req.memo,
            "expiry": req.expiry_secs,
        });
        let made: MakeInvoiceResult = self.call_as("make_invoice", params, self.timeout).await?;
        let reported = match non_empty(made.payment_hash) {
            Some(hash) => Some(PaymentHash(parse_hex32(&hash, "payment_hash")?)),
            None => None,
        };
        let issued = rules::check_issued("nwc", &made.invoice, &req, reported)?;
        tracing::debug!(payment_hash = %issued.payment_hash, amount = %issued.amount, "nwc invoice created");
        Ok(issued)
    }

    async fn lookup_invoice(&self, hash: &PaymentHash) -> Result<InvoiceStatus, BackendError> {
        let params = json!({ "payment_hash": hash.to_hex() });
        let found: LookupResult = self.call_as("lookup_invoice", params, self.timeout).await?;
        if let Some(reported) = non_empty(found.payment_hash.clone())
            && parse_hex32(&reported, "payment_hash")? != hash.0
        {
            return Err(BackendError::InvalidResponse(format!(
                "nwc: the wallet service answered the lookup of {hash} with another payment"
            )));
        }
        if found.kind.as_deref() == Some("outgoing") {
            return Err(BackendError::InvalidResponse(format!(
                "nwc: the wallet service reports {hash} as an outgoing payment, not an invoice"
            )));
        }
        let invoice = match non_empty(found.invoice.clone()) {
            Some(text) => {
                let invoice = Invoice::parse(&text).map_err(|e| {
                    BackendError::InvalidResponse(format!(
                        "nwc: the wallet service reports an invalid invoice for {hash}: {e}"
                    ))
                })?;
                if invoice.payment_hash() != *hash {
                    return Err(BackendError::InvalidResponse(format!(
                        "nwc: the wallet service answered the lookup of {hash} with another \
                         invoice"
                    )));
                }
                Some(invoice)
            }
            None => None,
        };
        let amount = invoice
            .as_ref()
            .and_then(Invoice::amount)
            .or(found.amount.map(Msat))
            .ok_or_else(|| {
                BackendError::InvalidResponse(format!(
                    "nwc: the wallet service reports no amount for invoice {hash}"
                ))
            })?;
        let expires_at = found
            .expires_at
            .or(invoice.as_ref().map(Invoice::expires_at));
        let settled = match found.state.as_deref() {
            Some("settled") => true,
            Some("pending" | "expired" | "failed") => false,
            Some(other) => {
                return Err(BackendError::InvalidResponse(format!(
                    "nwc: unknown invoice state {:?}",
                    clip(other)
                )));
            }
            // Older wallet services have no `state`: a settlement time means paid.
            None => found.settled_at.is_some_and(|t| t > 0),
        };
        let state = if settled {
            let preimage = non_empty(found.preimage).ok_or_else(|| {
                BackendError::InvalidResponse(format!(
                    "nwc: the wallet service reports invoice {hash} settled without a preimage"
                ))
            })?;
            let preimage = Preimage(parse_hex32(&preimage, "preimage")?);
            let received = found.amount.map(Msat);
            let settled_at = found.settled_at.unwrap_or(0);
            rules::check_settled("nwc", hash, preimage, received, amount, settled_at)?
        } else {
            match found.state.as_deref() {
                Some("expired") => InvoiceState::Expired,
                Some("failed") => InvoiceState::Canceled,
                _ if expires_at.is_some_and(|t| t <= crate::now_unix()) => InvoiceState::Expired,
                _ => InvoiceState::Pending,
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
impl PaymentBackend for NwcBackend {
    fn name(&self) -> &'static str {
        "nwc"
    }

    /// Pays with `pay_invoice`. NIP-47 takes no fee limit: `max_fee` is only checked after the
    /// fact (a warning is logged when the fee exceeded it).
    async fn pay_invoice(&self, bolt11: &str, max_fee: Msat) -> Result<Payment, BackendError> {
        let (invoice, amount) = rules::check_payable(bolt11, crate::now_unix())?;
        let params = json!({ "invoice": invoice.as_str() });
        let paid: PayResult = self
            .call_as("pay_invoice", params, self.payment_timeout)
            .await?;
        let payment = Payment {
            payment_hash: invoice.payment_hash(),
            preimage: Preimage(parse_hex32(paid.preimage.trim(), "preimage")?),
            amount,
            fee: Msat(paid.fees_paid.unwrap_or(0)),
        };
        // NIP-47 takes no fee limit: one above `max_fee` is only logged.
        rules::check_paid("nwc", &invoice, payment, max_fee)
    }

    /// `get_balance`.
    async fn balance(&self) -> Result<Msat, BackendError> {
        self.spendable().await
    }

    /// `lookup_invoice` by `payment_hash`: an `outgoing` transaction of this wallet, by its
    /// `state` (`settled` with its preimage, `pending`, `failed`); `NOT_FOUND`, or a
    /// transaction that is not outgoing, is unknown.
    async fn lookup_payment(&self, hash: &PaymentHash) -> Result<OutgoingState, BackendError> {
        let params = json!({ "payment_hash": hash.to_hex() });
        let found: LookupResult = match self.call_as("lookup_invoice", params, self.timeout).await {
            Ok(found) => found,
            Err(BackendError::UnknownInvoice) => return Ok(OutgoingState::Unknown),
            Err(e) => return Err(e),
        };
        if let Some(reported) = non_empty(found.payment_hash.clone())
            && parse_hex32(&reported, "payment_hash")? != hash.0
        {
            return Err(BackendError::InvalidResponse(format!(
                "nwc: the wallet service answered the lookup of {hash} with another payment"
            )));
        }
        if found.kind.as_deref() != Some("outgoing") {
            return Ok(OutgoingState::Unknown);
        }
        let settled = match found.state.as_deref() {
            Some("settled") => true,
            Some("pending") => return Ok(OutgoingState::Pending),
            Some("failed" | "expired") => {
                return Ok(OutgoingState::Failed(
                    "nwc: the wallet service reports the payment as failed".into(),
                ));
            }
            Some(other) => {
                return Err(BackendError::InvalidResponse(format!(
                    "nwc: unknown payment state {:?}",
                    clip(other)
                )));
            }
            None => found.settled_at.is_some_and(|t| t > 0),
        };
        if !settled {
            return Ok(OutgoingState::Pending);
        }
        let preimage = non_empty(found.preimage).ok_or_else(|| {
            BackendError::InvalidResponse(format!(
                "nwc: the wallet service reports payment {hash} settled without a preimage"
            ))
        })?;
        OutgoingState::succeeded(
            hash,
            Preimage(parse_hex32(&preimage, "preimage")?),
            Msat(found.amount.unwrap_or(0)),
            Msat(found.fees_paid.unwrap_or(0)),
        )
    }
}

#[async_trait]
impl Diagnose for NwcBackend {
    /// `get_info`, then `get_balance`. A connection allowed neither fails with the `get_info`
    /// error; one allowed only one of them reports what it can.
    async fn info(&self) -> Result<NodeInfo, BackendError> {
        let info = match self
            .call_as::<InfoResult>("get_info", json!({}), self.timeout)
            .await
        {
            Ok(info) => Ok(info),
            Err(e @ (BackendError::Unauthorized(_) | BackendError::Unsupported(_))) => Err(e),
            Err(e) => return Err(e),
        };
        let balance = match self.spendable().await {
            Ok(balance) => Some(balance),
            Err(BackendError::Unauthorized(_) | BackendError::Unsupported(_)) => None,
            Err(e) => return Err(e),
        };
        let info = match (info, balance) {
            (Ok(info), _) => info,
            (Err(_), Some(_)) => InfoResult::default(),
            (Err(e), None) => return Err(e),
        };
        Ok(NodeInfo {
            backend: "nwc",
            alias: non_empty(info.alias),
            node_id: non_empty(info.pubkey),
            network: non_empty(info.network).map(|n| rules::normalize_network(&n)),
            balance,
        })
    }
}

/// A NIP-47 response, decrypted.
#[derive(Deserialize)]
struct Envelope {
    result_type: String,
    #[serde(default)]
    error: Option<ErrorObject>,
    #[serde(default)]
    result: Option<Value>,
}

#[derive(Deserialize)]
struct ErrorObject {
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct MakeInvoiceResult {
    invoice: String,
    #[serde(default)]
    payment_hash: Option<String>,
}

#[derive(Deserialize)]
struct LookupResult {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    invoice: Option<String>,
    #[serde(default)]
    preimage: Option<String>,
    #[serde(default)]
    payment_hash: Option<String>,
    #[serde(default)]
    amount: Option<u64>,
    #[serde(default)]
    expires_at: Option<u64>,
    #[serde(default)]
    settled_at: Option<u64>,
    #[serde(default)]
    fees_paid: Option<u64>,
}

#[derive(Deserialize)]
struct PayResult {
    preimage: String,
    #[serde(default)]
    fees_paid: Option<u64>,
}

#[derive(Deserialize)]
struct BalanceResult {
    balance: u64,
}

#[derive(Default, Deserialize)]
struct InfoResult {
    #[serde(default)]
    alias: Option<String>,
    /// The methods this connection may use (NIP-47 `get_info`).
    #[serde(default)]
    methods: Option<Vec<String>>,
    #[serde(default)]
    pubkey: Option<String>,
    #[serde(default)]
    network: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const WALLET: &str = "b889ff5b1513b641e2a139f661a661364979c5beee91842f8f0ef42ab558e9d4";
    const SECRET: &str = "71a8c14c1407c113601079c4302dab36460f0ccd0ad506f1f2dc73b5100e4f3c";

    fn uri(query: &str) -> String {
        format!("{URI_SCHEME}://{WALLET}?{query}")
    }

    #[test]
    fn config_defaults_redaction_and_unknown_fields() {
        let text = uri(&format!(
            "relay=wss%3A%2F%2Frelay.example.com&secret={SECRET}&lud16=a%40b.c"
        ));
        let c: NwcConfig = serde_json::from_value(json!({ "uri": text })).unwrap();
        assert_eq!((c.timeout_secs, c.payment_timeout_secs), (30, 60));
        let b = NwcBackend::new(&c).unwrap();
        let dbg = format!("{b:?} {c:?}");
        assert!(!dbg.contains(SECRET), "{dbg}");
        assert!(dbg.contains(WALLET), "{dbg}");
        assert_eq!(b.relays(), vec!["wss://relay.example.com".to_owned()]);
        assert_eq!(b.lud16.as_deref(), Some("a@b.c"));
        assert_eq!(b.wallet_pubkey(), WALLET);
        assert!(
            serde_json::from_value::<NwcConfig>(json!({ "uri": "x", "relay": "wss://r" })).is_err()
        );
        let bad = NwcConfig {
            timeout_secs: 0,
            ..c.clone()
        };
        assert!(matches!(
            NwcBackend::new(&bad),
            Err(NwcConfigError::Invalid(_))
        ));
    }

    #[test]
    fn malformed_uris_are_named_without_the_secret() {
        let cases = [
            ("https://example.com", "expected a nostr+walletconnect://"),
            (
                &format!("{URI_SCHEME}://abcd?relay=wss://r.example&secret={SECRET}"),
                "64 hex",
            ),
            (&uri(&format!("secret={SECRET}")), "no relay="),
            (&uri("relay=wss://r.example"), "no secret="),
            (&uri("relay=wss://r.example&secret=1234"), "64 hex"),
            (
                &uri(&format!("relay=https://r.example&secret={SECRET}")),
                "relay",
            ),
            (
                &uri(&format!(
                    "relay=wss://r.example&secret={SECRET}&secret={SECRET}"
                )),
                "more than one secret",
            ),
            (
                &uri(&format!("relay=wss://r.example&secret={}", "0".repeat(64))),
                "not a valid secp256k1 secret",
            ),
        ];
        for (text, expected) in cases {
            let c = NwcConfig {
                uri: SecretSource::Inline(text.to_owned()),
                timeout_secs: 30,
                payment_timeout_secs: 60,
            };
            let e = NwcBackend::new(&c).unwrap_err();
            let shown = e.to_string();
            assert!(
                matches!(e, NwcConfigError::InvalidUri(_)),
                "{text}: {shown}"
            );
            assert!(shown.contains(expected), "{text}: {shown}");
            assert!(!shown.contains(SECRET), "{shown}");
        }
        let ok = parse_uri(&format!(
            "{URI_SCHEME}:{WALLET}?relay=ws://127.0.0.1:7777&relay=ws://127.0.0.1:7777&secret={SECRET}"
        ))
        .unwrap();
        assert_eq!(ok.relays.len(), 1);
    }

    #[test]
    fn error_codes_map() {
        use BackendError as E;
        assert_eq!(
            map_error("pay_invoice", "INSUFFICIENT_BALANCE", "x"),
            E::InsufficientBalance
        );
        assert!(matches!(
            map_error("pay_invoice", "RESTRICTED", "x"),
            E::Unauthorized(_)
        ));
        assert!(matches!(
            map_error("get_info", "UNAUTHORIZED", "x"),
            E::Unauthorized(_)
        ));
        assert_eq!(
            map_error("make_invoice", "NOT_IMPLEMENTED", "x"),
            E::Unsupported("the NWC wallet service does not implement make_invoice")
        );
        assert_eq!(
            map_error("lookup_invoice", "NOT_FOUND", "x"),
            E::UnknownInvoice
        );
        assert!(map_error("get_balance", "RATE_LIMITED", "x").is_transient());
        for code in ["QUOTA_EXCEEDED", "INTERNAL", "OTHER", "SOMETHING_NEW"] {
            let e = map_error("pay_invoice", code, "why");
            assert!(matches!(&e, E::Rejected(m) if m.contains(code) && m.contains("why")));
        }
        assert_eq!(
            map_error(
                "pay_invoice",
                "PAYMENT_FAILED",
                "Invoice has already been paid"
            ),
            E::AlreadyPaid
        );
        assert_eq!(
            map_error("pay_invoice", "PAYMENT_FAILED", "invoice expired"),
            E::InvoiceExpired
        );
        assert!(matches!(
            map_error("pay_invoice", "PAYMENT_FAILED", "no route"),
            E::Rejected(_)
        ));
        let long = "x".repeat(5000);
        assert!(map_error("pay_invoice", "OTHER", &long).to_string().len() < 400);
    }

    #[test]
    fn encryption_is_negotiated_from_the_info_event() {
        let keys = Keys::generate();
        let info = |tags: Vec<Tag>| {
            EventBuilder::new(Kind::WalletConnectInfo, "pay_invoice get_balance")
                .tags(tags)
                .sign_with_keys(&keys)
                .unwrap()
        };
        let enc = |v: &str| Tag::custom(TagKind::custom("encryption"), [v]);
        assert_eq!(negotiate(None), Encryption::Nip04);
        assert_eq!(negotiate(Some(&info(vec![]))), Encryption::Nip04);
        assert_eq!(
            negotiate(Some(&info(vec![enc("nip04")]))),
            Encryption::Nip04
        );
        assert_eq!(
            negotiate(Some(&info(vec![enc("nip44_v2 nip04")]))),
            Encryption::Nip44
        );
        assert_eq!(rules::normalize_network("mainnet"), "bitcoin");
        assert_eq!(rules::normalize_network("regtest"), "regtest");
    }
}
