//! Metrics and daily statistics, end to end: a real gateway on loopback HTTP (dev backend, real
//! SQLite file, a real upstream) driven through challenges, paid calls, a refund, free-tier
//! calls, a time pass and a rate-limited call; `Gateway::metrics()` parsed by the official
//! Prometheus Python client's text-format parser (PyPI `prometheus-client`), every counter
//! checked to have moved by exactly the calls made; and the same counts in the store after the
//! gateway stopped (its last flush), on SQLite and — with `TURNPIKE_TEST_POSTGRES_URL` — on
//! PostgreSQL shared by two gateways whose counts add up.
//!
//! The parser needs `TURNPIKE_TEST_PYTHON` = a Python with `prometheus-client`
//! (scripts/test-requirements.txt); without it that part is skipped with a message (failed
//! under `TURNPIKE_STRICT_TESTS=1`).

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use turnpike_gateway::config::{
    BackendConfig, DevBackendConfig, GatewayConfig, ServiceConfig, StoreConfig,
};
use turnpike_gateway::config::{FreeTierConfig, RateLimitsConfig};
use turnpike_gateway::rate_limit::Limit;
use turnpike_gateway::{Gateway, GatewayParts};
use turnpike_l402::Msat;
use turnpike_l402::root_key::MasterKey;
use turnpike_lightning::{DevBackend, PaymentBackend};
use turnpike_store::{Day, StatCounts, StatsStore, Store};

/// Prints every sample the official parser finds, one JSON array per line:
/// `[family, type, sample name, labels, value]`.
const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        print(json.dumps([family.name, family.type, s.name, s.labels, s.value]))
"#;

const SETUP: &str = "set TURNPIKE_TEST_PYTHON to a Python with prometheus-client, e.g. \
     `python3 -m venv .venv && .venv/bin/pip install -r scripts/test-requirements.txt && \
     export TURNPIKE_TEST_PYTHON=$PWD/.venv/bin/python` (scripts/test.sh does this)";

/// The interpreter with `prometheus_client`, or `None` (after saying so) when it is missing.
fn python() -> Option<String> {
    let strict = std::env::var("TURNPIKE_STRICT_TESTS").as_deref() == Ok("1");
    let missing = |why: String| {
        assert!(!strict, "{why} (TURNPIKE_STRICT_TESTS=1): {SETUP}");
        eprintln!("SKIPPED: parsing /metrics with prometheus-client: {why}; to run it, {SETUP}");
        None
    };
    let python = match std::env::var("TURNPIKE_TEST_PYTHON") {
        Ok(p) if !p.trim().is_empty() => p,
        _ => return missing("TURNPIKE_TEST_PYTHON is not set".into()),
    };
    let ok = Command::new(&python)
        .args(["-c", "import prometheus_client.parser"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        return missing(format!("{python} cannot import prometheus_client"));
    }
    Some(python)
}

/// A sample's identity: its name and labels (sorted).
type Key = (String, BTreeMap<String, String>);

/// Every sample of `text`, parsed by `prometheus_client`, and the type of each family.
fn parse(python: &str, text: &str) -> (BTreeMap<Key, f64>, BTreeMap<String, String>) {
    let mut child = Command::new(python)
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut samples, mut types) = (BTreeMap::new(), BTreeMap::new());
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let (family, kind, name, labels, value): (
            String,
            String,
            String,
            BTreeMap<String, String>,
            f64,
        ) = serde_json::from_str(line).unwrap();
        types.insert(family, kind);
        assert!(
            samples.insert((name.clone(), labels), value).is_none(),
            "sample {name} repeated"
        );
    }
    (samples, types)
}

fn key(name: &str, labels: &[(&str, &str)]) -> Key {
    (
        name.to_owned(),
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

/// The test upstream: any path holding `fail` answers 500, everything else 200.
fn upstream() -> axum::Router {
    axum::Router::new().fallback(|uri: http::Uri| async move {
        if uri.path().contains("fail") {
            (StatusCode::INTERNAL_SERVER_ERROR, "failed")
        } else {
            (StatusCode::OK, "ok")
        }
    })
}

fn service(name: &str, upstream: std::net::SocketAddr, price: u64) -> ServiceConfig {
    ServiceConfig {
        path: Some(format!("/{name}")),
        upstream_timeout_secs: 5,
        ..ServiceConfig::new(name, format!("http://{upstream}"), price)
    }
}

/// A gateway serving on loopback, with the handle to stop it and its task.
struct Running {
    gateway: Gateway,
    base: String,
    dev: Arc<DevBackend>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    http: reqwest::Client,
    /// The client address every request claims (through the trusted loopback proxy), so free
    /// tiers kept in a shared store are fresh for each gateway run.
    client_ip: String,
}

/// Per token, 4 requests at once and then one per hour: the time pass's fifth call is limited.
const PER_TOKEN_BURST: u32 = 4;

async fn start(store: Arc<dyn Store>, data_dir: &std::path::Path, client_ip: &str) -> Running {
    turnpike_lightning::ensure_crypto_provider();
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    tokio::spawn(axum::serve(up, upstream()).into_future());
    let services = vec![
        service("paid", up_addr, 2),
        ServiceConfig {
            calls_per_payment: Some(3),
            ..service("bundle", up_addr, 5)
        },
        ServiceConfig {
            time_pass_secs: Some(3600),
            ..service("pass", up_addr, 3)
        },
        ServiceConfig {
            free_tier: Some(FreeTierConfig {
                calls: 2,
                window_secs: 3600,
            }),
            ..service("free", up_addr, 1)
        },
    ];
    let config = GatewayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_owned(),
        store: StoreConfig { url: None },
        services,
        trusted_proxies: vec!["127.0.0.1/32".into()],
        rate_limits: RateLimitsConfig {
            per_token: Some(Limit {
                requests: 1,
                per_secs: 3600,
                burst: PER_TOKEN_BURST,
            }),
            ..RateLimitsConfig::default()
        },
        ..GatewayConfig::new(BackendConfig::Dev(DevBackendConfig::default()))
    };
    config.validate().unwrap();
    let dev = Arc::new(DevBackend::random());
    let gateway = Gateway::new(GatewayParts {
        config,
        master_key: MasterKey::from_bytes([7; 32]),
        store,
        backend: dev.clone(),
        dev: Some(dev.clone()),
        admin: None,
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(gateway.clone().serve(listener, async {
        let _ = stopped.await;
    }));
    Running {
        gateway,
        base: format!("http://{addr}"),
        dev,
        stop: Some(stop),
        task,
        http: reqwest::Client::new(),
        client_ip: client_ip.to_owned(),
    }
}

impl Running {
    async fn get(&self, path: &str, auth: Option<&str>) -> reqwest::Response {
        let mut req = self
            .http
            .get(format!("{}{path}", self.base))
            .header("x-forwarded-for", &self.client_ip);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        req.send().await.unwrap()
    }

    /// A `402` for `path`, then its invoice paid: the `Authorization` value.
    async fn buy(&self, path: &str) -> String {
        let resp = self.get(path, None).await;
        assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
        let headers = resp.headers().clone();
        let body = resp.bytes().await.unwrap();
        let challenge = turnpike_client::read_challenge(&headers, &body).unwrap();
        let paid = self
            .dev
            .pay_invoice(&challenge.invoice, Msat::ZERO)
            .await
            .unwrap();
        format!(
            "L402 {}:{}",
            challenge.macaroon.to_base64(),
            paid.preimage.to_hex()
        )
    }

    async fn expect(&self, path: &str, auth: Option<&str>, status: StatusCode) {
        let resp = self.get(path, auth).await;
        assert_eq!(resp.status(), status, "{path}");
    }

    /// Stops the gateway and waits for it (its last statistics flush included).
    async fn stop(mut self) -> Gateway {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("the gateway stops")
            .unwrap()
            .unwrap();
        self.gateway
    }
}

/// What one run of [`drive`] must count, per service.
fn expected() -> BTreeMap<&'static str, StatCounts> {
    BTreeMap::from([
        (
            // 5 challenges (one never paid), 4 tokens used: two served, one refunded by a 5xx
            // and then used again (served, not a second payment), one by an idempotent request.
            "paid",
            StatCounts {
                earned_msat: 8_000,
                challenges: 5,
                payments: 4,
                calls_served: 4,
                calls_refunded: 1,
                free_calls: 0,
                rate_limited: 0,
            },
        ),
        (
            // One bundle of 3 calls, a fourth call sent back to pay.
            "bundle",
            StatCounts {
                earned_msat: 5_000,
                challenges: 2,
                payments: 1,
                calls_served: 3,
                ..StatCounts::default()
            },
        ),
        (
            // One time pass, used up to the per-token limit, then a 429.
            "pass",
            StatCounts {
                earned_msat: 3_000,
                challenges: 1,
                payments: 1,
                calls_served: u64::from(PER_TOKEN_BURST),
                rate_limited: 1,
                ..StatCounts::default()
            },
        ),
        (
            // Two free calls, then a 402.
            "free",
            StatCounts {
                challenges: 1,
                free_calls: 2,
                ..StatCounts::default()
            },
        ),
    ])
}

/// Drives the calls [`expected`] counts.
async fn drive(g: &Running) {
    use StatusCode as S;
    let unpaid = g.get("/paid", None).await;
    assert_eq!(unpaid.status(), S::PAYMENT_REQUIRED);
    for _ in 0..2 {
        let auth = g.buy("/paid").await;
        g.expect("/paid/ok", Some(&auth), S::OK).await;
    }
    let auth = g.buy("/paid").await;
    g.expect("/paid/fail", Some(&auth), S::INTERNAL_SERVER_ERROR)
        .await;
    g.expect("/paid/ok", Some(&auth), S::OK).await;
    // A token first used by an idempotent request is a payment too.
    let auth = g.buy("/paid").await;
    let resp = g
        .http
        .get(format!("{}/paid/idem", g.base))
        .header("x-forwarded-for", &g.client_ip)
        .header("authorization", &auth)
        .header("idempotency-key", "k1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), S::OK);
    g.expect("/paid", Some("L402 AgEEbHNhdAJC:00"), S::UNAUTHORIZED)
        .await;

    let bundle = g.buy("/bundle").await;
    for _ in 0..3 {
        g.expect("/bundle", Some(&bundle), S::OK).await;
    }
    g.expect("/bundle", Some(&bundle), S::PAYMENT_REQUIRED)
        .await;

    let pass = g.buy("/pass").await;
    for _ in 0..PER_TOKEN_BURST {
        g.expect("/pass/x", Some(&pass), S::OK).await;
    }
    g.expect("/pass/x", Some(&pass), S::TOO_MANY_REQUESTS).await;

    for _ in 0..2 {
        let resp = g.get("/free", None).await;
        assert_eq!(resp.status(), S::OK);
        assert_eq!(resp.headers()["turnpike-free-call"], "true");
    }
    g.expect("/free", None, S::PAYMENT_REQUIRED).await;

    // A time pass's payment is recorded in the background: wait for it.
    let pass_metrics = g.gateway.metrics().service("pass");
    for _ in 0..100 {
        if pass_metrics.payments.get() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 5 s) until `ok` holds.
async fn wait_until(ok: impl Fn() -> bool) {
    for _ in 0..100 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok(), "condition not reached in 5 s");
}

/// Checks the exposition of `gateway` after one [`drive`] with the official parser.
fn check_exposition(gateway: &Gateway) {
    let mut text = String::new();
    gateway.metrics().render_prometheus(&mut text);
    let Some(python) = python() else { return };
    let (samples, types) = parse(&python, &text);
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        *samples
            .get(&key(name, labels))
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in\n{text}"))
    };
    for (service, c) in expected() {
        let s = [("service", service)];
        let counters = [
            ("turnpike_challenges_total", c.challenges),
            ("turnpike_payments_total", c.payments),
            ("turnpike_earned_msat_total", c.earned_msat),
            ("turnpike_calls_served_total", c.calls_served),
            ("turnpike_calls_refunded_total", c.calls_refunded),
            ("turnpike_free_calls_total", c.free_calls),
            ("turnpike_rate_limited_total", c.rate_limited),
        ];
        for (name, want) in counters {
            assert_eq!(value(name, &s), want as f64, "{name} of {service}");
        }
        // Every forwarded call went to the upstream once: 2xx, and the one 5xx of "paid".
        let forwarded = c.calls_served + c.calls_refunded + c.free_calls;
        let fivexx = c.calls_refunded;
        let class = |class| {
            value(
                "turnpike_upstream_responses_total",
                &[s[0], ("class", class)],
            )
        };
        assert_eq!(class("2xx"), (forwarded - fivexx) as f64, "{service}");
        assert_eq!(class("5xx"), fivexx as f64, "{service}");
        assert_eq!(class("error"), 0.0);
        let count = value("turnpike_upstream_latency_seconds_count", &s);
        assert_eq!(count, forwarded as f64, "{service}");
        assert_eq!(
            value(
                "turnpike_upstream_latency_seconds_bucket",
                &[s[0], ("le", "+Inf")]
            ),
            count
        );
    }
    let failures = |reason| {
        value(
            "turnpike_verification_failures_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(failures("invalid_credential"), 1.0);
    assert_eq!(failures("token_used_up"), 1.0);
    assert_eq!(failures("token_expired"), 0.0);
    let store_ops = |op| value("turnpike_store_latency_seconds_count", &[("operation", op)]);
    // Consumes: "paid" 2 + 1 + 1, "bundle" 3 + the exhausted one.
    assert_eq!(store_ops("consume_call"), 8.0);
    assert_eq!(store_ops("record_invoice"), 9.0, "one per challenge");
    assert_eq!(store_ops("idempotency_begin"), 1.0);
    assert_eq!(store_ops("take_free_call"), 3.0);
    assert_eq!(store_ops("refund_call"), 1.0);
    assert_eq!(store_ops("record_pass_use"), 1.0);
    let backend = |op| {
        value(
            "turnpike_backend_latency_seconds_count",
            &[("operation", op)],
        )
    };
    assert_eq!(backend("create_invoice"), 9.0);
    assert_eq!(
        backend("lookup"),
        0.0,
        "the dev backend checks no settlement"
    );
    // Buckets are cumulative and end at the count.
    let mut last = 0.0;
    for le in ["0.0005", "0.001", "0.01", "0.1", "1", "10", "+Inf"] {
        let b = value(
            "turnpike_store_latency_seconds_bucket",
            &[("operation", "consume_call"), ("le", le)],
        );
        assert!(b >= last, "bucket {le}");
        last = b;
    }
    assert_eq!(last, 8.0);
    assert!(value("turnpike_open_connections", &[]) >= 0.0);
    for (family, kind) in [
        ("turnpike_challenges", "counter"),
        ("turnpike_earned_msat", "counter"),
        ("turnpike_store_latency_seconds", "histogram"),
        ("turnpike_upstream_latency_seconds", "histogram"),
        ("turnpike_open_connections", "gauge"),
    ] {
        assert_eq!(
            types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
}

/// The store's statistics for today, per service.
async fn stored_today(store: &dyn StatsStore) -> BTreeMap<String, StatCounts> {
    let today = Day::from_unix(turnpike_gateway::unix_now());
    // Around midnight a flush may land on the next day: read yesterday to tomorrow.
    let rows = store
        .daily_stats(today.minus_days(1), today.plus_days(1), None)
        .await
        .unwrap();
    let mut out: BTreeMap<String, StatCounts> = BTreeMap::new();
    for r in rows {
        let sum = out.entry(r.service).or_default();
        *sum = sum.plus(&r.counts);
    }
    out
}

fn expected_times(n: u64) -> BTreeMap<String, StatCounts> {
    expected()
        .into_iter()
        .map(|(s, c)| {
            let mut sum = StatCounts::default();
            for _ in 0..n {
                sum = sum.plus(&c);
            }
            (s.to_owned(), sum)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_counter_moves_by_exactly_the_calls_made_and_reaches_the_store_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store: Arc<dyn Store> = Arc::new(turnpike_store::SqliteStore::open(&url).await.unwrap());
    let g = start(store.clone(), dir.path(), "192.0.2.1").await;
    drive(&g).await;
    check_exposition(&g.gateway);

    // The gauge of open connections follows a connection opened and closed.
    let open = || {
        let mut text = String::new();
        g.gateway.metrics().render_prometheus(&mut text);
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("turnpike_open_connections "))
            .unwrap()
            .to_owned();
        line.parse::<u64>().unwrap()
    };
    let before = open();
    let mut conn = tokio::net::TcpStream::connect(g.base.trim_start_matches("http://"))
        .await
        .unwrap();
    wait_until(|| open() == before + 1).await;
    use tokio::io::AsyncWriteExt;
    conn.shutdown().await.unwrap();
    drop(conn);
    wait_until(|| open() == before).await;

    // Stopping flushes the counts; nothing counted twice by a flush that finds nothing new.
    let gateway = g.stop().await;
    gateway.flush_stats().await.unwrap();
    assert_eq!(stored_today(&*store).await, expected_times(1));

    // The admin API's report: the same counts, as JSON, `earned_sats` the floor of the msat.
    let today = Day::from_unix(turnpike_gateway::unix_now());
    let report = gateway
        .stats(today.minus_days(1), today.plus_days(1), Some("paid"))
        .await
        .unwrap();
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["totals"]["earned_msat"], 8_000);
    assert_eq!(json["totals"]["earned_sats"], 8);
    assert_eq!(json["totals"]["payments"], 4);
    assert_eq!(json["totals"]["calls_refunded"], 1);
    assert!(
        json["days"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["service"] == "paid")
    );

    // A restarted gateway starts its counters at zero, but the store keeps adding.
    let g = start(store.clone(), dir.path(), "192.0.2.2").await;
    drive(&g).await;
    g.stop().await;
    assert_eq!(stored_today(&*store).await, expected_times(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_postgres_database_add_up() {
    let Ok(url) = std::env::var("TURNPIKE_TEST_POSTGRES_URL") else {
        eprintln!("SKIPPED: PostgreSQL statistics test (set TURNPIKE_TEST_POSTGRES_URL to run it)");
        return;
    };
    let schema = format!(
        "turnpike_stats_{}",
        &turnpike_l402::TokenId::random().to_hex()[..16]
    );
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    let open = || async {
        let options = std::str::FromStr::from_str(&url);
        let options: sqlx::postgres::PgConnectOptions = options.unwrap();
        let options = options.options([("search_path", schema.as_str())]);
        let store: Arc<dyn Store> =
            Arc::new(turnpike_store::PgStore::open_with(options).await.unwrap());
        store
    };
    let (store_a, store_b) = (open().await, open().await);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(store_a.clone(), dir_a.path(), "192.0.2.1").await;
    let b = start(store_b.clone(), dir_b.path(), "192.0.2.2").await;
    tokio::join!(drive(&a), drive(&b));
    // Both flush at once, several times over: the rows add up exactly.
    let (ga, gb) = (a.gateway.clone(), b.gateway.clone());
    let flushes = (0..4).map(|i| {
        let g = if i % 2 == 0 { ga.clone() } else { gb.clone() };
        async move { g.flush_stats().await.unwrap() }
    });
    futures_util::future::join_all(flushes).await;
    tokio::join!(a.stop(), b.stop());
    assert_eq!(stored_today(&*store_a).await, expected_times(2));
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
}

/// Sends `signal` (`-HUP`, `-TERM`) to the process `pid`.
fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {signal} {pid}");
}

/// `turnpike serve` itself: counts kept across a SIGHUP reload reach the store, the last ones
/// through the flush when SIGTERM stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_keeps_counts_across_a_reload_and_flushes_them_when_it_stops() {
    turnpike_lightning::ensure_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let services = "[[services]]\nname = \"paid\"\npath = \"/paid\"\nupstream = \"http://{upstream}\"\nprice_sats = 2\n";
    let (mut gateway, base, _served) = common::dev_gateway(dir.path(), services);
    let challenge = || async {
        let resp = reqwest::get(format!("{base}/paid")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    };
    challenge().await;
    challenge().await;
    // A periodic flush stores those two; a reload then must not restart the counter (a
    // restarted counter would make the next flush add nothing).
    tokio::time::sleep(turnpike_gateway::stats::FLUSH_INTERVAL + Duration::from_millis(800)).await;
    let pid = gateway.0.id();
    signal(pid, "-HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    challenge().await;
    signal(pid, "-TERM");
    let status = tokio::task::spawn_blocking(move || gateway.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    let db = dir.path().join("gateway-data").join("turnpike.db");
    let store = turnpike_store::SqliteStore::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let stored = stored_today(&store).await;
    assert_eq!(stored["paid"].challenges, 3, "{stored:?}");
}
