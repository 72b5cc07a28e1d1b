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

use crate::routing::Service;

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

/// The upstream HTTP client (HTTP/1.1 and HTTP/2, TLS with verified certificates).
#[derive(Clone)]
pub struct Forwarder {
    client: Client<HttpsConnector<HttpConnector>, Body>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Forwarder")
    }
}

/// Headers that describe one connection and must not be forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

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
        Forwarder { client }
    }

    /// Sends `req` to the service's upstream and returns its response head with a streaming
    /// body. `client_ip` is appended to `X-Forwarded-For`.
    pub async fn forward(
        &self,
        service: &Service,
        req: Request<Body>,
        client_ip: IpAddr,
    ) -> Result<Response<Body>, ForwardError> {
        let (mut parts, body) = req.into_parts();
        let path_and_query = match (
            service.upstream.base_path.is_empty(),
            parts.uri.path_and_query(),
        ) {
            // The common case, without copying the path.
            (true, Some(pq)) => pq.clone(),
            (_, pq) => {
                let pq = pq.map_or("/", |p| p.as_str());
                PathAndQuery::try_from(format!("{}{pq}", service.upstream.base_path))
                    .map_err(|e| ForwardError::BadRequest(e.to_string()))?
            }
        };
        let uri = Uri::builder()
            .scheme(service.upstream.scheme.clone())
            .authority(service.upstream.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| ForwardError::BadRequest(e.to_string()))?;
        let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });

        let headers = &mut parts.headers;
        remove_hop_by_hop(headers);
        remove_l402_credentials(headers);
        append_forwarded_for(headers, client_ip);
        headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static("http"),
        );
        if let Some(host) = original_host {
            headers.insert(HeaderName::from_static("x-forwarded-host"), host);
        }
        if let Ok(v) = HeaderValue::from_str(service.upstream.authority.as_str()) {
            headers.insert(header::HOST, v);
        }
        parts.uri = uri;
        parts.version = Version::HTTP_11;

        let upstream_req = Request::from_parts(parts, body);
        let resp =
            tokio::time::timeout(service.upstream_timeout, self.client.request(upstream_req))
                .await
                .map_err(|_| ForwardError::Timeout(service.upstream_timeout))?
                .map_err(|e| ForwardError::Unreachable(error_chain(&e)))?;
        let (mut parts, body) = resp.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Body::new(body)))
    }
}

impl Forwarder {
    /// POSTs a small JSON document (to a pricer) and reads the answer, at most 64 KiB, all
    /// within `timeout`.
    pub async fn post_json(
        &self,
        url: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(http::StatusCode, bytes::Bytes), ForwardError> {
        use http_body_util::BodyExt;
        let req = Request::post(url)
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
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Removes the client's L402 credential (`Authorization: L402|LSAT …`, `Macaroon`,
/// `Grpc-Metadata-Macaroon`); other `Authorization` values reach the upstream unchanged.
pub fn remove_l402_credentials(headers: &mut HeaderMap) {
    headers.remove("macaroon");
    headers.remove("grpc-metadata-macaroon");
    if !headers.contains_key(header::AUTHORIZATION) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter(|v| !is_l402_authorization(v.as_bytes()))
        .cloned()
        .collect();
    headers.remove(header::AUTHORIZATION);
    for v in kept {
        headers.append(header::AUTHORIZATION, v);
    }
}

fn is_l402_authorization(value: &[u8]) -> bool {
    let scheme = value
        .split(|b| b.is_ascii_whitespace())
        .next()
        .unwrap_or_default();
    scheme.eq_ignore_ascii_case(b"L402") || scheme.eq_ignore_ascii_case(b"LSAT")
}

fn append_forwarded_for(headers: &mut HeaderMap, ip: IpAddr) {
    let name = HeaderName::from_static("x-forwarded-for");
    use std::io::Write as _;
    if !headers.contains_key(&name) {
        // The common case: the address alone, formatted on the stack.
        let mut buf = [0u8; 48];
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        if write!(cursor, "{ip}").is_ok() {
            let len = usize::try_from(cursor.position()).unwrap_or(0);
            if let Ok(v) = HeaderValue::from_bytes(&buf[..len]) {
                headers.insert(name, v);
            }
        }
        return;
    }
    let prior: Vec<&str> = headers
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = format!("{}, {ip}", prior.join(", "));
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn strips_only_l402_credentials() {
        let mut h = HeaderMap::new();
        h.append("authorization", HeaderValue::from_static("L402 abc:def"));
        h.append(
            "authorization",
            HeaderValue::from_static("Bearer upstream-key"),
        );
        h.append("authorization", HeaderValue::from_static("lsat abc:def"));
        h.insert("macaroon", HeaderValue::from_static("00"));
        h.insert("grpc-metadata-macaroon", HeaderValue::from_static("00"));
        remove_l402_credentials(&mut h);
        let auth: Vec<_> = h.get_all("authorization").iter().collect();
        assert_eq!(auth, vec!["Bearer upstream-key"]);
        assert!(!h.contains_key("macaroon") && !h.contains_key("grpc-metadata-macaroon"));
    }

    #[test]
    fn appends_to_forwarded_for() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "10.0.0.1".parse().unwrap());
        append_forwarded_for(&mut h, "::1".parse().unwrap());
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1, ::1");
    }
}
