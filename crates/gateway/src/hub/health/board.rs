//! The health of every service as the directory shows it: a snapshot read from the store (so
//! every replica shows the same numbers), swapped in whole, read without a lock.

use std::collections::HashMap;

use arc_swap::ArcSwap;
use serde_json::{Value, json};

/// What the store holds about one service over the last 24 hours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceHealth {
    /// Probes sent.
    pub probes: u64,
    /// Probes answered below 500 in time.
    pub probes_up: u64,
    /// Calls forwarded to the upstream.
    pub forwarded: u64,
    /// Of them, answered below 500.
    pub ok: u64,
    /// Median upstream latency of the forwarded calls, in milliseconds.
    pub median_latency_ms: Option<u64>,
    /// The last probe: whether it was up, and when (unix seconds).
    pub last_probe: Option<(bool, u64)>,
}

impl ServiceHealth {
    /// The `health` object of a directory entry.
    pub fn to_json(&self) -> Value {
        let status = match self.last_probe {
            Some((true, _)) => "up",
            Some((false, _)) => "down",
            None => "unknown",
        };
        // A part is never more than its whole: counters are read one by one while calls go
        // on, so a flush can hold a call's `ok` before its `forwarded`.
        let ratio = |n: u64, d: u64| (d > 0).then(|| n.min(d) as f64 / d as f64);
        json!({
            "status": status,
            "uptime_pct": ratio(self.probes_up, self.probes).map(|r| (r * 1000.0).round() / 10.0),
            "success_rate": ratio(self.ok, self.forwarded).map(|r| (r * 10_000.0).round() / 10_000.0),
            "median_latency_ms": self.median_latency_ms,
            "calls_24h": self.forwarded,
            "checked_at": self.last_probe.map(|(_, at)| rfc3339(at)),
        })
    }
}

/// `2026-12-02T10:00:00Z` for unix seconds.
pub fn rfc3339(unix: u64) -> String {
    let (y, m, d) = turnpike_store::Day::from_unix(unix).ymd();
    let secs = unix % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A hub's health state: the board the directory reads, and what the flush already added.
#[derive(Debug, Default)]
pub struct Health {
    /// As last read from the store.
    pub board: HealthBoard,
    /// Each service's traffic counts as last added to the store (flushes are serialised).
    pub(crate) flushed: tokio::sync::Mutex<HashMap<String, crate::traffic::TrafficCounts>>,
}

/// The health of every service, by service name, as last read from the store.
#[derive(Debug, Default)]
pub struct HealthBoard {
    current: ArcSwap<HashMap<String, ServiceHealth>>,
}

impl HealthBoard {
    /// The health of `service` (nothing known: the default).
    pub fn get(&self, service: &str) -> ServiceHealth {
        self.current
            .load()
            .get(service)
            .cloned()
            .unwrap_or_default()
    }

    /// Puts a new snapshot in force.
    pub fn replace(&self, by_service: HashMap<String, ServiceHealth>) {
        self.current.store(std::sync::Arc::new(by_service));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_known_is_unknown_and_null() {
        assert_eq!(
            ServiceHealth::default().to_json(),
            json!({"status": "unknown", "uptime_pct": null, "success_rate": null,
                "median_latency_ms": null, "calls_24h": 0, "checked_at": null})
        );
    }

    #[test]
    fn a_rate_is_never_above_one() {
        let h = ServiceHealth {
            probes: 1,
            probes_up: 2,
            forwarded: 1,
            ok: 2,
            ..ServiceHealth::default()
        };
        let v = h.to_json();
        assert_eq!(
            (&v["success_rate"], &v["uptime_pct"]),
            (&json!(1.0), &json!(100.0))
        );
    }

    #[test]
    fn ratios_and_times_are_exact() {
        let h = ServiceHealth {
            probes: 200,
            probes_up: 199,
            forwarded: 4,
            ok: 3,
            median_latency_ms: Some(12),
            last_probe: Some((false, 1_796_205_600)),
        };
        assert_eq!(
            h.to_json(),
            json!({"status": "down", "uptime_pct": 99.5, "success_rate": 0.75,
                "median_latency_ms": 12, "calls_24h": 4, "checked_at": "2026-12-02T10:00:00Z"})
        );
    }
}
