//! `POST /_turnpike/dev/pay`: settles an invoice of the embedded dev backend and returns its
//! preimage. Mounted only when the dev backend is in use; it moves no real money.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use turnpike_l402::Msat;
use turnpike_lightning::{BackendError, PaymentBackend};

use crate::SharedState;
use crate::error::{ApiError, ErrorCode};

/// Path of the dev pay endpoint.
pub const PATH: &str = "/_turnpike/dev/pay";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayRequest {
    invoice: String,
}

/// Pays a dev invoice: `{"invoice": "<bolt11>"}` → `{"preimage": "<hex>"}`.
pub async fn pay(State(state): State<SharedState>, body: Bytes) -> Response {
    let Some(dev) = state.dev.as_ref() else {
        return ApiError::new(ErrorCode::NotFound, "The dev backend is not in use.")
            .into_response();
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
