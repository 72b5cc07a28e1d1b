//! The health of services for a hub's directory: hourly buckets of calls forwarded, calls
//! answered below 500, probes and probes up, a latency histogram per bucket, and each
//! service's last probe. Written in batches by each replica (additive upserts, so replicas sum
//! up), read back summed over a window.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Executor, Row};

use crate::sql::{Codec, Dialect, SqlStore};
use crate::{StoreError, to_i64, to_u64};

/// Counts of one service: from traffic (calls forwarded, answered below 500, latency) and
/// from probes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthCounts {
    /// Calls forwarded to the upstream.
    pub forwarded: u64,
    /// Of them, answered below 500.
    pub ok: u64,
    /// Probes sent.
    pub probes: u64,
    /// Of them, answered below 500 in time.
    pub probes_up: u64,
    /// Forwarded calls per latency bucket (`(bucket, calls)`, by bucket when read).
    pub latency: Vec<(u32, u64)>,
}

/// What one replica adds to one service's hour: counts since its last flush.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthDelta {
    /// Unix seconds / 3600.
    pub hour: u64,
    /// The service (or route) name.
    pub service: String,
    /// What to add.
    pub counts: HealthCounts,
}

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// The service probed.
    pub service: String,
    /// It answered below 500 in time.
    pub up: bool,
    /// When (unix seconds).
    pub at: u64,
}

/// One service's health summed over a window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthSummary {
    /// The service.
    pub service: String,
    /// The counts summed.
    pub counts: HealthCounts,
    /// The last probe ever recorded: up, and when.
    pub last_probe: Option<(bool, u64)>,
}

/// Where service health is kept.
///
/// Obligations: [`HealthStore::add_health`] is atomic and additive (replicas adding at once
/// sum up exactly); a last probe is replaced only by a later one.
#[async_trait]
pub trait HealthStore: Send + Sync + 'static {
    /// Adds `deltas` to their hours and records `probes` as the services' last probes, in one
    /// transaction.
    async fn add_health(
        &self,
        deltas: &[HealthDelta],
        probes: &[ProbeOutcome],
    ) -> Result<(), StoreError>;

    /// Every service's counts summed over hours `from_hour..`, with its last probe, by name.
    async fn health_since(&self, from_hour: u64) -> Result<Vec<HealthSummary>, StoreError>;

    /// Deletes the buckets of hours before `before_hour`, and the last probes made before it
    /// (of services no longer probed); how many rows went.
    async fn prune_health(&self, before_hour: u64) -> Result<u64, StoreError>;
}

const ADD_HOURLY: &str = "INSERT INTO health_hourly
    (hour, service, forwarded, ok, probes, probes_up) VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (hour, service) DO UPDATE
       SET forwarded = health_hourly.forwarded + excluded.forwarded,
           ok = health_hourly.ok + excluded.ok,
           probes = health_hourly.probes + excluded.probes,
           probes_up = health_hourly.probes_up + excluded.probes_up";

const ADD_LATENCY: &str = "INSERT INTO health_latency (hour, service, bucket, calls)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (hour, service, bucket) DO UPDATE
       SET calls = health_latency.calls + excluded.calls";

const NOTE_PROBE: &str = "INSERT INTO health_probe (service, up, checked_at) VALUES ($1, $2, $3)
    ON CONFLICT (service) DO UPDATE SET up = excluded.up, checked_at = excluded.checked_at
     WHERE excluded.checked_at >= health_probe.checked_at";

const SUM_HOURLY: &str = "SELECT service, CAST(SUM(forwarded) AS BIGINT), CAST(SUM(ok) AS BIGINT),
       CAST(SUM(probes) AS BIGINT), CAST(SUM(probes_up) AS BIGINT)
  FROM health_hourly WHERE hour >= $1 GROUP BY service ORDER BY service";

const SUM_LATENCY: &str = "SELECT service, bucket, CAST(SUM(calls) AS BIGINT)
  FROM health_latency WHERE hour >= $1 GROUP BY service, bucket ORDER BY service, bucket";

const LAST_PROBES: &str = "SELECT service, up, checked_at FROM health_probe ORDER BY service";

const PRUNE_HOURLY: &str = "DELETE FROM health_hourly WHERE hour < $1";
const PRUNE_LATENCY: &str = "DELETE FROM health_latency WHERE hour < $1";
/// `$1` the first second kept: a service not probed since is no longer probed at all.
const PRUNE_PROBES: &str = "DELETE FROM health_probe WHERE checked_at < $1";

#[async_trait]
impl<DB: Dialect> HealthStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Codec<DB>,
    String: Codec<DB>,
{
    async fn add_health(
        &self,
        deltas: &[HealthDelta],
        probes: &[ProbeOutcome],
    ) -> Result<(), StoreError> {
        if deltas.is_empty() && probes.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        for d in deltas {
            let c = &d.counts;
            sqlx::query(ADD_HOURLY)
                .bind(to_i64(d.hour))
                .bind(d.service.clone())
                .bind(to_i64(c.forwarded))
                .bind(to_i64(c.ok))
                .bind(to_i64(c.probes))
                .bind(to_i64(c.probes_up))
                .execute(&mut *tx)
                .await?;
            for &(bucket, calls) in c.latency.iter().filter(|(_, n)| *n > 0) {
                sqlx::query(ADD_LATENCY)
                    .bind(to_i64(d.hour))
                    .bind(d.service.clone())
                    .bind(i64::from(bucket))
                    .bind(to_i64(calls))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for p in probes {
            sqlx::query(NOTE_PROBE)
                .bind(p.service.clone())
                .bind(i64::from(p.up))
                .bind(to_i64(p.at))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn health_since(&self, from_hour: u64) -> Result<Vec<HealthSummary>, StoreError> {
        let from = to_i64(from_hour);
        let mut out: std::collections::BTreeMap<String, HealthSummary> = Default::default();
        let count = |v: i64| to_u64(v, "health_hourly");
        for row in sqlx::query(SUM_HOURLY)
            .bind(from)
            .fetch_all(&self.pool)
            .await?
        {
            let service: String = row.try_get(0)?;
            let s = out.entry(service.clone()).or_default();
            s.service = service;
            s.counts.forwarded = count(row.try_get(1)?)?;
            s.counts.ok = count(row.try_get(2)?)?;
            s.counts.probes = count(row.try_get(3)?)?;
            s.counts.probes_up = count(row.try_get(4)?)?;
        }
        for row in sqlx::query(SUM_LATENCY)
            .bind(from)
            .fetch_all(&self.pool)
            .await?
        {
            let service: String = row.try_get(0)?;
            let bucket = u32::try_from(row.try_get::<i64, _>(1)?)
                .map_err(|_| StoreError::Corrupt("health_latency.bucket"))?;
            let calls = to_u64(row.try_get(2)?, "health_latency.calls")?;
            let s = out.entry(service.clone()).or_default();
            s.service = service;
            s.counts.latency.push((bucket, calls));
        }
        for row in sqlx::query(LAST_PROBES).fetch_all(&self.pool).await? {
            let service: String = row.try_get(0)?;
            let up: i64 = row.try_get(1)?;
            let at = to_u64(row.try_get(2)?, "health_probe.checked_at")?;
            let s = out.entry(service.clone()).or_default();
            s.service = service;
            s.last_probe = Some((up != 0, at));
        }
        Ok(out.into_values().collect())
    }

    async fn prune_health(&self, before_hour: u64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let mut gone = 0;
        let first_second = before_hour.saturating_mul(3600);
        for (sql, before) in [
            (PRUNE_HOURLY, before_hour),
            (PRUNE_LATENCY, before_hour),
            (PRUNE_PROBES, first_second),
        ] {
            let done = sqlx::query(sql)
                .bind(to_i64(before))
                .execute(&mut *tx)
                .await?;
            gone += crate::sql::RowsAffected::rows_affected(&done);
        }
        tx.commit().await?;
        Ok(gone)
    }
}
