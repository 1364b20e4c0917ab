//! The bad-input matrix over real TLS connections: each malformed or
//! unauthorised input gets its exact, typed answer, the server stays up,
//! and a well-behaved client on another connection never notices.
//! (Forged, out-of-authority, replayed and tampered events are refused by
//! the engine before the server writes anything: engine/tests/
//! security_vectors.rs, tamper_detection.rs, chain_of_trust.rs; remote
//! replicas refuse them from a server: engine/tests/replica_follow.rs.)

mod common;

use ate::prelude::*;
use ate_client::protocol::{encode_frame, ClientMessage, ErrorCode, FrameKind, ServerMessage, PROTOCOL_VERSION};
use ate_client::remote::{RemoteConnection, RemoteError};
use ate_client::transport::FramedReader;
use common::{start, start_with, Running};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection on which the test writes whatever bytes it likes.
struct Raw {
    reader: FramedReader<ReadHalf<Tls>>,
    writer: WriteHalf<Tls>,
}

impl Raw {
    async fn connect(running: &Running) -> Self {
        let config = ate_client::transport::pinned_client_config(&running.fingerprint).unwrap();
        let tcp = tokio::net::TcpStream::connect(&running.address).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("atedb").unwrap();
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
        let (read, writer) = tokio::io::split(tls);
        Self { reader: FramedReader::new(read, FrameKind::Server), writer }
    }

    /// Hello and Authenticate with `token`.
    async fn authenticated(running: &Running, token: &str) -> Self {
        let mut raw = Self::connect(running).await;
        raw.hello().await;
        raw.send(&ClientMessage::Authenticate { token: token.as_bytes().to_vec() }).await;
        assert!(matches!(raw.next().await, Some(ServerMessage::Authenticated { .. })));
        raw
    }

    async fn hello(&mut self) {
        self.send(&ClientMessage::Hello { versions: vec![PROTOCOL_VERSION], client: "bad-input".into() }).await;
        assert!(matches!(self.next().await, Some(ServerMessage::HelloAck { .. })));
    }

    async fn send(&mut self, message: &ClientMessage) {
        self.frame(FrameKind::Client as u8, &message.encode()).await;
    }

    /// A frame with any kind byte and body.
    async fn frame(&mut self, kind: u8, body: &[u8]) {
        let mut bytes = Vec::new();
        encode_frame(FrameKind::Client, body, usize::MAX, &mut bytes).unwrap();
        bytes[4] = kind;
        self.bytes(&bytes).await;
    }

    async fn bytes(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
        self.writer.flush().await.unwrap();
    }

    /// The next message, `None` once the server closed the connection.
    async fn next(&mut self) -> Option<ServerMessage> {
        let body = tokio::time::timeout(Duration::from_secs(15), self.reader.next()).await.expect("an answer").ok()?;
        Some(ServerMessage::decode(&body).expect("the server sends valid messages"))
    }

    async fn expect_error(&mut self, code: ErrorCode, containing: &str) {
        match self.next().await {
            Some(ServerMessage::Error { code: got, message, .. }) => {
                assert_eq!(got, code, "{message}");
                assert!(message.contains(containing), "{message:?} lacks {containing:?}");
            }
            other => panic!("expected {code:?}, got {other:?}"),
        }
    }

    async fn expect_closed(&mut self) {
        assert!(self.next().await.is_none(), "the server keeps a connection it should end");
    }

    async fn ping(&mut self, nonce: u64) {
        self.send(&ClientMessage::Ping { nonce }).await;
        assert!(matches!(self.next().await, Some(ServerMessage::Pong { nonce: got }) if got == nonce));
    }
}

/// The bystander: connected before the bad input, checked after it.
async fn still_served(good: &mut RemoteConnection, round: u32) {
    good.ping().await.unwrap();
    good.commit("bystander", &[NewEvent::data(PrimaryKey::generate(), round.to_le_bytes().to_vec())]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_messages_and_versions_get_typed_answers() {
    let running = start().await;
    let mut good =
        RemoteConnection::connect(&running.address, &running.fingerprint, &running.admin_token()).await.unwrap();

    // Anything before Hello: refused, connection ended.
    let mut raw = Raw::connect(&running).await;
    raw.send(&ClientMessage::Ping { nonce: 1 }).await;
    raw.expect_error(ErrorCode::BadRequest, "first message must be Hello").await;
    raw.expect_closed().await;
    still_served(&mut good, 1).await;

    // Only unknown protocol versions.
    let mut raw = Raw::connect(&running).await;
    raw.send(&ClientMessage::Hello { versions: vec![999, 1000], client: "future".into() }).await;
    raw.expect_error(ErrorCode::UnsupportedVersion, "no protocol version in common").await;
    raw.expect_closed().await;
    still_served(&mut good, 2).await;

    // A body that is not a message: refused, the connection stays usable.
    let mut raw = Raw::authenticated(&running, &running.admin_token()).await;
    raw.frame(FrameKind::Client as u8, &[0xff; 40]).await;
    raw.expect_error(ErrorCode::BadRequest, "malformed message").await;
    raw.frame(FrameKind::Client as u8, &[]).await;
    raw.expect_error(ErrorCode::BadRequest, "").await;
    raw.ping(7).await;

    // An unknown frame kind: the stream cannot be trusted any more, it ends.
    raw.frame(9, b"what is this").await;
    raw.expect_closed().await;
    still_served(&mut good, 3).await;

    // A truncated frame, then the client goes away mid-frame.
    let mut raw = Raw::authenticated(&running, &running.admin_token()).await;
    raw.bytes(&[200, 0, 0, 0, FrameKind::Client as u8, 1, 2, 3]).await;
    drop(raw);
    // An oversized frame announcement ends that connection only.
    let mut raw = Raw::authenticated(&running, &running.admin_token()).await;
    raw.bytes(&(64u32 << 20).to_le_bytes()).await;
    raw.expect_closed().await;
    still_served(&mut good, 4).await;

    // A lease request naming more keys than the bound: refused, connection usable.
    let mut raw = Raw::authenticated(&running, &running.admin_token()).await;
    let keys = vec![[7u8; 16]; ate::messaging::MAX_LEASE_CANDIDATES + 1];
    raw.send(&ClientMessage::LeaseMany { request: 1, chain: "c".into(), keys, token: 1, lease_ms: 10, max: 1 }).await;
    raw.expect_error(ErrorCode::TooLarge, "at most 1024 keys").await;
    let leases = vec![([7u8; 16], 1); ate::messaging::MAX_LEASE_CANDIDATES + 1];
    raw.send(&ClientMessage::LeaseHoldsMany { request: 2, chain: "c".into(), leases }).await;
    raw.expect_error(ErrorCode::TooLarge, "at most 1024 leases").await;
    let max = ate::messaging::MAX_LEASE_CANDIDATES as u32 + 1;
    raw.send(&ClientMessage::Take { request: 3, chain: "c".into(), items: [7; 16], token: 1, lease_ms: 10, max }).await;
    raw.expect_error(ErrorCode::TooLarge, "at most 1024 items").await;
    // Token 0 marks a free item: a lease under it would hold nothing.
    raw.send(&ClientMessage::Take { request: 5, chain: "c".into(), items: [7; 16], token: 0, lease_ms: 10, max: 1 })
        .await;
    raw.expect_error(ErrorCode::BadRequest, "token 0").await;
    raw.send(&ClientMessage::Lease { request: 6, chain: "c".into(), key: [7; 16], token: 0, lease_ms: 10 }).await;
    raw.expect_error(ErrorCode::BadRequest, "token 0").await;
    raw.ping(8).await;
    // A take reads and leases: a token with one of the two roles is refused.
    for roles in [&["read"][..], &["write"][..]] {
        let mut raw = Raw::authenticated(&running, &running.token(roles, std::time::Duration::from_secs(60))).await;
        let take =
            ClientMessage::Take { request: 4, chain: "c".into(), items: [7; 16], token: 1, lease_ms: 10, max: 1 };
        raw.send(&take).await;
        let missing = if roles == ["read"] { "lacks the 'write' role" } else { "lacks the 'read' role" };
        raw.expect_error(ErrorCode::Forbidden, missing).await;
        raw.ping(9).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_names_that_would_mislead_are_refused_by_name() {
    let running = start().await;
    let mut raw = Raw::authenticated(&running, &running.admin_token()).await;
    let long = "x".repeat(300);
    for (request, (name, reason)) in [
        ("..", "'.' and '..'"),
        ("../etc", "contains '/'"),
        ("a/b", "contains '/'"),
        ("nul\0byte", "control character"),
        ("", "empty"),
        (long.as_str(), "longer than 255"),
    ]
    .into_iter()
    .enumerate()
    {
        raw.send(&ClientMessage::Open { request: request as u64, chain: name.into() }).await;
        raw.expect_error(ErrorCode::BadRequest, reason).await;
    }
    // Not UTF-8 at all: the message does not decode.
    let mut body = ClientMessage::Open { request: 50, chain: "ab".into() }.encode();
    let at = body.len() - 2;
    body[at..].copy_from_slice(&[0xc3, 0x28]);
    raw.frame(FrameKind::Client as u8, &body).await;
    raw.expect_error(ErrorCode::BadRequest, "malformed message").await;
    raw.ping(8).await;
    assert!(!running.data.root.join("chains").exists_and_has("etc"), "nothing was created for a refused name");
}

/// `Path::exists_and_has`: whether a directory holds an entry whose name contains `part`.
trait HasEntry {
    fn exists_and_has(&self, part: &str) -> bool;
}

impl HasEntry for std::path::PathBuf {
    fn exists_and_has(&self, part: &str) -> bool {
        std::fs::read_dir(self)
            .map(|entries| entries.flatten().any(|entry| entry.file_name().to_string_lossy().contains(part)))
            .unwrap_or(false)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_expired_and_underprivileged_tokens_are_refused() {
    let running = start().await;
    let mut good =
        RemoteConnection::connect(&running.address, &running.fingerprint, &running.admin_token()).await.unwrap();

    // One hex digit of a valid token changed to another value (not just its
    // case: 'a' to 'A' decodes to the same byte, which made this flaky).
    let mut tampered = running.admin_token().trim().to_string().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    let error = RemoteConnection::connect(&running.address, &running.fingerprint, &tampered).await.unwrap_err();
    assert!(matches!(error, RemoteError::Server { code: ErrorCode::Unauthenticated, .. }), "{error}");

    // Read-only: may read an existing chain, may not create one.
    good.commit("existing", &[NewEvent::data(PrimaryKey::generate(), vec![1])]).await.unwrap();
    let reader = running.token(&["read"], Duration::from_secs(60));
    let mut raw = Raw::authenticated(&running, &reader).await;
    raw.send(&ClientMessage::Open { request: 1, chain: "brand-new".into() }).await;
    raw.expect_error(ErrorCode::NotFound, "needs the 'write' role").await;
    raw.send(&ClientMessage::Open { request: 2, chain: "existing".into() }).await;
    assert!(matches!(raw.next().await, Some(ServerMessage::Opened { .. })));
    assert!(!running.data.root.join("chains").exists_and_has("brand-new"));

    // A second Authenticate on one connection: one identity per connection.
    raw.send(&ClientMessage::Authenticate { token: running.admin_token().into_bytes() }).await;
    raw.expect_error(ErrorCode::BadRequest, "").await;
    still_served(&mut good, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_ends_when_its_token_expires() {
    let running =
        start_with(atedb::server::ServerOptions { token_skew: Some(Duration::ZERO), ..Default::default() }).await;
    let mut good =
        RemoteConnection::connect(&running.address, &running.fingerprint, &running.admin_token()).await.unwrap();
    good.commit("news", &[NewEvent::data(PrimaryKey::generate(), vec![1])]).await.unwrap();
    let short = running.token(&["read"], Duration::from_secs(2));
    let mut raw = Raw::authenticated(&running, &short).await;
    raw.send(&ClientMessage::Subscribe { request: 1, chain: "news".into(), from: 0, collection: None }).await;
    assert!(matches!(raw.next().await, Some(ServerMessage::Subscribed { .. })));
    assert!(matches!(raw.next().await, Some(ServerMessage::Events { .. })));
    // Nothing new is committed: the stream waits, then the token runs out.
    raw.expect_error(ErrorCode::Unauthenticated, "token expired").await;
    // Requests after expiry are refused too.
    raw.send(&ClientMessage::Open { request: 2, chain: "news".into() }).await;
    raw.expect_error(ErrorCode::Unauthenticated, "expired").await;
    still_served(&mut good, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_authenticates_is_closed() {
    let running = start().await;
    let mut idle = Raw::connect(&running).await;
    idle.hello().await;
    // The handshake timeout is 10 s; `next` waits up to 15.
    idle.expect_error(ErrorCode::Unauthenticated, "no authentication within").await;
    idle.expect_closed().await;
}

/// `key`'s public key, `events` and one signature event by `key` over all
/// of them, as a DIO commit builds them.
fn signed(chain: &str, key: &ate::crypto::PrivateSignKey, events: Vec<NewEvent>) -> Vec<NewEvent> {
    let timestamp_us = ate::chain::now_us();
    let key_object = PrimaryKey::from_bytes(key.id().0[..16].try_into().unwrap());
    let mut events: Vec<NewEvent> =
        std::iter::once(NewEvent::new(key_object, ate::format::EventKind::PublicKey, key.public().encode()))
            .chain(events)
            .collect();
    for (index, event) in events.iter_mut().enumerate() {
        event.timestamp_us = timestamp_us;
        event.nonce = [index as u8 + 1; 12];
    }
    let contents: Vec<ate::trust::EventContent> =
        events.iter().map(|event| event.content(blake3::hash(&event.payload).into(), timestamp_us)).collect();
    let signature = ate::trust::sign_commit(&ChainKey::from(chain).chain_id(), key, &contents);
    let payload = postcard::to_stdvec(&signature).unwrap();
    let mut event = NewEvent::new(events[0].key, ate::format::EventKind::Signature, payload);
    event.timestamp_us = timestamp_us;
    events.push(event);
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_replayed_signed_commits_over_the_wire() {
    let running = start().await;
    let mut good =
        RemoteConnection::connect(&running.address, &running.fingerprint, &running.admin_token()).await.unwrap();
    let mut client =
        RemoteConnection::connect(&running.address, &running.fingerprint, &running.admin_token()).await.unwrap();
    let key = ate::crypto::PrivateSignKey::generate(ate::crypto::SignatureScheme::MlDsa44);
    let object = PrimaryKey::from_name("ledger-entry");
    let commit = signed("ledger", &key, vec![NewEvent::data(object, b"pay 10".to_vec())]);

    // A payload changed after signing: the signature no longer covers it.
    let mut forged = commit.clone();
    forged[1].payload = b"pay 10000".to_vec();
    match client.commit("ledger", &forged).await {
        Err(RemoteError::Server { code: ErrorCode::Rejected, message, .. }) => {
            assert!(message.contains("signature"), "{message}")
        }
        other => panic!("a forged commit must be rejected, got {other:?}"),
    }

    // The genuine commit, then the very same bytes again: a replay writes
    // nothing and answers with the original sequences.
    let first = client.commit("ledger", &commit).await.unwrap();
    let again = client.commit("ledger", &commit).await.unwrap();
    assert_eq!(first, again, "a replayed commit is the original, not a second copy");
    let opened = client.open("ledger").await.unwrap();
    assert_eq!(opened, first.1 + 1, "one copy of the commit in the chain");
    still_served(&mut good, 1).await;
}
