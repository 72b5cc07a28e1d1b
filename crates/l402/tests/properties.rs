//! Property tests: parsers never panic, encodings round-trip, tokens are tamper-evident and
//! appended caveats only ever narrow a grant.

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use turnpike_l402::caveat::{Caveat, CaveatError, Grant, evaluate};
use turnpike_l402::challenge::Challenge;
use turnpike_l402::credential::Credential;
use turnpike_l402::identifier::Identifier;
use turnpike_l402::macaroon::Macaroon;
use turnpike_l402::root_key::MasterKey;
use turnpike_l402::token::{MintRequest, Minter, VerifyError};
use turnpike_l402::{PaymentHash, Preimage, TokenId};

const NOW: u64 = 1_800_000_000;

fn minter() -> Minter {
    Minter::new(MasterKey::from_bytes([42; 32]))
}

fn arb_service() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,16}"
}

/// A minted token, its preimage and service.
fn arb_token() -> impl Strategy<Value = (Macaroon, Preimage, String)> {
    (
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        arb_service(),
        proptest::option::of(0u64..1000),
        proptest::option::of(NOW + 1..NOW + 1_000_000),
        proptest::collection::vec("[a-z]{1,8}", 0..3),
    )
        .prop_map(|(pre, tid, service, calls, valid_until, caps)| {
            let preimage = Preimage(pre);
            let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
            let mac = minter().mint_with_token_id(
                &MintRequest {
                    payment_hash: preimage.payment_hash(),
                    service: &service,
                    calls,
                    valid_until,
                    capabilities: &caps,
                    max_price_msat: None,
                },
                TokenId(tid),
            );
            (mac, preimage, service)
        })
}

/// Caveat strings that mean something to the evaluator, plus noise.
fn arb_caveat(service: &'static str) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (0u64..50).prop_map(move |n| format!("{service}_calls={n}").into_bytes()),
        (0u64..200).prop_map(move |t| format!("{service}_valid_until={t}").into_bytes()),
        proptest::collection::vec(prop_oneof!["a", "b", "c", "d"], 0..4)
            .prop_map(move |c| format!("{service}_capabilities={}", c.join(",")).into_bytes()),
        proptest::collection::vec(prop_oneof![Just(service.to_owned()), "x", "y"], 1..3).prop_map(
            |s| {
                let names: Vec<&str> = s.iter().map(String::as_str).collect();
                Caveat::services(&names).to_string().into_bytes()
            }
        ),
        Just(b"services=".to_vec()),
        Just(format!("{service}_calls=x").into_bytes()),
        "[a-z_=:,0-9]{0,20}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..20),
    ]
}

fn narrower(narrow: &Grant, wide: &Grant) -> bool {
    fn le(a: Option<u64>, b: Option<u64>) -> bool {
        match (a, b) {
            (_, None) => true,
            (Some(a), Some(b)) => a <= b,
            (None, Some(_)) => false,
        }
    }
    let caps = match (&narrow.capabilities, &wide.capabilities) {
        (_, None) => true,
        (Some(n), Some(w)) => n.iter().all(|c| w.contains(c)),
        (None, Some(_)) => false,
    };
    le(narrow.calls, wide.calls) && le(narrow.valid_until, wide.valid_until) && caps
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    // ---- no panics on arbitrary input ----

    #[test]
    fn parsers_never_panic_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Macaroon::from_binary(&bytes);
        let _ = Identifier::decode(&bytes);
        let _ = Caveat::parse(&bytes);
        let _ = evaluate([bytes.as_slice()], "svc", NOW);
        if let Ok(v) = HeaderValue::from_bytes(&bytes) {
            let mut h = HeaderMap::new();
            h.append("authorization", v.clone());
            h.append("macaroon", v.clone());
            h.append("grpc-metadata-macaroon", v.clone());
            h.append("www-authenticate", v);
            let _ = Credential::from_headers(&h);
            let _ = Challenge::from_headers(&h);
        }
    }

    #[test]
    fn parsers_never_panic_on_strings(s in "\\PC{0,300}") {
        let _ = Macaroon::from_base64(&s);
        let _ = Macaroon::from_hex(&s);
        let _ = Credential::parse_authorization(&s);
        let _ = Credential::from_macaroon_hex(&s);
        let _ = Challenge::parse(&s);
        let _ = evaluate([s.as_bytes()], &s, NOW);
    }

    #[test]
    fn parsers_never_panic_on_header_like_strings(
        s in "(L402|LSAT|l402|Bearer|Payment)?[ \t]*([a-zA-Z0-9+/=_:,\" \\\\-]{0,120})"
    ) {
        let _ = Credential::parse_authorization(&s);
        let _ = Challenge::parse(&s);
    }

    #[test]
    fn mutated_macaroons_never_panic(
        (mac, _, _) in arb_token(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bin = mac.to_binary();
        for (i, b) in &edits {
            let i = i.index(bin.len());
            bin[i] = *b;
        }
        if let Ok(m) = Macaroon::from_binary(&bin) {
            prop_assert_eq!(m.to_binary(), bin.clone());
        }
        let _ = Macaroon::from_binary(&bin[..cut.index(bin.len() + 1)]);
    }

    #[test]
    fn evaluate_never_panics(
        caveats in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..10),
        service in "\\PC{0,20}",
        now in any::<u64>(),
    ) {
        let _ = evaluate(caveats.iter().map(Vec::as_slice), &service, now);
    }

    // ---- round trips ----

    #[test]
    fn macaroon_round_trips(
        key in proptest::collection::vec(any::<u8>(), 0..64),
        id in proptest::collection::vec(any::<u8>(), 0..100),
        location in "\\PC{0,20}",
        caveats in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..8),
    ) {
        let mut m = Macaroon::new(&key, id.clone(), &location);
        for c in &caveats {
            m.add_first_party_caveat(c);
        }
        let bin = m.to_binary();
        let back = Macaroon::from_binary(&bin).unwrap();
        prop_assert_eq!(&back, &m);
        prop_assert_eq!(back.to_binary(), bin);
        prop_assert_eq!(Macaroon::from_base64(&m.to_base64()).unwrap(), m.clone());
        prop_assert_eq!(Macaroon::from_hex(&m.to_hex()).unwrap(), m.clone());
        prop_assert!(back.verify_signature(&key).is_ok());
        prop_assert_eq!(back.identifier(), id.as_slice());
        let want_loc = if location.is_empty() { None } else { Some(location.as_str()) };
        prop_assert_eq!(back.location(), want_loc);
        let got: Vec<&[u8]> = back.first_party_caveats().collect();
        let want: Vec<&[u8]> = caveats.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn accepted_binaries_are_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        if let Ok(m) = Macaroon::from_binary(&bytes) {
            prop_assert_eq!(m.to_binary(), bytes);
        }
    }

    #[test]
    fn identifier_round_trips(hash in any::<[u8; 32]>(), tid in any::<[u8; 32]>()) {
        let id = Identifier::new(PaymentHash(hash), TokenId(tid));
        prop_assert_eq!(Identifier::decode(&id.encode()), Ok(id));
    }

    #[test]
    fn mint_verify_round_trip((mac, preimage, service) in arb_token()) {
        let m = minter();
        let cred = Credential { macaroon: mac.clone(), preimage };
        let v = m.verify(&cred, &service, NOW).unwrap();
        prop_assert_eq!(v.payment_hash, preimage.payment_hash());
        // Through every wire form.
        let parsed = Credential::parse_authorization(&cred.authorization_value()).unwrap().unwrap();
        prop_assert_eq!(&parsed, &cred);
        let via_hex = Credential::from_macaroon_hex(&cred.macaroon_header_value()).unwrap();
        prop_assert_eq!(via_hex.preimage, preimage);
        prop_assert_eq!(m.verify(&via_hex, &service, NOW).unwrap().grant, v.grant);
    }

    #[test]
    fn challenge_round_trips(
        (mac, _, _) in arb_token(),
        invoice in "[a-z0-9]([\\PC]{0,80}[a-z0-9])?",
    ) {
        let c = Challenge { macaroon: mac, invoice };
        let [lsat, l402] = c.header_values();
        prop_assert!(lsat.starts_with("LSAT macaroon=\""));
        prop_assert!(l402.starts_with("L402 macaroon=\""));
        prop_assert_eq!(Challenge::parse(&lsat).unwrap(), c.clone());
        prop_assert_eq!(Challenge::parse(&l402).unwrap(), c.clone());
    }

    // ---- tampering ----

    #[test]
    fn any_single_byte_change_is_rejected(
        (mac, preimage, service) in arb_token(),
        index in any::<prop::sample::Index>(),
        delta in 1u8..=255,
    ) {
        let mut bin = mac.to_binary();
        let i = index.index(bin.len());
        bin[i] = bin[i].wrapping_add(delta);
        if let Ok(tampered) = Macaroon::from_binary(&bin) {
            let cred = Credential { macaroon: tampered, preimage };
            prop_assert!(minter().verify(&cred, &service, NOW).is_err(), "byte {} changed", i);
        }
    }

    #[test]
    fn appended_caveats_only_narrow(
        base in proptest::collection::vec(arb_caveat("svc"), 0..5),
        extra in proptest::collection::vec(arb_caveat("svc"), 1..4),
        now in 0u64..200,
    ) {
        // A server-minted token always starts with a services caveat.
        let base: Vec<Vec<u8>> = std::iter::once(b"services=svc:0".to_vec()).chain(base).collect();
        let all: Vec<&[u8]> = base.iter().chain(&extra).map(Vec::as_slice).collect();
        if let Ok(wide_after) = evaluate(all.iter().copied(), "svc", now) {
            let before = evaluate(base.iter().map(Vec::as_slice), "svc", now);
            prop_assert!(before.is_ok(), "appending made an invalid token valid: {:?}", before);
            let before = before.unwrap();
            prop_assert!(narrower(&wide_after, &before), "{:?} wider than {:?}", wide_after, before);
        }
    }
}

/// Exhaustively: every position, every other byte value.
#[test]
fn exhaustive_single_byte_changes_are_rejected() {
    let preimage = Preimage([5; 32]);
    let mac = minter().mint_with_token_id(
        &MintRequest {
            payment_hash: preimage.payment_hash(),
            service: "svc",
            calls: Some(3),
            valid_until: Some(NOW + 10),
            capabilities: &["a", "b"],
            max_price_msat: None,
        },
        TokenId([6; 32]),
    );
    let bin = mac.to_binary();
    let m = minter();
    assert!(
        m.verify(
            &Credential {
                macaroon: mac.clone(),
                preimage
            },
            "svc",
            NOW
        )
        .is_ok()
    );
    let mut parsed = 0;
    for i in 0..bin.len() {
        for b in 0..=255u8 {
            if b == bin[i] {
                continue;
            }
            let mut t = bin.clone();
            t[i] = b;
            if let Ok(tampered) = Macaroon::from_binary(&t) {
                parsed += 1;
                let cred = Credential {
                    macaroon: tampered,
                    preimage,
                };
                assert!(m.verify(&cred, "svc", NOW).is_err(), "byte {i} -> {b:#04x}");
            }
        }
    }
    assert!(parsed > 0);
}

#[test]
fn holder_cannot_raise_calls_or_extend_expiry() {
    let preimage = Preimage::random();
    let m = minter();
    let (mut mac, _) = m.mint(&MintRequest {
        payment_hash: preimage.payment_hash(),
        service: "svc",
        calls: Some(1),
        valid_until: Some(NOW + 10),
        capabilities: &["read"],
        max_price_msat: None,
    });
    mac.add_first_party_caveat("svc_calls=1000");
    mac.add_first_party_caveat(format!("svc_valid_until={}", NOW + 1_000_000));
    mac.add_first_party_caveat("svc_capabilities=read,admin");
    mac.add_first_party_caveat("services=svc:0,other:0");
    let cred = Credential {
        macaroon: mac,
        preimage,
    };
    let v = m.verify(&cred, "svc", NOW).unwrap();
    assert_eq!(v.grant.calls, Some(1));
    assert_eq!(v.grant.valid_until, Some(NOW + 10));
    assert_eq!(v.grant.capabilities, Some(vec!["read".to_owned()]));
    assert_eq!(
        m.verify(&cred, "other", NOW),
        Err(VerifyError::Caveat(CaveatError::ServiceNotGranted))
    );
    let e = m.verify(&cred, "svc", NOW + 10).unwrap_err();
    assert_eq!(
        e,
        VerifyError::Caveat(CaveatError::Expired {
            valid_until: NOW + 10
        })
    );
    assert!(e.needs_payment());
}
