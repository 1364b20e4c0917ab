//! A failed fdatasync or write poisons the chain: the committer gets an
//! error, nothing of the failed commit becomes visible, every later write is
//! refused, and nothing is retried silently. Reopening recovers.

mod common;

use ate::storage::{FaultPlan, FaultyStorage, Storage};
use ate::{AteError, Durability};
use common::*;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fsync_poisons_until_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FaultyStorage::new(FaultPlan::default());
    let chain = open_with(&small_config(dir.path()), Some(storage.clone() as Arc<dyn Storage>)).await.unwrap();
    chain.append(commit_events(0), None).await.unwrap();
    storage.set_plan(FaultPlan { syncs_before_failure: Some(0), ..FaultPlan::default() });
    let error = chain.append(commit_events(1), None).await.unwrap_err();
    assert!(matches!(&error, AteError::Poisoned { reason, .. } if reason.contains("Input/output error")), "{error}");
    assert!(chain.get(&key(3)).is_none(), "failed commit visible");
    // Healthy storage again, but the chain stays poisoned: no silent retry.
    storage.set_plan(FaultPlan::default());
    for durability in [Durability::Sync, Durability::Batched, Durability::Buffered] {
        let error = chain.append(commit_events(2), Some(durability)).await.unwrap_err();
        assert!(matches!(error, AteError::Poisoned { .. }), "{error}");
    }
    drop(chain);
    let chain = open(dir.path()).await.unwrap();
    assert!(chain.get(&key(0)).is_some(), "acknowledged commit lost");
    chain.append(commit_events(5), None).await.expect("reopened chain accepts writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eio_and_enospc_on_write_are_reported() {
    for errno in [libc_eio(), libc_enospc()] {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::new(FaultPlan::default());
        let chain = open_with(&small_config(dir.path()), Some(storage.clone() as Arc<dyn Storage>)).await.unwrap();
        chain.append(commit_events(0), None).await.unwrap();
        let written = storage.bytes_written();
        storage.set_plan(FaultPlan {
            write_budget_bytes: Some(written + 10),
            write_errno: errno,
            ..FaultPlan::default()
        });
        let error = chain.append(commit_events(1), None).await.unwrap_err();
        let expected = std::io::Error::from_raw_os_error(errno).to_string();
        assert!(
            matches!(&error, AteError::Poisoned { reason, .. } if reason.contains(&expected)),
            "{error} / {expected}"
        );
        drop(chain);
        let chain = open(dir.path()).await.unwrap();
        assert!(chain.get(&key(0)).is_some());
        assert!(chain.get(&key(3)).is_none());
    }
}

fn libc_eio() -> i32 {
    5
}
fn libc_enospc() -> i32 {
    28
}
