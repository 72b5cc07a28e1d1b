//! The hub's directory end to end (issue 14, item 5): a real `turnpike serve` with `[hub]`,
//! providers' services registered through the admin API with their metadata, `GET /directory`
//! searched and refused, health measured from real calls and from probes of real upstreams
//! (one stopped during the test), two replicas on the real PostgreSQL showing the same health,
//! each provider's `/.well-known/l402.json` and OpenAPI document (validated by
//! `openapi-spec-validator` from PyPI), and the document paths tried in 36 spellings against a
//! paid service.
//!
//! The providers are written straight into the hub's store with a Lightning address that is
//! never asked (their services are free, or only challenged): registration and payouts are
//! tested in `hub_e2e.rs` with a real LNbits.

mod common;
mod hub_harness;

use std::net::SocketAddr;
use std::path::Path;

use serde_json::{Value, json};

use hub_harness::{
    DOMAIN, Hub, provider_in_store, recording_upstream as upstream, start_hub_in_env,
    start_hub_with, until, until_within,
};

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("data/turnpike.db").display())
}

/// `GET /directory?<query>` on the hub's public listener: (status, body, CORS header).
async fn directory(hub: &Hub, query: &str) -> (u16, Value, Option<String>) {
    public_request(
        hub,
        "GET",
        &format!("/directory?{query}"),
        "access-control-allow-origin",
    )
    .await
}

/// `method path` on the hub's public listener: (status, JSON body or null, the `header`).
async fn public_request(
    hub: &Hub,
    method: &str,
    path: &str,
    header: &str,
) -> (u16, Value, Option<String>) {
    let resp = hub
        .http
        .request(
            method.parse().unwrap(),
            format!("http://{}{path}", hub.public),
        )
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let value = resp
        .headers()
        .get(header)
        .map(|v| v.to_str().unwrap().to_owned());
    (status, resp.json().await.unwrap_or(Value::Null), value)
}

/// The ids of the entries a search answers.
async fn ids(hub: &Hub, query: &str) -> Vec<String> {
    let (status, body, _) = directory(hub, query).await;
    assert_eq!(status, 200, "{query}: {body}");
    let entries = body["services"].as_array().unwrap();
    assert_eq!(
        body["total"].as_u64().unwrap() as usize,
        entries.len(),
        "{query}"
    );
    entries
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The entry `id`, once `ready` holds for it (within 15 s).
async fn entry_when(hub: &Hub, id: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    entry_within(15, hub, id, what, ready).await
}

/// The entry `id`, once `ready` holds for it (within `secs`).
async fn entry_within(
    secs: u64,
    hub: &Hub,
    id: &str,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    until_within(secs, &format!("{id}: {what}"), async || {
        let (_, body, _) = directory(hub, "limit=200").await;
        let entries = body["services"].as_array()?.clone();
        entries.into_iter().find(|e| e["id"] == id && ready(e))
    })
    .await
}

fn quote_service(up: SocketAddr) -> Value {
    json!({
        "name": "quote", "path": "/quote", "upstream": format!("http://{up}"), "price_sats": 0,
        "description": "Stock quotes, delayed 15 minutes",
        "tags": ["finance", "stocks"],
        "input_schema": {"type": "object", "properties": {"symbol": {"type": "string"}},
            "required": ["symbol"]},
        "routes": [{"name": "bulk", "path": "/quote/bulk", "method": "POST", "price_sats": 100,
            "description": "Many quotes at once",
            "input_schema": {"type": "object",
                "properties": {"symbols": {"type": "array", "items": {"type": "string"}}}}}],
    })
}

/// A GET of `path` on the public listener with `host`: (status, body text).
async fn get_text(hub: &Hub, host: &str, path: &str) -> (u16, String) {
    let resp = get_on(hub, host, path).await;
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// A GET of `path` on the public listener with `host`.
async fn get_on(hub: &Hub, host: &str, path: &str) -> reqwest::Response {
    hub.http
        .get(format!("http://{}{path}", hub.public))
        .header("host", host)
        .send()
        .await
        .unwrap()
}

/// A GET of `path` exactly as written (no client normalises it: raw HTTP/1.1 over TCP) with
/// `host`: (status, JSON body or null).
async fn raw_get(hub: &Hub, host: &str, path: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(hub.public).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = match head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        true => dechunk(body),
        false => body.to_owned(),
    };
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The payload of a chunked body.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

/// Validates `doc` with `openapi-spec-validator` (the OpenAPI 3.1 schema and its rules).
fn validate_openapi(doc: &Value) {
    let Some(python) = common::test_python("openapi document validation") else {
        return;
    };
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), doc.to_string()).unwrap();
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import json, sys\n\
             from openapi_spec_validator import validate\n\
             from openapi_spec_validator.validation import OpenAPIV31SpecValidator\n\
             validate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator)\n\
             print('valid')",
            file.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.trim() == "valid",
        "openapi-spec-validator refused the document: {}{}",
        said,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_lists_searches_measures_and_documents_providers() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub_with(dir.path(), "hub", 0, "", "probe_interval_secs = 1");
    let (quote_up, quote_seen, _quote_task) = upstream(false).await;
    let (weather_up, _, weather_task) = upstream(true).await;
    let store = sqlite_url(dir.path());
    let alice = provider_in_store(&store, "alice", "Alice Data").await;
    let bob = provider_in_store(&store, "bob", "Bob Weather").await;
    until("the hub knows both providers", async || {
        let a = hub.call(&alice, "GET", "/hub/me", None).await.0 == 200;
        let b = hub.call(&bob, "GET", "/hub/me", None).await.0 == 200;
        (a && b).then_some(())
    })
    .await;

    // Metadata is checked naming the key, nothing is stored on a refusal.
    let bad = |patch: Value| {
        let mut s = quote_service(quote_up);
        s.as_object_mut()
            .unwrap()
            .extend(patch.as_object().unwrap().clone());
        s
    };
    for (patch, field) in [
        (json!({"description": ""}), "description"),
        (json!({"description": "x".repeat(1001)}), "description"),
        (json!({"tags": ["finance", "Stocks"]}), "tags[1]"),
        (json!({"tags": ["a", "a"]}), "tags[1]"),
        (
            json!({"tags": (0..11).map(|i| format!("t{i}")).collect::<Vec<_>>()}),
            "tags",
        ),
        (json!({"input_schema": {"type": "array"}}), "input_schema"),
        (json!({"input_schema": "object"}), "input_schema"),
        (
            json!({"routes": [{"name": "r", "path": "/quote/r", "price_sats": 1,
                "input_schema": {"type": "object", "required": "symbol"}}]}),
            "routes[0].input_schema",
        ),
    ] {
        let (status, body) = hub
            .call(&alice, "POST", "/services", Some(bad(patch)))
            .await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (400, Some(field)),
            "{body}"
        );
    }
    assert_eq!(
        hub.call(&alice, "GET", "/services/quote", None).await.0,
        404
    );

    // Metadata round-trips through the admin API.
    let created = hub.add_service(&alice, quote_service(quote_up)).await;
    let (_, shown) = hub.call(&alice, "GET", "/services/quote", None).await;
    for key in ["description", "tags", "input_schema"] {
        assert_eq!(shown[key], quote_service(quote_up)[key], "{key}");
        assert_eq!(created[key], shown[key], "{key}");
    }
    assert_eq!(shown["routes"][0]["description"], "Many quotes at once");
    let premium = json!({"name": "premium", "path": "/premium", "price_sats": 21,
        "upstream": format!("http://{quote_up}"), "tags": ["finance"]});
    hub.add_service(&alice, premium).await;
    let weather = json!({"name": "weather", "upstream": format!("http://{weather_up}"),
        "price_sats": 5, "time_pass_secs": 3600, "description": "Forecasts",
        "tags": ["weather"]});
    hub.add_service(&bob, weather).await;

    // The listing and each filter.
    let all = until("the directory lists every service", async || {
        let all = ids(&hub, "").await;
        (all.len() == 4).then_some(all)
    })
    .await;
    // By provider, each provider's in matching order (stored services: by name).
    assert_eq!(
        all,
        [
            "alice/premium",
            "alice/quote/bulk",
            "alice/quote",
            "bob/weather"
        ]
    );
    let (_, body, cors) = directory(&hub, "provider=alice&limit=2&offset=1").await;
    assert_eq!(cors.as_deref(), Some("*"));
    assert_eq!(
        (body["total"].clone(), body["offset"].clone()),
        (json!(3), json!(1))
    );
    let entries: Vec<&str> = body["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(entries, ["alice/quote/bulk", "alice/quote"]);
    assert_eq!(
        ids(&hub, "q=STOCK").await,
        ["alice/quote/bulk", "alice/quote"]
    );
    assert_eq!(ids(&hub, "q=bob%20weather").await, ["bob/weather"]);
    assert_eq!(ids(&hub, "q=many%20quotes").await, ["alice/quote/bulk"]);
    assert_eq!(
        ids(&hub, "tag=finance").await,
        ["alice/premium", "alice/quote/bulk", "alice/quote"]
    );
    assert_eq!(ids(&hub, "mode=time_pass").await, ["bob/weather"]);
    assert_eq!(ids(&hub, "provider=bob").await, ["bob/weather"]);
    assert_eq!(ids(&hub, "provider=nobody").await, Vec::<String>::new());
    // premium: 21 sats + 2 % = 21,420 msat (the Lightning address takes msat); bulk 102,000.
    assert_eq!(
        ids(&hub, "max_price_msat=21420").await,
        ["alice/premium", "alice/quote", "bob/weather"]
    );
    assert_eq!(
        ids(&hub, "max_price_msat=21419&tag=finance").await,
        ["alice/quote"]
    );
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("offset=-1", "offset"),
        ("max_price_msat=lots", "max_price_msat"),
        ("mode=cheap", "mode"),
        ("tag=Finance", "tag"),
        ("provider=..%2Fadmin", "provider"),
        ("q=a&q=b", "q"),
        ("sort=price", "sort"),
    ] {
        let (status, body, cors) = directory(&hub, query).await;
        assert_eq!((status, cors.as_deref()), (400, Some("*")), "{query}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{query}");
    }

    // The full entry of a route and of a service.
    let (_, body, _) = directory(&hub, "provider=alice").await;
    let bulk = &body["services"][1];
    assert_eq!(
        (
            &bulk["route"],
            &bulk["method"],
            &bulk["mode"],
            &bulk["amount_msat"]
        ),
        (
            &json!("bulk"),
            &json!("POST"),
            &json!("per_call"),
            &json!(102_000)
        )
    );
    assert_eq!(bulk["description"], "Many quotes at once");
    assert_eq!(bulk["tags"], json!(["finance", "stocks"]));
    assert_eq!(bulk["path"], "/alice/quote/bulk");
    assert_eq!(
        bulk["host_url"],
        format!("https://alice.{DOMAIN}/quote/bulk")
    );
    let quote = &body["services"][2];
    assert_eq!(
        quote["input_schema"],
        quote_service(quote_up)["input_schema"]
    );
    assert_eq!(
        quote["provider"],
        json!({"slug": "alice", "name": "Alice Data", "suspended": false})
    );
    assert_eq!(quote["openapi"], "/alice/.well-known/openapi.json");
    assert_eq!(quote["catalogue"], "/alice/.well-known/l402.json");
    assert_eq!(quote["rails"], json!(["l402"]));

    // Health from real calls: 3 answered 200, 1 answered 500 by the upstream.
    for path in [
        "/alice/quote?symbol=A",
        "/alice/quote?symbol=B",
        "/alice/quote/x",
        "/alice/quote/fail",
    ] {
        let status = hub.get("gw.example", path, None).await.0;
        assert_eq!(
            status,
            if path.contains("fail") { 500 } else { 200 },
            "{path}"
        );
    }
    // A paid call without payment is never forwarded (here 503: the provider's Lightning
    // address is of a domain that does not exist): it counts nowhere.
    assert_eq!(hub.get("gw.example", "/alice/premium", None).await.0, 503);
    let quote = entry_when(&hub, "alice/quote", "4 calls measured", |e| {
        e["health"]["calls_24h"] == 4
    })
    .await;
    assert_eq!(quote["health"]["success_rate"], json!(0.75));
    let median = quote["health"]["median_latency_ms"].as_u64().unwrap();
    assert!(median < 1000, "{median}");
    assert_eq!(quote["health"]["status"], "up");
    let premium = entry_when(&hub, "alice/premium", "probed", |e| {
        e["health"]["checked_at"].is_string()
    })
    .await;
    assert_eq!(
        (
            &premium["health"]["calls_24h"],
            &premium["health"]["success_rate"]
        ),
        (&json!(0), &json!(null))
    );

    // The probe: bob's upstream is up, then stopped: down, and its uptime falls.
    let up = entry_when(&hub, "bob/weather", "up", |e| e["health"]["status"] == "up").await;
    assert_eq!(up["health"]["uptime_pct"], json!(100.0));
    weather_task.abort();
    let down = entry_when(&hub, "bob/weather", "down", |e| {
        e["health"]["status"] == "down"
    })
    .await;
    let uptime = down["health"]["uptime_pct"].as_f64().unwrap();
    assert!(uptime < 100.0 && uptime > 0.0, "{uptime}");
    assert!(
        down["health"]["checked_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    // Suspended: still listed, flagged.
    let (status, body) = hub
        .operator("POST", "/hub/providers/bob/suspend", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let bob_entry = entry_when(&hub, "bob/weather", "suspended", |e| {
        e["provider"]["suspended"] == true
    })
    .await;
    assert_eq!(bob_entry["provider"]["slug"], "bob");

    // Each provider's catalogue: by prefix and by host, only its services.
    let (status, text) = get_text(&hub, "gw.example", "/alice/.well-known/l402.json").await;
    assert_eq!(status, 200, "{text}");
    let by_prefix: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        by_prefix["provider"],
        json!({"name": "Alice Data", "slug": "alice"})
    );
    let names: Vec<&str> = by_prefix["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["premium", "quote"]);
    let first = &by_prefix["services"][1]["resources"][0];
    assert_eq!(first["path"], "/alice/quote/bulk");
    assert_eq!(first["description"], "Many quotes at once");
    assert_eq!(first["x-turnpike"]["amount_msat"], json!(102_000));
    let (status, text) = get_text(&hub, &format!("alice.{DOMAIN}"), "/.well-known/l402.json").await;
    assert_eq!(status, 200);
    let by_host: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(by_host["services"][1]["resources"][1]["path"], "/quote");
    assert_eq!(by_host["services"].as_array().unwrap().len(), 2);
    let (status, _) = get_text(&hub, "gw.example", "/nobody/.well-known/l402.json").await;
    assert_eq!(status, 404);
    // The hub's own catalogue lists each provider's service once, under its prefix.
    let (_, root) = get_text(&hub, "gw.example", "/.well-known/l402.json").await;
    let root: Value = serde_json::from_str(&root).unwrap();
    let mut paths: Vec<&str> = root["services"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["resources"].as_array().unwrap())
        .map(|r| r["path"].as_str().unwrap_or("(any)"))
        .collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/alice/premium",
            "/alice/quote",
            "/alice/quote/bulk",
            "/bob"
        ]
    );

    // Each provider's OpenAPI document, by prefix and by host, valid OpenAPI 3.1.
    let (status, text) = get_text(&hub, "gw.example", "/alice/.well-known/openapi.json").await;
    assert_eq!(status, 200, "{text}");
    let doc: Value = serde_json::from_str(&text).unwrap();
    let (_, same) = get_text(
        &hub,
        &format!("ALICE.{DOMAIN}:80"),
        "/.well-known/openapi.json",
    )
    .await;
    assert_eq!(serde_json::from_str::<Value>(&same).unwrap(), doc);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["servers"][1]["url"], "/alice");
    let bulk_op = &doc["paths"]["/quote/bulk"]["post"];
    assert_eq!(bulk_op["x-turnpike"]["amount_msat"], json!(102_000));
    assert_eq!(bulk_op["x-turnpike"]["price_msat"], json!(100_000));
    assert_eq!(
        bulk_op["requestBody"]["content"]["application/json"]["schema"]["properties"]["symbols"]["type"],
        "array"
    );
    let get_quote = &doc["paths"]["/quote"]["get"];
    assert_eq!(get_quote["parameters"][0]["name"], "symbol");
    assert_eq!(get_quote["parameters"][0]["required"], true);
    assert_eq!(get_quote["x-402"]["amount"], json!(0));
    assert_eq!(
        doc["paths"]["/premium"]["post"]["x-turnpike"]["amount_msat"],
        json!(21_420)
    );
    assert!(doc["paths"].get("/weather").is_none());
    validate_openapi(&doc);
    let (_, bob_text) = get_text(&hub, "gw.example", "/bob/.well-known/openapi.json").await;
    validate_openapi(&serde_json::from_str(&bob_text).unwrap());
    assert_eq!(
        get_text(&hub, "gw.example", "/.well-known/openapi.json")
            .await
            .0,
        404
    );

    // Nothing public tells where a provider's upstream is.
    for (host, path) in [
        ("gw.example", "/directory?limit=200"),
        ("gw.example", "/.well-known/l402.json"),
        ("gw.example", "/alice/.well-known/l402.json"),
        ("gw.example", "/alice/.well-known/openapi.json"),
    ] {
        let (status, text) = get_text(&hub, host, path).await;
        assert_eq!(status, 200, "{path}");
        for secret in [quote_up.to_string(), weather_up.to_string()] {
            assert!(!text.contains(&secret), "{path} shows an upstream");
        }
    }
    // None of the documents went upstream: it saw the 4 calls, and the probes of `/`.
    let seen = quote_seen.lock().unwrap().clone();
    let calls: Vec<&String> = seen.iter().filter(|p| p.as_str() != "/").collect();
    assert_eq!(
        calls,
        [
            "/quote?symbol=A",
            "/quote?symbol=B",
            "/quote/x",
            "/quote/fail"
        ]
    );
}

/// A hub without probes, with the provider alice (known to it): the hub and alice's token.
async fn hub_with_alice(dir: &Path) -> (Hub, String) {
    hub_with_alice_in(dir, "probe_interval_secs = 0", &[]).await
}

/// [`hub_with_alice`] with `[hub]` keys `extra` and the process's environment `envs`.
async fn hub_with_alice_in(dir: &Path, extra: &str, envs: &[(&str, &str)]) -> (Hub, String) {
    let hub = start_hub_in_env(dir, "hub", 0, "", extra, envs);
    let alice = provider_in_store(&sqlite_url(dir), "alice", "Alice Data").await;
    until("the hub knows alice", async || {
        (hub.call(&alice, "GET", "/hub/me", None).await.0 == 200).then_some(())
    })
    .await;
    (hub, alice)
}

/// A provider whose service covers every path (`/`, paid): the document paths in 36
/// spellings are each either the hub's document (only the exact spellings) or answered as the
/// paid service itself is without payment (the pipeline matched and gated them; here 503, no
/// invoice: the provider's Lightning address is of a domain that does not exist), or refused
/// as a bad path; the upstream is never reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_paths_are_no_way_around_payment() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, alice) = hub_with_alice(dir.path()).await;
    let (up, seen, _task) = upstream(false).await;
    let all = json!({"name": "all", "upstream": format!("http://{up}"), "price_sats": 21});
    hub.add_service(&alice, all).await;
    let paid = until("alice's service is matched", async || {
        let (status, body) = hub.get("gw.example", "/alice/x", None).await;
        (status != 404).then_some((status, body["error"]["code"].clone()))
    })
    .await;
    assert_eq!(paid, (503, json!("backend_unavailable")));
    let prefixes = [
        "/alice",
        "/%61lice",
        "//alice",
        "/x/../alice",
        "/ALICE",
        "/alice;p=1",
    ];
    let documents = [
        "/.well-known/openapi.json",
        "/.well-known/l402.json",
        "/%2Ewell-known/openapi.json",
        "/.well-known/./openapi.json",
        "/.well-known//l402.json",
        "/.WELL-KNOWN/openapi.json",
    ];
    let mut served_docs = Vec::new();
    let mut gated = 0;
    for prefix in prefixes {
        for doc in documents {
            let path = format!("{prefix}{doc}");
            let (status, body) = raw_get(&hub, "gw.example", &path).await;
            if status == 200 {
                assert!(
                    body.get("openapi").is_some() || body.get("version").is_some(),
                    "{path}"
                );
                served_docs.push(path);
            } else {
                assert_eq!(
                    (status, body["error"]["code"].clone()),
                    paid,
                    "{path}: {body}"
                );
                gated += 1;
            }
        }
    }
    assert_eq!(
        served_docs,
        [
            "/alice/.well-known/openapi.json",
            "/alice/.well-known/l402.json"
        ]
    );
    assert_eq!(gated, 34);
    // By host: only the exact spellings are the documents.
    let host = format!("alice.{DOMAIN}");
    for doc in documents {
        let (status, body) = raw_get(&hub, &host, doc).await;
        match doc == "/.well-known/openapi.json" || doc == "/.well-known/l402.json" {
            true => assert_eq!(status, 200, "{doc}"),
            false => assert_eq!((status, body["error"]["code"].clone()), paid, "{doc}"),
        }
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );
}

/// Two replicas on one PostgreSQL: calls through each add up, and both show the same health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_postgres_show_the_same_health() {
    let Some((admin_url, url)) = common::pg_database().await else {
        return;
    };
    let (up, _, _task) = upstream(false).await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("[store]\nurl = \"{url}\"");
    let a = start_hub_with(dir.path(), "a", 0, &store, "probe_interval_secs = 1");
    let b = start_hub_with(dir.path(), "b", 0, &store, "probe_interval_secs = 1");
    let alice = provider_in_store(&url, "alice", "Alice Data").await;
    until("B knows alice", async || {
        (b.call(&alice, "GET", "/hub/me", None).await.0 == 200).then_some(())
    })
    .await;
    a.add_service(&alice, quote_service(up)).await;
    until("B serves alice's service", async || {
        (b.get("gw.example", "/alice/quote", None).await.0 == 200).then_some(())
    })
    .await;
    for path in ["/alice/quote", "/alice/quote/fail"] {
        a.get("gw.example", path, None).await;
    }
    b.get("gw.example", "/alice/quote/fail", None).await;
    // B's first call (above) plus these three: 4 calls, 2 answered 500.
    let on_a = entry_when(&a, "alice/quote", "4 calls on A", |e| {
        e["health"]["calls_24h"] == 4 && e["health"]["status"] == "up"
    })
    .await;
    let on_b = entry_when(&b, "alice/quote", "4 calls on B", |e| {
        e["health"]["calls_24h"] == 4 && e["health"]["status"] == "up"
    })
    .await;
    assert_eq!(on_a["health"]["success_rate"], json!(0.5));
    assert_eq!(on_b["health"]["success_rate"], json!(0.5));
    assert_eq!(
        on_a["health"]["median_latency_ms"],
        on_b["health"]["median_latency_ms"]
    );
    drop((a, b));
    common::drop_pg_database(&admin_url, &url).await;
}

/// An upstream that never answers within the probe's 10 s is down; probe rounds wait for the
/// one before (probes every second, yet one at a time: at most one probe per 10 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_down_and_probes_do_not_pile_up() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let asked = std::sync::Arc::new(AtomicU64::new(0));
    let counter = asked.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            "late"
        }
    });
    let slow = common::spawn_app(app);
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub_with(dir.path(), "hub", 0, "", "probe_interval_secs = 1");
    let alice = provider_in_store(&sqlite_url(dir.path()), "alice", "Alice Data").await;
    until("the hub knows alice", async || {
        (hub.call(&alice, "GET", "/hub/me", None).await.0 == 200).then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    let svc = json!({"name": "slow", "upstream": format!("http://{slow}"), "price_sats": 0});
    hub.add_service(&alice, svc).await;
    let down = entry_within(
        40,
        &hub,
        "alice/slow",
        "down after the probe timed out",
        |e| e["health"]["status"] == "down",
    )
    .await;
    assert_eq!(down["health"]["uptime_pct"], json!(0.0));
    let waited = started.elapsed().as_secs();
    assert!(
        waited >= 10,
        "down after {waited} s: before the 10 s timeout"
    );
    let probes = asked.load(Ordering::SeqCst);
    assert!(
        probes <= waited / 10 + 1,
        "{probes} probes in {waited} s: they piled up"
    );
}

/// `/directory` answers from memory, yet counts against `[rate_limits] per_ip` like any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_is_rate_limited_per_client() {
    let dir = tempfile::tempdir().unwrap();
    let limit =
        "probe_interval_secs = 0\n[rate_limits.per_ip]\nrequests = 1\nper_secs = 3600\nburst = 3";
    let hub = start_hub_with(dir.path(), "hub", 0, "", limit);
    for _ in 0..3 {
        assert_eq!(directory(&hub, "").await.0, 200);
    }
    let resp = hub
        .http
        .get(format!("http://{}/directory", hub.public))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
}

/// The paths the hub answers itself refuse another method with a JSON error, like every other
/// refusal (never an empty body), and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_paths_refuse_other_methods_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub_with(dir.path(), "hub", 0, "", "probe_interval_secs = 0");
    for (method, path) in [
        ("POST", "/directory"),
        ("DELETE", "/directory"),
        ("PUT", "/alice/.well-known/l402.json"),
        ("POST", "/alice/.well-known/openapi.json"),
        ("POST", "/.well-known/openapi.json"),
        ("POST", "/.well-known/l402.json"),
        ("POST", "/_turnpike/hub/directory.js"),
    ] {
        let (status, body, allow) = public_request(&hub, method, path, "allow").await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (405, &json!("method_not_allowed")),
            "{method} {path}: {body}"
        );
        assert!(allow.is_some_and(|a| a.contains("GET")), "{method} {path}");
    }
    assert_eq!(directory(&hub, "").await.0, 200);
}

/// A page a provider serves through the hub runs in an opaque origin (`Content-Security-Policy:
/// sandbox` without `allow-same-origin`), under its prefix on the hub's own origin and on its
/// host alike: its script cannot open and read the hub's registration page (payout secrets, the
/// new provider's token), the catalogue or another provider's pages. The operator's own
/// services are answered as their upstream gave them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_pages_run_sandboxed() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, alice) = hub_with_alice(dir.path()).await;
    let (up, _, _task) = upstream(false).await;
    let free = |name: &str| {
        json!({"name": name, "path": format!("/{name}"), "upstream": format!("http://{up}"),
            "price_sats": 0})
    };
    hub.add_service(&alice, free("page")).await;
    let (status, body) = hub.operator("POST", "/services", Some(free("own"))).await;
    assert_eq!(status, 201, "{body}");
    let policies = async |host: &str, path: &str| {
        let resp = get_on(&hub, host, path).await;
        let mut csp = Vec::new();
        for v in resp.headers().get_all("content-security-policy") {
            csp.push(String::from_utf8_lossy(v.as_bytes()).into_owned());
        }
        (resp.status().as_u16(), csp)
    };
    let alice_host = format!("alice.{DOMAIN}");
    for (host, path) in [
        ("gw.example", "/alice/page"),
        (alice_host.as_str(), "/page"),
    ] {
        let (status, csp) = policies(host, path).await;
        assert_eq!(status, 200, "{host}{path}");
        assert_eq!(csp.len(), 1, "{host}{path}: {csp:?}");
        assert!(csp[0].starts_with("sandbox "), "{csp:?}");
        assert!(!csp[0].contains("allow-same-origin"), "{csp:?}");
    }
    assert_eq!(policies("gw.example", "/own").await, (200, vec![]));
}

/// The probe goes straight to the upstream, like the calls it stands for, never through a
/// proxy named in the environment (`HTTP_PROXY`, `ALL_PROXY`…): such a proxy would resolve the
/// upstream's name again, past the SSRF guard's check when connecting, and the probe would
/// measure the proxy. Here the proxy accepts and never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_ignores_proxies_from_the_environment() {
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = reached.clone();
    let _proxy_task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = proxy.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream);
        }
    });
    let envs: Vec<(&str, &str)> = ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"]
        .into_iter()
        .map(|k| (k, proxy_url.as_str()))
        .chain([("NO_PROXY", ""), ("no_proxy", "")])
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (hub, alice) = hub_with_alice_in(dir.path(), "probe_interval_secs = 1", &envs).await;
    let (up, _, _task) = upstream(false).await;
    let svc = json!({"name": "quote", "upstream": format!("http://{up}"), "price_sats": 0});
    hub.add_service(&alice, svc).await;
    entry_when(&hub, "alice/quote", "probed up", |e| {
        e["health"]["status"] == "up"
    })
    .await;
    assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0);
}
