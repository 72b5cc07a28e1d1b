//! The SSRF guard for URLs a third party chose (an LNURL server, a provider's wallet): no
//! private, loopback or link-local addresses (the machine's own services, the local network,
//! cloud metadata). Checked before anything is sent ([`check_public_url`]) and again when the
//! HTTP client connects ([`PublicOnly`], a resolver that refuses internal addresses, so a
//! name that resolves elsewhere the second time is caught too).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Whether an address is internal: loopback, private, link-local, unspecified, shared (CGNAT),
/// multicast, broadcast, reserved, IPv6 unique-local or site-local, and IPv4 addresses of those
/// kinds mapped into IPv6.
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
    let [a, b, c, _] = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // 100.64.0.0/10 shared address space
        || (a == 192 && b == 0 && c == 0) // 192.0.0.0/24 protocol assignments
        || a >= 240
}

/// Resolves `host` (bounded to 10 s).
pub async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let lookup = tokio::net::lookup_host((host, port));
    match tokio::time::timeout(Duration::from_secs(10), lookup).await {
        Ok(Ok(addrs)) => Ok(addrs.collect()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Checks a URL before anything is sent to it: `https` (or `http` when `allow_http`), and a
/// host that resolves only to public addresses. The message says why it was refused.
pub async fn check_public_url(url: &reqwest::Url, allow_http: bool) -> Result<(), String> {
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        other => return Err(format!("only https URLs are accepted, not {other}:")),
    }
    check_public_host(url).await
}

/// Checks a nostr relay's URL before connecting to it: `wss`, and a host that resolves only
/// to public addresses.
pub async fn check_public_relay(url: &reqwest::Url) -> Result<(), String> {
    match url.scheme() {
        "wss" => check_public_host(url).await,
        other => Err(format!("only wss relays are accepted, not {other}:")),
    }
}

/// Checks that a URL's host is, or resolves only to, public addresses.
async fn check_public_host(url: &reqwest::Url) -> Result<(), String> {
    public_addrs(url).await.map(drop)
}

/// The addresses of a URL's host (its port, or the scheme's), resolved once: all public, at
/// least one, else why not.
pub async fn public_addrs(url: &reqwest::Url) -> Result<Vec<SocketAddr>, String> {
    let host = url
        .host_str()
        .ok_or_else(|| "the URL has no host".to_owned())?;
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        _ => resolve(host, port)
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?,
    };
    match addrs.iter().find(|a| is_internal(a.ip())) {
        Some(bad) => Err(format!(
            "{host} is (or resolves to) {}, a private, loopback or link-local address",
            bad.ip()
        )),
        None if addrs.is_empty() => Err(format!("{host} resolves to no address")),
        None => Ok(addrs),
    }
}

/// A resolver for `reqwest` that refuses names resolving to internal addresses.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicOnly;

/// Makes `builder` connect to public addresses only: names are resolved through [`PublicOnly`],
/// and no proxy from the environment (`HTTP_PROXY`, `ALL_PROXY`) is used, since a proxy would
/// resolve the name again, past the check.
pub fn public_only(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    builder
        .no_proxy()
        .dns_resolver(std::sync::Arc::new(PublicOnly))
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolve(&host, 0).await?;
            if let Some(bad) = addrs.iter().find(|a| is_internal(a.ip())) {
                return Err(format!(
                    "refused: {host} resolves to {}, an internal address",
                    bad.ip()
                )
                .into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proxy (here a configured one; `HTTP_PROXY` and the like are the same to reqwest) would
    /// resolve the name itself, past the check: a guarded client never uses one.
    #[tokio::test]
    async fn a_guarded_client_uses_no_proxy() {
        crate::ensure_crypto_provider();
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
        let reached = |client: reqwest::Client| {
            let proxy = &proxy;
            async move {
                let call = tokio::spawn(async move {
                    let _ = client.get("http://payee.example/x").send().await;
                });
                let accepted =
                    tokio::time::timeout(std::time::Duration::from_secs(2), proxy.accept())
                        .await
                        .is_ok();
                call.abort();
                accepted
            }
        };
        let with_proxy =
            || reqwest::Client::builder().proxy(reqwest::Proxy::all(&proxy_url).unwrap());
        assert!(reached(with_proxy().build().unwrap()).await, "the control");
        assert!(!reached(public_only(with_proxy()).build().unwrap()).await);
    }

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
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        for bad in [
            "https://10.0.0.1/x",
            "https://[::1]:8080/",
            "https://localhost/",
            "https://169.254.169.254/latest/meta-data",
            "https://[::ffff:127.0.0.1]/",
            "file:///etc/passwd",
        ] {
            assert!(check_public_url(&url(bad), true).await.is_err(), "{bad}");
        }
        let e = check_public_url(&url("http://1.1.1.1/"), false)
            .await
            .unwrap_err();
        assert!(e.contains("https"), "{e}");
        assert!(
            check_public_url(&url("https://1.1.1.1/"), false)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn relays_must_be_wss_and_public() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        for bad in [
            "ws://1.1.1.1/",
            "wss://127.0.0.1:7777/",
            "wss://[::1]/",
            "wss://localhost/",
            "https://1.1.1.1/",
        ] {
            assert!(check_public_relay(&url(bad)).await.is_err(), "{bad}");
        }
        assert!(check_public_relay(&url("wss://1.1.1.1/")).await.is_ok());
    }
}
