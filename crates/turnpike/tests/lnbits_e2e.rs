//! The whole path on a real LNbits (1.6.2 from PyPI, FakeWallet: no real money): `turnpike
//! serve` with the LNbits backend on a provider wallet, `turnpike fetch --wallet` paying from a
//! payer wallet of the same LNbits. Balances really move.
//!
//! Needs `TURNPIKE_LNBITS_INFO` (written by `scripts/lnbits.sh start`; `scripts/test.sh` does
//! it). Without it: skipped with a message, or a failure under `TURNPIKE_STRICT_TESTS=1`.

use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use turnpike_lightning::{BackendError, Msat, PaymentBackend};

const BIN: &str = env!("CARGO_BIN_EXE_turnpike");

mod lnbits_node;

use lnbits_node::{Keys, Node, balance, node};

struct Gateway(Child, SocketAddr);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `turnpike serve` with `backend` (TOML lines) in `dir`, the provider key in the environment.
fn serve(
    dir: &std::path::Path,
    name: &str,
    top: &str,
    backend: &str,
    upstream: SocketAddr,
    envs: &[(&str, &str)],
) -> Gateway {
    let addr = free_port();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "listen = \"{addr}\"\nadmin.listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n{top}\n[backend]\n{backend}\n\
             [[services]]\nname = \"quote\"\npath = \"/quote\"\nupstream = \"http://{upstream}\"\nprice_sats = 21\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let gw = Gateway(cmd.spawn().unwrap(), addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "gateway {name} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    gw
}

async fn upstream() -> (SocketAddr, Arc<AtomicU64>) {
    let served = Arc::new(AtomicU64::new(0));
    let s = served.clone();
    let app = axum::Router::new().fallback(move || {
        let s = s.clone();
        async move {
            s.fetch_add(1, Ordering::SeqCst);
            "{\"quote\":\"stay humble, stack sats\"}"
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(axum::serve(l, app).into_future());
    (addr, served)
}

fn fetch(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("fetch")
        .args(args)
        .env("TURNPIKE_DATA_DIR", test_data_dir());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `turnpike serve` ("gw") invoicing through `provider`'s LNbits wallet.
fn provider_gateway(
    node: &Node,
    dir: &std::path::Path,
    upstream: SocketAddr,
    provider: &Keys,
) -> Gateway {
    let backend = format!(
        "kind = \"lnbits\"\nurl = \"{}\"\ninvoice_key = {{ env = \"PROVIDER_INVOICE_KEY\" }}",
        node.url
    );
    serve(
        dir,
        "gw",
        "",
        &backend,
        upstream,
        &[("PROVIDER_INVOICE_KEY", &provider.invoice)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_through_lnbits_with_real_balances() {
    let Some(node) = node() else { return };
    let provider = node.wallet("provider", 0).await;
    let payer = node.wallet("payer", 1_000).await;
    let broke = node.wallet("broke", 5).await;
    let (up, served) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = provider_gateway(&node, dir.path(), up, &provider);
    let wallets = dir.path().join("wallets.toml");
    std::fs::write(
        &wallets,
        format!(
            "[wallets.payer]\nkind = \"lnbits\"\nurl = \"{u}\"\nadmin_key = {{ env = \"PAYER_ADMIN_KEY\" }}\n\
             [wallets.broke]\nkind = \"lnbits\"\nurl = \"{u}\"\nadmin_key = {{ env = \"BROKE_ADMIN_KEY\" }}\n",
            u = node.url
        ),
    )
    .unwrap();
    let wallet_file = wallets.to_str().unwrap();
    let envs = [
        ("PAYER_ADMIN_KEY", payer.admin.as_str()),
        ("BROKE_ADMIN_KEY", broke.admin.as_str()),
    ];
    let url = format!("http://{}/quote", gw.1);

    // backend check sees the provider wallet.
    let check = Command::new(BIN)
        .args(["backend", "check", "--config"])
        .arg(dir.path().join("gw.toml"))
        .env("PROVIDER_INVOICE_KEY", &provider.invoice)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(
        text(&check.stdout).contains("kind:    lnbits"),
        "{}",
        text(&check.stdout)
    );
    let check = Command::new(BIN)
        .args([
            "backend",
            "check",
            "--wallet",
            "payer",
            "--wallet-config",
            wallet_file,
        ])
        .env("PAYER_ADMIN_KEY", "0000deadbeef0000deadbeef0000dead")
        .output()
        .unwrap();
    assert!(!check.status.success());
    assert!(
        text(&check.stderr).contains("refused"),
        "{}",
        text(&check.stderr)
    );

    // 402 -> paid -> 200, and the money moved from payer to provider.
    let out = fetch(
        &[
            "--wallet",
            "payer",
            "--wallet-config",
            wallet_file,
            "--max-sats",
            "21",
            "-v",
            &url,
        ],
        &envs,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("stack sats"));
    assert_eq!(balance(&node, &provider).await, Msat(21_000));
    assert_eq!(balance(&node, &payer).await, Msat(979_000));
    assert_eq!(served.load(Ordering::SeqCst), 1);

    // Paying the same invoice again is refused and moves nothing.
    let err = text(&out.stderr);
    let hash_line = err
        .lines()
        .find(|l| l.contains("payment hash"))
        .unwrap()
        .to_owned();
    let hash = hash_line
        .split("payment hash ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    let invoice_resp: Value = node
        .http
        .get(format!("{}/api/v1/payments/{hash}", node.url))
        .header("X-Api-Key", &provider.admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bolt11 = invoice_resp["details"]["bolt11"]
        .as_str()
        .unwrap()
        .to_owned();
    let again = node.payer(&payer).pay_invoice(&bolt11, Msat(0)).await;
    assert!(matches!(again, Err(BackendError::AlreadyPaid)), "{again:?}");
    assert_eq!(balance(&node, &provider).await, Msat(21_000));
    assert_eq!(balance(&node, &payer).await, Msat(979_000));

    // Too low a balance: a clear error, nothing paid, nothing served.
    let out = fetch(
        &[
            "--wallet",
            "broke",
            "--wallet-config",
            wallet_file,
            "--max-sats",
            "21",
            &url,
        ],
        &envs,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr)
            .to_lowercase()
            .contains("insufficient balance"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(balance(&node, &broke).await, Msat(5_000));
    assert_eq!(balance(&node, &provider).await, Msat(21_000));
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_backend_gives_503_while_paid_credentials_keep_working() {
    let Some(node) = node() else { return };
    let provider = node.wallet("provider", 0).await;
    let payer = node.wallet("payer", 100).await;
    let (up, served) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let envs = [("PROVIDER_INVOICE_KEY", provider.invoice.as_str())];
    let live = format!(
        "kind = \"lnbits\"\nurl = \"{}\"\ninvoice_key = {{ env = \"PROVIDER_INVOICE_KEY\" }}",
        node.url
    );
    let gw = serve(dir.path(), "live", "", &live, up, &envs);

    // Buy a credential on the live gateway.
    let resp = node
        .http
        .get(format!("http://{}/quote", gw.1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    let body: Value = resp.json().await.unwrap();
    let payment = node
        .payer(&payer)
        .pay_invoice(body["invoice"].as_str().unwrap(), Msat(0))
        .await
        .unwrap();
    let auth = format!(
        "L402 {}:{}",
        body["macaroon"].as_str().unwrap(),
        payment.preimage
    );
    drop(gw);

    // The same gateway (same data dir: same master key and store), its LNbits unreachable.
    let dead = free_port();
    let down = format!(
        "kind = \"lnbits\"\nurl = \"http://{dead}\"\ninvoice_key = {{ env = \"PROVIDER_INVOICE_KEY\" }}\ntimeout_secs = 2"
    );
    let gw = serve(dir.path(), "down", "", &down, up, &envs);
    let url = format!("http://{}/quote", gw.1);
    let resp = node.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "backend_unavailable");
    // A paid credential whose settlement cannot be confirmed yet is not served for free...
    let resp = node
        .http
        .get(&url)
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(served.load(Ordering::SeqCst), 0);
    drop(gw);

    // With the settlement check off, verification needs no backend call at all: the paid
    // credential is served while new challenges still get 503.
    let gw = serve(
        dir.path(),
        "nocheck",
        "check_settlement = false",
        &down,
        up,
        &envs,
    );
    let url = format!("http://{}/quote", gw.1);
    let resp = node
        .http
        .get(&url)
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(served.load(Ordering::SeqCst), 1);
    assert_eq!(node.http.get(&url).send().await.unwrap().status(), 503);
}

/// The ledger directory of this test process (never the user's own).
fn test_data_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("turnpike-test-ledger-{}", std::process::id()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lnbits_balances_move_by_exactly_what_the_ledger_says() {
    let Some(node) = node() else { return };
    let provider = node.wallet("provider", 0).await;
    let payer = node.wallet("payer", 100).await;
    let (up, served) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = provider_gateway(&node, dir.path(), up, &provider);
    // 21 sats a call plus a 10-sat fee reserve, settled at the real fee (none between wallets of
    // one LNbits): a 60-sat day allows two calls (21 + 31, then 42 + 31 is over).
    let wallets = dir.path().join("wallets.toml");
    std::fs::write(
        &wallets,
        format!(
            "[wallets.payer]\nkind = \"lnbits\"\nurl = \"{}\"\n\
             admin_key = {{ env = \"PAYER_ADMIN_KEY\" }}\nmax_fee_sats = 10\n\
             [wallets.payer.budget]\nper_period = {{ sats = 60, per = \"day\" }}\n",
            node.url
        ),
    )
    .unwrap();
    let data = dir.path().join("ledger");
    let run = |args: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("TURNPIKE_DATA_DIR", &data)
            .env("TURNPIKE_WALLETS", &wallets)
            .env("PAYER_ADMIN_KEY", &payer.admin)
            .stdin(std::process::Stdio::null());
        cmd.output().unwrap()
    };
    let url = format!("http://{}/quote", gw.1);
    for _ in 0..2 {
        let out = run(&["fetch", "--wallet", "payer", &url]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = run(&["fetch", "--wallet", "payer", &url]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("per_period"),
        "{}",
        text(&out.stderr)
    );

    let spend = run(&["spend", "--wallet", "payer", "--json"]);
    let spend: Value = serde_json::from_slice(&spend.stdout).unwrap();
    let charged: u64 = spend["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["amount_msat"].as_u64().unwrap() + p["fee_msat"].as_u64().unwrap())
        .sum();
    let received: u64 = spend["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["amount_msat"].as_u64().unwrap())
        .sum();
    assert_eq!(spend["payments"].as_array().unwrap().len(), 2);
    assert!(
        spend["payments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] == "paid" && p["http_status"] == 200)
    );
    assert_eq!(
        balance(&node, &payer).await,
        Msat(100_000 - charged),
        "the payer's balance moved by exactly what the ledger says"
    );
    assert_eq!(balance(&node, &provider).await, Msat(received));
    assert_eq!(received, 42_000);
    assert_eq!(served.load(Ordering::SeqCst), 2);

    let out = run(&["wallet", "balance", "payer", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let b: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(b[0]["balance_msat"], 100_000 - charged);
}
