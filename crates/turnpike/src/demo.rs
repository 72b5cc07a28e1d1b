//! `turnpike demo`: the gateway on the dev backend in front of a small built-in API.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::extract::Query;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::header;
use serde::Deserialize;
use turnpike_gateway::config::{BackendConfig, DevBackendConfig, GatewayConfig, ServiceConfig};

/// The demo API: a few endpoints the gateway prices.
pub fn demo_api() -> axum::Router {
    axum::Router::new()
        .route(
            "/hello",
            get(|| async { axum::Json(serde_json::json!({ "hello": "world", "price": "free" })) }),
        )
        .route("/joke", get(joke))
        .route("/weather", get(weather))
        .route("/stream", get(stream))
}

async fn joke() -> axum::Json<serde_json::Value> {
    const JOKES: [&str; 4] = [
        "Why did the node operator cross the channel? To rebalance.",
        "I would tell you a UDP joke, but you might not get it.",
        "There are 10 kinds of people: those who understand binary and those who pay in sats.",
        "A macaroon walks into a bar. The bartender checks its caveats.",
    ];
    let pick = rand_index(JOKES.len());
    axum::Json(serde_json::json!({ "joke": JOKES[pick] }))
}

fn rand_index(n: usize) -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos as usize % n
}

#[derive(Deserialize)]
struct WeatherQuery {
    city: Option<String>,
}

async fn weather(Query(q): Query<WeatherQuery>) -> axum::Json<serde_json::Value> {
    let city = q.city.unwrap_or_else(|| "Lisbon".to_owned());
    let temp = 12 + (city.bytes().map(u32::from).sum::<u32>() % 15);
    axum::Json(serde_json::json!({ "city": city, "temperature_c": temp, "sky": "clear" }))
}

/// Server-sent events: one tick every 300 ms, five in all.
async fn stream() -> Response {
    let ticks = futures_util::stream::unfold(0u32, |i| async move {
        if i >= 5 {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let event = format!("id: {i}\nevent: tick\ndata: {{\"tick\":{i}}}\n\n");
        Some((Ok::<_, Infallible>(Bytes::from(event)), i + 1))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(ticks),
    )
        .into_response()
}

/// The gateway configuration of the demo, with the demo API at `upstream`.
pub fn demo_config(listen: SocketAddr, data_dir: PathBuf, upstream: SocketAddr) -> GatewayConfig {
    let service = |name: &str, path: &str, price_sats: u64, calls: u64| ServiceConfig {
        path: Some(path.into()),
        calls_per_payment: Some(calls),
        upstream_timeout_secs: 30,
        ..ServiceConfig::new(name, format!("http://{upstream}"), price_sats)
    };
    GatewayConfig {
        listen,
        data_dir,
        services: vec![
            service("hello", "/hello", 0, 1),
            service("joke", "/joke", 1, 1),
            service("weather", "/weather", 5, 3),
            service("stream", "/stream", 10, 1),
        ],
        ..GatewayConfig::new(BackendConfig::Dev(DevBackendConfig::default()))
    }
}

/// Runs the demo until Ctrl-C.
pub async fn run(
    listen: SocketAddr,
    data_dir: Option<PathBuf>,
    admin_listen: SocketAddr,
) -> anyhow::Result<()> {
    let data_dir = data_dir.unwrap_or_else(|| std::env::temp_dir().join("turnpike-demo"));
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the demo API")?;
    let upstream_addr = upstream.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(upstream, demo_api()).await {
            tracing::error!(error = %e, "demo API stopped");
        }
    });
    let mut config = demo_config(listen, data_dir.clone(), upstream_addr);
    config.admin.listen = admin_listen;
    let admin_config = config.admin.clone();
    let gateway = turnpike_gateway::Gateway::from_config(config)
        .await
        .context("starting the gateway")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen} (is another turnpike running?)"))?;
    let admin = crate::start_admin(&gateway, &admin_config, &data_dir, listener.local_addr()?)
        .await?
        .context("the demo runs the admin listener")?;
    let admin_token = admin
        .token_file
        .as_ref()
        .map_or_else(|| "[admin] token".to_owned(), |p| p.display().to_string());
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "turnpike".into());
    let base = format!("http://{listen}");
    println!(
        "\nTurnpike demo gateway on {base}\n\
         Dev Lightning backend: real BOLT11 invoices on regtest, NO REAL MONEY moves.\n\
         Data (master key, SQLite): {}\n\
         Dashboard and admin API: http://{}/ (admin token in {admin_token})\n\n\
         Priced endpoints of the built-in demo API:\n\
         \x20 GET {base}/hello              free\n\
         \x20 GET {base}/joke               1 sat per call\n\
         \x20 GET {base}/weather?city=Oslo  5 sats for 3 calls\n\
         \x20 GET {base}/stream             10 sats, server-sent events\n\n\
         Try, in another shell:\n\
         \x20 curl -i {base}/joke\n\
         \x20 {exe} fetch --wallet dev --max-sats 10 -v {base}/joke\n\
         \x20 {exe} fetch --wallet dev --max-sats 10 {base}/stream\n\n\
         Ctrl-C stops the demo.\n",
        data_dir.display(),
        admin.addr,
    );
    gateway
        .serve(listener, crate::shutdown_signal())
        .await
        .context("serving")?;
    Ok(())
}
