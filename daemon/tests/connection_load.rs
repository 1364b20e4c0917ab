//! One `atedb` process holding 1,000 authenticated connections: 950 idle,
//! 50 committing, and one subscriber that never reads. Every commit
//! succeeds, every connection still answers afterwards, the slow reader
//! does not hold the producers back, and the server's resident memory
//! stays bounded (printed for docs/reliability.md).

mod common;

use ate::prelude::*;
use ate_client::remote::RemoteConnection;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 1_000;
const ACTIVE: usize = 50;
const COMMITS_PER_PRODUCER: usize = 40;

fn resident_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_fifty_active_and_a_stalled_reader() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let daemon = common::spawn(&["solo", "--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0"], &[]);
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let pid = daemon.child.id();
    let idle_mib = resident_mib(pid);

    let started = Instant::now();
    let mut connections = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        connections.push(RemoteConnection::connect(&daemon.address, &daemon.fingerprint, &token).await.unwrap());
    }
    let connect_s = started.elapsed().as_secs_f64();
    let held_mib = resident_mib(pid);

    // A subscriber that never reads: its stream stalls on TCP back-pressure.
    let stalled = connections.pop().unwrap();
    let _stalled = stalled.subscribe("load", 0).await.unwrap();

    let producers: Vec<RemoteConnection> = connections.drain(..ACTIVE).collect();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, mut producer) in producers.into_iter().enumerate() {
        tasks.spawn(async move {
            for commit in 0..COMMITS_PER_PRODUCER {
                let payload = vec![(index + commit) as u8; 4096];
                producer.commit("load", &[NewEvent::data(PrimaryKey::generate(), payload)]).await.unwrap();
            }
            producer
        });
    }
    let mut producers = Vec::new();
    while let Some(producer) = tasks.join_next().await {
        producers.push(producer.unwrap());
    }
    let produce_s = started.elapsed().as_secs_f64();
    let loaded_mib = resident_mib(pid);

    // Every idle connection still answers, and so do the producers.
    for connection in connections.iter_mut().chain(producers.iter_mut()) {
        tokio::time::timeout(Duration::from_secs(10), connection.ping()).await.expect("answered").unwrap();
    }
    // Bounded: 1,000 connections must not cost a gigabyte.
    assert!(loaded_mib < 1024, "atedb uses {loaded_mib} MiB with {CONNECTIONS} connections");
    eprintln!(
        "connection load: {CONNECTIONS} connections in {connect_s:.1} s, {ACTIVE} producers x {COMMITS_PER_PRODUCER} \
         commits of 4 KiB in {produce_s:.1} s, 0 errors; atedb RSS {idle_mib} MiB idle, {held_mib} MiB holding \
         the connections, {loaded_mib} MiB after the load"
    );
}
