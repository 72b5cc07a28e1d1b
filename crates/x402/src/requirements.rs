//! What a resource server asks for: [`PaymentRequirements`] (one `accepts` entry), and the 402
//! challenge carrying them, [`PaymentRequired`]: the v2 `PAYMENT-REQUIRED` header (base64 JSON)
//! and the v1 JSON body.

use alloy_primitives::Address;
use serde_json::{Map, Value, json};

use crate::amount::TokenAmount;
use crate::network::{Network, NetworkError};
use crate::wire::{self, DecodeError, Obj, address_json};

/// The v2 402 header.
pub const PAYMENT_REQUIRED: &str = "payment-required";

/// The only scheme name this crate supports.
pub const SCHEME_EXACT: &str = "exact";

/// The only asset transfer method supported (`extra.assetTransferMethod`, default when absent).
pub const TRANSFER_METHOD_EIP3009: &str = "eip3009";

/// The protocol version of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum X402Version {
    /// v1: `X-PAYMENT`, the challenge in the JSON body, networks by name.
    V1,
    /// v2: `PAYMENT-REQUIRED` / `PAYMENT-SIGNATURE` / `PAYMENT-RESPONSE`, CAIP-2 networks.
    V2,
}

impl X402Version {
    /// The number written as `x402Version`.
    pub fn number(self) -> u64 {
        match self {
            X402Version::V1 => 1,
            X402Version::V2 => 2,
        }
    }

    fn from_number(n: u64) -> Result<X402Version, DecodeError> {
        match n {
            1 => Ok(X402Version::V1),
            2 => Ok(X402Version::V2),
            n => Err(DecodeError::UnsupportedVersion(n)),
        }
    }
}

/// Reads `x402Version` and checks it is `expected` (the version of the header or body it came
/// in).
pub(crate) fn expect_version(o: &Obj<'_>, expected: X402Version) -> Result<(), DecodeError> {
    let found = o.u64("x402Version")?;
    if X402Version::from_number(found)? != expected {
        return Err(DecodeError::VersionMismatch {
            expected: expected.number(),
            found,
        });
    }
    Ok(())
}

/// The token's EIP-712 domain name and version (`extra.name`, `extra.version`), e.g. `USDC` /
/// `2` for Circle's FiatTokenV2_2 on the offline test chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenDomain {
    /// The token's EIP-712 `name`.
    pub name: String,
    /// The token's EIP-712 `version`.
    pub version: String,
}

/// The resource a 402 is about (v2 `resource`; in v1 spread over each `accepts` entry).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ResourceInfo {
    /// The URL the client asked for.
    pub url: String,
    /// Human text.
    pub description: String,
    /// The MIME type of the paid response.
    pub mime_type: String,
}

/// One way to pay: the `exact` scheme on an EVM chain, via an EIP-3009
/// `transferWithAuthorization` of `amount` base units of `asset` to `pay_to`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PaymentRequirements {
    /// The chain.
    pub network: Network,
    /// The exact amount, in the asset's base units.
    pub amount: TokenAmount,
    /// The token contract (the EIP-712 domain's `verifyingContract`).
    pub asset: Address,
    /// Who gets paid.
    pub pay_to: Address,
    /// How long an authorisation may stay valid; the client sets `validBefore` to about
    /// now + this.
    pub max_timeout_seconds: u64,
    /// The token's EIP-712 domain name and version.
    pub extra: TokenDomain,
}

impl PaymentRequirements {
    /// The v2 JSON `accepts` entry.
    pub fn to_json_v2(&self) -> Value {
        json!({
            "scheme": SCHEME_EXACT,
            "network": self.network.caip2(),
            "amount": self.amount.to_string(),
            "asset": address_json(&self.asset),
            "payTo": address_json(&self.pay_to),
            "maxTimeoutSeconds": self.max_timeout_seconds,
            "extra": {"name": self.extra.name, "version": self.extra.version},
        })
    }

    /// The v1 JSON `accepts` entry. Fails when the network has no v1 name.
    pub fn to_json_v1(&self, resource: &ResourceInfo) -> Result<Value, NetworkError> {
        Ok(json!({
            "scheme": SCHEME_EXACT,
            "network": self.network.v1_name()?,
            "maxAmountRequired": self.amount.to_string(),
            "asset": address_json(&self.asset),
            "payTo": address_json(&self.pay_to),
            "resource": resource.url,
            "description": resource.description,
            "mimeType": resource.mime_type,
            "outputSchema": null,
            "maxTimeoutSeconds": self.max_timeout_seconds,
            "extra": {"name": self.extra.name, "version": self.extra.version},
        }))
    }

    /// The entry as JSON in the given version's form (what a facilitator is sent as
    /// `paymentRequirements`).
    pub fn to_json(
        &self,
        version: X402Version,
        resource: &ResourceInfo,
    ) -> Result<Value, NetworkError> {
        match version {
            X402Version::V1 => self.to_json_v1(resource),
            X402Version::V2 => Ok(self.to_json_v2()),
        }
    }

    /// Parses a v2 `accepts` entry (or a v2 payload's `accepted`) at `path`.
    pub(crate) fn parse_v2(path: &str, value: &Value) -> Result<PaymentRequirements, DecodeError> {
        let o = Obj::new(path, value)?;
        check_scheme(&o)?;
        Ok(PaymentRequirements {
            network: o.caip2("network")?,
            amount: o.amount("amount")?,
            asset: o.address("asset")?,
            pay_to: o.address("payTo")?,
            max_timeout_seconds: o.u64("maxTimeoutSeconds")?,
            extra: parse_extra(&o)?,
        })
    }

    /// Parses a v1 `accepts` entry at `path`, with the resource it names.
    pub(crate) fn parse_v1(
        path: &str,
        value: &Value,
    ) -> Result<(PaymentRequirements, ResourceInfo), DecodeError> {
        let o = Obj::new(path, value)?;
        check_scheme(&o)?;
        let req = PaymentRequirements {
            network: o.v1_network("network")?,
            amount: o.amount("maxAmountRequired")?,
            asset: o.address("asset")?,
            pay_to: o.address("payTo")?,
            max_timeout_seconds: o.u64("maxTimeoutSeconds")?,
            extra: parse_extra(&o)?,
        };
        let resource = ResourceInfo {
            url: o.str("resource")?.to_owned(),
            description: o.opt_str("description")?.unwrap_or_default().to_owned(),
            mime_type: o.opt_str("mimeType")?.unwrap_or_default().to_owned(),
        };
        Ok((req, resource))
    }
}

pub(crate) fn check_scheme(o: &Obj<'_>) -> Result<(), DecodeError> {
    let scheme = o.str("scheme")?;
    if scheme != SCHEME_EXACT {
        return Err(DecodeError::UnsupportedScheme {
            field: o.field("scheme"),
            scheme: scheme.to_owned(),
        });
    }
    Ok(())
}

fn parse_extra(o: &Obj<'_>) -> Result<TokenDomain, DecodeError> {
    let (path, extra) = o.obj("extra")?;
    let e = Obj::new(&path, extra)?;
    if let Some(method) = e.opt_str("assetTransferMethod")?
        && method != TRANSFER_METHOD_EIP3009
    {
        return Err(DecodeError::UnsupportedTransferMethod {
            field: e.field("assetTransferMethod"),
            method: method.to_owned(),
        });
    }
    Ok(TokenDomain {
        name: e.str("name")?.to_owned(),
        version: e.str("version")?.to_owned(),
    })
}

pub(crate) fn resource_json(r: &ResourceInfo) -> Value {
    json!({"url": r.url, "description": r.description, "mimeType": r.mime_type})
}

fn parse_resource(path: &str, value: &Value) -> Result<ResourceInfo, DecodeError> {
    let o = Obj::new(path, value)?;
    Ok(ResourceInfo {
        url: o.str("url")?.to_owned(),
        description: o.opt_str("description")?.unwrap_or_default().to_owned(),
        mime_type: o.opt_str("mimeType")?.unwrap_or_default().to_owned(),
    })
}

pub(crate) fn parse_opt_resource(o: &Obj<'_>) -> Result<Option<ResourceInfo>, DecodeError> {
    match o.opt("resource") {
        None => Ok(None),
        Some(v) => parse_resource(&o.field("resource"), v).map(Some),
    }
}

/// A 402 challenge: what the resource is and the ways to pay for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRequired {
    /// Why payment is required (e.g. `"Payment required"`, or why a payment was refused).
    pub error: Option<String>,
    /// The resource.
    pub resource: ResourceInfo,
    /// The ways to pay this crate understands, in the server's order.
    pub accepts: Vec<PaymentRequirements>,
    /// When decoding: the `accepts` entries that were skipped (another scheme, network or
    /// transfer method, or malformed), with why. Never encoded.
    pub skipped: Vec<DecodeError>,
}

impl PaymentRequired {
    /// A challenge for `resource` offering `accepts`.
    pub fn new(resource: ResourceInfo, accepts: Vec<PaymentRequirements>) -> PaymentRequired {
        PaymentRequired {
            error: Some("Payment required".into()),
            resource,
            accepts,
            skipped: Vec::new(),
        }
    }

    /// The v2 JSON object.
    pub fn to_json_v2(&self) -> Value {
        let mut m = Map::new();
        m.insert("x402Version".into(), json!(2));
        if let Some(e) = &self.error {
            m.insert("error".into(), json!(e));
        }
        m.insert("resource".into(), resource_json(&self.resource));
        m.insert(
            "accepts".into(),
            Value::Array(self.accepts.iter().map(|a| a.to_json_v2()).collect()),
        );
        Value::Object(m)
    }

    /// The `PAYMENT-REQUIRED` header value: standard base64 (padded) of the v2 JSON.
    pub fn to_header(&self) -> String {
        wire::encode_header(&self.to_json_v2())
    }

    /// The v1 402 JSON body (`{"x402Version":1,"error":…,"accepts":[…]}`). Entries on chains
    /// without a v1 name are left out, since v1 clients cannot name them.
    pub fn to_v1_body(&self) -> Value {
        let accepts: Vec<Value> = self
            .accepts
            .iter()
            .filter_map(|a| a.to_json_v1(&self.resource).ok())
            .collect();
        json!({
            "x402Version": 1,
            "error": self.error.as_deref().unwrap_or("Payment required"),
            "accepts": accepts,
        })
    }

    /// Decodes a `PAYMENT-REQUIRED` header value (v2). Entries this crate cannot use are
    /// listed in `skipped`; only a malformed envelope is an error.
    pub fn from_header(value: &[u8]) -> Result<PaymentRequired, DecodeError> {
        let json = wire::decode_header(value)?;
        let o = Obj::new("", &json)?;
        expect_version(&o, X402Version::V2)?;
        let resource = parse_resource(&o.field("resource"), o.get("resource")?)?;
        let (accepts, skipped) = parse_accepts(&o, PaymentRequirements::parse_v2)?;
        Ok(PaymentRequired {
            error: o.opt_str("error")?.map(str::to_owned),
            resource,
            accepts,
            skipped,
        })
    }

    /// Decodes a v1 402 JSON body. The resource is taken from the first usable entry. An
    /// `error` that is not a string is ignored.
    pub fn from_v1_body(body: &[u8]) -> Result<PaymentRequired, DecodeError> {
        let json = wire::parse_json(body)?;
        let o = Obj::new("", &json)?;
        expect_version(&o, X402Version::V1)?;
        let (entries, skipped) = parse_accepts(&o, PaymentRequirements::parse_v1)?;
        let resource = entries.first().map(|(_, r)| r.clone()).unwrap_or_default();
        // v1's `error` is informational, and a server may carry its own error object there
        // (Turnpike's 402 body does): only a string is kept, nothing else is refused.
        Ok(PaymentRequired {
            error: o.opt("error").and_then(Value::as_str).map(str::to_owned),
            resource,
            accepts: entries.into_iter().map(|(a, _)| a).collect(),
            skipped,
        })
    }
}

type Parsed<T> = (Vec<T>, Vec<DecodeError>);

fn parse_accepts<T>(
    o: &Obj<'_>,
    parse: impl Fn(&str, &Value) -> Result<T, DecodeError>,
) -> Result<Parsed<T>, DecodeError> {
    let list = o.get("accepts")?.as_array().ok_or(DecodeError::WrongType {
        field: "accepts".into(),
        expected: "an array",
    })?;
    let mut ok = Vec::new();
    let mut skipped = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        match parse(&format!("accepts[{i}]"), entry) {
            Ok(t) => ok.push(t),
            Err(e) => skipped.push(e),
        }
    }
    Ok((ok, skipped))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The offer of payment-schemes.md §3.6 (the test chain's token and payTo).
    pub(crate) fn example() -> PaymentRequirements {
        PaymentRequirements {
            network: Network::BASE_SEPOLIA,
            amount: TokenAmount::from_base_units(10_000),
            asset: "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
                .parse()
                .unwrap(),
            pay_to: "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
                .parse()
                .unwrap(),
            max_timeout_seconds: 300,
            extra: TokenDomain {
                name: "USDC".into(),
                version: "2".into(),
            },
        }
    }

    fn resource() -> ResourceInfo {
        ResourceInfo {
            url: "http://127.0.0.1:18080/paid".into(),
            description: "paid thing".into(),
            mime_type: "application/json".into(),
        }
    }

    #[test]
    fn v2_entry_is_the_research_example() {
        // The `accepted` object of payment-schemes.md §3.6 (compared as JSON values: key order
        // depends on serde_json's features).
        let research: Value = serde_json::from_str(r#"{"scheme":"exact","network":"eip155:84532","amount":"10000","asset":"0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512","payTo":"0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC","maxTimeoutSeconds":300,"extra":{"name":"USDC","version":"2"}}"#).unwrap();
        assert_eq!(example().to_json_v2(), research);
    }

    #[test]
    fn header_round_trip_and_skipped_entries() {
        let pr = PaymentRequired::new(resource(), vec![example()]);
        let back = PaymentRequired::from_header(pr.to_header().as_bytes()).unwrap();
        assert_eq!(back, pr);

        let mut json = pr.to_json_v2();
        let mut solana = example().to_json_v2();
        solana["network"] = json!("solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp");
        let mut permit2 = example().to_json_v2();
        permit2["extra"]["assetTransferMethod"] = json!("permit2");
        let mut upto = example().to_json_v2();
        upto["scheme"] = json!("upto");
        json["accepts"] = json!([solana, permit2, upto, example().to_json_v2()]);
        let got = PaymentRequired::from_header(wire::encode_header(&json).as_bytes()).unwrap();
        assert_eq!(got.accepts, vec![example()]);
        assert_eq!(got.skipped.len(), 3);
        assert!(
            matches!(&got.skipped[0], DecodeError::Network { field, source: NetworkError::UnsupportedNamespace(_) } if field == "accepts[0].network")
        );
        assert!(
            matches!(&got.skipped[1], DecodeError::UnsupportedTransferMethod { field, .. } if field == "accepts[1].extra.assetTransferMethod")
        );
        assert!(
            matches!(&got.skipped[2], DecodeError::UnsupportedScheme { field, .. } if field == "accepts[2].scheme")
        );
    }

    #[test]
    fn v1_body_round_trip() {
        let pr = PaymentRequired::new(resource(), vec![example()]);
        let body = pr.to_v1_body();
        assert_eq!(body["accepts"][0]["network"], "base-sepolia");
        assert_eq!(body["accepts"][0]["maxAmountRequired"], "10000");
        assert_eq!(
            body["accepts"][0]["resource"],
            "http://127.0.0.1:18080/paid"
        );
        let back = PaymentRequired::from_v1_body(body.to_string().as_bytes()).unwrap();
        assert_eq!(back, pr);
        // A server's own error object in `error` (Turnpike's 402 body) does not hide the offers.
        let mut turnpike = body.clone();
        turnpike["error"] = json!({"code": "payment_required", "message": "pay"});
        let back = PaymentRequired::from_v1_body(turnpike.to_string().as_bytes()).unwrap();
        assert_eq!((back.accepts, back.error), (pr.accepts.clone(), None));

        let mut local = example();
        local.network = Network::eip155(31337).unwrap();
        let pr = PaymentRequired::new(resource(), vec![local]);
        assert_eq!(pr.to_v1_body()["accepts"], json!([]));
    }

    #[test]
    fn errors_name_the_field() {
        let mut e = example().to_json_v2();
        e["amount"] = json!("0.01");
        let err = PaymentRequirements::parse_v2("accepted", &e).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`accepted.amount`: amount has an invalid character '.' at byte 1"
        );
        let mut e = example().to_json_v2();
        e["extra"] = json!({"name": "USDC"});
        let err = PaymentRequirements::parse_v2("accepted", &e).unwrap_err();
        assert_eq!(err.to_string(), "`accepted.extra.version` is missing");
        let mut e = example().to_json_v2();
        e["maxTimeoutSeconds"] = json!("300");
        let err = PaymentRequirements::parse_v2("accepted", &e).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`accepted.maxTimeoutSeconds` must be a non-negative integer"
        );
        let json = json!({"x402Version": 1, "accepts": []});
        assert_eq!(
            PaymentRequired::from_header(wire::encode_header(&json).as_bytes()),
            Err(DecodeError::VersionMismatch {
                expected: 2,
                found: 1
            })
        );
    }
}
