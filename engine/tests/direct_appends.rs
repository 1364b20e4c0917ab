//! Direct appends (`AteConfig::direct_io`): whole 4 KiB blocks written with
//! `O_DIRECT`, each write rewriting the block the previous one ended in.
//! Readers of the mmap see every acknowledged record while writes land
//! around them, segments roll, nothing is lost across reopen and the chain
//! verifies; a crash torn anywhere in those block writes loses nothing
//! acknowledged.

mod common;

use ate::{AteConfig, Durability, StorageBackend};
use common::*;
use std::sync::Arc;

fn direct_config(dir: &std::path::Path, backend: StorageBackend) -> AteConfig {
    // Small segments (whole blocks) so the run rolls several times.
    AteConfig {
        direct_io: true,
        backend,
        segment_size_bytes: 128 << 10,
        max_commit_bytes: 32 << 10,
        max_write_bytes: 32 << 10,
        ..small_config(dir)
    }
}

/// Whether this filesystem takes `O_DIRECT` (tmpfs before Linux 6.6 does not;
/// the writer then appends through the page cache, and this test says so).
fn filesystem_has_direct_io(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join("direct-probe");
    std::fs::write(&probe, b"").unwrap();
    let opened = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(&probe).is_ok();
    std::fs::remove_file(probe).unwrap();
    opened
}

async fn concurrent_commits_and_readers(backend: StorageBackend) {
    let dir = tempfile::tempdir().unwrap();
    if !filesystem_has_direct_io(dir.path()) {
        eprintln!("SKIPPED O_DIRECT itself: the temp filesystem has no direct I/O (appends stay buffered)");
    }
    let config = direct_config(dir.path(), backend);
    let chain = open_with(&config, None).await.unwrap();
    // Four committers, each with 32 commits in flight at a time, so groups
    // follow each other closely and share blocks (Buffered ones keep writes
    // in flight without a sync between them); each reads back what it wrote
    // through the mmap once acknowledged.
    let commits_per_writer = 320;
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let chain = Arc::clone(&chain);
            tokio::spawn(async move {
                let durability = if writer % 2 == 0 { Durability::Buffered } else { Durability::Batched };
                for window in (0..commits_per_writer).step_by(32) {
                    let mut in_flight = tokio::task::JoinSet::new();
                    for round in window..window + 32 {
                        let chain = Arc::clone(&chain);
                        let index = writer * commits_per_writer + round;
                        in_flight.spawn(async move { chain.append(commit_events(index), Some(durability)).await });
                    }
                    while let Some(result) = in_flight.join_next().await {
                        result.unwrap().unwrap();
                    }
                    for index in writer * commits_per_writer + window..writer * commits_per_writer + window + 32 {
                        for object in objects_of_commit(index) {
                            let found = chain.get(&key(object)).expect("acknowledged object is visible");
                            assert_eq!(found.payload, payload(object).as_slice(), "object {object} read back");
                        }
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let commits = 4 * commits_per_writer;
    let segments = std::fs::read_dir(chain.path())
        .unwrap()
        .flatten()
        .filter(|entry| entry.path().extension().is_some_and(|x| x == "seg"))
        .count();
    assert!(segments >= 3, "the run should roll segments ({segments})");
    let events = chain.next_sequence();
    drop(chain);

    // Reopen (through the page cache this time): every object is whole.
    let chain = open_with(&AteConfig { direct_io: false, ..config.clone() }, None).await.unwrap();
    assert_eq!(chain.next_sequence(), events);
    for index in 0..commits {
        for object in objects_of_commit(index) {
            assert_eq!(chain.get(&key(object)).unwrap().payload, payload(object).as_slice(), "object {object}");
        }
    }
    chain.verify().await.expect("a directly appended chain verifies");
    // And direct appends resume after a reopen, mid-block.
    drop(chain);
    let chain = open_with(&config, None).await.unwrap();
    chain.append(commit_events(10_000), None).await.unwrap();
    drop(chain);
    let chain = open(dir.path()).await.unwrap();
    assert!(chain.get(&key(30_000)).is_some());
    chain.verify().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_uring_direct_appends_keep_every_record_readable() {
    // The ring may reorder writes in flight: repeated, since a reordering
    // (which the device must prevent) shows up in most runs but not all.
    for _ in 0..4 {
        concurrent_commits_and_readers(StorageBackend::IoUring).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pwrite_direct_appends_keep_every_record_readable() {
    concurrent_commits_and_readers(StorageBackend::Portable).await;
}

/// A crash at sampled bytes of the block writes (each of which rewrites
/// acknowledged bytes of its first block) never loses an acknowledged commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_inside_a_block_write_loses_nothing_acknowledged() {
    const COMMITS: usize = 40;
    async fn run(dir: &std::path::Path, budget: Option<u64>) -> (usize, u64) {
        run_until_crash(&direct_config(dir, StorageBackend::Portable), COMMITS, budget).await
    }
    let reference = tempfile::tempdir().unwrap();
    let (acknowledged, total) = run(reference.path(), None).await;
    assert_eq!(acknowledged, COMMITS);
    let mut budget = 4096;
    let mut cuts = 0;
    while budget < total {
        let dir = tempfile::tempdir().unwrap();
        let (acknowledged, _) = run(dir.path(), Some(budget)).await;
        let chain = open(dir.path()).await.unwrap_or_else(|e| panic!("reopen after a crash at byte {budget}: {e}"));
        for index in 0..acknowledged {
            for object in objects_of_commit(index) {
                let found =
                    chain.get(&key(object)).unwrap_or_else(|| panic!("lost object {object} (crash at {budget})"));
                assert_eq!(found.payload, payload(object).as_slice());
            }
        }
        chain.verify().await.unwrap_or_else(|e| panic!("verify after a crash at byte {budget}: {e}"));
        cuts += 1;
        budget += 509; // a prime stride: cuts fall at every position within a block
    }
    assert!(cuts > 100, "only {cuts} cuts");
}
