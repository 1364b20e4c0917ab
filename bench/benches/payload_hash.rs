//! Payload hashing: one BLAKE3 call per 1 KiB payload against
//! `ate::format::payload_hashes`, which hashes a commit's payloads side by
//! side (the cost behind E1, E2, D1 and `verify`); and a commit's Merkle
//! root (signing, signature checks, `verify`) one hash at a time against
//! `ate::proof::root_of`, level by level side by side.

use ate_bench::payload;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

fn payload_hash(c: &mut Criterion) {
    // 1 KiB plaintext values, and the same values encrypted (two chunks).
    for len in [1024usize, 1100] {
        hash_thousand(c, len);
    }
    commit_root(c);
}

fn commit_root(c: &mut Criterion) {
    let hashes: Vec<[u8; 32]> = (0..1000u64).map(|seed| *blake3::hash(&seed.to_le_bytes()).as_bytes()).collect();
    let mut group = c.benchmark_group("commit_root_1000_events");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("merkle_tree_push_each", |bencher| {
        bencher.iter(|| {
            let mut tree = ate::proof::MerkleTree::with_capacity(hashes.len());
            for hash in black_box(&hashes) {
                tree.push(hash);
            }
            tree.root()
        })
    });
    group.bench_function("root_of", |bencher| bencher.iter(|| ate::proof::root_of(black_box(&hashes))));
    group.finish();
}

fn hash_thousand(c: &mut Criterion, len: usize) {
    let payloads: Vec<Vec<u8>> = (0..1000).map(|seed| payload(len, seed)).collect();
    let slices: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    let mut group = c.benchmark_group(format!("payload_hash_1000x{len}B"));
    group.throughput(Throughput::Bytes(len as u64 * 1000));
    group.bench_function("blake3_hash_each", |bencher| {
        bencher.iter(|| slices.iter().map(|p| *blake3::hash(black_box(p)).as_bytes()).collect::<Vec<[u8; 32]>>())
    });
    group.bench_function("payload_hashes", |bencher| bencher.iter(|| ate::format::payload_hashes(black_box(&slices))));
    group.finish();
}

criterion_group!(benches, payload_hash);
criterion_main!(benches);
