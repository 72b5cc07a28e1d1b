//! A provider's own documents on a hub, answered by the hub itself (never forwarded, never
//! 402-gated, readable from any origin):
//!
//! - its `/.well-known/l402.json` (only its services): at `/<slug>/.well-known/l402.json`, or
//!   at `/.well-known/l402.json` on its host `<slug>.<hub domain>`;
//! - an OpenAPI 3.1 document of its services with their prices ([`super::openapi`]): at
//!   `/<slug>/.well-known/openapi.json`, or `/.well-known/openapi.json` on its host.
//!
//! Only these exact raw paths are taken from the pipeline ([`is_hub_path`]): a path
//! that merely normalises to one of them goes through the pipeline like any request, so it is
//! matched (and paid) as the provider's service it falls in, never served free.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, header};
use serde_json::{Value, json};

use super::Listed;
use crate::SharedState;
use crate::error::{ApiError, ErrorCode};
use crate::hub::Hub;

/// The catalogue under a provider's prefix.
pub const CATALOGUE_SUFFIX: &str = "/.well-known/l402.json";
/// The OpenAPI document under a provider's prefix, and on its host.
pub const OPENAPI_SUFFIX: &str = "/.well-known/openapi.json";

/// Whether a request's raw path is one the hub answers itself (never forwarded): the
/// directory and the providers' documents. Only exact spellings: any other goes through the
/// pipeline, canonical form and payment included.
pub fn is_hub_path(path: &str) -> bool {
    path == super::PATH || is_document_path(path)
}

/// Whether `path` is exactly `/<slug>/.well-known/l402.json` or `…/openapi.json` for a
/// slug-shaped first segment, or `/.well-known/openapi.json`.
pub fn is_document_path(path: &str) -> bool {
    if path == OPENAPI_SUFFIX {
        return true;
    }
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let Some((slug, doc)) = rest.split_once('/') else {
        return false;
    };
    // On every request: no allocation, the cheap comparison first.
    (doc == &CATALOGUE_SUFFIX[1..] || doc == &OPENAPI_SUFFIX[1..])
        && crate::hub::check_slug(slug).is_ok()
}

/// The provider whose host `<slug>.<hub domain>` the request is for, if any.
pub fn slug_of_host(hub: &Hub, headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(header::HOST)?.to_str().ok()?;
    let authority = crate::edge::host::normalize(raw).ok()?;
    let slug = authority
        .host()
        .strip_suffix(hub.settings.domain.as_str())?
        .strip_suffix('.')?;
    crate::hub::check_slug(slug).ok()?;
    Some(slug.to_owned())
}

/// The services of `slug` as reached by host (`by_host`) or under its prefix, in matching
/// order; `None` when it is no active or suspended provider.
fn services_of(
    state: &SharedState,
    hub: &Hub,
    slug: &str,
    by_host: bool,
) -> Option<Vec<std::sync::Arc<crate::service::Service>>> {
    hub.provider(slug).filter(|p| p.is_served())?;
    let router = state.services.load();
    let own = |s: &&std::sync::Arc<crate::service::Service>| {
        s.payee.as_ref().is_some_and(|p| p.provider == slug) && s.strip_first_segment != by_host
    };
    Some(router.services().iter().filter(own).cloned().collect())
}

/// A provider's manifest: the gateway's, with only its services and its name.
fn catalogue(state: &SharedState, hub: &Hub, slug: &str, by_host: bool) -> Option<Value> {
    let provider = hub.provider(slug)?;
    let services = services_of(state, hub, slug, by_host)?;
    let mut body = crate::discovery::manifest(services.iter().map(|s| &**s));
    body["provider"] = json!({ "name": provider.record.name, "slug": slug });
    Some(body)
}

/// A provider's OpenAPI document.
fn openapi(state: &SharedState, hub: &Hub, slug: &str) -> Option<Value> {
    let router = state.services.load();
    let listed: Vec<Listed> = super::listed(&router, hub)
        .into_iter()
        .filter(|l| l.slug() == slug)
        .collect();
    let provider = hub.provider(slug).filter(|p| p.is_served())?;
    Some(super::openapi::document(
        hub,
        &provider,
        &listed,
        crate::unix_now(),
    ))
}

fn json_response(body: Option<Value>, slug: &str) -> Response {
    match body {
        Some(body) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
                (header::CACHE_CONTROL, "max-age=60"),
            ],
            body.to_string(),
        )
            .into_response(),
        None => ApiError::new(
            ErrorCode::NoSuchService,
            format!("No provider {slug:?} on this hub."),
        )
        .into_response(),
    }
}

/// `GET /<slug>/.well-known/l402.json`.
pub async fn catalogue_by_prefix(
    State(state): State<SharedState>,
    Path(slug): Path<String>,
) -> Response {
    let Some(hub) = state.control.hub() else {
        return json_response(None, &slug);
    };
    json_response(catalogue(&state, hub, &slug, false), &slug)
}

/// `GET /.well-known/l402.json` on a hub: on a provider's host its catalogue, elsewhere the
/// gateway's ([`crate::discovery::handle`]).
pub async fn well_known_l402(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    let own = state
        .control
        .hub()
        .and_then(|hub| Some((hub, slug_of_host(hub, &headers)?)));
    match own {
        Some((hub, slug)) => json_response(catalogue(&state, hub, &slug, true), &slug),
        None => crate::discovery::handle(State(state)).await,
    }
}

/// `GET /<slug>/.well-known/openapi.json`.
pub async fn openapi_by_prefix(
    State(state): State<SharedState>,
    Path(slug): Path<String>,
) -> Response {
    let Some(hub) = state.control.hub() else {
        return json_response(None, &slug);
    };
    json_response(openapi(&state, hub, &slug), &slug)
}

/// `GET /.well-known/openapi.json`: on a provider's host, its document; elsewhere 404.
pub async fn openapi_by_host(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    let found = state
        .control
        .hub()
        .and_then(|hub| Some((hub, slug_of_host(hub, &headers)?)));
    match found {
        Some((hub, slug)) => json_response(openapi(&state, hub, &slug), &slug),
        None => ApiError::new(
            ErrorCode::NotFound,
            "The OpenAPI documents are per provider: /<slug>/.well-known/openapi.json.",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_document_paths_are_taken() {
        for yes in [
            "/alice/.well-known/l402.json",
            "/alice/.well-known/openapi.json",
            "/.well-known/openapi.json",
        ] {
            assert!(is_document_path(yes), "{yes}");
        }
        for no in [
            "/alice/.well-known/l402.json/",
            "/alice/.well-known/openapi.json?x",
            "/alice//.well-known/openapi.json",
            "//alice/.well-known/openapi.json",
            "/ALICE/.well-known/openapi.json",
            "/%61lice/.well-known/openapi.json",
            "/alice/.well-known/%6fpenapi.json",
            "/alice/./.well-known/openapi.json",
            "/x/../alice/.well-known/openapi.json",
            "/alice;p=1/.well-known/openapi.json",
            "/admin/.well-known/openapi.json",
            "/alice/.well-known/other.json",
            "/alice/b/.well-known/openapi.json",
            "/alice",
            "/",
        ] {
            assert!(!is_document_path(no), "{no}");
        }
    }
}
