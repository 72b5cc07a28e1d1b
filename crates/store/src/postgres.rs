//! The PostgreSQL store, for several gateway replicas sharing one database.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use turnpike_l402::{PaymentHash, TokenId};

use crate::{Consumption, InvoiceRecord, Store, StoreError, TokenUsage, to_i64, to_u64};

/// Schema migrations, applied in order; each runs once per database.
const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../migrations/postgres/0001_init.sql"))];

/// Advisory lock key taken while migrating, so replicas starting together migrate once.
const MIGRATION_LOCK: i64 = 0x7475_726e_7069_6b65; // "turnpike"

/// A [`Store`] in PostgreSQL. Every statement is atomic on its own, so any number of gateway
/// processes can share one database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://…`) and applies pending migrations.
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        PgStore::open_with(options).await
    }

    /// Connects with explicit options (for example a `search_path`) and migrates.
    pub async fn open_with(options: PgConnectOptions) -> Result<PgStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        let store = PgStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS turnpike_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        for &(version, sql) in MIGRATIONS {
            let applied: Option<i64> =
                sqlx::query_scalar("SELECT version FROM turnpike_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if applied.is_some() {
                continue;
            }
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .map_err(|source| StoreError::Migration { version, source })?;
            sqlx::query(
                "INSERT INTO turnpike_migrations (version, applied_at) VALUES ($1, extract(epoch from now())::bigint)",
            )
            .bind(version)
            .execute(&mut *tx)
            .await?;
            tracing::info!(version, "applied store migration");
        }
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl Store for PgStore {
    async fn consume_call(
        &self,
        token: &TokenId,
        service: &str,
        calls_total: u64,
        now_unix: u64,
    ) -> Result<Consumption, StoreError> {
        if calls_total == 0 {
            return Ok(Consumption::Exhausted);
        }
        // One statement; ON CONFLICT locks the row, and the WHERE sees the latest version.
        let row = sqlx::query(
            "INSERT INTO token_usage (token_id, service, calls_total, used, first_used_at, last_used_at)
             VALUES ($1, $2, $3, 1, $4, $4)
             ON CONFLICT (token_id) DO UPDATE
                SET used = token_usage.used + 1,
                    calls_total = LEAST(token_usage.calls_total, EXCLUDED.calls_total),
                    last_used_at = EXCLUDED.last_used_at
              WHERE token_usage.used < LEAST(token_usage.calls_total, EXCLUDED.calls_total)
             RETURNING used, calls_total",
        )
        .bind(&token.0[..])
        .bind(service)
        .bind(to_i64(calls_total))
        .bind(to_i64(now_unix))
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => Ok(Consumption::Exhausted),
            Some(row) => {
                let used = to_u64(row.try_get(0)?, "token_usage.used")?;
                let total = to_u64(row.try_get(1)?, "token_usage.calls_total")?;
                Ok(Consumption::Granted {
                    remaining: total.saturating_sub(used),
                })
            }
        }
    }

    async fn refund_call(&self, token: &TokenId) -> Result<(), StoreError> {
        sqlx::query("UPDATE token_usage SET used = used - 1 WHERE token_id = $1 AND used > 0")
            .bind(&token.0[..])
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn token_usage(&self, token: &TokenId) -> Result<Option<TokenUsage>, StoreError> {
        let row = sqlx::query("SELECT calls_total, used FROM token_usage WHERE token_id = $1")
            .bind(&token.0[..])
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(TokenUsage {
                calls_total: to_u64(row.try_get(0)?, "token_usage.calls_total")?,
                used: to_u64(row.try_get(1)?, "token_usage.used")?,
            })
        })
        .transpose()
    }

    async fn record_invoice(&self, inv: &InvoiceRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO invoices (payment_hash, token_id, service, amount_msat, calls, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&inv.payment_hash.0[..])
        .bind(&inv.token_id.0[..])
        .bind(&inv.service)
        .bind(to_i64(inv.amount.0))
        .bind(inv.calls.map(to_i64))
        .bind(to_i64(inv.created_at))
        .bind(to_i64(inv.expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn invoice(&self, hash: &PaymentHash) -> Result<Option<InvoiceRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT token_id, service, amount_msat, calls, created_at, expires_at FROM invoices WHERE payment_hash = $1",
        )
        .bind(&hash.0[..])
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        crate::invoice_from_row(*hash, &row).map(Some)
    }

    async fn prune_expired_invoices(&self, now_unix: u64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM invoices WHERE expires_at < $1
               AND NOT EXISTS (SELECT 1 FROM token_usage u WHERE u.token_id = invoices.token_id)",
        )
        .bind(to_i64(now_unix))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
