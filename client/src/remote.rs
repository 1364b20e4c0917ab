//! A connection to an `atedb` server: TLS with a pinned fingerprint, a
//! token, then requests (open, commit, load, ping) and subscriptions.

use crate::protocol::{
    ClientMessage, ErrorCode, FrameKind, ServerMessage, WireDurability, WireEvent, SUPPORTED_VERSIONS,
};
use crate::transport::{pinned_client_config, write_frame, FramedReader, TransportError};
use ate::NewEvent;
use rustls::pki_types::ServerName;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("server refused ({code:?}): {message}")]
    Server { code: ErrorCode, message: String, key: Option<[u8; 16]> },
    /// Another server owns the chain: connect there.
    #[error("chain is owned by {address}")]
    Redirect { address: String },
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

type Stream = TlsStream<TcpStream>;

/// The name sent when the certificate is pinned by fingerprint (the
/// self-signed certificate `atedb` creates carries it).
const PINNED_NAME: &str = "atedb";
/// TCP connect, TLS handshake, version negotiation and authentication.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One authenticated connection.
#[derive(Debug)]
pub struct RemoteConnection {
    reader: FramedReader<ReadHalf<Stream>>,
    writer: WriteHalf<Stream>,
    next_request: u64,
    pub subject: String,
}

impl RemoteConnection {
    /// Connects to `address` (`host:port`), checks the server's certificate
    /// against `fingerprint`, negotiates the protocol and authenticates.
    pub async fn connect(address: &str, fingerprint: &str, token: &str) -> Result<Self, RemoteError> {
        Self::connect_with(address, pinned_client_config(fingerprint)?, PINNED_NAME, token).await
    }

    /// Connects verifying the server's certificate against the CA
    /// certificates in `roots`, for `server_name` (a DNS name or IP address
    /// the certificate must carry).
    pub async fn connect_ca(
        address: &str,
        server_name: &str,
        roots: &std::path::Path,
        token: &str,
    ) -> Result<Self, RemoteError> {
        Self::connect_with(address, crate::transport::ca_client_config(roots)?, server_name, token).await
    }

    /// Connects trusting the server's certificate on first use (as SSH does):
    /// `known_servers` maps `host:port` to a fingerprint; an unknown server's
    /// fingerprint is recorded there, a known one must match.
    pub async fn connect_known(
        address: &str,
        known_servers: &std::path::Path,
        token: &str,
    ) -> Result<Self, RemoteError> {
        let known = std::fs::read_to_string(known_servers).unwrap_or_default();
        let pinned = known.lines().find_map(|line| {
            let (host, fingerprint) = line.split_once(' ')?;
            (host == address).then(|| fingerprint.trim().to_string())
        });
        if let Some(fingerprint) = pinned {
            return Self::connect(address, &fingerprint, token).await;
        }
        let (config, seen) = crate::transport::first_use_client_config()?;
        let connection = Self::connect_with(address, config, PINNED_NAME, token).await?;
        if let Some(fingerprint) = seen.get() {
            if let Some(dir) = known_servers.parent() {
                std::fs::create_dir_all(dir).map_err(TransportError::from)?;
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(known_servers)
                .map_err(TransportError::from)?;
            use std::io::Write;
            writeln!(file, "{address} {fingerprint}").map_err(TransportError::from)?;
        }
        Ok(connection)
    }

    async fn connect_with(
        address: &str,
        config: std::sync::Arc<rustls::ClientConfig>,
        server_name: &str,
        token: &str,
    ) -> Result<Self, RemoteError> {
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|_| TransportError::Tls(format!("'{server_name}' is not a valid server name")))?;
        match tokio::time::timeout(CONNECT_TIMEOUT, Self::handshake(address, config, name, token)).await {
            Ok(result) => result,
            Err(_) => Err(RemoteError::Transport(TransportError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connecting to {address} took longer than {} s", CONNECT_TIMEOUT.as_secs()),
            )))),
        }
    }

    async fn handshake(
        address: &str,
        config: std::sync::Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
        token: &str,
    ) -> Result<Self, RemoteError> {
        let tcp = TcpStream::connect(address).await.map_err(TransportError::from)?;
        // Requests are small and latency-bound: Nagle's algorithm would hold
        // them back for the peer's delayed ACK (tens of milliseconds).
        tcp.set_nodelay(true).map_err(TransportError::from)?;
        // A peer that vanished without closing (half-open TCP) is noticed
        // within about half a minute instead of never.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(std::time::Duration::from_secs(10))
            .with_interval(std::time::Duration::from_secs(5))
            .with_retries(3);
        socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive).map_err(TransportError::from)?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = connector.connect(name, tcp).await.map_err(|error| TransportError::Tls(error.to_string()))?;
        let (read_half, writer) = tokio::io::split(tls);
        let mut reader = FramedReader::new(read_half, FrameKind::Server);
        // The handshake checked the server's certificate.
        reader.trust_peer();
        let mut connection = Self { reader, writer, next_request: 1, subject: String::new() };
        let hello = ClientMessage::Hello { versions: SUPPORTED_VERSIONS.to_vec(), client: "ate-client".into() };
        match connection.exchange(hello).await? {
            ServerMessage::HelloAck { .. } => {}
            other => return Err(unexpected(other)),
        }
        match connection.exchange(ClientMessage::Authenticate { token: token.trim().as_bytes().to_vec() }).await? {
            ServerMessage::Authenticated { subject } => connection.subject = subject,
            other => return Err(unexpected(other)),
        }
        Ok(connection)
    }

    /// The framed halves and the authenticated subject, for [`crate::link::Link`].
    pub(crate) fn into_parts(self) -> (FramedReader<ReadHalf<Stream>>, WriteHalf<Stream>, String) {
        (self.reader, self.writer, self.subject)
    }

    fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    async fn send(&mut self, message: &ClientMessage) -> Result<(), RemoteError> {
        Ok(write_frame(&mut self.writer, FrameKind::Client, &message.encode()).await?)
    }

    async fn receive(&mut self) -> Result<ServerMessage, RemoteError> {
        let body = self.reader.next().await?;
        ServerMessage::decode(&body).map_err(|error| RemoteError::Transport(error.into()))
    }

    /// Sends a message and returns the reply (server errors become `RemoteError::Server`).
    async fn exchange(&mut self, message: ClientMessage) -> Result<ServerMessage, RemoteError> {
        self.send(&message).await?;
        match self.receive().await? {
            ServerMessage::Error { code, message, key, .. } => Err(RemoteError::Server { code, message, key }),
            ServerMessage::Redirect { address, .. } => Err(RemoteError::Redirect { address }),
            reply => Ok(reply),
        }
    }

    /// Opens `chain`; returns its durable sequence.
    pub async fn open(&mut self, chain: &str) -> Result<u64, RemoteError> {
        let request = self.request_id();
        match self.exchange(ClientMessage::Open { request, chain: chain.into() }).await? {
            ServerMessage::Opened { durable_sequence, .. } => Ok(durable_sequence),
            other => Err(unexpected(other)),
        }
    }

    /// Commits events; returns (first, last) sequence once durable on the server.
    pub async fn commit(&mut self, chain: &str, events: &[NewEvent]) -> Result<(u64, u64), RemoteError> {
        let request = self.request_id();
        let events = events.iter().map(WireEvent::from).collect();
        let message =
            ClientMessage::Commit { request, chain: chain.into(), durability: WireDurability::Batched, events };
        match self.exchange(message).await? {
            ServerMessage::Committed { first_sequence, last_sequence, .. } => Ok((first_sequence, last_sequence)),
            other => Err(unexpected(other)),
        }
    }

    /// The stored record of the latest version of `key`, if any.
    pub async fn load(&mut self, chain: &str, key: [u8; 16]) -> Result<Option<Vec<u8>>, RemoteError> {
        let request = self.request_id();
        match self.exchange(ClientMessage::Load { request, chain: chain.into(), key }).await? {
            ServerMessage::Loaded { record, .. } => Ok(record),
            other => Err(unexpected(other)),
        }
    }

    pub async fn ping(&mut self) -> Result<(), RemoteError> {
        match self.exchange(ClientMessage::Ping { nonce: 7 }).await? {
            ServerMessage::Pong { nonce: 7 } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Turns this connection into a subscription from sequence `from`.
    pub async fn subscribe(mut self, chain: &str, from: u64) -> Result<RemoteSubscription, RemoteError> {
        let request = self.request_id();
        match self.exchange(ClientMessage::Subscribe { request, chain: chain.into(), from, collection: None }).await? {
            ServerMessage::Subscribed { .. } => {
                Ok(RemoteSubscription { connection: self, pending: ate::format::AlignedBytes::new(), offset: 0 })
            }
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(message: ServerMessage) -> RemoteError {
    RemoteError::Unexpected(format!("{message:?}"))
}

/// Stored records streamed by the server, each checked (checksum, layout)
/// exactly as if read from a local segment.
#[derive(Debug)]
pub struct RemoteSubscription {
    connection: RemoteConnection,
    /// The current batch, copied once into aligned memory (rkyv decodes in place).
    pending: ate::format::AlignedBytes,
    offset: usize,
}

/// One streamed event: its header and payload, owned.
#[derive(Debug, Clone)]
pub struct RemoteEvent {
    pub header: ate::format::EventHeader,
    pub payload: Vec<u8>,
}

impl RemoteSubscription {
    pub async fn next(&mut self) -> Result<RemoteEvent, RemoteError> {
        loop {
            if self.offset < self.pending.len() {
                let record = ate::format::decode_record(&self.pending, self.offset)
                    .map_err(|error| RemoteError::Unexpected(format!("bad record from server: {error}")))?
                    .ok_or_else(|| RemoteError::Unexpected("empty record from server".into()))?;
                let event = RemoteEvent { header: record.header.to_native(), payload: record.payload.to_vec() };
                self.offset = record.next_offset;
                return Ok(event);
            }
            match self.connection.receive().await? {
                ServerMessage::Events { records, .. } => {
                    self.pending.clear();
                    self.pending.extend_from_slice(&records);
                    self.offset = 0;
                }
                ServerMessage::Error { code, message, key, .. } => {
                    return Err(RemoteError::Server { code, message, key })
                }
                _ => {}
            }
        }
    }
}
