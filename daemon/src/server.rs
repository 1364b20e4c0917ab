//! The connection loop.

use crate::config::ChainPolicy;
use crate::metrics::ServerMetrics;
use ate::chain::now_us;
use ate::crypto::{PrivateSignKey, PublicSignKey, SignatureScheme};
use ate::prelude::*;
use ate_client::protocol::{negotiate_version, ClientMessage, ErrorCode, FrameKind, ServerMessage, TakenRecord};
use ate_client::ring::{HashRing, DEFAULT_VIRTUAL_NODES};
use ate_client::token::{self, Claims};
use ate_client::transport::{write_queued, FramedReader, ServerIdentity, TransportError};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Largest batch of records in one `Events` frame (a single larger record
/// still goes alone).
const EVENTS_BATCH_BYTES: usize = 256 << 10;
/// Frames queued for one connection's writer before its producers wait:
/// with the batch size, what a subscriber that stops reading can pin in
/// memory (about 4 MiB), beyond which its stream waits and reads from disk
/// later.
const OUTBOX_FRAMES: usize = 16;
/// Commits queued for the replier at once (each already holds its bytes'
/// permits, which bound them first in all but tiny commits).
const AWAITING_DURABLE_COMMITS: usize = 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Live subscriptions one connection may hold. Each stream holds at most
/// one batch while it waits for the outbox, so a connection that stops
/// reading pins at most 64 × 256 KiB + the outbox, about 20 MiB.
const MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 64;
/// Bytes of commits of one connection being appended at once; more wait
/// (and so does reading that connection's next requests).
const MAX_COMMIT_BYTES_IN_FLIGHT: usize = 64 << 20;
/// The same across all connections, so many connections cannot add up to
/// more memory than the server has.
const MAX_SERVER_COMMIT_BYTES_IN_FLIGHT: usize = 1 << 30;
/// Connections served at once; more are closed at accept (and logged).
pub const MAX_CONNECTIONS: usize = 10_000;
/// Every commit counts at least this much, which also caps how many small
/// commits one connection has in flight (16k).
const MIN_COMMIT_PERMIT_BYTES: usize = 4 << 10;
/// What an event costs beyond its payload (header, frame, bookkeeping).
const COMMIT_EVENT_OVERHEAD: usize = 256;
/// Longest lease a client may ask for (one hour).
const MAX_LEASE_MS: u64 = ate::messaging::MAX_LEASE.as_millis() as u64;
/// Token 0 marks a free item: a lease under it would hold nothing.
const ZERO_TOKEN: &str = "lease token 0 is reserved (it marks a free item)";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Engine(#[from] AteError),
    #[error("{0}")]
    Config(String),
}

/// Everything a running server needs.
#[derive(Debug)]
pub struct Server {
    chains: Arc<ChainBuilder>,
    identity: ServerIdentity,
    data_root: PathBuf,
    /// Reloadable (SIGHUP): trusted token issuers and the chain-creation policy.
    issuers: parking_lot::RwLock<Vec<PublicSignKey>>,
    chain_policy: parking_lot::RwLock<ChainPolicy>,
    token_skew_us: u64,
    /// Requests being handled right now (for draining on shutdown).
    active: std::sync::atomic::AtomicUsize,
    /// Set on shutdown: connections stop taking new requests.
    stopping: std::sync::atomic::AtomicBool,
    /// The cluster this server is part of, and its own address in it.
    cluster: Option<(HashRing, String)>,
    metrics: ServerMetrics,
    /// Commit bytes in flight over all connections (`MAX_SERVER_COMMIT_BYTES_IN_FLIGHT`).
    commit_bytes: Arc<tokio::sync::Semaphore>,
    /// One permit per open connection (`MAX_CONNECTIONS`).
    connections: Arc<tokio::sync::Semaphore>,
    maintenance: Option<crate::maintenance::LogMaintenance>,
}

/// Choices beyond the data directory.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Token issuers trusted besides this server's own `issuer.key`.
    pub trusted_issuers: Vec<PublicSignKey>,
    /// Every member of the cluster (addresses clients connect to) and this
    /// server's own; chains owned by another member are answered with a redirect.
    pub cluster: Option<(Vec<String>, String)>,
    /// Which chain names may be created.
    pub chain_policy: ChainPolicy,
    pub durability: Durability,
    /// Certificate chain and key files; `None`: a self-signed identity kept
    /// in the data directory.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Clock skew allowed when checking token validity (`None`: 60 s).
    pub token_skew: Option<Duration>,
    /// Keys that govern the root objects of every chain (`[chains] root_keys`).
    pub root_keys: Vec<PublicSignKey>,
    /// Size of new segment files (`None`: the engine's default).
    pub segment_size_bytes: Option<u64>,
    /// How segments are appended to.
    pub backend: ate::StorageBackend,
    /// Appends bypass the page cache (`[log] direct_io`).
    pub direct_io: bool,
    /// Zeros kept ahead of the appends (`[log] zero_ahead_bytes`; `None`: the engine's default).
    pub zero_ahead_bytes: Option<u64>,
    /// Log pages dropped from the page cache this far behind the appends
    /// (`[log] drop_behind_bytes`; `None`: the engine's default, 64 MiB).
    pub drop_behind_bytes: Option<u64>,
    /// Page cache populated with huge pages this far ahead of the appends
    /// (`[log] populate_ahead_bytes`; `None`: the engine's default, off).
    pub populate_ahead_bytes: Option<u64>,
    /// Compaction and old-segment dropping run by atedb itself (`[log]`).
    pub maintenance: Option<crate::maintenance::LogMaintenance>,
}

impl ServerOptions {
    /// The engine configuration of the chains served from `root`.
    pub fn engine_config(&self, root: &std::path::Path) -> AteConfig {
        let defaults = AteConfig::default();
        let segment_size_bytes = self.segment_size_bytes.unwrap_or(defaults.segment_size_bytes);
        // Small segments take commits of up to a quarter of a segment.
        let quarter = usize::try_from(segment_size_bytes / 4).unwrap_or(usize::MAX);
        AteConfig {
            log_path: Some(root.to_path_buf()),
            durability: self.durability,
            segment_size_bytes,
            backend: self.backend,
            direct_io: self.direct_io,
            zero_ahead_bytes: self.zero_ahead_bytes.unwrap_or(defaults.zero_ahead_bytes),
            drop_behind_bytes: self.drop_behind_bytes.unwrap_or(defaults.drop_behind_bytes),
            populate_ahead_bytes: self.populate_ahead_bytes.unwrap_or(defaults.populate_ahead_bytes),
            max_commit_bytes: defaults.max_commit_bytes.min(quarter),
            max_write_bytes: defaults.max_write_bytes.min(quarter),
            ..defaults
        }
    }
}

/// Files a data directory holds besides chains.
#[derive(Debug, Clone)]
pub struct DataDirectory {
    pub root: PathBuf,
}

impl DataDirectory {
    pub fn issuer_key(&self) -> PathBuf {
        self.root.join("issuer.key")
    }
    pub fn admin_token(&self) -> PathBuf {
        self.root.join("admin.token")
    }
    pub fn fingerprint(&self) -> PathBuf {
        self.root.join("fingerprint")
    }
}

impl Server {
    /// Prepares a data directory on first start (TLS identity, token issuer
    /// key, an admin token valid for a year) and opens it.
    pub async fn open(data: &DataDirectory) -> Result<Arc<Self>, ServerError> {
        Self::open_with(data, ServerOptions::default()).await
    }

    /// [`Server::open`] with options (cluster membership, extra issuers).
    pub async fn open_with(data: &DataDirectory, options: ServerOptions) -> Result<Arc<Self>, ServerError> {
        if !data.root.exists() {
            // Segments hold every event's metadata: owner-only, whatever the umask.
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&data.root)?;
        }
        let identity = match &options.tls {
            Some((certificate, key)) => ServerIdentity::from_files(certificate, key)?,
            None => ServerIdentity::load_or_create(&data.root)?,
        };
        std::fs::write(data.fingerprint(), format!("{}\n", identity.fingerprint))?;
        let issuer = load_or_create_issuer(&data.issuer_key())?;
        if !data.admin_token().exists() {
            let now = now_us();
            let claims = Claims {
                subject: "admin".into(),
                roles: vec!["admin".into()],
                chains: vec!["*".into()],
                issued_at_us: now,
                expires_at_us: now + 365 * 24 * 3600 * 1_000_000,
            };
            ate_client::cli::write_secret_file(&data.admin_token(), token::issue(&claims, &issuer).as_bytes())
                .map_err(|error| ServerError::Config(error.to_string()))?;
        }
        let config = options.engine_config(&data.root);
        config.validate().map_err(|error| ServerError::Config(error.to_string()))?;
        let mut chains = ChainBuilder::new(&config).await;
        for key in &options.root_keys {
            chains = chains.add_root_public_key(key);
        }
        let chains = chains.build();
        let mut issuers = vec![issuer.public().clone()];
        issuers.extend(options.trusted_issuers);
        let cluster = options.cluster.map(|(members, this)| (HashRing::new(members, DEFAULT_VIRTUAL_NODES), this));
        let server = Arc::new(Self {
            chains,
            identity,
            data_root: data.root.clone(),
            issuers: parking_lot::RwLock::new(issuers),
            chain_policy: parking_lot::RwLock::new(options.chain_policy),
            cluster,
            token_skew_us: options.token_skew.map_or(60_000_000, |skew| skew.as_micros() as u64),
            active: Default::default(),
            stopping: Default::default(),
            metrics: Default::default(),
            commit_bytes: Arc::new(tokio::sync::Semaphore::new(MAX_SERVER_COMMIT_BYTES_IN_FLIGHT)),
            connections: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
            maintenance: options.maintenance,
        });
        if let Some(maintenance) = options.maintenance {
            crate::maintenance::spawn_periodic(Arc::downgrade(&server), maintenance);
        }
        Ok(server)
    }

    pub fn fingerprint(&self) -> &str {
        &self.identity.fingerprint
    }

    pub fn metrics(&self) -> &ServerMetrics {
        &self.metrics
    }

    pub async fn open_chains(&self) -> Vec<Arc<Chain>> {
        self.chains.open_chains().await
    }

    /// Applies a reloaded configuration: extra trusted issuers (this server's
    /// own issuer stays trusted) and the chain-creation policy.
    pub fn reload(&self, extra_issuers: Vec<PublicSignKey>, chain_policy: ChainPolicy) {
        let mut issuers = self.issuers.write();
        issuers.truncate(1);
        issuers.extend(extra_issuers);
        *self.chain_policy.write() = chain_policy;
    }

    /// After `serve` returned: waits (up to `limit`) for connections to
    /// finish the request they are in, so no acknowledgement is cut off.
    pub async fn drain(self: &Arc<Self>, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.active.load(std::sync::atomic::Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Accepts connections until `shutdown` turns true.
    pub async fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ServerError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.identity.server_config()?);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.changed() => {
                    self.stopping.store(true, std::sync::atomic::Ordering::Release);
                    return Ok(());
                }
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                // Out of descriptors or a connection reset before accept:
                // keep serving the others; pause so a full table can drain.
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Replies are small and latency-bound (see the client's connect).
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%peer, %error, "could not disable Nagle's algorithm");
            }
            let Ok(slot) = Arc::clone(&self.connections).try_acquire_owned() else {
                tracing::warn!(%peer, limit = MAX_CONNECTIONS, "too many connections; closing a new one");
                continue;
            };
            let (server, acceptor) = (Arc::clone(self), acceptor.clone());
            // One task per connection; the handshake runs there, not in the accept loop.
            tokio::spawn(async move {
                let _slot = slot;
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                if let Err(error) = server.connection(tls, peer).await {
                    tracing::debug!(%peer, %error, "connection ended");
                }
            });
        }
    }

    async fn connection<S>(self: Arc<Self>, stream: S, peer: SocketAddr) -> Result<(), ServerError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        self.metrics.connections_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.metrics.connections_active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (read_half, mut write_half) = tokio::io::split(stream);
        let mut reader = FramedReader::new(read_half, FrameKind::Client);
        let (outbox, mut outgoing) = mpsc::channel::<Outgoing>(OUTBOX_FRAMES);
        let replies_pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let pending = Arc::clone(&replies_pending);
        let writer = tokio::spawn(async move {
            // Commits turn durable in groups: their replies come in bursts.
            let more_coming = || pending.load(std::sync::atomic::Ordering::Acquire) > 0;
            // A failed write ends the writer; the reader notices the closed outbox.
            let _ = write_queued(&mut write_half, FrameKind::Server, &mut outgoing, Outgoing::encode_into, more_coming)
                .await;
        });
        let (awaiting_durable, awaiting) = mpsc::channel(AWAITING_DURABLE_COMMITS);
        let replier = tokio::spawn(reply_when_durable(Arc::clone(&self), outbox.clone(), awaiting));
        let mut session = Session {
            server: self,
            outbox,
            awaiting_durable,
            claims: None,
            version: None,
            chains: HashMap::new(),
            subscriptions: HashMap::new(),
            next_subscription: 0,
            commits_in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_COMMIT_BYTES_IN_FLIGHT)),
            replies_pending,
        };
        // Hello and Authenticate must come within the handshake timeout: a
        // connection that never authenticates does not hold a slot for long.
        let authenticate_by = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
        let result = loop {
            let next = if session.claims.is_none() {
                match tokio::time::timeout_at(authenticate_by, reader.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        let message = "no authentication within the handshake timeout".into();
                        session.error(None, ErrorCode::Unauthenticated, message).await;
                        break Ok(());
                    }
                }
            } else {
                // Authenticated: large commits may have their buffers reserved ahead.
                reader.trust_peer();
                reader.next().await
            };
            let body = match next {
                Ok(body) => body,
                Err(TransportError::Closed) => break Ok(()),
                // Framing errors (oversized, garbage) end this connection only.
                Err(error) => break Err(error.into()),
            };
            let message = match ClientMessage::decode(&body) {
                Ok(message) => message,
                Err(error) => {
                    session.error(None, ErrorCode::BadRequest, error.to_string()).await;
                    continue;
                }
            };
            if session.server.stopping.load(std::sync::atomic::Ordering::Acquire) {
                session.error(None, ErrorCode::Unavailable, "the server is shutting down".into()).await;
                break Ok(());
            }
            session.server.active.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            let keep_going = session.handle(message).await;
            session.server.active.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            if !keep_going {
                break Ok(());
            }
        };
        let subscriptions = session.subscriptions.len() as u64;
        for (_, task) in session.subscriptions.drain() {
            task.abort();
        }
        session.server.metrics.subscribers_active.fetch_sub(subscriptions, std::sync::atomic::Ordering::Relaxed);
        session.server.metrics.connections_active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        drop(session);
        let _ = replier.await;
        let _ = writer.await;
        tracing::debug!(%peer, "connection closed");
        result
    }
}

/// One commit whose reply is still to be queued, counted in its
/// connection's `replies_pending` until dropped (also if its task panics).
struct PendingReply(Arc<std::sync::atomic::AtomicUsize>);

impl PendingReply {
    fn new(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(Arc::clone(count))
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A connection's commit waiting for durability.
struct AwaitingDurable {
    pending: ate::chain::PendingCommit,
    reply: ReplyTo,
}

/// What a commit's reply needs, and what the commit holds until its reply
/// is queued.
struct ReplyTo {
    request: u64,
    started: std::time::Instant,
    /// Room for its bytes on the connection and on the server.
    permits: (tokio::sync::OwnedSemaphorePermit, tokio::sync::OwnedSemaphorePermit),
    pending_reply: PendingReply,
}

/// Replies to a connection's commits as they turn durable, in whatever
/// order their chains finish them. One task per connection rather than one
/// per commit: a group of commits synced together wakes it once, and its
/// replies reach the writer together (one write, not one per commit).
async fn reply_when_durable(
    server: Arc<Server>,
    outbox: mpsc::Sender<Outgoing>,
    mut awaiting: mpsc::Receiver<AwaitingDurable>,
) {
    type Settled = (ReplyTo, ate::Result<ate::CommitReceipt>);
    async fn durable(commit: AwaitingDurable) -> Settled {
        let outcome = commit.pending.durable().await;
        (commit.reply, outcome)
    }
    let mut waiting = FuturesUnordered::new();
    let mut accepting = true;
    while accepting || !waiting.is_empty() {
        tokio::select! {
            // Replies first: they release the client's next requests.
            biased;
            Some(settled) = waiting.next(), if !waiting.is_empty() => {
                let (ReplyTo { request, started, permits, pending_reply }, outcome): Settled = settled;
                let reply = match outcome {
                    Ok(receipt) => {
                        server.metrics.commit_latency.record(started.elapsed());
                        server.metrics.commits_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let (first_sequence, last_sequence) = (receipt.first_sequence, receipt.last_sequence);
                        ServerMessage::Committed { request, first_sequence, last_sequence }
                    }
                    Err(error) => engine_error_reply(&server.metrics, request, error),
                };
                // Before the send: the writer, woken by it, sees only the others.
                drop(pending_reply);
                // A closed outbox (the connection is gone) still lets the commit settle.
                let _ = outbox.send(reply.into()).await;
                drop(permits);
                server.active.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            }
            next = awaiting.recv(), if accepting => match next {
                Some(commit) => waiting.push(durable(commit)),
                None => accepting = false,
            },
        }
    }
}

struct Session {
    server: Arc<Server>,
    outbox: mpsc::Sender<Outgoing>,
    /// Commits handed to the connection's replier.
    awaiting_durable: mpsc::Sender<AwaitingDurable>,
    claims: Option<Claims>,
    version: Option<u16>,
    chains: HashMap<String, Arc<Chain>>,
    subscriptions: HashMap<u64, tokio::task::JoinHandle<()>>,
    next_subscription: u64,
    /// Bounds the commits of this connection being appended at once.
    commits_in_flight: Arc<tokio::sync::Semaphore>,
    /// Commits waiting for durability, whose replies are still to be queued
    /// (the writer pauses once before a write while any are).
    replies_pending: Arc<std::sync::atomic::AtomicUsize>,
}

/// The reply to a request the engine refused (counted by reason), with the
/// object it concerns for conflicts and rejections.
fn engine_error_reply(metrics: &ServerMetrics, request: u64, error: AteError) -> ServerMessage {
    let code = error_code(&error);
    metrics.rejected(code);
    let key = match &error {
        AteError::Conflict { key } | AteError::Rejected { key, .. } | AteError::LeaseLost { key } => {
            Some(*key.as_bytes())
        }
        _ => None,
    };
    ServerMessage::Error { request: Some(request), code, message: error.to_string(), key }
}

fn error_code(error: &AteError) -> ErrorCode {
    match error {
        AteError::Conflict { .. } => ErrorCode::Conflict,
        AteError::Rejected { .. } => ErrorCode::Rejected,
        AteError::CommitTooLarge { .. } => ErrorCode::TooLarge,
        AteError::InvalidInput(_) => ErrorCode::BadRequest,
        AteError::NotFound { .. } => ErrorCode::NotFound,
        AteError::Locked { .. } | AteError::Poisoned { .. } | AteError::Closed { .. } => ErrorCode::Unavailable,
        AteError::HistoryDropped { .. } => ErrorCode::HistoryDropped,
        _ => ErrorCode::Internal,
    }
}

impl Session {
    async fn send(&self, message: ServerMessage) -> bool {
        self.outbox.send(message.into()).await.is_ok()
    }

    async fn error(&self, request: Option<u64>, code: ErrorCode, message: String) -> bool {
        self.server.metrics.rejected(code);
        self.send(ServerMessage::Error { request, code, message, key: None }).await
    }

    /// An engine error answering `request`, with the object it concerns.
    async fn engine_error(&self, request: u64, error: AteError) -> bool {
        self.send(engine_error_reply(&self.server.metrics, request, error)).await
    }

    /// What every lease request shares: a token other than 0 (when it names
    /// one), and at most `MAX_LEASE_CANDIDATES` of `what`. `Err` carries
    /// whether the connection stays open after the refusal was sent.
    async fn check_lease_request(
        &self,
        request: u64,
        token: Option<u64>,
        count: usize,
        what: &str,
    ) -> Result<(), bool> {
        if token == Some(0) {
            return Err(self.error(Some(request), ErrorCode::BadRequest, ZERO_TOKEN.into()).await);
        }
        let most = ate::messaging::MAX_LEASE_CANDIDATES;
        if count > most {
            return Err(self.error(Some(request), ErrorCode::TooLarge, format!("at most {most} {what}")).await);
        }
        Ok(())
    }

    /// Refuses unless the token carries the `write` role (`write` set) or
    /// the `read` role (`write` clear).
    async fn authorise(&self, request: u64, write: bool) -> bool {
        let Some(claims) = &self.claims else {
            self.error(Some(request), ErrorCode::Unauthenticated, "authenticate first".into()).await;
            return false;
        };
        let (allowed, role) =
            if write { (claims.may_write(), token::ROLE_WRITE) } else { (claims.may_read(), token::ROLE_READ) };
        if !allowed {
            let message = format!("token for '{}' lacks the '{role}' role", claims.subject);
            self.error(Some(request), ErrorCode::Forbidden, message).await;
        }
        allowed
    }

    /// The chain `name` if the token allows it and carries the role.
    async fn chain_for(&mut self, request: u64, name: &str, write: bool) -> Option<Arc<Chain>> {
        if !self.authorise(request, write).await {
            return None;
        }
        self.chain(request, name).await
    }

    /// The chain `name`, if this connection's token allows it.
    async fn chain(&mut self, request: u64, name: &str) -> Option<Arc<Chain>> {
        if let Err(error) = ate_client::protocol::check_chain_name(name) {
            self.error(Some(request), ErrorCode::BadRequest, error.to_string()).await;
            return None;
        }
        let Some(claims) = &self.claims else {
            self.error(Some(request), ErrorCode::Unauthenticated, "authenticate first".into()).await;
            return None;
        };
        // A token checked at authentication can expire while connected.
        let now = now_us();
        if claims.expires_at_us.saturating_add(self.server.token_skew_us) < now {
            let message = format!("token for '{}' expired at {} (now {now})", claims.subject, claims.expires_at_us);
            self.error(Some(request), ErrorCode::Unauthenticated, message).await;
            return None;
        }
        if !claims.allows_chain(name) {
            let message = format!("token for '{}' does not allow chain '{name}'", claims.subject);
            self.error(Some(request), ErrorCode::Forbidden, message).await;
            return None;
        }
        if let Some((ring, this)) = &self.server.cluster {
            if let Some(owner) = ring.owner(name).filter(|owner| owner != this) {
                let address = owner.to_string();
                self.send(ServerMessage::Redirect { request, address }).await;
                return None;
            }
        }
        if let Some(chain) = self.chains.get(name) {
            return Some(Arc::clone(chain));
        }
        let exists = self.server.data_root.join("chains").join(ChainKey::from(name).directory_name()).exists();
        if !exists && !self.server.chain_policy.read().may_create(name) {
            let message = format!("creating chain '{name}' is not allowed by this server's policy");
            self.error(Some(request), ErrorCode::Forbidden, message).await;
            return None;
        }
        // A new chain preallocates a segment: reading must not create one.
        if !exists && !claims.may_write() {
            let message = format!("chain '{name}' does not exist, and creating it needs the 'write' role");
            self.error(Some(request), ErrorCode::NotFound, message).await;
            return None;
        }
        let key = ChainKey::from(name);
        let opened = match &self.server.maintenance {
            Some(maintenance) => maintenance.open(&self.server.chains, &key).await,
            None => self.server.chains.open(&key).await,
        };
        match opened {
            Ok(chain) => {
                self.chains.insert(name.to_string(), Arc::clone(&chain));
                Some(chain)
            }
            Err(error) => {
                self.error(Some(request), error_code(&error), error.to_string()).await;
                None
            }
        }
    }

    /// Handles one message; `false` ends the connection.
    async fn handle(&mut self, message: ClientMessage) -> bool {
        if self.version.is_none() && !matches!(message, ClientMessage::Hello { .. }) {
            self.error(None, ErrorCode::BadRequest, "the first message must be Hello".into()).await;
            return false;
        }
        match message {
            ClientMessage::Hello { versions, .. } => match negotiate_version(&versions) {
                Ok(version) => {
                    self.version = Some(version);
                    self.send(ServerMessage::HelloAck {
                        version,
                        server: format!("atedb {}", env!("CARGO_PKG_VERSION")),
                    })
                    .await
                }
                Err(error) => {
                    self.error(None, ErrorCode::UnsupportedVersion, error.to_string()).await;
                    false
                }
            },
            ClientMessage::Authenticate { .. } if self.claims.is_some() => {
                // One identity per connection: what was opened and streamed
                // under the first token must not change hands.
                let message = "already authenticated; open a new connection for another token".into();
                self.error(None, ErrorCode::BadRequest, message).await
            }
            ClientMessage::Authenticate { token } => {
                let text = String::from_utf8_lossy(&token);
                let verified = token::verify(&text, &self.server.issuers.read(), now_us(), self.server.token_skew_us);
                match verified {
                    Ok(claims) => {
                        let subject = claims.subject.clone();
                        self.claims = Some(claims);
                        self.send(ServerMessage::Authenticated { subject }).await
                    }
                    Err(error) => self.error(None, ErrorCode::Unauthenticated, error.to_string()).await,
                }
            }
            ClientMessage::Open { request, chain } => {
                let readable = self.claims.as_ref().is_some_and(|claims| claims.may_read() || claims.may_write());
                if !readable && !self.authorise(request, false).await {
                    return true;
                }
                let Some(opened) = self.chain(request, &chain).await else { return true };
                let durable_sequence = opened.durable_sequence();
                self.send(ServerMessage::Opened { request, chain_id: opened.key().chain_id(), durable_sequence }).await
            }
            ClientMessage::Commit { request, chain, durability, events } => {
                let Some(chain) = self.chain_for(request, &chain, true).await else { return true };
                let mut converted = Vec::with_capacity(events.len());
                for event in events {
                    match NewEvent::try_from(event) {
                        Ok(event) => converted.push(event),
                        Err(error) => return self.error(Some(request), ErrorCode::BadRequest, error.to_string()).await,
                    }
                }
                // Commits of one connection are validated and sequenced
                // here, in arrival order, then wait for durability
                // concurrently (up to `MAX_COMMIT_BYTES_IN_FLIGHT`), sharing
                // fsync groups; each reply names its request.
                let bytes: usize = converted.iter().map(|event| event.payload.len() + COMMIT_EVENT_OVERHEAD).sum();
                let permits = bytes.clamp(MIN_COMMIT_PERMIT_BYTES, MAX_COMMIT_BYTES_IN_FLIGHT) as u32;
                // Bounded by bytes: a client pipelining large commits waits
                // here (and stops being read) instead of growing memory.
                let Ok(permit) = Arc::clone(&self.commits_in_flight).acquire_many_owned(permits).await else {
                    return false;
                };
                let Ok(server_permit) = Arc::clone(&self.server.commit_bytes).acquire_many_owned(permits).await else {
                    return false;
                };
                let started = std::time::Instant::now();
                let pending = match chain.submit(converted, Some(durability.into())).await {
                    Ok(pending) => pending,
                    Err(error) => return self.engine_error(request, error).await,
                };
                self.server.active.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                let reply = ReplyTo {
                    request,
                    started,
                    permits: (permit, server_permit),
                    pending_reply: PendingReply::new(&self.replies_pending),
                };
                let awaiting = AwaitingDurable { pending, reply };
                // Closed only if the replier ended, which it does after the session.
                self.awaiting_durable.send(awaiting).await.is_ok()
            }
            ClientMessage::Load { request, chain, key } => {
                let Some(chain) = self.chain_for(request, &chain, false).await else { return true };
                let record = chain.record_bytes(&PrimaryKey::from_bytes(key)).map(<[u8]>::to_vec);
                self.send(ServerMessage::Loaded { request, record }).await
            }
            ClientMessage::Subscribe { request, chain, from, .. } => {
                let Some(chain) = self.chain_for(request, &chain, false).await else { return true };
                if let Err(error) = chain.ensure_held(from) {
                    return self.engine_error(request, error).await;
                }
                if self.subscriptions.len() >= MAX_SUBSCRIPTIONS_PER_CONNECTION {
                    let message = format!("at most {MAX_SUBSCRIPTIONS_PER_CONNECTION} subscriptions per connection");
                    return self.error(Some(request), ErrorCode::TooLarge, message).await;
                }
                self.next_subscription += 1;
                let subscription = self.next_subscription;
                if !self.send(ServerMessage::Subscribed { request, subscription }).await {
                    return false;
                }
                self.server.metrics.subscribers_active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let valid_until_us = self
                    .claims
                    .as_ref()
                    .map_or(0, |claims| claims.expires_at_us.saturating_add(self.server.token_skew_us));
                let task = tokio::spawn(stream_records(
                    Arc::clone(&self.server),
                    chain,
                    (from, subscription, valid_until_us),
                    self.outbox.clone(),
                ));
                self.subscriptions.insert(subscription, task);
                true
            }
            ClientMessage::Unsubscribe { subscription } => {
                if let Some(task) = self.subscriptions.remove(&subscription) {
                    task.abort();
                    self.server.metrics.subscribers_active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }
                true
            }
            ClientMessage::Ping { nonce } => self.send(ServerMessage::Pong { nonce }).await,
            ClientMessage::Lease { request, chain, key, token, lease_ms } => {
                if let Err(open) = self.check_lease_request(request, Some(token), 1, "keys per lease request").await {
                    return open;
                }
                let Some(chain) = self.chain_for(request, &chain, true).await else { return true };
                // `lease_acquire` refuses objects that are gone or being deleted.
                let key = PrimaryKey::from_bytes(key);
                let lease = Duration::from_millis(lease_ms.min(MAX_LEASE_MS));
                match chain.lease_acquire(key, token, lease).await {
                    Ok(deliveries) => self.send(ServerMessage::Leased { request, deliveries }).await,
                    Err(error) => self.engine_error(request, error).await,
                }
            }
            ClientMessage::LeaseMany { request, chain, keys, token, lease_ms, max } => {
                if let Err(open) =
                    self.check_lease_request(request, Some(token), keys.len(), "keys per lease request").await
                {
                    return open;
                }
                let Some(chain) = self.chain_for(request, &chain, true).await else { return true };
                let keys: Vec<PrimaryKey> = keys.into_iter().map(PrimaryKey::from_bytes).collect();
                let lease = Duration::from_millis(lease_ms.min(MAX_LEASE_MS));
                match chain.lease_acquire_many(&keys, token, lease, max as usize).await {
                    Ok(leased) => {
                        let leased =
                            leased.into_iter().map(|(key, deliveries)| (*key.as_bytes(), deliveries)).collect();
                        self.send(ServerMessage::LeasedMany { request, leased }).await
                    }
                    Err(error) => self.engine_error(request, error).await,
                }
            }
            ClientMessage::Take { request, chain, items, token, lease_ms, max } => {
                if let Err(open) = self.check_lease_request(request, Some(token), max as usize, "items per take").await
                {
                    return open;
                }
                // It reads items as well as leasing them.
                if !self.authorise(request, false).await {
                    return true;
                }
                let Some(chain) = self.chain_for(request, &chain, true).await else { return true };
                let lease = Duration::from_millis(lease_ms.min(MAX_LEASE_MS));
                let Taken { items, encrypted } =
                    take_items(&chain, PrimaryKey::from_bytes(items), token, lease, max as usize);
                self.send(ServerMessage::Taken { request, items, encrypted }).await
            }
            ClientMessage::LeaseHoldsMany { request, chain, leases } => {
                if let Err(open) = self.check_lease_request(request, None, leases.len(), "leases per request").await {
                    return open;
                }
                let Some(chain) = self.chain_for(request, &chain, true).await else { return true };
                let leases: Vec<(PrimaryKey, u64)> =
                    leases.into_iter().map(|(key, token)| (PrimaryKey::from_bytes(key), token)).collect();
                match chain.lease_holds_many(&leases).await {
                    Ok(held) => self.send(ServerMessage::LeaseHeldMany { request, held }).await,
                    Err(error) => self.engine_error(request, error).await,
                }
            }
            ClientMessage::Release { request, chain, key, token, forget } => {
                let Some(chain) = self.chain_for(request, &chain, true).await else { return true };
                match chain.lease_release(PrimaryKey::from_bytes(key), token, forget).await {
                    Ok(released) => self.send(ServerMessage::Released { request, released }).await,
                    Err(error) => self.engine_error(request, error).await,
                }
            }
            ClientMessage::LeaseHolds { request, chain, key, token } => {
                let Some(chain) = self.chain_for(request, &chain, true).await else { return true };
                match chain.lease_holds(PrimaryKey::from_bytes(key), token).await {
                    Ok(held) => self.send(ServerMessage::LeaseHeld { request, held }).await,
                    Err(error) => self.engine_error(request, error).await,
                }
            }
            ClientMessage::Checkpoint { request, chain } => {
                let Some(chain) = self.chain_for(request, &chain, false).await else { return true };
                match chain.checkpoint() {
                    // Trust records are few; a checkpoint that would not fit in
                    // one frame is refused with its size rather than cut.
                    Ok(Some(checkpoint)) if checkpoint.len() > ate_client::protocol::DEFAULT_MAX_FRAME_BYTES - 1024 => {
                        let message = format!("the checkpoint is {} bytes, above the frame limit", checkpoint.len());
                        self.error(Some(request), ErrorCode::TooLarge, message).await
                    }
                    Ok(checkpoint) => self.send(ServerMessage::Checkpoint { request, checkpoint }).await,
                    Err(error) => self.engine_error(request, error).await,
                }
            }
            ClientMessage::ConsumerOffset { request, chain, consumer, offset } => {
                let write = offset.is_some();
                let Some(chain) = self.chain_for(request, &chain, write).await else { return true };
                let result = match offset {
                    None => ate::messaging::consumer_offset(&chain, &consumer).await,
                    Some(offset) => {
                        ate::messaging::set_consumer_offset(&chain, &consumer, offset).await.map(|()| offset)
                    }
                };
                match result {
                    Ok(offset) => self.send(ServerMessage::Offset { request, offset }).await,
                    Err(error) => self.engine_error(request, error).await,
                }
            }
        }
    }
}

/// What a connection's writer sends: a message, or a batch of a
/// subscription's records still in the chain's segments, encoded straight
/// from there into the write buffer (copied once, not read into a buffer
/// of its own first).
#[derive(Debug)]
enum Outgoing {
    Message(ServerMessage),
    Events { subscription: u64, records: ate::chain::StoredRecords },
}

impl From<ServerMessage> for Outgoing {
    fn from(message: ServerMessage) -> Self {
        Outgoing::Message(message)
    }
}

impl Outgoing {
    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Outgoing::Message(message) => message.encode_into(out),
            Outgoing::Events { subscription, records } => {
                ServerMessage::encode_events_into(*subscription, records.len(), records.runs(), out)
            }
        }
    }
}

/// Bytes of records one `Taken` reply carries at most (a single larger
/// record still goes alone): with the outbox's 16 frames, what a taker
/// that stops reading can pin, about 16 MiB.
const MAX_TAKE_REPLY_BYTES: usize = 1 << 20;
/// Pages of candidates one `Take` looks through at most: a backlog of held
/// items costs a request a bounded scan, and the taker simply asks again
/// (takes start past the run of held items the last ones found, so the
/// next one looks further).
const MAX_TAKE_PAGES: usize = 16;

/// What a `Take` found: the records of the items it leased, and the first
/// encrypted item it passed over.
struct Taken {
    items: Vec<TakenRecord>,
    encrypted: Option<([u8; 16], [u8; 32])>,
}

/// Leases up to `max` of the oldest free children of `items` under `token`
/// and reads their stored records, for a consumer without a replica. Only
/// what will be sent is leased: plaintext items, within the reply's byte
/// budget (one item always fits: a record is smaller than a frame), so no
/// delivery is counted for an item nobody received. Each record is looked
/// up once, as it is accepted under the append lock, and copied after.
fn take_items(chain: &Chain, items: PrimaryKey, token: u64, lease: Duration, max: usize) -> Taken {
    let mut taken = Taken { items: Vec::new(), encrypted: None };
    let (mut bytes, mut full) = (0usize, false);
    let mut leaser = ate::messaging::ItemLeaser::new(chain, items, token, lease, max);
    for _ in 0..MAX_TAKE_PAGES {
        if taken.items.len() >= max || full {
            break;
        }
        // The records of the accepted candidates: exactly the ones leased,
        // in order (a candidate is asked only once it is free, and leased
        // when accepted).
        let mut accepted: Vec<&[u8]> = Vec::new();
        let accept = |key: &PrimaryKey| {
            // Not in the view yet (its commit is not durable): a later take's.
            let Some(record) = chain.record_bytes(key) else { return false };
            let Some((header, _)) = ate::format::header_at(record, 0) else { return false };
            if header.read_key_id != [0; 32] {
                taken.encrypted.get_or_insert((*key.as_bytes(), header.read_key_id));
                return false;
            }
            if full || (bytes + record.len() > MAX_TAKE_REPLY_BYTES && bytes > 0) {
                full = true;
                return false;
            }
            bytes += record.len();
            accepted.push(record);
            true
        };
        let Some(leased) = leaser.next_where(max - taken.items.len(), accept) else { break };
        debug_assert_eq!(leased.len(), accepted.len(), "every accepted candidate is leased");
        let records = leased
            .into_iter()
            .zip(accepted)
            .map(|((_, deliveries), record)| TakenRecord { deliveries, record: record.to_vec() });
        taken.items.extend(records);
    }
    taken
}

/// Streams a chain's records from `from` to one subscription: stored ones
/// first, then live ones as they become durable, until the connection goes
/// or the token expires (`valid_until_us`): a stream is not a way to keep
/// reading with a token that no longer allows it. Reads the log at its own
/// pace: a slow client only slows itself (the bounded outbox makes this
/// task wait), never producers.
async fn stream_records(
    server: Arc<Server>,
    chain: Arc<Chain>,
    (mut from, subscription, valid_until_us): (u64, u64, u64),
    outbox: mpsc::Sender<Outgoing>,
) {
    let tracked = server.metrics.track_stream(Arc::clone(&chain), from);
    let mut durable = chain.durable_watch();
    let expired = || now_us() > valid_until_us;
    let until_expiry = Duration::from_micros(valid_until_us.saturating_sub(now_us()));
    let expiry = tokio::time::Instant::now() + until_expiry.min(Duration::from_secs(10 * 365 * 86_400));
    loop {
        if expired() {
            let message = format!("token expired: subscription {subscription} ended");
            let code = ErrorCode::Unauthenticated;
            let _ = outbox.send(ServerMessage::Error { request: None, code, message, key: None }.into()).await;
            return;
        }
        let (records, next) = match chain.stored_records(from, EVENTS_BATCH_BYTES) {
            Ok(batch) => batch,
            Err(error) => {
                let (code, message) = (error_code(&error), error.to_string());
                let _ = outbox.send(ServerMessage::Error { request: None, code, message, key: None }.into()).await;
                return;
            }
        };
        if records.is_empty() {
            // Caught up: wait for the durable frontier to pass `from`.
            tokio::select! {
                waited = durable.wait_for(|frontier| *frontier > from) => {
                    if waited.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep_until(expiry) => {}
            }
            continue;
        }
        if outbox.send(Outgoing::Events { subscription, records }).await.is_err() {
            return;
        }
        from = next;
        tracked.position.next_sequence.store(from, std::sync::atomic::Ordering::Relaxed);
    }
}

fn load_or_create_issuer(path: &Path) -> Result<PrivateSignKey, ServerError> {
    if path.exists() {
        let bytes = std::fs::read(path)?;
        return PrivateSignKey::decode(&bytes)
            .map_err(|error| ServerError::Config(format!("{}: {error}", path.display())));
    }
    let key = PrivateSignKey::generate(SignatureScheme::MlDsa65);
    ate_client::cli::write_secret_file(path, &key.encode()).map_err(|error| ServerError::Config(error.to_string()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn log_pages_are_dropped_behind_the_appends_unless_configured_otherwise() {
        let by_default = ServerOptions::default().engine_config(Path::new("/data"));
        assert_eq!(by_default.drop_behind_bytes, 64 << 20, "the engine's default window");
        assert_eq!(by_default.drop_behind_bytes, AteConfig::default().drop_behind_bytes);
        assert!(by_default.validate().is_ok());
        let off = ServerOptions { drop_behind_bytes: Some(0), ..Default::default() }.engine_config(Path::new("/data"));
        assert_eq!(off.drop_behind_bytes, 0, "0 turns it off");
    }

    #[test]
    fn other_log_settings_default_to_the_engine_and_commits_fit_small_segments() {
        let defaults = AteConfig::default();
        let config = ServerOptions::default().engine_config(Path::new("/data"));
        assert_eq!(config.log_path.as_deref(), Some(Path::new("/data")));
        assert_eq!(config.zero_ahead_bytes, defaults.zero_ahead_bytes);
        assert_eq!(config.populate_ahead_bytes, defaults.populate_ahead_bytes);
        let small = ServerOptions { segment_size_bytes: Some(1 << 20), ..Default::default() };
        let config = small.engine_config(Path::new("/data"));
        assert_eq!(config.max_commit_bytes, 256 << 10, "a quarter of a segment");
        assert!(config.validate().is_ok());
    }
}
