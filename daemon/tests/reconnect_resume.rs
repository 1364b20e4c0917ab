//! A client keeps working across a server crash and restart: requests made
//! while the server is down fail with a typed `Unavailable`, the replica
//! reconnects with backoff and resumes from its last sequence, and what it
//! ends up with has no gap and no duplicate.

mod common;

use ate::messaging::StartAt;
use ate::prelude::*;
use ate::RemoteFailure;
use ate_client::registry::{Registry, RegistryConfig, ServerTrust};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_reconnects_after_a_server_restart_and_resumes_without_gaps_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let arguments = ["solo", "--data", data.to_str().unwrap(), "--listen", listen.as_str()];
    let daemon = common::spawn(&arguments, &[]);
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let mut config = RegistryConfig::new(token, ServerTrust::Fingerprint(daemon.fingerprint.clone()));
    config.reconnect_initial = Duration::from_millis(20);
    config.reconnect_max = Duration::from_millis(400);
    let url = format!("tcp://{listen}/ledger");
    let registry = Registry::new(config.clone()).await;
    let chain = registry.open(&url).await.unwrap();
    let session = AteSession::default();
    let mut seen = chain.subscribe(&session, StartAt::Beginning).unwrap();
    let mut dio = chain.dio(&session).await;
    for index in 0..5u32 {
        dio.store(index).unwrap();
        dio.commit().await.unwrap();
    }

    // The server dies: a commit now is a typed, retryable failure.
    drop(daemon);
    dio.store(100u32).unwrap();
    match dio.commit().await {
        Err(AteError::Remote { failure: RemoteFailure::Unavailable, .. }) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    dio.cancel();

    // It comes back on the same address with the same identity; another
    // client writes right away, before ours has necessarily reconnected.
    let daemon = common::spawn(&arguments, &[]);
    let other_registry = Registry::new(config).await;
    let other = other_registry.open(&url).await.unwrap();
    let mut theirs = other.dio(&session).await;
    for index in 5..10u32 {
        theirs.store(index).unwrap();
        theirs.commit().await.unwrap();
    }
    // Ours commits again once its connection is back (retrying while the
    // server finishes starting up).
    let mut committed = false;
    for _ in 0..100 {
        dio.store(10u32).unwrap();
        match dio.commit().await {
            Ok(()) => {
                committed = true;
                break;
            }
            Err(AteError::Remote { failure: RemoteFailure::Unavailable, .. }) => {
                dio.cancel();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("{error}"),
        }
    }
    assert!(committed, "the client never reconnected");

    // Everything, in order, once: 0..=10.
    let mut values = Vec::new();
    let mut sequences = Vec::new();
    while values.len() < 11 {
        let event = tokio::time::timeout(Duration::from_secs(30), seen.next()).await.expect("events arrive").unwrap();
        sequences.push(event.sequence);
        values.push(event.decode::<u32>().unwrap());
    }
    let mut sorted = values.clone();
    sorted.sort();
    assert_eq!(sorted, (0..=10).collect::<Vec<u32>>(), "a value is missing or duplicated");
    assert!(sequences.windows(2).all(|pair| pair[0] < pair[1]), "out of order: {sequences:?}");
    assert!(seen.try_next().unwrap().is_none(), "more events than were committed");
    other.wait_applied(chain.next_sequence() - 1).await.unwrap();
    assert_eq!(chain.tree_head().unwrap().root, other.tree_head().unwrap().root);
    chain.verify().await.unwrap();
    drop(daemon);
}
