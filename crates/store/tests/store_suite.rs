//! The store's contract, run against a real SQLite file and the real PostgreSQL server.
//!
//! PostgreSQL tests use `TURNPIKE_TEST_POSTGRES_URL` (each test in a schema of its own). Without
//! it they are skipped with a message, unless `TURNPIKE_REQUIRE_POSTGRES=1`, when they fail.

use std::str::FromStr;
use std::sync::Arc;

use proptest::prelude::*;
use std::collections::HashMap;
use turnpike_l402::{Msat, PaymentHash, TokenId};

use turnpike_store::{
    Consumption, DailyStats, Day, IdempotencyBegin, IdempotencyRequest, Inspect, InvoiceRecord,
    PgStore, SqliteStore, StatCounts, StoreError, StoredResponse,
};

/// A fresh, empty database of one kind; `open` may be called several times (like several
/// gateway processes sharing it).
enum TestDb {
    Sqlite(tempfile::TempDir),
    Postgres { url: String, schema: String },
}

impl TestDb {
    async fn sqlite() -> Option<TestDb> {
        Some(TestDb::Sqlite(tempfile::tempdir().unwrap()))
    }

    async fn postgres() -> Option<TestDb> {
        let Ok(url) = std::env::var("TURNPIKE_TEST_POSTGRES_URL") else {
            if std::env::var("TURNPIKE_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("TURNPIKE_REQUIRE_POSTGRES=1 but TURNPIKE_TEST_POSTGRES_URL is not set");
            }
            eprintln!("SKIPPED: PostgreSQL store test (set TURNPIKE_TEST_POSTGRES_URL to run it)");
            return None;
        };
        let schema = format!("turnpike_test_{}", &TokenId::random().to_hex()[..16]);
        let admin = sqlx::PgPool::connect(&url)
            .await
            .expect("connect to PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .unwrap();
        Some(TestDb::Postgres { url, schema })
    }

    async fn open(&self) -> Arc<dyn Inspect> {
        match self {
            TestDb::Sqlite(dir) => {
                let url = format!("sqlite://{}", dir.path().join("turnpike.db").display());
                Arc::new(SqliteStore::open(&url).await.unwrap())
            }
            TestDb::Postgres { url, schema } => {
                let options = sqlx::postgres::PgConnectOptions::from_str(url)
                    .unwrap()
                    .options([("search_path", schema.as_str())]);
                Arc::new(PgStore::open_with(options).await.unwrap())
            }
        }
    }

    async fn cleanup(self) {
        if let TestDb::Postgres { url, schema } = self {
            let admin = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&admin)
                .await
                .unwrap();
        }
    }
}

/// Runs one async test body against SQLite and PostgreSQL.
macro_rules! store_test {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let db = TestDb::sqlite().await.unwrap();
                $body(&db).await;
                db.cleanup().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some(db) = TestDb::postgres().await else {
                    return;
                };
                $body(&db).await;
                db.cleanup().await;
            }
        }
    };
}

store_test!(
    bundle_and_refunds,
    a_bundle_serves_exactly_its_calls_and_refunds_give_calls_back
);
store_test!(
    narrowing,
    a_token_narrowed_after_first_use_keeps_the_smaller_total
);
store_test!(reopen, state_survives_reopening);
store_test!(
    daily_stats_add_up,
    daily_stats_from_two_pools_add_up_and_filter_by_day_and_service
);
store_test!(
    pass_use_once,
    a_time_pass_is_recorded_used_exactly_once_across_pools
);
store_test!(
    concurrency,
    concurrent_consumers_on_two_pools_never_oversubscribe
);
store_test!(
    batches,
    many_tokens_consumed_at_once_each_serve_exactly_their_calls
);
store_test!(
    invoices,
    invoices_are_recorded_and_expired_unpaid_ones_pruned
);
store_test!(
    free_tier,
    free_tier_grants_its_limit_per_window_client_and_service
);
store_test!(free_tier_prune, free_tier_prune_removes_ended_windows_only);
store_test!(
    free_tier_concurrency,
    concurrent_free_takes_on_two_pools_never_exceed_the_limit
);
store_test!(
    idempotency_lifecycle,
    idempotency_charges_once_then_replays_identical_bytes
);
store_test!(
    idempotency_abort,
    idempotency_abort_deletes_the_entry_and_refunds_when_asked
);
store_test!(
    idempotency_exhausted,
    idempotency_on_an_exhausted_token_records_nothing
);
store_test!(
    idempotency_unlimited,
    idempotency_on_an_uncounted_token_consumes_and_refunds_nothing
);
store_test!(
    idempotency_takeover,
    idempotency_stale_in_flight_entry_is_taken_over_without_a_new_charge
);
store_test!(
    idempotency_concurrency,
    concurrent_begins_on_two_pools_charge_exactly_once
);
store_test!(
    idempotency_prune,
    idempotency_prune_removes_old_done_entries_only
);

async fn a_bundle_serves_exactly_its_calls_and_refunds_give_calls_back(db: &TestDb) {
    let store = db.open().await;
    let token = TokenId::random();
    for expected_remaining in (0..3).rev() {
        assert_eq!(
            store.consume_call(&token, "svc", 3, 100).await.unwrap(),
            Consumption::Granted {
                remaining: expected_remaining,
                first_use: expected_remaining == 2,
            }
        );
    }
    assert_eq!(
        store.consume_call(&token, "svc", 3, 100).await.unwrap(),
        Consumption::Exhausted
    );
    store.refund_call(&token).await.unwrap();
    // A call given back does not make the next one a first use (one payment, counted once).
    assert_eq!(
        store.consume_call(&token, "svc", 3, 101).await.unwrap(),
        Consumption::Granted {
            remaining: 0,
            first_use: false
        }
    );
    let usage = store.token_usage(&token).await.unwrap().unwrap();
    assert_eq!((usage.calls_total, usage.used), (3, 3));
    // A refund never takes usage below zero.
    let fresh = TokenId::random();
    store.refund_call(&fresh).await.unwrap();
    assert_eq!(store.token_usage(&fresh).await.unwrap(), None);
}

/// Hundreds of concurrent calls over many tokens at once (so the store writes them in batches
/// mixing fresh tokens, bundles, repeated tokens and exhausted ones): every token serves exactly
/// its calls, each answer's `remaining` is distinct, and the store's counts agree.
async fn many_tokens_consumed_at_once_each_serve_exactly_their_calls(db: &TestDb) {
    let store = db.open().await;
    let tokens: Vec<(TokenId, u64)> = (0..60).map(|i| (TokenId::random(), 1 + i % 4)).collect();
    let mut tasks = Vec::new();
    for round in 0..6 {
        for (token, calls) in &tokens {
            let (store, token, calls) = (store.clone(), *token, *calls);
            tasks.push(tokio::spawn(async move {
                let outcome = store
                    .consume_call(&token, "svc", calls, round)
                    .await
                    .unwrap();
                (token, outcome)
            }));
        }
    }
    // Invoices recorded at the same time land in the same batches; a payment hash recorded twice
    // fails for one of the two callers only.
    let invoices: Vec<InvoiceRecord> = (0..40)
        .map(|i| InvoiceRecord {
            payment_hash: PaymentHash(rand_bytes()),
            token_id: TokenId::random(),
            service: "svc".into(),
            amount: Msat(1000 * (i + 1)),
            calls: (i % 2 == 0).then_some(i),
            created_at: 1,
            expires_at: 1000,
        })
        .collect();
    let mut recorders = Vec::new();
    for inv in invoices.iter().chain(std::iter::once(&invoices[0])) {
        let (store, inv) = (store.clone(), inv.clone());
        recorders.push(tokio::spawn(async move {
            store.record_invoice(&inv).await.is_ok()
        }));
    }
    let mut granted: std::collections::HashMap<TokenId, Vec<u64>> = Default::default();
    let mut first_uses: std::collections::HashMap<TokenId, u64> = Default::default();
    for t in tasks {
        let (token, outcome) = t.await.unwrap();
        if let Consumption::Granted {
            remaining,
            first_use,
        } = outcome
        {
            granted.entry(token).or_default().push(remaining);
            *first_uses.entry(token).or_default() += u64::from(first_use);
        }
    }
    for (token, _) in &tokens {
        assert_eq!(first_uses.get(token), Some(&1), "one first use per token");
    }
    for (token, calls) in &tokens {
        let mut remaining = granted.remove(token).unwrap_or_default();
        remaining.sort_unstable();
        let expected: Vec<u64> = (0..*calls).collect();
        assert_eq!(remaining, expected, "token with {calls} calls");
        let usage = store.token_usage(token).await.unwrap().unwrap();
        assert_eq!((usage.calls_total, usage.used), (*calls, *calls));
    }
    let mut ok = 0;
    for r in recorders {
        ok += usize::from(r.await.unwrap());
    }
    assert_eq!(ok, invoices.len(), "each distinct invoice recorded once");
    for inv in &invoices {
        assert_eq!(
            store.invoice(&inv.payment_hash).await.unwrap().as_ref(),
            Some(inv)
        );
    }
}

async fn a_token_narrowed_after_first_use_keeps_the_smaller_total(db: &TestDb) {
    let store = db.open().await;
    let token = TokenId::random();
    assert_eq!(
        store.consume_call(&token, "svc", 5, 1).await.unwrap(),
        Consumption::Granted {
            remaining: 4,
            first_use: true
        }
    );
    // Same token now presented with a caveat granting 2: one more call, then exhausted.
    assert_eq!(
        store.consume_call(&token, "svc", 2, 2).await.unwrap(),
        Consumption::Granted {
            remaining: 0,
            first_use: false
        }
    );
    assert_eq!(
        store.consume_call(&token, "svc", 2, 3).await.unwrap(),
        Consumption::Exhausted
    );
    // Presenting a larger total again cannot widen it.
    assert_eq!(
        store.consume_call(&token, "svc", 5, 4).await.unwrap(),
        Consumption::Exhausted
    );
    assert_eq!(
        store
            .consume_call(&TokenId::random(), "svc", 0, 4)
            .await
            .unwrap(),
        Consumption::Exhausted
    );
}

async fn state_survives_reopening(db: &TestDb) {
    let token = TokenId::random();
    {
        let store = db.open().await;
        store.consume_call(&token, "svc", 2, 1).await.unwrap();
    }
    let store = db.open().await;
    assert_eq!(
        store.consume_call(&token, "svc", 2, 2).await.unwrap(),
        Consumption::Granted {
            remaining: 0,
            first_use: false
        }
    );
    assert_eq!(
        store.consume_call(&token, "svc", 2, 3).await.unwrap(),
        Consumption::Exhausted
    );
}

async fn concurrent_consumers_on_two_pools_never_oversubscribe(db: &TestDb) {
    // Two independent pools on one database behave like two gateway processes.
    let a = db.open().await;
    let b = db.open().await;
    for calls in [1u64, 10] {
        let token = TokenId::random();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                store.consume_call(&token, "svc", calls, 1).await.unwrap()
            }));
        }
        let (mut granted, mut first_uses) = (0, 0);
        for t in tasks {
            if let Consumption::Granted { first_use, .. } = t.await.unwrap() {
                granted += 1;
                first_uses += u64::from(first_use);
            }
        }
        assert_eq!(first_uses, 1, "one first use across both pools");
        assert_eq!(
            granted, calls,
            "exactly {calls} of 200 concurrent calls granted"
        );
    }
}

async fn invoices_are_recorded_and_expired_unpaid_ones_pruned(db: &TestDb) {
    let store = db.open().await;
    let record = |expires_at: u64| InvoiceRecord {
        payment_hash: PaymentHash(rand_bytes()),
        token_id: TokenId::random(),
        service: "svc".into(),
        amount: Msat(21_000),
        calls: Some(1),
        created_at: 10,
        expires_at,
    };
    let unpaid_expired = record(50);
    let paid_expired = record(50);
    let live = record(500);
    for r in [&unpaid_expired, &paid_expired, &live] {
        store.record_invoice(r).await.unwrap();
    }
    assert_eq!(
        store.invoice(&live.payment_hash).await.unwrap().as_ref(),
        Some(&live)
    );
    store
        .consume_call(&paid_expired.token_id, "svc", 1, 40)
        .await
        .unwrap();
    assert_eq!(store.prune_expired_invoices(100).await.unwrap(), 1);
    assert_eq!(
        store.invoice(&unpaid_expired.payment_hash).await.unwrap(),
        None
    );
    assert!(
        store
            .invoice(&paid_expired.payment_hash)
            .await
            .unwrap()
            .is_some()
    );
    assert!(store.invoice(&live.payment_hash).await.unwrap().is_some());
    // Recording the same payment hash twice is an error, never a silent overwrite.
    assert!(store.record_invoice(&live).await.is_err());
}

async fn free_tier_grants_its_limit_per_window_client_and_service(db: &TestDb) {
    let store = db.open().await;
    // Window [120, 180).
    for _ in 0..3 {
        assert!(
            store
                .take_free_call("svc", "alice", 3, 60, 125)
                .await
                .unwrap()
        );
    }
    assert!(
        !store
            .take_free_call("svc", "alice", 3, 60, 179)
            .await
            .unwrap()
    );
    // Other clients and other services count separately.
    assert!(
        store
            .take_free_call("svc", "bob", 3, 60, 130)
            .await
            .unwrap()
    );
    assert!(
        store
            .take_free_call("other", "alice", 3, 60, 130)
            .await
            .unwrap()
    );
    // A new window grants the limit again.
    for now in [180, 181, 239] {
        assert!(
            store
                .take_free_call("svc", "alice", 3, 60, now)
                .await
                .unwrap()
        );
    }
    assert!(
        !store
            .take_free_call("svc", "alice", 3, 60, 239)
            .await
            .unwrap()
    );
    // A clock behind the stored window (another replica) counts against it, never resets it.
    assert!(
        !store
            .take_free_call("svc", "alice", 3, 60, 170)
            .await
            .unwrap()
    );
    // bob still has 2 in [120, 180).
    assert!(
        store
            .take_free_call("svc", "bob", 3, 60, 150)
            .await
            .unwrap()
    );
    assert!(
        store
            .take_free_call("svc", "bob", 3, 60, 150)
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_free_call("svc", "bob", 3, 60, 150)
            .await
            .unwrap()
    );
    // A zero limit grants nothing; a zero window is refused.
    assert!(
        !store
            .take_free_call("svc", "carol", 0, 60, 150)
            .await
            .unwrap()
    );
    assert!(matches!(
        store.take_free_call("svc", "carol", 3, 0, 150).await,
        Err(StoreError::InvalidArgument(_))
    ));
}

async fn free_tier_prune_removes_ended_windows_only(db: &TestDb) {
    let store = db.open().await;
    assert!(
        store
            .take_free_call("svc", "alice", 1, 60, 10)
            .await
            .unwrap()
    ); // [0, 60)
    assert!(store.take_free_call("svc", "bob", 1, 60, 70).await.unwrap()); // [60, 120)
    assert!(
        store
            .take_free_call("svc", "carol", 1, 3600, 70)
            .await
            .unwrap()
    ); // [0, 3600)
    assert_eq!(store.prune_free_tier(59).await.unwrap(), 0);
    assert_eq!(store.prune_free_tier(60).await.unwrap(), 1);
    assert_eq!(store.prune_free_tier(60).await.unwrap(), 0);
    // Live windows keep their count.
    assert!(!store.take_free_call("svc", "bob", 1, 60, 80).await.unwrap());
    assert!(
        !store
            .take_free_call("svc", "carol", 1, 3600, 80)
            .await
            .unwrap()
    );
    // alice's row is gone; her new window grants.
    assert!(
        store
            .take_free_call("svc", "alice", 1, 60, 80)
            .await
            .unwrap()
    );
    assert_eq!(store.prune_free_tier(120).await.unwrap(), 2);
    assert_eq!(store.prune_free_tier(3600).await.unwrap(), 1);
}

async fn concurrent_free_takes_on_two_pools_never_exceed_the_limit(db: &TestDb) {
    let a = db.open().await;
    let b = db.open().await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store
                .take_free_call("svc", "203.0.113.7", 3, 60, 1_000)
                .await
                .unwrap()
        }));
    }
    let mut granted = 0;
    for t in tasks {
        if t.await.unwrap() {
            granted += 1;
        }
    }
    assert_eq!(granted, 3, "exactly 3 of 100 concurrent free calls granted");
}

fn response(tag: &str) -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![
            ("content-type".into(), b"application/json".to_vec()),
            ("x-tag".into(), tag.as_bytes().to_vec()),
            ("x-tag".into(), Vec::new()),
            ("x-binary".into(), vec![0, 0xff, b'\r', 0x80]),
        ],
        body: [b"{\"tag\":\"".as_slice(), tag.as_bytes(), b"\"}\0\xff"].concat(),
    }
}

async fn used(store: &Arc<dyn Inspect>, token: &TokenId) -> u64 {
    store
        .token_usage(token)
        .await
        .unwrap()
        .map_or(0, |u| u.used)
}

const FP_A: [u8; 32] = [0xaa; 32];
const FP_B: [u8; 32] = [0xbb; 32];

async fn idempotency_charges_once_then_replays_identical_bytes(db: &TestDb) {
    let store = db.open().await;
    let token = TokenId::random();
    let begin = |key: &'static str, fp: [u8; 32], now: u64| {
        let store = store.clone();
        async move {
            store
                .idempotency_begin(&IdempotencyRequest {
                    token: &token,
                    key,
                    fingerprint: &fp,
                    service: "svc",
                    calls_total: Some(3),
                    now_unix: now,
                    stale_after_secs: 60,
                })
                .await
                .unwrap()
        }
    };
    assert_eq!(
        begin("k1", FP_A, 100).await,
        IdempotencyBegin::Charged {
            remaining: Some(2),
            first_use: true
        }
    );
    assert_eq!(begin("k1", FP_A, 101).await, IdempotencyBegin::InFlight);
    assert_eq!(begin("k1", FP_B, 101).await, IdempotencyBegin::Mismatch);
    assert_eq!(used(&store, &token).await, 1);

    let resp = response("first");
    store
        .idempotency_complete(&token, "k1", &resp, 102)
        .await
        .unwrap();
    assert_eq!(
        begin("k1", FP_A, 103).await,
        IdempotencyBegin::Replay(resp.clone())
    );
    assert_eq!(begin("k1", FP_B, 103).await, IdempotencyBegin::Mismatch);
    // A done entry is neither completed again nor aborted.
    store
        .idempotency_complete(&token, "k1", &response("second"), 104)
        .await
        .unwrap();
    store.idempotency_abort(&token, "k1", true).await.unwrap();
    assert_eq!(
        begin("k1", FP_A, 10_000).await,
        IdempotencyBegin::Replay(resp.clone())
    );
    assert_eq!(used(&store, &token).await, 1);

    // The same key under another token is another entry; another key is another request.
    let other = TokenId::random();
    assert_eq!(
        store
            .idempotency_begin(&IdempotencyRequest {
                token: &other,
                key: "k1",
                fingerprint: &FP_A,
                service: "svc",
                calls_total: Some(3),
                now_unix: 105,
                stale_after_secs: 60
            })
            .await
            .unwrap(),
        IdempotencyBegin::Charged {
            remaining: Some(2),
            first_use: true
        }
    );
    assert_eq!(
        begin("k2", FP_A, 105).await,
        IdempotencyBegin::Charged {
            remaining: Some(1),
            first_use: false
        }
    );
    assert_eq!(used(&store, &token).await, 2);
    // Plain calls and keyed calls share the token's calls.
    assert_eq!(
        store.consume_call(&token, "svc", 3, 106).await.unwrap(),
        Consumption::Granted {
            remaining: 0,
            first_use: false
        }
    );
    assert_eq!(begin("k3", FP_A, 107).await, IdempotencyBegin::Exhausted);
    // A 255-byte key works.
    let long_key = "k".repeat(255);
    assert_eq!(
        store
            .idempotency_begin(&IdempotencyRequest {
                token: &other,
                key: &long_key,
                fingerprint: &FP_A,
                service: "svc",
                calls_total: Some(3),
                now_unix: 108,
                stale_after_secs: 60
            })
            .await
            .unwrap(),
        IdempotencyBegin::Charged {
            remaining: Some(1),
            first_use: false
        }
    );
}

async fn idempotency_abort_deletes_the_entry_and_refunds_when_asked(db: &TestDb) {
    let store = db.open().await;
    let token = TokenId::random();
    let begin = || {
        let store = store.clone();
        async move {
            store
                .idempotency_begin(&IdempotencyRequest {
                    token: &token,
                    key: "key",
                    fingerprint: &FP_A,
                    service: "svc",
                    calls_total: Some(2),
                    now_unix: 100,
                    stale_after_secs: 60,
                })
                .await
                .unwrap()
        }
    };
    assert_eq!(
        begin().await,
        IdempotencyBegin::Charged {
            remaining: Some(1),
            first_use: true
        }
    );
    store.idempotency_abort(&token, "key", true).await.unwrap();
    assert_eq!(used(&store, &token).await, 0);
    // The retry executes afresh and is charged afresh.
    assert_eq!(
        begin().await,
        IdempotencyBegin::Charged {
            remaining: Some(1),
            first_use: false
        }
    );
    assert_eq!(used(&store, &token).await, 1);
    // Abort without refund: the entry goes, the call stays consumed.
    store.idempotency_abort(&token, "key", false).await.unwrap();
    assert_eq!(used(&store, &token).await, 1);
    assert_eq!(
        begin().await,
        IdempotencyBegin::Charged {
            remaining: Some(0),
            first_use: false
        }
    );
    // Aborting a missing entry does nothing, refund or not.
    store.idempotency_abort(&token, "nope", true).await.unwrap();
    assert_eq!(used(&store, &token).await, 2);
    // Once the entry is gone, its completion is a no-op.
    store.idempotency_abort(&token, "key", true).await.unwrap();
    store
        .idempotency_complete(&token, "key", &response("late"), 101)
        .await
        .unwrap();
    assert_eq!(used(&store, &token).await, 1);
    assert_eq!(
        begin().await,
        IdempotencyBegin::Charged {
            remaining: Some(0),
            first_use: false
        }
    );
}

async fn idempotency_on_an_exhausted_token_records_nothing(db: &TestDb) {
    let store = db.open().await;
    let token = TokenId::random();
    let request = IdempotencyRequest {
        token: &token,
        key: "key",
        fingerprint: &FP_A,
        service: "svc",
        calls_total: Some(1),
        now_unix: 100,
        stale_after_secs: 60,
    };
    store.consume_call(&token, "svc", 1, 100).await.unwrap();
    assert_eq!(
        store.idempotency_begin(&request).await.unwrap(),
        IdempotencyBegin::Exhausted
    );
    assert_eq!(used(&store, &token).await, 1);
    // No entry was left behind: once a call is free again, the same key is charged, not
    // reported in flight.
    store.refund_call(&token).await.unwrap();
    assert_eq!(
        store.idempotency_begin(&request).await.unwrap(),
        IdempotencyBegin::Charged {
            remaining: Some(0),
            first_use: false
        }
    );
    // A token granting no calls.
    let zero = TokenId::random();
    assert_eq!(
        store
            .idempotency_begin(&IdempotencyRequest {
                token: &zero,
                calls_total: Some(0),
                ..request
            })
            .await
            .unwrap(),
        IdempotencyBegin::Exhausted
    );
    assert_eq!(store.token_usage(&zero).await.unwrap(), None);
}

async fn idempotency_on_an_uncounted_token_consumes_and_refunds_nothing(db: &TestDb) {
    let store = db.open().await;
    let token = TokenId::random();
    let request = IdempotencyRequest {
        token: &token,
        key: "key",
        fingerprint: &FP_A,
        service: "svc",
        calls_total: None,
        now_unix: 100,
        stale_after_secs: 60,
    };
    assert_eq!(
        store.idempotency_begin(&request).await.unwrap(),
        IdempotencyBegin::Charged {
            remaining: None,
            first_use: false
        }
    );
    assert_eq!(store.token_usage(&token).await.unwrap(), None);
    assert_eq!(
        store.idempotency_begin(&request).await.unwrap(),
        IdempotencyBegin::InFlight
    );
    // The entry consumed nothing, so its abort refunds nothing, even of calls counted otherwise.
    store.consume_call(&token, "svc", 5, 100).await.unwrap();
    store.idempotency_abort(&token, "key", true).await.unwrap();
    assert_eq!(used(&store, &token).await, 1);
}

async fn idempotency_stale_in_flight_entry_is_taken_over_without_a_new_charge(db: &TestDb) {
    let store = db.open().await;
    let token = TokenId::random();
    let begin = |key: &'static str, fp: [u8; 32], now: u64| {
        let store = store.clone();
        async move {
            store
                .idempotency_begin(&IdempotencyRequest {
                    token: &token,
                    key,
                    fingerprint: &fp,
                    service: "svc",
                    calls_total: Some(5),
                    now_unix: now,
                    stale_after_secs: 30,
                })
                .await
                .unwrap()
        }
    };
    assert_eq!(
        begin("k", FP_A, 100).await,
        IdempotencyBegin::Charged {
            remaining: Some(4),
            first_use: true
        }
    );
    assert_eq!(begin("k", FP_A, 130).await, IdempotencyBegin::InFlight);
    assert_eq!(begin("k", FP_B, 500).await, IdempotencyBegin::Mismatch);
    assert_eq!(begin("k", FP_A, 131).await, IdempotencyBegin::TakenOver);
    assert_eq!(used(&store, &token).await, 1);
    // The lease restarted: a second retry right after sees it in flight.
    assert_eq!(begin("k", FP_A, 131).await, IdempotencyBegin::InFlight);
    assert_eq!(begin("k", FP_A, 162).await, IdempotencyBegin::TakenOver);
    store
        .idempotency_complete(&token, "k", &response("k"), 163)
        .await
        .unwrap();
    assert_eq!(
        begin("k", FP_A, 10_000).await,
        IdempotencyBegin::Replay(response("k"))
    );
    assert_eq!(used(&store, &token).await, 1);

    // A new owner that fails gives back the call the first attempt paid.
    assert_eq!(
        begin("j", FP_A, 200).await,
        IdempotencyBegin::Charged {
            remaining: Some(3),
            first_use: false
        }
    );
    assert_eq!(begin("j", FP_A, 300).await, IdempotencyBegin::TakenOver);
    assert_eq!(used(&store, &token).await, 2);
    store.idempotency_abort(&token, "j", true).await.unwrap();
    assert_eq!(used(&store, &token).await, 1);
}

async fn concurrent_begins_on_two_pools_charge_exactly_once(db: &TestDb) {
    let a = db.open().await;
    let b = db.open().await;
    let token = TokenId::random();
    let run = |keys: Vec<String>, now: u64| {
        let (a, b) = (a.clone(), b.clone());
        async move {
            let mut tasks = Vec::new();
            for (i, key) in keys.into_iter().enumerate() {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                tasks.push(tokio::spawn(async move {
                    store
                        .idempotency_begin(&IdempotencyRequest {
                            token: &token,
                            key: &key,
                            fingerprint: &FP_A,
                            service: "svc",
                            calls_total: Some(10),
                            now_unix: now,
                            stale_after_secs: 60,
                        })
                        .await
                        .unwrap()
                }));
            }
            let mut outcomes = HashMap::<String, usize>::new();
            for t in tasks {
                let outcome = match t.await.unwrap() {
                    IdempotencyBegin::Replay(_) => "Replay".to_owned(),
                    other => format!("{other:?}"),
                };
                *outcomes.entry(outcome).or_default() += 1;
            }
            outcomes
        }
    };
    let same = || vec!["same-key".to_owned(); 50];
    let outcomes = run(same(), 100).await;
    assert_eq!(
        outcomes.get("Charged { remaining: Some(9), first_use: true }"),
        Some(&1)
    );
    assert_eq!(outcomes.get("InFlight"), Some(&49), "{outcomes:?}");
    assert_eq!(used(&a, &token).await, 1);

    // The owner died: of 50 concurrent retries once the entry is stale, exactly one takes it
    // over, and nothing more is charged.
    let outcomes = run(same(), 161).await;
    assert_eq!(outcomes.get("TakenOver"), Some(&1), "{outcomes:?}");
    assert_eq!(outcomes.get("InFlight"), Some(&49), "{outcomes:?}");
    assert_eq!(used(&a, &token).await, 1);

    a.idempotency_complete(&token, "same-key", &response("x"), 101)
        .await
        .unwrap();
    let outcomes = run(same(), 1_000).await;
    assert_eq!(outcomes.get("Replay"), Some(&50), "{outcomes:?}");
    assert_eq!(used(&a, &token).await, 1);

    // 30 distinct keys on the 9 calls left: exactly 9 charged, the rest exhausted.
    let outcomes = run((0..30).map(|i| format!("key-{i}")).collect(), 1_000).await;
    let charged: usize = outcomes
        .iter()
        .filter(|(k, _)| k.starts_with("Charged"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(charged, 9, "{outcomes:?}");
    assert_eq!(outcomes.get("Exhausted"), Some(&21), "{outcomes:?}");
    assert_eq!(used(&a, &token).await, 10);
}

async fn idempotency_prune_removes_old_done_entries_only(db: &TestDb) {
    let store = db.open().await;
    let token = TokenId::random();
    let begin = |key: &'static str, now: u64| {
        let store = store.clone();
        async move {
            store
                .idempotency_begin(&IdempotencyRequest {
                    token: &token,
                    key,
                    fingerprint: &FP_A,
                    service: "svc",
                    calls_total: Some(10),
                    now_unix: now,
                    stale_after_secs: 1_000_000,
                })
                .await
                .unwrap()
        }
    };
    assert!(matches!(
        begin("in-flight", 50).await,
        IdempotencyBegin::Charged { .. }
    ));
    for (key, now) in [("old", 100), ("new", 200)] {
        assert!(matches!(
            begin(key, now).await,
            IdempotencyBegin::Charged { .. }
        ));
        store
            .idempotency_complete(&token, key, &response(key), now + 1)
            .await
            .unwrap();
    }
    assert_eq!(store.prune_idempotency(100).await.unwrap(), 0);
    assert_eq!(store.prune_idempotency(150).await.unwrap(), 1);
    assert_eq!(store.prune_idempotency(150).await.unwrap(), 0);
    assert_eq!(used(&store, &token).await, 3);
    // The pruned key runs (and is charged) afresh; the others are kept.
    assert_eq!(
        begin("old", 300).await,
        IdempotencyBegin::Charged {
            remaining: Some(6),
            first_use: false
        }
    );
    assert_eq!(
        begin("new", 300).await,
        IdempotencyBegin::Replay(response("new"))
    );
    assert_eq!(begin("in-flight", 300).await, IdempotencyBegin::InFlight);
}

fn rand_bytes() -> [u8; 32] {
    *TokenId::random().as_bytes()
}

#[derive(Debug, Clone)]
enum Op {
    /// A plain paid call (`consume_call`).
    Consume(usize),
    /// A plain call given back (`refund_call`).
    Refund(usize),
    /// A keyed request begins (`other` = different content under the same key).
    Begin {
        token: usize,
        key: usize,
        other: bool,
    },
    /// The owner of a keyed request records its response.
    Complete { token: usize, key: usize },
    /// The owner of a keyed request fails (refunding or not).
    Abort {
        token: usize,
        key: usize,
        refund: bool,
    },
    /// Time passes beyond the staleness limit (in-flight owners presumed dead).
    Tick,
    /// Done entries created before now are pruned.
    Prune,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0usize..4).prop_map(Op::Consume),
        1 => (0usize..4).prop_map(Op::Refund),
        4 => (0usize..4, 0usize..3, proptest::bool::weighted(0.15))
            .prop_map(|(token, key, other)| Op::Begin { token, key, other }),
        2 => (0usize..4, 0usize..3).prop_map(|(token, key)| Op::Complete { token, key }),
        2 => (0usize..4, 0usize..3, any::<bool>())
            .prop_map(|(token, key, refund)| Op::Abort { token, key, refund }),
        1 => Just(Op::Tick),
        1 => Just(Op::Prune),
    ]
}

/// The model of one idempotency entry.
struct ModelEntry {
    fingerprint: [u8; 32],
    charged: bool,
    started_at: u64,
    created_at: u64,
    response: Option<StoredResponse>,
}

const MODEL_STALE_SECS: u64 = 30;

/// Runs `ops` against `store` and a model, checking every answer and, after every step, that the
/// store's count of consumed calls equals the model's (never more than paid, no paid call lost).
async fn check_against_model(
    store: &dyn Inspect,
    totals: &[u64],
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let tokens: Vec<TokenId> = totals.iter().map(|_| TokenId::random()).collect();
    let keys = ["a", "b", "c"];
    let mut used = vec![0u64; totals.len()];
    // Whether a call of the token was ever consumed (its next consume is not a first use).
    let mut ever_used = vec![false; totals.len()];
    let mut entries: HashMap<(usize, usize), ModelEntry> = HashMap::new();
    let mut now = 1_000u64;
    for op in ops {
        match *op {
            Op::Consume(i) => {
                let i = i % totals.len();
                let got = store
                    .consume_call(&tokens[i], "svc", totals[i], now)
                    .await
                    .unwrap();
                if used[i] < totals[i] {
                    used[i] += 1;
                    let first_use = !std::mem::replace(&mut ever_used[i], true);
                    prop_assert_eq!(
                        got,
                        Consumption::Granted {
                            remaining: totals[i] - used[i],
                            first_use,
                        }
                    );
                } else {
                    prop_assert_eq!(got, Consumption::Exhausted);
                }
            }
            Op::Refund(i) => {
                let i = i % totals.len();
                store.refund_call(&tokens[i]).await.unwrap();
                used[i] = used[i].saturating_sub(1);
            }
            Op::Begin { token, key, other } => {
                let i = token % totals.len();
                let fingerprint = [key as u8 + if other { 100 } else { 0 }; 32];
                let got = store
                    .idempotency_begin(&IdempotencyRequest {
                        token: &tokens[i],
                        key: keys[key],
                        fingerprint: &fingerprint,
                        service: "svc",
                        calls_total: Some(totals[i]),
                        now_unix: now,
                        stale_after_secs: MODEL_STALE_SECS,
                    })
                    .await
                    .unwrap();
                let expected = match entries.get_mut(&(i, key)) {
                    Some(e) if e.fingerprint != fingerprint => IdempotencyBegin::Mismatch,
                    Some(ModelEntry {
                        response: Some(r), ..
                    }) => IdempotencyBegin::Replay(r.clone()),
                    Some(e) if now - e.started_at > MODEL_STALE_SECS => {
                        e.started_at = now;
                        IdempotencyBegin::TakenOver
                    }
                    Some(_) => IdempotencyBegin::InFlight,
                    None if used[i] < totals[i] => {
                        used[i] += 1;
                        entries.insert(
                            (i, key),
                            ModelEntry {
                                fingerprint,
                                charged: true,
                                started_at: now,
                                created_at: now,
                                response: None,
                            },
                        );
                        IdempotencyBegin::Charged {
                            remaining: Some(totals[i] - used[i]),
                            first_use: !std::mem::replace(&mut ever_used[i], true),
                        }
                    }
                    None => IdempotencyBegin::Exhausted,
                };
                prop_assert_eq!(got, expected);
            }
            Op::Complete { token, key } => {
                let i = token % totals.len();
                let response = StoredResponse {
                    status: 200 + key as u16,
                    headers: vec![("x-at".into(), now.to_be_bytes().to_vec())],
                    body: format!("{i}/{key}/{now}").into_bytes(),
                };
                store
                    .idempotency_complete(&tokens[i], keys[key], &response, now)
                    .await
                    .unwrap();
                if let Some(e) = entries.get_mut(&(i, key))
                    && e.response.is_none()
                {
                    e.response = Some(response);
                }
            }
            Op::Abort { token, key, refund } => {
                let i = token % totals.len();
                store
                    .idempotency_abort(&tokens[i], keys[key], refund)
                    .await
                    .unwrap();
                if entries.get(&(i, key)).is_some_and(|e| e.response.is_none()) {
                    let e = entries.remove(&(i, key)).unwrap();
                    if refund && e.charged {
                        used[i] = used[i].saturating_sub(1);
                    }
                }
            }
            Op::Tick => now += MODEL_STALE_SECS + 1,
            Op::Prune => {
                let before = entries.len();
                entries.retain(|_, e| e.response.is_none() || e.created_at >= now);
                let pruned = store.prune_idempotency(now).await.unwrap();
                prop_assert_eq!(pruned, (before - entries.len()) as u64);
            }
        }
        for (i, token) in tokens.iter().enumerate() {
            let recorded = store
                .token_usage(token)
                .await
                .unwrap()
                .map_or(0, |u| u.used);
            prop_assert_eq!(recorded, used[i], "after {:?}", op);
            prop_assert!(recorded <= totals[i]);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// For random interleavings of paying (consume), failing (refund, abort), retrying (begin
    /// again), completing, gateways dying (time passing) and pruning, every answer matches a
    /// model and served calls never exceed what was paid nor lose a paid call — on SQLite and
    /// on PostgreSQL.
    #[test]
    fn accounting_matches_a_model(
        totals in proptest::collection::vec(1u64..5, 1..4),
        ops in proptest::collection::vec(op(), 0..60),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            for db in [TestDb::sqlite().await, TestDb::postgres().await].into_iter().flatten() {
                let store = db.open().await;
                let result = check_against_model(&*store, &totals, &ops).await;
                drop(store);
                db.cleanup().await;
                result?;
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}

/// A SQLite database the store creates is owner-only (0600), and so are the `-wal` and `-shm`
/// files SQLite creates next to it; an existing database readable by others is tightened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    use turnpike_store::Store;
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.db");
    let existing = dir.path().join("existing.db");
    std::fs::write(&existing, b"").unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(mode(&existing), 0o644);
    for db in [fresh, existing] {
        let store = SqliteStore::open(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        assert_eq!(
            store
                .consume_call(&TokenId::random(), "svc", 1, 100)
                .await
                .unwrap(),
            Consumption::Granted {
                remaining: 0,
                first_use: true
            }
        );
        for suffix in ["", "-wal", "-shm"] {
            let mut file = db.clone().into_os_string();
            file.push(suffix);
            assert_eq!(mode(file.as_ref()), 0o600, "{}", db.display());
        }
    }
}

fn day(s: &str) -> Day {
    s.parse().unwrap()
}

fn delta(d: &str, service: &str, n: u64) -> DailyStats {
    DailyStats {
        day: day(d),
        service: service.into(),
        counts: StatCounts {
            earned_msat: 1_000 * n,
            challenges: n + 1,
            payments: n,
            calls_served: 2 * n,
            calls_refunded: 1,
            free_calls: 3,
            rate_limited: n % 2,
        },
    }
}

/// Replicas flushing at once (two pools, 40 concurrent adds) sum up exactly; queries select
/// days inclusively and by service, ordered by day then service.
async fn daily_stats_from_two_pools_add_up_and_filter_by_day_and_service(db: &TestDb) {
    let a = db.open().await;
    let b = db.open().await;
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store
                .add_daily_stats(&[
                    delta("2026-12-01", "weather", i),
                    delta("2026-12-02", "weather", 1),
                    delta("2026-12-02", "joke", 2),
                ])
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    a.add_daily_stats(&[]).await.unwrap();
    let all = a
        .daily_stats(day("2026-11-01"), day("2026-12-31"), None)
        .await
        .unwrap();
    let keys: Vec<(String, &str)> = all
        .iter()
        .map(|r| (r.day.to_string(), r.service.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("2026-12-01".to_owned(), "weather"),
            ("2026-12-02".to_owned(), "joke"),
            ("2026-12-02".to_owned(), "weather"),
        ]
    );
    let sum: u64 = (0..40).sum();
    assert_eq!(
        all[0].counts,
        StatCounts {
            earned_msat: 1_000 * sum,
            challenges: sum + 40,
            payments: sum,
            calls_served: 2 * sum,
            calls_refunded: 40,
            free_calls: 120,
            rate_limited: 20,
        }
    );
    assert_eq!(all[1].counts.payments, 80);
    assert_eq!(all[2].counts.earned_msat, 40_000);
    let one_day = b
        .daily_stats(day("2026-12-02"), day("2026-12-02"), Some("weather"))
        .await
        .unwrap();
    assert_eq!(one_day.len(), 1);
    assert_eq!(one_day[0].counts.calls_served, 80);
    assert!(
        b.daily_stats(day("2026-12-03"), day("2027-01-01"), None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        b.daily_stats(day("2026-12-02"), day("2026-12-01"), None)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Of many concurrent first sights of one time pass on two pools, exactly one records it, and
/// a later sight (another process, a restart) does not record it again.
async fn a_time_pass_is_recorded_used_exactly_once_across_pools(db: &TestDb) {
    let a = db.open().await;
    let b = db.open().await;
    let token = TokenId::random();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store.record_pass_use(&token, "pass", 100).await.unwrap()
        }));
    }
    let mut recorded = 0;
    for t in tasks {
        recorded += u64::from(t.await.unwrap());
    }
    assert_eq!(recorded, 1);
    assert!(!b.record_pass_use(&token, "pass", 200).await.unwrap());
    // A time pass writes no per-call usage: nothing is consumed by recording it.
    assert!(a.token_usage(&token).await.unwrap().is_none());
}

store_test!(
    x402_claims,
    an_x402_payment_is_claimed_once_across_pools_released_and_pruned
);

/// Of many concurrent claims of one x402 payment, on two pools (two gateway processes), exactly
/// one wins; the others learn it is taken, then, once recorded, that it settled (with its
/// header); other keys are independent; a released claim can be taken again; pruning removes
/// only claims whose authorisation has expired.
async fn an_x402_payment_is_claimed_once_across_pools_released_and_pruned(db: &TestDb) {
    use turnpike_store::X402Claim;
    let (a, b) = (db.open().await, db.open().await);
    let key = "eip155:84532/0xe7f1/0x7099/0x11";
    let mut tasks = Vec::new();
    for i in 0..32 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store.claim_x402_payment(key, 1000, 2000).await.unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            X402Claim::Claimed => won += 1,
            X402Claim::Taken => {}
            X402Claim::Settled { .. } => panic!("nothing was settled"),
        }
    }
    assert_eq!(won, 1, "exactly one claim wins");
    assert_eq!(
        b.claim_x402_payment(key, 1001, 2000).await.unwrap(),
        X402Claim::Taken
    );
    a.record_x402_settlement(key, "eyJzdWNjZXNzIjp0cnVlfQ==")
        .await
        .unwrap();
    assert_eq!(
        b.claim_x402_payment(key, 1001, 2000).await.unwrap(),
        X402Claim::Settled {
            settle_header: "eyJzdWNjZXNzIjp0cnVlfQ==".into()
        }
    );
    a.record_x402_settlement("never claimed", "x")
        .await
        .unwrap();
    assert_eq!(
        a.claim_x402_payment("other", 1000, 1500).await.unwrap(),
        X402Claim::Claimed
    );
    for bad in [String::new(), "k".repeat(513)] {
        assert!(matches!(
            a.claim_x402_payment(&bad, 1000, 1500).await,
            Err(StoreError::InvalidArgument(_))
        ));
    }
    b.release_x402_payment("other").await.unwrap();
    b.release_x402_payment("never claimed").await.unwrap();
    assert_eq!(
        a.claim_x402_payment("other", 1002, 1500).await.unwrap(),
        X402Claim::Claimed
    );
    // At 1600 only "other" (valid before 1500) has expired.
    assert_eq!(a.prune_x402_payments(1600).await.unwrap(), 1);
    assert!(matches!(
        a.claim_x402_payment(key, 1600, 2000).await.unwrap(),
        X402Claim::Settled { .. }
    ));
    assert_eq!(
        b.claim_x402_payment("other", 1600, 1700).await.unwrap(),
        X402Claim::Claimed
    );
    assert_eq!(a.prune_x402_payments(2001).await.unwrap(), 2);
}
