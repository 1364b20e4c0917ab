//! AEAD choice for payloads: ATE's seam (aws-lc-rs AES-256-GCM) against the
//! pure-Rust `aes-gcm` crate, sealing 1 KiB and 64 KiB with a fresh key
//! schedule per call, as the engine does (one data key per object).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

fn aead_choice(c: &mut Criterion) {
    let key = [7u8; 32];
    let nonce = [9u8; 12];
    let mut group = c.benchmark_group("aead_seal");
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    for size in [1024usize, 64 << 10] {
        let plaintext = ate_bench::payload(size, 4);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("aws-lc-rs (ate::crypto::seal)", size), &plaintext, |b, p| {
            b.iter(|| black_box(ate::crypto::seal(&key, &nonce, b"header", p)))
        });
        group.bench_with_input(BenchmarkId::new("aes-gcm 0.10", size), &plaintext, |b, p| {
            b.iter(|| {
                let cipher = aes_gcm::Aes256Gcm::new(&key.into());
                black_box(cipher.encrypt(&nonce.into(), Payload { msg: p, aad: b"header" }).unwrap())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, aead_choice);
criterion_main!(benches);
