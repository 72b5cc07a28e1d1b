//! Statistics per UTC day and service that survive restarts and are shared by replicas.
//!
//! The counters of [`crate::metrics`] only grow. Every few seconds (and when the gateway
//! stops) [`flush`] adds to the store's `stats_daily` what each service counted since the last
//! successful flush: the current counts less those already added. The counts added are
//! remembered only once the store committed them, so a failed flush is retried whole by the
//! next one and nothing is lost or added twice; flushes are serialised. Counts are attributed
//! to the UTC day on which they are flushed (so at most one flush interval late around
//! midnight).
//!
//! [`query`] reads the rows back as the admin API's `/api/v1/stats` answer ([`StatsReport`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use turnpike_l402::Msat;
use turnpike_store::{DailyStats, StatCounts, StatsStore, StoreError};

use crate::metrics::{Metrics, StoreOp};

/// Days as the report and its query take them (`YYYY-MM-DD`, parsed with `str::parse`).
pub use turnpike_store::{Day, DayError};

/// How often the counts are added to the store.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// Longest wait for the last flush when the gateway stops.
pub(crate) const FINAL_FLUSH: Duration = Duration::from_secs(10);

/// Adds to `store` what every service of `metrics` counted since the last successful flush,
/// as of the day holding `now_unix`. On an error nothing is remembered as added (the next
/// flush adds it all).
pub async fn flush(
    metrics: &Metrics,
    store: &dyn StatsStore,
    now_unix: u64,
) -> Result<(), StoreError> {
    let mut flushed = metrics.flushed.lock().await;
    let day = Day::from_unix(now_unix);
    let current: Vec<(String, StatCounts)> = metrics
        .services()
        .iter()
        .map(|s| (s.name().to_owned(), s.stat_counts()))
        .collect();
    let deltas: Vec<DailyStats> = current
        .iter()
        .map(|(service, now)| DailyStats {
            day,
            service: service.clone(),
            counts: now.minus(&flushed.get(service).copied().unwrap_or_default()),
        })
        .filter(|d| !d.counts.is_zero())
        .collect();
    if deltas.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    let added = store.add_daily_stats(&deltas).await;
    metrics.store_op(StoreOp::AddDailyStats, started.elapsed());
    added?;
    flushed.extend(current);
    Ok(())
}

/// Flushes every [`FLUSH_INTERVAL`] until aborted, logging failures (the counts wait).
pub(crate) fn spawn_flusher(
    metrics: Arc<Metrics>,
    store: Arc<dyn turnpike_store::Store>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = flush(&metrics, &*store, crate::unix_now()).await {
                tracing::warn!(error = %e, "cannot add statistics to the store; will retry");
            }
        }
    })
}

/// The counts of one service on one day, as `/api/v1/stats` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayReport {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// The service (or route) name.
    pub service: String,
    /// The counts, with `earned_sats`.
    #[serde(flatten)]
    pub counts: CountsReport,
}

/// Counts with the amount in both units (`earned_sats` = msat / 1000, rounded down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CountsReport {
    /// Millisatoshis earned.
    pub earned_msat: u64,
    /// `earned_msat` / 1000, rounded down.
    pub earned_sats: u64,
    /// `402` challenges issued.
    pub challenges: u64,
    /// Payments (tokens first used).
    pub payments: u64,
    /// Paid calls served.
    pub calls_served: u64,
    /// Paid calls given back.
    pub calls_refunded: u64,
    /// Calls served without payment.
    pub free_calls: u64,
    /// Requests answered `429`.
    pub rate_limited: u64,
}

impl From<StatCounts> for CountsReport {
    fn from(c: StatCounts) -> CountsReport {
        CountsReport {
            earned_msat: c.earned_msat,
            earned_sats: Msat(c.earned_msat).to_sats_floor().0,
            challenges: c.challenges,
            payments: c.payments,
            calls_served: c.calls_served,
            calls_refunded: c.calls_refunded,
            free_calls: c.free_calls,
            rate_limited: c.rate_limited,
        }
    }
}

/// The answer of `GET /api/v1/stats`: the days with activity (by day, then service) and their
/// totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatsReport {
    /// First day asked (`YYYY-MM-DD`).
    pub from: String,
    /// Last day asked, inclusive.
    pub to: String,
    /// One entry per day and service with any activity.
    pub days: Vec<DayReport>,
    /// The sums over `days` (`earned_sats` is the floor of the summed msat).
    pub totals: CountsReport,
}

impl CountsReport {
    /// The counts back in the store's form.
    fn counts(&self) -> StatCounts {
        StatCounts {
            earned_msat: self.earned_msat,
            challenges: self.challenges,
            payments: self.payments,
            calls_served: self.calls_served,
            calls_refunded: self.calls_refunded,
            free_calls: self.free_calls,
            rate_limited: self.rate_limited,
        }
    }
}

impl StatsReport {
    /// The report with the rows of the services `keep` accepts only, totals added up again.
    pub fn retain_services(self, keep: impl Fn(&str) -> bool) -> StatsReport {
        let days: Vec<DayReport> = self.days.into_iter().filter(|d| keep(&d.service)).collect();
        let totals = days
            .iter()
            .fold(StatCounts::default(), |t, d| t.plus(&d.counts.counts()))
            .into();
        StatsReport {
            days,
            totals,
            ..self
        }
    }
}

/// How many days `/api/v1/stats` covers when no range is given: today and the 29 before.
pub const DEFAULT_DAYS: u32 = 30;

/// The default range ending on the day of `now_unix`: `(from, to)`.
pub fn default_range(now_unix: u64) -> (Day, Day) {
    let to = Day::from_unix(now_unix);
    (to.minus_days(DEFAULT_DAYS - 1), to)
}

/// The statistics of days `from..=to` (of `service` only, when given), as the admin API answers
/// them. Counts not yet flushed are not included (at most [`FLUSH_INTERVAL`] old; see
/// [`crate::Gateway::stats`] for a query that flushes first).
pub async fn query(
    store: &dyn StatsStore,
    from: Day,
    to: Day,
    service: Option<&str>,
) -> Result<StatsReport, StoreError> {
    let rows = store.daily_stats(from, to, service).await?;
    let mut total = StatCounts::default();
    let days = rows
        .into_iter()
        .filter(|r| !r.counts.is_zero())
        .map(|r| {
            total = total.plus(&r.counts);
            DayReport {
                day: r.day.to_string(),
                service: r.service,
                counts: r.counts.into(),
            }
        })
        .collect();
    Ok(StatsReport {
        from: from.to_string(),
        to: to.to_string(),
        days,
        totals: total.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_has_exactly_the_contract_keys() {
        let counts = StatCounts {
            earned_msat: 3_999,
            challenges: 5,
            payments: 3,
            calls_served: 10,
            calls_refunded: 1,
            free_calls: 2,
            rate_limited: 0,
        };
        let report = StatsReport {
            from: "2026-11-03".into(),
            to: "2026-12-02".into(),
            days: vec![DayReport {
                day: "2026-12-02".into(),
                service: "weather".into(),
                counts: counts.into(),
            }],
            totals: counts.into(),
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "from": "2026-11-03", "to": "2026-12-02",
                "days": [{"day": "2026-12-02", "service": "weather", "earned_msat": 3999,
                    "earned_sats": 3, "challenges": 5, "payments": 3, "calls_served": 10,
                    "calls_refunded": 1, "free_calls": 2, "rate_limited": 0}],
                "totals": {"earned_msat": 3999, "earned_sats": 3, "challenges": 5,
                    "payments": 3, "calls_served": 10, "calls_refunded": 1, "free_calls": 2,
                    "rate_limited": 0}
            })
        );
    }

    #[test]
    fn a_report_narrowed_to_some_services_adds_up_only_theirs() {
        let row = |service: &str, earned_msat: u64, calls_served: u64| DayReport {
            day: "2026-12-02".into(),
            service: service.into(),
            counts: StatCounts {
                earned_msat,
                calls_served,
                ..StatCounts::default()
            }
            .into(),
        };
        let report = StatsReport {
            from: "2026-12-01".into(),
            to: "2026-12-02".into(),
            days: vec![row("a", 1500, 1), row("b", 7000, 3), row("a.r", 600, 2)],
            totals: StatCounts::default().into(),
        };
        let mine = report.retain_services(|s| s == "a" || s == "a.r");
        assert_eq!(mine.days.len(), 2);
        assert_eq!(mine.from, "2026-12-01");
        assert_eq!(
            (
                mine.totals.earned_msat,
                mine.totals.earned_sats,
                mine.totals.calls_served
            ),
            (2100, 2, 3)
        );
    }

    #[test]
    fn the_default_range_is_thirty_days_ending_today() {
        let (from, to) = default_range(1_796_169_600); // 2026-12-02
        assert_eq!(
            (from.to_string(), to.to_string()),
            ("2026-11-03".into(), "2026-12-02".into())
        );
    }
}
