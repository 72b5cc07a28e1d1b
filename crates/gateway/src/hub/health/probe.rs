//! The periodic probe of providers' upstreams: each round sends one `GET` to every distinct
//! upstream base URL of the listed services (at most [`CONCURRENCY`] at once, each bounded to
//! [`PROBE_TIMEOUT`]; the next round starts only once this one is over, so probes never pile
//! up), through the SSRF guard unless `[hub] allow_private_upstreams`. Up means any HTTP
//! answer below 500 in time. The round's outcomes are added to the store in one transaction.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use turnpike_store::{HealthCounts, HealthDelta, ProbeOutcome, StoreError};

use crate::control::Control;
use crate::service::UpstreamUrl;

/// Longest wait for a probe's answer head.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most probes in flight at once (per replica).
pub const CONCURRENCY: usize = 8;

/// The URL a probe asks: the upstream's base URL.
pub fn probe_url(u: &UpstreamUrl) -> String {
    let path = if u.base_path.is_empty() {
        "/"
    } else {
        &u.base_path
    };
    format!("{}://{}{path}", u.scheme, u.authority)
}

/// The HTTP clients probes go through.
#[derive(Debug, Clone)]
pub struct Prober {
    client: reqwest::Client,
    guarded: bool,
}

impl Prober {
    /// A prober; `guarded`: public addresses only (checked before sending and again when
    /// connecting). Redirects are not followed (a redirect is an answer below 500). Never
    /// through a proxy of the environment (`HTTP_PROXY`…): it would resolve the name again,
    /// past the guard, and the probe would measure it rather than the way calls go.
    pub fn new(guarded: bool) -> Result<Prober, reqwest::Error> {
        turnpike_lightning::ensure_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROBE_TIMEOUT)
            .connect_timeout(PROBE_TIMEOUT)
            .user_agent("turnpike-hub-probe");
        if guarded {
            builder = turnpike_lightning::net_guard::public_only(builder);
        }
        Ok(Prober {
            client: builder.build()?,
            guarded,
        })
    }

    /// Whether `url` answers below 500 within [`PROBE_TIMEOUT`].
    pub async fn is_up(&self, url: &str) -> bool {
        let Ok(parsed) = reqwest::Url::parse(url) else {
            return false;
        };
        if self.guarded
            && let Err(why) = turnpike_lightning::net_guard::check_public_url(&parsed, true).await
        {
            tracing::debug!(%why, "probe refused by the SSRF guard: down");
            return false;
        }
        match self.client.get(parsed).send().await {
            Ok(resp) => !resp.status().is_server_error(),
            Err(e) => {
                tracing::debug!(error = %e, "probe failed: down");
                false
            }
        }
    }
}

/// The services of each distinct upstream URL among the listed ones.
fn targets(control: &Control) -> BTreeMap<String, Vec<String>> {
    let mut by_url: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Some(hub) = control.hub() else {
        return by_url;
    };
    let router = control.table().load();
    for l in crate::hub::directory::listed(&router, hub) {
        let names = by_url.entry(probe_url(&l.service.upstream)).or_default();
        let key = l.service.health_key();
        if !names.contains(&key) {
            names.push(key);
        }
    }
    by_url
}

/// One round at `now`: probes every target, adds the outcomes to the store; how many
/// upstreams were probed.
pub async fn run_once(control: &Control, prober: &Prober, now: u64) -> Result<usize, StoreError> {
    let Some(store) = control.store() else {
        return Ok(0);
    };
    let targets = targets(control);
    let probed = targets.len();
    let results: Vec<(Vec<String>, bool)> = futures_util::stream::iter(targets)
        .map(|(url, names)| async move { (names, prober.is_up(&url).await) })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut deltas = Vec::new();
    let mut outcomes = Vec::new();
    for (names, up) in results {
        for service in names {
            deltas.push(HealthDelta {
                hour: now / 3600,
                service: service.clone(),
                counts: HealthCounts {
                    probes: 1,
                    probes_up: u64::from(up),
                    ..HealthCounts::default()
                },
            });
            outcomes.push(ProbeOutcome {
                service,
                up,
                at: now,
            });
        }
    }
    store.add_health(&deltas, &outcomes).await?;
    Ok(probed)
}

/// Probes every `every` (the first round at once), one round at a time.
pub fn spawn(control: Arc<Control>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let guarded = control
            .hub()
            .is_some_and(|h| !h.settings.allow_private_upstreams);
        let prober = match Prober::new(guarded) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the health prober: no probes");
                return;
            }
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = run_once(&control, &prober, crate::unix_now()).await {
                tracing::warn!(error = %e, "cannot record health probes; next round will");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_asks_the_base_url() {
        let u = |s: &str| probe_url(&UpstreamUrl::parse(s).unwrap());
        assert_eq!(u("http://127.0.0.1:9000"), "http://127.0.0.1:9000/");
        assert_eq!(
            u("https://api.example.com/v1/"),
            "https://api.example.com/v1"
        );
    }

    #[tokio::test]
    async fn a_guarded_probe_never_reaches_an_internal_address() {
        // A listener on loopback that would answer 200: the guard refuses it before sending.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(2), listener.accept())
                .await
                .is_ok()
        });
        let guarded = Prober::new(true).unwrap();
        assert!(!guarded.is_up(&format!("http://{addr}/")).await);
        assert!(
            !guarded
                .is_up(&format!("http://localhost:{}/", addr.port()))
                .await
        );
        assert!(!accepted.await.unwrap(), "the guarded probe connected");
    }
}
