//! The paying side: an EVM key that signs EIP-3009 authorisations for offered requirements.
//! Signatures are deterministic (RFC 6979), as viem's are, so the same key and message give
//! the same bytes as the official client. No randomness here: the caller supplies the nonce.

use std::fmt;

use alloy_primitives::{Address, B256};
use k256::ecdsa::SigningKey;

use crate::network::NetworkError;
use crate::payload::{Accepted, Authorization, EvmSignature, PaymentPayload};
use crate::requirements::{PaymentRequirements, ResourceInfo, X402Version};
use crate::verify::signing_hash;

/// How far before `now` a payment becomes valid: tolerates a server clock running behind the
/// payer's (the reference v1 client uses the same 600 s).
pub const VALID_AFTER_LEEWAY_SECONDS: u64 = 600;

/// Why a secret is not a usable key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not `0x` + 64 hex digits (or 64 hex digits).
    #[error("EVM private key must be 64 hex digits, optionally after 0x")]
    NotHex,
    /// Zero, or not below the secp256k1 group order.
    #[error("EVM private key is not a valid secp256k1 secret")]
    OutOfRange,
}

/// A payer's secp256k1 key. Its `Debug` shows only the address; the secret is wiped on drop.
#[derive(Clone)]
pub struct PayerKey {
    key: SigningKey,
    address: Address,
}

impl fmt::Debug for PayerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PayerKey({})", self.address)
    }
}

impl PayerKey {
    /// The key with this 32-byte secret.
    pub fn from_bytes(secret: &[u8; 32]) -> Result<PayerKey, KeyError> {
        let key = SigningKey::from_bytes(secret.into()).map_err(|_| KeyError::OutOfRange)?;
        let address = Address::from_private_key(&key);
        Ok(PayerKey { key, address })
    }

    /// Parses a key written as wallets export it: 64 hex digits, optionally after `0x`.
    pub fn from_hex(text: &str) -> Result<PayerKey, KeyError> {
        let hex = text.trim();
        let hex = hex.strip_prefix("0x").unwrap_or(hex);
        let mut secret = [0u8; 32];
        if hex.len() != 64 {
            return Err(KeyError::NotHex);
        }
        alloy_primitives::hex::decode_to_slice(hex, &mut secret).map_err(|_| KeyError::NotHex)?;
        let key = PayerKey::from_bytes(&secret);
        secret.fill(0);
        key
    }

    /// The payer's address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// Signs `auth` under the token domain of `req` (EIP-712 `TransferWithAuthorization`).
    pub fn sign(&self, req: &PaymentRequirements, auth: &Authorization) -> EvmSignature {
        let digest = signing_hash(req, auth);
        let (sig, recid) = self
            .key
            .sign_prehash_recoverable(digest.as_slice())
            .expect("a 32-byte digest is a valid prehash");
        let mut bytes = [0u8; 65];
        bytes[..64].copy_from_slice(&sig.to_bytes());
        bytes[64] = 27 + recid.to_byte();
        // k256 signs with a low s, which is what EvmSignature requires.
        EvmSignature::from_bytes(bytes).expect("k256 produces canonical signatures")
    }

    /// Pays `req`: an authorisation of exactly its amount to its `payTo`, valid from
    /// `now - VALID_AFTER_LEEWAY_SECONDS` until `now + maxTimeoutSeconds`, with the caller's
    /// random `nonce`, signed, in the form of `version` (v2 echoes `req` as `accepted` and
    /// carries `resource`; v1 needs a network with a v1 name).
    pub fn pay(
        &self,
        req: &PaymentRequirements,
        resource: Option<ResourceInfo>,
        version: X402Version,
        now: u64,
        nonce: [u8; 32],
    ) -> Result<PaymentPayload, NetworkError> {
        let auth = Authorization {
            from: self.address,
            to: req.pay_to,
            value: req.amount.to_u256(),
            valid_after: now.saturating_sub(VALID_AFTER_LEEWAY_SECONDS),
            valid_before: now.saturating_add(req.max_timeout_seconds),
            nonce: B256::from(nonce),
        };
        let signature = self.sign(req, &auth);
        let accepted = match version {
            X402Version::V1 => Accepted::V1 {
                network: req.network,
            },
            X402Version::V2 => Accepted::V2(req.clone()),
        };
        PaymentPayload::new(accepted, resource, auth, signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        // anvil's account #1.
        let k = PayerKey::from_hex(
            "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
        )
        .unwrap();
        assert_eq!(
            k.address().to_checksum(None),
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
        );
        assert_eq!(
            format!("{k:?}"),
            "PayerKey(0x70997970C51812dc3A010C7d01b50e0d17dc79C8)"
        );
        assert_eq!(
            PayerKey::from_hex("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
                .unwrap()
                .address(),
            k.address()
        );
        assert_eq!(PayerKey::from_hex("0x1234").unwrap_err(), KeyError::NotHex);
        assert_eq!(
            PayerKey::from_hex(&format!("0x{}", "zz".repeat(32))).unwrap_err(),
            KeyError::NotHex
        );
        assert_eq!(
            PayerKey::from_bytes(&[0; 32]).unwrap_err(),
            KeyError::OutOfRange
        );
        assert_eq!(
            PayerKey::from_bytes(&[0xff; 32]).unwrap_err(),
            KeyError::OutOfRange
        );
    }
}
