//! The master key and the per-token root keys derived from it.
//!
//! `root_key = HMAC-SHA256(key = master, msg = "turnpike-l402-root-key-v1" || token_id)`.
//! Root keys are derived rather than stored, so verifying a token needs no database read.

use std::fmt;

use crate::hash::{HexError, TokenId};
use crate::macaroon::KeyedHmac;

/// Domain separation prefix of the root-key derivation.
const ROOT_KEY_DOMAIN: &[u8] = b"turnpike-l402-root-key-v1";
/// Domain separation prefix of the preimages the gateway issues itself (for payments made
/// other than by a Lightning invoice).
const ISSUED_PREIMAGE_DOMAIN: &[u8] = b"turnpike-issued-preimage-v1";

/// The gateway's 32-byte master secret. Its `Debug` output is redacted and it has no
/// `Display`.
#[derive(Clone)]
pub struct MasterKey {
    key: [u8; 32],
    /// `key` prepared as an HMAC key (both derivations below are HMACs under it).
    hmac: KeyedHmac,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// A fresh random master key from the operating system's CSPRNG.
    pub fn random() -> MasterKey {
        use rand::RngCore as _;
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        MasterKey::from_bytes(key)
    }

    /// A master key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey {
            key: bytes,
            hmac: KeyedHmac::new(&bytes),
        }
    }

    /// A master key from 64 hex characters (either case). The error does not echo the input.
    pub fn from_hex(s: &str) -> Result<MasterKey, HexError> {
        let mut out = [0u8; 32];
        let s = s.trim();
        if s.len() != 64 {
            return Err(HexError);
        }
        hex::decode_to_slice(s, &mut out).map_err(|_| HexError)?;
        Ok(MasterKey::from_bytes(out))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// The root key of the token `token_id`:
    /// `HMAC-SHA256(key = master, msg = "turnpike-l402-root-key-v1" || token_id)`.
    pub fn root_key(&self, token_id: &TokenId) -> [u8; 32] {
        self.hmac.mac(&[ROOT_KEY_DOMAIN, &token_id.0])
    }

    /// The preimage the gateway issues itself for the token `token_id` when the token was paid
    /// other than by a Lightning invoice (x402): `HMAC-SHA256(master,
    /// "turnpike-issued-preimage-v1" || token_id)`. The token's payment hash is its SHA-256, so
    /// the token is an ordinary L402 credential, and only the holder of the master key can
    /// produce a token whose payment hash matches its id this way. Distinct from the root key
    /// (another domain), which is never handed out.
    pub fn issued_preimage(&self, token_id: &TokenId) -> crate::hash::Preimage {
        crate::hash::Preimage(self.hmac.mac(&[ISSUED_PREIMAGE_DOMAIN, &token_id.0]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    #[test]
    fn derivation_matches_definition() {
        let master = MasterKey::from_bytes([7; 32]);
        let tid = TokenId([9; 32]);
        let mut mac = Hmac::<Sha256>::new_from_slice(&[7; 32]).unwrap();
        mac.update(b"turnpike-l402-root-key-v1");
        mac.update(&[9; 32]);
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(master.root_key(&tid), expected);
        assert_ne!(master.root_key(&TokenId([8; 32])), expected);
        assert_ne!(master.issued_preimage(&tid).0, expected);
        assert_ne!(
            MasterKey::from_bytes([6; 32]).root_key(&tid),
            master.root_key(&tid)
        );
    }

    #[test]
    fn debug_is_redacted() {
        let k = MasterKey::from_bytes([0xab; 32]);
        assert_eq!(format!("{k:?}"), "MasterKey(<redacted>)");
        assert_eq!(format!("{:#?}", k), "MasterKey(<redacted>)");
    }

    #[test]
    fn random_and_hex() {
        assert_ne!(
            MasterKey::random().as_bytes(),
            MasterKey::random().as_bytes()
        );
        let k = MasterKey::from_hex(&"AB".repeat(32)).unwrap();
        assert_eq!(k.as_bytes(), &[0xab; 32]);
        assert!(MasterKey::from_hex("abcd").is_err());
    }
}
