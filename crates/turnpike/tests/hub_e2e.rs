//! The hub (`[hub]`) end to end: a real `turnpike serve`, providers registered through the
//! admin API, each paid on its own wallet of a real LNbits (1.6.2, FakeWallet: balances really
//! move), or through a Lightning address served by the LNURL-pay CONTRACT FAKE
//! (`lnurl_contract_fake/`, itself backed by a real LNbits wallet).
//!
//! Needs `TURNPIKE_LNBITS_INFO` (written by `scripts/lnbits.sh start`; `scripts/test.sh` does
//! it). Without it: skipped with a message, or a failure under `TURNPIKE_STRICT_TESTS=1`.

mod common;
mod hub_harness;
#[path = "hub_payouts/mod.rs"]
mod hub_payouts;
mod lnbits_node;
mod lnurl_contract_fake;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use turnpike_lightning::{Msat, PaymentBackend};

use hub_harness::{DOMAIN, Hub, start_hub, start_hub_with, until, upstream};
use lnbits_node::{Keys, Node, balance, lnbits_payout, node, pay_challenge as pay};
use lnurl_contract_fake::{LnurlFake, Mode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_providers_paid_on_their_own_wallets_with_the_fee_in_the_ledger() {
    let Some(node) = node() else { return };
    let (alice_w, bob_w) = (node.wallet("alice", 0).await, node.wallet("bob", 0).await);
    let payer = node.wallet("payer", 10_000).await;
    let (up, seen) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path(), 0);

    let alice = hub.register("alice", lnbits_payout(&node, &alice_w)).await;
    let bob = hub.register("bob", lnbits_payout(&node, &bob_w)).await;
    let service = |name: &str, path: &str, price: u64| json!({ "name": name, "path": path, "upstream": format!("http://{up}"), "price_sats": price });
    let created = hub
        .add_service(&alice, service("alice-quote", "/quote", 21))
        .await;
    assert_eq!(created["provider"], "alice");
    hub.add_service(&bob, service("bob-data", "/data", 100))
        .await;

    // Alice's service by path prefix: 21 sats + 2 % = 21.42 sats, rounded up to 22 (LNbits
    // takes whole satoshis); the prefix is stripped before the upstream.
    let (a0, b0) = (balance(&node, &alice_w).await, balance(&node, &bob_w).await);
    let (status, challenge) = hub.get("gw.example", "/alice/quote?x=1", None).await;
    assert_eq!(status, 402, "{challenge}");
    assert_eq!(
        (&challenge["price_msat"], &challenge["amount_msat"]),
        (&json!(21_000), &json!(22_000))
    );
    let credential = pay(&node, &payer, &challenge).await;
    let (status, body) = hub
        .get("gw.example", "/alice/quote?x=1", Some(&credential))
        .await;
    assert_eq!((status, body), (200, json!({ "ok": true })));
    assert_eq!(seen.lock().unwrap().last().unwrap(), "/quote?x=1");
    assert_eq!(balance(&node, &alice_w).await, Msat(a0.0 + 22_000));

    // Bob's service by host: 100 sats + 2 % = 102 sats exactly.
    let bob_host = format!("bob.{DOMAIN}");
    let (status, challenge) = hub.get(&bob_host, "/data", None).await;
    assert_eq!((status, &challenge["amount_msat"]), (402, &json!(102_000)));
    let credential = pay(&node, &payer, &challenge).await;
    let (status, _) = hub.get(&bob_host, "/data", Some(&credential)).await;
    assert_eq!(status, 200);
    assert_eq!(seen.lock().unwrap().last().unwrap(), "/data");
    assert_eq!(balance(&node, &bob_w).await, Msat(b0.0 + 102_000));
    assert_eq!(balance(&node, &alice_w).await, Msat(a0.0 + 22_000));

    // The fee ledger: each provider owes what was added to its invoice.
    let a = hub.fees_of("alice", 1).await;
    assert_eq!(
        (&a["revenue_msat"], &a["fees_msat"]),
        (&json!(21_000), &json!(1_000))
    );
    let b = hub.fees_of("bob", 1).await;
    assert_eq!(
        (&b["revenue_msat"], &b["fees_msat"]),
        (&json!(100_000), &json!(2_000))
    );
    // This month's statement: the operator sees both, a provider its own; a bad month is 400.
    let month = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let (y, m, _) = turnpike_store::Day::from_unix(now.as_secs()).ymd();
        format!("{y:04}-{m:02}")
    };
    let path = format!("/hub/statement?month={month}");
    let (status, all) = hub.operator("GET", &path, None).await;
    assert_eq!(
        (status, all["providers"].as_array().map(Vec::len)),
        (200, Some(2)),
        "{all}"
    );
    let (_, own) = hub.call(&alice, "GET", &path, None).await;
    assert_eq!(own["providers"].as_array().map(Vec::len), Some(1), "{own}");
    for key in ["provider", "payments", "revenue_msat", "fees_msat"] {
        assert_eq!(own["providers"][0][key], a[key], "{key}");
    }
    let (_, none) = hub
        .operator("GET", "/hub/statement?month=1999-01", None)
        .await;
    assert_eq!(none["providers"], json!([]));
    for bad in [
        "/hub/statement",
        "/hub/statement?month=2026-13",
        "/hub/statement?month=x&y=1",
    ] {
        let (status, err) = hub.operator("GET", bad, None).await;
        assert_eq!(
            (status, &err["error"]["field"]),
            (400, &json!("month")),
            "{bad}"
        );
    }
    let (status, me) = hub.call(&alice, "GET", "/hub/me", None).await;
    assert_eq!(
        (status, &me["fees"]["fees_msat"]),
        (200, &json!(1_000)),
        "{me}"
    );
    assert!(
        !me.to_string().contains(&alice_w.invoice),
        "the invoice key is never shown"
    );

    providers_cannot_reach_each_other(&hub, &alice, &bob).await;
    dashboards_see_only_their_own_figures(&hub, &alice, &bob).await;
    registration_is_checked(&hub, &node).await;
    a_provider_changes_its_payout(&hub, &node, &alice, (&alice_w, &payer)).await;
    a_used_name_is_not_taken_by_another(&hub, &alice, &bob).await;
}

/// What the dashboards read: a provider's `/api/v1/stats` holds its own services only (another's
/// named is 403); the operator's holds all; `/api/v1/session` says who is calling; the fees
/// stand per provider and in total (nothing billed yet: all owed, unbilled).
async fn dashboards_see_only_their_own_figures(hub: &Hub, alice: &str, bob: &str) {
    let services = |stats: &Value| -> Vec<String> {
        let mut v: Vec<String> = stats["days"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["service"].as_str().unwrap().to_owned())
            .collect();
        v.dedup();
        v
    };
    let (status, own) = hub.call(alice, "GET", "/stats", None).await;
    assert_eq!(
        (status, services(&own)),
        (200, vec!["alice-quote".into()]),
        "{own}"
    );
    // Alice's one paid call, at her price (the fee the client paid on top is the hub's).
    assert_eq!(
        (&own["totals"]["payments"], &own["totals"]["earned_msat"]),
        (&json!(1), &json!(21_000)),
        "{own}"
    );
    assert!(own["totals"]["calls_served"].as_u64() >= Some(1), "{own}");
    let (status, theirs) = hub.call(bob, "GET", "/stats", None).await;
    assert_eq!((status, services(&theirs)), (200, vec!["bob-data".into()]));
    assert_eq!(theirs["totals"]["earned_msat"], json!(100_000), "{theirs}");
    let (status, err) = hub
        .call(alice, "GET", "/stats?service=bob-data", None)
        .await;
    assert_eq!((status, &err["error"]["code"]), (403, &json!("forbidden")));
    let (status, one) = hub
        .call(alice, "GET", "/stats?service=alice-quote", None)
        .await;
    assert_eq!((status, &one["totals"]), (200, &own["totals"]));
    let (_, all) = hub.operator("GET", "/stats", None).await;
    let mut names = services(&all);
    names.sort();
    assert_eq!(names, ["alice-quote", "bob-data"]);

    let (status, who) = hub.call(alice, "GET", "/session", None).await;
    assert_eq!(
        (status, who),
        (
            200,
            json!({ "role": "provider", "provider": "alice", "hub": true })
        )
    );
    let (_, who) = hub.operator("GET", "/session", None).await;
    assert_eq!(
        who,
        json!({ "role": "operator", "provider": null, "hub": true })
    );

    let (status, fees) = hub.operator("GET", "/hub/fees", None).await;
    assert_eq!(status, 200, "{fees}");
    let t = &fees["totals"];
    assert_eq!(
        [
            &t["payments"],
            &t["revenue_msat"],
            &t["fees_msat"],
            &t["owed_msat"],
            &t["unbilled_msat"],
            &t["earned_msat"]
        ],
        [
            &json!(2),
            &json!(121_000),
            &json!(3_000),
            &json!(3_000),
            &json!(3_000),
            &json!(0)
        ],
        "{fees}"
    );
    let row = |slug: &str| {
        fees["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["provider"] == slug)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        (
            &row("bob")["status"],
            &row("bob")["name"],
            &row("bob")["owed_msat"]
        ),
        (&json!("active"), &json!("bob APIs"), &json!(2_000))
    );
    let (_, me) = hub.call(alice, "GET", "/hub/me", None).await;
    assert_eq!(
        (
            &me["fees"]["owed_msat"],
            &me["fees"]["unbilled_msat"],
            &me["fees"]["billed_paid_msat"]
        ),
        (&json!(1_000), &json!(1_000), &json!(0)),
        "{me}"
    );
}

/// Statistics are kept per name: a provider cannot take a name under which another (or the
/// operator) had traffic, so its dashboard never shows their counts.
async fn a_used_name_is_not_taken_by_another(hub: &Hub, alice: &str, bob: &str) {
    let (status, _) = hub.call(bob, "DELETE", "/services/bob-data", None).await;
    assert_eq!(status, 204);
    let taken = json!({ "name": "bob-data", "path": "/data", "upstream": "http://127.0.0.1:1", "price_sats": 1 });
    let (status, err) = hub.call(alice, "POST", "/services", Some(taken)).await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (409, &json!("conflict")),
        "{err}"
    );
    let (_, list) = hub.call(alice, "GET", "/services", None).await;
    assert_eq!(list["services"].as_array().map(Vec::len), Some(1), "{list}");
    let (_, own) = hub.call(alice, "GET", "/stats", None).await;
    assert!(!own.to_string().contains("bob-data"), "{own}");
    // Nor a name in use: a route's counts are kept as `<service>.<route>`, so alice may not
    // add the route `bulk` while bob has a service named `alice-quote.bulk`.
    let lookalike = json!({ "name": "alice-quote.bulk", "path": "/x", "upstream": "http://127.0.0.1:1", "price_sats": 1 });
    hub.add_service(bob, lookalike).await;
    let route = json!({ "routes": [{ "name": "bulk", "path": "/quote/bulk", "price_sats": 1 }] });
    let (status, err) = hub
        .call(alice, "PATCH", "/services/alice-quote", Some(route))
        .await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (409, &json!("conflict")),
        "{err}"
    );
    let (_, svc) = hub.call(alice, "GET", "/services/alice-quote", None).await;
    assert_eq!(svc["routes"].as_array().map_or(0, Vec::len), 0, "{svc}");
}

/// A provider moves to another wallet: a payout that gives no test invoice is refused and the
/// old one stays; a good one takes the next invoice at once.
async fn a_provider_changes_its_payout(
    hub: &Hub,
    node: &Node,
    alice: &str,
    (old, payer): (&Keys, &Keys),
) {
    let bad = json!({ "payout": { "kind": "lnbits", "url": node.url, "invoice_key": "0123456789abcdef0123456789abcdef" } });
    let (status, err) = hub.call(alice, "PATCH", "/hub/me", Some(bad)).await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (422, &json!("payout_unusable")),
        "{err}"
    );
    let (status, err) = hub
        .call(alice, "PATCH", "/hub/me", Some(json!({ "name": "x" })))
        .await;
    assert_eq!(status, 400, "{err}");
    let new = node.wallet("alice-new", 0).await;
    let change = json!({ "payout": lnbits_payout(node, &new) });
    let (status, body) = hub.call(alice, "PATCH", "/hub/me", Some(change)).await;
    assert_eq!(
        (status, &body["payout"]["kind"]),
        (200, &json!("lnbits")),
        "{body}"
    );
    let (old0, new0) = (balance(node, old).await, balance(node, &new).await);
    let (status, challenge) = hub.get("gw.example", "/alice/quote", None).await;
    assert_eq!(status, 402);
    pay(node, payer, &challenge).await;
    assert_eq!(balance(node, &new).await, Msat(new0.0 + 22_000));
    assert_eq!(balance(node, old).await, old0);
}

/// Alice's token sees and changes only Alice's services: Bob's are 403 and stay as they were.
async fn providers_cannot_reach_each_other(hub: &Hub, alice: &str, bob: &str) {
    let (status, list) = hub.call(alice, "GET", "/services", None).await;
    let names: Vec<&str> = list["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!((status, names), (200, vec!["alice-quote"]));
    let patch = Some(json!({ "price_sats": 1 }));
    let full = Some(
        json!({ "name": "bob-data", "path": "/data", "upstream": "http://127.0.0.1:1", "price_sats": 1 }),
    );
    for (method, body) in [
        ("GET", None),
        ("PATCH", patch.clone()),
        ("PUT", full),
        ("DELETE", None),
    ] {
        let (status, err) = hub.call(alice, method, "/services/bob-data", body).await;
        assert_eq!(
            (status, &err["error"]["code"]),
            (403, &json!("forbidden")),
            "{method}"
        );
    }
    // Nor can she make a service of Bob's, or hand her own to him.
    let theirs = json!({ "name": "sneaky", "upstream": "http://127.0.0.1:1", "price_sats": 1, "provider": "bob" });
    let (status, _) = hub.call(alice, "POST", "/services", Some(theirs)).await;
    assert_eq!(status, 403);
    let (status, _) = hub
        .call(
            alice,
            "PATCH",
            "/services/alice-quote",
            Some(json!({ "provider": "bob" })),
        )
        .await;
    assert_eq!(status, 403);
    // Nor set where her service answers, or read the hub's secrets through a header.
    for (key, patch) in [
        ("host", json!({ "host": format!("bob.{DOMAIN}") })),
        (
            "headers.X-Key",
            json!({ "headers": { "X-Key": { "env": "HOME" } } }),
        ),
    ] {
        let (status, err) = hub
            .call(alice, "PATCH", "/services/alice-quote", Some(patch))
            .await;
        assert_eq!(
            (status, err["error"]["field"].as_str()),
            (400, Some(key)),
            "{err}"
        );
    }
    // Even the operator cannot give a service to a provider that does not exist.
    let orphan = json!({ "name": "orphan", "upstream": "http://127.0.0.1:1", "price_sats": 1, "provider": "nobody" });
    let (status, err) = hub.operator("POST", "/services", Some(orphan)).await;
    assert_eq!(
        (status, &err["error"]["field"]),
        (400, &json!("provider")),
        "{err}"
    );
    // The operator's routes are not hers; a wrong token is nobody's.
    for path in [
        "/tokens",
        "/payments",
        "/hub/providers",
        "/hub/fees",
        "/hub/bills",
        "/health",
    ] {
        let (status, _) = hub.call(alice, "GET", path, None).await;
        assert_eq!(status, 403, "{path}");
    }
    let (status, _) = hub.call("not-a-token", "GET", "/services", None).await;
    assert_eq!(status, 401);
    // Bob's service is untouched.
    let (status, svc) = hub.call(bob, "GET", "/services/bob-data", None).await;
    assert_eq!(
        (status, &svc["price_sats"], &svc["path"]),
        (200, &json!(100), &json!("/data"))
    );
    let (_, all) = hub.operator("GET", "/services", None).await;
    assert_eq!(all["services"].as_array().unwrap().len(), 2, "{all}");
}

/// Registration refuses bad fields, taken slugs and payouts that give no test invoice, storing
/// nothing.
async fn registration_is_checked(hub: &Hub, node: &Node) {
    let before = hub.operator("GET", "/hub/providers", None).await.1;
    let good = lnbits_payout(node, &node.wallet("carol", 0).await);
    let reg = |slug: &str, payout: Value| json!({ "name": "Carol", "slug": slug, "contact": "carol@example.com", "payout": payout });
    let cases = [
        (reg("alice", good.clone()), 409, None),
        (reg("Carol!", good.clone()), 400, Some("slug")),
        (reg("admin", good.clone()), 400, Some("slug")),
        (
            reg(
                "carol",
                json!({ "kind": "lnbits", "url": node.url, "invoice_key": "0123456789abcdef0123456789abcdef" }),
            ),
            422,
            None,
        ),
        (
            reg("carol", json!({ "kind": "custodial" })),
            400,
            Some("payout.kind"),
        ),
        (
            json!({ "name": "Carol", "slug": "carol", "payout": good }),
            400,
            Some("contact"),
        ),
    ];
    for (body, status, field) in cases {
        hub.refuses(body, status, field).await;
    }
    assert_eq!(hub.operator("GET", "/hub/providers", None).await.1, before);
}

/// The prefix of a provider cannot be dodged: other spellings of `/alice/…` reach Alice's
/// service, at its price, and the upstream sees the path without the prefix whatever the
/// spelling; nothing reaches it unpaid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_prefix_cannot_be_bypassed() {
    let Some(node) = node() else { return };
    let alice_w = node.wallet("alice", 0).await;
    let payer = node.wallet("payer", 1_000).await;
    let (up, seen) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path(), 14);
    let alice = hub.register("alice", lnbits_payout(&node, &alice_w)).await;
    let svc = json!({ "name": "alice-quote", "path": "/quote", "upstream": format!("http://{up}"),
                      "price_sats": 21, "calls_per_payment": 20 });
    hub.add_service(&alice, svc).await;
    let spellings = [
        "/alice/quote",
        "/%61lice/quote",
        "//alice/quote",
        "/x/../alice/quote",
        "/ALICE/quote",
        "/alice;p=1/quote",
        "/alice/./quote",
        "/alice//quote",
        "/alice/%71uote",
    ];
    let mut credential = None;
    for path in spellings {
        let (status, body) = hub.get("gw.example", path, None).await;
        assert_eq!(
            (status, &body["service"]),
            (402, &json!("alice-quote")),
            "{path}: {body}"
        );
        // In the trial: no fee.
        assert_eq!(body["amount_msat"], json!(21_000), "{path}");
        if credential.is_none() {
            credential = Some(pay(&node, &payer, &body).await);
        }
    }
    for path in [
        "/alicequote",
        "/alice-quote",
        "/quote",
        "/bob/quote",
        "/alice",
    ] {
        let (status, _) = hub.get("gw.example", path, None).await;
        assert_eq!(status, 404, "{path}");
    }
    // The provider's host does not take the prefix; another provider's host is nothing.
    assert_eq!(
        hub.get(&format!("alice.{DOMAIN}"), "/quote", None).await.0,
        402
    );
    assert_eq!(
        hub.get(&format!("bob.{DOMAIN}"), "/quote", None).await.0,
        404
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the upstream unpaid"
    );
    let credential = credential.unwrap();
    for path in spellings {
        let (status, _) = hub.get("gw.example", path, Some(&credential)).await;
        assert_eq!(status, 200, "{path}");
        let last = seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(last, "/quote", "{path} reached the upstream as {last}");
    }

    // Suspended: no new payment (403, no invoice), the token already paid keeps working;
    // reinstated: 402 again. Only the operator does this.
    let path = "/hub/providers/alice/suspend";
    assert_eq!(hub.call(&alice, "POST", path, None).await.0, 403);
    let (status, body) = hub.operator("POST", path, None).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("suspended")),
        "{body}"
    );
    let (status, body) = hub.get("gw.example", "/alice/quote", None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("provider_suspended"))
    );
    assert!(body.get("invoice").is_none());
    assert_eq!(
        hub.get("gw.example", "/alice/quote", Some(&credential))
            .await
            .0,
        200
    );
    let (status, _) = hub
        .operator("POST", "/hub/providers/nobody/suspend", None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = hub
        .operator("POST", "/hub/providers/alice/reinstate", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(hub.get("gw.example", "/alice/quote", None).await.0, 402);
}

/// A provider paid through a Lightning address only: the invoice comes from its LNURL-pay
/// callback (checked: exact amount, description hash), the client pays, the call is served,
/// LUD-21 `verify` reports it settled, and makes the fee of a paid token never used owed. A callback that lies about the amount or the
/// description hash is refused: 503, no invoice handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lightning_address_provider_is_paid_end_to_end() {
    let Some(node) = node() else { return };
    let dave_w = node.wallet("dave", 0).await;
    let payer = node.wallet("payer", 10_000).await;
    let fake = LnurlFake::start(&node.url).await;
    let address = fake.add_user("dave", &dave_w.invoice);
    let (up, seen) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path(), 0);
    let dave = hub
        .register(
            "dave",
            json!({ "kind": "lightning_address", "address": address }),
        )
        .await;
    let svc = json!({ "name": "dave-api", "upstream": format!("http://{up}"), "price_sats": 50 });
    hub.add_service(&dave, svc).await;

    let d0 = balance(&node, &dave_w).await;
    let (status, challenge) = hub.get("gw.example", "/dave/v1/x", None).await;
    assert_eq!(
        (status, &challenge["amount_msat"]),
        (402, &json!(51_000)),
        "{challenge}"
    );
    let credential = pay(&node, &payer, &challenge).await;
    let (status, _) = hub.get("gw.example", "/dave/v1/x", Some(&credential)).await;
    assert_eq!(status, 200);
    assert_eq!(seen.lock().unwrap().as_slice(), ["/v1/x"]);
    assert_eq!(balance(&node, &dave_w).await, Msat(d0.0 + 51_000));
    let verify: Value =
        reqwest::get(fake.verify_url("dave", challenge["payment_hash"].as_str().unwrap()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(
        (&verify["status"], &verify["settled"]),
        (&json!("OK"), &json!(true))
    );
    let d = hub.fees_of("dave", 1).await;
    assert_eq!(
        (&d["revenue_msat"], &d["fees_msat"]),
        (&json!(50_000), &json!(1_000))
    );

    // A token paid and never used: its fee is owed all the same, once LUD-21 verify (asked in
    // the background) reports the invoice settled.
    let (status, unused) = hub.get("gw.example", "/dave/v1/x", None).await;
    assert_eq!(status, 402);
    pay(&node, &payer, &unused).await;
    let d = hub.fees_of("dave", 2).await;
    assert_eq!(d["fees_msat"], json!(2_000));

    for mode in [Mode::WrongAmount, Mode::WrongHash] {
        fake.set_mode("dave", mode);
        let (status, body) = hub.get("gw.example", "/dave/v1/x", None).await;
        assert_eq!(status, 503, "{mode:?}: {body}");
        assert!(body.get("invoice").is_none());
    }
    // A liar cannot register either: its test invoice is refused.
    let liar = fake.add_user("liar", &dave_w.invoice);
    fake.set_mode("liar", Mode::WrongHash);
    let (status, err) = hub
        .operator(
            "POST",
            "/hub/providers",
            Some(
                json!({ "name": "L", "slug": "liar", "contact": "l@x.example",
                          "payout": { "kind": "lightning_address", "address": liar } }),
            ),
        )
        .await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (422, &json!("payout_unusable")),
        "{err}"
    );
}

/// The Lightning-address backend itself against the contract fake: LUD-21 `verify` tells an
/// unpaid invoice from a paid one, whose preimage it checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lud21_verify_reports_settlement() {
    use turnpike_lightning::lnurl::{LnAddressBackend, LnurlPolicy};
    use turnpike_lightning::{CreateInvoice, InvoiceBackend, InvoiceState};
    let Some(node) = node() else { return };
    let erin_w = node.wallet("erin", 0).await;
    let payer = node.wallet("payer", 1_000).await;
    let fake = LnurlFake::start(&node.url).await;
    let address = fake.add_user("erin", &erin_w.invoice);
    let policy = LnurlPolicy {
        allow_insecure: true,
        network: turnpike_l402::bolt11::Network::Bitcoin,
    };
    let backend = LnAddressBackend::new(address.parse().unwrap(), policy).unwrap();
    let issued = backend
        .create_invoice(CreateInvoice {
            amount: Msat(7_000),
            memo: "x".into(),
            expiry_secs: 600,
        })
        .await
        .unwrap();
    let status = backend.lookup_invoice(&issued.payment_hash).await.unwrap();
    assert_eq!(status.state, InvoiceState::Pending);
    let paid = node
        .payer(&payer)
        .pay_invoice(&issued.bolt11, Msat(0))
        .await
        .unwrap();
    let status = backend.lookup_invoice(&issued.payment_hash).await.unwrap();
    assert!(
        matches!(status.state, InvoiceState::Settled { preimage, .. } if preimage == paid.preimage),
        "{status:?}"
    );
    // Strict policy: a loopback LNURL server is refused before anything is sent.
    let strict = LnAddressBackend::new(
        address.parse().unwrap(),
        LnurlPolicy {
            allow_insecure: false,
            ..policy
        },
    )
    .unwrap();
    let err = strict
        .create_invoice(CreateInvoice {
            amount: Msat(7_000),
            memo: "x".into(),
            expiry_secs: 600,
        })
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
}

/// With `open_registration`, anyone registers on the public listener and gets a token that
/// works on the admin listener; bad input is refused there too. Without it, the route is 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_registration_on_the_public_listener() {
    let Some(node) = node() else { return };
    let wallet = node.wallet("frank", 0).await;
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub_with(dir.path(), "hub", 14, "", "open_registration = true");
    let reg = |slug: &str| {
        json!({ "name": "Frank", "slug": slug, "contact": "f@x.example",
                "payout": lnbits_payout(&node, &wallet) })
    };
    assert_eq!(hub.self_register(reg("Frank")).await.0, 400);
    let (status, body) = hub.self_register(reg("frank")).await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap();
    let (status, me) = hub.call(token, "GET", "/hub/me", None).await;
    assert_eq!((status, &me["slug"]), (200, &json!("frank")));
    assert_eq!(hub.self_register(reg("frank")).await.0, 409);

    let closed_dir = tempfile::tempdir().unwrap();
    let closed = start_hub(closed_dir.path(), 14);
    assert_eq!(closed.self_register(reg("frank")).await.0, 404);
    let (_, providers) = closed.operator("GET", "/hub/providers", None).await;
    assert_eq!(providers["providers"], json!([]));
}

/// One hub on two replicas sharing PostgreSQL: a provider registered on one is known to the
/// other (its token, its services), a token bought on one is served on the other, and the fee
/// is owed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_postgres_share_providers_and_the_ledger() {
    let Some(node) = node() else { return };
    let Some((admin_url, url)) = common::pg_database().await else {
        return;
    };
    let alice_w = node.wallet("alice", 0).await;
    let payer = node.wallet("payer", 1_000).await;
    let (up, seen) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("[store]\nurl = \"{url}\"");
    let a = start_hub_with(dir.path(), "a", 0, &store, "");
    let b = start_hub_with(dir.path(), "b", 0, &store, "");
    let alice = a.register("alice", lnbits_payout(&node, &alice_w)).await;
    until("B knows alice's token", async || {
        (b.call(&alice, "GET", "/hub/me", None).await.0 == 200).then_some(())
    })
    .await;
    let svc =
        json!({ "name": "alice-quote", "upstream": format!("http://{up}"), "price_sats": 50 });
    b.add_service(&alice, svc).await;
    let challenge = until("A serves alice's service", async || {
        let (status, body) = a.get("gw.example", "/alice/q", None).await;
        (status == 402).then_some(body)
    })
    .await;
    assert_eq!(challenge["amount_msat"], json!(51_000));
    let credential = pay(&node, &payer, &challenge).await;
    assert_eq!(
        b.get("gw.example", "/alice/q", Some(&credential)).await.0,
        200
    );
    assert_eq!(seen.lock().unwrap().as_slice(), ["/q"]);
    let row = a.fees_of("alice", 1).await;
    assert_eq!(row["fees_msat"], json!(1_000));
    drop((a, b));
    common::drop_pg_database(&admin_url, &url).await;
}

/// LUD-21 `verify` URLs live in the store, not in the memory of the replica that issued the
/// invoice: a hub stopped before its invoice is paid picks the URL up again when it restarts
/// (SQLite), and a replica that stops leaves it to the other (PostgreSQL). Either way the fee of
/// the paid, never used token is owed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_urls_survive_a_restart_and_are_shared_by_replicas() {
    let Some(node) = node() else { return };
    let erin_w = node.wallet("erin", 0).await;
    let payer = node.wallet("payer", 10_000).await;
    let fake = LnurlFake::start(&node.url).await;
    let address = fake.add_user("erin", &erin_w.invoice);
    let (up, _seen) = upstream().await;
    let svc = json!({ "name": "erin-api", "upstream": format!("http://{up}"), "price_sats": 50 });
    let payout = json!({ "kind": "lightning_address", "address": address });
    /// A challenge of erin's service on `hub`.
    async fn challenge(hub: &Hub) -> Value {
        until("erin's service is served", async || {
            let (status, body) = hub.get("gw.example", "/erin/x", None).await;
            (status == 402).then_some(body)
        })
        .await
    }
    /// Erin's fee row shows one payment, and still one a few verifier ticks later.
    async fn owed_once(hub: &Hub) {
        let row = hub.fees_of("erin", 1).await;
        assert_eq!(row["fees_msat"], json!(1_000));
        tokio::time::sleep(Duration::from_secs(3)).await;
        let row = hub.fees_of("erin", 1).await;
        assert_eq!(row["payments"], json!(1));
    }

    // One hub on SQLite, stopped between the challenge and the payment.
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path(), 0);
    let erin = hub.register("erin", payout.clone()).await;
    hub.add_service(&erin, svc.clone()).await;
    let unused = challenge(&hub).await;
    drop(hub);
    pay(&node, &payer, &unused).await;
    let hub = start_hub(dir.path(), 0);
    owed_once(&hub).await;
    drop(hub);

    // Two replicas on PostgreSQL: A issues the invoice and stops; B hears it settled.
    let Some((admin_url, url)) = common::pg_database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = format!("[store]\nurl = \"{url}\"");
    let a = start_hub_with(dir.path(), "a", 0, &store, "");
    let erin = a.register("erin", payout).await;
    a.add_service(&erin, svc).await;
    let b = start_hub_with(dir.path(), "b", 0, &store, "");
    let unused = challenge(&a).await;
    drop(a);
    pay(&node, &payer, &unused).await;
    owed_once(&b).await;
    // A back: nothing is owed twice.
    let a = start_hub_with(dir.path(), "a", 0, &store, "");
    owed_once(&a).await;
    drop((a, b));
    common::drop_pg_database(&admin_url, &url).await;
}

/// A hub in `dir` billing from 2 sats of fees every second, due at once (no grace), with
/// `extra` `[hub]` keys: alice (an LNbits provider, 50 sats a call, 5 calls a payment) is paid
/// once (1 sat of fee: no bill yet), then again: billed 2 sats and suspended. The hub, her
/// token, the bill, and the second payment's credential.
async fn billed_and_suspended(
    dir: &Path,
    node: &Node,
    extra: &str,
) -> (Hub, String, Value, String) {
    let billing =
        format!("bill_threshold_sats = 2\nbill_grace_days = 0\nbilling_interval_secs = 1\n{extra}");
    let owned = start_hub_with(dir, "hub", 0, "", &billing);
    let hub = &owned;
    let alice_w = node.wallet("alice", 0).await;
    let payer = node.wallet("payer", 1_000).await;
    let (up, _) = upstream().await;
    let alice = hub.register("alice", lnbits_payout(node, &alice_w)).await;
    let svc = json!({ "name": "alice-api", "upstream": format!("http://{up}"), "price_sats": 50,
                      "calls_per_payment": 5 });
    hub.add_service(&alice, svc).await;

    // One payment: 1 sat of fee, under the threshold: no bill.
    let (_, challenge) = hub.get("gw.example", "/alice/x", None).await;
    let first = pay(node, &payer, &challenge).await;
    assert_eq!(hub.get("gw.example", "/alice/x", Some(&first)).await.0, 200);
    hub.fees_of("alice", 1).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, me) = hub.call(&alice, "GET", "/hub/me", None).await;
    assert_eq!(me["bills"], json!([]), "{me}");

    // A second: 2 sats owed, billed; due at once (no grace): suspended.
    let (_, challenge) = hub.get("gw.example", "/alice/x", None).await;
    let second = pay(node, &payer, &challenge).await;
    assert_eq!(
        hub.get("gw.example", "/alice/x", Some(&second)).await.0,
        200
    );
    let bill = until("billed and suspended", async || {
        let (_, me) = hub.call(&alice, "GET", "/hub/me", None).await;
        (me["status"] == "suspended").then(|| me["bills"][0].clone())
    })
    .await;
    assert_eq!(
        (&bill["fees_msat"], &bill["amount_msat"]),
        (&json!(2_000), &json!(2_000))
    );
    (owned, alice, bill, second)
}

/// Threshold billing: fees owed past `bill_threshold_sats` are billed with a Lightning invoice
/// on the hub's own backend; unpaid past the grace period the provider takes no new payments
/// (403, paid tokens still served); once it pays, it is reinstated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fees_past_the_threshold_are_billed_and_an_unpaid_bill_suspends() {
    let Some(node) = node() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (hub, alice, bill, second) = billed_and_suspended(dir.path(), &node, "").await;
    assert_eq!(bill["paid_at"], Value::Null);
    // The record shows the status a moment before the services are rebuilt with it.
    let body = until("403 while suspended", async || {
        let (status, body) = hub.get("gw.example", "/alice/x", None).await;
        (status == 403).then_some(body)
    })
    .await;
    assert_eq!(body["error"]["code"], json!("provider_suspended"));
    assert_eq!(
        hub.get("gw.example", "/alice/x", Some(&second)).await.0,
        200
    );
    let (_, bills) = hub.operator("GET", "/hub/bills", None).await;
    assert_eq!(bills["bills"].as_array().map(Vec::len), Some(1), "{bills}");
    let (_, me) = hub.call(&alice, "GET", "/hub/me", None).await;
    assert_eq!(
        (&me["fees"]["billed_unpaid_msat"], &me["fees"]["owed_msat"]),
        (&json!(2_000), &json!(2_000)),
        "{me}"
    );

    // The provider pays its bill (the hub's backend is the dev node here): reinstated.
    assert_eq!(hub.dev_pay(&bill["invoice"]).await, 200);
    let me = hub.reinstated(&alice).await;
    // Paid: nothing owed; the hub earned what the bill asked.
    assert_eq!(
        (&me["fees"]["billed_paid_msat"], &me["fees"]["owed_msat"]),
        (&json!(2_000), &json!(0)),
        "{me}"
    );
    let (_, fees) = hub.operator("GET", "/hub/fees", None).await;
    assert_eq!(
        (&fees["totals"]["earned_msat"], &fees["totals"]["owed_msat"]),
        (&json!(2_000), &json!(0)),
        "{fees}"
    );
}

/// A bill whose invoice expired unpaid is reissued (`bill_expiry_secs = 3`): the same bill
/// (fees, amount, due date) on a new invoice, still one open bill; the old invoice can no
/// longer be paid, the new one can, and paying it reinstates the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_bill_is_reissued_and_can_still_be_paid() {
    let Some(node) = node() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (hub, alice, first, _) =
        billed_and_suspended(dir.path(), &node, "bill_expiry_secs = 3").await;
    let reissued = until("the bill reissued", async || {
        let (_, me) = hub.call(&alice, "GET", "/hub/me", None).await;
        let bill = me["bills"][0].clone();
        (bill["invoice"] != first["invoice"]).then_some(bill)
    })
    .await;
    for same in ["fees_msat", "amount_msat", "due_at", "created_at"] {
        assert_eq!(reissued[same], first[same], "{same}");
    }
    assert_eq!(reissued["paid_at"], Value::Null);
    let (_, bills) = hub.operator("GET", "/hub/bills", None).await;
    assert_eq!(bills["bills"].as_array().map(Vec::len), Some(1), "{bills}");
    assert_ne!(
        hub.dev_pay(&first["invoice"]).await,
        200,
        "the expired invoice"
    );
    // Each invoice lives 3 s: pay whichever is current.
    until("the current bill paid", async || {
        let (_, me) = hub.call(&alice, "GET", "/hub/me", None).await;
        (hub.dev_pay(&me["bills"][0]["invoice"]).await == 200).then_some(())
    })
    .await;
    hub.reinstated(&alice).await;
    let (_, bills) = hub.operator("GET", "/hub/bills", None).await;
    assert_eq!(bills["bills"].as_array().map(Vec::len), Some(1), "{bills}");
    // Paid: never reissued again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, again) = hub.operator("GET", "/hub/bills", None).await;
    assert_eq!(again, bills);
}

/// A provider's time pass (a token that counts no calls): its fee is owed once, at its first
/// use, however many calls it makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_pass_owes_its_fee_once() {
    let Some(node) = node() else { return };
    let wallet = node.wallet("gina", 0).await;
    let payer = node.wallet("payer", 1_000).await;
    let (up, seen) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path(), 0);
    let gina = hub.register("gina", lnbits_payout(&node, &wallet)).await;
    let svc = json!({ "name": "gina-pass", "upstream": format!("http://{up}"), "price_sats": 50,
                      "time_pass_secs": 3600 });
    hub.add_service(&gina, svc).await;
    let (status, challenge) = hub.get("gw.example", "/gina/a", None).await;
    assert_eq!((status, &challenge["amount_msat"]), (402, &json!(51_000)));
    let credential = pay(&node, &payer, &challenge).await;
    for _ in 0..3 {
        assert_eq!(
            hub.get("gw.example", "/gina/a", Some(&credential)).await.0,
            200
        );
    }
    assert_eq!(seen.lock().unwrap().len(), 3);
    let row = hub.fees_of("gina", 1).await;
    assert_eq!(
        (&row["revenue_msat"], &row["fees_msat"]),
        (&json!(50_000), &json!(1_000))
    );
}
