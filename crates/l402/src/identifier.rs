//! The L402 macaroon identifier, version 0 (Aperture `l402/identifier.go`):
//!
//! ```text
//! offset  size  field
//! 0       2     version       u16 big-endian, 0
//! 2       32    payment_hash
//! 34      32    token_id
//! total   66 bytes
//! ```

use crate::hash::{PaymentHash, TokenId};

/// Errors from decoding an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    /// The identifier does not have the length its version requires.
    #[error("L402 identifier must be {expected} bytes, got {len}")]
    WrongLength {
        /// The length found.
        len: usize,
        /// The length expected.
        expected: usize,
    },
    /// The version field is not a known version.
    #[error("unknown L402 identifier version {0}")]
    UnknownVersion(u16),
}

/// A decoded L402 identifier: the payment hash of the invoice that pays for the token, and the
/// token's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identifier {
    /// The payment hash of the invoice; the credential's preimage must hash to it.
    pub payment_hash: PaymentHash,
    /// The token id: opaque, unguessable.
    pub token_id: TokenId,
}

impl Identifier {
    /// The only version defined.
    pub const VERSION: u16 = 0;
    /// Encoded length of a version 0 identifier.
    pub const LEN: usize = 66;

    /// An identifier with the given fields.
    pub fn new(payment_hash: PaymentHash, token_id: TokenId) -> Identifier {
        Identifier {
            payment_hash,
            token_id,
        }
    }

    /// The 66-byte encoding.
    pub fn encode(&self) -> [u8; 66] {
        let mut out = [0u8; Self::LEN];
        out[..2].copy_from_slice(&Self::VERSION.to_be_bytes());
        out[2..34].copy_from_slice(&self.payment_hash.0);
        out[34..].copy_from_slice(&self.token_id.0);
        out
    }

    /// Decodes an identifier; the version is checked before the length.
    pub fn decode(bytes: &[u8]) -> Result<Identifier, IdentifierError> {
        let wrong_len = IdentifierError::WrongLength {
            len: bytes.len(),
            expected: Self::LEN,
        };
        let Some((version, rest)) = bytes.split_first_chunk::<2>() else {
            return Err(wrong_len);
        };
        let version = u16::from_be_bytes(*version);
        if version != Self::VERSION {
            return Err(IdentifierError::UnknownVersion(version));
        }
        let Ok::<&[u8; 64], _>(rest) = rest.try_into() else {
            return Err(wrong_len);
        };
        let (hash, id) = rest.split_at(32);
        let mut payment_hash = [0u8; 32];
        let mut token_id = [0u8; 32];
        payment_hash.copy_from_slice(hash);
        token_id.copy_from_slice(id);
        Ok(Identifier {
            payment_hash: PaymentHash(payment_hash),
            token_id: TokenId(token_id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR: &str = "0000163102a9c88fa4ec9ac9937b6f070bc3e27249a81ad7a05f398ac5d7d16f7beafed74b3ef24820f440601eff5bfb42bef4d615c4948cec8aca3cb15bd23f1013";

    #[test]
    fn golden_vector() {
        let id = Identifier {
            payment_hash: "163102a9c88fa4ec9ac9937b6f070bc3e27249a81ad7a05f398ac5d7d16f7bea"
                .parse()
                .unwrap(),
            token_id: "fed74b3ef24820f440601eff5bfb42bef4d615c4948cec8aca3cb15bd23f1013"
                .parse()
                .unwrap(),
        };
        assert_eq!(hex::encode(id.encode()), VECTOR);
        assert_eq!(Identifier::decode(&hex::decode(VECTOR).unwrap()), Ok(id));
    }

    #[test]
    fn aperture_unit_vector() {
        let mut hash = [0u8; 32];
        let mut tid = [0u8; 32];
        for i in 0..32 {
            hash[i] = i as u8 + 1;
            tid[i] = 32 - i as u8;
        }
        let id = Identifier::new(PaymentHash(hash), TokenId(tid));
        assert_eq!(
            hex::encode(id.encode()),
            "0000\
             0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20\
             201f1e1d1c1b1a191817161514131211100f0e0d0c0b0a090807060504030201"
        );
    }

    #[test]
    fn errors() {
        let good = hex::decode(VECTOR).unwrap();
        assert_eq!(
            Identifier::decode(&good[..65]),
            Err(IdentifierError::WrongLength {
                len: 65,
                expected: 66
            })
        );
        assert!(matches!(
            Identifier::decode(&[0]),
            Err(IdentifierError::WrongLength { len: 1, .. })
        ));
        assert!(matches!(
            Identifier::decode(b"AA=="),
            Err(IdentifierError::UnknownVersion(0x4141))
        ));
        let mut v1 = good.clone();
        v1[1] = 1;
        assert_eq!(
            Identifier::decode(&v1),
            Err(IdentifierError::UnknownVersion(1))
        );
        let mut long = good;
        long.push(0);
        assert!(matches!(
            Identifier::decode(&long),
            Err(IdentifierError::WrongLength { len: 67, .. })
        ));
    }
}
