//! # turnpike-gateway
//!
//! A streaming reverse proxy that charges per call over Lightning with L402. Each request to a
//! priced service goes through one pipeline:
//!
//! 1. **match** the request to a configured service (host and path),
//! 2. **authenticate** its L402 credential (no I/O: root keys are derived from a master secret),
//! 3. **charge** one call in the store (one atomic statement),
//! 4. **forward** it to the upstream, streaming both ways,
//! 5. **account**: a call the upstream never answered is given back.
//!
//! A request without a credential gets `402 Payment Required` with a fresh invoice and macaroon.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod challenge;
pub mod client_ip;
pub mod config;
pub mod control;
pub mod dev_pay;
pub mod discovery;
pub mod edge;
pub mod error;
pub mod headers;
pub mod hub;
pub mod idempotency;
pub mod keys;
pub mod metadata;
pub mod metrics;
pub mod pipeline;
pub mod pricer;
pub mod proxy;
pub mod rate_limit;
pub mod router;
pub mod service;
mod serving;
pub mod settlement;
pub mod stats;
pub mod traffic;
pub mod upstream;
pub mod verified;
mod workers;
pub mod x402;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use turnpike_l402::root_key::MasterKey;
use turnpike_l402::token::Minter;
use turnpike_lightning::InvoiceBackend;
use turnpike_lightning::dev::DevBackend;
use turnpike_store::Store;

pub use config::GatewayConfig;

/// Errors while starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A secret file in the data directory could not be read or created.
    #[error("cannot read or create {path}: {source}")]
    Secret {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The Lightning backend could not be set up.
    #[error(transparent)]
    Backend(#[from] turnpike_lightning::config::ConnectError),
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] turnpike_store::StoreError),
    /// Aperture's database (`[aperture] secrets`) could not be opened.
    #[error("cannot open aperture.secrets: {0}")]
    Aperture(#[from] turnpike_aperture::secrets::SecretsError),
}

/// Everything the pipeline needs: the state shared by all requests, plus what the worker serving
/// them keeps for itself (its upstream connections, its memo of verified credentials).
pub struct AppState {
    shared: Arc<Shared>,
    forwarder: proxy::Forwarder,
    verified: verified::VerifiedMemo,
    passes: PassesSeen,
}

/// Time passes (tokens that count no calls, so write nothing per call) this worker saw lately,
/// with when their use was last written: a use is written on first sight, then at most once a
/// minute, so the admin API lists them with their first and last use.
#[derive(Default)]
struct PassesSeen(
    std::sync::Mutex<
        std::collections::HashMap<turnpike_l402::TokenId, u64, foldhash::fast::RandomState>,
    >,
);

/// Most time passes a worker remembers (then it starts afresh, writing each again once).
const PASSES_SEEN: usize = 16_384;

impl PassesSeen {
    /// Whether a use of `token` at `now` should be written (and notes it as written).
    fn due(&self, token: &turnpike_l402::TokenId, now: u64) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get(token) {
            Some(&at) if now < at.saturating_add(60) => false,
            _ => {
                if seen.len() >= PASSES_SEEN {
                    seen.clear();
                }
                seen.insert(*token, now);
                true
            }
        }
    }
}

impl AppState {
    /// The state of one worker: shared parts, and its own connections and memo.
    fn for_worker(shared: Arc<Shared>) -> AppState {
        let memo = verified::VerifiedMemo::with_capacity(shared.credential_memo);
        AppState {
            shared,
            forwarder: proxy::Forwarder::new(),
            verified: memo,
            passes: PassesSeen::default(),
        }
    }

    /// Counts a request of the client behind `peer` (through the trusted proxies of `headers`)
    /// against `limiter`, if there is one: over it, `429` with `message` and `Retry-After`.
    pub(crate) fn limit_client(
        &self,
        limiter: Option<&rate_limit::RateLimiter<String>>,
        peer: std::net::SocketAddr,
        headers: &http::HeaderMap,
        message: &str,
    ) -> Result<(), error::ApiError> {
        let Some(limiter) = limiter else {
            return Ok(());
        };
        let via = proxy::Via::new(&self.trusted_proxies, peer.ip(), headers);
        let key = client_ip::client_key(via.client);
        limiter
            .check(&key, std::time::Instant::now())
            .map_err(|wait| {
                let secs = wait.secs_rounded_up();
                error::ApiError::new(
                    error::ErrorCode::RateLimited,
                    format!("{message} Retry in {secs} s."),
                )
                .retry_after(secs)
            })
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// Store work that must outlive the request that started it (giving back the call of a client
/// that left, recording a response for retries): it runs on the runtime that owns the store, not
/// on the worker's, and the gateway waits for it when it stops.
#[derive(Clone)]
pub struct Background {
    tracker: tokio_util::task::TaskTracker,
    runtime: Option<tokio::runtime::Handle>,
}

/// Longest wait for background store work when the gateway stops.
const BACKGROUND_DRAIN: Duration = Duration::from_secs(30);

impl Background {
    /// Background work on the current runtime (the one that opens the store).
    pub fn new() -> Background {
        Background {
            tracker: tokio_util::task::TaskTracker::new(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Runs `task` to its end, even if the runtime of the request that started it stops first.
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        match self
            .runtime
            .clone()
            .or_else(|| tokio::runtime::Handle::try_current().ok())
        {
            Some(runtime) => {
                self.tracker.spawn_on(task, &runtime);
            }
            None => tracing::error!("no runtime to run a store write on"),
        }
    }

    /// Waits (a bounded time) for the work started so far.
    async fn drain(&self) {
        self.tracker.close();
        if tokio::time::timeout(BACKGROUND_DRAIN, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::error!("store work still running at shutdown was abandoned");
        }
    }
}

impl Default for Background {
    fn default() -> Self {
        Background::new()
    }
}

/// The state every worker shares: routes, keys, store, backend, limits.
pub struct Shared {
    services: Arc<router::ServiceTable>,
    minter: Minter,
    store: Arc<dyn Store>,
    backend: Arc<dyn InvoiceBackend>,
    dev: Option<Arc<DevBackend>>,
    invoice_expiry_secs: u32,
    credential_memo: usize,
    trusted_proxies: client_ip::TrustedProxies,
    limits: Limiters,
    idempotency: config::IdempotencyConfig,
    connections: config::ConnectionsConfig,
    open_connections: Arc<serving::OpenConnections>,
    settlement: Option<settlement::SettledTokens>,
    background: Background,
    metrics: Arc<metrics::Metrics>,
    /// Time passes this process has seen paid and used (each recorded once in the store).
    passes_seen: settlement::SettledTokens,
    control: Arc<control::Control>,
    sync_interval: Duration,
    x402: Option<Arc<x402::X402Settings>>,
    /// Verifies tokens an existing Aperture minted (`[aperture]`).
    aperture: Option<Arc<turnpike_aperture::ApertureTokens>>,
}

/// The rate limiters in force (bounded memory each).
struct Limiters {
    per_ip: Option<rate_limit::RateLimiter<String>>,
    per_token: Option<rate_limit::RateLimiter<turnpike_l402::TokenId>>,
    challenges_per_ip: Option<rate_limit::RateLimiter<String>>,
    refunds_per_token: Option<rate_limit::RateLimiter<turnpike_l402::TokenId>>,
}

impl Limiters {
    /// Counts a call given back to `token` (it may then be refused for a while).
    fn record_refund(&self, token: &turnpike_l402::TokenId) {
        if let Some(limiter) = &self.refunds_per_token
            && limiter.check(token, std::time::Instant::now()).is_err()
        {
            tracing::debug!(token = %token, "a token's refunds are over their limit");
        }
    }
}

/// Most keys a rate limiter remembers.
const RATE_LIMIT_KEYS: usize = 100_000;

type SharedState = Arc<AppState>;

/// A configured gateway, ready to serve.
#[derive(Clone)]
pub struct Gateway {
    state: SharedState,
}

/// The parts a gateway is built from, for callers (and tests) that assemble them directly.
pub struct GatewayParts {
    /// Validated configuration (services, invoice expiry).
    pub config: GatewayConfig,
    /// The master secret from which every token's root key is derived.
    pub master_key: MasterKey,
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// Issues invoices.
    pub backend: Arc<dyn InvoiceBackend>,
    /// The dev backend, when it is the backend: mounts the dev pay endpoint.
    pub dev: Option<Arc<DevBackend>>,
    /// The admin API's store (services and revocations changed at runtime), when there is one.
    pub admin: Option<Arc<dyn turnpike_store::AdminStore>>,
}

impl Gateway {
    /// Opens the data directory (creating the master secret on first start), the store and the
    /// backend named in `config`.
    pub async fn from_config(config: GatewayConfig) -> Result<Gateway, StartError> {
        config.validate()?;
        keys::create_private_dir(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let secret = |name: &str| {
            let path = config.data_dir.join(name);
            keys::load_or_create_secret(&path).map_err(|source| StartError::Secret { path, source })
        };
        let master_key = match &config.master_key {
            Some(source) => {
                let secret = source.resolve().map_err(|e| config::ConfigError::Invalid {
                    key: "master_key".into(),
                    message: e.to_string(),
                })?;
                MasterKey::from_hex(secret.expose().trim()).map_err(|_| {
                    config::ConfigError::Invalid {
                        key: "master_key".into(),
                        message: "must be 64 hex characters".into(),
                    }
                })?
            }
            None => MasterKey::from_bytes(secret("master.key")?),
        };
        let (store, admin) = turnpike_store::open_with_admin(&config.store_url()).await?;
        let (backend, dev): (Arc<dyn InvoiceBackend>, _) = match &config.backend {
            config::BackendConfig::Dev(dev) => {
                let max_unpaid = dev
                    .max_unpaid
                    .unwrap_or(turnpike_lightning::dev::DEFAULT_MAX_UNPAID);
                let dev =
                    Arc::new(DevBackend::new(secret("dev-node.key")?).with_max_unpaid(max_unpaid));
                (dev.clone(), Some(dev))
            }
            other => {
                let backend = other.connect()?;
                let backend: Arc<dyn InvoiceBackend> = backend;
                (backend, None)
            }
        };
        let aperture = match &config.aperture {
            Some(a) => Some(Arc::new(
                turnpike_aperture::ApertureTokens::open(
                    &a.secrets,
                    Duration::from_secs(a.cache_secs),
                    turnpike_aperture::AperturePolicy {
                        calls_per_token: a.calls_per_token,
                    },
                )
                .await?,
            )),
            None => None,
        };
        let parts = GatewayParts {
            config,
            master_key,
            store,
            backend,
            dev,
            admin: Some(admin),
        };
        let gateway = Gateway::build(parts, aperture)?;
        gateway.state.control.sync().await?;
        Ok(gateway)
    }

    /// Builds a gateway from its parts. Errors name the config key at fault (services are
    /// parsed here, once). `[aperture]` is not opened here (see [`Gateway::from_config`]).
    pub fn new(parts: GatewayParts) -> Result<Gateway, config::ConfigError> {
        Gateway::build(parts, None)
    }

    fn build(
        parts: GatewayParts,
        aperture: Option<Arc<turnpike_aperture::ApertureTokens>>,
    ) -> Result<Gateway, config::ConfigError> {
        parts.config.validate()?;
        let metrics = Arc::new(metrics::Metrics::new());
        let x402 = parts
            .config
            .x402
            .as_ref()
            .map(x402::X402Settings::parse)
            .transpose()?
            .map(Arc::new);
        let router = router::Router::from_configs_with(&parts.config.services, x402.as_deref())?;
        let trusted_proxies = client_ip::TrustedProxies::parse(&parts.config.trusted_proxies)
            .map_err(|message| config::ConfigError::Invalid {
                key: "trusted_proxies".into(),
                message,
            })?
            .with_header(parts.config.forwarded_header);
        let hub = match parts.config.hub.as_ref().filter(|h| h.enabled) {
            Some(c) => Some(Arc::new(hub::Hub::new(hub::HubSettings::parse(c)?))),
            None => None,
        };
        let services = Arc::new(
            router::ServiceTable::with(router, metrics.clone(), x402.clone()).with_hub(hub),
        );
        let control = Arc::new(control::Control::new(
            services.clone(),
            parts.config.services.clone(),
            parts.admin,
        ));
        Ok(Gateway {
            state: Arc::new(AppState::for_worker(Arc::new(Shared {
                services,
                control,
                sync_interval: Duration::from_secs(parts.config.admin.sync_interval_secs),
                x402,
                minter: Minter::new(parts.master_key),
                store: parts.store,
                backend: parts.backend,
                dev: parts.dev,
                invoice_expiry_secs: parts.config.invoice_expiry_secs,
                credential_memo: parts.config.credential_memo,
                background: Background::new(),
                aperture,
                idempotency: parts.config.idempotency.clone(),
                connections: parts.config.connections,
                open_connections: Arc::new(serving::OpenConnections::counting_in(
                    metrics.open_connections(),
                )),
                metrics,
                passes_seen: settlement::SettledTokens::default(),
                settlement: parts
                    .config
                    .checks_settlement()
                    .then(settlement::SettledTokens::default),
                trusted_proxies,
                limits: Limiters {
                    per_ip: parts
                        .config
                        .rate_limits
                        .per_ip
                        .map(|l| rate_limit::RateLimiter::new(l, RATE_LIMIT_KEYS)),
                    per_token: parts
                        .config
                        .rate_limits
                        .per_token
                        .map(|l| rate_limit::RateLimiter::new(l, RATE_LIMIT_KEYS)),
                    challenges_per_ip: Some(parts.config.rate_limits.challenges_per_ip)
                        .filter(|l| l.requests != 0)
                        .map(|l| rate_limit::RateLimiter::new(l, RATE_LIMIT_KEYS)),
                    refunds_per_token: Some(parts.config.rate_limits.refunds_per_token)
                        .filter(|l| l.requests != 0)
                        .map(|l| rate_limit::RateLimiter::new(l, RATE_LIMIT_KEYS)),
                },
            }))),
        })
    }

    /// The services in force: replace them at runtime with [`router::ServiceTable::replace`]
    /// (requests in flight finish on the services they matched).
    pub fn services(&self) -> Arc<router::ServiceTable> {
        self.state.services.clone()
    }

    /// The gateway's counters and histograms: render them with
    /// [`metrics::Metrics::render_prometheus`] (what `/metrics` serves).
    pub fn metrics(&self) -> Arc<metrics::Metrics> {
        self.state.metrics.clone()
    }

    /// Adds what this gateway counted since its last flush to the store's daily statistics now
    /// (the gateway also does so every [`stats::FLUSH_INTERVAL`] while it serves, and when it
    /// stops).
    pub async fn flush_stats(&self) -> Result<(), turnpike_store::StoreError> {
        stats::flush(&self.state.metrics, &*self.state.store, unix_now()).await
    }

    /// The statistics of days `from..=to` (of `service` only, when given), as `/api/v1/stats`
    /// answers them, including what this gateway counted up to now (it flushes first; the
    /// other replicas' last few seconds may be missing).
    pub async fn stats(
        &self,
        from: turnpike_store::Day,
        to: turnpike_store::Day,
        service: Option<&str>,
    ) -> Result<stats::StatsReport, turnpike_store::StoreError> {
        if let Err(e) = self.flush_stats().await {
            tracing::warn!(error = %e, "cannot add statistics to the store; will retry");
        }
        stats::query(&*self.state.store, from, to, service).await
    }

    /// Runtime control: services overlaid from the store, revoked tokens (see [`control`]).
    pub fn control(&self) -> Arc<control::Control> {
        self.state.control.clone()
    }

    /// The Lightning backend issuing this gateway's invoices.
    pub fn backend(&self) -> Arc<dyn InvoiceBackend> {
        self.state.backend.clone()
    }

    /// The HTTP application: internal endpoints under `/_turnpike/`, every other request
    /// through the pipeline.
    pub fn app(&self) -> axum::Router {
        app_with(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` completes, then closes idle connections and lets
    /// requests in flight finish (within `connections.shutdown_grace_secs`), all on the current
    /// Tokio runtime. Every minute it prunes expired unpaid invoices, ended free-tier
    /// windows, idempotent responses older than the retry window and x402 claims whose
    /// authorisation has expired.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let pruner = self.spawn_pruner();
        let flusher = stats::spawn_flusher(self.state.metrics.clone(), self.state.store.clone());
        let sync = self.spawn_sync();
        let hub_tasks = self.spawn_hub_tasks();
        let server = serving::ConnectionServer::new(self.state.clone());
        let mut acceptor = serving::Acceptor::new(&self.state);
        let accept = async {
            loop {
                let (stream, peer, permit) = acceptor.accept(&listener).await;
                server.serve(stream, peer, permit);
            }
        };
        tokio::select! {
            () = accept => {}
            () = shutdown => {}
        }
        drop(listener);
        server.shutdown().await;
        self.state.background.drain().await;
        pruner.abort();
        self.final_flush(flusher).await;
        sync.abort();
        hub_tasks.iter().for_each(tokio::task::JoinHandle::abort);
        Ok(())
    }

    /// Serves like [`Gateway::serve`], but on `workers` threads, each running its own
    /// single-threaded runtime with its own upstream connections (no work stealing, no
    /// cross-thread wake-ups on the request path). This task accepts connections and deals them
    /// out round-robin; the store, the backend and the pruner stay on the current runtime.
    pub async fn serve_on_workers(
        self,
        listener: tokio::net::TcpListener,
        workers: usize,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let pruner = self.spawn_pruner();
        let flusher = stats::spawn_flusher(self.state.metrics.clone(), self.state.store.clone());
        let sync = self.spawn_sync();
        let hub_tasks = self.spawn_hub_tasks();
        let result = workers::serve(&self.state, listener, workers.max(1), shutdown).await;
        self.state.background.drain().await;
        pruner.abort();
        sync.abort();
        // The last health counts first, as `serve` does: a health flush stopped after its
        // transaction committed but before it noted what it added would be added again.
        self.final_flush(flusher).await;
        hub_tasks.iter().for_each(tokio::task::JoinHandle::abort);
        result
    }

    /// Every `[admin] sync_interval_secs`: picks up the services and revocations other replicas
    /// changed (see [`control::Control::sync`]).
    fn spawn_sync(&self) -> tokio::task::JoinHandle<()> {
        let control = self.state.control.clone();
        let every = self.state.sync_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = control.sync().await {
                    tracing::warn!(error = %e, "cannot read admin changes from the store");
                }
            }
        })
    }

    /// On a hub: bills providers and checks their bills periodically ([`hub::billing`]), and
    /// asks Lightning addresses' LUD-21 `verify` for the fee ledger ([`hub::verify`]).
    fn spawn_hub_tasks(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let control = &self.state.control;
        [
            hub::billing::spawn(control.clone(), self.state.backend.clone()),
            hub::verify::spawn(control.clone()),
        ]
        .into_iter()
        .flatten()
        .chain(hub::health::flush::spawn(
            control.clone(),
            self.state.metrics.clone(),
        ))
        .collect()
    }

    /// Stops the periodic flush and adds the last counts, and on a hub the last health counts
    /// (waiting at most [`stats::FINAL_FLUSH`] for each).
    async fn final_flush(&self, flusher: tokio::task::JoinHandle<()>) {
        flusher.abort();
        match tokio::time::timeout(stats::FINAL_FLUSH, self.flush_stats()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the last statistics could not be stored"),
            Err(_) => tracing::error!("the last statistics could not be stored in time"),
        }
        let control = &self.state.control;
        if let Some(store) = control.store() {
            let metrics = &self.state.metrics;
            let last = hub::health::flush::add_traffic(control, metrics, &**store, unix_now());
            if !matches!(
                tokio::time::timeout(stats::FINAL_FLUSH, last).await,
                Ok(Ok(()))
            ) {
                tracing::error!("the last health counts could not be stored");
            }
        }
    }

    /// Every minute: prunes expired unpaid invoices, ended free-tier windows and idempotent
    /// responses older than the retry window.
    fn spawn_pruner(&self) -> tokio::task::JoinHandle<()> {
        let store = self.state.store.clone();
        let idem_window = self.state.idempotency.window_secs;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let now = unix_now();
                let results = [
                    (
                        "expired unpaid invoices",
                        store.prune_expired_invoices(now).await,
                    ),
                    ("ended free-tier windows", store.prune_free_tier(now).await),
                    (
                        "expired x402 payment claims",
                        store.prune_x402_payments(now).await,
                    ),
                    (
                        "old idempotent responses",
                        store
                            .prune_idempotency(now.saturating_sub(idem_window))
                            .await,
                    ),
                ];
                for (what, result) in results {
                    match result {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(pruned = n, "pruned {what}"),
                        Err(e) => tracing::warn!(error = %e, "could not prune {what}"),
                    }
                }
            }
        })
    }
}

fn app_with(state: SharedState) -> axum::Router {
    let mut app = axum::Router::new().route("/_turnpike/health", get(health));
    if state.control.hub().is_none() {
        app = app.route(discovery::PATH, get(discovery::handle));
    } else {
        app = app
            .route(
                discovery::PATH,
                get(hub::directory::documents::well_known_l402),
            )
            .route(
                hub::register::PATH,
                get(hub::register::page).post(hub::register::public_register),
            )
            .route(hub::register::SCRIPT_PATH, get(hub::register::script))
            .route(hub::register::STYLE_PATH, get(hub::register::style))
            .route(hub::directory::PATH, get(hub::directory::handle))
            .route(
                "/{slug}/.well-known/l402.json",
                get(hub::directory::documents::catalogue_by_prefix),
            )
            .route(
                "/{slug}/.well-known/openapi.json",
                get(hub::directory::documents::openapi_by_prefix),
            )
            .route(
                hub::directory::documents::OPENAPI_SUFFIX,
                get(hub::directory::documents::openapi_by_host),
            )
            .route(hub::catalogue::SCRIPT_PATH, get(hub::catalogue::script))
            .route(hub::catalogue::STYLE_PATH, get(hub::catalogue::style))
            .route(hub::catalogue::DOM_PATH, get(hub::catalogue::dom_script));
    }
    if state.dev.is_some() {
        app = app
            .route(dev_pay::PATH, post(dev_pay::pay))
            .route(dev_pay::LOOKUP_PATH, get(dev_pay::lookup));
    }
    app.fallback(pipeline::handle)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// A path the gateway answers itself (`/directory`, a provider's documents, its pages' files,
/// `/.well-known/l402.json`…) asked with a method it does not answer: `405`, as a JSON error
/// like any other.
async fn method_not_allowed() -> error::ApiError {
    error::ApiError::new(
        error::ErrorCode::MethodNotAllowed,
        "This path does not answer this method.",
    )
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
