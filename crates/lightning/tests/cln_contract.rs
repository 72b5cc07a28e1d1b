//! The Core Lightning backend against the clnrest CONTRACT FAKE (`contract_fakes/cln.rs`):
//! clnrest as documented, over HTTPS with clnrest's own CA-signed certificate, pinned.

#[allow(dead_code)]
mod contract_fakes;

use std::time::{Duration, Instant};

use contract_fakes::Fault;
use contract_fakes::cln::{ClnFake, ROUTE_FEE_MSAT, START_BALANCE_MSAT};
use lightning_invoice::Currency;
use turnpike_l402::bolt11::{Invoice, Network};
use turnpike_lightning::cln::{ClnBackend, ClnConfig, LABEL_PREFIX};
use turnpike_lightning::{
    BackendError, CreateInvoice, Diagnose, InvoiceBackend, InvoiceState, Msat, PaymentBackend,
    PaymentHash, Preimage, SecretSource,
};

struct Setup {
    fake: ClnFake,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Setup {
        Setup {
            fake: ClnFake::start_https().await,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self) -> ClnConfig {
        self.fake.config(self.dir.path())
    }

    fn backend(&self) -> ClnBackend {
        ClnBackend::new(&self.config()).unwrap()
    }
}

fn req(amount_msat: u64, memo: &str, expiry_secs: u32) -> CreateInvoice {
    CreateInvoice {
        amount: Msat(amount_msat),
        memo: memo.into(),
        expiry_secs,
    }
}

fn now() -> u64 {
    contract_fakes::now()
}

#[tokio::test]
async fn invoice_lifecycle_unpaid_then_paid() {
    let s = Setup::new().await;
    let cln = s.backend();
    let issued = cln
        .create_invoice(req(21_000, "a joke", 600))
        .await
        .unwrap();
    let invoice = Invoice::parse(&issued.bolt11).unwrap();
    assert_eq!(invoice.payment_hash(), issued.payment_hash);
    assert_eq!(invoice.amount(), Some(Msat(21_000)));
    assert_eq!(invoice.network(), Network::Regtest);
    assert_eq!(invoice.description(), Some("a joke"));
    assert_eq!(invoice.payee_hex(), s.fake.node_id());
    assert!(issued.expires_at.abs_diff(now() + 600) <= 5);

    let status = cln.lookup_invoice(&issued.payment_hash).await.unwrap();
    assert_eq!(status.amount, Msat(21_000));
    assert_eq!(status.state, InvoiceState::Pending);

    s.fake.settle(&issued.payment_hash);
    let status = cln.lookup_invoice(&issued.payment_hash).await.unwrap();
    let InvoiceState::Settled {
        preimage,
        settled_at,
    } = status.state
    else {
        panic!("not settled: {status:?}");
    };
    assert!(preimage.matches(&issued.payment_hash));
    assert!(settled_at.abs_diff(now()) <= 5);
}

#[tokio::test]
async fn every_invoice_gets_a_fresh_label() {
    let s = Setup::new().await;
    let cln = s.backend();
    // The fake refuses duplicate labels (code 900) like CLN: two invoices must both work.
    let a = cln.create_invoice(req(1_000, "x", 60)).await.unwrap();
    let b = cln.create_invoice(req(1_000, "x", 60)).await.unwrap();
    assert_ne!(a.payment_hash, b.payment_hash);
    assert!(LABEL_PREFIX.starts_with("turnpike"));
}

#[tokio::test]
async fn expired_and_unknown_invoices() {
    let s = Setup::new().await;
    let cln = s.backend();
    let issued = cln.create_invoice(req(1_000, "x", 60)).await.unwrap();
    s.fake.expire(&issued.payment_hash);
    assert_eq!(
        cln.lookup_invoice(&issued.payment_hash)
            .await
            .unwrap()
            .state,
        InvoiceState::Expired
    );
    assert_eq!(
        cln.lookup_invoice(&PaymentHash([9; 32])).await,
        Err(BackendError::UnknownInvoice)
    );
}

#[tokio::test]
async fn pays_and_checks_the_preimage() {
    let s = Setup::new().await;
    let cln = s.backend();
    let bolt11 = s.fake.remote_invoice(5_000);
    let paid = cln.pay_invoice(&bolt11, Msat(2_000)).await.unwrap();
    let invoice = Invoice::parse(&bolt11).unwrap();
    assert_eq!(paid.payment_hash, invoice.payment_hash());
    assert!(paid.preimage.matches(&invoice.payment_hash()));
    assert_eq!(paid.amount, Msat(5_000));
    assert_eq!(paid.fee, Msat(ROUTE_FEE_MSAT));
    let left = START_BALANCE_MSAT - 5_000 - ROUTE_FEE_MSAT;
    assert_eq!(cln.balance().await.unwrap(), Msat(left));
}

/// CLN's `pay` does not pay an invoice twice: it answers the earlier result again. The backend
/// returns it (checked), so a payer that lost the first answer still gets its proof of payment.
#[tokio::test]
async fn paying_twice_replays_the_first_payment() {
    let s = Setup::new().await;
    let cln = s.backend();
    let bolt11 = s.fake.remote_invoice(5_000);
    let first = cln.pay_invoice(&bolt11, Msat(2_000)).await.unwrap();
    let second = cln.pay_invoice(&bolt11, Msat(2_000)).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(s.fake.payments_sent(), 1);
    assert_eq!(
        s.fake.balance_msat(),
        START_BALANCE_MSAT - 5_000 - ROUTE_FEE_MSAT
    );
}

#[tokio::test]
async fn payment_failures_are_precise() {
    let s = Setup::new().await;
    let cln = s.backend();
    let bolt11 = s.fake.remote_invoice(5_000);

    let err = cln.pay_invoice(&bolt11, Msat(0)).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Rejected(m) if m.contains("fee limit") && m.contains("206")),
        "{err:?}"
    );

    s.fake.set_balance_msat(3_000);
    assert_eq!(
        cln.pay_invoice(&bolt11, Msat(2_000)).await,
        Err(BackendError::InsufficientBalance)
    );
    s.fake.set_balance_msat(START_BALANCE_MSAT);

    let stranger = contract_fakes::Node::new().invoice(
        Currency::Regtest,
        5_000,
        "?",
        &Preimage::random().payment_hash(),
        now(),
        600,
    );
    let err = cln.pay_invoice(&stranger, Msat(2_000)).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Rejected(m) if m.contains("payee rejected")),
        "{err:?}"
    );

    let requests = s.fake.requests();
    let expired = s
        .fake
        .cln
        .remote
        .invoice_at(Currency::Regtest, 5_000, now() - 1_000, 60);
    assert_eq!(
        cln.pay_invoice(&expired, Msat(2_000)).await,
        Err(BackendError::InvoiceExpired)
    );
    assert_eq!(s.fake.requests(), requests);
    assert_eq!(s.fake.payments_sent(), 0);
}

#[tokio::test]
async fn a_foreign_rune_is_unauthorized() {
    let s = Setup::new().await;
    let config = ClnConfig {
        rune: SecretSource::Inline("aW52YWxpZCBydW5lIGZyb20gc29tZXdoZXJlIGVsc2U=".into()),
        ..s.config()
    };
    let cln = ClnBackend::new(&config).unwrap();
    let err = cln.info().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Unauthorized(m) if m.contains("1501") && m.contains("Not authorized")),
        "{err:?}"
    );
    assert!(matches!(
        cln.create_invoice(req(1_000, "x", 60)).await,
        Err(BackendError::Unauthorized(_))
    ));
    assert!(matches!(
        cln.pay_invoice(&s.fake.remote_invoice(1_000), Msat(2_000))
            .await,
        Err(BackendError::Unauthorized(_))
    ));
    assert_eq!(s.fake.payments_sent(), 0);
}

#[tokio::test]
async fn a_silent_node_times_out_within_the_timeout() {
    let s = Setup::new().await;
    let timeout = Duration::from_millis(300);
    let cln = s.backend().with_timeouts(timeout, timeout);
    s.fake.set_fault(Fault::Hang);
    let bolt11 = s.fake.remote_invoice(1_000);
    let started = Instant::now();
    assert_eq!(
        cln.lookup_invoice(&PaymentHash([1; 32])).await,
        Err(BackendError::Timeout)
    );
    assert_eq!(
        cln.pay_invoice(&bolt11, Msat(2_000)).await,
        Err(BackendError::Timeout)
    );
    let elapsed = started.elapsed();
    assert!(elapsed >= timeout * 2, "{elapsed:?}");
    assert!(
        elapsed < timeout * 2 + Duration::from_millis(1000),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn wrong_preimages_amounts_and_json_are_invalid_responses() {
    let s = Setup::new().await;
    let cln = s.backend();
    let issued = cln.create_invoice(req(1_000, "x", 600)).await.unwrap();
    s.fake.settle(&issued.payment_hash);

    s.fake.set_fault(Fault::WrongPreimage);
    assert!(matches!(
        cln.lookup_invoice(&issued.payment_hash).await,
        Err(BackendError::InvalidResponse(_))
    ));
    let err = cln
        .pay_invoice(&s.fake.remote_invoice(1_000), Msat(2_000))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BackendError::InvalidResponse(m) if m.contains("preimage")),
        "{err:?}"
    );

    s.fake.set_fault(Fault::WrongAmount);
    assert!(matches!(
        cln.create_invoice(req(1_000, "x", 600)).await,
        Err(BackendError::InvalidResponse(_))
    ));
    let err = cln
        .pay_invoice(&s.fake.remote_invoice(1_000), Msat(2_000))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BackendError::InvalidResponse(m) if m.contains("delivered")),
        "{err:?}"
    );

    s.fake.set_fault(Fault::MalformedJson);
    assert!(matches!(
        cln.lookup_invoice(&issued.payment_hash).await,
        Err(BackendError::InvalidResponse(_))
    ));
    assert!(matches!(
        cln.info().await,
        Err(BackendError::InvalidResponse(_))
    ));
}

#[tokio::test]
async fn safe_calls_are_retried_payments_are_not() {
    let s = Setup::new().await;
    let cln = s.backend();
    s.fake.set_fault(Fault::Unavailable(2));
    let before = s.fake.requests();
    cln.create_invoice(req(1_000, "x", 600)).await.unwrap();
    assert_eq!(s.fake.requests() - before, 3);

    s.fake.set_fault(Fault::Unavailable(1));
    let before = s.fake.requests();
    assert!(matches!(
        cln.pay_invoice(&s.fake.remote_invoice(1_000), Msat(2_000))
            .await,
        Err(BackendError::Unreachable(_))
    ));
    assert_eq!(s.fake.requests() - before, 1);
    assert_eq!(s.fake.payments_sent(), 0);
}

#[tokio::test]
async fn diagnose_reports_the_node_and_spendable_channels_only() {
    let s = Setup::new().await;
    let info = s.backend().info().await.unwrap();
    assert_eq!(info.backend, "cln");
    assert_eq!(info.alias.as_deref(), Some("turnpike-fake-cln"));
    assert_eq!(info.node_id.as_deref(), Some(s.fake.node_id().as_str()));
    assert_eq!(info.network.as_deref(), Some("regtest"));
    // The closed (ONCHAIN) channel's balance is not counted.
    assert_eq!(info.balance, Some(Msat(START_BALANCE_MSAT)));
}

#[tokio::test]
async fn only_the_pinned_server_certificate_is_trusted() {
    let s = Setup::new().await;
    let (ca, _) = s.fake.certs.as_ref().unwrap();

    // clnrest's CA instead of its server certificate: not the pinned certificate.
    let config = ClnConfig {
        tls_cert_path: Some(ca.write_pem(s.dir.path(), "ca.pem")),
        ..s.config()
    };
    let err = ClnBackend::new(&config).unwrap().info().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Unreachable(m)
            if m.starts_with("TLS: ") && m.contains("does not match the pinned certificate")),
        "{err:?}"
    );

    // No pin: clnrest's private CA is not trusted.
    let config = ClnConfig {
        tls_cert_path: None,
        ..s.config()
    };
    let err = ClnBackend::new(&config).unwrap().info().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Unreachable(m) if m.contains("tls_cert_path")),
        "{err:?}"
    );
    assert_eq!(s.fake.requests(), 0);

    s.backend().info().await.unwrap();
}

#[tokio::test]
async fn plain_http_clnrest_works_too() {
    let fake = ClnFake::start_http().await;
    let dir = tempfile::tempdir().unwrap();
    let cln = ClnBackend::new(&fake.config(dir.path())).unwrap();
    let issued = cln.create_invoice(req(2_000, "x", 60)).await.unwrap();
    fake.settle(&issued.payment_hash);
    assert!(
        cln.lookup_invoice(&issued.payment_hash)
            .await
            .unwrap()
            .state
            .is_settled()
    );
}

#[tokio::test]
async fn payments_are_looked_up_by_hash() {
    use turnpike_lightning::OutgoingState;
    let s = Setup::new().await;
    let cln = s.backend();

    let bolt11 = s.fake.remote_invoice(7_000);
    let paid = cln.pay_invoice(&bolt11, Msat(2_000)).await.unwrap();
    match cln.lookup_payment(&paid.payment_hash).await.unwrap() {
        OutgoingState::Succeeded(p) => {
            assert_eq!(p, paid);
            assert_eq!(p.fee, Msat(ROUTE_FEE_MSAT));
        }
        other => panic!("not succeeded: {other:?}"),
    }

    // Rejected by the destination: listed as failed.
    let stranger = contract_fakes::Node::new().invoice(
        Currency::Regtest,
        5_000,
        "?",
        &Preimage::random().payment_hash(),
        now(),
        600,
    );
    assert!(cln.pay_invoice(&stranger, Msat(2_000)).await.is_err());
    let hash = Invoice::parse(&stranger).unwrap().payment_hash();
    assert!(matches!(
        cln.lookup_payment(&hash).await.unwrap(),
        OutgoingState::Failed(_)
    ));

    let held = s.fake.hold_pending(&s.fake.remote_invoice(3_000));
    assert_eq!(
        cln.lookup_payment(&held).await.unwrap(),
        OutgoingState::Pending
    );
    assert_eq!(
        cln.lookup_payment(&Preimage::random().payment_hash())
            .await
            .unwrap(),
        OutgoingState::Unknown
    );

    s.fake.set_fault(Fault::WrongPreimage);
    assert!(matches!(
        cln.lookup_payment(&paid.payment_hash).await,
        Err(BackendError::InvalidResponse(_))
    ));
}
