//! The phoenixd backend against the phoenixd CONTRACT FAKE (`contract_fakes/phoenixd.rs`):
//! phoenixd's HTTP API as documented (basic auth, form-encoded requests, satoshi amounts).

#[allow(dead_code)]
mod contract_fakes;

use std::time::{Duration, Instant};

use contract_fakes::Fault;
use contract_fakes::phoenixd::{LIMITED_PASSWORD, PhoenixdFake, ROUTE_FEE_SAT, START_BALANCE_SAT};
use lightning_invoice::Currency;
use turnpike_l402::bolt11::{Invoice, Network};
use turnpike_lightning::phoenixd::{PhoenixdBackend, PhoenixdConfig};
use turnpike_lightning::{
    BackendError, CreateInvoice, Diagnose, InvoiceBackend, InvoiceState, Msat, PaymentBackend,
    PaymentHash, Preimage, SecretSource,
};

async fn setup() -> (PhoenixdFake, PhoenixdBackend) {
    let fake = PhoenixdFake::start().await;
    let backend = PhoenixdBackend::new(&fake.config()).unwrap();
    (fake, backend)
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
    let (fake, phoenixd) = setup().await;
    let issued = phoenixd
        .create_invoice(req(21_000, "a joke", 600))
        .await
        .unwrap();
    let invoice = Invoice::parse(&issued.bolt11).unwrap();
    assert_eq!(invoice.payment_hash(), issued.payment_hash);
    assert_eq!(invoice.amount(), Some(Msat(21_000)));
    assert_eq!(invoice.network(), Network::Testnet);
    assert_eq!(invoice.description(), Some("a joke"));
    assert_eq!(invoice.payee_hex(), fake.node_id());
    assert!(issued.expires_at.abs_diff(now() + 600) <= 5);

    // phoenixd reports the preimage before payment too: still Pending.
    let status = phoenixd.lookup_invoice(&issued.payment_hash).await.unwrap();
    assert_eq!(status.amount, Msat(21_000));
    assert_eq!(status.state, InvoiceState::Pending);

    fake.settle(&issued.payment_hash);
    let status = phoenixd.lookup_invoice(&issued.payment_hash).await.unwrap();
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
async fn sub_satoshi_amounts_and_long_descriptions_are_refused_locally() {
    let (fake, phoenixd) = setup().await;
    let err = phoenixd
        .create_invoice(req(1_500, "x", 60))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BackendError::Rejected(m) if m.contains("whole satoshis")),
        "{err:?}"
    );
    assert!(matches!(
        phoenixd
            .create_invoice(req(1_000, &"é".repeat(129), 60))
            .await,
        Err(BackendError::Rejected(_))
    ));
    assert_eq!(fake.requests(), 0);
    // 128 characters are fine.
    phoenixd
        .create_invoice(req(1_000, &"é".repeat(128), 60))
        .await
        .unwrap();
}

#[tokio::test]
async fn expired_and_unknown_invoices() {
    let (fake, phoenixd) = setup().await;
    let issued = phoenixd.create_invoice(req(1_000, "x", 60)).await.unwrap();
    fake.expire(&issued.payment_hash);
    assert_eq!(
        phoenixd
            .lookup_invoice(&issued.payment_hash)
            .await
            .unwrap()
            .state,
        InvoiceState::Expired
    );
    assert_eq!(
        phoenixd.lookup_invoice(&PaymentHash([9; 32])).await,
        Err(BackendError::UnknownInvoice)
    );
}

#[tokio::test]
async fn pays_and_checks_the_preimage() {
    let (fake, phoenixd) = setup().await;
    let bolt11 = fake.remote_invoice(5_000);
    let paid = phoenixd.pay_invoice(&bolt11, Msat(10_000)).await.unwrap();
    let invoice = Invoice::parse(&bolt11).unwrap();
    assert_eq!(paid.payment_hash, invoice.payment_hash());
    assert!(paid.preimage.matches(&invoice.payment_hash()));
    assert_eq!(paid.amount, Msat(5_000));
    assert_eq!(paid.fee, Msat(ROUTE_FEE_SAT * 1000));
    let left = START_BALANCE_SAT - 5 - ROUTE_FEE_SAT;
    assert_eq!(phoenixd.balance().await.unwrap(), Msat(left * 1000));

    // A sub-satoshi invoice can be paid (phoenixd reports whole satoshis delivered).
    let odd = fake.remote_invoice(1_500);
    assert_eq!(
        phoenixd
            .pay_invoice(&odd, Msat(10_000))
            .await
            .unwrap()
            .amount,
        Msat(1_500)
    );
}

#[tokio::test]
async fn paying_twice_is_already_paid() {
    let (fake, phoenixd) = setup().await;
    let bolt11 = fake.remote_invoice(5_000);
    phoenixd.pay_invoice(&bolt11, Msat(10_000)).await.unwrap();
    assert_eq!(
        phoenixd.pay_invoice(&bolt11, Msat(10_000)).await,
        Err(BackendError::AlreadyPaid)
    );
    assert_eq!(fake.balance_sat(), START_BALANCE_SAT - 5 - ROUTE_FEE_SAT);
}

#[tokio::test]
async fn payment_failures_are_precise() {
    let (fake, phoenixd) = setup().await;
    let bolt11 = fake.remote_invoice(5_000);
    fake.set_balance_sat(3);
    assert_eq!(
        phoenixd.pay_invoice(&bolt11, Msat(10_000)).await,
        Err(BackendError::InsufficientBalance)
    );
    fake.set_balance_sat(START_BALANCE_SAT);

    let stranger = contract_fakes::Node::new().invoice(
        Currency::BitcoinTestnet,
        5_000,
        "?",
        &Preimage::random().payment_hash(),
        now(),
        600,
    );
    let err = phoenixd
        .pay_invoice(&stranger, Msat(10_000))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BackendError::Rejected(m) if m.contains("recipient rejected")),
        "{err:?}"
    );

    let requests = fake.requests();
    let expired =
        fake.phoenixd
            .remote
            .invoice_at(Currency::BitcoinTestnet, 5_000, now() - 1_000, 60);
    assert_eq!(
        phoenixd.pay_invoice(&expired, Msat(10_000)).await,
        Err(BackendError::InvoiceExpired)
    );
    assert_eq!(fake.requests(), requests);
    assert_eq!(fake.balance_sat(), START_BALANCE_SAT);
}

#[tokio::test]
async fn a_wrong_password_is_unauthorized() {
    let (fake, _) = setup().await;
    let config = PhoenixdConfig {
        password: SecretSource::Inline("not-the-password".into()),
        ..fake.config()
    };
    let phoenixd = PhoenixdBackend::new(&config).unwrap();
    let err = phoenixd.info().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Unauthorized(m) if m.contains("401")),
        "{err:?}"
    );
    assert!(matches!(
        phoenixd
            .pay_invoice(&fake.remote_invoice(1_000), Msat(10_000))
            .await,
        Err(BackendError::Unauthorized(_))
    ));

    // The limited-access password is enough for the gateway, not for paying.
    let limited = PhoenixdBackend::new(&PhoenixdConfig {
        password: SecretSource::Inline(LIMITED_PASSWORD.into()),
        ..fake.config()
    })
    .unwrap();
    let issued = limited.create_invoice(req(1_000, "x", 60)).await.unwrap();
    limited.lookup_invoice(&issued.payment_hash).await.unwrap();
    assert!(matches!(
        limited
            .pay_invoice(&fake.remote_invoice(1_000), Msat(10_000))
            .await,
        Err(BackendError::Unauthorized(_))
    ));
    assert_eq!(fake.balance_sat(), START_BALANCE_SAT);
}

#[tokio::test]
async fn a_silent_node_times_out_within_the_timeout() {
    let (fake, phoenixd) = setup().await;
    let timeout = Duration::from_millis(300);
    let phoenixd = phoenixd.with_timeouts(timeout, timeout);
    fake.set_fault(Fault::Hang);
    let bolt11 = fake.remote_invoice(1_000);
    let started = Instant::now();
    assert_eq!(
        phoenixd.create_invoice(req(1_000, "x", 60)).await,
        Err(BackendError::Timeout)
    );
    assert_eq!(
        phoenixd.pay_invoice(&bolt11, Msat(10_000)).await,
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
    let (fake, phoenixd) = setup().await;
    let issued = phoenixd.create_invoice(req(1_000, "x", 600)).await.unwrap();
    fake.settle(&issued.payment_hash);

    fake.set_fault(Fault::WrongPreimage);
    assert!(matches!(
        phoenixd.lookup_invoice(&issued.payment_hash).await,
        Err(BackendError::InvalidResponse(_))
    ));
    let err = phoenixd
        .pay_invoice(&fake.remote_invoice(1_000), Msat(10_000))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BackendError::InvalidResponse(m) if m.contains("preimage")),
        "{err:?}"
    );

    fake.set_fault(Fault::WrongAmount);
    assert!(matches!(
        phoenixd.create_invoice(req(1_000, "x", 600)).await,
        Err(BackendError::InvalidResponse(_))
    ));
    let err = phoenixd
        .pay_invoice(&fake.remote_invoice(1_000), Msat(10_000))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BackendError::InvalidResponse(m) if m.contains("delivered")),
        "{err:?}"
    );

    fake.set_fault(Fault::MalformedJson);
    assert!(matches!(
        phoenixd.lookup_invoice(&issued.payment_hash).await,
        Err(BackendError::InvalidResponse(_))
    ));
    assert!(matches!(
        phoenixd.balance().await,
        Err(BackendError::InvalidResponse(_))
    ));
}

#[tokio::test]
async fn safe_calls_are_retried_payments_are_not() {
    let (fake, phoenixd) = setup().await;
    fake.set_fault(Fault::Unavailable(2));
    let before = fake.requests();
    phoenixd.balance().await.unwrap();
    assert_eq!(fake.requests() - before, 3);

    fake.set_fault(Fault::Unavailable(1));
    let before = fake.requests();
    assert!(matches!(
        phoenixd
            .pay_invoice(&fake.remote_invoice(1_000), Msat(10_000))
            .await,
        Err(BackendError::Unreachable(_))
    ));
    assert_eq!(fake.requests() - before, 1);
    assert_eq!(fake.balance_sat(), START_BALANCE_SAT);
}

#[tokio::test]
async fn diagnose_reports_the_node() {
    let (fake, phoenixd) = setup().await;
    let info = phoenixd.info().await.unwrap();
    assert_eq!(info.backend, "phoenixd");
    assert_eq!(info.alias, None);
    assert_eq!(info.node_id.as_deref(), Some(fake.node_id().as_str()));
    assert_eq!(info.network.as_deref(), Some("testnet"));
    // The fee credit (FEE_CREDIT_SAT) cannot be spent: not in the balance.
    assert_eq!(info.balance, Some(Msat(START_BALANCE_SAT * 1000)));
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let (fake, _) = setup().await;
    let config = PhoenixdConfig {
        url: format!("http://127.0.0.1:{}", contract_fakes::closed_port()),
        ..fake.config()
    };
    let phoenixd = PhoenixdBackend::new(&config).unwrap();
    assert!(matches!(
        phoenixd.info().await,
        Err(BackendError::Unreachable(_))
    ));
}

#[tokio::test]
async fn payments_are_looked_up_by_hash() {
    use turnpike_lightning::OutgoingState;
    let (fake, phoenixd) = setup().await;

    let bolt11 = fake.remote_invoice(7_000);
    let paid = phoenixd.pay_invoice(&bolt11, Msat(10_000)).await.unwrap();
    match phoenixd.lookup_payment(&paid.payment_hash).await.unwrap() {
        OutgoingState::Succeeded(p) => {
            assert_eq!(p, paid);
            assert_eq!(p.fee, Msat(ROUTE_FEE_SAT * 1000));
        }
        other => panic!("not succeeded: {other:?}"),
    }

    let stranger = contract_fakes::Node::new().invoice(
        Currency::BitcoinTestnet,
        5_000,
        "?",
        &Preimage::random().payment_hash(),
        now(),
        600,
    );
    assert!(phoenixd.pay_invoice(&stranger, Msat(10_000)).await.is_err());
    let hash = turnpike_l402::bolt11::Invoice::parse(&stranger)
        .unwrap()
        .payment_hash();
    assert!(matches!(
        phoenixd.lookup_payment(&hash).await.unwrap(),
        OutgoingState::Failed(_)
    ));

    let held = fake.hold_pending(&fake.remote_invoice(3_000));
    assert_eq!(
        phoenixd.lookup_payment(&held).await.unwrap(),
        OutgoingState::Pending
    );
    assert_eq!(
        phoenixd
            .lookup_payment(&Preimage::random().payment_hash())
            .await
            .unwrap(),
        OutgoingState::Unknown
    );

    fake.set_fault(Fault::WrongPreimage);
    assert!(matches!(
        phoenixd.lookup_payment(&paid.payment_hash).await,
        Err(BackendError::InvalidResponse(_))
    ));
}

#[tokio::test]
async fn can_pay_tells_the_passwords_apart_without_paying() {
    let fake = PhoenixdFake::start().await;
    let full = PhoenixdBackend::from_values(&fake.url(), contract_fakes::phoenixd::PASSWORD, false)
        .unwrap();
    let limited = PhoenixdBackend::from_values(&fake.url(), LIMITED_PASSWORD, false).unwrap();
    assert!(full.can_pay().await.unwrap());
    assert!(!limited.can_pay().await.unwrap());
    assert_eq!(fake.payments_sent(), 0);
    // The limited password still makes invoices.
    let issued = limited.create_invoice(req(1_000, "x", 60)).await.unwrap();
    assert_eq!(issued.amount, Msat(1_000));
}

#[tokio::test]
async fn a_public_only_backend_refuses_internal_addresses_when_connecting() {
    let fake = PhoenixdFake::start().await;
    let url = fake.url().replace("127.0.0.1", "localhost");
    let backend = PhoenixdBackend::from_values(&url, LIMITED_PASSWORD, true).unwrap();
    let err = backend
        .create_invoice(req(1_000, "x", 60))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BackendError::Unreachable(m) if m.contains("internal")),
        "{err:?}"
    );
    assert_eq!(fake.requests(), 0);
}
