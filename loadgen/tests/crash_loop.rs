//! Crash loop through the real binaries: `atedb` is driven by `ate-loadgen
//! run --workload ingest --acked-log`, killed with SIGKILL at a random
//! moment, and restarted on the same data directory, cycle after cycle.
//! Afterwards every record the load generator saw acknowledged is in the
//! chain at the sequence it was acknowledged with, and the chain verifies:
//! what is visible is a dense prefix of whole, valid commits, so nothing
//! half-written or unacknowledged-beyond-the-durable-prefix shows.
//!
//! `ATE_CRASH_CYCLES` sets the number of cycles (default 20, the CI form);
//! `ci/crash-loop.sh` runs the long soak.

use ate::prelude::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHAIN: &str = "crashloop";

fn atedb_binary() -> PathBuf {
    let atedb = Path::new(env!("CARGO_BIN_EXE_ate-loadgen")).with_file_name("atedb");
    assert!(
        atedb.exists(),
        "{} is missing: build it first (`cargo build -p atedb`; `cargo test --workspace` does)",
        atedb.display()
    );
    atedb
}

/// Starts `atedb solo` on `data` and returns it with its address.
fn start_atedb(data: &Path) -> (Child, String) {
    let mut child = Command::new(atedb_binary())
        .args(["solo", "--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("atedb starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let first = lines.next().expect("atedb prints its address").expect("readable stdout");
    let address = first.strip_prefix("atedb listening on ").expect("listen line").to_string();
    // Keep reading so the daemon never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, address)
}

#[test]
fn sigkill_under_load_never_loses_an_acknowledged_record() {
    let cycles: usize = std::env::var("ATE_CRASH_CYCLES").ok().and_then(|text| text.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let (data, acked) = (dir.path().join("data"), dir.path().join("acked.tsv"));
    let mut random =
        fastrand::Rng::with_seed(std::env::var("ATE_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7));
    let mut kills_under_load = 0;
    for cycle in 0..cycles {
        let (mut atedb, address) = start_atedb(&data);
        let fingerprint = std::fs::read_to_string(data.join("fingerprint")).unwrap();
        let durability = if cycle % 2 == 0 { "batched" } else { "sync" };
        let batch = random.usize(1..=8).to_string();
        let mut loadgen = Command::new(env!("CARGO_BIN_EXE_ate-loadgen"))
            .args(["run", "--workload", "ingest", "--target", &format!("tcp://{address}/{CHAIN}")])
            .args(["--token-file", data.join("admin.token").to_str().unwrap(), "--fingerprint", fingerprint.trim()])
            .args(["--acked-log", acked.to_str().unwrap(), "--durability", durability, "--batch", &batch])
            .args(["--message-size", "512", "--in-flight", "8", "--duration", "1.2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ate-loadgen starts");
        std::thread::sleep(Duration::from_millis(random.u64(150..1000)));
        // SIGKILL: no chance to flush or finish anything.
        atedb.kill().unwrap();
        atedb.wait().unwrap();
        // The load generator sees the server vanish, counts errors until its
        // duration ends and flushes what was acknowledged before.
        let status = loadgen.wait().unwrap();
        kills_under_load += usize::from(status.success());
    }
    // Recovery after the last kill, then the check, offline.
    let (mut atedb, _) = start_atedb(&data);
    atedb.kill().unwrap();
    atedb.wait().unwrap();

    let text = std::fs::read_to_string(&acked).unwrap();
    // Only whole lines: a run may end between two writes.
    let lines: Vec<&str> = text.split_inclusive('\n').filter(|line| line.ends_with('\n')).map(str::trim_end).collect();
    assert!(lines.len() > cycles, "too few acknowledged writes to prove anything: {}", lines.len());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = AteConfig { log_path: Some(data.clone()), ..AteConfig::default() };
        let chain = ChainBuilder::new(&config).await.build().open(&ChainKey::from(CHAIN)).await.unwrap();
        for line in &lines {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 3, "{line}");
            assert_eq!(fields[0], CHAIN);
            let stored =
                chain.get(&PrimaryKey::from_name(fields[1])).unwrap_or_else(|| panic!("acknowledged {line} is lost"));
            assert_eq!(stored.header.sequence().to_string(), fields[2], "{line}");
        }
        let report = chain.verify().await.expect("the chain verifies after every crash");
        eprintln!(
            "crash loop: {cycles} SIGKILL cycles ({kills_under_load} load runs ended cleanly), {} acknowledged \
             records checked, none lost; chain verifies: {} events in {} commits",
            lines.len(),
            report.events,
            report.commits
        );
    });
}
