//! The real binaries together: `atedb solo`, then `ate put/get/del` over
//! TLS with the admin token it wrote, trusting the server on first use.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

mod common;

fn ate_binary() -> PathBuf {
    // Built beside atedb by `cargo test --workspace` (the README's test command).
    let path = PathBuf::from(env!("CARGO_BIN_EXE_atedb")).with_file_name("ate");
    assert!(path.exists(), "{} is missing: run the tests with `cargo test --workspace`", path.display());
    path
}

#[test]
fn ate_put_get_del_against_atedb_solo() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ate-data");
    let daemon = common::spawn(&["solo", "--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0"], &[]);
    let (address, fingerprint) = (daemon.address.clone(), daemon.fingerprint.clone());

    let known = dir.path().join("known_servers");
    let token = data.join("admin.token");
    let ate = |arguments: &[&str]| -> Output {
        Command::new(ate_binary())
            .args(["--token-file", token.to_str().unwrap()])
            .args(arguments)
            .env("ATE_KNOWN_SERVERS", &known)
            .output()
            .unwrap()
    };
    let target = format!("tcp://{address}/demo");
    let put = ate(&["put", &target, "hello", "world"]);
    assert!(put.status.success(), "{put:?}");
    assert_eq!(String::from_utf8_lossy(&put.stdout).trim(), "0");
    // The server was trusted on first use and pinned for next time.
    let pinned = std::fs::read_to_string(&known).unwrap();
    assert!(pinned.contains(&address) && pinned.contains(&fingerprint));

    let get = ate(&["get", &target, "hello"]);
    assert!(get.status.success(), "{get:?}");
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "world");
    assert_eq!(ate(&["get", &target, "absent"]).status.code(), Some(1));
    assert!(ate(&["del", &target, "hello"]).status.success());
    assert_eq!(ate(&["get", &target, "hello"]).status.code(), Some(1));
    // tail over the network: every event so far, then exit (no --follow).
    let tail = ate(&["tail", &target, "--from", "0"]);
    assert!(tail.status.success(), "{tail:?}");
    let lines: Vec<String> = String::from_utf8_lossy(&tail.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("0 put ") && lines[0].ends_with("hello=world"), "{lines:?}");
    assert!(lines[1].starts_with("1 del "), "{lines:?}");

    // WORM over the network: the server enforces the chain's policy, and the
    // CLI reports the refusal with exit code 4.
    let archive = format!("tcp://{address}/archive");
    let policy = ate(&["retention", "policy", &archive, "--mode", "compliance", "--default-retention", "1d"]);
    assert!(policy.status.success(), "{policy:?}");
    assert!(ate(&["put", &archive, "ledger", "entry"]).status.success());
    let delete = ate(&["del", &archive, "ledger"]);
    assert_eq!(delete.status.code(), Some(4), "{delete:?}");
    assert!(String::from_utf8_lossy(&delete.stderr).contains("compliance-mode retention"), "{delete:?}");
    assert!(ate(&["hold", "set", &archive, "ledger"]).status.success());
    let shown = ate(&["retention", "show", &archive, "ledger"]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("legal hold    yes"), "{shown:?}");

    // A server whose certificate changed is refused, not trusted again.
    std::fs::write(&known, format!("{address} {}\n", "ab".repeat(32))).unwrap();
    let refused = ate(&["get", &target, "hello"]);
    assert_eq!(refused.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("fingerprint"), "{refused:?}");
}

#[test]
fn json_logs_on_standard_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_atedb"))
        .args([
            "--log-format",
            "json",
            "solo",
            "--data",
            dir.path().join("d").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _daemon = common::Daemon { child, address: String::new(), fingerprint: String::new() };
    let line = BufReader::new(stderr).lines().next().unwrap().unwrap();
    assert!(line.starts_with('{') && line.ends_with('}'), "not a JSON line: {line}");
    assert!(line.contains("\"atedb listening\"") && line.contains("\"fingerprint\""), "{line}");
}

/// A supervisor that stops reading stdout (a closed pipe) must not kill the
/// daemon: it once panicked on EPIPE while printing its start-up banner.
#[test]
fn a_closed_standard_output_does_not_stop_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ate-data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_atedb"))
        .args(["solo", "--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    // The admin token is written before the banner; once it exists the
    // banner write is imminent, and a daemon that would die of it has had
    // ample time after another second.
    for _ in 0..200 {
        if data.join("admin.token").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(still_running, "atedb exited after its stdout was closed");
}
