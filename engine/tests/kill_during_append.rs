//! A real child process appends in `Batched` mode and is killed with SIGKILL
//! at random moments. After every kill, each commit the child saw
//! acknowledged is present, and what is visible is a dense prefix of whole
//! commits.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_DIR: &str = "ATE_TEST_APPENDER_DIR";

/// Entry point of the child process; a no-op when run as a normal test.
#[test]
fn child_appender() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let chain = common::open(std::path::Path::new(&dir)).await.expect("child open");
        let start = chain.next_sequence();
        // Several concurrent committers so that group commit coalesces.
        let mut tasks = Vec::new();
        for worker in 0..4u64 {
            let chain = chain.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0u64.. {
                    let name = format!("w{worker}-s{start}-r{round}");
                    let key = ate::PrimaryKey::from_name(&name);
                    let value = name.clone().into_bytes();
                    let second = ate::PrimaryKey::from_name(&format!("{name}-b"));
                    let events = vec![ate::NewEvent::data(key, value.clone()), ate::NewEvent::data(second, value)];
                    let receipt = chain.append(events, None).await.expect("append");
                    println!("ACK {name} {}", receipt.last_sequence);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_never_loses_an_acknowledged_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged: HashMap<String, u64> = HashMap::new();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64;
    for cycle in 0..6u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["child_appender", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Kill after a pseudo-random number of acknowledgements (and time).
        let kill_after = 50 + (seed.wrapping_mul(cycle + 7) % 400) as usize;
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.push(line);
            }
            lines
        });
        let started = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(5));
            let enough = started.elapsed() > Duration::from_millis(100 + (kill_after as u64));
            if enough || started.elapsed() > Duration::from_secs(20) {
                break;
            }
        }
        // SIGKILL: no destructor, no flush, nothing graceful.
        child.kill().unwrap();
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            if let Some(rest) = line.strip_prefix("ACK ") {
                let (name, sequence) = rest.split_once(' ').unwrap();
                acknowledged.insert(name.to_string(), sequence.parse().unwrap());
            }
        }
        let chain = common::open(dir.path()).await.unwrap_or_else(|e| panic!("reopen after kill {cycle}: {e}"));
        for (name, sequence) in &acknowledged {
            let key = ate::PrimaryKey::from_name(name);
            let event = chain.get(&key).unwrap_or_else(|| panic!("acknowledged {name} lost after kill {cycle}"));
            assert_eq!(event.payload, name.as_bytes());
            assert!(event.header.sequence() < *sequence + 1);
            assert!(chain.get(&ate::PrimaryKey::from_name(&format!("{name}-b"))).is_some(), "half of commit {name}");
            assert!(*sequence < chain.next_sequence());
        }
        // Every visible object belongs to a whole commit: objects come in
        // pairs, and the sequence space is dense.
        assert_eq!(chain.len() as u64, chain.next_sequence(), "events and live objects disagree");
        assert_eq!(chain.len() % 2, 0, "a commit is half visible");
    }
    assert!(acknowledged.len() > 100, "the child acknowledged too little to prove anything: {}", acknowledged.len());
}
