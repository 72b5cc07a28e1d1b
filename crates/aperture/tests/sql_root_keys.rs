//! Aperture's `secrets` table read through [`SqlRootKeys`]: a real SQLite file (and the local
//! PostgreSQL when `TURNPIKE_TEST_POSTGRES_URL` is set), opened read-only.

use std::str::FromStr;

use sqlx::ConnectOptions;
use turnpike_aperture::secrets::{RootKeys, SecretsError, SqlRootKeys};

const SCHEMA: &str = "CREATE TABLE secrets (id INTEGER PRIMARY KEY, hash BLOB UNIQUE NOT NULL, \
                      secret BLOB UNIQUE NOT NULL, created_at TIMESTAMP NOT NULL)";

async fn fixture(path: &std::path::Path, rows: &[(&[u8], &[u8])]) {
    let mut conn =
        sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .unwrap()
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
    sqlx::query(SCHEMA).execute(&mut conn).await.unwrap();
    for (hash, secret) in rows {
        sqlx::query(
            "INSERT INTO secrets (hash, secret, created_at) VALUES (?, ?, CURRENT_TIMESTAMP)",
        )
        .bind(*hash)
        .bind(*secret)
        .execute(&mut conn)
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn sqlite_keys_are_read_and_nothing_can_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aperture.db");
    fixture(&db, &[(&[1; 32], &[7; 32]), (&[2; 32], &[8; 31])]).await;
    let keys = SqlRootKeys::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    assert_eq!(keys.root_key(&[1; 32]).await.unwrap(), Some([7; 32]));
    assert_eq!(keys.root_key(&[3; 32]).await.unwrap(), None);
    // A secret that is not 32 bytes is no key.
    assert_eq!(keys.root_key(&[2; 32]).await.unwrap(), None);
    let SqlRootKeys::Sqlite(pool) = &keys else {
        panic!("sqlite")
    };
    let write = sqlx::query("DELETE FROM secrets").execute(pool).await;
    assert!(write.is_err(), "the connection is read-only");
}

#[tokio::test]
async fn bad_urls_and_missing_databases_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        SqlRootKeys::open("mysql://x/y").await,
        Err(SecretsError::UnsupportedUrl)
    ));
    let missing = format!("sqlite://{}/nope.db", dir.path().display());
    assert!(SqlRootKeys::open(&missing).await.is_err());
    assert!(!dir.path().join("nope.db").exists(), "never created");
    // A database without Aperture's table is refused at open.
    let empty = dir.path().join("empty.db");
    sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{}", empty.display()))
        .unwrap()
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    assert!(
        SqlRootKeys::open(&format!("sqlite://{}", empty.display()))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn postgres_keys_are_read_and_nothing_can_be_written() {
    let Ok(admin) = std::env::var("TURNPIKE_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("TURNPIKE_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "TURNPIKE_REQUIRE_POSTGRES=1 but TURNPIKE_TEST_POSTGRES_URL is not set"
        );
        eprintln!("SKIPPED: PostgreSQL (set TURNPIKE_TEST_POSTGRES_URL to run it)");
        return;
    };
    let name = format!("aperture_keys_{}", std::process::id());
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&pool)
    .await;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    let url = format!("{base}/{name}");
    let setup = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TABLE secrets (id SERIAL PRIMARY KEY, hash BYTEA UNIQUE NOT NULL, \
         secret BYTEA UNIQUE NOT NULL, created_at TIMESTAMP NOT NULL)",
    )
    .execute(&setup)
    .await
    .unwrap();
    sqlx::query("INSERT INTO secrets (hash, secret, created_at) VALUES ($1, $2, now())")
        .bind(&[1u8; 32][..])
        .bind(&[7u8; 32][..])
        .execute(&setup)
        .await
        .unwrap();
    setup.close().await;
    let keys = SqlRootKeys::open(&url).await.unwrap();
    assert_eq!(keys.root_key(&[1; 32]).await.unwrap(), Some([7; 32]));
    assert_eq!(keys.root_key(&[3; 32]).await.unwrap(), None);
    let SqlRootKeys::Postgres(ro) = &keys else {
        panic!("postgres")
    };
    let write = sqlx::query("DELETE FROM secrets").execute(ro).await;
    assert!(write.is_err(), "the connection is read-only");
    ro.close().await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&pool)
    .await;
}
