//! Dynamic pricing: an HTTP service the gateway asks for the price of each request.
//!
//! The gateway POSTs JSON to the pricer:
//! `{"service", "method", "path", "query", "headers": {name: value}, "client_ip", "body":
//! "<base64 of the first body_bytes>", "body_truncated": bool}` and expects
//! `200 {"price_sats": N}`. Anything
//! else — unreachable, slow, non-200, malformed, or a price above the service's `price_sats` cap
//! — fails closed: the request is refused with `503`, never served free by accident. An explicit
//! `0` makes that request free.

use axum::body::{Body, Bytes};
use base64::Engine;
use futures_util::StreamExt;
use http::request::Parts;
use http::{Request, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use serde::Deserialize;

use crate::error::{ApiError, ErrorCode};
use crate::proxy::Forwarder;

#[derive(Deserialize)]
struct PriceAnswer {
    price_sats: u64,
}

/// Reads up to `n` bytes of the request body without losing any of it: returns the request
/// with its whole body still to be read, the bytes read, and whether the body goes on.
pub async fn peek_body(
    req: Request<Body>,
    n: usize,
) -> Result<(Request<Body>, Bytes, bool), ApiError> {
    let (parts, mut body) = req.into_parts();
    let announced = body.size_hint();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut seen = 0usize;
    let mut ended = false;
    while seen < n {
        match body.frame().await {
            None => {
                ended = true;
                break;
            }
            Some(Err(e)) => {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    format!("Cannot read the request body: {e}."),
                ));
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    seen += data.len();
                    chunks.push(data);
                }
            }
        }
    }
    let mut prefix = Vec::with_capacity(seen.min(n));
    for c in &chunks {
        prefix.extend_from_slice(c);
    }
    let truncated = !ended && (seen > n || !body.is_end_stream());
    // The rebuilt body keeps the framing of the original: a body read to its end is whole
    // (exact length, or none at all), the rest keeps the length the client announced.
    if ended {
        // Ended before `n` bytes: the prefix is the whole body.
        let whole = Bytes::from(prefix);
        return Ok((
            Request::from_parts(parts, Body::from(whole.clone())),
            whole,
            false,
        ));
    }
    let head = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, axum::Error>));
    let rebuilt = Body::new(Announced {
        inner: Body::from_stream(head.chain(body.into_data_stream())),
        hint: announced,
    });
    prefix.truncate(n);
    Ok((
        Request::from_parts(parts, rebuilt),
        Bytes::from(prefix),
        truncated,
    ))
}

/// A rebuilt body that reports the size its client announced.
struct Announced {
    inner: Body,
    hint: http_body::SizeHint,
}

impl http_body::Body for Announced {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.hint
    }
}

/// What the pricer is told about one request.
pub struct PriceQuestion<'a> {
    /// The service's name.
    pub service: &'a str,
    /// The request's head (canonical target).
    pub parts: &'a Parts,
    /// Where it came from (the client's address is sent; the client's own forwarding fields
    /// are not).
    pub via: crate::proxy::Via,
    /// The first bytes of the body.
    pub body_prefix: &'a [u8],
    /// Whether the body goes on past them.
    pub truncated: bool,
}

impl PriceQuestion<'_> {
    /// The JSON sent. Header fields are those the upstream would get, repeated ones joined with
    /// `, `, less every credential (an upstream's `Bearer` key included) and cookies: the
    /// pricer prices requests, it does not act for them.
    fn to_json(&self) -> serde_json::Value {
        let named = crate::proxy::connection_named(&self.parts.headers);
        let mut headers = serde_json::Map::new();
        for (name, value) in &self.parts.headers {
            let n = name.as_str();
            if n == "cookie"
                || turnpike_l402::credential::CREDENTIAL_FIELDS.contains(&n)
                || !crate::proxy::forwarded(name, value, &named, self.via.peer_trusted)
            {
                continue;
            }
            let value = String::from_utf8_lossy(value.as_bytes());
            match headers.get_mut(n) {
                Some(serde_json::Value::String(joined)) => {
                    joined.push_str(", ");
                    joined.push_str(&value);
                }
                _ => {
                    headers.insert(n.to_owned(), value.into_owned().into());
                }
            }
        }
        serde_json::json!({
            "service": self.service,
            "method": self.parts.method.as_str(),
            "path": self.parts.uri.path(),
            "query": self.parts.uri.query(),
            "headers": headers,
            "client_ip": self.via.client.to_string(),
            "body": base64::engine::general_purpose::STANDARD.encode(self.body_prefix),
            "body_truncated": self.truncated,
        })
    }
}

/// Asks the pricer for the price of a request, in sats. Errors are final for this request
/// (fail closed) and say why.
pub async fn price(
    forwarder: &Forwarder,
    pricer: &crate::service::Pricer,
    question: &PriceQuestion<'_>,
) -> Result<u64, String> {
    let question = question.to_json();
    let body = serde_json::to_vec(&question).map_err(|e| e.to_string())?;
    let (status, answer) = forwarder
        .post_json(&pricer.uri, body, pricer.timeout)
        .await
        .map_err(|e| e.to_string())?;
    if status != StatusCode::OK {
        return Err(format!("the pricer answered {status}"));
    }
    serde_json::from_slice::<PriceAnswer>(&answer)
        .map(|a| a.price_sats)
        .map_err(|e| format!("the pricer's answer is not {{\"price_sats\": N}}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pricer_sees_repeated_fields_joined_and_no_forged_or_secret_ones() {
        let req = Request::post("/x?q=1")
            .header("x-tier", "premium")
            .header("x-tier", "basic")
            .header("authorization", "Bearer upstream-key")
            .header("cookie", "session=1")
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-real-ip", "6.6.6.6")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let client: std::net::IpAddr = "10.1.2.3".parse().unwrap();
        let q = PriceQuestion {
            service: "svc",
            parts: &parts,
            via: crate::proxy::Via {
                peer: client,
                client,
                peer_trusted: false,
                chains: crate::client_ip::ForwardedHeader::XForwardedFor,
            },
            body_prefix: b"ab",
            truncated: true,
        };
        let json = q.to_json();
        assert_eq!(
            json["headers"],
            serde_json::json!({ "x-tier": "premium, basic" })
        );
        assert_eq!(json["client_ip"], "10.1.2.3");
        assert_eq!(
            (json["path"].as_str(), json["query"].as_str()),
            (Some("/x"), Some("q=1"))
        );
        assert_eq!(json["body"], "YWI=");
    }

    async fn peek(body: Body, n: usize) -> (Body, Bytes, bool) {
        let req = Request::post("/x").body(body).unwrap();
        let (req, prefix, truncated) = peek_body(req, n).await.unwrap();
        (req.into_body(), prefix, truncated)
    }

    #[tokio::test]
    async fn a_peeked_body_keeps_its_framing_and_bytes() {
        // No body: still none (a GET is not turned into a chunked upload).
        let (body, prefix, truncated) = peek(Body::empty(), 16).await;
        assert!(body.is_end_stream() && prefix.is_empty() && !truncated);

        // Shorter than the peek: whole, with its exact length.
        let (body, prefix, truncated) = peek(Body::from("hello"), 16).await;
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!((&prefix[..], truncated), (&b"hello"[..], false));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");

        // Longer: the prefix, and the whole body with the length the client announced.
        let (body, prefix, truncated) = peek(Body::from("0123456789"), 4).await;
        assert_eq!(body.size_hint().exact(), Some(10));
        assert_eq!((&prefix[..], truncated), (&b"0123"[..], true));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "0123456789");
    }
}
