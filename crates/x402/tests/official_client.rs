//! Interoperability with the official x402 implementation (npm @x402/core + @x402/evm 2.27.0) on
//! the offline test chain of `scripts/x402-env.sh` (anvil, Circle's FiatTokenV2_2, a real
//! facilitator; all on 127.0.0.1):
//!
//! - the official client signs a payment for requirements this crate produced (v2 header and
//!   v1 body), and this crate decodes and verifies it: the signature recovers the payer;
//! - tampered copies fail here (and at the facilitator);
//! - the facilitator accepts this crate's `/verify` and `/settle` bodies, settles on chain
//!   (payTo's balance rises by exactly the price), its answer parses, and a replay fails;
//! - payments this crate signs ([`PayerKey`], v2 and v1) pass the facilitator and settle.
//!
//! Needs the environment running:
//!
//! ```text
//! scripts/x402-env.sh install && scripts/x402-env.sh start
//! cargo test -p turnpike-x402 --test official_client
//! scripts/x402-env.sh stop
//! ```
//!
//! Without it the tests print `SKIPPED: ...` and pass, unless `TURNPIKE_STRICT_TESTS=1`, in
//! which case they fail.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use turnpike_x402::facilitator::{self, SettleResponse, VerifyResponse};
use turnpike_x402::verify::VerifyError;
use turnpike_x402::{
    Address, Network, PayerKey, PaymentPayload, PaymentRequired, PaymentRequirements, ResourceInfo,
    TokenAmount, TokenDomain, U256, X402Version, parse_address, verify,
};

const SETUP: &str = "start the offline x402 chain: `scripts/x402-env.sh install && scripts/x402-env.sh start` \
     (it writes target/x402/info.json; TURNPIKE_X402_INFO overrides the path)";

/// What `scripts/x402-env.sh start` wrote, or `None` (after reporting) to skip.
fn env(test: &str) -> Option<Value> {
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
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The chain's facilitator account sends every settlement: two tests settling at once would
/// race for its transaction nonce (one settlement then reverts). Each test holds the chain.
static CHAIN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The environment, what this crate offers on it, and the 402 challenge carrying the offer.
struct Setup {
    _chain: std::sync::MutexGuard<'static, ()>,
    info: Value,
    offered: PaymentRequirements,
    resource: ResourceInfo,
    payer: Address,
    challenge: PaymentRequired,
}

fn setup(test: &str) -> Option<Setup> {
    let info = env(test)?;
    // A test that failed while holding the chain leaves it usable for the others.
    let chain = CHAIN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // The chain mines only when it gets a transaction: after a long build its latest block
    // can be older than the official client's `validAfter` (now − 600 s), and the facilitator
    // simulates transfers against that block. A fresh block brings its time to now.
    let (status, mined) = http(
        s(&info, "/rpc_url"),
        "POST",
        &json!({"jsonrpc": "2.0", "id": 1, "method": "evm_mine", "params": []}),
    );
    assert_eq!(status, 200, "evm_mine: {mined}");
    let (offered, resource) = offer(&info);
    let payer = parse_address(s(&info, "/payer/address")).unwrap();
    let challenge = PaymentRequired::new(resource.clone(), vec![offered.clone()]);
    Some(Setup {
        _chain: chain,
        info,
        offered,
        resource,
        payer,
        challenge,
    })
}

/// What this crate offers on the test chain: 0.01 USDC to account #2.
fn offer(info: &Value) -> (PaymentRequirements, ResourceInfo) {
    let network: Network = s(info, "/network").parse().unwrap();
    let requirements = PaymentRequirements {
        network,
        amount: TokenAmount::parse_decimal("0.01", 6).unwrap(),
        asset: parse_address(s(info, "/token")).unwrap(),
        pay_to: parse_address(s(info, "/pay_to/address")).unwrap(),
        max_timeout_seconds: 300,
        extra: TokenDomain {
            name: s(info, "/token_name").into(),
            version: s(info, "/token_version").into(),
        },
    };
    let resource = ResourceInfo {
        url: "http://127.0.0.1:18080/paid".into(),
        description: "paid thing".into(),
        mime_type: "application/json".into(),
    };
    (requirements, resource)
}

/// Has the official client answer a 402 (`headers`, `body`); returns the headers it would
/// retry with.
fn official_client_pays(info: &Value, response: &Value) -> serde_json::Map<String, Value> {
    let mut child = Command::new(s(info, "/node"))
        .arg(s(info, "/pay_script"))
        .arg(s(info, "/payer/private_key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(response.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "pay.mjs failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("pay.mjs prints JSON");
    v["headers"].as_object().expect("headers").clone()
}

/// Has the official client answer `response` (a 402), decodes the payment header it retries
/// with (`PAYMENT-SIGNATURE` for v2, `X-PAYMENT` for v1), and checks that it is for our offer
/// and that our offline verification recovers the payer from its signature.
fn official_payment(t: &Setup, response: &Value, version: X402Version) -> PaymentPayload {
    let headers = official_client_pays(&t.info, response);
    let payment = match version {
        X402Version::V2 => {
            PaymentPayload::from_payment_signature(header(&headers, "payment-signature").as_bytes())
        }
        X402Version::V1 => PaymentPayload::from_x_payment(header(&headers, "x-payment").as_bytes()),
    }
    .expect("the official payment decodes");
    assert_eq!(payment.version, version);
    assert_eq!(
        payment.select(std::slice::from_ref(&t.offered)),
        Some(&t.offered)
    );
    let verified = verify(&payment, &t.offered, now()).expect("the official payment verifies");
    assert_eq!(verified.payer, t.payer);
    assert_eq!(verified.amount, t.offered.amount);
    payment
}

/// The header `name` (any case) among those the client answered with.
fn header<'a>(headers: &'a serde_json::Map<String, Value>, name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
}

/// A minimal HTTP/1.0 exchange with a loopback server (no client crate in this pure crate).
fn http(url: &str, method: &str, body: &Value) -> (u16, Value) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_once('/').map_or((rest, "/"), |(h, p)| (h, p));
    let path = if path == "/" {
        "/".to_owned()
    } else {
        format!("/{path}")
    };
    let mut stream = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let body = body.to_string();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8(response).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (
        status,
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{url}: {e}: {body}")),
    )
}

fn facilitator(info: &Value, endpoint: &str, body: &Value) -> Vec<u8> {
    let (status, json) = http(
        &format!("{}/{endpoint}", s(info, "/facilitator_url")),
        "POST",
        body,
    );
    assert_eq!(status, 200, "/{endpoint}: {json}");
    json.to_string().into_bytes()
}

/// The token balance of `who`, read from the chain.
fn balance(info: &Value, who: Address) -> U256 {
    let data = format!(
        "0x70a08231{:0>64}",
        format!("{who:x}").trim_start_matches("0x")
    );
    let (status, json) = http(
        s(info, "/rpc_url"),
        "POST",
        &json!({"jsonrpc": "2.0", "id": 1, "method": "eth_call",
                "params": [{"to": s(info, "/token"), "data": data}, "latest"]}),
    );
    assert_eq!(status, 200, "{json}");
    let hex = json["result"].as_str().expect("eth_call result");
    U256::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap()
}

/// The payment JSON with `edit` applied, re-encoded as a header and decoded.
fn tampered(p: &PaymentPayload, edit: impl FnOnce(&mut Value)) -> PaymentPayload {
    use base64::Engine as _;
    let mut json = p.raw_json().clone();
    edit(&mut json);
    let header = base64::engine::general_purpose::STANDARD.encode(json.to_string());
    match p.version {
        X402Version::V2 => PaymentPayload::from_payment_signature(header.as_bytes()),
        X402Version::V1 => PaymentPayload::from_x_payment(header.as_bytes()),
    }
    .unwrap()
}

#[test]
fn official_client_v2_payment_verifies_here_and_settles() {
    let Some(t) = setup("official_client_v2_payment_verifies_here_and_settles") else {
        return;
    };
    let (info, offered, resource, payer) = (&t.info, &t.offered, &t.resource, t.payer);

    // The official client reads our PAYMENT-REQUIRED and answers with PAYMENT-SIGNATURE, which
    // verifies here.
    let payment = official_payment(
        &t,
        &json!({"headers": {"PAYMENT-REQUIRED": t.challenge.to_header()}, "body": {}}),
        X402Version::V2,
    );
    assert_eq!(t.offered.amount, TokenAmount::from_base_units(10_000));

    // Tampered copies fail here: another nonce breaks the signature; another value is caught
    // before it.
    let forged_nonce = tampered(&payment, |j| {
        j["payload"]["authorization"]["nonce"] = format!("0x{}", "42".repeat(32)).into()
    });
    assert!(matches!(
        verify(&forged_nonce, offered, now()),
        Err(VerifyError::SignerMismatch { from, .. }) if from == payer
    ));
    let forged_value = tampered(&payment, |j| {
        j["payload"]["authorization"]["value"] = "1".into()
    });
    assert!(matches!(
        verify(&forged_value, offered, now()),
        Err(VerifyError::ValueMismatch { .. })
    ));

    // The real facilitator agrees, given the bodies this crate builds.
    let body = facilitator::request_body(&payment, offered, resource).unwrap();
    let answer = VerifyResponse::from_json(&facilitator(info, "verify", &body)).unwrap();
    assert!(answer.is_valid, "{answer:?}");
    assert_eq!(answer.payer, Some(payer));
    let forged = facilitator::request_body(&forged_nonce, offered, resource).unwrap();
    let answer = VerifyResponse::from_json(&facilitator(info, "verify", &forged)).unwrap();
    assert!(!answer.is_valid, "a forged nonce passed the facilitator");

    // Settlement moves exactly the price, and the answer travels as PAYMENT-RESPONSE.
    let before = balance(info, offered.pay_to);
    let settled = SettleResponse::from_json(&facilitator(info, "settle", &body)).unwrap();
    assert!(settled.success, "{settled:?}");
    assert_eq!(settled.payer, Some(payer));
    assert_eq!(settled.network, offered.network);
    assert!(settled.transaction.is_some());
    assert_eq!(
        balance(info, offered.pay_to),
        before + offered.amount.to_u256()
    );
    let header = settled.to_header(X402Version::V2);
    assert_eq!(SettleResponse::from_header(header.as_bytes()), Ok(settled));

    // The same payment again: still well-formed and signed (our checks pass), but the chain
    // has used its nonce, so the facilitator refuses to settle it twice.
    assert!(verify(&payment, offered, now()).is_ok());
    let again = SettleResponse::from_json(&facilitator(info, "settle", &body)).unwrap();
    assert!(!again.success, "a replayed payment settled twice");
    assert!(again.error_reason.is_some(), "{again:?}");
    assert_eq!(
        balance(info, offered.pay_to),
        before + offered.amount.to_u256()
    );
}

#[test]
fn official_client_v1_payment_verifies_here() {
    let Some(t) = setup("official_client_v1_payment_verifies_here") else {
        return;
    };
    let (info, offered, resource, payer) = (&t.info, &t.offered, &t.resource, t.payer);

    // A v1 client sees only the JSON body and answers with X-PAYMENT, which verifies here.
    let payment = official_payment(
        &t,
        &json!({"headers": {}, "body": t.challenge.to_v1_body()}),
        X402Version::V1,
    );

    // A tampered copy (another validBefore, still inside the offer) fails the signature.
    let forged = tampered(&payment, |j| {
        let before: u64 = j["payload"]["authorization"]["validBefore"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        j["payload"]["authorization"]["validBefore"] = (before - 1).to_string().into();
    });
    assert!(matches!(
        verify(&forged, offered, now()),
        Err(VerifyError::SignerMismatch { from, .. }) if from == payer
    ));

    // Offered to someone else, the same payment is refused.
    let mut elsewhere = offered.clone();
    elsewhere.pay_to = payer;
    assert!(matches!(
        verify(&payment, &elsewhere, now()),
        Err(VerifyError::RecipientMismatch { .. })
    ));

    // The facilitator accepts this crate's v1 body for it (not settled: verify only).
    let body = facilitator::request_body(&payment, offered, resource).unwrap();
    assert_eq!(body["paymentRequirements"]["network"], "base-sepolia");
    let answer = VerifyResponse::from_json(&facilitator(info, "verify", &body)).unwrap();
    assert!(answer.is_valid, "{answer:?}");
}

/// A nonce unique to this run (the chain refuses a nonce twice per payer).
fn fresh_nonce(tag: &str) -> [u8; 32] {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    turnpike_x402::keccak256(format!("{tag}/{nanos}/{}", std::process::id())).0
}

#[test]
fn our_payment_is_accepted_by_the_official_facilitator() {
    let Some(t) = setup("our_payment_is_accepted_by_the_official_facilitator") else {
        return;
    };
    // Paid to anvil's account #3, apart from the other tests' payee.
    let mut offered = t.offered.clone();
    offered.pay_to = parse_address("0x90F79bf6EB2c4f870365E785982E1f101E93b906").unwrap();
    let key = PayerKey::from_hex(s(&t.info, "/payer/private_key")).unwrap();
    assert_eq!(key.address(), t.payer);

    // v1 form: the facilitator verifies it (no settlement).
    let v1 = key
        .pay(&offered, None, X402Version::V1, now(), fresh_nonce("v1"))
        .unwrap();
    let body = facilitator::request_body(&v1, &offered, &t.resource).unwrap();
    let answer = VerifyResponse::from_json(&facilitator(&t.info, "verify", &body)).unwrap();
    assert!(answer.is_valid, "v1: {answer:?}");

    // v2 form, through its header: verified and settled on chain.
    let payment = key
        .pay(
            &offered,
            Some(t.resource.clone()),
            X402Version::V2,
            now(),
            fresh_nonce("v2"),
        )
        .unwrap();
    let payment = PaymentPayload::from_payment_signature(payment.to_header().as_bytes()).unwrap();
    assert_eq!(verify(&payment, &offered, now()).unwrap().payer, t.payer);
    let body = facilitator::request_body(&payment, &offered, &t.resource).unwrap();
    let answer = VerifyResponse::from_json(&facilitator(&t.info, "verify", &body)).unwrap();
    assert!(answer.is_valid, "v2: {answer:?}");
    let before = balance(&t.info, offered.pay_to);
    let settled = SettleResponse::from_json(&facilitator(&t.info, "settle", &body)).unwrap();
    assert!(settled.success, "{settled:?}");
    assert_eq!(settled.payer, Some(t.payer));
    assert_eq!(
        balance(&t.info, offered.pay_to),
        before + offered.amount.to_u256()
    );
}
