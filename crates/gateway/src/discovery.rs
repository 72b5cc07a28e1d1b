//! `GET /.well-known/l402.json`: the gateway's catalogue, generated from the services in force
//! (a reload shows at once), following the manifest proposed for the L402 spec
//! (lightninglabs/L402 PR #27): version, provider, currencies, macaroon versions, payment
//! methods, and per service its resources with path, method and pricing (all prices in msat).
//! What the proposal has no field for — Turnpike's pricing mode (per call, bundle, time pass,
//! dynamic with a cap) and the free tier — is under `x-turnpike` in each resource. Never
//! 402-gated; readable from any origin.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header;
use serde_json::{Value, json};

use crate::SharedState;
use crate::service::Service;

/// Where the catalogue is served.
pub const PATH: &str = "/.well-known/l402.json";

/// Turnpike's pricing mode of a priced route.
pub fn pricing_mode(s: &Service) -> &'static str {
    if s.pricer.is_some() {
        return "dynamic_cap";
    }
    match (s.calls, s.lifetime_secs) {
        (Some(1), _) => "per_call",
        (Some(_), _) => "bundle",
        (None, Some(_)) => "time_pass",
        (None, None) => "unlimited",
    }
}

fn resource(s: &Service) -> Value {
    let price_msat = s.price_msat().0;
    let pricing = if s.pricer.is_some() {
        // Priced per request by the pricer, never above the configured price.
        json!({ "model": "dynamic", "max_price_msat": price_msat })
    } else {
        json!({ "model": "fixed", "price_msat": price_msat })
    };
    let mut r = serde_json::Map::new();
    if let Some(path) = s.path() {
        r.insert("path".into(), json!(path));
    }
    if let Some(method) = s.method() {
        r.insert("method".into(), json!(method.as_str()));
    }
    r.insert("pricing".into(), pricing);
    if let Some(d) = &s.meta.description {
        r.insert("description".into(), json!(d));
    }
    if !s.meta.tags.is_empty() {
        r.insert("tags".into(), json!(s.meta.tags));
    }
    if let Some(schema) = &s.meta.input_schema {
        r.insert("input_schema".into(), schema.clone());
    }
    r.insert(
        "x-turnpike".into(),
        json!({
            "route": s.name,
            "mode": pricing_mode(s),
            "grant": s.grant_text(),
            "calls_per_payment": s.calls,
            "valid_secs": s.lifetime_secs,
            "any_method": s.method().is_none(),
            "host": s.host(),
            "host_regex": s.host_regex(),
            "path_regex": s.path_regex(),
            "free_tier": s.free_tier.as_ref().map(|f| json!({
                "calls": f.calls, "window_secs": f.window_secs,
            })),
        }),
    );
    if let (Some(payee), Some(Value::Object(x))) = (&s.payee, r.get_mut("x-turnpike")) {
        // A hub provider's service: what the client pays, the platform fee included.
        let amount = payee.invoice_amount(s.price_msat(), crate::unix_now());
        x.insert("amount_msat".into(), json!(amount.map(|(a, _)| a.0)));
    }
    Value::Object(r)
}

/// The manifest for `services` (routes of one service are named `<service>.<route>` and listed
/// under their service, most specific first).
pub fn manifest<'a>(services: impl IntoIterator<Item = &'a Service>) -> Value {
    let mut grouped: Vec<(String, Vec<Value>)> = Vec::new();
    for s in services {
        let top = s.name.split('.').next().unwrap_or(&s.name).to_owned();
        match grouped.iter_mut().find(|(name, _)| *name == top) {
            Some((_, resources)) => resources.push(resource(s)),
            None => grouped.push((top, vec![resource(s)])),
        }
    }
    json!({
        "version": "1.0",
        "provider": { "name": "turnpike" },
        "currencies": ["msat"],
        "macaroon_versions": [0],
        "payment_methods": ["bolt11"],
        "services": grouped
            .into_iter()
            .map(|(name, resources)| json!({ "name": name, "resources": resources }))
            .collect::<Vec<_>>(),
    })
}

/// `GET /.well-known/l402.json` (on a hub, a provider's host has its own:
/// [`crate::hub::directory::documents::well_known_l402`]).
pub async fn handle(State(state): State<SharedState>) -> Response {
    let router = state.services.load();
    // A hub provider's service is matched twice (by its host, under its prefix): listed once,
    // under the prefix every host reaches.
    let listed = router
        .services()
        .iter()
        .filter(|s| s.payee.is_none() || s.strip_first_segment);
    let body = manifest(listed.map(|s| &**s));
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::CACHE_CONTROL, "max-age=60"),
        ],
        body.to_string(),
    )
        .into_response()
}
