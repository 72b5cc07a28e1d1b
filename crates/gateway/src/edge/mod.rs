//! The edge: every request is put into one canonical form before anything looks at it.
//!
//! After [`normalize`], the request's method is in upper case (`CONNECT` is refused), its target
//! is in origin form with a canonical path ([`path`]), and it has exactly one `Host` field,
//! normalised ([`host`]) — from an absolute
//! target's authority when there is one (RFC 9112 §3.2.2). Routing, pricing, idempotency
//! fingerprints and the upstream all see that one form, so they cannot disagree about what was
//! asked. Requests that cannot be put into that form are answered `400`.

pub mod host;
pub mod path;

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Version};

use crate::error::{ApiError, ErrorCode};

/// Why a request was refused at the edge (always `400 Bad Request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdgeError {
    /// The path cannot be put into canonical form.
    #[error("{0}")]
    Path(#[from] path::PathError),
    /// The host is malformed.
    #[error("{0}")]
    Host(#[from] host::HostError),
    /// An HTTP/1.1 request without `Host`.
    #[error("the request has no Host field")]
    MissingHost,
    /// More than one `Host` field.
    #[error("the request has several Host fields")]
    SeveralHosts,
    /// An absolute target whose authority differs from the `Host` field.
    #[error("the Host field differs from the request target's host")]
    HostMismatch,
    /// A target form the gateway does not serve (`CONNECT host:port`, `OPTIONS *`).
    #[error("this request target form is not served")]
    UnsupportedTarget,
    /// `CONNECT`: the gateway is no tunnel.
    #[error("CONNECT is not served")]
    Connect,
}

impl EdgeError {
    /// The JSON error answered for it.
    pub fn to_api_error(&self) -> ApiError {
        let code = match self {
            EdgeError::Path(_) | EdgeError::UnsupportedTarget => ErrorCode::InvalidPath,
            EdgeError::Connect => ErrorCode::MethodNotAllowed,
            _ => ErrorCode::InvalidHost,
        };
        ApiError::new(code, format!("Bad request: {self}."))
    }
}

/// What the edge learnt about a request's path, for routing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// The path to match services against, when it differs from the URI's path (segment
    /// parameters removed).
    pub match_path: Option<String>,
    /// The path holds an encoded separator (`%2F`, `%5C`, `\`): refused unless the service
    /// allows it.
    pub encoded_separator: bool,
}

impl Target {
    /// The path services are matched against.
    pub fn match_path<'a, B>(&'a self, req: &'a Request<B>) -> &'a str {
        self.match_path.as_deref().unwrap_or(req.uri().path())
    }
}

/// The host a normalised request is for, without port (an IPv6 address without brackets).
pub fn request_host<B>(req: &Request<B>) -> Option<&str> {
    let raw = req.headers().get(header::HOST)?.to_str().ok()?;
    if raw.starts_with('[') {
        return raw.split_once(']').map(|(h, _)| &h[1..]);
    }
    Some(raw.rsplit_once(':').map_or(raw, |(h, _)| h))
}

/// Puts `req` into canonical form (see the module docs), or says why it cannot be.
pub fn normalize<B>(req: &mut Request<B>) -> Result<Target, EdgeError> {
    if req.method() == Method::CONNECT {
        return Err(EdgeError::Connect);
    }
    // Methods are matched and forwarded in upper case, as servers that upper-case them read
    // them (`post` is `POST` to Werkzeug and Django).
    if req
        .method()
        .as_str()
        .bytes()
        .any(|b| b.is_ascii_lowercase())
        && let Ok(upper) = Method::from_bytes(req.method().as_str().to_ascii_uppercase().as_bytes())
    {
        *req.method_mut() = upper;
    }
    let host = canonical_host(req)?;
    let uri = req.uri();
    if uri.scheme().is_none() && uri.authority().is_some() {
        return Err(EdgeError::UnsupportedTarget);
    }
    let canonical = path::canonicalize(uri.path()).map_err(|e| match uri.path() {
        "*" => EdgeError::UnsupportedTarget,
        _ => EdgeError::Path(e),
    })?;
    let target = Target {
        match_path: canonical
            .match_path()
            .ne(canonical.as_str())
            .then(|| canonical.match_path().to_owned()),
        encoded_separator: canonical.has_encoded_separator(),
    };
    if !canonical.is_unchanged() || uri.authority().is_some() {
        let path_and_query = match uri.query() {
            Some(q) => format!("{}?{q}", canonical.as_str()),
            None => canonical.as_str().to_owned(),
        };
        let pq = PathAndQuery::try_from(path_and_query)
            .map_err(|_| EdgeError::Path(path::PathError::BadEscape))?;
        *req.uri_mut() = Uri::from(pq);
    }
    if let Some(host) = host {
        let value = HeaderValue::try_from(host).map_err(|_| host::HostError::Invalid)?;
        req.headers_mut().insert(header::HOST, value);
    }
    Ok(target)
}

/// The canonical host, when it differs from the request's single `Host` field (or there is
/// none and the target names one); `None` when the field is already canonical or absent.
fn canonical_host<B>(req: &Request<B>) -> Result<Option<String>, EdgeError> {
    let mut fields = req.headers().get_all(header::HOST).iter();
    let field = fields.next();
    if fields.next().is_some() {
        return Err(EdgeError::SeveralHosts);
    }
    let field = field
        .map(|v| v.to_str().map_err(|_| host::HostError::Invalid))
        .transpose()?;
    let from_field = match field {
        Some("") | None => None,
        Some(raw) => Some(host::normalize(raw)?),
    };
    if let Some(authority) = req.uri().authority() {
        let from_target = host::normalize(authority.as_str())?;
        if authority.as_str().contains('@') {
            return Err(host::HostError::Invalid.into());
        }
        if from_field
            .as_ref()
            .is_some_and(|f| f.host() != from_target.host())
        {
            return Err(EdgeError::HostMismatch);
        }
        return Ok(Some(from_target.as_str().to_owned()));
    }
    match (from_field, field) {
        (Some(f), _) if f.is_unchanged() => Ok(None),
        (Some(f), _) => Ok(Some(f.as_str().to_owned())),
        (None, Some(_)) => Ok(None),
        (None, None) if req.version() >= Version::HTTP_11 => Err(EdgeError::MissingHost),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().uri(target);
        for h in hosts {
            b = b.header("host", *h);
        }
        b.body(()).unwrap()
    }

    fn run(target: &str, hosts: &[&str]) -> Result<(String, Option<String>, Target), EdgeError> {
        let mut r = req(target, hosts);
        let t = normalize(&mut r)?;
        let host = r
            .headers()
            .get("host")
            .map(|h| h.to_str().unwrap().to_owned());
        Ok((r.uri().to_string(), host, t))
    }

    #[test]
    fn the_host_is_taken_without_port() {
        let host = |h: &str| {
            let r = req("/x", &[h]);
            request_host(&r).map(str::to_owned)
        };
        assert_eq!(host("example.com:8080").as_deref(), Some("example.com"));
        assert_eq!(host("[::1]:8080").as_deref(), Some("::1"));
        assert_eq!(host("[::1]").as_deref(), Some("::1"));
    }

    #[test]
    fn origin_form_is_canonicalised_and_the_query_kept() {
        let (uri, host, t) = run("/docs/%2e%2e/secret?a=%2e%2e", &["Paid.Test."]).unwrap();
        assert_eq!(uri, "/secret?a=%2e%2e");
        assert_eq!(host.as_deref(), Some("paid.test"));
        assert_eq!(t, Target::default());
    }

    #[test]
    fn absolute_form_takes_its_authority_as_host() {
        let (uri, host, _) = run("http://Free.Test/x", &[]).unwrap();
        assert_eq!((uri.as_str(), host.as_deref()), ("/x", Some("free.test")));
        let (_, host, _) = run("http://free.test:8402/x", &["FREE.test"]).unwrap();
        assert_eq!(host.as_deref(), Some("free.test:8402"));
        assert_eq!(
            run("http://free.test/x", &["paid.test"]).unwrap_err(),
            EdgeError::HostMismatch
        );
        assert!(run("http://u:p@free.test/x", &[]).is_err());
    }

    #[test]
    fn host_fields_are_checked() {
        assert_eq!(
            run("/x", &["a.test", "b.test"]).unwrap_err(),
            EdgeError::SeveralHosts
        );
        assert_eq!(run("/x", &[]).unwrap_err(), EdgeError::MissingHost);
        assert!(run("/x", &["a b"]).is_err());
        let mut old = req("/x", &[]);
        *old.version_mut() = Version::HTTP_10;
        assert!(normalize(&mut old).is_ok());
        assert!(run("/x", &[""]).is_ok());
    }

    #[test]
    fn parameters_and_separators_are_reported() {
        let (uri, _, t) = run("/secret;x=1", &["a"]).unwrap();
        assert_eq!(uri, "/secret;x=1");
        assert_eq!(t.match_path.as_deref(), Some("/secret"));
        assert!(run("/a%2fb", &["a"]).unwrap().2.encoded_separator);
    }

    #[test]
    fn methods_are_upper_cased_and_connect_refused() {
        let mut r = Request::builder()
            .method(Method::from_bytes(b"post").unwrap())
            .uri("/x")
            .header("host", "a")
            .body(())
            .unwrap();
        normalize(&mut r).unwrap();
        assert_eq!(r.method(), Method::POST);
        let mut r = Request::builder()
            .method(Method::CONNECT)
            .uri("/x")
            .header("host", "a")
            .body(())
            .unwrap();
        assert_eq!(normalize(&mut r).unwrap_err(), EdgeError::Connect);
    }

    #[test]
    fn unserved_target_forms_are_refused() {
        assert_eq!(run("*", &["a"]).unwrap_err(), EdgeError::UnsupportedTarget);
        assert_eq!(
            run("a.test:443", &["a.test"]).unwrap_err(),
            EdgeError::UnsupportedTarget
        );
    }
}
