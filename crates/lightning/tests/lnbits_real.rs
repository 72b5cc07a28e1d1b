//! The LNbits backend against a real LNbits (1.6.2, FakeWallet funding source: no real money).
//!
//! Start one with `scripts/lnbits.sh install && scripts/lnbits.sh start` and point
//! `TURNPIKE_LNBITS_INFO` at the JSON file it writes (`target/lnbits/info.json`);
//! `scripts/test.sh` does all of this. Without it these tests print `SKIPPED` and pass, unless
//! `TURNPIKE_STRICT_TESTS=1`, where they fail.
//!
//! Every test creates its own wallets, so the tests are independent of each other and of
//! anything else on that LNbits.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use turnpike_l402::bolt11::Invoice;
use turnpike_lightning::lnbits::{LnbitsBackend, LnbitsConfig};
use turnpike_lightning::{
    BackendError, CreateInvoice, Diagnose, InvoiceBackend, InvoiceState, Msat, PaymentBackend,
    PaymentHash, SecretSource, check_payment,
};

/// The LNbits under test, as described by the info file of `scripts/lnbits.sh`.
struct Lnbits {
    url: String,
    access_token: String,
    http: reqwest::Client,
}

/// A fresh wallet of its own account.
struct Wallet {
    id: String,
    name: String,
    admin_key: String,
    invoice_key: String,
}

/// The LNbits to test against, or `None` (after printing why) when there is none and strict
/// mode is off.
fn lnbits(test: &str) -> Option<Lnbits> {
    let strict = std::env::var("TURNPIKE_STRICT_TESTS").is_ok_and(|v| v == "1");
    let problem = match std::env::var("TURNPIKE_LNBITS_INFO") {
        Err(_) => "TURNPIKE_LNBITS_INFO is not set".to_owned(),
        Ok(path) => match std::fs::read_to_string(&path) {
            Err(e) => format!("cannot read TURNPIKE_LNBITS_INFO={path}: {e}"),
            Ok(text) => {
                let info: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{path} is not JSON: {e}"));
                let field = |name: &str| {
                    info[name]
                        .as_str()
                        .unwrap_or_else(|| panic!("{path} has no string {name:?}"))
                        .to_owned()
                };
                turnpike_lightning::ensure_crypto_provider();
                return Some(Lnbits {
                    url: field("url"),
                    access_token: field("access_token"),
                    http: reqwest::Client::builder()
                        .timeout(Duration::from_secs(30))
                        .build()
                        .unwrap(),
                });
            }
        },
    };
    let how = "start one with `scripts/lnbits.sh install && scripts/lnbits.sh start` and set \
               TURNPIKE_LNBITS_INFO=target/lnbits/info.json (scripts/test.sh does both)";
    if strict {
        panic!("{test}: needs a real LNbits, but {problem}; {how}");
    }
    eprintln!("SKIPPED: {test}: needs a real LNbits, but {problem}; {how}");
    None
}

impl Lnbits {
    /// A new account with one wallet, its currency unset (otherwise every payment tries to fetch
    /// exchange rates).
    async fn wallet(&self, name: &str) -> Wallet {
        let name = format!("{name}-{:08x}", rand_u32());
        let resp = self
            .http
            .post(format!("{}/api/v1/account", self.url))
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "create account: {}",
            resp.status()
        );
        let w: Value = resp.json().await.unwrap();
        let wallet = Wallet {
            id: w["id"].as_str().unwrap().to_owned(),
            name,
            admin_key: w["adminkey"].as_str().unwrap().to_owned(),
            invoice_key: w["inkey"].as_str().unwrap().to_owned(),
        };
        let resp = self
            .http
            .patch(format!("{}/api/v1/wallet", self.url))
            .header("X-Api-Key", &wallet.admin_key)
            .json(&json!({ "currency": "" }))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "set currency: {}",
            resp.status()
        );
        wallet
    }

    /// Credits `sats` to a wallet, as the super user.
    async fn credit(&self, wallet: &Wallet, sats: u64) {
        let resp = self
            .http
            .put(format!("{}/users/api/v1/balance", self.url))
            .bearer_auth(&self.access_token)
            .json(&json!({ "id": wallet.id, "amount": sats }))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "credit: {}", resp.status());
    }

    /// A backend with the given keys.
    fn backend(&self, invoice_key: Option<&str>, admin_key: Option<&str>) -> LnbitsBackend {
        LnbitsBackend::new(&LnbitsConfig {
            invoice_key: invoice_key.map(|k| SecretSource::Inline(k.to_owned())),
            admin_key: admin_key.map(|k| SecretSource::Inline(k.to_owned())),
            ..LnbitsConfig::new(&self.url)
        })
        .unwrap()
    }

    /// The gateway side of `wallet`: its invoice key only.
    fn payee(&self, wallet: &Wallet) -> LnbitsBackend {
        self.backend(Some(&wallet.invoice_key), None)
    }

    /// The payer side of `wallet`: its admin key.
    fn payer(&self, wallet: &Wallet) -> LnbitsBackend {
        self.backend(None, Some(&wallet.admin_key))
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() as u32
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn balance(backend: &LnbitsBackend) -> Msat {
    backend.balance().await.unwrap()
}

fn request(sats: u64, memo: &str, expiry_secs: u32) -> CreateInvoice {
    CreateInvoice {
        amount: Msat(sats * 1000),
        memo: memo.to_owned(),
        expiry_secs,
    }
}

#[tokio::test]
async fn invoice_pay_lookup_and_balances() {
    let Some(lnbits) = lnbits("invoice_pay_lookup_and_balances") else {
        return;
    };
    let provider = lnbits.wallet("provider").await;
    let payer = lnbits.wallet("payer").await;
    lnbits.credit(&payer, 100).await;
    let gateway = lnbits.payee(&provider);
    let wallet = lnbits.payer(&payer);

    assert_eq!(
        gateway.lookup_invoice(&PaymentHash([7; 32])).await,
        Err(BackendError::UnknownInvoice)
    );

    let memo = "turnpike: 1 call to joke";
    let before = now_unix();
    let issued = gateway
        .create_invoice(request(21, memo, 600))
        .await
        .unwrap();
    assert_eq!(issued.amount, Msat(21_000));
    let invoice = Invoice::parse(&issued.bolt11).unwrap();
    assert_eq!(invoice.amount(), Some(Msat(21_000)));
    assert_eq!(invoice.payment_hash(), issued.payment_hash);
    assert_eq!(invoice.description(), Some(memo));
    assert_eq!(invoice.expiry_secs(), 600);
    assert!(
        (before..=now_unix() + 1).contains(&invoice.timestamp()),
        "timestamp {}",
        invoice.timestamp()
    );
    assert_eq!(issued.expires_at, invoice.timestamp() + 600);

    let status = gateway.lookup_invoice(&issued.payment_hash).await.unwrap();
    assert_eq!(status.state, InvoiceState::Pending);
    assert_eq!(status.amount, Msat(21_000));
    assert_eq!(status.payment_hash, issued.payment_hash);

    assert_eq!(balance(&gateway).await, Msat(0));
    assert_eq!(balance(&wallet).await, Msat(100_000));

    let started = Instant::now();
    let payment = wallet.pay_invoice(&issued.bolt11, Msat(0)).await.unwrap();
    eprintln!("paid in {:?}", started.elapsed());
    assert_eq!(payment.payment_hash, issued.payment_hash);
    assert!(payment.preimage.matches(&issued.payment_hash));
    assert_eq!(payment.preimage.payment_hash(), issued.payment_hash);
    assert_eq!(payment.amount, Msat(21_000));
    assert_eq!(payment.fee, Msat(0), "payments inside one LNbits are free");
    assert_eq!(check_payment(&invoice, &payment), Ok(()));

    let status = gateway.lookup_invoice(&issued.payment_hash).await.unwrap();
    match status.state {
        InvoiceState::Settled {
            preimage,
            settled_at,
        } => {
            assert_eq!(preimage, payment.preimage);
            assert!(
                settled_at.abs_diff(now_unix()) < 60,
                "settled_at {settled_at} is not now"
            );
        }
        other => panic!("expected settled, got {other:?}"),
    }
    assert_eq!(status.amount, Msat(21_000));

    assert_eq!(balance(&gateway).await, Msat(21_000));
    assert_eq!(balance(&wallet).await, Msat(79_000));

    // For the payer this hash is an outgoing payment, not one of its invoices.
    assert_eq!(
        wallet.lookup_invoice(&issued.payment_hash).await,
        Err(BackendError::UnknownInvoice)
    );
}

#[tokio::test]
async fn paying_twice_is_already_paid_and_moves_nothing() {
    let Some(lnbits) = lnbits("paying_twice_is_already_paid_and_moves_nothing") else {
        return;
    };
    let provider = lnbits.wallet("provider").await;
    let payer = lnbits.wallet("payer").await;
    lnbits.credit(&payer, 50).await;
    let gateway = lnbits.payee(&provider);
    let wallet = lnbits.payer(&payer);

    let issued = gateway
        .create_invoice(request(5, "twice", 600))
        .await
        .unwrap();
    wallet.pay_invoice(&issued.bolt11, Msat(0)).await.unwrap();
    assert_eq!(balance(&wallet).await, Msat(45_000));
    assert_eq!(balance(&gateway).await, Msat(5_000));

    assert_eq!(
        wallet.pay_invoice(&issued.bolt11, Msat(0)).await,
        Err(BackendError::AlreadyPaid)
    );
    // Another payer of the same LNbits is refused too.
    let other = lnbits.wallet("other-payer").await;
    lnbits.credit(&other, 50).await;
    let other = lnbits.payer(&other);
    assert_eq!(
        other.pay_invoice(&issued.bolt11, Msat(0)).await,
        Err(BackendError::AlreadyPaid)
    );
    assert_eq!(balance(&wallet).await, Msat(45_000));
    assert_eq!(balance(&other).await, Msat(50_000));
    assert_eq!(balance(&gateway).await, Msat(5_000));
}

#[tokio::test]
async fn too_low_a_balance_is_insufficient_and_moves_nothing() {
    let Some(lnbits) = lnbits("too_low_a_balance_is_insufficient_and_moves_nothing") else {
        return;
    };
    let provider = lnbits.wallet("provider").await;
    let payer = lnbits.wallet("payer").await;
    lnbits.credit(&payer, 10).await;
    let gateway = lnbits.payee(&provider);
    let wallet = lnbits.payer(&payer);

    let issued = gateway
        .create_invoice(request(11, "too much", 600))
        .await
        .unwrap();
    assert_eq!(
        wallet.pay_invoice(&issued.bolt11, Msat(0)).await,
        Err(BackendError::InsufficientBalance)
    );
    assert_eq!(balance(&wallet).await, Msat(10_000));
    assert_eq!(balance(&gateway).await, Msat(0));
    assert_eq!(
        gateway
            .lookup_invoice(&issued.payment_hash)
            .await
            .unwrap()
            .state,
        InvoiceState::Pending
    );

    // A wallet with nothing at all.
    let empty = lnbits.payer(&lnbits.wallet("empty").await);
    assert_eq!(
        empty.pay_invoice(&issued.bolt11, Msat(0)).await,
        Err(BackendError::InsufficientBalance)
    );
}

#[tokio::test]
async fn expired_invoices_are_not_paid() {
    let Some(lnbits) = lnbits("expired_invoices_are_not_paid") else {
        return;
    };
    let provider = lnbits.wallet("provider").await;
    let payer = lnbits.wallet("payer").await;
    lnbits.credit(&payer, 10).await;
    let gateway = lnbits.payee(&provider);
    let wallet = lnbits.payer(&payer);

    let issued = gateway
        .create_invoice(request(3, "short", 1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // LNbits itself would pay it (an invoice of its own); the backend refuses first.
    assert_eq!(
        wallet.pay_invoice(&issued.bolt11, Msat(0)).await,
        Err(BackendError::InvoiceExpired)
    );
    assert_eq!(
        gateway
            .lookup_invoice(&issued.payment_hash)
            .await
            .unwrap()
            .state,
        InvoiceState::Expired
    );
    // Once LNbits has marked it expired, still nothing is paid.
    assert_eq!(
        wallet.pay_invoice(&issued.bolt11, Msat(0)).await,
        Err(BackendError::InvoiceExpired)
    );
    assert_eq!(balance(&wallet).await, Msat(10_000));
    assert_eq!(balance(&gateway).await, Msat(0));
}

#[tokio::test]
async fn bad_keys_are_unauthorized() {
    let Some(lnbits) = lnbits("bad_keys_are_unauthorized") else {
        return;
    };
    let provider = lnbits.wallet("provider").await;
    let payer = lnbits.wallet("payer").await;
    lnbits.credit(&payer, 10).await;
    let issued = lnbits
        .payee(&provider)
        .create_invoice(request(1, "keys", 600))
        .await
        .unwrap();

    let unknown = "0123456789abcdef0123456789abcdef";
    let bad_reader = lnbits.backend(Some(unknown), None);
    let unauthorized = |r: Result<_, BackendError>, what: &str| match r {
        Err(BackendError::Unauthorized(m)) => assert!(!m.contains(unknown), "{what}: {m}"),
        other => panic!("{what}: expected Unauthorized, got {other:?}"),
    };
    unauthorized(
        bad_reader
            .create_invoice(request(1, "x", 600))
            .await
            .map(drop),
        "create",
    );
    unauthorized(
        bad_reader
            .lookup_invoice(&issued.payment_hash)
            .await
            .map(drop),
        "lookup",
    );
    unauthorized(bad_reader.balance().await.map(drop), "balance");
    unauthorized(bad_reader.info().await.map(drop), "info");

    let bad_payer = lnbits.backend(None, Some(unknown));
    unauthorized(
        bad_payer
            .pay_invoice(&issued.bolt11, Msat(0))
            .await
            .map(drop),
        "pay with an unknown key",
    );
    // The payer's invoice key given as its admin key: LNbits refuses to pay with it.
    let read_only = lnbits.backend(None, Some(&payer.invoice_key));
    unauthorized(
        read_only
            .pay_invoice(&issued.bolt11, Msat(0))
            .await
            .map(drop),
        "pay with an invoice key",
    );
    unauthorized(
        read_only.info().await.map(drop),
        "info with an invoice key as admin key",
    );

    // Without an admin key the backend does not even try.
    assert!(matches!(
        lnbits
            .payee(&payer)
            .pay_invoice(&issued.bolt11, Msat(0))
            .await,
        Err(BackendError::Unsupported(_))
    ));
    assert_eq!(balance(&lnbits.payer(&payer)).await, Msat(10_000));
}

#[tokio::test]
async fn unreachable_lnbits_fails_fast() {
    // No LNbits needed: a port where nothing listens.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let backend = LnbitsBackend::new(&LnbitsConfig {
        invoice_key: Some(SecretSource::Inline("k".into())),
        admin_key: Some(SecretSource::Inline("k".into())),
        ..LnbitsConfig::new(format!("http://127.0.0.1:{port}"))
    })
    .unwrap();
    let started = Instant::now();
    let unreachable = |r: Result<(), BackendError>, what: &str| {
        assert!(
            matches!(r, Err(BackendError::Unreachable(_))),
            "{what}: {r:?}"
        );
    };
    unreachable(
        backend.create_invoice(request(1, "x", 60)).await.map(drop),
        "create",
    );
    unreachable(
        backend
            .lookup_invoice(&PaymentHash([1; 32]))
            .await
            .map(drop),
        "lookup",
    );
    unreachable(backend.balance().await.map(drop), "balance");
    unreachable(backend.info().await.map(drop), "info");
    let dev = turnpike_lightning::DevBackend::random();
    let invoice = dev.create_invoice(request(1, "x", 60)).await.unwrap();
    unreachable(
        backend
            .pay_invoice(&invoice.bolt11, Msat(0))
            .await
            .map(drop),
        "pay",
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn diagnose_reports_the_wallet() {
    let Some(lnbits) = lnbits("diagnose_reports_the_wallet") else {
        return;
    };
    let w = lnbits.wallet("diag").await;
    lnbits.credit(&w, 42).await;
    for backend in [
        lnbits.payee(&w),
        lnbits.payer(&w),
        lnbits.backend(Some(&w.invoice_key), Some(&w.admin_key)),
    ] {
        let info = backend.info().await.unwrap();
        assert_eq!(info.backend, "lnbits");
        assert_eq!(info.alias.as_deref(), Some(w.name.as_str()));
        assert_eq!(info.balance, Some(Msat(42_000)));
        assert_eq!(info.node_id, None);
    }
}

#[tokio::test]
async fn outgoing_payments_are_looked_up_by_hash() {
    use turnpike_lightning::OutgoingState;
    let Some(lnbits) = lnbits("outgoing_payments_are_looked_up_by_hash") else {
        return;
    };
    let provider = lnbits.wallet("provider").await;
    let payer = lnbits.wallet("payer").await;
    lnbits.credit(&payer, 50).await;
    let gateway = lnbits.payee(&provider);
    let wallet = lnbits.payer(&payer);

    let issued = gateway
        .create_invoice(request(7, "lookup", 600))
        .await
        .unwrap();
    // Not paid yet: the payer's wallet has no outgoing payment of this hash.
    assert_eq!(
        wallet.lookup_payment(&issued.payment_hash).await.unwrap(),
        OutgoingState::Unknown
    );
    let paid = wallet.pay_invoice(&issued.bolt11, Msat(0)).await.unwrap();
    match wallet.lookup_payment(&issued.payment_hash).await.unwrap() {
        OutgoingState::Succeeded(p) => {
            assert_eq!(p.preimage, paid.preimage);
            assert_eq!(p.amount, Msat(7_000));
            assert_eq!(p.fee, paid.fee);
        }
        other => panic!("not succeeded: {other:?}"),
    }
    // The payee's wallet received it: not an outgoing payment of that wallet.
    assert_eq!(
        gateway.lookup_payment(&issued.payment_hash).await.unwrap(),
        OutgoingState::Unknown
    );
    assert_eq!(
        wallet.lookup_payment(&PaymentHash([9; 32])).await.unwrap(),
        OutgoingState::Unknown
    );
}
