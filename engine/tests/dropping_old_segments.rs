//! Time-based log retention: whole sealed segments older than a horizon are
//! dropped; the kept chain opens, verifies, proves and enforces its rules as
//! before; protected versions and young tombstones stop a drop; a drop
//! killed at any step leaves the old log or the new one.

mod common;

use ate::chain::{now_us, DropRule};
use ate::crypto::PrivateSignKey;
use ate::prelude::*;
use ate::storage::{FaultPlan, FaultyStorage, Storage};
use ate::trust::retention::{RetentionChange, RetentionMode, RetentionPolicy, RetentionRule, RetentionViolation};
use ate::trust::{ReadAuthority, RejectReason, WriteAuthority};
use common::*;
use std::path::Path;
use std::sync::Arc;

const HOUR_US: u64 = 3_600_000_000;

fn config(dir: &Path) -> AteConfig {
    // Small segments, so a few hundred objects fill several.
    AteConfig {
        segment_size_bytes: 64 << 10,
        max_commit_bytes: 16 << 10,
        max_write_bytes: 16 << 10,
        ..small_config(dir)
    }
}

fn value(name: &str) -> Vec<u8> {
    format!("{name} {}", "x".repeat(1000)).into_bytes()
}

async fn put(chain: &Chain, name: &str) {
    chain.append(vec![NewEvent::data(PrimaryKey::from_name(name), value(name))], None).await.unwrap();
}

fn everything_older_than(cutoff_us: u64) -> DropRule {
    DropRule { older_than_us: cutoff_us, tombstone_horizon_us: 0 }
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    files
}

/// Old objects `old-0..150` (with `old-5` deleted), a cutoff, then `new-0..40`.
async fn old_then_new(chain: &Chain) -> u64 {
    for index in 0..150 {
        put(chain, &format!("old-{index}")).await;
    }
    chain.append(vec![NewEvent::tombstone(PrimaryKey::from_name("old-5"))], None).await.unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let cutoff = now_us();
    for index in 0..40 {
        put(chain, &format!("new-{index}")).await;
    }
    cutoff
}

async fn open_archive(dir: &Path, root: &PrivateSignKey) -> Arc<Chain> {
    open_rooted(config(dir), root.public(), "archive").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_chain_opens_verifies_proves_and_enforces_the_dropped_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (root, editor, stranger) = (signing_key(), signing_key(), signing_key());
    let chain = open_archive(dir.path(), &root).await;
    // In the part that will be dropped: an authority record naming `editor`,
    // whose key is published there when it first signs.
    let mut dio = chain.dio(&session_with(&[&root, &editor])).await;
    let doc = *dio.store("v1".to_string()).unwrap().key();
    dio.set_authority(&doc, WriteAuthority::Specific(vec![editor.id()]), ReadAuthority::Inherit).unwrap();
    dio.commit().await.unwrap();
    let mut as_editor = chain.dio(&session_with(&[&editor])).await;
    let mut text = as_editor.load::<String>(&doc).await.unwrap();
    *text = "v2".to_string();
    as_editor.update(&text).unwrap();
    as_editor.commit().await.unwrap();
    let mut filler = chain.dio(&session_with(&[&root])).await;
    let mut old_keys = Vec::new();
    for index in 0..120 {
        old_keys.push(*filler.store(format!("old {index} {}", "x".repeat(1000))).unwrap().key());
        filler.commit().await.unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(2));
    let cutoff = now_us();
    *text = "v3".to_string();
    as_editor.update(&text).unwrap();
    as_editor.commit().await.unwrap();
    let kept = *filler.store("kept".to_string()).unwrap().key();
    filler.commit().await.unwrap();
    drop((dio, as_editor, filler));

    let head = chain.tree_head().unwrap();
    let segments_before = segment_files(chain.path()).len();
    let report = chain.drop_segments(everything_older_than(cutoff), now_us()).await.unwrap();
    assert!(report.segments_dropped >= 2, "{report:?}");
    assert_eq!(report.segments_dropped as usize, segments_before - segment_files(chain.path()).len());
    assert!(report.trust_records_carried >= 2, "the authority record and editor's key: {report:?}");
    // The running chain goes on serving from its mappings until reopened.
    assert!(chain.get(&old_keys[0]).is_some());
    let path = chain.path().to_path_buf();
    drop(chain);

    let chain = open_archive(dir.path(), &root).await;
    assert_eq!(chain.first_sequence(), report.first_sequence);
    assert_eq!(chain.durable_sequence(), head.tree_size, "no kept event moved");
    let after = chain.tree_head().unwrap();
    assert_eq!((after.tree_size, after.root), (head.tree_size, head.root), "tree heads signed before still hold");
    let last = head.tree_size - 1;
    let (event_hash, proof) = chain.inclusion_proof(last, head.tree_size).unwrap();
    ate::proof::verify_inclusion(&event_hash, last, head.tree_size, &proof, &head.root).unwrap();
    assert!(chain.inclusion_proof(0, head.tree_size).is_err(), "event 0 is gone");
    chain.consistency_proof(report.first_sequence, head.tree_size).unwrap();
    match chain.read_records(0, 1 << 20) {
        Err(AteError::HistoryDropped { sequence: 0, first_sequence, .. }) => {
            assert_eq!(first_sequence, report.first_sequence)
        }
        other => panic!("reading dropped history: {other:?}"),
    }
    // Objects only in dropped segments are gone; later versions stay.
    assert!(old_keys.iter().take(50).all(|key| chain.get(key).is_none()));
    assert!(chain.get(&kept).is_some());
    let mut reader = chain.dio(&AteSession::default()).await;
    assert_eq!(*reader.load::<String>(&doc).await.unwrap(), "v3");

    // The authority record and the editor's key came from the checkpoint.
    let mut intruder = chain.dio(&session_with(&[&stranger])).await;
    let mut hijack = intruder.load::<String>(&doc).await.unwrap();
    *hijack = "hijacked".to_string();
    intruder.update(&hijack).unwrap();
    assert!(matches!(intruder.commit().await, Err(AteError::NoWriteAccess { .. })));
    let mut as_editor = chain.dio(&session_with(&[&editor])).await;
    let mut text = as_editor.load::<String>(&doc).await.unwrap();
    *text = "v4".to_string();
    as_editor.update(&text).unwrap();
    as_editor.commit().await.unwrap();

    let verified = chain.verify().await.expect("the kept chain verifies");
    assert_eq!(verified.first_sequence, report.first_sequence);
    assert_eq!(verified.events, chain.durable_sequence() - report.first_sequence);
    let offline = ate::verify::verify_chain(
        &path,
        &ChainKey::from("archive"),
        &Default::default(),
        &[root.public().clone()],
        &[],
        None,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(offline.tree_head.root, chain.tree_head().unwrap().root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_again_carries_the_first_checkpoint_forward() {
    let dir = tempfile::tempdir().unwrap();
    let chain = open_with(&config(dir.path()), None).await.unwrap();
    let policy = RetentionPolicy { mode: RetentionMode::Governance, ..Default::default() };
    chain.append(vec![NewEvent::retention_policy(policy.clone())], None).await.unwrap();
    let first_cutoff = old_then_new(&chain).await;
    let first = chain.drop_segments(everything_older_than(first_cutoff), now_us()).await.unwrap();
    assert!(first.segments_dropped > 0 && first.trust_records_carried == 1, "{first:?}");
    let again = chain.drop_segments(everything_older_than(now_us()), now_us()).await;
    assert!(matches!(again, Err(AteError::InvalidInput(_))), "a second drop waits for a reopen: {again:?}");
    drop(chain);

    let chain = open_with(&config(dir.path()), None).await.unwrap();
    for index in 40..200 {
        put(&chain, &format!("new-{index}")).await;
    }
    let head = chain.tree_head().unwrap();
    let second = chain.drop_segments(everything_older_than(now_us()), now_us()).await.unwrap();
    assert!(second.first_sequence > first.first_sequence, "{second:?}");
    assert_eq!(second.events_dropped, second.first_sequence - first.first_sequence);
    assert_eq!(second.trust_records_carried, 1, "the policy from the first checkpoint");
    drop(chain);
    let chain = open_with(&config(dir.path()), None).await.unwrap();
    assert_eq!(chain.retention_policy(), policy, "the policy survived two drops");
    assert_eq!(chain.tree_head().unwrap().root, head.root);
    chain.verify().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_versions_stop_a_drop_with_the_rule_and_date() {
    // Compliance-mode default retention: every version is retained for an hour.
    let dir = tempfile::tempdir().unwrap();
    let chain = open_with(&config(dir.path()), None).await.unwrap();
    let policy =
        RetentionPolicy { mode: RetentionMode::Compliance, default_retention_us: HOUR_US, ..Default::default() };
    chain.append(vec![NewEvent::retention_policy(policy)], None).await.unwrap();
    let cutoff = old_then_new_without_deletion(&chain).await;
    let files = segment_files(chain.path());
    match chain.drop_segments(everything_older_than(cutoff), now_us()).await {
        Err(AteError::Rejected {
            reason: RejectReason::Retention(RetentionViolation::Protected { rule: RetentionRule::Compliance, until_us }),
            ..
        }) => assert!(until_us.unwrap() > now_us()),
        other => panic!("expected a compliance refusal, got {other:?}"),
    }
    assert_eq!(segment_files(chain.path()), files, "nothing was dropped");
    // An hour later (by the caller's clock) the same drop goes through.
    let later = chain.drop_segments(everything_older_than(cutoff), now_us() + HOUR_US + 1).await.unwrap();
    assert!(later.segments_dropped > 0);

    // A legal hold, whatever the dates.
    let dir = tempfile::tempdir().unwrap();
    let chain = open_with(&config(dir.path()), None).await.unwrap();
    put(&chain, "evidence").await;
    let hold = RetentionChange::Object { retain_until_us: None, legal_hold: Some(true) };
    chain.append(vec![NewEvent::retention(PrimaryKey::from_name("evidence"), &hold)], None).await.unwrap();
    let cutoff = old_then_new_without_deletion(&chain).await;
    match chain.drop_segments(everything_older_than(cutoff), now_us()).await {
        Err(AteError::Rejected {
            key,
            reason: RejectReason::Retention(RetentionViolation::Protected { rule, .. }),
            ..
        }) => {
            assert_eq!((key, rule), (PrimaryKey::from_name("evidence"), RetentionRule::LegalHold))
        }
        other => panic!("expected a legal-hold refusal, got {other:?}"),
    }
}

async fn old_then_new_without_deletion(chain: &Chain) -> u64 {
    for index in 0..150 {
        put(chain, &format!("old-{index}")).await;
    }
    std::thread::sleep(std::time::Duration::from_millis(2));
    let cutoff = now_us();
    put(chain, "new").await;
    cutoff
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn young_tombstones_keep_their_segment_and_everything_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let chain = open_with(&config(dir.path()), None).await.unwrap();
    let cutoff = old_then_new(&chain).await;
    let tombstone_sequence = chain.durable_sequence() - 41;
    let young = DropRule { older_than_us: cutoff, tombstone_horizon_us: HOUR_US };
    let report = chain.drop_segments(young, now_us()).await.unwrap();
    assert!(report.first_sequence <= tombstone_sequence, "the tombstone's segment stays: {report:?}");
    drop(chain);
    let chain = open_with(&config(dir.path()), None).await.unwrap();
    assert!(chain.get(&PrimaryKey::from_name("old-5")).is_none());
    // A replica that saw everything up to just before the deletion can
    // still resume and learn of it.
    let (records, _) = chain.read_records(tombstone_sequence, 1 << 20).unwrap();
    assert!(!records.is_empty());
    // Once the horizon passed, the segment may go.
    let young_later = DropRule { older_than_us: now_us(), ..young };
    let later = chain.drop_segments(young_later, now_us() + HOUR_US + 1).await.unwrap();
    assert!(later.first_sequence > tombstone_sequence, "{later:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_killed_at_any_step_leaves_the_old_log_or_the_new_one() {
    let steps = [
        ("writing the checkpoint", FaultPlan { write_budget_bytes: Some(0), ..FaultPlan::default() }),
        ("syncing the checkpoint", FaultPlan { syncs_before_failure: Some(0), ..FaultPlan::default() }),
        ("renaming the checkpoint", FaultPlan { fail_renames: true, ..FaultPlan::default() }),
        ("syncing the directory", FaultPlan { fail_dir_syncs: true, ..FaultPlan::default() }),
    ];
    for (step, plan) in steps {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::new(FaultPlan::default());
        let chain = open_with(&config(dir.path()), Some(storage.clone() as Arc<dyn Storage>)).await.unwrap();
        let cutoff = old_then_new(&chain).await;
        let head = chain.tree_head().unwrap();
        let plan = match plan.write_budget_bytes {
            Some(extra) => FaultPlan { write_budget_bytes: Some(storage.bytes_written() + extra), ..plan },
            None => plan,
        };
        storage.set_plan(plan);
        assert!(chain.drop_segments(everything_older_than(cutoff), now_us()).await.is_err(), "{step}");
        drop(chain);
        let chain = open_with(&config(dir.path()), None).await.unwrap();
        check_old_or_new(&chain, &head, step).await;
    }

    // Killed after the checkpoint was in place, before the old files were
    // deleted: put them back, as if the unlinks never happened.
    let dir = tempfile::tempdir().unwrap();
    let chain = open_with(&config(dir.path()), None).await.unwrap();
    let cutoff = old_then_new(&chain).await;
    let head = chain.tree_head().unwrap();
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> =
        segment_files(chain.path()).into_iter().map(|path| (path.clone(), std::fs::read(&path).unwrap())).collect();
    let report = chain.drop_segments(everything_older_than(cutoff), now_us()).await.unwrap();
    for (path, bytes) in &saved {
        if !path.exists() {
            std::fs::write(path, bytes).unwrap();
        }
    }
    std::fs::write(chain.path().join("checkpoint.writing"), b"half a checkpoint").unwrap();
    drop(chain);
    let chain = open_with(&config(dir.path()), None).await.unwrap();
    assert_eq!(chain.first_sequence(), report.first_sequence, "recovery finishes the drop");
    check_old_or_new(&chain, &head, "deleting the old segments").await;
    assert_eq!(segment_files(chain.path()).len(), saved.len() - report.segments_dropped as usize);
    assert!(!chain.path().join("checkpoint.writing").exists());
}

async fn check_old_or_new(chain: &Chain, head: &ate::proof::TreeHead, step: &str) {
    let root = chain.tree_head().unwrap();
    assert_eq!((root.tree_size, root.root), (head.tree_size, head.root), "{step}");
    let verified = chain.verify().await.unwrap_or_else(|error| panic!("{step}: {error}"));
    let old_objects =
        (0..150).filter(|index| chain.get(&PrimaryKey::from_name(&format!("old-{index}"))).is_some()).count();
    match chain.first_sequence() {
        0 => assert_eq!(old_objects, 149, "{step}: the old log, whole"),
        first => {
            assert_eq!(verified.first_sequence, first);
            assert!(old_objects < 149, "{step}: the new log")
        }
    }
    for index in 0..40 {
        assert!(chain.get(&PrimaryKey::from_name(&format!("new-{index}"))).is_some(), "{step}: new-{index}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_dropped_history_refills_from_the_checkpoint_and_resurrects_nothing() {
    let owner_dir = tempfile::tempdir().unwrap();
    let owner = open_with(&config(owner_dir.path()), None).await.unwrap();
    for index in 0..60 {
        put(&owner, &format!("old-{index}")).await;
    }
    // A replica follows up to here (it holds `old-10` live), then goes away.
    let away_dir = tempfile::tempdir().unwrap();
    let away_builder = ChainBuilder::new(&config(away_dir.path())).await.build();
    let key = ChainKey::from("test-chain");
    let away = away_builder.open(&key).await.unwrap();
    let (records, away_next) = owner.read_records(0, usize::MAX).unwrap();
    away.ingest(&records).await.unwrap();
    assert!(away.get(&PrimaryKey::from_name("old-10")).is_some());
    // Meanwhile the owner deletes it, writes on, and drops everything old,
    // the tombstone included (no tombstone horizon).
    owner.append(vec![NewEvent::tombstone(PrimaryKey::from_name("old-10"))], None).await.unwrap();
    for index in 60..150 {
        put(&owner, &format!("old-{index}")).await;
    }
    std::thread::sleep(std::time::Duration::from_millis(2));
    let cutoff = now_us();
    for index in 0..40 {
        put(&owner, &format!("new-{index}")).await;
    }
    let report = owner.drop_segments(everything_older_than(cutoff), now_us()).await.unwrap();
    assert!(report.first_sequence > away_next, "the tombstone itself was dropped: {report:?}");
    drop(owner);
    let owner = open_with(&config(owner_dir.path()), None).await.unwrap();

    // The returning replica cannot resume across the gap...
    assert!(matches!(owner.read_records(away_next, 1 << 20), Err(AteError::HistoryDropped { .. })));
    // ...and may not reset while open.
    let checkpoint = owner.checkpoint().unwrap().expect("the owner has a checkpoint");
    assert!(matches!(away_builder.reset_from_checkpoint(&key, &checkpoint).await, Err(AteError::Locked { .. })));
    drop(away);
    away_builder.reset_from_checkpoint(&key, &checkpoint).await.unwrap();
    let away = away_builder.open(&key).await.unwrap();
    assert_eq!(away.next_sequence(), report.first_sequence);
    let mut next = away.next_sequence();
    loop {
        let (batch, after) = owner.read_records(next, 1 << 16).unwrap();
        if batch.is_empty() {
            break;
        }
        away.ingest(&batch).await.unwrap();
        next = after;
    }
    assert!(away.get(&PrimaryKey::from_name("old-10")).is_none(), "a deleted object came back");
    let mut owner_keys = owner.keys();
    let mut away_keys = away.keys();
    owner_keys.sort();
    away_keys.sort();
    assert_eq!(away_keys, owner_keys);
    assert_eq!(away.tree_head().unwrap().root, owner.tree_head().unwrap().root);
    away.verify().await.unwrap();

    // A checkpoint of another chain, or a damaged one, is refused.
    drop(away);
    let mut damaged = checkpoint.clone();
    damaged[20] ^= 1;
    assert!(matches!(away_builder.reset_from_checkpoint(&key, &damaged).await, Err(AteError::Corrupt { .. })));
    let other = ChainKey::from("other-chain");
    assert!(matches!(away_builder.reset_from_checkpoint(&other, &checkpoint).await, Err(AteError::Corrupt { .. })));
}
