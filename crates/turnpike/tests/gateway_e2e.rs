//! End-to-end: the gateway on real loopback HTTP, a real upstream, a real SQLite file, the dev
//! Lightning backend, and the paying client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::routing::{any, get};
use http::{HeaderMap, StatusCode};
use turnpike_client::{FetchRequest, L402Client};
use turnpike_gateway::config::{
    BackendConfig, DevBackendConfig, GatewayConfig, ServiceConfig, StoreConfig,
};
use turnpike_gateway::{Gateway, GatewayParts};
use turnpike_l402::caveat::Caveat;
use turnpike_l402::credential::Credential;
use turnpike_l402::identifier::Identifier;
use turnpike_l402::macaroon::Macaroon;
use turnpike_l402::root_key::MasterKey;
use turnpike_l402::token::{MintRequest, Minter};
use turnpike_l402::{Msat, Preimage, Sats};
use turnpike_lightning::{CreateInvoice, DevBackend, DevPayWallet, InvoiceBackend, PaymentBackend};
use turnpike_store::{Inspect, SqliteStore};

/// The test upstream: `/echo` reflects what it received; `/sse` sends one event, then waits
/// for the test's go-ahead before the second.
fn upstream(release: Arc<tokio::sync::Notify>) -> axum::Router {
    axum::Router::new()
        .route(
            "/echo/{*rest}",
            any(|req: http::Request<Body>| async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .unwrap_or_default();
                let headers: Vec<(String, String)> = parts
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                axum::Json(serde_json::json!({
                    "method": parts.method.as_str(),
                    "uri": parts.uri.to_string(),
                    "headers": headers,
                    "body": String::from_utf8_lossy(&body),
                }))
            }),
        )
        .route(
            "/status/{code}",
            get(
                |axum::extract::Path(code): axum::extract::Path<u16>| async move {
                    (
                        StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT),
                        "status as asked",
                    )
                },
            ),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "too late"
            }),
        )
        .route(
            "/sse",
            get(move || {
                let release = release.clone();
                async move {
                    let events = futures_util::stream::unfold(0u8, move |i| {
                        let release = release.clone();
                        async move {
                            match i {
                                0 => Some((
                                    Ok::<_, std::convert::Infallible>(Bytes::from(
                                        "data: first\n\n",
                                    )),
                                    1,
                                )),
                                1 => {
                                    release.notified().await;
                                    Some((Ok(Bytes::from("data: second\n\n")), 2))
                                }
                                _ => None,
                            }
                        }
                    });
                    (
                        [(http::header::CONTENT_TYPE, "text/event-stream")],
                        Body::from_stream(events),
                    )
                }
            }),
        )
}

struct Harness {
    base: String,
    store: Arc<dyn Inspect>,
    dev: Arc<DevBackend>,
    master: [u8; 32],
    release: Arc<tokio::sync::Notify>,
    _dir: tempfile::TempDir,
}

fn service(
    name: &str,
    path: &str,
    upstream: SocketAddr,
    price_sats: u64,
    calls: u64,
) -> ServiceConfig {
    ServiceConfig {
        path: Some(path.into()),
        calls_per_payment: Some(calls),
        upstream_timeout_secs: 5,
        ..ServiceConfig::new(name, format!("http://{upstream}"), price_sats)
    }
}

async fn start_with(extra: impl FnOnce(SocketAddr) -> Vec<ServiceConfig>) -> Harness {
    start_full(extra, |_| {}).await
}

async fn start_full(
    extra: impl FnOnce(SocketAddr) -> Vec<ServiceConfig>,
    tweak: impl FnOnce(&mut GatewayConfig),
) -> Harness {
    turnpike_lightning::ensure_crypto_provider();
    let release = Arc::new(tokio::sync::Notify::new());
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    tokio::spawn(axum::serve(up, upstream(release.clone())).into_future());

    let dir = tempfile::tempdir().unwrap();
    let mut services = vec![
        service("echo", "/echo", up_addr, 2, 1),
        service("bundle", "/echo/bundle", up_addr, 5, 3),
        service("sse", "/sse", up_addr, 1, 1),
        service("free", "/echo/free", up_addr, 0, 1),
    ];
    services.extend(extra(up_addr));
    // The first match wins, so more specific paths go first.
    services.sort_by_key(|s| std::cmp::Reverse(s.path.as_ref().map_or(0, |p| p.len())));
    let mut config = GatewayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        store: StoreConfig {
            url: Some(format!("sqlite://{}", dir.path().join("t.db").display())),
        },
        services,
        ..GatewayConfig::new(BackendConfig::Dev(DevBackendConfig::default()))
    };
    tweak(&mut config);
    config.validate().unwrap();
    let store = Arc::new(SqliteStore::open(&config.store_url()).await.unwrap());
    let dev = Arc::new(DevBackend::random());
    let master: [u8; 32] = rand::random();
    let gateway = Gateway::new(GatewayParts {
        config,
        master_key: MasterKey::from_bytes(master),
        store: store.clone(),
        backend: dev.clone(),
        dev: Some(dev.clone()),
        admin: None,
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gateway.serve(listener, std::future::pending()));
    Harness {
        base: format!("http://{addr}"),
        store,
        dev,
        master,
        release,
        _dir: dir,
    }
}

async fn start() -> Harness {
    start_with(|_| Vec::new()).await
}

impl Harness {
    fn url(&self, path: &str) -> reqwest::Url {
        format!("{}{path}", self.base).parse().unwrap()
    }

    fn client(&self, max_sats: u64) -> L402Client {
        let wallet = DevPayWallet::for_origin(&self.url("/")).unwrap();
        L402Client::new(Arc::new(wallet), Sats(max_sats)).unwrap()
    }

    /// Gets a 402 challenge and pays it through the dev backend, returning the credential.
    async fn paid_credential(&self, path: &str) -> Credential {
        let resp = reqwest::get(self.url(path)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
        let headers = resp.headers().clone();
        let body = resp.bytes().await.unwrap();
        let challenge = turnpike_client::read_challenge(&headers, &body).unwrap();
        let payment = self
            .dev
            .pay_invoice(&challenge.invoice, Msat::ZERO)
            .await
            .unwrap();
        Credential {
            macaroon: challenge.macaroon,
            preimage: payment.preimage,
        }
    }

    async fn get_with(&self, path: &str, headers: &[(&str, String)]) -> reqwest::Response {
        let mut req = reqwest::Client::new().get(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        req.send().await.unwrap()
    }
}

async fn json(resp: reqwest::Response) -> serde_json::Value {
    resp.json().await.unwrap()
}

#[tokio::test]
async fn unpaid_request_gets_both_challenges_and_a_json_body() {
    let h = start().await;
    let resp = reqwest::get(h.url("/echo/x")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    let challenges: Vec<String> = resp
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(challenges.len(), 2);
    assert!(
        challenges[0].starts_with("LSAT macaroon=\""),
        "{}",
        challenges[0]
    );
    assert!(
        challenges[1].starts_with("L402 macaroon=\""),
        "{}",
        challenges[1]
    );
    assert_eq!(challenges[0]["LSAT".len()..], challenges[1]["L402".len()..]);
    assert!(challenges[1].contains("\", invoice=\"lnbcrt"));
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body = json(resp).await;
    assert_eq!(body["price_sats"], 2);
    assert_eq!(body["error"]["code"], "payment_required");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 sats")
    );
    let invoice = turnpike_l402::bolt11::Invoice::parse(body["invoice"].as_str().unwrap()).unwrap();
    assert_eq!(invoice.amount(), Some(Msat(2_000)));
    assert_eq!(body["payment_hash"], invoice.payment_hash().to_hex());
    let mac = Macaroon::from_base64(body["macaroon"].as_str().unwrap()).unwrap();
    assert_eq!(
        Identifier::decode(mac.identifier()).unwrap().payment_hash,
        invoice.payment_hash()
    );
    assert!(body["expires_at"].as_u64().unwrap() > turnpike_gateway::unix_now());
    // The invoice was recorded.
    assert!(
        h.store
            .invoice(&invoice.payment_hash())
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn pay_then_200_then_a_used_token_gets_a_fresh_402() {
    let h = start().await;
    let client = h.client(10);
    let fetched = client
        .fetch(FetchRequest::get(h.url("/echo/a?q=1")))
        .await
        .unwrap();
    assert_eq!(fetched.response.status(), StatusCode::OK);
    assert_eq!(fetched.response.headers()["turnpike-calls-remaining"], "0");
    let receipt = fetched.receipt.expect("paid");
    assert_eq!(receipt.amount, Msat(2_000));
    let echoed = json(fetched.response).await;
    assert_eq!(echoed["uri"], "/echo/a?q=1");
    // The credential never reaches the upstream; forwarding headers do.
    let headers = echoed["headers"].as_array().unwrap();
    let has = |name: &str| headers.iter().any(|h| h[0] == name);
    assert!(!has("authorization"));
    assert_eq!(
        headers.iter().find(|h| h[0] == "x-forwarded-for").unwrap()[1],
        "127.0.0.1"
    );
    assert!(has("x-forwarded-host") && has("x-forwarded-proto"));

    // Same single-call credential again: a fresh challenge, not a 401.
    let again = h
        .get_with(
            "/echo/a",
            &[("authorization", receipt.authorization.clone())],
        )
        .await;
    assert_eq!(again.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(
        again.headers().get_all("www-authenticate").iter().count(),
        2
    );
    let body = json(again).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no calls left")
    );
    assert_eq!(h.dev.balance().await.unwrap(), Msat(2_000));
}

#[tokio::test]
async fn a_bundle_serves_exactly_its_calls() {
    let h = start().await;
    let cred = h.paid_credential("/echo/bundle/x").await;
    let auth = cred.authorization_value();
    for remaining in ["2", "1", "0"] {
        let resp = h
            .get_with("/echo/bundle/x", &[("authorization", auth.clone())])
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["turnpike-calls-remaining"], remaining);
    }
    let resp = h
        .get_with("/echo/bundle/x", &[("authorization", auth)])
        .await;
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
}

#[tokio::test]
async fn every_credential_form_is_accepted() {
    let h = start().await;
    let forms = |cred: &Credential| {
        let b64 = cred.macaroon.to_base64();
        let unpadded = b64.trim_end_matches('=').to_owned();
        let pre = cred.preimage.to_hex();
        vec![
            vec![("authorization", format!("L402 {b64}:{pre}"))],
            vec![("authorization", format!("LSAT {b64}:{pre}"))],
            vec![(
                "authorization",
                format!("l402 {unpadded}:{}", pre.to_uppercase()),
            )],
            vec![
                ("authorization", "Bearer something-else".to_owned()),
                ("authorization", format!("L402 {b64}:{pre}")),
            ],
        ]
    };
    for i in 0..4 {
        let cred = h.paid_credential("/echo/forms").await;
        let headers = forms(&cred).swap_remove(i);
        let resp = h.get_with("/echo/forms", &headers).await;
        assert_eq!(resp.status(), StatusCode::OK, "form {i}: {headers:?}");
        if i == 3 {
            // The non-L402 Authorization value is passed on to the upstream.
            let body = json(resp).await;
            let auth: Vec<_> = body["headers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|h| h[0] == "authorization")
                .collect();
            assert_eq!(auth.len(), 1);
            assert_eq!(auth[0][1], "Bearer something-else");
        }
    }
    // Macaroon header with the preimage as a caveat (Aperture's gRPC form).
    for header in ["macaroon", "grpc-metadata-macaroon"] {
        let cred = h.paid_credential("/echo/forms").await;
        let mut mac = cred.macaroon.clone();
        mac.add_first_party_caveat(Caveat::preimage(&cred.preimage).to_string());
        let resp = h.get_with("/echo/forms", &[(header, mac.to_hex())]).await;
        assert_eq!(resp.status(), StatusCode::OK, "{header}");
    }
}

#[tokio::test]
async fn forged_tampered_and_unpaid_credentials_get_401() {
    let h = start().await;
    let cred = h.paid_credential("/echo/t").await;
    let b64 = cred.macaroon.to_base64();

    // Wrong preimage.
    let wrong = Preimage::random();
    let resp = h
        .get_with(
            "/echo/t",
            &[("authorization", format!("L402 {b64}:{wrong}"))],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json(resp).await["error"]["code"], "invalid_credential");

    // The payment hash offered as if it were the preimage.
    let id = Identifier::decode(cred.macaroon.identifier()).unwrap();
    let resp = h
        .get_with(
            "/echo/t",
            &[("authorization", format!("L402 {b64}:{}", id.payment_hash))],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Tampered: a caveat appended without the key breaks the chain; editing one breaks it too.
    let mut bytes = cred.macaroon.to_binary();
    let pos = bytes.windows(8).position(|w| w == b"services").unwrap();
    bytes[pos + 9] ^= 0x01;
    let tampered = Macaroon::from_binary(&bytes).unwrap();
    let resp = h
        .get_with(
            "/echo/t",
            &[(
                "authorization",
                format!("L402 {}:{}", tampered.to_base64(), cred.preimage),
            )],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Foreign: minted with another master key for a payment we really made.
    let other = Minter::new(MasterKey::random());
    let (foreign, _) = other.mint(&MintRequest {
        payment_hash: id.payment_hash,
        service: "echo",
        calls: Some(1000),
        valid_until: None,
        capabilities: &[],
        max_price_msat: None,
    });
    let resp = h
        .get_with(
            "/echo/t",
            &[(
                "authorization",
                format!("L402 {}:{}", foreign.to_base64(), cred.preimage),
            )],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Garbage.
    let resp = h
        .get_with("/echo/t", &[("authorization", "L402 !!!:zz".to_owned())])
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        json(resp).await["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Malformed")
    );

    // None of this consumed the real token's call.
    let resp = h
        .get_with("/echo/t", &[("authorization", cred.authorization_value())])
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_expired_token_gets_a_fresh_402() {
    let h = start().await;
    // A paid invoice, and a token for it that expired a second ago (minted with the gateway's key).
    let invoice = h
        .dev
        .create_invoice(CreateInvoice {
            amount: Msat(2_000),
            memo: "t".into(),
            expiry_secs: 600,
        })
        .await
        .unwrap();
    let payment = h
        .dev
        .pay_invoice(&invoice.bolt11, Msat::ZERO)
        .await
        .unwrap();
    let minter = Minter::new(MasterKey::from_bytes(h.master));
    let mint = |valid_until| {
        minter
            .mint(&MintRequest {
                payment_hash: invoice.payment_hash,
                service: "echo",
                calls: Some(1),
                valid_until: Some(valid_until),
                capabilities: &[],
                max_price_msat: None,
            })
            .0
    };
    let now = turnpike_gateway::unix_now();
    let expired = Credential {
        macaroon: mint(now - 1),
        preimage: payment.preimage,
    };
    let resp = h
        .get_with(
            "/echo/e",
            &[("authorization", expired.authorization_value())],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    assert!(
        json(resp).await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    // The same payment with a live token works: expiry, not the payment, was the problem.
    let live = Credential {
        macaroon: mint(now + 3600),
        preimage: payment.preimage,
    };
    let resp = h
        .get_with("/echo/e", &[("authorization", live.authorization_value())])
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_token_for_another_service_gets_a_402_for_this_one() {
    let h = start().await;
    let cred = h.paid_credential("/sse").await;
    let resp = h
        .get_with("/echo/x", &[("authorization", cred.authorization_value())])
        .await;
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
}

#[tokio::test]
async fn upstream_down_gives_502_and_keeps_the_call() {
    // Reserve a port, then close it: nothing listens there.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let h = start_with(|_| vec![service("down", "/down", dead_addr, 3, 1)]).await;
    let cred = h.paid_credential("/down/x").await;
    let auth = cred.authorization_value();
    let resp = h
        .get_with("/down/x", &[("authorization", auth.clone())])
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let body = json(resp).await;
    assert_eq!(body["error"]["code"], "upstream_unreachable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not charged")
    );
    let token = Identifier::decode(cred.macaroon.identifier())
        .unwrap()
        .token_id;
    assert_eq!(h.store.token_usage(&token).await.unwrap().unwrap().used, 0);

    // Bring the upstream up on that port: the same credential is served once.
    let up = tokio::net::TcpListener::bind(dead_addr).await.unwrap();
    tokio::spawn(axum::serve(up, upstream(Arc::new(tokio::sync::Notify::new()))).into_future());
    let h2 = &h;
    let resp = h2
        .get_with("/down/x", &[("authorization", auth.clone())])
        .await;
    // The upstream has no /down route: its 404 is passed through, and the call is charged.
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = h.get_with("/down/x", &[("authorization", auth)]).await;
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
}

#[tokio::test]
async fn server_sent_events_are_streamed_event_by_event() {
    let h = start().await;
    let client = h.client(5);
    let fetched = client
        .fetch(FetchRequest::get(h.url("/sse")))
        .await
        .unwrap();
    let mut resp = fetched.response;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    // The upstream sends the second event only after we have seen the first: a buffering
    // proxy would deadlock here and the timeout would fail the test.
    let first = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("first event streamed");
    assert_eq!(first.unwrap().unwrap(), Bytes::from("data: first\n\n"));
    h.release.notify_one();
    let second = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second, Bytes::from("data: second\n\n"));
}

#[tokio::test]
async fn free_routes_and_unknown_paths() {
    let h = start().await;
    let resp = reqwest::get(h.url("/echo/free/x")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = reqwest::get(h.url("/nothing-here")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(json(resp).await["error"]["code"], "no_such_service");
    let resp = reqwest::get(h.url("/_turnpike/health")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn request_bodies_and_methods_are_forwarded() {
    let h = start().await;
    let client = h.client(10);
    let mut headers = HeaderMap::new();
    headers.insert("x-custom", "yes".parse().unwrap());
    let fetched = client
        .fetch(FetchRequest {
            method: http::Method::PUT,
            url: h.url("/echo/put"),
            headers,
            body: Some(Bytes::from_static(b"{\"a\":1}")),
        })
        .await
        .unwrap();
    assert_eq!(fetched.response.status(), StatusCode::OK);
    let body = json(fetched.response).await;
    assert_eq!(body["method"], "PUT");
    assert_eq!(body["body"], "{\"a\":1}");
    assert!(
        body["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "x-custom" && h[1] == "yes")
    );
}

#[tokio::test]
async fn configured_upstream_headers_replace_the_clients_and_credentials_never_arrive() {
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), "from-a-file\n").unwrap();
    let path = key_file.path().to_str().unwrap().to_owned();
    let h = start_with(move |up| {
        let mut keyed = service("keyed", "/echo/keyed", up, 2, 5);
        keyed.headers.insert(
            "X-Api-Key".into(),
            turnpike_lightning::SecretSource::Inline("upstream-secret".into()),
        );
        keyed.headers.insert(
            "Authorization".into(),
            turnpike_lightning::SecretSource::File { file: path },
        );
        vec![keyed]
    })
    .await;
    let cred = h.paid_credential("/echo/keyed/x").await;
    let resp = h
        .get_with(
            "/echo/keyed/x",
            &[
                ("authorization", cred.authorization_value()),
                ("x-api-key", "forged-by-client".into()),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = json(resp).await;
    let got: Vec<(String, String)> = body["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_owned(),
                h[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let values = |name: &str| -> Vec<&str> {
        got.iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(values("x-api-key"), ["upstream-secret"]);
    assert_eq!(values("authorization"), ["from-a-file"]);
    assert!(values("macaroon").is_empty());
    assert!(
        !got.iter()
            .any(|(_, v)| v.contains("L402") || v.contains("forged"))
    );
}

#[tokio::test]
async fn the_client_refuses_prices_above_its_limit_and_pays_nothing() {
    let h = start().await;
    let client = h.client(4);
    let err = client
        .fetch(FetchRequest::get(h.url("/echo/bundle/x")))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            turnpike_client::ClientError::OverLimit {
                price: Sats(5),
                limit: Sats(4)
            }
        ),
        "{err}"
    );
    assert_eq!(h.dev.balance().await.unwrap(), Msat::ZERO);
}

#[tokio::test]
async fn the_dev_pay_endpoint_pays_once_and_answers_errors_in_json() {
    let h = start().await;
    let resp = reqwest::get(h.url("/echo/x")).await.unwrap();
    let invoice = json(resp).await["invoice"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let pay = |body: String| {
        http.post(h.url("/_turnpike/dev/pay"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let ok = pay(serde_json::json!({ "invoice": invoice }).to_string())
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let preimage: Preimage = json(ok).await["preimage"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let parsed = turnpike_l402::bolt11::Invoice::parse(&invoice).unwrap();
    assert!(preimage.matches(&parsed.payment_hash()));
    let twice = pay(serde_json::json!({ "invoice": invoice }).to_string())
        .await
        .unwrap();
    assert_eq!(twice.status(), StatusCode::CONFLICT);
    assert_eq!(json(twice).await["error"]["code"], "already_paid");
    let bad = pay("not json".into()).await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(bad).await["error"]["code"], "bad_request");
    let junk = pay(serde_json::json!({ "invoice": "lnbc1junk" }).to_string())
        .await
        .unwrap();
    assert_eq!(junk.status(), StatusCode::BAD_REQUEST);
    assert!(json(junk).await["error"]["message"].is_string());
    assert_eq!(h.dev.balance().await.unwrap(), Msat(2_000));
}

/// An HTTPS upstream whose certificate no trusted authority signed. It would answer 200 if the
/// gateway skipped certificate verification (as Aperture does): it must answer 502 instead.
#[tokio::test]
async fn untrusted_upstream_certificates_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (h_count, s_count) = (handshakes.clone(), served.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            h_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if let Ok(mut stream) = acceptor.accept(tcp).await {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                s_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                let _ = stream.shutdown().await;
            }
        }
    });
    let h = start_with(|_| {
        vec![ServiceConfig {
            upstream: format!("https://localhost:{port}"),
            ..service("tls", "/tls", ([127, 0, 0, 1], port).into(), 1, 1)
        }]
    })
    .await;
    let cred = h.paid_credential("/tls/x").await;
    let resp = h
        .get_with("/tls/x", &[("authorization", cred.authorization_value())])
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(
        handshakes.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the gateway did connect"
    );
    assert_eq!(
        served.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no request crossed an untrusted TLS session"
    );
    let token = Identifier::decode(cred.macaroon.identifier())
        .unwrap()
        .token_id;
    assert_eq!(h.store.token_usage(&token).await.unwrap().unwrap().used, 0);
}

#[tokio::test]
async fn upstream_5xx_and_timeouts_are_not_charged_but_4xx_are() {
    let h = start_with(|up| {
        vec![
            service("status", "/status", up, 2, 2),
            ServiceConfig {
                upstream_timeout_secs: 1,
                ..service("slow", "/slow", up, 2, 1)
            },
            ServiceConfig {
                refund_on_5xx: false,
                ..service("strict", "/status/599", up, 2, 1)
            },
        ]
    })
    .await;
    let cred = h.paid_credential("/status/500").await;
    let auth = cred.authorization_value();
    let token = Identifier::decode(cred.macaroon.identifier())
        .unwrap()
        .token_id;
    // 5xx: passed through to the client, call given back.
    for _ in 0..3 {
        let resp = h
            .get_with("/status/503", &[("authorization", auth.clone())])
            .await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["turnpike-calls-remaining"], "2");
    }
    assert_eq!(h.store.token_usage(&token).await.unwrap().unwrap().used, 0);
    // 4xx: the upstream answered; the call is charged.
    let resp = h
        .get_with("/status/404", &[("authorization", auth.clone())])
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.headers()["turnpike-calls-remaining"], "1");

    // Timeout: 504, not charged.
    let cred = h.paid_credential("/slow").await;
    let resp = h
        .get_with("/slow", &[("authorization", cred.authorization_value())])
        .await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    let token = Identifier::decode(cred.macaroon.identifier())
        .unwrap()
        .token_id;
    assert_eq!(h.store.token_usage(&token).await.unwrap().unwrap().used, 0);

    // A service that opted out of 5xx refunds charges them.
    let cred = h.paid_credential("/status/599").await;
    let resp = h
        .get_with(
            "/status/599",
            &[("authorization", cred.authorization_value())],
        )
        .await;
    assert_eq!(resp.status().as_u16(), 599);
    assert_eq!(resp.headers()["turnpike-calls-remaining"], "0");
}

#[tokio::test]
async fn a_token_whose_calls_keep_failing_is_throttled_not_charged() {
    let h = start_full(
        |up| vec![service("status", "/status", up, 2, 5)],
        |c| c.rate_limits.refunds_per_token = limit(1, 60, 3),
    )
    .await;
    let cred = h.paid_credential("/status/500").await;
    let auth = [("authorization", cred.authorization_value())];
    let token = Identifier::decode(cred.macaroon.identifier())
        .unwrap()
        .token_id;
    // Three failures are given back; the fourth request waits (429) and never reaches the
    // upstream, and no call is charged.
    for _ in 0..3 {
        let resp = h.get_with("/status/500", &auth).await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    let resp = h.get_with("/status/200", &auth).await;
    assert_429(resp).await;
    assert_eq!(h.store.token_usage(&token).await.unwrap().unwrap().used, 0);
    // Another token is not affected.
    let other = h.paid_credential("/status/200").await;
    let resp = h
        .get_with(
            "/status/200",
            &[("authorization", other.authorization_value())],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_time_pass_serves_unlimited_calls_until_it_expires() {
    let h = start_with(|up| {
        vec![ServiceConfig {
            calls_per_payment: None,
            time_pass_secs: Some(3600),
            ..service("pass", "/echo/pass", up, 20, 1)
        }]
    })
    .await;
    let resp = reqwest::get(h.url("/echo/pass")).await.unwrap();
    let body = json(resp).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unlimited calls for 1 h")
    );
    let valid_until = body["valid_until"].as_u64().unwrap();
    assert!(valid_until >= turnpike_gateway::unix_now() + 3590);
    let mac = Macaroon::from_base64(body["macaroon"].as_str().unwrap()).unwrap();
    let caveats: Vec<String> = mac
        .first_party_caveats()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    assert_eq!(
        caveats,
        vec![
            "services=pass:0".to_owned(),
            format!("pass_valid_until={valid_until}")
        ]
    );
    let payment = h
        .dev
        .pay_invoice(body["invoice"].as_str().unwrap(), Msat::ZERO)
        .await
        .unwrap();
    let auth = Credential {
        macaroon: mac,
        preimage: payment.preimage,
    }
    .authorization_value();
    for _ in 0..25 {
        let resp = h
            .get_with("/echo/pass", &[("authorization", auth.clone())])
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers().get("turnpike-calls-remaining").is_none());
    }
}

#[tokio::test]
async fn routes_have_their_own_price_and_tokens() {
    let h = start_with(|up| {
        vec![ServiceConfig {
            routes: vec![turnpike_gateway::config::RouteConfig {
                name: "big".into(),
                path: Some("/echo/llm/big".into()),
                path_regex: None,
                method: Some("GET".into()),
                price_sats: 7,
                calls_per_payment: None,
                time_pass_secs: None,
                token_lifetime_secs: None,
                description: None,
                input_schema: None,
            }],
            ..service("llm", "/echo/llm", up, 1, 1)
        }]
    })
    .await;
    let small = json(reqwest::get(h.url("/echo/llm/small")).await.unwrap()).await;
    let big = json(reqwest::get(h.url("/echo/llm/big")).await.unwrap()).await;
    assert_eq!(
        (small["price_sats"].as_u64(), small["service"].as_str()),
        (Some(1), Some("llm"))
    );
    assert_eq!(
        (big["price_sats"].as_u64(), big["service"].as_str()),
        (Some(7), Some("llm.big"))
    );
    // A cheap token does not buy the expensive route: a fresh 402, not a free ride.
    let cheap = h.paid_credential("/echo/llm/small").await;
    let resp = h
        .get_with(
            "/echo/llm/big",
            &[("authorization", cheap.authorization_value())],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    let resp = h
        .get_with(
            "/echo/llm/small",
            &[("authorization", cheap.authorization_value())],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

fn limit(requests: u32, per_secs: u32, burst: u32) -> turnpike_gateway::rate_limit::Limit {
    turnpike_gateway::rate_limit::Limit {
        requests,
        per_secs,
        burst,
    }
}

async fn assert_429(resp: reqwest::Response) {
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    assert_eq!(json(resp).await["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let h = start_full(
        |_| Vec::new(),
        |c| {
            c.rate_limits.per_ip = Some(limit(1, 60, 3));
            c.rate_limits.per_token = Some(limit(1, 60, 1));
        },
    )
    .await;
    // Per token: the second call within the minute is refused before it is charged.
    let cred = h.paid_credential("/echo/bundle/x").await;
    let auth = cred.authorization_value();
    assert_eq!(
        h.get_with("/echo/bundle/x", &[("authorization", auth.clone())])
            .await
            .status(),
        StatusCode::OK
    );
    assert_429(
        h.get_with("/echo/bundle/x", &[("authorization", auth)])
            .await,
    )
    .await;
    let token = Identifier::decode(cred.macaroon.identifier())
        .unwrap()
        .token_id;
    assert_eq!(h.store.token_usage(&token).await.unwrap().unwrap().used, 1);
    // Per IP: 3 requests so far (challenge, paid, limited) used the burst of 3.
    assert_429(reqwest::get(h.url("/echo/free/x")).await.unwrap()).await;
}

#[tokio::test]
async fn challenge_minting_is_limited_per_client_ip() {
    let h = start_full(
        |_| Vec::new(),
        |c| c.rate_limits.challenges_per_ip = limit(1, 60, 2),
    )
    .await;
    for _ in 0..2 {
        assert_eq!(
            reqwest::get(h.url("/echo/x")).await.unwrap().status(),
            StatusCode::PAYMENT_REQUIRED
        );
    }
    assert_429(reqwest::get(h.url("/echo/x")).await.unwrap()).await;
    // Free routes and paid calls are not challenge minting.
    assert_eq!(
        reqwest::get(h.url("/echo/free/x")).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn forwarded_client_ips_count_only_behind_trusted_proxies() {
    // Behind a trusted proxy (the test itself, on loopback), X-Forwarded-For names the client.
    let trusted = start_full(
        |_| Vec::new(),
        |c| {
            c.trusted_proxies = vec!["127.0.0.1".into()];
            c.rate_limits.per_ip = Some(limit(1, 60, 1));
        },
    )
    .await;
    let xff = |ip: &str| vec![("x-forwarded-for", ip.to_owned())];
    assert_eq!(
        trusted
            .get_with("/echo/free/x", &xff("198.51.100.1"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        trusted
            .get_with("/echo/free/x", &xff("198.51.100.2"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_429(trusted.get_with("/echo/free/x", &xff("198.51.100.1")).await).await;
    // A client cannot pick its own address by prepending to the chain.
    assert_429(
        trusted
            .get_with("/echo/free/x", &xff("203.0.113.9, 198.51.100.2"))
            .await,
    )
    .await;

    // From an untrusted peer a forged X-Forwarded-For is ignored: every request is 127.0.0.1.
    let untrusted = start_full(
        |_| Vec::new(),
        |c| c.rate_limits.per_ip = Some(limit(1, 60, 1)),
    )
    .await;
    assert_eq!(
        untrusted
            .get_with("/echo/free/x", &xff("198.51.100.1"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_429(
        untrusted
            .get_with("/echo/free/x", &xff("198.51.100.2"))
            .await,
    )
    .await;
}

#[tokio::test]
async fn the_free_tier_counts_per_client_ip() {
    let free = turnpike_gateway::config::FreeTierConfig {
        calls: 2,
        window_secs: 86_400,
    };
    let h = start_full(
        |up| {
            vec![ServiceConfig {
                free_tier: Some(free),
                ..service("trial", "/echo/trial", up, 3, 1)
            }]
        },
        |c| c.trusted_proxies = vec!["127.0.0.1".into()],
    )
    .await;
    let from = |ip: &str| vec![("x-forwarded-for", ip.to_owned())];
    for _ in 0..2 {
        let resp = h.get_with("/echo/trial", &from("198.51.100.7")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["turnpike-free-call"], "true");
    }
    // The (N+1)th call from that client must be paid.
    let resp = h.get_with("/echo/trial", &from("198.51.100.7")).await;
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    // Another client behind the same proxy has its own free calls.
    assert_eq!(
        h.get_with("/echo/trial", &from("198.51.100.8"))
            .await
            .status(),
        StatusCode::OK
    );
    // Paying still works for the client whose free calls are spent.
    let client = h.client(5);
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", "198.51.100.7".parse().unwrap());
    let fetched = client
        .fetch(FetchRequest {
            method: http::Method::GET,
            url: h.url("/echo/trial"),
            headers,
            body: None,
        })
        .await
        .unwrap();
    assert_eq!(fetched.response.status(), StatusCode::OK);
    assert!(fetched.receipt.is_some());
}

#[tokio::test]
async fn a_forged_forwarded_for_from_an_untrusted_peer_gets_no_extra_free_calls() {
    let free = turnpike_gateway::config::FreeTierConfig {
        calls: 1,
        window_secs: 86_400,
    };
    let h = start_with(|up| {
        vec![ServiceConfig {
            free_tier: Some(free),
            ..service("trial", "/echo/trial", up, 3, 1)
        }]
    })
    .await;
    let from = |ip: &str| vec![("x-forwarded-for", ip.to_owned())];
    assert_eq!(
        h.get_with("/echo/trial", &from("198.51.100.1"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        h.get_with("/echo/trial", &from("198.51.100.2"))
            .await
            .status(),
        StatusCode::PAYMENT_REQUIRED
    );
}

async fn post_with_key(
    h: &Harness,
    path: &str,
    auth: &str,
    key: &str,
    body: &str,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(h.url(path))
        .header("authorization", auth)
        .header("idempotency-key", key)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_idempotent_retry_is_charged_once_and_gets_the_same_response() {
    let h = start().await;
    let cred = h.paid_credential("/echo/bundle/x").await;
    let auth = cred.authorization_value();
    let token = Identifier::decode(cred.macaroon.identifier())
        .unwrap()
        .token_id;
    let used = || async {
        h.store
            .token_usage(&token)
            .await
            .unwrap()
            .map_or(0, |u| u.used)
    };

    let first = post_with_key(&h, "/echo/bundle/x", &auth, "order-1", "buy 1").await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["turnpike-calls-remaining"], "2");
    assert!(first.headers().get("turnpike-idempotent-replay").is_none());
    let first_body = first.bytes().await.unwrap();
    // Give the recorder a moment to store the completed response.
    let mut retry = post_with_key(&h, "/echo/bundle/x", &auth, "order-1", "buy 1").await;
    for _ in 0..50 {
        if retry.status() != StatusCode::CONFLICT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        retry = post_with_key(&h, "/echo/bundle/x", &auth, "order-1", "buy 1").await;
    }
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(retry.headers()["turnpike-idempotent-replay"], "true");
    assert_eq!(retry.bytes().await.unwrap(), first_body);
    assert_eq!(used().await, 1, "the retry was not charged");

    // The same key for a different request: 422, nothing charged.
    let other = post_with_key(&h, "/echo/bundle/x", &auth, "order-1", "buy 2").await;
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json(other).await["error"]["code"], "idempotency_key_reused");
    assert_eq!(used().await, 1);

    // A new key is a new call.
    assert_eq!(
        post_with_key(&h, "/echo/bundle/x", &auth, "order-2", "buy 2")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(used().await, 2);

    // Bad keys are refused before anything is charged.
    let long = "k".repeat(300);
    assert_eq!(
        post_with_key(&h, "/echo/bundle/x", &auth, &long, "x")
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(used().await, 2);
}

#[tokio::test]
async fn an_idempotent_call_that_fails_upstream_is_given_back_and_runs_again() {
    let h = start_with(|up| vec![service("status", "/status", up, 2, 2)]).await;
    let cred = h.paid_credential("/status/500").await;
    let auth = cred.authorization_value();
    let token = Identifier::decode(cred.macaroon.identifier())
        .unwrap()
        .token_id;
    for _ in 0..2 {
        let resp = reqwest::Client::new()
            .get(h.url("/status/502"))
            .header("authorization", &auth)
            .header("idempotency-key", "same")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        assert!(
            resp.headers().get("turnpike-idempotent-replay").is_none(),
            "failures are not replayed"
        );
    }
    assert_eq!(h.store.token_usage(&token).await.unwrap().unwrap().used, 0);
}

#[tokio::test]
async fn a_concurrent_duplicate_gets_409_then_the_whole_stream_is_replayed() {
    let h = start().await;
    let cred = h.paid_credential("/sse").await;
    let auth = cred.authorization_value();
    let get = || {
        reqwest::Client::new()
            .get(h.url("/sse"))
            .header("authorization", &auth)
            .header("idempotency-key", "s1")
            .send()
    };
    let mut first = get().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        first.chunk().await.unwrap().unwrap(),
        Bytes::from("data: first\n\n")
    );
    // While the first is still streaming, a duplicate is told to wait.
    let dup = get().await.unwrap();
    assert_eq!(dup.status(), StatusCode::CONFLICT);
    assert_eq!(dup.headers()["retry-after"], "1");
    h.release.notify_one();
    while first.chunk().await.unwrap().is_some() {}
    let mut replay = get().await.unwrap();
    for _ in 0..50 {
        if replay.status() != StatusCode::CONFLICT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        replay = get().await.unwrap();
    }
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(replay.headers()["turnpike-idempotent-replay"], "true");
    assert_eq!(
        replay.bytes().await.unwrap(),
        Bytes::from("data: first\n\ndata: second\n\n")
    );
    // One call, one charge: the single-call token is now used up for new requests.
    let again = h.get_with("/sse", &[("authorization", auth.clone())]).await;
    assert_eq!(again.status(), StatusCode::PAYMENT_REQUIRED);
}

/// A credential whose preimage leaked without the invoice being paid (some backends can hand
/// one out) is refused when the settlement check is on; a paid one is served.
#[tokio::test]
async fn the_settlement_check_refuses_unsettled_invoices() {
    let h = start_full(|_| Vec::new(), |c| c.check_settlement = Some(true)).await;
    let minter = Minter::new(MasterKey::from_bytes(h.master));
    let leaked = Preimage::random();
    let (mac, _) = minter.mint(&MintRequest {
        payment_hash: leaked.payment_hash(),
        service: "echo",
        calls: Some(1),
        valid_until: None,
        capabilities: &[],
        max_price_msat: None,
    });
    let auth = Credential {
        macaroon: mac,
        preimage: leaked,
    }
    .authorization_value();
    let resp = h.get_with("/echo/x", &[("authorization", auth)]).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json(resp).await["error"]["code"], "payment_not_settled");
    let paid = h.paid_credential("/echo/x").await;
    let resp = h
        .get_with("/echo/x", &[("authorization", paid.authorization_value())])
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

/// A dynamic pricer in the test: the price is the number of `$` in the body prefix it is shown;
/// a body "fail" makes it answer 500, and "slow" makes it too slow.
async fn spawn_pricer() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use base64::Engine;
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = asked.clone();
    let app = axum::Router::new().route(
        "/price",
        axum::routing::post(move |axum::Json(q): axum::Json<serde_json::Value>| {
            let a = a.clone();
            async move {
                a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = base64::engine::general_purpose::STANDARD
                    .decode(q["body"].as_str().unwrap_or_default())
                    .unwrap();
                assert!(
                    q["headers"].get("authorization").is_none(),
                    "credentials never reach the pricer"
                );
                match &body[..] {
                    b"fail" => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        axum::Json(serde_json::json!({})),
                    ),
                    b"slow" => {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        (
                            StatusCode::OK,
                            axum::Json(serde_json::json!({ "price_sats": 1 })),
                        )
                    }
                    _ => {
                        let price = body.iter().filter(|b| **b == b'$').count();
                        (
                            StatusCode::OK,
                            axum::Json(serde_json::json!({ "price_sats": price })),
                        )
                    }
                }
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(axum::serve(l, app).into_future());
    (addr, asked)
}

#[tokio::test]
async fn a_dynamic_pricer_sets_each_price_and_fails_closed() {
    let (pricer, asked) = spawn_pricer().await;
    let h = start_with(|up| {
        vec![ServiceConfig {
            pricer: Some(turnpike_gateway::config::PricerConfig {
                url: format!("http://{pricer}/price"),
                timeout_ms: 500,
                body_bytes: 16,
            }),
            // With a pricer, price_sats caps what the pricer may ask.
            ..service("llm", "/echo/llm", up, 12, 1)
        }]
    })
    .await;
    let post = |body: String, auth: Option<String>| {
        let mut req = reqwest::Client::new().post(h.url("/echo/llm")).body(body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    let dev = h.dev.clone();
    let buy = |body: serde_json::Value| async move {
        let mac = Macaroon::from_base64(body["macaroon"].as_str().unwrap()).unwrap();
        let payment = dev
            .pay_invoice(body["invoice"].as_str().unwrap(), Msat::ZERO)
            .await
            .unwrap();
        (
            mac.clone(),
            Credential {
                macaroon: mac,
                preimage: payment.preimage,
            }
            .authorization_value(),
        )
    };
    // The price follows the request, and the token records it.
    let resp = post("$$$$$".into(), None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    let body = json(resp).await;
    assert_eq!(body["price_sats"], 5);
    let (mac, auth) = buy(body).await;
    assert!(
        mac.first_party_caveats()
            .any(|c| c == b"llm_max_price_msat=5000")
    );
    // A dearer request is not covered by the cheaper token: a fresh challenge at its price.
    let resp = post("$".repeat(12), Some(auth.clone())).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(json(resp).await["price_sats"], 12);
    // The pricer failing, too slow, or asking above the cap: 503, never a free call.
    for body in ["fail".to_owned(), "slow".to_owned(), "$".repeat(13)] {
        let resp = post(body.clone(), Some(auth.clone())).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(json(resp).await["error"]["code"], "pricer_unavailable");
    }
    // A request within the price is served, with its whole body (longer than the pricer saw).
    let long = format!("$$${}", "y".repeat(40));
    let resp = post(long.clone(), Some(auth.clone())).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json(resp).await["body"], long);
    // Single call: the token is now used up.
    let resp = post("$".into(), Some(auth)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    // An explicit price of zero is free.
    let resp = post("no dollars".into(), None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(asked.load(std::sync::atomic::Ordering::SeqCst) >= 8);
}

#[tokio::test]
async fn a_client_that_hangs_up_before_the_upstream_answers_is_not_charged() {
    let h = start_with(|up| {
        vec![ServiceConfig {
            upstream_timeout_secs: 30,
            ..service("slow", "/slow", up, 2, 2)
        }]
    })
    .await;
    let cred = h.paid_credential("/slow").await;
    let token = Identifier::decode(cred.macaroon.identifier())
        .unwrap()
        .token_id;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    for key in [None, Some("retry-1")] {
        let mut req = impatient
            .get(h.url("/slow"))
            .header("authorization", cred.authorization_value());
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        let err = req.send().await.unwrap_err();
        assert!(err.is_timeout(), "{err}");
        // The gateway notices the hang-up, drops the upstream call and gives the call back.
        let mut used = u64::MAX;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            used = h.store.token_usage(&token).await.unwrap().unwrap().used;
            if used == 0 {
                break;
            }
        }
        assert_eq!(used, 0, "abandoned call given back (key {key:?})");
    }
    // The idempotency key was released too: the same key runs afresh (here: 409 would mean it
    // is still held as in flight).
    let resp = impatient
        .get(h.url("/slow"))
        .header("authorization", cred.authorization_value())
        .header("idempotency-key", "retry-1")
        .send()
        .await;
    assert!(resp.unwrap_err().is_timeout());
}

#[tokio::test]
async fn a_remembered_time_pass_still_expires_and_stays_with_its_service() {
    // Each worker remembers credentials it verified; that must not outlive the token's expiry
    // or let the token into another service.
    let h = start_with(|up| {
        vec![
            ServiceConfig {
                calls_per_payment: None,
                time_pass_secs: Some(2),
                ..service("short", "/echo/short", up, 20, 1)
            },
            service("other", "/echo/other", up, 20, 1),
        ]
    })
    .await;
    let auth = h.paid_credential("/echo/short").await.authorization_value();
    for _ in 0..3 {
        let resp = h
            .get_with("/echo/short", &[("authorization", auth.clone())])
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = h
        .get_with("/echo/other", &[("authorization", auth.clone())])
        .await;
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    // With a second field before it, the same credential is verified afresh (and still works).
    let resp = reqwest::Client::new()
        .get(h.url("/echo/short"))
        .header("authorization", "Bearer upstream-key")
        .header("authorization", auth.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let resp = h
        .get_with("/echo/short", &[("authorization", auth.clone())])
        .await;
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    let body = json(resp).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
}
