//! The embedded dev backend: a fake Lightning node inside the process, for demos and tests.
//!
//! **It moves no real money.** It signs genuine BOLT11 invoices (regtest, `lnbcrt...`) with its
//! own key and "settles" them when asked through its [`PaymentBackend`] side, revealing the
//! preimage. Any wallet parses its invoices, but only this same backend (directly, or through
//! the gateway's dev pay endpoint and [`crate::DevPayWallet`]) can pay them.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::rules;
use crate::{
    BackendError, CreateInvoice, InvoiceBackend, InvoiceState, InvoiceStatus, IssuedInvoice, Msat,
    OutgoingState, Payment, PaymentBackend, PaymentHash, Preimage,
};
use async_trait::async_trait;
use bitcoin::hashes::{Hash as _, sha256};
use bitcoin::secp256k1::{All, PublicKey, Secp256k1, SecretKey};
use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};

/// How long an unpaid invoice is remembered after it expires (so lookups report
/// [`InvoiceState::Expired`] rather than [`BackendError::UnknownInvoice`]), in seconds.
pub const EXPIRED_RETENTION_SECS: u64 = 600;

/// Default limit on unpaid invoices held in memory; see [`DevBackend::with_max_unpaid`].
pub const DEFAULT_MAX_UNPAID: usize = 100_000;

/// The `min_final_cltv_expiry_delta` written into dev invoices.
const MIN_FINAL_CLTV_EXPIRY_DELTA: u64 = 80;

type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

struct Entry {
    preimage: Preimage,
    amount: Msat,
    expires_at: u64,
    settled_at: Option<u64>,
}

#[derive(Default)]
struct State {
    invoices: HashMap<PaymentHash, Entry>,
    /// Unpaid invoices ordered by expiry, for pruning: `(expires_at, hash)`.
    unpaid_by_expiry: BTreeSet<(u64, PaymentHash)>,
    /// Total received by settled invoices.
    received: Msat,
}

impl State {
    /// Forgets unpaid invoices that expired more than [`EXPIRED_RETENTION_SECS`] ago. Each
    /// invoice is pruned at most once, so the cost is amortised over the inserts.
    fn prune(&mut self, now: u64) {
        while let Some(&(expires_at, hash)) = self.unpaid_by_expiry.first() {
            if expires_at.saturating_add(EXPIRED_RETENTION_SECS) > now {
                break;
            }
            self.unpaid_by_expiry.pop_first();
            self.invoices.remove(&hash);
        }
    }
}

/// An in-process fake Lightning node for demos and tests. **It moves no real money.**
///
/// As an [`InvoiceBackend`] it issues real, signed regtest BOLT11 invoices and remembers their
/// preimages; as a [`PaymentBackend`] it "pays" only invoices it issued itself, by marking them
/// settled and returning the preimage. Share one instance (in an `Arc`) between the gateway and
/// its dev pay endpoint.
///
/// Memory: unpaid invoices are forgotten [`EXPIRED_RETENTION_SECS`] after they expire, and at
/// most [`DEFAULT_MAX_UNPAID`] (configurable) are held at once; settled invoices are kept for the
/// life of the process.
pub struct DevBackend {
    secp: Secp256k1<All>,
    secret: SecretKey,
    node_id: PublicKey,
    clock: Clock,
    max_unpaid: usize,
    state: Mutex<State>,
}

impl DevBackend {
    /// A dev node whose key is `node_secret`. Persist the secret to keep the node id stable
    /// across restarts. A value that is not a valid secp256k1 secret key (zero, or not below
    /// the curve order) is deterministically re-hashed into one, so this never fails.
    ///
    /// Logs a warning that this backend moves no real money.
    pub fn new(node_secret: [u8; 32]) -> Self {
        let secp = Secp256k1::new();
        let secret = secret_key_from(node_secret);
        let node_id = PublicKey::from_secret_key(&secp, &secret);
        tracing::warn!(
            node_id = %node_id,
            "DEV LIGHTNING BACKEND: moves NO real money; invoices are regtest and can only be \
             paid through this process. For demos and tests only, never in production."
        );
        DevBackend {
            secp,
            secret,
            node_id,
            clock: Arc::new(crate::now_unix),
            max_unpaid: DEFAULT_MAX_UNPAID,
            state: Mutex::new(State::default()),
        }
    }

    /// A dev node with a fresh random key (its node id changes on every start).
    pub fn random() -> Self {
        DevBackend::new(rand::random())
    }

    /// Replaces the clock (unix seconds) used for invoice timestamps and expiry; for tests.
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Sets how many unpaid invoices may be held at once (at least 1). Beyond it,
    /// [`InvoiceBackend::create_invoice`] fails with [`BackendError::Rejected`] until some are
    /// paid or pruned.
    pub fn with_max_unpaid(mut self, max_unpaid: usize) -> Self {
        self.max_unpaid = max_unpaid.max(1);
        self
    }

    /// This node's id: its compressed public key, the payee of every invoice it issues.
    pub fn node_id(&self) -> [u8; 33] {
        self.node_id.serialize()
    }

    /// Number of invoices currently remembered (unpaid and settled).
    pub fn tracked_invoices(&self) -> usize {
        self.lock().invoices.len()
    }

    /// Number of unpaid invoices currently remembered (pending, or recently expired).
    pub fn unpaid_invoices(&self) -> usize {
        self.lock().unpaid_by_expiry.len()
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock, but never let poisoning take the node down.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for DevBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevBackend")
            .field("node_id", &self.node_id.to_string())
            .finish_non_exhaustive()
    }
}

/// `seed` itself if it is a valid secret key, else the first valid key in the chain of its
/// SHA-256 hashes (the chance of needing even one step for a random seed is about 2^-128).
fn secret_key_from(seed: [u8; 32]) -> SecretKey {
    let mut bytes = seed;
    loop {
        if let Ok(key) = SecretKey::from_slice(&bytes) {
            return key;
        }
        bytes = sha256::Hash::hash(&bytes).to_byte_array();
    }
}

#[async_trait]
impl InvoiceBackend for DevBackend {
    fn name(&self) -> &'static str {
        "dev"
    }

    async fn create_invoice(&self, req: CreateInvoice) -> Result<IssuedInvoice, BackendError> {
        rules::check_create_request(&req)?;

        let now = self.now();
        let preimage = Preimage::random();
        let payment_hash = preimage.payment_hash();
        let expiry = u64::from(req.expiry_secs);
        let invoice = InvoiceBuilder::new(Currency::Regtest)
            .description(req.memo)
            .amount_milli_satoshis(req.amount.0)
            .payment_hash(sha256::Hash::from_byte_array(payment_hash.0))
            .payment_secret(PaymentSecret(rand::random()))
            .duration_since_epoch(Duration::from_secs(now))
            .expiry_time(Duration::from_secs(expiry))
            .min_final_cltv_expiry_delta(MIN_FINAL_CLTV_EXPIRY_DELTA)
            .build_signed(|msg| self.secp.sign_ecdsa_recoverable(msg, &self.secret))
            .map_err(|e| BackendError::Rejected(format!("cannot build the invoice: {e}")))?;
        let expires_at = now.saturating_add(expiry);

        let mut state = self.lock();
        state.prune(now);
        if state.unpaid_by_expiry.len() >= self.max_unpaid {
            return Err(BackendError::Rejected(format!(
                "the dev backend holds {} unpaid invoices already (its limit)",
                self.max_unpaid
            )));
        }
        if state.invoices.contains_key(&payment_hash) {
            // 2^-256: a broken random number generator, not bad luck.
            return Err(BackendError::Rejected(
                "payment hash collision; is the random number generator broken?".into(),
            ));
        }
        state.invoices.insert(
            payment_hash,
            Entry {
                preimage,
                amount: req.amount,
                expires_at,
                settled_at: None,
            },
        );
        state.unpaid_by_expiry.insert((expires_at, payment_hash));
        drop(state);

        Ok(IssuedInvoice {
            bolt11: invoice.to_string(),
            payment_hash,
            amount: req.amount,
            expires_at,
        })
    }

    async fn lookup_invoice(&self, hash: &PaymentHash) -> Result<InvoiceStatus, BackendError> {
        let now = self.now();
        let state = self.lock();
        let entry = state
            .invoices
            .get(hash)
            .ok_or(BackendError::UnknownInvoice)?;
        let state = match entry.settled_at {
            Some(settled_at) => InvoiceState::Settled {
                preimage: entry.preimage,
                settled_at,
            },
            None if now >= entry.expires_at => InvoiceState::Expired,
            None => InvoiceState::Pending,
        };
        Ok(InvoiceStatus {
            payment_hash: *hash,
            amount: entry.amount,
            state,
        })
    }
}

#[async_trait]
impl PaymentBackend for DevBackend {
    fn name(&self) -> &'static str {
        "dev"
    }

    /// Settles an invoice this backend issued. Fees are always zero, so `max_fee` never binds.
    async fn pay_invoice(&self, bolt11: &str, _max_fee: Msat) -> Result<Payment, BackendError> {
        // Only parsed here: expiry is checked on this backend's own clock, after the payee.
        let invoice = rules::parse_invoice(bolt11)?;
        if invoice.payee() != self.node_id() {
            return Err(BackendError::Rejected(
                "the dev backend only pays invoices it issued".into(),
            ));
        }
        let hash = invoice.payment_hash();
        let now = self.now();

        let mut state = self.lock();
        let Some(entry) = state.invoices.get_mut(&hash) else {
            // Ours but forgotten: either pruned after expiry, or issued before a restart.
            return Err(if invoice.is_expired(now) {
                BackendError::InvoiceExpired
            } else {
                BackendError::UnknownInvoice
            });
        };
        if entry.settled_at.is_some() {
            return Err(BackendError::AlreadyPaid);
        }
        if now >= entry.expires_at {
            return Err(BackendError::InvoiceExpired);
        }
        entry.settled_at = Some(now);
        let payment = Payment {
            payment_hash: hash,
            preimage: entry.preimage,
            amount: entry.amount,
            fee: Msat::ZERO,
        };
        let expires_at = entry.expires_at;
        state.unpaid_by_expiry.remove(&(expires_at, hash));
        state.received = Msat(state.received.0.saturating_add(payment.amount.0));
        drop(state);

        rules::check_paid("dev", &invoice, payment, Msat::ZERO)
    }

    /// Total received by invoices settled so far.
    async fn balance(&self) -> Result<Msat, BackendError> {
        Ok(self.lock().received)
    }

    /// The dev backend pays only its own invoices, atomically: a settled invoice is a
    /// succeeded payment, an expired unpaid one can no longer be paid (failed), and an open or
    /// forgotten one was never paid (unknown).
    async fn lookup_payment(&self, hash: &PaymentHash) -> Result<OutgoingState, BackendError> {
        match InvoiceBackend::lookup_invoice(self, hash).await {
            Ok(status) => Ok(outgoing_from_invoice(hash, &status)),
            Err(BackendError::UnknownInvoice) => Ok(OutgoingState::Unknown),
            Err(e) => Err(e),
        }
    }
}

/// The outgoing side of a dev invoice's state (the dev payer and payee are one node).
pub fn outgoing_from_invoice(hash: &PaymentHash, status: &InvoiceStatus) -> OutgoingState {
    match status.state {
        InvoiceState::Settled { preimage, .. } => {
            OutgoingState::succeeded(hash, preimage, status.amount, Msat::ZERO)
                .unwrap_or_else(|e| OutgoingState::Failed(e.to_string()))
        }
        InvoiceState::Expired => OutgoingState::Failed("the invoice expired unpaid".into()),
        InvoiceState::Canceled => OutgoingState::Failed("the invoice was canceled".into()),
        InvoiceState::Pending => OutgoingState::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use turnpike_l402::bolt11::{Invoice, Network};

    use super::*;

    const T0: u64 = 1_750_000_000;

    fn backend_at(clock: &Arc<AtomicU64>) -> DevBackend {
        let c = Arc::clone(clock);
        DevBackend::new([7; 32]).with_clock(move || c.load(Ordering::SeqCst))
    }

    fn req(amount: u64, expiry_secs: u32) -> CreateInvoice {
        CreateInvoice {
            amount: Msat(amount),
            memo: "GET /weather".into(),
            expiry_secs,
        }
    }

    #[tokio::test]
    async fn payments_are_looked_up_by_hash() {
        let clock = Arc::new(AtomicU64::new(T0));
        let backend = backend_at(&clock);
        let paid = backend.create_invoice(req(21_000, 300)).await.unwrap();
        let open = backend.create_invoice(req(5_000, 300)).await.unwrap();
        let payment = backend.pay_invoice(&paid.bolt11, Msat(0)).await.unwrap();
        assert_eq!(
            backend.lookup_payment(&paid.payment_hash).await.unwrap(),
            OutgoingState::Succeeded(payment)
        );
        // Open: never paid (the dev backend pays atomically).
        assert_eq!(
            backend.lookup_payment(&open.payment_hash).await.unwrap(),
            OutgoingState::Unknown
        );
        clock.store(T0 + 301, Ordering::SeqCst);
        assert!(matches!(
            backend.lookup_payment(&open.payment_hash).await.unwrap(),
            OutgoingState::Failed(_)
        ));
        assert_eq!(
            backend.lookup_payment(&PaymentHash([3; 32])).await.unwrap(),
            OutgoingState::Unknown
        );
    }

    #[tokio::test]
    async fn issues_parseable_regtest_invoices() {
        let clock = Arc::new(AtomicU64::new(T0));
        let backend = backend_at(&clock);
        let issued = backend.create_invoice(req(21_000, 300)).await.unwrap();
        assert!(issued.bolt11.starts_with("lnbcrt"));
        assert_eq!(issued.amount, Msat(21_000));
        assert_eq!(issued.expires_at, T0 + 300);

        let inv = Invoice::parse(&issued.bolt11).unwrap();
        assert_eq!(inv.amount(), Some(Msat(21_000)));
        assert_eq!(inv.payment_hash(), issued.payment_hash);
        assert_eq!(inv.network(), Network::Regtest);
        assert_eq!(inv.description(), Some("GET /weather"));
        assert_eq!(inv.timestamp(), T0);
        assert_eq!(inv.expires_at(), T0 + 300);
        assert_eq!(inv.payee(), backend.node_id());
        assert!(inv.has_features());
        // The strict upstream parser accepts it too: any real wallet would.
        assert!(
            issued
                .bolt11
                .parse::<lightning_invoice::Bolt11Invoice>()
                .is_ok()
        );

        let status = backend.lookup_invoice(&issued.payment_hash).await.unwrap();
        assert_eq!(status.state, InvoiceState::Pending);
        assert_eq!(status.amount, Msat(21_000));
    }

    #[tokio::test]
    async fn node_id_is_stable_for_a_secret() {
        assert_eq!(
            DevBackend::new([7; 32]).node_id(),
            DevBackend::new([7; 32]).node_id()
        );
        assert_ne!(
            DevBackend::new([7; 32]).node_id(),
            DevBackend::new([8; 32]).node_id()
        );
        // Invalid secret keys still give a working, stable node.
        assert_eq!(
            DevBackend::new([0; 32]).node_id(),
            DevBackend::new([0; 32]).node_id()
        );
        assert_eq!(
            DevBackend::new([0xff; 32]).node_id(),
            DevBackend::new([0xff; 32]).node_id()
        );
    }

    #[tokio::test]
    async fn pays_settles_and_counts() {
        let clock = Arc::new(AtomicU64::new(T0));
        let backend = backend_at(&clock);
        assert_eq!(backend.balance().await.unwrap(), Msat(0));
        let issued = backend.create_invoice(req(5_000, 300)).await.unwrap();

        clock.store(T0 + 10, Ordering::SeqCst);
        let paid = backend.pay_invoice(&issued.bolt11, Msat(0)).await.unwrap();
        assert_eq!(paid.payment_hash, issued.payment_hash);
        assert!(paid.preimage.matches(&issued.payment_hash));
        assert_eq!(paid.amount, Msat(5_000));
        assert_eq!(paid.fee, Msat(0));

        let status = backend.lookup_invoice(&issued.payment_hash).await.unwrap();
        assert_eq!(
            status.state,
            InvoiceState::Settled {
                preimage: paid.preimage,
                settled_at: T0 + 10
            }
        );
        assert_eq!(backend.balance().await.unwrap(), Msat(5_000));

        // Settled stays settled, even after expiry.
        clock.store(T0 + 10_000, Ordering::SeqCst);
        assert!(
            backend
                .lookup_invoice(&issued.payment_hash)
                .await
                .unwrap()
                .state
                .is_settled()
        );

        let issued2 = backend.create_invoice(req(1_000, 300)).await.unwrap();
        backend.pay_invoice(&issued2.bolt11, Msat(0)).await.unwrap();
        assert_eq!(backend.balance().await.unwrap(), Msat(6_000));
    }

    #[tokio::test]
    async fn paying_twice_is_refused() {
        let backend = DevBackend::random();
        let issued = backend.create_invoice(req(1_000, 60)).await.unwrap();
        backend.pay_invoice(&issued.bolt11, Msat(0)).await.unwrap();
        assert_eq!(
            backend.pay_invoice(&issued.bolt11, Msat(0)).await,
            Err(BackendError::AlreadyPaid)
        );
        assert_eq!(backend.balance().await.unwrap(), Msat(1_000));
    }

    #[tokio::test]
    async fn expired_invoices_cannot_be_paid() {
        let clock = Arc::new(AtomicU64::new(T0));
        let backend = backend_at(&clock);
        let issued = backend.create_invoice(req(1_000, 60)).await.unwrap();
        clock.store(T0 + 60, Ordering::SeqCst);
        assert_eq!(
            backend
                .lookup_invoice(&issued.payment_hash)
                .await
                .unwrap()
                .state,
            InvoiceState::Expired
        );
        assert_eq!(
            backend.pay_invoice(&issued.bolt11, Msat(0)).await,
            Err(BackendError::InvoiceExpired)
        );
        // Still expired once forgotten.
        clock.store(T0 + 60 + EXPIRED_RETENTION_SECS + 1, Ordering::SeqCst);
        backend.create_invoice(req(1, 60)).await.unwrap();
        assert_eq!(
            backend.lookup_invoice(&issued.payment_hash).await,
            Err(BackendError::UnknownInvoice)
        );
        assert_eq!(
            backend.pay_invoice(&issued.bolt11, Msat(0)).await,
            Err(BackendError::InvoiceExpired)
        );
        assert_eq!(backend.balance().await.unwrap(), Msat(0));
    }

    #[tokio::test]
    async fn foreign_and_bad_invoices_are_rejected() {
        let ours = DevBackend::random();
        let theirs = DevBackend::random();
        let issued = theirs.create_invoice(req(1_000, 60)).await.unwrap();
        assert_eq!(
            ours.pay_invoice(&issued.bolt11, Msat(0)).await,
            Err(BackendError::Rejected(
                "the dev backend only pays invoices it issued".into()
            ))
        );
        assert!(matches!(
            ours.pay_invoice("lnbcrt1garbage", Msat(0)).await,
            Err(BackendError::Rejected(_))
        ));
        assert_eq!(
            ours.lookup_invoice(&issued.payment_hash).await,
            Err(BackendError::UnknownInvoice)
        );
    }

    #[tokio::test]
    async fn our_invoice_unknown_after_restart() {
        // Same key, new process: the invoice is ours but its preimage is gone.
        let before = DevBackend::new([9; 32]);
        let issued = before.create_invoice(req(1_000, 600)).await.unwrap();
        let after = DevBackend::new([9; 32]);
        assert_eq!(
            after.pay_invoice(&issued.bolt11, Msat(0)).await,
            Err(BackendError::UnknownInvoice)
        );
    }

    #[tokio::test]
    async fn invalid_requests_are_rejected() {
        let backend = DevBackend::random();
        for bad in [
            req(0, 60),
            req(1_000, 0),
            CreateInvoice {
                memo: "x".repeat(640),
                ..req(1_000, 60)
            },
        ] {
            assert!(matches!(
                backend.create_invoice(bad).await,
                Err(BackendError::Rejected(_))
            ));
        }
        // 639 bytes is fine.
        let ok = CreateInvoice {
            memo: "x".repeat(639),
            ..req(1_000, 60)
        };
        backend.create_invoice(ok).await.unwrap();
    }

    #[tokio::test]
    async fn expired_unpaid_invoices_are_pruned() {
        let clock = Arc::new(AtomicU64::new(T0));
        let backend = backend_at(&clock);
        for _ in 0..500 {
            backend.create_invoice(req(1_000, 60)).await.unwrap();
        }
        let paid = backend.create_invoice(req(2_000, 60)).await.unwrap();
        backend.pay_invoice(&paid.bolt11, Msat(0)).await.unwrap();
        assert_eq!(backend.tracked_invoices(), 501);
        assert_eq!(backend.unpaid_invoices(), 500);

        // Within the retention window nothing is dropped.
        clock.store(T0 + 60 + EXPIRED_RETENTION_SECS - 1, Ordering::SeqCst);
        backend.create_invoice(req(1_000, 60)).await.unwrap();
        assert_eq!(backend.unpaid_invoices(), 501);

        // Past it, the next insert prunes every expired unpaid invoice; settled ones stay.
        clock.store(T0 + 60 + EXPIRED_RETENTION_SECS, Ordering::SeqCst);
        let fresh = backend.create_invoice(req(1_000, 60)).await.unwrap();
        assert_eq!(backend.unpaid_invoices(), 2);
        assert_eq!(backend.tracked_invoices(), 3);
        assert!(
            backend
                .lookup_invoice(&paid.payment_hash)
                .await
                .unwrap()
                .state
                .is_settled()
        );
        assert_eq!(
            backend
                .lookup_invoice(&fresh.payment_hash)
                .await
                .unwrap()
                .state,
            InvoiceState::Pending
        );

        // Steady churn of unpaid invoices keeps memory bounded.
        for i in 0..2_000u64 {
            clock.store(T0 + 10_000 + i * 10, Ordering::SeqCst);
            backend.create_invoice(req(1_000, 60)).await.unwrap();
        }
        // Retention 600 s + expiry 60 s at one invoice per 10 s: about 66 held.
        assert!(
            backend.unpaid_invoices() <= 67,
            "{}",
            backend.unpaid_invoices()
        );
    }

    #[tokio::test]
    async fn unpaid_invoices_are_capped() {
        let backend = DevBackend::random().with_max_unpaid(3);
        let mut issued = Vec::new();
        for _ in 0..3 {
            issued.push(backend.create_invoice(req(1_000, 60)).await.unwrap());
        }
        assert!(matches!(
            backend.create_invoice(req(1_000, 60)).await,
            Err(BackendError::Rejected(_))
        ));
        // Paying one frees a slot.
        backend
            .pay_invoice(&issued[0].bolt11, Msat(0))
            .await
            .unwrap();
        backend.create_invoice(req(1_000, 60)).await.unwrap();
    }

    #[test]
    fn debug_does_not_leak_the_key() {
        let backend = DevBackend::new([7; 32]);
        let dbg = format!("{backend:?}");
        assert!(dbg.contains(&hex::encode(backend.node_id())));
        assert!(!dbg.contains(&hex::encode([7u8; 32])));
    }
}
