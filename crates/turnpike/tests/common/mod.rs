//! Helpers shared by the binary's integration tests.

use std::net::SocketAddr;
use std::process::Child;
use std::time::{Duration, Instant};

/// Kills the child on drop, so a failing test leaves no process behind.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether the gateway at `addr` answers its health check with 200.
pub fn healthy(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.write_all(b"GET /_turnpike/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

/// Waits up to 30 s for the gateway at `addr` to be healthy.
pub fn wait_healthy(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if healthy(addr) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("gateway at {addr} did not become healthy");
}

/// Serves `app` on a loopback port from a thread with its own runtime; returns the address.
#[allow(dead_code)] // not every test binary uses it
pub fn spawn_app(app: axum::Router) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

/// An upstream answering `ok` to anything, counting what it served.
#[allow(dead_code)] // not every test binary uses it
pub fn counting_upstream() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let served = std::sync::Arc::new(AtomicU64::new(0));
    let counter = served.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            "ok"
        }
    });
    (spawn_app(app), served)
}

/// A gateway with the dev backend on a free loopback port, in front of a counting upstream,
/// with `services` (TOML `[[services]]` tables in which `{upstream}` stands for the upstream's
/// address), its configuration written in `dir`. Returns the gateway, its base URL and the
/// upstream's count of calls served.
#[allow(dead_code)] // not every test binary uses it
pub fn dev_gateway(
    dir: &std::path::Path,
    services: &str,
) -> (
    Running,
    String,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let (upstream, served) = counting_upstream();
    let listen = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let config = dir.join("turnpike.toml");
    let services = services.replace("{upstream}", &upstream.to_string());
    std::fs::write(
        &config,
        format!(
            "listen = \"{listen}\"\nadmin.listen = \"127.0.0.1:0\"\ndata_dir = \"gateway-data\"\n\n[backend]\nkind = \"dev\"\n\n{services}"
        ),
    )
    .unwrap();
    let gateway = serve_gateway(&config, listen);
    (gateway, format!("http://{listen}"), served)
}

/// Runs `turnpike serve --config CONFIG` (output discarded) and waits until `listen` is healthy.
#[allow(dead_code)] // not every test binary uses it
pub fn serve_gateway(config: &std::path::Path, listen: SocketAddr) -> Running {
    let gateway = Running(
        std::process::Command::new(env!("CARGO_BIN_EXE_turnpike"))
            .args(["serve", "--config"])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_healthy(listen);
    gateway
}

/// Starts `turnpike serve --config <config>` (stderr to `log`) and waits until both its public
/// listener (healthy) and its admin listener answer.
#[allow(dead_code)] // not every test binary uses it
pub fn serve_with_admin(
    config: &std::path::Path,
    log: &std::path::Path,
    public: SocketAddr,
    admin: SocketAddr,
) -> Running {
    serve_with_admin_in_env(config, log, public, admin, &[])
}

/// [`serve_with_admin`] with more environment variables (`envs`) for the process.
pub fn serve_with_admin_in_env(
    config: &std::path::Path,
    log: &std::path::Path,
    public: SocketAddr,
    admin: SocketAddr,
    envs: &[(&str, &str)],
) -> Running {
    let process = Running(
        std::process::Command::new(env!("CARGO_BIN_EXE_turnpike"))
            .args(["serve", "--config"])
            .arg(config)
            .envs(envs.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_healthy(public);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(admin).is_err() {
        assert!(
            Instant::now() < deadline,
            "the admin listener did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    process
}

/// A fresh PostgreSQL database, or `None` (test skipped) without `TURNPIKE_TEST_POSTGRES_URL`.
#[allow(dead_code)] // not every test binary uses it
pub async fn pg_database() -> Option<(String, String)> {
    let Ok(admin) = std::env::var("TURNPIKE_TEST_POSTGRES_URL") else {
        if std::env::var("TURNPIKE_REQUIRE_POSTGRES").as_deref() == Ok("1") {
            panic!("TURNPIKE_REQUIRE_POSTGRES=1 but TURNPIKE_TEST_POSTGRES_URL is not set");
        }
        eprintln!("SKIPPED: PostgreSQL test (set TURNPIKE_TEST_POSTGRES_URL to run it)");
        return None;
    };
    let name = format!(
        "turnpike_admin_{}",
        &turnpike_l402::TokenId::random().to_hex()[..12]
    );
    let pool = sqlx::PgPool::connect(&admin)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Some((admin.clone(), format!("{base}/{name}")))
}

/// Drops the database `url` made by [`pg_database`] (connected as `admin_url`).
#[allow(dead_code)] // not every test binary uses it
pub async fn drop_pg_database(admin_url: &str, url: &str) {
    let pool = sqlx::PgPool::connect(admin_url).await.unwrap();
    let name = url.rsplit_once('/').unwrap().1;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&pool)
    .await;
}

/// The Python of `TURNPIKE_TEST_PYTHON` (the test venv of `scripts/test.sh`), or `None` (the
/// test `test` skipped with a message; a failure under `TURNPIKE_STRICT_TESTS=1`).
#[allow(dead_code)] // not every test binary uses it
pub fn test_python(test: &str) -> Option<String> {
    match std::env::var("TURNPIKE_TEST_PYTHON") {
        Ok(p) if !p.trim().is_empty() => Some(p),
        _ => {
            assert!(
                std::env::var("TURNPIKE_STRICT_TESTS").as_deref() != Ok("1"),
                "{test}: TURNPIKE_TEST_PYTHON is not set (TURNPIKE_STRICT_TESTS=1)"
            );
            eprintln!("SKIPPED: {test}: set TURNPIKE_TEST_PYTHON (see scripts/test.sh)");
            None
        }
    }
}
