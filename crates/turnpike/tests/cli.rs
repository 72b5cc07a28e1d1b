//! The `turnpike` binary: `serve`, `fetch` and `demo` as a user runs them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Running, wait_healthy};

const BIN: &str = env!("CARGO_BIN_EXE_turnpike");

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn fetch(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("fetch")
        .args(args)
        .env("TURNPIKE_DATA_DIR", test_data_dir())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A tiny upstream in a thread of its own runtime.
fn spawn_upstream() -> SocketAddr {
    common::spawn_app(
        axum::Router::new()
            .route(
                "/api/hello",
                axum::routing::get(|| async { "hello, paid world\n" }),
            )
            .route(
                "/api/post",
                axum::routing::post(|body: String| async move { format!("got {body}") }),
            ),
    )
}

fn write_config(
    dir: &std::path::Path,
    listen: SocketAddr,
    upstream: SocketAddr,
) -> std::path::PathBuf {
    let path = dir.join("turnpike.toml");
    std::fs::write(
        &path,
        format!(
            r#"
listen = "{listen}"
admin.listen = "127.0.0.1:0"
data_dir = "data"

[backend]
kind = "dev"

[[services]]
name = "api"
path = "/api"
upstream = "http://{upstream}"
price_sats = 3
"#
        ),
    )
    .unwrap();
    path
}

#[test]
fn serve_fetch_pay_and_shut_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = spawn_upstream();
    let listen = free_port();
    let config = write_config(dir.path(), listen, upstream);
    let mut gw = Running(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_healthy(listen);
    let base = format!("http://{listen}");

    // The master secret was created with mode 0600 in the data dir beside the config.
    let key = dir.path().join("data/master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let secret = std::fs::read_to_string(&key).unwrap();

    // No wallet: the 402 is reported and the exit code says it failed.
    let out = fetch(&[&format!("{base}/api/hello")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--wallet"),
        "{}",
        text(&out.stderr)
    );

    // Over the limit: refused, nothing paid.
    let out = fetch(&[
        "--wallet",
        "dev",
        "--max-sats",
        "2",
        &format!("{base}/api/hello"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("above the limit"),
        "{}",
        text(&out.stderr)
    );

    // Paid.
    let out = fetch(&[
        "--wallet",
        "dev",
        "--max-sats",
        "3",
        "-v",
        &format!("{base}/api/hello"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello, paid world\n");
    let err = text(&out.stderr);
    assert!(err.contains("< 402 Payment Required"), "{err}");
    assert!(err.contains("> Authorization: L402 "), "{err}");
    assert!(err.contains("turnpike-calls-remaining: 0"), "{err}");

    // A body with -d is POSTed.
    let out = fetch(&["--wallet", "dev", "-d", "abc", &format!("{base}/api/post")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "got abc");

    // HTTP errors give curl's --fail exit code.
    let out = fetch(&[&format!("{base}/nowhere")]);
    assert_eq!(out.status.code(), Some(22));
    assert!(text(&out.stdout).contains("no_such_service"));

    // SIGTERM: graceful exit with status 0; the secret never appears in the logs.
    #[cfg(unix)]
    {
        let pid = gw.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = gw.0.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "gateway did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success());
        let mut logs = String::new();
        std::io::Read::read_to_string(gw.0.stderr.as_mut().unwrap(), &mut logs).unwrap();
        assert!(logs.contains("listening"), "{logs}");
        assert!(
            !logs.contains(secret.trim()),
            "the master secret leaked into the logs"
        );
    }
}

#[test]
fn a_bad_config_fails_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), free_port(), "127.0.0.1:1".parse().unwrap());
    let good = std::fs::read_to_string(&path).unwrap();
    for (bad, key) in [
        (
            good.replace("price_sats = 3", "price_sats = 3\npricee = 1"),
            "pricee",
        ),
        (
            good.replace("price_sats = 3", "price_sats = \"three\""),
            "price_sats",
        ),
        (
            good.replace("name = \"api\"", "name = \"a:b\""),
            "services[0].name",
        ),
    ] {
        std::fs::write(&path, bad).unwrap();
        let out = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains(key),
            "{key}: {}",
            text(&out.stderr)
        );
    }
    let out = Command::new(BIN)
        .args(["serve", "--config", "/nonexistent/turnpike.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("/nonexistent/turnpike.toml"));
}

#[test]
fn the_demo_prints_commands_that_work() {
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let admin = free_port();
    let mut demo = Running(
        Command::new(BIN)
            .args(["demo", "--listen", &listen.to_string()])
            .args(["--admin-listen", &admin.to_string(), "--data-dir"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stdout = BufReader::new(demo.0.stdout.take().unwrap());
    let mut printed = String::new();
    while !printed.contains("Ctrl-C") {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "demo exited early: {printed}"
        );
        printed.push_str(&line);
    }
    wait_healthy(listen);
    let curl = printed
        .lines()
        .find(|l| l.trim_start().starts_with("curl -i"))
        .expect("a curl command");
    let fetch_line = printed
        .lines()
        .find(|l| l.contains(" fetch --wallet dev") && l.contains("/joke"))
        .expect("a fetch command");

    // The printed dashboard answers, and the printed token file opens the admin API.
    let dashboard = format!("http://{admin}/");
    assert!(printed.contains(&dashboard), "{printed}");
    let token_file = dir.path().join("admin.token");
    assert!(
        printed.contains(&token_file.display().to_string()),
        "{printed}"
    );
    let token = std::fs::read_to_string(&token_file).unwrap();

    // The printed curl target answers 402 with both challenges.
    let url = curl.split_whitespace().last().unwrap();
    turnpike_lightning::ensure_crypto_provider();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let resp = rt.block_on(reqwest::get(url)).unwrap();
    assert_eq!(resp.status(), 402);
    assert_eq!(resp.headers().get_all("www-authenticate").iter().count(), 2);
    let page = rt.block_on(reqwest::get(&dashboard)).unwrap();
    assert_eq!(page.status(), 200);
    let services = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{dashboard}api/v1/services"))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    });
    assert_eq!(services["services"].as_array().unwrap().len(), 4);

    // The printed fetch command pays and gets a joke.
    let words: Vec<&str> = fetch_line.split_whitespace().collect();
    assert_eq!(words[0], BIN);
    let out = Command::new(words[0]).args(&words[1..]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("joke"));

    // The streaming endpoint delivers all its events.
    let out = fetch(&[
        "--wallet",
        "dev",
        "--max-sats",
        "10",
        &format!("http://{listen}/stream"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).matches("event: tick").count(), 5);
}

/// The ledger directory of this test process (never the user's own).
fn test_data_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("turnpike-test-ledger-{}", std::process::id()))
}
