//! atedb over real TCP + TLS on loopback: commits and loads from two
//! clients, subscriptions, pinning, tokens, scopes, and hostile bytes on the
//! port while other clients keep working.

mod common;

use ate::crypto::{PrivateSignKey, SignatureScheme};
use ate::prelude::*;
use ate_client::protocol::ErrorCode;
use ate_client::remote::{RemoteConnection, RemoteError};
use ate_client::token::{issue, Claims};
use atedb::server::{DataDirectory, Server};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{start, Running};

fn admin_token(running: &Running) -> String {
    running.admin_token()
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
            roles: vec!["write".into()],
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
    // Write-only: commits go through, reading is refused before anything
    // is sent, and the connection stays usable after each refusal.
    shop.commit("shop-orders", &[NewEvent::data(PrimaryKey::generate(), b"order".to_vec())]).await.unwrap();
    let error = shop.load("shop-orders", [0; 16]).await.unwrap_err();
    assert!(matches!(error, RemoteError::Server { code: ErrorCode::Forbidden, .. }), "{error}");
    shop.ping().await.unwrap();
    let error = shop.subscribe("shop-orders", 0).await.unwrap_err();
    assert!(matches!(error, RemoteError::Server { code: ErrorCode::Forbidden, .. }), "{error}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_redirects_chains_it_does_not_own_to_their_owner() {
    use atedb::server::ServerOptions;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let listener_a = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener_b = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (address_a, address_b) =
        (listener_a.local_addr().unwrap().to_string(), listener_b.local_addr().unwrap().to_string());
    let members = vec![address_a.clone(), address_b.clone()];
    let data_a = DataDirectory { root: dir_a.path().join("data") };
    let server_a = Server::open_with(
        &data_a,
        ServerOptions { cluster: Some((members.clone(), address_a.clone())), ..Default::default() },
    )
    .await
    .unwrap();
    // B trusts A's token issuer, so one token works on both.
    let issuer_a = PrivateSignKey::decode(&std::fs::read(data_a.issuer_key()).unwrap()).unwrap();
    let options_b = ServerOptions {
        trusted_issuers: vec![issuer_a.public().clone()],
        cluster: Some((members.clone(), address_b.clone())),
        ..Default::default()
    };
    let server_b = Server::open_with(&DataDirectory { root: dir_b.path().join("data") }, options_b).await.unwrap();
    let (_stop_a, stopped_a) = tokio::sync::watch::channel(false);
    let (_stop_b, stopped_b) = tokio::sync::watch::channel(false);
    let (serving_a, serving_b) = (Arc::clone(&server_a), Arc::clone(&server_b));
    tokio::spawn(async move { serving_a.serve(listener_a, stopped_a).await });
    tokio::spawn(async move { serving_b.serve(listener_b, stopped_b).await });

    let token = std::fs::read_to_string(data_a.admin_token()).unwrap();
    let ring = ate_client::ring::HashRing::new(members, ate_client::ring::DEFAULT_VIRTUAL_NODES);
    let owned_by_b =
        (0..1000).map(|i| format!("chain-{i}")).find(|name| ring.owner(name) == Some(address_b.as_str())).unwrap();

    let mut on_a = RemoteConnection::connect(&address_a, server_a.fingerprint(), &token).await.unwrap();
    let error = on_a.open(&owned_by_b).await.unwrap_err();
    let RemoteError::Redirect { address } = error else { panic!("expected a redirect, got {error}") };
    assert_eq!(address, address_b);
    on_a.ping().await.unwrap();
    let mut on_b = RemoteConnection::connect(&address, server_b.fingerprint(), &token).await.unwrap();
    on_b.open(&owned_by_b).await.unwrap();
    on_b.commit(&owned_by_b, &[NewEvent::data(PrimaryKey::generate(), vec![1])]).await.unwrap();

    // The Registry follows the redirect on its own (trusting each server on
    // first use), and with the members configured it goes to the owner directly.
    use ate_client::registry::{Registry, RegistryConfig, ServerTrust};
    let known = dir_a.path().join("known_servers");
    let via_a = Registry::new(RegistryConfig::new(token.clone(), ServerTrust::KnownServers(known.clone()))).await;
    let chain = via_a.open(&format!("tcp://{address_a}/{owned_by_b}")).await.unwrap();
    assert_eq!(chain.next_sequence(), 1, "the replica holds the owner's history");
    let mut dio = chain.dio(&AteSession::default()).await;
    dio.store("through the redirect".to_string()).unwrap();
    dio.commit().await.unwrap();
    assert_eq!(server_b.open_chains().await.iter().find(|c| c.key().name() == owned_by_b).unwrap().next_sequence(), 2);
    let known_text = std::fs::read_to_string(&known).unwrap();
    assert!(known_text.contains(server_a.fingerprint()) && known_text.contains(server_b.fingerprint()));
    let mut config = RegistryConfig::new(token, ServerTrust::KnownServers(known));
    config.members = vec![address_a.clone(), address_b.clone()];
    let direct = Registry::new(config).await.open(&format!("tcp://{address_a}/{owned_by_b}")).await.unwrap();
    assert_eq!(direct.next_sequence(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_count_commits_rejections_and_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDirectory { root: dir.path().join("data") };
    let server = Server::open(&data).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (address, metrics_address) =
        (listener.local_addr().unwrap().to_string(), metrics_listener.local_addr().unwrap().to_string());
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let serving = Arc::clone(&server);
    tokio::spawn(async move { serving.serve(listener, stopped).await });
    tokio::spawn(atedb::metrics::serve_metrics(metrics_listener, Arc::clone(&server)));

    let token = std::fs::read_to_string(data.admin_token()).unwrap();
    let mut client = RemoteConnection::connect(&address, server.fingerprint(), &token).await.unwrap();
    let key = PrimaryKey::from_name("m");
    client.commit("metered", &[NewEvent::data(key, vec![1; 100])]).await.unwrap();
    let mut conflicting = NewEvent::data(key, vec![2]);
    conflicting.expect = Expect::Absent;
    assert!(client.commit("metered", &[conflicting]).await.is_err());

    let mut http = tokio::net::TcpStream::connect(&metrics_address).await.unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut response = String::new();
    http.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    for expected in [
        "atedb_commits_total 1",
        "atedb_connections_active 1",
        "atedb_rejected_total{reason=\"conflict\"} 1",
        "atedb_commit_seconds_count 1",
        "atedb_chains_open 1",
        "atedb_fsync_seconds_count{chain=\"metered-",
        "atedb_chain_events_total{chain=\"metered-",
        "atedb_chain_trust_entries{chain=\"metered-",
    ] {
        assert!(response.contains(expected), "missing {expected} in\n{response}");
    }
    let objects = response.lines().find(|line| line.starts_with("atedb_chain_objects{chain=\"metered-"));
    assert!(objects.is_some_and(|line| line.ends_with(" 1")), "one live object: {objects:?}");
    // The server did work (a TLS handshake at least): some CPU time.
    let cpu_s = response.lines().find_map(|line| line.strip_prefix("process_cpu_seconds_total "));
    assert!(cpu_s.and_then(|value| value.parse::<f64>().ok()).is_some_and(|cpu_s| cpu_s > 0.0), "{cpu_s:?}");
}

/// A CA-issued identity instead of the self-signed one: clients verify the
/// chain and the name, with no fingerprint to pin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_issued_certificate_is_verified_by_chain_and_name() {
    use ate_client::registry::{Registry, RegistryConfig, ServerTrust};
    use atedb::server::ServerOptions;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let dir = tempfile::tempdir().unwrap();
    let make_ca = || {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let certificate = params.self_signed(&key).unwrap();
        (certificate, Issuer::new(params, key))
    };
    let (ca, issuer) = make_ca();
    let (other_ca, _) = make_ca();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("tls.crt"), leaf.der()).unwrap();
    std::fs::write(path("tls.key"), leaf_key.serialize_der()).unwrap();
    std::fs::write(path("ca.der"), ca.der()).unwrap();
    std::fs::write(path("other-ca.der"), other_ca.der()).unwrap();

    let data = DataDirectory { root: dir.path().join("data") };
    let options = ServerOptions { tls: Some((path("tls.crt"), path("tls.key"))), ..Default::default() };
    let server = Server::open_with(&data, options).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let serving = Arc::clone(&server);
    tokio::spawn(async move { serving.serve(listener, stopped).await });
    let token = std::fs::read_to_string(data.admin_token()).unwrap();
    let address = format!("127.0.0.1:{port}");

    let mut client = RemoteConnection::connect_ca(&address, "localhost", &path("ca.der"), &token).await.unwrap();
    client.ping().await.unwrap();
    // Another CA, or a name the certificate does not carry: refused.
    let error = RemoteConnection::connect_ca(&address, "localhost", &path("other-ca.der"), &token).await.unwrap_err();
    assert!(matches!(error, RemoteError::Transport(_)), "{error}");
    let error = RemoteConnection::connect_ca(&address, "elsewhere.example", &path("ca.der"), &token).await.unwrap_err();
    assert!(matches!(error, RemoteError::Transport(_)), "{error}");

    // The Registry verifies the URL's host name, whatever address it dials.
    let mut config = RegistryConfig::new(token, ServerTrust::CertificateAuthority(path("ca.der")));
    config.members = vec![address.clone()];
    let chain = Registry::new(config).await.open(&format!("tcp://localhost:{port}/records")).await.unwrap();
    let mut dio = chain.dio(&AteSession::default()).await;
    dio.store(1u8).unwrap();
    dio.commit().await.unwrap();
}
