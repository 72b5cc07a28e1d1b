//! The hub's admin routes: the operator registers and lists providers and reads the fee
//! ledger; a provider reads its own record and fees (`/api/v1/hub/me`). Which token may do
//! what is decided once, in [`Caller`].

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use turnpike_gateway::hub::Hub;
use turnpike_gateway::hub::register::{self, RegisterError};

use crate::error::{AdminError, Code};
use crate::{Api, Caller};

/// Paths a provider's token may use (its own services, its own record); every other private
/// route is the operator's.
pub fn provider_may(path: &str) -> bool {
    path == "/api/v1/services"
        || path.starts_with("/api/v1/services/")
        || path == "/api/v1/hub/me"
        || path == "/api/v1/hub/statement"
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

/// `GET /api/v1/hub/fees` (operator): what each provider's paid tokens add up to.
pub async fn fees(State(api): State<Api>) -> Result<Response, AdminError> {
    hub(&api)?;
    let totals = api
        .store()?
        .fee_totals(None, 0..u64::MAX)
        .await
        .map_err(|e| AdminError::store(&e))?;
    let rows: Vec<_> = totals.iter().map(fee_json).collect();
    Ok(Json(serde_json::json!({ "providers": rows })).into_response())
}

fn fee_json(t: &turnpike_store::FeeTotals) -> serde_json::Value {
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
    let totals = api
        .store()?
        .fee_totals(Some(&slug), 0..u64::MAX)
        .await
        .map_err(|e| AdminError::store(&e))?;
    let mut body = provider.to_json();
    if let serde_json::Value::Object(map) = &mut body {
        let fees = totals.first().map(fee_json).unwrap_or_else(|| {
            fee_json(&turnpike_store::FeeTotals {
                provider: slug.to_string(),
                payments: 0,
                revenue: turnpike_l402::Msat::ZERO,
                fees: turnpike_l402::Msat::ZERO,
            })
        });
        map.insert("fees".into(), fees);
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
    let rows: Vec<_> = totals.iter().map(fee_json).collect();
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
