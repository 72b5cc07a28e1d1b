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

/// The macaroon-only credential fields, as header names (not re-parsed per request).
pub(crate) const MACAROON: HeaderName =
    HeaderName::from_static(turnpike_l402::credential::MACAROON_HEADER);
/// gRPC-gateway's spelling of [`MACAROON`].
pub(crate) const GRPC_METADATA_MACAROON: HeaderName =
    HeaderName::from_static(turnpike_l402::credential::GRPC_METADATA_MACAROON);

/// Fields the proxy sets itself, or that change what the upstream acts on: never the client's.
pub(crate) fn is_managed(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "x-real-ip"
            | "forwarded"
            | "x-original-url"
            | "x-rewrite-url"
            | "x-http-method-override"
            | "x-http-method"
            | "x-method-override"
    ) || crate::upstream::head::is_hop_by_hop_name(name)
        || name == "content-length"
        || turnpike_l402::credential::CREDENTIAL_FIELDS[1..].contains(&name)
}

/// Fields naming the client's address or the original request, believed only from a proxy.
pub(crate) fn is_address_field(name: &str) -> bool {
    matches!(
        name,
        "true-client-ip"
            | "x-client-ip"
            | "x-cluster-client-ip"
            | "cf-connecting-ip"
            | "fastly-client-ip"
            | "x-forwarded-server"
            | "x-forwarded-port"
            | "x-forwarded-prefix"
            | "x-forwarded-ssl"
            | "x-original-forwarded-for"
    )
}
