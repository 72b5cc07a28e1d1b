//! Idempotent retries: a request carrying an `Idempotency-Key` under the same token is executed
//! and charged once; a retry gets the stored response, a different request with the same key
//! gets `422`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::response::Response;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use http_body::{Frame, SizeHint};
use sha2::{Digest, Sha256};
use turnpike_l402::TokenId;
use turnpike_store::{Store, StoredResponse};

use crate::error::{ApiError, ErrorCode};
use crate::headers::{CALLS_REMAINING, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAY};

/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// Reads and checks the `Idempotency-Key` header: `Ok(None)` when absent.
pub fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = |m: &str| ApiError::new(ErrorCode::InvalidIdempotencyKey, m.to_owned());
    if values.next().is_some() {
        return Err(bad("Send one Idempotency-Key header, not several."));
    }
    let key = value
        .to_str()
        .map_err(|_| bad("The Idempotency-Key must be visible ASCII."))?;
    if key.is_empty()
        || key.len() > MAX_KEY_LEN
        || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(bad(
            "The Idempotency-Key must be 1 to 255 visible ASCII characters.",
        ));
    }
    Ok(Some(key.to_owned()))
}

/// Buffers the request body (at most `limit` bytes) and fingerprints the request: method, path
/// and query, and body. Returns the rebuilt request and its fingerprint.
pub async fn fingerprint(
    req: Request<Body>,
    limit: usize,
) -> Result<(Request<Body>, [u8; 32]), ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            ErrorCode::RequestTooLarge,
            format!("Requests with an Idempotency-Key may carry at most {limit} bytes of body."),
        )
    })?;
    let mut h = Sha256::new();
    h.update(parts.method.as_str().as_bytes());
    h.update([0]);
    h.update(
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .as_bytes(),
    );
    h.update([0]);
    h.update(&bytes);
    Ok((
        Request::from_parts(parts, Body::from(bytes)),
        h.finalize().into(),
    ))
}

/// The stored response of an earlier execution, answered again.
pub fn replay(stored: StoredResponse) -> Response {
    let mut resp = Response::new(Body::from(stored.body));
    *resp.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in stored.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp.headers_mut()
        .insert(IDEMPOTENT_REPLAY, HeaderValue::from_static("true"));
    resp
}

/// `422`: the key was used under this token for another request.
pub fn mismatch() -> ApiError {
    ApiError::new(
        ErrorCode::IdempotencyKeyReused,
        "This Idempotency-Key was already used with this token for a different request.",
    )
}

/// `409`: the first request with this key is still running.
pub fn in_flight() -> ApiError {
    ApiError::new(
        ErrorCode::IdempotencyInFlight,
        "A request with this Idempotency-Key is still being processed; retry shortly.",
    )
    .retry_after(1)
}

/// Where a recorded response goes once its body has been sent.
pub struct Recorder {
    /// Where the write runs (it outlives the request).
    pub background: crate::Background,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The token the request ran under.
    pub token: TokenId,
    /// The idempotency key.
    pub key: String,
    /// Most body bytes stored; a larger response is not stored, and a retry runs again.
    pub max_bytes: usize,
}

impl Recorder {
    /// Wraps `resp` so that its body is stored under the key once it has been fully sent.
    pub fn record(self, resp: Response) -> Response {
        let (parts, body) = resp.into_parts();
        let headers: Headers = parts
            .headers
            .iter()
            // The body is replayed whole: its framing is decided again then.
            .filter(|(n, _)| {
                *n != CALLS_REMAINING
                    && *n != http::header::CONTENT_LENGTH
                    && *n != http::header::TRANSFER_ENCODING
            })
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        let status = parts.status.as_u16();
        let body = RecordingBody {
            inner: body,
            buf: Some(Vec::new()),
            recorder: Some((self, status, headers)),
        };
        Response::from_parts(parts, Body::new(body))
    }

    fn finish(self, status: u16, headers: Headers, body: Option<Vec<u8>>) {
        let background = self.background.clone();
        background.spawn(async move {
            let now = crate::unix_now();
            let result = match body {
                Some(body) => {
                    let stored = StoredResponse {
                        status,
                        headers,
                        body,
                    };
                    self.store
                        .idempotency_complete(&self.token, &self.key, &stored, now)
                        .await
                }
                // Too large to store: forget the key (no refund: the call was served).
                None => {
                    self.store
                        .idempotency_abort(&self.token, &self.key, false)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::error!(token = %self.token, error = %e, "could not record an idempotent response");
            }
        });
    }
}

/// Stored response headers: names and raw values.
type Headers = Vec<(String, Vec<u8>)>;

/// A response body that passes every frame through and keeps a copy (up to a limit); when the
/// body ends, the copy is stored.
struct RecordingBody {
    inner: Body,
    buf: Option<Vec<u8>>,
    recorder: Option<(Recorder, u16, Headers)>,
}

impl http_body::Body for RecordingBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some((rec, ..))) = (frame.data_ref(), &this.recorder) {
                    let over = this
                        .buf
                        .as_ref()
                        .is_some_and(|b| b.len() + data.len() > rec.max_bytes);
                    if over {
                        this.buf = None;
                    } else if let Some(buf) = &mut this.buf {
                        buf.extend_from_slice(data);
                    }
                }
                // With a known length, hyper stops polling once it has sent that many bytes:
                // the body is complete when the inner body says so, not only at `None`.
                if this.inner.is_end_stream()
                    && let Some((rec, status, headers)) = this.recorder.take()
                {
                    rec.finish(status, headers, this.buf.take());
                }
            }
            Poll::Ready(None) => {
                if let Some((rec, status, headers)) = this.recorder.take() {
                    rec.finish(status, headers, this.buf.take());
                }
            }
            // A broken upstream body is not recorded: the entry stays in flight until stale,
            // and the retry that takes it over runs again without a new charge.
            Poll::Ready(Some(Err(_))) => this.recorder = None,
            Poll::Pending => {}
        }
        polled
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }

    fn is_end_stream(&self) -> bool {
        self.recorder.is_none() && self.inner.is_end_stream()
    }
}
