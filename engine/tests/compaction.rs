//! Compaction of a cache-like chain: superseded versions lose their
//! payload, everything else stays; the chain still verifies, its Merkle
//! root is unchanged and every event still has an inclusion proof; objects
//! under retention keep every version; a compaction killed at any step
//! leaves a chain that opens whole; and a replica that was away, or a new
//! one, still learns every deletion.

mod common;

use ate::messaging::StartAt;
use ate::prelude::*;
use ate::storage::{FaultPlan, FaultyStorage, Storage};
use ate::trust::retention::RetentionChange;
use common::*;
use std::sync::Arc;

fn config(dir: &std::path::Path) -> AteConfig {
    // Small segments, so most of the history is sealed.
    AteConfig {
        segment_size_bytes: 64 << 10,
        max_commit_bytes: 16 << 10,
        max_write_bytes: 16 << 10,
        ..small_config(dir)
    }
}

fn value(key: usize, round: usize) -> Vec<u8> {
    format!("key {key} round {round} {}", "x".repeat(1000)).into_bytes()
}

/// 30 keys written 12 times each, then 5 of them deleted; key 7 is retained.
async fn churned(dir: &std::path::Path, storage: Option<Arc<dyn Storage>>) -> Arc<Chain> {
    let chain = open_with(&config(dir), storage).await.unwrap();
    let retained = PrimaryKey::from_name("key-7");
    for round in 0..12 {
        for key in 0..30 {
            chain
                .append(vec![NewEvent::data(PrimaryKey::from_name(&format!("key-{key}")), value(key, round))], None)
                .await
                .unwrap();
        }
        if round == 0 {
            let change = RetentionChange::Object { retain_until_us: Some(u64::MAX), legal_hold: None };
            chain.append(vec![NewEvent::retention(retained, &change)], None).await.unwrap();
        }
    }
    for key in 20..25 {
        chain.append(vec![NewEvent::tombstone(PrimaryKey::from_name(&format!("key-{key}")))], None).await.unwrap();
    }
    chain
}

fn segment_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|entry| entry.path().extension().is_some_and(|x| x == "seg"))
        .map(|entry| entry.metadata().unwrap().len())
        .sum()
}

fn check_latest(chain: &Chain) {
    for key in 0..30 {
        let found = chain.get(&PrimaryKey::from_name(&format!("key-{key}")));
        if (20..25).contains(&key) {
            assert!(found.is_none(), "deleted key-{key} came back");
        } else {
            assert_eq!(found.expect("latest version").payload, value(key, 11).as_slice(), "key-{key}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superseded_versions_lose_their_payload_and_everything_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let chain = churned(dir.path(), None).await;
    let path = chain.path().to_path_buf();
    let head_before = chain.tree_head().unwrap();
    let events = chain.durable_sequence();
    let files_before = segment_bytes(&path);
    let report = chain.compact(ate::chain::now_us()).await.unwrap();
    assert!(report.segments_rewritten > 0 && report.events_compacted > 200, "{report:?}");
    assert!(report.events_retained >= 5, "key-7's old versions are kept: {report:?}");
    assert!(report.bytes_after * 2 < report.bytes_before, "{report:?}");
    // The live chain goes on reading its mapping of the old files.
    check_latest(&chain);
    drop(chain);

    let chain = open_with(&config(dir.path()), None).await.unwrap();
    check_latest(&chain);
    assert_eq!(chain.durable_sequence(), events, "no event lost its place");
    assert_eq!(chain.tree_head().unwrap().root, head_before.root, "the Merkle root is unchanged");
    chain.verify().await.expect("a compacted chain verifies");
    for sequence in [0, events / 3, events - 1] {
        let (event_hash, proof) = chain.inclusion_proof(sequence, head_before.tree_size).unwrap();
        ate::proof::verify_inclusion(&event_hash, sequence, head_before.tree_size, &proof, &head_before.root).unwrap();
    }
    // Old versions of the retained key are all still whole; history reads
    // report compacted versions instead of dropping them.
    let mut history = chain.subscribe(&AteSession::default(), StartAt::Sequence(0)).unwrap();
    let (mut compacted, mut retained_versions) = (0, 0);
    while let Some(event) = history.try_next().unwrap() {
        match (&event.payload, event.key == PrimaryKey::from_name("key-7")) {
            (Err(AteError::Compacted { .. }), false) => compacted += 1,
            (Err(AteError::Compacted { .. }), true) => panic!("a retained version was compacted"),
            (Ok(_), true) => retained_versions += 1,
            _ => {}
        }
    }
    assert_eq!(compacted, report.events_compacted);
    assert_eq!(retained_versions, 12);
    assert!(segment_bytes(&path) < files_before, "rewritten segments are shorter files");
    // Compacting again finds nothing new.
    let again = chain.compact(ate::chain::now_us()).await.unwrap();
    assert_eq!(again.events_compacted, 0, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_killed_at_any_step_leaves_a_whole_chain() {
    let steps = [
        ("writing its first byte", FaultPlan { write_budget_bytes: Some(0), ..FaultPlan::default() }),
        ("writing", FaultPlan { write_budget_bytes: Some(5_000), ..FaultPlan::default() }),
        ("syncing", FaultPlan { syncs_before_failure: Some(0), ..FaultPlan::default() }),
        ("renaming", FaultPlan { fail_renames: true, ..FaultPlan::default() }),
        ("syncing the directory", FaultPlan { fail_dir_syncs: true, ..FaultPlan::default() }),
    ];
    for (step, plan) in steps {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::new(FaultPlan::default());
        let chain = churned(dir.path(), Some(storage.clone() as Arc<dyn Storage>)).await;
        let head = chain.tree_head().unwrap();
        let written = storage.bytes_written();
        let plan = match plan.write_budget_bytes {
            Some(extra) => FaultPlan { write_budget_bytes: Some(written + extra), ..plan },
            None => plan,
        };
        storage.set_plan(plan);
        let failed = chain.compact(ate::chain::now_us()).await;
        assert!(failed.is_err(), "{step}: the fault must surface");
        drop(chain);
        // "Killed" there: reopen on healthy storage.
        let chain = open_with(&config(dir.path()), None).await.unwrap();
        check_latest(&chain);
        assert_eq!(chain.tree_head().unwrap().root, head.root, "{step}");
        chain.verify().await.unwrap_or_else(|error| panic!("{step}: {error}"));
        let leftovers = std::fs::read_dir(chain.path())
            .unwrap()
            .flatten()
            .filter(|entry| entry.path().extension().is_some_and(|x| x == "compacting"))
            .count();
        assert_eq!(leftovers, 0, "{step}: the interrupted rewrite is cleaned up");
        // And a compaction that runs to the end afterwards works.
        chain.compact(ate::chain::now_us()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_old_and_new_learn_every_deletion_from_a_compacted_owner() {
    let owner_dir = tempfile::tempdir().unwrap();
    let owner = open_with(&config(owner_dir.path()), None).await.unwrap();
    for round in 0..6 {
        for key in 0..30 {
            owner
                .append(vec![NewEvent::data(PrimaryKey::from_name(&format!("key-{key}")), value(key, round))], None)
                .await
                .unwrap();
        }
    }
    // A replica that follows up to here, then goes away.
    let away_dir = tempfile::tempdir().unwrap();
    let away = open_with(&config(away_dir.path()), None).await.unwrap();
    let (records, mut away_next) = owner.read_records(0, usize::MAX).unwrap();
    assert_eq!(away.ingest(&records).await.unwrap(), records.len());
    // Meanwhile: deletions, more versions, and a compaction.
    for key in 20..25 {
        owner.append(vec![NewEvent::tombstone(PrimaryKey::from_name(&format!("key-{key}")))], None).await.unwrap();
    }
    for round in 6..12 {
        for key in (0..30).filter(|key| !(20..25).contains(key)) {
            owner
                .append(vec![NewEvent::data(PrimaryKey::from_name(&format!("key-{key}")), value(key, round))], None)
                .await
                .unwrap();
        }
    }
    owner.compact(ate::chain::now_us()).await.unwrap();
    drop(owner);
    let owner = open_with(&config(owner_dir.path()), None).await.unwrap();

    // The returning replica resumes where it was: it gets every tombstone.
    loop {
        let (batch, next) = owner.read_records(away_next, 1 << 16).unwrap();
        if batch.is_empty() {
            break;
        }
        away.ingest(&batch).await.unwrap();
        away_next = next;
    }
    check_latest(&away);
    // A new replica fills from the compacted history: stubs verify, deletions hold.
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = open_with(&config(fresh_dir.path()), None).await.unwrap();
    let (all, _) = owner.read_records(0, usize::MAX).unwrap();
    fresh.ingest(&all).await.expect("a compacted history is still a verifiable one");
    check_latest(&fresh);
    assert_eq!(fresh.tree_head().unwrap().root, owner.tree_head().unwrap().root);
}
