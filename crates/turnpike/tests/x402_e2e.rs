//! x402 on the gateway, end to end with real parts on loopback: `turnpike serve` (dev
//! Lightning backend) with an `[x402]` section, the offline chain of `scripts/x402-env.sh`
//! (anvil, Circle's FiatTokenV2_2, the reference facilitator of @x402/core + @x402/evm 2.27.0),
//! the official client (@x402/fetch 2.27.0, `scripts/x402/fetch.mjs`; @x402/core's
//! x402HTTPClient, `pay.mjs`) and Turnpike's own `PayerKey`. Money is read from the chain
//! (`balanceOf(payTo)` by `eth_call`); each test pays a fresh random `payTo`, so its balance
//! moves only by that test's payments.
//!
//! Needs the chain running:
//!
//! ```text
//! scripts/x402-env.sh install && scripts/x402-env.sh start
//! cargo test -p turnpike --test x402_e2e
//! ```
//!
//! Without it the tests print `SKIPPED: ...` and pass, unless `TURNPIKE_STRICT_TESTS=1`.
//!
//! The client side (`turnpike fetch` paying x402 from a wallet file's EVM key) is tested against
//! a server built with the official `@x402/express` middleware (`scripts/x402/express.mjs`) and
//! against Turnpike's own gateway.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use serde_json::{Value, json};
use turnpike_x402::{
    PayerKey, PaymentPayload, PaymentRequired, PaymentRequirements, SettleResponse, U256,
    X402Version, parse_address,
};

const SETUP: &str = "start the offline x402 chain: `scripts/x402-env.sh install && scripts/x402-env.sh start` \
     (it writes target/x402/info.json; TURNPIKE_X402_INFO overrides the path)";

/// Settlements go through one facilitator account: the tests settle one at a time.
static CHAIN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn info(test: &str) -> Option<Value> {
    let path = std::env::var("TURNPIKE_X402_INFO").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/x402/info.json").to_owned()
    });
    match std::fs::read(&path) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).expect("info.json is JSON")),
        Err(e) => {
            if std::env::var("TURNPIKE_STRICT_TESTS").as_deref() == Ok("1") {
                panic!("{test}: cannot read {path} ({e}) and TURNPIKE_STRICT_TESTS=1: {SETUP}");
            }
            eprintln!("SKIPPED: {test}: cannot read {path} ({e}); to run it, {SETUP}");
            None
        }
    }
}

fn s<'a>(info: &'a Value, pointer: &str) -> &'a str {
    info.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("info.json lacks {pointer}"))
}

fn now() -> u64 {
    turnpike_gateway::unix_now()
}

fn http() -> reqwest::Client {
    turnpike_lightning::ensure_crypto_provider();
    reqwest::Client::new()
}

/// A gateway in front of a counting upstream, taking x402 on the test chain for `pay_to`.
struct Gateway {
    _running: common::Running,
    _dir: tempfile::TempDir,
    base: String,
    served: Arc<AtomicU64>,
    pay_to: String,
}

impl Gateway {
    fn start(info: &Value, facilitator_url: &str) -> Gateway {
        Gateway::start_with(info, facilitator_url, 60_000)
    }

    fn start_with(info: &Value, facilitator_url: &str, settle_timeout_ms: u64) -> Gateway {
        let pay_to = format!("0x{}", hex_of(&rand::random::<[u8; 20]>()));
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let services = format!(
            r#"
[x402]
facilitator_url = "{facilitator_url}"
network = "{network}"
asset = "{token}"
token_name = "{name}"
token_version = "{version}"
decimals = 6
pay_to = "{pay_to}"
settle_timeout_ms = {settle_timeout_ms}

[[services]]
name = "paid"
path = "/paid"
upstream = "http://{{upstream}}"
price_sats = 10
rails = ["l402", "x402"]
price_usdc = "0.01"

[[services]]
name = "bundle"
path = "/bundle"
upstream = "http://{{upstream}}"
price_sats = 10
calls_per_payment = 3
rails = ["l402", "x402"]
price_usdc = "0.02"

[[services]]
name = "usdconly"
path = "/usdconly"
upstream = "http://{{upstream}}"
price_sats = 0
rails = ["x402"]
price_usdc = "5000u"

[[services]]
name = "usdcbundle"
path = "/usdcbundle"
upstream = "http://{{upstream}}"
price_sats = 0
calls_per_payment = 3
rails = ["x402"]
price_usdc = "0.03"

[[services]]
name = "down"
path = "/down"
upstream = "http://{closed}"
price_sats = 10
rails = ["l402", "x402"]
price_usdc = "0.01"
"#,
            network = s(info, "/network"),
            token = s(info, "/token"),
            name = s(info, "/token_name"),
            version = s(info, "/token_version"),
        );
        let dir = tempfile::tempdir().unwrap();
        let (upstream, served) = upstream();
        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // check_settlement on: tokens bought over x402 must pass without the Lightning backend.
        let config = dir.path().join("turnpike.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{listen}\"\nadmin.listen = \"127.0.0.1:0\"\ndata_dir = \"gateway-data\"\ncheck_settlement = true\n\n[backend]\nkind = \"dev\"\n{}",
                services.replace("{upstream}", &upstream.to_string())
            ),
        )
        .unwrap();
        let running = common::serve_gateway(&config, listen);
        let base = format!("http://{listen}");
        Gateway {
            _running: running,
            _dir: dir,
            base,
            served,
            pay_to,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

/// An upstream counting the calls it serves; it answers `ok`, or `leaked` to a request that
/// still carries a payment field (the gateway must not pass payments on).
fn upstream() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let served = Arc::new(AtomicU64::new(0));
    let counter = served.clone();
    let app = axum::Router::new().fallback(move |headers: http::HeaderMap| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let leaked = ["payment-signature", "x-payment", "authorization"]
                .iter()
                .any(|h| headers.contains_key(*h));
            if leaked { "leaked" } else { "ok" }
        }
    });
    (common::spawn_app(app), served)
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn rpc(info: &Value, method: &str, params: Value) -> Value {
    let v: Value = http()
        .post(s(info, "/rpc_url"))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v.get("error").is_none(), "{method}: {v}");
    v["result"].clone()
}

/// The chain mines only on a transaction: a fresh block brings its time to now (the reference
/// facilitator simulates transfers against the latest block).
async fn mine(info: &Value) {
    rpc(info, "evm_mine", json!([])).await;
}

/// `balanceOf(who)` of the test token, read from the chain.
async fn balance(info: &Value, who: &str) -> U256 {
    let data = format!("0x70a08231{:0>64}", who.trim_start_matches("0x"));
    let result = rpc(
        info,
        "eth_call",
        json!([{"to": s(info, "/token"), "data": data}, "latest"]),
    )
    .await;
    U256::from_str_radix(result.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// Runs the official client (@x402/fetch) on `url`; `v1` hides the v2 header from it.
async fn official_fetch(info: &Value, url: &str, v1: bool) -> Value {
    let node = s(info, "/node").to_owned();
    let script = std::path::Path::new(s(info, "/pay_script")).with_file_name("fetch.mjs");
    let key = s(info, "/payer/private_key").to_owned();
    let url = url.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(node);
        cmd.arg(script).arg(key).arg(url);
        if v1 {
            cmd.arg("v1");
        }
        cmd.stderr(Stdio::piped()).output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "fetch.mjs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("fetch.mjs prints JSON")
}

/// Has the official client (pay.mjs) sign a payment for the 402 `resp` answered; returns its
/// `PAYMENT-SIGNATURE` header value.
async fn official_signature(info: &Value, required: &str, body: &Value) -> String {
    let node = s(info, "/node").to_owned();
    let script = s(info, "/pay_script").to_owned();
    let key = s(info, "/payer/private_key").to_owned();
    let input = json!({"headers": {"payment-required": required}, "body": body}).to_string();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = Command::new(node)
            .arg(script)
            .arg(key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "pay.mjs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["headers"]["PAYMENT-SIGNATURE"]
        .as_str()
        .or_else(|| v["headers"]["payment-signature"].as_str())
        .unwrap_or_else(|| panic!("no PAYMENT-SIGNATURE in {v}"))
        .to_owned()
}

/// An unpaid GET: the 402's `PAYMENT-REQUIRED` value and JSON body.
async fn challenge(url: &str) -> (reqwest::header::HeaderMap, String, Value) {
    let resp = http().get(url).send().await.unwrap();
    assert_eq!(resp.status(), 402);
    let headers = resp.headers().clone();
    let required = headers["payment-required"].to_str().unwrap().to_owned();
    (headers, required, resp.json().await.unwrap())
}

/// Our offer for `url`, as the 402 states it.
async fn offer(url: &str) -> PaymentRequirements {
    let (_, required, _) = challenge(url).await;
    PaymentRequired::from_header(required.as_bytes())
        .unwrap()
        .accepts
        .remove(0)
}

fn payer(info: &Value) -> PayerKey {
    PayerKey::from_hex(s(info, "/payer/private_key")).unwrap()
}

fn header_name(version: X402Version) -> (&'static str, &'static str) {
    match version {
        X402Version::V2 => ("payment-signature", "payment-response"),
        X402Version::V1 => ("x-payment", "x-payment-response"),
    }
}

/// Sends `payment` to `url`: status, headers, body.
async fn send(url: &str, payment: &PaymentPayload) -> (u16, reqwest::header::HeaderMap, String) {
    let (name, _) = header_name(payment.version);
    send_raw(url, name, &payment.to_header()).await
}

async fn send_raw(url: &str, name: &str, value: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let resp = http().get(url).header(name, value).send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_client_pays_turnpike_and_gets_the_body() {
    let Some(info) = info("the_official_client_pays_turnpike_and_gets_the_body") else {
        return;
    };
    let _chain = CHAIN.lock().await;
    let gw = Gateway::start(&info, s(&info, "/facilitator_url"));

    // The 402 offers both rails: L402 headers and invoice, and x402 v2 header and v1 body.
    let (headers, required, body) = challenge(&gw.url("/paid")).await;
    assert_eq!(headers.get_all("www-authenticate").iter().count(), 2);
    assert_eq!(headers["cache-control"], "no-store");
    let required = PaymentRequired::from_header(required.as_bytes()).unwrap();
    let offered = &required.accepts[0];
    assert_eq!(offered.amount.base_units(), 10_000);
    assert_eq!(offered.pay_to, parse_address(&gw.pay_to).unwrap());
    assert_eq!(required.resource.url, gw.url("/paid"));
    assert_eq!(body["error"]["code"], "payment_required");
    assert!(body["invoice"].as_str().unwrap().starts_with("lnbcrt"));
    assert_eq!(body["x402Version"], 1);
    assert_eq!(body["accepts"][0]["maxAmountRequired"], "10000");
    assert_eq!(body["accepts"][0]["network"], "base-sepolia");
    assert_eq!(body["price_usdc"], "0.01");

    mine(&info).await;
    let before = balance(&info, &gw.pay_to).await;
    for (round, v1) in [(1u64, false), (2, true)] {
        let got = official_fetch(&info, &gw.url("/paid"), v1).await;
        assert_eq!(got["status"], 200, "{got}");
        assert_eq!(got["body"], "ok");
        let settled = &got["payment_response"];
        assert_eq!(settled["success"], true, "{got}");
        assert_eq!(
            settled["payer"].as_str().unwrap().to_lowercase(),
            s(&info, "/payer/address").to_lowercase()
        );
        assert!(settled["transaction"].as_str().unwrap().len() == 66);
        assert!(got["credential"].as_str().unwrap().starts_with("L402 "));
        assert_eq!(gw.served(), round);
        assert_eq!(
            balance(&info, &gw.pay_to).await - before,
            U256::from(10_000 * round),
            "payTo rises by exactly the price per payment"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_payment_sent_twice_concurrently_serves_one_call() {
    let Some(info) = info("one_payment_sent_twice_concurrently_serves_one_call") else {
        return;
    };
    let _chain = CHAIN.lock().await;
    let gw = Gateway::start(&info, s(&info, "/facilitator_url"));
    mine(&info).await;
    let before = balance(&info, &gw.pay_to).await;
    let url = gw.url("/paid");
    let (_, required, body) = challenge(&url).await;
    let signature = official_signature(&info, &required, &body).await;
    let (a, b) = tokio::join!(
        send_raw(&url, "payment-signature", &signature),
        send_raw(&url, "payment-signature", &signature)
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 402], "{a:?} {b:?}");
    // A later copy gets the token the payment bought, whose one call is spent: nothing reaches
    // the chain again and nothing more is served.
    let (status, headers, body) = send_raw(&url, "payment-signature", &signature).await;
    assert_eq!(status, 402, "{body}");
    assert!(body.contains("no calls left"), "{body}");
    assert!(headers.contains_key("turnpike-credential"));
    assert_eq!(gw.served(), 1);
    assert_eq!(
        balance(&info, &gw.pay_to).await - before,
        U256::from(10_000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_amount_payto_window_or_signature_get_402_and_move_no_money() {
    let Some(info) = info("wrong_amount_payto_window_or_signature_get_402_and_move_no_money")
    else {
        return;
    };
    let _chain = CHAIN.lock().await;
    let gw = Gateway::start(&info, s(&info, "/facilitator_url"));
    mine(&info).await;
    let url = gw.url("/paid");
    let offered = offer(&url).await;
    let key = payer(&info);
    let before_pay_to = balance(&info, &gw.pay_to).await;
    let before_payer = balance(&info, s(&info, "/payer/address")).await;
    let pay = |req: &PaymentRequirements, version, at| {
        key.pay(req, None, version, at, rand::random()).unwrap()
    };
    let cheaper = PaymentRequirements {
        amount: turnpike_x402::TokenAmount::from_base_units(9_999),
        ..offered.clone()
    };
    let elsewhere = PaymentRequirements {
        pay_to: parse_address(s(&info, "/payer/address")).unwrap(),
        ..offered.clone()
    };
    let good = pay(&offered, X402Version::V2, now());
    let edited = |p: &PaymentPayload, edit: &dyn Fn(&mut Value)| {
        let mut json = p.raw_json().clone();
        edit(&mut json);
        PaymentPayload::from_payment_signature(
            base64::engine::general_purpose::STANDARD
                .encode(json.to_string())
                .as_bytes(),
        )
        .unwrap()
    };
    let forged = edited(&good, &|j| {
        j["payload"]["authorization"]["nonce"] = json!(format!("0x{}", "ab".repeat(32)));
    });
    // Signed for other terms, but echoing our offer as `accepted` (which is not signed).
    let echo = |p: PaymentPayload| edited(&p, &|j| j["accepted"] = offered.to_json_v2());
    let cases = [
        ("wrong amount (v2)", pay(&cheaper, X402Version::V2, now())),
        ("wrong amount (v1)", pay(&cheaper, X402Version::V1, now())),
        ("wrong payTo (v2)", pay(&elsewhere, X402Version::V2, now())),
        ("wrong payTo (v1)", pay(&elsewhere, X402Version::V1, now())),
        (
            "wrong amount, our offer echoed",
            echo(pay(&cheaper, X402Version::V2, now())),
        ),
        (
            "wrong payTo, our offer echoed",
            echo(pay(&elsewhere, X402Version::V2, now())),
        ),
        (
            "expired window",
            pay(&offered, X402Version::V2, now() - 1_000),
        ),
        ("bad signature", forged),
    ];
    for (what, payment) in &cases {
        let (status, headers, body) = send(&url, payment).await;
        assert_eq!(status, 402, "{what}: {body}");
        assert!(headers.contains_key("payment-required"), "{what}");
        let body: Value = serde_json::from_str(&body).unwrap();
        let reason = body["error"]["reason"].as_str().unwrap_or_default();
        assert!(!reason.is_empty(), "{what}: {body}");
        eprintln!("{what}: {reason}");
    }
    let (status, _, body) = send_raw(&url, "payment-signature", "bm90IGpzb24=").await;
    assert_eq!(status, 402, "{body}");
    assert!(body.contains("invalid_payload"), "{body}");
    assert_eq!(gw.served(), 0);
    assert_eq!(balance(&info, &gw.pay_to).await, before_pay_to);
    assert_eq!(
        balance(&info, s(&info, "/payer/address")).await,
        before_payer,
        "no money moved"
    );
    // The good payment, sent after all that, still works: refusals claimed nothing.
    let (status, headers, body) = send(&url, &good).await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.contains_key("payment-response"));
    assert_eq!(
        balance(&info, &gw.pay_to).await - before_pay_to,
        U256::from(10_000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turnpike_payer_key_pays_through_the_gateway_v2_and_v1() {
    let Some(info) = info("turnpike_payer_key_pays_through_the_gateway_v2_and_v1") else {
        return;
    };
    let _chain = CHAIN.lock().await;
    let gw = Gateway::start(&info, s(&info, "/facilitator_url"));
    mine(&info).await;
    let url = gw.url("/paid");
    let offered = offer(&url).await;
    let key = payer(&info);
    let before = balance(&info, &gw.pay_to).await;
    for version in [X402Version::V2, X402Version::V1] {
        let payment = key
            .pay(&offered, None, version, now(), rand::random())
            .unwrap();
        let (status, headers, body) = send(&url, &payment).await;
        assert_eq!(status, 200, "{version:?}: {body}");
        assert_eq!(body, "ok");
        let (_, response_header) = header_name(version);
        let settled = SettleResponse::from_header(headers[response_header].as_bytes()).unwrap();
        assert!(settled.success);
        assert_eq!(settled.payer, Some(key.address()));
        assert!(settled.transaction.is_some());
        assert_eq!(headers["cache-control"], "private, no-store");
    }
    assert_eq!(gw.served(), 2);
    assert_eq!(
        balance(&info, &gw.pay_to).await - before,
        U256::from(20_000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credential_holds_the_rest_of_a_bundle_for_its_service_only() {
    let Some(info) = info("the_credential_holds_the_rest_of_a_bundle_for_its_service_only") else {
        return;
    };
    let _chain = CHAIN.lock().await;
    let gw = Gateway::start(&info, s(&info, "/facilitator_url"));
    mine(&info).await;
    let url = gw.url("/bundle");
    let offered = offer(&url).await;
    assert_eq!(offered.amount.base_units(), 20_000);
    let before = balance(&info, &gw.pay_to).await;
    let payment = payer(&info)
        .pay(&offered, None, X402Version::V2, now(), rand::random())
        .unwrap();
    let (status, headers, _) = send(&url, &payment).await;
    assert_eq!(status, 200);
    assert_eq!(headers["turnpike-calls-remaining"], "2");
    let credential = headers["turnpike-credential"].to_str().unwrap().to_owned();
    let with = |url: String, credential: String| async move {
        let resp = http()
            .get(url)
            .header("authorization", credential)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.headers().clone())
    };
    // Another service does not take it; a tampered one is refused; neither spends a call.
    assert_eq!(with(gw.url("/paid"), credential.clone()).await.0, 402);
    let tampered = format!("{}00", &credential[..credential.len() - 2]);
    assert_eq!(with(url.clone(), tampered).await.0, 401);
    // A client that lost the answer presents the settled payment again: the same credential
    // and settlement, and the call is the token's next one (nothing is paid twice).
    let (status, again, _) = send(&url, &payment).await;
    assert_eq!(status, 200);
    assert_eq!(again["turnpike-calls-remaining"], "1");
    assert_eq!(again["turnpike-credential"], credential.as_str());
    assert_eq!(again["payment-response"], headers["payment-response"]);
    let (status, headers_now) = with(url.clone(), credential.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(headers_now["turnpike-calls-remaining"], "0");
    assert_eq!(with(url.clone(), credential.clone()).await.0, 402);
    assert_eq!(gw.served(), 3);
    let (status, _, body) = send(&url, &payment).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(
        balance(&info, &gw.pay_to).await - before,
        U256::from(20_000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_upstream_fails_after_settlement_stays_in_the_credential() {
    let Some(info) = info("a_call_the_upstream_fails_after_settlement_stays_in_the_credential")
    else {
        return;
    };
    let _chain = CHAIN.lock().await;
    let gw = Gateway::start(&info, s(&info, "/facilitator_url"));
    mine(&info).await;
    let url = gw.url("/down");
    let offered = offer(&url).await;
    let before = balance(&info, &gw.pay_to).await;
    let payment = payer(&info)
        .pay(&offered, None, X402Version::V2, now(), rand::random())
        .unwrap();
    let (status, headers, body) = send(&url, &payment).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("not charged"), "{body}");
    assert!(headers.contains_key("payment-response"));
    let credential = headers["turnpike-credential"].to_str().unwrap().to_owned();
    assert_eq!(
        balance(&info, &gw.pay_to).await - before,
        U256::from(10_000)
    );
    // The paid call is still there: the credential gets the upstream's failure again, not a
    // new 402, however often it is tried.
    for _ in 0..3 {
        let resp = http()
            .get(&url)
            .header("authorization", &credential)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 502);
        assert!(resp.text().await.unwrap().contains("not charged"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lightning_and_x402_clients_each_pay_their_way_on_one_url() {
    let Some(info) = info("lightning_and_x402_clients_each_pay_their_way_on_one_url") else {
        return;
    };
    let _chain = CHAIN.lock().await;
    let gw = Gateway::start(&info, s(&info, "/facilitator_url"));
    mine(&info).await;
    let url = gw.url("/paid");
    let url2 = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_turnpike"))
            .args(["fetch", "--wallet", "dev", "--max-sats", "20", "--no-cache"])
            .arg(url2)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok");
    let got = official_fetch(&info, &url, false).await;
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(gw.served(), 2);

    // A service paid over x402 only: no invoice in its 402, and the official client pays it.
    let (headers, _, body) = challenge(&gw.url("/usdconly")).await;
    assert!(!headers.contains_key("www-authenticate"));
    assert!(body.get("invoice").is_none());
    assert_eq!(body["accepts"][0]["maxAmountRequired"], "5000");
    let before = balance(&info, &gw.pay_to).await;
    let got = official_fetch(&info, &gw.url("/usdconly"), false).await;
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(balance(&info, &gw.pay_to).await - before, U256::from(5_000));
    assert_eq!(gw.served(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_facilitator_charges_nothing_and_releases_the_payment() {
    let Some(info) = info("an_unreachable_facilitator_charges_nothing_and_releases_the_payment")
    else {
        return;
    };
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = Gateway::start(&info, &format!("http://{closed}"));
    let url = gw.url("/paid");
    let offered = offer(&url).await;
    let payment = payer(&info)
        .pay(&offered, None, X402Version::V2, now(), rand::random())
        .unwrap();
    for _ in 0..2 {
        let (status, headers, body) = send(&url, &payment).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("facilitator_unavailable"), "{body}");
        assert!(headers.contains_key("retry-after"));
    }
    assert_eq!(gw.served(), 0);
}

/// A facilitator on loopback that accepts every payment at `/verify` and never answers
/// `/settle` (a settlement whose outcome the gateway cannot know).
fn silent_settler() -> std::net::SocketAddr {
    use axum::routing::post;
    let app = axum::Router::new()
        .route(
            "/verify",
            post(|| async { axum::Json(json!({"isValid": true})) }),
        )
        .route(
            "/settle",
            post(|| async {
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                axum::Json(json!({"success": true, "transaction": "", "network": "eip155:84532"}))
            }),
        );
    common::spawn_app(app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_without_an_answer_serves_nothing_and_keeps_the_claim() {
    let Some(info) = info("a_settlement_without_an_answer_serves_nothing_and_keeps_the_claim")
    else {
        return;
    };
    let gw = Gateway::start_with(&info, &format!("http://{}", silent_settler()), 500);
    let url = gw.url("/paid");
    let offered = offer(&url).await;
    let payment = payer(&info)
        .pay(&offered, None, X402Version::V2, now(), rand::random())
        .unwrap();
    let (status, headers, body) = send(&url, &payment).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("settlement_unknown"), "{body}");
    assert!(!headers.contains_key("turnpike-credential"));
    // The settle may have happened: the same payment is never sent for settlement again.
    let (status, _, body) = send(&url, &payment).await;
    assert_eq!(status, 402, "{body}");
    assert!(body.contains("payment_already_used"), "{body}");
    assert_eq!(gw.served(), 0);
}

// ---- The client: `turnpike fetch` paying x402 from a wallet's EVM key ----

/// The chain (held for the whole test), a gateway paid on it, and its payTo's balance now.
async fn on_gateway(
    test: &str,
) -> Option<(Value, tokio::sync::MutexGuard<'static, ()>, Gateway, U256)> {
    let info = info(test)?;
    let chain = CHAIN.lock().await;
    let gw = Gateway::start(&info, s(&info, "/facilitator_url"));
    mine(&info).await;
    let before = balance(&info, &gw.pay_to).await;
    Some((info, chain, gw, before))
}

/// The chain (held for the whole test), an `@x402/express` server selling GET /weather for
/// `amount` base units, and its payTo's balance now.
async fn on_express(
    test: &str,
    amount: u64,
) -> Option<(Value, tokio::sync::MutexGuard<'static, ()>, Express, U256)> {
    let info = info(test)?;
    let chain = CHAIN.lock().await;
    let server = Express::start(&info, amount);
    mine(&info).await;
    let before = balance(&info, &server.pay_to).await;
    Some((info, chain, server, before))
}

/// A paid API built with the official `@x402/express` middleware (`express.mjs`): GET
/// /weather for `amount` base units of the test token to a fresh random payTo.
struct Express {
    _running: common::Running,
    url: String,
    pay_to: String,
}

impl Express {
    fn start(info: &Value, amount: u64) -> Express {
        use std::io::BufRead as _;
        let pay_to = format!("0x{}", hex_of(&rand::random::<[u8; 20]>()));
        let script = std::path::Path::new(s(info, "/pay_script")).with_file_name("express.mjs");
        let mut child = Command::new(s(info, "/node"))
            .arg(script)
            .args([
                s(info, "/facilitator_url"),
                s(info, "/network"),
                s(info, "/token"),
                s(info, "/token_name"),
                s(info, "/token_version"),
                &pay_to,
                &amount.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let running = common::Running(child);
        let port = serde_json::from_str::<Value>(&line)
            .unwrap_or_else(|e| panic!("express.mjs printed {line:?}: {e}"))["port"]
            .as_u64()
            .unwrap();
        Express {
            _running: running,
            url: format!("http://127.0.0.1:{port}/weather"),
            pay_to,
        }
    }
}

/// A wallet file and ledger directory for `turnpike fetch --wallet agent`: a dev Lightning
/// wallet with the test chain's payer key (read from an environment variable) and the test
/// token as its one x402 asset, with `budget` (inline TOML) and `prefer`.
struct Agent {
    dir: tempfile::TempDir,
}

const KEY_VAR: &str = "TURNPIKE_TEST_X402_PAYER_KEY";

impl Agent {
    fn new(info: &Value, prefer: &str, budget: &str) -> Agent {
        Agent::with_lightning(info, "kind = \"dev\"", prefer, budget)
    }

    /// `lightning`: the wallet's Lightning keys (`kind = …`), or nothing for an x402-only one.
    fn with_lightning(info: &Value, lightning: &str, prefer: &str, budget: &str) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("wallets.toml"),
            format!(
                r#"[wallets.agent]
{lightning}

[wallets.agent.x402]
evm_key = {{ env = "{KEY_VAR}" }}
prefer = "{prefer}"

[[wallets.agent.x402.assets]]
network = "{network}"
asset = "{token}"
rpc_url = "{rpc}"
budget = {{ {budget} }}
"#,
                network = s(info, "/network"),
                token = s(info, "/token"),
                rpc = s(info, "/rpc_url"),
            ),
        )
        .unwrap();
        Agent { dir }
    }

    fn command(&self, info: &Value, url: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnpike"));
        cmd.args(["fetch", "--wallet", "agent", "--json", "--wallet-config"])
            .arg(self.dir.path().join("wallets.toml"))
            .args(extra)
            .arg(url)
            .env("TURNPIKE_DATA_DIR", self.dir.path().join("data"))
            .env(KEY_VAR, s(info, "/payer/private_key"));
        cmd
    }

    /// Runs `turnpike fetch --json`: exit code, the JSON printed, standard error.
    async fn fetch(&self, info: &Value, url: &str, extra: &[&str]) -> (i32, Value, String) {
        let mut cmd = self.command(info, url, extra);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code().unwrap_or(-1), json, stderr)
    }

    /// Runs `turnpike fetch` and kills it (SIGKILL) right after the server answered its
    /// payment, before it recorded anything (`TURNPIKE_TEST_HOLD_AFTER_PAYMENT`).
    async fn fetch_killed_after_payment(&self, info: &Value, url: &str) {
        let marker = self.dir.path().join("paid.marker");
        let mut cmd = self.command(info, url, &[]);
        cmd.env("TURNPIKE_TEST_HOLD_AFTER_PAYMENT", &marker)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = common::Running(cmd.spawn().unwrap());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !marker.exists() {
            assert!(std::time::Instant::now() < deadline, "no payment was made");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        let _ = std::fs::remove_file(&marker);
    }

    async fn ledger(&self) -> Vec<turnpike_client::ledger::PaymentRow> {
        let ledger = turnpike_client::ledger::Ledger::open_in(&self.dir.path().join("data"))
            .await
            .unwrap();
        ledger.payments(None, None).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turnpike_fetch_pays_an_official_express_server_within_its_usdc_budget() {
    let Some((info, _chain, server, before)) = on_express(
        "turnpike_fetch_pays_an_official_express_server_within_its_usdc_budget",
        10_000,
    )
    .await
    else {
        return;
    };
    // A total of 0.015 USDC: the first call fits, the second does not.
    let agent = Agent::new(&info, "l402", "max_per_call = 10000, total = 15000");
    // --dry-run prices it and signs nothing.
    let (code, got, stderr) = agent.fetch(&info, &server.url, &["--dry-run"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(got["x402_quote"]["amount_units"], 10_000, "{got}");
    assert!(got["x402_quote"]["refusal"].is_null(), "{got}");
    assert!(agent.ledger().await.is_empty());
    let (code, got, stderr) = agent.fetch(&info, &server.url, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(got["body"], r#"{"weather":"sunny"}"#);
    assert!(got["payment"].is_null(), "no Lightning payment: {got}");
    let paid = &got["x402_payment"];
    assert_eq!(paid["amount_units"], 10_000, "{got}");
    assert_eq!(paid["settled"], true);
    assert_eq!(
        paid["pay_to"].as_str().unwrap(),
        server.pay_to.to_lowercase()
    );
    let tx = paid["transaction"].as_str().unwrap().to_owned();
    assert_eq!(tx.len(), 66);
    assert_eq!(
        balance(&info, &server.pay_to).await - before,
        U256::from(10_000),
        "payTo rises by exactly the price"
    );
    let rows = agent.ledger().await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(
        (
            row.rail.as_str(),
            row.amount_units,
            row.amount_msat,
            row.state
        ),
        (
            "x402",
            Some(10_000),
            0,
            turnpike_client::ledger::PaymentState::Paid
        )
    );
    assert_eq!(row.tx_hash.as_deref(), Some(tx.as_str()));
    assert_eq!(
        row.asset.as_deref().unwrap(),
        format!(
            "{}/{}",
            s(&info, "/network"),
            s(&info, "/token").to_lowercase()
        )
    );
    assert_eq!(row.http_status, Some(200));
    // `turnpike spend` sums it per asset, in base units, apart from sats.
    let out = Command::new(env!("CARGO_BIN_EXE_turnpike"))
        .args(["spend", "--json"])
        .env("TURNPIKE_DATA_DIR", agent.dir.path().join("data"))
        .output()
        .unwrap();
    let spend: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(spend["total_sats"], 0, "{spend}");
    assert_eq!(
        spend["x402_units_by_asset"][row.asset.as_deref().unwrap()],
        10_000,
        "{spend}"
    );

    // Over the total: refused before signing, nothing moves, the error names the limit.
    let payer_before = balance(&info, s(&info, "/payer/address")).await;
    let (_, got, _) = agent.fetch(&info, &server.url, &["--dry-run"]).await;
    assert_eq!(
        got["x402_quote"]["refusal"]["limit"]["limit"], "total",
        "{got}"
    );
    let (code, got, stderr) = agent.fetch(&info, &server.url, &[]).await;
    assert_eq!(code, 1, "{got} {stderr}");
    assert_eq!(got["paid"], false);
    assert_eq!(got["refusal"]["limit"]["limit"], "total", "{got}");
    assert_eq!(got["refusal"]["left"], 5_000);
    assert!(
        stderr.contains("total") && stderr.contains("nothing was paid"),
        "{stderr}"
    );
    // Above approve_above with no terminal to ask: refused, nothing signed; --dry-run says so.
    let asks = Agent::new(&info, "x402", "max_per_call = 20000, approve_above = 5000");
    let (_, got, _) = asks.fetch(&info, &server.url, &["--dry-run"]).await;
    assert_eq!(got["x402_quote"]["needs_approval"], true, "{got}");
    let (code, _, stderr) = asks.fetch(&info, &server.url, &[]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("10000 base units of") && stderr.contains("needs approval"),
        "{stderr}"
    );
    assert!(asks.ledger().await.is_empty());
    // Over the per-call cap of another wallet: the same.
    let small = Agent::new(&info, "x402", "max_per_call = 9999");
    let (code, _, stderr) = small.fetch(&info, &server.url, &[]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("max_per_call"), "{stderr}");
    assert!(small.ledger().await.is_empty());
    assert_eq!(
        balance(&info, &server.pay_to).await - before,
        U256::from(10_000)
    );
    assert_eq!(
        balance(&info, s(&info, "/payer/address")).await,
        payer_before,
        "no money moved"
    );
    assert_eq!(agent.ledger().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_whose_run_crashed_is_sent_again_not_signed_again() {
    let Some((info, _chain, server, before)) = on_express(
        "a_payment_whose_run_crashed_is_sent_again_not_signed_again",
        7_000,
    )
    .await
    else {
        return;
    };
    let agent = Agent::new(&info, "x402", "max_per_call = 10000");
    // The run is killed right after the server answered the payment, before it recorded it.
    agent.fetch_killed_after_payment(&info, &server.url).await;
    assert_eq!(
        balance(&info, &server.pay_to).await - before,
        U256::from(7_000)
    );
    let rows = agent.ledger().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].state,
        turnpike_client::ledger::PaymentState::Reserved
    );

    // The next run finds the open payment of this same challenge and sends it again: the
    // server refuses a used authorisation, the chain shows it was used, and the row is
    // settled. No second authorisation is signed.
    let (code, got, stderr) = agent.fetch(&info, &server.url, &["-v"]).await;
    assert_eq!(code, 22, "{got} {stderr}");
    assert_eq!(got["status"], 402);
    assert_eq!(got["x402_payment"]["resent"], true, "{got}");
    assert_eq!(got["x402_payment"]["settled"], true, "{got}");
    assert!(stderr.contains("sending again"), "{stderr}");
    assert!(
        !stderr.contains("payment-signature: "),
        "the payment is never printed"
    );
    let rows = agent.ledger().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, turnpike_client::ledger::PaymentState::Paid);
    assert_eq!(
        balance(&info, &server.pay_to).await - before,
        U256::from(7_000),
        "paid once"
    );
    // A new call is a new challenge answered: paid once more.
    let (code, got, stderr) = agent.fetch(&info, &server.url, &[]).await;
    assert_eq!(code, 0, "{got} {stderr}");
    assert_eq!(got["x402_payment"]["resent"], false);
    assert_eq!(agent.ledger().await.len(), 2);
    assert_eq!(
        balance(&info, &server.pay_to).await - before,
        U256::from(14_000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turnpike_fetch_pays_turnpike_over_x402_and_reuses_the_credential() {
    let Some((info, _chain, gw, before)) =
        on_gateway("turnpike_fetch_pays_turnpike_over_x402_and_reuses_the_credential").await
    else {
        return;
    };
    let agent = Agent::new(&info, "l402", "max_per_call = 50000");
    let url = gw.url("/usdcbundle");
    // Without a wallet, or with one without an x402 key: refused, saying why.
    let dev = tempfile::tempdir().unwrap();
    for wallet in [&[][..], &["--wallet", "dev"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_turnpike"))
            .arg("fetch")
            .args(wallet)
            .arg(&url)
            .env("TURNPIKE_DATA_DIR", dev.path())
            .env("TURNPIKE_WALLETS", dev.path().join("none.toml"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("no x402 key"), "{wallet:?}: {stderr}");
    }
    // The bundle (3 calls for 0.03 USDC) is paid once; its credential serves the next two.
    let (code, got, stderr) = agent.fetch(&info, &url, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(got["body"], "ok");
    assert_eq!(got["x402_payment"]["amount_units"], 30_000, "{got}");
    for _ in 0..2 {
        let (code, got, stderr) = agent.fetch(&info, &url, &[]).await;
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(got["body"], "ok");
        assert_eq!(got["reused_token"], true, "{got}");
        assert!(got["x402_payment"].is_null(), "paid again: {got}");
    }
    assert_eq!(gw.served(), 3);
    assert_eq!(
        balance(&info, &gw.pay_to).await - before,
        U256::from(30_000),
        "one transfer for three calls"
    );
    // Used up: the next call pays for a new bundle.
    let (code, got, stderr) = agent.fetch(&info, &url, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(got["x402_payment"]["amount_units"], 30_000, "{got}");
    assert_eq!(gw.served(), 4);
    assert_eq!(
        balance(&info, &gw.pay_to).await - before,
        U256::from(60_000)
    );
    let rows = agent.ledger().await;
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r.rail == "x402" && r.amount_units == Some(30_000))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallet_preference_picks_the_rail_and_the_other_pays_when_it_cannot() {
    let Some((info, _chain, gw, before)) =
        on_gateway("the_wallet_preference_picks_the_rail_and_the_other_pays_when_it_cannot").await
    else {
        return;
    };
    let url = gw.url("/paid");
    let moved = || async { balance(&info, &gw.pay_to).await - before };
    // (prefer, x402 budget, --max-sats, pays in USDC?)
    let cases = [
        ("x402", "max_per_call = 10000", "100", true),
        ("l402", "max_per_call = 10000", "100", false),
        // The preferred rail cannot pay within its limits: the other one does.
        ("x402", "max_per_call = 9999", "100", false),
        ("l402", "max_per_call = 10000", "9", true),
    ];
    let mut usdc = 0u64;
    for (i, (prefer, budget, max_sats, in_usdc)) in cases.into_iter().enumerate() {
        let agent = Agent::new(&info, prefer, budget);
        let (code, got, stderr) = agent
            .fetch(&info, &url, &["--no-cache", "-v", "--max-sats", max_sats])
            .await;
        assert_eq!(code, 0, "case {i}: {got} {stderr}");
        let fell_back = (prefer == "x402") != in_usdc;
        assert_eq!(
            stderr.contains(&format!("the {prefer} rail cannot pay")),
            fell_back,
            "case {i}: {stderr}"
        );
        assert_eq!(got["body"], "ok", "case {i}");
        assert_eq!(got["x402_payment"].is_null(), !in_usdc, "case {i}: {got}");
        assert_eq!(got["payment"].is_null(), in_usdc, "case {i}: {got}");
        let rows = agent.ledger().await;
        assert_eq!(rows.len(), 1, "case {i}");
        assert_eq!(rows[0].rail, if in_usdc { "x402" } else { "l402" });
        if in_usdc {
            usdc += 10_000;
        } else {
            assert_eq!(rows[0].amount_msat, 10_000, "case {i}");
        }
        assert_eq!(moved().await, U256::from(usdc), "case {i}");
    }
    // A wallet without Lightning (no `kind`) preferring L402 pays over x402, trying nothing
    // on Lightning.
    let agent = Agent::with_lightning(&info, "", "l402", "max_per_call = 10000");
    let (code, got, stderr) = agent.fetch(&info, &url, &["--no-cache", "-v"]).await;
    assert_eq!(code, 0, "{got} {stderr}");
    assert!(stderr.contains("no Lightning backend"), "{stderr}");
    assert_eq!(got["x402_payment"]["amount_units"], 10_000, "{got}");
    assert_eq!(agent.ledger().await.len(), 1);
    usdc += 10_000;
    assert_eq!(moved().await, U256::from(usdc));
    // Neither rail can pay: the budget's refusal is told, nothing moves.
    let agent = Agent::new(&info, "x402", "max_per_call = 9999");
    let (code, _, stderr) = agent.fetch(&info, &url, &["--max-sats", "9"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("nothing was paid"), "{stderr}");
    assert!(agent.ledger().await.is_empty());
    assert_eq!(moved().await, U256::from(usdc));
    assert_eq!(gw.served(), 5);
}

/// `turnpike mcp` (started by the official MCP Python SDK over stdio, `tests/mcp/mcp_call.py`)
/// pays an x402-only service of Turnpike's gateway from the wallet's EVM key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turnpike_mcp_pays_over_x402() {
    let python = match std::env::var("TURNPIKE_TEST_PYTHON") {
        Ok(p) if !p.trim().is_empty() => p,
        _ if std::env::var("TURNPIKE_STRICT_TESTS").as_deref() == Ok("1") => {
            panic!("turnpike_mcp_pays_over_x402: set TURNPIKE_TEST_PYTHON to a Python with `mcp`")
        }
        _ => {
            eprintln!("SKIPPED: turnpike_mcp_pays_over_x402: TURNPIKE_TEST_PYTHON is not set");
            return;
        }
    };
    let Some((info, _chain, gw, before)) = on_gateway("turnpike_mcp_pays_over_x402").await else {
        return;
    };
    let agent = Agent::new(&info, "l402", "max_per_call = 10000");
    let call_as = |agent: &Agent, elicit: &str, tool: &str, arguments: Value| {
        let mut cmd = Command::new(&python);
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/mcp/mcp_call.py"
        ))
        .arg(env!("CARGO_BIN_EXE_turnpike"))
        .arg(tool)
        .arg(arguments.to_string())
        .args(["--wallet", "agent", "--allow-host", "127.0.0.1"])
        .env("TURNPIKE_WALLETS", agent.dir.path().join("wallets.toml"))
        .env("TURNPIKE_DATA_DIR", agent.dir.path().join("data"))
        .env("TURNPIKE_TEST_ELICIT", elicit)
        .env(KEY_VAR, s(&info, "/payer/private_key"));
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "mcp_call.py: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        }
    };
    let call = |tool: &str, arguments: Value| call_as(&agent, "", tool, arguments);
    let got = call("l402_fetch", json!({"url": gw.url("/usdconly")})).await;
    assert_eq!(got["is_error"], false, "{got}");
    let out = &got["structured"];
    assert_eq!(out["status"], 200, "{got}");
    assert_eq!(out["body"], "ok");
    assert_eq!(out["paid"], true);
    assert_eq!(out["paid_sats"], 0);
    assert_eq!(out["x402_payment"]["amount_units"], "5000", "{got}");
    assert_eq!(out["x402_payment"]["settled"], true);
    assert_eq!(balance(&info, &gw.pay_to).await - before, U256::from(5_000));
    let rows = agent.ledger().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].rail.as_str(), rows[0].amount_units),
        ("x402", Some(5_000))
    );
    // Over the wallet's x402 budget: a tool error, nothing paid.
    let got = call("l402_fetch", json!({"url": gw.url("/usdcbundle")})).await;
    assert_eq!(got["is_error"], true, "{got}");
    let text = got["text"].as_str().unwrap();
    assert!(
        text.contains("max_per_call") && text.contains("nothing was paid"),
        "{text}"
    );
    assert_eq!(balance(&info, &gw.pay_to).await - before, U256::from(5_000));
    assert_eq!(gw.served(), 1);
    // A quote says what the bundle would cost and that the budget refuses it.
    let got = call("l402_quote", json!({"url": gw.url("/usdcbundle")})).await;
    let quote = &got["structured"];
    assert_eq!(quote["x402_amount_units"], "30000", "{got}");
    assert_eq!(quote["allowed"], false, "{got}");
    // The spending report gives it in base units of its asset.
    let got = call("l402_spending_report", json!({})).await;
    let report = &got["structured"];
    assert_eq!(report["total_sats"], 0, "{got}");
    assert_eq!(
        report["x402_units_by_asset"][rows[0].asset.as_deref().unwrap()],
        5_000
    );
    assert_eq!(report["payments"][0]["rail"], "x402");
    assert_eq!(report["payments"][0]["amount_units"], 5_000);
    // Above approve_above the person is asked through the MCP client: a no pays nothing, a yes
    // pays.
    let asks = Agent::new(&info, "l402", "max_per_call = 10000, approve_above = 1000");
    let url = json!({"url": gw.url("/usdconly")});
    let got = call_as(&asks, "decline", "l402_fetch", url.clone()).await;
    assert_eq!(got["is_error"], true, "{got}");
    assert!(
        got["text"].as_str().unwrap().contains("did not approve"),
        "{got}"
    );
    let asked = got["asked"][0].as_str().unwrap();
    assert!(
        asked.contains("5000 base units of") && asked.contains("/usdconly"),
        "{asked}"
    );
    assert!(asks.ledger().await.is_empty());
    let got = call_as(&asks, "accept", "l402_fetch", url.clone()).await;
    assert_eq!(
        got["structured"]["x402_payment"]["amount_units"], "5000",
        "{got}"
    );
    assert_eq!(
        balance(&info, &gw.pay_to).await - before,
        U256::from(10_000)
    );
    // A connection lowers its x402 limit below the price: refused on it, nothing paid; it
    // cannot raise one.
    let calls = json!([
        {"tool": "l402_balance", "arguments": {}},
        {"tool": "l402_lower_budget", "arguments": {"x402_max_per_call": 4999}},
        {"tool": "l402_lower_budget", "arguments": {"x402_max_per_call": 99999}},
        {"tool": "l402_fetch", "arguments": url},
    ]);
    let got = call_as(&agent, "", "--calls", calls).await;
    let results = &got["results"];
    let x402 = &results[0]["structured"]["x402"][0];
    assert_eq!(x402["spent_total_units"], "5000", "{got}");
    assert_eq!(x402["budget"]["max_per_call"], 10_000, "{got}");
    let lowered = &results[2]["structured"]["x402_budgets"][0]["budget"];
    assert_eq!(lowered["max_per_call"], 4999, "{got}");
    assert_eq!(results[3]["is_error"], true, "{got}");
    let text = results[3]["text"].as_str().unwrap();
    assert!(
        text.contains("max_per_call") && text.contains("nothing was paid"),
        "{text}"
    );
    assert_eq!(
        balance(&info, &gw.pay_to).await - before,
        U256::from(10_000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_run_gets_its_bundle_back_from_turnpike_by_resending_the_payment() {
    let Some((info, _chain, gw, before)) =
        on_gateway("a_crashed_run_gets_its_bundle_back_from_turnpike_by_resending_the_payment")
            .await
    else {
        return;
    };
    let agent = Agent::new(&info, "x402", "max_per_call = 50000");
    let url = gw.url("/usdcbundle");
    // Killed right after the gateway answered the payment: the credential is lost with it.
    agent.fetch_killed_after_payment(&info, &url).await;
    assert_eq!(gw.served(), 1);
    // The next run sends the same payment again: the gateway answers with the bundle's next
    // call and its credential, which serves the third call. One transfer for three calls.
    let (code, got, stderr) = agent.fetch(&info, &url, &[]).await;
    assert_eq!(code, 0, "{got} {stderr}");
    assert_eq!(got["body"], "ok");
    assert_eq!(got["x402_payment"]["resent"], true, "{got}");
    assert_eq!(got["x402_payment"]["settled"], true, "{got}");
    assert_eq!(got["headers"]["turnpike-calls-remaining"], "1", "{got}");
    let (code, got, stderr) = agent.fetch(&info, &url, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(got["reused_token"], true, "{got}");
    assert_eq!(gw.served(), 3);
    assert_eq!(
        balance(&info, &gw.pay_to).await - before,
        U256::from(30_000)
    );
    let rows = agent.ledger().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, turnpike_client::ledger::PaymentState::Paid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fetches_in_one_process_pay_a_bundle_once() {
    use turnpike_client::x402pay::{PayableAsset, Rail, X402Wallet};
    let Some((info, _chain, gw, before)) =
        on_gateway("concurrent_fetches_in_one_process_pay_a_bundle_once").await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ledger = turnpike_client::ledger::Ledger::open_in(dir.path())
        .await
        .unwrap();
    let accounting = turnpike_client::spend::Accounting::new(
        ledger.clone(),
        "agent",
        turnpike_client::budget::Budget::default(),
        turnpike_l402::Msat(0),
    );
    let url: reqwest::Url = gw.url("/usdcbundle").parse().unwrap();
    let wallet = X402Wallet::new(
        payer(&info),
        vec![PayableAsset {
            network: turnpike_x402::Network::parse_caip2(s(&info, "/network")).unwrap(),
            asset: parse_address(s(&info, "/token")).unwrap(),
            decimals: 6,
            budget: turnpike_client::budget::TokenBudget {
                max_per_call: Some(30_000),
                ..Default::default()
            },
            rpc_url: None,
        }],
    )
    .unwrap();
    let client = turnpike_client::L402Client::new(
        Arc::new(turnpike_lightning::DevPayWallet::for_origin(&url).unwrap()),
        turnpike_l402::Sats(0),
    )
    .unwrap()
    .with_accounting(accounting)
    .with_x402(Some(wallet), Rail::X402);
    let fetches = (0..3).map(|_| {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let got = client
                .fetch(turnpike_client::FetchRequest::get(url))
                .await
                .unwrap();
            (got.response.status().as_u16(), got.x402.is_some())
        })
    });
    let mut paid = 0;
    for f in fetches {
        let (status, x402) = f.await.unwrap();
        assert_eq!(status, 200);
        paid += u32::from(x402);
    }
    assert_eq!(paid, 1, "one fetch paid, the others used its credential");
    assert_eq!(gw.served(), 3);
    assert_eq!(
        balance(&info, &gw.pay_to).await - before,
        U256::from(30_000)
    );
    assert_eq!(ledger.payments(None, None).await.unwrap().len(), 1);
}

/// A loopback proxy to `target` that hides `PAYMENT-REQUIRED` from 402 answers, so that a
/// client sees only the x402 v1 JSON body.
fn v1_only_proxy(target: String) -> String {
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let target = target.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let mut headers = parts.headers.clone();
            headers.remove(http::header::HOST);
            let resp = http()
                .request(parts.method, format!("{target}{}", parts.uri))
                .headers(headers)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let mut headers = resp.headers().clone();
            if status == 402 {
                headers.remove("payment-required");
            }
            headers.remove(http::header::CONTENT_LENGTH);
            let bytes = resp.bytes().await.unwrap();
            (status, headers, bytes)
        }
    });
    format!("http://{}", common::spawn_app(app))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turnpike_fetch_pays_an_x402_v1_challenge_with_x_payment() {
    let Some((info, _chain, gw, before)) =
        on_gateway("turnpike_fetch_pays_an_x402_v1_challenge_with_x_payment").await
    else {
        return;
    };
    let proxy = v1_only_proxy(gw.base.clone());
    let agent = Agent::new(&info, "x402", "max_per_call = 10000");
    let (code, got, stderr) = agent
        .fetch(&info, &format!("{proxy}/paid"), &["--no-cache"])
        .await;
    assert_eq!(code, 0, "{got} {stderr}");
    assert_eq!(got["body"], "ok");
    assert!(
        got["headers"].get("x-payment-response").is_some(),
        "a v1 answer: {got}"
    );
    assert!(got["payment"].is_null(), "not paid over Lightning: {got}");
    assert_eq!(got["x402_payment"]["settled"], true, "{got}");
    assert_eq!(
        balance(&info, &gw.pay_to).await - before,
        U256::from(10_000)
    );
    assert_eq!(gw.served(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_of_unknown_outcome_stays_charged_and_is_only_ever_resent() {
    let Some(info) = info("a_payment_of_unknown_outcome_stays_charged_and_is_only_ever_resent")
    else {
        return;
    };
    // A facilitator that never answers /settle: the gateway cannot tell, nor can the client.
    let gw = Gateway::start_with(&info, &format!("http://{}", silent_settler()), 500);
    let url = gw.url("/paid");
    // A budget of one payment: a second authorisation could not be signed anyway.
    let agent = Agent::new(&info, "x402", "max_per_call = 10000, total = 10000");
    let (code, got, stderr) = agent.fetch(&info, &url, &["--no-cache"]).await;
    assert_eq!(code, 22, "{got} {stderr}");
    assert_eq!(got["status"], 502, "{got}");
    assert_eq!(got["x402_payment"]["settled"], false, "{got}");
    assert_eq!(got["x402_payment"]["state"], "unknown", "{got}");
    assert!(stderr.contains("did not report settling"), "{stderr}");
    // The next fetch sends the same authorisation again (the gateway refuses it as used); the
    // reservation stays charged, nothing new is signed.
    let (code, got, stderr) = agent.fetch(&info, &url, &["--no-cache"]).await;
    assert_eq!(code, 22, "{got} {stderr}");
    assert_eq!(got["x402_payment"]["resent"], true, "{got}");
    let rows = agent.ledger().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].state,
        turnpike_client::ledger::PaymentState::Unknown
    );
    assert_eq!(gw.served(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_payment_of_unknown_outcome_is_released_from_the_chain() {
    let Some((info, _chain, gw, before)) =
        on_gateway("an_expired_payment_of_unknown_outcome_is_released_from_the_chain").await
    else {
        return;
    };
    // The budget holds one payment, taken by an earlier one whose outcome was never known and
    // whose window has closed.
    let agent = Agent::new(&info, "x402", "max_per_call = 5000, total = 5000");
    let ledger = turnpike_client::ledger::Ledger::open_in(&agent.dir.path().join("data"))
        .await
        .unwrap();
    let asset = format!(
        "{}/{}",
        s(&info, "/network"),
        s(&info, "/token").to_lowercase()
    );
    let payer = s(&info, "/payer/address").to_lowercase();
    let old = ledger
        .reserve_x402(
            &turnpike_client::ledger::NewX402Payment {
                wallet: "agent",
                url: "http://elsewhere/x",
                origin: "http://elsewhere",
                asset: &asset,
                amount: 5_000,
                nonce: rand::random(),
                valid_before: now() - 1,
                challenge: "an earlier challenge",
                payer: &payer,
            },
            &turnpike_client::budget::TokenBudget::default(),
            now() - 100,
        )
        .await
        .unwrap();
    ledger.set_x402_payment(old, "eyJ9").await.unwrap();
    ledger.mark_unknown(old, "no answer", now()).await.unwrap();
    // The chain says its nonce was never used: released, and the budget pays this call.
    let (code, got, stderr) = agent.fetch(&info, &gw.url("/usdconly"), &[]).await;
    assert_eq!(code, 0, "{got} {stderr}");
    assert_eq!(got["x402_payment"]["amount_units"], 5_000, "{got}");
    let row = ledger.payment(old).await.unwrap().unwrap();
    assert_eq!(row.state, turnpike_client::ledger::PaymentState::Failed);
    assert!(row.error.unwrap().contains("authorizationState"));
    assert_eq!(balance(&info, &gw.pay_to).await - before, U256::from(5_000));
}
