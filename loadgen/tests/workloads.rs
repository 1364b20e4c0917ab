//! Every workload against an in-process `atedb` over TLS for a moment, and
//! the real binary against the embedded engine: its JSON report and its
//! log of acknowledged writes, checked against what the chain holds.

use ate::prelude::*;
use ate_client::registry::{RegistryConfig, ServerTrust};
use ate_loadgen::driver::{run, LoadModel, RunPlan, Stop};
use ate_loadgen::target::Target;
use ate_loadgen::workload::{self, KeyDistribution, MessageSize, WorkloadConfig, WorkloadKind};
use atedb::server::{DataDirectory, Server};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_runs_against_an_in_process_atedb() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDirectory { root: dir.path().join("data") };
    let server = Server::open(&data).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let serving = std::sync::Arc::clone(&server);
    tokio::spawn(async move { serving.serve(listener, stopped).await });
    let token = std::fs::read_to_string(data.admin_token()).unwrap();

    for kind in KINDS {
        let target = Target::Remote {
            url: format!("tcp://{address}/load-{kind:?}"),
            config: RegistryConfig::new(token.clone(), ServerTrust::Fingerprint(server.fingerprint().to_string())),
            queue_replica: false,
        };
        drive(&target, &config(kind)).await;
    }
    // Queue consumers on replicas (the engine's queue), as well as the
    // default consumers that take from the server.
    let target = Target::Remote {
        url: format!("tcp://{address}/load-replica-queue"),
        config: RegistryConfig::new(token.clone(), ServerTrust::Fingerprint(server.fingerprint().to_string())),
        queue_replica: true,
    };
    drive(&target, &config(WorkloadKind::Queue)).await;
    // A fan-out producer with two commits in flight (of the four workers,
    // two publish and two subscribe); all four publishing leaves nobody to deliver to.
    let target = Target::Remote {
        url: format!("tcp://{address}/load-pipelined-fanout"),
        config: RegistryConfig::new(token.clone(), ServerTrust::Fingerprint(server.fingerprint().to_string())),
        queue_replica: false,
    };
    let pipelined = WorkloadConfig { publishers: 2, ..config(WorkloadKind::Fanout) };
    drive(&target, &pipelined).await;
    let backend = target.connect(WorkloadKind::Fanout, 1, Durability::Batched, 4, None).await.unwrap();
    let everyone = WorkloadConfig { publishers: 4, ..config(WorkloadKind::Fanout) };
    let refused = workload::build(&everyone, backend, 4).await.err().expect("no subscribers left");
    assert!(refused.contains("needs subscribers"), "{refused}");
}

const KINDS: [WorkloadKind; 5] =
    [WorkloadKind::Ingest, WorkloadKind::Cache, WorkloadKind::Queue, WorkloadKind::Fanout, WorkloadKind::Mixed];

fn config(kind: WorkloadKind) -> WorkloadConfig {
    WorkloadConfig {
        kind,
        message: MessageSize::Uniform(16, 512),
        keys: 1_000,
        distribution: KeyDistribution::Zipf(0.99),
        batch: 4,
        publishers: 1,
        read_ratio: 0.5,
        max_backlog: 0,
        durability: Some(Durability::Batched),
    }
}

/// Runs `config` against `target` for a moment: no errors, some events.
async fn drive(target: &Target, config: &WorkloadConfig) {
    let (connections, in_flight) = (2, 2);
    let workers = connections * in_flight;
    let backend = target.connect(config.kind, connections, Durability::Batched, workers, None).await.unwrap();
    let load = workload::build(config, backend, workers).await.unwrap();
    let stop = Stop::After(Duration::from_millis(800));
    let plan = RunPlan { workers, model: LoadModel::Closed, stop, warmup: Duration::ZERO };
    let report = run(load, &plan, Default::default()).await;
    let kind = config.kind;
    assert_eq!(report.errors, 0, "{} {kind:?}: {:?}", target.describe(), report.error_kinds);
    assert!(report.events > 0, "{} {kind:?} did nothing", target.describe());
    assert!(report.latency_us.p50 > 0);
    if kind == WorkloadKind::Fanout {
        let fanout =
            ate_loadgen::report::Fanout::from_workers(&report.events_per_worker, config.publishers, report.elapsed_s);
        let slowest = fanout.expect("fan-out runs have subscribers").slowest_subscriber_events_per_s;
        assert!(slowest > 0.0, "{}: a subscriber received nothing: {:?}", target.describe(), report.events_per_worker);
    }
}

/// Peers run when their servers are on loopback (`ci/peers.sh start`
/// starts them); otherwise the test says it skipped them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_runs_against_redis_and_nats_when_they_are_running() {
    let peers = [
        (6379, Target::Redis { url: "redis://127.0.0.1:6379".into() }),
        (4222, Target::Nats { url: "nats://127.0.0.1:4222".into() }),
    ];
    for (port, target) in peers {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            eprintln!("SKIPPED: no server on 127.0.0.1:{port} for {} (run ci/peers.sh start)", target.describe());
            continue;
        }
        for kind in KINDS {
            drive(&target, &config(kind)).await;
        }
    }
}

#[test]
fn the_binary_reports_json_and_logs_acknowledged_writes_that_the_chain_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (json, acked, html) =
        (dir.path().join("report.json"), dir.path().join("acked.tsv"), dir.path().join("report.html"));
    let data = dir.path().join("data");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ate-loadgen"))
        .args(["run", "--workload", "ingest", "--embedded", data.to_str().unwrap(), "--count", "60"])
        .args(["--batch", "3", "--in-flight", "4", "--message-size", "100"])
        .args(["--json", json.to_str().unwrap(), "--acked-log", acked.to_str().unwrap()])
        .args(["--html", html.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("throughput") && text.contains("p99"), "{text}");

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["workload"], "ingest");
    assert_eq!(report["events"], 180, "60 commits of 3 events");
    assert_eq!(report["errors"], 0);
    assert_eq!(report["config"]["workload"]["batch"], 3);
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<svg").count(), 3, "spectrum, throughput and p99 plots");

    let lines = std::fs::read_to_string(&acked).unwrap();
    assert_eq!(lines.lines().count(), 180);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = AteConfig { log_path: Some(data.clone()), ..AteConfig::default() };
        let chain = ChainBuilder::new(&config).await.build().open(&ChainKey::from("loadgen")).await.unwrap();
        for line in lines.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 3, "{line}");
            assert_eq!(fields[0], "loadgen");
            let stored = chain.get(&PrimaryKey::from_name(fields[1])).expect("an acknowledged write is present");
            assert_eq!(stored.header.sequence().to_string(), fields[2]);
        }
    });
}

/// `compare` runs ATE and every reachable peer with the same settings and
/// reports the ratios; an unreachable peer is skipped and named as such.
#[test]
fn compare_reports_ratios_and_names_skipped_peers() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("compare.json");
    let mut peers = vec!["--peer", "redis://127.0.0.1:1"];
    let redis_up = std::net::TcpStream::connect(("127.0.0.1", 6379)).is_ok();
    if redis_up {
        peers.extend(["--peer", "redis://127.0.0.1:6379"]);
    } else {
        eprintln!("SKIPPED: the Redis leg of compare (run ci/peers.sh start)");
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ate-loadgen"))
        .args(["compare", "--workload", "cache", "--embedded", dir.path().join("data").to_str().unwrap()])
        .args(["--duration", "0.5", "--rounds", "2", "--keys", "100", "--json", json.to_str().unwrap()])
        .args(&peers)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let systems = report["systems"].as_array().unwrap();
    assert_eq!(systems[0]["system"], "ate (embedded)");
    assert_eq!(systems[0]["ate_throughput_ratio"], 1.0);
    assert!(systems[1]["skipped"].as_str().is_some_and(|why| !why.is_empty()), "{}", systems[1]);
    if redis_up {
        // Two systems of one kind are told apart by port.
        assert_eq!(systems[1]["system"], "redis:1");
        assert_eq!(systems[2]["system"], "redis:6379");
        assert!(systems[2]["ate_throughput_ratio"].as_f64().unwrap() > 0.0);
        assert!(systems[2]["settings"].as_str().unwrap().contains("appendfsync always"));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("skipped"), "{text}");
}
