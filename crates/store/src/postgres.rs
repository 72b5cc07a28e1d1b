//! The PostgreSQL store, for several gateway replicas sharing one database.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};

use crate::batch::ConsumeRequest;
use crate::sql::{
    Dialect, SqlStore, consume_insert, consume_upsert, invoice_insert, invoice_upsert, migrations,
    select_entry,
};
use crate::{InvoiceRecord, StoreError, to_i64};

/// A [`Store`](crate::Store) in PostgreSQL. Every operation is one atomic statement or one
/// transaction with row locks, so any number of gateway processes can share one database.
pub type PgStore = SqlStore<Postgres>;

impl Dialect for Postgres {
    const BEGIN_WRITE: &'static str = "BEGIN";
    // A concurrent begin of the same key waits here for ours, then sees the committed entry.
    const SELECT_ENTRY: &'static str = select_entry!(" FOR UPDATE");
    const CREATE_MIGRATIONS: &'static str = "CREATE TABLE IF NOT EXISTS turnpike_migrations
        (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)";
    // An advisory lock on "turnpike" (0x7475_726e_7069_6b65), held until the migrations commit.
    const LOCK_MIGRATIONS: Option<&'static str> =
        Some("SELECT pg_advisory_xact_lock(8391739299332713317)");
    const MIGRATIONS: &'static [(i64, &'static str)] = migrations!("postgres");
    const BATCH_WRITERS: usize = 4;

    /// One prepared statement whatever the batch size (the rows are arrays), rows in token
    /// order (no deadlock between replicas).
    async fn consume_rows(
        conn: &mut PgConnection,
        batch: &[ConsumeRequest],
    ) -> Result<Vec<crate::ConsumedRow>, sqlx::Error> {
        sqlx::query_as(concat!(
            consume_insert!(),
            "SELECT t, s, c, 1, n, n
               FROM UNNEST($1::bytea[], $2::text[], $3::int8[], $4::int8[])
                    WITH ORDINALITY AS u(t, s, c, n, o)
              ORDER BY o",
            consume_upsert!()
        ))
        .bind(column(batch, |r| r.token.0.to_vec()))
        .bind(column(batch, |r| r.service.clone()))
        .bind(column(batch, |r| to_i64(r.calls_total)))
        .bind(column(batch, |r| to_i64(r.now_unix)))
        .fetch_all(conn)
        .await
    }

    async fn invoice_rows(
        conn: &mut PgConnection,
        batch: &[InvoiceRecord],
    ) -> Result<Vec<Vec<u8>>, sqlx::Error> {
        sqlx::query_scalar(concat!(
            invoice_insert!(),
            "SELECT * FROM UNNEST($1::bytea[], $2::bytea[], $3::text[], $4::int8[], $5::int8[],
                                  $6::int8[], $7::int8[])",
            invoice_upsert!()
        ))
        .bind(column(batch, |i| i.payment_hash.0.to_vec()))
        .bind(column(batch, |i| i.token_id.0.to_vec()))
        .bind(column(batch, |i| i.service.clone()))
        .bind(column(batch, |i| to_i64(i.amount.0)))
        .bind(column(batch, |i| i.calls.map(to_i64)))
        .bind(column(batch, |i| to_i64(i.created_at)))
        .bind(column(batch, |i| to_i64(i.expires_at)))
        .fetch_all(conn)
        .await
    }
}

/// One column of a batch, bound as an array.
fn column<T, U>(batch: &[T], value: impl Fn(&T) -> U) -> Vec<U> {
    batch.iter().map(value).collect()
}

impl SqlStore<Postgres> {
    /// Connects to `url` (`postgres://…`) and applies pending migrations.
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        PgStore::open_with(PgConnectOptions::from_str(url)?).await
    }

    /// Connects with explicit options (for example a `search_path`) and migrates.
    pub async fn open_with(options: PgConnectOptions) -> Result<PgStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        SqlStore::start(pool).await
    }
}
