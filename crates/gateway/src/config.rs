//! The gateway's TOML configuration: parsed strictly (unknown keys fail) and validated, with
//! errors that name the offending key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::rate_limit::Limit;

/// Default address the gateway listens on.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8402";
/// Default address of the admin listener (`[admin] listen`).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8403";
/// Default lifetime of an invoice in a 402 challenge.
pub const DEFAULT_INVOICE_EXPIRY_SECS: u32 = 600;
/// Default time allowed for an upstream to send its response headers.
pub const DEFAULT_UPSTREAM_TIMEOUT_SECS: u64 = 60;

/// A configuration error, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("invalid config: {0}")]
    Parse(String),
    /// A value is out of range or inconsistent.
    #[error("invalid config: {key}: {message}")]
    Invalid {
        /// The key, for example `services[0].price_sats`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// A TOML error as the line, the key on it and what is wrong, without the offending text or
/// any quoted value (a secret may be written inline).
fn parse_error(text: &str, e: &toml::de::Error) -> String {
    let message = redact_quoted(e.message());
    let Some(span) = e.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default();
    match line.split_once('=').map(|(k, _)| k.trim()) {
        Some(k) if !k.is_empty() && !k.contains(['"', '\'']) => {
            format!("line {line_no}, key {k}: {message}")
        }
        _ => format!("line {line_no}: {message}"),
    }
}

/// `invalid type: string "x", expected u64` → `invalid type: string "…", expected u64`.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        match c {
            '"' if quoted => {
                out.push_str("…\"");
                quoted = false;
            }
            '"' => {
                out.push('"');
                quoted = true;
            }
            _ if quoted => {}
            c => out.push(c),
        }
    }
    if quoted {
        out.push('…');
    }
    out
}

impl ConfigError {
    /// The same error with its key placed inside `prefix` (`path` → `services[1].path`).
    pub fn within(self, prefix: &str) -> ConfigError {
        match self {
            ConfigError::Invalid { key, message } => ConfigError::Invalid {
                key: format!("{prefix}.{key}"),
                message,
            },
            other => other,
        }
    }
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole gateway configuration (`turnpike.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address to listen on (default `127.0.0.1:8402`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory for the master secret, keys and the default SQLite file (default
    /// `./turnpike-data`). A relative path is resolved against the config file's directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Worker threads serving requests, each with its own single-threaded runtime (default:
    /// one per CPU core; 0 means the default).
    #[serde(default)]
    pub workers: usize,
    /// Credentials each worker remembers as verified (default 4096; 0: parse and HMAC-check
    /// every call). See [`crate::verified`].
    #[serde(default = "default_credential_memo")]
    pub credential_memo: usize,
    /// Lifetime of the invoice in each 402 challenge, in seconds (default 600).
    #[serde(default = "default_invoice_expiry")]
    pub invoice_expiry_secs: u32,
    /// The master secret (64 hex characters) from which every token's root key is derived.
    /// Replicas sharing a database must share it: `{ env = "VAR" }` or `{ file = "PATH" }`.
    /// Default: `<data_dir>/master.key`, created on first start.
    pub master_key: Option<turnpike_lightning::SecretSource>,
    /// Proxies (addresses or CIDR blocks) whose forwarding headers are believed when finding
    /// the client's IP for rate limits and the free tier. Default: none (the TCP peer is the
    /// client).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Which header trusted proxies maintain: `x-forwarded-for` (default), `forwarded`
    /// (RFC 7239), or `auto` (`Forwarded` when present, else `X-Forwarded-For`).
    #[serde(default = "default_forwarded_header")]
    pub forwarded_header: crate::client_ip::ForwardedHeader,
    /// Limits on client connections: how many, how long a request head and an idle
    /// keep-alive connection may take, how long shutdown waits.
    #[serde(default)]
    pub connections: ConnectionsConfig,
    /// Rate limits.
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
    /// Idempotent retries (`Idempotency-Key`).
    #[serde(default)]
    pub idempotency: IdempotencyConfig,
    /// Where state is kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// The Lightning backend that issues invoices.
    pub backend: BackendConfig,
    /// Before a token's first paid call, ask the backend whether its invoice is settled
    /// (once per token and process). Default: on for every backend but `dev`. It guards
    /// against a backend that could leak a preimage of an unpaid invoice; turning it off makes
    /// verification need no backend call at all.
    pub check_settlement: Option<bool>,
    /// The admin listener (JSON API, dashboard) and how replicas pick up its changes.
    #[serde(default)]
    pub admin: AdminConfig,
    /// x402 (stablecoin) payments: the facilitator, the chain and token, who is paid. Needed
    /// by every service with `"x402"` in its `rails`.
    pub x402: Option<X402Config>,
    /// The priced services, matched in order.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// Accept the L402 tokens an existing Aperture minted (`[aperture]`).
    pub aperture: Option<ApertureConfig>,
    /// Host many providers, each paid on its own wallet (`[hub]`).
    pub hub: Option<HubConfig>,
}

/// `[hub]`: this gateway hosts providers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// Serve as a hub (default true when the section is present).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The hub's domain: a provider's services answer at `<slug>.<domain>`.
    pub domain: String,
    /// The platform fee added to each invoice: `"2%"` (default), `"0.5%"`, or a fraction
    /// `"0.02"`.
    #[serde(default = "default_hub_fee")]
    pub fee: String,
    /// Days from registration without fee (default 14).
    #[serde(default = "default_trial_days")]
    pub trial_days: u32,
    /// Anyone may register as a provider (`POST /_turnpike/hub/register` on the public
    /// listener); otherwise only the operator registers providers (admin API). Default false.
    #[serde(default)]
    pub open_registration: bool,
    /// Where providers reach the dashboard (the admin listener as they see it, e.g. behind a
    /// TLS proxy): linked from the registration page once a provider has its token. Optional.
    #[serde(default)]
    pub dashboard_url: Option<String>,
    /// The network providers' invoices must be for (default `bitcoin`).
    #[serde(default = "default_hub_network")]
    pub network: String,
    /// Tests and development only: allow payouts over `http` and on internal addresses
    /// (loopback, private networks). Default false: the SSRF guard refuses them.
    #[serde(default)]
    pub allow_insecure_payouts: bool,
    /// Tests and development only: allow providers' upstreams on internal addresses. Default
    /// false: a provider's upstream must resolve to public addresses.
    #[serde(default)]
    pub allow_private_upstreams: bool,
    /// When a provider's fees owed and not yet billed reach this many sats, the hub sends it a
    /// Lightning invoice for them (default 10000).
    #[serde(default = "default_bill_threshold_sats")]
    pub bill_threshold_sats: u64,
    /// Days a provider has to pay a bill before its services stop taking payments (default
    /// 14; 0: at once).
    #[serde(default = "default_bill_grace_days")]
    pub bill_grace_days: u32,
    /// Seconds between two looks at fees to bill and bills paid or overdue (default 3600).
    #[serde(default = "default_billing_interval_secs")]
    pub billing_interval_secs: u64,
    /// Seconds between two health probes of each provider's upstream, for the directory
    /// (default 60; 0: no probes).
    #[serde(default = "default_probe_interval_secs")]
    pub probe_interval_secs: u64,
    /// Seconds a bill's invoice lives (default: the grace period plus 7 days, at least 10
    /// minutes, at most 30 days; 1 to 2592000). An invoice that expires unpaid is reissued for
    /// the same bill.
    #[serde(default)]
    pub bill_expiry_secs: Option<u64>,
}

fn default_probe_interval_secs() -> u64 {
    60
}

fn default_bill_threshold_sats() -> u64 {
    10_000
}
fn default_bill_grace_days() -> u32 {
    14
}
fn default_billing_interval_secs() -> u64 {
    3600
}

fn default_hub_fee() -> String {
    "2%".into()
}
fn default_trial_days() -> u32 {
    14
}
fn default_hub_network() -> String {
    "bitcoin".into()
}

/// `[aperture]`: tokens minted by an existing Aperture keep working. Their root keys are read
/// (read-only) from Aperture's own database, by `sha256(identifier)` in its `secrets` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApertureConfig {
    /// Aperture's database: `sqlite:///path/aperture.db` or `postgres://user@host/aperture`.
    pub secrets: String,
    /// Seconds a root key found is kept in memory (default 60): a token revoked in Aperture
    /// stops working within this long. Unknown identifiers are remembered 10 s.
    #[serde(default = "default_aperture_cache_secs")]
    pub cache_secs: u64,
    /// Calls one Aperture token may make per service, counted in Turnpike's store. Default:
    /// unlimited until the token's own expiry caveat, as Aperture served it.
    pub calls_per_token: Option<u64>,
}

fn default_aperture_cache_secs() -> u64 {
    60
}

/// `[admin]`: the admin listener (JSON API under `/api/v1/`, dashboard), on its own address,
/// never the public one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve the admin listener (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Its address (default `127.0.0.1:8403`). Must differ from `listen`.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// The bearer token: `{ env = "VAR" }` or `{ file = "PATH" }` (or inline). Default:
    /// `<data_dir>/admin.token`, created on first start (32 random bytes as hex, mode 0600).
    pub token: Option<turnpike_lightning::SecretSource>,
    /// Seconds between two looks at the store for services and revocations changed by other
    /// replicas (default 2).
    #[serde(default = "default_sync_interval")]
    pub sync_interval_secs: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: default_admin_listen(),
            token: None,
            sync_interval_secs: default_sync_interval(),
        }
    }
}

impl AdminConfig {
    fn validate(&self, public: SocketAddr) -> Result<(), ConfigError> {
        if self.sync_interval_secs == 0 || self.sync_interval_secs > 3600 {
            return Err(invalid(
                "admin.sync_interval_secs",
                "must be between 1 and 3600 seconds",
            ));
        }
        let (a, p) = (self.listen, public);
        let overlaps = a.ip() == p.ip() || a.ip().is_unspecified() || p.ip().is_unspecified();
        if self.enabled && a.port() != 0 && a.port() == p.port() && overlaps {
            return Err(invalid(
                "admin.listen",
                format!("must not be the public listener ({p}): the admin API has its own address"),
            ));
        }
        Ok(())
    }
}

fn default_admin_listen() -> SocketAddr {
    DEFAULT_ADMIN_LISTEN
        .parse()
        .expect("constant address parses")
}
fn default_sync_interval() -> u64 {
    2
}

/// `[x402]`: how the gateway takes x402 payments (the `exact` scheme, EIP-3009 tokens on EVM
/// chains). Checked when the gateway starts ([`crate::x402::X402Settings::parse`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct X402Config {
    /// The facilitator's base URL (`http://` or `https://`); the gateway POSTs to
    /// `<url>/verify` and `<url>/settle`.
    pub facilitator_url: String,
    /// The chain, in CAIP-2 form (`eip155:8453` for Base, `eip155:84532` for Base Sepolia).
    pub network: String,
    /// The token contract (EIP-3009, e.g. USDC), a 0x address.
    pub asset: String,
    /// The token's EIP-712 domain name (`"USD Coin"` for USDC on Base, `"USDC"` on Base Sepolia).
    pub token_name: String,
    /// The token's EIP-712 domain version (`"2"` for USDC).
    pub token_version: String,
    /// The token's decimals (6 for USDC): `price_usdc = "0.01"` is 10000 base units.
    pub decimals: u8,
    /// Who is paid: the provider's 0x address.
    pub pay_to: String,
    /// The longest authorisation window a payer may sign, in seconds (default 300).
    #[serde(default = "default_x402_max_timeout")]
    pub max_timeout_secs: u64,
    /// Time allowed for the facilitator's `/verify` answer, in milliseconds (default 10000).
    #[serde(default = "default_x402_verify_timeout_ms")]
    pub verify_timeout_ms: u64,
    /// Time allowed for the facilitator's `/settle` answer (an on-chain transaction), in
    /// milliseconds (default 60000). A settle is never retried; one that times out is an
    /// unknown outcome (see the README).
    #[serde(default = "default_x402_settle_timeout_ms")]
    pub settle_timeout_ms: u64,
}

fn default_x402_max_timeout() -> u64 {
    300
}
fn default_x402_verify_timeout_ms() -> u64 {
    10_000
}
fn default_x402_settle_timeout_ms() -> u64 {
    60_000
}

/// A way to pay a service: `"l402"` (Lightning) or `"x402"` (stablecoins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rail {
    /// L402: a Lightning invoice and a macaroon.
    L402,
    /// x402: a signed EIP-3009 transfer authorisation, settled by a facilitator.
    X402,
}

fn default_rails() -> Vec<Rail> {
    vec![Rail::L402]
}

/// `[connections]`: limits that keep slow, idle and too many clients from holding the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsConfig {
    /// Most client connections open at once (default 10000); a connection over it gets a
    /// `503` and is closed. Each open connection may also hold one upstream connection, so the
    /// process's file limit should be above twice this (the gateway raises its own soft limit
    /// to the hard one at start, and warns when that is too low).
    #[serde(default = "default_max_connections")]
    pub max: usize,
    /// Seconds a client has to send a whole request head, from its first byte (or from
    /// connecting); then the connection is closed (default 10).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// Seconds a keep-alive connection may stay idle between requests (default 75).
    #[serde(default = "default_keep_alive_timeout")]
    pub keep_alive_timeout_secs: u64,
    /// Seconds a write to the client may wait for it to read (a client that stops reading a
    /// response is closed after this long; default 60).
    #[serde(default = "default_send_timeout")]
    pub send_timeout_secs: u64,
    /// Seconds the client has to send the part of a request body the gateway reads before
    /// forwarding (the pricer's share, an idempotent request's body; default 30). Then `408`.
    #[serde(default = "default_body_read_timeout")]
    pub body_read_timeout_secs: u64,
    /// On SIGINT/SIGTERM, seconds requests in flight get to finish before their connections
    /// are closed anyway (default 30). Connections with no request in flight close at once.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        ConnectionsConfig {
            max: default_max_connections(),
            header_read_timeout_secs: default_header_read_timeout(),
            keep_alive_timeout_secs: default_keep_alive_timeout(),
            send_timeout_secs: default_send_timeout(),
            body_read_timeout_secs: default_body_read_timeout(),
            shutdown_grace_secs: default_shutdown_grace(),
        }
    }
}

impl ConnectionsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max == 0 {
            return Err(invalid("connections.max", "must be at least 1"));
        }
        let timeouts = [
            (
                "connections.header_read_timeout_secs",
                self.header_read_timeout_secs,
            ),
            (
                "connections.keep_alive_timeout_secs",
                self.keep_alive_timeout_secs,
            ),
            ("connections.shutdown_grace_secs", self.shutdown_grace_secs),
            ("connections.send_timeout_secs", self.send_timeout_secs),
            (
                "connections.body_read_timeout_secs",
                self.body_read_timeout_secs,
            ),
        ];
        for (key, secs) in timeouts {
            if secs == 0 || secs > 86_400 {
                return Err(invalid(key, "must be between 1 and 86400 seconds"));
            }
        }
        Ok(())
    }
}

fn default_max_connections() -> usize {
    10_000
}
fn default_header_read_timeout() -> u64 {
    10
}
fn default_keep_alive_timeout() -> u64 {
    75
}
fn default_shutdown_grace() -> u64 {
    30
}
fn default_send_timeout() -> u64 {
    60
}
fn default_body_read_timeout() -> u64 {
    30
}

/// `[rate_limits]`: token buckets answering `429 Too Many Requests` with `Retry-After`. Each is
/// `{ requests = N, per_secs = S, burst = B }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// Every request to a service, per client IP (IPv6 per /64). Default: no limit.
    pub per_ip: Option<Limit>,
    /// Requests per paid token, counted after the credential is verified. Default: no limit.
    pub per_token: Option<Limit>,
    /// 402 challenges (each mints an invoice) per client IP. Default: 120 per minute, bursts
    /// of 60. Set `requests = 0` to turn it off.
    #[serde(default = "default_challenge_limit")]
    pub challenges_per_ip: Limit,
    /// Calls given back per token (upstream 5xx, unreachable, timed out, client gone). A token
    /// that has used this up gets `429` until it refills, so a paid call that keeps failing
    /// cannot make the upstream work for free without end. Default: 10 per minute, bursts of
    /// 10. Set `requests = 0` to turn it off.
    #[serde(default = "default_refund_limit")]
    pub refunds_per_token: Limit,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        RateLimitsConfig {
            per_ip: None,
            per_token: None,
            challenges_per_ip: default_challenge_limit(),
            refunds_per_token: default_refund_limit(),
        }
    }
}

fn default_challenge_limit() -> Limit {
    Limit {
        requests: 120,
        per_secs: 60,
        burst: 60,
    }
}

fn default_refund_limit() -> Limit {
    Limit {
        requests: 10,
        per_secs: 60,
        burst: 10,
    }
}

fn default_forwarded_header() -> crate::client_ip::ForwardedHeader {
    crate::client_ip::ForwardedHeader::XForwardedFor
}

/// `[idempotency]`: how retries with an `Idempotency-Key` are answered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// How long a completed response is kept for retries, in seconds (default 86400).
    #[serde(default = "default_idem_window")]
    pub window_secs: u64,
    /// Largest response body stored for replay (default 1 MiB); a larger response is not
    /// stored, and a retry runs (and is charged) again.
    #[serde(default = "default_idem_bytes")]
    pub max_response_bytes: usize,
    /// Largest request body accepted with an `Idempotency-Key` (default 1 MiB): it is buffered
    /// to fingerprint the request.
    #[serde(default = "default_idem_bytes")]
    pub max_request_bytes: usize,
    /// After this many seconds an unfinished first attempt counts as dead (its gateway
    /// stopped), and a retry runs it again without a new charge (default 300).
    #[serde(default = "default_idem_stale")]
    pub stale_after_secs: u64,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            window_secs: default_idem_window(),
            max_response_bytes: default_idem_bytes(),
            max_request_bytes: default_idem_bytes(),
            stale_after_secs: default_idem_stale(),
        }
    }
}

fn default_idem_window() -> u64 {
    86_400
}
fn default_idem_bytes() -> usize {
    1 << 20
}
fn default_idem_stale() -> u64 {
    300
}

/// `free_tier = { calls = N, window_secs = S }`: N free calls per client IP per window,
/// counted in the store (so they hold across replicas and restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FreeTierConfig {
    /// Free calls per client per window.
    pub calls: u64,
    /// Window length in seconds (windows are aligned to multiples of it).
    pub window_secs: u64,
}

/// `[store]`: where state is kept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Store URL: `sqlite://PATH` or `postgres://…` (several gateways may share one PostgreSQL
    /// database). Default: `sqlite://<data_dir>/turnpike.db`.
    pub url: Option<String>,
}

/// `[backend]`: the Lightning backend, selected by `kind` (`dev`, `lnbits`, `lnd`, `cln`,
/// `phoenixd`), with that backend's keys.
pub use turnpike_lightning::config::BackendConfig;
/// Options of the dev backend (none).
pub use turnpike_lightning::config::DevConfig as DevBackendConfig;

/// `[[services]]`: one priced API behind the gateway.
///
/// Pricing modes: per call (`calls_per_payment = 1`, the default), bundles
/// (`calls_per_payment = N`, optionally expiring after `token_lifetime_secs`), and time passes
/// (`time_pass_secs = T`: one payment buys unlimited calls for T seconds). `routes` give parts
/// of the service prices of their own.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Service name, used in token caveats: letters, digits, `_`, `-`, `.` (1 to 64; not dots
    /// alone).
    pub name: String,
    /// Match requests for this host only (exact, case-insensitive, or `*.example.com`).
    pub host: Option<String>,
    /// Match requests whose path is this prefix or below it (`/api` matches `/api` and
    /// `/api/x`, not `/apix`).
    pub path: Option<String>,
    /// Match requests whose host (lower case, without port) this regular expression finds a
    /// match in (unanchored unless it anchors; letter case ignored). Not with `host`.
    pub host_regex: Option<String>,
    /// Match requests whose canonical path this regular expression finds a match in
    /// (unanchored unless it anchors; letter case ignored unless it says `(?-i)`). Not with
    /// `path`.
    pub path_regex: Option<String>,
    /// Where to forward paid requests: `http://` or `https://` URL; a path in it is prepended.
    pub upstream: String,
    /// Price of one payment in satoshis. `0` makes the service free (no payment asked).
    pub price_sats: u64,
    /// How many calls one payment buys (default 1; not with `time_pass_secs`).
    pub calls_per_payment: Option<u64>,
    /// A payment buys unlimited calls for this many seconds from the challenge (a time pass).
    pub time_pass_secs: Option<u64>,
    /// If set, counted tokens also expire this many seconds after they are issued.
    pub token_lifetime_secs: Option<u64>,
    /// Give the call back when the upstream answers 5xx (default true). Unreachable upstreams
    /// and timeouts are never charged.
    #[serde(default = "default_true")]
    pub refund_on_5xx: bool,
    /// Time allowed for the upstream to send response headers, in seconds (default 60).
    #[serde(default = "default_upstream_timeout")]
    pub upstream_timeout_secs: u64,
    /// Free calls per client IP per window before payment is asked (default: none).
    pub free_tier: Option<FreeTierConfig>,
    /// Ask this HTTP pricer for the price of each request; `price_sats` is then the most it
    /// may ask (a higher answer fails closed).
    pub pricer: Option<PricerConfig>,
    /// Header fields set on every request to the upstream (an API key, say), replacing any
    /// value the client sent: `headers = { "X-Api-Key" = { env = "UPSTREAM_KEY" } }`; values
    /// inline, `{ env = … }` or `{ file = … }`, never logged.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, turnpike_lightning::SecretSource>,
    /// Pass on paths holding encoded slashes or backslashes (`%2F`, `%5C`, `\`) instead of
    /// refusing them with 400 (default false). Only for upstreams that do not decode them into
    /// separators: one that does would act on a path other than the one matched.
    #[serde(default)]
    pub allow_encoded_slashes: bool,
    /// Parts of this service with prices of their own, matched before the service itself.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// How the service may be paid: `["l402"]` (the default), `["l402", "x402"]` or
    /// `["x402"]`. x402 needs the `[x402]` section and `price_usdc`.
    #[serde(default = "default_rails")]
    pub rails: Vec<Rail>,
    /// Price of one payment over x402, in the `[x402]` token's units: a decimal (`"0.01"`, at
    /// most `decimals` fractional digits) or base units (`"10000u"`, or an integer `10000`).
    pub price_usdc: Option<TokenPrice>,
    /// The hub provider (its slug) this service belongs to: its invoices are created on the
    /// provider's wallet and it answers at `<slug>.<hub domain>` and under `/<slug>/`. Set
    /// through the admin API (a provider's token sets its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// What the service does (1 to 1000 characters), shown in the hub's directory and as the
    /// MCP tool's description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Up to 10 tags of 1 to 32 of `[a-z0-9-]`, searchable in the directory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The JSON Schema of a call's arguments (`{ type = "object", properties = { … } }`, at
    /// most 16 KiB as JSON): the MCP tool's input schema and the OpenAPI request schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<serde_json::Value>,
}

/// `price_usdc`: `"0.01"` (a decimal amount of the token) or `10000` / `"10000u"` (base units).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum TokenPrice {
    /// An integer: base units.
    BaseUnits(u64),
    /// A string: a decimal amount, or base units with a `u` suffix.
    Text(String),
}

impl ServiceConfig {
    /// A per-call service with every option at its default.
    pub fn new(
        name: impl Into<String>,
        upstream: impl Into<String>,
        price_sats: u64,
    ) -> ServiceConfig {
        ServiceConfig {
            name: name.into(),
            host: None,
            path: None,
            host_regex: None,
            path_regex: None,
            upstream: upstream.into(),
            price_sats,
            calls_per_payment: None,
            time_pass_secs: None,
            token_lifetime_secs: None,
            refund_on_5xx: true,
            upstream_timeout_secs: DEFAULT_UPSTREAM_TIMEOUT_SECS,
            free_tier: None,
            pricer: None,
            headers: std::collections::BTreeMap::new(),
            allow_encoded_slashes: false,
            routes: Vec::new(),
            rails: default_rails(),
            price_usdc: None,
            provider: None,
            description: None,
            tags: Vec::new(),
            input_schema: None,
        }
    }
}

/// `[[services.routes]]`: a path (and optionally a method) of a service with its own price.
/// Its tokens are minted for `<service>.<route>` and are valid on this route only.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Route name; the token's service name is `<service>.<name>`.
    pub name: String,
    /// Path prefix this route covers (this or `path_regex`).
    pub path: Option<String>,
    /// Regular expression the canonical path must match (this or `path`).
    pub path_regex: Option<String>,
    /// Only this HTTP method (default: any).
    pub method: Option<String>,
    /// Price of one payment in satoshis (`0`: free).
    pub price_sats: u64,
    /// How many calls one payment buys (default 1; not with `time_pass_secs`).
    pub calls_per_payment: Option<u64>,
    /// A payment buys unlimited calls on this route for this many seconds.
    pub time_pass_secs: Option<u64>,
    /// If set, counted tokens also expire this many seconds after they are issued.
    pub token_lifetime_secs: Option<u64>,
    /// What this route does (1 to 1000 characters); default: the service's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON Schema of this route's arguments; default: the service's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<serde_json::Value>,
}

impl RouteConfig {
    /// A route of `name` at `path` for `price_sats`, per call, every other option unset.
    pub fn new(name: impl Into<String>, path: impl Into<String>, price_sats: u64) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            path: Some(path.into()),
            path_regex: None,
            method: None,
            price_sats,
            calls_per_payment: None,
            time_pass_secs: None,
            token_lifetime_secs: None,
            description: None,
            input_schema: None,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("constant address parses")
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("turnpike-data")
}
fn default_credential_memo() -> usize {
    crate::verified::DEFAULT_CAPACITY
}
fn default_invoice_expiry() -> u32 {
    DEFAULT_INVOICE_EXPIRY_SECS
}
fn default_upstream_timeout() -> u64 {
    DEFAULT_UPSTREAM_TIMEOUT_SECS
}

impl GatewayConfig {
    /// A configuration with every option at its default, no services, and `backend`.
    pub fn new(backend: BackendConfig) -> GatewayConfig {
        GatewayConfig {
            listen: default_listen(),
            data_dir: default_data_dir(),
            workers: 0,
            credential_memo: crate::verified::DEFAULT_CAPACITY,
            invoice_expiry_secs: DEFAULT_INVOICE_EXPIRY_SECS,
            master_key: None,
            trusted_proxies: Vec::new(),
            forwarded_header: default_forwarded_header(),
            connections: ConnectionsConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            idempotency: IdempotencyConfig::default(),
            store: StoreConfig::default(),
            backend,
            check_settlement: None,
            admin: AdminConfig::default(),
            x402: None,
            services: Vec::new(),
            aperture: None,
            hub: None,
        }
    }

    /// The number of worker threads to serve with: `workers`, or one per CPU core.
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// Reads, parses and validates a config file. Relative `data_dir` is resolved against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = GatewayConfig::parse(&text)?;
        if config.data_dir.is_relative() {
            let base = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            config.data_dir = base.join(&config.data_dir);
        }
        Ok(config)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<GatewayConfig, ConfigError> {
        let config: GatewayConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse(parse_error(text, &e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every top-level value; the error names the first key at fault. Services are
    /// checked as they are parsed ([`crate::router::Router::from_configs`]), trusted proxies
    /// when the gateway is built.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.invoice_expiry_secs < 10 || self.invoice_expiry_secs > 7 * 24 * 3600 {
            return Err(invalid(
                "invoice_expiry_secs",
                "must be between 10 and 604800 seconds",
            ));
        }
        if let Some(url) = &self.store.url
            && !["sqlite:", "postgres://", "postgresql://"]
                .iter()
                .any(|p| url.starts_with(p))
        {
            // The URL may hold a password: it is not repeated in the message.
            return Err(invalid(
                "store.url",
                "unsupported store: expected sqlite://PATH or postgres://USER@HOST/DB",
            ));
        }
        if let Some(a) = &self.aperture {
            if !["sqlite:", "postgres://", "postgresql://"]
                .iter()
                .any(|p| a.secrets.starts_with(p))
            {
                return Err(invalid(
                    "aperture.secrets",
                    "expected sqlite:///PATH/aperture.db or postgres://USER@HOST/DB",
                ));
            }
            if a.cache_secs == 0 || a.cache_secs > 86_400 {
                return Err(invalid(
                    "aperture.cache_secs",
                    "must be between 1 and 86400 seconds",
                ));
            }
            if a.calls_per_token == Some(0) {
                return Err(invalid("aperture.calls_per_token", "must be at least 1"));
            }
        }
        self.connections.validate()?;
        self.admin.validate(self.listen)?;
        if let Some(i) = self.services.iter().position(|s| s.provider.is_some()) {
            return Err(invalid(
                format!("services[{i}].provider"),
                "a provider's services are registered through the admin API, not the config file",
            ));
        }
        let limits = [
            ("rate_limits.per_ip", self.rate_limits.per_ip),
            ("rate_limits.per_token", self.rate_limits.per_token),
        ];
        for (key, limit) in limits {
            if let Some(l) = limit {
                l.validate().map_err(|m| invalid(key, m))?;
            }
        }
        let idem = &self.idempotency;
        if idem.window_secs == 0 || idem.stale_after_secs == 0 {
            return Err(invalid(
                "idempotency",
                "window_secs and stale_after_secs must be at least 1",
            ));
        }
        let optional = [
            (
                "rate_limits.challenges_per_ip",
                self.rate_limits.challenges_per_ip,
            ),
            (
                "rate_limits.refunds_per_token",
                self.rate_limits.refunds_per_token,
            ),
        ];
        for (key, limit) in optional {
            if limit.requests != 0 {
                limit.validate().map_err(|m| invalid(key, m))?;
            }
        }
        Ok(())
    }

    /// Whether first uses of tokens are checked with the backend.
    pub fn checks_settlement(&self) -> bool {
        self.check_settlement
            .unwrap_or(!matches!(self.backend, BackendConfig::Dev(_)))
    }

    /// The store URL in effect.
    pub fn store_url(&self) -> String {
        match &self.store.url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("turnpike.db").display()),
        }
    }
}

/// `pricer = { url = "...", timeout_ms = 1000, body_bytes = 4096 }` on a service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PricerConfig {
    /// Where to POST price requests (`http://` or `https://`).
    pub url: String,
    /// Time allowed for an answer, in milliseconds (default 1000).
    #[serde(default = "default_pricer_timeout_ms")]
    pub timeout_ms: u64,
    /// How many leading bytes of the request body the pricer sees (default 4096, at most 1 MiB).
    #[serde(default = "default_pricer_body_bytes")]
    pub body_bytes: usize,
}

fn default_pricer_timeout_ms() -> u64 {
    1000
}
fn default_pricer_body_bytes() -> usize {
    4096
}
