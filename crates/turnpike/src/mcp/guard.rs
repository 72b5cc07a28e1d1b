//! The SSRF guard of `turnpike mcp`: an agent may not make the server reach private, loopback
//! or link-local addresses (the machine's own services, the local network, cloud metadata)
//! unless the person allowed that host.
//!
//! The URL is checked before any connection (an IP literal as it is, a name by resolving it),
//! and the HTTP client's resolver checks again at connection time, so a name that resolves
//! elsewhere the second time (DNS rebinding) and redirects are caught too.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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

/// Whether an address is one an agent must not reach unless allowed: loopback, private,
/// link-local, unspecified, shared (CGNAT), multicast, broadcast, IPv6 unique-local, and IPv4
/// addresses of those kinds mapped into IPv6.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // fc00::/7 unique local
                || (first & 0xffc0) == 0xfe80 // fe80::/10 link-local
                || (first & 0xffc0) == 0xfec0 // fec0::/10 site-local (deprecated)
                || v6 == Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0) // NAT64 prefix base
        }
    }
}

fn internal_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // 100.64.0.0/10 shared address space
        || (a == 192 && b == 0 && v4.octets()[2] == 0) // 192.0.0.0/24 protocol assignments
        || a >= 240
}

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

async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let lookup = tokio::net::lookup_host((host, port));
    match tokio::time::timeout(Duration::from_secs(10), lookup).await {
        Ok(Ok(addrs)) => Ok(addrs.collect()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
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
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120))
        .user_agent(concat!("turnpike-mcp/", env!("CARGO_PKG_VERSION")))
        .redirect(policy)
        .dns_resolver(Arc::new(GuardedResolver {
            allowed: allowed.clone(),
        }))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.3.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "93.184.216.34", "2606:4700::1111", "100.128.0.1"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

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
