//! Minting and verifying L402 tokens.
//!
//! A token is a macaroon whose identifier is an L402 [`Identifier`] (payment hash + random token
//! id), whose root key is derived from the [`MasterKey`] and the token id, and whose first-party
//! caveats say what it grants (see [`crate::caveat`]).
//!
//! ```
//! use turnpike_l402::Preimage;
//! use turnpike_l402::challenge::Challenge;
//! use turnpike_l402::credential::Credential;
//! use turnpike_l402::root_key::MasterKey;
//! use turnpike_l402::token::{MintRequest, Minter};
//!
//! let minter = Minter::new(MasterKey::random());
//! // The invoice's preimage is known to the payee; the payer learns it by paying.
//! let preimage = Preimage::random();
//! let (macaroon, _token_id) = minter.mint(&MintRequest {
//!     payment_hash: preimage.payment_hash(),
//!     service: "weather",
//!     calls: Some(100),
//!     valid_until: Some(2_000_000_000),
//!     capabilities: &[],
//!     max_price_msat: None,
//! });
//! let challenge = Challenge { macaroon, invoice: "lnbc1...".into() };
//! let [_lsat, l402] = challenge.header_values();
//!
//! // Client side: parse the challenge, pay, present the credential.
//! let paid = Challenge::parse(&l402).unwrap();
//! let cred = Credential { macaroon: paid.macaroon, preimage };
//! let header = cred.authorization_value();
//!
//! // Gateway side.
//! let cred = Credential::parse_authorization(&header).unwrap().unwrap();
//! let token = minter.verify(&cred, "weather", 1_900_000_000).unwrap();
//! assert_eq!(token.grant.calls, Some(100));
//! ```

use crate::caveat::{Caveat, CaveatError, Grant, evaluate, is_valid_service_name};
use crate::credential::Credential;
use crate::hash::{PaymentHash, TokenId};
use crate::identifier::{Identifier, IdentifierError};
use crate::macaroon::Macaroon;
use crate::root_key::MasterKey;

/// The macaroon location Aperture uses (kept after the LSAT to L402 rename).
pub const DEFAULT_LOCATION: &str = "lsat";

/// What to put in a new token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MintRequest<'a> {
    /// The payment hash of the invoice that pays for the token.
    pub payment_hash: PaymentHash,
    /// The service the token is for; must satisfy [`is_valid_service_name`].
    pub service: &'a str,
    /// How many calls the payment buys; `None`: unlimited until expiry.
    pub calls: Option<u64>,
    /// Expiry in unix seconds; `None`: no expiry.
    pub valid_until: Option<u64>,
    /// Capabilities to grant; empty: no capabilities caveat.
    pub capabilities: &'a [&'a str],
    /// The most a call may cost (a dynamically priced service); `None`: no such caveat.
    pub max_price_msat: Option<crate::Msat>,
}

/// Why a mint request was refused by [`Minter::try_mint`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// The service name is not 1 to 64 characters of `[A-Za-z0-9_.-]`.
    #[error("invalid service name {0:?}")]
    InvalidServiceName(String),
    /// A capability is empty, contains `,` or has surrounding whitespace.
    #[error("invalid capability {0:?}")]
    InvalidCapability(String),
}

/// A successfully verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The token id (from the identifier).
    pub token_id: TokenId,
    /// The payment hash the credential's preimage was checked against.
    pub payment_hash: PaymentHash,
    /// What the caveats grant for the requested service.
    pub grant: Grant,
}

/// Why a credential does not authorize a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The macaroon identifier is not a valid L402 identifier.
    #[error("invalid token identifier: {0}")]
    Identifier(#[from] IdentifierError),
    /// The preimage does not hash to the identifier's payment hash.
    #[error("preimage does not match the token's payment hash")]
    PaymentNotProven,
    /// The macaroon location is not this minter's.
    #[error("token location does not match")]
    WrongLocation,
    /// The HMAC chain does not verify under the derived root key, or the macaroon has
    /// third-party caveats (unsupported).
    #[error("token signature does not verify")]
    BadSignature,
    /// The caveats do not grant the request.
    #[error("token caveats: {0}")]
    Caveat(#[from] CaveatError),
}

impl VerifyError {
    /// Whether the gateway should answer with a fresh 402 challenge (the token is genuine but
    /// expired or for another service). `false` means 401.
    pub fn needs_payment(&self) -> bool {
        matches!(
            self,
            VerifyError::Caveat(CaveatError::Expired { .. } | CaveatError::ServiceNotGranted)
        )
    }
}

/// Mints and verifies tokens with one master key and location.
#[derive(Debug, Clone)]
pub struct Minter {
    master: MasterKey,
    location: String,
}

impl Minter {
    /// A minter with location [`DEFAULT_LOCATION`].
    pub fn new(master: MasterKey) -> Minter {
        Minter::with_location(master, DEFAULT_LOCATION)
    }

    /// A minter with a custom macaroon location.
    pub fn with_location(master: MasterKey, location: impl Into<String>) -> Minter {
        Minter {
            master,
            location: location.into(),
        }
    }

    /// The location of minted macaroons.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The master key.
    pub fn master_key(&self) -> &MasterKey {
        &self.master
    }

    /// Mints a token with a fresh token id ([`TokenId::time_ordered`]). Caveats, in Aperture's order:
    /// `services=<svc>:0`, `<svc>_capabilities=..` (if any), `<svc>_calls=N` (if set),
    /// `<svc>_valid_until=T` (if set).
    ///
    /// The request is not validated: a service name that fails [`is_valid_service_name`]
    /// yields a token that never verifies. Use [`Minter::try_mint`] to check it.
    pub fn mint(&self, req: &MintRequest<'_>) -> (Macaroon, TokenId) {
        let token_id = TokenId::time_ordered();
        (self.mint_with_token_id(req, token_id), token_id)
    }

    /// Like [`Minter::mint`], but refuses invalid service names and capabilities.
    pub fn try_mint(&self, req: &MintRequest<'_>) -> Result<(Macaroon, TokenId), MintError> {
        if !is_valid_service_name(req.service) {
            return Err(MintError::InvalidServiceName(req.service.to_owned()));
        }
        if let Some(bad) = req
            .capabilities
            .iter()
            .find(|c| c.is_empty() || c.contains(',') || c.trim() != **c)
        {
            return Err(MintError::InvalidCapability((*bad).to_owned()));
        }
        Ok(self.mint(req))
    }

    /// Mints a token with the given token id (deterministic; for tests and re-minting).
    pub fn mint_with_token_id(&self, req: &MintRequest<'_>, token_id: TokenId) -> Macaroon {
        let id = Identifier::new(req.payment_hash, token_id);
        let root = self.master.root_key(&token_id);
        let mut mac = Macaroon::new(&root, id.encode(), &self.location);
        let svc = req.service;
        mac.add_first_party_caveat(Caveat::services(&[svc]).to_bytes());
        if !req.capabilities.is_empty() {
            mac.add_first_party_caveat(Caveat::capabilities(svc, req.capabilities).to_bytes());
        }
        if let Some(n) = req.calls {
            mac.add_first_party_caveat(Caveat::calls(svc, n).to_bytes());
        }
        if let Some(t) = req.valid_until {
            mac.add_first_party_caveat(Caveat::valid_until(svc, t).to_bytes());
        }
        if let Some(max) = req.max_price_msat {
            mac.add_first_party_caveat(Caveat::max_price_msat(svc, max.0).to_bytes());
        }
        mac
    }

    /// Verifies a credential for `service` at `now_unix`, cheapest checks first: identifier,
    /// preimage against the payment hash, location, HMAC chain under the derived root key
    /// (constant time), caveats.
    pub fn verify(
        &self,
        cred: &Credential,
        service: &str,
        now_unix: u64,
    ) -> Result<VerifiedToken, VerifyError> {
        let id = check_payment(cred, &self.location)?;
        let root = self.master.root_key(&id.token_id);
        check_signature_and_caveats(cred, &id, &root, service, now_unix)
    }
}

/// The checks of a credential that need no root key, cheapest first: the identifier is an L402
/// v0 identifier, the preimage hashes to its payment hash, and the macaroon's location is
/// exactly `location`. Then look the root key up (or derive it) and finish with
/// [`check_signature_and_caveats`].
pub fn check_payment(cred: &Credential, location: &str) -> Result<Identifier, VerifyError> {
    let mac = &cred.macaroon;
    let id = Identifier::decode(mac.identifier())?;
    if !cred.preimage.matches(&id.payment_hash) {
        return Err(VerifyError::PaymentNotProven);
    }
    // The location is not covered by the HMAC; requiring it to be exactly ours makes every
    // byte of the token significant. An absent location equals an empty one.
    if mac.location_bytes().unwrap_or_default() != location.as_bytes() {
        return Err(VerifyError::WrongLocation);
    }
    Ok(id)
}

/// The rest of a verification after [`check_payment`]: the HMAC chain under `root_key`
/// (constant time; third-party caveats refused), then the caveats for `service` at `now_unix`.
pub fn check_signature_and_caveats(
    cred: &Credential,
    id: &Identifier,
    root_key: &[u8],
    service: &str,
    now_unix: u64,
) -> Result<VerifiedToken, VerifyError> {
    let mac = &cred.macaroon;
    mac.verify_signature(root_key)
        .map_err(|_| VerifyError::BadSignature)?;
    let grant = evaluate(mac.first_party_caveats(), service, now_unix)?;
    Ok(VerifiedToken {
        token_id: id.token_id,
        payment_hash: id.payment_hash,
        grant,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Preimage;

    fn setup() -> (Minter, Preimage) {
        (
            Minter::new(MasterKey::from_bytes([1; 32])),
            Preimage([2; 32]),
        )
    }

    fn req(p: &Preimage) -> MintRequest<'static> {
        MintRequest {
            payment_hash: p.payment_hash(),
            service: "svc",
            calls: Some(5),
            valid_until: Some(1000),
            capabilities: &["read", "write"],
            max_price_msat: None,
        }
    }

    #[test]
    fn mint_and_verify() {
        let (minter, pre) = setup();
        let (mac, tid) = minter.mint(&req(&pre));
        assert_eq!(mac.location(), Some(DEFAULT_LOCATION));
        let caveats: Vec<_> = mac.first_party_caveats().collect();
        assert_eq!(
            caveats,
            [
                &b"services=svc:0"[..],
                b"svc_capabilities=read,write",
                b"svc_calls=5",
                b"svc_valid_until=1000"
            ]
        );
        let cred = Credential {
            macaroon: mac,
            preimage: pre,
        };
        let v = minter.verify(&cred, "svc", 999).unwrap();
        assert_eq!(v.token_id, tid);
        assert_eq!(v.payment_hash, pre.payment_hash());
        assert_eq!(
            v.grant,
            Grant {
                valid_until: Some(1000),
                calls: Some(5),
                capabilities: Some(vec!["read".into(), "write".into()]),
                max_price_msat: None,
            }
        );
    }

    #[test]
    fn minimal_mint_has_only_services() {
        let (minter, pre) = setup();
        let (mac, _) = minter.mint(&MintRequest {
            payment_hash: pre.payment_hash(),
            service: "svc",
            calls: None,
            valid_until: None,
            capabilities: &[],
            max_price_msat: None,
        });
        assert_eq!(mac.first_party_caveats().count(), 1);
        let cred = Credential {
            macaroon: mac,
            preimage: pre,
        };
        assert_eq!(
            minter.verify(&cred, "svc", u64::MAX).unwrap().grant,
            Grant::default()
        );
    }

    #[test]
    fn failures() {
        let (minter, pre) = setup();
        let (mac, _) = minter.mint(&req(&pre));
        let cred = |macaroon: Macaroon, preimage| Credential { macaroon, preimage };

        let e = minter
            .verify(&cred(mac.clone(), Preimage([3; 32])), "svc", 0)
            .unwrap_err();
        assert_eq!(e, VerifyError::PaymentNotProven);
        assert!(!e.needs_payment());

        let e = minter
            .verify(&cred(mac.clone(), Preimage(pre.payment_hash().0)), "svc", 0)
            .unwrap_err();
        assert_eq!(e, VerifyError::PaymentNotProven);

        let foreign = Minter::new(MasterKey::from_bytes([9; 32]));
        let e = foreign
            .verify(&cred(mac.clone(), pre), "svc", 0)
            .unwrap_err();
        assert_eq!(e, VerifyError::BadSignature);

        let other_loc = Minter::with_location(MasterKey::from_bytes([1; 32]), "elsewhere");
        let e = other_loc
            .verify(&cred(mac.clone(), pre), "svc", 0)
            .unwrap_err();
        assert_eq!(e, VerifyError::WrongLocation);

        let e = minter
            .verify(&cred(mac.clone(), pre), "svc", 1000)
            .unwrap_err();
        assert_eq!(
            e,
            VerifyError::Caveat(CaveatError::Expired { valid_until: 1000 })
        );
        assert!(e.needs_payment());

        let e = minter
            .verify(&cred(mac.clone(), pre), "other", 0)
            .unwrap_err();
        assert_eq!(e, VerifyError::Caveat(CaveatError::ServiceNotGranted));
        assert!(e.needs_payment());

        let mut holder = mac.clone();
        holder.add_first_party_caveat("svc_calls=1000");
        holder.add_first_party_caveat("svc_valid_until=99999");
        let v = minter.verify(&cred(holder, pre), "svc", 0).unwrap();
        assert_eq!(v.grant.calls, Some(5));
        assert_eq!(v.grant.valid_until, Some(1000));

        let mut malformed = mac.clone();
        malformed.add_first_party_caveat("svc_calls=many");
        let e = minter.verify(&cred(malformed, pre), "svc", 0).unwrap_err();
        assert!(matches!(
            e,
            VerifyError::Caveat(CaveatError::Malformed { .. })
        ));
        assert!(!e.needs_payment());

        let not_l402 = Macaroon::new(&[0; 32], "AA==", DEFAULT_LOCATION);
        let e = minter.verify(&cred(not_l402, pre), "svc", 0).unwrap_err();
        assert!(matches!(e, VerifyError::Identifier(_)));
        assert!(!e.needs_payment());
    }

    #[test]
    fn try_mint_validates() {
        let (minter, pre) = setup();
        let mut r = req(&pre);
        assert!(minter.try_mint(&r).is_ok());
        r.service = "bad:name";
        assert_eq!(
            minter.try_mint(&r).unwrap_err(),
            MintError::InvalidServiceName("bad:name".into())
        );
        r.service = "svc";
        r.capabilities = &["a,b"];
        assert!(matches!(
            minter.try_mint(&r),
            Err(MintError::InvalidCapability(_))
        ));
    }

    #[test]
    fn minter_debug_hides_master_key() {
        let (minter, _) = setup();
        let dbg = format!("{minter:?}");
        assert!(dbg.contains("<redacted>"));
        assert!(!dbg.contains("[1, 1"));
    }
}
