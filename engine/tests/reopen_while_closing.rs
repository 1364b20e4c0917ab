//! Reopening a chain while its last handle is still closing.

mod common;

use ate::{ChainBuilder, ChainKey, Durability, NewEvent, PrimaryKey};
use std::sync::Arc;

/// A chain whose last handle is being dropped on another thread (its writer
/// finishing) while the same builder opens it again: the open waits for the
/// close instead of reporting the chain as locked by another process (atedb
/// hit this when a client reconnected right after its last connection ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_while_the_last_handle_closes_waits_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let builder = ChainBuilder::new(&common::small_config(dir.path())).await.build();
    let key = ChainKey::from("reopened");
    for round in 0..50u32 {
        let chain = builder.open(&key).await.unwrap_or_else(|error| panic!("round {round}: {error}"));
        // Queued but not awaited: the writer is still writing and syncing
        // them when the last handle goes, so closing takes a while.
        for _ in 0..4 {
            let events = (0..32).map(|index| NewEvent::data(PrimaryKey::generate(), vec![index; 1024])).collect();
            drop(chain.submit(events, Some(Durability::Sync)).await.unwrap());
        }
        // Dropped on a blocking thread (the writer is joined there); open
        // again the moment the last reference is gone, while it closes.
        let weak = Arc::downgrade(&chain);
        tokio::task::spawn_blocking(move || drop(chain));
        while weak.strong_count() > 0 {
            std::hint::spin_loop();
        }
    }
    let chain = builder.open(&key).await.unwrap();
    assert_eq!(chain.next_sequence(), 50 * 4 * 32, "every queued commit was written before its chain closed");
}
