//! `atedb solo` under a service manager: READY=1 once it accepts
//! connections, WATCHDOG=1 periodically, STOPPING=1 on SIGTERM, then a
//! clean exit (status 0) that keeps every acknowledged commit.

mod common;

use ate::prelude::*;
use ate_client::remote::RemoteConnection;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

fn receive(socket: &UnixDatagram) -> String {
    let mut buffer = [0u8; 256];
    let length = socket.recv(&mut buffer).expect("a notification in time");
    String::from_utf8_lossy(&buffer[..length]).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_watchdog_stopping_and_a_clean_exit_without_losing_acknowledged_commits() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let data = dir.path().join("data");
    let mut daemon = common::spawn(
        &["solo", "--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        &[("NOTIFY_SOCKET", socket_path.as_os_str()), ("WATCHDOG_USEC", "200000".as_ref())],
    );
    let (address, fingerprint) = (daemon.address.clone(), daemon.fingerprint.clone());
    assert_eq!(receive(&socket), "READY=1");
    assert_eq!(receive(&socket), "WATCHDOG=1");

    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let mut client = RemoteConnection::connect(&address, &fingerprint, &token).await.unwrap();
    let mut acknowledged = Vec::new();
    for index in 0..20u32 {
        let key = PrimaryKey::from_name(&format!("k{index}"));
        client.commit("durable", &[NewEvent::data(key, index.to_le_bytes().to_vec())]).await.unwrap();
        acknowledged.push(key);
    }
    // SIGTERM.
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(daemon.child.id() as i32, libc::SIGTERM) }, 0);
    loop {
        let state = receive(&socket);
        if state == "STOPPING=1" {
            break;
        }
        assert_eq!(state, "WATCHDOG=1");
    }
    let status = tokio::task::spawn_blocking(move || daemon.child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "atedb exited with {status}");

    let config = AteConfig { log_path: Some(data), ..AteConfig::default() };
    let chain = ChainBuilder::new(&config).await.build().open(&ChainKey::from("durable")).await.unwrap();
    for key in acknowledged {
        assert!(chain.get(&key).is_some(), "an acknowledged commit was lost in shutdown");
    }
}
