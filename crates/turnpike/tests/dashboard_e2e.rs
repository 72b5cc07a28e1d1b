//! Pages in a real headless Chromium. The hub's registration page: see the last test. The
//! admin dashboard in a real headless Chromium (Debian's `chromium`, driven by npm
//! `playwright-core` from `tests/dashboard/dashboard.mjs`) against the real binary (`turnpike
//! serve`, dev backend, SQLite in a temp dir): log in with the admin token, add a
//! service through the editor (a field-named 400 shown first), pay for a call on the public
//! listener, see it on the revenue chart and in the recent payments, edit the price, revoke the
//! token (the gateway then answers 401 to it), delete the service, log out; a screenshot is kept
//! at `target/test-output/dashboard.png`. Here, after the script: exactly the one paid call
//! reached the upstream.
//!
//! What this test assumes of the admin listener (issue 13, `/work/briefs/admin-api.md`); adapt
//! here if the admin branch chose otherwise:
//! - the config table `[admin]` with `listen = "<addr>"` turns the listener on;
//! - with no token configured, the token is created on first start as
//!   `<data_dir>/admin.token` (its text, surrounding whitespace ignored, is the bearer token);
//! - `GET /` on it serves the dashboard without a token, with
//!   `Content-Security-Policy: default-src 'self'` (the script checks that header);
//! - the API answers as the contract says (the script uses `/api/v1/{health,services,tokens,
//!   payments,stats}`), a service added through the API is routed at once, a revoked token is
//!   refused within 10 s, a deleted one is no longer routed within 10 s.
//!
//! The paid call is made by the script itself (402 → `POST /_turnpike/dev/pay` → retry with
//! `Authorization: L402 <macaroon>:<preimage>`), since only the script knows when the service
//! exists; the credential is then the one it revokes from the page and tries again.
//!
//! Needs node (>= 20), `/usr/bin/chromium` (or `TURNPIKE_CHROMIUM`) and playwright-core in
//! `TURNPIKE_DASHBOARD_ENV` (default `<repo>/.dashboard-env`): `scripts/dashboard-env.sh
//! install` (scripts/test.sh runs it). Without them the test prints `SKIPPED` and passes,
//! unless `TURNPIKE_STRICT_TESTS=1`, in which case it fails.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod common;
#[allow(dead_code)]
#[path = "../../lightning/tests/contract_fakes/mod.rs"]
mod contract_fakes;
mod hub_harness;
mod lnbits_node;
mod lnurl_contract_fake;

use common::{Running, counting_upstream, healthy};

const BIN: &str = env!("CARGO_BIN_EXE_turnpike");
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const SETUP: &str = "run `scripts/dashboard-env.sh install` (as root with \
     TURNPIKE_INSTALL_CHROMIUM=1 it also installs Debian's chromium; scripts/test.sh does this)";
/// The whole browser script; each of its steps has its own, shorter limit.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// The npm folder holding playwright-core, or `None` (after reporting) when the test is
/// skipped; with `TURNPIKE_STRICT_TESTS=1` anything missing fails the test.
fn browser_env(test: &str) -> Option<PathBuf> {
    let strict = std::env::var("TURNPIKE_STRICT_TESTS").as_deref() == Ok("1");
    let env_dir = std::env::var_os("TURNPIKE_DASHBOARD_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join(".dashboard-env"));
    let chromium = std::env::var_os("TURNPIKE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let problem = if !node_ok {
        Some("node is not on PATH".to_owned())
    } else if !chromium.exists() {
        Some(format!("{} is missing", chromium.display()))
    } else if !env_dir.join("node_modules/playwright-core").is_dir() {
        Some(format!(
            "playwright-core is not installed in {}",
            env_dir.display()
        ))
    } else {
        None
    };
    match problem {
        None => Some(env_dir),
        Some(why) if strict => panic!("{test}: {why} (TURNPIKE_STRICT_TESTS=1): {SETUP}"),
        Some(why) => {
            eprintln!("SKIPPED: {test}: {why}; to run it, {SETUP}");
            None
        }
    }
}

/// The browser's npm folder and a real LNbits, or `None` (said) when the test is skipped.
fn browser_and_lnbits(test: &str) -> Option<(PathBuf, lnbits_node::Node)> {
    let env_dir = browser_env(test)?;
    Some((env_dir, lnbits_node::node()?))
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Whether `GET /` at `addr` answers 200 (the dashboard page, served without a token).
fn page_served(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

/// The last lines of the gateway's log, for a failure message.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Runs the node `script` with `args` (at most [`SCRIPT_TIMEOUT`]); its output, or a panic
/// with it and the gateway's `log` when it fails.
fn run_script(script: &Path, args: &[std::ffi::OsString], dir: &Path, log: &Path) -> String {
    let out_path = dir.join("script.out");
    let mut child = Running(
        Command::new("node")
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
            .stderr(Stdio::from(
                std::fs::File::options()
                    .append(true)
                    .open(&out_path)
                    .unwrap(),
            ))
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    println!("{output}");
    match status {
        Some(s) if s.success() => output,
        Some(s) => panic!(
            "{} failed ({s}):\n{output}\ngateway log:\n{}",
            script.display(),
            log_tail(log)
        ),
        None => panic!(
            "{} did not finish within {} s:\n{output}\ngateway log:\n{}",
            script.display(),
            SCRIPT_TIMEOUT.as_secs(),
            log_tail(log)
        ),
    }
}

#[test]
fn dashboard_in_chromium_logs_in_adds_a_service_sees_a_payment_and_revokes() {
    let test = "dashboard_in_chromium_logs_in_adds_a_service_sees_a_payment_and_revokes";
    let Some(env_dir) = browser_env(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (upstream, served) = counting_upstream();
    let (listen, admin) = (free_port(), free_port());
    let config = dir.path().join("turnpike.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{listen}\"\ndata_dir = \"data\"\n\n[admin]\nlisten = \"{admin}\"\n\n\
             [backend]\nkind = \"dev\"\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("gateway.log");
    let mut gateway = Running(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .unwrap(),
    );
    let token_file = dir.path().join("data/admin.token");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(healthy(listen) && page_served(admin) && token_file.exists()) {
        if let Some(status) = gateway.0.try_wait().unwrap() {
            panic!(
                "the gateway exited ({status}) before it was ready; its log:\n{}",
                log_tail(&log)
            );
        }
        assert!(
            Instant::now() < deadline,
            "within 30 s the gateway was not healthy at {listen}, the admin listener did not \
             serve the dashboard at http://{admin}/, or {} was not created; gateway log:\n{}",
            token_file.display(),
            log_tail(&log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join("target"));
    let screenshot = target.join("test-output/dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard/dashboard.mjs");
    let mut args: Vec<std::ffi::OsString> = vec![
        "--admin".into(),
        format!("http://{admin}").into(),
        "--token-file".into(),
        token_file.clone().into(),
        "--public".into(),
        format!("http://{listen}").into(),
        "--domain".into(),
        "hub.example.com".into(),
        "--upstream".into(),
        format!("http://{upstream}").into(),
        "--screenshot".into(),
        screenshot.clone().into(),
    ];
    args.extend(["--env".into(), env_dir.into()]);
    let output = run_script(&script, &args, dir.path(), &log);
    assert!(
        output.contains("dashboard: all expectations held"),
        "the script exited 0 without its closing line:\n{output}"
    );
    let png = std::fs::read(&screenshot).unwrap_or_default();
    assert!(
        png.len() > 10_000 && png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "no screenshot at {} ({} bytes)",
        screenshot.display(),
        png.len()
    );
    // One paid call was served; the 402, the revoked credential and the deleted service never
    // reached the upstream.
    assert_eq!(
        served.load(Ordering::SeqCst),
        1,
        "calls the upstream served"
    );
}

/// The hub's registration page (`[hub] open_registration`) in Chromium: a provider registers
/// with only a Lightning address (served by the LNURL-pay contract fake, its wallet a real
/// LNbits one, which the registration tries with a test invoice), a refused slug first; the
/// token the page shows opens the provider's record; then a provider on phoenixd (its contract
/// fake), the full-access password refused (`tests/dashboard/hub_register.mjs`).
#[test]
fn hub_registration_page_in_chromium_registers_a_lightning_address() {
    let Some((env_dir, node)) =
        browser_and_lnbits("hub_registration_page_in_chromium_registers_a_lightning_address")
    else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let wallet = rt.block_on(node.wallet("alice", 0));
    let fake = rt.block_on(lnurl_contract_fake::LnurlFake::start(&node.url));
    let address = fake.add_user("alice", &wallet.invoice);
    let phoenixd = rt.block_on(contract_fakes::phoenixd::PhoenixdFake::start());
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (free_port(), free_port());
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{listen}\"\ndata_dir = \"data\"\n[admin]\nlisten = \"{admin}\"\n\
             [backend]\nkind = \"dev\"\n[hub]\ndomain = \"hub.test\"\nopen_registration = true\n\
             allow_insecure_payouts = true\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("hub.log");
    let _hub = common::serve_with_admin(&config, &log, listen, admin);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join("target"));
    let screenshot = target.join("test-output/hub-register.png");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard/hub_register.mjs");
    let args: Vec<std::ffi::OsString> = vec![
        "--public".into(),
        format!("http://{listen}").into(),
        "--admin".into(),
        format!("http://{admin}").into(),
        "--address".into(),
        address.into(),
        "--phoenixd".into(),
        phoenixd.url().into(),
        "--phoenixd-full".into(),
        contract_fakes::phoenixd::PASSWORD.into(),
        "--phoenixd-limited".into(),
        contract_fakes::phoenixd::LIMITED_PASSWORD.into(),
        "--screenshot".into(),
        screenshot.into(),
        "--env".into(),
        env_dir.into(),
    ];
    let output = run_script(&script, &args, dir.path(), &log);
    assert!(
        output.contains("hub register: all expectations held"),
        "the script exited 0 without its closing line:\n{output}"
    );
    drop(rt);
}

/// A hub with two providers (each paid on its own real LNbits wallet) and one paid call to
/// alice's service (its 1 sat of fee is billed within a second: the threshold is 1 sat, due in
/// a day; the hub's own backend is the dev one, so the script can pay the bill), for the
/// browser scripts (the upstreams are probed every second): the hub, the providers' tokens,
/// and the paths the upstream was asked for.
struct PaidHub {
    hub: hub_harness::Hub,
    alice: String,
    bob: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// What bob's description holds: markup that would run script if a page parsed it as HTML.
const XSS: &str = "Forecasts <img src=x onerror=\"window.pwned=1;reportXss('img')\"> \
                   <script>window.pwned=2;reportXss('script')</script>";

fn paid_hub(dir: &Path, node: &lnbits_node::Node, rt: &tokio::runtime::Runtime) -> PaidHub {
    use serde_json::json;
    let (upstream, seen) = rt.block_on(hub_harness::upstream());
    let extra = "bill_threshold_sats = 1\nbill_grace_days = 1\nbilling_interval_secs = 1\n\
                 probe_interval_secs = 1";
    let hub = hub_harness::start_hub_with(dir, "hub", 0, "", extra);
    let (alice, bob) = rt.block_on(async {
        let mut tokens = Vec::new();
        for (slug, service, path, price, tag, description) in [
            ("alice", "alice-quote", "/quote", 21, "finance", "Stock quotes"),
            ("bob", "bob-weather", "/weather", 5, "weather", XSS),
        ] {
            let wallet = node.wallet(slug, 0).await;
            let payout = json!({ "kind": "lnbits", "url": node.url, "invoice_key": wallet.invoice });
            let token = hub.register(slug, payout).await;
            let svc = json!({ "name": service, "path": path, "price_sats": price,
                "upstream": format!("http://{upstream}"), "tags": [tag], "description": description });
            hub.add_service(&token, svc).await;
            tokens.push(token);
        }
        // One paid call to alice's service, through her prefix.
        let payer = node.wallet("payer", 1_000).await;
        let (status, challenge) = hub.get("gw.example", "/alice/quote", None).await;
        assert_eq!(status, 402, "{challenge}");
        let credential = lnbits_node::pay_challenge(node, &payer, &challenge).await;
        let (status, _) = hub
            .get("gw.example", "/alice/quote", Some(&credential))
            .await;
        assert_eq!(status, 200);
        (tokens.remove(0), tokens.remove(0))
    });
    PaidHub {
        hub,
        alice,
        bob,
        seen,
    }
}

/// The hub's dashboards and its public catalogue page in Chromium, on one hub where alice had
/// one paid call: alice's own view (her revenue, fees, bill, statement, no operator panel; she
/// pays the bill), the operator's (fees earned and owed per provider and in total, suspend and
/// reinstate;
/// `tests/dashboard/hub_dashboards.mjs`), and the catalogue (`GET /directory` from a browser:
/// lists, searches, filters, bob suspended and flagged, his `<img onerror>` description inert;
/// `tests/dashboard/catalogue.mjs`). Screenshots: `target/test-output/hub-provider.png`,
/// `hub-operator.png`, `catalogue.png`.
#[test]
fn hub_dashboards_and_catalogue_in_chromium() {
    let Some((env_dir, node)) = browser_and_lnbits("hub_dashboards_and_catalogue_in_chromium")
    else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let PaidHub {
        hub,
        alice,
        bob,
        seen,
    } = paid_hub(dir.path(), &node, &rt);
    let log = dir.path().join("hub.log");
    let shots = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join("target"))
        .join("test-output");
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard");
    let args: Vec<std::ffi::OsString> = vec![
        "--admin".into(),
        format!("http://{}", hub.admin).into(),
        "--public".into(),
        format!("http://{}", hub.public).into(),
        "--operator-token".into(),
        hub.token.clone().into(),
        "--alice-token".into(),
        alice.into(),
        "--bob-token".into(),
        bob.into(),
        "--screenshots".into(),
        shots.clone().into(),
        "--env".into(),
        env_dir.clone().into(),
    ];
    let output = run_script(&scripts.join("hub_dashboards.mjs"), &args, dir.path(), &log);
    assert!(
        output.contains("hub dashboards: all expectations held"),
        "the script exited 0 without its closing line:\n{output}"
    );
    // Bob suspended: the catalogue lists him, flagged.
    let (suspended, body) = rt.block_on(hub.operator("POST", "/hub/providers/bob/suspend", None));
    assert_eq!(suspended, 200, "{body}");
    let args: Vec<std::ffi::OsString> = vec![
        "--public".into(),
        format!("http://{}", hub.public).into(),
        "--screenshot".into(),
        shots.join("catalogue.png").into(),
        "--env".into(),
        env_dir.into(),
    ];
    let output = run_script(&scripts.join("catalogue.mjs"), &args, dir.path(), &log);
    assert!(
        output.contains("catalogue: all expectations held"),
        "the script exited 0 without its closing line:\n{output}"
    );
    for png in ["hub-provider.png", "hub-operator.png", "catalogue.png"] {
        let bytes = std::fs::read(shots.join(png)).unwrap_or_default();
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "no screenshot {png}"
        );
    }
    // The one paid call reached the upstream (as `/quote`); the pages made none; the rest
    // are the probes (`GET /`).
    let seen = seen.lock().unwrap().clone();
    let calls: Vec<&String> = seen.iter().filter(|p| p.as_str() != "/").collect();
    assert_eq!(calls, ["/quote"], "what reached the upstream");
}

/// Issue 14's "done means", in one flow, as README's "Run a hub" tells a newcomer: the hub runs
/// on the README's own config block (read from README.md; only the ports replaced and its two
/// "trying it on one machine" lines switched on, plus `trial_days = 0` so the fee shows); a
/// provider registers on the registration page in Chromium with only a Lightning address
/// (served by the LNURL-pay contract fake, its wallet a real LNbits one; a refused slug first),
/// logs in to the dashboard with the token the page showed and puts an API behind the hub in
/// the service editor (`tests/dashboard/hub_register.mjs`); an agent finds it in `/directory`
/// and pays for a call with `turnpike fetch` from its own LNbits wallet (the provider's wallet
/// gets exactly `ceil(50 sats × 1.02)`), and `turnpike mcp --hub` (the official MCP Python SDK)
/// lists it as a tool with its price and pays for a second call; the provider's dashboard and
/// the operator's then show both payments and their fees (`hub_register.mjs --phase
/// dashboards`).
#[test]
fn hub_newcomer_registers_a_lightning_address_an_agent_pays_and_both_dashboards_show_it() {
    let test =
        "hub_newcomer_registers_a_lightning_address_an_agent_pays_and_both_dashboards_show_it";
    let Some((env_dir, node)) = browser_and_lnbits(test) else {
        return;
    };
    let Some(python) = common::test_python(test) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let wallet = rt.block_on(node.wallet("alice", 0));
    let agent = rt.block_on(node.wallet("agent", 1_000));
    let fake = rt.block_on(lnurl_contract_fake::LnurlFake::start(&node.url));
    let address = fake.add_user("alice", &wallet.invoice);
    let (upstream, seen) = rt.block_on(hub_harness::upstream());
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (free_port(), free_port());
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        readme_hub_config(listen, admin) + "trial_days = 0\n",
    )
    .unwrap();
    let log = dir.path().join("hub.log");
    let _hub = common::serve_with_admin(&config, &log, listen, admin);
    // The hub says where newcomers go.
    let said = std::fs::read_to_string(&log).unwrap();
    for place in [
        format!("http://{listen}/_turnpike/hub/register"),
        format!("http://{admin}/"),
        format!("http://{listen}/directory"),
    ] {
        assert!(
            said.contains(&place),
            "the hub's log does not say {place}:\n{said}"
        );
    }
    let operator = std::fs::read_to_string(dir.path().join("hub-data/admin.token"))
        .expect("the README's data_dir holds the admin token")
        .trim()
        .to_owned();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join("target"));
    let screenshot = target.join("test-output/hub-register.png");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard/hub_register.mjs");
    let (public_url, admin_url) = (format!("http://{listen}"), format!("http://{admin}"));
    let args: Vec<std::ffi::OsString> = vec![
        "--public".into(),
        public_url.clone().into(),
        "--admin".into(),
        admin_url.clone().into(),
        "--address".into(),
        address.into(),
        "--domain".into(),
        "hub.example.com".into(),
        "--upstream".into(),
        format!("http://{upstream}").into(),
        "--screenshot".into(),
        screenshot.into(),
        "--env".into(),
        env_dir.clone().into(),
    ];
    let output = run_script(&script, &args, dir.path(), &log);
    assert!(
        output.contains("hub register: all expectations held"),
        "the script exited 0 without its closing line:\n{output}"
    );
    let provider = output
        .lines()
        .find_map(|l| l.strip_prefix("provider token: "))
        .expect("the script prints the provider's token")
        .trim()
        .to_owned();

    // The agent: finds the API in the directory, then pays for a call, with `turnpike fetch`.
    let agent_env = AgentEnv::new(dir.path(), &node.url, &agent.admin);
    let found = agent_env.fetch(&[&format!("{public_url}/directory?q=quote")]);
    assert_eq!(found["payment"], serde_json::Value::Null, "{found}");
    let listing: serde_json::Value =
        serde_json::from_str(found["body"].as_str().unwrap_or_default()).unwrap();
    let entry = &listing["services"][0];
    assert_eq!(
        (
            &listing["total"],
            &entry["id"],
            &entry["path"],
            &entry["amount_msat"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!("alice/quote"),
            &serde_json::json!("/alice/quote"),
            &serde_json::json!(51_000)
        ),
        "{listing}"
    );
    let before = rt.block_on(lnbits_node::balance(&node, &wallet));
    let url = format!("{public_url}{}?symbol=BTC", entry["path"].as_str().unwrap());
    let paid = agent_env.fetch(&["--max-sats", "100", &url]);
    assert_eq!(
        (&paid["status"], &paid["payment"]["amount_msat"]),
        (&serde_json::json!(200), &serde_json::json!(51_000)),
        "{paid}"
    );
    let after = rt.block_on(lnbits_node::balance(&node, &wallet));
    assert_eq!(
        after.0,
        before.0 + 51_000,
        "the provider's own wallet got it all"
    );

    // Another agent: `turnpike mcp --hub` as README says, driven by the official MCP Python
    // SDK: the API is a tool with its price; calling it pays the provider's wallet.
    let called = agent_env.mcp(&python, &public_url, "alice__quote", r#"{"symbol":"ETH"}"#);
    let description = called["tools"]["alice__quote"].as_str().unwrap_or_default();
    assert!(
        description.contains("Costs 50 sat per call (51 sat with fee)")
            && description.contains("Stock quotes"),
        "{called}"
    );
    assert_eq!(
        (
            &called["is_error"],
            &called["structured"]["status"],
            &called["structured"]["paid_sats"]
        ),
        (
            &serde_json::json!(false),
            &serde_json::json!(200),
            &serde_json::json!(51)
        ),
        "{called}"
    );
    let after_mcp = rt.block_on(lnbits_node::balance(&node, &wallet));
    assert_eq!(after_mcp.0, after.0 + 51_000, "the provider's wallet again");
    let calls: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.as_str() != "/")
        .cloned()
        .collect();
    assert_eq!(
        calls,
        ["/quote?symbol=BTC", "/quote?symbol=ETH"],
        "the upstream saw the two paid calls, without the prefix"
    );

    // Both dashboards show it.
    let args: Vec<std::ffi::OsString> = vec![
        "--phase".into(),
        "dashboards".into(),
        "--public".into(),
        public_url.into(),
        "--admin".into(),
        admin_url.into(),
        "--provider-token".into(),
        provider.into(),
        "--operator-token".into(),
        operator.into(),
        "--env".into(),
        env_dir.into(),
    ];
    let output = run_script(&script, &args, dir.path(), &log);
    assert!(
        output.contains("hub newcomer dashboards: all expectations held"),
        "the script exited 0 without its closing line:\n{output}"
    );
    drop(rt);
}

/// The first TOML block of README.md's "Run a hub" section, with its listeners on `listen` and
/// `admin` and its commented `allow_*` lines (for one machine) switched on.
fn readme_hub_config(listen: SocketAddr, admin: SocketAddr) -> String {
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let section = readme
        .split_once("\n## Run a hub")
        .expect("README.md has a \"Run a hub\" section")
        .1;
    let block = section
        .split_once("```toml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("the section has a TOML block")
        .0;
    assert!(block.contains("127.0.0.1:8402") && block.contains("127.0.0.1:8403"));
    block
        .replace("127.0.0.1:8402", &listen.to_string())
        .replace("127.0.0.1:8403", &admin.to_string())
        .replace("# allow_", "allow_")
}

/// An agent's `turnpike fetch` with its own LNbits wallet (`agent`, from a wallet file), its
/// ledger in a directory of its own.
struct AgentEnv {
    wallets: PathBuf,
    data: PathBuf,
    admin_key: String,
}

impl AgentEnv {
    fn new(dir: &Path, lnbits: &str, admin_key: &str) -> AgentEnv {
        let wallets = dir.join("wallets.toml");
        std::fs::write(
            &wallets,
            format!(
                "[wallets.agent]\nkind = \"lnbits\"\nurl = \"{lnbits}\"\n\
                 admin_key = {{ env = \"AGENT_ADMIN_KEY\" }}\n"
            ),
        )
        .unwrap();
        AgentEnv {
            wallets,
            data: dir.join("agent-data"),
            admin_key: admin_key.to_owned(),
        }
    }

    /// `turnpike mcp --wallet agent --hub HUB --allow-host 127.0.0.1` through the official MCP
    /// Python SDK (`tests/mcp/mcp_call.py`): the tools listed, then `tool` called with
    /// `arguments`; the script's JSON line.
    fn mcp(&self, python: &str, hub: &str, tool: &str, arguments: &str) -> serde_json::Value {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/mcp_call.py");
        let mut cmd = Command::new(python);
        cmd.args([script, BIN, tool, arguments, "--wallet", "agent"])
            .args(["--hub", hub, "--allow-host", "127.0.0.1"])
            .env("TURNPIKE_TEST_LIST_TOOLS", "1")
            .env_remove("TURNPIKE_MCP_TOKEN");
        self.run(cmd)
    }

    /// `turnpike fetch --wallet agent --json ARGS…`: its JSON answer.
    fn fetch(&self, args: &[&str]) -> serde_json::Value {
        let mut cmd = Command::new(BIN);
        cmd.args(["fetch", "--wallet", "agent", "--json"])
            .args(args);
        self.run(cmd)
    }

    /// Runs `cmd` with the agent's wallet file, key and ledger: the JSON of its last line of
    /// output (it must exit 0).
    fn run(&self, mut cmd: Command) -> serde_json::Value {
        let out = cmd
            .env("TURNPIKE_WALLETS", &self.wallets)
            .env("TURNPIKE_DATA_DIR", &self.data)
            .env("AGENT_ADMIN_KEY", &self.admin_key)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{cmd:?} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }
}
