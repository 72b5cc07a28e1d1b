//! `GET /api/v1/stats` (daily totals from the store) and `GET /metrics` (Prometheus text).
//! A hub provider's token gets the statistics of its own services only.

use std::collections::{BTreeSet, HashMap};

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use turnpike_gateway::stats::StatsReport;
use turnpike_store::Day;

use crate::error::{AdminError, Code};
use crate::tokens::only;
use crate::{Api, Caller};

/// Longest range one query may span, in days.
const MAX_DAYS: u32 = 366;

/// The statistics of `from..=to` (default: the last 30 days), of one `service` or all; a
/// provider's token sees its own services only (another's named in `service` is `403`).
pub async fn stats(
    State(api): State<Api>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<StatsReport>, AdminError> {
    only(&params, &["from", "to", "service"])?;
    let (default_from, default_to) =
        turnpike_gateway::stats::default_range(turnpike_gateway::unix_now());
    let from = day(&params, "from")?.unwrap_or(default_from);
    let to = day(&params, "to")?.unwrap_or(default_to);
    if from > to {
        return Err(AdminError::field("from", "Must not be after `to`."));
    }
    if to.days_since_epoch() - from.days_since_epoch() >= MAX_DAYS {
        return Err(AdminError::field(
            "from",
            format!("The range may span at most {MAX_DAYS} days."),
        ));
    }
    let service = params.get("service").map(String::as_str);
    let own = caller.provider().map(|slug| own_stat_names(&api, slug));
    if let (Some(own), Some(service)) = (&own, service)
        && !own.contains(service)
    {
        return Err(AdminError::new(
            Code::Forbidden,
            format!("The service {service:?} is not this provider's."),
        ));
    }
    let mut report = api
        .gateway
        .stats(from, to, service)
        .await
        .map_err(|e| AdminError::store(&e))?;
    if let Some(own) = own {
        report = report.retain_services(|s| own.contains(s));
    }
    Ok(Json(report))
}

/// The names a service's counts are kept under: its own, and `<service>.<route>` for each
/// route.
pub fn stat_names(c: &turnpike_gateway::config::ServiceConfig) -> Vec<String> {
    std::iter::once(c.name.clone())
        .chain(c.routes.iter().map(|r| format!("{}.{}", c.name, r.name)))
        .collect()
}

/// The statistics names of the services in force of provider `slug`.
pub fn own_stat_names(api: &Api, slug: &str) -> BTreeSet<String> {
    stat_names_where(api, |owner| owner == Some(slug))
}

/// The statistics names of the services in force that are not provider `slug`'s.
pub fn others_stat_names(api: &Api, slug: &str) -> BTreeSet<String> {
    stat_names_where(api, |owner| owner != Some(slug))
}

fn stat_names_where(api: &Api, owned: impl Fn(Option<&str>) -> bool) -> BTreeSet<String> {
    api.control
        .services()
        .iter()
        .filter(|(c, _)| owned(c.provider.as_deref()))
        .flat_map(|(c, _)| stat_names(c))
        .collect()
}

/// Whether any statistics were ever kept under `name` (checked before a provider takes a
/// name, so it never sees counts made under that name by another).
pub async fn has_history(api: &Api, name: &str) -> Result<bool, AdminError> {
    let today = Day::from_unix(turnpike_gateway::unix_now());
    let first = Day::from_unix(0);
    let report = api
        .gateway
        .stats(first, today, Some(name))
        .await
        .map_err(|e| AdminError::store(&e))?;
    Ok(!report.days.is_empty())
}

fn day(params: &HashMap<String, String>, key: &str) -> Result<Option<Day>, AdminError> {
    params
        .get(key)
        .map(|v| {
            v.parse::<Day>()
                .map_err(|_| AdminError::field(key, "Must be a date, YYYY-MM-DD (UTC)."))
        })
        .transpose()
}

/// The gateway's counters and histograms, in the Prometheus text format 0.0.4.
pub async fn metrics(State(api): State<Api>) -> Response {
    let mut out = String::with_capacity(16 * 1024);
    api.gateway.metrics().render_prometheus(&mut out);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        out,
    )
        .into_response()
}
