//! `GET /directory` on a hub's public listener: every service (and route) of its active and
//! suspended providers, with its price, what the client pays, its metadata and its health,
//! searchable ([`query`]). Never 402-gated, readable from any origin. The shape is the
//! contract the MCP bridge (`turnpike mcp --hub`) and the catalogue page build on
//! (docs/hub.md).

pub mod documents;
pub mod openapi;
pub mod query;

use std::sync::Arc;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::{Value, json};

use crate::SharedState;
use crate::hub::{Hub, Provider};
use crate::router::Router;
use crate::service::Service;
pub use query::{DirectoryQuery, QueryError};

/// Where the directory is served.
pub const PATH: &str = "/directory";

/// A provider's service (or route) as listed: the service reached under the provider's path
/// prefix, and its provider.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The service, as matched under `/<slug>`.
    pub service: Arc<Service>,
    /// Its provider (active or suspended).
    pub provider: Arc<Provider>,
}

impl Listed {
    /// The provider's slug.
    pub fn slug(&self) -> &str {
        &self.provider.record.slug
    }

    /// The service's own name (without its route).
    pub fn service_name(&self) -> &str {
        let s = &self.service;
        match &s.route {
            Some(r) => s
                .name
                .strip_suffix(r.as_str())
                .and_then(|n| n.strip_suffix('.'))
                .unwrap_or(&s.name),
            None => &s.name,
        }
    }

    /// `<slug>/<service>` or `<slug>/<service>/<route>`.
    pub fn id(&self) -> String {
        match &self.service.route {
            Some(r) => format!("{}/{}/{r}", self.slug(), self.service_name()),
            None => format!("{}/{}", self.slug(), self.service_name()),
        }
    }

    /// Its path on the provider's host (without the `/<slug>` prefix), `/` at least.
    pub fn own_path(&self) -> &str {
        let prefixed = self.service.path().unwrap_or_default();
        match prefixed
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(self.slug()))
        {
            Some("") | None => "/",
            Some(rest) => rest,
        }
    }

    /// What the client pays for one payment now (the fee included; trial: the price).
    pub fn amount_msat(&self, now: u64) -> Option<u64> {
        let price = self.service.price_msat();
        let payee = self.service.payee.as_ref()?;
        payee.invoice_amount(price, now).map(|(a, _)| a.0)
    }
}

/// Every listed service of the hub, by provider slug, each in matching order.
pub fn listed(router: &Router, hub: &Hub) -> Vec<Listed> {
    let mut out: Vec<Listed> = router
        .services()
        .iter()
        .filter(|s| s.strip_first_segment)
        .filter_map(|s| {
            let provider = hub.provider(&s.payee.as_ref()?.provider)?;
            provider.is_served().then(|| Listed {
                service: s.clone(),
                provider,
            })
        })
        .collect();
    out.sort_by(|a, b| a.slug().cmp(b.slug()));
    out
}

/// Whether `l` is one the query asks for.
fn wanted(q: &DirectoryQuery, l: &Listed, amount: Option<u64>) -> bool {
    let meta = &l.service.meta;
    if q.provider.as_deref().is_some_and(|p| p != l.slug())
        || q.tag.as_ref().is_some_and(|t| !meta.tags.contains(t))
        || q.mode
            .is_some_and(|m| m != crate::discovery::pricing_mode(&l.service))
        || q.max_price_msat
            .is_some_and(|max| amount.is_none_or(|a| a > max))
    {
        return false;
    }
    let Some(text) = &q.q else { return true };
    let found = |s: &str| s.to_lowercase().contains(text.as_str());
    found(l.slug())
        || found(&l.provider.record.name)
        || found(&l.service.name)
        || meta.description.as_deref().is_some_and(found)
        || meta.tags.iter().any(|t| found(t))
}

/// One entry of the answer.
fn entry(l: &Listed, hub: &Hub, amount: Option<u64>) -> Value {
    let s = &l.service;
    let slug = l.slug();
    let mut rails = Vec::new();
    if s.l402 {
        rails.push("l402");
    }
    if s.x402.is_some() {
        rails.push("x402");
    }
    json!({
        "id": l.id(),
        "provider": {
            "slug": slug,
            "name": l.provider.record.name,
            "suspended": !l.provider.is_active(),
        },
        "service": l.service_name(),
        "route": s.route,
        "description": s.meta.description,
        "tags": s.meta.tags,
        "path": s.path(),
        "host_url": format!("https://{}{}", hub.settings.host_of(slug), l.own_path()),
        "method": s.method().map(http::Method::as_str),
        "mode": crate::discovery::pricing_mode(s),
        "price_msat": s.price_msat().0,
        "amount_msat": amount,
        "calls_per_payment": s.calls,
        "valid_secs": s.lifetime_secs,
        "rails": rails,
        "input_schema": s.meta.input_schema,
        "health": hub.health.board.get(&s.health_key()).to_json(),
        "openapi": format!("/{slug}/.well-known/openapi.json"),
        "catalogue": format!("/{slug}/.well-known/l402.json"),
    })
}

/// The answer to `query` at `now`.
pub fn search(router: &Router, hub: &Hub, query: &DirectoryQuery, now: u64) -> Value {
    let mut total = 0usize;
    let mut page = Vec::new();
    for l in listed(router, hub) {
        let amount = l.amount_msat(now);
        if !wanted(query, &l, amount) {
            continue;
        }
        if total >= query.offset && page.len() < query.limit {
            page.push(entry(&l, hub, amount));
        }
        total += 1;
    }
    json!({ "total": total, "offset": query.offset, "services": page })
}

/// A `400` naming the parameter at fault.
fn refused(e: &QueryError) -> Response {
    let body = json!({ "error": {
        "code": crate::error::ErrorCode::BadRequest.as_str(),
        "message": format!("{e}."),
        "field": e.param,
    }});
    (
        StatusCode::BAD_REQUEST,
        [
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::CACHE_CONTROL, "no-store"),
            (header::VARY, "Accept"),
        ],
        axum::Json(body),
    )
        .into_response()
}

/// The JSON answer. `Vary: Accept`: the same URL is the catalogue page for a browser, so a
/// cache between the hub and its clients must not hand this to a browser (nor the page to a
/// program).
fn answer(body: &Value) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::CACHE_CONTROL, "max-age=5"),
            (header::VARY, "Accept"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// `GET /directory` (mounted on a hub only; counted against `[rate_limits] per_ip`, as any
/// request is): the JSON, or the catalogue page for a browser (an `Accept` preferring
/// `text/html`, [`crate::hub::catalogue::wants_html`]).
pub async fn handle(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: http::HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let Some(hub) = state.control.hub() else {
        return crate::error::ApiError::new(crate::error::ErrorCode::NotFound, "Not a hub.")
            .into_response();
    };
    let limiter = state.limits.per_ip.as_ref();
    if let Err(e) = state.limit_client(
        limiter,
        peer,
        &headers,
        "Too many requests from this address.",
    ) {
        return e.into_response();
    }
    if crate::hub::catalogue::wants_html(&headers) {
        return crate::hub::catalogue::page();
    }
    let query = match DirectoryQuery::parse(raw.as_deref()) {
        Ok(q) => q,
        Err(e) => return refused(&e),
    };
    answer(&search(
        &state.services.load(),
        hub,
        &query,
        crate::unix_now(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServiceConfig;
    use crate::router::ServiceTable;

    fn provider(slug: &str, name: &str, status: &str, n: u8) -> turnpike_store::ProviderRecord {
        turnpike_store::ProviderRecord {
            slug: slug.into(),
            name: name.into(),
            contact: "a@x.example".into(),
            payout: format!(r#"{{"kind":"lightning_address","address":"{slug}@x.example"}}"#),
            token_hash: [n; 32],
            status: status.into(),
            created_at: 0,
            trial_ends_at: 0,
        }
    }

    fn hub_and_router() -> (Arc<Hub>, Router) {
        let c: crate::config::HubConfig = toml::from_str("domain = \"hub.example\"").unwrap();
        let hub = Arc::new(Hub::new(crate::hub::HubSettings::parse(&c).unwrap()));
        hub.load(vec![
            provider("alice", "Alice Data", "active", 1),
            provider("bob", "Bob Weather", "suspended", 2),
            provider("carol", "Carol", "removed", 3),
        ]);
        let quote = ServiceConfig {
            path: Some("/quote".into()),
            provider: Some("alice".into()),
            description: Some("Stock quotes".into()),
            tags: vec!["finance".into()],
            input_schema: Some(json!({"type": "object"})),
            routes: vec![crate::config::RouteConfig {
                method: Some("POST".into()),
                ..crate::config::RouteConfig::new("bulk", "/quote/bulk", 100)
            }],
            ..ServiceConfig::new("quote", "http://127.0.0.1:1", 21)
        };
        let weather = ServiceConfig {
            provider: Some("bob".into()),
            time_pass_secs: Some(3600),
            tags: vec!["weather".into()],
            ..ServiceConfig::new("weather", "http://127.0.0.1:1", 5)
        };
        let hidden = ServiceConfig {
            provider: Some("carol".into()),
            ..ServiceConfig::new("hidden", "http://127.0.0.1:1", 5)
        };
        let operator = ServiceConfig::new("own", "http://127.0.0.1:1", 5);
        let table = ServiceTable::new(Router::default()).with_hub(Some(hub.clone()));
        let router = table.parse(&[quote, weather, hidden, operator]).unwrap();
        (hub, router)
    }

    fn ids(raw: &str) -> (u64, Vec<String>) {
        let (hub, router) = hub_and_router();
        let q = DirectoryQuery::parse(Some(raw)).unwrap();
        let v = search(&router, &hub, &q, 1000);
        let ids = v["services"].as_array().unwrap().iter();
        let ids = ids.map(|e| e["id"].as_str().unwrap().to_owned()).collect();
        (v["total"].as_u64().unwrap(), ids)
    }

    #[test]
    fn only_served_providers_services_are_listed_each_once() {
        let all = ids("");
        assert_eq!(all.0, 3);
        assert_eq!(all.1, ["alice/quote/bulk", "alice/quote", "bob/weather"]);
    }

    #[test]
    fn each_filter_narrows_the_list() {
        assert_eq!(ids("q=STOCK").1, ["alice/quote/bulk", "alice/quote"]);
        assert_eq!(ids("q=bob%20weather").1, ["bob/weather"]);
        assert_eq!(ids("q=weath").1, ["bob/weather"]);
        assert_eq!(ids("q=bulk").1, ["alice/quote/bulk"]);
        assert_eq!(ids("q=nothing").0, 0);
        assert_eq!(ids("tag=finance").1, ["alice/quote/bulk", "alice/quote"]);
        assert_eq!(ids("tag=fin").0, 0);
        assert_eq!(ids("mode=time_pass").1, ["bob/weather"]);
        assert_eq!(ids("provider=alice").0, 2);
        assert_eq!(ids("provider=carol").0, 0);
        // 21 sats + 2 % = 21,420 msat after the trial.
        assert_eq!(
            ids("max_price_msat=21420").1,
            ["alice/quote", "bob/weather"]
        );
        assert_eq!(ids("max_price_msat=21419").1, ["bob/weather"]);
        assert_eq!(ids("limit=1&offset=1"), (3, vec!["alice/quote".to_owned()]));
        assert_eq!(ids("offset=3"), (3, vec![]));
    }

    #[test]
    fn json_answers_vary_with_accept_like_the_page() {
        let refusal = DirectoryQuery::parse(Some("limit=0")).unwrap_err();
        for resp in [answer(&json!({"total": 0})), refused(&refusal)] {
            assert_eq!(resp.headers()[header::VARY], "Accept");
        }
        assert_eq!(
            crate::hub::catalogue::page().headers()[header::VARY],
            "Accept"
        );
    }

    #[test]
    fn an_entry_has_the_contract_shape() {
        let (hub, router) = hub_and_router();
        let q = DirectoryQuery::parse(Some("provider=alice")).unwrap();
        let v = search(&router, &hub, &q, 1000);
        assert_eq!(
            v["services"][1],
            json!({
                "id": "alice/quote",
                "provider": {"slug": "alice", "name": "Alice Data", "suspended": false},
                "service": "quote",
                "route": null,
                "description": "Stock quotes",
                "tags": ["finance"],
                "path": "/alice/quote",
                "host_url": "https://alice.hub.example/quote",
                "method": null,
                "mode": "per_call",
                "price_msat": 21000,
                "amount_msat": 21420,
                "calls_per_payment": 1,
                "valid_secs": null,
                "rails": ["l402"],
                "input_schema": {"type": "object"},
                "health": {"status": "unknown", "uptime_pct": null, "success_rate": null,
                    "median_latency_ms": null, "calls_24h": 0, "checked_at": null},
                "openapi": "/alice/.well-known/openapi.json",
                "catalogue": "/alice/.well-known/l402.json",
            })
        );
        let bulk = &v["services"][0];
        assert_eq!(
            (&bulk["route"], &bulk["method"], &bulk["host_url"]),
            (
                &json!("bulk"),
                &json!("POST"),
                &json!("https://alice.hub.example/quote/bulk")
            )
        );
        let bob = search(
            &router,
            &hub,
            &DirectoryQuery::parse(Some("provider=bob")).unwrap(),
            0,
        );
        let weather = &bob["services"][0];
        assert_eq!(weather["provider"]["suspended"], true);
        assert_eq!(weather["host_url"], "https://bob.hub.example/");
        assert_eq!(weather["path"], "/bob");
        // In the trial (created at 0, trial ending at 0 here: no trial), a time pass.
        assert_eq!(
            (&weather["calls_per_payment"], &weather["valid_secs"]),
            (&json!(null), &json!(3600))
        );
    }
}
