//! `POST /_turnpike/dev/pay`: settles an invoice of the embedded dev backend and returns its
//! preimage. Mounted only when the dev backend is in use; it moves no real money.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use turnpike_l402::Msat;
use turnpike_lightning::dev_wallet::DevLookupResponse;
use turnpike_lightning::{BackendError, InvoiceBackend, InvoiceState, PaymentBackend, PaymentHash};

use crate::SharedState;
use crate::error::{ApiError, ErrorCode};

/// Path of the dev pay endpoint.
pub const PATH: &str = "/_turnpike/dev/pay";

/// Path of the dev payment look-up: `GET /_turnpike/dev/pay/<payment hash hex>`.
pub const LOOKUP_PATH: &str = "/_turnpike/dev/pay/{hash}";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayRequest {
    invoice: String,
}

/// Pays a dev invoice: `{"invoice": "<bolt11>"}` → `{"preimage": "<hex>"}`.
pub async fn pay(State(state): State<SharedState>, body: Bytes) -> Response {
    let Some(dev) = state.dev.as_ref() else {
        return no_dev_backend();
    };
    let req: PayRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::new(
                ErrorCode::BadRequest,
                format!("Expected a JSON body {{\"invoice\": \"<bolt11>\"}}: {e}."),
            )
            .into_response();
        }
    };
    match dev.pay_invoice(&req.invoice, Msat::ZERO).await {
        Ok(payment) => axum::Json(serde_json::json!({
            "preimage": payment.preimage.to_hex(),
            "payment_hash": payment.payment_hash.to_hex(),
            "amount_msat": payment.amount.0,
        }))
        .into_response(),
        Err(e) => {
            let code = match &e {
                BackendError::AlreadyPaid => ErrorCode::AlreadyPaid,
                BackendError::InvoiceExpired => ErrorCode::InvoiceExpired,
                BackendError::UnknownInvoice => ErrorCode::UnknownInvoice,
                _ => ErrorCode::PaymentRejected,
            };
            ApiError::new(code, e.to_string()).into_response()
        }
    }
}

/// Reports a dev invoice's state, so a dev payer can find out whether its payment went through:
/// `{"state": "pending"|"settled"|"expired"|"canceled", "amount_msat": n, "preimage"?}`.
pub async fn lookup(State(state): State<SharedState>, Path(hash): Path<String>) -> Response {
    let Some(dev) = state.dev.as_ref() else {
        return no_dev_backend();
    };
    let Ok(hash) = hash.parse::<PaymentHash>() else {
        return ApiError::new(
            ErrorCode::BadRequest,
            "The payment hash must be 64 hex characters.",
        )
        .into_response();
    };
    match dev.lookup_invoice(&hash).await {
        Ok(status) => {
            let (name, preimage) = match status.state {
                InvoiceState::Pending => ("pending", None),
                InvoiceState::Settled { preimage, .. } => ("settled", Some(preimage.to_hex())),
                InvoiceState::Expired => ("expired", None),
                InvoiceState::Canceled => ("canceled", None),
            };
            axum::Json(DevLookupResponse {
                state: name.to_owned(),
                amount_msat: status.amount.0,
                preimage,
            })
            .into_response()
        }
        Err(BackendError::UnknownInvoice) => ApiError::new(
            ErrorCode::UnknownInvoice,
            "The dev backend does not know this invoice.",
        )
        .into_response(),
        Err(e) => ApiError::new(ErrorCode::BackendError, e.to_string()).into_response(),
    }
}

fn no_dev_backend() -> Response {
    ApiError::new(ErrorCode::NotFound, "The dev backend is not in use.").into_response()
}
