//! NWC, LND, Core Lightning and phoenixd payouts on a hub, end to end (a real `turnpike
//! serve`): the CONTRACT FAKES of lnd, clnrest and phoenixd (`crates/lightning/tests/
//! contract_fakes/`) and the NIP-47 wallet service on an in-process nostr relay
//! (`crates/lightning/tests/nwc_fake/`), included from the lightning crate's tests.
//!
//! For each kind: registration asks the wallet for a 1-sat test invoice; a client pays a call
//! (the wallet's invoice, the macaroon minted over its hash, the client's preimage the proof);
//! the fee ledger shows the fee; a bad credential, a credential that could spend, and an
//! unreachable wallet are refused with nothing stored; no API answer shows a secret. A hub
//! without `allow_insecure_payouts` refuses http and internal wallets and relays.

use std::time::Duration;

use serde_json::{Value, json};
use turnpike_l402::bolt11::Invoice;
use turnpike_l402::credential::Credential;
use turnpike_l402::macaroon::Macaroon;
use turnpike_lightning::cln::ClnBackend;
use turnpike_lightning::lnd::LndBackend;
use turnpike_lightning::phoenixd::PhoenixdBackend;
use turnpike_lightning::{InvoiceBackend, InvoiceState, Msat, PaymentBackend, Preimage};

use super::{DOMAIN, Hub, start_hub, start_hub_with, upstream};

#[allow(dead_code)]
#[path = "../../../lightning/tests/contract_fakes/mod.rs"]
mod contract_fakes;
#[path = "../../../lightning/tests/nwc_fake/mod.rs"]
mod nwc_fake;

use contract_fakes::cln::{self as cln_fake, ClnFake};
use contract_fakes::closed_port;
use contract_fakes::lnd::{self as lnd_fake, LndFake};
use contract_fakes::phoenixd::{self as phoenixd_fake, PhoenixdFake};

/// A price of 21 sats: with the 2 % fee, 21,420 msat (21,420 → 22,000 for a wallet taking
/// whole satoshis).
const PRICE_SATS: u64 = 21;

/// The preimage of an invoice the wallet reports settled (the payer's proof).
async fn preimage_of(wallet: &dyn InvoiceBackend, bolt11: &str) -> Preimage {
    let hash = Invoice::parse(bolt11).unwrap().payment_hash();
    match wallet.lookup_invoice(&hash).await.unwrap().state {
        InvoiceState::Settled { preimage, .. } => preimage,
        other => panic!("not settled: {other:?}"),
    }
}

/// A provider on a wallet: its slug, its payout JSON, the secrets in it, and whether the wallet
/// takes whole satoshis only.
struct Case<'a> {
    slug: &'a str,
    payout: Value,
    secrets: Vec<String>,
    whole_sats: bool,
}

/// Registers `case`'s provider, puts a 21-sat service behind it and pays a call with `pay`:
/// the call is served and the fee is in the ledger; no answer shows a secret.
async fn paid_end_to_end<P>(hub: &Hub, case: Case<'_>, pay: P)
where
    P: AsyncFn(&str) -> Preimage,
{
    let slug = case.slug;
    let (status, registered) = hub
        .operator(
            "POST",
            "/hub/providers",
            Some(json!({ "name": slug, "slug": slug, "contact": "ops@example.com", "payout": case.payout })),
        )
        .await;
    assert_eq!(status, 201, "{registered}");
    let token = registered["token"].as_str().unwrap().to_owned();
    let (up, seen) = upstream().await;
    hub.add_service(
        &token,
        json!({ "name": format!("{slug}-quote"), "path": "/quote", "upstream": format!("http://{up}"), "price_sats": PRICE_SATS }),
    )
    .await;

    let host = format!("{slug}.{DOMAIN}");
    let (status, challenge) = hub.get(&host, "/quote", None).await;
    assert_eq!(status, 402, "{challenge}");
    let amount = if case.whole_sats { 22_000 } else { 21_420 };
    assert_eq!(challenge["amount_msat"], json!(amount), "{challenge}");
    let bolt11 = challenge["invoice"].as_str().unwrap();
    let invoice = Invoice::parse(bolt11).unwrap();
    assert_eq!(invoice.amount(), Some(Msat(amount)));
    let macaroon = Macaroon::from_base64(challenge["macaroon"].as_str().unwrap()).unwrap();
    // Minted over the hash of the wallet's invoice.
    let minted = turnpike_l402::identifier::Identifier::decode(macaroon.identifier()).unwrap();
    assert_eq!(minted.payment_hash, invoice.payment_hash());
    // Unpaid: not served.
    let forged = Credential {
        macaroon: macaroon.clone(),
        preimage: Preimage::random(),
    };
    let (status, _) = hub
        .get(&host, "/quote", Some(&forged.authorization_value()))
        .await;
    assert_eq!(status, 401, "a wrong preimage is refused");
    let preimage = pay(bolt11).await;
    let credential = Credential { macaroon, preimage }.authorization_value();
    let (status, body) = hub.get(&host, "/quote", Some(&credential)).await;
    assert_eq!((status, body), (200, json!({ "ok": true })));
    assert_eq!(seen.lock().unwrap().len(), 1);

    let row = hub.fees_of(slug, 1).await;
    assert_eq!(
        (&row["revenue_msat"], &row["fees_msat"]),
        (&json!(21_000), &json!(amount - 21_000)),
        "{row}"
    );
    let answers = [
        registered.to_string(),
        hub.call(&token, "GET", "/hub/me", None).await.1.to_string(),
        hub.operator("GET", "/hub/providers", None)
            .await
            .1
            .to_string(),
    ];
    for answer in &answers {
        for secret in &case.secrets {
            assert!(
                !answer.contains(secret.as_str()),
                "a secret shown: {answer}"
            );
        }
    }
    assert_eq!(registered["payout"]["kind"], case.payout["kind"]);
}

/// The hub's log in `dir` (`hub.log`) shows none of `secrets`.
fn no_secret_in_the_log(dir: &std::path::Path, secrets: &[&str]) {
    let log = std::fs::read_to_string(dir.join("hub.log")).unwrap();
    assert!(!log.is_empty());
    for secret in secrets {
        assert!(!log.contains(secret), "a secret in the log");
    }
}

/// Registration of `payout` as `slug` is refused with `status` (and `field`, for a 400), and
/// nothing is stored.
async fn refused(hub: &Hub, slug: &str, payout: Value, status: u16, field: Option<&str>) -> Value {
    let before = hub.operator("GET", "/hub/providers", None).await.1;
    let body =
        json!({ "name": slug, "slug": slug, "contact": "ops@example.com", "payout": payout });
    let err = hub.refuses(body, status, field).await;
    if status == 422 {
        assert_eq!(err["error"]["code"], "payout_unusable", "{err}");
    }
    assert_eq!(hub.operator("GET", "/hub/providers", None).await.1, before);
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_lnd_provider_is_paid_on_its_own_node() {
    turnpike_lightning::ensure_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let lnd = LndFake::start().await;
    let hub = start_hub(dir.path(), 0);
    let macaroon = lnd_fake::invoice_macaroon_hex();
    let payout = |mac: &str, cert: &str| json!({ "kind": "lnd", "url": lnd.url(), "macaroon": mac, "tls_cert": cert });
    let cert = lnd.identity.cert_pem.clone();

    // The admin-like macaroon the fake also takes is refused for what it grants; another
    // certificate than the node's fails the pin; a closed port is unreachable.
    refused(
        &hub,
        "lnd-a",
        payout(lnd_fake::MACAROON_HEX, &cert),
        400,
        Some("payout.macaroon"),
    )
    .await;
    let other = contract_fakes::lnd_style_certificate().cert_pem;
    refused(&hub, "lnd-a", payout(&macaroon, &other), 422, None).await;
    let closed = json!({ "kind": "lnd", "url": format!("https://127.0.0.1:{}", closed_port()), "macaroon": macaroon });
    refused(&hub, "lnd-a", closed, 422, None).await;
    // A macaroon lnd does not know (an invoice macaroon of another node).
    let unknown = turnpike_lightning::spend_rights::test_credentials::lnd_macaroon(&[
        "invoices:read",
        "invoices:write",
    ]);
    refused(&hub, "lnd-a", payout(&unknown, &cert), 422, None).await;

    let checker = LndBackend::new(&lnd.config(dir.path())).unwrap();
    let case = Case {
        slug: "lnd-a",
        payout: payout(&macaroon, &cert),
        secrets: vec![macaroon.clone()],
        whole_sats: false,
    };
    paid_end_to_end(&hub, case, async |bolt11: &str| {
        lnd.settle(&Invoice::parse(bolt11).unwrap().payment_hash());
        preimage_of(&checker, bolt11).await
    })
    .await;
    no_secret_in_the_log(dir.path(), &[&macaroon, lnd_fake::MACAROON_HEX, &unknown]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cln_provider_is_paid_on_its_own_node() {
    turnpike_lightning::ensure_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let cln = ClnFake::start_http().await;
    let hub = start_hub(dir.path(), 0);
    let rune = cln_fake::invoice_rune();
    let payout = |rune: &str| json!({ "kind": "cln", "url": cln.url(), "rune": rune });

    // The master rune can pay: refused; a restricted rune clnrest does not know: 422.
    refused(
        &hub,
        "cln-a",
        payout(cln_fake::RUNE),
        400,
        Some("payout.rune"),
    )
    .await;
    let stranger = turnpike_lightning::spend_rights::test_credentials::cln_rune(
        "=9&method=invoice|method=listinvoices",
    );
    refused(&hub, "cln-a", payout(&stranger), 422, None).await;
    let closed = json!({ "kind": "cln", "url": format!("http://127.0.0.1:{}", closed_port()), "rune": rune });
    refused(&hub, "cln-a", closed, 422, None).await;

    let checker = ClnBackend::new(&cln.config(dir.path())).unwrap();
    let case = Case {
        slug: "cln-a",
        payout: payout(&rune),
        secrets: vec![rune.clone()],
        whole_sats: false,
    };
    paid_end_to_end(&hub, case, async |bolt11: &str| {
        cln.settle(&Invoice::parse(bolt11).unwrap().payment_hash());
        preimage_of(&checker, bolt11).await
    })
    .await;
    no_secret_in_the_log(dir.path(), &[&rune, cln_fake::RUNE, &stranger]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phoenixd_provider_is_paid_on_its_own_wallet() {
    turnpike_lightning::ensure_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let phoenixd = PhoenixdFake::start().await;
    let hub = start_hub(dir.path(), 0);
    let payout =
        |password: &str| json!({ "kind": "phoenixd", "url": phoenixd.url(), "password": password });

    // The full-access password can pay: refused (asked without paying anything).
    let err = refused(&hub, "phx", payout(phoenixd_fake::PASSWORD), 422, None).await;
    assert!(err.to_string().contains("full-access"), "{err}");
    assert_eq!(phoenixd.payments_sent(), 0);
    refused(&hub, "phx", payout("wrong-password"), 422, None).await;
    let closed = json!({ "kind": "phoenixd", "url": format!("http://127.0.0.1:{}", closed_port()), "password": "x" });
    refused(&hub, "phx", closed, 422, None).await;

    let checker = PhoenixdBackend::new(&phoenixd.config()).unwrap();
    let limited = phoenixd_fake::LIMITED_PASSWORD.to_owned();
    let case = Case {
        slug: "phx",
        payout: payout(&limited),
        secrets: vec![limited.clone()],
        whole_sats: true,
    };
    paid_end_to_end(&hub, case, async |bolt11: &str| {
        phoenixd.settle(&Invoice::parse(bolt11).unwrap().payment_hash());
        preimage_of(&checker, bolt11).await
    })
    .await;
    no_secret_in_the_log(
        dir.path(),
        &[
            phoenixd_fake::PASSWORD,
            phoenixd_fake::LIMITED_PASSWORD,
            "wrong-password",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nwc_provider_is_paid_on_its_own_wallet() {
    turnpike_lightning::ensure_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay_url, _seen) = nwc_fake::relay().await;
    let network = std::sync::Arc::new(nwc_fake::Network::default());
    // The provider's connection may make and look up invoices only.
    let knobs = nwc_fake::Knobs {
        restricted: ["pay_invoice", "get_balance"].into_iter().collect(),
        ..nwc_fake::Knobs::default()
    };
    let provider = nwc_fake::Wallet::start(&relay_url, network.clone(), 1, knobs).await;
    let spender = nwc_fake::Wallet::start(&relay_url, network.clone(), 2, Default::default()).await;
    let payer = nwc_fake::Wallet::start(&relay_url, network.clone(), 3, Default::default()).await;
    network.set_balance(3, 1_000_000);
    let hub = start_hub(dir.path(), 0);

    // A connection that may pay is refused; so is a wallet nobody answers for.
    let err = refused(
        &hub,
        "nwc-a",
        json!({ "kind": "nwc", "uri": spender.uri(&relay_url) }),
        422,
        None,
    )
    .await;
    assert!(err.to_string().contains("pay_invoice"), "{err}");
    let silent = nwc_fake::Knobs {
        silent: true,
        ..nwc_fake::Knobs::default()
    };
    let nobody = nwc_fake::Wallet::start(&relay_url, network.clone(), 4, silent).await;
    refused(
        &hub,
        "nwc-a",
        json!({ "kind": "nwc", "uri": nobody.uri(&relay_url) }),
        422,
        None,
    )
    .await;
    let dead = format!("ws://127.0.0.1:{}", closed_port());
    refused(
        &hub,
        "nwc-a",
        json!({ "kind": "nwc", "uri": provider.uri(&dead) }),
        422,
        None,
    )
    .await;

    let uri = provider.uri(&relay_url);
    let secret = provider.client.secret_key().to_secret_hex();
    let paying = payer.backend(&relay_url, Duration::from_secs(10));
    let case = Case {
        slug: "nwc-a",
        payout: json!({ "kind": "nwc", "uri": uri }),
        secrets: vec![secret, uri.clone()],
        whole_sats: true,
    };
    let before = network.balance(1);
    paid_end_to_end(&hub, case, async |bolt11: &str| {
        paying.pay_invoice(bolt11, Msat(0)).await.unwrap().preimage
    })
    .await;
    assert_eq!(
        network.balance(1),
        before + 22_000,
        "paid on the provider's wallet"
    );
    let secrets = [&provider, &spender, &nobody].map(|w| w.client.secret_key().to_secret_hex());
    no_secret_in_the_log(dir.path(), &secrets.each_ref().map(String::as_str));
}

/// A hub without `allow_insecure_payouts`: http wallets, wallets and relays on internal
/// addresses, and `ws` relays are refused (`400`, field `payout`) before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssrf_guard_refuses_internal_and_plain_wallets() {
    turnpike_lightning::ensure_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let phoenixd = PhoenixdFake::start().await;
    let (_relay, relay_url, seen) = nwc_fake::relay().await;
    let network = std::sync::Arc::new(nwc_fake::Network::default());
    let wallet = nwc_fake::Wallet::start(&relay_url, network, 1, Default::default()).await;
    let hub = start_hub_with(
        dir.path(),
        "strict",
        0,
        "",
        "allow_insecure_payouts = false",
    );
    let macaroon = lnd_fake::invoice_macaroon_hex();
    let rune = cln_fake::invoice_rune();
    let limited = phoenixd_fake::LIMITED_PASSWORD;
    let wss_loopback = relay_url.replace("ws://", "wss://");
    for payout in [
        json!({ "kind": "phoenixd", "url": phoenixd.url(), "password": limited }),
        json!({ "kind": "phoenixd", "url": phoenixd.url().replace("http://", "https://"), "password": limited }),
        json!({ "kind": "lnd", "url": "https://10.1.2.3:8080", "macaroon": macaroon }),
        json!({ "kind": "lnd", "url": "https://169.254.169.254", "macaroon": macaroon }),
        json!({ "kind": "cln", "url": "https://localhost:3010", "rune": rune }),
        json!({ "kind": "cln", "url": "http://1.1.1.1:3010", "rune": rune }),
        json!({ "kind": "nwc", "uri": wallet.uri(&relay_url) }),
        json!({ "kind": "nwc", "uri": wallet.uri(&wss_loopback) }),
    ] {
        refused(&hub, "sneaky", payout, 400, Some("payout")).await;
    }
    assert_eq!(phoenixd.requests(), 0, "nothing was sent to the wallet");
    assert!(
        seen.of_kind(nostr::Kind::WalletConnectRequest).is_empty(),
        "nothing was sent to the relay"
    );
}
