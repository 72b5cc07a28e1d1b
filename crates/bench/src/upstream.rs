//! The upstream every scenario proxies to: a fixed small JSON answer on any path, an SSE stream
//! on paths ending in `/sse`, and a count of the requests it served (`/_bench/count`, read
//! directly, never through a proxy; `/_bench/reset` zeroes it).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

const BODY: &[u8] = b"{\"hello\":\"world\",\"n\":42}\n";

type Out = BoxBody<Bytes, Infallible>;

/// Runs the upstream until the process is killed.
pub fn run(listen: SocketAddr, threads: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        eprintln!("bench upstream on {listen}");
        let served = Arc::new(AtomicU64::new(0));
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let served = served.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(req, served.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

async fn handle(
    req: Request<Incoming>,
    served: Arc<AtomicU64>,
) -> Result<Response<Out>, Infallible> {
    let path = req.uri().path();
    if path == "/_bench/count" {
        let n = served.load(Ordering::SeqCst);
        return Ok(text(n.to_string()));
    }
    if path == "/_bench/reset" {
        served.store(0, Ordering::SeqCst);
        return Ok(text("0".into()));
    }
    served.fetch_add(1, Ordering::Relaxed);
    if path.ends_with("/sse") {
        let (events, interval_ms) = sse_params(req.uri().query().unwrap_or(""));
        return Ok(sse(events, interval_ms));
    }
    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)).boxed());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

fn text(s: String) -> Response<Out> {
    Response::new(Full::new(Bytes::from(s)).boxed())
}

fn sse_params(query: &str) -> (u64, u64) {
    let mut events = 100;
    let mut interval_ms = 10;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("n", v)) => events = v.parse().unwrap_or(events),
            Some(("ms", v)) => interval_ms = v.parse().unwrap_or(interval_ms),
            _ => {}
        }
    }
    (events.min(100_000), interval_ms.min(10_000))
}

/// `events` events, one every `interval_ms`, each carrying the time it was written.
fn sse(events: u64, interval_ms: u64) -> Response<Out> {
    let stream = futures_util::stream::unfold(0u64, move |i| async move {
        if i >= events {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        }
        let line = format!("data: {{\"i\":{i},\"t\":{}}}\n\n", crate::unix_nanos());
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line))), i + 1))
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    resp
}
