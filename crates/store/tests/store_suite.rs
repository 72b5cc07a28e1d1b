//! The store's contract, run against a real SQLite file and the real PostgreSQL server.
//!
//! PostgreSQL tests use `TURNPIKE_TEST_POSTGRES_URL` (each test in a schema of its own). Without
//! it they are skipped with a message, unless `TURNPIKE_REQUIRE_POSTGRES=1`, when they fail.

use std::str::FromStr;
use std::sync::Arc;

use proptest::prelude::*;
use turnpike_l402::{Msat, PaymentHash, TokenId};
use turnpike_store::{Consumption, InvoiceRecord, PgStore, SqliteStore, Store};

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

    async fn open(&self) -> Arc<dyn Store> {
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
    concurrency,
    concurrent_consumers_on_two_pools_never_oversubscribe
);
store_test!(
    invoices,
    invoices_are_recorded_and_expired_unpaid_ones_pruned
);

async fn a_bundle_serves_exactly_its_calls_and_refunds_give_calls_back(db: &TestDb) {
    let store = db.open().await;
    let token = TokenId::random();
    for expected_remaining in (0..3).rev() {
        assert_eq!(
            store.consume_call(&token, "svc", 3, 100).await.unwrap(),
            Consumption::Granted {
                remaining: expected_remaining
            }
        );
    }
    assert_eq!(
        store.consume_call(&token, "svc", 3, 100).await.unwrap(),
        Consumption::Exhausted
    );
    store.refund_call(&token).await.unwrap();
    assert_eq!(
        store.consume_call(&token, "svc", 3, 101).await.unwrap(),
        Consumption::Granted { remaining: 0 }
    );
    let usage = store.token_usage(&token).await.unwrap().unwrap();
    assert_eq!((usage.calls_total, usage.used), (3, 3));
    // A refund never takes usage below zero.
    let fresh = TokenId::random();
    store.refund_call(&fresh).await.unwrap();
    assert_eq!(store.token_usage(&fresh).await.unwrap(), None);
}

async fn a_token_narrowed_after_first_use_keeps_the_smaller_total(db: &TestDb) {
    let store = db.open().await;
    let token = TokenId::random();
    assert_eq!(
        store.consume_call(&token, "svc", 5, 1).await.unwrap(),
        Consumption::Granted { remaining: 4 }
    );
    // Same token now presented with a caveat granting 2: one more call, then exhausted.
    assert_eq!(
        store.consume_call(&token, "svc", 2, 2).await.unwrap(),
        Consumption::Granted { remaining: 0 }
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
        Consumption::Granted { remaining: 0 }
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
        let mut granted = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), Consumption::Granted { .. }) {
                granted += 1;
            }
        }
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

fn rand_bytes() -> [u8; 32] {
    *TokenId::random().as_bytes()
}

#[derive(Debug, Clone)]
enum Op {
    Consume(usize),
    Refund(usize),
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// For random interleavings of consume and refund, served calls never exceed what was paid
    /// and every refund gives back exactly one call.
    #[test]
    fn accounting_matches_a_model(
        totals in proptest::collection::vec(1u64..5, 1..4),
        ops in proptest::collection::vec(prop_oneof![(0usize..4).prop_map(Op::Consume), (0usize..4).prop_map(Op::Refund)], 0..40),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
            let tokens: Vec<TokenId> = totals.iter().map(|_| TokenId::random()).collect();
            let mut used = vec![0u64; totals.len()];
            for op in &ops {
                match *op {
                    Op::Consume(i) => {
                        let i = i % totals.len();
                        let got = store.consume_call(&tokens[i], "svc", totals[i], 1).await.unwrap();
                        if used[i] < totals[i] {
                            used[i] += 1;
                            prop_assert_eq!(got, Consumption::Granted { remaining: totals[i] - used[i] });
                        } else {
                            prop_assert_eq!(got, Consumption::Exhausted);
                        }
                    }
                    Op::Refund(i) => {
                        let i = i % totals.len();
                        store.refund_call(&tokens[i]).await.unwrap();
                        used[i] = used[i].saturating_sub(1);
                    }
                }
            }
            for (i, token) in tokens.iter().enumerate() {
                let recorded = store.token_usage(token).await.unwrap().map(|u| u.used).unwrap_or(0);
                prop_assert_eq!(recorded, used[i]);
                prop_assert!(recorded <= totals[i]);
            }
            Ok(())
        })?;
    }
}
