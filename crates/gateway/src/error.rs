//! JSON error responses: every error the gateway itself answers has the body
//! `{"error": {"code": "...", "message": "..."}}`, and every code has one status, set in one
//! table ([`ErrorCode::status`]).

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// Every error code the gateway answers, with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No service is configured for the host and path (`404`).
    NoSuchService,
    /// An internal endpoint that is not in use (`404`).
    NotFound,
    /// The path cannot be put into canonical form, or holds an encoded slash (`400`).
    InvalidPath,
    /// The host is missing, duplicated, malformed or disagrees with the target (`400`).
    InvalidHost,
    /// The request (its body, its JSON) is malformed (`400`).
    BadRequest,
    /// The `Idempotency-Key` is malformed (`400`).
    InvalidIdempotencyKey,
    /// The credential is malformed, forged, tampered or foreign (`401`).
    InvalidCredential,
    /// The token was revoked through the admin API (`401`).
    TokenRevoked,
    /// The backend does not report the token's invoice as paid (`401`).
    PaymentNotSettled,
    /// The client must pay (`402`; the body of a challenge).
    PaymentRequired,
    /// The dev invoice was already paid (`409`).
    AlreadyPaid,
    /// The first request with this `Idempotency-Key` is still running (`409`).
    IdempotencyInFlight,
    /// The dev invoice expired (`410`).
    InvoiceExpired,
    /// The dev invoice is unknown (`404`).
    UnknownInvoice,
    /// A method the gateway does not serve (`CONNECT`) (`405`).
    MethodNotAllowed,
    /// The request body did not arrive in time (`408`).
    RequestTimeout,
    /// The dev backend refused to pay (`400`).
    PaymentRejected,
    /// The request body is larger than allowed (`413`).
    RequestTooLarge,
    /// The `Idempotency-Key` was used for another request (`422`).
    IdempotencyKeyReused,
    /// Over a rate limit (`429`).
    RateLimited,
    /// The backend issued something wrong (`502`).
    BackendError,
    /// The upstream could not be reached (`502`).
    UpstreamUnreachable,
    /// The backend cannot issue or confirm right now (`503`).
    BackendUnavailable,
    /// The store is unavailable (`503`).
    StoreUnavailable,
    /// The dynamic pricer failed (`503`).
    PricerUnavailable,
    /// Too many connections are open (`503`).
    OverCapacity,
    /// The upstream did not answer in time (`504`).
    UpstreamTimeout,
    /// The x402 facilitator cannot be asked right now; nothing was charged (`503`).
    FacilitatorUnavailable,
    /// An x402 settlement was sent and not confirmed: the payment may have moved; no call was
    /// served (`502`).
    X402SettlementUnknown,
    /// The name or slug is taken (`409`).
    Conflict,
    /// A provider's payout did not give a correct test invoice; nothing was stored (`422`).
    PayoutUnusable,
    /// The hub provider of this service is suspended: no new payment is taken (`403`).
    ProviderSuspended,
}

impl ErrorCode {
    /// The HTTP status answered with this code.
    pub const fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            InvalidPath | InvalidHost | BadRequest | InvalidIdempotencyKey | PaymentRejected => {
                StatusCode::BAD_REQUEST
            }
            InvalidCredential | TokenRevoked | PaymentNotSettled => StatusCode::UNAUTHORIZED,
            PaymentRequired => StatusCode::PAYMENT_REQUIRED,
            NoSuchService | NotFound | UnknownInvoice => StatusCode::NOT_FOUND,
            AlreadyPaid | IdempotencyInFlight | Conflict => StatusCode::CONFLICT,
            InvoiceExpired => StatusCode::GONE,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProviderSuspended => StatusCode::FORBIDDEN,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            IdempotencyKeyReused | PayoutUnusable => StatusCode::UNPROCESSABLE_ENTITY,
            RateLimited => StatusCode::TOO_MANY_REQUESTS,
            BackendError | UpstreamUnreachable | X402SettlementUnknown => StatusCode::BAD_GATEWAY,
            BackendUnavailable
            | StoreUnavailable
            | PricerUnavailable
            | OverCapacity
            | FacilitatorUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The code as it appears in the JSON body.
    pub const fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            NoSuchService => "no_such_service",
            NotFound => "not_found",
            InvalidPath => "invalid_path",
            InvalidHost => "invalid_host",
            BadRequest => "bad_request",
            InvalidIdempotencyKey => "invalid_idempotency_key",
            InvalidCredential => "invalid_credential",
            TokenRevoked => "token_revoked",
            PaymentNotSettled => "payment_not_settled",
            PaymentRequired => "payment_required",
            AlreadyPaid => "already_paid",
            IdempotencyInFlight => "idempotency_in_flight",
            InvoiceExpired => "invoice_expired",
            UnknownInvoice => "unknown_invoice",
            MethodNotAllowed => "method_not_allowed",
            RequestTimeout => "request_timeout",
            PaymentRejected => "payment_rejected",
            RequestTooLarge => "request_too_large",
            IdempotencyKeyReused => "idempotency_key_reused",
            RateLimited => "rate_limited",
            BackendError => "backend_error",
            UpstreamUnreachable => "upstream_unreachable",
            BackendUnavailable => "backend_unavailable",
            StoreUnavailable => "store_unavailable",
            PricerUnavailable => "pricer_unavailable",
            OverCapacity => "over_capacity",
            UpstreamTimeout => "upstream_timeout",
            FacilitatorUnavailable => "facilitator_unavailable",
            X402SettlementUnknown => "settlement_unknown",
            Conflict => "conflict",
            PayoutUnusable => "payout_unusable",
            ProviderSuspended => "provider_suspended",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answered by the gateway (not by an upstream).
#[derive(Debug, Clone)]
pub struct ApiError {
    /// Stable machine-readable code; it sets the status.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// Seconds after which a retry may succeed (sets `Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A new error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds a `Retry-After` header.
    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "code": self.code.as_str(), "message": self.message } })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), axum::Json(self.body())).into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_an_error_status_with_a_snake_case_name() {
        use ErrorCode::*;
        let all = [
            NoSuchService,
            NotFound,
            InvalidPath,
            InvalidHost,
            BadRequest,
            InvalidIdempotencyKey,
            InvalidCredential,
            TokenRevoked,
            PaymentNotSettled,
            PaymentRequired,
            AlreadyPaid,
            IdempotencyInFlight,
            InvoiceExpired,
            UnknownInvoice,
            PaymentRejected,
            RequestTooLarge,
            IdempotencyKeyReused,
            RateLimited,
            BackendError,
            UpstreamUnreachable,
            BackendUnavailable,
            StoreUnavailable,
            PricerUnavailable,
            OverCapacity,
            UpstreamTimeout,
            FacilitatorUnavailable,
            X402SettlementUnknown,
            Conflict,
            PayoutUnusable,
            ProviderSuspended,
        ];
        let mut names = std::collections::HashSet::new();
        for code in all {
            assert!(code.status().is_client_error() || code.status().is_server_error());
            assert!(
                code.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
            assert!(names.insert(code.as_str()), "{code} twice");
        }
    }
}
