//! The connection set against scripted upstreams on real loopback sockets.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use super::*;

/// What the scripted upstream does after answering.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    KeepOpen,
    Close,
}

/// A raw HTTP/1.1 upstream: every request read (head and body, as sent) is recorded and
/// answered by `answer`, which sees the raw request.
struct Scripted {
    authority: Authority,
    accepted: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
}

async fn scripted(answer: fn(&[u8]) -> (Vec<u8>, After)) -> Scripted {
    scripted_per_connection(answer, |_, _| None).await
}

/// A scripted answer: the raw response and what the upstream does after it.
type Answer = (Vec<u8>, After);

/// Like [`scripted`], but `nth` may answer the n-th request of a connection (from 0) itself.
async fn scripted_per_connection(
    answer: fn(&[u8]) -> Answer,
    nth: fn(&[u8], usize) -> Option<Answer>,
) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (acc, reqs) = (accepted.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            acc.fetch_add(1, Ordering::SeqCst);
            let reqs = reqs.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for n in 0.. {
                    let Some(request) = read_request(&mut stream, &mut buf).await else {
                        return;
                    };
                    let (response, after) = nth(&request, n).unwrap_or_else(|| answer(&request));
                    reqs.lock().unwrap().push(request);
                    if stream.write_all(&response).await.is_err() || after == After::Close {
                        return;
                    }
                }
            });
        }
    });
    Scripted {
        authority,
        accepted,
        requests,
    }
}

/// Reads one request (head, then a Content-Length or chunked body) off `stream`.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let find = |buf: &[u8], pat: &[u8]| buf.windows(pat.len()).position(|w| w == pat);
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().parse::<usize>().unwrap());
    let chunked = head.contains("transfer-encoding: chunked");
    let end = loop {
        if let Some(n) = length
            && buf.len() >= head_end + n
        {
            break head_end + n;
        }
        if chunked && let Some(i) = find(&buf[head_end..], b"0\r\n\r\n") {
            break head_end + i + 5;
        }
        if length.is_none() && !chunked {
            break head_end;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    Some(buf.drain(..end).collect())
}

fn host_fields<'a>(
    authority: &'a Authority,
    added: &'a mut [(&'a str, &'a [u8]); 1],
) -> RequestFields<'a> {
    static NONE: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(HeaderMap::new);
    added[0] = ("host", authority.as_str().as_bytes());
    RequestFields {
        headers: &NONE,
        keep: &|_, _| true,
        added: &added[..],
        configured: &[],
    }
}

async fn get(
    set: &Arc<Upstreams>,
    up: &Scripted,
    method: Method,
    body: Body,
) -> Result<(http::StatusCode, HeaderMap, Vec<u8>), ExchangeError> {
    let resp = set
        .send(
            &up.authority,
            &method,
            &PathAndQuery::from_static("/p?q=1"),
            host_fields(&up.authority, &mut [("", b"")]),
            body,
        )
        .await?;
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|e| ExchangeError::new(e.to_string()))?
        .to_bytes();
    Ok((parts.status, parts.headers, bytes.to_vec()))
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Up: 1\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn keep_alive_connections_are_reused() {
    let up = scripted(|_| (ok("hello"), After::KeepOpen)).await;
    let set = Upstreams::new();
    for _ in 0..5 {
        let (status, headers, body) = get(&set, &up, Method::GET, Body::empty()).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(headers["x-up"], "1");
        assert_eq!(body, b"hello");
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(set.idle_count(&up.authority), 1);
    let first = up.requests.lock().unwrap()[0].clone();
    let text = String::from_utf8(first).unwrap();
    assert!(text.starts_with("GET /p?q=1 HTTP/1.1\r\n"), "{text}");
    assert!(text.contains(&format!("host: {}\r\n", up.authority)));
}

#[tokio::test]
async fn chunked_bodies_are_decoded_and_the_connection_reused() {
    let up = scripted(|_| {
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n"
                .to_vec(),
            After::KeepOpen,
        )
    })
    .await;
    let set = Upstreams::new();
    for _ in 0..3 {
        let (_, headers, body) = get(&set, &up, Method::GET, Body::empty()).await.unwrap();
        assert_eq!(body, b"hello, world");
        assert!(headers.get("transfer-encoding").is_none());
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn close_delimited_and_connection_close_responses_are_not_reused() {
    let up = scripted(|_| (b"HTTP/1.1 200 OK\r\n\r\nuntil close".to_vec(), After::Close)).await;
    let set = Upstreams::new();
    for _ in 0..2 {
        let (_, _, body) = get(&set, &up, Method::GET, Body::empty()).await.unwrap();
        assert_eq!(body, b"until close");
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(set.idle_count(&up.authority), 0);

    let up = scripted(|_| {
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            After::KeepOpen,
        )
    })
    .await;
    for _ in 0..2 {
        get(&set, &up, Method::GET, Body::empty()).await.unwrap();
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(set.idle_count(&up.authority), 0);
}

#[tokio::test]
async fn an_idle_connection_closed_by_the_upstream_is_replaced() {
    // The upstream answers with keep-alive framing and then closes anyway (an idle timeout).
    let up = scripted(|_| (ok("x"), After::Close)).await;
    let set = Upstreams::new();
    for _ in 0..3 {
        let (status, _, body) = get(&set, &up, Method::GET, Body::empty()).await.unwrap();
        assert_eq!((status.as_u16(), body.as_slice()), (200, &b"x"[..]));
        // Let the close reach us before the next request.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 3);
}

/// A connection whose peer has already closed it.
async fn closed_connection(reused: bool) -> Conn {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (peer, _) = listener.accept().await.unwrap();
    drop(peer);
    tokio::time::sleep(Duration::from_millis(20)).await;
    Conn {
        stream,
        buf: BytesMut::new(),
        reused,
        idle_limit: IDLE_TIMEOUT,
    }
}

#[tokio::test]
async fn a_closed_idle_connection_is_not_handed_out_and_counts_as_stale() {
    let set = Upstreams::new();
    let authority: Authority = "127.0.0.1:1".parse().unwrap();
    set.put_back(&authority, closed_connection(false).await);
    assert_eq!(set.idle_count(&authority), 1);
    assert!(set.checkout(&authority).is_none());
    assert_eq!(set.idle_count(&authority), 0);

    // Closed between the check and the request: nothing comes back. On a reused connection
    // that is "stale" (the caller may resend an idempotent request), on a new one it is not.
    let request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
    for reused in [true, false] {
        let err = exchange(
            closed_connection(reused).await,
            request,
            RequestFraming::None,
            None,
            false,
        )
        .await
        .unwrap_err();
        assert_eq!(err.stale, reused, "{err}");
    }
}

#[tokio::test]
async fn request_bodies_are_sent_with_their_length_or_chunked() {
    let up = scripted(|req| (ok(&req.len().to_string()), After::KeepOpen)).await;
    let set = Upstreams::new();
    let (status, _, _) = get(&set, &up, Method::POST, Body::from("0123456789"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let stream = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(Bytes::from_static(b"abc")),
        Ok(Bytes::from_static(b"defgh")),
    ]);
    get(&set, &up, Method::PUT, Body::from_stream(stream))
        .await
        .unwrap();
    get(&set, &up, Method::POST, Body::empty()).await.unwrap();
    let requests = up.requests.lock().unwrap().clone();
    let texts: Vec<String> = requests
        .into_iter()
        .map(|r| String::from_utf8(r).unwrap())
        .collect();
    assert!(texts[0].contains("content-length: 10\r\n"), "{}", texts[0]);
    assert!(texts[0].ends_with("\r\n\r\n0123456789"));
    assert!(
        texts[1].contains("transfer-encoding: chunked\r\n"),
        "{}",
        texts[1]
    );
    assert!(texts[1].ends_with("\r\n\r\n3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n"));
    assert!(texts[2].contains("content-length: 0\r\n"));
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn head_and_no_content_responses_have_no_body() {
    let up = scripted(|req| {
        let resp = if req.starts_with(b"HEAD") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec()
        } else {
            b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()
        };
        (resp, After::KeepOpen)
    })
    .await;
    let set = Upstreams::new();
    let (status, headers, body) = get(&set, &up, Method::HEAD, Body::empty()).await.unwrap();
    assert_eq!((status.as_u16(), body.len()), (200, 0));
    assert_eq!(headers["content-length"], "1000");
    let (status, _, body) = get(&set, &up, Method::DELETE, Body::empty()).await.unwrap();
    assert_eq!((status.as_u16(), body.len()), (204, 0));
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_dropped_early_closes_its_connection() {
    let up = scripted(|_| {
        let mut resp = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
        resp.extend(std::iter::repeat_n(b'a', 100_000));
        (resp, After::KeepOpen)
    })
    .await;
    let set = Upstreams::new();
    let resp = set
        .send(
            &up.authority,
            &Method::GET,
            &PathAndQuery::from_static("/"),
            host_fields(&up.authority, &mut [("", b"")]),
            Body::empty(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.into_data().is_ok());
    drop(body);
    assert_eq!(set.idle_count(&up.authority), 0);
    let (_, _, whole) = get(&set, &up, Method::GET, Body::empty()).await.unwrap();
    assert_eq!(whole.len(), 100_000);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(set.idle_count(&up.authority), 1);
}

#[tokio::test]
async fn bad_answers_are_errors() {
    let set = Upstreams::new();
    for answer in [
        (|_: &[u8]| (b"garbage\r\n\r\n".to_vec(), After::Close)) as fn(&[u8]) -> _,
        |_| {
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort".to_vec(),
                After::Close,
            )
        },
        |_| {
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n".to_vec(),
                After::Close,
            )
        },
        |_| (b"HTTP/1.1 200 OK\r\nContent-Le".to_vec(), After::Close),
        |_| (Vec::new(), After::Close),
    ] {
        let up = scripted(answer).await;
        assert!(get(&set, &up, Method::GET, Body::empty()).await.is_err());
        assert_eq!(set.idle_count(&up.authority), 0);
    }
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority: Authority = closed.local_addr().unwrap().to_string().parse().unwrap();
    drop(closed);
    let err = set
        .send(
            &authority,
            &Method::GET,
            &PathAndQuery::from_static("/"),
            host_fields(&authority, &mut [("", b"")]),
            Body::empty(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn an_upstreams_short_keep_alive_timeout_is_honoured() {
    // timeout=1 leaves no safe time to reuse the connection; timeout=30 does.
    let up = scripted(|_| {
        (
            b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\nContent-Length: 1\r\n\r\nx".to_vec(),
            After::KeepOpen,
        )
    })
    .await;
    let set = Upstreams::new();
    for _ in 0..2 {
        get(&set, &up, Method::GET, Body::empty()).await.unwrap();
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(set.idle_count(&up.authority), 0);

    let up = scripted(|_| {
        (
            b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=30, max=100\r\nContent-Length: 1\r\n\r\nx"
                .to_vec(),
            After::KeepOpen,
        )
    })
    .await;
    for _ in 0..2 {
        get(&set, &up, Method::GET, Body::empty()).await.unwrap();
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn expired_idle_connections_are_closed_when_others_come_back() {
    let set = Upstreams::new();
    let authority: Authority = "127.0.0.1:1".parse().unwrap();
    let mut old = closed_connection(false).await;
    old.idle_limit = Duration::ZERO;
    set.put_back(&authority, old);
    assert_eq!(set.idle_count(&authority), 1);
    set.put_back(&authority, closed_connection(false).await);
    assert_eq!(set.idle_count(&authority), 1, "the expired one was closed");
}

/// The second request on a connection gets "408, closing": the upstream's idle timeout.
fn idle_timeout_on_reuse(_: &[u8], n: usize) -> Option<(Vec<u8>, After)> {
    (n > 0).then(|| {
        (
            b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
            After::Close,
        )
    })
}

#[tokio::test]
async fn a_408_closing_a_reused_connection_is_an_idle_timeout_not_an_answer() {
    let up = scripted_per_connection(|_| (ok("x"), After::KeepOpen), idle_timeout_on_reuse).await;
    let set = Upstreams::new();
    get(&set, &up, Method::GET, Body::empty()).await.unwrap();
    // Reused: 408 and close; the GET is sent again on a fresh connection and answered.
    let (status, _, body) = get(&set, &up, Method::GET, Body::empty()).await.unwrap();
    assert_eq!((status.as_u16(), body.as_slice()), (200, &b"x"[..]));
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    // A POST is not sent twice: it fails (the gateway answers 502 and gives the call back).
    let err = get(&set, &up, Method::POST, Body::from("data"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("408"), "{err}");
}
