//! The service table: an immutable snapshot of the services, matched in order (first match
//! wins), and the [`ServiceTable`] that swaps in a new snapshot at runtime without a lock on the
//! request path. A request keeps the service it matched until it ends, so a swap never changes a
//! request in flight.

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{ConfigError, ServiceConfig};
use crate::metrics::Metrics;
use crate::service::{Service, ServiceRoutes};

/// One snapshot of the services, in matching order.
#[derive(Debug, Default)]
pub struct Router {
    services: Vec<Arc<Service>>,
}

impl Router {
    /// A table of services, matched in this order.
    pub fn new(services: Vec<Service>) -> Router {
        Router {
            services: services.into_iter().map(Arc::new).collect(),
        }
    }

    /// Parses `[[services]]` tables (each one's routes before it). Errors name the key, as
    /// `services[1].routes[0].path`; names must be unique across services and routes.
    pub fn from_configs(configs: &[ServiceConfig]) -> Result<Router, ConfigError> {
        Router::parse(configs, None, None, None)
    }

    /// Like [`Router::from_configs`], for a gateway with an `[x402]` section.
    pub fn from_configs_with(
        configs: &[ServiceConfig],
        x402: Option<&crate::x402::settings::X402Settings>,
    ) -> Result<Router, ConfigError> {
        Router::parse(configs, None, x402, None)
    }

    fn parse(
        configs: &[ServiceConfig],
        metrics: Option<&Metrics>,
        x402: Option<&crate::x402::settings::X402Settings>,
        hub: Option<&crate::hub::Hub>,
    ) -> Result<Router, ConfigError> {
        let mut all = Vec::new();
        let mut names = HashSet::new();
        for (i, c) in configs.iter().enumerate() {
            let within = format!("services[{i}]");
            let ServiceRoutes(routes) =
                ServiceRoutes::parse(c, x402).map_err(|e| e.within(&within))?;
            let own = routes.len() - 1;
            for (j, s) in routes.iter().enumerate() {
                if !names.insert(s.name.clone()) {
                    let key = match j == own {
                        true => format!("{within}.name"),
                        false => format!("{within}.routes[{j}].name"),
                    };
                    return Err(ConfigError::Invalid {
                        key,
                        message: format!("duplicate service or route name {:?}", s.name),
                    });
                }
            }
            match &c.provider {
                None => all.extend(routes),
                Some(slug) => all.extend(provider_routes(routes, slug, hub, c, &within)?),
            }
        }
        // A name already counted keeps its counters; a new one is registered only when the
        // table is put in force ([`ServiceTable::install`]), so a refused change leaves none.
        if let Some(metrics) = metrics {
            for s in &mut all {
                if let Some(kept) = metrics.existing(&s.name) {
                    s.metrics = kept;
                }
            }
        }
        Ok(Router::new(all))
    }

    /// The first service matching the method, host (without port) and path.
    pub fn route(
        &self,
        method: &http::Method,
        host: Option<&str>,
        path: &str,
    ) -> Option<&Arc<Service>> {
        self.services.iter().find(|s| s.matches(method, host, path))
    }

    /// All services, in matching order.
    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }
}

/// A hub provider's service and routes, each reachable by the provider's host and path prefix.
fn provider_routes(
    routes: Vec<Service>,
    slug: &str,
    hub: Option<&crate::hub::Hub>,
    c: &ServiceConfig,
    within: &str,
) -> Result<Vec<Service>, ConfigError> {
    // A provider that went away (or was suspended, or a gateway no longer a hub): its services
    // are off, not an error, so one provider cannot block every other change. Writes are
    // checked for an active provider by the admin API.
    let Some((hub, provider)) = hub.and_then(|h| Some((h, h.provider(slug)?))) else {
        tracing::warn!(service = %c.name, provider = %slug, "no such provider: service off");
        return Ok(Vec::new());
    };
    if !provider.is_served() {
        return Ok(Vec::new());
    }
    hub.check_service(c).map_err(|e| e.within(within))?;
    let payee = provider.payee.clone();
    let host = hub.settings.host_of(slug);
    Ok(routes
        .into_iter()
        .flat_map(|s| s.for_provider(host.clone(), slug, &payee))
        .collect())
}

/// The services in force, replaceable at runtime (SIGHUP, and later the admin API). Reading is
/// lock-free; a replacement is atomic.
#[derive(Debug)]
pub struct ServiceTable {
    current: ArcSwap<Router>,
    metrics: Arc<Metrics>,
    x402: Option<Arc<crate::x402::settings::X402Settings>>,
    hub: Option<Arc<crate::hub::Hub>>,
}

impl ServiceTable {
    /// A table starting with `router`, its services' counters in a registry of their own.
    pub fn new(router: Router) -> ServiceTable {
        ServiceTable::with(router, Arc::new(Metrics::new()), None)
    }

    /// A table starting with `router`, whose services (and every replacement's) count in
    /// `metrics`, replacements parsed with the gateway's `[x402]` section.
    pub fn with(
        router: Router,
        metrics: Arc<Metrics>,
        x402: Option<Arc<crate::x402::settings::X402Settings>>,
    ) -> ServiceTable {
        for s in router.services() {
            metrics.adopt(&s.metrics);
        }
        ServiceTable {
            current: ArcSwap::from_pointee(router),
            metrics,
            x402,
            hub: None,
        }
    }

    /// This table, its replacements parsed with the gateway's hub (providers' services).
    pub fn with_hub(mut self, hub: Option<Arc<crate::hub::Hub>>) -> ServiceTable {
        self.hub = hub;
        self
    }

    /// The gateway's hub, if it is one.
    pub fn hub(&self) -> Option<&Arc<crate::hub::Hub>> {
        self.hub.as_ref()
    }

    /// The registry its services count in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The snapshot in force now.
    pub fn load(&self) -> arc_swap::Guard<Arc<Router>> {
        self.current.load()
    }

    /// Replaces every service with those of `configs`, if they are all valid; otherwise the
    /// table is unchanged and the error names the key at fault.
    pub fn replace(&self, configs: &[ServiceConfig]) -> Result<(), ConfigError> {
        let router = self.parse(configs)?;
        self.install(router);
        Ok(())
    }

    /// Parses `configs` as this table's replacements are: counting in its registry (counters
    /// kept by name), with its `[x402]` section. Nothing is put in force.
    pub fn parse(&self, configs: &[ServiceConfig]) -> Result<Router, ConfigError> {
        Router::parse(
            configs,
            Some(&self.metrics),
            self.x402.as_deref(),
            self.hub.as_deref(),
        )
    }

    /// Puts `router` in force; its services' counters join the registry.
    pub fn install(&self, router: Router) {
        for s in router.services() {
            self.metrics.adopt(&s.metrics);
        }
        self.current.store(Arc::new(router));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, host: Option<&str>, path: Option<&str>) -> ServiceConfig {
        ServiceConfig {
            host: host.map(Into::into),
            path: path.map(Into::into),
            ..ServiceConfig::new(name, "http://127.0.0.1:1", 1)
        }
    }

    #[test]
    fn first_match_wins_and_prefixes_respect_segments() {
        let r = Router::from_configs(&[
            svc("a", Some("api.example.com"), Some("/v1")),
            svc("b", Some("*.example.com"), None),
            svc("c", None, Some("/free/")),
        ])
        .unwrap();
        let get = http::Method::GET;
        let name = |h: Option<&str>, p: &str| r.route(&get, h, p).map(|s| s.name.clone());
        assert_eq!(name(Some("API.example.com"), "/v1/x").as_deref(), Some("a"));
        assert_eq!(name(Some("api.example.com"), "/v1").as_deref(), Some("a"));
        assert_eq!(name(Some("api.example.com"), "/v1x").as_deref(), Some("b"));
        assert_eq!(name(Some("example.com"), "/free/x").as_deref(), Some("c"));
        assert_eq!(name(None, "/free").as_deref(), Some("c"));
        assert_eq!(name(None, "/other"), None);
    }

    #[test]
    fn duplicate_names_and_bad_keys_are_named_with_their_index() {
        let e = Router::from_configs(&[svc("a", None, None), svc("a", None, None)]).unwrap_err();
        assert!(e.to_string().contains("services[1].name"), "{e}");
        let e =
            Router::from_configs(&[svc("a", None, None), svc("b", None, Some("x"))]).unwrap_err();
        assert!(e.to_string().contains("services[1].path"), "{e}");
    }

    #[test]
    fn a_replacement_is_all_or_nothing() {
        let table = ServiceTable::new(Router::from_configs(&[svc("a", None, None)]).unwrap());
        let before = table.load_full_for_test();
        assert!(table.replace(&[svc("b", None, Some("bad"))]).is_err());
        assert_eq!(table.load().services()[0].name, "a");
        table
            .replace(&[svc("b", None, None), svc("c", None, None)])
            .unwrap();
        assert_eq!(table.load().services().len(), 2);
        // A snapshot taken before the swap is unchanged.
        assert_eq!(before.services()[0].name, "a");
    }

    #[test]
    fn counters_survive_a_replacement_by_name() {
        let metrics = Arc::new(Metrics::new());
        let router = Router::from_configs(&[svc("a", None, None)]).unwrap();
        let table = ServiceTable::with(router, metrics.clone(), None);
        table.load().services()[0].metrics.calls_served.add(3);
        table
            .replace(&[svc("b", None, None), svc("a", None, Some("/x"))])
            .unwrap();
        let snapshot = table.load();
        let a = snapshot.services().iter().find(|s| s.name == "a").unwrap();
        assert_eq!(a.metrics.calls_served.get(), 3);
        // A removed service keeps its counts in the registry (a counter never goes back).
        table.replace(&[svc("b", None, None)]).unwrap();
        let names: Vec<String> = metrics
            .services()
            .iter()
            .map(|m| m.name().to_owned())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(metrics.service("a").calls_served.get(), 3);
        // A change refused, or parsed and never put in force, registers no counters.
        assert!(
            table
                .replace(&[svc("z", None, None), svc("z", None, None)])
                .is_err()
        );
        table.parse(&[svc("y", None, None)]).unwrap();
        assert_eq!(metrics.services().len(), 2);
        // A table built without a registry still renders its services' counters.
        let plain = ServiceTable::new(Router::from_configs(&[svc("c", None, None)]).unwrap());
        assert_eq!(plain.metrics().services()[0].name(), "c");
    }

    fn hub_with(slug: &str, status: &str) -> crate::hub::Hub {
        let c: crate::config::HubConfig = toml::from_str("domain = \"hub.example\"").unwrap();
        let hub = crate::hub::Hub::new(crate::hub::HubSettings::parse(&c).unwrap());
        hub.load(vec![turnpike_store::ProviderRecord {
            slug: slug.into(),
            name: "A".into(),
            contact: "a@x.example".into(),
            payout: r#"{"kind":"lightning_address","address":"a@x.example"}"#.into(),
            token_hash: [1; 32],
            status: status.into(),
            created_at: 0,
            trial_ends_at: 0,
        }]);
        hub
    }

    fn provider_svc(name: &str, path: Option<&str>) -> ServiceConfig {
        ServiceConfig {
            provider: Some("alice".into()),
            ..svc(name, None, path)
        }
    }

    #[test]
    fn a_providers_service_answers_at_its_host_and_under_its_prefix() {
        let hub = hub_with("alice", "active");
        let r =
            Router::parse(&[provider_svc("q", Some("/quote"))], None, None, Some(&hub)).unwrap();
        let get = http::Method::GET;
        let found = |h: Option<&str>, p: &str| {
            r.route(&get, h, p)
                .map(|s| (s.name.clone(), s.strip_first_segment, s.payee.is_some()))
        };
        assert_eq!(
            found(Some("alice.hub.example"), "/quote/x"),
            Some(("q".into(), false, true))
        );
        assert_eq!(
            found(Some("other.example"), "/alice/quote"),
            Some(("q".into(), true, true))
        );
        assert_eq!(found(Some("bob.hub.example"), "/quote"), None);
        assert_eq!(found(None, "/quote"), None);
        assert_eq!(found(None, "/alicequote"), None);
    }

    #[test]
    fn a_providers_service_is_off_without_its_provider_and_checked_with_it() {
        let active = hub_with("alice", "active");
        let gone = hub_with("bob", "active");
        let closed = hub_with("alice", "closed");
        for hub in [None, Some(&gone), Some(&closed)] {
            let r = Router::parse(&[provider_svc("q", None)], None, None, hub).unwrap();
            assert!(r.services().is_empty());
        }
        let mut bad = provider_svc("q", None);
        bad.host = Some("evil.example".into());
        let e = Router::parse(&[svc("a", None, None), bad], None, None, Some(&active)).unwrap_err();
        assert!(e.to_string().contains("services[1].host"), "{e}");
    }

    impl ServiceTable {
        fn load_full_for_test(&self) -> Arc<Router> {
            self.current.load_full()
        }
    }
}
