//! Candidate maps for the view (key u128 → packed location u64): point
//! lookups and single-writer inserts. The view uses the winner; memory per
//! key is measured by the `view_memory` bench.

use ate_bench::{random_index, RANDOM_SEED};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::collections::HashMap;
use std::time::Duration;

type Hasher = foldhash::fast::RandomState;
const KEYS: u64 = 1_000_000;

fn key(index: u64) -> u128 {
    (index as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
}

trait Candidate: Sync {
    fn insert(&self, key: u128, value: u64);
    fn get(&self, key: u128) -> Option<u64>;
}

struct Dash(dashmap::DashMap<u128, u64, Hasher>);
impl Candidate for Dash {
    fn insert(&self, key: u128, value: u64) {
        self.0.insert(key, value);
    }
    fn get(&self, key: u128) -> Option<u64> {
        self.0.get(&key).map(|v| *v)
    }
}

struct Papaya(papaya::HashMap<u128, u64, Hasher>);
impl Candidate for Papaya {
    fn insert(&self, key: u128, value: u64) {
        self.0.pin().insert(key, value);
    }
    fn get(&self, key: u128) -> Option<u64> {
        self.0.pin().get(&key).copied()
    }
}

struct Scc(scc::HashMap<u128, u64, Hasher>);
impl Candidate for Scc {
    fn insert(&self, key: u128, value: u64) {
        let _ = self.0.upsert(key, value);
    }
    fn get(&self, key: u128) -> Option<u64> {
        self.0.read(&key, |_, v| *v)
    }
}

struct Locked(parking_lot::RwLock<HashMap<u128, u64, Hasher>>);
impl Candidate for Locked {
    fn insert(&self, key: u128, value: u64) {
        self.0.write().insert(key, value);
    }
    fn get(&self, key: u128) -> Option<u64> {
        self.0.read().get(&key).copied()
    }
}

fn candidates() -> Vec<(&'static str, Box<dyn Candidate>)> {
    vec![
        ("dashmap", Box::new(Dash(Default::default()))),
        ("papaya", Box::new(Papaya(papaya::HashMap::with_hasher(Hasher::default())))),
        ("scc", Box::new(Scc(scc::HashMap::with_hasher(Hasher::default())))),
        ("rwlock_hashmap", Box::new(Locked(Default::default()))),
    ]
}

fn view_maps(c: &mut Criterion) {
    let mut group = c.benchmark_group("view_map_candidates");
    group
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(1));
    for (name, map) in candidates() {
        for index in 0..KEYS {
            map.insert(key(index), index);
        }
        group.bench_with_input(BenchmarkId::new("get_hit_1M", name), &map, |bencher, map| {
            let mut state = RANDOM_SEED;
            bencher.iter(|| black_box(map.get(key(random_index(&mut state, KEYS)))))
        });
        group.bench_with_input(BenchmarkId::new("overwrite_1M", name), &map, |bencher, map| {
            let mut index = 0u64;
            bencher.iter(|| {
                index = (index + 1) % KEYS;
                map.insert(key(index), index + 1)
            })
        });
        // Reads on both cores while one thread writes: the view's real pattern.
        group.bench_with_input(BenchmarkId::new("get_hit_1M_with_concurrent_writer", name), &map, |bencher, map| {
            let stop = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    let mut index = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        index = (index + 7) % KEYS;
                        map.insert(key(index), index);
                    }
                });
                let mut state = RANDOM_SEED;
                bencher.iter(|| black_box(map.get(key(random_index(&mut state, KEYS)))));
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, view_maps);
criterion_main!(benches);
