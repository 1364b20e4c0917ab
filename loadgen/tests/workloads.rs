//! Every workload against an in-process `atedb` over TLS for a moment, and
//! the real binary against the embedded engine: its JSON report and its
//! log of acknowledged writes, checked against what the chain holds.

use ate::prelude::*;
use ate_client::registry::ServerTrust;
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

    for kind in
        [WorkloadKind::Ingest, WorkloadKind::Cache, WorkloadKind::Queue, WorkloadKind::Fanout, WorkloadKind::Mixed]
    {
        let target = Target::Remote {
            url: format!("tcp://{address}/load-{kind:?}"),
            token: token.clone(),
            trust: ServerTrust::Fingerprint(server.fingerprint().to_string()),
        };
        let config = WorkloadConfig {
            kind,
            message: MessageSize::Uniform(16, 512),
            keys: 1_000,
            distribution: KeyDistribution::Zipf(0.99),
            batch: 4,
            read_ratio: 0.5,
            durability: Some(Durability::Batched),
        };
        let (connections, in_flight) = (2, 2);
        let chains = target.open(connections, Durability::Batched).await.unwrap();
        let workers = connections * in_flight;
        let load = workload::build(&config, chains, workers, None).unwrap();
        let plan = RunPlan {
            workers,
            model: LoadModel::Closed,
            stop: Stop::After(Duration::from_millis(800)),
            warmup: Duration::ZERO,
        };
        let report = run(load, &plan, Default::default()).await;
        assert_eq!(report.errors, 0, "{kind:?}: {:?}", report.error_kinds);
        assert!(report.events > 0, "{kind:?} did nothing");
        assert!(report.latency_us.p50 > 0, "{kind:?}");
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
