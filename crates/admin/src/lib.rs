//! # turnpike-admin
//!
//! The admin listener of a Turnpike gateway, on its own address: a JSON API under `/api/v1/`
//! (services changed at runtime, tokens listed and revoked, payments, health), described by the
//! OpenAPI document served at `/api/v1/openapi.json`, and the dashboard's files, embedded.
//! Every route but the dashboard's files and the OpenAPI document (which hold no data) requires
//! `Authorization: Bearer <admin token>`, compared in constant time.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
mod health;
mod hub;
pub mod services;
mod stats;
pub mod token_file;
mod tokens;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderValue, header};
use subtle::ConstantTimeEq;
use turnpike_gateway::Gateway;
use turnpike_gateway::control::Control;
use turnpike_lightning::InvoiceBackend;
use turnpike_store::AdminStore;

use crate::error::{AdminError, Code};

/// The OpenAPI 3.1 document of the admin API.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Routes served without the admin token (they hold no data).
const PUBLIC: [&str; 5] = [
    "/",
    "/assets/app.js",
    "/assets/dom.js",
    "/assets/style.css",
    "/api/v1/openapi.json",
];

/// Who is calling: the operator (the admin token), or a hub provider (its own token, scoped
/// to its own services).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The gateway's admin token: everything.
    Operator,
    /// A provider's token: its own services and record only.
    Provider(Arc<str>),
}

impl Caller {
    /// The provider's slug, for a provider's token.
    pub fn provider(&self) -> Option<&str> {
        match self {
            Caller::Operator => None,
            Caller::Provider(slug) => Some(slug),
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    gateway: Gateway,
    control: Arc<Control>,
    backend: Arc<dyn InvoiceBackend>,
    token: Arc<str>,
}

impl Api {
    /// The admin API of `gateway`, opened by the bearer `token`.
    pub fn new(gateway: &Gateway, token: &str) -> Api {
        Api {
            gateway: gateway.clone(),
            control: gateway.control(),
            backend: gateway.backend(),
            token: token.into(),
        }
    }

    fn store(&self) -> Result<&Arc<dyn AdminStore>, AdminError> {
        self.control
            .store()
            .ok_or_else(|| AdminError::store(&"this gateway has no admin store"))
    }
}

/// The admin listener's application.
pub fn router(api: Api) -> axum::Router {
    let v1 = axum::Router::new()
        .route("/health", get(health::health))
        .route("/services", get(services::list).post(services::create))
        .route(
            "/services/{name}",
            get(services::get)
                .put(services::replace)
                .patch(services::patch)
                .delete(services::delete),
        )
        .route("/tokens", get(tokens::list))
        .route("/tokens/{token_id}/revoke", post(tokens::revoke))
        .route("/payments", get(tokens::payments))
        .route("/stats", get(stats::stats))
        .route("/session", get(hub::session))
        .route("/hub/providers", get(hub::list).post(hub::create))
        .route("/hub/providers/{slug}/suspend", post(hub::suspend))
        .route("/hub/providers/{slug}/reinstate", post(hub::reinstate))
        .route("/hub/fees", get(hub::fees))
        .route("/hub/bills", get(hub::bills))
        .route("/hub/statement", get(hub::statement))
        .route("/hub/me", get(hub::me).patch(hub::change_payout))
        .route("/openapi.json", get(openapi));
    axum::Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/dom.js", get(dom_js))
        .route("/assets/style.css", get(style_css))
        .route("/metrics", get(stats::metrics))
        .nest("/api/v1", v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(api.clone(), authorize))
        .with_state(api)
}

/// Serves the admin API of `gateway` on `listener` until `shutdown` completes.
pub async fn serve(
    gateway: &Gateway,
    token: &str,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(Api::new(gateway, token)))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Lets public routes through; every other request needs `Authorization: Bearer <token>`:
/// the admin token (the operator), or a hub provider's token, which reaches only the
/// provider's own routes ([`hub::provider_may`]; others are `403`).
async fn authorize(State(api): State<Api>, mut req: Request, next: Next) -> Response {
    if PUBLIC.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let Some(caller) = caller(&req, &api) else {
        return AdminError::new(
            Code::Unauthorized,
            "The admin API needs `Authorization: Bearer <admin token>`.",
        )
        .into_response();
    };
    if caller != Caller::Operator && !hub::provider_may(req.uri().path()) {
        return AdminError::new(
            Code::Forbidden,
            "A provider's token reaches only its own services and statistics, /api/v1/session, /api/v1/hub/me and /api/v1/hub/statement.",
        )
        .into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The bearer token of a request carrying exactly one `Authorization: Bearer <token>`.
fn bearer(req: &Request) -> Option<&[u8]> {
    let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    value.as_bytes().strip_prefix(b"Bearer ")
}

/// Who the request's token names: the operator, a provider, or nobody.
fn caller(req: &Request, api: &Api) -> Option<Caller> {
    let given = bearer(req)?;
    if bearer_matches(given, &api.token) {
        return Some(Caller::Operator);
    }
    let provider = api.control.hub()?.provider_by_token(given)?;
    Some(Caller::Provider(provider.record.slug.as_str().into()))
}

/// Whether `given` is `token`. The digests are compared in constant time, so neither the
/// token's bytes nor its length leak through timing.
fn bearer_matches(given: &[u8], token: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (given, expected) = (Sha256::digest(given), Sha256::digest(token.as_bytes()));
    !token.is_empty() && bool::from(given.as_slice().ct_eq(expected.as_slice()))
}

async fn not_found() -> AdminError {
    AdminError::new(Code::NotFound, "No such admin route.")
}

async fn method_not_allowed() -> AdminError {
    AdminError::new(
        Code::MethodNotAllowed,
        "This route does not serve this method.",
    )
}

fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset(
        "text/html; charset=utf-8",
        include_bytes!("../assets/index.html"),
    )
}

async fn app_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/app.js"),
    )
}

/// The DOM helpers `app.js` imports, shared with the hub's catalogue page.
async fn dom_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        turnpike_gateway::hub::catalogue::DOM_SCRIPT.as_bytes(),
    )
}

async fn style_css() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_bytes!("../assets/style.css"),
    )
}

async fn openapi() -> Response {
    asset("application/json", OPENAPI.as_bytes())
}
