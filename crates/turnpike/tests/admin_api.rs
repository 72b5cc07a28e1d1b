//! The admin API and CLI against real `turnpike serve` processes over loopback HTTP: services
//! added at runtime charge at once and survive a restart (SQLite file); bad input is refused
//! naming the key and changes nothing; tokens, payments and revocation (a token already in the
//! verified memo included); and two replicas on PostgreSQL seeing each other's changes.
//!
//! PostgreSQL tests use `TURNPIKE_TEST_POSTGRES_URL` (a fresh database per test); without it they
//! are skipped with a message, unless `TURNPIKE_REQUIRE_POSTGRES=1`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use turnpike_l402::credential::Credential;
use turnpike_l402::identifier::Identifier;
use turnpike_l402::macaroon::Macaroon;
use turnpike_l402::{Preimage, TokenId};

use common::Running;

const BIN: &str = env!("CARGO_BIN_EXE_turnpike");

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One `turnpike serve` with its public and admin addresses.
struct Gw {
    process: Running,
    public: SocketAddr,
    admin: SocketAddr,
    token_file: PathBuf,
}

impl Gw {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    fn api(&self, path: &str) -> String {
        format!("http://{}/api/v1{path}", self.admin)
    }

    fn pid(&self) -> u32 {
        self.process.0.id()
    }

    fn token(&self) -> String {
        std::fs::read_to_string(&self.token_file)
            .unwrap()
            .trim()
            .to_owned()
    }
}

/// The gateway config (file services: `file` at /file, 1 sat) on `store_url`.
fn config(data_dir: &Path, store_url: &str, up: SocketAddr) -> String {
    format!(
        r#"data_dir = "{}"
[rate_limits]
challenges_per_ip = {{ requests = 0, per_secs = 1, burst = 1 }}
[store]
url = "{store_url}"
[backend]
kind = "dev"
[[services]]
name = "file"
path = "/file"
upstream = "http://{up}"
price_sats = 1
calls_per_payment = 5
"#,
        data_dir.display()
    )
}

/// Starts a gateway on fresh ports with `config`; waits until both listeners answer.
fn start(dir: &Path, name: &str, config: &str) -> Gw {
    let (public, admin) = (free_port(), free_port());
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "listen = \"{public}\"\n{config}[admin]\nlisten = \"{admin}\"\nsync_interval_secs = 1\n"
        ),
    )
    .unwrap();
    let log = dir.join(format!("{name}.log"));
    let process = common::serve_with_admin(&path, &log, public, admin);
    let data_dir = config
        .lines()
        .find_map(|l| l.strip_prefix("data_dir = \""))
        .map(|d| PathBuf::from(d.trim_end_matches('"')))
        .unwrap();
    Gw {
        process,
        public,
        admin,
        token_file: data_dir.join("admin.token"),
    }
}

fn http() -> reqwest::Client {
    turnpike_lightning::ensure_crypto_provider();
    reqwest::Client::new()
}

/// An admin call: (status, JSON body or null).
async fn call(gw: &Gw, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    call_as(gw, method, path, body, Some(&gw.token())).await
}

async fn call_as(
    gw: &Gw,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut req = http().request(method.parse().unwrap(), gw.api(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn status(url: &str, auth: Option<&str>) -> u16 {
    let mut req = http().get(url);
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    req.send().await.unwrap().status().as_u16()
}

/// Pays a 402 of `path` on `gw` with the dev backend: the credential and the token id.
async fn buy(gw: &Gw, path: &str) -> (String, String) {
    let http = http();
    let resp = http.get(gw.url(path)).send().await.unwrap();
    assert_eq!(resp.status(), 402);
    let body: Value = resp.json().await.unwrap();
    let paid: Value = http
        .post(gw.url("/_turnpike/dev/pay"))
        .json(&json!({ "invoice": body["invoice"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let preimage: Preimage = paid["preimage"].as_str().unwrap().parse().unwrap();
    let macaroon = Macaroon::from_base64(body["macaroon"].as_str().unwrap()).unwrap();
    let token_id = Identifier::decode(macaroon.identifier())
        .unwrap()
        .token_id
        .to_hex();
    (
        Credential { macaroon, preimage }.authorization_value(),
        token_id,
    )
}

/// Waits up to 10 s for `check` to hold.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn service_names(list: &Value) -> Vec<(String, String)> {
    list["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_services_charge_at_once_are_validated_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (up, _) = common::counting_upstream();
    let data = dir.path().join("data");
    let db = format!("sqlite://{}", dir.path().join("turnpike.db").display());
    let conf = config(&data, &db, up);
    let gw = start(dir.path(), "gw", &conf);
    let token_mode = std::fs::metadata(&gw.token_file).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&token_mode.permissions()) & 0o777,
        0o600
    );

    let added = format!(
        r#"{{"name":"rt","path":"/rt","upstream":"http://{up}","price_sats":3,
            "headers":{{"X-Api-Key":"s3cret"}}}}"#
    );
    let (code, body) = call(&gw, "POST", "/services", Some(&added)).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["source"], "admin");
    assert_eq!(body["headers"]["X-Api-Key"], json!({ "redacted": true }));
    assert!(!body.to_string().contains("s3cret"));
    assert_eq!(status(&gw.url("/rt/x"), None).await, 402);

    // Every documented private route, over real HTTP, without the token or with a wrong one:
    // 401 and nothing changes.
    let doc: Value = serde_json::from_str(turnpike_admin::OPENAPI).unwrap();
    let public = [
        "/",
        "/assets/app.js",
        "/assets/dom.js",
        "/assets/style.css",
        "/api/v1/openapi.json",
    ];
    let victim = TokenId::random().to_hex();
    let mut tried = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str())
                || public.contains(&path.as_str())
            {
                continue;
            }
            let url = format!("http://{}{}", gw.admin, path)
                .replace("{name}", "rt")
                .replace("{token_id}", &victim);
            for auth in [None, Some("Bearer wrong"), Some("Basic cnQ6cnQ=")] {
                let mut req = http()
                    .request(method.to_uppercase().parse().unwrap(), &url)
                    .header("content-type", "application/json")
                    .body(r#"{"name":"rt","upstream":"http://127.0.0.1:1","price_sats":0}"#);
                if let Some(auth) = auth {
                    req = req.header("authorization", auth);
                }
                let resp = req.send().await.unwrap();
                assert_eq!(resp.status(), 401, "{method} {url} with {auth:?}");
                let body: Value = resp.json().await.unwrap();
                assert_eq!(body["error"]["code"], "unauthorized");
                tried += 1;
            }
        }
    }
    assert!(tried >= 30, "{tried}");
    // In the database: no revocation, and still only the one change (the service added).
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let (revoked, seq): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM revocations), (SELECT seq FROM admin_sequence)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((revoked, seq), (0, 1));
    pool.close().await;
    for public in public {
        let resp = http()
            .get(format!("http://{}{public}", gw.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{public}");
    }

    // Refused input names the key and changes nothing.
    let bad: [(&str, &str, Option<&str>, &str); 10] = [
        (
            "POST",
            "/services",
            Some(r#"{"name":"b","upstream":"http://x","price_sats":"x"}"#),
            "price_sats",
        ),
        (
            "POST",
            "/services",
            Some(r#"{"name":"b","upstream":"http://x","price_sats":1,"path":"no-slash"}"#),
            "path",
        ),
        (
            "POST",
            "/services",
            Some(r#"{"name":"b","upstream":"http://x","price_sats":1,"bogus":1}"#),
            "bogus",
        ),
        (
            "POST",
            "/services",
            Some(r#"{"upstream":"http://x","price_sats":1}"#),
            "name",
        ),
        (
            "POST",
            "/services",
            Some(r#"{"name":"b c","upstream":"http://x","price_sats":1}"#),
            "name",
        ),
        (
            "POST",
            "/services",
            Some(r#"{"name":"b","upstream":"ftp://x","price_sats":1}"#),
            "upstream",
        ),
        ("PATCH", "/services/rt", Some(r#"{"path":"nope"}"#), "path"),
        (
            "PATCH",
            "/services/rt",
            Some(r#"{"headers":{"Host":"evil"}}"#),
            "headers.Host",
        ),
        (
            "PUT",
            "/services/rt",
            Some(r#"{"name":"other","upstream":"http://x","price_sats":1}"#),
            "name",
        ),
        ("POST", "/tokens/xyz/revoke", None, "token_id"),
    ];
    for (method, path, body, field) in bad {
        let (code, answer) = call(&gw, method, path, body).await;
        assert_eq!(code, 400, "{method} {path} {body:?}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_field", "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    let (code, answer) = call(&gw, "POST", "/services", Some("{not json")).await;
    assert_eq!(
        (code, answer["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (code, answer) = call(&gw, "POST", "/services", Some(&added)).await;
    assert_eq!(
        (code, answer["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    let (code, _) = call(&gw, "DELETE", "/services/missing", None).await;
    assert_eq!(code, 404);
    // Without the token (or with a wrong one): 401, nothing changes.
    for token in [None, Some("wrong-token-wrong-token")] {
        let (code, _) = call_as(&gw, "DELETE", "/services/rt", None, token).await;
        assert_eq!(code, 401);
        let (code, _) = call_as(
            &gw,
            "PATCH",
            "/services/rt",
            Some(r#"{"price_sats":9}"#),
            token,
        )
        .await;
        assert_eq!(code, 401);
    }
    let (_, list) = call(&gw, "GET", "/services", None).await;
    assert_eq!(
        service_names(&list),
        [
            ("file".into(), "config".into()),
            ("rt".into(), "admin".into())
        ]
    );
    let (_, rt) = call(&gw, "GET", "/services/rt", None).await;
    assert_eq!(
        (rt["price_sats"].as_u64(), rt["path"].as_str()),
        (Some(3), Some("/rt"))
    );

    // A patch (the redacted header sent back keeps its value), a tombstone over a file service.
    let (code, rt) = call(
        &gw,
        "PATCH",
        "/services/rt",
        Some(r#"{"price_sats":4,"calls_per_payment":2}"#),
    )
    .await;
    assert_eq!((code, rt["price_sats"].as_u64()), (200, Some(4)), "{rt}");
    let (code, rt) = call(&gw, "PUT", "/services/rt", Some(&rt.to_string())).await;
    assert_eq!(code, 200, "{rt}");
    assert_eq!(call(&gw, "DELETE", "/services/file", None).await.0, 204);
    assert_eq!(status(&gw.url("/file"), None).await, 404);

    // SIGHUP reloads the file's services under the stored ones: a new file service appears,
    // the stored one and the tombstone stay.
    let reloaded = format!(
        "{conf}[[services]]\nname = \"late\"\npath = \"/late\"\nupstream = \"http://{up}\"\nprice_sats = 1\n"
    );
    let toml = dir.path().join("gw.toml");
    let text = std::fs::read_to_string(&toml)
        .unwrap()
        .replace(&conf, &reloaded);
    std::fs::write(&toml, text).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    eventually("SIGHUP adds the file's new service", async || {
        status(&gw.url("/late"), None).await == 402
    })
    .await;
    assert_eq!(status(&gw.url("/rt"), None).await, 402);
    assert_eq!(status(&gw.url("/file"), None).await, 404);
    drop(gw);

    // After a restart on the same SQLite file: the same services in force.
    let gw = start(dir.path(), "gw", &conf);
    assert_eq!(status(&gw.url("/rt"), None).await, 402);
    assert_eq!(status(&gw.url("/file"), None).await, 404);
    let (_, list) = call(&gw, "GET", "/services", None).await;
    assert_eq!(service_names(&list), [("rt".into(), "admin".into())]);
    let (_, rt) = call(&gw, "GET", "/services/rt", None).await;
    assert_eq!(rt["calls_per_payment"], 2);
    // The stored inline secret is kept (and still never shown).
    assert_eq!(rt["headers"]["X-Api-Key"], json!({ "redacted": true }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_payments_revocation_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (up, served) = common::counting_upstream();
    let data = dir.path().join("data");
    let db = format!("sqlite://{}", dir.path().join("turnpike.db").display());
    let conf = format!(
        "{}[[services]]\nname = \"pass\"\npath = \"/pass\"\nupstream = \"http://{up}\"\nprice_sats = 2\ntime_pass_secs = 3600\n",
        config(&data, &db, up)
    );
    let gw = start(dir.path(), "gw", &conf);

    // A bundle used twice (the second time from the verified memo), a time pass used twice.
    let (bundle, bundle_id) = buy(&gw, "/file").await;
    assert_eq!(status(&gw.url("/file"), Some(&bundle)).await, 200);
    assert_eq!(status(&gw.url("/file"), Some(&bundle)).await, 200);
    let (pass, pass_id) = buy(&gw, "/pass").await;
    assert_eq!(status(&gw.url("/pass"), Some(&pass)).await, 200);
    assert_eq!(status(&gw.url("/pass"), Some(&pass)).await, 200);
    let (_unpaid, unpaid_id) = buy(&gw, "/file").await;

    let (code, list) = call(&gw, "GET", "/tokens?paid=true", None).await;
    assert_eq!(code, 200, "{list}");
    let find = |list: &Value, id: &str| {
        list["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["token_id"] == id)
            .cloned()
    };
    let b = find(&list, &bundle_id).expect("the bundle is listed as paid");
    assert_eq!(
        (b["calls_used"].as_u64(), b["calls_total"].as_u64()),
        (Some(2), Some(5))
    );
    assert_eq!(
        (b["amount_msat"].as_u64(), b["amount_sats"].as_u64()),
        (Some(1000), Some(1))
    );
    assert!(b["first_used"].as_u64().is_some() && b["revoked"] == false);
    assert!(find(&list, &unpaid_id).is_none());
    eventually("the time pass is listed as paid", async || {
        let (_, list) = call(&gw, "GET", "/tokens?paid=true&service=pass", None).await;
        find(&list, &pass_id)
            .is_some_and(|t| t["calls_total"].is_null() && t["first_used"].is_u64())
    })
    .await;
    let (_, unpaid) = call(&gw, "GET", "/tokens?paid=false", None).await;
    assert!(find(&unpaid, &unpaid_id).is_some());
    let (_, page) = call(&gw, "GET", "/tokens?limit=1", None).await;
    let next = page["next"].as_str().expect("a next page").to_owned();
    let (_, page2) = call(&gw, "GET", &format!("/tokens?limit=1&before={next}"), None).await;
    assert_ne!(
        page["tokens"][0]["token_id"],
        page2["tokens"][0]["token_id"]
    );
    for bad in [
        "/tokens?paid=maybe",
        "/tokens?limit=0",
        "/tokens?before=x",
        "/tokens?colour=red",
        "/payments?limit=-1",
    ] {
        assert_eq!(call(&gw, "GET", bad, None).await.0, 400, "{bad}");
    }
    let (_, payments) = call(&gw, "GET", "/payments", None).await;
    let paid: Vec<&str> = payments["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["token_id"].as_str().unwrap())
        .collect();
    assert!(
        paid.contains(&bundle_id.as_str()) && paid.contains(&pass_id.as_str()),
        "{payments}"
    );
    assert!(!paid.contains(&unpaid_id.as_str()));

    // The CLI: list, add, rm, revoke.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args([
                "admin",
                "--url",
                &format!("http://{}", gw.admin),
                "--token-file",
            ])
            .arg(&gw.token_file)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = cli(&["services", "list"]);
    assert!(
        ok && out.contains("file") && out.contains("pass") && out.contains("SOURCE"),
        "{out}"
    );
    let upstream = format!("http://{up}");
    let (ok, out) = cli(&[
        "services",
        "add",
        "--name",
        "cli",
        "--upstream",
        &upstream,
        "--price-sats",
        "2",
        "--path",
        "/cli",
    ]);
    assert!(ok, "{out}");
    assert_eq!(status(&gw.url("/cli"), None).await, 402);
    let (ok, out) = cli(&["services", "set", "cli", "path=no-slash"]);
    assert!(!ok && out.contains("field path"), "{out}");
    let (ok, out) = cli(&["services", "set", "cli", "price_sats=7"]);
    assert!(ok && out.contains("\"price_sats\": 7"), "{out}");
    let file = dir.path().join("svc.toml");
    std::fs::write(&file, format!("[[services]]\nname = \"tomled\"\npath = \"/tomled\"\nupstream = \"{upstream}\"\nprice_sats = 1\n")).unwrap();
    let (ok, out) = cli(&["services", "add", "--file", file.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert_eq!(status(&gw.url("/tomled"), None).await, 402);
    let (ok, out) = cli(&["services", "rm", "cli"]);
    assert!(ok, "{out}");
    assert_eq!(status(&gw.url("/cli"), None).await, 404);
    let (ok, out) = cli(&["--json", "tokens", "list", "--paid", "true"]);
    assert!(ok, "{out}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert!(find(&listed, &bundle_id).is_some());
    let (ok, out) = cli(&["health"]);
    assert!(
        ok && out.contains("store: ok") && out.contains("backend (dev): ok"),
        "{out}"
    );
    let (ok, out) = cli(&["tokens", "revoke", &bundle_id]);
    assert!(ok && out.contains(&bundle_id), "{out}");

    // Revoked: refused at once, though the credential is in the verified memo; nothing served.
    let before = served.load(std::sync::atomic::Ordering::SeqCst);
    let resp = http()
        .get(gw.url("/file"))
        .header("authorization", &bundle)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "token_revoked");
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), before);
    let (_, list) = call(&gw, "GET", "/tokens", None).await;
    assert_eq!(find(&list, &bundle_id).unwrap()["revoked"], true);
    // Revoking again is fine; the time pass still works.
    assert_eq!(
        call(&gw, "POST", &format!("/tokens/{bundle_id}/revoke"), None)
            .await
            .0,
        200
    );
    assert_eq!(status(&gw.url("/pass"), Some(&pass)).await, 200);
    // A token revoked before it is ever presented is refused too (after a restart as well).
    drop(gw);
    let gw = start(dir.path(), "gw", &conf);
    assert_eq!(status(&gw.url("/file"), Some(&bundle)).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_postgres_see_each_others_changes_and_revocations() {
    let Some((admin_url, url)) = common::pg_database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (up, _) = common::counting_upstream();
    let conf = config(&dir.path().join("data"), &url, up);
    let a = start(dir.path(), "a", &conf);
    let b = start(dir.path(), "b", &conf);

    // A service added on A: 402 on A at once, on B within seconds.
    let added = format!(
        r#"{{"name":"rt","path":"/rt","upstream":"http://{up}","price_sats":2,"calls_per_payment":10}}"#
    );
    assert_eq!(call(&a, "POST", "/services", Some(&added)).await.0, 201);
    assert_eq!(status(&a.url("/rt"), None).await, 402);
    eventually("B serves the service added on A", async || {
        status(&b.url("/rt"), None).await == 402
    })
    .await;
    let (_, on_b) = call(&b, "GET", "/services/rt", None).await;
    assert_eq!(on_b["source"], "admin");

    // A token bought on B, in both replicas' verified memos, revoked on A: 401 on both.
    let (auth, token_id) = buy(&b, "/rt").await;
    for gw in [&a, &b, &a, &b] {
        assert_eq!(status(&gw.url("/rt"), Some(&auth)).await, 200);
    }
    assert_eq!(
        call(&a, "POST", &format!("/tokens/{token_id}/revoke"), None)
            .await
            .0,
        200
    );
    assert_eq!(status(&a.url("/rt"), Some(&auth)).await, 401);
    eventually("B refuses the token revoked on A", async || {
        status(&b.url("/rt"), Some(&auth)).await == 401
    })
    .await;

    // A file service deleted on B disappears from A; a change on B reaches A.
    assert_eq!(call(&b, "DELETE", "/services/file", None).await.0, 204);
    eventually("A hides the file service deleted on B", async || {
        status(&a.url("/file"), None).await == 404
    })
    .await;
    assert_eq!(
        call(&b, "PATCH", "/services/rt", Some(r#"{"price_sats":6}"#))
            .await
            .0,
        200
    );
    eventually("A sees B's new price", async || {
        call(&a, "GET", "/services/rt", None).await.1["price_sats"] == 6
    })
    .await;
    drop((a, b));
    common::drop_pg_database(&admin_url, &url).await;
}

/// The value of the sample `name{labels}` in Prometheus text, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `/metrics` and `/api/v1/stats` over HTTP on the admin listener: the counters and the daily
/// totals move by exactly the calls made; bad query parameters are refused naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_stats_are_served_on_the_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (up, _served) = common::counting_upstream();
    let db = format!("sqlite://{}", dir.path().join("turnpike.db").display());
    let gw = start(dir.path(), "gw", &config(&dir.path().join("data"), &db, up));

    // Three challenges, two of them paid; the first token used three times.
    let (first, _) = buy(&gw, "/file").await;
    let (second, _) = buy(&gw, "/file").await;
    assert_eq!(status(&gw.url("/file"), None).await, 402);
    for _ in 0..3 {
        assert_eq!(status(&gw.url("/file"), Some(&first)).await, 200);
    }
    assert_eq!(status(&gw.url("/file"), Some(&second)).await, 200);

    let metrics = format!("http://{}/metrics", gw.admin);
    assert_eq!(status(&metrics, None).await, 401);
    let resp = http()
        .get(&metrics)
        .bearer_auth(gw.token())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = resp.text().await.unwrap();
    let of = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series}:\n{text}"));
    assert_eq!(of("turnpike_challenges_total{service=\"file\"}"), 3.0);
    assert_eq!(of("turnpike_payments_total{service=\"file\"}"), 2.0);
    assert_eq!(of("turnpike_earned_msat_total{service=\"file\"}"), 2000.0);
    assert_eq!(of("turnpike_calls_served_total{service=\"file\"}"), 4.0);

    // The stats flush what this replica counted before answering.
    let (code, stats) = call(&gw, "GET", "/stats?service=file", None).await;
    assert_eq!(code, 200, "{stats}");
    let totals = &stats["totals"];
    assert_eq!(
        (
            totals["challenges"].as_u64(),
            totals["payments"].as_u64(),
            totals["earned_msat"].as_u64(),
            totals["earned_sats"].as_u64(),
            totals["calls_served"].as_u64(),
        ),
        (Some(3), Some(2), Some(2000), Some(2), Some(4)),
        "{stats}"
    );
    assert_eq!(stats["days"].as_array().unwrap().len(), 1, "{stats}");
    let (_, other) = call(&gw, "GET", "/stats?service=nothing", None).await;
    assert_eq!(other["totals"]["challenges"].as_u64(), Some(0), "{other}");

    for (query, field) in [
        ("from=2026-13-01", "from"),
        ("to=yesterday", "to"),
        ("from=2026-12-02&to=2026-12-01", "from"),
        ("from=2020-01-01&to=2026-12-01", "from"),
        ("colour=blue", "colour"),
    ] {
        let (code, body) = call(&gw, "GET", &format!("/stats?{query}"), None).await;
        assert_eq!(
            (code, body["error"]["field"].as_str()),
            (400, Some(field)),
            "{query}: {body}"
        );
    }
}
