//! The admin API's errors: `{"error": {"code", "message", "field"?}}`, each code with one status
//! set in one table ([`Code::status`]).

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// Every error code the admin API answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// No or a wrong admin token (`401`).
    Unauthorized,
    /// A value is invalid; `field` names it (`400`).
    InvalidField,
    /// The body is not the JSON expected (`400`).
    BadRequest,
    /// No such service or route (`404`).
    NotFound,
    /// A method the route does not serve (`405`).
    MethodNotAllowed,
    /// A service of that name (or a provider of that slug) exists (`409`).
    Conflict,
    /// A hub provider's token asked for what is not its own (`403`); nothing changed.
    Forbidden,
    /// A provider's payout did not give a correct test invoice (`422`); nothing was stored.
    PayoutUnusable,
    /// The store cannot be reached (`503`).
    StoreUnavailable,
}

impl Code {
    /// The HTTP status answered with this code.
    pub const fn status(self) -> StatusCode {
        match self {
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::InvalidField | Code::BadRequest => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::Conflict => StatusCode::CONFLICT,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::PayoutUnusable => StatusCode::UNPROCESSABLE_ENTITY,
            Code::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The code as it appears in the JSON body.
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::Unauthorized => "unauthorized",
            Code::InvalidField => "invalid_field",
            Code::BadRequest => "bad_request",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::Conflict => "conflict",
            Code::Forbidden => "forbidden",
            Code::PayoutUnusable => "payout_unusable",
            Code::StoreUnavailable => "store_unavailable",
        }
    }
}

/// An error answered by the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    /// The code; it sets the status.
    pub code: Code,
    /// What went wrong.
    pub message: String,
    /// The key at fault (`price_sats`, `headers.X-Api-Key`), for [`Code::InvalidField`].
    pub field: Option<String>,
}

impl AdminError {
    /// An error without a field.
    pub fn new(code: Code, message: impl Into<String>) -> AdminError {
        AdminError {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// `invalid_field` naming `field`.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> AdminError {
        AdminError {
            code: Code::InvalidField,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// `store_unavailable`, logging why.
    pub fn store(e: &dyn std::fmt::Display) -> AdminError {
        tracing::error!(error = %e, "admin API: store failed");
        AdminError::new(
            Code::StoreUnavailable,
            "The gateway's store is unavailable.",
        )
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut error = serde_json::json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(field) = &self.field {
            error["field"] = field.clone().into();
        }
        serde_json::json!({ "error": error })
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let mut resp = (self.code.status(), axum::Json(self.body())).into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.code == Code::Unauthorized {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"turnpike-admin\""),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_error_statuses_and_the_field_only_when_set() {
        use Code::*;
        for code in [
            Unauthorized,
            InvalidField,
            BadRequest,
            NotFound,
            MethodNotAllowed,
            Conflict,
            Forbidden,
            PayoutUnusable,
            StoreUnavailable,
        ] {
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
        assert_eq!(
            AdminError::field("price_sats", "too high").body()["error"]["field"],
            "price_sats"
        );
        assert!(
            AdminError::new(NotFound, "x").body()["error"]
                .get("field")
                .is_none()
        );
    }
}
