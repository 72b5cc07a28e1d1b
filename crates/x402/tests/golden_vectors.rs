//! Golden vectors: the worked example of `shared/research/payment-schemes.md` §3.6 (a payment
//! made on a local anvil chain with Circle's FiatTokenV2_2 and verified by the reference
//! facilitator, @x402 2.27.0) verifies here, and every tampered variant is refused with the
//! error naming what changed.

use turnpike_x402::verify::{VerifyError, signing_hash, token_domain};
use turnpike_x402::{
    Accepted, Address, B256, DecodeError, Network, PayerKey, PaymentPayload, PaymentRequirements,
    TokenAmount, TokenDomain, U256, X402Version, verify,
};

/// `PAYMENT-SIGNATURE` of §3.6, verbatim.
const HEADER: &str = "eyJ4NDAyVmVyc2lvbiI6MiwicmVzb3VyY2UiOnsidXJsIjoiaHR0cDovLzEyNy4wLjAuMToxODA4MC9wYWlkIiwiZGVzY3JpcHRpb24iOiJwYWlkIHRoaW5nIiwibWltZVR5cGUiOiJhcHBsaWNhdGlvbi9qc29uIn0sImFjY2VwdGVkIjp7InNjaGVtZSI6ImV4YWN0IiwibmV0d29yayI6ImVpcDE1NTo4NDUzMiIsImFtb3VudCI6IjEwMDAwIiwiYXNzZXQiOiIweGU3ZjE3MjVFNzczNENFMjg4RjgzNjdlMUJiMTQzRTkwYmIzRjA1MTIiLCJwYXlUbyI6IjB4M0M0NENkRGRCNmE5MDBmYTJiNTg1ZGQyOTllMDNkMTJGQTQyOTNCQyIsIm1heFRpbWVvdXRTZWNvbmRzIjozMDAsImV4dHJhIjp7Im5hbWUiOiJVU0RDIiwidmVyc2lvbiI6IjIifX0sInBheWxvYWQiOnsic2lnbmF0dXJlIjoiMHhkMzI5NjdmZWFlMzRkMzA4NDhmZDI0YzJmMzRhMTI5ZDRkOTcxODkxOTNkZjRiYTIzZDI2OTlhZjBhNDM3ZjE0N2M3OTQ2ZDAzM2I2NzhiYjNkZWMzOTZmZWNkNDA1Njc3YTRjMTgwOTIxZDQ2NTUwNzNhNzA0MTFlNGNhM2QwNTFjIiwiYXV0aG9yaXphdGlvbiI6eyJmcm9tIjoiMHg3MDk5Nzk3MEM1MTgxMmRjM0EwMTBDN2QwMWI1MGUwZDE3ZGM3OUM4IiwidG8iOiIweDNDNDRDZERkQjZhOTAwZmEyYjU4NWRkMjk5ZTAzZDEyRkE0MjkzQkMiLCJ2YWx1ZSI6IjEwMDAwIiwidmFsaWRBZnRlciI6IjE3OTYxNzAwMDAiLCJ2YWxpZEJlZm9yZSI6IjE3OTYxNzM2MDAiLCJub25jZSI6IjB4MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMSJ9fX0=";

const PAYER: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const PAY_TO: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";
const TOKEN: &str = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512";
const VALID_AFTER: u64 = 1_796_170_000;
const VALID_BEFORE: u64 = 1_796_173_600;
/// A time inside the window at which validBefore is also within now + maxTimeoutSeconds (300)
/// + skew (60): the example authorisation is valid for an hour, longer than it offered.
const NOW: u64 = VALID_BEFORE - 300;

fn addr(s: &str) -> Address {
    s.parse().unwrap()
}

fn offered() -> PaymentRequirements {
    PaymentRequirements {
        network: Network::BASE_SEPOLIA,
        amount: TokenAmount::parse_decimal("0.01", 6).unwrap(),
        asset: addr(TOKEN),
        pay_to: addr(PAY_TO),
        max_timeout_seconds: 300,
        extra: TokenDomain {
            name: "USDC".into(),
            version: "2".into(),
        },
    }
}

fn payment() -> PaymentPayload {
    PaymentPayload::from_payment_signature(HEADER.as_bytes()).expect("the §3.6 header decodes")
}

#[test]
fn the_worked_example_decodes_to_its_fields() {
    let p = payment();
    assert_eq!(p.version, X402Version::V2);
    assert_eq!(p.accepted, Accepted::V2(offered()));
    let a = &p.authorization;
    assert_eq!(a.from, addr(PAYER));
    assert_eq!(a.to, addr(PAY_TO));
    assert_eq!(a.value, U256::from(10_000));
    assert_eq!((a.valid_after, a.valid_before), (VALID_AFTER, VALID_BEFORE));
    assert_eq!(a.nonce, B256::repeat_byte(0x11));
    assert_eq!(
        p.signature.to_hex(),
        "0xd32967feae34d30848fd24c2f34a129d4d97189193df4ba23d2699af0a437f147c7946d033b678bb3dec396fecd405677a4c180921d4655073a70411e4ca3d051c"
    );
    let r = p.resource.as_ref().unwrap();
    assert_eq!(r.url, "http://127.0.0.1:18080/paid");
    // Re-encoding the parsed parts gives the same JSON (as values: key order may differ).
    let rebuilt = PaymentPayload::new(
        p.accepted.clone(),
        p.resource.clone(),
        p.authorization.clone(),
        p.signature,
    )
    .unwrap();
    assert_eq!(rebuilt.raw_json(), p.raw_json());
}

#[test]
fn our_signer_reproduces_the_official_signature() {
    // anvil's key #1 signs the §3.6 authorisation: RFC 6979 makes it byte-identical to the
    // signature viem (inside the official client) made.
    let key =
        PayerKey::from_hex("0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
            .unwrap();
    assert_eq!(key.address(), addr(PAYER));
    let p = payment();
    assert_eq!(key.sign(&offered(), &p.authorization), p.signature);
}

#[test]
fn domain_separator_and_digest_match_the_chain() {
    let domain = token_domain(Network::BASE_SEPOLIA, addr(TOKEN), &offered().extra);
    // `DOMAIN_SEPARATOR()` read from the deployed FiatTokenV2_2.
    assert_eq!(
        format!("{:#x}", domain.separator()),
        "0x34dc9a6e2e1d15eb14224e9be8036391ab4d695ba90ff9d06436e74e965c17e3"
    );
    assert_eq!(
        format!("{:#x}", signing_hash(&offered(), &payment().authorization)),
        "0x545eb7b4609f98c71fbfc9b4f3a4099523d278193d604ef360844f9fed398844"
    );
}

#[test]
fn the_worked_example_verifies_inside_its_window() {
    let v = verify(&payment(), &offered(), NOW).expect("the §3.6 payment verifies");
    assert_eq!(v.payer, addr(PAYER));
    assert_eq!(v.amount, TokenAmount::from_base_units(10_000));
    assert_eq!(v.valid_before, VALID_BEFORE);
    assert_eq!(
        v.replay_key(),
        "eip155:84532/0xe7f1725e7734ce288f8367e1bb143e90bb3f0512/0x70997970c51812dc3a010c7d01b50e0d17dc79c8/0x1111111111111111111111111111111111111111111111111111111111111111"
    );
    // The facilitator's bounds: valid until validBefore - 6.
    assert!(verify(&payment(), &offered(), VALID_BEFORE - 6).is_ok());
}

#[test]
fn outside_the_window_it_is_refused() {
    assert_eq!(
        verify(&payment(), &offered(), VALID_BEFORE - 5),
        Err(VerifyError::Expired {
            valid_before: VALID_BEFORE,
            now: VALID_BEFORE - 5
        })
    );
    assert_eq!(
        verify(&payment(), &offered(), VALID_AFTER - 1),
        Err(VerifyError::NotYetValid {
            valid_after: VALID_AFTER,
            now: VALID_AFTER - 1
        })
    );
    // At validAfter the reference facilitator accepts it, but its hour-long window is longer
    // than the 300 s offered (+60 s skew), so this crate does not.
    assert_eq!(
        verify(&payment(), &offered(), VALID_AFTER),
        Err(VerifyError::WindowTooLong {
            valid_before: VALID_BEFORE,
            latest: VALID_AFTER + 360
        })
    );
}

/// The example's JSON with `edit` applied, as a header, decoded.
fn tampered(edit: impl FnOnce(&mut serde_json::Value)) -> PaymentPayload {
    let mut json = payment().raw_json().clone();
    edit(&mut json);
    let header = base64_std(json.to_string().as_bytes());
    PaymentPayload::from_payment_signature(header.as_bytes()).expect("tampered copy decodes")
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn tampered_signed_fields_break_the_signature() {
    let payer = addr(PAYER);
    let signer_mismatch = |r: Result<_, VerifyError>| match r {
        Err(VerifyError::SignerMismatch { from, recovered }) => {
            assert_eq!(from, payer);
            assert_ne!(recovered, payer);
        }
        other => panic!("expected SignerMismatch, got {other:?}"),
    };
    // A different nonce.
    signer_mismatch(verify(
        &tampered(|j| {
            j["payload"]["authorization"]["nonce"] = format!("0x{}", "12".repeat(32)).into()
        }),
        &offered(),
        NOW,
    ));
    // A later validBefore, still inside what was offered.
    signer_mismatch(verify(
        &tampered(|j| j["payload"]["authorization"]["validBefore"] = "1796173601".into()),
        &offered(),
        NOW,
    ));
    // An earlier validAfter.
    signer_mismatch(verify(
        &tampered(|j| j["payload"]["authorization"]["validAfter"] = "0".into()),
        &offered(),
        NOW,
    ));
    // value raised together with a server that asks for that much.
    let mut dearer = offered();
    dearer.amount = TokenAmount::from_base_units(10_001);
    signer_mismatch(verify(
        &tampered(|j| {
            j["payload"]["authorization"]["value"] = "10001".into();
            j["accepted"]["amount"] = "10001".into();
        }),
        &dearer,
        NOW,
    ));
    // Another token (the domain's verifyingContract) with the same name and version.
    let mut other_token = offered();
    other_token.asset = addr("0x5FbDB2315678afecb367f032d93F642f64180aa3");
    signer_mismatch(verify(
        &tampered(|j| j["accepted"]["asset"] = "0x5FbDB2315678afecb367f032d93F642f64180aa3".into()),
        &other_token,
        NOW,
    ));
    // The token's EIP-712 version.
    let mut v1_domain = offered();
    v1_domain.extra.version = "1".into();
    signer_mismatch(verify(
        &tampered(|j| j["accepted"]["extra"]["version"] = "1".into()),
        &v1_domain,
        NOW,
    ));
    // Another chain.
    let mut mainnet = offered();
    mainnet.network = Network::BASE;
    signer_mismatch(verify(
        &tampered(|j| j["accepted"]["network"] = "eip155:8453".into()),
        &mainnet,
        NOW,
    ));
    // A claimed payer other than the signer (`from` is signed too, so the recovered key is
    // neither of them).
    let claimed = addr(PAY_TO);
    match verify(
        &tampered(|j| j["payload"]["authorization"]["from"] = PAY_TO.into()),
        &offered(),
        NOW,
    ) {
        Err(VerifyError::SignerMismatch { from, recovered }) => {
            assert_eq!(from, claimed);
            assert_ne!(recovered, claimed);
        }
        other => panic!("expected SignerMismatch, got {other:?}"),
    }
    // One bit of r flipped.
    let sig = payment().signature.to_hex();
    let flipped = format!("0xd22967{}", &sig[8..]);
    let r = verify(
        &tampered(|j| j["payload"]["signature"] = flipped.into()),
        &offered(),
        NOW,
    );
    assert!(
        matches!(
            r,
            Err(VerifyError::SignerMismatch { .. } | VerifyError::BadSignature)
        ),
        "{r:?}"
    );
}

#[test]
fn mismatches_with_the_offer_are_named() {
    let p = payment();
    let mut o = offered();
    o.pay_to = addr(PAYER);
    assert_eq!(
        verify(&p, &o, NOW),
        Err(VerifyError::AcceptedPayToMismatch {
            expected: addr(PAYER),
            got: addr(PAY_TO)
        })
    );
    let mut o = offered();
    o.amount = TokenAmount::from_base_units(20_000);
    assert!(matches!(
        verify(&p, &o, NOW),
        Err(VerifyError::AcceptedAmountMismatch { .. })
    ));
    let mut o = offered();
    o.network = Network::BASE;
    assert!(matches!(
        verify(&p, &o, NOW),
        Err(VerifyError::NetworkMismatch { .. })
    ));
    let mut o = offered();
    o.asset = addr(PAYER);
    assert!(matches!(
        verify(&p, &o, NOW),
        Err(VerifyError::AssetMismatch { .. })
    ));
    let mut o = offered();
    o.max_timeout_seconds = 60;
    assert!(matches!(
        verify(&p, &o, NOW),
        Err(VerifyError::TimeoutMismatch {
            expected: 60,
            got: 300
        })
    ));
    let mut o = offered();
    o.extra.name = "USD Coin".into();
    assert!(matches!(
        verify(&p, &o, NOW),
        Err(VerifyError::DomainMismatch { .. })
    ));
    // The authorisation disagrees with the (matching) `accepted`.
    assert_eq!(
        verify(
            &tampered(|j| j["payload"]["authorization"]["to"] = PAYER.into()),
            &offered(),
            NOW
        ),
        Err(VerifyError::RecipientMismatch {
            expected: addr(PAY_TO),
            got: addr(PAYER)
        })
    );
    assert_eq!(
        verify(
            &tampered(|j| j["payload"]["authorization"]["value"] = "9999".into()),
            &offered(),
            NOW
        ),
        Err(VerifyError::ValueMismatch {
            expected: TokenAmount::from_base_units(10_000),
            got: U256::from(9_999)
        })
    );
}

#[test]
fn refusals_carry_the_x402_reason_codes() {
    let reason =
        |o: &PaymentRequirements, p: &PaymentPayload, now| verify(p, o, now).unwrap_err().reason();
    let mut o = offered();
    o.network = Network::BASE;
    assert_eq!(reason(&o, &payment(), NOW), "invalid_network");
    let mut o = offered();
    o.amount = TokenAmount::from_base_units(1);
    assert_eq!(reason(&o, &payment(), NOW), "invalid_payment_requirements");
    let value = tampered(|j| j["payload"]["authorization"]["value"] = "1".into());
    assert_eq!(
        reason(&offered(), &value, NOW),
        "invalid_exact_evm_payload_authorization_value_mismatch"
    );
    assert_eq!(
        reason(&offered(), &payment(), VALID_BEFORE),
        "invalid_exact_evm_payload_authorization_valid_before"
    );
    assert_eq!(
        reason(&offered(), &payment(), VALID_AFTER - 1),
        "invalid_exact_evm_payload_authorization_valid_after"
    );
    let nonce = tampered(|j| {
        j["payload"]["authorization"]["nonce"] = format!("0x{}", "00".repeat(32)).into()
    });
    assert_eq!(
        reason(&offered(), &nonce, NOW),
        "invalid_exact_evm_payload_signature"
    );
    let to = tampered(|j| j["payload"]["authorization"]["to"] = PAYER.into());
    assert_eq!(
        reason(&offered(), &to, NOW),
        "invalid_exact_evm_payload_recipient_mismatch"
    );
    // Undecodable payments.
    let v3 = base64_std(br#"{"x402Version":3}"#);
    assert_eq!(
        PaymentPayload::from_payment_signature(v3.as_bytes())
            .unwrap_err()
            .reason(),
        "invalid_x402_version"
    );
    assert_eq!(
        PaymentPayload::from_payment_signature(b"not base64!")
            .unwrap_err()
            .reason(),
        "invalid_payload"
    );
}

#[test]
fn the_same_payment_as_v1_verifies() {
    // The v1 form of the example: same authorisation and signature, `X-PAYMENT` header.
    let p = payment();
    let v1 = PaymentPayload::new(
        Accepted::V1 {
            network: Network::BASE_SEPOLIA,
        },
        None,
        p.authorization.clone(),
        p.signature,
    )
    .unwrap();
    let json = v1.raw_json();
    assert_eq!(json["x402Version"], 1);
    assert_eq!(json["network"], "base-sepolia");
    let decoded = PaymentPayload::from_x_payment(v1.to_header().as_bytes()).unwrap();
    assert_eq!(decoded, v1);
    assert_eq!(
        verify(&decoded, &offered(), NOW).map(|v| v.payer),
        Ok(addr(PAYER))
    );
    // A v1 payload in the v2 header (and the reverse) is refused.
    assert_eq!(
        PaymentPayload::from_payment_signature(v1.to_header().as_bytes()),
        Err(DecodeError::VersionMismatch {
            expected: 2,
            found: 1
        })
    );
    assert_eq!(
        PaymentPayload::from_x_payment(HEADER.as_bytes()),
        Err(DecodeError::VersionMismatch {
            expected: 1,
            found: 2
        })
    );
    assert_eq!(decoded.select(&[offered()]), Some(&offered()));
}
