//! 32-byte values of the protocol: payment hashes, preimages and token ids.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Error for a 32-byte value given as text that is not exactly 64 hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected 64 hex characters (32 bytes)")]
pub struct HexError;

fn parse_hex32(s: &str) -> Result<[u8; 32], HexError> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return Err(HexError);
    }
    hex::decode_to_slice(s, &mut out).map_err(|_| HexError)?;
    Ok(out)
}

macro_rules! bytes32 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Lowercase hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl FromStr for $name {
            type Err = HexError;
            /// Parses 64 hex characters, either case.
            fn from_str(s: &str) -> Result<Self, HexError> {
                parse_hex32(s).map($name)
            }
        }

        impl From<[u8; 32]> for $name {
            fn from(b: [u8; 32]) -> Self {
                $name(b)
            }
        }
    };
}

bytes32!(
    /// The SHA-256 hash of a payment preimage; it identifies a Lightning invoice.
    PaymentHash
);
bytes32!(
    /// The secret whose SHA-256 is the payment hash. Revealed to the payer when an invoice is paid,
    /// so holding it proves payment.
    Preimage
);
bytes32!(
    /// An opaque 32-byte id naming one L402 token (the last 32 bytes of its identifier): random, or
    /// time-ordered with 208 random bits ([`TokenId::time_ordered`]).
    TokenId
);

impl Preimage {
    /// The payment hash this preimage unlocks: `sha256(preimage)`.
    pub fn payment_hash(&self) -> PaymentHash {
        PaymentHash(Sha256::digest(self.0).into())
    }

    /// Whether this preimage hashes to `hash`, compared in constant time.
    pub fn matches(&self, hash: &PaymentHash) -> bool {
        self.payment_hash().0.ct_eq(&hash.0).into()
    }

    /// A fresh random preimage.
    pub fn random() -> Self {
        Preimage(rand::random())
    }
}

impl TokenId {
    /// A fresh random token id.
    pub fn random() -> Self {
        TokenId(rand::random())
    }

    /// A fresh token id that sorts after those minted earlier: the Unix time in milliseconds
    /// (6 bytes, big-endian), then 26 random bytes (208 bits: ids stay unguessable and
    /// distinct). Tokens are mostly first used in the order they were minted, so the store's
    /// index of used tokens grows at one end instead of at random places (which made charging
    /// slower as the table grew). Nothing relies on the layout: ids stay opaque.
    pub fn time_ordered() -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut id: [u8; 32] = rand::random();
        id[..6].copy_from_slice(&millis.to_be_bytes()[10..16]);
        TokenId(id)
    }
}

impl fmt::Display for PaymentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Debug for PaymentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PaymentHash({})", self.to_hex())
    }
}
impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({})", self.to_hex())
    }
}
impl fmt::Display for Preimage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
/// Debug output does not reveal the secret: it shows the payment hash it unlocks.
impl fmt::Debug for Preimage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Preimage(for {})", self.payment_hash())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_ordered_ids_sort_by_mint_time_and_differ() {
        let first = TokenId::time_ordered();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = TokenId::time_ordered();
        assert!(first.0 < second.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let mut prefix = [0u8; 16];
        prefix[10..].copy_from_slice(&second.0[..6]);
        let stamped = u128::from_be_bytes(prefix);
        assert!(stamped <= now && now - stamped < 60_000);
        // Ids minted in the same millisecond still differ (208 random bits).
        let ids: std::collections::HashSet<[u8; 32]> =
            (0..1000).map(|_| TokenId::time_ordered().0).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn preimage_hashes_and_matches() {
        let p: Preimage = "49349dfea4abed3cd14f6d356afa83de9787b609f088c8df09bacc7b4bd21b39"
            .parse()
            .unwrap();
        let h: PaymentHash = "60aae3f3299441b06b61b5aaa4db89c4b5c8627de0cc2e5535882d8f42175265"
            .parse()
            .unwrap();
        assert_eq!(p.payment_hash(), h);
        assert!(p.matches(&h));
        // A hash offered in place of the preimage never matches.
        assert!(!Preimage(h.0).matches(&h));
    }

    #[test]
    fn hex_parsing_is_strict_on_length_and_liberal_on_case() {
        assert!("AB".repeat(32).parse::<TokenId>().is_ok());
        assert!("ab".repeat(31).parse::<TokenId>().is_err());
        assert!("zz".repeat(32).parse::<TokenId>().is_err());
        assert!("ab".repeat(33).parse::<TokenId>().is_err());
    }
}
