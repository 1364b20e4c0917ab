//! Readers run while the writer appends: they never block on it for long,
//! never see a torn or partial version, and see every acknowledged commit.

mod common;

use ate::{NewEvent, PrimaryKey};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_whole_versions_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let chain = common::open(dir.path()).await.unwrap();
    let keys: Vec<PrimaryKey> = (0..16).map(|i| PrimaryKey::from_name(&format!("k{i}"))).collect();
    let done = Arc::new(AtomicBool::new(false));
    let acknowledged_round = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (chain, keys, done, acknowledged_round) =
            (chain.clone(), keys.clone(), done.clone(), acknowledged_round.clone());
        readers.push(std::thread::spawn(move || {
            let mut last_seen = vec![0u64; keys.len()];
            let mut reads = 0u64;
            while !done.load(Ordering::Acquire) {
                let floor = acknowledged_round.load(Ordering::Acquire);
                for (index, key) in keys.iter().enumerate() {
                    let Some(event) = chain.get(key) else {
                        assert_eq!(floor, 0, "acknowledged key missing");
                        continue;
                    };
                    // Payload = round number repeated: a torn read would mix rounds.
                    let round = u64::from_le_bytes(event.payload[..8].try_into().unwrap());
                    assert!(event.payload.chunks(8).all(|c| c == round.to_le_bytes()), "torn payload");
                    assert!(round >= last_seen[index], "version went backwards");
                    assert!(round >= floor, "acknowledged round {floor} not visible, saw {round}");
                    last_seen[index] = round;
                    reads += 1;
                }
            }
            reads
        }));
    }
    for round in 1..=300u64 {
        // One commit updates every key: all of it or none is visible.
        let events = keys.iter().map(|key| NewEvent::data(*key, round.to_le_bytes().repeat(32))).collect();
        chain.append(events, None).await.unwrap();
        acknowledged_round.store(round, Ordering::Release);
    }
    done.store(true, Ordering::Release);
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_reads_never_see_half_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let chain = common::open(dir.path()).await.unwrap();
    let keys: Vec<PrimaryKey> = (0..64).map(|i| PrimaryKey::from_name(&format!("k{i}"))).collect();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (chain, keys, done) = (chain.clone(), keys.clone(), done.clone());
        std::thread::spawn(move || {
            let mut snapshots = 0u64;
            while !done.load(Ordering::Acquire) {
                let rounds: Vec<Option<u64>> = chain.read_consistent(|| {
                    keys.iter()
                        .map(|key| chain.get(key).map(|e| u64::from_le_bytes(e.payload[..8].try_into().unwrap())))
                        .collect()
                });
                assert!(rounds.windows(2).all(|w| w[0] == w[1]), "saw a commit half-applied: {rounds:?}");
                snapshots += 1;
            }
            snapshots
        })
    };
    for round in 1..=300u64 {
        let events = keys.iter().map(|key| NewEvent::data(*key, round.to_le_bytes().to_vec())).collect();
        chain.append(events, None).await.unwrap();
    }
    done.store(true, Ordering::Release);
    assert!(reader.join().unwrap() > 0);
}
