//! Chains in memory (`ChainBuilder::in_memory`, as the client's replicas
//! use) have no writer thread: the committer writes and publishes its own
//! commit under the append lock. Concurrent committers still get one
//! sequence order, a commit is readable the moment it is acknowledged,
//! segments roll, and the result verifies like any chain.

mod common;

use ate::{AteConfig, ChainBuilder, ChainKey};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_committers_roll_segments_and_read_every_commit_once_acknowledged() {
    let config = AteConfig { segment_size_bytes: 64 << 10, max_commit_bytes: 16 << 10, ..AteConfig::default() };
    let chain = ChainBuilder::in_memory(&config).await.build().open(&ChainKey::from("memory")).await.unwrap();
    const COMMITTERS: usize = 4;
    const COMMITS_EACH: usize = 150;
    let mut tasks = Vec::new();
    for committer in 0..COMMITTERS {
        let chain = chain.clone();
        tasks.push(tokio::spawn(async move {
            let mut receipts = Vec::new();
            for round in 0..COMMITS_EACH {
                let index = round * COMMITTERS + committer;
                let receipt = chain.append(commit_events(index), None).await.unwrap();
                // Acknowledged means applied: no wait for anything else.
                for object in objects_of_commit(index) {
                    let event = chain.get(&key(object)).expect("an acknowledged object is readable at once");
                    assert_eq!(event.payload, payload(object).as_slice(), "object {object}");
                }
                receipts.push(receipt);
            }
            receipts
        }));
    }
    let mut sequences = Vec::new();
    for task in tasks {
        for receipt in task.await.unwrap() {
            sequences.extend(receipt.first_sequence..=receipt.last_sequence);
        }
    }
    // Every sequence handed out exactly once, none skipped.
    sequences.sort_unstable();
    let events = sequences.len() as u64;
    assert_eq!(sequences, (0..events).collect::<Vec<_>>());
    assert_eq!(chain.next_sequence(), events);
    assert_eq!(chain.durable_sequence(), events);
    assert!(chain.segment_count() >= 4, "expected rolls, got {} segments", chain.segment_count());
    let report = chain.verify().await.unwrap();
    assert_eq!(report.events, events);
}

/// A chain in memory prepares its next segment's file while the active one
/// fills, so that a roll under the append lock does not zero a whole
/// segment. Every roll takes the prepared file under its segment's name,
/// the chain reads and verifies as any other, and nothing is left behind
/// but segments and at most the one file being prepared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolls_in_memory_take_the_segment_prepared_ahead() {
    let config = AteConfig { segment_size_bytes: 64 << 10, max_commit_bytes: 16 << 10, ..AteConfig::default() };
    let chain = ChainBuilder::in_memory(&config).await.build().open(&ChainKey::from("memory")).await.unwrap();
    for index in 0..1000 {
        chain.append(commit_events(index), None).await.unwrap();
    }
    assert!(chain.segment_count() >= 10, "expected rolls, got {} segments", chain.segment_count());
    for index in 0..1000 {
        for object in objects_of_commit(index) {
            assert_eq!(chain.get(&key(object)).unwrap().payload, payload(object).as_slice());
        }
    }
    let mut segments = 0;
    let mut others = Vec::new();
    for entry in std::fs::read_dir(chain.path()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        match name.strip_suffix(".seg") {
            Some(stem) if stem.len() == 20 && stem.bytes().all(|byte| byte.is_ascii_digit()) => segments += 1,
            _ => others.push(name),
        }
    }
    assert_eq!(segments, chain.segment_count() as usize);
    others.retain(|name| name != "next-segment.prepared" && name != "LOCK" && !name.starts_with('.'));
    assert!(others.is_empty(), "unexpected files: {others:?}");
    assert_eq!(chain.verify().await.unwrap().events, chain.next_sequence());
}
