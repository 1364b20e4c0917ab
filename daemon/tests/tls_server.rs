//! atedb over real TCP + TLS on loopback: commits and loads from two
//! clients, subscriptions, pinning, tokens, scopes, and hostile bytes on the
//! port while other clients keep working.

use ate::crypto::{PrivateSignKey, SignatureScheme};
use ate::prelude::*;
use ate_client::protocol::ErrorCode;
use ate_client::remote::{RemoteConnection, RemoteError};
use ate_client::token::{issue, Claims};
use atedb::server::{DataDirectory, Server};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Running {
    _dir: tempfile::TempDir,
    data: DataDirectory,
    address: String,
    fingerprint: String,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDirectory { root: dir.path().join("data") };
    let server = Server::open(&data).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let fingerprint = server.fingerprint().to_string();
    let serving = Arc::clone(&server);
    tokio::spawn(async move { serving.serve(listener, stopped).await });
    Running { _dir: dir, data, address, fingerprint, _stop: stop }
}

fn admin_token(running: &Running) -> String {
    std::fs::read_to_string(running.data.admin_token()).unwrap()
}

fn issuer(running: &Running) -> PrivateSignKey {
    PrivateSignKey::decode(&std::fs::read(running.data.issuer_key()).unwrap()).unwrap()
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_write_and_read_the_same_chain_and_subscribe() {
    let running = start().await;
    let token = admin_token(&running);
    let mut writer = RemoteConnection::connect(&running.address, &running.fingerprint, &token).await.unwrap();
    let mut reader = RemoteConnection::connect(&running.address, &running.fingerprint, &token).await.unwrap();
    assert_eq!(writer.subject, "admin");
    assert_eq!(writer.open("orders").await.unwrap(), 0);
    let subscriber = RemoteConnection::connect(&running.address, &running.fingerprint, &token).await.unwrap();
    let mut subscription = subscriber.subscribe("orders", 0).await.unwrap();

    let key = PrimaryKey::from_name("order-1");
    let (first, last) = writer.commit("orders", &[NewEvent::data(key, b"two coffees".to_vec())]).await.unwrap();
    assert_eq!((first, last), (0, 0));
    let record = reader.load("orders", *key.as_bytes()).await.unwrap().expect("committed record");
    let mut aligned = ate::format::AlignedBytes::new();
    aligned.extend_from_slice(&record);
    let decoded = ate::format::decode_record(&aligned, 0).unwrap().unwrap();
    assert_eq!(decoded.payload, b"two coffees", "records travel as stored and check out");
    assert!(reader.load("orders", *PrimaryKey::from_name("nope").as_bytes()).await.unwrap().is_none());

    for index in 1..=3u8 {
        writer.commit("orders", &[NewEvent::data(PrimaryKey::generate(), vec![index])]).await.unwrap();
    }
    for expected in 0..4u64 {
        let event = subscription.next().await.unwrap();
        assert_eq!(event.header.sequence, expected);
    }
    // Validation errors travel as typed errors and the connection stays usable.
    let mut conflicting = NewEvent::data(key, b"x".to_vec());
    conflicting.expect = Expect::Absent;
    let error = writer.commit("orders", &[conflicting]).await.unwrap_err();
    assert!(matches!(error, RemoteError::Server { code: ErrorCode::Conflict, .. }), "{error}");
    writer.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_fingerprints_and_bad_tokens_are_refused() {
    let running = start().await;
    let token = admin_token(&running);
    let wrong = "00".repeat(32);
    let error = RemoteConnection::connect(&running.address, &wrong, &token).await.unwrap_err();
    assert!(matches!(error, RemoteError::Transport(_)), "{error}");

    let issuer = issuer(&running);
    let expired = issue(
        &Claims { subject: "old".into(), roles: vec![], chains: vec!["*".into()], issued_at_us: 1, expires_at_us: 2 },
        &issuer,
    );
    let error = RemoteConnection::connect(&running.address, &running.fingerprint, &expired).await.unwrap_err();
    assert!(matches!(error, RemoteError::Server { code: ErrorCode::Unauthenticated, .. }), "{error}");
    let stranger = PrivateSignKey::generate(SignatureScheme::MlDsa44);
    let forged = issue(
        &Claims {
            subject: "eve".into(),
            roles: vec![],
            chains: vec!["*".into()],
            issued_at_us: 1,
            expires_at_us: u64::MAX,
        },
        &stranger,
    );
    let error = RemoteConnection::connect(&running.address, &running.fingerprint, &forged).await.unwrap_err();
    assert!(matches!(error, RemoteError::Server { code: ErrorCode::Unauthenticated, .. }), "{error}");

    // A scoped token may open its chains only; the connection stays usable.
    let scoped = issue(
        &Claims {
            subject: "shop".into(),
            roles: vec![],
            chains: vec!["shop-*".into()],
            issued_at_us: now_us(),
            expires_at_us: now_us() + 60_000_000,
        },
        &issuer,
    );
    let mut shop = RemoteConnection::connect(&running.address, &running.fingerprint, &scoped).await.unwrap();
    let error = shop.open("payroll").await.unwrap_err();
    assert!(matches!(error, RemoteError::Server { code: ErrorCode::Forbidden, .. }), "{error}");
    shop.open("shop-orders").await.unwrap();
    shop.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_do_not_disturb_other_clients() {
    let running = start().await;
    let token = admin_token(&running);
    let mut good = RemoteConnection::connect(&running.address, &running.fingerprint, &token).await.unwrap();
    // Plain garbage instead of a TLS handshake.
    let mut raw = tokio::net::TcpStream::connect(&running.address).await.unwrap();
    raw.write_all(&[0xde; 4096]).await.unwrap();
    let mut sink = [0u8; 64];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), raw.read(&mut sink)).await;
    // A TLS client announcing a 4 GiB frame.
    let config = ate_client::transport::pinned_client_config(&running.fingerprint).unwrap();
    let tcp = tokio::net::TcpStream::connect(&running.address).await.unwrap();
    let name = rustls_name();
    let mut tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
    tls.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), tls.read(&mut sink)).await.unwrap();
    assert!(matches!(closed, Ok(0) | Err(_)), "the server closes a connection that announces an oversized frame");
    // The well-behaved client never noticed.
    good.ping().await.unwrap();
    good.commit("still-fine", &[NewEvent::data(PrimaryKey::generate(), vec![1])]).await.unwrap();
}

fn rustls_name() -> rustls::pki_types::ServerName<'static> {
    rustls::pki_types::ServerName::try_from("atedb").unwrap()
}
