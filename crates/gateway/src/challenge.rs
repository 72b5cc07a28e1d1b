//! Issuing a 402 challenge: an invoice from the Lightning backend, a macaroon committing to its
//! payment hash, both headers Aperture sends, and a JSON body for humans and simple clients.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use turnpike_l402::challenge::Challenge;
use turnpike_l402::token::MintRequest;
use turnpike_lightning::CreateInvoice;
use turnpike_store::InvoiceRecord;

use crate::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::metrics::{BackendOp, StoreOp};
use crate::service::Service;

/// Why a challenge is being sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChallengeReason {
    /// The request carried no credential.
    NoCredential,
    /// The credential's token has no calls left.
    TokenUsedUp,
    /// The credential's token expired.
    TokenExpired,
    /// The credential's token does not grant this service.
    OtherService,
    /// The dynamic price of this request is above what the token was bought for.
    PriceAboveToken,
    /// An x402 payment was refused (nothing was charged, or a settlement failed).
    X402Refused(Box<crate::x402::Refusal>),
}

impl ChallengeReason {
    fn lead(&self) -> &str {
        match self {
            ChallengeReason::X402Refused(r) => &r.message,
            ChallengeReason::NoCredential => "Payment required.",
            ChallengeReason::TokenUsedUp => "This token has no calls left.",
            ChallengeReason::TokenExpired => "This token has expired.",
            ChallengeReason::OtherService => "This token does not grant this service.",
            ChallengeReason::PriceAboveToken => "This request costs more than this token covers.",
        }
    }
}

/// Mints a fresh challenge for `service` and answers 402, or an error if the backend or the
/// store cannot issue one.
///
/// `dynamic_price` (sats) is the price a dynamic pricer set for this request; the token then
/// also carries `<service>_max_price_msat`, so it pays only for requests priced that much or less.
///
/// A service taking x402 also gets its `PAYMENT-REQUIRED` header and the v1 requirements in the
/// body (`x402::add_to_challenge`) for `resource` (the request's URL); a service
/// without `"l402"` in its rails gets no invoice.
pub async fn issue(
    state: &AppState,
    service: &Service,
    reason: ChallengeReason,
    now: u64,
    dynamic_price: Option<turnpike_l402::Sats>,
    resource: &str,
) -> Response {
    let lightning = match service.l402 {
        true => match l402_part(state, service, &reason, now, dynamic_price).await {
            Ok(part) => Some(part),
            // x402 does not need the Lightning backend: its offer is still made.
            Err(e) if service.x402.is_some() => {
                tracing::warn!(service = %service.name, error = ?e, "challenge without an invoice: x402 only");
                None
            }
            Err(e) => return e.into_response(),
        },
        false => None,
    };
    let (mut body, www) = lightning.unwrap_or_else(|| x402_only_body(service, &reason));
    let mut resp = StatusCode::PAYMENT_REQUIRED.into_response();
    let headers = resp.headers_mut();
    for value in www {
        headers.append(header::WWW_AUTHENTICATE, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let refusal = match &reason {
        ChallengeReason::X402Refused(r) => Some(&**r),
        _ => None,
    };
    crate::x402::add_to_challenge(service, resource, refusal, headers, &mut body);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    *resp.body_mut() = axum::body::Body::from(serde_json::Value::Object(body).to_string());
    service.metrics.challenges.inc();
    resp
}

/// The body of a challenge with no invoice (a service paid over x402 only).
fn x402_only_body(
    service: &Service,
    reason: &ChallengeReason,
) -> (serde_json::Map<String, serde_json::Value>, Vec<HeaderValue>) {
    let price = service
        .x402
        .as_ref()
        .map(crate::x402::X402Offer::price_text)
        .unwrap_or_default();
    let message = format!(
        "{} Pay {price} (token units) for {} to {} over x402: sign the offer in the PAYMENT-REQUIRED header and retry with PAYMENT-SIGNATURE.",
        reason.lead(),
        service.grant_text(),
        service.name,
    );
    let body = serde_json::json!({
        "error": { "code": "payment_required", "message": message },
        "service": service.name,
        "calls": service.calls,
    });
    (object(body), Vec::new())
}

/// The Lightning part of a challenge: an invoice and a macaroon committing to it (recorded in
/// the store), as the JSON body's fields and the `WWW-Authenticate` values.
async fn l402_part(
    state: &AppState,
    service: &Service,
    reason: &ChallengeReason,
    now: u64,
    dynamic_price: Option<turnpike_l402::Sats>,
) -> Result<(serde_json::Map<String, serde_json::Value>, Vec<HeaderValue>), ApiError> {
    let price_sats = dynamic_price.unwrap_or(service.price);
    let price = price_sats.to_msat().ok_or_else(|| {
        ApiError::new(
            ErrorCode::PricerUnavailable,
            "The price of this request is out of range.",
        )
    })?;
    let calls = service.calls;
    let grant = service.grant_text();
    let memo = format!("{}: {grant}", service.name);
    let (backend, amount, fee) = crate::hub::ledger::invoice_terms(state, service, price, now)?;
    let started = std::time::Instant::now();
    let invoice = backend
        .create_invoice(CreateInvoice {
            amount,
            memo,
            expiry_secs: state.invoice_expiry_secs,
        })
        .await;
    state
        .metrics
        .backend_op(BackendOp::CreateInvoice, started.elapsed());
    let invoice = invoice
        .map_err(|e| {
            tracing::warn!(service = %service.name, backend = backend.name(), error = %e, "cannot create invoice");
            ApiError::new(
 ErrorCode::BackendUnavailable,
                "The Lightning backend cannot issue an invoice right now; paid credentials keep working. Retry later.",
            )
            .retry_after(5)
        })?;
    if invoice.amount != amount {
        tracing::error!(service = %service.name, asked = %amount, got = %invoice.amount, "backend issued an invoice for another amount");
        return Err(ApiError::new(
            ErrorCode::BackendError,
            "The Lightning backend issued an invoice for the wrong amount.",
        ));
    }
    let valid_until = service.lifetime_secs.map(|t| now.saturating_add(t));
    let (macaroon, token_id) = state.minter.mint(&MintRequest {
        payment_hash: invoice.payment_hash,
        service: &service.name,
        calls,
        valid_until,
        capabilities: &[],
        max_price_msat: dynamic_price.map(|_| price),
    });
    let started = std::time::Instant::now();
    let recorded = state
        .store
        .record_invoice(&InvoiceRecord {
            payment_hash: invoice.payment_hash,
            token_id,
            service: service.name.clone(),
            amount: invoice.amount,
            calls,
            created_at: now,
            expires_at: invoice.expires_at,
        })
        .await;
    state
        .metrics
        .store_op(StoreOp::RecordInvoice, started.elapsed());
    recorded.map_err(|e| {
        tracing::error!(error = %e, "cannot record invoice");
        ApiError::new(
            ErrorCode::StoreUnavailable,
            "The gateway's store is unavailable.",
        )
        .retry_after(5)
    })?;
    if let Some(payee) = &service.payee {
        let ids = (token_id, invoice.payment_hash);
        crate::hub::ledger::record_fee(state, payee, service, ids, (price, fee), now).await?;
    }

    let challenge = Challenge {
        macaroon,
        invoice: invoice.bolt11,
    };
    let macaroon_b64 = challenge.macaroon.to_base64();
    let or_x402 = match &service.x402 {
        Some(offer) => format!(
            " Or pay {} (token units) over x402: sign the offer in the PAYMENT-REQUIRED header and retry with PAYMENT-SIGNATURE.",
            offer.price_text()
        ),
        None => String::new(),
    };
    let with_fee = match fee {
        turnpike_l402::Msat::ZERO => String::new(),
        fee => format!(" plus the hub's fee of {fee}"),
    };
    let message = format!(
        "{} Pay the Lightning invoice ({} sats{with_fee} for {grant} to {}), then retry with the header `Authorization: L402 <macaroon>:<preimage hex>`.{or_x402}",
        reason.lead(),
        price_sats.0,
        service.name,
    );
    let body = serde_json::json!({
        "error": { "code": "payment_required", "message": message },
        "service": service.name,
        "price_sats": price_sats.0,
        "price_msat": price.0,
        "amount_msat": invoice.amount.0,
        "calls": calls,
        "valid_until": valid_until,
        "invoice": challenge.invoice,
        "macaroon": macaroon_b64,
        "payment_hash": invoice.payment_hash.to_hex(),
        "expires_at": invoice.expires_at,
    });
    tracing::debug!(service = %service.name, token = %token_id, ?reason, "issued challenge");
    let mut www = Vec::new();
    for value in challenge.header_values() {
        www.push(HeaderValue::from_str(&value).map_err(|_| {
            ApiError::new(
                ErrorCode::BackendError,
                "The backend issued an invoice that cannot be sent in a header.",
            )
        })?);
    }
    Ok((object(body), www))
}

/// The members of a JSON object literal.
fn object(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match v {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}
