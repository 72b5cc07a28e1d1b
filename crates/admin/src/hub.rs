//! The hub's admin routes: the operator registers and lists providers and reads the fee
//! ledger; a provider reads its own record and fees (`/api/v1/hub/me`). Which token may do
//! what is decided once, in [`Caller`].

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use turnpike_gateway::hub::Hub;
use turnpike_gateway::hub::register::{self, RegisterError};
use turnpike_l402::Msat;
use turnpike_store::FeeStanding;

use crate::error::{AdminError, Code};
use crate::{Api, Caller};

/// Paths a provider's token may use (its own services, statistics and record); every other
/// private route is the operator's.
pub fn provider_may(path: &str) -> bool {
    path == "/api/v1/services"
        || path.starts_with("/api/v1/services/")
        || path == "/api/v1/session"
        || path == "/api/v1/stats"
        || path == "/api/v1/hub/me"
        || path == "/api/v1/hub/statement"
}

/// `GET /api/v1/session`: who the token is (`operator` or `provider`, with its slug) and
/// whether this gateway is a hub, so a page shows the right panels.
pub async fn session(
    State(api): State<Api>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Response {
    let role = match caller {
        Caller::Operator => "operator",
        Caller::Provider(_) => "provider",
    };
    Json(serde_json::json!({
        "role": role,
        "provider": caller.provider(),
        "hub": api.control.hub().is_some(),
    }))
    .into_response()
}

fn hub(api: &Api) -> Result<&std::sync::Arc<Hub>, AdminError> {
    api.control.hub().ok_or_else(|| {
        AdminError::new(
            Code::NotFound,
            "This gateway is not a hub (no [hub] section).",
        )
    })
}

fn register_error(e: RegisterError) -> AdminError {
    match e {
        RegisterError::Invalid { field, message } => AdminError::field(field, message),
        RegisterError::Taken(_) => AdminError::new(Code::Conflict, format!("{e}.")),
        RegisterError::Payout(_) | RegisterError::CanSpend(_) => {
            AdminError::new(Code::PayoutUnusable, format!("{e}."))
        }
        RegisterError::Store(e) => AdminError::store(&e),
        RegisterError::Unavailable => AdminError::new(Code::NotFound, format!("{e}.")),
    }
}

/// `GET /api/v1/hub/providers` (operator): every provider, payout secrets redacted.
pub async fn list(State(api): State<Api>) -> Result<Response, AdminError> {
    let providers: Vec<_> = hub(&api)?.providers().iter().map(|p| p.to_json()).collect();
    Ok(Json(serde_json::json!({ "providers": providers })).into_response())
}

/// `POST /api/v1/hub/providers` (operator): registers a provider; `201` with its admin token,
/// shown this once.
pub async fn create(
    State(api): State<Api>,
    bytes: axum::body::Bytes,
) -> Result<Response, AdminError> {
    hub(&api)?;
    let reg = register::parse(&bytes).map_err(register_error)?;
    let done = register::register(&api.control, reg, turnpike_gateway::unix_now())
        .await
        .map_err(register_error)?;
    Ok(register::registered_response(&done))
}

/// `GET /api/v1/hub/fees` (operator): every provider (its name and status) with what its paid
/// tokens add up to and where its fees stand (unbilled, billed unpaid, paid, earned), and the
/// totals of the hub.
pub async fn fees(State(api): State<Api>) -> Result<Response, AdminError> {
    let hub = hub(&api)?;
    let standing = api
        .store()?
        .fee_standing(None)
        .await
        .map_err(|e| AdminError::store(&e))?;
    let mut by_slug: std::collections::BTreeMap<String, FeeStanding> = standing
        .into_iter()
        .map(|s| (s.provider.clone(), s))
        .collect();
    let mut rows = Vec::new();
    let mut total = zero("");
    for p in hub.providers() {
        let slug = &p.record.slug;
        let s = by_slug.remove(slug).unwrap_or_else(|| zero(slug));
        total = add(&total, &s);
        let mut row = fee_json(&s);
        if let serde_json::Value::Object(map) = &mut row {
            map.insert("name".into(), p.record.name.clone().into());
            map.insert("status".into(), p.record.status.clone().into());
        }
        rows.push(row);
    }
    // Fees of a provider no longer in force (its payout cannot be connected) still count.
    for s in by_slug.into_values() {
        total = add(&total, &s);
        rows.push(fee_json(&s));
    }
    let mut totals = fee_json(&total);
    if let serde_json::Value::Object(map) = &mut totals {
        map.remove("provider");
    }
    Ok(Json(serde_json::json!({ "providers": rows, "totals": totals })).into_response())
}

/// No payment, no fee.
fn zero(slug: &str) -> FeeStanding {
    FeeStanding {
        provider: slug.into(),
        payments: 0,
        revenue: Msat::ZERO,
        fees: Msat::ZERO,
        unbilled: Msat::ZERO,
        billed_unpaid: Msat::ZERO,
        billed_paid: Msat::ZERO,
        earned: Msat::ZERO,
    }
}

/// The sums of `a` and `b` (saturating: totals shown, never charged).
fn add(a: &FeeStanding, b: &FeeStanding) -> FeeStanding {
    let sum = |x: Msat, y: Msat| Msat(x.0.saturating_add(y.0));
    FeeStanding {
        provider: a.provider.clone(),
        payments: a.payments.saturating_add(b.payments),
        revenue: sum(a.revenue, b.revenue),
        fees: sum(a.fees, b.fees),
        unbilled: sum(a.unbilled, b.unbilled),
        billed_unpaid: sum(a.billed_unpaid, b.billed_unpaid),
        billed_paid: sum(a.billed_paid, b.billed_paid),
        earned: sum(a.earned, b.earned),
    }
}

fn fee_json(s: &FeeStanding) -> serde_json::Value {
    let mut row = totals_json(&turnpike_store::FeeTotals {
        provider: s.provider.clone(),
        payments: s.payments,
        revenue: s.revenue,
        fees: s.fees,
    });
    if let serde_json::Value::Object(map) = &mut row {
        let owed = s.unbilled.0.saturating_add(s.billed_unpaid.0);
        for (key, msat) in [
            ("unbilled_msat", s.unbilled.0),
            ("billed_unpaid_msat", s.billed_unpaid.0),
            ("billed_paid_msat", s.billed_paid.0),
            ("owed_msat", owed),
            ("earned_msat", s.earned.0),
        ] {
            map.insert(key.into(), msat.into());
        }
    }
    row
}

fn totals_json(t: &turnpike_store::FeeTotals) -> serde_json::Value {
    serde_json::json!({
        "provider": t.provider,
        "payments": t.payments,
        "revenue_msat": t.revenue.0,
        "revenue_sats": t.revenue.0 / 1000,
        "fees_msat": t.fees.0,
        "fees_sats": t.fees.0 / 1000,
    })
}

/// `GET /api/v1/hub/me` (a provider): its own record and fees.
pub async fn me(
    State(api): State<Api>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, AdminError> {
    let hub = hub(&api)?;
    let Caller::Provider(slug) = caller else {
        return Err(AdminError::new(
            Code::NotFound,
            "This route answers a provider's token (the operator sees /api/v1/hub/providers).",
        ));
    };
    let provider = hub
        .provider(&slug)
        .ok_or_else(|| AdminError::new(Code::NotFound, "No such provider."))?;
    let standing = api
        .store()?
        .fee_standing(Some(&slug))
        .await
        .map_err(|e| AdminError::store(&e))?;
    let mut body = provider.to_json();
    if let serde_json::Value::Object(map) = &mut body {
        let fees = standing.first().cloned().unwrap_or_else(|| zero(&slug));
        map.insert("fees".into(), fee_json(&fees));
        let bills = api
            .store()?
            .bills(Some(&slug), 20)
            .await
            .map_err(|e| AdminError::store(&e))?;
        map.insert("bills".into(), bills.iter().map(bill_json).collect());
    }
    Ok(Json(body).into_response())
}

fn bill_json(b: &turnpike_store::BillRecord) -> serde_json::Value {
    serde_json::json!({
        "provider": b.provider,
        "payment_hash": b.payment_hash.to_hex(),
        "fees_msat": b.fees.0,
        "amount_msat": b.amount.0,
        "amount_sats": b.amount.0 / 1000,
        "invoice": b.bolt11,
        "created_at": b.created_at,
        "due_at": b.due_at,
        "paid_at": b.paid_at,
    })
}

/// `GET /api/v1/hub/bills` (operator): the latest 100 bills, newest first.
pub async fn bills(State(api): State<Api>) -> Result<Response, AdminError> {
    hub(&api)?;
    let bills = api
        .store()?
        .bills(None, 100)
        .await
        .map_err(|e| AdminError::store(&e))?;
    let rows: Vec<_> = bills.iter().map(bill_json).collect();
    Ok(Json(serde_json::json!({ "bills": rows })).into_response())
}

/// `POST /api/v1/hub/providers/{slug}/suspend` (operator): no new payments for its services
/// (no 402s); tokens already paid keep working.
pub async fn suspend(
    State(api): State<Api>,
    Path(slug): Path<String>,
) -> Result<Response, AdminError> {
    set_status(&api, &slug, turnpike_gateway::hub::SUSPENDED).await
}

/// `POST /api/v1/hub/providers/{slug}/reinstate` (operator): takes payments again.
pub async fn reinstate(
    State(api): State<Api>,
    Path(slug): Path<String>,
) -> Result<Response, AdminError> {
    set_status(&api, &slug, turnpike_gateway::hub::ACTIVE).await
}

async fn set_status(api: &Api, slug: &str, status: &str) -> Result<Response, AdminError> {
    let hub = hub(api)?;
    let store = api.store()?;
    let changed = store
        .set_provider_status(slug, status)
        .await
        .map_err(|e| AdminError::store(&e))?;
    if changed.is_none() {
        return Err(AdminError::new(
            Code::NotFound,
            format!("No provider {slug:?}."),
        ));
    }
    api.control
        .sync()
        .await
        .map_err(|e| AdminError::store(&e))?;
    let provider = hub
        .provider(slug)
        .ok_or_else(|| AdminError::new(Code::NotFound, format!("No provider {slug:?}.")))?;
    Ok(Json(provider.to_json()).into_response())
}

/// `?month=YYYY-MM`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonthQuery {
    month: String,
}

/// `GET /api/v1/hub/statement?month=YYYY-MM`: each provider's payments recognised in that
/// month (UTC), its revenue and the fees it owes for them; a provider's token sees its own.
pub async fn statement(
    State(api): State<Api>,
    axum::Extension(caller): axum::Extension<Caller>,
    query: Result<Query<MonthQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AdminError> {
    hub(&api)?;
    let Query(q) = query.map_err(|_| {
        AdminError::field(
            "month",
            "Give the month as ?month=YYYY-MM (and nothing else).",
        )
    })?;
    let period = turnpike_gateway::hub::month_range(&q.month)
        .map_err(|m| AdminError::field("month", format!("{m}.")))?;
    let totals = api
        .store()?
        .fee_totals(caller.provider(), period.clone())
        .await
        .map_err(|e| AdminError::store(&e))?;
    let rows: Vec<_> = totals.iter().map(totals_json).collect();
    Ok(Json(serde_json::json!({
        "month": q.month, "from": period.start, "to": period.end, "providers": rows,
    }))
    .into_response())
}

/// `PATCH /api/v1/hub/me` (a provider): `{"payout": {…}}`, checked and tried with a test
/// invoice as at registration; the provider as now in force.
pub async fn change_payout(
    State(api): State<Api>,
    axum::Extension(caller): axum::Extension<Caller>,
    bytes: axum::body::Bytes,
) -> Result<Response, AdminError> {
    hub(&api)?;
    let Caller::Provider(slug) = caller else {
        return Err(AdminError::new(
            Code::NotFound,
            "This route answers a provider's token.",
        ));
    };
    let provider = register::change_payout(&api.control, &slug, &bytes)
        .await
        .map_err(register_error)?;
    Ok(Json(provider.to_json()).into_response())
}
