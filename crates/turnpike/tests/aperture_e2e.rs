//! Customers of an existing Aperture keep their tokens: a real SQLite database with Aperture's
//! `secrets` schema, tokens minted the way Aperture mints them by an independent implementation
//! (pymacaroons, `tests/interop/aperture_fixture.py`), a real `turnpike serve` with
//! `[aperture] secrets = "sqlite://…"`, real HTTP on loopback.
//!
//! Needs `TURNPIKE_TEST_PYTHON` = a Python with pymacaroons 0.13 (see `scripts/test.sh`);
//! without it the tests print `SKIPPED: …` and pass, unless `TURNPIKE_STRICT_TESTS=1`.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;

use serde_json::{Value, json};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/aperture_fixture.py"
);

/// The Python with pymacaroons 0.13 (`TURNPIKE_TEST_PYTHON`), or `None`: skipped.
fn python(test: &str) -> Option<String> {
    common::test_python(test)
}

/// One token of the fixture, as the client holds it.
#[derive(Debug, Clone)]
struct Token {
    macaroon_b64: String,
    macaroon_hex: String,
    macaroon_preimage_hex: String,
    preimage_hex: String,
    id_hash_hex: String,
    root_key_hex: String,
}

impl Token {
    fn l402(&self) -> String {
        format!("L402 {}:{}", self.macaroon_b64, self.preimage_hex)
    }
}

/// Runs the fixture script: creates `db` with Aperture's schema and the tokens of `specs`.
fn build_fixture(python: &str, db: &std::path::Path, specs: &Value) -> HashMap<String, Token> {
    let mut child = Command::new(python)
        .arg(SCRIPT)
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the fixture script");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(specs.to_string().as_bytes())
        .expect("write the request");
    let out = child.wait_with_output().expect("wait for python");
    assert!(
        out.status.success(),
        "aperture_fixture.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON from the script");
    let text = |t: &Value, k: &str| t[k].as_str().expect(k).to_owned();
    v["tokens"]
        .as_object()
        .expect("tokens")
        .iter()
        .map(|(name, t)| {
            let token = Token {
                macaroon_b64: text(t, "macaroon_b64"),
                macaroon_hex: text(t, "macaroon_hex"),
                macaroon_preimage_hex: text(t, "macaroon_preimage_hex"),
                preimage_hex: text(t, "preimage_hex"),
                id_hash_hex: text(t, "id_hash_hex"),
                root_key_hex: text(t, "root_key_hex"),
            };
            (name.clone(), token)
        })
        .collect()
}

fn now() -> u64 {
    turnpike_gateway::unix_now()
}

/// The fixture of Aperture's sample configuration's `service1`: capabilities, a constraint
/// and a timeout caveat, plus the tokens an attacker would try.
fn specs() -> Value {
    let service1 = |name: &str, valid_until: Option<u64>, stored: bool| {
        json!({
            "name": name, "service": "service1", "capabilities": "add,subtract",
            "constraints": {"valid_until": "1682483169"},
            "valid_until": valid_until, "stored": stored,
        })
    };
    json!({"tokens": [
        service1("good", Some(now() + 31_557_600), true),
        service1("second", None, true),
        service1("revoked", Some(now() + 3600), true),
        service1("unknown", Some(now() + 3600), false),
        service1("expired", Some(now() - 10), true),
        {"name": "other", "service": "service2", "capabilities": "", "valid_until": null},
    ]})
}

async fn call(base: &str, headers: &[(&str, &str)]) -> (u16, String) {
    turnpike_lightning::ensure_crypto_provider();
    let client = reqwest::Client::new();
    let mut req = client.get(format!("{base}/api/x"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// The byte-for-byte same macaroon with one caveat changed (same length): the signature no
/// longer covers it.
fn tamper(token: &Token, from: &str, to: &str) -> String {
    assert_eq!(from.len(), to.len());
    let mut raw = hex::decode(&token.macaroon_hex).unwrap();
    let at = raw
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .expect("caveat present");
    raw[at..at + to.len()].copy_from_slice(to.as_bytes());
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    format!("L402 {b64}:{}", token.preimage_hex)
}

#[tokio::test]
async fn aperture_tokens_are_accepted_and_forgeries_never_reach_the_upstream() {
    let Some(py) = python("aperture_tokens_are_accepted_and_forgeries_never_reach_the_upstream")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aperture.db");
    let tokens = build_fixture(&py, &db, &specs());
    let services = format!(
        "[[services]]\nname = \"service1\"\npath = \"/api\"\nupstream = \"http://{{upstream}}\"\n\
         price_sats = 5\n\n[aperture]\nsecrets = \"sqlite://{}\"\ncache_secs = 1\n",
        db.display()
    );
    let (_gw, base, served) = common::dev_gateway(dir.path(), &services);

    // A genuine token, in each form Aperture accepted: served, and again (unlimited use).
    let good = &tokens["good"];
    let lsat = good.l402().replacen("L402", "LSAT", 1);
    let forms: [(&str, &str); 4] = [
        ("authorization", &good.l402()),
        ("authorization", &lsat),
        ("macaroon", &good.macaroon_preimage_hex),
        ("grpc-metadata-macaroon", &good.macaroon_preimage_hex),
    ];
    for (name, value) in forms {
        let (status, body) = call(&base, &[(name, value)]).await;
        assert_eq!((status, body.as_str()), (200, "ok"), "{name}");
    }
    let (status, _) = call(&base, &[("authorization", &good.l402())]).await;
    assert_eq!(status, 200);
    let (status, _) = call(&base, &[("authorization", &tokens["second"].l402())]).await;
    assert_eq!(
        status, 200,
        "a token without a timeout caveat never expires"
    );
    assert_eq!(served.load(Ordering::SeqCst), 6);

    // Forgeries: 401, and the upstream sees none of them.
    let wrong_preimage = format!("L402 {}:{}", good.macaroon_b64, "11".repeat(32));
    let others_preimage = format!(
        "L402 {}:{}",
        good.macaroon_b64, tokens["second"].preimage_hex
    );
    let forged_expiry = {
        // The good token's own expiry caveat, pushed later (same length).
        let raw = hex::decode(&good.macaroon_hex).unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let at = text.find("service1_valid_until=").unwrap();
        let old = &text[at..at + "service1_valid_until=".len() + 10];
        let later = format!("service1_valid_until={}", now() + 99_999_999);
        tamper(good, old, &later)
    };
    let forgeries = [
        ("wrong preimage", wrong_preimage),
        ("another token's preimage", others_preimage),
        (
            "changed services caveat",
            tamper(good, "services=service1:0", "services=service9:0"),
        ),
        (
            "changed capabilities",
            tamper(
                good,
                "capabilities=add,subtract",
                "capabilities=add,multiply",
            ),
        ),
        ("pushed expiry", forged_expiry),
        ("unknown identifier", tokens["unknown"].l402()),
        (
            "other service's token relabelled",
            tamper(
                &tokens["other"],
                "services=service2:0",
                "services=service1:0",
            ),
        ),
    ];
    for (what, value) in &forgeries {
        let (status, body) = call(&base, &[("authorization", value)]).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(body.contains("invalid_credential"), "{what}: {body}");
    }
    // Genuine but expired, or for another service: a fresh challenge (as for Turnpike's own
    // tokens), never the upstream.
    for what in ["expired", "other"] {
        let (status, body) = call(&base, &[("authorization", &tokens[what].l402())]).await;
        assert_eq!(status, 402, "{what}: {body}");
        assert!(body.contains("\"invoice\""), "{what}: {body}");
    }
    assert_eq!(served.load(Ordering::SeqCst), 6);

    // Revoked in Aperture (its row deleted): refused once the cache entry (1 s) has expired.
    let revoked = &tokens["revoked"];
    let (status, _) = call(&base, &[("authorization", &revoked.l402())]).await;
    assert_eq!(status, 200);
    delete_secret(&db, &revoked.id_hash_hex).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (status, body) = call(&base, &[("authorization", &revoked.l402())]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(served.load(Ordering::SeqCst), 7);
}

#[tokio::test]
async fn a_provider_can_count_the_calls_of_aperture_tokens() {
    let Some(py) = python("a_provider_can_count_the_calls_of_aperture_tokens") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aperture.db");
    let tokens = build_fixture(&py, &db, &specs());
    let services = format!(
        "[[services]]\nname = \"service1\"\nupstream = \"http://{{upstream}}\"\nprice_sats = 5\n\n\
         [aperture]\nsecrets = \"sqlite://{}\"\ncalls_per_token = 2\n",
        db.display()
    );
    let (_gw, base, served) = common::dev_gateway(dir.path(), &services);
    let good = tokens["good"].l402();
    for expected in [200, 200, 402, 402] {
        let (status, body) = call(&base, &[("authorization", &good)]).await;
        assert_eq!(status, expected, "{body}");
    }
    assert_eq!(served.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_missing_aperture_database_stops_the_gateway_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("turnpike.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"d\"\n[backend]\nkind = \"dev\"\n[aperture]\nsecrets = \"sqlite://{}/nope.db\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_turnpike"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("aperture.secrets"), "{err}");
}

async fn delete_secret(db: &std::path::Path, id_hash_hex: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let n = sqlx::query("DELETE FROM secrets WHERE hash = ?")
        .bind(hex::decode(id_hash_hex).unwrap())
        .execute(&mut conn)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 1);
}

/// The same with Aperture's `postgres` backend: its migration's schema (`BLOB` as `BYTEA`,
/// `INTEGER PRIMARY KEY` as `SERIAL PRIMARY KEY`, as Aperture rewrites it for PostgreSQL) in a
/// fresh database, the pymacaroons tokens' rows copied in.
#[tokio::test]
async fn aperture_tokens_from_postgresql() {
    let Some(py) = python("aperture_tokens_from_postgresql") else {
        return;
    };
    let Ok(admin) = std::env::var("TURNPIKE_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("TURNPIKE_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "TURNPIKE_REQUIRE_POSTGRES=1 but TURNPIKE_TEST_POSTGRES_URL is not set"
        );
        eprintln!("SKIPPED: Aperture on PostgreSQL (set TURNPIKE_TEST_POSTGRES_URL to run it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tokens = build_fixture(&py, &dir.path().join("unused.db"), &specs());
    let name = format!(
        "aperture_{}",
        &turnpike_l402::TokenId::random().to_hex()[..12]
    );
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    let url = format!("{base}/{name}");
    {
        let db = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS secrets (id SERIAL PRIMARY KEY, hash BYTEA UNIQUE NOT NULL, \
             secret BYTEA UNIQUE NOT NULL, created_at TIMESTAMP NOT NULL)",
        )
        .execute(&db)
        .await
        .unwrap();
        for t in ["good", "other"] {
            sqlx::query("INSERT INTO secrets (hash, secret, created_at) VALUES ($1, $2, now())")
                .bind(hex::decode(&tokens[t].id_hash_hex).unwrap())
                .bind(hex::decode(&tokens[t].root_key_hex).unwrap())
                .execute(&db)
                .await
                .unwrap();
        }
        db.close().await;
    }
    let services = format!(
        "[[services]]\nname = \"service1\"\nupstream = \"http://{{upstream}}\"\nprice_sats = 5\n\n\
         [aperture]\nsecrets = \"{url}\"\n"
    );
    let (gw, base_url, served) = common::dev_gateway(dir.path(), &services);
    let good = &tokens["good"];
    assert_eq!(
        call(&base_url, &[("authorization", &good.l402())]).await.0,
        200
    );
    assert_eq!(
        call(&base_url, &[("authorization", &good.l402())]).await.0,
        200
    );
    let forged = tamper(good, "services=service1:0", "services=service7:0");
    assert_eq!(call(&base_url, &[("authorization", &forged)]).await.0, 401);
    let unknown = tokens["second"].l402();
    assert_eq!(call(&base_url, &[("authorization", &unknown)]).await.0, 401);
    assert_eq!(
        call(&base_url, &[("authorization", &tokens["other"].l402())])
            .await
            .0,
        402
    );
    assert_eq!(served.load(Ordering::SeqCst), 2);
    drop(gw);
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&pool)
    .await;
}
