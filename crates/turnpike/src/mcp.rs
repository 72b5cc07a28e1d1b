//! `turnpike mcp`: an MCP server (the official Rust SDK, `rmcp`) that lets an agent pay for
//! HTTP calls with one wallet, within the wallet file's budget, recorded in the ledger.
//!
//! Tools: `l402_fetch`, `l402_quote`, `l402_balance`, `l402_spending_report`, `l402_discover`
//! and `l402_lower_budget`. Budgets come from the wallet file only; `l402_lower_budget` and
//! `max_sats` can lower them for the current connection, never raise them. Above
//! `approve_above` the person is asked through MCP elicitation when the client supports it;
//! otherwise the payment is refused. URLs reaching private, loopback or link-local addresses are
//! refused unless allowed. Every failure is a tool error with a plain message.
//!
//! With `--hub URL`, each service of the hub's directory is a tool too ([`hub`]): a call
//! becomes a request on the hub, paid by the same client, budget and ledger as `l402_fetch`.

mod directory;
mod guard;
mod hub;
mod hub_tools;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::Args;
use http::Method;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
    Tool, ToolAnnotations,
};
use rmcp::service::{ElicitationMode, RequestContext};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, ServiceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use turnpike_client::budget::{Budget, Period, TokenBudget, UnitsWindow, Window};
use turnpike_client::ledger::now_unix;
use turnpike_client::spend::{Accounting, Approver, Quote};
use turnpike_client::x402pay::X402Wallet;
use turnpike_client::{ClientError, FetchRequest, L402Client, Quoted};
use turnpike_l402::Sats;
use turnpike_lightning::PaymentBackend;
use turnpike_lightning::config::BackendConfig;
use turnpike_lightning::dev_wallet::DevPayWallet;

use crate::wallets::WalletEntry;
use guard::AllowedHosts;

/// The most of a response body an `l402_fetch` returns, by default.
const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// The most of a discovery document read.
const MAX_MANIFEST: usize = 256 * 1024;
/// How long the person has to answer an approval request.
const APPROVAL_TIMEOUT: Duration = Duration::from_secs(300);

/// Arguments of `turnpike mcp`.
#[derive(Args)]
pub struct McpArgs {
    /// The wallet that pays ('dev' pays through the dev endpoint of the gateway called, no real
    /// money; any other name is looked up in the wallet file).
    #[arg(long, default_value = "dev")]
    wallet: String,
    /// The wallet file (default: $TURNPIKE_WALLETS, else ~/.config/turnpike/wallets.toml).
    #[arg(long)]
    wallet_config: Option<PathBuf>,
    /// Serve MCP over streamable HTTP on this address (path /mcp) instead of stdio. A bearer
    /// token ($TURNPIKE_MCP_TOKEN) is required on any address but loopback.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// The bearer token HTTP clients must send (required with a non-loopback --http address).
    #[arg(long, env = "TURNPIKE_MCP_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A host the tools may reach although it resolves to a private, loopback or link-local
    /// address (repeatable; adds to allow_hosts of the wallet file's [mcp] table).
    #[arg(long = "allow-host", value_name = "HOST")]
    allow_hosts: Vec<String>,
    /// Most one call may pay, in sats (a tool's max_sats can only lower it).
    #[arg(long, default_value_t = 100)]
    max_sats: u64,
    /// Most bytes of a response body returned to the agent.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY)]
    max_body_bytes: usize,
    /// A Turnpike hub whose directory's services become tools (a loopback or private hub
    /// needs --allow-host too).
    #[arg(long, value_name = "URL")]
    hub: Option<String>,
    /// How old the hub's list of services may get before tools/list reads it again, seconds.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    hub_ttl_secs: u64,
}

/// What every connection shares: the wallet, its accounting, the guard.
struct Shared {
    wallet: String,
    entry: WalletEntry,
    /// The paying backend (none for a dev wallet: it pays the gateway it calls).
    backend: Option<Arc<dyn PaymentBackend>>,
    accounting: Accounting,
    /// The wallet's x402 key and assets, if it has them.
    x402: Option<X402Wallet>,
    allowed: AllowedHosts,
    http: reqwest::Client,
    max_sats: u64,
    max_body: usize,
    /// The hub of `--hub`, its services as tools.
    hub: Option<hub::Hub>,
}

/// One MCP connection: the shared state and the budgets lowered for this connection only.
#[derive(Clone)]
struct TurnpikeMcp {
    shared: Arc<Shared>,
    /// The version of the hub's tools this connection was last given or told of (0: none).
    hub_seen: Arc<std::sync::atomic::AtomicU64>,
    /// The hub's tools this connection was last given by `tools/list`: its calls reach those.
    hub_shown: Arc<Mutex<Option<Arc<hub::Tools>>>>,
    lowered: Arc<Mutex<Budget>>,
    /// Lowers every x402 asset's budget (each keeps its own windows' periods).
    lowered_x402: Arc<Mutex<TokenBudget>>,
}

/// The request of `l402_fetch` and `l402_quote`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RequestParams {
    /// The URL (http or https).
    url: String,
    /// The HTTP method (default GET, or POST when a body is given).
    #[serde(default)]
    method: Option<String>,
    /// Request headers, name to value.
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    /// The request body, as text.
    #[serde(default)]
    body: Option<String>,
    /// The request body, base64 (instead of `body`).
    #[serde(default)]
    body_base64: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct FetchParams {
    #[serde(flatten)]
    request: RequestParams,
    /// The most this call may pay over Lightning, in sats; it can only lower the server's
    /// limit and the wallet's budget. It does not bound an x402 payment (bounded by the
    /// asset's budget; lower that with l402_lower_budget's x402_* keys).
    #[serde(default)]
    max_sats: Option<u64>,
}

/// The result of `l402_fetch`.
#[derive(Debug, Serialize, JsonSchema)]
struct FetchOutput {
    /// The final HTTP status.
    status: u16,
    /// Response headers (repeated ones joined with ", ").
    headers: BTreeMap<String, String>,
    /// The body: text when it is UTF-8, else base64.
    body: String,
    /// "text" or "base64".
    body_encoding: String,
    /// Whether a payment was made for this call.
    paid: bool,
    /// Sats paid (invoice amount, rounded up), 0 when nothing was paid.
    paid_sats: u64,
    /// Routing fee paid, msat.
    fee_msat: u64,
    /// The payment hash, hex, when a payment was made.
    payment_hash: Option<String>,
    /// Whether a stored token paid earlier was used instead of paying.
    reused_token: bool,
    /// The x402 (stablecoin) payment made for this call, if any.
    x402_payment: Option<X402Output>,
}

/// An x402 payment made by `l402_fetch`.
#[derive(Debug, Serialize, JsonSchema)]
struct X402Output {
    /// The asset, `network/address`.
    asset: String,
    /// The amount in the asset's base units (USDC: millionths), as a decimal string.
    amount_units: String,
    /// The recipient.
    pay_to: String,
    /// Whether it settled.
    settled: bool,
    /// The settlement transaction, when reported.
    transaction: Option<String>,
}

/// The result of `l402_quote`.
#[derive(Debug, Serialize, JsonSchema)]
struct QuoteOutput {
    /// Whether the server asks for payment.
    payment_required: bool,
    /// The HTTP status when no payment is asked.
    status: Option<u16>,
    /// The invoice amount, sats (rounded up).
    amount_sats: Option<u64>,
    /// Amount plus the fee reserve: what the budget is checked against.
    reserve_sats: Option<u64>,
    /// The service the token is for.
    service: Option<String>,
    /// The invoice's payment hash.
    payment_hash: Option<String>,
    /// Whether the budget would allow paying it now.
    allowed: bool,
    /// Whether paying needs the person's approval (approve_above).
    needs_approval: bool,
    /// Why the budget would refuse it.
    refusal: Option<String>,
    /// When the wallet would pay over x402: the asset (`network/address`).
    x402_asset: Option<String>,
    /// When the wallet would pay over x402: the amount in the asset's base units.
    x402_amount_units: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoParams {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReportParams {
    /// Only payments since this date (YYYY-MM-DD, UTC) or unix time.
    #[serde(default)]
    since: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct DiscoverParams {
    /// The gateway's URL (any path: its origin's /.well-known/l402.json is read).
    url: String,
}

/// Lower limits for this connection, in sats; each only applies when below the wallet's.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct LowerParams {
    /// Most one payment may cost.
    #[serde(default)]
    max_per_call: Option<u64>,
    /// Most spent on one origin per the wallet's per_host window (a day when it has none).
    #[serde(default)]
    per_host_sats: Option<u64>,
    /// Most spent in all per the wallet's per_period window (a day when it has none).
    #[serde(default)]
    per_period_sats: Option<u64>,
    /// Most ever spent by the wallet.
    #[serde(default)]
    total: Option<u64>,
    /// Above this, ask the person.
    #[serde(default)]
    approve_above: Option<u64>,
    /// x402: most one payment may cost, in base units of the asset (USDC: 10000 = 0.01), for
    /// every asset of the wallet.
    #[serde(default)]
    x402_max_per_call: Option<u64>,
    /// x402: most spent on one origin per the asset's per_host window (a day when it has none),
    /// base units.
    #[serde(default)]
    x402_per_host_units: Option<u64>,
    /// x402: most spent in all per the asset's per_period window (a day when it has none), base
    /// units.
    #[serde(default)]
    x402_per_period_units: Option<u64>,
    /// x402: most ever spent in each asset, base units.
    #[serde(default)]
    x402_total: Option<u64>,
    /// x402: above this many base units, ask the person.
    #[serde(default)]
    x402_approve_above: Option<u64>,
}

/// The person's answer to an approval request.
#[derive(Debug, Deserialize, JsonSchema)]
struct Approval {
    /// Pay it?
    approve: bool,
}
rmcp::elicit_safe!(Approval);

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn min_window(a: Option<Window>, b: Option<Window>) -> Option<Window> {
    match (a, b) {
        (Some(x), Some(y)) => Some(Window {
            sats: x.sats.min(y.sats),
            per: x.per,
        }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The stricter of two budgets, limit by limit (windows keep `a`'s period).
fn stricter(a: &Budget, b: &Budget) -> Budget {
    Budget {
        max_per_call: min_opt(a.max_per_call, b.max_per_call),
        per_host: min_window(a.per_host, b.per_host),
        per_period: min_window(a.per_period, b.per_period),
        total: min_opt(a.total, b.total),
        approve_above: min_opt(a.approve_above, b.approve_above),
    }
}

/// What bounds the payment of one call, besides the budget and --max-sats.
#[derive(Debug, Clone, Copy, Default)]
struct Limit {
    /// Sats (a tool's `max_sats`; it can only lower --max-sats).
    max_sats: Option<u64>,
    /// The amount a hub's directory listed, msat: see [`for_listed_amount`].
    listed_msat: Option<u64>,
}

/// `client` for a hub's tool listed at `listed` msat: it pays over Lightning only (an x402
/// price, in a stablecoin, cannot be held to a listed amount in msat; a hub's providers are
/// paid over Lightning) and never an invoice above `listed`, to the msat.
fn for_listed_amount(client: L402Client, listed: u64) -> L402Client {
    client
        .with_x402(None, turnpike_client::x402pay::Rail::L402)
        .with_max_amount(turnpike_l402::Msat(listed))
}

/// A tool error with a plain message.
fn tool_error(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

fn structured<T: Serialize>(value: &T) -> CallToolResult {
    match serde_json::to_value(value) {
        Ok(v) => CallToolResult::structured(v),
        Err(e) => tool_error(format!("cannot encode the result: {e}")),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(
    request: &CallToolRequestParams,
) -> Result<T, CallToolResult> {
    let args = serde_json::Value::Object(request.arguments.clone().unwrap_or_default());
    serde_json::from_value(args)
        .map_err(|e| tool_error(format!("invalid arguments for {}: {e}", request.name)))
}

/// Why a response body was not read whole.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("reading the body failed: {0}")]
    Read(#[source] reqwest::Error),
}

/// The body of `resp`, at most `max` bytes: a larger one (announced or streamed) is refused
/// without reading the rest.
async fn read_bounded(resp: &mut reqwest::Response, max: usize) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge(max));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error and its causes on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let m = s.to_string();
        if !text.contains(&m) {
            text.push_str(": ");
            text.push_str(&m);
        }
        source = s.source();
    }
    text
}

fn tool<P: JsonSchema + 'static>(name: &'static str, description: &'static str) -> Tool {
    Tool::new(name, description, Arc::new(serde_json::Map::new())).with_input_schema::<P>()
}

fn read_only(title: &str) -> ToolAnnotations {
    ToolAnnotations::with_title(title)
        .read_only(true)
        .destructive(false)
        .open_world(true)
}

/// The names of the built-in tools (a hub's tools never take them).
fn builtin_names() -> Vec<String> {
    tools().into_iter().map(|t| t.name.into_owned()).collect()
}

fn tools() -> Vec<Tool> {
    vec![
        tool::<FetchParams>(
            "l402_fetch",
            "Fetch a URL, paying its HTTP 402 price from the wallet within the budget (L402 over \
             Lightning, or x402 in a stablecoin when the wallet has an x402 key), and return the \
             status, headers and body, with what was paid. max_sats bounds Lightning payments \
             only; x402 payments are bounded by the wallet's per-asset budget.",
        )
        .with_output_schema::<FetchOutput>()
        .with_annotations(
            ToolAnnotations::with_title("Fetch, paying if asked")
                .read_only(false)
                .destructive(false)
                .idempotent(false)
                .open_world(true),
        ),
        tool::<RequestParams>(
            "l402_quote",
            "What a URL would cost: the price of its L402 challenge (or of the x402 offer the \
             wallet would pay) and whether the budget allows it. Nothing is paid.",
        )
        .with_output_schema::<QuoteOutput>()
        .with_annotations(read_only("Price of a URL")),
        tool::<NoParams>(
            "l402_balance",
            "The wallet's balance and what its budget has left.",
        )
        .with_annotations(read_only("Wallet balance and budget left")),
        tool::<ReportParams>(
            "l402_spending_report",
            "What the wallet spent: totals per origin and per day, and the payments.",
        )
        .with_annotations(read_only("Spending report")),
        tool::<DiscoverParams>(
            "l402_discover",
            "Read an L402 gateway's catalogue (/.well-known/l402.json): its services, paths, \
             prices and pricing modes.",
        )
        .with_annotations(read_only("Discover a gateway's paid services")),
        tool::<LowerParams>(
            "l402_lower_budget",
            "Lower the budget for this connection: limits in sats, and x402_* limits in base \
             units of each x402 asset. It can never raise a limit of the wallet file.",
        )
        .with_annotations(
            ToolAnnotations::with_title("Lower the budget for this connection")
                .read_only(false)
                .destructive(false)
                .idempotent(true)
                .open_world(false),
        ),
    ]
}

impl TurnpikeMcp {
    fn new(shared: Arc<Shared>) -> TurnpikeMcp {
        TurnpikeMcp {
            shared,
            hub_seen: Arc::default(),
            hub_shown: Arc::default(),
            lowered: Arc::new(Mutex::new(Budget::default())),
            lowered_x402: Arc::new(Mutex::new(TokenBudget::default())),
        }
    }

    /// The budget in force on this connection: the wallet's, lowered by this connection.
    fn budget(&self) -> Budget {
        let lowered = *self
            .lowered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        stricter(&self.shared.entry.budget, &lowered)
    }

    /// The wallet's x402 side under this connection's lowered x402 limits.
    fn x402_wallet(&self) -> Option<X402Wallet> {
        let lowered = *self
            .lowered_x402
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let wallet = self.shared.x402.as_ref()?;
        Some(wallet.with_budgets(|b| b.stricter(&lowered)))
    }

    fn request(params: RequestParams) -> Result<FetchRequest, String> {
        let url: reqwest::Url = params
            .url
            .parse()
            .map_err(|e| format!("invalid URL {:?}: {e}", params.url))?;
        let body = match (params.body, params.body_base64) {
            (Some(_), Some(_)) => return Err("give body or body_base64, not both".into()),
            (Some(text), None) => Some(bytes::Bytes::from(text)),
            (None, Some(b64)) => Some(bytes::Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| format!("body_base64 is not base64: {e}"))?,
            )),
            (None, None) => None,
        };
        let method = match params.method.as_deref() {
            Some(m) => Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("invalid method {m:?}"))?,
            None if body.is_some() => Method::POST,
            None => Method::GET,
        };
        let mut headers = http::HeaderMap::new();
        for (name, value) in params.headers.unwrap_or_default() {
            let n = http::HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("invalid header name {name:?}"))?;
            if n == http::header::AUTHORIZATION || n == http::header::HOST {
                return Err(format!(
                    "the {n} header is set by turnpike, not by the agent"
                ));
            }
            let v = http::HeaderValue::from_str(value.trim())
                .map_err(|_| format!("invalid value for header {name:?}"))?;
            headers.append(n, v);
        }
        Ok(FetchRequest {
            method,
            url,
            headers,
            body,
        })
    }

    /// An approver asking the person through the MCP client, if it supports elicitation.
    fn approver(peer: &Peer<RoleServer>) -> Option<Approver> {
        if !peer
            .supported_elicitation_modes()
            .contains(&ElicitationMode::Form)
        {
            return None;
        }
        let peer = peer.clone();
        Some(Arc::new(move |quote: Quote| {
            let peer = peer.clone();
            Box::pin(async move {
                let message = format!(
                    "Turnpike: {}? Your budget asks for approval above approve_above.",
                    quote.question()
                );
                matches!(
                    peer.elicit_with_timeout::<Approval>(message, Some(APPROVAL_TIMEOUT))
                        .await,
                    Ok(Some(Approval { approve: true }))
                )
            })
        }))
    }

    /// A client for `url` paying with the wallet under this connection's budget, within
    /// `limit`.
    fn client(
        &self,
        url: &reqwest::Url,
        limit: Limit,
        approver: Option<Approver>,
        http: &reqwest::Client,
    ) -> Result<L402Client, String> {
        let s = &self.shared;
        let backend: Arc<dyn PaymentBackend> = match &s.backend {
            Some(b) => b.clone(),
            None => {
                Arc::new(DevPayWallet::for_origin(url).map_err(|e| format!("dev wallet: {e}"))?)
            }
        };
        let mut accounting = s.accounting.clone();
        accounting.budget = self.budget();
        accounting.approver = approver;
        let cap = limit.max_sats.map_or(s.max_sats, |m| m.min(s.max_sats));
        let client = L402Client::new(backend, Sats(cap))
            .map_err(|e| chain(&e))?
            .with_http_client(http.clone())
            .with_accounting(accounting)
            .with_x402(self.x402_wallet(), s.entry.prefer());
        let client = match s.entry.backend {
            Some(_) => client,
            None => client.without_lightning(),
        };
        Ok(match limit.listed_msat {
            Some(listed) => for_listed_amount(client, listed),
            None => client,
        })
    }

    fn client_error(e: &ClientError, could_ask: bool) -> String {
        match e {
            ClientError::NotApproved(q) if !could_ask => format!(
                "paying {} needs the person's approval (above approve_above) and this MCP \
                 client cannot ask them (no elicitation support): nothing was paid",
                q.price()
            ),
            ClientError::NotApproved(q) | ClientError::Declined(q) => format!(
                "the person did not approve paying {} for {}: nothing was paid",
                q.price(),
                q.url
            ),
            e => chain(e),
        }
    }

    async fn fetch(&self, params: FetchParams, peer: &Peer<RoleServer>) -> CallToolResult {
        let req = match Self::request(params.request) {
            Ok(r) => r,
            Err(e) => return tool_error(e),
        };
        let limit = Limit {
            max_sats: params.max_sats,
            listed_msat: None,
        };
        match self
            .pay_and_fetch(req, limit, peer, &self.shared.http)
            .await
        {
            Ok(out) => structured(&out),
            Err(e) => tool_error(e),
        }
    }

    /// Sends `req` through the paying client (the wallet, this connection's budget, approval,
    /// the ledger) with `http`, paying within `limit` (and --max-sats); the answer, its
    /// body read up to --max-body-bytes. Every failure is a plain message.
    async fn pay_and_fetch(
        &self,
        req: FetchRequest,
        limit: Limit,
        peer: &Peer<RoleServer>,
        http: &reqwest::Client,
    ) -> Result<FetchOutput, String> {
        guard::check_url(&req.url, &self.shared.allowed).await?;
        let approver = Self::approver(peer);
        let could_ask = approver.is_some();
        let client = self.client(&req.url, limit, approver, http)?;
        let fetched = client
            .fetch(req)
            .await
            .map_err(|e| Self::client_error(&e, could_ask))?;
        let receipt = fetched.receipt;
        let x402 = fetched.x402.map(|x| X402Output {
            asset: x.asset,
            amount_units: x.amount_units.to_string(),
            pay_to: x.pay_to,
            settled: x.settled,
            transaction: x.transaction,
        });
        let paid_note = match (&receipt, &x402) {
            (Some(r), _) => format!(
                " (a payment of {} sats was made, payment hash {})",
                r.amount.to_sats_ceil().0,
                r.payment_hash.to_hex()
            ),
            (None, Some(x)) => format!(
                " (an x402 payment of {} base units of {} was made)",
                x.amount_units, x.asset
            ),
            (None, None) => String::new(),
        };
        let mut response = fetched.response;
        let status = response.status().as_u16();
        let headers = agent_headers(response.headers());
        let body = read_bounded(&mut response, self.shared.max_body)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge(max) => format!(
                    "the response body is larger than {max} bytes (--max-body-bytes): not \
                     returned{paid_note}"
                ),
                BodyError::Read(e) => {
                    format!("reading the response body failed: {}{paid_note}", chain(&e))
                }
            })?;
        let (body, body_encoding) = match String::from_utf8(body) {
            Ok(text) => (text, "text"),
            Err(e) => (
                base64::engine::general_purpose::STANDARD.encode(e.as_bytes()),
                "base64",
            ),
        };
        Ok(FetchOutput {
            status,
            headers,
            body,
            body_encoding: body_encoding.into(),
            paid: receipt.is_some() || x402.is_some(),
            paid_sats: receipt.as_ref().map_or(0, |r| r.amount.to_sats_ceil().0),
            fee_msat: receipt.as_ref().map_or(0, |r| r.fee.0),
            payment_hash: receipt.as_ref().map(|r| r.payment_hash.to_hex()),
            reused_token: fetched.reused_token,
            x402_payment: x402,
        })
    }

    /// A call of a hub's tool: the request of the directory's convention, paid as `l402_fetch`
    /// pays but never above the amount the directory lists (to the msat, over Lightning only),
    /// through the hub-only client; a tool error when the hub answers 400 or above.
    async fn call_hub(
        &self,
        hub: &hub::Hub,
        tool: &hub::HubTool,
        args: serde_json::Map<String, serde_json::Value>,
        peer: &Peer<RoleServer>,
    ) -> CallToolResult {
        let req = match hub_tools::request(hub.base(), &tool.entry, args) {
            Ok(r) => r,
            Err(e) => return tool_error(format!("{}: {e}; nothing was sent", tool.tool.name)),
        };
        let listed = tool.entry.amount_msat.div_ceil(1000);
        let limit = Limit {
            max_sats: Some(listed),
            listed_msat: Some(tool.entry.amount_msat),
        };
        match self.pay_and_fetch(req, limit, peer, hub.http()).await {
            Ok(out) => {
                let mut result = structured(&out);
                result.is_error = Some(out.status >= 400);
                result
            }
            Err(e) => tool_error(format!(
                "{}: {e} (this tool pays at most the {listed} sat the hub's directory lists \
                 ({} msat), over Lightning only, and never more than --max-sats)",
                tool.tool.name, tool.entry.amount_msat
            )),
        }
    }

    async fn quote(&self, params: RequestParams) -> CallToolResult {
        let req = match Self::request(params) {
            Ok(r) => r,
            Err(e) => return tool_error(e),
        };
        if let Err(e) = guard::check_url(&req.url, &self.shared.allowed).await {
            return tool_error(e);
        }
        let client = match self.client(&req.url, Limit::default(), None, &self.shared.http) {
            Ok(c) => c,
            Err(e) => return tool_error(e),
        };
        let out = match client.quote(req).await {
            Ok(Quoted::Free(resp)) => QuoteOutput {
                payment_required: false,
                status: Some(resp.status().as_u16()),
                amount_sats: None,
                reserve_sats: None,
                service: None,
                payment_hash: None,
                allowed: true,
                needs_approval: false,
                refusal: None,
                x402_asset: None,
                x402_amount_units: None,
            },
            Ok(Quoted::Priced(q)) => QuoteOutput {
                payment_required: true,
                status: None,
                amount_sats: Some(q.amount_msat.div_ceil(1000)),
                reserve_sats: Some(q.reserve_msat.div_ceil(1000)),
                service: q.service.clone(),
                payment_hash: Some(q.payment_hash.clone()),
                allowed: q.refusal.is_none(),
                needs_approval: q.needs_approval,
                refusal: q.refusal.map(|r| r.to_string()),
                x402_asset: None,
                x402_amount_units: None,
            },
            Ok(Quoted::X402(q)) => QuoteOutput {
                payment_required: true,
                status: None,
                amount_sats: None,
                reserve_sats: None,
                service: None,
                payment_hash: None,
                allowed: q.refusal.is_none(),
                needs_approval: q.needs_approval,
                refusal: q.refusal.map(|r| r.to_string()),
                x402_asset: Some(q.asset),
                x402_amount_units: Some(q.amount_units.to_string()),
            },
            Err(e) => return tool_error(chain(&e)),
        };
        structured(&out)
    }

    async fn balance(&self) -> CallToolResult {
        let s = &self.shared;
        let budget = self.budget();
        let balance = match &s.backend {
            Some(b) => b.balance().await.map_err(|e| chain(&e)),
            None => Err("a dev wallet has no balance of its own".to_owned()),
        };
        let spent = match s
            .accounting
            .ledger
            .spent(&s.wallet, "", &budget, now_unix())
            .await
        {
            Ok(spent) => spent,
            Err(e) => return tool_error(format!("reading the ledger failed: {}", chain(&e))),
        };
        let mut x402 = Vec::new();
        for asset in self.x402_wallet().iter().flat_map(|w| w.assets().to_vec()) {
            let key = asset.key();
            let spent = s
                .accounting
                .ledger
                .spent_units(&s.wallet, &key, "", &asset.budget, now_unix())
                .await;
            let spent = match spent {
                Ok(spent) => spent,
                Err(e) => return tool_error(format!("reading the ledger failed: {}", chain(&e))),
            };
            let left = |cap: Option<u64>, used: u128| {
                cap.map(|c| u128::from(c).saturating_sub(used).to_string())
            };
            x402.push(serde_json::json!({
                "asset": key,
                "decimals": asset.decimals,
                "budget": asset.budget,
                "spent_total_units": spent.total.to_string(),
                "left_in_period_units": left(asset.budget.per_period.map(|w| w.units), spent.period_window),
                "left_in_total_units": left(asset.budget.total, spent.total),
            }));
        }
        CallToolResult::structured(serde_json::json!({
            "wallet": s.wallet,
            "balance_sats": balance.as_ref().ok().map(|m| m.0 / 1000),
            "balance_error": balance.as_ref().err(),
            "spent_total_sats": crate::ledger_cmd::sats(spent.total.0),
            "budget": budget,
            "budget_left": crate::ledger_cmd::left(&budget, &spent),
            "max_sats_per_call": s.max_sats,
            "x402": x402,
        }))
    }

    async fn report(&self, params: ReportParams) -> CallToolResult {
        let s = &self.shared;
        let since = match params.since.as_deref().map(crate::ledger_cmd::parse_since) {
            Some(Err(e)) => return tool_error(format!("{e:#}")),
            Some(Ok(t)) => Some(t),
            None => None,
        };
        let rows = match s.accounting.ledger.payments(Some(&s.wallet), since).await {
            Ok(r) => r,
            Err(e) => return tool_error(format!("reading the ledger failed: {}", chain(&e))),
        };
        let t = crate::ledger_cmd::totals(&rows);
        let to_sats = |m: &BTreeMap<String, u64>| -> BTreeMap<String, u64> {
            m.iter()
                .map(|(k, v)| (k.clone(), crate::ledger_cmd::sats(*v)))
                .collect()
        };
        // Neither preimages nor macaroons: together they are the credentials.
        let payments: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id,
                    "time": r.created_at,
                    "url": r.url,
                    "origin": r.origin,
                    "service": r.service,
                    "amount_sats": r.amount_msat.div_ceil(1000),
                    "fee_msat": r.fee_msat,
                    "charged_msat": r.charged_msat(),
                    "state": r.state,
                    "http_status": r.http_status,
                    "payment_hash": r.payment_hash,
                    "rail": r.rail,
                    "asset": r.asset,
                    "amount_units": r.amount_units,
                    "tx_hash": r.tx_hash,
                })
            })
            .collect();
        CallToolResult::structured(serde_json::json!({
            "wallet": s.wallet,
            "since": since,
            "total_sats": crate::ledger_cmd::sats(t.total),
            "total_msat": t.total,
            "by_origin": to_sats(&t.by_origin),
            "by_day": to_sats(&t.by_day),
            "x402_units_by_asset": crate::ledger_cmd::x402_totals(&rows),
            "payments": payments,
        }))
    }

    async fn discover(&self, params: DiscoverParams) -> CallToolResult {
        let url: reqwest::Url = match params.url.parse() {
            Ok(u) => u,
            Err(e) => return tool_error(format!("invalid URL {:?}: {e}", params.url)),
        };
        let Ok(manifest_url) = url.join("/.well-known/l402.json") else {
            return tool_error(format!("the URL {url} cannot have a well-known path"));
        };
        if let Err(e) = guard::check_url(&manifest_url, &self.shared.allowed).await {
            return tool_error(e);
        }
        let mut resp = match self.shared.http.get(manifest_url.clone()).send().await {
            Ok(r) => r,
            Err(e) => return tool_error(format!("fetching {manifest_url}: {}", chain(&e))),
        };
        if !resp.status().is_success() {
            return tool_error(format!(
                "{manifest_url} answered HTTP {}: the server publishes no L402 catalogue",
                resp.status()
            ));
        }
        let body = match read_bounded(&mut resp, MAX_MANIFEST).await {
            Ok(body) => body,
            Err(BodyError::TooLarge(max)) => {
                return tool_error(format!("{manifest_url} is larger than {max} bytes"));
            }
            Err(BodyError::Read(e)) => {
                return tool_error(format!("reading {manifest_url}: {}", chain(&e)));
            }
        };
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(manifest) => CallToolResult::structured(serde_json::json!({
                "url": manifest_url.as_str(),
                "manifest": manifest,
            })),
            Err(e) => tool_error(format!("{manifest_url} is not JSON: {e}")),
        }
    }

    fn lower(&self, params: LowerParams) -> CallToolResult {
        let file = &self.shared.entry.budget;
        let window = |file_w: Option<Window>, sats: Option<u64>| {
            sats.map(|sats| Window {
                sats,
                per: file_w.map_or(Period::Day, |w| w.per),
            })
        };
        let asked = Budget {
            max_per_call: params.max_per_call,
            per_host: window(file.per_host, params.per_host_sats),
            per_period: window(file.per_period, params.per_period_sats),
            total: params.total,
            approve_above: params.approve_above,
        };
        {
            let mut lowered = self
                .lowered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let current = stricter(file, &lowered);
            *lowered = stricter(&current, &asked);
        }
        let units = |units: Option<u64>| {
            units.map(|units| UnitsWindow {
                units,
                per: Period::Day,
            })
        };
        let asked_x402 = TokenBudget {
            max_per_call: params.x402_max_per_call,
            per_host: units(params.x402_per_host_units),
            per_period: units(params.x402_per_period_units),
            total: params.x402_total,
            approve_above: params.x402_approve_above,
        };
        let x402 = {
            let mut lowered = self
                .lowered_x402
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *lowered = lowered.stricter(&asked_x402);
            *lowered
        };
        let x402_budgets: Vec<serde_json::Value> = self
            .x402_wallet()
            .map(|w| {
                w.assets()
                    .iter()
                    .map(|a| serde_json::json!({"asset": a.key(), "budget": a.budget}))
                    .collect()
            })
            .unwrap_or_default();
        CallToolResult::structured(serde_json::json!({
            "budget": self.budget(),
            "x402_lowered": x402,
            "x402_budgets": x402_budgets,
            "note": "limits only ever go down; they last as long as this connection",
        }))
    }
}

impl ServerHandler for TurnpikeMcp {
    fn get_info(&self) -> ServerConfig {
        let capabilities = match self.shared.hub {
            Some(_) => ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
            None => ServerCapabilities::builder().enable_tools().build(),
        };
        let hub = match &self.shared.hub {
            Some(h) => format!(
                " The other tools are the paid services of the hub {}: each call pays its \
                 listed price from the same wallet and budget.",
                h.base().url()
            ),
            None => String::new(),
        };
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("turnpike", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "Pays for HTTP APIs that answer 402 (L402, Lightning) with wallet {:?}, within \
                 the budget its owner set. Use l402_quote to see a price, l402_fetch to pay and \
                 fetch, l402_balance and l402_spending_report to see what is left and spent.{hub}",
                self.shared.wallet
            ))
    }

    // Approval is asked with a request from server to client (elicitation), which the
    // 2026-07-28 revision replaced; the revisions up to 2025-11-25 are offered.
    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        std::borrow::Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut all = tools();
        if let Some(hub) = &self.shared.hub {
            let listed = self.hub_tools(hub, &context.peer).await;
            all.extend(listed.values().map(|t| t.tool.clone()));
            *self
                .hub_shown
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(listed);
        }
        Ok(ListToolsResult::with_all_items(all))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let result = match request.name.as_ref() {
            "l402_fetch" => match parse(&request) {
                Ok(p) => self.fetch(p, &context.peer).await,
                Err(e) => e,
            },
            "l402_quote" => match parse(&request) {
                Ok(p) => self.quote(p).await,
                Err(e) => e,
            },
            "l402_balance" => match parse::<NoParams>(&request) {
                Ok(_) => self.balance().await,
                Err(e) => e,
            },
            "l402_spending_report" => match parse(&request) {
                Ok(p) => self.report(p).await,
                Err(e) => e,
            },
            "l402_discover" => match parse(&request) {
                Ok(p) => self.discover(p).await,
                Err(e) => e,
            },
            "l402_lower_budget" => match parse(&request) {
                Ok(p) => self.lower(p),
                Err(e) => e,
            },
            other => match &self.shared.hub {
                Some(hub) => {
                    let args = request.arguments.clone().unwrap_or_default();
                    self.call_listed(hub, other, args, &context.peer).await
                }
                None => tool_error(format!("no tool named {other:?}")),
            },
        };
        Ok(result.into())
    }
}

impl TurnpikeMcp {
    /// A call of the hub's tool `name`, as this connection was shown it ([`hub::resolve`]).
    async fn call_listed(
        &self,
        hub: &hub::Hub,
        name: &str,
        args: serde_json::Map<String, serde_json::Value>,
        peer: &Peer<RoleServer>,
    ) -> CallToolResult {
        let current = self.hub_tools(hub, peer).await;
        let shown = self
            .hub_shown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match hub::resolve(shown.as_deref(), &current, name) {
            Ok(tool) => self.call_hub(hub, tool, args, peer).await,
            Err(e) => tool_error(e.to_string()),
        }
    }

    /// The hub's tools; when they changed since this connection last saw them, the client is
    /// told (`notifications/tools/list_changed`, sent without waiting).
    async fn hub_tools(&self, hub: &hub::Hub, peer: &Peer<RoleServer>) -> Arc<hub::Tools> {
        let (listed, version) = hub.tools().await;
        let seen = self
            .hub_seen
            .swap(version, std::sync::atomic::Ordering::SeqCst);
        if seen != 0 && seen != version {
            let peer = peer.clone();
            tokio::spawn(async move {
                if let Err(e) = peer.notify_tool_list_changed().await {
                    tracing::debug!("telling the client the tools changed failed: {e}");
                }
            });
        }
        listed
    }
}

async fn shared(args: &McpArgs) -> anyhow::Result<Shared> {
    let entry = crate::wallets::wallet_entry(&args.wallet, args.wallet_config.as_deref())?;
    let file_hosts = match crate::wallets::read_wallet_file(args.wallet_config.as_deref()) {
        Ok((_, f)) => f.mcp.allow_hosts,
        // The dev wallet needs no file.
        Err(_) if args.wallet == "dev" => Vec::new(),
        Err(e) => return Err(e),
    };
    let allowed = AllowedHosts::new(
        args.allow_hosts
            .iter()
            .chain(file_hosts.iter())
            .map(String::as_str),
    );
    let backend = match entry.backend {
        Some(BackendConfig::Dev(_)) => None,
        Some(_) => {
            let b: Arc<dyn PaymentBackend> = crate::wallets::connect_entry(&args.wallet, &entry)?;
            Some(b)
        }
        None => {
            let b: Arc<dyn PaymentBackend> = Arc::new(crate::fetch::NoWallet::X402_ONLY);
            Some(b)
        }
    };
    let accounting = crate::fetch::accounting_for(&args.wallet, &entry).await?;
    let x402 = entry.x402_wallet(&args.wallet)?;
    let hub = match &args.hub {
        Some(url) => Some(open_hub(url, &allowed, args.hub_ttl_secs).await?),
        None => None,
    };
    Ok(Shared {
        hub,
        x402,
        wallet: args.wallet.clone(),
        entry,
        backend,
        accounting,
        http: guard::http_client(&allowed).context("building the HTTP client")?,
        allowed,
        max_sats: args.max_sats,
        max_body: args.max_body_bytes,
    })
}

/// Reads the directory of the hub at `url` (refused like any URL the tools reach).
async fn open_hub(url: &str, allowed: &AllowedHosts, ttl_secs: u64) -> anyhow::Result<hub::Hub> {
    let base = directory::HubBase::parse(url)?;
    guard::check_url(base.url(), allowed)
        .await
        .map_err(|e| anyhow::anyhow!("--hub {url}: {e}"))?;
    let http =
        guard::http_client_without_redirects(allowed).context("building the hub's HTTP client")?;
    let hub = hub::Hub::open(base, http, Duration::from_secs(ttl_secs), builtin_names())
        .await
        .with_context(|| format!("reading the directory of the hub {url}"))?;
    Ok(hub)
}

/// Runs `turnpike mcp`.
pub async fn run(args: McpArgs) -> anyhow::Result<ExitCode> {
    let shared = Arc::new(shared(&args).await?);
    match args.http {
        None => {
            let service = TurnpikeMcp::new(shared)
                .serve(rmcp::transport::stdio())
                .await
                .context("starting the MCP server on standard input and output")?;
            service.waiting().await.context("serving MCP")?;
        }
        Some(addr) => serve_http(shared, addr, args.token).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve_http(
    shared: Arc<Shared>,
    addr: SocketAddr,
    token: Option<String>,
) -> anyhow::Result<()> {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};

    let loopback = addr.ip().is_loopback();
    let token = token.filter(|t| !t.is_empty());
    if !loopback && token.is_none() {
        bail!(
            "--http {addr} is not a loopback address: set a bearer token in TURNPIKE_MCP_TOKEN \
             (or --token) so that only your MCP client can spend from the wallet"
        );
    }
    let ct = tokio_util::sync::CancellationToken::new();
    let mut config = StreamableHttpServerConfig::default().with_cancellation_token(ct.clone());
    if !loopback {
        // The bearer token guards it; the Host names it is reached by are not known here.
        config = config.disable_allowed_hosts();
    }
    let service = StreamableHttpService::new(
        move || Ok(TurnpikeMcp::new(shared.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let token = token.map(Arc::new);
    let app = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let token = token.clone();
                async move {
                    if let Some(token) = token
                        && !bearer_matches(req.headers(), &token)
                    {
                        return axum::response::IntoResponse::into_response((
                            http::StatusCode::UNAUTHORIZED,
                            [(http::header::WWW_AUTHENTICATE, "Bearer")],
                            "a bearer token is required\n",
                        ));
                    }
                    next.run(req).await
                }
            },
        ));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    eprintln!("turnpike mcp: streamable HTTP on http://{local}/mcp");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            crate::shutdown_signal().await;
            ct.cancel();
        })
        .await
        .context("serving MCP over HTTP")?;
    Ok(())
}

fn bearer_matches(headers: &http::HeaderMap, token: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    let Some(value) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, given)) = value.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && bool::from(given.trim().as_bytes().ct_eq(token.as_bytes()))
}

/// Headers that carry the wallet's money or credentials: never handed to the agent (the
/// credential an x402 payment bought stays in the ledger, as L402 tokens do).
const WALLET_HEADERS: [&str; 3] = [
    turnpike_client::x402pay::TURNPIKE_CREDENTIAL,
    "payment-signature",
    "x-payment",
];

/// The response headers shown to the agent, name to value (repeated ones joined with ", "),
/// without the wallet's own ([`WALLET_HEADERS`]).
fn agent_headers(from: &http::HeaderMap) -> BTreeMap<String, String> {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in from {
        if WALLET_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.to_string())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_never_sees_the_wallets_credential_or_payment() {
        let mut h = http::HeaderMap::new();
        h.insert("turnpike-credential", "L402 mac:pre".parse().unwrap());
        h.insert("Payment-Signature", "eyJ4".parse().unwrap());
        h.insert("x-payment", "eyJ4".parse().unwrap());
        h.insert("payment-response", "eyJz".parse().unwrap());
        h.append("vary", "a".parse().unwrap());
        h.append("vary", "b".parse().unwrap());
        let shown = agent_headers(&h);
        assert_eq!(
            shown.keys().map(String::as_str).collect::<Vec<_>>(),
            ["payment-response", "vary"]
        );
        assert_eq!(shown["vary"], "a, b");
        assert!(!format!("{shown:?}").contains("mac:pre"));
    }

    /// A hub that asks an x402 payment of 5 USDC for everything, and logs the payments sent.
    async fn x402_hub() -> (reqwest::Url, Arc<Mutex<Vec<String>>>) {
        use turnpike_x402::{Address, Network, PaymentRequired, PaymentRequirements};
        let required = PaymentRequired::new(
            turnpike_x402::ResourceInfo {
                url: "http://hub/alice/quote".into(),
                description: String::new(),
                mime_type: String::new(),
            },
            vec![PaymentRequirements {
                network: Network::eip155(84532).unwrap(),
                amount: turnpike_x402::TokenAmount::from_base_units(5_000_000),
                asset: Address::from([1; 20]),
                pay_to: Address::from([0xee; 20]),
                max_timeout_seconds: 600,
                extra: turnpike_x402::TokenDomain {
                    name: "USDC".into(),
                    version: "2".into(),
                },
            }],
        )
        .to_header();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |headers: http::HeaderMap| {
            let (log, required) = (log.clone(), required.clone());
            async move {
                if let Some(p) = headers.get("payment-signature") {
                    log.lock().unwrap().push(format!("{p:?}"));
                }
                (
                    http::StatusCode::PAYMENT_REQUIRED,
                    [("payment-required", required)],
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/alice/quote", listener.local_addr().unwrap());
        tokio::spawn(axum::serve(listener, app).into_future());
        (url.parse().unwrap(), seen)
    }

    /// A client of a wallet with Lightning (never reached) and an x402 key for USDC on Base
    /// Sepolia, without limits of its own.
    async fn x402_client(url: &reqwest::Url, dir: &std::path::Path) -> L402Client {
        use turnpike_client::x402pay::{PayableAsset, Rail};
        let key = turnpike_x402::PayerKey::from_hex(
            "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
        )
        .unwrap();
        let usdc = PayableAsset {
            network: turnpike_x402::Network::eip155(84532).unwrap(),
            asset: turnpike_x402::Address::from([1; 20]),
            decimals: 6,
            budget: TokenBudget::default(),
            rpc_url: None,
        };
        let wallet = X402Wallet::new(key, vec![usdc]).unwrap();
        let ledger = turnpike_client::ledger::Ledger::open_in(dir).await.unwrap();
        let accounting = Accounting::new(ledger, "w", Budget::default(), turnpike_l402::Msat(0));
        L402Client::new(Arc::new(DevPayWallet::new(url.clone()).unwrap()), Sats(100))
            .unwrap()
            .with_accounting(accounting)
            .with_x402(Some(wallet), Rail::X402)
    }

    #[tokio::test]
    async fn a_hub_tool_never_pays_x402_whatever_the_hub_asks() {
        turnpike_lightning::ensure_crypto_provider();
        let (url, seen) = x402_hub().await;
        let dir = tempfile::tempdir().unwrap();
        // l402_fetch's client pays it (5 USDC, within the asset's budget)...
        let fetch = x402_client(&url, dir.path()).await;
        let _ = fetch.fetch(FetchRequest::get(url.clone())).await;
        assert_eq!(seen.lock().unwrap().len(), 1, "the control pays");
        // ...a hub tool listed at 21.42 sats does not: nothing is signed or sent.
        let dir = tempfile::tempdir().unwrap();
        let hub = for_listed_amount(x402_client(&url, dir.path()).await, 21_420);
        let err = hub.fetch(FetchRequest::get(url)).await.unwrap_err();
        assert!(err.nothing_paid(), "{err}");
        assert_eq!(seen.lock().unwrap().len(), 1, "nothing more sent: {err}");
    }

    #[tokio::test]
    async fn a_body_is_read_up_to_its_bound_announced_or_streamed() {
        turnpike_lightning::ensure_crypto_provider();
        let app = axum::Router::new()
            .route("/small", axum::routing::get(|| async { "0123456789" }))
            .route(
                "/stream",
                axum::routing::get(|| async {
                    let chunks =
                        (0..4).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from("abcd")));
                    axum::body::Body::from_stream(futures_util::stream::iter(chunks))
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(axum::serve(listener, app).into_future());
        let http = reqwest::Client::new();
        let get = |path: &str| http.get(format!("{base}{path}")).send();
        let mut r = get("/small").await.unwrap();
        assert_eq!(read_bounded(&mut r, 10).await.unwrap(), b"0123456789");
        let mut r = get("/small").await.unwrap();
        assert!(matches!(
            read_bounded(&mut r, 9).await,
            Err(BodyError::TooLarge(9))
        ));
        let mut r = get("/stream").await.unwrap();
        assert!(r.content_length().is_none());
        assert!(matches!(
            read_bounded(&mut r, 15).await,
            Err(BodyError::TooLarge(15))
        ));
        let mut r = get("/stream").await.unwrap();
        assert_eq!(read_bounded(&mut r, 16).await.unwrap().len(), 16);
    }

    #[test]
    fn a_connection_can_only_lower_the_budget() {
        let file = Budget {
            max_per_call: Some(100),
            per_host: None,
            per_period: Some(Window {
                sats: 2000,
                per: Period::Day,
            }),
            total: Some(10_000),
            approve_above: None,
        };
        let asked = Budget {
            max_per_call: Some(500),
            per_host: Some(Window {
                sats: 50,
                per: Period::Day,
            }),
            per_period: Some(Window {
                sats: 10,
                per: Period::Hour,
            }),
            total: None,
            approve_above: Some(20),
        };
        let b = stricter(&file, &asked);
        assert_eq!(b.max_per_call, Some(100));
        assert_eq!(b.per_host.map(|w| w.sats), Some(50));
        assert_eq!(
            b.per_period,
            Some(Window {
                sats: 10,
                per: Period::Day
            })
        );
        assert_eq!(b.total, Some(10_000));
        assert_eq!(b.approve_above, Some(20));
    }

    #[test]
    fn the_bearer_token_is_checked() {
        let mut h = http::HeaderMap::new();
        assert!(!bearer_matches(&h, "s3cret"));
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer s3cret".parse().unwrap(),
        );
        assert!(bearer_matches(&h, "s3cret"));
        h.insert(http::header::AUTHORIZATION, "Bearer s3cre".parse().unwrap());
        assert!(!bearer_matches(&h, "s3cret"));
        h.insert(http::header::AUTHORIZATION, "Basic s3cret".parse().unwrap());
        assert!(!bearer_matches(&h, "s3cret"));
    }
}
