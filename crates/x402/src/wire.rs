//! Shared wire handling: the base64-JSON header encoding, the decode error that names the
//! offending field, and typed field readers over a JSON object.

use alloy_primitives::{Address, B256, U256};
use base64::Engine as _;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

use crate::amount::{self, AmountError, TokenAmount};
use crate::network::{Network, NetworkError};

/// The longest x402 header value accepted, in bytes (before base64 decoding). The reference
/// client's headers are around 1.5 KiB.
pub const MAX_HEADER_LEN: usize = 16 * 1024;

/// Standard base64 with `=` padding on output, padding optional on input.
const B64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why an x402 header or JSON body could not be decoded. Field paths are JSON paths such as
/// `accepts[0].amount` or `payload.authorization.nonce`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The header value is longer than [`MAX_HEADER_LEN`].
    #[error("header is {len} bytes, more than the {max} accepted")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The header value is not standard base64.
    #[error("header is not base64: {0}")]
    Base64(String),
    /// Not JSON (or not UTF-8).
    #[error("not valid JSON: {0}")]
    Json(String),
    /// A JSON value of the wrong type.
    #[error("`{field}` must be {expected}")]
    WrongType {
        /// The field's path.
        field: String,
        /// What it must be.
        expected: &'static str,
    },
    /// A required field is absent (or null).
    #[error("`{field}` is missing")]
    Missing {
        /// The field's path.
        field: String,
    },
    /// `x402Version` is neither 1 nor 2.
    #[error("x402Version {0} is not supported (1 and 2 are)")]
    UnsupportedVersion(u64),
    /// `x402Version` differs from the version the header carrying it belongs to.
    #[error("x402Version {found} in a header that carries version {expected}")]
    VersionMismatch {
        /// The header's version.
        expected: u64,
        /// The payload's.
        found: u64,
    },
    /// A scheme other than `exact`.
    #[error("`{field}`: scheme {scheme:?} is not supported (only \"exact\")")]
    UnsupportedScheme {
        /// The field's path.
        field: String,
        /// The scheme named.
        scheme: String,
    },
    /// `extra.assetTransferMethod` other than `eip3009` (Permit2 and ERC-7710 are not
    /// supported).
    #[error("`{field}`: asset transfer method {method:?} is not supported (only \"eip3009\")")]
    UnsupportedTransferMethod {
        /// The field's path.
        field: String,
        /// The method named.
        method: String,
    },
    /// An amount or other decimal integer field is malformed.
    #[error("`{field}`: {source}")]
    Amount {
        /// The field's path.
        field: String,
        /// What is wrong.
        source: AmountError,
    },
    /// A network field is malformed or unsupported.
    #[error("`{field}`: {source}")]
    Network {
        /// The field's path.
        field: String,
        /// What is wrong.
        source: NetworkError,
    },
    /// An address field is malformed.
    #[error("`{field}`: {reason}")]
    Address {
        /// The field's path.
        field: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A 32-byte hex field (nonce, transaction hash) is malformed.
    #[error("`{field}` must be 0x followed by 64 hex digits")]
    Bytes32 {
        /// The field's path.
        field: String,
    },
    /// A decimal time (`validAfter`, `validBefore`) beyond what this crate accepts.
    #[error("`{field}` is larger than 2^64-1")]
    TimeOutOfRange {
        /// The field's path.
        field: String,
    },
    /// The signature is malformed.
    #[error("`{field}`: {reason}")]
    Signature {
        /// The field's path.
        field: String,
        /// What is wrong.
        reason: &'static str,
    },
}

impl DecodeError {
    /// The x402 error reason for a payment that cannot be decoded (the spec's codes), for the
    /// `error` of the 402 a server answers with.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::UnsupportedVersion(_) | DecodeError::VersionMismatch { .. } => {
                "invalid_x402_version"
            }
            DecodeError::UnsupportedScheme { .. }
            | DecodeError::UnsupportedTransferMethod { .. } => "unsupported_scheme",
            DecodeError::Network { .. } => "invalid_network",
            _ => "invalid_payload",
        }
    }
}

/// Base64 (standard alphabet, padded) of `json`.
pub(crate) fn encode_header(json: &Value) -> String {
    B64.encode(json.to_string())
}

/// Decodes a header value: size limit, base64, then JSON.
pub(crate) fn decode_header(value: &[u8]) -> Result<Value, DecodeError> {
    if value.len() > MAX_HEADER_LEN {
        return Err(DecodeError::TooLong {
            len: value.len(),
            max: MAX_HEADER_LEN,
        });
    }
    let trimmed = value.trim_ascii();
    let bytes = B64
        .decode(trimmed)
        .map_err(|e| DecodeError::Base64(e.to_string()))?;
    parse_json(&bytes)
}

/// Parses JSON bytes.
pub(crate) fn parse_json(bytes: &[u8]) -> Result<Value, DecodeError> {
    serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))
}

/// Joins a path and a member name.
pub(crate) fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// A JSON object and its path, with typed readers whose errors name the field.
#[derive(Clone, Copy)]
pub(crate) struct Obj<'a> {
    pub(crate) path: &'a str,
    pub(crate) map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    /// `value` as an object at `path`.
    pub(crate) fn new(path: &'a str, value: &'a Value) -> Result<Obj<'a>, DecodeError> {
        match value {
            Value::Object(map) => Ok(Obj { path, map }),
            _ => Err(DecodeError::WrongType {
                field: if path.is_empty() {
                    "(top level)".into()
                } else {
                    path.to_owned()
                },
                expected: "an object",
            }),
        }
    }

    pub(crate) fn field(&self, name: &str) -> String {
        join(self.path, name)
    }

    /// The member, `None` when absent or null.
    pub(crate) fn opt(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    pub(crate) fn get(&self, name: &str) -> Result<&'a Value, DecodeError> {
        self.opt(name).ok_or_else(|| DecodeError::Missing {
            field: self.field(name),
        })
    }

    pub(crate) fn str(&self, name: &str) -> Result<&'a str, DecodeError> {
        self.get(name)?
            .as_str()
            .ok_or_else(|| DecodeError::WrongType {
                field: self.field(name),
                expected: "a string",
            })
    }

    pub(crate) fn opt_str(&self, name: &str) -> Result<Option<&'a str>, DecodeError> {
        match self.opt(name) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| DecodeError::WrongType {
                field: self.field(name),
                expected: "a string",
            }),
        }
    }

    pub(crate) fn u64(&self, name: &str) -> Result<u64, DecodeError> {
        self.get(name)?
            .as_u64()
            .ok_or_else(|| DecodeError::WrongType {
                field: self.field(name),
                expected: "a non-negative integer",
            })
    }

    pub(crate) fn bool(&self, name: &str) -> Result<bool, DecodeError> {
        self.get(name)?
            .as_bool()
            .ok_or_else(|| DecodeError::WrongType {
                field: self.field(name),
                expected: "a boolean",
            })
    }

    pub(crate) fn amount(&self, name: &str) -> Result<TokenAmount, DecodeError> {
        TokenAmount::parse_base_units(self.str(name)?).map_err(|source| DecodeError::Amount {
            field: self.field(name),
            source,
        })
    }

    pub(crate) fn u256(&self, name: &str) -> Result<U256, DecodeError> {
        amount::parse_u256(self.str(name)?).map_err(|source| DecodeError::Amount {
            field: self.field(name),
            source,
        })
    }

    /// A decimal `uint256` time that must fit in a `u64`.
    pub(crate) fn time(&self, name: &str) -> Result<u64, DecodeError> {
        let v = self.u256(name)?;
        u64::try_from(v).map_err(|_| DecodeError::TimeOutOfRange {
            field: self.field(name),
        })
    }

    pub(crate) fn caip2(&self, name: &str) -> Result<Network, DecodeError> {
        Network::parse_caip2(self.str(name)?).map_err(|source| DecodeError::Network {
            field: self.field(name),
            source,
        })
    }

    pub(crate) fn v1_network(&self, name: &str) -> Result<Network, DecodeError> {
        Network::from_v1_name(self.str(name)?).map_err(|source| DecodeError::Network {
            field: self.field(name),
            source,
        })
    }

    pub(crate) fn address(&self, name: &str) -> Result<Address, DecodeError> {
        parse_address(self.str(name)?).map_err(|reason| DecodeError::Address {
            field: self.field(name),
            reason,
        })
    }

    pub(crate) fn bytes32(&self, name: &str) -> Result<B256, DecodeError> {
        parse_b256(self.str(name)?).ok_or_else(|| DecodeError::Bytes32 {
            field: self.field(name),
        })
    }

    pub(crate) fn obj(&self, name: &str) -> Result<(String, &'a Value), DecodeError> {
        let v = self.get(name)?;
        if !v.is_object() {
            return Err(DecodeError::WrongType {
                field: self.field(name),
                expected: "an object",
            });
        }
        Ok((self.field(name), v))
    }
}

/// Parses `0x` + 64 hex digits (either case).
pub(crate) fn parse_b256(s: &str) -> Option<B256> {
    let hex = s.strip_prefix("0x")?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    hex.parse().ok()
}

/// Parses an EVM address: `0x` and 40 hex digits. All-lowercase or all-uppercase hex is taken
/// as it is; mixed case must carry a valid EIP-55 checksum (a mistyped address is refused).
pub fn parse_address(s: &str) -> Result<Address, &'static str> {
    let hex = s.strip_prefix("0x").ok_or("address must start with 0x")?;
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("address must be 0x followed by 40 hex digits");
    }
    let has_lower = hex.bytes().any(|b| b.is_ascii_lowercase());
    let has_upper = hex.bytes().any(|b| b.is_ascii_uppercase());
    if has_lower && has_upper {
        Address::parse_checksummed(s, None).map_err(|_| "address has an invalid EIP-55 checksum")
    } else {
        s.parse().map_err(|_| "address is not valid hex")
    }
}

/// An address as x402 writes it: EIP-55 checksummed.
pub(crate) fn address_json(a: &Address) -> Value {
    Value::String(a.to_checksum(None))
}

/// A 32-byte value as `0x` + lowercase hex.
pub(crate) fn b256_json(b: &B256) -> Value {
    Value::String(format!("{b:#x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let payer = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
        let a = parse_address(payer).unwrap();
        assert_eq!(a.to_checksum(None), payer);
        assert_eq!(parse_address(&payer.to_lowercase()), Ok(a));
        assert_eq!(
            parse_address(&format!("0x{}", payer[2..].to_uppercase())),
            Ok(a)
        );
        // One letter's case flipped: the checksum no longer holds.
        let typo = payer.replacen('C', "c", 1);
        assert_eq!(
            parse_address(&typo),
            Err("address has an invalid EIP-55 checksum")
        );
        assert!(parse_address(&payer[2..]).is_err());
        assert!(parse_address("0x1234").is_err());
        assert!(parse_address("0x70997970C51812dc3A010C7d01b50e0d17dc79Cg").is_err());
    }

    #[test]
    fn header_base64_padding_is_optional() {
        let v = serde_json::json!({"a": 1});
        let h = encode_header(&v);
        assert!(h.ends_with('='), "{h}");
        assert_eq!(decode_header(h.as_bytes()), Ok(v.clone()));
        assert_eq!(decode_header(h.trim_end_matches('=').as_bytes()), Ok(v));
        assert!(matches!(
            decode_header(b"eyJhIjox_Q"),
            Err(DecodeError::Base64(_))
        ));
        assert!(matches!(
            decode_header(&vec![b'A'; MAX_HEADER_LEN + 1]),
            Err(DecodeError::TooLong { .. })
        ));
    }
}
