//! Interoperability with pymacaroons 0.13, an independent macaroon implementation.
//!
//! Needs `TURNPIKE_TEST_PYTHON` = a Python interpreter with pymacaroons installed, e.g.
//!
//! ```text
//! python3 -m venv .venv && .venv/bin/pip install pymacaroons==0.13.0
//! TURNPIKE_TEST_PYTHON=$PWD/.venv/bin/python cargo test -p turnpike-l402 --test pymacaroons_interop
//! ```
//!
//! Without it the tests print `SKIPPED: ...` and pass, unless `TURNPIKE_STRICT_TESTS=1`, in
//! which case they fail.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use turnpike_l402::caveat::Caveat;
use turnpike_l402::credential::Credential;
use turnpike_l402::identifier::Identifier;
use turnpike_l402::macaroon::Macaroon;
use turnpike_l402::root_key::MasterKey;
use turnpike_l402::token::{DEFAULT_LOCATION, MintRequest, Minter};
use turnpike_l402::{Preimage, TokenId};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/pymacaroons_check.py"
);

const SETUP: &str = "set TURNPIKE_TEST_PYTHON to a Python with pymacaroons 0.13, e.g. \
     `python3 -m venv .venv && .venv/bin/pip install pymacaroons==0.13.0 && \
     export TURNPIKE_TEST_PYTHON=$PWD/.venv/bin/python`";

/// The interpreter, or `None` (after reporting) when the test should be skipped.
fn python(test: &str) -> Option<String> {
    match std::env::var("TURNPIKE_TEST_PYTHON") {
        Ok(p) if !p.trim().is_empty() => Some(p),
        _ => {
            if std::env::var("TURNPIKE_STRICT_TESTS").as_deref() == Ok("1") {
                panic!(
                    "{test}: TURNPIKE_TEST_PYTHON is not set (TURNPIKE_STRICT_TESTS=1): {SETUP}"
                );
            }
            eprintln!("SKIPPED: {test}: TURNPIKE_TEST_PYTHON is not set; to run it, {SETUP}");
            None
        }
    }
}

fn run(python: &str, command: &str, request: &Value) -> Value {
    let mut child = Command::new(python)
        .arg(SCRIPT)
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(request.to_string().as_bytes())
        .expect("write request");
    let out = child.wait_with_output().expect("wait for python");
    assert!(
        out.status.success(),
        "pymacaroons_check.py {command} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON from script ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

/// (a) Turnpike mints, pymacaroons verifies.
#[test]
fn pymacaroons_verifies_turnpike_tokens() {
    let Some(py) = python("pymacaroons_verifies_turnpike_tokens") else {
        return;
    };
    let master = MasterKey::random();
    let minter = Minter::new(master.clone());
    let preimage = Preimage::random();
    let requests = [
        MintRequest {
            payment_hash: preimage.payment_hash(),
            service: "svc",
            calls: Some(10),
            valid_until: Some(1_900_000_000),
            capabilities: &["read", "write"],
            max_price_msat: None,
        },
        MintRequest {
            payment_hash: preimage.payment_hash(),
            service: "lightning_loop",
            calls: None,
            valid_until: None,
            capabilities: &[],
            max_price_msat: None,
        },
    ];
    for req in &requests {
        let (mut mac, token_id) = minter.mint(req);
        // A holder-appended caveat, too.
        mac.add_first_party_caveat(Caveat::preimage(&preimage).to_string());
        let root = master.root_key(&token_id);
        let caveats: Vec<String> = mac
            .first_party_caveats()
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();

        let reply = run(
            &py,
            "verify",
            &json!({
                "root_key_hex": hex::encode(root),
                "macaroon_hex": mac.to_hex(),
                "satisfy": caveats,
            }),
        );
        assert_eq!(reply["verified"], json!(true), "{reply}");
        assert_eq!(reply["version"], json!(2));
        assert_eq!(reply["location"], json!(DEFAULT_LOCATION));
        assert_eq!(
            reply["identifier_hex"],
            json!(hex::encode(
                Identifier::new(req.payment_hash, token_id).encode()
            ))
        );
        assert_eq!(strings(&reply["caveats"]), caveats);
        assert_eq!(reply["signature_hex"], json!(hex::encode(mac.signature())));

        // Negative controls: a wrong root key, and an unsatisfied caveat.
        let reply = run(
            &py,
            "verify",
            &json!({
                "root_key_hex": hex::encode(master.root_key(&TokenId::random())),
                "macaroon_hex": mac.to_hex(),
                "satisfy": caveats,
            }),
        );
        assert_eq!(reply["verified"], json!(false), "{reply}");
        let reply = run(
            &py,
            "verify",
            &json!({
                "root_key_hex": hex::encode(root),
                "macaroon_hex": mac.to_hex(),
                "satisfy": &caveats[1..],
            }),
        );
        assert_eq!(reply["verified"], json!(false), "{reply}");
    }
}

/// (b) pymacaroons mints, Turnpike decodes and verifies.
#[test]
fn turnpike_verifies_pymacaroons_tokens() {
    let Some(py) = python("turnpike_verifies_pymacaroons_tokens") else {
        return;
    };
    let master = MasterKey::random();
    let minter = Minter::new(master.clone());
    let preimage = Preimage::random();
    let token_id = TokenId::random();
    let identifier = Identifier::new(preimage.payment_hash(), token_id);
    let root = master.root_key(&token_id);
    let caveats = [
        "services=svc:0",
        "svc_capabilities=read",
        "svc_calls=3",
        "svc_valid_until=1900000000",
    ];

    let reply = run(
        &py,
        "mint",
        &json!({
            "root_key_hex": hex::encode(root),
            "location": DEFAULT_LOCATION,
            "identifier_hex": hex::encode(identifier.encode()),
            "caveats": caveats,
        }),
    );
    let hex_form = reply["macaroon_hex"].as_str().expect("macaroon_hex");
    let mac = Macaroon::from_hex(hex_form).expect("decode pymacaroons V2 binary");
    // pymacaroons' own text form: URL-safe base64 without padding.
    let b64url = reply["macaroon_b64url"].as_str().expect("macaroon_b64url");
    assert_eq!(Macaroon::from_base64(b64url).expect("decode b64url"), mac);

    assert_eq!(mac.identifier(), identifier.encode());
    assert_eq!(mac.location(), Some(DEFAULT_LOCATION));
    let got: Vec<&[u8]> = mac.first_party_caveats().collect();
    let want: Vec<&[u8]> = caveats.iter().map(|c| c.as_bytes()).collect();
    assert_eq!(got, want);
    assert_eq!(reply["signature_hex"], json!(hex::encode(mac.signature())));
    mac.verify_signature(&root).expect("signature verifies");
    assert!(mac.verify_signature(&[0; 32]).is_err());

    // Byte for byte what Turnpike mints for the same request and token id.
    let ours = minter.mint_with_token_id(
        &MintRequest {
            payment_hash: preimage.payment_hash(),
            service: "svc",
            calls: Some(3),
            valid_until: Some(1_900_000_000),
            capabilities: &["read"],
            max_price_msat: None,
        },
        token_id,
    );
    assert_eq!(ours.to_binary(), mac.to_binary());
    assert_eq!(ours.to_hex(), hex_form);

    // And it is a valid L402 token for the gateway.
    let cred = Credential {
        macaroon: mac,
        preimage,
    };
    let v = minter
        .verify(&cred, "svc", 1_800_000_000)
        .expect("verifies");
    assert_eq!(v.token_id, token_id);
    assert_eq!(v.grant.calls, Some(3));
    assert_eq!(v.grant.valid_until, Some(1_900_000_000));
    assert_eq!(v.grant.capabilities, Some(vec!["read".to_owned()]));
}

/// (c) pymacaroons reproduces golden vector 3 (the Aperture-style token).
#[test]
fn pymacaroons_reproduces_golden_vector_3() {
    let Some(py) = python("pymacaroons_reproduces_golden_vector_3") else {
        return;
    };
    let reply = run(
        &py,
        "mint",
        &json!({
            "root_key_hex": "00".repeat(32),
            "location": "lsat",
            "identifier_hex": "0000163102a9c88fa4ec9ac9937b6f070bc3e27249a81ad7a05f398ac5d7d16f7beafed74b3ef24820f440601eff5bfb42bef4d615c4948cec8aca3cb15bd23f1013",
            "caveats": [
                "services=lightning_loop:0",
                "lightning_loop_capabilities=loop_out,loop_in",
                "lightning_loop_valid_until=1700000000",
            ],
        }),
    );
    let mac = Macaroon::from_hex(reply["macaroon_hex"].as_str().unwrap()).unwrap();
    assert_eq!(
        mac.to_base64(),
        "AgEEbHNhdAJCAAAWMQKpyI+k7JrJk3tvBwvD4nJJqBrXoF85isXX0W976v7XSz7ySCD0QGAe/1v7Qr701hXElIzsiso8sVvSPxATAAIZc2VydmljZXM9bGlnaHRuaW5nX2xvb3A6MAACLGxpZ2h0bmluZ19sb29wX2NhcGFiaWxpdGllcz1sb29wX291dCxsb29wX2luAAIlbGlnaHRuaW5nX2xvb3BfdmFsaWRfdW50aWw9MTcwMDAwMDAwMAAABiCNNQV05X02pRNNsI0tfDbHdOkWYKR3t5RPHJ6Wc7g8gg=="
    );
    mac.verify_signature(&[0; 32]).unwrap();
}
