//! The request pipeline: ordered phases over one [`RequestCtx`]. Each phase either lets the
//! request go on or ends it with a [`Halt`]:
//!
//! 0. [`begin`]: put the target and host in canonical form, **match** a service, find the client.
//! 1. [`price`]: ask the dynamic pricer, when the service has one.
//! 2. [`authenticate`]: verify the L402 credential (no I/O), then [`admit`] the token (its price
//!    cap, rate limits, the backend's word that it was paid). Without a credential, an x402
//!    payment (`pay_x402`) is settled and buys a token instead.
//! 3. [`charge`]: one call in the store (with an `Idempotency-Key`, entry and charge at once).
//! 4. [`forward`] to the upstream, and **account**: a call the upstream did not serve is given
//!    back ([`Charge`]).
//!
//! A request without a credential gets a free-tier call or a `402` challenge.

mod charge;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Request};
use turnpike_l402::Sats;
use turnpike_l402::caveat::CaveatError;
use turnpike_l402::credential::Credential;
use turnpike_l402::token::{VerifiedToken, VerifyError};
use turnpike_lightning::BackendError;
use turnpike_store::{Consumption, IdempotencyBegin, IdempotencyRequest};

use crate::SharedState;
use crate::challenge::ChallengeReason;
use crate::error::{ApiError, ErrorCode};
use crate::headers::FREE_CALL;
use crate::metrics::{BackendOp, StoreOp, UpstreamClass, VerifyFailure};
use crate::proxy::Via;
use crate::service::Service;
use crate::verified::VerifiedMemo;
pub(crate) use charge::Charge;

/// What the phases know about one request.
pub(crate) struct RequestCtx {
    /// The service it matched (kept for the whole request, whatever the table does meanwhile).
    pub service: Arc<Service>,
    /// Where it came from.
    pub via: Via,
    /// Unix seconds when it arrived.
    pub now: u64,
    /// The price the pricer set for it, when the service has one.
    pub dynamic_price: Option<Sats>,
    /// Its URL, as an x402 challenge names the resource (only for services taking x402).
    pub resource: String,
    /// Its token was minted by an Aperture (`[aperture]`), not by this gateway.
    pub aperture_token: bool,
}

/// Why a phase ended the request.
pub(crate) enum Halt {
    /// Answer `402` with a fresh challenge.
    Challenge(ChallengeReason),
    /// Answer with a JSON error.
    Reject(ApiError),
    /// Answer with this response (a replayed one, or one already served).
    Respond(Box<Response>),
}

impl From<ApiError> for Halt {
    fn from(e: ApiError) -> Halt {
        Halt::Reject(e)
    }
}

/// Handles one request to a service (the internal router's fallback).
pub async fn handle(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
    serve(state, peer, req).await
}

/// Runs one request from `peer` through the phases.
pub(crate) async fn serve(state: SharedState, peer: SocketAddr, req: Request<Body>) -> Response {
    let (req, mut ctx) = match begin(&state, peer, req) {
        Ok(begun) => begun,
        Err(e) => return e.into_response(),
    };
    match run(&state, &mut ctx, req).await {
        Ok(resp) => resp,
        Err(Halt::Respond(resp)) => *resp,
        Err(Halt::Reject(e)) => {
            count_rejection(&state, &ctx, e.code);
            e.into_response()
        }
        Err(Halt::Challenge(reason)) => {
            if let Some(why) = failure_of(&reason) {
                state.metrics.verification_failed(why);
            }
            challenge(&state, &ctx, reason).await
        }
    }
}

/// Counts a request refused with `code`: a rate limit, or a credential not accepted.
fn count_rejection(state: &SharedState, ctx: &RequestCtx, code: ErrorCode) {
    match code {
        ErrorCode::RateLimited => ctx.service.metrics.rate_limited.inc(),
        ErrorCode::InvalidCredential => state
            .metrics
            .verification_failed(VerifyFailure::InvalidCredential),
        ErrorCode::PaymentNotSettled => state
            .metrics
            .verification_failed(VerifyFailure::PaymentNotSettled),
        ErrorCode::TokenRevoked => state
            .metrics
            .verification_failed(VerifyFailure::TokenRevoked),
        _ => {}
    }
}

/// The verification failure a challenge answers, if it answers one (not a missing credential).
fn failure_of(reason: &ChallengeReason) -> Option<VerifyFailure> {
    match reason {
        ChallengeReason::NoCredential | ChallengeReason::X402Refused(_) => None,
        ChallengeReason::TokenUsedUp => Some(VerifyFailure::TokenUsedUp),
        ChallengeReason::TokenExpired => Some(VerifyFailure::TokenExpired),
        ChallengeReason::OtherService => Some(VerifyFailure::OtherService),
        ChallengeReason::PriceAboveToken => Some(VerifyFailure::PriceAboveToken),
    }
}

/// The phases after matching, up to the upstream's answer.
async fn run(
    state: &SharedState,
    ctx: &mut RequestCtx,
    req: Request<Body>,
) -> Result<Response, Halt> {
    if ctx.service.is_free() {
        return Ok(forward(state, ctx, req, Charge::None, Paid::No).await);
    }
    let req = price(state, ctx, req).await?;
    if ctx.dynamic_price == Some(Sats::ZERO) {
        return Ok(forward(state, ctx, req, Charge::None, Paid::No).await);
    }
    let Some((token, how)) = authenticate(state, ctx, req.headers()).await? else {
        if ctx.service.x402.is_some() && crate::x402::carries_payment(req.headers()) {
            return pay_x402(state, ctx, req).await;
        }
        return free_call(state, ctx, req).await;
    };
    ctx.aperture_token = how == Verified::ByAperture;
    admit(state, ctx, &token).await?;
    if token.grant.calls.is_none() {
        note_pass(state, ctx, &token, how != Verified::Remembered);
    }
    let (req, charge) = charge(state, ctx, &token, req).await?;
    Ok(forward(state, ctx, req, charge, Paid::Yes).await)
}

/// Whether a forwarded call was paid for (by a token) or free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Paid {
    Yes,
    No,
}

/// What `token`'s payment was for, in msat: the price it was bought at (a dynamic price's cap),
/// else the service's price now. A token bought over x402 counts as a payment of 0 msat (it was
/// paid in the x402 token's units, not in sats). Telling costs an HMAC, so it is asked only of a
/// gateway with `[x402]` (one that ran with x402 earlier would count such a token in sats).
fn payment_of(state: &SharedState, ctx: &RequestCtx, token: &VerifiedToken) -> turnpike_l402::Msat {
    if state.x402.is_some() && crate::x402::is_issued(&state.minter, token) {
        return turnpike_l402::Msat::ZERO;
    }
    token
        .grant
        .max_price_msat
        .map_or_else(|| ctx.service.price_msat(), turnpike_l402::Msat)
}

/// A token's payment was recognised (its first paid use): counted, and its hub fee owed.
fn paid(state: &SharedState, ctx: &RequestCtx, token: &VerifiedToken) {
    ctx.service.metrics.payment(payment_of(state, ctx, token));
    crate::hub::ledger::note_paid(state, &ctx.service, token.token_id, ctx.now);
}

/// A time pass (a token that counts no calls, so writes nothing per call): the first time this
/// process verifies it afresh, its first use is recorded in the store in the background and
/// counted as a payment if no process recorded it before; later, this worker moves its last use
/// at most once a minute.
fn note_pass(state: &SharedState, ctx: &RequestCtx, token: &VerifiedToken, fresh: bool) {
    if fresh && !state.passes_seen.contains(&token.token_id) {
        state.passes_seen.insert(token.token_id);
        state.passes.due(&token.token_id, ctx.now);
        record_pass_use(state, ctx, token);
    } else {
        note_pass_last_use(state, ctx, token);
    }
}

/// Records a time pass's first use; counts the payment when this was the first record.
fn record_pass_use(state: &SharedState, ctx: &RequestCtx, token: &VerifiedToken) {
    let (store, metrics) = (state.store.clone(), state.metrics.clone());
    let service = ctx.service.metrics.clone();
    let (token_id, amount, now) = (token.token_id, payment_of(state, ctx, token), ctx.now);
    let fee = crate::hub::ledger::FeeOwed::of(state, &ctx.service);
    state.background.spawn(async move {
        let started = Instant::now();
        let recorded = store.record_pass_use(&token_id, service.name(), now).await;
        metrics.store_op(StoreOp::RecordPassUse, started.elapsed());
        match recorded {
            Ok(true) => {
                service.payment(amount);
                fee.accrue(token_id, now).await;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot record a time pass's first use"),
        }
    });
}

/// Phase 0: Canonical form, match, client, per-address limit.
fn begin(
    state: &SharedState,
    peer: SocketAddr,
    mut req: Request<Body>,
) -> Result<(Request<Body>, RequestCtx), ApiError> {
    let target = crate::edge::normalize(&mut req).map_err(|e| e.to_api_error())?;
    let host = crate::edge::request_host(&req);
    let service = state
        .services
        .load()
        .route(req.method(), host, target.match_path(&req))
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NoSuchService,
                "No service is configured for this host and path.",
            )
        })?;
    if target.encoded_separator && !service.allow_encoded_slashes {
        return Err(ApiError::new(
            ErrorCode::InvalidPath,
            "Bad request: encoded slashes and backslashes (%2F, %5C, \\) are not accepted in paths.",
        ));
    }
    let via = Via::new(&state.trusted_proxies, peer.ip(), req.headers());
    if let Some(limiter) = &state.limits.per_ip
        && let Err(wait) = limiter.check(&crate::client_ip::client_key(via.client), Instant::now())
    {
        service.metrics.rate_limited.inc();
        return Err(too_many(wait, "Too many requests from this address."));
    }
    let resource = match service.x402 {
        Some(_) => crate::x402::resource_url(&req),
        None => String::new(),
    };
    let ctx = RequestCtx {
        service,
        via,
        now: crate::unix_now(),
        dynamic_price: None,
        resource,
        aperture_token: false,
    };
    Ok((req, ctx))
}

/// Phase 1: The dynamic price of this very request (fails closed), keeping the body intact.
async fn price(
    state: &SharedState,
    ctx: &mut RequestCtx,
    req: Request<Body>,
) -> Result<Request<Body>, Halt> {
    let Some(pricer) = &ctx.service.pricer else {
        return Ok(req);
    };
    let peek = crate::pricer::peek_body(req, pricer.body_bytes);
    let (req, prefix, truncated) = within_body_timeout(state, peek).await??;
    let (parts, body) = req.into_parts();
    let service = &ctx.service;
    let fail = |why: String| {
        tracing::warn!(service = %service.name, error = %why, "pricer failed: refusing the request");
        ApiError::new(
            ErrorCode::PricerUnavailable,
            "The price of this request cannot be determined right now. Retry later.",
        )
        .retry_after(5)
    };
    let question = crate::pricer::PriceQuestion {
        service: &service.name,
        parts: &parts,
        via: ctx.via,
        body_prefix: &prefix,
        truncated,
    };
    let price = crate::pricer::price(&state.forwarder, pricer, &question)
        .await
        .map_err(fail)?;
    if Sats(price) > service.price {
        return Err(fail(format!(
            "the pricer asked {price} sats, above the service's cap of {}",
            service.price
        ))
        .into());
    }
    ctx.dynamic_price = Some(Sats(price));
    Ok(Request::from_parts(parts, body))
}

/// Phase 2: The request's verified token, `None` when it carries no credential. No I/O: the root key
/// is derived; a credential this worker verified lately is recognised by its exact bytes. With
/// `[aperture]`, a credential whose signature does not verify under Turnpike's key is tried as
/// an Aperture token (root key from Aperture's database, cached); the flag says it was one.
async fn authenticate(
    state: &SharedState,
    ctx: &RequestCtx,
    headers: &http::HeaderMap,
) -> Result<Option<(VerifiedToken, Verified)>, Halt> {
    let (token, how) = match verify_credential(state, ctx, headers).await? {
        Some(verified) => verified,
        None => return Ok(None),
    };
    // Checked after the memo, so a remembered credential of a revoked token is refused too.
    if state.control.is_revoked(&token.token_id) {
        return Err(ApiError::new(
            ErrorCode::TokenRevoked,
            "This L402 token was revoked by the provider.",
        )
        .into());
    }
    Ok(Some((token, how)))
}

/// How a credential was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verified {
    /// Recognised from this worker's memo (verified before).
    Remembered,
    /// Verified afresh under Turnpike's key.
    Fresh,
    /// An Aperture minted it (`[aperture]`); never remembered.
    ByAperture,
}

/// Phase 2's verification: the token of the request's credential, if it carries one.
async fn verify_credential(
    state: &SharedState,
    ctx: &RequestCtx,
    headers: &http::HeaderMap,
) -> Result<Option<(VerifiedToken, Verified)>, Halt> {
    let service = &ctx.service.name;
    let field = VerifiedMemo::credential_field(headers);
    let remembered = field.and_then(|f| state.verified.get(f, service, ctx.now));
    let fresh = remembered.is_none();
    let verified = match remembered {
        Some(result) => result,
        None => {
            let credential = match Credential::from_headers(headers) {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(None),
                Err(e) => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidCredential,
                        format!("Malformed L402 credential: {e}."),
                    )
                    .into());
                }
            };
            let result = state.minter.verify(&credential, service, ctx.now);
            if let (Err(VerifyError::BadSignature), Some(aperture)) = (&result, &state.aperture) {
                let token = aperture_token(aperture, ctx, &credential).await?;
                return Ok(Some((token, Verified::ByAperture)));
            }
            if let (Ok(token), Some(field)) = (&result, field) {
                state.verified.insert(field, service, token);
            }
            result
        }
    };
    let how = match fresh {
        true => Verified::Fresh,
        false => Verified::Remembered,
    };
    verdict(service, verified).map(|token| Some((token, how)))
}

/// Phase 2, for a token an Aperture minted. Not remembered in the worker's memo, so a token
/// revoked in Aperture stops within `[aperture] cache_secs`.
async fn aperture_token(
    aperture: &turnpike_aperture::ApertureTokens,
    ctx: &RequestCtx,
    credential: &Credential,
) -> Result<VerifiedToken, Halt> {
    use turnpike_aperture::ApertureError;
    let service = &ctx.service.name;
    match aperture.verify(credential, service, ctx.now).await {
        Ok(token) => Ok(token),
        Err(ApertureError::Verify(e)) => verdict(service, Err(e)),
        Err(ApertureError::Unknown) => verdict(service, Err(VerifyError::BadSignature)),
        Err(ApertureError::Unavailable(e)) => {
            tracing::error!(error = %e, "cannot read Aperture's root keys");
            Err(ApiError::new(
                ErrorCode::StoreUnavailable,
                "Aperture's token database is unavailable. Retry later.",
            )
            .retry_after(5)
            .into())
        }
    }
}

/// What a verification result means for the request: the token, a fresh challenge (genuine
/// but expired or for another service), or `401`.
fn verdict(
    service: &str,
    verified: Result<VerifiedToken, VerifyError>,
) -> Result<VerifiedToken, Halt> {
    match verified {
        Ok(token) => Ok(token),
        Err(VerifyError::Caveat(CaveatError::Expired { .. })) => {
            Err(Halt::Challenge(ChallengeReason::TokenExpired))
        }
        Err(VerifyError::Caveat(CaveatError::ServiceNotGranted)) => {
            Err(Halt::Challenge(ChallengeReason::OtherService))
        }
        Err(e) => {
            tracing::debug!(%service, error = %e, "rejected credential");
            Err(ApiError::new(
                ErrorCode::InvalidCredential,
                format!("Invalid L402 credential: {e}."),
            )
            .into())
        }
    }
}

/// Phase 2 (x402): A request paying with x402 instead of a credential: the payment is checked,
/// claimed, settled ([`crate::x402::pay`]) and buys a token, which this call is charged to as
/// an L402 call would be. The response carries the settlement and the token's credential
/// (which holds what the payment bought beyond this call, and this call if it is given back).
async fn pay_x402(
    state: &SharedState,
    ctx: &RequestCtx,
    mut req: Request<Body>,
) -> Result<Response, Halt> {
    let Some(settings) = &state.x402 else {
        return Err(Halt::Challenge(ChallengeReason::NoCredential));
    };
    let cx = crate::x402::PayCtx {
        settings,
        store: &*state.store,
        minter: &state.minter,
        service: &ctx.service,
        resource: &ctx.resource,
        now: ctx.now,
    };
    let paid = match crate::x402::pay(&cx, req.headers()).await {
        Ok(paid) => paid,
        Err(crate::x402::PayError::Refused(r)) => {
            return Err(Halt::Challenge(ChallengeReason::X402Refused(Box::new(r))));
        }
        Err(crate::x402::PayError::Error(e)) => return Err(e.into()),
    };
    // The upstream gets the call, not the payment.
    crate::x402::strip_payment(req.headers_mut());
    let resp = match charge(state, ctx, &paid.token, req).await {
        Ok((req, charge)) => forward(state, ctx, req, charge, Paid::Yes).await,
        Err(Halt::Respond(resp)) => *resp,
        Err(Halt::Reject(e)) => e.into_response(),
        Err(Halt::Challenge(reason)) => challenge(state, ctx, reason).await,
    };
    Ok(paid.decorate(resp))
}

/// Phase 2b: Whether a valid token may be used now: within its price cap and rate limits, and (once
/// per token, when `check_settlement` is on) reported paid by the backend.
async fn admit(state: &SharedState, ctx: &RequestCtx, token: &VerifiedToken) -> Result<(), Halt> {
    if let Some(price) = ctx.dynamic_price {
        let price = price
            .to_msat()
            .ok_or(Halt::Challenge(ChallengeReason::PriceAboveToken))?;
        if token.grant.max_price_msat.is_none_or(|max| max < price.0) {
            return Err(Halt::Challenge(ChallengeReason::PriceAboveToken));
        }
    }
    let limits = &state.limits;
    if let Some(limiter) = &limits.per_token
        && let Err(wait) = limiter.check(&token.token_id, Instant::now())
    {
        return Err(too_many(wait, "Too many requests with this token.").into());
    }
    // A counted token whose calls keep failing (and are given back) waits a while.
    if token.grant.calls.is_some()
        && let Some(limiter) = &limits.refunds_per_token
        && let Err(wait) = limiter.peek(&token.token_id, Instant::now())
    {
        return Err(too_many(
            wait,
            "Too many of this token's calls failed lately and were given back.",
        )
        .into());
    }
    // An Aperture token's invoice was issued by Aperture's node: like Aperture (without
    // `strictverify`), the preimage is the proof of payment.
    let Some(settled) = state.settlement.as_ref().filter(|_| !ctx.aperture_token) else {
        return Ok(());
    };
    if settled.contains(&token.token_id) {
        return Ok(());
    }
    // Bought with x402: no Lightning backend knows it, and it was settled before it was minted.
    if crate::x402::is_issued(&state.minter, token) {
        settled.insert(token.token_id);
        return Ok(());
    }
    let Some(backend) = crate::hub::ledger::settlement_backend(state, &ctx.service) else {
        return Ok(());
    };
    let started = Instant::now();
    let looked_up = backend.lookup_invoice(&token.payment_hash).await;
    state
        .metrics
        .backend_op(BackendOp::Lookup, started.elapsed());
    match looked_up {
        Ok(status) if status.state.is_settled() => {
            settled.insert(token.token_id);
            Ok(())
        }
        Ok(_) | Err(BackendError::UnknownInvoice) => Err(ApiError::new(
            ErrorCode::PaymentNotSettled,
            "The Lightning backend does not report this token's invoice as paid.",
        )
        .into()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot check a token's invoice with the backend");
            Err(ApiError::new(
                ErrorCode::BackendUnavailable,
                "The Lightning backend cannot confirm this payment right now. Retry later.",
            )
            .retry_after(5)
            .into())
        }
    }
}

/// Moves a time pass's last use in the store (admin listings), at most once a minute per worker.
fn note_pass_last_use(state: &SharedState, ctx: &RequestCtx, token: &VerifiedToken) {
    let Some(admin) = state.control.store() else {
        return;
    };
    if !state.passes.due(&token.token_id, ctx.now) {
        return;
    }
    let (admin, token, service, now) = (
        admin.clone(),
        token.token_id,
        ctx.service.name.clone(),
        ctx.now,
    );
    state.background.spawn(async move {
        if let Err(e) = admin.note_pass_use(&token, &service, now).await {
            tracing::warn!(error = %e, "cannot record a time pass's use");
        }
    });
}

/// Phase 3: Charges one call, only for tokens that count calls. With an `Idempotency-Key`, the entry
/// and the charge are one transaction (and a retry may be answered from the store).
async fn charge(
    state: &SharedState,
    ctx: &RequestCtx,
    token: &VerifiedToken,
    req: Request<Body>,
) -> Result<(Request<Body>, Charge), Halt> {
    if let Some(key) = crate::idempotency::key(req.headers())? {
        let read = crate::idempotency::fingerprint(req, state.idempotency.max_request_bytes);
        let (req, fingerprint) = within_body_timeout(state, read).await??;
        let started = Instant::now();
        let begun = state
            .store
            .idempotency_begin(&IdempotencyRequest {
                token: &token.token_id,
                key: &key,
                fingerprint: &fingerprint,
                service: &ctx.service.name,
                calls_total: token.grant.calls,
                now_unix: ctx.now,
                stale_after_secs: state.idempotency.stale_after_secs,
            })
            .await;
        state
            .metrics
            .store_op(StoreOp::IdempotencyBegin, started.elapsed());
        let remaining = match begun.map_err(|e| store_unavailable(&e))? {
            IdempotencyBegin::Charged {
                remaining,
                first_use,
            } => {
                if first_use {
                    paid(state, ctx, token);
                }
                remaining
            }
            IdempotencyBegin::TakenOver => None,
            IdempotencyBegin::Exhausted => {
                return Err(Halt::Challenge(ChallengeReason::TokenUsedUp));
            }
            IdempotencyBegin::Replay(stored) => {
                return Err(Halt::Respond(Box::new(crate::idempotency::replay(stored))));
            }
            IdempotencyBegin::Mismatch => return Err(crate::idempotency::mismatch().into()),
            IdempotencyBegin::InFlight => return Err(crate::idempotency::in_flight().into()),
        };
        let charge = Charge::Idempotent {
            token: token.token_id,
            key,
            remaining,
        };
        return Ok((req, charge));
    }
    let Some(calls) = token.grant.calls else {
        return Ok((req, Charge::None));
    };
    let started = Instant::now();
    let consumed = state
        .store
        .consume_call(&token.token_id, &ctx.service.name, calls, ctx.now)
        .await;
    state
        .metrics
        .store_op(StoreOp::ConsumeCall, started.elapsed());
    match consumed.map_err(|e| store_unavailable(&e))? {
        Consumption::Granted {
            remaining,
            first_use,
        } => {
            if first_use {
                paid(state, ctx, token);
            }
            Ok((
                req,
                Charge::Counted {
                    token: token.token_id,
                    remaining,
                },
            ))
        }
        Consumption::Exhausted => Err(Halt::Challenge(ChallengeReason::TokenUsedUp)),
    }
}

/// Phase 4: Forwards the request and accounts for its charge: a call the upstream did not serve (no
/// answer, or a 5xx the service does not charge) is given back; a served idempotent call is
/// recorded for retries. A paid call is counted served or refunded (given back), a free one
/// free.
async fn forward(
    state: &SharedState,
    ctx: &RequestCtx,
    req: Request<Body>,
    charge: Charge,
    paid: Paid,
) -> Response {
    let metrics = &ctx.service.metrics;
    let guard = charge.guard(state, metrics);
    let started = Instant::now();
    let result = state.forwarder.forward(&ctx.service, req, ctx.via).await;
    let class = match &result {
        Ok(resp) => UpstreamClass::of(resp.status()),
        Err(_) => UpstreamClass::Failed,
    };
    let elapsed = started.elapsed();
    metrics.upstream(class, elapsed);
    metrics
        .traffic
        .record(result.as_ref().ok().map(|r| r.status()), elapsed);
    let result = result.map(|resp| crate::hub::sandbox::confine(&ctx.service, resp));
    let charge = guard.disarm();
    let (resp, given_back) = match result {
        Ok(resp) if ctx.service.refund_on_5xx && resp.status().is_server_error() => {
            let given_back = charge.give_back(state).await;
            (charge.with_remaining(resp, given_back), given_back)
        }
        Ok(resp) => (charge.settle(state, resp), false),
        Err(e) => {
            let given_back = charge.give_back(state).await;
            let resp = forward_error(&ctx.service, e, given_back).into_response();
            (resp, given_back)
        }
    };
    match (paid, given_back) {
        (Paid::No, _) => metrics.free_calls.inc(),
        (Paid::Yes, true) => metrics.calls_refunded.inc(),
        (Paid::Yes, false) => metrics.calls_served.inc(),
    }
    resp
}

/// A request without a credential: a free-tier call if the client has one left, else a 402.
async fn free_call(
    state: &SharedState,
    ctx: &RequestCtx,
    req: Request<Body>,
) -> Result<Response, Halt> {
    let Some(free) = ctx.service.free_tier else {
        return Err(Halt::Challenge(ChallengeReason::NoCredential));
    };
    let who = crate::client_ip::client_key(ctx.via.client);
    let started = Instant::now();
    let granted = state
        .store
        .take_free_call(
            &ctx.service.name,
            &who,
            free.calls,
            free.window_secs,
            ctx.now,
        )
        .await;
    state
        .metrics
        .store_op(StoreOp::TakeFreeCall, started.elapsed());
    if !granted.map_err(|e| store_unavailable(&e))? {
        return Err(Halt::Challenge(ChallengeReason::NoCredential));
    }
    let mut resp = forward(state, ctx, req, Charge::None, Paid::No).await;
    resp.headers_mut()
        .insert(FREE_CALL, HeaderValue::from_static("true"));
    Ok(resp)
}

/// Issues a 402 challenge, unless this client has minted too many lately (invoice spam).
async fn challenge(state: &SharedState, ctx: &RequestCtx, reason: ChallengeReason) -> Response {
    if let Some(limiter) = &state.limits.challenges_per_ip
        && let Err(wait) = limiter.check(
            &crate::client_ip::client_key(ctx.via.client),
            Instant::now(),
        )
    {
        ctx.service.metrics.rate_limited.inc();
        return too_many(
            wait,
            "Too many payment challenges for this address: pay one of them or wait.",
        )
        .into_response();
    }
    crate::challenge::issue(
        state,
        &ctx.service,
        reason,
        ctx.now,
        ctx.dynamic_price,
        &ctx.resource,
    )
    .await
}

/// Runs `read` (reading a request body the gateway needs before forwarding) within
/// `connections.body_read_timeout_secs`: a client that sends it too slowly gets `408`.
async fn within_body_timeout<T>(
    state: &SharedState,
    read: impl Future<Output = T>,
) -> Result<T, ApiError> {
    let limit = std::time::Duration::from_secs(state.connections.body_read_timeout_secs);
    tokio::time::timeout(limit, read).await.map_err(|_| {
        ApiError::new(
            ErrorCode::RequestTimeout,
            "The request body did not arrive in time.",
        )
    })
}

fn too_many(wait: crate::rate_limit::RetryAfter, message: &str) -> ApiError {
    let secs = wait.secs_rounded_up();
    ApiError::new(
        ErrorCode::RateLimited,
        format!("{message} Retry in {secs} s."),
    )
    .retry_after(secs)
}

fn store_unavailable(e: &turnpike_store::StoreError) -> ApiError {
    tracing::error!(error = %e, "store failed");
    ApiError::new(
        ErrorCode::StoreUnavailable,
        "The gateway's store is unavailable.",
    )
    .retry_after(5)
}

fn forward_error(service: &Service, e: crate::proxy::ForwardError, given_back: bool) -> ApiError {
    use crate::proxy::ForwardError;
    tracing::warn!(service = %service.name, error = %e, given_back, "upstream failed");
    let note = if given_back {
        " The call was not charged."
    } else {
        ""
    };
    match e {
        ForwardError::Timeout(_) => ApiError::new(
            ErrorCode::UpstreamTimeout,
            format!("The upstream service did not answer in time.{note}"),
        ),
        ForwardError::Unreachable(_) => ApiError::new(
            ErrorCode::UpstreamUnreachable,
            format!("The upstream service could not be reached.{note}"),
        ),
        ForwardError::BadRequest(m) => ApiError::new(ErrorCode::BadRequest, format!("{m}.{note}")),
    }
}
