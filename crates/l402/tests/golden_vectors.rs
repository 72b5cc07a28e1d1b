//! The golden vectors of `l402-vectors.md` (verified independently with pymacaroons 0.13).

use turnpike_l402::caveat::{CaveatError, Grant, evaluate};
use turnpike_l402::credential::Credential;
use turnpike_l402::identifier::Identifier;
use turnpike_l402::macaroon::Macaroon;
use turnpike_l402::{PaymentHash, TokenId};

/// Vector 1: libmacaroons reference signatures.
#[test]
fn vector_1_libmacaroons() {
    let key = b"this is our super secret key; only we should know it";
    let mut m = Macaroon::new(key, "we used our secret key", "http://mybank/");
    assert_eq!(
        hex::encode(m.signature()),
        "e3d9e02908526c4c0039ae15114115d97fdd68bf2ba379b342aaf0f617d0552f"
    );
    m.add_first_party_caveat("account = 3735928559");
    assert_eq!(
        hex::encode(m.signature()),
        "1efe4763f290dbce0c1d08477367e11f4eee456a64933cf662d79772dbb82128"
    );
    let back = Macaroon::from_binary(&m.to_binary()).unwrap();
    back.verify_signature(key).unwrap();
}

const HASH: &str = "163102a9c88fa4ec9ac9937b6f070bc3e27249a81ad7a05f398ac5d7d16f7bea";
const TOKEN_ID: &str = "fed74b3ef24820f440601eff5bfb42bef4d615c4948cec8aca3cb15bd23f1013";
const ID_HEX: &str = "0000163102a9c88fa4ec9ac9937b6f070bc3e27249a81ad7a05f398ac5d7d16f7beafed74b3ef24820f440601eff5bfb42bef4d615c4948cec8aca3cb15bd23f1013";

fn identifier() -> Identifier {
    Identifier {
        payment_hash: HASH.parse::<PaymentHash>().unwrap(),
        token_id: TOKEN_ID.parse::<TokenId>().unwrap(),
    }
}

/// Vector 2: the L402 identifier.
#[test]
fn vector_2_identifier() {
    let id = identifier();
    assert_eq!(hex::encode(id.encode()), ID_HEX);
    assert_eq!(Identifier::decode(&hex::decode(ID_HEX).unwrap()), Ok(id));
}

const V3_B64: &str = "AgEEbHNhdAJCAAAWMQKpyI+k7JrJk3tvBwvD4nJJqBrXoF85isXX0W976v7XSz7ySCD0QGAe/1v7Qr701hXElIzsiso8sVvSPxATAAIZc2VydmljZXM9bGlnaHRuaW5nX2xvb3A6MAACLGxpZ2h0bmluZ19sb29wX2NhcGFiaWxpdGllcz1sb29wX291dCxsb29wX2luAAIlbGlnaHRuaW5nX2xvb3BfdmFsaWRfdW50aWw9MTcwMDAwMDAwMAAABiCNNQV05X02pRNNsI0tfDbHdOkWYKR3t5RPHJ6Wc7g8gg==";
const V3_CAVEATS: [&str; 3] = [
    "services=lightning_loop:0",
    "lightning_loop_capabilities=loop_out,loop_in",
    "lightning_loop_valid_until=1700000000",
];

/// Vector 3: a full Aperture-style token, built and decoded.
#[test]
fn vector_3_aperture_token() {
    let mut m = Macaroon::new(&[0; 32], identifier().encode(), "lsat");
    for c in V3_CAVEATS {
        m.add_first_party_caveat(c);
    }
    assert_eq!(
        hex::encode(m.signature()),
        "8d350574e57d36a5134db08d2d7c36c774e91660a477b7944f1c9e9673b83c82"
    );
    assert_eq!(m.to_base64(), V3_B64);

    let d = Macaroon::from_base64(V3_B64).unwrap();
    assert_eq!(d, m);
    d.verify_signature(&[0; 32]).unwrap();
    assert!(d.verify_signature(&[1; 32]).is_err());
    assert_eq!(d.location(), Some("lsat"));
    assert_eq!(Identifier::decode(d.identifier()), Ok(identifier()));
    let caveats: Vec<&[u8]> = d.first_party_caveats().collect();
    assert_eq!(caveats, V3_CAVEATS.map(str::as_bytes));

    assert_eq!(
        evaluate(d.first_party_caveats(), "lightning_loop", 1_699_999_999),
        Ok(Grant {
            valid_until: Some(1_700_000_000),
            calls: None,
            capabilities: Some(vec!["loop_out".into(), "loop_in".into()]),
            max_price_msat: None,
        })
    );
    assert_eq!(
        evaluate(d.first_party_caveats(), "lightning_loop", 1_700_000_000),
        Err(CaveatError::Expired {
            valid_until: 1_700_000_000
        })
    );
    assert_eq!(
        evaluate(d.first_party_caveats(), "pool", 0),
        Err(CaveatError::ServiceNotGranted)
    );
}

/// Vector 4: Aperture's authenticator test header.
#[test]
fn vector_4_header() {
    let b64 = "AgEIYXBlcnR1cmUCBEFBPT0AAklwcmVpbWFnZT00OTM0OWRmZWE0YWJlZDNjZDE0ZjZkMzU2YWZhODNkZTk3ODdiNjA5ZjA4OGM4ZGYwOWJhY2M3YjRiZDIxYjM5AAAGIKMp8NcUmtVBYudEjYaIJemlCNTelfuG1dAGAAJJPKa1";
    let pre = "49349dfea4abed3cd14f6d356afa83de9787b609f088c8df09bacc7b4bd21b39";
    let header = format!("L402 {b64}:{pre}");
    let cred = Credential::parse_authorization(&header).unwrap().unwrap();
    assert_eq!(cred.preimage.to_hex(), pre);
    assert_eq!(cred.macaroon.to_base64(), b64);
    cred.macaroon
        .verify_signature(b"aabbccddeeff00112233445566778899")
        .unwrap();
    assert_eq!(cred.macaroon.identifier(), b"AA==");
    assert_eq!(cred.macaroon.location(), Some("aperture"));
    assert_eq!(
        hex::encode(cred.macaroon.signature()),
        "a329f0d7149ad54162e7448d868825e9a508d4de95fb86d5d0060002493ca6b5"
    );
    assert_eq!(
        cred.preimage.payment_hash().to_hex(),
        "60aae3f3299441b06b61b5aaa4db89c4b5c8627de0cc2e5535882d8f42175265"
    );
    // The same credential in the other accepted forms.
    assert_eq!(
        Credential::parse_authorization(&format!("LSAT {b64}:{pre}")),
        Ok(Some(cred.clone()))
    );
    assert_eq!(
        Credential::from_macaroon_hex(&cred.macaroon.to_hex()),
        Ok(cred.clone())
    );
    assert_eq!(cred.authorization_value(), header);
}
