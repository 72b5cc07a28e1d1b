//! Micro-benchmark of the embedded dev backend's invoice creation: a fresh preimage, a signed
//! (secp256k1 ECDSA) regtest BOLT11 invoice, and bookkeeping of the unpaid invoice. This is the
//! invoice-signing cost of every 402 challenge the gateway issues with the dev backend; real
//! backends add a network round trip on top.
//!
//! `dev_invoice/create`: one `InvoiceBackend::create_invoice` call. No target; it bounds how many
//! challenges per second one core can issue.
//!
//! Run with `cargo bench -p turnpike-lightning`; `cargo test --benches` runs it once as a test.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use turnpike_lightning::{CreateInvoice, DevBackend, InvoiceBackend, Msat};

fn request() -> CreateInvoice {
    CreateInvoice {
        amount: Msat(1_000),
        memo: "1 call to api".into(),
        expiry_secs: 600,
    }
}

fn dev_invoice(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Every iteration leaves one unpaid invoice behind: lift the cap on unpaid invoices so the
    // run never reaches it.
    let backend = DevBackend::new([7; 32]).with_max_unpaid(usize::MAX);
    let issued = rt
        .block_on(backend.create_invoice(request()))
        .expect("invoice");
    assert!(issued.bolt11.starts_with("lnbcrt"));

    let mut group = c.benchmark_group("dev_invoice");
    group.bench_function("create", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                backend
                    .create_invoice(black_box(request()))
                    .await
                    .expect("invoice"),
            )
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = dev_invoice
}
criterion_main!(benches);
