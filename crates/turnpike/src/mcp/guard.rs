//! The SSRF guard of `turnpike mcp`: an agent may not make the server reach private, loopback
//! or link-local addresses (the machine's own services, the local network, cloud metadata)
//! unless the person allowed that host.
//!
//! The URL is checked before any connection (an IP literal as it is, a name by resolving it),
//! and the HTTP client's resolver checks again at connection time, so a name that resolves
//! elsewhere the second time (DNS rebinding) and redirects are caught too.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Hosts the person allowed, lowercased, IPv6 literals without brackets.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts(Arc<HashSet<String>>);

fn normalize(host: &str) -> String {
    host.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

impl AllowedHosts {
    /// From `--allow-host` values and the wallet file's `allow_hosts`.
    pub fn new<'a>(hosts: impl IntoIterator<Item = &'a str>) -> AllowedHosts {
        AllowedHosts(Arc::new(hosts.into_iter().map(normalize).collect()))
    }

    /// Whether `host` was allowed.
    pub fn contains(&self, host: &str) -> bool {
        self.0.contains(&normalize(host))
    }
}

/// Whether an address is one an agent must not reach unless allowed (the shared SSRF rule).
pub use turnpike_lightning::net_guard::is_internal;
use turnpike_lightning::net_guard::resolve;

fn refusal(host: &str, ip: IpAddr) -> String {
    format!(
        "refused: {host} is (or resolves to) {ip}, a private, loopback or link-local address; \
         nothing was sent. The person running turnpike mcp can allow it with \
         --allow-host {host} or allow_hosts in the wallet file's [mcp] table"
    )
}

/// Checks a URL before anything is sent: http or https, and a host that is allowed or resolves
/// only to public addresses. Returns a plain message when refused.
pub async fn check_url(url: &reqwest::Url, allowed: &AllowedHosts) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "refused: only http and https URLs can be fetched, not {}:",
            url.scheme()
        ));
    }
    let host = url
        .host_str()
        .ok_or_else(|| format!("refused: the URL {url} has no host"))?;
    if allowed.contains(host) {
        return Ok(());
    }
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        _ => resolve(host, port)
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?,
    };
    if let Some(bad) = addrs.iter().find(|a| is_internal(a.ip())) {
        return Err(refusal(host, bad.ip()));
    }
    Ok(())
}

/// The HTTP client's resolver: refuses names that resolve to internal addresses unless the
/// host is allowed.
struct GuardedResolver {
    allowed: AllowedHosts,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let allowed = self.allowed.clone();
        Box::pin(async move {
            let addrs = resolve(&host, 0).await?;
            if !allowed.contains(&host)
                && let Some(bad) = addrs.iter().find(|a| is_internal(a.ip()))
            {
                return Err(refusal(&host, bad.ip()).into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// An HTTP client for the tools: guarded resolver, redirects to internal IP literals refused,
/// at most 5 redirects.
pub fn http_client(allowed: &AllowedHosts) -> reqwest::Result<reqwest::Client> {
    let for_redirects = allowed.clone();
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 5 {
            return attempt.error("too many redirects");
        }
        let url = attempt.url();
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        let host = url.host_str().unwrap_or_default().to_owned();
        match literal {
            Some(ip) if is_internal(ip) && !for_redirects.contains(&host) => {
                attempt.error(refusal(&host, ip))
            }
            _ => attempt.follow(),
        }
    });
    guarded_builder(allowed).redirect(policy).build()
}

/// An HTTP client for one origin (a hub): guarded resolver, and no redirect followed (a 3xx
/// goes back to the agent as it is).
pub fn http_client_without_redirects(allowed: &AllowedHosts) -> reqwest::Result<reqwest::Client> {
    guarded_builder(allowed)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

fn guarded_builder(allowed: &AllowedHosts) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120))
        .user_agent(concat!("turnpike-mcp/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(GuardedResolver {
            allowed: allowed.clone(),
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_are_checked_before_anything_is_sent() {
        let none = AllowedHosts::default();
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        let e = check_url(&url("http://10.0.0.1/x"), &none)
            .await
            .unwrap_err();
        assert!(e.contains("10.0.0.1") && e.contains("--allow-host"), "{e}");
        assert!(check_url(&url("http://[::1]:8080/"), &none).await.is_err());
        assert!(check_url(&url("http://localhost/"), &none).await.is_err());
        assert!(check_url(&url("file:///etc/passwd"), &none).await.is_err());
        let allowed = AllowedHosts::new(["127.0.0.1", "[::1]", "LocalHost"]);
        assert!(
            check_url(&url("http://127.0.0.1:1/"), &allowed)
                .await
                .is_ok()
        );
        assert!(check_url(&url("http://[::1]:1/"), &allowed).await.is_ok());
        assert!(
            check_url(&url("http://localhost:1/"), &allowed)
                .await
                .is_ok()
        );
        assert!(check_url(&url("http://10.0.0.1/"), &allowed).await.is_err());
    }
}
