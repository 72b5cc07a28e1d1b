//! `turnpike mcp` end to end with the official MCP Python SDK (PyPI `mcp`) as the client, over
//! stdio and over streamable HTTP, against a real gateway (`turnpike serve`, dev backend) on
//! loopback: tools listed with their annotations, a paid `l402_fetch` returning the body, over
//! budget as a tool error, elicitation accepted → paid and declined → not paid, an SSRF target
//! refused before any connection, the spending report, a lowered budget, discovery. The script is
//! `tests/mcp/mcp_check.py`; the ledger and the upstream's count are checked here as well.
//! `turnpike mcp --hub` against a real hub (`turnpike serve` with `[hub]`, providers paid on
//! their own wallets of a real LNbits, the agent paying from another): `tests/mcp/mcp_hub_check.py`.
//!
//! Needs `TURNPIKE_TEST_PYTHON` = a Python with `mcp` (scripts/test-requirements.txt; scripts/
//! test.sh sets it up). Without it the tests print `SKIPPED` and pass, unless
//! `TURNPIKE_STRICT_TESTS=1`, in which case they fail.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use turnpike_client::ledger::{Ledger, PaymentState};

mod common;
mod hub_harness;
mod lnbits_node;

use common::{Running, dev_gateway};

const BIN: &str = env!("CARGO_BIN_EXE_turnpike");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/mcp_check.py");
const HUB_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/mcp_hub_check.py");
const SETUP: &str = "set TURNPIKE_TEST_PYTHON to a Python with the MCP SDK, e.g. \
     `python3 -m venv .venv && .venv/bin/pip install -r scripts/test-requirements.txt && \
     export TURNPIKE_TEST_PYTHON=$PWD/.venv/bin/python` (scripts/test.sh does this)";

/// The interpreter, or `None` (after reporting) when the test is skipped; with
/// `TURNPIKE_STRICT_TESTS=1` a missing Python or SDK fails the test.
fn python(test: &str) -> Option<String> {
    let strict = std::env::var("TURNPIKE_STRICT_TESTS").as_deref() == Ok("1");
    let missing = |why: String| {
        if strict {
            panic!("{test}: {why} (TURNPIKE_STRICT_TESTS=1): {SETUP}");
        }
        eprintln!("SKIPPED: {test}: {why}; to run it, {SETUP}");
        None
    };
    let python = match std::env::var("TURNPIKE_TEST_PYTHON") {
        Ok(p) if !p.trim().is_empty() => p,
        _ => return missing("TURNPIKE_TEST_PYTHON is not set".into()),
    };
    let ok = Command::new(&python)
        .args(["-c", "import mcp, mcp.client.stdio"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        return missing(format!("{python} cannot import the mcp package"));
    }
    Some(python)
}

/// A gateway with `/single` (5 sats), `/big` (100 sats) and `/approve` (30 sats) in front of a
/// counting upstream, and a wallet file whose `agent` dev wallet allows 50 sats a call and asks
/// approval above 20.
struct Setup {
    dir: tempfile::TempDir,
    base: String,
    served: Arc<AtomicU64>,
    _gateway: Running,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let services = r#"
[[services]]
name = "single"
path = "/single"
upstream = "http://{upstream}"
price_sats = 5

[[services]]
name = "big"
path = "/big"
upstream = "http://{upstream}"
price_sats = 100

[[services]]
name = "approve"
path = "/approve"
upstream = "http://{upstream}"
price_sats = 30
"#;
        let (gateway, base, served) = dev_gateway(dir.path(), services);
        std::fs::write(
            dir.path().join("wallets.toml"),
            "[wallets.agent]\nkind = \"dev\"\n\n[wallets.agent.budget]\nmax_per_call = 50\n\
             total = 1000\napprove_above = 20\n",
        )
        .unwrap();
        Setup {
            dir,
            base,
            served,
            _gateway: gateway,
        }
    }

    fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn env(&self, cmd: &mut Command, data: &str) {
        cmd.env("TURNPIKE_DATA_DIR", self.data_dir(data))
            .env("TURNPIKE_WALLETS", self.dir.path().join("wallets.toml"))
            .env_remove("TURNPIKE_MCP_TOKEN");
    }

    /// Runs the Python check; returns its summary.
    fn check(&self, python: &str, mode: &str, target: &str, data: &str) -> Value {
        let mut cmd = Command::new(python);
        cmd.arg(SCRIPT).args([mode, &self.base, target]);
        self.env(&mut cmd, data);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "mcp_check.py {mode} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("summary: {e}: {stdout}"))
    }

    /// The ledger of one run: exactly the two paid calls (5 and 30 sats), nothing reserved.
    async fn assert_ledger(&self, data: &str, summary: &Value) {
        let ledger = Ledger::open_in(&self.data_dir(data)).await.unwrap();
        let rows = ledger.payments(Some("agent"), None).await.unwrap();
        let paid: Vec<u64> = rows
            .iter()
            .filter(|r| r.state == PaymentState::Paid)
            .map(|r| r.amount_msat)
            .collect();
        assert_eq!(paid, vec![5_000, 30_000], "{rows:?}");
        assert!(
            rows.iter()
                .all(|r| matches!(r.state, PaymentState::Paid | PaymentState::Failed)),
            "{rows:?}"
        );
        assert_eq!(
            rows[0].payment_hash,
            summary["paid_hash"].as_str().unwrap(),
            "the hash l402_fetch reported is the ledger's"
        );
        assert_eq!(rows[0].http_status, Some(200));
    }
}

fn assert_summary(summary: &Value) {
    assert_eq!(summary["elicitations"], 2, "{summary}");
    assert_eq!(
        summary["discovered"],
        serde_json::json!(["approve", "big", "single"])
    );
    assert!(
        summary["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "l402_fetch")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_stdio() {
    let Some(python) = python("python_sdk_over_stdio") else {
        return;
    };
    let s = Setup::new();
    let summary = s.check(&python, "stdio", BIN, "stdio-ledger");
    assert_summary(&summary);
    s.assert_ledger("stdio-ledger", &summary).await;
    // The upstream served the two paid calls only: not the declined, refused or over-budget ones.
    assert_eq!(s.served.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_streamable_http() {
    let Some(python) = python("python_sdk_over_streamable_http") else {
        return;
    };
    let s = Setup::new();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "mcp",
        "--wallet",
        "agent",
        "--allow-host",
        "127.0.0.1",
        "--http",
        "127.0.0.1:0",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    s.env(&mut cmd, "http-ledger");
    let mut server = Running(cmd.spawn().unwrap());
    // The server names its address on standard error.
    let stderr = server.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("turnpike mcp: streamable HTTP on ") {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("turnpike mcp --http names its address");
    let summary = s.check(&python, "http", &url, "http-ledger");
    assert_summary(&summary);
    s.assert_ledger("http-ledger", &summary).await;
    assert_eq!(s.served.load(Ordering::SeqCst), 2);
}

#[test]
fn http_on_a_public_address_needs_a_bearer_token() {
    let s = Setup::new();
    let mut cmd = Command::new(BIN);
    cmd.args(["mcp", "--wallet", "agent", "--http", "0.0.0.0:0"])
        .stdin(Stdio::null());
    s.env(&mut cmd, "ledger");
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TURNPIKE_MCP_TOKEN"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_with_a_token_refuses_requests_without_it() {
    let s = Setup::new();
    let mut cmd = Command::new(BIN);
    cmd.args(["mcp", "--wallet", "agent", "--http", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    s.env(&mut cmd, "ledger");
    cmd.env("TURNPIKE_MCP_TOKEN", "s3cret-token");
    let mut server = Running(cmd.spawn().unwrap());
    let stderr = server.0.stderr.take().unwrap();
    let mut url = String::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if let Some(u) = line.strip_prefix("turnpike mcp: streamable HTTP on ") {
            url = u.trim().to_owned();
            break;
        }
    }
    assert!(!url.is_empty(), "turnpike mcp --http names its address");
    let init = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "0"}}
    });
    turnpike_lightning::ensure_crypto_provider();
    let http = reqwest::Client::new();
    let post = |auth: Option<&'static str>| {
        let mut r = http
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .json(&init);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(
        post(Some("Bearer wrong")).await.unwrap().status(),
        401,
        "a wrong token is refused"
    );
    let ok = post(Some("Bearer s3cret-token")).await.unwrap();
    assert_eq!(ok.status(), 200, "{:?}", ok.text().await);
}

/// An upstream answering `{method, uri, body}` (404 under `/missing`), recording each request as
/// `METHOD URI BODY` (trimmed).
async fn echo_upstream() -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method, uri: axum::http::Uri, body: String| {
            let log = log.clone();
            async move {
                let line = format!("{method} {uri} {body}");
                log.lock().unwrap().push(line.trim_end().to_owned());
                let status = if uri.path().contains("/missing") {
                    axum::http::StatusCode::NOT_FOUND
                } else {
                    axum::http::StatusCode::OK
                };
                let echo = serde_json::json!({
                    "method": method.as_str(), "uri": uri.to_string(), "body": body,
                });
                (status, echo.to_string())
            }
        },
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(axum::serve(l, app).into_future());
    (addr, seen)
}

/// `turnpike mcp --hub` driven by the official SDK against a real hub: the providers' services
/// are tools with their descriptions, prices and schemas (two colliding names told apart); a
/// call pays the provider's own wallet within the budget (approved by the person above
/// approve_above) and returns the upstream's answer; a
/// call above the budget pays nothing and reaches nobody; a service added shows after the TTL
/// with `notifications/tools/list_changed`; a call of a tool whose price changed since the
/// agent listed the tools is refused with nothing sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_with_a_hub() {
    let Some(python) = python("python_sdk_with_a_hub") else {
        return;
    };
    let Some(node) = lnbits_node::node() else {
        return;
    };
    let (alice_w, bob_w) = (node.wallet("alice", 0).await, node.wallet("bob", 0).await);
    let agent = node.wallet("agent", 1_000).await;
    let (up, seen) = echo_upstream().await;
    let upstream = format!("http://{up}");
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_harness::start_hub(dir.path(), 0);
    let alice = hub
        .register("alice", lnbits_node::lnbits_payout(&node, &alice_w))
        .await;
    let bob = hub
        .register("bob", lnbits_node::lnbits_payout(&node, &bob_w))
        .await;
    let schema = serde_json::json!({"type": "object", "required": ["symbol"],
                                    "properties": {"symbol": {"type": "string"}}});
    let services = [
        (
            &alice,
            serde_json::json!({"name": "quote", "path": "/quote", "price_sats": 21,
                               "description": "Stock quotes", "input_schema": schema}),
        ),
        (
            &alice,
            serde_json::json!({"name": "x.y", "path": "/dot", "price_sats": 1}),
        ),
        (
            &alice,
            serde_json::json!({"name": "x_y", "path": "/under", "price_sats": 1}),
        ),
        (
            &bob,
            serde_json::json!({"name": "data", "path": "/data", "price_sats": 100,
                               "routes": [{"name": "ingest", "path": "/data/ingest",
                                           "method": "POST", "price_sats": 5}]}),
        ),
    ];
    for (token, mut service) in services {
        service["upstream"] = serde_json::json!(upstream);
        hub.add_service(token, service).await;
    }
    std::fs::write(
        dir.path().join("wallets.toml"),
        format!(
            "[wallets.agent]\nkind = \"lnbits\"\nurl = \"{}\"\nadmin_key = {{ env = \"AGENT_ADMIN_KEY\" }}\n\n\
             [wallets.agent.budget]\nmax_per_call = 50\ntotal = 1000\napprove_above = 20\n",
            node.url
        ),
    )
    .unwrap();
    let (a0, b0) = (
        lnbits_node::balance(&node, &alice_w).await,
        lnbits_node::balance(&node, &bob_w).await,
    );
    let out = Command::new(&python)
        .arg(HUB_SCRIPT)
        .args([
            BIN,
            &format!("http://{}", hub.public),
            &format!("http://{}/api/v1", hub.admin),
            &alice,
            &upstream,
        ])
        .env("TURNPIKE_DATA_DIR", dir.path().join("agent-data"))
        .env("TURNPIKE_WALLETS", dir.path().join("wallets.toml"))
        .env("AGENT_ADMIN_KEY", &agent.admin)
        .env_remove("TURNPIKE_MCP_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mcp_hub_check.py failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("summary: {e}: {stdout}"));
    assert_eq!(
        summary["hub_tools"],
        serde_json::json!([
            "alice__quote",
            "alice__x_y",
            "alice__x_y_2",
            "bob__data",
            "bob__data__ingest"
        ])
    );
    // The ledger: four payments (22 + 2 + 2 + 6 sats: 21.42, 1.02 and 5.1 sats, LNbits invoices
    // in whole sats), none for bob's 100-sat service; each wallet got exactly its own.
    let ledger = Ledger::open_in(&dir.path().join("agent-data"))
        .await
        .unwrap();
    let rows = ledger.payments(Some("agent"), None).await.unwrap();
    let paid: Vec<u64> = rows
        .iter()
        .filter(|r| r.state == PaymentState::Paid)
        .map(|r| r.amount_msat)
        .collect();
    assert_eq!(paid, vec![22_000, 2_000, 2_000, 6_000], "{rows:?}");
    assert_eq!(rows.len(), 4, "nothing reserved for bob's data: {rows:?}");
    assert_eq!(rows[0].payment_hash, summary["paid_hash"].as_str().unwrap());
    assert_eq!(lnbits_node::balance(&node, &alice_w).await.0, a0.0 + 26_000);
    assert_eq!(lnbits_node::balance(&node, &bob_w).await.0, b0.0 + 6_000);
    // The upstream saw each paid call once, and never the refused one.
    let seen = seen.lock().unwrap().clone();
    for call in [
        "GET /quote?n=2&symbol=BTC",
        "GET /under/deep/er?a=1&a=2",
        "GET /dot/missing",
        r#"POST /data/ingest {"meta":{"a":null},"rows":[1,2]}"#,
    ] {
        let times = seen.iter().filter(|s| *s == call).count();
        assert_eq!(times, 1, "{call}: {seen:?}");
    }
    // (The hub's own probes may reach the upstream: the refused call is told by its query.)
    assert!(!seen.iter().any(|s| s.contains("rows=")), "{seen:?}");
    // Nor the call refused because the tool changed since the agent listed the tools.
    assert!(!seen.iter().any(|s| s.contains("symbol=ETH")), "{seen:?}");
    assert_eq!(summary["notified"], 1);
}

/// `--hub` is checked at start: a private address without `--allow-host` is refused before any
/// connection, a hub that does not answer (or has no directory) stops the server with a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_cannot_be_read_stops_the_server() {
    let s = Setup::new();
    let no_directory = s.base.clone();
    for (hub, allow, said) in [
        ("http://10.0.0.1:9", None, "refused"),
        (
            "http://user:pw@127.0.0.1:9",
            Some("127.0.0.1"),
            "credentials",
        ),
        (
            "http://127.0.0.1:9",
            Some("127.0.0.1"),
            "reading the directory",
        ),
        (no_directory.as_str(), Some("127.0.0.1"), "404"),
    ] {
        let mut cmd = Command::new(BIN);
        cmd.args(["mcp", "--wallet", "agent", "--hub", hub])
            .stdin(Stdio::null());
        if let Some(host) = allow {
            cmd.args(["--allow-host", host]);
        }
        s.env(&mut cmd, "ledger");
        let started = std::time::Instant::now();
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{hub}: {err}");
        assert!(err.contains(said), "{hub}: {err}");
        assert!(started.elapsed() < Duration::from_secs(10), "{hub}");
    }
}
