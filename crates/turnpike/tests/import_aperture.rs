//! `turnpike import-aperture`: Aperture's sample configuration converts into a valid
//! `turnpike.toml` with every key it cannot convert listed; and a converted configuration,
//! served by the real binary, prices, frees and accepts Aperture's tokens as Aperture did.

mod common;

use std::process::Command;
use std::sync::atomic::Ordering;

use turnpike_gateway::GatewayConfig;
use turnpike_gateway::router::Router;

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/aperture-sample.yaml"
);

fn import(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_turnpike"))
        .arg("import-aperture")
        .args(args)
        .output()
        .expect("run turnpike import-aperture")
}

#[test]
fn the_sample_configuration_converts_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("turnpike.toml");
    let run = import(&[SAMPLE.as_ref(), "-o".as_ref(), out.as_os_str()]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");

    // Every key that does not map is named, with why.
    for key in [
        "services[0].dynamicprice: not converted: the gRPC pricer",
        "services[0].authskipinvoicecreationpaths: not converted",
        "services[0].tlscertpath: not converted",
        "services[0].ratelimits[0]: not converted: Turnpike has no per-path rate limits",
        "services[0].capabilities: not converted",
        "services[1].hostregexp: the :port was dropped",
        "services[2].dynamicprice: not converted: not enabled",
        "authenticator.passphrase: not converted: Lightning Node Connect",
        "authenticator.lndhost: Turnpike talks to lnd over REST",
        "etcd: not used",
        "postgres: not used",
        "tor: not converted",
        "hashmail: not converted",
        "blocklist: not converted",
        "prometheus: not converted",
    ] {
        assert!(stderr.contains(key), "missing {key:?} in:\n{stderr}");
    }

    // The output is a valid Turnpike configuration, services and all.
    let config = GatewayConfig::load(&out).unwrap();
    let router = Router::from_configs(&config.services).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:8081");
    assert_eq!(config.connections.keep_alive_timeout_secs, 120);
    let aperture = config.aperture.as_ref().unwrap();
    assert_eq!(aperture.secrets, "sqlite:///path/to/.aperture/aperture.db");
    let s1 = &config.services[0];
    assert_eq!(s1.name, "service1");
    assert_eq!(s1.host_regex.as_deref(), Some("^service1.com$"));
    assert_eq!((s1.path.as_deref(), s1.path_regex.as_deref()), (None, None));
    assert_eq!(s1.upstream, "https://127.0.0.1:10009");
    assert_eq!(s1.price_sats, 1, "Aperture's price 0 is 1 sat");
    assert_eq!(s1.time_pass_secs, Some(31_557_600));
    assert_eq!(
        s1.routes[0].path_regex.as_deref(),
        Some("(?-i)^/freebieservice.*$")
    );
    assert_eq!(s1.routes[0].price_sats, 0);
    assert_eq!(
        config.services[1].host_regex.as_deref(),
        Some("service2.com")
    );
    assert_eq!(config.services[1].price_sats, 1);
    // Matching as Aperture did: the whitelisted path is free, the rest of service1 paid.
    let get = http::Method::GET;
    let free = router.route(&get, Some("service1.com"), "/freebieservice/x");
    assert_eq!(free.unwrap().name, "service1.free1");
    assert!(free.unwrap().is_free());
    let paid = router.route(&get, Some("service1.com"), "/FREEBIESERVICE/x");
    assert_eq!(paid.unwrap().name, "service1", "case-sensitive like RE2");
    let s2 = router.route(&get, Some("service2.com"), "/x").unwrap();
    assert_eq!(s2.name, "service2");

    // An existing file is not replaced without --force.
    let again = import(&[SAMPLE.as_ref(), "-o".as_ref(), out.as_os_str()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let forced = import(&[
        SAMPLE.as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
        "--force".as_ref(),
    ]);
    assert!(forced.status.success());
    // Without -o, the TOML goes to standard output and the notes to standard error.
    let stdout = import(&[SAMPLE.as_ref()]);
    let text = String::from_utf8_lossy(&stdout.stdout);
    assert!(GatewayConfig::parse(&text).is_ok(), "{text}");
    assert!(!String::from_utf8_lossy(&stdout.stderr).contains("[[services]]"));
}

#[test]
fn duplicate_and_unusable_names_are_renamed_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("a.yaml");
    std::fs::write(
        &yaml,
        "services:\n  - name: api\n    address: \"127.0.0.1:1\"\n  - name: api\n    address: \"127.0.0.1:2\"\n  - name: \"my api\"\n    address: \"127.0.0.1:3\"\n",
    )
    .unwrap();
    let run = import(&[yaml.as_os_str()]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let config = GatewayConfig::parse(&String::from_utf8_lossy(&run.stdout)).unwrap();
    let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["api", "api-2", "my_api"]);
    assert!(
        stderr.contains("services[1].name: renamed \"api-2\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("services[2].name: renamed \"my_api\""),
        "{stderr}"
    );
    assert!(stderr.contains("dbbackend"), "{stderr}");
}

#[test]
fn broken_files_are_refused_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "services: [\n").unwrap();
    let run = import(&[bad.as_os_str()]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("not valid YAML"));
    let missing = import(&[dir.path().join("nope.yaml").as_os_str()]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
}

/// A converted configuration, served: the whitelisted path is free, the freebie is granted
/// once, then payment is asked, and (with pymacaroons) a token the old
/// Aperture minted is accepted.
#[tokio::test]
async fn a_converted_configuration_serves_like_aperture() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aperture.db");
    let python = std::env::var("TURNPIKE_TEST_PYTHON")
        .ok()
        .filter(|p| !p.is_empty());
    let token = python.as_deref().map(|py| aperture_token(py, &db));
    if token.is_none() {
        // The database must exist for the gateway to start; an empty one with the schema.
        create_empty_aperture_db(&db).await;
        eprintln!("SKIPPED (part): no TURNPIKE_TEST_PYTHON, no Aperture token is tried");
    }
    let (upstream, served) = common::counting_upstream();
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = format!(
        "listenaddr: \"{listen}\"\nauthenticator:\n  disable: true\ndbbackend: sqlite\n\
         sqlite:\n  dbfile: \"{db}\"\nservices:\n  - name: service1\n    hostregexp: '.*'\n\
         \x20   pathregexp: '^/api/'\n    address: \"{upstream}\"\n    protocol: http\n\
         \x20   price: 5\n    timeout: 3600\n    auth: \"freebie 1\"\n\
         \x20   authwhitelistpaths:\n      - '^/api/public'\n    headers:\n\
         \x20     X-Api-Key: \"k3y\"\n",
        db = db.display()
    );
    let input = dir.path().join("aperture.yaml");
    std::fs::write(&input, yaml).unwrap();
    let config = dir.path().join("turnpike.toml");
    let run = import(&[input.as_os_str(), "-o".as_ref(), config.as_os_str()]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // The admin listener on a free port (the default one may be taken by a parallel test).
    let mut converted = std::fs::read_to_string(&config).unwrap();
    converted.push_str("\n[admin]\nlisten = \"127.0.0.1:0\"\n");
    std::fs::write(&config, converted).unwrap();
    let _gateway = common::serve_gateway(&config, listen);
    turnpike_lightning::ensure_crypto_provider();
    let client = reqwest::Client::new();
    let base = format!("http://{listen}");
    let status = |path: &str, auth: Option<&str>| {
        let mut req = client.get(format!("{base}{path}"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        status("/api/public/x", None).await,
        200,
        "whitelisted: free"
    );
    assert_eq!(
        status("/api/public/y", None).await,
        200,
        "whitelisted: free"
    );
    assert_eq!(status("/api/x", None).await, 200, "the freebie");
    assert_eq!(status("/api/x", None).await, 402, "then payment");
    assert_eq!(served.load(Ordering::SeqCst), 3);
    if let Some(token) = token {
        assert_eq!(
            status("/api/x", Some(&token)).await,
            200,
            "Aperture's token"
        );
        assert_eq!(status("/api/y", Some(&token)).await, 200, "and again");
        assert_eq!(served.load(Ordering::SeqCst), 5);
    }
}

/// A token for `service1`, minted the way Aperture mints them (pymacaroons) into `db`.
fn aperture_token(python: &str, db: &std::path::Path) -> String {
    use std::io::Write;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/aperture_fixture.py"
    );
    let mut child = Command::new(python)
        .arg(script)
        .arg(db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = turnpike_gateway::unix_now() + 3600;
    let request = format!(
        r#"{{"tokens": [{{"name": "t", "service": "service1", "valid_until": {until}}}]}}"#
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &v["tokens"]["t"];
    format!(
        "L402 {}:{}",
        t["macaroon_b64"].as_str().unwrap(),
        t["preimage_hex"].as_str().unwrap()
    )
}

async fn create_empty_aperture_db(db: &std::path::Path) {
    use sqlx::ConnectOptions;
    use std::str::FromStr;
    let mut conn =
        sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display()))
            .unwrap()
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
    sqlx::query(
        "CREATE TABLE secrets (id INTEGER PRIMARY KEY, hash BLOB UNIQUE NOT NULL, \
         secret BLOB UNIQUE NOT NULL, created_at TIMESTAMP NOT NULL)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Whatever services an Aperture configuration holds (within what Aperture itself accepts),
    /// the conversion loads as a valid Turnpike configuration.
    #[test]
    fn every_conversion_loads(
        services in proptest::collection::vec(
            (
                "[a-z0-9_]{1,10}",
                "[a-z]{1,6}",
                0usize..8,
                0usize..4,
                -5i64..1000,
                proptest::option::of(0i64..100_000),
                0usize..5,
                proptest::collection::vec("[a-z]{1,5}", 0..3),
            ),
            0..4,
        ),
    ) {
        let mut yaml = String::from("listenaddr: \"localhost:8081\"\nservices:\n");
        for (i, (name, seg, path_form, host_form, price, timeout, auth, free)) in services.iter().enumerate() {
            let path = [
                "^/.*$".to_owned(),
                format!("^/{seg}/"),
                format!("^/{seg}"),
                format!("^/{seg}/.*$"),
                seg.clone(),
                format!("^/{seg}(/.*)?$"),
                format!("^/{seg}/\\.\\./"),
                format!("^/{seg}|^/x{seg}"),
            ][*path_form].clone();
            let host = [
                format!("^{seg}\\.com$"),
                format!("{seg}.com:8080"),
                ".*".to_owned(),
                format!("^{seg}.com$"),
            ][*host_form].clone();
            let auth = ["on", "off", "freebie 3", "weird", ""][*auth];
            yaml.push_str(&format!(
                "  - name: \"{name}{i}\"\n    hostregexp: '{host}'\n    pathregexp: '{path}'\n    \
                 address: \"127.0.0.1:9000\"\n    protocol: http\n    price: {price}\n    auth: \"{auth}\"\n"
            ));
            if let Some(t) = timeout {
                yaml.push_str(&format!("    timeout: {t}\n"));
            }
            if !free.is_empty() {
                yaml.push_str("    authwhitelistpaths:\n");
                for f in free {
                    yaml.push_str(&format!("      - '^/{f}'\n"));
                }
            }
        }
        let conversion = turnpike_aperture::import::convert(&yaml).unwrap();
        let config = GatewayConfig::parse(&conversion.toml)
            .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}\n{}", conversion.toml)))?;
        Router::from_configs(&config.services)
            .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}\n{}", conversion.toml)))?;
    }
}
