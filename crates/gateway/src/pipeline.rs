//! The request pipeline for priced services: match, authenticate, charge, forward, account.

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, Request, StatusCode};
use turnpike_l402::caveat::CaveatError;
use turnpike_l402::credential::Credential;
use turnpike_l402::token::VerifyError;
use turnpike_lightning::BackendError;
use turnpike_store::{Consumption, IdempotencyBegin, IdempotencyRequest};

use crate::challenge::{self, ChallengeReason};
use crate::error::ApiError;
use crate::idempotency;
use crate::proxy::ForwardError;
use crate::routing::request_host;
use crate::{SharedState, unix_now};

/// Response header telling the client how many calls its token has left.
pub const CALLS_REMAINING: HeaderName = HeaderName::from_static("turnpike-calls-remaining");

/// Set on a response served from the free tier.
pub const FREE_CALL: HeaderName = HeaderName::from_static("turnpike-free-call");

/// Handles one request to a service (the router's fallback).
pub async fn handle(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
    serve(state, peer, req).await
}

/// Runs one request from `peer` through the pipeline.
pub(crate) async fn serve(
    state: SharedState,
    peer: SocketAddr,
    mut req: Request<Body>,
) -> Response {
    // 0. One canonical form of the target and host for everything below and the upstream.
    let target = match crate::edge::normalize(&mut req) {
        Ok(target) => target,
        Err(e) => return e.to_api_error().into_response(),
    };
    // 1. Match.
    let Some(service) = state
        .router
        .route(req.method(), request_host(&req), target.match_path(&req))
        .cloned()
    else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_service",
            "No service is configured for this host and path.",
        )
        .into_response();
    };
    if target.encoded_separator && !service.allow_encoded_slashes {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "Bad request: encoded slashes and backslashes (%2F, %5C, \\) are not accepted in paths.",
        )
        .into_response();
    }
    let via = crate::proxy::Via::new(&state.trusted_proxies, peer.ip(), req.headers());
    let client = via.client;
    let limits = &state.limits;
    if let Some(limiter) = &limits.per_ip
        && let Err(wait) = limiter.check(&crate::client_ip::client_key(client), Instant::now())
    {
        return too_many(wait, "Too many requests from this address.");
    }
    if service.is_free() {
        return forward(&state, &service, req, via, None).await;
    }
    // A dynamic price for this very request, when the service has a pricer (fails closed).
    let (req, dynamic_price) = match &service.pricer {
        None => (req, None),
        Some(config) => match ask_pricer(&state, &service, config, req).await {
            Ok((req, price)) => (req, Some(price)),
            Err(resp) => return resp,
        },
    };
    if dynamic_price == Some(0) {
        return forward(&state, &service, req, via, None).await;
    }

    // 2. Authenticate: no I/O, the root key is derived. A credential this worker verified
    // lately (a time pass, a bundle) is not parsed and checked again.
    let now = unix_now();
    let field = crate::verified::VerifiedMemo::credential_field(req.headers());
    let remembered = field.and_then(|f| state.verified.get(f, &service.name, now));
    let verified = match remembered {
        Some(result) => result,
        None => {
            let credential = match Credential::from_headers(req.headers()) {
                Ok(Some(c)) => c,
                Ok(None) => {
                    return no_credential(&state, &service, req, via, client, now, dynamic_price)
                        .await;
                }
                Err(e) => {
                    return ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "invalid_credential",
                        format!("Malformed L402 credential: {e}."),
                    )
                    .into_response();
                }
            };
            let result = state.minter.verify(&credential, &service.name, now);
            if let (Ok(token), Some(field)) = (&result, field) {
                state.verified.insert(field, &service.name, token);
            }
            result
        }
    };
    let token = match verified {
        Ok(t) => t,
        Err(VerifyError::Caveat(CaveatError::Expired { .. })) => {
            return issue_challenge(
                &state,
                &service,
                ChallengeReason::TokenExpired,
                now,
                client,
                dynamic_price,
            )
            .await;
        }
        Err(VerifyError::Caveat(CaveatError::ServiceNotGranted)) => {
            return issue_challenge(
                &state,
                &service,
                ChallengeReason::OtherService,
                now,
                client,
                dynamic_price,
            )
            .await;
        }
        Err(e) => {
            tracing::debug!(service = %service.name, error = %e, "rejected credential");
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credential",
                format!("Invalid L402 credential: {e}."),
            )
            .into_response();
        }
    };

    if let Some(price) = dynamic_price
        && token
            .grant
            .max_price_msat
            .is_none_or(|max| max < price.saturating_mul(1000))
    {
        return issue_challenge(
            &state,
            &service,
            ChallengeReason::PriceAboveToken,
            now,
            client,
            dynamic_price,
        )
        .await;
    }

    if let Some(limiter) = &limits.per_token
        && let Err(wait) = limiter.check(&token.token_id, Instant::now())
    {
        return too_many(wait, "Too many requests with this token.");
    }
    // A counted token whose calls keep failing (and are given back) waits a while.
    if token.grant.calls.is_some()
        && let Some(limiter) = &limits.refunds_per_token
        && let Err(wait) = limiter.peek(&token.token_id, Instant::now())
    {
        return too_many(
            wait,
            "Too many of this token's calls failed lately and were given back.",
        );
    }

    if let Some(settled) = &state.settlement
        && !settled.contains(&token.token_id)
    {
        match state.backend.lookup_invoice(&token.payment_hash).await {
            Ok(status) if status.state.is_settled() => settled.insert(token.token_id),
            Ok(_) | Err(BackendError::UnknownInvoice) => {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "payment_not_settled",
                    "The Lightning backend does not report this token's invoice as paid.",
                )
                .into_response();
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot check a token's invoice with the backend");
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "backend_unavailable",
                    "The Lightning backend cannot confirm this payment right now. Retry later.",
                )
                .retry_after(5)
                .into_response();
            }
        }
    }

    // 3. Charge: one atomic statement in the store, only for tokens that count calls. With an
    // Idempotency-Key, the entry and the charge are one transaction.
    let idempotency_key = match idempotency::key(req.headers()) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    if let Some(key) = idempotency_key {
        let (req, fingerprint) =
            match idempotency::fingerprint(req, state.idempotency.max_request_bytes).await {
                Ok(x) => x,
                Err(e) => return e.into_response(),
            };
        let begin = state
            .store
            .idempotency_begin(&IdempotencyRequest {
                token: &token.token_id,
                key: &key,
                fingerprint: &fingerprint,
                service: &service.name,
                calls_total: token.grant.calls,
                now_unix: now,
                stale_after_secs: state.idempotency.stale_after_secs,
            })
            .await;
        let remaining = match begin {
            Ok(IdempotencyBegin::Charged { remaining }) => remaining,
            Ok(IdempotencyBegin::TakenOver) => None,
            Ok(IdempotencyBegin::Exhausted) => {
                return issue_challenge(
                    &state,
                    &service,
                    ChallengeReason::TokenUsedUp,
                    now,
                    client,
                    dynamic_price,
                )
                .await;
            }
            Ok(IdempotencyBegin::Replay(stored)) => return idempotency::replay(stored),
            Ok(IdempotencyBegin::Mismatch) => return idempotency::mismatch(),
            Ok(IdempotencyBegin::InFlight) => return idempotency::in_flight(),
            Err(e) => return store_unavailable(&e),
        };
        return forward_idempotent(&state, &service, req, via, token.token_id, key, remaining)
            .await;
    }
    let mut remaining = None;
    if let Some(calls) = token.grant.calls {
        match state
            .store
            .consume_call(&token.token_id, &service.name, calls, now)
            .await
        {
            Ok(Consumption::Granted { remaining: r }) => remaining = Some(r),
            Ok(Consumption::Exhausted) => {
                return issue_challenge(
                    &state,
                    &service,
                    ChallengeReason::TokenUsedUp,
                    now,
                    client,
                    dynamic_price,
                )
                .await;
            }
            Err(e) => return store_unavailable(&e),
        }
    }

    // 4. Forward, and 5. account: a call the upstream never answered is given back.
    let charged = remaining.map(|r| (token.token_id, r));
    forward(&state, &service, req, via, charged).await
}

/// A request without a credential: a free-tier call if the client has one left, else a 402.
async fn no_credential(
    state: &SharedState,
    service: &std::sync::Arc<crate::routing::Service>,
    req: Request<Body>,
    via: crate::proxy::Via,
    client: std::net::IpAddr,
    now: u64,
    dynamic_price: Option<u64>,
) -> Response {
    if let Some(free) = service.free_tier {
        let who = crate::client_ip::client_key(client);
        match state
            .store
            .take_free_call(&service.name, &who, free.calls, free.window_secs, now)
            .await
        {
            Ok(true) => {
                let mut resp = forward(state, service, req, via, None).await;
                resp.headers_mut()
                    .insert(FREE_CALL, HeaderValue::from_static("true"));
                return resp;
            }
            Ok(false) => {}
            Err(e) => return store_unavailable(&e),
        }
    }
    issue_challenge(
        state,
        service,
        ChallengeReason::NoCredential,
        now,
        client,
        dynamic_price,
    )
    .await
}

/// Asks the service's pricer for this request's price (sats), keeping the body intact.
async fn ask_pricer(
    state: &SharedState,
    service: &crate::routing::Service,
    config: &crate::pricer::PricerConfig,
    req: Request<Body>,
) -> Result<(Request<Body>, u64), Response> {
    let (req, prefix, truncated) = crate::pricer::peek_body(req, config.body_bytes)
        .await
        .map_err(IntoResponse::into_response)?;
    let (parts, body) = req.into_parts();
    let fail = |why: String| {
        tracing::warn!(service = %service.name, error = %why, "pricer failed: refusing the request");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "pricer_unavailable",
            "The price of this request cannot be determined right now. Retry later.",
        )
        .retry_after(5)
        .into_response()
    };
    let price = crate::pricer::price(
        &state.forwarder,
        config,
        &service.name,
        &parts,
        &prefix,
        truncated,
    )
    .await
    .map_err(fail)?;
    if price > service.price_sats {
        return Err(fail(format!(
            "the pricer asked {price} sats, above the service's cap of {} sats",
            service.price_sats
        )));
    }
    Ok((Request::from_parts(parts, body), price))
}

fn store_unavailable(e: &turnpike_store::StoreError) -> Response {
    tracing::error!(error = %e, "store failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "The gateway's store is unavailable.",
    )
    .retry_after(5)
    .into_response()
}

/// Forwards a request that holds an idempotency entry: a success is recorded for retries; a
/// failure (no answer, or a 5xx the service does not charge) forgets the key and gives the call
/// back, so a retry runs afresh.
async fn forward_idempotent(
    state: &SharedState,
    service: &crate::routing::Service,
    req: Request<Body>,
    via: crate::proxy::Via,
    token: turnpike_l402::TokenId,
    key: String,
    remaining: Option<u64>,
) -> Response {
    let abort = |refund: bool| {
        if refund && remaining.is_some() {
            state.limits.record_refund(&token);
        }
        let (store, key) = (state.store.clone(), key.clone());
        async move {
            let done = store.idempotency_abort(&token, &key, refund).await;
            if let Err(e) = &done {
                tracing::error!(token = %token, error = %e, "could not release an idempotency key");
            }
            done.is_ok()
        }
    };
    let guard = ChargeGuard::new(state, token, Some(key.clone()));
    let result = state.forwarder.forward(service, req, via).await;
    guard.disarm();
    match result {
        Ok(mut resp) => {
            if service.refund_on_5xx && resp.status().is_server_error() {
                let refunded = abort(true).await;
                if let Some(r) = remaining {
                    let r = if refunded { r + 1 } else { r };
                    resp.headers_mut()
                        .insert(CALLS_REMAINING, HeaderValue::from(r));
                }
                return resp;
            }
            if let Some(r) = remaining {
                resp.headers_mut()
                    .insert(CALLS_REMAINING, HeaderValue::from(r));
            }
            idempotency::Recorder {
                background: state.background.clone(),
                store: state.store.clone(),
                token,
                key,
                max_bytes: state.idempotency.max_response_bytes,
            }
            .record(resp)
        }
        Err(e) => {
            let refunded = abort(true).await;
            forward_error(service, e, remaining.is_some() && refunded)
        }
    }
}

/// Issues a 402 challenge, unless this client has minted too many lately (invoice spam).
async fn issue_challenge(
    state: &SharedState,
    service: &crate::routing::Service,
    reason: ChallengeReason,
    now: u64,
    client: std::net::IpAddr,
    dynamic_price: Option<u64>,
) -> Response {
    if let Some(limiter) = &state.limits.challenges_per_ip
        && let Err(wait) = limiter.check(&crate::client_ip::client_key(client), Instant::now())
    {
        return too_many(
            wait,
            "Too many payment challenges for this address: pay one of them or wait.",
        );
    }
    challenge::issue(state, service, reason, now, dynamic_price).await
}

fn too_many(wait: crate::rate_limit::RetryAfter, message: &str) -> Response {
    let secs = wait.secs_rounded_up();
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("{message} Retry in {secs} s."),
    )
    .retry_after(secs)
    .into_response()
}

async fn forward(
    state: &SharedState,
    service: &crate::routing::Service,
    req: Request<Body>,
    via: crate::proxy::Via,
    charged: Option<(turnpike_l402::TokenId, u64)>,
) -> Response {
    let guard = charged.map(|(token, _)| ChargeGuard::new(state, token, None));
    let result = state.forwarder.forward(service, req, via).await;
    guard.into_iter().for_each(ChargeGuard::disarm);
    match result {
        Ok(mut resp) => {
            if let Some((token_id, mut remaining)) = charged {
                if service.refund_on_5xx && resp.status().is_server_error() {
                    state.limits.record_refund(&token_id);
                    match state.store.refund_call(&token_id).await {
                        Ok(()) => remaining += 1,
                        Err(e) => tracing::error!(
                            token = %token_id, error = %e, "could not give back the call of a 5xx"
                        ),
                    }
                }
                resp.headers_mut()
                    .insert(CALLS_REMAINING, HeaderValue::from(remaining));
            }
            resp
        }
        Err(e) => {
            let refunded = match charged {
                Some((token_id, _)) => {
                    state.limits.record_refund(&token_id);
                    match state.store.refund_call(&token_id).await {
                        Ok(()) => true,
                        Err(store_err) => {
                            tracing::error!(token = %token_id, error = %store_err, "could not give back the call of a failed request");
                            false
                        }
                    }
                }
                None => false,
            };
            forward_error(service, e, charged.is_some() && refunded)
        }
    }
}

/// Gives a charged call back when the request is dropped (its client hung up) before the
/// upstream answered, the same rule as for an upstream that never answers. Once the upstream has
/// answered, or the forward failed (handled by its caller), it is disarmed.
struct ChargeGuard {
    state: SharedState,
    token: turnpike_l402::TokenId,
    idempotency_key: Option<String>,
    armed: bool,
}

impl ChargeGuard {
    fn new(
        state: &SharedState,
        token: turnpike_l402::TokenId,
        idempotency_key: Option<String>,
    ) -> ChargeGuard {
        ChargeGuard {
            state: state.clone(),
            token,
            idempotency_key,
            armed: true,
        }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for ChargeGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.state.limits.record_refund(&self.token);
        let (store, token, key) = (
            self.state.store.clone(),
            self.token,
            self.idempotency_key.take(),
        );
        self.state.background.spawn(async move {
            let done = match &key {
                Some(key) => store.idempotency_abort(&token, key, true).await,
                None => store.refund_call(&token).await,
            };
            match done {
                Ok(()) => tracing::debug!(token = %token, "client left before the upstream answered: call given back"),
                Err(e) => tracing::error!(token = %token, error = %e, "could not give back the call of an abandoned request"),
            }
        });
    }
}

fn forward_error(service: &crate::routing::Service, e: ForwardError, refunded: bool) -> Response {
    tracing::warn!(service = %service.name, error = %e, refunded, "upstream failed");
    let note = if refunded {
        " The call was not charged."
    } else {
        ""
    };
    match e {
        ForwardError::Timeout(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("The upstream service did not answer in time.{note}"),
        ),
        ForwardError::Unreachable(_) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_unreachable",
            format!("The upstream service could not be reached.{note}"),
        ),
        ForwardError::BadRequest(m) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{m}.{note}"),
        ),
    }
    .into_response()
}
