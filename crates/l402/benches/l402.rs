//! Micro-benchmarks of the L402 core: what the gateway does per request, without I/O.
//!
//! - `credential_parse_verify/*`: parse the `Authorization: L402 <macaroon>:<preimage>` header
//!   and verify the credential (identifier, preimage, HMAC chain, caveats). **Target: ≤ 5 µs
//!   median** for a single-call token.
//! - `credential_verify_only/*`: verification of an already-parsed credential.
//! - `verify_flat/*`: verification of credentials of pseudo-randomly chosen tokens among 1,000 or
//!   1,000,000 ever issued. Verification is stateless (root keys are derived from the master
//!   key), so both must take the same time.
//! - `macaroon_mint/*`: minting a single-call token, with and without base64 encoding.
//! - `challenge_build`: minting the token of a 402 challenge and building both
//!   `WWW-Authenticate` values around a prebuilt BOLT11 invoice (signing the invoice is measured
//!   by turnpike-lightning's `dev_invoice` bench).
//!
//! Run with `cargo bench -p turnpike-l402`; `cargo test --benches` runs each once as a test.

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bitcoin::hashes::{Hash as _, sha256};
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use http::header::AUTHORIZATION;
use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
use sha2::{Digest as _, Sha256};
use turnpike_l402::challenge::Challenge;
use turnpike_l402::credential::Credential;
use turnpike_l402::root_key::MasterKey;
use turnpike_l402::token::{MintRequest, Minter};
use turnpike_l402::{Preimage, TokenId};

const SERVICE: &str = "api";

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn minter() -> Minter {
    Minter::new(MasterKey::from_bytes([0x5a; 32]))
}

fn single_call(preimage: &Preimage) -> MintRequest<'static> {
    MintRequest {
        payment_hash: preimage.payment_hash(),
        service: SERVICE,
        calls: Some(1),
        valid_until: None,
        capabilities: &[],
        max_price_msat: None,
    }
}

fn time_pass(preimage: &Preimage, now: u64) -> MintRequest<'static> {
    MintRequest {
        payment_hash: preimage.payment_hash(),
        service: SERVICE,
        calls: None,
        valid_until: Some(now + 3600),
        capabilities: &[],
        max_price_msat: None,
    }
}

/// Request headers carrying the credential of a token minted for `req`.
fn headers_for(minter: &Minter, req: &MintRequest<'_>, preimage: Preimage) -> HeaderMap {
    let (macaroon, _) = minter.mint(req);
    let cred = Credential { macaroon, preimage };
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        cred.authorization_value().parse().expect("header value"),
    );
    headers
}

fn parse_and_verify(minter: &Minter, headers: &HeaderMap, now: u64) -> bool {
    let cred = Credential::from_headers(headers)
        .expect("well-formed")
        .expect("present");
    minter.verify(&cred, SERVICE, now).is_ok()
}

fn credential_parse_verify(c: &mut Criterion) {
    let minter = minter();
    let now = now_unix();
    let mut group = c.benchmark_group("credential_parse_verify");
    let cases = [
        ("single_call", single_call(&Preimage([1; 32]))),
        ("time_pass", time_pass(&Preimage([1; 32]), now)),
    ];
    for (name, req) in cases {
        let headers = headers_for(&minter, &req, Preimage([1; 32]));
        assert!(parse_and_verify(&minter, &headers, now), "{name} verifies");
        group.bench_function(name, |b| {
            b.iter(|| {
                let cred = Credential::from_headers(black_box(&headers))
                    .unwrap()
                    .unwrap();
                black_box(minter.verify(&cred, black_box(SERVICE), black_box(now)))
            })
        });
    }
    group.finish();
}

fn credential_verify_only(c: &mut Criterion) {
    let minter = minter();
    let now = now_unix();
    let preimage = Preimage([1; 32]);
    let (macaroon, _) = minter.mint(&single_call(&preimage));
    let cred = Credential { macaroon, preimage };
    assert!(minter.verify(&cred, SERVICE, now).is_ok());
    let mut group = c.benchmark_group("credential_verify_only");
    group.bench_function("single_call", |b| {
        b.iter(|| black_box(minter.verify(black_box(&cred), black_box(SERVICE), black_box(now))))
    });
    group.finish();
}

/// The credential of token number `index`: its preimage and token id are derived from the
/// index, so any of `n` tokens can be rebuilt on demand without storing `n` of them.
fn credential_of(minter: &Minter, index: u64) -> Credential {
    let seed = |tag: &[u8]| -> [u8; 32] {
        Sha256::new()
            .chain_update(tag)
            .chain_update(index.to_le_bytes())
            .finalize()
            .into()
    };
    let preimage = Preimage(seed(b"preimage"));
    let macaroon = minter.mint_with_token_id(&single_call(&preimage), TokenId(seed(b"token")));
    Credential { macaroon, preimage }
}

fn verify_flat(c: &mut Criterion) {
    // A prime far above both token counts: `i * STRIDE % n` visits the tokens in a scattered
    // order.
    const STRIDE: u64 = 1_000_000_007;
    let minter = minter();
    let now = now_unix();
    let mut group = c.benchmark_group("verify_flat");
    for (name, n) in [("1k_tokens", 1_000u64), ("1m_tokens", 1_000_000)] {
        assert!(
            minter
                .verify(&credential_of(&minter, n - 1), SERVICE, now)
                .is_ok()
        );
        let mut i = 0u64;
        group.bench_function(name, |b| {
            // By reference, so dropping the credential stays outside the timing (as in
            // `credential_verify_only`).
            b.iter_batched_ref(
                || {
                    i += 1;
                    credential_of(&minter, i.wrapping_mul(STRIDE) % n)
                },
                |cred| black_box(minter.verify(cred, black_box(SERVICE), black_box(now))),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn macaroon_mint(c: &mut Criterion) {
    let minter = minter();
    let req = single_call(&Preimage([1; 32]));
    let mut group = c.benchmark_group("macaroon_mint");
    group.bench_function("mint", |b| {
        b.iter(|| black_box(minter.mint(black_box(&req))))
    });
    group.bench_function("mint_and_encode", |b| {
        b.iter(|| black_box(minter.mint(black_box(&req)).0.to_base64()))
    });
    group.finish();
}

/// A real, signed regtest BOLT11 invoice for 1 sat, as a Lightning backend would return it.
fn invoice(preimage: &Preimage) -> String {
    let secp = Secp256k1::new();
    let key = SecretKey::from_slice(&[0x42; 32]).expect("valid key");
    InvoiceBuilder::new(Currency::Regtest)
        .description("GET /api".to_owned())
        .amount_milli_satoshis(1_000)
        .payment_hash(sha256::Hash::from_byte_array(preimage.payment_hash().0))
        .payment_secret(PaymentSecret([7; 32]))
        .duration_since_epoch(Duration::from_secs(now_unix()))
        .expiry_time(Duration::from_secs(600))
        .min_final_cltv_expiry_delta(80)
        .build_signed(|m| secp.sign_ecdsa_recoverable(m, &key))
        .expect("valid invoice")
        .to_string()
}

fn challenge_build(c: &mut Criterion) {
    let minter = minter();
    let preimage = Preimage([1; 32]);
    let req = single_call(&preimage);
    let invoice = invoice(&preimage);
    assert!(turnpike_l402::bolt11::Invoice::parse(&invoice).is_ok());
    c.bench_function("challenge_build", |b| {
        b.iter(|| {
            let (macaroon, _) = minter.mint(black_box(&req));
            let challenge = Challenge {
                macaroon,
                invoice: black_box(&invoice).clone(),
            };
            black_box(challenge.header_values())
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = credential_parse_verify, credential_verify_only, verify_flat, macaroon_mint,
        challenge_build
}
criterion_main!(benches);
