//! The NWC backend against a real nostr relay on loopback, with the test wallet service of
//! `nwc_fake/` (also used by the turnpike crate's hub tests).

mod nwc_fake;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nostr::{Event, Keys, Kind};
use serde_json::Value;
use turnpike_lightning::nwc::{Encryption, NwcBackend, NwcConfig, NwcConfigError};
use turnpike_lightning::{
    BackendError, CreateInvoice, Diagnose, InvoiceBackend, InvoiceState, Msat, PaymentBackend,
    PaymentHash, SecretSource,
};

use nwc_fake::*;

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

/// A public-only backend (a hub provider's payout) does not connect to a relay on loopback,
/// live as it is: nothing reaches the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_only_backend_refuses_a_loopback_relay() {
    let (_relay, url, recorder) = relay().await;
    let network = Arc::new(Network::default());
    let wallet = Wallet::start(&url, network, 1, Knobs::default()).await;
    let backend = wallet.backend(&url, CALL).public_only();
    let err = backend
        .create_invoice(invoice_req(1_000, "x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BackendError::Unreachable(m) if m.contains("wss")),
        "{err:?}"
    );
    assert!(recorder.of_kind(Kind::WalletConnectRequest).is_empty());
}

/// `get_info` tells which paying methods a connection has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spending_methods_come_from_get_info() {
    let (_relay, url, _recorder) = relay().await;
    let network = Arc::new(Network::default());
    let open = Wallet::start(&url, network.clone(), 1, Knobs::default()).await;
    let knobs = Knobs {
        restricted: ["pay_invoice"].into_iter().collect(),
        ..Knobs::default()
    };
    let invoice_only = Wallet::start(&url, network, 2, knobs).await;
    let methods = open.backend(&url, CALL).spending_methods().await.unwrap();
    assert_eq!(methods, ["pay_invoice"]);
    let none = invoice_only
        .backend(&url, CALL)
        .spending_methods()
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
}

/// A TCP forwarder to `target` counting its open connections.
async fn counting_forwarder(target: String) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = open.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let counter = counter.clone();
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (format!("ws://{addr}"), open)
}

/// A backend dropped closes its relay connections (the relay pool ends with its last handle):
/// a hub replaces a provider's backend when its record changes, and the old one must not keep
/// connections and reconnect forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_backend_closes_its_relay_connections() {
    use std::sync::atomic::Ordering;
    let (_relay, url, _recorder) = relay().await;
    let network = Arc::new(Network::default());
    let wallet = Wallet::start(&url, network.clone(), 1, Knobs::default()).await;
    network.set_balance(1, 1_000);
    let target = url
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_owned();
    let (forwarded, open) = counting_forwarder(target).await;
    let backend = wallet.backend(&forwarded, CALL);
    assert_eq!(backend.balance().await.unwrap(), Msat(1_000));
    assert_eq!(open.load(Ordering::SeqCst), 1);
    drop(backend);
    let deadline = Instant::now() + Duration::from_secs(5);
    while open.load(Ordering::SeqCst) != 0 {
        assert!(Instant::now() < deadline, "the connection stays open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
