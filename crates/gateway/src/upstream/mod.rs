//! Keep-alive HTTP/1.1 connections to plain-HTTP upstreams, used by the request that holds them.
//!
//! hyper's pooled client drives every connection from a task of its own and passes each request
//! and response through channels, after a pool checkout. For the usual deployment (the API on
//! the same host or network, over plain HTTP) this module does less per call: the request's own
//! task takes an idle connection, writes the request head (and body), reads the response head,
//! and the response body is read straight from the socket by whoever polls it. A connection
//! whose response was read to its end goes back to the idle list of the worker that owns it.
//!
//! TLS upstreams keep using hyper's client (see [`crate::proxy`]).

pub mod chunked;
pub mod head;

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Response};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use chunked::{ChunkedDecoder, Step};
use head::Framing;

/// Idle connections kept per upstream (per worker).
const MAX_IDLE_PER_UPSTREAM: usize = 256;
/// An idle connection older than this is closed rather than reused (sooner when the upstream
/// announces a shorter `Keep-Alive: timeout`).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Margin kept before the upstream's own idle timeout.
const IDLE_MARGIN: Duration = Duration::from_secs(1);
/// Time allowed to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Room made in a connection's buffer before each read.
const READ_CHUNK: usize = 8 * 1024;

/// Why an exchange with the upstream failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExchangeError {
    message: String,
    /// Nothing at all came back on a reused connection: it was closed by the upstream while
    /// idle, and the request may be sent again on a fresh one.
    stale: bool,
    /// The client's request body was malformed or did not match its announced length.
    client_fault: bool,
}

impl ExchangeError {
    fn new(message: impl Into<String>) -> ExchangeError {
        ExchangeError {
            message: message.into(),
            stale: false,
            client_fault: false,
        }
    }

    fn client(message: impl Into<String>) -> ExchangeError {
        ExchangeError {
            client_fault: true,
            ..ExchangeError::new(message)
        }
    }

    /// Whether the client's request (its body) was at fault, not the upstream.
    pub fn is_client_fault(&self) -> bool {
        self.client_fault
    }
}

/// One connection and the bytes read from it but not consumed yet.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    reused: bool,
    /// How long it may stay idle before it is closed rather than reused.
    idle_limit: Duration,
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    expires: Instant,
}

/// The idle connections of one worker, per upstream: keyed by the authority's text as
/// configured (hashed in one pass; `Authority`'s own hash and comparison go byte by byte,
/// ignoring case, which cost more than the rest of the lookup).
#[derive(Debug, Default)]
pub struct Upstreams {
    idle: Mutex<HashMap<Box<str>, VecDeque<Idle>, foldhash::fast::RandomState>>,
}

/// The request's header fields as sent upstream.
pub struct RequestFields<'a> {
    /// The client's fields.
    pub headers: &'a HeaderMap,
    /// Which of the client's fields are passed on (`Content-Length` and `Transfer-Encoding`
    /// never are: the body's framing is set here).
    pub keep: &'a (dyn Fn(&HeaderName, &HeaderValue) -> bool + Sync),
    /// Fields the proxy adds (`Host` among them), written after the client's. A value holding
    /// CR, LF or NUL is left out.
    pub added: &'a [(&'a str, &'a [u8])],
    /// The service's own fields (an upstream API key), written last; `keep` must drop the
    /// client's fields of the same names.
    pub configured: &'a [(HeaderName, HeaderValue)],
}

/// How the request body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestFraming {
    None,
    Length(u64),
    Chunked,
}

impl Upstreams {
    /// An empty connection set.
    pub fn new() -> Arc<Upstreams> {
        Arc::new(Upstreams::default())
    }

    /// Sends a request to `authority` (`host[:port]`, port 80 by default) in origin form and
    /// returns the response head with a body that streams from the connection. `fields` must
    /// add `Host`; the body's framing fields are set here.
    pub async fn send(
        self: &Arc<Self>,
        authority: &Authority,
        method: &Method,
        path_and_query: &PathAndQuery,
        fields: RequestFields<'_>,
        body: Body,
    ) -> Result<Response<UpstreamBody>, ExchangeError> {
        let framing = if body.is_end_stream() {
            RequestFraming::None
        } else {
            match body.size_hint().exact() {
                Some(n) => RequestFraming::Length(n),
                None => RequestFraming::Chunked,
            }
        };
        let head = encode_head(method, path_and_query, &fields, framing);
        let request_was_head = method == Method::HEAD;
        // Sending again after a stale connection is safe only without a body (it was not
        // consumed) and for an idempotent method (RFC 9110 §9.2.2).
        let resendable = framing == RequestFraming::None && method.is_idempotent();
        let mut body = Some(body);
        while let Some(conn) = self.checkout(authority) {
            match exchange(conn, &head, framing, body.take(), request_was_head).await {
                Ok(done) => return Ok(self.respond(authority, done)),
                Err(e) if e.stale && resendable => {
                    tracing::debug!(%authority, "idle upstream connection was closed; trying another");
                    body = Some(Body::empty());
                }
                Err(e) => return Err(e),
            }
        }
        let conn = connect(authority).await?;
        let done = exchange(conn, &head, framing, body, request_was_head).await?;
        Ok(self.respond(authority, done))
    }

    fn respond(
        self: &Arc<Self>,
        authority: &Authority,
        (head, mut conn): (head::ResponseHead, Conn),
    ) -> Response<UpstreamBody> {
        let mut keep_alive = head.keep_alive;
        if let Some(upstreams) = head.idle_timeout {
            conn.idle_limit = upstreams.saturating_sub(IDLE_MARGIN).min(IDLE_TIMEOUT);
            keep_alive &= !conn.idle_limit.is_zero();
        }
        let mut body = UpstreamBody {
            conn: Some(conn),
            read: match head.framing {
                Framing::Empty | Framing::Length(0) => Reading::Done,
                Framing::Length(n) => Reading::Length(n),
                Framing::Chunked => Reading::Chunked(ChunkedDecoder::new()),
                Framing::UntilClose => Reading::UntilClose,
            },
            keep_alive,
            home: Some((self.clone(), authority.clone())),
        };
        if matches!(body.read, Reading::Done) {
            body.finish();
        }
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.headers_mut() = head.headers;
        resp
    }

    /// The most recently used idle connection to `authority` that is still open.
    fn checkout(&self, authority: &Authority) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(authority.as_str())?;
        let now = Instant::now();
        while let Some(Idle { mut conn, expires }) = list.pop_back() {
            if now < expires && still_open(&mut conn.stream) {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    fn put_back(&self, authority: &Authority, conn: Conn) {
        let now = Instant::now();
        let entry = Idle {
            expires: now + conn.idle_limit,
            conn,
        };
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        match idle.get_mut(authority.as_str()) {
            Some(list) => {
                // The oldest connections wait at the front: close those past their limit.
                while list.front().is_some_and(|oldest| oldest.expires <= now) {
                    list.pop_front();
                }
                if list.len() < MAX_IDLE_PER_UPSTREAM {
                    list.push_back(entry);
                }
            }
            None => {
                idle.insert(authority.as_str().into(), VecDeque::from([entry]));
            }
        }
    }

    /// Idle connections held for `authority` (for tests and metrics).
    pub fn idle_count(&self, authority: &Authority) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.get(authority.as_str()).map_or(0, VecDeque::len)
    }
}

/// Whether an idle connection has seen neither a close nor stray bytes from its peer.
fn still_open(stream: &mut TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        // Readable: either a stale readiness from the last response (the read would block),
        // or an end of stream / unexpected bytes: the connection cannot be used.
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

async fn connect(authority: &Authority) -> Result<Conn, ExchangeError> {
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| ExchangeError::new(format!("connecting to {authority} timed out")))?
        .map_err(|e| ExchangeError::new(format!("cannot connect to {authority}: {e}")))?;
    let _ = stream.set_nodelay(true);
    Ok(Conn {
        stream,
        buf: BytesMut::new(),
        reused: false,
        idle_limit: IDLE_TIMEOUT,
    })
}

/// Writes the request line and header fields, with the body's framing fields.
fn encode_head(
    method: &Method,
    path_and_query: &PathAndQuery,
    fields: &RequestFields<'_>,
    framing: RequestFraming,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + fields.headers.len() * 48);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path_and_query.as_str().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in fields.headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || !(fields.keep)(name, value)
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let configured = fields
        .configured
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()));
    for (name, value) in fields.added.iter().copied().chain(configured) {
        if value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        RequestFraming::None
            if *method == Method::POST || *method == Method::PUT || *method == Method::PATCH =>
        {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        RequestFraming::None => {}
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Sends one request on `conn` and reads the response head.
async fn exchange(
    mut conn: Conn,
    head: &[u8],
    framing: RequestFraming,
    body: Option<Body>,
    request_was_head: bool,
) -> Result<(head::ResponseHead, Conn), ExchangeError> {
    let reused = conn.reused;
    let stale = |e: std::io::Error, what: &str| ExchangeError {
        stale: reused,
        ..ExchangeError::new(format!("{what}: {e}"))
    };
    conn.stream
        .write_all(head)
        .await
        .map_err(|e| stale(e, "writing the request"))?;
    // An upstream may answer before it has read the whole body (401, 413) and close: the
    // write then fails, but its answer is still read and passed on.
    let mut unsent = None;
    if let Some(body) = body
        && framing != RequestFraming::None
    {
        match write_body(&mut conn.stream, body, framing).await {
            Ok(()) => {}
            Err(BodyError::Upstream(e)) => unsent = Some(e),
            Err(BodyError::Request(e)) => return Err(e),
        }
    }
    let mut received = false;
    loop {
        match head::parse(&mut conn.buf, request_was_head) {
            // A 408 that closes a reused connection: it timed out while idle, before this request
            // reached it (an idempotent request without a body is sent again on a fresh one).
            Ok(Some(h)) if reused && is_idle_close(&h) => {
                return Err(ExchangeError {
                    stale: true,
                    ..ExchangeError::new("the upstream closed an idle connection (408)")
                });
            }
            Ok(Some(mut h)) => {
                if unsent.is_some() {
                    h.keep_alive = false;
                }
                return Ok((h, conn));
            }
            Ok(None) => {}
            Err(e) => return Err(ExchangeError::new(format!("invalid response: {e}"))),
        }
        conn.buf.reserve(READ_CHUNK);
        match read_buf(&mut conn.stream, &mut conn.buf).await {
            Ok(0) | Err(_) if let Some(e) = unsent => return Err(e),
            Ok(0) if !received => {
                return Err(ExchangeError {
                    stale: reused,
                    ..ExchangeError::new("the connection was closed before a response")
                });
            }
            Ok(0) => {
                return Err(ExchangeError::new(
                    "the connection was closed in the middle of the response head",
                ));
            }
            Ok(_) => received = true,
            Err(e) if !received => return Err(stale(e, "reading the response")),
            Err(e) => return Err(ExchangeError::new(format!("reading the response: {e}"))),
        }
    }
}

/// Whether a response head is an upstream's "408, closing" for an idle connection.
fn is_idle_close(h: &head::ResponseHead) -> bool {
    h.status == http::StatusCode::REQUEST_TIMEOUT && !h.keep_alive
}

/// Why a request body was not sent whole.
enum BodyError {
    /// Writing to the upstream failed: its answer may still be waiting to be read.
    Upstream(ExchangeError),
    /// The client's body failed or did not match its announced length.
    Request(ExchangeError),
}

async fn write_body(
    stream: &mut TcpStream,
    mut body: Body,
    framing: RequestFraming,
) -> Result<(), BodyError> {
    let mut sent: u64 = 0;
    let write_err = |e: std::io::Error| {
        BodyError::Upstream(ExchangeError::new(format!("writing the request body: {e}")))
    };
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            BodyError::Request(ExchangeError::client(format!(
                "the request body could not be read: {e}"
            )))
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // Trailers are not forwarded.
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        match framing {
            RequestFraming::Length(n) if sent > n => {
                return Err(BodyError::Request(ExchangeError::client(
                    "the request body is longer than announced",
                )));
            }
            RequestFraming::Chunked => {
                let size = format!("{:x}\r\n", data.len());
                stream.write_all(size.as_bytes()).await.map_err(write_err)?;
                stream.write_all(&data).await.map_err(write_err)?;
                stream.write_all(b"\r\n").await.map_err(write_err)?;
            }
            _ => stream.write_all(&data).await.map_err(write_err)?,
        }
    }
    match framing {
        RequestFraming::Length(n) if sent != n => Err(BodyError::Request(ExchangeError::client(
            "the request body is shorter than announced",
        ))),
        RequestFraming::Chunked => stream.write_all(b"0\r\n\r\n").await.map_err(write_err),
        _ => Ok(()),
    }
}

async fn read_buf(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| poll_read_buf(stream, cx, buf)).await
}

fn poll_read_buf(
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<std::io::Result<usize>> {
    tokio_util::io::poll_read_buf(Pin::new(stream), cx, buf)
}

#[derive(Debug)]
enum Reading {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// A response body read straight from the upstream connection. Read to its end, the connection
/// goes back to its worker's idle list; dropped earlier, the connection is closed.
#[derive(Debug)]
pub struct UpstreamBody {
    conn: Option<Conn>,
    read: Reading,
    keep_alive: bool,
    home: Option<(Arc<Upstreams>, Authority)>,
}

impl UpstreamBody {
    /// The body is complete: the connection is reusable if the upstream kept it alive and sent
    /// nothing beyond this response.
    fn finish(&mut self) {
        self.read = Reading::Done;
        let Some(conn) = self.conn.take() else { return };
        if let Some((home, authority)) = self.home.take()
            && self.keep_alive
            && conn.buf.is_empty()
        {
            home.put_back(&authority, conn);
        }
    }

    fn fail(&mut self, message: String) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        // The client gets a truncated body (its connection is closed): say why here.
        let upstream = self.home.as_ref().map(|(_, authority)| authority.as_str());
        tracing::warn!(upstream, error = %message, "upstream response body failed: the client's response is cut short");
        self.read = Reading::Done;
        self.conn = None;
        Poll::Ready(Some(Err(std::io::Error::other(message))))
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.read {
                Reading::Done => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Reading::Length(left) => {
                    if !conn.buf.is_empty() {
                        let take = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(conn.buf.len());
                        let data = conn.buf.split_to(take).freeze();
                        *left -= take as u64;
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Reading::Chunked(decoder) => match decoder.step(&mut conn.buf) {
                    Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Step::Done) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Step::NeedMore) => {}
                    Err(e) => return this.fail(format!("upstream sent a bad chunked body: {e}")),
                },
                Reading::UntilClose => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            // The buffer holds nothing more of the body: read.
            if conn.buf.capacity() - conn.buf.len() < READ_CHUNK / 2 {
                conn.buf.reserve(READ_CHUNK);
            }
            match ready!(poll_read_buf(&mut conn.stream, cx, &mut conn.buf)) {
                Ok(0) if matches!(this.read, Reading::UntilClose) => {
                    this.keep_alive = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail("the upstream closed the connection mid-body".into()),
                Ok(_) => {}
                Err(e) => return this.fail(format!("reading the upstream body: {e}")),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.read, Reading::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.read {
            Reading::Length(n) => SizeHint::with_exact(n),
            Reading::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
