//! What a paying client sends: the `PAYMENT-SIGNATURE` header (v2) or `X-PAYMENT` (v1), both
//! standard base64 of a JSON payment payload carrying a signed EIP-3009 authorisation.

use alloy_primitives::{Address, B256, U256};
use serde_json::{Value, json};

use crate::network::{Network, NetworkError};
use crate::requirements::{
    PaymentRequirements, ResourceInfo, X402Version, check_scheme, expect_version,
    parse_opt_resource, resource_json,
};
use crate::wire::{self, DecodeError, Obj, address_json, b256_json};

/// The v2 payment header.
pub const PAYMENT_SIGNATURE: &str = "payment-signature";
/// The v1 payment header.
pub const X_PAYMENT: &str = "x-payment";

/// Half the secp256k1 group order: signatures with a larger `s` are malleated copies, which
/// FiatToken's `ECRecover` refuses.
const SECP256K1_HALF_ORDER: U256 = U256::from_limbs([
    0xdfe9_2f46_681b_20a0,
    0x5d57_6e73_57a4_501d,
    0xffff_ffff_ffff_ffff,
    0x7fff_ffff_ffff_ffff,
]);

/// An EIP-3009 `TransferWithAuthorization` as signed by the payer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Authorization {
    /// The payer.
    pub from: Address,
    /// The recipient (must be the requirements' `payTo`).
    pub to: Address,
    /// The amount in base units (a `uint256`).
    pub value: U256,
    /// Valid strictly after this Unix time.
    pub valid_after: u64,
    /// Valid strictly before this Unix time.
    pub valid_before: u64,
    /// The payer-chosen 32-byte nonce; the token refuses a second use of it.
    pub nonce: B256,
}

impl Authorization {
    fn parse(path: &str, value: &Value) -> Result<Authorization, DecodeError> {
        let o = Obj::new(path, value)?;
        Ok(Authorization {
            from: o.address("from")?,
            to: o.address("to")?,
            value: o.u256("value")?,
            valid_after: o.time("validAfter")?,
            valid_before: o.time("validBefore")?,
            nonce: o.bytes32("nonce")?,
        })
    }

    /// The JSON form (integers as decimal strings).
    pub fn to_json(&self) -> Value {
        json!({
            "from": address_json(&self.from),
            "to": address_json(&self.to),
            "value": self.value.to_string(),
            "validAfter": self.valid_after.to_string(),
            "validBefore": self.valid_before.to_string(),
            "nonce": b256_json(&self.nonce),
        })
    }
}

/// A 65-byte ECDSA signature `r ‖ s ‖ v` from an externally owned account, in the form the
/// token contract accepts: `v` is 27 or 28 (0 and 1 are read as 27 and 28) and `s` is in the
/// lower half of the curve order. Smart-wallet signatures (ERC-1271, ERC-6492) are longer and
/// are refused.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EvmSignature([u8; 65]);

impl std::fmt::Debug for EvmSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EvmSignature({})", self.to_hex())
    }
}

impl EvmSignature {
    /// Parses `0x` + 130 hex digits. The error says what is wrong.
    pub fn parse(s: &str) -> Result<EvmSignature, &'static str> {
        let hex = s.strip_prefix("0x").ok_or("signature must start with 0x")?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) || hex.len() % 2 != 0 {
            return Err("signature must be 0x followed by hex bytes");
        }
        if hex.len() != 130 {
            return Err(
                "signature is not 65 bytes: smart-wallet (ERC-1271/ERC-6492) signatures are not supported",
            );
        }
        let mut bytes = [0u8; 65];
        alloy_primitives::hex::decode_to_slice(hex, &mut bytes)
            .map_err(|_| "signature must be 0x followed by hex bytes")?;
        EvmSignature::from_bytes(bytes)
    }

    /// Checks raw `r ‖ s ‖ v` bytes; `v` 0/1 is normalised to 27/28.
    pub fn from_bytes(mut bytes: [u8; 65]) -> Result<EvmSignature, &'static str> {
        bytes[64] = match bytes[64] {
            0 | 27 => 27,
            1 | 28 => 28,
            _ => return Err("signature v must be 27 or 28"),
        };
        let r = U256::from_be_slice(&bytes[..32]);
        let s = U256::from_be_slice(&bytes[32..64]);
        if r.is_zero() || s.is_zero() {
            return Err("signature r and s must be non-zero");
        }
        if s > SECP256K1_HALF_ORDER {
            return Err("signature s is in the upper half of the curve order (malleable)");
        }
        Ok(EvmSignature(bytes))
    }

    /// The 65 bytes.
    pub fn as_bytes(&self) -> &[u8; 65] {
        &self.0
    }

    /// `0x` + lowercase hex.
    pub fn to_hex(&self) -> String {
        alloy_primitives::hex::encode_prefixed(self.0)
    }
}

/// What the client says it paid for: in v2 the whole `accepted` requirements (echoed
/// verbatim from the 402), in v1 only the scheme and network.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Accepted {
    /// v1: `scheme` (always `exact` here) and `network`.
    V1 {
        /// The network named.
        network: Network,
    },
    /// v2: `accepted`.
    V2(PaymentRequirements),
}

impl Accepted {
    /// The network the client pays on.
    pub fn network(&self) -> Network {
        match self {
            Accepted::V1 { network } => *network,
            Accepted::V2(r) => r.network,
        }
    }
}

/// A decoded payment: the client's claim of what it accepted, and the signed authorisation.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentPayload {
    /// The protocol version.
    pub version: X402Version,
    /// What the client accepted.
    pub accepted: Accepted,
    /// The resource, when the client sent it (v2, optional).
    pub resource: Option<ResourceInfo>,
    /// The EIP-3009 authorisation.
    pub authorization: Authorization,
    /// Its signature.
    pub signature: EvmSignature,
    /// The payload JSON exactly as received, to forward to a facilitator unchanged.
    raw: Value,
}

impl PaymentPayload {
    /// Decodes a `PAYMENT-SIGNATURE` header value (v2).
    pub fn from_payment_signature(value: &[u8]) -> Result<PaymentPayload, DecodeError> {
        PaymentPayload::parse(wire::decode_header(value)?, X402Version::V2)
    }

    /// Decodes an `X-PAYMENT` header value (v1).
    pub fn from_x_payment(value: &[u8]) -> Result<PaymentPayload, DecodeError> {
        PaymentPayload::parse(wire::decode_header(value)?, X402Version::V1)
    }

    /// Parses a payload JSON value that arrived in a header of version `expected`.
    pub fn parse(json: Value, expected: X402Version) -> Result<PaymentPayload, DecodeError> {
        let o = Obj::new("", &json)?;
        expect_version(&o, expected)?;
        let version = expected;
        let accepted = match version {
            X402Version::V1 => {
                check_scheme(&o)?;
                Accepted::V1 {
                    network: o.v1_network("network")?,
                }
            }
            X402Version::V2 => {
                let (path, v) = o.obj("accepted")?;
                Accepted::V2(PaymentRequirements::parse_v2(&path, v)?)
            }
        };
        let resource = match version {
            X402Version::V1 => None,
            X402Version::V2 => parse_opt_resource(&o)?,
        };
        let (path, payload) = o.obj("payload")?;
        let p = Obj::new(&path, payload)?;
        let (auth_path, auth) = p.obj("authorization")?;
        let authorization = Authorization::parse(&auth_path, auth)?;
        let signature =
            EvmSignature::parse(p.str("signature")?).map_err(|reason| DecodeError::Signature {
                field: p.field("signature"),
                reason,
            })?;
        Ok(PaymentPayload {
            version,
            accepted,
            resource,
            authorization,
            signature,
            raw: json,
        })
    }

    /// The payload JSON as received (for the facilitator's `paymentPayload`).
    pub fn raw_json(&self) -> &Value {
        &self.raw
    }

    /// Builds a payload from its parts (what a paying client sends); `raw` is its JSON. A v1
    /// payload carries no resource (`resource` is dropped), and its network must have a v1 name.
    pub fn new(
        accepted: Accepted,
        resource: Option<ResourceInfo>,
        authorization: Authorization,
        signature: EvmSignature,
    ) -> Result<PaymentPayload, NetworkError> {
        let inner = json!({
            "signature": signature.to_hex(),
            "authorization": authorization.to_json(),
        });
        let (version, raw, resource) = match &accepted {
            Accepted::V1 { network } => (
                X402Version::V1,
                json!({
                    "x402Version": 1,
                    "scheme": crate::requirements::SCHEME_EXACT,
                    "network": network.v1_name()?,
                    "payload": inner,
                }),
                None,
            ),
            Accepted::V2(req) => {
                let mut raw = json!({
                    "x402Version": 2,
                    "accepted": req.to_json_v2(),
                    "payload": inner,
                });
                if let Some(r) = &resource {
                    raw["resource"] = resource_json(r);
                }
                (X402Version::V2, raw, resource)
            }
        };
        Ok(PaymentPayload {
            version,
            accepted,
            resource,
            authorization,
            signature,
            raw,
        })
    }

    /// Echoes in a v2 payment the server's own JSON of the accepted entry (`entry`, as the
    /// server wrote it in `PAYMENT-REQUIRED`) instead of this crate's rendering of it: servers
    /// such as `@x402/express` compare the echo with their offer verbatim (address case
    /// included). The echo is not signed; a v1 payment has none and is returned unchanged.
    pub fn with_accepted_json(mut self, entry: Value) -> PaymentPayload {
        if self.version == X402Version::V2 {
            self.raw["accepted"] = entry;
        }
        self
    }

    /// The header value: standard base64 of the JSON, for `PAYMENT-SIGNATURE` (v2) or
    /// `X-PAYMENT` (v1) according to [`PaymentPayload::version`].
    pub fn to_header(&self) -> String {
        wire::encode_header(&self.raw)
    }

    /// Picks, among the requirements a server offered, the one this payment is for: in v2 the
    /// entry equal to `accepted`; in v1 the first `exact` entry on the named network whose
    /// `payTo` and amount match the authorisation.
    pub fn select<'a>(&self, offers: &'a [PaymentRequirements]) -> Option<&'a PaymentRequirements> {
        match &self.accepted {
            Accepted::V2(req) => offers.iter().find(|o| *o == req),
            Accepted::V1 { network } => offers.iter().find(|o| {
                o.network == *network
                    && o.pay_to == self.authorization.to
                    && o.amount.to_u256() == self.authorization.value
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_form() {
        let good = format!("0x{}{}1b", "11".repeat(32), "22".repeat(32));
        let sig = EvmSignature::parse(&good).unwrap();
        assert_eq!(sig.to_hex(), good);
        let v0 = format!("0x{}{}00", "11".repeat(32), "22".repeat(32));
        assert_eq!(EvmSignature::parse(&v0), Ok(sig), "v=0 reads as 27");
        let v2 = format!("0x{}{}02", "11".repeat(32), "22".repeat(32));
        assert_eq!(
            EvmSignature::parse(&v2),
            Err("signature v must be 27 or 28")
        );
        let high_s = format!("0x{}{}1b", "11".repeat(32), "ff".repeat(32));
        assert!(
            EvmSignature::parse(&high_s)
                .unwrap_err()
                .contains("malleable")
        );
        let zero_r = format!("0x{}{}1b", "00".repeat(32), "22".repeat(32));
        assert!(EvmSignature::parse(&zero_r).is_err());
        let long = format!("0x{}", "11".repeat(100));
        assert!(EvmSignature::parse(&long).unwrap_err().contains("ERC-1271"));
        assert!(EvmSignature::parse(&good[2..]).is_err());
        assert!(EvmSignature::parse(&format!("{}g", &good[..good.len() - 1])).is_err());
    }

    #[test]
    fn half_order_constant() {
        // n = FFFFFFFF FFFFFFFF FFFFFFFF FFFFFFFE BAAEDCE6 AF48A03B BFD25E8C D0364141
        let n = U256::from_str_radix(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141",
            16,
        )
        .unwrap();
        assert_eq!(SECP256K1_HALF_ORDER, n >> 1);
    }

    #[test]
    fn the_echo_can_be_the_servers_own_json() {
        let req = crate::requirements::tests::example();
        let key = crate::PayerKey::from_bytes(&[7; 32]).unwrap();
        // The server wrote its addresses in lowercase: that exact JSON is echoed.
        let mut theirs = req.to_json_v2();
        theirs["payTo"] = json!("0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc");
        let paid = key
            .pay(&req, None, X402Version::V2, 1_000, [1; 32])
            .unwrap()
            .with_accepted_json(theirs.clone());
        assert_eq!(paid.raw_json()["accepted"], theirs);
        let back = PaymentPayload::from_payment_signature(paid.to_header().as_bytes()).unwrap();
        assert_eq!(back.select(std::slice::from_ref(&req)), Some(&req));
        assert_eq!(back.signature, paid.signature);
        // A v1 payment has no echo: unchanged.
        let v1 = key
            .pay(&req, None, X402Version::V1, 1_000, [1; 32])
            .unwrap();
        let same = v1.clone().with_accepted_json(theirs);
        assert_eq!(same.raw_json(), v1.raw_json());
    }
}
