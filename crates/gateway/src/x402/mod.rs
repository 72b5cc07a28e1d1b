//! x402 on the gateway: a service with `rails = [.., "x402"]` also takes stablecoin payments
//! (the `exact` scheme: a signed EIP-3009 transfer authorisation, settled on chain by a
//! facilitator).
//!
//! A request carrying `PAYMENT-SIGNATURE` (v2) or `X-PAYMENT` (v1) goes through `pay`:
//!
//! 1. decode it, pick the offer it is for, and check it **here** against our own offer
//!    ([`turnpike_x402::verify()`]: network, asset, `payTo`, exact amount, time window, the
//!    EIP-712 signature recovering `from`). A failing check is a `402`; nothing is sent anywhere.
//! 2. **claim** its replay key (`network/asset/payer/nonce`) once in the shared store, so one
//!    authorisation is settled at most once, however many copies arrive at however many
//!    replicas; a copy of a payment that settled gets the token it bought, never a new one.
//! 3. the facilitator's `/verify` (balance, nonce state on chain, simulation), then `/settle`
//!    (never retried). A claim is released only while nothing was sent to `/settle`.
//! 4. what the payment bought is an ordinary L402 token (`Paid`): its id derived from the
//!    replay key (unique per payment), its caveats those of an L402 token of the service, its
//!    preimage issued by the gateway ([`turnpike_l402::root_key::MasterKey::issued_preimage`]).
//!    This call is charged to it like any L402 call; the rest (a bundle, a time pass, a call
//!    given back because the upstream failed) is used by presenting it in `Authorization`. The
//!    response carries it in `Turnpike-Credential`, with `PAYMENT-RESPONSE`.

use axum::response::Response;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use turnpike_l402::TokenId;
use turnpike_l402::credential::Credential;
use turnpike_l402::token::{MintRequest, Minter, VerifiedToken};
use turnpike_x402::facilitator::{self, PAYMENT_RESPONSE, X_PAYMENT_RESPONSE};
use turnpike_x402::payload::{PAYMENT_SIGNATURE, X_PAYMENT};
use turnpike_x402::requirements::PAYMENT_REQUIRED;
use turnpike_x402::{PaymentPayload, PaymentRequired, ResourceInfo, SettleResponse, X402Version};

pub mod settings;

use turnpike_store::X402Claim;

use crate::error::{ApiError, ErrorCode};
use crate::service::Service;
use settings::FacilitatorFailure;
pub use settings::{X402Offer, X402Settings};

/// Response header carrying the credential an x402 payment bought, ready to send back as
/// `Authorization: <value>` (`L402 <macaroon>:<preimage>`).
pub const CREDENTIAL: HeaderName = HeaderName::from_static("turnpike-credential");

/// Domain separation of the token id derived from a payment's replay key.
const TOKEN_ID_DOMAIN: &[u8] = b"turnpike-x402-token-id-v1";

/// The v2 challenge of `offer` for `resource`, with `error`.
fn challenge(offer: &X402Offer, resource: &str, service: &Service, error: &str) -> PaymentRequired {
    let mut required = PaymentRequired::new(
        ResourceInfo {
            url: resource.to_owned(),
            description: format!("{}: {}", service.name, service.grant_text()),
            mime_type: String::new(),
        },
        vec![offer.requirements.clone()],
    );
    required.error = Some(error.to_owned());
    required
}

/// Why an x402 payment was refused with a `402` (a fresh challenge is sent with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The x402 reason code (`invalid_exact_evm_payload_signature`, …), in the challenge's
    /// `error` and the JSON error's `reason`.
    pub reason: String,
    /// For people.
    pub message: String,
    /// The failure `PAYMENT-RESPONSE` (header name, value) of a refused settlement.
    pub settle_header: Option<(HeaderName, String)>,
}

impl Refusal {
    fn new(reason: impl Into<String>, message: impl Into<String>) -> Refusal {
        Refusal {
            reason: reason.into(),
            message: message.into(),
            settle_header: None,
        }
    }
}

/// The x402 parts of a 402 for `service`: the `PAYMENT-REQUIRED` header is added to `headers`
/// and the v1 requirements to `body` (`x402Version`, `accepts`, `price_usdc`), keeping its
/// other fields. A refusal's reason goes in `error.reason` and the v2 header's `error`.
pub(crate) fn add_to_challenge(
    service: &Service,
    resource: &str,
    refusal: Option<&Refusal>,
    headers: &mut HeaderMap,
    body: &mut Map<String, Value>,
) {
    let Some(offer) = &service.x402 else {
        return;
    };
    let error = refusal.map_or("Payment required", |r| r.reason.as_str());
    let required = challenge(offer, resource, service, error);
    if let Ok(v) = HeaderValue::from_str(&required.to_header()) {
        headers.insert(HeaderName::from_static(PAYMENT_REQUIRED), v);
    }
    let v1 = required.to_v1_body();
    body.insert("x402Version".into(), v1["x402Version"].clone());
    body.insert("accepts".into(), v1["accepts"].clone());
    body.insert("price_usdc".into(), json!(offer.price_text()));
    if let Some(r) = refusal {
        if let Some(Value::Object(e)) = body.get_mut("error") {
            e.insert("reason".into(), json!(r.reason));
        }
        if let Some((name, value)) = &r.settle_header
            && let Ok(v) = HeaderValue::from_str(value)
        {
            headers.insert(name.clone(), v);
        }
    }
}

/// The resource URL a challenge names: the request's own (`http://host/path?query`).
pub(crate) fn resource_url<B>(req: &http::Request<B>) -> String {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    format!("http://{host}{path}")
}

/// A settled payment: the token it bought (this call is charged to it) and what the response
/// tells the client.
pub(crate) struct Paid {
    /// The token, as if its credential had just been verified.
    pub token: VerifiedToken,
    credential: String,
    settle_header: (HeaderName, String),
}

impl Paid {
    /// Adds `PAYMENT-RESPONSE` (v1: `X-PAYMENT-RESPONSE`) and `Turnpike-Credential` to the
    /// response, whatever it is (a failed upstream's error included: the credential holds the
    /// call given back). The response is marked `Cache-Control: private, no-store`.
    pub fn decorate(self, mut resp: Response) -> Response {
        let headers = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&self.settle_header.1) {
            headers.insert(self.settle_header.0, v);
        }
        if let Ok(mut v) = HeaderValue::from_str(&self.credential) {
            v.set_sensitive(true);
            headers.insert(CREDENTIAL, v);
        }
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        );
        resp
    }
}

/// Why [`pay`] did not produce a payment.
pub(crate) enum PayError {
    /// Refused: answer a fresh 402 with this.
    Refused(Refusal),
    /// Answer this error (store or facilitator unavailable, settlement unknown).
    Error(ApiError),
}

/// Whether `headers` carry an x402 payment.
pub(crate) fn carries_payment(headers: &HeaderMap) -> bool {
    headers.contains_key(PAYMENT_SIGNATURE) || headers.contains_key(X_PAYMENT)
}

/// Removes the payment fields from a request's headers (before it is forwarded).
pub(crate) fn strip_payment(headers: &mut HeaderMap) {
    headers.remove(PAYMENT_SIGNATURE);
    headers.remove(X_PAYMENT);
}

/// What [`pay`] needs of the gateway.
pub(crate) struct PayCtx<'a> {
    pub settings: &'a X402Settings,
    pub store: &'a dyn turnpike_store::Store,
    pub minter: &'a Minter,
    pub service: &'a Service,
    pub resource: &'a str,
    pub now: u64,
}

/// Takes the x402 payment in `headers` for `cx.service`: checks it here, claims it, has the
/// facilitator verify and settle it, and mints the token it bought. See the module's steps.
pub(crate) async fn pay(cx: &PayCtx<'_>, headers: &HeaderMap) -> Result<Paid, PayError> {
    let Some(offer) = &cx.service.x402 else {
        return Err(PayError::Refused(Refusal::new(
            "unsupported_scheme",
            "This service does not take x402 payments.",
        )));
    };
    let payment = decode(headers)?;
    let offered = payment
        .select(std::slice::from_ref(&offer.requirements))
        .ok_or_else(|| {
            PayError::Refused(Refusal::new(
                "invalid_payment_requirements",
                "The payment is not for what this service offers (network, asset, payTo, amount, maxTimeoutSeconds or token domain differ).",
            ))
        })?;
    let verified = turnpike_x402::verify(&payment, offered, cx.now)
        .map_err(|e| PayError::Refused(Refusal::new(e.reason(), format!("{e}."))))?;
    let key = verified.replay_key();
    // What the payment bought runs from when it was signed (as official clients sign:
    // validBefore = then + maxTimeoutSeconds), never later than now + 60 s: the same for every
    // presentation of the payment, so a token minted again is the same token.
    let anchor = verified
        .valid_before
        .saturating_sub(offered.max_timeout_seconds);
    let claim = cx
        .store
        .claim_x402_payment(&key, cx.now, verified.valid_before)
        .await
        .map_err(|e| PayError::Error(store_unavailable(&e)))?;
    match claim {
        X402Claim::Claimed => {}
        X402Claim::Taken => {
            return Err(PayError::Refused(Refusal::new(
                "payment_already_used",
                "This payment authorisation was already presented and is not settled (being settled, refused, or of unknown outcome). Sign a new one (a new nonce).",
            )));
        }
        // Settled earlier (its answer may have been lost): the same token again, whose
        // calls are counted in the store, so nothing is served twice.
        X402Claim::Settled { settle_header } => {
            let (token, credential) = mint(cx.minter, cx.service, &key, anchor, cx.now)?;
            let name = settle_header_name(payment.version);
            return Ok(Paid {
                token,
                credential,
                settle_header: (name, settle_header),
            });
        }
    }
    let resource = ResourceInfo {
        url: cx.resource.to_owned(),
        description: format!("{}: {}", cx.service.name, cx.service.grant_text()),
        mime_type: String::new(),
    };
    let body = facilitator::request_body(&payment, offered, &resource)
        .map_err(|e| PayError::Refused(Refusal::new("invalid_network", format!("{e}."))))?;
    let release = || async {
        if let Err(e) = cx.store.release_x402_payment(&key).await {
            tracing::error!(error = %e, "could not release an x402 claim");
        }
    };
    if let Err(e) = cx.settings.facilitator.verify(&body).await {
        release().await;
        return Err(verify_failure(e));
    }
    let settled = match cx.settings.facilitator.settle(&body).await {
        Ok(s) => s,
        Err(FacilitatorFailure::Unknown(why)) => {
            tracing::error!(replay_key = %key, service = %cx.service.name, error = %why,
                "x402 settlement outcome unknown: the payment may have moved; no call served");
            return Err(PayError::Error(ApiError::new(
                ErrorCode::X402SettlementUnknown,
                "The facilitator did not confirm the settlement of this payment; it may or may not have moved. No call was served. Do not resend this payment: check the authorisation's state on chain (authorizationState(from, nonce) on the token) and sign a new one if it is unused.",
            )));
        }
        Err(e) => {
            release().await;
            return Err(verify_failure(e));
        }
    };
    let settle_header = settle_header(&settled, payment.version);
    if !settled.success {
        let reason = settled
            .error_reason
            .clone()
            .unwrap_or_else(|| "unexpected_settle_error".into());
        return Err(PayError::Refused(Refusal {
            message: format!("The facilitator did not settle the payment ({reason})."),
            reason,
            settle_header: Some(settle_header),
        }));
    }
    if let Err(e) = cx
        .store
        .record_x402_settlement(&key, &settle_header.1)
        .await
    {
        // The call is still served; only a re-presentation would be refused.
        tracing::error!(error = %e, "could not record an x402 settlement");
    }
    tracing::info!(service = %cx.service.name, payer = %verified.payer,
        tx = ?settled.transaction, amount = %verified.amount, "x402 payment settled");
    let (token, credential) = mint(cx.minter, cx.service, &key, anchor, cx.now)?;
    Ok(Paid {
        token,
        credential,
        settle_header,
    })
}

/// The answer to a facilitator that refused a payment or could not be asked: nothing moved.
fn verify_failure(e: FacilitatorFailure) -> PayError {
    match e {
        FacilitatorFailure::Refused(reason) => PayError::Refused(Refusal::new(
            reason.clone(),
            format!("The facilitator refused the payment ({reason}); nothing was charged."),
        )),
        FacilitatorFailure::Unavailable(why) | FacilitatorFailure::Unknown(why) => {
            tracing::warn!(error = %why, "x402 facilitator unavailable");
            PayError::Error(
                ApiError::new(
                    ErrorCode::FacilitatorUnavailable,
                    "The x402 facilitator cannot be asked right now; nothing was charged. Retry later (the same payment may be resent).",
                )
                .retry_after(5),
            )
        }
    }
}

fn decode(headers: &HeaderMap) -> Result<PaymentPayload, PayError> {
    let decoded = match (headers.get(PAYMENT_SIGNATURE), headers.get(X_PAYMENT)) {
        (Some(v), _) => PaymentPayload::from_payment_signature(v.as_bytes()),
        (None, Some(v)) => PaymentPayload::from_x_payment(v.as_bytes()),
        (None, None) => {
            return Err(PayError::Refused(Refusal::new(
                "invalid_payload",
                "No payment.",
            )));
        }
    };
    decoded.map_err(|e| {
        PayError::Refused(Refusal::new(
            e.reason(),
            format!("The payment cannot be decoded: {e}."),
        ))
    })
}

fn settle_header(settled: &SettleResponse, version: X402Version) -> (HeaderName, String) {
    (settle_header_name(version), settled.to_header(version))
}

fn settle_header_name(version: X402Version) -> HeaderName {
    HeaderName::from_static(match version {
        X402Version::V1 => X_PAYMENT_RESPONSE,
        X402Version::V2 => PAYMENT_RESPONSE,
    })
}

/// The token id of the payment `replay_key`: `SHA-256(domain || replay_key)`, so one payment
/// always names one token (its calls are counted once, in the store, by this id).
pub fn token_id(replay_key: &str) -> TokenId {
    let mut h = Sha256::new();
    h.update(TOKEN_ID_DOMAIN);
    h.update(replay_key.as_bytes());
    TokenId(h.finalize().into())
}

/// Mints the token a settled payment bought: the service's caveats (a lifetime counted from
/// `anchor`), the id derived from the replay key, the payment hash that of the preimage the
/// gateway issues for it. Returns it as the minter verifies it at `now`, with its credential as
/// an `Authorization` value. The same arguments give the same token, byte for byte.
fn mint(
    minter: &Minter,
    service: &Service,
    replay_key: &str,
    anchor: u64,
    now: u64,
) -> Result<(VerifiedToken, String), PayError> {
    let token_id = token_id(replay_key);
    let preimage = minter.master_key().issued_preimage(&token_id);
    let macaroon = minter.mint_with_token_id(
        &MintRequest {
            payment_hash: preimage.payment_hash(),
            service: &service.name,
            calls: service.calls,
            valid_until: service.lifetime_secs.map(|t| anchor.saturating_add(t)),
            capabilities: &[],
            max_price_msat: None,
        },
        token_id,
    );
    let credential = format!("L402 {}:{}", macaroon.to_base64(), preimage.to_hex());
    let token = minter
        .verify(&Credential { macaroon, preimage }, &service.name, now)
        .map_err(|e| {
            tracing::error!(error = %e, "a token minted for an x402 payment does not verify");
            PayError::Error(ApiError::new(
                ErrorCode::BackendError,
                "The gateway could not mint the credential of a settled payment.",
            ))
        })?;
    Ok((token, credential))
}

/// Whether `token` was bought with an x402 payment (its payment hash is that of the preimage
/// the gateway issues for its id; only the master key's holder can mint such a token), so no
/// Lightning backend knows of it.
pub(crate) fn is_issued(minter: &Minter, token: &VerifiedToken) -> bool {
    minter
        .master_key()
        .issued_preimage(&token.token_id)
        .matches(&token.payment_hash)
}

fn store_unavailable(e: &turnpike_store::StoreError) -> ApiError {
    tracing::error!(error = %e, "store failed");
    ApiError::new(
        ErrorCode::StoreUnavailable,
        "The gateway's store is unavailable; nothing was charged.",
    )
    .retry_after(5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use turnpike_l402::root_key::MasterKey;

    #[test]
    fn a_payment_names_one_token_only_the_master_key_can_issue() {
        let minter = Minter::new(MasterKey::from_bytes([3; 32]));
        let other = Minter::new(MasterKey::from_bytes([4; 32]));
        let service = crate::service::ServiceRoutes::try_from(&crate::config::ServiceConfig::new(
            "svc",
            "http://127.0.0.1:1",
            1,
        ))
        .unwrap()
        .0
        .remove(0);
        let mint = |key: &str, now| mint(&minter, &service, key, 90, now).ok().unwrap();
        let (token, credential) = mint("eip155:1/0xa/0xb/0xc", 100);
        let (again, same) = mint("eip155:1/0xa/0xb/0xc", 200);
        assert_eq!(token.token_id, again.token_id);
        assert_eq!(credential, same);
        assert_ne!(token.token_id, mint("eip155:1/0xa/0xb/0xd", 100).0.token_id);
        assert!(is_issued(&minter, &token));
        assert!(!is_issued(&other, &token));
        // The credential is an ordinary L402 credential of this service, and of no other.
        let cred = turnpike_l402::credential::Credential::parse_authorization(&credential)
            .unwrap()
            .unwrap();
        let verified = minter.verify(&cred, "svc", 100).unwrap();
        assert_eq!(verified.token_id, token.token_id);
        assert_eq!(verified.grant.calls, Some(1));
        assert!(minter.verify(&cred, "other", 100).is_err());
        assert!(other.verify(&cred, "svc", 100).is_err());
        // An invoice-backed token (a random payment hash) is never taken for an issued one.
        let lightning = VerifiedToken {
            payment_hash: turnpike_l402::PaymentHash([9; 32]),
            ..token
        };
        assert!(!is_issued(&minter, &lightning));
        // A time pass runs from the anchor, not from when it is minted: minting it again later
        // gives the same credential, so presenting a payment again never extends it.
        let pass = crate::service::ServiceRoutes::try_from(&crate::config::ServiceConfig {
            time_pass_secs: Some(3600),
            ..crate::config::ServiceConfig::new("pass", "http://127.0.0.1:1", 1)
        })
        .unwrap()
        .0
        .remove(0);
        let first = super::mint(&minter, &pass, "k", 1000, 1000).ok().unwrap();
        let later = super::mint(&minter, &pass, "k", 1000, 4000).ok().unwrap();
        assert_eq!(first.1, later.1);
        assert_eq!(first.0.grant.valid_until, Some(4600));
    }
}
