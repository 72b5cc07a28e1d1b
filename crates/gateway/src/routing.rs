//! Matching a request to a configured service (first match in config order wins).

use std::sync::Arc;

use crate::config::{ServiceConfig, UpstreamUrl};
use turnpike_l402::Msat;

/// A service ready to serve: its config, pre-parsed.
#[derive(Debug)]
pub struct Service {
    /// Name used in caveats.
    pub name: String,
    host: Option<HostMatch>,
    path: Option<String>,
    /// Upstream to forward to.
    pub upstream: UpstreamUrl,
    /// Price of one payment (zero: free).
    pub price: Msat,
    /// Price in satoshis, as configured.
    pub price_sats: u64,
    /// Calls one payment buys.
    pub calls_per_payment: u64,
    /// Token lifetime in seconds, if tokens expire.
    pub token_lifetime_secs: Option<u64>,
    /// Time allowed for upstream response headers.
    pub upstream_timeout: std::time::Duration,
}

#[derive(Debug)]
enum HostMatch {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Suffix(String),
}

impl Service {
    /// Builds a service from its validated config.
    pub fn from_config(c: &ServiceConfig) -> Result<Service, String> {
        let host = c.host.as_ref().map(|h| {
            let h = h.to_ascii_lowercase();
            match h.strip_prefix('*') {
                Some(suffix) => HostMatch::Suffix(suffix.to_owned()),
                None => HostMatch::Exact(h),
            }
        });
        let path = c.path.as_ref().map(|p| p.trim_end_matches('/').to_owned());
        Ok(Service {
            name: c.name.clone(),
            host,
            path,
            upstream: UpstreamUrl::parse(&c.upstream)?,
            price: Msat(c.price_sats.saturating_mul(1000)),
            price_sats: c.price_sats,
            calls_per_payment: c.calls_per_payment,
            token_lifetime_secs: c.token_lifetime_secs,
            upstream_timeout: std::time::Duration::from_secs(c.upstream_timeout_secs),
        })
    }

    /// Whether this service is free (no payment asked).
    pub fn is_free(&self) -> bool {
        self.price == Msat::ZERO
    }

    fn matches(&self, host: Option<&str>, path: &str) -> bool {
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
            Some(prefix) if prefix.is_empty() => true,
            Some(prefix) => {
                path.starts_with(prefix.as_str())
                    && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
            }
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

    /// The first service matching the host (without port) and path.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Arc<Service>> {
        self.services.iter().find(|s| s.matches(host, path))
    }

    /// All services.
    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }
}

/// The host a request is for, without port: the URI authority (HTTP/2) or the `Host` header.
pub fn request_host<B>(req: &http::Request<B>) -> Option<&str> {
    let raw = req.uri().host().or_else(|| {
        req.headers()
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
    })?;
    // Strip a port, keeping IPv6 literals intact.
    if raw.starts_with('[') {
        return raw.split_once(']').map(|(h, _)| &h[1..]);
    }
    Some(raw.rsplit_once(':').map_or(raw, |(h, _)| h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, host: Option<&str>, path: Option<&str>) -> Service {
        Service::from_config(&ServiceConfig {
            name: name.into(),
            host: host.map(Into::into),
            path: path.map(Into::into),
            upstream: "http://127.0.0.1:1".into(),
            price_sats: 1,
            calls_per_payment: 1,
            token_lifetime_secs: None,
            upstream_timeout_secs: 1,
        })
        .unwrap()
    }

    #[test]
    fn first_match_wins_and_prefixes_respect_segments() {
        let r = Router::new(vec![
            svc("a", Some("api.example.com"), Some("/v1")),
            svc("b", Some("*.example.com"), None),
            svc("c", None, Some("/free/")),
        ]);
        let name = |h: Option<&str>, p: &str| r.route(h, p).map(|s| s.name.clone());
        assert_eq!(name(Some("API.example.com"), "/v1/x").as_deref(), Some("a"));
        assert_eq!(name(Some("api.example.com"), "/v1").as_deref(), Some("a"));
        assert_eq!(name(Some("api.example.com"), "/v1x").as_deref(), Some("b"));
        assert_eq!(name(Some("example.com"), "/free/x").as_deref(), Some("c"));
        assert_eq!(name(None, "/free").as_deref(), Some("c"));
        assert_eq!(name(None, "/other"), None);
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
        let req = http::Request::builder()
            .uri("http://a.b:1/x")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req), Some("a.b"));
    }
}
