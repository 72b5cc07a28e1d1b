//! Matching a request to a configured service (first match in config order wins).

use std::sync::Arc;

use crate::config::{ServiceConfig, UpstreamUrl};
use turnpike_l402::Msat;

/// A priced route ready to serve: a service, or one of its routes, pre-parsed.
#[derive(Debug)]
pub struct Service {
    /// Name used in caveats (`<service>` or `<service>.<route>`).
    pub name: String,
    host: Option<HostMatch>,
    path: Option<String>,
    method: Option<http::Method>,
    /// Upstream to forward to.
    pub upstream: UpstreamUrl,
    /// Price of one payment (zero: free).
    pub price: Msat,
    /// Price in satoshis, as configured.
    pub price_sats: u64,
    /// Calls one payment buys; `None` for a time pass (unlimited calls until it expires).
    pub calls: Option<u64>,
    /// Seconds from issue until the token expires, if it does.
    pub lifetime_secs: Option<u64>,
    /// Whether an upstream 5xx gives the call back.
    pub refund_on_5xx: bool,
    /// Time allowed for upstream response headers.
    pub upstream_timeout: std::time::Duration,
    /// Free calls per client per window, if any.
    pub free_tier: Option<crate::config::FreeTierConfig>,
    /// The dynamic pricer, if any.
    pub pricer: Option<crate::pricer::PricerConfig>,
    /// Paths holding `%2F`, `%5C` or `\` are passed on rather than refused.
    pub allow_encoded_slashes: bool,
}

#[derive(Debug, Clone)]
enum HostMatch {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Suffix(String),
}

impl Service {
    /// Builds the routes of a validated service config: its own routes first, then itself.
    pub fn all_from_config(c: &ServiceConfig) -> Result<Vec<Service>, String> {
        let host = c.host.as_ref().map(|h| {
            let h =
                crate::edge::host::normalize_pattern(h).unwrap_or_else(|_| h.to_ascii_lowercase());
            match h.strip_prefix('*') {
                Some(suffix) => HostMatch::Suffix(suffix.to_owned()),
                None => HostMatch::Exact(h),
            }
        });
        let upstream = UpstreamUrl::parse(&c.upstream)?;
        let timeout = std::time::Duration::from_secs(c.upstream_timeout_secs);
        let mut out = Vec::with_capacity(c.routes.len() + 1);
        for r in &c.routes {
            let method = r
                .method
                .as_ref()
                .map(|m| http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()))
                .transpose()
                .map_err(|e| e.to_string())?;
            out.push(Service {
                name: format!("{}.{}", c.name, r.name),
                host: host.clone(),
                path: Some(r.path.trim_end_matches('/').to_owned()),
                method,
                upstream: upstream.clone(),
                price: Msat(r.price_sats.saturating_mul(1000)),
                price_sats: r.price_sats,
                calls: calls(r.calls_per_payment, r.time_pass_secs),
                lifetime_secs: r.time_pass_secs.or(r.token_lifetime_secs),
                refund_on_5xx: c.refund_on_5xx,
                upstream_timeout: timeout,
                free_tier: None,
                pricer: None,
                allow_encoded_slashes: c.allow_encoded_slashes,
            });
        }
        out.push(Service {
            name: c.name.clone(),
            host,
            path: c.path.as_ref().map(|p| p.trim_end_matches('/').to_owned()),
            method: None,
            upstream,
            price: Msat(c.price_sats.saturating_mul(1000)),
            price_sats: c.price_sats,
            calls: calls(c.calls_per_payment, c.time_pass_secs),
            lifetime_secs: c.time_pass_secs.or(c.token_lifetime_secs),
            refund_on_5xx: c.refund_on_5xx,
            upstream_timeout: timeout,
            free_tier: c.free_tier,
            pricer: c.pricer.clone(),
            allow_encoded_slashes: c.allow_encoded_slashes,
        });
        Ok(out)
    }

    /// How one payment is described to people: "1 call", "3 calls", "unlimited calls for 1 h".
    pub fn grant_text(&self) -> String {
        match (self.calls, self.lifetime_secs) {
            (Some(1), _) => "1 call".to_owned(),
            (Some(n), _) => format!("{n} calls"),
            (None, Some(secs)) => format!("unlimited calls for {}", human_duration(secs)),
            (None, None) => "unlimited calls".to_owned(),
        }
    }

    /// Whether this service is free (no payment asked).
    pub fn is_free(&self) -> bool {
        self.price == Msat::ZERO
    }

    fn matches(&self, method: &http::Method, host: Option<&str>, path: &str) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        if let Some(m) = &self.host {
            let Some(host) = host else { return false };
            let ok = match m {
                HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
                HostMatch::Suffix(s) => {
                    host.len() > s.len() && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
                }
            };
            if !ok {
                return false;
            }
        }
        match &self.path {
            None => true,
            Some(prefix) => path_has_prefix(path, prefix),
        }
    }
}

/// The service table.
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

    /// Builds the table from validated service configs, routes before their service.
    pub fn from_configs(configs: &[ServiceConfig]) -> Result<Router, String> {
        let mut all = Vec::new();
        for c in configs {
            all.extend(Service::all_from_config(c)?);
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

    /// All services.
    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }
}

/// Whether `path` (canonical, without segment parameters) is `prefix` or below it. Letters
/// compare case-insensitively, and `.` ends a segment as `/` does, so an upstream that routes
/// case-insensitively (Express, ASP.NET) or takes a format suffix (`/paid.json`) or a trailing
/// dot as the same resource is never reached through a spelling that misses its price.
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path.len() >= prefix.len()
        && path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/' | b'.'))
}

fn calls(calls_per_payment: Option<u64>, time_pass_secs: Option<u64>) -> Option<u64> {
    match time_pass_secs {
        Some(_) => calls_per_payment,
        None => Some(calls_per_payment.unwrap_or(1)),
    }
}

fn human_duration(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{} d", s / 86_400),
        s if s % 3_600 == 0 => format!("{} h", s / 3_600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// The host a request is for, without port, from its `Host` field (which the edge has
/// normalised: lower case, no trailing dot, the absolute target's authority when there was one).
pub fn request_host<B>(req: &http::Request<B>) -> Option<&str> {
    let raw = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())?;
    // Strip a port, keeping IPv6 literals intact.
    if raw.starts_with('[') {
        return raw.split_once(']').map(|(h, _)| &h[1..]);
    }
    Some(raw.rsplit_once(':').map_or(raw, |(h, _)| h))
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
    fn routes_match_before_their_service_and_carry_their_own_pricing() {
        let mut c = svc("llm", None, Some("/v1"));
        c.routes = vec![
            crate::config::RouteConfig {
                name: "big".into(),
                path: "/v1/big".into(),
                method: Some("post".into()),
                price_sats: 50,
                calls_per_payment: None,
                time_pass_secs: None,
                token_lifetime_secs: None,
            },
            crate::config::RouteConfig {
                name: "pass".into(),
                path: "/v1/pass".into(),
                method: None,
                price_sats: 500,
                calls_per_payment: None,
                time_pass_secs: Some(3600),
                token_lifetime_secs: None,
            },
        ];
        let r = Router::from_configs(&[c]).unwrap();
        let post = http::Method::POST;
        let get = http::Method::GET;
        let big = r.route(&post, None, "/v1/big/x").unwrap();
        assert_eq!(
            (big.name.as_str(), big.price_sats, big.calls),
            ("llm.big", 50, Some(1))
        );
        // The method restriction: a GET to /v1/big is the service's own price.
        assert_eq!(r.route(&get, None, "/v1/big").unwrap().name, "llm");
        let pass = r.route(&get, None, "/v1/pass").unwrap();
        assert_eq!((pass.calls, pass.lifetime_secs), (None, Some(3600)));
        assert_eq!(pass.grant_text(), "unlimited calls for 1 h");
        assert_eq!(big.grant_text(), "1 call");
    }

    #[test]
    fn host_is_taken_without_port() {
        let req = http::Request::builder()
            .uri("/x")
            .header("host", "Example.com:8080")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req), Some("Example.com"));
        let req = http::Request::builder()
            .uri("/x")
            .header("host", "[::1]:8080")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req), Some("::1"));
    }

    #[test]
    fn prefixes_end_at_slash_or_dot_and_ignore_case() {
        assert!(path_has_prefix("/secret", "/secret"));
        assert!(path_has_prefix("/secret/", "/secret/"));
        assert!(path_has_prefix("/SECRET/x", "/secret"));
        assert!(path_has_prefix("/secret.json", "/secret"));
        assert!(path_has_prefix("/secret.", "/secret"));
        assert!(path_has_prefix("/anything", "/"));
        assert!(path_has_prefix("/anything", ""));
        assert!(!path_has_prefix("/secretx", "/secret"));
        assert!(!path_has_prefix("/secret-v2", "/secret"));
        assert!(!path_has_prefix("/secre", "/secret"));
    }
}
