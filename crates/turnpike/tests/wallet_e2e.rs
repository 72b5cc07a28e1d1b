//! The agent's wallet end to end: the real gateway (`turnpike serve`, dev backend) and the real
//! client (`turnpike fetch` processes, or the library) over loopback, with the ledger in a
//! temporary data directory. Budgets, concurrency, token reuse, failures and a crash.

use std::future::IntoFuture;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use turnpike_client::budget::{Budget, Period, Window};
use turnpike_client::ledger::{Ledger, PaymentState};
use turnpike_client::spend::Accounting;
use turnpike_client::{ClientError, FetchRequest, L402Client};
use turnpike_l402::challenge::Challenge;
use turnpike_l402::root_key::MasterKey;
use turnpike_l402::token::{MintRequest, Minter};
use turnpike_l402::{Msat, PaymentHash, Preimage, Sats};
use turnpike_lightning::{CreateInvoice, DevBackend, DevPayWallet, InvoiceBackend};

mod common;

use common::{Running, dev_gateway};

const BIN: &str = env!("CARGO_BIN_EXE_turnpike");

/// A gateway with three services in front of a counting upstream: `/single` (5 sats a call),
/// `/bundle` (10 sats for 10 calls) and `/pass` (7 sats for an hour).
struct Setup {
    dir: tempfile::TempDir,
    base: String,
    served: Arc<AtomicU64>,
    _gateway: Running,
}

impl Setup {
    fn new(budget_toml: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let services = r#"
[[services]]
name = "single"
path = "/single"
upstream = "http://{upstream}"
price_sats = 5

[[services]]
name = "bundle"
path = "/bundle"
upstream = "http://{upstream}"
price_sats = 10
calls_per_payment = 10

[[services]]
name = "pass"
path = "/pass"
upstream = "http://{upstream}"
price_sats = 7
time_pass_secs = 3600
"#;
        let (gateway, base, served) = dev_gateway(dir.path(), services);
        std::fs::write(
            dir.path().join("wallets.toml"),
            format!("[wallets.agent]\nkind = \"dev\"\n\n[wallets.agent.budget]\n{budget_toml}\n"),
        )
        .unwrap();
        Setup {
            dir,
            base,
            served,
            _gateway: gateway,
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("ledger")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("TURNPIKE_DATA_DIR", self.data_dir())
            .env("TURNPIKE_WALLETS", self.dir.path().join("wallets.toml"))
            .stdin(Stdio::null());
        cmd
    }

    fn fetch(&self, path: &str, extra: &[&str]) -> Output {
        let url = format!("{}{path}", self.base);
        let mut args = vec!["fetch", "--wallet", "agent"];
        args.extend_from_slice(extra);
        args.push(&url);
        self.command(&args).output().unwrap()
    }

    fn spend(&self) -> Value {
        let out = self
            .command(&["spend", "--wallet", "agent", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    async fn client(&self, budget: Budget) -> L402Client {
        let ledger = Ledger::open_in(&self.data_dir()).await.unwrap();
        let url: reqwest::Url = self.base.parse().unwrap();
        let wallet = Arc::new(DevPayWallet::for_origin(&url).unwrap());
        L402Client::new(wallet, Sats(1000))
            .unwrap()
            .with_accounting(Accounting::new(ledger, "agent", budget, Msat::ZERO))
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn get(base: &str, path: &str) -> FetchRequest {
    FetchRequest::get(format!("{base}{path}").parse().unwrap())
}

#[test]
fn each_budget_refusal_names_its_limit_and_pays_nothing() {
    let s = Setup::new(
        "max_per_call = 8\nper_host = { sats = 100, per = \"day\" }\n\
         per_period = { sats = 100, per = \"hour\" }\ntotal = 12",
    );
    // max_per_call: 10 sats asked, 8 allowed per call.
    let out = s.fetch("/bundle", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("max_per_call"), "{err}");
    assert!(
        err.contains("10 sat asked") && err.contains("8 sat left"),
        "{err}"
    );
    assert_eq!(s.spend()["total_sats"], 0);
    assert_eq!(s.served(), 0);

    // Two single calls fit the total of 12; the third is refused by `total`, 2 left.
    for _ in 0..2 {
        let out = s.fetch("/single", &["--no-cache"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "ok");
    }
    let out = s.fetch("/single", &["--no-cache"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("total") && err.contains("2 sat left"), "{err}");
    let spend = s.spend();
    assert_eq!(spend["total_sats"], 10);
    assert_eq!(spend["payments"].as_array().unwrap().len(), 2);
    assert_eq!(spend["by_origin"][&s.base], 10);
    assert_eq!(s.served(), 2);

    // --dry-run shows the price and the refusal, and pays nothing.
    let out = s.fetch("/single", &["--dry-run", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let q: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(q["quote"]["amount_msat"], 5000);
    assert_eq!(q["quote"]["refusal"]["limit"]["limit"], "total");
    assert_eq!(s.spend()["payments"].as_array().unwrap().len(), 2);
}

#[test]
fn approval_is_refused_without_a_terminal() {
    let s = Setup::new("approve_above = 6");
    let out = s.fetch("/pass", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("approval"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(s.spend()["total_sats"], 0);
    // Below the threshold no one is asked.
    let out = s.fetch("/single", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_fetches_spend_at_most_the_period_limit() {
    let s = Setup::new("");
    let budget = Budget {
        per_period: Some(Window {
            sats: 32,
            per: Period::Day,
        }),
        ..Budget::default()
    };
    let client = s.client(budget).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = client.clone();
        let req = get(&s.base, "/single");
        tasks.push(tokio::spawn(async move { client.fetch(req).await }));
    }
    let (mut paid, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(f) => {
                assert_eq!(f.response.status(), 200);
                paid += 1;
            }
            Err(ClientError::OverBudget(r)) => {
                assert!(r.left.0 < 5, "{r}");
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((paid, refused), (6, 14));
    let ledger = Ledger::open_in(&s.data_dir()).await.unwrap();
    let spent: u64 = ledger
        .payments(Some("agent"), None)
        .await
        .unwrap()
        .iter()
        .map(|r| r.charged_msat())
        .sum();
    assert_eq!(spent, 30_000);
    assert_eq!(s.served(), 6);
}

#[test]
fn two_processes_sharing_a_wallet_cannot_overspend() {
    let s = Setup::new("per_period = { sats = 20, per = \"day\" }");
    let url = format!("{}/single", s.base);
    let children: Vec<Child> = (0..8)
        .map(|_| {
            s.command(&["fetch", "--wallet", "agent", "--no-cache", &url])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let ok = outputs.iter().filter(|o| o.status.success()).count();
    for o in outputs.iter().filter(|o| !o.status.success()) {
        assert!(
            text(&o.stderr).contains("per_period"),
            "{:?}: {} {}",
            o.status,
            text(&o.stderr),
            text(&o.stdout)
        );
    }
    assert_eq!(ok, 4);
    assert_eq!(s.spend()["total_sats"], 20);
    assert_eq!(s.served(), 4);
}

#[test]
fn bundles_and_time_passes_are_reused_and_repaid_when_used_up() {
    let s = Setup::new("");
    // 12 calls on a 10-call bundle: paid twice, the 11th call answered by a fresh 402.
    for i in 0..12 {
        let out = s.fetch("/bundle", &["--json"]);
        assert!(out.status.success(), "call {i}: {}", text(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["body"], "ok");
        let paid = !v["payment"].is_null();
        assert_eq!(paid, i == 0 || i == 10, "call {i}: {v}");
        assert_eq!(v["reused_token"], !paid);
    }
    // Five calls on a time pass: paid once.
    for _ in 0..5 {
        let out = s.fetch("/pass", &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let spend = s.spend();
    assert_eq!(spend["total_sats"], 10 + 10 + 7);
    assert_eq!(spend["payments"].as_array().unwrap().len(), 3);
    assert_eq!(s.served(), 17);

    let out = s.command(&["tokens", "list", "--json"]).output().unwrap();
    let tokens: Value = serde_json::from_slice(&out.stdout).unwrap();
    let services: Vec<&str> = tokens
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["service"].as_str().unwrap())
        .collect();
    assert!(services.contains(&"pass"), "{tokens}");
    // Removing the pass's token makes the next call pay again.
    let id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["service"] == "pass")
        .unwrap()["id"]
        .to_string();
    assert!(
        s.command(&["tokens", "rm", &id])
            .output()
            .unwrap()
            .status
            .success()
    );
    let out = s.fetch("/pass", &["--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!v["payment"].is_null(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fetches_wait_for_the_payment_in_flight() {
    let s = Setup::new("");
    let client = s.client(Budget::default()).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = client.clone();
        let req = get(&s.base, "/bundle");
        tasks.push(tokio::spawn(async move { client.fetch(req).await }));
    }
    for t in tasks {
        let f = t.await.unwrap().unwrap();
        assert_eq!(f.response.status(), 200);
    }
    let ledger = Ledger::open_in(&s.data_dir()).await.unwrap();
    let payments = ledger.payments(Some("agent"), None).await.unwrap();
    assert_eq!(
        payments.len(),
        2,
        "a 10-call bundle fetched 20 times is paid twice"
    );
    assert_eq!(s.served(), 20);
}

#[test]
fn a_fetch_killed_right_after_paying_is_finished_by_the_next_run() {
    let s = Setup::new("");
    let marker = s.dir.path().join("paid.marker");
    let url = format!("{}/single", s.base);
    let mut child = Running(
        s.command(&["fetch", "--wallet", "agent", &url])
            .env("TURNPIKE_TEST_HOLD_AFTER_PAYMENT", &marker)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the payment was not made");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    assert_eq!(s.served(), 0);
    let before = s.spend();
    assert_eq!(before["payments"][0]["state"], "reserved");

    // The next run asks the wallet, finds the payment, and uses its token: no second payment.
    let out = s.fetch("/single", &["--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["body"], "ok");
    assert!(v["payment"].is_null(), "paid again: {v}");
    assert_eq!(v["reused_token"], true);
    let after = s.spend();
    let payments = after["payments"].as_array().unwrap();
    assert_eq!(payments.len(), 1, "{after}");
    assert_eq!(payments[0]["state"], "paid");
    assert_eq!(after["total_sats"], 5);
    assert_eq!(s.served(), 1);
}

/// A server of its own for challenges the gateway would never send.
async fn odd_server(backend: Arc<DevBackend>, challenge: Arc<std::sync::Mutex<String>>) -> String {
    let app = axum::Router::new()
        .route(
            "/_turnpike/dev/pay",
            axum::routing::post(|| async {
                (
                    http::StatusCode::PAYMENT_REQUIRED,
                    axum::Json(serde_json::json!({
                        "error": {"code": "insufficient_balance", "message": "no funds"}
                    })),
                )
            }),
        )
        .route(
            "/_turnpike/dev/pay/{hash}",
            axum::routing::get(|| async {
                (
                    http::StatusCode::NOT_FOUND,
                    axum::Json(serde_json::json!({
                        "error": {"code": "unknown_invoice", "message": "never paid"}
                    })),
                )
            }),
        )
        .fallback(move || {
            let challenge = challenge.lock().unwrap().clone();
            async move {
                (
                    http::StatusCode::PAYMENT_REQUIRED,
                    [("www-authenticate", challenge)],
                    "pay",
                )
            }
        });
    let _ = backend;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(axum::serve(l, app).into_future());
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_mismatch_is_refused_and_a_failed_payment_is_released() {
    let backend = Arc::new(DevBackend::random());
    let issued = backend
        .create_invoice(CreateInvoice {
            amount: Msat(9_000),
            memo: "x".into(),
            expiry_secs: 600,
        })
        .await
        .unwrap();
    let minter = Minter::new(MasterKey::random());
    let mint = |hash: PaymentHash| {
        minter
            .mint(&MintRequest {
                payment_hash: hash,
                service: "odd",
                calls: Some(1),
                valid_until: None,
                capabilities: &[],
                max_price_msat: None,
            })
            .0
    };
    let other_hash = Preimage::random().payment_hash();
    let challenge = Arc::new(std::sync::Mutex::new(
        Challenge {
            macaroon: mint(other_hash),
            invoice: issued.bolt11.clone(),
        }
        .header_value(turnpike_l402::credential::Scheme::L402),
    ));
    let base = odd_server(backend.clone(), challenge.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open_in(dir.path()).await.unwrap();
    let wallet = Arc::new(DevPayWallet::for_origin(&base.parse().unwrap()).unwrap());
    let budget = Budget {
        total: Some(9),
        ..Budget::default()
    };
    let client = L402Client::new(wallet, Sats(100))
        .unwrap()
        .with_accounting(Accounting::new(ledger.clone(), "w", budget, Msat::ZERO));

    // The macaroon commits to another hash: refused before anything is reserved.
    let err = client.fetch(get(&base, "/x")).await.unwrap_err();
    assert!(matches!(err, ClientError::HashMismatch { .. }), "{err}");
    assert!(ledger.payments(None, None).await.unwrap().is_empty());

    // A matching challenge whose payment the wallet refuses: reserved, then released.
    *challenge.lock().unwrap() = Challenge {
        macaroon: mint(issued.payment_hash),
        invoice: issued.bolt11.clone(),
    }
    .header_value(turnpike_l402::credential::Scheme::L402);
    let err = client.fetch(get(&base, "/x")).await.unwrap_err();
    assert!(matches!(err, ClientError::Payment(_)), "{err}");
    let rows = ledger.payments(None, None).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, PaymentState::Failed);
    assert_eq!(rows[0].charged_msat(), 0);
    // The whole budget (9 sats) is still there for the next payment.
    let spent = ledger
        .spent("w", &base, &budget, turnpike_client::ledger::now_unix())
        .await
        .unwrap();
    assert_eq!(spent.total, Msat(0));
}
