//! A subscriber that stops reading does not slow producers: its stream
//! waits (bounded buffers, no memory growth) while commits go on, and later
//! it is served everything from disk, in order, without a gap.

mod common;

use ate::prelude::*;
use ate_client::remote::RemoteConnection;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_neither_blocks_producers_nor_misses_events() {
    let running = common::start().await;
    let (server, address, token) = (&running.server, &running.address, running.admin_token());

    let mut stalled = RemoteConnection::connect(address, server.fingerprint(), &token).await.unwrap();
    stalled.open("firehose").await.unwrap();
    let mut stalled = stalled.subscribe("firehose", 0).await.unwrap();

    // ~40 MiB: ten times what the server buffers for one connection plus
    // what TCP holds, so the producers finishing proves the stalled
    // stream is not in their way.
    let mut producer = RemoteConnection::connect(address, server.fingerprint(), &token).await.unwrap();
    let (commits, events_per_commit) = (160usize, 4usize);
    let produce = async {
        for commit in 0..commits {
            let events = (0..events_per_commit)
                .map(|index| NewEvent::data(PrimaryKey::generate(), vec![(commit + index) as u8; 64 << 10]))
                .collect::<Vec<_>>();
            producer.commit("firehose", &events).await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(120), produce)
        .await
        .expect("producers were held up by a stalled subscriber");
    let active = server.metrics().subscribers_active.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(active, 1, "the stalled subscriber is still connected, not dropped");
    let lag = server.metrics().subscriber_lag();
    assert_eq!(lag.len(), 1);
    assert!(lag[0].1 > 0, "the stalled subscriber's lag is reported: {lag:?}");
    let exposition = atedb::metrics::render(server).await;
    assert!(exposition.contains("atedb_subscriber_lag_events{chain="), "{exposition}");

    // Now it reads: everything, from the beginning, in order, once.
    let total = (commits * events_per_commit) as u64;
    for expected in 0..total {
        let event =
            tokio::time::timeout(Duration::from_secs(60), stalled.next()).await.expect("stream resumes").unwrap();
        assert_eq!(event.header.sequence, expected);
        assert_eq!(event.payload.len(), 64 << 10);
    }
    assert_eq!(server.metrics().subscriber_lag()[0].1, 0, "caught up");
}
