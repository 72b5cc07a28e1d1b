//! Services changed at runtime: swapped under load without a failed request, requests in
//! flight finishing on the service they matched, and SIGHUP reloading the real binary's config
//! file (a bad file keeps the services in force).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use turnpike_gateway::Gateway;
use turnpike_gateway::config::{BackendConfig, DevBackendConfig, GatewayConfig, ServiceConfig};

async fn spawn_upstream() -> SocketAddr {
    let app = axum::Router::new()
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(800)).await;
                "slow done"
            }),
        )
        .fallback(|| async { "ok" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, app).into_future());
    addr
}

fn service(name: &str, path: &str, up: SocketAddr, price: u64) -> ServiceConfig {
    ServiceConfig {
        path: Some(path.into()),
        ..ServiceConfig::new(name, format!("http://{up}"), price)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_change_under_load_without_a_failed_request() {
    turnpike_lightning::ensure_crypto_provider();
    let up = spawn_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let base = vec![
        service("free", "/free", up, 0),
        service("slow", "/slow", up, 0),
    ];
    let mut config = GatewayConfig {
        data_dir: dir.path().to_owned(),
        services: base.clone(),
        ..GatewayConfig::new(BackendConfig::Dev(DevBackendConfig::default()))
    };
    // Each swap mints a challenge: no per-address limit on them here.
    config.rate_limits.challenges_per_ip.requests = 0;
    let gateway = Gateway::from_config(config).await.unwrap();
    let table = gateway.services();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gateway.serve_on_workers(listener, 2, std::future::pending()));
    let url = |p: &str| format!("http://{addr}{p}");
    let http = reqwest::Client::new();

    // A request in flight keeps the service it matched while that service is removed.
    let in_flight = tokio::spawn({
        let (http, u) = (http.clone(), url("/slow"));
        async move { http.get(u).send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    table.replace(&base[..1]).unwrap();
    assert_eq!(http.get(url("/slow")).send().await.unwrap().status(), 404);
    let resp = in_flight.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "slow done");

    // Load on a service that stays, while a paid one is added and removed again and again.
    let served = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(3);
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (http, u) = (http.clone(), url("/free/x"));
            let (served, failed) = (served.clone(), failed.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    match http.get(&u).send().await {
                        Ok(r) if r.status() == 200 => served.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let mut with_paid = base[..1].to_vec();
    with_paid.push(service("paid", "/paid", up, 5));
    let mut swaps = 0;
    while Instant::now() < deadline {
        table.replace(&with_paid).unwrap();
        assert_eq!(http.get(url("/paid")).send().await.unwrap().status(), 402);
        table.replace(&base[..1]).unwrap();
        assert_eq!(http.get(url("/paid")).send().await.unwrap().status(), 404);
        swaps += 1;
    }
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(served.load(Ordering::Relaxed) > 100, "{served:?}");
    assert!(swaps > 10, "{swaps} swaps");
    // An invalid replacement changes nothing.
    let bad = vec![service("bad", "no-slash", up, 1)];
    let e = table.replace(&bad).unwrap_err().to_string();
    assert!(e.contains("services[0].path"), "{e}");
    assert_eq!(http.get(url("/free")).send().await.unwrap().status(), 200);
}

#[cfg(unix)]
#[test]
fn sighup_reloads_the_services_and_a_bad_file_keeps_them() {
    use std::io::{Read, Write};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(spawn_upstream());
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("turnpike.toml");
    let head =
        format!("listen = \"{addr}\"\nadmin.listen = \"127.0.0.1:0\"\n[backend]\nkind = \"dev\"\n");
    let free = format!(
        "[[services]]\nname = \"free\"\npath = \"/free\"\nupstream = \"http://{up}\"\nprice_sats = 0\n"
    );
    let added = format!(
        "[[services]]\nname = \"new\"\npath = \"/new\"\nupstream = \"http://{up}\"\nprice_sats = 3\n"
    );
    std::fs::write(&path, format!("{head}{free}")).unwrap();
    let log = dir.path().join("log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_turnpike"))
        .args(["serve", "--config"])
        .arg(&path)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let status = |p: &str| -> Option<u16> {
        let mut s = std::net::TcpStream::connect(addr).ok()?;
        s.write_all(format!("GET {p} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
            .ok()?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).ok()?;
        answer.split(' ').nth(1)?.parse().ok()
    };
    let wait_for = |p: &str, want: u16| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while status(p) != Some(want) {
            assert!(Instant::now() < deadline, "{p} never answered {want}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let hangup = |pid: u32| {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    wait_for("/free", 200);
    assert_eq!(status("/new"), Some(404));

    std::fs::write(&path, format!("{head}{free}{added}")).unwrap();
    hangup(child.id());
    wait_for("/new", 402);

    // A bad file: refused, logged with its key, the services in force stay.
    std::fs::write(
        &path,
        format!("{head}{free}{}", added.replace("\"/new\"", "\"new\"")),
    )
    .unwrap();
    hangup(child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).unwrap().contains("refused") {
        assert!(Instant::now() < deadline, "no refusal logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("services[1].path"), "{logged}");
    assert_eq!(status("/new"), Some(402));
    assert_eq!(status("/free"), Some(200));
    let _ = child.kill();
    let _ = child.wait();
}
