//! E3: point lookups through the materialized view, zero-copy into the mmap.

use ate::{AteConfig, StorageBackend};
use ate_bench::{config, ingest, key, open, payload, random_index, scratch_dir, RANDOM_SEED};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;

const KEYS: u64 = 1_000_000;

fn view_lookup(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // The defaults (pages dropped 64 MiB behind the appends, which lookups
    // read back into huge pages), every page kept as the appends wrote it,
    // a page cache populated with huge pages ahead of the appends
    // (`populate_ahead_bytes`) and appends with O_DIRECT, read back into
    // huge pages too (docs/benchmarks.md, seventeenth and eighteenth
    // sessions). `None`: the default window.
    for (variant, populate_ahead_bytes, direct_io, drop_behind_bytes) in [
        ("", 0, false, None),
        ("_all_pages_kept", 0, false, Some(0)),
        ("_populated_ahead", 32 << 20, false, Some(0)),
        ("_direct_appends", 0, true, None),
    ] {
        let dir = scratch_dir();
        let chain = runtime.block_on(async {
            let config = config(dir.path(), StorageBackend::IoUring);
            let drop_behind_bytes = drop_behind_bytes.unwrap_or(config.drop_behind_bytes);
            let chain = open(&AteConfig { populate_ahead_bytes, direct_io, drop_behind_bytes, ..config }).await;
            ingest(&chain, KEYS / 1000, 1000, 4, &payload(1024, 2), 0).await;
            chain
        });
        assert_eq!(chain.len() as u64, KEYS);
        let mut group = c.benchmark_group("E3_point_lookup");
        group.throughput(Throughput::Elements(1)).measurement_time(Duration::from_secs(5));
        group.bench_function(format!("hit_1M_keys_1KiB_payload{variant}"), |bencher| {
            let mut state = RANDOM_SEED;
            bencher.iter(|| {
                let event = chain.get(&key(random_index(&mut state, KEYS))).expect("present");
                black_box(event.payload[0])
            })
        });
        group.finish();

        // The same lookups, 64 per `get_many` call: records fetched side by side.
        const BATCH: u64 = 64;
        let mut group = c.benchmark_group("E3_point_lookup_batched");
        group.throughput(Throughput::Elements(BATCH)).measurement_time(Duration::from_secs(5));
        group.bench_function(format!("get_many_64_of_1M_keys_1KiB_payload{variant}"), |bencher| {
            let mut state = RANDOM_SEED;
            let mut keys = Vec::with_capacity(BATCH as usize);
            bencher.iter(|| {
                keys.clear();
                keys.extend((0..BATCH).map(|_| key(random_index(&mut state, KEYS))));
                let events = chain.get_many(&keys);
                black_box(events.iter().map(|event| event.expect("present").payload[0]).fold(0u8, |a, b| a ^ b))
            })
        });
        group.finish();

        if variant.is_empty() {
            let mut group = c.benchmark_group("E3_point_lookup");
            group.throughput(Throughput::Elements(1)).measurement_time(Duration::from_secs(5));
            group.bench_function("miss", |bencher| {
                let mut index = KEYS;
                bencher.iter(|| {
                    index += 1;
                    black_box(chain.get(&key(index)).is_none())
                })
            });
            group.finish();
        }
    }
}

criterion_group!(benches, view_lookup);
criterion_main!(benches);
