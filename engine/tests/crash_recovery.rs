//! Cutting the log at every byte offset of the last records (through the
//! fault-injecting storage) never loses an acknowledged commit, never shows a
//! partial commit, and leaves a chain that appends and reopens cleanly.

mod common;

use ate::storage::{FaultPlan, FaultyStorage, Storage};
use ate::AteError;
use common::*;
use std::sync::Arc;

const COMMITS: usize = 12;

/// Runs the workload until the storage "crashes"; returns how many commits
/// were acknowledged.
async fn run_until_crash(dir: &std::path::Path, budget: Option<u64>) -> (usize, u64) {
    common::run_until_crash(&small_config(dir), COMMITS, budget).await
}

async fn check_recovered(dir: &std::path::Path, acknowledged: usize, budget: u64) {
    let chain = open(dir).await.unwrap_or_else(|e| panic!("reopen after crash at byte {budget}: {e}"));
    // Visible commits form a prefix that holds every acknowledged one.
    let mut visible = 0;
    for index in 0..COMMITS {
        let present: Vec<bool> = objects_of_commit(index).map(|o| chain.get(&key(o)).is_some()).collect();
        assert!(
            present.iter().all(|p| *p) || present.iter().all(|p| !*p),
            "partial commit {index} visible (crash at byte {budget})"
        );
        if present[0] {
            assert_eq!(visible, index, "visible commits are not a prefix (crash at byte {budget})");
            visible += 1;
            for object in objects_of_commit(index) {
                assert_eq!(chain.get(&key(object)).unwrap().payload, payload(object).as_slice());
            }
        }
    }
    assert!(
        visible >= acknowledged,
        "lost an acknowledged commit: {visible} visible, {acknowledged} acked (crash at byte {budget})"
    );
    let events: u64 = (0..visible).map(|i| objects_of_commit(i).count() as u64).sum();
    assert_eq!(chain.next_sequence(), events);
    // The chain keeps working after recovery and survives another reopen.
    chain.append(commit_events(100), None).await.expect("append after recovery");
    drop(chain);
    let chain = open(dir).await.expect("second reopen");
    assert!(chain.get(&key(300)).is_some());
    assert_eq!(chain.next_sequence(), events + objects_of_commit(100).count() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_at_every_byte_of_the_last_records() {
    let reference = tempfile::tempdir().unwrap();
    let (acknowledged, total) = run_until_crash(reference.path(), None).await;
    assert_eq!(acknowledged, COMMITS);
    // Bytes written before the last four commits began.
    let probe = tempfile::tempdir().unwrap();
    let storage = FaultyStorage::new(FaultPlan::default());
    let chain = open_with(&small_config(probe.path()), Some(storage.clone() as Arc<dyn Storage>)).await.unwrap();
    for index in 0..COMMITS - 4 {
        chain.append(commit_events(index), None).await.unwrap();
    }
    let start = storage.bytes_written();
    drop(chain);
    let mut cuts = 0;
    for budget in start..=total {
        let dir = tempfile::tempdir().unwrap();
        let (acknowledged, _) = run_until_crash(dir.path(), Some(budget)).await;
        check_recovered(dir.path(), acknowledged, budget).await;
        cuts += 1;
    }
    assert!(cuts > 500, "only {cuts} cut points exercised");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_writes_are_errors_not_acknowledgements() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FaultyStorage::new(FaultPlan::default());
    let chain = open_with(&small_config(dir.path()), Some(storage.clone() as Arc<dyn Storage>)).await.unwrap();
    chain.append(commit_events(0), None).await.unwrap();
    storage.set_plan(FaultPlan { short_write_at_bytes: Some(100), ..FaultPlan::default() });
    let error = chain.append(commit_events(1), None).await.unwrap_err();
    assert!(matches!(error, AteError::Poisoned { .. }), "{error}");
    assert!(chain.get(&key(3)).is_none(), "a failed commit became visible");
    drop(chain);
    check_recovered(dir.path(), 1, 0).await;
}

/// A torn commit whose surviving records are all trust events (here a
/// retention policy, written before the commit's data) is unfinished like
/// any other: recovery cuts it, so the next append continues at its place
/// (it used to keep counting its sequence while appending before it, and
/// the chain could not be opened again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_commit_of_trust_events_alone_is_cut_too() {
    use ate::trust::retention::{RetentionMode, RetentionPolicy};
    use ate::{NewEvent, PrimaryKey};
    let dir = tempfile::tempdir().unwrap();
    let storage = FaultyStorage::new(FaultPlan::default());
    let chain = open_with(&small_config(dir.path()), Some(storage.clone() as Arc<dyn Storage>)).await.unwrap();
    chain.append(vec![NewEvent::data(PrimaryKey::from_name("first"), vec![1; 100])], None).await.unwrap();
    let before = chain.next_sequence();
    // Exactly the policy record reaches the disk, nothing of the data after
    // it: the log then simply ends after a record that does not end a commit.
    let policy = NewEvent::retention_policy(RetentionPolicy { mode: RetentionMode::Governance, ..Default::default() });
    let policy_record = ate::format::padded_record_len(ate::format::HEADER_LEN + policy.payload.len()) as u64;
    storage.set_plan(FaultPlan {
        write_budget_bytes: Some(storage.bytes_written() + policy_record),
        ..FaultPlan::default()
    });
    let torn = vec![policy, NewEvent::data(PrimaryKey::from_name("second"), vec![2; 8192])];
    assert!(chain.append(torn, None).await.is_err(), "the torn commit is not acknowledged");
    drop(chain);

    let chain = open(dir.path()).await.unwrap();
    assert_eq!(chain.next_sequence(), before, "the unfinished commit is cut whole");
    assert_eq!(chain.retention_policy(), RetentionPolicy::default());
    chain.append(vec![NewEvent::data(PrimaryKey::from_name("third"), vec![3; 100])], None).await.unwrap();
    drop(chain);
    let chain = open(dir.path()).await.expect("reopens after appending where the torn commit was");
    assert_eq!(chain.next_sequence(), before + 1);
    chain.verify().await.unwrap();
}
