//! The facilitator's HTTP API as data (no I/O here): the body of `POST /verify` and
//! `POST /settle`, their answers, and the `PAYMENT-RESPONSE` header (v1: `X-PAYMENT-RESPONSE`)
//! that carries the settlement to the client.

use alloy_primitives::{Address, B256};
use serde_json::{Map, Value, json};

use crate::network::{Network, NetworkError};
use crate::payload::PaymentPayload;
use crate::requirements::{PaymentRequirements, ResourceInfo, X402Version};
use crate::wire::{self, DecodeError, Obj, address_json, b256_json, parse_b256};

/// The v2 settlement header.
pub const PAYMENT_RESPONSE: &str = "payment-response";
/// The v1 settlement header.
pub const X_PAYMENT_RESPONSE: &str = "x-payment-response";

/// The JSON body of `POST /verify` and `POST /settle`: the payload exactly as the client sent
/// it, and the server's **own** requirements (never the client's echo). Fails only when a v1
/// payment is for a network without a v1 name (which decoding already prevents).
pub fn request_body(
    payment: &PaymentPayload,
    offered: &PaymentRequirements,
    resource: &ResourceInfo,
) -> Result<Value, NetworkError> {
    Ok(json!({
        "x402Version": payment.version.number(),
        "paymentPayload": payment.raw_json(),
        "paymentRequirements": offered.to_json(payment.version, resource)?,
    }))
}

/// The answer of `POST /verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyResponse {
    /// Whether the facilitator accepts the payment.
    pub is_valid: bool,
    /// Its reason when not (an opaque code such as `invalid_exact_evm_signature`).
    pub invalid_reason: Option<String>,
    /// The payer it identified.
    pub payer: Option<Address>,
}

impl VerifyResponse {
    /// Parses the JSON body.
    pub fn from_json(body: &[u8]) -> Result<VerifyResponse, DecodeError> {
        let json = wire::parse_json(body)?;
        let o = Obj::new("", &json)?;
        Ok(VerifyResponse {
            is_valid: o.bool("isValid")?,
            invalid_reason: o.opt_str("invalidReason")?.map(str::to_owned),
            payer: opt_address(&o, "payer")?,
        })
    }
}

/// A settlement result: the answer of `POST /settle`, and what `PAYMENT-RESPONSE` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleResponse {
    /// Whether the transfer happened.
    pub success: bool,
    /// Why not (opaque code).
    pub error_reason: Option<String>,
    /// The payer.
    pub payer: Option<Address>,
    /// The transaction hash; `None` when nothing was sent (`"transaction": ""`).
    pub transaction: Option<B256>,
    /// The network.
    pub network: Network,
}

impl SettleResponse {
    /// Parses a facilitator's `/settle` JSON body (network in either CAIP-2 or v1-name form).
    pub fn from_json(body: &[u8]) -> Result<SettleResponse, DecodeError> {
        let json = wire::parse_json(body)?;
        SettleResponse::parse(&json)
    }

    fn parse(json: &Value) -> Result<SettleResponse, DecodeError> {
        let o = Obj::new("", json)?;
        let network_text = o.str("network")?;
        let network = if network_text.contains(':') {
            o.caip2("network")?
        } else {
            o.v1_network("network")?
        };
        let transaction = match o.opt_str("transaction")? {
            None | Some("") => None,
            Some(t) => Some(parse_b256(t).ok_or_else(|| DecodeError::Bytes32 {
                field: "transaction".into(),
            })?),
        };
        Ok(SettleResponse {
            success: o.bool("success")?,
            error_reason: o.opt_str("errorReason")?.map(str::to_owned),
            payer: opt_address(&o, "payer")?,
            transaction,
            network,
        })
    }

    /// The JSON object in the given version's form (v1 names the network by name; a chain
    /// without a v1 name is written in CAIP-2).
    pub fn to_json(&self, version: X402Version) -> Value {
        let mut m = Map::new();
        m.insert("success".into(), json!(self.success));
        if let Some(r) = &self.error_reason {
            m.insert("errorReason".into(), json!(r));
        }
        if let Some(p) = &self.payer {
            m.insert("payer".into(), address_json(p));
        }
        m.insert(
            "transaction".into(),
            self.transaction
                .as_ref()
                .map_or_else(|| json!(""), b256_json),
        );
        let network = match version {
            X402Version::V1 => self
                .network
                .v1_name()
                .map_or_else(|_| self.network.caip2(), str::to_owned),
            X402Version::V2 => self.network.caip2(),
        };
        m.insert("network".into(), json!(network));
        Value::Object(m)
    }

    /// The `PAYMENT-RESPONSE` (v2) or `X-PAYMENT-RESPONSE` (v1) header value: standard base64
    /// of the JSON.
    pub fn to_header(&self, version: X402Version) -> String {
        wire::encode_header(&self.to_json(version))
    }

    /// Decodes a `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE` header value.
    pub fn from_header(value: &[u8]) -> Result<SettleResponse, DecodeError> {
        SettleResponse::parse(&wire::decode_header(value)?)
    }
}

fn opt_address(o: &Obj<'_>, name: &str) -> Result<Option<Address>, DecodeError> {
    match o.opt_str(name)? {
        None | Some("") => Ok(None),
        Some(_) => o.address(name).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settle_response_round_trip() {
        let s = SettleResponse {
            success: true,
            error_reason: None,
            payer: Some(
                "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
                    .parse()
                    .unwrap(),
            ),
            transaction: Some(B256::repeat_byte(0xab)),
            network: Network::BASE_SEPOLIA,
        };
        for v in [X402Version::V1, X402Version::V2] {
            assert_eq!(
                SettleResponse::from_header(s.to_header(v).as_bytes()),
                Ok(s.clone())
            );
        }
        assert_eq!(s.to_json(X402Version::V1)["network"], "base-sepolia");
        assert_eq!(s.to_json(X402Version::V2)["network"], "eip155:84532");
        let failed = br#"{"success":false,"errorReason":"invalid_exact_evm_nonce_already_used","transaction":"","network":"eip155:84532"}"#;
        let f = SettleResponse::from_json(failed).unwrap();
        assert!(!f.success);
        assert_eq!(f.transaction, None);
        assert_eq!(
            f.error_reason.as_deref(),
            Some("invalid_exact_evm_nonce_already_used")
        );
    }

    #[test]
    fn verify_response() {
        let ok = VerifyResponse::from_json(
            br#"{"isValid":true,"payer":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8"}"#,
        )
        .unwrap();
        assert!(ok.is_valid);
        let bad = VerifyResponse::from_json(
            br#"{"isValid":false,"invalidReason":"invalid_exact_evm_signature","payer":""}"#,
        )
        .unwrap();
        assert_eq!(
            bad,
            VerifyResponse {
                is_valid: false,
                invalid_reason: Some("invalid_exact_evm_signature".into()),
                payer: None
            }
        );
        assert!(matches!(
            VerifyResponse::from_json(br#"{"isValid":"yes"}"#),
            Err(DecodeError::WrongType { .. })
        ));
    }
}
