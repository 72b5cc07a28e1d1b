//! Forwarding to the upstream: bodies streamed both ways, hop-by-hop headers removed, the
//! client's L402 credential removed, `X-Forwarded-*` added, upstream TLS certificates verified.

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::service::Service;

/// Why a request could not be forwarded. In every case the upstream did not answer, so the
/// call is not charged.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The upstream could not be reached or the connection failed before a response.
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// The upstream sent no response headers in time.
    #[error("upstream sent no response within {0:?}")]
    Timeout(Duration),
    /// The request could not be turned into an upstream request.
    #[error("cannot build the upstream request: {0}")]
    BadRequest(String),
}

/// The upstream HTTP client: plain-HTTP upstreams through this worker's own keep-alive
/// connections ([`crate::upstream`]); TLS upstreams (HTTP/1.1 and HTTP/2, verified
/// certificates) and pricers through hyper's pooled client.
#[derive(Clone)]
pub struct Forwarder {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    plain: std::sync::Arc<crate::upstream::Upstreams>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Forwarder")
    }
}

impl Forwarder {
    /// A client trusting the system's root certificates (or, if none can be loaded, the
    /// Mozilla roots compiled in).
    pub fn new() -> Forwarder {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        http.set_nodelay(true);
        let provider = || std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider())
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "no system root certificates; using the built-in Mozilla roots");
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_provider_and_webpki_roots(provider())
                    .expect("the ring provider supports the default protocol versions")
            }
        };
        let https = builder
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(https);
        Forwarder {
            client,
            plain: crate::upstream::Upstreams::new(),
        }
    }

    /// Sends `req` to the service's upstream and returns its response head with a streaming
    /// body, with the forwarding fields `via` calls for ([`Via`]).
    pub async fn forward(
        &self,
        service: &Service,
        req: Request<Body>,
        via: Via,
    ) -> Result<Response<Body>, ForwardError> {
        let (parts, body) = req.into_parts();
        let path_and_query = match (
            service.upstream.base_path.is_empty() && !service.strip_first_segment,
            parts.uri.path_and_query(),
        ) {
            // The common case, without copying the path.
            (true, Some(pq)) => pq.clone(),
            (_, pq) => {
                let pq = pq.map_or("/", |p| p.as_str());
                let (slash, pq) = match service.strip_first_segment {
                    true => without_first_segment(pq),
                    false => ("", pq),
                };
                PathAndQuery::try_from(format!("{}{slash}{pq}", service.upstream.base_path))
                    .map_err(|e| ForwardError::BadRequest(e.to_string()))?
            }
        };
        let named = connection_named(&parts.headers);
        let configured = &service.upstream_headers;
        let keep = |name: &HeaderName, value: &HeaderValue| {
            forwarded(name, value, &named, via.peer_trusted)
                && !configured.iter().any(|(n, _)| n == name)
        };
        // The edge made `Host` the one routed host.
        let routed_host = parts
            .headers
            .get(header::HOST)
            .map_or(&b""[..], HeaderValue::as_bytes);
        let fields = ForwardingFields::new(&parts.headers, via, routed_host);
        let added: [(&str, &[u8]); 6] = [
            ("host", service.upstream.authority.as_str().as_bytes()),
            ("x-forwarded-for", fields.forwarded_for.as_bytes()),
            ("x-forwarded-proto", fields.proto.as_bytes()),
            ("x-forwarded-host", routed_host),
            ("x-real-ip", fields.real_ip.as_bytes()),
            ("forwarded", fields.forwarded.as_bytes()),
        ];
        let added: &[(&str, &[u8])] = if routed_host.is_empty() {
            &[added[0], added[1], added[2], added[4], added[5]]
        } else {
            &added
        };

        if service.upstream.scheme == http::uri::Scheme::HTTP {
            let send = self.plain.send(
                &service.upstream.authority,
                &parts.method,
                &path_and_query,
                crate::upstream::RequestFields {
                    headers: &parts.headers,
                    keep: &keep,
                    added,
                    configured,
                },
                body,
            );
            let resp = tokio::time::timeout(service.upstream_timeout, send)
                .await
                .map_err(|_| ForwardError::Timeout(service.upstream_timeout))?
                .map_err(|e| match e.is_client_fault() {
                    true => ForwardError::BadRequest(e.to_string()),
                    false => ForwardError::Unreachable(e.to_string()),
                })?;
            return Ok(resp.map(Body::new));
        }

        let mut headers = HeaderMap::with_capacity(parts.headers.len() + added.len());
        for (name, value) in &parts.headers {
            if keep(name, value) {
                headers.append(name.clone(), value.clone());
            }
        }
        for (name, value) in added.iter().copied() {
            let value = HeaderValue::from_bytes(value)
                .map_err(|e| ForwardError::BadRequest(e.to_string()))?;
            headers.insert(HeaderName::from_static(name), value);
        }
        for (name, value) in configured {
            headers.insert(name.clone(), value.clone());
        }
        // The body's length, when known, is announced again (hyper would otherwise chunk it,
        // or drop the body of a GET).
        if let Some(n) = http_body::Body::size_hint(&body).exact()
            && (n > 0 || parts.headers.contains_key(header::CONTENT_LENGTH))
        {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        let uri = Uri::builder()
            .scheme(service.upstream.scheme.clone())
            .authority(service.upstream.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| ForwardError::BadRequest(e.to_string()))?;
        let mut upstream_req = Request::new(body);
        *upstream_req.method_mut() = parts.method;
        *upstream_req.uri_mut() = uri;
        *upstream_req.version_mut() = Version::HTTP_11;
        *upstream_req.headers_mut() = headers;
        let resp =
            tokio::time::timeout(service.upstream_timeout, self.client.request(upstream_req))
                .await
                .map_err(|_| ForwardError::Timeout(service.upstream_timeout))?
                .map_err(|e| ForwardError::Unreachable(error_chain(&e)))?;
        let (mut parts, body) = resp.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        let body = http_body_util::BodyExt::map_err(body, |e| {
            tracing::warn!(error = %e, "upstream response body failed: the client's response is cut short");
            e
        });
        Ok(Response::from_parts(parts, Body::new(body)))
    }
}

/// A canonical origin-form target without its first path segment (a hub provider's prefix):
/// `/alice/x?q` is `/x?q`, `/alice?q` is `/` and `?q`. Returned as a `/` to put in front (when
/// the rest does not start with one) and the rest.
fn without_first_segment(pq: &str) -> (&'static str, &str) {
    let rest = pq.strip_prefix('/').unwrap_or(pq);
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => ("", &rest[i..]),
        Some(i) => ("/", &rest[i..]),
        None => ("/", ""),
    }
}

impl Forwarder {
    /// POSTs a small JSON document (to a pricer) and reads the answer, at most 64 KiB, all
    /// within `timeout`.
    pub async fn post_json(
        &self,
        url: &Uri,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(http::StatusCode, bytes::Bytes), ForwardError> {
        use http_body_util::BodyExt;
        let req = Request::post(url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .map_err(|e| ForwardError::BadRequest(e.to_string()))?;
        let call = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| ForwardError::Unreachable(error_chain(&e)))?;
            let status = resp.status();
            let limited = http_body_util::Limited::new(resp.into_body(), 64 * 1024);
            let bytes = limited
                .collect()
                .await
                .map_err(|e| ForwardError::Unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok((status, bytes))
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| ForwardError::Timeout(timeout))?
    }
}

impl Default for Forwarder {
    fn default() -> Self {
        Forwarder::new()
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named = connection_named(headers);
    let drop: Vec<HeaderName> = headers
        .keys()
        .filter(|n| crate::upstream::head::is_hop_by_hop(n) || named.contains(n))
        .cloned()
        .collect();
    for name in drop {
        headers.remove(name);
    }
}

/// The header names a request's `Connection` field lists (usually none: no allocation).
pub(crate) fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| crate::upstream::head::connection_tokens(v.as_bytes()))
        .filter_map(|name| HeaderName::from_bytes(name).ok())
        .collect()
}

/// Whether a client's request field is passed to the upstream. Not passed: hop-by-hop fields
/// (RFC 9110 §7.6.1, and those `Connection` names), the client's L402 credential
/// (`Authorization: L402|LSAT …`, `Macaroon`, `Grpc-Metadata-Macaroon`; other `Authorization`
/// values pass), the fields the proxy sets itself (`Host`, `X-Forwarded-For/-Proto/-Host`,
/// `X-Real-IP`, `Forwarded`: see [`Via`]), the body's framing (`Content-Length`,
/// `Transfer-Encoding`: set again for the upstream connection), fields that make some servers
/// act on another path or method than the one priced (`X-Original-URL`, `X-Rewrite-URL`,
/// `X-HTTP-Method-Override` and its variants), and any of these spelt with `_` for `-` (CGI and
/// WSGI servers read them as the same). Other client-address fields (`True-Client-IP`,
/// `X-Client-IP`, `X-Forwarded-Port`, …) pass only from a trusted proxy.
pub fn forwarded(
    name: &HeaderName,
    value: &HeaderValue,
    connection_named: &[HeaderName],
    from_trusted: bool,
) -> bool {
    let s = name.as_str();
    if s.contains('_') {
        let dashed = s.replace('_', "-");
        return !(crate::headers::is_managed(&dashed)
            || crate::headers::is_address_field(&dashed)
            || connection_named.contains(name));
    }
    !(turnpike_l402::credential::is_credential_field(s, value.as_bytes())
        || crate::upstream::head::is_hop_by_hop(name)
        || *name == header::CONTENT_LENGTH
        || crate::headers::is_managed(s)
        || (!from_trusted && crate::headers::is_address_field(s))
        || connection_named.contains(name))
}

/// Where a request came from, for the forwarding fields sent upstream.
///
/// From an untrusted peer, the client's own `X-Forwarded-For`, `Forwarded`, `X-Real-IP` and
/// `X-Forwarded-Proto` are replaced: `X-Forwarded-For` and `X-Real-IP` name the peer,
/// `Forwarded` is one element for this hop, and the protocol is the gateway's own (`http`). From
/// a trusted proxy the chains are extended with the peer, `X-Real-IP` is the client found by
/// walking the chain, and its `X-Forwarded-Proto` (`http` or `https`) is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via {
    /// The TCP peer.
    pub peer: IpAddr,
    /// The client, as found through trusted proxies (the peer when it is not one).
    pub client: IpAddr,
    /// Whether the peer is a trusted proxy.
    pub peer_trusted: bool,
    /// Which chains a trusted peer maintains (`forwarded_header`), and so are extended; the
    /// other is replaced.
    pub chains: crate::client_ip::ForwardedHeader,
}

impl Via {
    /// Where a request from `peer` with `headers` came from.
    pub fn new(
        proxies: &crate::client_ip::TrustedProxies,
        peer: IpAddr,
        headers: &HeaderMap,
    ) -> Via {
        let peer_trusted = !proxies.is_empty() && proxies.contains(peer);
        Via {
            peer: peer.to_canonical(),
            client: proxies.client_ip(peer, headers),
            peer_trusted,
            chains: proxies.forwarded_header(),
        }
    }
}

/// The forwarding field values sent upstream, formatted without allocating in the usual case.
struct ForwardingFields {
    forwarded_for: InlineText,
    real_ip: InlineText,
    forwarded: InlineText,
    proto: &'static str,
}

impl ForwardingFields {
    fn new(headers: &HeaderMap, via: Via, routed_host: &[u8]) -> ForwardingFields {
        let proto = match via.peer_trusted {
            true => match headers.get("x-forwarded-proto").map(HeaderValue::as_bytes) {
                Some(p) if p.eq_ignore_ascii_case(b"https") => "https",
                _ => "http",
            },
            false => "http",
        };
        let mut forwarded_for = InlineText::default();
        let mut forwarded = InlineText::default();
        use crate::client_ip::ForwardedHeader;
        let extend_xff = via.peer_trusted && via.chains != ForwardedHeader::Forwarded;
        let extend_forwarded = via.peer_trusted && via.chains != ForwardedHeader::XForwardedFor;
        if extend_xff {
            forwarded_for.push_values(headers.get_all("x-forwarded-for"));
        }
        if extend_forwarded {
            forwarded.push_values(headers.get_all(header::FORWARDED));
        }
        forwarded_for.push_ip(via.peer);
        match via.peer {
            IpAddr::V4(_) => {
                forwarded.push_str("for=");
                forwarded.push_ip(via.peer);
            }
            IpAddr::V6(_) => {
                forwarded.push_str("for=\"[");
                forwarded.push_ip(via.peer);
                forwarded.push_str("]\"");
            }
        }
        // (The edge admits only host names, which are ASCII: the UTF-8 check is a backstop.)
        if !routed_host.is_empty()
            && (routed_host.is_ascii() || std::str::from_utf8(routed_host).is_ok())
        {
            forwarded.push_str(";host=\"");
            forwarded.push_bytes(routed_host);
            forwarded.push_str("\"");
        }
        forwarded.push_str(";proto=");
        forwarded.push_str(proto);
        let mut real_ip = InlineText::default();
        real_ip.push_ip(via.client);
        ForwardingFields {
            forwarded_for,
            real_ip,
            forwarded,
            proto,
        }
    }
}

/// Text kept on the stack while it fits in 96 bytes, else on the heap. Only UTF-8 goes in.
struct InlineText {
    inline: [u8; 96],
    len: usize,
    spilled: Option<Vec<u8>>,
}

impl Default for InlineText {
    fn default() -> Self {
        InlineText {
            inline: [0; 96],
            len: 0,
            spilled: None,
        }
    }
}

impl InlineText {
    fn push_str(&mut self, s: &str) {
        self.push_bytes(s.as_bytes());
    }

    /// Appends UTF-8 text given as bytes (callers check it is).
    fn push_bytes(&mut self, s: &[u8]) {
        if let Some(spilled) = &mut self.spilled {
            spilled.extend_from_slice(s);
        } else if self.len + s.len() <= self.inline.len() {
            self.inline[self.len..self.len + s.len()].copy_from_slice(s);
            self.len += s.len();
        } else {
            let mut spilled = Vec::with_capacity(self.len + s.len() + 32);
            spilled.extend_from_slice(&self.inline[..self.len]);
            spilled.extend_from_slice(s);
            self.spilled = Some(spilled);
        }
    }

    /// Appends each UTF-8 value followed by `", "` (a chain this hop extends).
    fn push_values<'a>(&mut self, values: impl IntoIterator<Item = &'a HeaderValue>) {
        for value in values {
            if let Ok(v) = value.to_str() {
                self.push_str(v);
                self.push_str(", ");
            }
        }
    }

    /// Appends `ip` as `Display` writes it; IPv4 (the usual peer) without the formatting
    /// machinery, which cost a tenth of a proxied request's instructions.
    fn push_ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => {
                let mut buf = [0u8; 15];
                let len = format_ipv4(v4, &mut buf);
                // Digits and dots only.
                self.push_bytes(&buf[..len]);
            }
            IpAddr::V6(v6) => {
                use std::fmt::Write as _;
                let _ = write!(self, "{v6}");
            }
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match &self.spilled {
            Some(s) => s,
            None => &self.inline[..self.len],
        }
    }
}

impl std::fmt::Write for InlineText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push_str(s);
        Ok(())
    }
}

/// Writes `ip` in dotted decimal into `buf`; returns the length.
fn format_ipv4(ip: std::net::Ipv4Addr, buf: &mut [u8; 15]) -> usize {
    let mut len = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            buf[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            buf[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            buf[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        buf[len] = b'0' + octet % 10;
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_providers_prefix_is_removed_whole_segments_only() {
        let strip = |pq: &str| {
            let (slash, rest) = without_first_segment(pq);
            format!("{slash}{rest}")
        };
        assert_eq!(strip("/alice/x/y?q=1"), "/x/y?q=1");
        assert_eq!(strip("/alice"), "/");
        assert_eq!(strip("/alice/"), "/");
        assert_eq!(strip("/alice?q=/x"), "/?q=/x");
        assert_eq!(strip("/alice;p=1/x"), "/x");
        assert_eq!(strip("/alice.json"), "/");
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    fn kept(h: &HeaderMap) -> Vec<(String, String)> {
        let named = connection_named(h);
        h.iter()
            .filter(|(n, v)| forwarded(n, v, &named, false))
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn passes_only_end_to_end_fields_and_other_credentials() {
        let mut h = HeaderMap::new();
        h.append("authorization", HeaderValue::from_static("L402 abc:def"));
        h.append(
            "authorization",
            HeaderValue::from_static("Bearer upstream-key"),
        );
        h.append("authorization", HeaderValue::from_static("lsat abc:def"));
        h.insert("macaroon", HeaderValue::from_static("00"));
        h.insert("grpc-metadata-macaroon", HeaderValue::from_static("00"));
        h.insert("connection", HeaderValue::from_static("keep-alive, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("host", HeaderValue::from_static("gateway"));
        h.insert("content-length", HeaderValue::from_static("3"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        assert_eq!(
            kept(&h),
            [
                ("authorization".into(), "Bearer upstream-key".into()),
                ("accept".into(), "*/*".into())
            ]
        );
    }

    fn fields(headers: &[(&str, &str)], via: Via, host: &str) -> [String; 4] {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let f = ForwardingFields::new(&h, via, host.as_bytes());
        let text = |t: &InlineText| String::from_utf8(t.as_bytes().to_vec()).unwrap();
        [
            text(&f.forwarded_for),
            text(&f.real_ip),
            text(&f.forwarded),
            f.proto.to_owned(),
        ]
    }

    const FORGED: &[(&str, &str)] = &[
        ("x-forwarded-for", "1.1.1.1"),
        ("x-forwarded-for", "2.2.2.2, 3.3.3.3"),
        ("forwarded", "for=1.1.1.1;proto=https"),
        ("x-real-ip", "1.1.1.1"),
        ("x-forwarded-proto", "https"),
    ];

    #[test]
    fn an_untrusted_peers_forwarding_fields_are_replaced() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let via = Via {
            peer,
            client: peer,
            peer_trusted: false,
            chains: crate::client_ip::ForwardedHeader::Auto,
        };
        assert_eq!(
            fields(FORGED, via, "api.test"),
            [
                "10.0.0.1".to_owned(),
                "10.0.0.1".to_owned(),
                "for=10.0.0.1;host=\"api.test\";proto=http".to_owned(),
                "http".to_owned()
            ]
        );
        let v6: IpAddr = "::1".parse().unwrap();
        let via = Via {
            peer: v6,
            client: v6,
            peer_trusted: false,
            chains: crate::client_ip::ForwardedHeader::Auto,
        };
        assert_eq!(fields(&[], via, "")[2], "for=\"[::1]\";proto=http");
    }

    #[test]
    fn a_trusted_proxys_chains_are_extended() {
        let via = Via {
            peer: "10.0.0.1".parse().unwrap(),
            client: "3.3.3.3".parse().unwrap(),
            peer_trusted: true,
            chains: crate::client_ip::ForwardedHeader::Auto,
        };
        assert_eq!(
            fields(FORGED, via, "api.test:8402"),
            [
                "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1".to_owned(),
                "3.3.3.3".to_owned(),
                "for=1.1.1.1;proto=https, for=10.0.0.1;host=\"api.test:8402\";proto=https"
                    .to_owned(),
                "https".to_owned()
            ]
        );
        let long = ["9.9.9.9"; 20].join(", ");
        assert!(fields(&[("x-forwarded-for", &long)], via, "")[0].ends_with("9.9.9.9, 10.0.0.1"));
    }

    #[test]
    fn a_trusted_proxy_extends_only_the_chain_it_maintains() {
        use crate::client_ip::ForwardedHeader;
        let via = |chains| Via {
            peer: "10.0.0.1".parse().unwrap(),
            client: "3.3.3.3".parse().unwrap(),
            peer_trusted: true,
            chains,
        };
        let f = fields(FORGED, via(ForwardedHeader::XForwardedFor), "a");
        assert_eq!(f[0], "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1");
        assert_eq!(f[2], "for=10.0.0.1;host=\"a\";proto=https");
        let f = fields(FORGED, via(ForwardedHeader::Forwarded), "a");
        assert_eq!(f[0], "10.0.0.1");
        assert!(f[2].starts_with("for=1.1.1.1;proto=https, for=10.0.0.1"));
    }

    #[test]
    fn underscored_spellings_and_path_overrides_are_dropped() {
        let named = Vec::new();
        let keep = |n: &str, trusted| {
            forwarded(
                &HeaderName::from_bytes(n.as_bytes()).unwrap(),
                &HeaderValue::from_static("x"),
                &named,
                trusted,
            )
        };
        for n in [
            "x_real_ip",
            "x_forwarded_for",
            "x_forwarded_host",
            "X_Forwarded_Proto",
            "x-original-url",
            "x_original_url",
            "x-rewrite-url",
            "x-http-method-override",
            "x-method-override",
            "x_true_client_ip_not_listed_but_fine",
        ]
        .iter()
        .take(9)
        {
            assert!(!keep(n, true), "{n}");
        }
        assert!(!keep("true-client-ip", false));
        assert!(keep("true-client-ip", true));
        assert!(!keep("true_client_ip", true));
        assert!(keep("x-request-id", false));
        assert!(keep("x_custom_field", false));
    }

    #[test]
    fn the_client_cannot_pass_its_own_forwarding_fields() {
        let mut h = HeaderMap::new();
        for (k, v) in FORGED {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_static(v),
            );
        }
        assert!(kept(&h).is_empty());
    }

    proptest::proptest! {
        /// Any address is written exactly as `Display` writes it, inline or spilled.
        #[test]
        fn ip_text_matches_display(v4 in proptest::prelude::any::<[u8; 4]>(),
                                   v6 in proptest::prelude::any::<[u16; 8]>(),
                                   prefix in "[a-z., ]{0,90}") {
            for ip in [IpAddr::from(v4), IpAddr::from(v6)] {
                let mut text = InlineText::default();
                text.push_str(&prefix);
                text.push_ip(ip);
                let expected = format!("{prefix}{ip}");
                proptest::prop_assert_eq!(text.as_bytes(), expected.as_bytes());
            }
        }
    }

    #[test]
    fn forwarding_fields_name_the_peer() {
        let via = Via {
            peer: IpAddr::from([10, 0, 200, 7]),
            client: IpAddr::from([10, 0, 200, 7]),
            peer_trusted: false,
            chains: crate::client_ip::ForwardedHeader::default(),
        };
        let f = ForwardingFields::new(&HeaderMap::new(), via, b"api.example");
        assert_eq!(f.forwarded_for.as_bytes(), b"10.0.200.7");
        assert_eq!(f.real_ip.as_bytes(), b"10.0.200.7");
        assert_eq!(
            f.forwarded.as_bytes(),
            b"for=10.0.200.7;host=\"api.example\";proto=http"
        );
    }
}
