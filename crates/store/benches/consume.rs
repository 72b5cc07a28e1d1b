//! Micro-benchmarks of `Store::consume_call`, the one database write on a paid call: the first
//! call of a fresh single-call token (an insert into `token_usage`), against a table already
//! holding 1,000 or 1,000,000 used tokens, to show the cost barely grows with the table.
//!
//! - `consume_sqlite/{1k_rows,1m_rows}`: [`SqliteStore`] on a file in a temporary directory (WAL,
//!   `synchronous=NORMAL`, as in production).
//! - `consume_postgres/{1k_rows,1m_rows}`: [`PgStore`] in a fresh schema (dropped afterwards), only
//!   when `TURNPIKE_TEST_POSTGRES_URL` is set (e.g. `postgres://postgres@127.0.0.1:5432/test`).
//!   Every call is a committed transaction, so this mostly measures the server's commit (WAL
//!   flush) latency.
//!
//! Rows inserted while measuring add to the pre-filled ones. No target: a paid call costs one of
//! these on top of credential verification and the upstream request.
//!
//! Run with `cargo bench -p turnpike-store`; `cargo test --benches` runs each once as a test.

use std::hint::black_box;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{BatchSize, Criterion, SamplingMode, criterion_group, criterion_main};
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use tokio::runtime::Runtime;
use turnpike_l402::TokenId;
use turnpike_store::{Consumption, PgStore, SqliteStore, Store};

const SERVICE: &str = "api";

/// Table sizes: benchmark name and number of pre-filled `token_usage` rows.
const SIZES: [(&str, i64); 2] = [("1k_rows", 1_000), ("1m_rows", 1_000_000)];

fn now_unix() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("in range")
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Measures the first (and only) call of fresh single-call tokens on `store`.
fn bench_consume<S: Store>(b: &mut criterion::Bencher<'_>, rt: &Runtime, store: &S) {
    let now = u64::try_from(now_unix()).expect("after 1970");
    b.to_async(rt).iter_batched(
        TokenId::random,
        |token| async move {
            let consumed = store
                .consume_call(black_box(&token), SERVICE, 1, now)
                .await
                .expect("consume_call");
            assert!(matches!(
                consumed,
                Consumption::Granted { remaining: 0, .. }
            ));
        },
        BatchSize::SmallInput,
    )
}

/// A SQLite store in a temporary directory whose `token_usage` holds `rows` used tokens.
struct SqliteFixture {
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

async fn sqlite_fixture(rows: i64) -> SqliteFixture {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("turnpike.db").display());
    let store = SqliteStore::open(&url).await.expect("open SQLite store");
    // Filled through a connection of its own, in one statement: random token ids, inserted in
    // key order so the fill takes seconds even for a million rows.
    let mut conn = SqliteConnection::connect_with(&SqliteConnectOptions::from_str(&url).unwrap())
        .await
        .expect("connect to SQLite");
    sqlx::raw_sql("PRAGMA cache_size = -262144")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?1)
         INSERT INTO token_usage (token_id, service, calls_total, used, first_used_at, last_used_at)
         SELECT randomblob(32), ?2, 1, 1, ?3, ?3 FROM c ORDER BY 1",
    )
    .bind(rows)
    .bind(SERVICE)
    .bind(now_unix())
    .execute(&mut conn)
    .await
    .expect("fill token_usage");
    sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    eprintln!(
        "SQLite: filled {rows} token_usage rows in {:.1?}",
        started.elapsed()
    );
    SqliteFixture { store, _dir: dir }
}

fn consume_sqlite(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("consume_sqlite");
    for (name, rows) in SIZES {
        // Filled on the benchmark's first run only, so a filtered-out size costs nothing.
        let mut fixture = None;
        group.bench_function(name, |b| {
            let fx = fixture.get_or_insert_with(|| rt.block_on(sqlite_fixture(rows)));
            bench_consume(b, &rt, &fx.store);
        });
        // Closes the pool, then deletes the directory.
        drop(fixture);
    }
    group.finish();
}

/// A PostgreSQL store in a schema of its own whose `token_usage` holds `rows` used tokens.
struct PgFixture {
    store: PgStore,
    url: String,
    schema: String,
}

async fn pg_fixture(url: &str, rows: i64) -> PgFixture {
    let started = Instant::now();
    // As the store tests do: a fresh schema per database, selected with `search_path`.
    let schema = format!("turnpike_bench_{}", &TokenId::random().to_hex()[..16]);
    let mut admin = PgConnection::connect(url)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .expect("create schema");
    admin.close().await.unwrap();
    let options = PgConnectOptions::from_str(url)
        .expect("PostgreSQL URL")
        .options([("search_path", schema.as_str())]);
    let store = PgStore::open_with(options.clone())
        .await
        .expect("open PostgreSQL store");
    let mut conn = PgConnection::connect_with(&options)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(
        "INSERT INTO token_usage (token_id, service, calls_total, used, first_used_at, last_used_at)
         SELECT sha256(int8send(i)), $2, 1, 1, $3, $3 FROM generate_series(1, $1::bigint) AS s(i)",
    )
    .bind(rows)
    .bind(SERVICE)
    .bind(now_unix())
    .execute(&mut conn)
    .await
    .expect("fill token_usage");
    sqlx::raw_sql("ANALYZE token_usage")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    eprintln!(
        "PostgreSQL: filled {rows} token_usage rows in {:.1?}",
        started.elapsed()
    );
    PgFixture {
        store,
        url: url.to_owned(),
        schema,
    }
}

impl PgFixture {
    async fn drop_schema(self) {
        let PgFixture { store, url, schema } = self;
        drop(store);
        let mut admin = PgConnection::connect(&url)
            .await
            .expect("connect to PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&mut admin)
            .await
            .expect("drop schema");
        admin.close().await.unwrap();
    }
}

fn consume_postgres(c: &mut Criterion) {
    let Ok(url) = std::env::var("TURNPIKE_TEST_POSTGRES_URL") else {
        eprintln!("SKIPPED: consume_postgres (set TURNPIKE_TEST_POSTGRES_URL to run it)");
        return;
    };
    let rt = runtime();
    let mut group = c.benchmark_group("consume_postgres");
    // Up to a millisecond per call (a commit each): flat sampling and fewer samples keep the
    // run within the measurement time.
    group.sampling_mode(SamplingMode::Flat).sample_size(50);
    for (name, rows) in SIZES {
        let mut fixture = None;
        group.bench_function(name, |b| {
            let fx = fixture.get_or_insert_with(|| rt.block_on(pg_fixture(&url, rows)));
            bench_consume(b, &rt, &fx.store);
        });
        if let Some(fx) = fixture {
            rt.block_on(fx.drop_schema());
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = consume_sqlite, consume_postgres
}
criterion_main!(benches);
