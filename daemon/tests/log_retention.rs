//! Time-based log retention through the real `atedb` (`[log]` in its
//! configuration): old segments are dropped when a chain opens, a replica
//! that was away past the dropped history refills from the checkpoint
//! instead of resuming, and an object deleted while it was away stays
//! deleted; the rest verifies.

mod common;

use ate::prelude::*;
use ate_client::registry::{Registry, RegistryConfig, ReplicaStorage, ServerTrust};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn text(size: usize, name: &str) -> String {
    format!("{name} {}", "x".repeat(size))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_away_past_the_dropped_history_refills_and_resurrects_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let config_file = dir.path().join("atedb.toml");
    std::fs::write(
        &config_file,
        format!(
            "data = {data:?}\nlisten = \"{listen}\"\n[log]\nsegment_bytes = 131072\ndrop_older_than = \"2s\"\ntombstone_horizon = \"0s\"\nevery = \"1h\"\n"
        ),
    )
    .unwrap();
    let arguments = ["run", "--config", config_file.to_str().unwrap()];
    let daemon = common::spawn(&arguments, &[]);
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let trust = ServerTrust::Fingerprint(daemon.fingerprint.clone());
    let url = format!("tcp://{listen}/archive");
    let session = AteSession::default();

    // A replica kept on disk follows the first 60 objects, then goes away.
    let replica_dir = dir.path().join("replica");
    let mut away_config = RegistryConfig::new(token.clone(), trust.clone());
    away_config.replica = ReplicaStorage::Disk(replica_dir.clone());
    let away_registry = Registry::new(away_config.clone()).await;
    let away = away_registry.open(&url).await.unwrap();
    let mut dio = away.dio(&session).await;
    let mut keys = Vec::new();
    for index in 0..60 {
        keys.push(*dio.store(text(1000, &format!("old {index}"))).unwrap().key());
        dio.commit().await.unwrap();
    }
    let deleted = keys[10];
    drop((dio, away, away_registry));

    // Meanwhile another client deletes one of them and writes on (several
    // segments of 128 KiB), then, later, something new.
    let writer_registry = Registry::new(RegistryConfig::new(token.clone(), trust.clone())).await;
    let writer = writer_registry.open(&url).await.unwrap();
    let mut dio = writer.dio(&session).await;
    dio.delete(&deleted).unwrap();
    dio.commit().await.unwrap();
    for index in 60..400 {
        dio.store(text(1000, &format!("old {index}"))).unwrap();
        dio.commit().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let recent = *dio.store("recent".to_string()).unwrap().key();
    dio.commit().await.unwrap();
    drop((dio, writer, writer_registry));

    // atedb restarts: at the chain's first open, what is older than 2 s goes.
    drop(daemon);
    let daemon = common::spawn(&arguments, &[]);
    let checker = Registry::new(RegistryConfig::new(token.clone(), trust.clone())).await;
    let fresh = checker.open(&url).await.unwrap();
    assert!(fresh.first_sequence() > 60, "old segments were dropped: the log starts at {}", fresh.first_sequence());
    assert!(fresh.get(&keys[0]).is_none(), "objects only in dropped segments are gone");
    assert!(fresh.get(&recent).is_some());

    // The replica comes back: it cannot resume (its position was dropped),
    // so it starts over from the checkpoint, verified from there on.
    let away_registry = Registry::new(away_config).await;
    let away = away_registry.open(&url).await.unwrap();
    assert_eq!(away.first_sequence(), fresh.first_sequence());
    assert!(away.get(&deleted).is_none(), "an object deleted while the replica was away came back");
    assert!(away.get(&keys[0]).is_none());
    let mut dio = away.dio(&session).await;
    assert_eq!(*dio.load::<String>(&recent).await.unwrap(), "recent");
    let mut away_keys = away.keys();
    let mut owner_keys = fresh.keys();
    away_keys.sort();
    owner_keys.sort();
    assert_eq!(away_keys, owner_keys);
    away.verify().await.expect("the refilled replica verifies");
    assert_eq!(away.tree_head().unwrap().root, fresh.tree_head().unwrap().root);
    drop(daemon);
}
