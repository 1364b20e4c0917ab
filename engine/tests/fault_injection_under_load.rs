//! Faults injected through the storage seam at random points while eight
//! committers append concurrently: EIO and ENOSPC on write, a write torn at
//! a random byte, short writes, and EIO on fdatasync. In every case each
//! committer gets a typed error (never a false acknowledgement), the chain
//! is poisoned and refuses further writes until reopened, and after reopening
//! on healthy storage every acknowledged commit is there, the chain verifies
//! and it accepts writes again.

mod common;

use ate::storage::{FaultPlan, FaultyStorage, Storage};
use ate::{AteError, Durability};
use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const COMMITTERS: usize = 8;

#[derive(Debug, Clone, Copy)]
enum Fault {
    EioOnWrite,
    DiskFull,
    TornWrite,
    ShortWrite,
    EioOnSync,
}

fn plan(fault: Fault, random: &mut fastrand::Rng) -> FaultPlan {
    // Somewhere in the first few hundred commits.
    let budget = Some(random.u64(2_000..120_000));
    match fault {
        Fault::EioOnWrite => FaultPlan { write_budget_bytes: budget, write_errno: libc::EIO, ..FaultPlan::default() },
        Fault::DiskFull => FaultPlan { write_budget_bytes: budget, write_errno: libc::ENOSPC, ..FaultPlan::default() },
        // The crossing write reaches the file only up to a random byte.
        Fault::TornWrite => FaultPlan { write_budget_bytes: budget, ..FaultPlan::default() },
        // Any write beyond this size writes a prefix and fails.
        Fault::ShortWrite => FaultPlan { short_write_at_bytes: Some(random.usize(600..4_000)), ..FaultPlan::default() },
        Fault::EioOnSync => FaultPlan { syncs_before_failure: Some(random.u64(5..200)), ..FaultPlan::default() },
    }
}

/// Appends from `COMMITTERS` tasks until each gets an error; returns the
/// acknowledged commit indices and the errors.
async fn append_until_failure(chain: &Arc<ate::Chain>, seed: u64) -> (Vec<usize>, Vec<AteError>) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for committer in 0..COMMITTERS {
        let (chain, next) = (Arc::clone(chain), Arc::clone(&next));
        tasks.spawn(async move {
            let mut random = fastrand::Rng::with_seed(seed * 100 + committer as u64);
            let mut acknowledged = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                // A bound, so a fault that never fires cannot hang the test.
                assert!(index < 20_000, "the fault never fired");
                let durability = if random.bool() { Durability::Sync } else { Durability::Batched };
                match chain.append(commit_events(index), Some(durability)).await {
                    Ok(_) => acknowledged.push(index),
                    Err(error) => return (acknowledged, error),
                }
            }
        });
    }
    let (mut acknowledged, mut errors) = (Vec::new(), Vec::new());
    while let Some(outcome) = tasks.join_next().await {
        let (mine, error) = outcome.unwrap();
        acknowledged.extend(mine);
        errors.push(error);
    }
    (acknowledged, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_faults_under_concurrent_load_never_acknowledge_falsely_and_recover() {
    let faults = [Fault::EioOnWrite, Fault::DiskFull, Fault::TornWrite, Fault::ShortWrite, Fault::EioOnSync];
    let mut injected = 0;
    let mut checked = 0;
    for seed in 0..20u64 {
        let fault = faults[seed as usize % faults.len()];
        let mut random = fastrand::Rng::with_seed(seed);
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::new(FaultPlan::default());
        let chain = open_with(&small_config(dir.path()), Some(storage.clone() as Arc<dyn Storage>)).await.unwrap();
        storage.set_plan(plan(fault, &mut random));
        let (acknowledged, errors) = append_until_failure(&chain, seed).await;
        injected += 1;

        // Typed errors that name the cause; the chain is poisoned for good.
        for error in &errors {
            match error {
                AteError::Poisoned { reason, .. } => {
                    let cause = match fault {
                        Fault::DiskFull => "No space left on device",
                        _ => "Input/output error",
                    };
                    assert!(reason.contains(cause), "{fault:?}: {reason}");
                }
                other => panic!("{fault:?}: expected Poisoned, got {other:?}"),
            }
        }
        storage.set_plan(FaultPlan::default());
        let refused = chain.append(commit_events(90_000), Some(Durability::Sync)).await;
        assert!(matches!(refused, Err(AteError::Poisoned { .. })), "{fault:?}: a poisoned chain accepted {refused:?}");
        drop(chain);

        // Reopen on healthy storage: nothing acknowledged is lost, the
        // visible history verifies, and the chain takes writes again.
        let chain = open(dir.path()).await.unwrap_or_else(|error| panic!("{fault:?} seed {seed}: {error}"));
        assert!(!chain.path().join("unacknowledged-from").exists(), "recovery clears the failed group's marker");
        for &index in &acknowledged {
            for object in objects_of_commit(index) {
                let event = chain.get(&key(object)).unwrap_or_else(|| panic!("{fault:?}: commit {index} lost"));
                assert_eq!(event.payload, payload(object).as_slice());
                checked += 1;
            }
        }
        chain.verify().await.unwrap_or_else(|error| panic!("{fault:?} seed {seed}: {error}"));
        chain.append(commit_events(90_001), Some(Durability::Sync)).await.expect("recovered chain accepts writes");
    }
    eprintln!(
        "fault injection: {injected} faults injected under load, {checked} acknowledged objects checked, none lost"
    );
}
