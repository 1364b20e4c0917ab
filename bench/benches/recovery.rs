//! E4: reopening (recovering) a large chain: segment scan with checksums,
//! hash chain of the active segment, view rebuild.

use ate::StorageBackend;
use ate_bench::{config, ingest, open, payload, scratch_dir};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;

fn recovery(c: &mut Criterion) {
    // ATE_BENCH_RECOVERY_GIB scales the chain (default 1 GiB; E4 names 4 GiB).
    let gib: u64 = std::env::var("ATE_BENCH_RECOVERY_GIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = scratch_dir();
    let conf = config(dir.path(), StorageBackend::IoUring);
    let events = gib * (1 << 30) / 1232; // 1 KiB payload = 1232-byte record
    let bytes = runtime.block_on(async {
        let chain = open(&conf).await;
        ingest(&chain, events / 1000, 1000, 4, &payload(1024, 3), 0).await;
        let bytes = chain.next_sequence() * 1232;
        drop(chain);
        bytes
    });
    let mut group = c.benchmark_group("E4_recover");
    group.sample_size(10).measurement_time(Duration::from_secs(20)).throughput(Throughput::Bytes(bytes));
    group.bench_function(format!("reopen_{gib}GiB_1KiB_events"), |bencher| {
        bencher.iter(|| {
            runtime.block_on(async {
                let chain = open(&conf).await;
                assert_eq!(chain.len() as u64, events / 1000 * 1000);
            })
        })
    });
    group.finish();
}

criterion_group!(benches, recovery);
criterion_main!(benches);
