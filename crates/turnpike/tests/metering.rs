//! Metering under pressure, with real `turnpike serve` processes: concurrency on one token,
//! two gateway processes sharing one PostgreSQL database, and SIGKILL under load.
//!
//! PostgreSQL tests use `TURNPIKE_TEST_POSTGRES_URL` (a fresh database is created per test);
//! without it they are skipped with a message, unless `TURNPIKE_REQUIRE_POSTGRES=1`.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use turnpike_l402::Preimage;
use turnpike_l402::credential::Credential;
use turnpike_l402::macaroon::Macaroon;

const BIN: &str = env!("CARGO_BIN_EXE_turnpike");

struct Gateway {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Starts `turnpike serve` with `config` (the `listen` key is prepended) and waits until healthy.
fn spawn_gateway(dir: &std::path::Path, name: &str, config: &str, addr: SocketAddr) -> Gateway {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!("listen = \"{addr}\"\nadmin.listen = \"127.0.0.1:0\"\n{config}"),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let gw = Gateway { child, addr };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            use std::io::{Read, Write};
            let _ = s.write_all(
                b"GET /_turnpike/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            );
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") {
                return gw;
            }
        }
        assert!(Instant::now() < deadline, "gateway {name} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An upstream counting the calls it serves per `x-test-token` header value.
async fn counting_upstream() -> (SocketAddr, Arc<Mutex<HashMap<String, u64>>>) {
    let counts: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let c = counts.clone();
    let app = axum::Router::new().fallback(move |headers: http::HeaderMap| {
        let c = c.clone();
        async move {
            let tag = headers
                .get("x-test-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            *c.lock().unwrap().entry(tag).or_default() += 1;
            "served"
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(axum::serve(l, app).into_future());
    (addr, counts)
}

fn config(data_dir: &std::path::Path, store_url: &str, upstream: SocketAddr, calls: u64) -> String {
    format!(
        r#"data_dir = "{}"
[rate_limits]
# Every refused request here mints a fresh challenge: do not limit that in these tests.
challenges_per_ip = {{ requests = 0, per_secs = 1, burst = 1 }}
[store]
url = "{store_url}"
[backend]
kind = "dev"
[[services]]
name = "api"
path = "/api"
upstream = "http://{upstream}"
price_sats = 1
calls_per_payment = {calls}
"#,
        data_dir.display()
    )
}

/// Gets a challenge from `gw` and pays it through `gw`'s dev endpoint.
async fn buy(http: &reqwest::Client, gw: &Gateway) -> String {
    let resp = http.get(gw.url("/api/x")).send().await.unwrap();
    assert_eq!(resp.status(), 402);
    let body: serde_json::Value = resp.json().await.unwrap();
    let paid: serde_json::Value = http
        .post(gw.url("/_turnpike/dev/pay"))
        .json(&serde_json::json!({ "invoice": body["invoice"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let preimage: Preimage = paid["preimage"].as_str().unwrap().parse().unwrap();
    let macaroon = Macaroon::from_base64(body["macaroon"].as_str().unwrap()).unwrap();
    Credential { macaroon, preimage }.authorization_value()
}

/// Sends `n` concurrent requests with `auth`, spread over `gateways`; returns (200s, 402s).
async fn storm(
    http: &reqwest::Client,
    gateways: &[&Gateway],
    auth: &str,
    tag: &str,
    n: usize,
) -> (u64, u64) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = gateways[i % gateways.len()].url("/api/x");
        let req = http
            .get(url)
            .header("authorization", auth)
            .header("x-test-token", tag);
        tasks.push(tokio::spawn(async move {
            req.send().await.map(|r| r.status().as_u16())
        }));
    }
    let (mut ok, mut pay) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(200) => ok += 1,
            Ok(402) => pay += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    (ok, pay)
}

fn client() -> reqwest::Client {
    turnpike_lightning::ensure_crypto_provider();
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_one_single_call_token_under_200_concurrent_requests_serves_once() {
    let dir = tempfile::tempdir().unwrap();
    let (up, counts) = counting_upstream().await;
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let gw = spawn_gateway(
        dir.path(),
        "a",
        &config(dir.path(), &db, up, 1),
        free_port(),
    );
    let http = client();
    let auth = buy(&http, &gw).await;
    assert_eq!(storm(&http, &[&gw], &auth, "single", 200).await, (1, 199));
    assert_eq!(counts.lock().unwrap()["single"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_gateway_processes_share_one_token_exactly() {
    let Some((admin_url, url)) = common::pg_database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (up, counts) = counting_upstream().await;
    let (a, b) = (free_port(), free_port());
    let ga = spawn_gateway(dir.path(), "a", &config(dir.path(), &url, up, 1), a);
    let gb = spawn_gateway(dir.path(), "b", &config(dir.path(), &url, up, 1), b);
    let http = client();

    // One single-call token, 200 concurrent requests over both processes: exactly one served.
    let auth = buy(&http, &ga).await;
    assert_eq!(
        storm(&http, &[&ga, &gb], &auth, "single", 200).await,
        (1, 199)
    );
    assert_eq!(counts.lock().unwrap()["single"], 1);

    // A 10-call bundle, 50 concurrent requests over both: exactly 10 served.
    drop((ga, gb));
    let ga = spawn_gateway(
        dir.path(),
        "a10",
        &config(dir.path(), &url, up, 10),
        free_port(),
    );
    let gb = spawn_gateway(
        dir.path(),
        "b10",
        &config(dir.path(), &url, up, 10),
        free_port(),
    );
    let auth = buy(&http, &gb).await;
    assert_eq!(
        storm(&http, &[&ga, &gb], &auth, "bundle", 50).await,
        (10, 40)
    );
    assert_eq!(counts.lock().unwrap()["bundle"], 10);
    drop((ga, gb));
    common::drop_pg_database(&admin_url, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_bundle_of_10_under_50_concurrent_requests_serves_10() {
    let dir = tempfile::tempdir().unwrap();
    let (up, counts) = counting_upstream().await;
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let gw = spawn_gateway(
        dir.path(),
        "a",
        &config(dir.path(), &db, up, 10),
        free_port(),
    );
    let http = client();
    let auth = buy(&http, &gw).await;
    assert_eq!(storm(&http, &[&gw], &auth, "bundle", 50).await, (10, 40));
    assert_eq!(counts.lock().unwrap()["bundle"], 10);
}

/// SIGKILL under load, then a restart on the same SQLite file: every token keeps exactly the
/// calls it had not used, and nothing is served twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_loses_no_paid_call_and_serves_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (up, counts) = counting_upstream().await;
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let addr = free_port();
    let cfg = config(dir.path(), &db, up, 20);
    let mut gw = spawn_gateway(dir.path(), "a", &cfg, addr);
    let http = client();
    let mut tokens = Vec::new();
    for i in 0..5 {
        tokens.push((format!("t{i}"), buy(&http, &gw).await));
    }

    // Load: each token used by its own sequential worker, so at most one call per token is in
    // flight when the process dies.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for (tag, auth) in tokens.clone() {
        let (http, stop, url) = (http.clone(), stop.clone(), gw.url("/api/x"));
        workers.push(tokio::spawn(async move {
            let mut ok = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match http
                    .get(&url)
                    .header("authorization", &auth)
                    .header("x-test-token", &tag)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) if r.status() == 402 => break,
                    Ok(r) => panic!("unexpected {}", r.status()),
                    Err(_) => break, // the gateway died
                }
            }
            ok
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    gw.child.kill().unwrap(); // SIGKILL
    gw.child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut ok_before = Vec::new();
    for w in workers {
        ok_before.push(w.await.unwrap());
    }

    // Restart on the same file and drain every token.
    let gw = spawn_gateway(dir.path(), "a2", &cfg, addr);
    for (i, (tag, auth)) in tokens.iter().enumerate() {
        let mut ok_after = 0u64;
        loop {
            let r = http
                .get(gw.url("/api/x"))
                .header("authorization", auth)
                .header("x-test-token", tag)
                .send()
                .await
                .unwrap();
            match r.status().as_u16() {
                200 => ok_after += 1,
                402 => break,
                s => panic!("unexpected {s}"),
            }
        }
        let served = counts.lock().unwrap().get(tag).copied().unwrap_or(0);
        let answered = ok_before[i] + ok_after;
        // Nothing served beyond what was paid; every answered call was served once.
        assert!(served <= 20, "{tag}: served {served} > 20 paid");
        assert!(
            answered <= served,
            "{tag}: answered {answered} but upstream served {served}"
        );
        // At most the one call in flight at the kill is lost (charged, never answered).
        assert!(
            answered >= 19,
            "{tag}: only {answered} of 20 paid calls answered"
        );
        assert!(
            ok_before[i] > 0 || ok_after == 20,
            "{tag}: the load did run"
        );
    }
}
