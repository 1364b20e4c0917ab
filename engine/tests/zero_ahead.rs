//! Zeroing ahead of the appends (docs/design.md §6): a helper thread writes
//! zeros beyond the log's end while the writer is idle. It must never touch
//! a byte the writer wrote, and a failure of its own writes poisons the
//! chain like a failure of the writer's.

mod common;

use ate::storage::{FaultPlan, FaultyStorage, Storage};
use ate::{AteConfig, AteError, Durability, NewEvent, StorageBackend};
use common::{key, open_with, small_config};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const COMMITS: usize = 2500;

/// 1 to 3 events of 1-2 KiB each (2500 commits: about 7 MiB).
fn commit_events(index: usize) -> Vec<NewEvent> {
    objects_of_commit(index).map(|object| NewEvent::data(key(object), payload(object))).collect()
}

fn objects_of_commit(index: usize) -> impl Iterator<Item = usize> {
    (0..1 + index % 3).map(move |part| index * 3 + part)
}

fn payload(object: usize) -> Vec<u8> {
    let len = 1024 + (object * 37) % 1024;
    (0..len).map(|i| (object as u8).wrapping_mul(31).wrapping_add(i as u8)).collect()
}

/// Segments of 4 MiB, so that the workload rolls while zeros are written.
fn config(dir: &std::path::Path) -> AteConfig {
    AteConfig { segment_size_bytes: 4 << 20, zero_ahead_bytes: 2 << 20, ..small_config(dir) }
}

/// Two appenders, pausing now and then so the writer goes idle and zeros
/// are written between (and during) their commits, across segment rolls.
async fn append_with_pauses(chain: &Arc<ate::Chain>) {
    let mut appenders = Vec::new();
    for half in 0..2 {
        let chain = Arc::clone(chain);
        appenders.push(tokio::spawn(async move {
            for index in (half..COMMITS).step_by(2) {
                chain.append(commit_events(index), None).await.unwrap();
                if index % 7 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }));
    }
    for appender in appenders {
        appender.await.unwrap();
    }
}

/// Every object of commits `0..commits` is there, with its payload.
fn assert_commits_intact(chain: &ate::Chain, commits: usize, context: &str) {
    for index in 0..commits {
        for object in objects_of_commit(index) {
            let event = chain.get(&key(object)).unwrap_or_else(|| panic!("{context}: object {object} is missing"));
            assert_eq!(event.payload, payload(object).as_slice(), "{context}: object {object} changed");
        }
    }
}

/// Whether the scratch directory is on a filesystem where zeros are
/// written ahead (ext4, XFS), as `stat -f` names it.
fn zeroes_ahead_here(dir: &std::path::Path) -> bool {
    let output = std::process::Command::new("stat").args(["-f", "-c", "%T"]).arg(dir).output().unwrap();
    let name = String::from_utf8_lossy(&output.stdout);
    name.contains("ext") || name.contains("xfs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeros_ahead_never_touch_acknowledged_records() {
    for (backend, direct_io) in
        [(StorageBackend::IoUring, false), (StorageBackend::IoUring, true), (StorageBackend::Portable, false)]
    {
        let dir = tempfile::tempdir().unwrap();
        let config = AteConfig { backend, direct_io, ..config(dir.path()) };
        let chain = open_with(&config, None).await.unwrap();
        append_with_pauses(&chain).await;
        assert!(chain.segment_count() > 1, "the workload rolls segments");
        if zeroes_ahead_here(dir.path()) {
            assert!(chain.log_metrics().zeroed_bytes.load(Ordering::Relaxed) > 0, "{backend:?}: no zeros written");
        }
        assert_commits_intact(&chain, COMMITS, &format!("{backend:?}, direct {direct_io}"));
        drop(chain);

        let reopened = open_with(&config, None).await.unwrap();
        assert_commits_intact(&reopened, COMMITS, &format!("{backend:?}, direct {direct_io}, reopened"));
        reopened.verify().await.unwrap_or_else(|error| panic!("{backend:?}, direct {direct_io}: {error}"));
    }
}

/// A commit of several MiB right after an idle spell runs into the zeros
/// being written ahead of it: it waits for them, and overwrites them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_commit_after_an_idle_spell_overtakes_the_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let config = AteConfig {
        segment_size_bytes: 32 << 20,
        max_commit_bytes: 8 << 20,
        max_write_bytes: 8 << 20,
        zero_ahead_bytes: 4 << 20,
        ..small_config(dir.path())
    };
    let storage = FaultyStorage::new(FaultPlan { zero_ahead: true, ..FaultPlan::default() });
    let chain = open_with(&config, Some(storage as Arc<dyn Storage>)).await.unwrap();
    let mut next = 0;
    for round in 0..4 {
        for _ in 0..20 {
            chain.append(commit_events(next), None).await.unwrap();
            next += 1;
        }
        // Idle: zeros are written ahead; then 3 MiB in one commit.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let large: Vec<NewEvent> =
            (0..2000).map(|part| NewEvent::data(key(1_000_000 + round * 2000 + part), payload(part))).collect();
        chain.append(large, None).await.unwrap();
    }
    assert!(chain.log_metrics().zeroed_bytes.load(Ordering::Relaxed) > 0, "no zeros were written");
    drop(chain);
    let reopened = open_with(&config, None).await.unwrap();
    for round in 0..4 {
        for part in 0..2000 {
            let event = reopened.get(&key(1_000_000 + round * 2000 + part)).expect("large commit's event");
            assert_eq!(event.payload, payload(part).as_slice());
        }
    }
    assert_commits_intact(&reopened, next, "small commits");
    reopened.verify().await.unwrap();
}

/// A crash at any byte, zeros included: every acknowledged commit is there
/// after reopening, and the chain opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_zeros_are_written_keeps_every_acknowledged_commit() {
    for budget_kib in [300, 1500, 2900, 5200] {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let storage = FaultyStorage::new(FaultPlan {
            zero_ahead: true,
            write_budget_bytes: Some(budget_kib << 10),
            ..FaultPlan::default()
        });
        let chain = open_with(&config, Some(storage as Arc<dyn Storage>)).await.unwrap();
        let mut acknowledged = 0;
        for index in 0..COMMITS {
            match chain.append(commit_events(index), None).await {
                Ok(_) => acknowledged += 1,
                Err(AteError::Poisoned { .. }) => break,
                Err(other) => panic!("unexpected error {other}"),
            }
            if index % 7 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        assert!(acknowledged < COMMITS, "budget {budget_kib} KiB: the crash happened");
        drop(chain);
        let reopened =
            open_with(&config, None).await.unwrap_or_else(|error| panic!("budget {budget_kib} KiB: {error}"));
        assert_commits_intact(&reopened, acknowledged, &format!("budget {budget_kib} KiB, acknowledged"));
    }
}

#[tokio::test]
async fn a_lead_too_short_to_zero_anything_is_refused() {
    let config = AteConfig { zero_ahead_bytes: 1 << 20, ..AteConfig::default() };
    assert!(matches!(config.validate(), Err(AteError::InvalidConfig(_))));
    assert!(AteConfig { zero_ahead_bytes: 0, ..config.clone() }.validate().is_ok());
    assert!(AteConfig { zero_ahead_bytes: 2 << 20, ..config }.validate().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeros_are_written_through_the_storage_seam_and_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let mut written = Vec::new();
    for zero_ahead in [false, true] {
        let storage = FaultyStorage::new(FaultPlan { zero_ahead, ..FaultPlan::default() });
        let chain = open_with(
            &AteConfig { log_path: Some(dir.path().join(zero_ahead.to_string())), ..config.clone() },
            Some(storage.clone() as Arc<dyn Storage>),
        )
        .await
        .unwrap();
        append_with_pauses(&chain).await;
        drop(chain);
        written.push(storage.bytes_written());
    }
    // The same commits, plus at least one chunk (256 KiB) of zeros.
    assert!(written[1] >= written[0] + (256 << 10), "bytes written without and with zeroing: {written:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_of_zeros_poisons_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    // A lead far longer than the test: zeroing is still going on when the
    // disk starts failing.
    let config =
        AteConfig { log_path: Some(dir.path().to_path_buf()), zero_ahead_bytes: 128 << 20, ..AteConfig::default() };
    let storage = FaultyStorage::new(FaultPlan { zero_ahead: true, ..FaultPlan::default() });
    let chain = open_with(&config, Some(storage.clone() as Arc<dyn Storage>)).await.unwrap();
    // Buffered: the writer itself does not sync these small commits, so
    // the first failing fdatasync is the zeroing thread's.
    let buffered = Some(Durability::Buffered);
    chain.append(vec![NewEvent::data(key(0), payload(0))], buffered).await.unwrap();
    storage.set_plan(FaultPlan { zero_ahead: true, syncs_before_failure: Some(0), ..FaultPlan::default() });
    let mut outcome = Ok(());
    for index in 1..500 {
        if let Err(error) = chain.append(vec![NewEvent::data(key(index), payload(index))], buffered).await {
            outcome = Err(error);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match outcome {
        Err(AteError::Poisoned { reason, .. }) => assert!(reason.contains("zeros ahead"), "poisoned by: {reason}"),
        other => panic!("expected the chain to be poisoned by the failed zeroing, got {other:?}"),
    }
}
