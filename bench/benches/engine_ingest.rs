//! E1: embedded ingest of 1 KiB plaintext events in `Batched` durability,
//! io_uring and pwrite backends side by side, each through the page cache
//! and with direct appends (`O_DIRECT`), and io_uring through the page cache
//! keeping every page (`drop_behind_bytes = 0`; by default pages 64 MiB
//! behind the appends are dropped).

use ate::{AteConfig, StorageBackend};
use ate_bench::{config, ingest, open, payload, scratch_dir};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};

fn engine_ingest(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let value = payload(1024, 1);
    let mut group = c.benchmark_group("E1_ingest_1KiB_batched");
    group.sample_size(10).measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_secs(2));
    // 16 committers of 1,000 keep enough commits queued behind the one being
    // synced that the disk, not the round trip, sets the pace (see
    // docs/benchmarks.md, seventh session).
    for (events_per_commit, committers) in [(1000u64, 4u64), (1000, 16), (100, 8), (1, 64)] {
        // `None`: the default drop-behind window.
        for (backend, direct_io, drop_behind_bytes) in [
            (StorageBackend::IoUring, false, None),
            (StorageBackend::IoUring, true, None),
            (StorageBackend::IoUring, false, Some(0)),
            (StorageBackend::Portable, false, None),
            (StorageBackend::Portable, true, None),
        ] {
            group.throughput(Throughput::Elements(events_per_commit));
            let appends = match (direct_io, drop_behind_bytes) {
                (true, _) => "direct",
                (false, None) => "buffered",
                (false, Some(_)) => "buffered_all_pages_kept",
            };
            let name = format!("{backend:?}_{appends}/{events_per_commit}_per_commit_{committers}_committers");
            group.bench_function(name, |bencher| {
                bencher.iter_custom(|commits| {
                    runtime.block_on(async {
                        let dir = scratch_dir();
                        let config = config(dir.path(), backend);
                        let drop_behind_bytes = drop_behind_bytes.unwrap_or(config.drop_behind_bytes);
                        let chain = open(&AteConfig { direct_io, drop_behind_bytes, ..config }).await;
                        let start = Instant::now();
                        ingest(&chain, commits, events_per_commit, committers, &value, 0).await;
                        start.elapsed()
                    })
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, engine_ingest);
criterion_main!(benches);
