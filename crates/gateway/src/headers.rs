//! The header fields Turnpike itself reads or sets on requests and responses.

use http::HeaderName;

/// Response header telling the client how many calls its token has left.
pub const CALLS_REMAINING: HeaderName = HeaderName::from_static("turnpike-calls-remaining");

/// Set on a response served from the free tier.
pub const FREE_CALL: HeaderName = HeaderName::from_static("turnpike-free-call");

/// Request header: a client's key for an idempotent retry.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Set on a response replayed for an idempotent retry.
pub const IDEMPOTENT_REPLAY: HeaderName = HeaderName::from_static("turnpike-idempotent-replay");
