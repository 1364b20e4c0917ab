//! Many committers at once: each commit gets its own run of sequences in
//! one hash chain, and optimistic checks see every commit before them while
//! the commits are assigned by whichever committer holds the combiner's role
//! (`chain/assign.rs`).

mod common;

use ate::plugin::{ValidationContext, Validator};
use ate::prelude::*;
use ate::trust::{EventView, RejectReason};
use std::sync::Arc;
use std::time::Duration;

const COMMITTERS: u64 = 16;

/// Runs `committer(index, chain)` as `count` tasks at once and returns
/// their results in index order, failing the test instead of hanging it if
/// a queued commit is never answered.
async fn each_committer<T, F>(chain: &Arc<Chain>, count: u64, committer: impl Fn(u64, Arc<Chain>) -> F) -> Vec<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    let tasks: Vec<_> = (0..count).map(|index| tokio::spawn(committer(index, Arc::clone(chain)))).collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        let joined = tokio::time::timeout(Duration::from_secs(60), task).await.expect("a commit was never answered");
        results.push(joined.unwrap());
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_commit_gets_its_own_contiguous_sequences_and_the_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let chain = common::open(dir.path()).await.unwrap();
    let per_committer = each_committer(&chain, COMMITTERS, |committer, chain| async move {
        let mut receipts = Vec::new();
        for commit in 0..40u64 {
            // 1 to 5 events, so commits of different sizes interleave.
            let events: Vec<NewEvent> = (0..=(commit + committer) % 5)
                .map(|event| {
                    let key = PrimaryKey::from(format!("{committer}-{commit}-{event}").as_str());
                    NewEvent::data(key, vec![committer as u8; 100 + event as usize])
                })
                .collect();
            let count = events.len() as u64;
            let receipt = chain.append(events, None).await.unwrap();
            assert_eq!(receipt.last_sequence - receipt.first_sequence + 1, count);
            receipts.push(receipt);
        }
        receipts
    })
    .await;
    let mut receipts: Vec<_> = per_committer.into_iter().flatten().collect();
    receipts.sort_by_key(|receipt| receipt.first_sequence);
    let mut next = receipts[0].first_sequence;
    for receipt in &receipts {
        assert_eq!(receipt.first_sequence, next, "sequences are neither shared nor skipped");
        next = receipt.last_sequence + 1;
    }
    assert_eq!(chain.durable_sequence(), next);
    let events = next - receipts[0].first_sequence;
    let report = chain.verify().await.unwrap();
    assert_eq!(report.commits as usize, receipts.len(), "one commit per receipt");
    assert_eq!(report.events, events);
    drop(chain);
    let reopened = common::open(dir.path()).await.unwrap();
    assert_eq!(reopened.durable_sequence(), next);
    assert_eq!(reopened.verify().await.unwrap().events, report.events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_under_contention_are_never_lost() {
    let dir = tempfile::tempdir().unwrap();
    let chain = common::open(dir.path()).await.unwrap();
    let key = PrimaryKey::from("counter");
    let mut setup = chain.dio(&AteSession::default()).await;
    setup.store_with_key(key, 0u64).unwrap();
    setup.commit().await.unwrap();
    const INCREMENTS: u64 = 25;
    let conflicts: u64 = each_committer(&chain, 8, |_, chain| async move {
        let mut conflicts = 0u64;
        for _ in 0..INCREMENTS {
            loop {
                let mut dio = chain.dio(&AteSession::default()).await;
                let mut counter = dio.load::<u64>(&key).await.unwrap();
                *counter += 1;
                dio.update(&counter).unwrap();
                match dio.commit().await {
                    Ok(()) => break,
                    Err(AteError::Conflict { .. }) => conflicts += 1,
                    Err(error) => panic!("{error}"),
                }
            }
        }
        conflicts
    })
    .await
    .into_iter()
    .sum();
    let total = *chain.dio(&AteSession::default()).await.load::<u64>(&key).await.unwrap();
    assert_eq!(total, 8 * INCREMENTS, "every increment landed once ({conflicts} conflicts retried)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_many_committers_creating_one_key_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let chain = common::open(dir.path()).await.unwrap();
    for round in 0..20 {
        let key = PrimaryKey::from(format!("claim-{round}").as_str());
        let outcomes = each_committer(&chain, COMMITTERS, |committer, chain| async move {
            let mut event = NewEvent::data(key, vec![committer as u8; 64]);
            event.expect = Expect::Absent;
            chain.append(vec![event], None).await
        })
        .await;
        let mut winners = 0;
        for outcome in outcomes {
            match outcome {
                Ok(_) => winners += 1,
                Err(AteError::Conflict { key: lost }) => assert_eq!(lost, key),
                Err(error) => panic!("{error}"),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
}

/// Panics on a payload of 0xFF bytes: a bug in an application's validator.
#[derive(Debug)]
struct PanicsOnFf;

impl Validator for PanicsOnFf {
    fn name(&self) -> &'static str {
        "panics-on-ff"
    }

    fn validate(&self, event: &EventView<'_>, _: &ValidationContext<'_>) -> Result<(), RejectReason> {
        assert!(event.payload.first() != Some(&0xFF), "a bug in the validator");
        Ok(())
    }
}

/// Commits are assigned by whichever committer holds the combiner's role,
/// so a validator may run on another committer's task: its panic must
/// reject only its own commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_validator_rejects_its_own_commit_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let chain = ChainBuilder::new(&common::small_config(dir.path()))
        .await
        .add_validator(Arc::new(PanicsOnFf))
        .build()
        .open(&ChainKey::from("validators"))
        .await
        .unwrap();
    let per_committer = each_committer(&chain, COMMITTERS, |committer, chain| async move {
        let mut outcomes = Vec::new();
        for commit in 0..20u64 {
            let byte = if (committer + commit) % 4 == 0 { 0xFF } else { committer as u8 };
            let key = PrimaryKey::from(format!("{committer}-{commit}").as_str());
            outcomes.push((byte, chain.append(vec![NewEvent::data(key, vec![byte; 32])], None).await));
        }
        outcomes
    })
    .await;
    let (mut accepted, mut refused) = (0, 0);
    for outcomes in per_committer {
        for (byte, outcome) in outcomes {
            match outcome {
                Ok(_) if byte != 0xFF => accepted += 1,
                Err(AteError::Rejected { reason: RejectReason::Custom { validator: "panics-on-ff", .. }, .. })
                    if byte == 0xFF =>
                {
                    refused += 1
                }
                other => panic!("payload {byte:#x}: {other:?}"),
            }
        }
    }
    assert_eq!(accepted + refused, COMMITTERS * 20);
    assert_eq!(chain.verify().await.unwrap().events, accepted);
}
