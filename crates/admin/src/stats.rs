//! `GET /api/v1/stats` (daily totals from the store) and `GET /metrics` (Prometheus text).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use turnpike_gateway::stats::StatsReport;
use turnpike_store::Day;

use crate::Api;
use crate::error::AdminError;
use crate::tokens::only;

/// Longest range one query may span, in days.
const MAX_DAYS: u32 = 366;

/// The statistics of `from..=to` (default: the last 30 days), of one `service` or all.
pub async fn stats(
    State(api): State<Api>,
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
    let report = api
        .gateway
        .stats(from, to, service)
        .await
        .map_err(|e| AdminError::store(&e))?;
    Ok(Json(report))
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
