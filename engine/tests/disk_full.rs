//! A real filesystem running out of space (a 3 MiB tmpfs mounted for the
//! test): the committer gets a typed error naming ENOSPC, no commit is
//! acknowledged that is not there after reopening, the reopened chain
//! verifies, and once space is back it takes writes again. Needs root to
//! mount; elsewhere the test says it skipped.

mod common;

use ate::{AteConfig, AteError, Durability};
use common::*;
use std::process::Command;

/// Mounts a tmpfs of `size` at `dir`; unmounted on drop.
struct SmallFilesystem {
    dir: tempfile::TempDir,
}

impl SmallFilesystem {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|status| status.success());
        mounted.then_some(Self { dir })
    }

    fn resize(&self, size: &str) {
        let status =
            Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(self.dir.path()).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_space_is_a_clear_error_and_loses_nothing_acknowledged() {
    let Some(filesystem) = SmallFilesystem::mount("3m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let config = AteConfig { segment_size_bytes: 1 << 20, ..small_config(filesystem.dir.path()) };
    let chain = open_with(&config, None).await.unwrap();
    let mut acknowledged = Vec::new();
    let error = loop {
        let index = acknowledged.len();
        assert!(index < 100_000, "the filesystem never filled up");
        match chain.append(commit_events(index), Some(Durability::Sync)).await {
            Ok(_) => acknowledged.push(index),
            Err(error) => break error,
        }
    };
    match &error {
        AteError::Poisoned { reason, .. } => assert!(reason.contains("No space left on device"), "{reason}"),
        other => panic!("expected a poisoned chain naming ENOSPC, got {other:?}"),
    }
    assert!(acknowledged.len() > 100, "only {} commits fit", acknowledged.len());
    drop(chain);

    // Still full: the chain opens (recovery needs no new space) with every
    // acknowledged commit, and verifies.
    let chain = open_with(&config, None).await.expect("a full disk still opens");
    for &index in &acknowledged {
        for object in objects_of_commit(index) {
            assert_eq!(chain.get(&key(object)).expect("acknowledged commit lost").payload, payload(object).as_slice());
        }
    }
    chain.verify().await.unwrap();
    drop(chain);

    // Space again: writes resume.
    filesystem.resize("8m");
    let chain = open_with(&config, None).await.unwrap();
    chain.append(commit_events(1_000_000), Some(Durability::Sync)).await.expect("writes resume once space is back");
    eprintln!("disk full: {} commits acknowledged before ENOSPC, all present after reopen", acknowledged.len());
}
