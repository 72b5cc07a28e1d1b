//! `GET /.well-known/l402.json` on a real gateway (`turnpike serve`, dev backend): the catalogue
//! lists every service with its paths, methods, price in msat and pricing mode (per call,
//! bundle, time pass, dynamic with a cap), routes under their service, the free tier; it is
//! never 402-gated, even behind a catch-all service.

mod common;

use common::dev_gateway;
use serde_json::{Value, json};

const SERVICES: &str = r#"
[[services]]
name = "single"
path = "/single"
upstream = "http://{upstream}"
price_sats = 5
free_tier = { calls = 3, window_secs = 86400 }

[[services]]
name = "bundle"
path = "/bundle"
upstream = "http://{upstream}"
price_sats = 10
calls_per_payment = 10

  [[services.routes]]
  name = "write"
  path = "/bundle/write"
  method = "POST"
  price_sats = 2

[[services]]
name = "pass"
path = "/pass"
upstream = "http://{upstream}"
price_sats = 7
time_pass_secs = 3600

[[services]]
name = "quoted"
path = "/quoted"
upstream = "http://{upstream}"
price_sats = 50
pricer = { url = "http://{upstream}/price" }

[[services]]
name = "everything"
path = "/"
upstream = "http://{upstream}"
price_sats = 1
"#;

fn service<'a>(manifest: &'a Value, name: &str) -> &'a Value {
    manifest["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no service {name} in {manifest}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_lists_services_prices_and_modes() {
    turnpike_lightning::ensure_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (_gateway, base, served) = dev_gateway(dir.path(), SERVICES);
    let resp = reqwest::get(format!("{base}/.well-known/l402.json"))
        .await
        .unwrap();
    // The catch-all service `/` does not gate it.
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let m: Value = resp.json().await.unwrap();
    assert_eq!(m["version"], "1.0");
    assert_eq!(m["currencies"], json!(["msat"]));
    assert_eq!(m["payment_methods"], json!(["bolt11"]));
    assert_eq!(m["macaroon_versions"], json!([0]));
    let names: Vec<&str> = m["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 5, "{names:?}");

    let single = &service(&m, "single")["resources"][0];
    assert_eq!(single["path"], "/single");
    assert_eq!(
        single["pricing"],
        json!({ "model": "fixed", "price_msat": 5000 })
    );
    assert_eq!(single["x-turnpike"]["mode"], "per_call");
    assert_eq!(single["x-turnpike"]["any_method"], true);
    assert_eq!(
        single["x-turnpike"]["free_tier"],
        json!({ "calls": 3, "window_secs": 86400 })
    );

    // A service's route is listed under it, most specific first, with its method.
    let bundle = service(&m, "bundle")["resources"].as_array().unwrap();
    assert_eq!(bundle.len(), 2, "{bundle:?}");
    assert_eq!(bundle[0]["path"], "/bundle/write");
    assert_eq!(bundle[0]["method"], "POST");
    assert_eq!(bundle[0]["pricing"]["price_msat"], 2000);
    assert_eq!(bundle[0]["x-turnpike"]["route"], "bundle.write");
    assert_eq!(bundle[1]["x-turnpike"]["mode"], "bundle");
    assert_eq!(bundle[1]["x-turnpike"]["calls_per_payment"], 10);
    assert_eq!(bundle[1]["pricing"]["price_msat"], 10_000);

    let pass = &service(&m, "pass")["resources"][0];
    assert_eq!(pass["x-turnpike"]["mode"], "time_pass");
    assert_eq!(pass["x-turnpike"]["valid_secs"], 3600);

    let quoted = &service(&m, "quoted")["resources"][0];
    assert_eq!(
        quoted["pricing"],
        json!({ "model": "dynamic", "max_price_msat": 50_000 })
    );
    assert_eq!(quoted["x-turnpike"]["mode"], "dynamic_cap");

    // Reading the catalogue reached no upstream, and other paths are still gated.
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 0);
    let gated = reqwest::get(format!("{base}/.well-known/other.json"))
        .await
        .unwrap();
    assert_eq!(gated.status(), 402);
}
