//! Property tests: every parser survives arbitrary input, every encoding round-trips, a payment
//! signed by any key verifies and recovers that key's address, and changing any signed field
//! or any offered term makes verification fail.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use serde_json::{Value, json};
use turnpike_x402::verify::{VALID_BEFORE_MARGIN_SECONDS, VerifyError};
use turnpike_x402::{
    Accepted, Address, Authorization, B256, EvmSignature, Network, PayerKey, PaymentPayload,
    PaymentRequired, PaymentRequirements, ResourceInfo, SettleResponse, TokenAmount, TokenDomain,
    U256, VerifyResponse, X402Version, parse_address, verify,
};

const NOW: u64 = 1_800_000_000;

fn arb_address() -> impl Strategy<Value = Address> {
    any::<[u8; 20]>().prop_map(Address::from)
}

fn arb_network() -> impl Strategy<Value = Network> {
    prop_oneof![
        Just(Network::BASE_SEPOLIA),
        Just(Network::BASE),
        (1u64..=u64::MAX).prop_map(|id| Network::eip155(id).unwrap()),
    ]
}

fn arb_requirements() -> impl Strategy<Value = PaymentRequirements> {
    (
        arb_network(),
        any::<u128>(),
        arb_address(),
        arb_address(),
        0u64..100_000,
        "[ -~]{0,24}",
        "[0-9a-z.]{0,6}",
    )
        .prop_map(
            |(network, amount, asset, pay_to, max_timeout_seconds, name, version)| {
                PaymentRequirements {
                    network,
                    amount: TokenAmount::from_base_units(amount),
                    asset,
                    pay_to,
                    max_timeout_seconds,
                    extra: TokenDomain { name, version },
                }
            },
        )
}

fn arb_resource() -> impl Strategy<Value = ResourceInfo> {
    ("[ -~]{0,40}", "\\PC{0,20}", "[a-z/+.-]{0,20}").prop_map(|(url, description, mime_type)| {
        ResourceInfo {
            url,
            description,
            mime_type,
        }
    })
}

/// A payer key (any valid secp256k1 secret).
fn arb_key() -> impl Strategy<Value = PayerKey> {
    any::<[u8; 32]>().prop_filter_map("not a valid secp256k1 secret", |b| {
        PayerKey::from_bytes(&b).ok()
    })
}

/// Requirements priced at least 1 base unit with a usable timeout, and a time inside them.
fn arb_offer() -> impl Strategy<Value = PaymentRequirements> {
    (arb_requirements(), 10u64..3600).prop_map(|(mut r, timeout)| {
        r.max_timeout_seconds = timeout;
        r
    })
}

/// A v2 payment for `req` by `key`, valid from `NOW - age` for the offered timeout.
fn pay(key: &PayerKey, req: &PaymentRequirements, nonce: [u8; 32], age: u64) -> PaymentPayload {
    let auth = Authorization {
        from: key.address(),
        to: req.pay_to,
        value: req.amount.to_u256(),
        valid_after: NOW - age,
        valid_before: NOW + req.max_timeout_seconds,
        nonce: B256::from(nonce),
    };
    let signature = key.sign(req, &auth);
    PaymentPayload::new(Accepted::V2(req.clone()), None, auth, signature).unwrap()
}

fn b64(json: &Value) -> String {
    STANDARD.encode(json.to_string())
}

/// Arbitrary JSON, biased towards the shapes and names x402 uses.
fn arb_json() -> impl Strategy<Value = Value> {
    let names = prop_oneof![
        Just("x402Version"),
        Just("accepted"),
        Just("accepts"),
        Just("payload"),
        Just("authorization"),
        Just("signature"),
        Just("network"),
        Just("amount"),
        Just("from"),
        Just("value"),
        Just("validBefore"),
        Just("nonce"),
        Just("extra"),
        Just("success"),
        Just("transaction"),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(json!(1)),
        Just(json!(2)),
        Just(json!("exact")),
        Just(json!("eip155:84532")),
        Just(json!("base-sepolia")),
        "\\PC{0,12}".prop_map(Value::from),
        "0x[0-9a-fA-F]{0,140}".prop_map(Value::from),
        "[0-9]{0,80}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::vec((names.clone(), inner), 0..6).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

/// Every decoder, fed the same input: none may panic.
fn decode_all(bytes: &[u8]) {
    let _ = PaymentPayload::from_payment_signature(bytes);
    let _ = PaymentPayload::from_x_payment(bytes);
    let _ = PaymentRequired::from_header(bytes);
    let _ = PaymentRequired::from_v1_body(bytes);
    let _ = SettleResponse::from_header(bytes);
    let _ = SettleResponse::from_json(bytes);
    let _ = VerifyResponse::from_json(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decoders_never_panic_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
        decode_all(STANDARD.encode(&bytes).as_bytes());
    }

    #[test]
    fn decoders_never_panic_on_json(json in arb_json()) {
        decode_all(json.to_string().as_bytes());
        decode_all(b64(&json).as_bytes());
    }

    #[test]
    fn decoders_never_panic_on_mutated_payments(
        key in arb_key(),
        req in arb_offer(),
        path in 0usize..12,
        replacement in arb_json(),
    ) {
        // A real payment with one field replaced by arbitrary JSON.
        let mut json = pay(&key, &req, [7; 32], 1).raw_json().clone();
        let slot = match path {
            0 => &mut json["x402Version"],
            1 => &mut json["accepted"],
            2 => &mut json["accepted"]["network"],
            3 => &mut json["accepted"]["amount"],
            4 => &mut json["accepted"]["extra"],
            5 => &mut json["payload"],
            6 => &mut json["payload"]["signature"],
            7 => &mut json["payload"]["authorization"],
            8 => &mut json["payload"]["authorization"]["value"],
            9 => &mut json["payload"]["authorization"]["validBefore"],
            10 => &mut json["payload"]["authorization"]["nonce"],
            _ => &mut json["payload"]["authorization"]["from"],
        };
        *slot = replacement;
        if let Ok(p) = PaymentPayload::from_payment_signature(b64(&json).as_bytes()) {
            let _ = verify(&p, &req, NOW);
        }
    }

    #[test]
    fn scalar_parsers_never_panic(s in "\\PC{0,90}", decimals in any::<u8>()) {
        let _ = TokenAmount::parse_decimal(&s, decimals);
        let _ = TokenAmount::parse_base_units(&s);
        let _ = Network::parse_caip2(&s);
        let _ = Network::from_v1_name(&s);
        let _ = parse_address(&s);
        let _ = EvmSignature::parse(&s);
    }

    #[test]
    fn amounts_round_trip(units in any::<u128>(), decimals in 0u8..=38) {
        let a = TokenAmount::from_base_units(units);
        prop_assert_eq!(a.to_string().parse::<TokenAmount>(), Ok(a));
        prop_assert_eq!(TokenAmount::parse_decimal(&a.to_decimal_string(decimals), decimals), Ok(a));
    }

    #[test]
    fn decimal_amounts_are_exact(whole in 0u64..1_000_000_000, frac in 0u32..1_000_000) {
        // 6 decimals, as USDC: "<whole>.<frac, 6 digits>" is whole * 10^6 + frac base units.
        let s = format!("{whole}.{frac:06}");
        prop_assert_eq!(
            TokenAmount::parse_decimal(&s, 6),
            Ok(TokenAmount::from_base_units(u128::from(whole) * 1_000_000 + u128::from(frac)))
        );
        // One more digit than the asset has is refused, whatever it is.
        let longer = format!("{s}0");
        prop_assert!(TokenAmount::parse_decimal(&longer, 6).is_err());
    }

    #[test]
    fn networks_round_trip(n in arb_network()) {
        prop_assert_eq!(n.caip2().parse::<Network>(), Ok(n));
        if let Ok(name) = n.v1_name() {
            prop_assert_eq!(Network::from_v1_name(name), Ok(n));
        }
    }

    #[test]
    fn addresses_round_trip(a in arb_address()) {
        prop_assert_eq!(parse_address(&a.to_checksum(None)), Ok(a));
        prop_assert_eq!(parse_address(&format!("{a:#x}")), Ok(a));
    }

    #[test]
    fn payment_required_round_trips(
        resource in arb_resource(),
        accepts in proptest::collection::vec(arb_requirements(), 0..4),
    ) {
        let pr = PaymentRequired::new(resource, accepts);
        prop_assert_eq!(PaymentRequired::from_header(pr.to_header().as_bytes()), Ok(pr.clone()));
        // v1 carries the entries whose chain has a v1 name.
        let v1 = PaymentRequired::from_v1_body(pr.to_v1_body().to_string().as_bytes()).unwrap();
        let named: Vec<_> = pr.accepts.iter().filter(|a| a.network.v1_name().is_ok()).cloned().collect();
        prop_assert_eq!(&v1.accepts, &named);
        if !named.is_empty() {
            prop_assert_eq!(&v1.resource, &pr.resource);
        }
    }

    #[test]
    fn settle_responses_round_trip(
        success in any::<bool>(),
        reason in proptest::option::of("[a-z_]{1,30}"),
        payer in proptest::option::of(arb_address()),
        tx in proptest::option::of(any::<[u8; 32]>()),
        network in arb_network(),
        v2 in any::<bool>(),
    ) {
        let s = SettleResponse {
            success,
            error_reason: reason,
            payer,
            transaction: tx.map(B256::from),
            network,
        };
        let version = if v2 { X402Version::V2 } else { X402Version::V1 };
        prop_assert_eq!(SettleResponse::from_header(s.to_header(version).as_bytes()), Ok(s));
    }

    #[test]
    fn signed_payments_verify_and_round_trip(
        key in arb_key(),
        req in arb_offer(),
        nonce in any::<[u8; 32]>(),
        age in 0u64..100_000,
        resource in arb_resource(),
    ) {
        let p = pay(&key, &req, nonce, age);
        let p = PaymentPayload::new(p.accepted, Some(resource), p.authorization, p.signature).unwrap();
        let decoded = PaymentPayload::from_payment_signature(p.to_header().as_bytes()).unwrap();
        prop_assert_eq!(&decoded, &p);
        let v = verify(&decoded, &req, NOW).unwrap();
        prop_assert_eq!(v.payer, key.address());
        prop_assert_eq!(v.nonce, B256::from(nonce));
        prop_assert_eq!(decoded.select(std::slice::from_ref(&req)), Some(&req));
        // The same payment in v1 form verifies too when the chain has a v1 name.
        let v1 = PaymentPayload::new(Accepted::V1 { network: req.network }, None, p.authorization.clone(), p.signature);
        prop_assert_eq!(v1.is_ok(), req.network.v1_name().is_ok());
        if req.network.v1_name().is_ok() {
            let v1 = PaymentPayload::new(Accepted::V1 { network: req.network }, None, p.authorization.clone(), p.signature).unwrap();
            let v1 = PaymentPayload::from_x_payment(v1.to_header().as_bytes()).unwrap();
            prop_assert_eq!(verify(&v1, &req, NOW).map(|v| v.payer), Ok(key.address()));
        }
    }

    #[test]
    fn payer_key_payments_verify(
        key in arb_key(),
        req in arb_offer(),
        nonce in any::<[u8; 32]>(),
        now in 600u64..4_000_000_000,
        v2 in any::<bool>(),
    ) {
        let version = if v2 { X402Version::V2 } else { X402Version::V1 };
        match key.pay(&req, None, version, now, nonce) {
            Ok(p) => {
                let header = p.to_header();
                let decoded = match version {
                    X402Version::V2 => PaymentPayload::from_payment_signature(header.as_bytes()),
                    X402Version::V1 => PaymentPayload::from_x_payment(header.as_bytes()),
                }
                .unwrap();
                let v = verify(&decoded, &req, now).unwrap();
                prop_assert_eq!(v.payer, key.address());
                prop_assert_eq!(v.amount, req.amount);
            }
            // Only v1 can fail: a chain without a v1 name.
            Err(_) => prop_assert!(!v2 && req.network.v1_name().is_err()),
        }
    }

    #[test]
    fn any_signed_field_changed_breaks_the_signature(
        key in arb_key(),
        req in arb_offer(),
        field in 0usize..6,
        delta in 1u64..5,
        other in arb_address(),
    ) {
        let p = pay(&key, &req, [9; 32], 1000);
        let mut auth = p.authorization.clone();
        let mut offer = req.clone();
        // Change one signed value, and the offer with it where the value must match the
        // offer, so that only the signature can catch it.
        match field {
            0 => auth.from = other,
            1 => { auth.to = other; offer.pay_to = other; }
            2 => {
                let value = req.amount.base_units().wrapping_add(u128::from(delta));
                auth.value = U256::from(value);
                offer.amount = TokenAmount::from_base_units(value);
            }
            3 => auth.valid_after -= delta,
            4 => auth.valid_before -= delta.min(req.max_timeout_seconds - VALID_BEFORE_MARGIN_SECONDS),
            _ => auth.nonce = B256::repeat_byte(delta as u8),
        }
        prop_assume!(auth != p.authorization);
        let tampered = PaymentPayload::new(Accepted::V2(offer.clone()), None, auth, p.signature).unwrap();
        let r = verify(&tampered, &offer, NOW);
        prop_assert!(
            matches!(r, Err(VerifyError::SignerMismatch { .. } | VerifyError::BadSignature)),
            "{:?}", r
        );
    }

    #[test]
    fn any_offered_term_changed_is_refused(
        key in arb_key(),
        req in arb_offer(),
        term in 0usize..6,
        other in arb_address(),
    ) {
        // Paid for `req`, presented where the server offers something else.
        let p = pay(&key, &req, [3; 32], 10);
        let mut offer = req.clone();
        match term {
            0 => offer.network = Network::eip155(req.network.chain_id() % 1_000_000 + 1).unwrap(),
            1 => offer.asset = other,
            2 => offer.pay_to = other,
            3 => offer.amount = TokenAmount::from_base_units(req.amount.base_units() ^ 1),
            4 => offer.max_timeout_seconds += 1,
            _ => offer.extra.version.push('x'),
        }
        prop_assume!(offer != req);
        prop_assert!(verify(&p, &offer, NOW).is_err());
        prop_assert_eq!(p.select(std::slice::from_ref(&offer)), None);
    }
}
