//! The LND backend against the LND CONTRACT FAKE (`contract_fakes/lnd.rs`): lnd's REST API as
//! documented, over HTTPS with a `CA:TRUE` self-signed certificate that the backend pins.

#[allow(dead_code)]
mod contract_fakes;

use std::time::{Duration, Instant};

use contract_fakes::Fault;
use contract_fakes::lnd::{LndFake, MACAROON_HEX, ROUTE_FEE_MSAT, START_BALANCE_MSAT};
use lightning_invoice::Currency;
use turnpike_l402::bolt11::{Invoice, Network};
use turnpike_lightning::lnd::{LndBackend, LndConfig};
use turnpike_lightning::{
    BackendError, CreateInvoice, Diagnose, InvoiceBackend, InvoiceState, Msat, PaymentBackend,
    PaymentHash, Preimage, SecretSource,
};

struct Setup {
    fake: LndFake,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Setup {
        Setup {
            fake: LndFake::start().await,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self) -> LndConfig {
        self.fake.config(self.dir.path())
    }

    fn backend(&self) -> LndBackend {
        LndBackend::new(&self.config()).unwrap()
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
async fn invoice_lifecycle_open_then_settled() {
    let s = Setup::new().await;
    let lnd = s.backend();
    let issued = lnd
        .create_invoice(req(21_000, "a joke", 600))
        .await
        .unwrap();
    let invoice = Invoice::parse(&issued.bolt11).unwrap();
    assert_eq!(invoice.payment_hash(), issued.payment_hash);
    assert_eq!(invoice.amount(), Some(Msat(21_000)));
    assert_eq!(invoice.network(), Network::Regtest);
    assert_eq!(invoice.description(), Some("a joke"));
    assert_eq!(invoice.payee_hex(), s.fake.node_id());
    assert_eq!(issued.amount, Msat(21_000));
    assert!(issued.expires_at.abs_diff(now() + 600) <= 5);

    let status = lnd.lookup_invoice(&issued.payment_hash).await.unwrap();
    assert_eq!(status.payment_hash, issued.payment_hash);
    assert_eq!(status.amount, Msat(21_000));
    assert_eq!(status.state, InvoiceState::Pending);

    s.fake.settle(&issued.payment_hash);
    let status = lnd.lookup_invoice(&issued.payment_hash).await.unwrap();
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
async fn expired_and_unknown_invoices() {
    let s = Setup::new().await;
    let lnd = s.backend();
    let issued = lnd.create_invoice(req(1_000, "x", 60)).await.unwrap();
    s.fake.expire(&issued.payment_hash);
    assert_eq!(
        lnd.lookup_invoice(&issued.payment_hash)
            .await
            .unwrap()
            .state,
        InvoiceState::Expired
    );
    assert_eq!(
        lnd.lookup_invoice(&PaymentHash([9; 32])).await,
        Err(BackendError::UnknownInvoice)
    );
}

#[tokio::test]
async fn create_invoice_rejects_bad_requests_locally() {
    let s = Setup::new().await;
    let lnd = s.backend();
    for bad in [
        req(0, "x", 60),
        req(1_000, "x", 0),
        req(1_000, &"x".repeat(640), 60),
    ] {
        assert!(matches!(
            lnd.create_invoice(bad).await,
            Err(BackendError::Rejected(_))
        ));
    }
    assert_eq!(s.fake.requests(), 0);
}

#[tokio::test]
async fn pays_and_checks_the_preimage() {
    let s = Setup::new().await;
    let lnd = s.backend();
    let bolt11 = s.fake.remote_invoice(5_000);
    let paid = lnd.pay_invoice(&bolt11, Msat(2_000)).await.unwrap();
    let invoice = Invoice::parse(&bolt11).unwrap();
    assert_eq!(paid.payment_hash, invoice.payment_hash());
    assert!(paid.preimage.matches(&invoice.payment_hash()));
    assert_eq!(paid.amount, Msat(5_000));
    assert_eq!(paid.fee, Msat(ROUTE_FEE_MSAT));
    let left = START_BALANCE_MSAT - 5_000 - ROUTE_FEE_MSAT;
    assert_eq!(s.fake.balance_msat(), left);
    assert_eq!(lnd.balance().await.unwrap(), Msat(left));
}

#[tokio::test]
async fn paying_twice_is_already_paid() {
    let s = Setup::new().await;
    let lnd = s.backend();
    let bolt11 = s.fake.remote_invoice(5_000);
    lnd.pay_invoice(&bolt11, Msat(2_000)).await.unwrap();
    assert_eq!(
        lnd.pay_invoice(&bolt11, Msat(2_000)).await,
        Err(BackendError::AlreadyPaid)
    );
    assert_eq!(
        s.fake.balance_msat(),
        START_BALANCE_MSAT - 5_000 - ROUTE_FEE_MSAT
    );
}

#[tokio::test]
async fn payment_failures_are_precise() {
    let s = Setup::new().await;
    let lnd = s.backend();

    // A fee limit below every route's fee.
    let bolt11 = s.fake.remote_invoice(5_000);
    let err = lnd.pay_invoice(&bolt11, Msat(0)).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Rejected(m) if m.contains("no route")),
        "{err:?}"
    );

    // Not enough in the channels.
    s.fake.set_balance_msat(3_000);
    assert_eq!(
        lnd.pay_invoice(&bolt11, Msat(2_000)).await,
        Err(BackendError::InsufficientBalance)
    );
    s.fake.set_balance_msat(START_BALANCE_MSAT);

    // A payee that does not know the payment hash.
    let stranger = contract_fakes::Node::new().invoice(
        Currency::Regtest,
        5_000,
        "?",
        &Preimage::random().payment_hash(),
        now(),
        600,
    );
    let err = lnd.pay_invoice(&stranger, Msat(2_000)).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Rejected(m) if m.contains("INCORRECT_PAYMENT_DETAILS")),
        "{err:?}"
    );

    // Refused before asking lnd: expired, amountless, garbage.
    let requests = s.fake.requests();
    let expired = s
        .fake
        .lnd
        .remote
        .invoice_at(Currency::Regtest, 5_000, now() - 1_000, 60);
    assert_eq!(
        lnd.pay_invoice(&expired, Msat(2_000)).await,
        Err(BackendError::InvoiceExpired)
    );
    assert!(matches!(
        lnd.pay_invoice("lnbcrt1garbage", Msat(2_000)).await,
        Err(BackendError::Rejected(_))
    ));
    assert_eq!(s.fake.requests(), requests);
    assert_eq!(s.fake.balance_msat(), START_BALANCE_MSAT);
}

#[tokio::test]
async fn a_wrong_macaroon_is_unauthorized() {
    let s = Setup::new().await;
    let config = LndConfig {
        macaroon: Some(SecretSource::Inline("0201036c6e64".into())),
        ..s.config()
    };
    let lnd = LndBackend::new(&config).unwrap();
    let err = lnd.info().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Unauthorized(m) if m.contains("verification failed")),
        "{err:?}"
    );
    assert!(matches!(
        lnd.create_invoice(req(1_000, "x", 60)).await,
        Err(BackendError::Unauthorized(_))
    ));
    assert!(matches!(
        lnd.lookup_invoice(&PaymentHash([1; 32])).await,
        Err(BackendError::Unauthorized(_))
    ));
    // The payment stream reports it as {"error": {...}}.
    let bolt11 = s.fake.remote_invoice(1_000);
    assert!(matches!(
        lnd.pay_invoice(&bolt11, Msat(2_000)).await,
        Err(BackendError::Unauthorized(_))
    ));
    assert_eq!(s.fake.balance_msat(), START_BALANCE_MSAT);
}

#[tokio::test]
async fn the_binary_macaroon_file_is_hex_encoded() {
    let s = Setup::new().await;
    let path = s.dir.path().join("invoice.macaroon");
    std::fs::write(&path, hex::decode(MACAROON_HEX).unwrap()).unwrap();
    let config = LndConfig {
        macaroon: None,
        macaroon_file: Some(path),
        ..s.config()
    };
    let info = LndBackend::new(&config).unwrap().info().await.unwrap();
    assert_eq!(info.node_id.as_deref(), Some(s.fake.node_id().as_str()));
}

#[tokio::test]
async fn a_silent_node_times_out_within_the_timeout() {
    let s = Setup::new().await;
    let timeout = Duration::from_millis(300);
    let lnd = s.backend().with_timeouts(timeout, timeout);
    s.fake.set_fault(Fault::Hang);
    let bolt11 = s.fake.remote_invoice(1_000);
    let started = Instant::now();
    assert_eq!(
        lnd.lookup_invoice(&PaymentHash([1; 32])).await,
        Err(BackendError::Timeout)
    );
    assert_eq!(
        lnd.create_invoice(req(1_000, "x", 60)).await,
        Err(BackendError::Timeout)
    );
    assert_eq!(
        lnd.pay_invoice(&bolt11, Msat(2_000)).await,
        Err(BackendError::Timeout)
    );
    assert_eq!(lnd.balance().await, Err(BackendError::Timeout));
    let elapsed = started.elapsed();
    assert!(elapsed >= timeout * 4, "{elapsed:?}");
    assert!(
        elapsed < timeout * 4 + Duration::from_millis(1500),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn wrong_preimages_are_invalid_responses() {
    let s = Setup::new().await;
    let lnd = s.backend();
    let issued = lnd.create_invoice(req(1_000, "x", 600)).await.unwrap();
    s.fake.settle(&issued.payment_hash);
    s.fake.set_fault(Fault::WrongPreimage);
    assert!(matches!(
        lnd.lookup_invoice(&issued.payment_hash).await,
        Err(BackendError::InvalidResponse(_))
    ));
    let bolt11 = s.fake.remote_invoice(1_000);
    let err = lnd.pay_invoice(&bolt11, Msat(2_000)).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::InvalidResponse(m) if m.contains("preimage")),
        "{err:?}"
    );
}

#[tokio::test]
async fn wrong_amounts_are_invalid_responses() {
    let s = Setup::new().await;
    let lnd = s.backend();
    s.fake.set_fault(Fault::WrongAmount);
    let err = lnd.create_invoice(req(1_000, "x", 600)).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::InvalidResponse(m) if m.contains("instead of")),
        "{err:?}"
    );
    let bolt11 = s.fake.remote_invoice(1_000);
    let err = lnd.pay_invoice(&bolt11, Msat(2_000)).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::InvalidResponse(m) if m.contains("delivered")),
        "{err:?}"
    );
}

#[tokio::test]
async fn malformed_json_is_an_invalid_response() {
    let s = Setup::new().await;
    let lnd = s.backend();
    s.fake.set_fault(Fault::MalformedJson);
    assert!(matches!(
        lnd.create_invoice(req(1_000, "x", 600)).await,
        Err(BackendError::InvalidResponse(_))
    ));
    assert!(matches!(
        lnd.lookup_invoice(&PaymentHash([1; 32])).await,
        Err(BackendError::InvalidResponse(_))
    ));
    assert!(matches!(
        lnd.info().await,
        Err(BackendError::InvalidResponse(_))
    ));
    let bolt11 = s.fake.remote_invoice(1_000);
    assert!(matches!(
        lnd.pay_invoice(&bolt11, Msat(2_000)).await,
        Err(BackendError::InvalidResponse(_))
    ));
}

#[tokio::test]
async fn safe_calls_are_retried_payments_are_not() {
    let s = Setup::new().await;
    let lnd = s.backend();
    let issued = lnd.create_invoice(req(1_000, "x", 600)).await.unwrap();

    s.fake.set_fault(Fault::Unavailable(2));
    let before = s.fake.requests();
    assert_eq!(
        lnd.lookup_invoice(&issued.payment_hash)
            .await
            .unwrap()
            .state,
        InvoiceState::Pending
    );
    assert_eq!(s.fake.requests() - before, 3, "two 503s, then the answer");

    // Three 503s exhaust the two retries.
    s.fake.set_fault(Fault::Unavailable(3));
    assert!(matches!(
        lnd.balance().await,
        Err(BackendError::Unreachable(_))
    ));

    // A payment that reached lnd is never sent again.
    s.fake.set_fault(Fault::Unavailable(1));
    let before = s.fake.requests();
    let bolt11 = s.fake.remote_invoice(1_000);
    assert!(matches!(
        lnd.pay_invoice(&bolt11, Msat(2_000)).await,
        Err(BackendError::Unreachable(_))
    ));
    assert_eq!(s.fake.requests() - before, 1);
    assert_eq!(s.fake.balance_msat(), START_BALANCE_MSAT);
}

#[tokio::test]
async fn diagnose_reports_the_node() {
    let s = Setup::new().await;
    let info = s.backend().info().await.unwrap();
    assert_eq!(info.backend, "lnd");
    assert_eq!(info.alias.as_deref(), Some("turnpike-fake-lnd"));
    assert_eq!(info.node_id.as_deref(), Some(s.fake.node_id().as_str()));
    assert_eq!(info.network.as_deref(), Some("regtest"));
    assert_eq!(info.balance, Some(Msat(START_BALANCE_MSAT)));
}

#[tokio::test]
async fn only_the_pinned_certificate_is_trusted() {
    let s = Setup::new().await;

    // Another lnd's certificate pinned: a precise TLS error, and no request crosses.
    let other = contract_fakes::lnd_style_certificate();
    let config = LndConfig {
        tls_cert_path: Some(other.write_pem(s.dir.path(), "other.cert")),
        ..s.config()
    };
    let err = LndBackend::new(&config).unwrap().info().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Unreachable(m)
            if m.starts_with("TLS: ") && m.contains("does not match the pinned certificate")
                && m.contains("other.cert")),
        "{err:?}"
    );

    // No pin: standard verification refuses lnd's self-signed CA:TRUE certificate.
    let config = LndConfig {
        tls_cert_path: None,
        ..s.config()
    };
    let err = LndBackend::new(&config).unwrap().info().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Unreachable(m)
            if m.contains("invalid peer certificate") && m.contains("tls_cert_path")),
        "{err:?}"
    );

    assert_eq!(
        s.fake.requests(),
        0,
        "no request crossed an untrusted session"
    );
    assert_eq!(
        s.fake.handshakes.load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    // The right one.
    s.backend().info().await.unwrap();
    assert_eq!(s.fake.requests(), 2);
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let s = Setup::new().await;
    let config = LndConfig {
        url: format!("https://127.0.0.1:{}", contract_fakes::closed_port()),
        ..s.config()
    };
    let lnd = LndBackend::new(&config).unwrap();
    assert!(matches!(
        lnd.info().await,
        Err(BackendError::Unreachable(_))
    ));
    assert!(matches!(
        lnd.pay_invoice(&s.fake.remote_invoice(1_000), Msat(2_000))
            .await,
        Err(BackendError::Unreachable(_))
    ));
}

#[test]
fn the_config_reads_from_toml_like_input() {
    let config: LndConfig = serde_json::from_str(
        r#"{"url": "https://127.0.0.1:8080", "macaroon": {"env": "LND_MACAROON"},
            "tls_cert_path": "/home/lnd/.lnd/tls.cert", "retries": 1}"#,
    )
    .unwrap();
    assert_eq!(config.limits.retries, 1);
    assert_eq!(config.limits.timeout_secs, 10);
    assert!(
        serde_json::from_str::<LndConfig>(r#"{"url": "https://x", "macaroon": "01", "cert": "x"}"#)
            .is_err()
    );
}

#[tokio::test]
async fn payments_are_looked_up_by_hash() {
    use turnpike_lightning::OutgoingState;
    let s = Setup::new().await;
    let lnd = s.backend();

    // Succeeded: the preimage (checked), the amount and the fee.
    let bolt11 = s.fake.remote_invoice(7_000);
    let paid = lnd.pay_invoice(&bolt11, Msat(2_000)).await.unwrap();
    match lnd.lookup_payment(&paid.payment_hash).await.unwrap() {
        OutgoingState::Succeeded(p) => assert_eq!(p, paid),
        other => panic!("not succeeded: {other:?}"),
    }
    assert_eq!(paid.fee, Msat(ROUTE_FEE_MSAT));

    // Failed: lnd keeps the failed payment with its reason.
    let no_route = s.fake.remote_invoice(5_000);
    let hash = Invoice::parse(&no_route).unwrap().payment_hash();
    assert!(lnd.pay_invoice(&no_route, Msat(0)).await.is_err());
    assert!(
        matches!(lnd.lookup_payment(&hash).await.unwrap(), OutgoingState::Failed(m) if m.contains("NO_ROUTE"))
    );

    // In flight: the stream stays open; only its first update is read, well within the timeout.
    let held = s.fake.remote_invoice(5_000);
    let hash = s.fake.hold_in_flight(&held);
    let started = Instant::now();
    assert_eq!(
        lnd.lookup_payment(&hash).await.unwrap(),
        OutgoingState::Pending
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // Never sent.
    assert_eq!(
        lnd.lookup_payment(&Preimage::random().payment_hash())
            .await
            .unwrap(),
        OutgoingState::Unknown
    );

    // A preimage that does not hash to the payment hash is refused.
    s.fake.set_fault(Fault::WrongPreimage);
    assert!(matches!(
        lnd.lookup_payment(&paid.payment_hash).await,
        Err(BackendError::InvalidResponse(_))
    ));
}

/// A hub payout's lnd: built from values (the invoice macaroon as hex, `tls.cert` as PEM
/// text, pinned); it creates and looks up invoices, and lnd refuses it a payment.
#[tokio::test]
async fn an_invoice_macaroon_from_values_makes_invoices_but_cannot_pay() {
    let fake = LndFake::start().await;
    let macaroon = contract_fakes::lnd::invoice_macaroon_hex();
    turnpike_lightning::spend_rights::check_invoice_macaroon(&macaroon).unwrap();
    let lnd = LndBackend::from_values(&fake.url(), &macaroon, Some(&fake.identity.cert_pem), false)
        .unwrap();
    let issued = lnd.create_invoice(req(21_000, "x", 600)).await.unwrap();
    assert_eq!(issued.amount, Msat(21_000));
    let remote = fake.remote_invoice(1_000);
    let err = lnd.pay_invoice(&remote, Msat(10_000)).await.unwrap_err();
    assert!(format!("{err}").contains("permission denied"), "{err:?}");
    // Another certificate than the node's: the pin fails.
    let other = contract_fakes::lnd_style_certificate().cert_pem;
    let pinned_wrong =
        LndBackend::from_values(&fake.url(), &macaroon, Some(&other), false).unwrap();
    let err = pinned_wrong
        .create_invoice(req(1_000, "x", 600))
        .await
        .unwrap_err();
    assert!(format!("{err}").contains("does not match"), "{err:?}");
}
