//! The checks a resource server makes itself, before it trusts a facilitator with anything:
//! that the payment is for what was offered (scheme, network, asset, `payTo`, exact amount,
//! timeout, token domain), that the authorisation's time window is open now and not longer than
//! offered, and that the EIP-712 `TransferWithAuthorization` signature recovers `from`. No
//! network: balance, nonce state and settlement are the facilitator's (and the chain's).

use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::{Eip712Domain, SolStruct, sol};

use crate::amount::TokenAmount;
use crate::network::Network;
use crate::payload::{Accepted, Authorization, PaymentPayload};
use crate::requirements::{PaymentRequirements, TokenDomain};

sol! {
    /// EIP-3009's signed message (FiatTokenV2's `TRANSFER_WITH_AUTHORIZATION_TYPEHASH`).
    #[allow(missing_docs)]
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

/// The reference facilitator refuses an authorisation that expires within this many seconds
/// of now (the next block's timestamp may be a little later than the clock); so does this
/// crate.
pub const VALID_BEFORE_MARGIN_SECONDS: u64 = 6;

/// Clock difference tolerated between the client and this server when checking that
/// `validBefore` is no later than now + `maxTimeoutSeconds`.
pub const CLOCK_SKEW_SECONDS: u64 = 60;

/// Why a payment is refused. Each names the field and both values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// v2 `accepted.network` or v1 `network` is not the offered network.
    #[error("payment is on network {got}, but {expected} was offered")]
    NetworkMismatch {
        /// Offered.
        expected: Network,
        /// In the payment.
        got: Network,
    },
    /// v2 `accepted.asset` is not the offered asset.
    #[error("accepted.asset is {got}, but {expected} was offered")]
    AssetMismatch {
        /// Offered.
        expected: Address,
        /// In the payment.
        got: Address,
    },
    /// v2 `accepted.payTo` is not the offered `payTo`.
    #[error("accepted.payTo is {got}, but {expected} was offered")]
    AcceptedPayToMismatch {
        /// Offered.
        expected: Address,
        /// In the payment.
        got: Address,
    },
    /// v2 `accepted.amount` is not the offered amount.
    #[error("accepted.amount is {got}, but {expected} was offered")]
    AcceptedAmountMismatch {
        /// Offered.
        expected: TokenAmount,
        /// In the payment.
        got: TokenAmount,
    },
    /// v2 `accepted.maxTimeoutSeconds` differs from the offer.
    #[error("accepted.maxTimeoutSeconds is {got}, but {expected} was offered")]
    TimeoutMismatch {
        /// Offered.
        expected: u64,
        /// In the payment.
        got: u64,
    },
    /// v2 `accepted.extra` (the token's EIP-712 name and version) differs from the offer.
    #[error(
        "accepted.extra is name {got_name:?} version {got_version:?}, but name {expected_name:?} version {expected_version:?} was offered"
    )]
    DomainMismatch {
        /// Offered name.
        expected_name: String,
        /// Offered version.
        expected_version: String,
        /// Name in the payment.
        got_name: String,
        /// Version in the payment.
        got_version: String,
    },
    /// `authorization.to` is not the offered `payTo`.
    #[error("authorization.to is {got}, but the payment must go to {expected}")]
    RecipientMismatch {
        /// Offered `payTo`.
        expected: Address,
        /// In the authorisation.
        got: Address,
    },
    /// `authorization.value` is not exactly the offered amount.
    #[error("authorization.value is {got}, but exactly {expected} is required")]
    ValueMismatch {
        /// Offered amount.
        expected: TokenAmount,
        /// In the authorisation.
        got: U256,
    },
    /// `authorization.validAfter` is in the future.
    #[error("authorization.validAfter {valid_after} is after now ({now})")]
    NotYetValid {
        /// In the authorisation.
        valid_after: u64,
        /// The time checked against.
        now: u64,
    },
    /// `authorization.validBefore` has passed, or passes within
    /// [`VALID_BEFORE_MARGIN_SECONDS`].
    #[error(
        "authorization.validBefore {valid_before} is past or within {VALID_BEFORE_MARGIN_SECONDS}s of now ({now})"
    )]
    Expired {
        /// In the authorisation.
        valid_before: u64,
        /// The time checked against.
        now: u64,
    },
    /// `authorization.validBefore` is further away than `maxTimeoutSeconds` (plus
    /// [`CLOCK_SKEW_SECONDS`]) allows.
    #[error(
        "authorization.validBefore {valid_before} is later than now + maxTimeoutSeconds + skew ({latest})"
    )]
    WindowTooLong {
        /// In the authorisation.
        valid_before: u64,
        /// The latest accepted.
        latest: u64,
    },
    /// The signature does not recover to any key.
    #[error("payload.signature does not recover a signer")]
    BadSignature,
    /// The signature recovers to someone other than `authorization.from`.
    #[error("payload.signature was made by {recovered}, not by authorization.from {from}")]
    SignerMismatch {
        /// `authorization.from`.
        from: Address,
        /// Who signed.
        recovered: Address,
    },
}

impl VerifyError {
    /// The x402 error reason for this refusal (the spec's `invalidReason` / `errorReason`
    /// codes), for the `error` of the 402 a server answers with.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::NetworkMismatch { .. } => "invalid_network",
            VerifyError::AssetMismatch { .. }
            | VerifyError::AcceptedPayToMismatch { .. }
            | VerifyError::AcceptedAmountMismatch { .. }
            | VerifyError::TimeoutMismatch { .. }
            | VerifyError::DomainMismatch { .. } => "invalid_payment_requirements",
            VerifyError::RecipientMismatch { .. } => "invalid_exact_evm_payload_recipient_mismatch",
            VerifyError::ValueMismatch { .. } => {
                "invalid_exact_evm_payload_authorization_value_mismatch"
            }
            VerifyError::NotYetValid { .. } => {
                "invalid_exact_evm_payload_authorization_valid_after"
            }
            VerifyError::Expired { .. } | VerifyError::WindowTooLong { .. } => {
                "invalid_exact_evm_payload_authorization_valid_before"
            }
            VerifyError::BadSignature | VerifyError::SignerMismatch { .. } => {
                "invalid_exact_evm_payload_signature"
            }
        }
    }
}

/// A payment that passed every offline check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The payer (`authorization.from`, proven by the signature).
    pub payer: Address,
    /// The network.
    pub network: Network,
    /// The token.
    pub asset: Address,
    /// The amount authorised (exactly the price).
    pub amount: TokenAmount,
    /// The authorisation nonce.
    pub nonce: B256,
    /// When the authorisation expires: a replay record for it can be dropped after this.
    pub valid_before: u64,
}

impl Verified {
    /// The key under which the gateway claims this payment once (in its shared store) before
    /// settling: EIP-3009 nonces are per token and payer, so the key is network, asset, payer
    /// and nonce, lowercase: `eip155:84532/0x…asset/0x…from/0x…nonce`.
    pub fn replay_key(&self) -> String {
        format!(
            "{}/{:#x}/{:#x}/{:#x}",
            self.network, self.asset, self.payer, self.nonce
        )
    }
}

/// The EIP-712 domain of a token: `{name, version, chainId, verifyingContract}`.
pub fn token_domain(network: Network, asset: Address, domain: &TokenDomain) -> Eip712Domain {
    Eip712Domain::new(
        Some(domain.name.clone().into()),
        Some(domain.version.clone().into()),
        Some(U256::from(network.chain_id())),
        Some(asset),
        None,
    )
}

/// The EIP-712 digest a payer signs for `auth` under the token domain of `req`.
pub fn signing_hash(req: &PaymentRequirements, auth: &Authorization) -> B256 {
    let message = TransferWithAuthorization {
        from: auth.from,
        to: auth.to,
        value: auth.value,
        validAfter: U256::from(auth.valid_after),
        validBefore: U256::from(auth.valid_before),
        nonce: auth.nonce,
    };
    message.eip712_signing_hash(&token_domain(req.network, req.asset, &req.extra))
}

/// Checks `payment` against the requirements the server offered for this resource (its own
/// copy, never the client's echo) at Unix time `now`. Order: what was accepted, then recipient
/// and amount, then time window, then the signature (the only costly check).
pub fn verify(
    payment: &PaymentPayload,
    offered: &PaymentRequirements,
    now: u64,
) -> Result<Verified, VerifyError> {
    check_accepted(&payment.accepted, offered)?;
    let auth = &payment.authorization;
    if auth.to != offered.pay_to {
        return Err(VerifyError::RecipientMismatch {
            expected: offered.pay_to,
            got: auth.to,
        });
    }
    if auth.value != offered.amount.to_u256() {
        return Err(VerifyError::ValueMismatch {
            expected: offered.amount,
            got: auth.value,
        });
    }
    if auth.valid_after > now {
        return Err(VerifyError::NotYetValid {
            valid_after: auth.valid_after,
            now,
        });
    }
    if auth.valid_before < now.saturating_add(VALID_BEFORE_MARGIN_SECONDS) {
        return Err(VerifyError::Expired {
            valid_before: auth.valid_before,
            now,
        });
    }
    let latest = now
        .saturating_add(offered.max_timeout_seconds)
        .saturating_add(CLOCK_SKEW_SECONDS);
    if auth.valid_before > latest {
        return Err(VerifyError::WindowTooLong {
            valid_before: auth.valid_before,
            latest,
        });
    }
    let digest = signing_hash(offered, auth);
    let sig = alloy_primitives::Signature::from_raw_array(payment.signature.as_bytes())
        .map_err(|_| VerifyError::BadSignature)?;
    let recovered = sig
        .recover_address_from_prehash(&digest)
        .map_err(|_| VerifyError::BadSignature)?;
    if recovered != auth.from {
        return Err(VerifyError::SignerMismatch {
            from: auth.from,
            recovered,
        });
    }
    Ok(Verified {
        payer: auth.from,
        network: offered.network,
        asset: offered.asset,
        amount: offered.amount,
        nonce: auth.nonce,
        valid_before: auth.valid_before,
    })
}

fn check_accepted(accepted: &Accepted, offered: &PaymentRequirements) -> Result<(), VerifyError> {
    let network = accepted.network();
    if network != offered.network {
        return Err(VerifyError::NetworkMismatch {
            expected: offered.network,
            got: network,
        });
    }
    let Accepted::V2(a) = accepted else {
        // v1 names only scheme (checked when decoding) and network.
        return Ok(());
    };
    if a.asset != offered.asset {
        return Err(VerifyError::AssetMismatch {
            expected: offered.asset,
            got: a.asset,
        });
    }
    if a.pay_to != offered.pay_to {
        return Err(VerifyError::AcceptedPayToMismatch {
            expected: offered.pay_to,
            got: a.pay_to,
        });
    }
    if a.amount != offered.amount {
        return Err(VerifyError::AcceptedAmountMismatch {
            expected: offered.amount,
            got: a.amount,
        });
    }
    if a.max_timeout_seconds != offered.max_timeout_seconds {
        return Err(VerifyError::TimeoutMismatch {
            expected: offered.max_timeout_seconds,
            got: a.max_timeout_seconds,
        });
    }
    if a.extra != offered.extra {
        return Err(VerifyError::DomainMismatch {
            expected_name: offered.extra.name.clone(),
            expected_version: offered.extra.version.clone(),
            got_name: a.extra.name.clone(),
            got_version: a.extra.version.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_hashes_match_eip3009_and_eip712() {
        // payment-schemes.md §3.3.
        let auth = TransferWithAuthorization {
            from: Address::ZERO,
            to: Address::ZERO,
            value: U256::ZERO,
            validAfter: U256::ZERO,
            validBefore: U256::ZERO,
            nonce: B256::ZERO,
        };
        assert_eq!(
            format!("{:#x}", auth.eip712_type_hash()),
            "0x7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267"
        );
        let domain = token_domain(
            Network::BASE_SEPOLIA,
            Address::ZERO,
            &TokenDomain {
                name: "x".into(),
                version: "1".into(),
            },
        );
        assert_eq!(
            format!("{:#x}", domain.type_hash()),
            "0x8b73c3c69bb8fe3d512ecc4cf759cc79239f7b179b0ffacaa9a75d522b39400f"
        );
    }
}
