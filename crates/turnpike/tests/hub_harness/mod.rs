//! A hub under test: `turnpike serve` with `[hub]` and its admin listener, and the helpers hub
//! tests share (admin calls, provider registration, public requests, polling, an upstream).
#![allow(dead_code)] // not every test binary uses all of it

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{self, Running};

pub const DOMAIN: &str = "hub.test";

pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A hub: `turnpike serve` with `[hub]` (2 % fee, no trial unless `trial_days`), its admin
/// listener on a free port.
pub struct Hub {
    _process: Running,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub token: String,
    pub http: reqwest::Client,
}

pub fn start_hub(dir: &Path, trial_days: u32) -> Hub {
    start_hub_with(dir, "hub", trial_days, "", "")
}

/// A hub named `name` in `dir` (its data directory `dir/data`, shared by every hub started
/// in `dir`), with more top-level keys (`top`) and `[hub]` keys (`extra`), as TOML lines.
pub fn start_hub_with(dir: &Path, name: &str, trial_days: u32, top: &str, extra: &str) -> Hub {
    start_hub_in_env(dir, name, trial_days, top, extra, &[])
}

/// [`start_hub_with`], the process given more environment variables (`envs`).
pub fn start_hub_in_env(
    dir: &Path,
    name: &str,
    trial_days: u32,
    top: &str,
    extra: &str,
    envs: &[(&str, &str)],
) -> Hub {
    turnpike_lightning::ensure_crypto_provider();
    let (public, admin) = (free_port(), free_port());
    let insecure = if extra.contains("allow_insecure_payouts") {
        ""
    } else {
        "allow_insecure_payouts = true"
    };
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"listen = "{public}"
data_dir = "data"
{top}
[rate_limits]
challenges_per_ip = {{ requests = 0, per_secs = 1, burst = 1 }}
[backend]
kind = "dev"
[hub]
domain = "{DOMAIN}"
fee = "2%"
trial_days = {trial_days}
{insecure}
allow_private_upstreams = true
{extra}
[admin]
listen = "{admin}"
sync_interval_secs = 1
"#
        ),
    )
    .unwrap();
    let log = dir.join(format!("{name}.log"));
    let process = common::serve_with_admin_in_env(&config, &log, public, admin, envs);
    let token = std::fs::read_to_string(dir.join("data/admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    Hub {
        _process: process,
        public,
        admin,
        token,
        http: reqwest::Client::new(),
    }
}

impl Hub {
    /// An admin call with `token`: (status, JSON body or null).
    pub async fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(
                method.parse().unwrap(),
                format!("http://{}/api/v1{path}", self.admin),
            )
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn operator(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(&self.token, method, path, body).await
    }

    /// The operator's registration `body` is refused with `status` (and `field`, if given):
    /// the error.
    pub async fn refuses(&self, body: Value, status: u16, field: Option<&str>) -> Value {
        let (got, err) = self
            .operator("POST", "/hub/providers", Some(body.clone()))
            .await;
        assert_eq!(got, status, "{body} → {err}");
        if let Some(field) = field {
            assert_eq!(err["error"]["field"], field, "{err}");
        }
        err
    }

    /// Pays `invoice` with the hub's dev backend (the hub's own backend in these tests): the
    /// status.
    pub async fn dev_pay(&self, invoice: &Value) -> u16 {
        self.http
            .post(format!("http://{}/_turnpike/dev/pay", self.public))
            .json(&serde_json::json!({ "invoice": invoice }))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Provider `token` (slug `alice`), its bill paid, is reinstated: a 402 again on
    /// `/alice/x`, active, its bill paid. Its record.
    pub async fn reinstated(&self, token: &str) -> Value {
        until("reinstated", async || {
            (self.get("gw.example", "/alice/x", None).await.0 == 402).then_some(())
        })
        .await;
        let (_, me) = self.call(token, "GET", "/hub/me", None).await;
        assert_eq!(me["status"], "active");
        assert!(me["bills"][0]["paid_at"].is_u64(), "{me}");
        me
    }

    /// `POST /_turnpike/hub/register` on the public listener: (status, JSON body).
    pub async fn self_register(&self, body: Value) -> (u16, Value) {
        let url = format!("http://{}/_turnpike/hub/register", self.public);
        let resp = self.http.post(url).json(&body).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Adds a service with a provider's `token`: the service as created.
    pub async fn add_service(&self, token: &str, service: Value) -> Value {
        let (status, body) = self.call(token, "POST", "/services", Some(service)).await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Registers a provider (operator); its token.
    pub async fn register(&self, slug: &str, payout: Value) -> String {
        let (status, body) = self
            .operator(
                "POST",
                "/hub/providers",
                Some(json!({
                    "name": format!("{slug} APIs"), "slug": slug,
                    "contact": format!("ops@{slug}.example"), "payout": payout,
                })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["slug"], slug);
        body["token"].as_str().unwrap().to_owned()
    }

    /// A public GET of `path` with `host` as the Host field.
    pub async fn get(&self, host: &str, path: &str, auth: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .get(format!("http://{}{path}", self.public))
            .header("host", host);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The fee ledger's row of `slug`, once it shows `payments`.
    pub async fn fees_of(&self, slug: &str, payments: u64) -> Value {
        until(
            &format!("{payments} payments in {slug}'s fee row"),
            async || {
                let (status, body) = self.operator("GET", "/hub/fees", None).await;
                assert_eq!(status, 200, "{body}");
                let rows = body["providers"].as_array()?;
                rows.iter()
                    .find(|r| r["provider"] == slug && r["payments"] == payments)
                    .cloned()
            },
        )
        .await
    }
}

/// Polls `probe` (every 100 ms, at most 15 s) until it gives a value.
pub async fn until<T>(what: &str, probe: impl AsyncFnMut() -> Option<T>) -> T {
    until_within(15, what, probe).await
}

/// Polls `probe` (every 100 ms, at most `secs`) until it gives a value.
pub async fn until_within<T>(
    secs: u64,
    what: &str,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An upstream recording the paths it was asked for.
pub async fn upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let (addr, seen, _) = recording_upstream(false).await;
    (addr, seen)
}

/// An upstream recording the paths it was asked for (a path holding `fail` answers 500), and
/// its task (abort it to stop the upstream). With `close`, every answer closes its connection,
/// so a stopped upstream is not reached through a kept-alive one.
pub async fn recording_upstream(
    close: bool,
) -> (
    SocketAddr,
    Arc<Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(uri.to_string());
            let status = match uri.path().contains("fail") {
                true => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                false => axum::http::StatusCode::OK,
            };
            let connection = if close { "close" } else { "keep-alive" };
            (status, [("connection", connection)], "{\"ok\":true}")
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (addr, seen, task)
}

/// Writes the active provider `slug` straight into the hub's store at
/// `store_url`, paid through a Lightning address of a domain that does not exist (`.invalid`:
/// its free services are served, a paid one answers 503 and no invoice; registration and
/// payouts are tested in `hub_e2e.rs`). Its admin token.
pub async fn provider_in_store(store_url: &str, slug: &str, name: &str) -> String {
    use sha2::{Digest, Sha256};
    let token = format!(
        "test-token-{slug}-{}",
        turnpike_l402::TokenId::random().to_hex()
    );
    let record = turnpike_store::ProviderRecord {
        slug: slug.into(),
        name: name.into(),
        contact: format!("ops@{slug}.example"),
        payout: json!({"kind": "lightning_address", "address": format!("{slug}@pay.invalid")})
            .to_string(),
        token_hash: Sha256::digest(token.as_bytes()).into(),
        status: "active".into(),
        created_at: 0,
        trial_ends_at: 0,
    };
    let (_, admin) = turnpike_store::open_with_admin(store_url).await.unwrap();
    assert!(admin.create_provider(&record).await.unwrap().is_some());
    token
}
