//! The edge, attacked: every spelling of a priced path, host tricks, forged forwarding fields
//! and malformed bodies, sent as raw bytes over real loopback HTTP to a real gateway in front of
//! an upstream that normalises paths the way common servers do (decodes every escape, takes `\`
//! for `/`, strips `;` parameters, merges slashes, resolves dot segments, ignores case) and
//! records what it receives.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turnpike_gateway::Gateway;
use turnpike_gateway::config::{BackendConfig, DevBackendConfig, GatewayConfig, ServiceConfig};

/// The body the upstream serves for its priced part: it must never reach an unpaid client.
const PRICED: &str = "PRICED-CONTENT";

/// What the upstream received: request target and header fields.
#[derive(Debug, Clone)]
struct Received {
    target: String,
    headers: Vec<(String, String)>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

type Log = Arc<Mutex<Vec<Received>>>;

/// How a permissive server reads a path: every escape decoded, `\` as `/`, parameters
/// stripped, slashes merged, dots resolved, lower case.
fn server_view(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| raw.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(v) => {
                decoded.push(v);
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    let text = String::from_utf8_lossy(&decoded)
        .replace('\\', "/")
        .to_lowercase();
    let mut kept: Vec<&str> = Vec::new();
    for segment in text.split('/') {
        match segment.split(';').next().unwrap_or_default() {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            s => kept.push(s),
        }
    }
    format!("/{}", kept.join("/"))
}

async fn spawn_upstream(log: Log) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let log = log.clone();
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let target = req.uri().to_string();
                        let headers = req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.to_string(),
                                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                )
                            })
                            .collect();
                        log.lock().unwrap().push(Received {
                            target: target.clone(),
                            headers,
                        });
                        let path = server_view(target.split('?').next().unwrap_or_default());
                        let body = if path.starts_with("/secret") {
                            PRICED.to_owned()
                        } else {
                            format!("public:{path}")
                        };
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    addr
}

fn service(
    name: &str,
    host: Option<&str>,
    path: Option<&str>,
    up: SocketAddr,
    price: u64,
) -> ServiceConfig {
    ServiceConfig {
        host: host.map(Into::into),
        path: path.map(Into::into),
        ..ServiceConfig::new(name, format!("http://{up}"), price)
    }
}

struct Edge {
    addr: SocketAddr,
    log: Log,
    _dir: tempfile::TempDir,
}

async fn start(tweak: impl FnOnce(&mut GatewayConfig)) -> Edge {
    turnpike_lightning::ensure_crypto_provider();
    let log: Log = Arc::default();
    let up = spawn_upstream(log.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = GatewayConfig {
        data_dir: dir.path().join("data"),
        services: vec![
            service("docs", None, Some("/docs"), up, 0),
            service("secret", None, Some("/secret"), up, 10),
            service("paidhost", Some("paid.test"), None, up, 10),
            service("freehost", Some("free.test"), None, up, 0),
            service("site", None, Some("/"), up, 0),
        ],
        ..GatewayConfig::new(BackendConfig::Dev(DevBackendConfig::default()))
    };
    tweak(&mut config);
    let gateway = Gateway::from_config(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gateway.serve(listener, std::future::pending()));
    Edge {
        addr,
        log,
        _dir: dir,
    }
}

/// Sends `head` (and `body`) as raw bytes on a new connection and reads the whole answer
/// (`Connection: close` is added).
async fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("{head}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

async fn get(addr: SocketAddr, target: &str, host: &str) -> (u16, String) {
    raw(
        addr,
        &format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n"),
        b"",
    )
    .await
}

/// Spellings of `/secret` (and of paths around it) that permissive servers read as `/secret`.
const ATTACKS: &[&str] = &[
    "/secret",
    "/docs/../secret",
    "/docs/%2e%2e/secret",
    "/docs/%2E%2e/secret",
    "/docs/.%2E/secret",
    "/docs/..%2fsecret",
    "/docs/..%2Fsecret",
    "/docs/..%5csecret",
    "/docs/..\\secret",
    "/secr%65t",
    "/secr%45t",
    "//secret",
    "///secret",
    "/%2fsecret",
    "/./secret",
    "/x/.%2e/secret",
    "/docs/../../secret",
    "/SECRET",
    "/Secret/x",
    "/secret.json",
    "/secret.",
    "/secret%20",
    "/secret::$DATA",
    "/secret;jsessionid=1",
    "/docs/..;/secret",
    "/docs/.;/../secret",
    "/;x/secret",
    "/docs/x/;x/../../secret",
    "/docs/%252e%252e/secret",
    "/%c0%ae%c0%ae/secret",
    "/docs/%c0%ae%c0%ae/secret",
    "/docs/%e0%80%ae%e0%80%ae/secret",
    "/docs/..%00/secret",
    "/docs/%2e%2e%2fsecret",
    "/docs%2f..%2fsecret",
    "/docs/%2E%2E/%53ECRET",
];

#[tokio::test]
async fn no_spelling_of_a_priced_path_reaches_it_unpaid() {
    let edge = start(|_| {}).await;
    assert_no_spelling_reaches_the_secret(&edge).await;
}

/// Sends every spelling in [`ATTACKS`]: none may reach the priced content, and whatever the
/// upstream saw was free by its own reading.
async fn assert_no_spelling_reaches_the_secret(edge: &Edge) {
    for path in ATTACKS {
        let (status, answer) = get(edge.addr, path, "gw.test").await;
        assert!(
            matches!(status, 400 | 402 | 404),
            "{path}: status {status}\n{answer}"
        );
        assert!(
            !answer.contains(PRICED),
            "{path} reached the priced content"
        );
        if status == 400 {
            assert!(
                answer.contains("\"error\""),
                "{path}: no JSON error: {answer}"
            );
        }
    }
    // Every request the upstream saw was free by its own reading, and the path it got is the
    // canonical one the gateway matched.
    for r in edge.log.lock().unwrap().iter() {
        assert!(!server_view(&r.target).starts_with("/secret"), "{r:?}");
    }
}

/// Makes service 1 (`secret`) match by `path_regex` instead of `path`.
fn secret_by_regex(pattern: &str) -> impl FnOnce(&mut GatewayConfig) {
    let pattern = pattern.to_owned();
    move |c: &mut GatewayConfig| {
        c.services[1].path = None;
        c.services[1].path_regex = Some(pattern);
    }
}

#[tokio::test]
async fn a_path_regex_sees_the_canonical_path_so_no_spelling_gets_around_it() {
    // Aperture's `pathregexp: '^/secret'`: searched in the canonical path (escapes of
    // unreserved characters decoded, dot segments resolved, slashes merged, `;` parameters
    // dropped), letter case ignored by default.
    let edge = start(secret_by_regex("^/secret")).await;
    assert_no_spelling_reaches_the_secret(&edge).await;
    for target in [
        "http://gw.test/secret",
        "http://gw.test//secret",
        "http://gw.test/docs/../secret",
        "http://gw.test/%73ecret",
        "http://GW.test/SECRET",
    ] {
        let (status, answer) = raw(edge.addr, &format!("GET {target} HTTP/1.1\r\n"), b"").await;
        assert_eq!(status, 402, "{target}: {answer}");
        assert!(!answer.contains(PRICED), "{target}");
    }
    // What a client sees is a challenge for the regex-matched service.
    let (status, answer) = get(edge.addr, "/%73ecret/x", "gw.test").await;
    assert_eq!(status, 402, "{answer}");
    assert!(answer.contains("\"service\":\"secret\""), "{answer}");
    assert!(edge.log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_case_sensitive_path_regex_is_only_for_case_sensitive_upstreams() {
    // `(?-i)` asks for Aperture's exact RE2 semantics: `/SECRET` no longer matches and falls
    // through to the free catch-all. An upstream that routes without regard to case (this one
    // does) then serves the priced content for free, so the default ignores case.
    let edge = start(secret_by_regex("(?-i)^/secret")).await;
    let (status, answer) = get(edge.addr, "/secret", "gw.test").await;
    assert_eq!(status, 402, "{answer}");
    let (status, answer) = get(edge.addr, "/SECRET", "gw.test").await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(PRICED), "{answer}");
    // The other spellings still fold into the canonical path the regex sees.
    for path in ["//secret", "/x/../secret", "/%73ecret", "/secret;x"] {
        let (status, answer) = get(edge.addr, path, "gw.test").await;
        assert_eq!(status, 402, "{path}: {answer}");
    }
}

#[tokio::test]
async fn a_host_regex_sees_the_host_in_one_spelling_without_port() {
    let edge = start(|c| {
        c.services[2].host = None;
        c.services[2].host_regex = Some(r"^paid\.test$".into());
    })
    .await;
    for host in [
        "paid.test",
        "PAID.test",
        "paid.test.",
        "paid.test:8402",
        "Paid.Test.:1",
    ] {
        let (status, answer) = get(edge.addr, "/x", host).await;
        assert_eq!(status, 402, "{host}: {answer}");
    }
    let (status, answer) = get(edge.addr, "http://free.test/x", "paid.test").await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = raw(edge.addr, "GET http://paid.test/x HTTP/1.1\r\n", b"").await;
    assert_eq!(status, 402, "{answer}");
    let (status, _) = get(edge.addr, "/x", "notpaid.test").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_upstream_gets_the_path_that_was_matched() {
    let edge = start(|_| {}).await;
    let cases = [
        ("/docs/./a/../readme?x=%2e%2e", "/docs/readme?x=%2e%2e"),
        ("/docs//readme", "/docs/readme"),
        ("/d%6fcs/readme", "/docs/readme"),
        ("/docs/caf%c3%a9", "/docs/caf%C3%A9"),
        ("/docs/a;v=1", "/docs/a;v=1"),
    ];
    for (sent, expected) in cases {
        let (status, answer) = get(edge.addr, sent, "gw.test").await;
        assert_eq!(status, 200, "{sent}: {answer}");
        let seen = edge.log.lock().unwrap().last().unwrap().target.clone();
        assert_eq!(seen, expected, "{sent}");
    }
}

#[tokio::test]
async fn hosts_are_one_spelling_and_absolute_targets_cannot_disagree() {
    let edge = start(|_| {}).await;
    // A paid host in any spelling is still the paid host.
    for host in [
        "paid.test",
        "PAID.test",
        "paid.test.",
        "paid.test:8402",
        "Paid.Test.:1",
    ] {
        let (status, answer) = get(edge.addr, "/x", host).await;
        assert_eq!(status, 402, "{host}: {answer}");
    }
    // Absolute form: the target's authority is the host; a Host field that disagrees is refused.
    let (status, answer) = get(edge.addr, "http://free.test/x", "paid.test").await;
    assert_eq!(status, 400, "{answer}");
    assert!(!answer.contains("public:"));
    let (status, _) = raw(edge.addr, "GET http://paid.test/x HTTP/1.1\r\n", b"").await;
    assert_eq!(status, 402);
    let (status, _) = get(edge.addr, "http://free.test/x", "FREE.test.").await;
    assert_eq!(status, 200);
    let seen = edge.log.lock().unwrap().last().unwrap().clone();
    assert_eq!(seen.target, "/x");
    assert_eq!(seen.header("x-forwarded-host"), Some("free.test"));
    // Missing, doubled and malformed Host fields.
    let (status, _) = raw(edge.addr, "GET /docs HTTP/1.1\r\n", b"").await;
    assert_eq!(status, 400);
    let (status, _) = raw(
        edge.addr,
        "GET /docs HTTP/1.1\r\nHost: free.test\r\nHost: paid.test\r\n",
        b"",
    )
    .await;
    assert_eq!(status, 400);
    for bad in [
        "paid.test/../x",
        "user@paid.test",
        "paid..test",
        "paid.test:99999",
    ] {
        let (status, _) = get(edge.addr, "/docs", bad).await;
        assert_eq!(status, 400, "{bad}");
    }
    // HTTP/1.0 without Host is still served (by path).
    let (status, _) = raw(edge.addr, "GET /docs HTTP/1.0\r\n", b"").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn encoded_slashes_pass_only_where_a_service_allows_them() {
    let edge = start(|c| c.services[0].allow_encoded_slashes = true).await;
    let (status, _) = get(edge.addr, "/docs/a%2Fb", "gw.test").await;
    assert_eq!(status, 200);
    assert_eq!(
        edge.log.lock().unwrap().last().unwrap().target,
        "/docs/a%2Fb"
    );
    let (status, _) = get(edge.addr, "/other/a%2Fb", "gw.test").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn forged_forwarding_fields_are_replaced_and_a_trusted_proxys_extended() {
    let forged = "X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6;proto=https\r\n\
                  X-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: paid.test\r\n";
    let edge = start(|_| {}).await;
    let (status, _) = raw(
        edge.addr,
        &format!("GET /docs HTTP/1.1\r\nHost: free.test\r\n{forged}"),
        b"",
    )
    .await;
    assert_eq!(status, 200);
    let seen = edge.log.lock().unwrap().last().unwrap().clone();
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("free.test"));
    assert_eq!(
        seen.header("forwarded"),
        Some("for=127.0.0.1;host=\"free.test\";proto=http")
    );
    assert_eq!(
        seen.headers
            .iter()
            .filter(|(k, _)| k == "forwarded")
            .count(),
        1
    );
    assert!(
        !seen.headers.iter().any(|(_, v)| v.contains("6.6.6.6")),
        "{seen:?}"
    );

    let edge = start(|c| c.trusted_proxies = vec!["127.0.0.1".into()]).await;
    raw(
        edge.addr,
        &format!("GET /docs HTTP/1.1\r\nHost: free.test\r\n{forged}"),
        b"",
    )
    .await;
    let seen = edge.log.lock().unwrap().last().unwrap().clone();
    assert_eq!(seen.header("x-forwarded-for"), Some("6.6.6.6, 127.0.0.1"));
    assert_eq!(seen.header("x-real-ip"), Some("6.6.6.6"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    // The proxies maintain X-Forwarded-For (the default): a client's Forwarded is replaced.
    assert_eq!(
        seen.header("forwarded"),
        Some("for=127.0.0.1;host=\"free.test\";proto=https")
    );

    let edge = start(|c| {
        c.trusted_proxies = vec!["127.0.0.1".into()];
        c.forwarded_header = turnpike_gateway::client_ip::ForwardedHeader::Auto;
    })
    .await;
    raw(
        edge.addr,
        &format!("GET /docs HTTP/1.1\r\nHost: free.test\r\n{forged}"),
        b"",
    )
    .await;
    let seen = edge.log.lock().unwrap().last().unwrap().clone();
    assert_eq!(seen.header("x-forwarded-for"), Some("6.6.6.6, 127.0.0.1"));
    assert_eq!(
        seen.header("forwarded"),
        Some("for=6.6.6.6;proto=https, for=127.0.0.1;host=\"free.test\";proto=https")
    );
}

#[tokio::test]
async fn fields_that_redirect_the_upstream_or_spoof_the_client_never_pass() {
    let edge = start(|_| {}).await;
    let sneaky = "X_Real_IP: 6.6.6.6\r\nX_Forwarded_Host: evil.test\r\nX_Forwarded_For: 6.6.6.6\r\n\
                  X-Original-URL: /secret\r\nX-Rewrite-URL: /secret\r\n\
                  X-HTTP-Method-Override: DELETE\r\nTrue-Client-IP: 6.6.6.6\r\n";
    let (status, _) = raw(
        edge.addr,
        &format!("GET /docs HTTP/1.1\r\nHost: free.test\r\n{sneaky}"),
        b"",
    )
    .await;
    assert_eq!(status, 200);
    let seen = edge.log.lock().unwrap().last().unwrap().clone();
    for (name, value) in &seen.headers {
        assert!(
            !value.contains("6.6.6.6") && !value.contains("evil") && !value.contains("/secret"),
            "{name}: {value}"
        );
        assert!(!name.contains("override"), "{name}");
    }
}

#[tokio::test]
async fn methods_are_matched_in_upper_case_and_connect_is_refused() {
    let edge = start(|c| {
        let mut docs = c.services.remove(0);
        docs.routes = vec![turnpike_gateway::config::RouteConfig {
            name: "gen".into(),
            path: Some("/docs/gen".into()),
            path_regex: None,
            method: Some("POST".into()),
            price_sats: 50,
            calls_per_payment: None,
            time_pass_secs: None,
            token_lifetime_secs: None,
            description: None,
            input_schema: None,
        }];
        c.services.insert(0, docs);
    })
    .await;
    for method in ["POST", "post", "Post"] {
        let (status, answer) = raw(
            edge.addr,
            &format!("{method} /docs/gen HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n"),
            b"",
        )
        .await;
        assert_eq!(status, 402, "{method}: {answer}");
    }
    let (status, _) = raw(edge.addr, "CONNECT /docs HTTP/1.1\r\nHost: a\r\n", b"").await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn reserved_and_non_ascii_characters_cannot_dodge_a_price() {
    let edge = start(|c| {
        let up = c.services[1].upstream.clone();
        c.services.insert(
            0,
            ServiceConfig {
                path: Some("/v1/models:predict".into()),
                ..ServiceConfig::new("predict", up.clone(), 10)
            },
        );
        c.services.insert(
            0,
            ServiceConfig {
                path: Some("/café".into()),
                ..ServiceConfig::new("cafe", up, 10)
            },
        );
    })
    .await;
    for path in [
        "/v1/models:predict",
        "/v1/models%3Apredict",
        "/v1/models%3apredict",
        "/V1/Models%3APredict",
        "/caf%C3%A9",
        "/caf%c3%a9/menu",
        "/docs/%25%32%65%25%32%65/secret",
        "/docs/%252%65%252%65/secret",
    ] {
        let (status, answer) = get(edge.addr, path, "gw.test").await;
        assert!(matches!(status, 400 | 402), "{path}: {status}\n{answer}");
    }
    // Raw UTF-8 reaches the upstream escaped, not garbled.
    let (status, _) = get(edge.addr, "/docs/caf\u{e9}/./x", "gw.test").await;
    assert_eq!(status, 200);
    assert_eq!(
        edge.log.lock().unwrap().last().unwrap().target,
        "/docs/caf%C3%A9/x"
    );
}

#[tokio::test]
async fn a_malformed_request_body_is_a_400_not_a_502() {
    let edge = start(|_| {}).await;
    let (status, answer) = raw(
        edge.addr,
        "POST /docs HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n",
        b"zz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("bad_request"), "{answer}");
}
