//! E5: memory per live key of the view, and of each candidate map, measured
//! as RSS growth while inserting N keys (default 10M; ATE_BENCH_KEYS=N).

use ate::view::{EventLocation, View, ViewChange};
use ate_bench::rss_bytes;

type Hasher = foldhash::fast::RandomState;

fn measure(name: &str, keys: u64, fill: impl FnOnce(u64) -> Box<dyn std::any::Any>) {
    let before = rss_bytes();
    let kept = fill(keys);
    let after = rss_bytes();
    let per_key = (after.saturating_sub(before)) as f64 / keys as f64;
    println!(
        "{name:<28} keys={keys:<10} rss_growth_mib={:<8.1} bytes_per_key={per_key:.1}",
        (after - before) as f64 / (1 << 20) as f64
    );
    drop(kept);
}

fn key(index: u64) -> u128 {
    (index as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
}

fn main() {
    // `cargo bench` passes --bench; nothing else is parsed.
    let keys: u64 = std::env::var("ATE_BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    measure("ate view (roots)", keys, |n| {
        let view = View::new();
        for i in 0..n {
            view.apply(ViewChange::Put {
                key: key(i),
                location: EventLocation::new(0, (i as u32).wrapping_mul(16)),
                sequence: i,
                parent: None,
            });
        }
        Box::new(view)
    });
    measure("ate view (children of 1k parents)", keys, |n| {
        let view = View::new();
        for i in 0..n {
            let parent = Some((key(i % 1000) ^ 1, 0));
            view.apply(ViewChange::Put {
                key: key(i),
                location: EventLocation::new(0, (i as u32).wrapping_mul(16)),
                sequence: i,
                parent,
            });
        }
        Box::new(view)
    });
    measure("dashmap<u128,u64>", keys, |n| {
        let map = dashmap::DashMap::<u128, u64, Hasher>::default();
        for i in 0..n {
            map.insert(key(i), i);
        }
        Box::new(map)
    });
    measure("papaya<u128,u64>", keys, |n| {
        let map = papaya::HashMap::<u128, u64, Hasher>::with_hasher(Hasher::default());
        for i in 0..n {
            map.pin().insert(key(i), i);
        }
        Box::new(map)
    });
    measure("scc<u128,u64>", keys, |n| {
        let map = scc::HashMap::<u128, u64, Hasher>::with_hasher(Hasher::default());
        for i in 0..n {
            let _ = map.upsert(key(i), i);
        }
        Box::new(map)
    });
    measure("rwlock<hashmap<u128,u64>>", keys, |n| {
        let map = parking_lot::RwLock::new(std::collections::HashMap::<u128, u64, Hasher>::default());
        for i in 0..n {
            map.write().insert(key(i), i);
        }
        Box::new(map)
    });
}
