//! Adds what each service's traffic counted since the last successful flush to the store's
//! hourly buckets (one transaction; the counts added are remembered only once committed, so a
//! failed flush is retried whole and nothing is added twice), prunes old buckets, and reads
//! the last 24 hours back into the board.

use std::collections::HashMap;
use std::sync::Arc;

use turnpike_store::{AdminStore, HealthCounts, HealthDelta, HealthSummary, StoreError};

use super::board::ServiceHealth;
use super::{FLUSH_INTERVAL, KEEP_HOURS, WINDOW_HOURS};
use crate::control::Control;
use crate::metrics::Metrics;

/// On a hub with a store: every [`FLUSH_INTERVAL`], adds the traffic counted and reads the
/// board back; every `[hub] probe_interval_secs`, probes the providers' upstreams
/// ([`super::probe`]).
pub fn spawn(control: Arc<Control>, metrics: Arc<Metrics>) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(hub) = control.hub() else {
        return Vec::new();
    };
    let mut tasks = Vec::new();
    if let Some(every) = hub.settings.probe_interval {
        tasks.push(super::probe::spawn(control.clone(), every));
    }
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = run_once(&control, &metrics, crate::unix_now()).await {
                tracing::warn!(error = %e, "cannot add or read service health; will retry");
            }
        }
    }));
    tasks
}

/// One flush and read-back at `now` (nothing on a gateway that is not a hub or has no store).
pub async fn run_once(control: &Control, metrics: &Metrics, now: u64) -> Result<(), StoreError> {
    let (Some(hub), Some(store)) = (control.hub(), control.store()) else {
        return Ok(());
    };
    add_traffic(control, metrics, &**store, now).await?;
    let hour = now / 3600;
    store.prune_health(hour.saturating_sub(KEEP_HOURS)).await?;
    let rows = store
        .health_since(hour.saturating_sub(WINDOW_HOURS - 1))
        .await?;
    hub.health.board.replace(board(rows, now));
    Ok(())
}

/// Adds the traffic counted since the last flush to the hour of `now`, each service's under
/// its [`crate::service::Service::health_key`] (nothing on a gateway that is not a hub).
pub async fn add_traffic(
    control: &Control,
    metrics: &Metrics,
    store: &dyn AdminStore,
    now: u64,
) -> Result<(), StoreError> {
    let Some(hub) = control.hub() else {
        return Ok(());
    };
    let keys: HashMap<String, String> = control
        .table()
        .load()
        .services()
        .iter()
        .map(|s| (s.name.clone(), s.health_key()))
        .collect();
    let mut flushed = hub.health.flushed.lock().await;
    let current: HashMap<String, _> = metrics
        .services()
        .iter()
        .map(|s| (s.name().to_owned(), s.traffic.counts()))
        .collect();
    let deltas: Vec<HealthDelta> = current
        .iter()
        .filter_map(|(name, counts)| {
            let d = match flushed.get(name) {
                Some(before) => counts.minus(before),
                None => counts.clone(),
            };
            (!d.is_zero()).then(|| HealthDelta {
                hour: now / 3600,
                service: keys.get(name).unwrap_or(name).clone(),
                counts: HealthCounts {
                    forwarded: d.forwarded,
                    ok: d.ok,
                    latency: d.latency_buckets(),
                    ..HealthCounts::default()
                },
            })
        })
        .collect();
    if deltas.is_empty() {
        return Ok(());
    }
    store.add_health(&deltas, &[]).await?;
    flushed.extend(current);
    Ok(())
}

/// The board of the rows read back at `now`. A last probe older than the window the figures
/// cover is not shown (`status` "unknown", as `uptime_pct` is null then): probes may have been
/// turned off, or the service may no longer be probed, and an old "up" is no news.
fn board(rows: Vec<HealthSummary>, now: u64) -> HashMap<String, ServiceHealth> {
    let since = (now / 3600).saturating_sub(WINDOW_HOURS - 1) * 3600;
    rows.into_iter()
        .map(|r| {
            let c = r.counts;
            let h = ServiceHealth {
                probes: c.probes,
                probes_up: c.probes_up,
                forwarded: c.forwarded,
                ok: c.ok,
                median_latency_ms: crate::traffic::median_ms(&c.latency),
                last_probe: r.last_probe.filter(|(_, at)| *at >= since),
            };
            (r.service, h)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(last_probe: Option<(bool, u64)>) -> HealthSummary {
        HealthSummary {
            service: "alice/quote".into(),
            last_probe,
            ..HealthSummary::default()
        }
    }

    #[test]
    fn a_probe_older_than_the_window_is_no_status() {
        let now = 100 * 3600 + 1800;
        let since = (100 - (WINDOW_HOURS - 1)) * 3600;
        let status = |at: u64| board(vec![row(Some((true, at)))], now)["alice/quote"].to_json();
        assert_eq!(status(now)["status"], "up");
        assert_eq!(status(since)["status"], "up");
        let stale = status(since - 1);
        assert_eq!(
            (&stale["status"], &stale["checked_at"]),
            (&serde_json::json!("unknown"), &serde_json::Value::Null)
        );
        assert_eq!(board(vec![row(None)], now)["alice/quote"].last_probe, None);
    }
}
