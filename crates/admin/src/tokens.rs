//! Tokens (list, revoke) and payments, read from the store.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde_json::{Value, json};
use turnpike_l402::{Msat, TokenId};
use turnpike_store::{PaymentRecord, TokenQuery, TokenRecord};

use crate::Api;
use crate::error::AdminError;

/// Most rows one listing answers.
const MAX_LIMIT: u32 = 1000;

/// `amount_msat` and `amount_sats` (rounded down, for display).
fn amounts(amount: Msat, into: &mut serde_json::Map<String, Value>) {
    into.insert("amount_msat".into(), amount.0.into());
    into.insert("amount_sats".into(), (amount.0 / 1000).into());
}

fn token_json(t: &TokenRecord) -> Value {
    let mut v = json!({
        "token_id": t.token_id.to_hex(),
        "service": t.service,
        "paid": t.paid,
        "calls_total": t.calls_total,
        "calls_used": t.calls_used,
        "first_used": t.first_used,
        "last_used": t.last_used,
        "revoked": t.revoked,
        "issued_at": t.issued_at,
    });
    if let Value::Object(map) = &mut v {
        amounts(t.amount, map);
    }
    v
}

fn payment_json(p: &PaymentRecord) -> Value {
    let mut v =
        json!({ "token_id": p.token_id.to_hex(), "service": p.service, "paid_at": p.paid_at });
    if let Value::Object(map) = &mut v {
        amounts(p.amount, map);
    }
    v
}

/// A `limit` query parameter: 1 to [`MAX_LIMIT`], `default` when absent.
fn limit(params: &HashMap<String, String>, default: u32) -> Result<u32, AdminError> {
    match params.get("limit") {
        None => Ok(default),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                AdminError::field("limit", format!("Must be a number from 1 to {MAX_LIMIT}."))
            }),
    }
}

/// Refuses query parameters other than `known`.
pub(crate) fn only(params: &HashMap<String, String>, known: &[&str]) -> Result<(), AdminError> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(AdminError::field(
            k.clone(),
            format!("Unknown parameter; expected one of {}.", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// A page cursor: `<issued_at>:<token id hex>`.
fn cursor(t: &TokenRecord) -> String {
    format!("{}:{}", t.issued_at, t.token_id.to_hex())
}

fn parse_cursor(s: &str) -> Result<(u64, TokenId), AdminError> {
    let bad = || AdminError::field("before", "Not a cursor from a previous page's `next`.");
    let (at, id) = s.split_once(':').ok_or_else(bad)?;
    Ok((
        at.parse().map_err(|_| bad())?,
        id.parse().map_err(|_| bad())?,
    ))
}

/// `GET /api/v1/tokens?service=&paid=&limit=&before=`.
pub async fn list(
    State(api): State<Api>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, AdminError> {
    only(&params, &["service", "paid", "limit", "before"])?;
    let paid = match params.get("paid").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(AdminError::field("paid", "Must be true or false.")),
    };
    let query = TokenQuery {
        service: params
            .get("service")
            .map(String::as_str)
            .filter(|s| !s.is_empty()),
        paid,
        limit: limit(&params, 100)?,
        before: params.get("before").map(|c| parse_cursor(c)).transpose()?,
    };
    let store = api.store()?;
    let tokens = store
        .list_tokens(&query)
        .await
        .map_err(|e| AdminError::store(&e))?;
    let next = match tokens.last() {
        Some(last) if tokens.len() == query.limit as usize => Some(cursor(last)),
        _ => None,
    };
    Ok(Json(json!({
        "tokens": tokens.iter().map(token_json).collect::<Vec<_>>(),
        "next": next,
    })))
}

/// `POST /api/v1/tokens/{token_id}/revoke`: idempotent; an unknown id is recorded too.
pub async fn revoke(
    State(api): State<Api>,
    Path(token_id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let token: TokenId = token_id
        .parse()
        .map_err(|_| AdminError::field("token_id", "Expected 64 hex characters."))?;
    api.control
        .revoke(&token)
        .await
        .map_err(|e| AdminError::store(&e))?;
    Ok(Json(json!({ "token_id": token.to_hex(), "revoked": true })))
}

/// `GET /api/v1/payments?limit=`: newest first.
pub async fn payments(
    State(api): State<Api>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, AdminError> {
    only(&params, &["limit"])?;
    let limit = limit(&params, 50)?;
    let store = api.store()?;
    let payments = store
        .recent_payments(limit)
        .await
        .map_err(|e| AdminError::store(&e))?;
    Ok(Json(
        json!({ "payments": payments.iter().map(payment_json).collect::<Vec<_>>() }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn cursors_round_trip(at in any::<u64>(), id in any::<[u8; 32]>()) {
            let record = TokenRecord {
                token_id: TokenId(id),
                service: "s".into(),
                amount: Msat(0),
                issued_at: at,
                paid: false,
                calls_total: None,
                calls_used: 0,
                first_used: None,
                last_used: None,
                revoked: false,
            };
            prop_assert_eq!(parse_cursor(&cursor(&record)).unwrap(), (at, TokenId(id)));
        }

        #[test]
        fn any_text_is_a_cursor_or_an_invalid_before(s in ".{0,100}") {
            if let Err(e) = parse_cursor(&s) {
                prop_assert_eq!(e.field.as_deref(), Some("before"));
            }
        }
    }
}
