//! `atedb run --config`: the chain-creation policy from the TOML file is
//! enforced, and SIGHUP applies an edited file without a restart.

mod common;

use ate_client::protocol::ErrorCode;
use ate_client::remote::{RemoteConnection, RemoteError};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creation_policy_is_enforced_and_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("atedb.toml");
    let write_config = |allow: &str| {
        let text = format!(
            "data = {:?}\nlisten = \"127.0.0.1:0\"\ndurability = \"sync\"\n[chains]\nallow_create = [{allow}]\n",
            data.display().to_string()
        );
        std::fs::write(&config, text).unwrap();
    };
    write_config("\"shop-*\"");
    let daemon = common::spawn(&["run", "--config", config.to_str().unwrap()], &[]);
    let (address, fingerprint) = (&daemon.address, &daemon.fingerprint);
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();

    let mut client = RemoteConnection::connect(address, fingerprint, &token).await.unwrap();
    client.open("shop-1").await.unwrap();
    let refused = client.open("payroll").await.unwrap_err();
    assert!(matches!(refused, RemoteError::Server { code: ErrorCode::Forbidden, .. }), "{refused}");

    write_config("\"shop-*\", \"payroll\"");
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(daemon.child.id() as i32, libc::SIGHUP) }, 0);
    let mut allowed = false;
    for _ in 0..100 {
        if client.open("payroll").await.is_ok() {
            allowed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(allowed, "the reloaded policy was not applied");
    drop(daemon);

    // A configuration with a typo is refused at start, with exit code 2.
    std::fs::write(&config, "listen_adress = \"127.0.0.1:0\"\n").unwrap();
    let status =
        Command::new(env!("CARGO_BIN_EXE_atedb")).args(["run", "--config", config.to_str().unwrap()]).output().unwrap();
    assert_eq!(status.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&status.stderr).contains("listen_adress"));
}
