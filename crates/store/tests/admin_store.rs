//! The admin store's contract on a real SQLite file and the real PostgreSQL server: change
//! sequence numbers, stored services and tombstones, revocations, token listings and payments
//! (time passes included), and the invoice pruning that keeps a used time pass's invoice.
//!
//! PostgreSQL runs use `TURNPIKE_TEST_POSTGRES_URL` (a schema of their own); without it they are
//! skipped with a message, unless `TURNPIKE_REQUIRE_POSTGRES=1`.

use std::str::FromStr;
use std::sync::Arc;

use turnpike_l402::{Msat, PaymentHash, TokenId};
use turnpike_store::{
    AdminStore, BillRecord, FeeRecord, FeeTotals, InvoiceRecord, PgStore, ProviderRecord,
    SqliteStore, Store, TokenQuery, VerifyRecord,
};

type Both = (Arc<dyn Store>, Arc<dyn AdminStore>);

async fn sqlite(dir: &tempfile::TempDir) -> Both {
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let s = Arc::new(SqliteStore::open(&url).await.unwrap());
    let both: Both = (s.clone(), s);
    both
}

async fn postgres() -> Option<(Both, Both, String, String)> {
    let Ok(url) = std::env::var("TURNPIKE_TEST_POSTGRES_URL") else {
        if std::env::var("TURNPIKE_REQUIRE_POSTGRES").as_deref() == Ok("1") {
            panic!("TURNPIKE_REQUIRE_POSTGRES=1 but TURNPIKE_TEST_POSTGRES_URL is not set");
        }
        eprintln!("SKIPPED: PostgreSQL admin store test (set TURNPIKE_TEST_POSTGRES_URL)");
        return None;
    };
    let schema = format!("turnpike_admin_{}", &TokenId::random().to_hex()[..16]);
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&pool)
        .await
        .unwrap();
    let open = async || -> Both {
        let options = sqlx::postgres::PgConnectOptions::from_str(&url)
            .unwrap()
            .options([("search_path", schema.as_str())]);
        let s = Arc::new(PgStore::open_with(options).await.unwrap());
        let both: Both = (s.clone(), s);
        both
    };
    let (a, b) = (open().await, open().await);
    Some((a, b, url, schema))
}

async fn drop_schema(url: &str, schema: &str) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&pool)
        .await
        .unwrap();
}

fn invoice(token: TokenId, service: &str, calls: Option<u64>, at: u64) -> InvoiceRecord {
    InvoiceRecord {
        payment_hash: PaymentHash(rand_bytes()),
        token_id: token,
        service: service.into(),
        amount: Msat(2000),
        calls,
        created_at: at,
        expires_at: at + 600,
    }
}

fn rand_bytes() -> [u8; 32] {
    TokenId::random().0
}

/// Services, tombstones and revocations, each change numbered; a second pool (another replica)
/// sees them; concurrent writers get distinct numbers.
async fn changes_are_numbered_and_shared(a: &Both, b: &Both) {
    let (_, admin) = a;
    let (_, other) = b;
    assert_eq!(admin.sequence().await.unwrap(), 0);
    let s1 = admin.put_service("x", Some("{\"a\":1}"), 10).await.unwrap();
    let s2 = admin.put_service("y", None, 11).await.unwrap();
    let s3 = admin.put_service("x", Some("{\"a\":2}"), 12).await.unwrap();
    assert!(s1 < s2 && s2 < s3);
    assert_eq!(other.sequence().await.unwrap(), s3);
    let stored = other.stored_services().await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(
        (stored[0].name.as_str(), stored[0].config.as_deref()),
        ("x", Some("{\"a\":2}"))
    );
    assert_eq!(
        (stored[1].name.as_str(), stored[1].config.as_deref()),
        ("y", None)
    );

    let t = TokenId::random();
    let r1 = admin.revoke_token(&t, 20).await.unwrap();
    let r2 = other.revoke_token(&t, 21).await.unwrap();
    assert!(r2 > r1);
    assert_eq!(other.revocations_since(s3).await.unwrap(), [t]);
    assert!(other.revocations_since(r1).await.unwrap().is_empty());

    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 {
            admin.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            store
                .put_service(&format!("s{i}"), Some("{}"), 30)
                .await
                .unwrap()
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 20);
    assert_eq!(admin.sequence().await.unwrap(), r2 + 20);
}

/// Tokens minted, used (counted and time passes), unpaid; filters, pages, payments, pruning.
async fn tokens_and_payments_are_listed(both: &Both) {
    let (store, admin) = both;
    let (counted, pass, unpaid) = (TokenId([1; 32]), TokenId([2; 32]), TokenId([3; 32]));
    store
        .record_invoice(&invoice(counted, "a", Some(5), 100))
        .await
        .unwrap();
    store
        .record_invoice(&invoice(pass, "b", None, 101))
        .await
        .unwrap();
    store
        .record_invoice(&invoice(unpaid, "a", Some(5), 102))
        .await
        .unwrap();
    store.consume_call(&counted, "a", 5, 200).await.unwrap();
    store.consume_call(&counted, "a", 5, 210).await.unwrap();
    admin.note_pass_use(&pass, "b", 300).await.unwrap();
    admin.note_pass_use(&pass, "b", 360).await.unwrap();
    admin.note_pass_use(&pass, "b", 330).await.unwrap();
    admin.revoke_token(&counted, 400).await.unwrap();

    let list = |service, paid, limit, before| async move {
        admin
            .list_tokens(&TokenQuery {
                service,
                paid,
                limit,
                before,
            })
            .await
            .unwrap()
    };
    let all = list(None, None, 10, None).await;
    let ids: Vec<TokenId> = all.iter().map(|t| t.token_id).collect();
    assert_eq!(ids, [unpaid, pass, counted]);
    let c = &all[2];
    assert_eq!(
        (
            c.paid,
            c.calls_total,
            c.calls_used,
            c.first_used,
            c.last_used,
            c.revoked
        ),
        (true, Some(5), 2, Some(200), Some(210), true)
    );
    assert_eq!(
        (c.amount, c.issued_at, c.service.as_str()),
        (Msat(2000), 100, "a")
    );
    let p = &all[1];
    assert_eq!(
        (
            p.paid,
            p.calls_total,
            p.calls_used,
            p.first_used,
            p.last_used,
            p.revoked
        ),
        (true, None, 0, Some(300), Some(360), false)
    );
    assert!(!all[0].paid && all[0].first_used.is_none());
    let paid: Vec<TokenId> = list(None, Some(true), 10, None)
        .await
        .iter()
        .map(|t| t.token_id)
        .collect();
    assert_eq!(paid, [pass, counted]);
    let unpaid_only: Vec<TokenId> = list(None, Some(false), 10, None)
        .await
        .iter()
        .map(|t| t.token_id)
        .collect();
    assert_eq!(unpaid_only, [unpaid]);
    let of_a: Vec<TokenId> = list(Some("a"), None, 10, None)
        .await
        .iter()
        .map(|t| t.token_id)
        .collect();
    assert_eq!(of_a, [unpaid, counted]);
    let page = list(None, None, 1, Some((102, unpaid))).await;
    assert_eq!(page[0].token_id, pass);

    let payments = admin.recent_payments(10).await.unwrap();
    let got: Vec<(TokenId, u64)> = payments.iter().map(|p| (p.token_id, p.paid_at)).collect();
    assert_eq!(got, [(pass, 300), (counted, 200)]);
    assert_eq!(admin.recent_payments(1).await.unwrap().len(), 1);

    // Long after expiry only the unpaid invoice is pruned (the used time pass's is kept).
    assert_eq!(store.prune_expired_invoices(10_000).await.unwrap(), 1);
    assert_eq!(list(None, None, 10, None).await.len(), 2);
    admin.ping().await.unwrap();
}

fn provider(slug: &str, hash: u8) -> ProviderRecord {
    ProviderRecord {
        slug: slug.into(),
        name: format!("{slug} Ltd"),
        contact: format!("ops@{slug}.example"),
        payout: "{\"lightning_address\":\"x@y.z\"}".into(),
        token_hash: [hash; 32],
        status: "active".into(),
        created_at: 100,
        trial_ends_at: 200,
    }
}

/// Providers are numbered changes, unique by slug and by token hash; fees are owed only once a
/// token's payment is recognised, once, and add up per provider.
async fn providers_and_fees(a: &Both, b: &Both) {
    let (_, admin) = a;
    let (_, other) = b;
    let before = admin.sequence().await.unwrap();
    let seq = admin.create_provider(&provider("alice", 1)).await.unwrap();
    assert!(seq.is_some_and(|s| s > before));
    assert_eq!(other.sequence().await.unwrap(), seq.unwrap());
    // The same slug, or another slug with the same token hash: refused, nothing changed.
    assert_eq!(
        admin.create_provider(&provider("alice", 2)).await.unwrap(),
        None
    );
    assert_eq!(
        admin.create_provider(&provider("bob", 1)).await.unwrap(),
        None
    );
    assert_eq!(admin.sequence().await.unwrap(), seq.unwrap());
    admin
        .create_provider(&provider("bob", 3))
        .await
        .unwrap()
        .unwrap();
    // A status change is a numbered change; an unknown slug changes nothing.
    let seq = admin.set_provider_status("bob", "suspended").await.unwrap();
    assert_eq!(other.sequence().await.unwrap(), seq.unwrap());
    assert_eq!(
        admin.set_provider_status("nobody", "x").await.unwrap(),
        None
    );
    assert_eq!(other.sequence().await.unwrap(), seq.unwrap());
    admin
        .set_provider_status("bob", "active")
        .await
        .unwrap()
        .unwrap();
    let seq = admin.set_provider_payout("bob", "{\"x\":1}").await.unwrap();
    assert_eq!(other.sequence().await.unwrap(), seq.unwrap());
    assert_eq!(
        admin.set_provider_payout("nobody", "{}").await.unwrap(),
        None
    );
    let bob = other.providers().await.unwrap().pop().unwrap();
    assert_eq!(bob.payout, "{\"x\":1}");
    let original = provider("bob", 3).payout;
    admin
        .set_provider_payout("bob", &original)
        .await
        .unwrap()
        .unwrap();
    let all = other.providers().await.unwrap();
    assert_eq!(all, [provider("alice", 1), provider("bob", 3)]);

    let fee = |slug: &str, price: u64, fee: u64| FeeRecord {
        token_id: TokenId::random(),
        payment_hash: PaymentHash(rand_bytes()),
        provider: slug.into(),
        service: format!("{slug}.api"),
        price: Msat(price),
        fee: Msat(fee),
        issued_at: 300,
    };
    let (a1, a2, b1) = (
        fee("alice", 21_000, 420),
        fee("alice", 5_000, 100),
        fee("bob", 7, 1),
    );
    for f in [&a1, &a2, &b1] {
        admin.record_fee(f).await.unwrap();
    }
    // Recorded again: nothing changes.
    admin.record_fee(&fee("alice", 1, 1)).await.unwrap();
    admin
        .record_fee(&FeeRecord {
            fee: Msat(999),
            ..a1.clone()
        })
        .await
        .unwrap();
    assert!(
        other
            .fee_totals(None, 0..u64::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(admin.fee_paid(&a1.token_id, 400).await.unwrap());
    assert!(!other.fee_paid(&a1.token_id, 401).await.unwrap());
    assert!(!admin.fee_paid(&TokenId::random(), 401).await.unwrap());
    assert!(admin.fee_paid(&b1.token_id, 402).await.unwrap());
    let totals = other.fee_totals(None, 0..u64::MAX).await.unwrap();
    assert_eq!(
        totals,
        [
            FeeTotals {
                provider: "alice".into(),
                payments: 1,
                revenue: Msat(21_000),
                fees: Msat(420)
            },
            FeeTotals {
                provider: "bob".into(),
                payments: 1,
                revenue: Msat(7),
                fees: Msat(1)
            },
        ]
    );
    assert!(admin.fee_paid(&a2.token_id, 403).await.unwrap());
    // A period counts the payments recognised in it: 400 and 402 in [400, 403), not 403.
    let period = admin.fee_totals(None, 400..403).await.unwrap();
    assert_eq!(
        period.iter().map(|t| t.payments).collect::<Vec<_>>(),
        [1, 1]
    );
    assert!(
        admin
            .fee_totals(Some("alice"), 404..u64::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    let alice = admin.fee_totals(Some("alice"), 0..u64::MAX).await.unwrap();
    assert_eq!(
        alice,
        [FeeTotals {
            provider: "alice".into(),
            payments: 2,
            revenue: Msat(26_000),
            fees: Msat(520)
        }]
    );
    bills_cover_exactly_the_unbilled_fees(admin, other).await;
}

/// Bills: one open bill per provider, covering exactly its unbilled fee rows (paid before the
/// cutoff); a bill whose sum no longer matches is refused and changes nothing.
async fn bills_cover_exactly_the_unbilled_fees(
    admin: &Arc<dyn AdminStore>,
    other: &Arc<dyn AdminStore>,
) {
    let owed = other.unbilled_fees(1000).await.unwrap();
    assert_eq!(
        owed,
        [("alice".to_owned(), Msat(520)), ("bob".to_owned(), Msat(1))]
    );
    assert!(
        other
            .unbilled_fees(401)
            .await
            .unwrap()
            .iter()
            .all(|(p, _)| p == "alice")
    );
    let bill = |provider: &str, fees: u64| BillRecord {
        payment_hash: PaymentHash(rand_bytes()),
        provider: provider.into(),
        fees: Msat(fees),
        amount: Msat(fees / 1000 * 1000),
        bolt11: "lnbcrt1…".into(),
        created_at: 1000,
        due_at: 2000,
        paid_at: None,
    };
    // A sum that does not match (another replica billed meanwhile): refused, nothing changed.
    assert!(!admin.open_bill(&bill("bob", 2), 1000).await.unwrap());
    assert_eq!(other.unbilled_fees(1000).await.unwrap().len(), 2);
    let alice_bill = bill("alice", 520);
    assert!(admin.open_bill(&alice_bill, 1000).await.unwrap());
    // One open bill per provider: a second is refused.
    assert!(!other.open_bill(&bill("alice", 520), 1000).await.unwrap());
    assert_eq!(
        other.unbilled_fees(1000).await.unwrap(),
        [("bob".to_owned(), Msat(1))]
    );
    assert_eq!(
        other.open_bills().await.unwrap(),
        std::slice::from_ref(&alice_bill)
    );
    // Its invoice expired unpaid: reissued by one replica (the other finds it moved), the
    // same bill on a new invoice; still one open bill, its rows still billed.
    let new_hash = PaymentHash(rand_bytes());
    assert!(
        other
            .reissue_bill(&alice_bill.payment_hash, (&new_hash, "lnbcrt1new"))
            .await
            .unwrap()
    );
    assert!(
        !admin
            .reissue_bill(&alice_bill.payment_hash, (&PaymentHash(rand_bytes()), "x"))
            .await
            .unwrap()
    );
    let alice_bill = BillRecord {
        payment_hash: new_hash,
        bolt11: "lnbcrt1new".into(),
        ..alice_bill
    };
    assert_eq!(
        admin.open_bills().await.unwrap(),
        std::slice::from_ref(&alice_bill)
    );
    assert_eq!(
        other.unbilled_fees(1000).await.unwrap(),
        [("bob".to_owned(), Msat(1))]
    );
    assert!(
        other
            .bill_paid(&alice_bill.payment_hash, 1500)
            .await
            .unwrap()
    );
    assert!(
        !admin
            .bill_paid(&alice_bill.payment_hash, 1600)
            .await
            .unwrap()
    );
    assert!(admin.open_bills().await.unwrap().is_empty());
    // A paid bill is never reissued.
    assert!(
        !other
            .reissue_bill(&alice_bill.payment_hash, (&PaymentHash(rand_bytes()), "x"))
            .await
            .unwrap()
    );
    let listed = admin.bills(Some("alice"), 10).await.unwrap();
    assert_eq!(
        listed,
        [BillRecord {
            paid_at: Some(1500),
            ..alice_bill
        }]
    );
    assert!(admin.bills(Some("bob"), 10).await.unwrap().is_empty());
    // Billed rows stay owed in statements; only new rows are unbilled.
    let again = FeeRecord {
        token_id: TokenId::random(),
        payment_hash: PaymentHash(rand_bytes()),
        provider: "alice".into(),
        service: "alice.api".into(),
        price: Msat(1000),
        fee: Msat(20),
        issued_at: 1700,
    };
    admin.record_fee(&again).await.unwrap();
    // Reported settled by the payee (by its invoice's hash), then used: owed once.
    assert!(
        admin
            .fee_paid_by_hash(&again.payment_hash, 1800)
            .await
            .unwrap()
    );
    assert!(!other.fee_paid(&again.token_id, 1850).await.unwrap());
    assert!(
        !other
            .fee_paid_by_hash(&again.payment_hash, 1850)
            .await
            .unwrap()
    );
    assert!(
        !other
            .fee_paid_by_hash(&PaymentHash(rand_bytes()), 1850)
            .await
            .unwrap()
    );
    let owed = other.unbilled_fees(1900).await.unwrap();
    assert_eq!(
        owed,
        [("alice".to_owned(), Msat(20)), ("bob".to_owned(), Msat(1))]
    );
    let totals = other.fee_totals(Some("alice"), 0..u64::MAX).await.unwrap();
    assert_eq!(totals[0].fees, Msat(540));
    fees_stand_by_their_bills(admin, other, bill("bob", 1)).await;
}

/// Where fees stand: alice's 520 msat on a paid bill (which asked 0: rounded down), 20 not yet
/// billed; bob's 1 msat on a bill still open. One provider's standing holds only its own.
async fn fees_stand_by_their_bills(
    admin: &Arc<dyn AdminStore>,
    other: &Arc<dyn AdminStore>,
    bob_bill: BillRecord,
) {
    use turnpike_store::FeeStanding;
    assert!(admin.open_bill(&bob_bill, 1000).await.unwrap());
    let totals = other.fee_totals(None, 0..u64::MAX).await.unwrap();
    // The payments and revenue are the ledger's totals; the fees as [unbilled, unpaid, paid].
    let standing = |t: &FeeTotals, [unbilled, billed_unpaid, billed_paid]: [u64; 3]| FeeStanding {
        provider: t.provider.clone(),
        payments: t.payments,
        revenue: t.revenue,
        fees: t.fees,
        unbilled: Msat(unbilled),
        billed_unpaid: Msat(billed_unpaid),
        billed_paid: Msat(billed_paid),
        earned: Msat(0),
    };
    let alice = standing(&totals[0], [20, 0, 520]);
    let bob = standing(&totals[1], [0, 1, 0]);
    let all = other.fee_standing(None).await.unwrap();
    assert_eq!((alice.fees, bob.fees), (Msat(540), Msat(1)));
    assert_eq!(all, [alice.clone(), bob.clone()]);
    assert_eq!(admin.fee_standing(Some("bob")).await.unwrap(), [bob]);
    assert!(admin.fee_standing(Some("carol")).await.unwrap().is_empty());
    // Paid, a bill counts what it asked as earned.
    assert!(other.bill_paid(&bob_bill.payment_hash, 1900).await.unwrap());
    let bob = &admin.fee_standing(Some("bob")).await.unwrap()[0];
    assert_eq!((bob.billed_unpaid, bob.billed_paid), (Msat(0), Msat(1)));
}

/// LUD-21 `verify` URLs are shared by replicas: recorded on one, due on the other; a look is
/// taken by one replica only; expired ones are dropped; a settled one makes its fee owed once.
async fn verify_urls_are_shared(a: &Both, b: &Both) {
    let (one, other) = (&a.1, &b.1);
    let row = |expires_at: u64| VerifyRecord {
        payment_hash: PaymentHash(rand_bytes()),
        provider: "alice".into(),
        url: "https://pay.example/verify/1".into(),
        amount: Msat(21_420),
        expires_at,
        next_at: 102,
        wait_secs: 2,
    };
    let (live, short) = (row(1_000), row(150));
    one.record_verify(&live).await.unwrap();
    one.record_verify(&short).await.unwrap();
    // Again: nothing changes.
    one.record_verify(&VerifyRecord {
        url: "https://elsewhere.example/".into(),
        ..live.clone()
    })
    .await
    .unwrap();
    assert!(
        other.verify_due(101, 10).await.unwrap().is_empty(),
        "not due yet"
    );
    let mut due = other.verify_due(102, 10).await.unwrap();
    due.sort_by_key(|v| v.expires_at);
    assert_eq!(due, [short.clone(), live.clone()]);
    // One look: the replica that moves next_at first takes it; the other sees it taken.
    assert!(
        other
            .claim_verify(&live.payment_hash, 102, (104, 4))
            .await
            .unwrap()
    );
    assert!(
        !one.claim_verify(&live.payment_hash, 102, (104, 4))
            .await
            .unwrap()
    );
    assert!(one.verify_due(103, 10).await.unwrap() == [short.clone()]);
    // Expired: dropped.
    let due = one.verify_due(200, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].payment_hash, live.payment_hash);
    assert_eq!((due[0].next_at, due[0].wait_secs), (104, 4));
    assert!(
        !other
            .claim_verify(&short.payment_hash, 102, (300, 4))
            .await
            .unwrap(),
        "gone"
    );
    // Settled: the fee is owed once, whichever replica hears it, and the URL is forgotten.
    let fee = FeeRecord {
        token_id: TokenId::random(),
        payment_hash: live.payment_hash,
        provider: "alice".into(),
        service: "alice.api".into(),
        price: Msat(21_000),
        fee: Msat(420),
        issued_at: 100,
    };
    one.record_fee(&fee).await.unwrap();
    assert!(
        other
            .fee_paid_by_hash(&live.payment_hash, 210)
            .await
            .unwrap()
    );
    assert!(!one.fee_paid_by_hash(&live.payment_hash, 211).await.unwrap());
    other.forget_verify(&live.payment_hash).await.unwrap();
    assert!(one.verify_due(300, 10).await.unwrap().is_empty());
    // A limit bounds a run.
    for _ in 0..5 {
        one.record_verify(&row(10_000)).await.unwrap();
    }
    assert_eq!(other.verify_due(400, 3).await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_hub_store() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (sqlite(&dir).await, sqlite(&dir).await);
    providers_and_fees(&a, &b).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (sqlite(&dir).await, sqlite(&dir).await);
    verify_urls_are_shared(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_hub_store() {
    let Some((a, b, url, schema)) = postgres().await else {
        return;
    };
    providers_and_fees(&a, &b).await;
    drop_schema(&url, &schema).await;
    let Some((a, b, url, schema)) = postgres().await else {
        return;
    };
    verify_urls_are_shared(&a, &b).await;
    drop_schema(&url, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_admin_store() {
    let dir = tempfile::tempdir().unwrap();
    let a = sqlite(&dir).await;
    let b = sqlite(&dir).await;
    changes_are_numbered_and_shared(&a, &b).await;
    let dir2 = tempfile::tempdir().unwrap();
    tokens_and_payments_are_listed(&sqlite(&dir2).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_admin_store() {
    let Some((a, b, url, schema)) = postgres().await else {
        return;
    };
    changes_are_numbered_and_shared(&a, &b).await;
    drop_schema(&url, &schema).await;
    let Some((c, _, url, schema)) = postgres().await else {
        return;
    };
    tokens_and_payments_are_listed(&c).await;
    drop_schema(&url, &schema).await;
}

/// Health buckets add up across replicas (concurrent adds sum exactly), are summed over the
/// window asked, keep the last probe only when later, and are pruned by hour.
async fn health_adds_up_across_replicas(a: &Both, b: &Both) {
    use turnpike_store::{HealthCounts, HealthDelta, ProbeOutcome};
    let (_, one) = a;
    let (_, two) = b;
    let delta = |hour: u64, forwarded: u64, ok: u64, latency: Vec<(u32, u64)>| HealthDelta {
        hour,
        service: "quote".into(),
        counts: HealthCounts {
            forwarded,
            ok,
            probes: 1,
            probes_up: 1,
            latency,
        },
    };
    let probe = |up: bool, at: u64| ProbeOutcome {
        service: "quote".into(),
        up,
        at,
    };
    let mut writers = Vec::new();
    for i in 0..20u64 {
        let store = if i % 2 == 0 { one.clone() } else { two.clone() };
        writers.push(tokio::spawn(async move {
            let d = delta(100, 2, 1, vec![(3, 1), (40, 1)]);
            store.add_health(&[d], &[]).await.unwrap();
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    one.add_health(&[delta(99, 5, 5, vec![(3, 5)])], &[probe(false, 1000)])
        .await
        .unwrap();
    // An older probe arriving late does not replace the last one.
    two.add_health(&[], &[probe(true, 900)]).await.unwrap();
    let window = two.health_since(100).await.unwrap();
    assert_eq!(window.len(), 1);
    let q = &window[0];
    assert_eq!(q.service, "quote");
    assert_eq!(
        q.counts,
        HealthCounts {
            forwarded: 40,
            ok: 20,
            probes: 20,
            probes_up: 20,
            latency: vec![(3, 20), (40, 20)],
        }
    );
    assert_eq!(q.last_probe, Some((false, 1000)));
    let all = one.health_since(0).await.unwrap();
    assert_eq!(
        (all[0].counts.forwarded, all[0].counts.latency[0]),
        (45, (3, 25))
    );
    two.add_health(&[], &[probe(true, 1001)]).await.unwrap();
    assert_eq!(
        one.health_since(0).await.unwrap()[0].last_probe,
        Some((true, 1001))
    );
    // Hour 99's two rows go, and the last probe (second 1001, hour 0) of a service no longer
    // probed: the table of last probes does not grow with every service ever listed.
    assert_eq!(one.prune_health(100).await.unwrap(), 3);
    let kept = two.health_since(0).await.unwrap();
    assert_eq!((kept[0].counts.forwarded, kept[0].last_probe), (40, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_health_store() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (sqlite(&dir).await, sqlite(&dir).await);
    health_adds_up_across_replicas(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_health_store() {
    let Some((a, b, url, schema)) = postgres().await else {
        return;
    };
    health_adds_up_across_replicas(&a, &b).await;
    drop_schema(&url, &schema).await;
}
