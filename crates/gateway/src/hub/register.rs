//! Registering a provider: the same steps whether the operator registers it (admin API) or the
//! provider registers itself (`POST /_turnpike/hub/register` with `[hub] open_registration`):
//! fields checked, the payout checked with the SSRF guard and **tried** (a test invoice of one
//! satoshi must come back for exactly that amount), then the provider stored with the hash of
//! a fresh admin token, which is answered once and never stored.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;
use turnpike_l402::Msat;
use turnpike_lightning::CreateInvoice;
use turnpike_store::{ProviderRecord, StoreError};

use super::{Hub, Payout, Provider, check_slug};
use crate::control::Control;
use crate::error::{ApiError, ErrorCode};

/// Where providers register themselves on the public listener (`GET`: the web page, `POST`:
/// the JSON API).
pub const PATH: &str = "/_turnpike/hub/register";
/// The registration page's script.
pub const SCRIPT_PATH: &str = "/_turnpike/hub/register.js";
/// The registration page's style sheet.
pub const STYLE_PATH: &str = "/_turnpike/hub/register.css";

/// The amount of the test invoice asked of a payout at registration.
const TEST_INVOICE: Msat = Msat(1000);
/// Time allowed for the test invoice.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

/// What a provider registers with.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Display name (1 to 100 characters).
    pub name: String,
    /// The slug (see [`check_slug`]).
    pub slug: String,
    /// How to reach the provider: an email address or a URL (1 to 200 characters).
    pub contact: String,
    /// Where it is paid (see [`Payout`]).
    pub payout: serde_json::Value,
}

/// A provider just registered, and its admin token (shown this once).
#[derive(Debug)]
pub struct Registered {
    /// The provider.
    pub provider: Arc<Provider>,
    /// Its admin token.
    pub token: String,
}

/// Why a registration was refused; nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// A field is missing or wrong.
    #[error("{field}: {message}")]
    Invalid {
        /// The field (`slug`, `payout.address`…).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The slug is taken.
    #[error("the slug {0:?} is taken")]
    Taken(String),
    /// The payout did not give a correct test invoice.
    #[error("the payout did not give a test invoice: {0}")]
    Payout(String),
    /// The payout's credential can spend (or its wallet does not say it cannot).
    #[error("the payout's credential must not be able to spend: {0}")]
    CanSpend(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This gateway is not a hub, or has no admin store.
    #[error("this gateway does not register providers")]
    Unavailable,
}

fn invalid(field: &str, message: impl Into<String>) -> RegisterError {
    RegisterError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Parses a registration from JSON, naming the field at fault.
pub fn parse(bytes: &[u8]) -> Result<Registration, RegisterError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| invalid("body", format!("is not valid JSON: {e}.")))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.inner().to_string();
        let path = e.path().to_string();
        let field = match (path.as_str(), missing_field(&inner)) {
            (".", Some(f)) => f.to_owned(),
            (".", None) => "body".to_owned(),
            (p, _) => p.to_owned(),
        };
        invalid(&field, format!("{inner}."))
    })
}

fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), RegisterError> {
    let len = value.chars().count();
    if len == 0 || len > max || value.chars().any(char::is_control) || value.trim() != value {
        return Err(invalid(
            field,
            format!(
                "must be 1 to {max} characters, without control characters or surrounding spaces."
            ),
        ));
    }
    Ok(())
}

/// Registers a provider on `control`'s hub at `now` (see the module docs).
pub async fn register(
    control: &Control,
    reg: Registration,
    now: u64,
) -> Result<Registered, RegisterError> {
    let (hub, store) = match (control.hub(), control.store()) {
        (Some(hub), Some(store)) => (hub, store),
        _ => return Err(RegisterError::Unavailable),
    };
    check_text("name", &reg.name, 100)?;
    check_text("contact", &reg.contact, 200)?;
    check_slug(&reg.slug).map_err(|m| invalid("slug", format!("{m}.")))?;
    let payout = Payout::from_json(reg.payout).map_err(|(f, m)| invalid(&f, m))?;
    if hub.provider(&reg.slug).is_some() {
        return Err(RegisterError::Taken(reg.slug));
    }
    try_payout(hub, &payout, &reg.slug).await?;
    let token = hex::encode(rand::random::<[u8; 32]>());
    let record = ProviderRecord {
        slug: reg.slug.clone(),
        name: reg.name,
        contact: reg.contact,
        payout: serde_json::to_string(&payout).map_err(|e| RegisterError::Payout(e.to_string()))?,
        token_hash: sha256(token.as_bytes()),
        status: super::ACTIVE.into(),
        created_at: now,
        trial_ends_at: now.saturating_add(hub.settings.trial_secs),
    };
    if store.create_provider(&record).await?.is_none() {
        return Err(RegisterError::Taken(reg.slug));
    }
    control.sync().await?;
    let provider = hub
        .provider(&reg.slug)
        .ok_or_else(|| RegisterError::Payout("the payout could not be connected".into()))?;
    tracing::info!(provider = %reg.slug, "provider registered");
    Ok(Registered { provider, token })
}

/// A provider's new payout (`{"payout": {…}}`), checked and tried as at registration, then
/// stored and in force at once (and on other replicas at their next sync).
pub async fn change_payout(
    control: &Control,
    slug: &str,
    bytes: &[u8],
) -> Result<Arc<Provider>, RegisterError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Change {
        payout: serde_json::Value,
    }
    let (hub, store) = match (control.hub(), control.store()) {
        (Some(hub), Some(store)) => (hub, store),
        _ => return Err(RegisterError::Unavailable),
    };
    let change: Change = serde_json::from_slice(bytes)
        .map_err(|e| invalid("body", format!("expected {{\"payout\": {{…}}}}: {e}.")))?;
    let payout = Payout::from_json(change.payout).map_err(|(f, m)| invalid(&f, m))?;
    try_payout(hub, &payout, slug).await?;
    let json = serde_json::to_string(&payout).map_err(|e| RegisterError::Payout(e.to_string()))?;
    if store.set_provider_payout(slug, &json).await?.is_none() {
        return Err(RegisterError::Unavailable);
    }
    control.sync().await?;
    tracing::info!(provider = %slug, "provider's payout changed");
    hub.provider(slug)
        .ok_or_else(|| RegisterError::Payout("the payout could not be connected".into()))
}

/// Checks the payout with the SSRF guard, then asks it for a test invoice of exactly
/// [`TEST_INVOICE`], then makes sure its credential cannot spend
/// ([`Payout::check_cannot_spend`]).
async fn try_payout(hub: &Hub, payout: &Payout, slug: &str) -> Result<(), RegisterError> {
    let policy = hub.settings.payouts;
    payout
        .check_reachable(policy)
        .await
        .map_err(|m| invalid("payout", format!("cannot be reached: {m}.")))?;
    let connected = payout.connect(policy).map_err(RegisterError::Payout)?;
    let ask = connected.backend.create_invoice(CreateInvoice {
        amount: TEST_INVOICE,
        memo: format!("Turnpike hub: payout check for {slug}"),
        expiry_secs: 600,
    });
    let issued = tokio::time::timeout(TEST_TIMEOUT, ask)
        .await
        .map_err(|_| RegisterError::Payout("no answer in time".into()))?
        .map_err(|e| RegisterError::Payout(e.to_string()))?;
    if issued.amount != TEST_INVOICE {
        return Err(RegisterError::Payout(format!(
            "asked for {TEST_INVOICE}, got an invoice for {}",
            issued.amount
        )));
    }
    tokio::time::timeout(TEST_TIMEOUT, payout.check_cannot_spend(&connected))
        .await
        .map_err(|_| RegisterError::Payout("no answer in time".into()))?
        .map_err(RegisterError::CanSpend)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).into()
}

/// The JSON answer of a registration: `201` with the provider and its token.
pub fn registered_response(r: &Registered) -> Response {
    let mut body = r.provider.to_json();
    if let serde_json::Value::Object(map) = &mut body {
        map.insert("token".into(), r.token.clone().into());
    }
    (StatusCode::CREATED, Json(body)).into_response()
}

impl RegisterError {
    /// The JSON error answered for it (with the field at fault when there is one).
    pub fn to_api_error(&self) -> ApiError {
        match self {
            RegisterError::Invalid { field, message } => {
                ApiError::new(ErrorCode::BadRequest, format!("{field}: {message}"))
            }
            RegisterError::Taken(_) => ApiError::new(ErrorCode::Conflict, self.to_string()),
            RegisterError::Payout(_) | RegisterError::CanSpend(_) => {
                ApiError::new(ErrorCode::PayoutUnusable, format!("{self}."))
            }
            RegisterError::Store(e) => {
                tracing::error!(error = %e, "store failed during a registration");
                ApiError::new(
                    ErrorCode::StoreUnavailable,
                    "The gateway's store is unavailable.",
                )
                .retry_after(5)
            }
            RegisterError::Unavailable => ApiError::new(
                ErrorCode::NoSuchService,
                "This gateway does not register providers.",
            ),
        }
    }
}

/// `POST /_turnpike/hub/register` on the public listener (with `[hub] open_registration`).
pub async fn public_register(
    State(state): State<crate::SharedState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: http::HeaderMap,
    bytes: axum::body::Bytes,
) -> Response {
    if !open(&state) {
        return RegisterError::Unavailable.to_api_error().into_response();
    }
    // Each registration asks a payout for an invoice: limited like challenges.
    let limiter = state.limits.challenges_per_ip.as_ref();
    let message = "Too many registrations from this address.";
    if let Err(e) = state.limit_client(limiter, peer, &headers, message) {
        return e.into_response();
    }
    let result = match parse(&bytes) {
        Ok(reg) => register(&state.control, reg, crate::unix_now()).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(r) => registered_response(&r),
        Err(e) => e.to_api_error().into_response(),
    }
}

/// Whether this gateway takes registrations from anyone.
fn open(state: &crate::AppState) -> bool {
    state
        .control
        .hub()
        .is_some_and(|h| h.settings.open_registration)
}

/// One of the page's files, with a strict content security policy (no inline script, nothing
/// from elsewhere); 404 unless registration is open.
fn asset(
    state: &crate::AppState,
    content_type: &'static str,
    body: impl Into<axum::body::Body>,
) -> Response {
    use http::{HeaderValue, header};
    if !open(state) {
        return RegisterError::Unavailable.to_api_error().into_response();
    }
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body.into(),
    )
        .into_response()
}

/// `GET /_turnpike/hub/register`: the registration page, filled in for this hub.
pub async fn page(State(state): State<crate::SharedState>) -> Response {
    let html = state
        .control
        .hub()
        .map(|hub| super::register_page::render(&hub.settings))
        .unwrap_or_default();
    asset(&state, "text/html; charset=utf-8", html)
}

/// The registration page's script.
pub async fn script(State(state): State<crate::SharedState>) -> Response {
    let js = include_str!("../../assets/hub/register.js");
    asset(&state, "text/javascript; charset=utf-8", js)
}

/// The registration page's style sheet.
pub async fn style(State(state): State<crate::SharedState>) -> Response {
    let css = include_str!("../../assets/hub/register.css");
    asset(&state, "text/css; charset=utf-8", css)
}
