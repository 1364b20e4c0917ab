//! Remote chains with the embedded engine's API.
//!
//! [`Registry::open`] takes `tcp://host[:port]/chain`, finds the server that
//! owns the chain (consistent hashing over the configured members or every
//! A/AAAA record of the host; a redirect corrects a stale view), and returns
//! an ordinary [`Chain`]: a local replica that ingests the owner's events,
//! verifying each commit before applying it, and forwards commits and queue
//! leases to the owner. DIO, bus, consumers, queues, caches and services
//! work on it unchanged.
//!
//! The replica is filled when the chain is opened (from the sequence it
//! already has, for a disk replica) and then follows live events. If the
//! connection drops, a follower task reconnects with exponential backoff and
//! resubscribes from the replica's next sequence: no gap (the replica only
//! accepts the next sequence) and no duplicate (nothing before it is sent).

use crate::protocol::{ClientMessage, ErrorCode, ServerMessage, WireDurability, WireEvent};
use crate::queue::RemoteQueue;
use crate::remote::{RemoteConnection, RemoteError};
use crate::ring::{HashRing, DEFAULT_VIRTUAL_NODES};
use ate::chain::{CommitScope, Upstream, UpstreamFuture};
use ate::messaging::{QueueConfig, QueueSpec};
use ate::prelude::*;
use ate::{CommitReceipt, RemoteFailure};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The port `tcp://` URLs use when they name none.
pub const DEFAULT_PORT: u16 = 5000;
/// Redirects followed before giving up (a cluster whose members disagree).
const MAX_REDIRECTS: usize = 3;

/// How the client decides to trust a server's certificate.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// Exactly this fingerprint (hex BLAKE3 of the certificate).
    Fingerprint(String),
    /// A known-servers file: trust on first use, like SSH.
    KnownServers(PathBuf),
    /// Certificates issued by these CAs (a PEM bundle or one DER
    /// certificate) for the name the client connects to.
    CertificateAuthority(PathBuf),
}

/// Where replicas keep their copy.
#[derive(Debug, Clone, Default)]
pub enum ReplicaStorage {
    /// In memory (tmpfs); refilled from the server at every open.
    #[default]
    Memory,
    /// In this data directory; a reopen only fetches what is new.
    Disk(PathBuf),
}

/// Everything a [`Registry`] needs.
#[derive(Clone)]
pub struct RegistryConfig {
    /// An access token (`ate token create`, or `atedb`'s `admin.token`).
    pub token: String,
    pub trust: ServerTrust,
    pub replica: ReplicaStorage,
    /// When commits through remote chains return.
    pub scope: CommitScope,
    /// Servers of the cluster (`host:port`); empty: every address the URL's
    /// host resolves to.
    pub members: Vec<String>,
    /// First and longest wait between reconnection attempts.
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    /// Root keys the chains must be governed by: replicas verify the
    /// server's history against them (a server that let anyone write root
    /// objects is refused). Empty: no anchor beyond the history itself.
    pub root_keys: Vec<ate::crypto::PublicSignKey>,
}

impl std::fmt::Debug for RegistryConfig {
    // The token is a credential: never in logs or `{:?}` output.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RegistryConfig")
            .field("token", &"<redacted>")
            .field("trust", &self.trust)
            .field("replica", &self.replica)
            .field("scope", &self.scope)
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

impl RegistryConfig {
    pub fn new(token: impl Into<String>, trust: ServerTrust) -> Self {
        Self {
            token: token.into().trim().to_string(),
            trust,
            replica: ReplicaStorage::Memory,
            scope: CommitScope::Full,
            members: Vec::new(),
            reconnect_initial: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(5),
            root_keys: Vec::new(),
        }
    }
}

/// A parsed `tcp://host[:port]/chain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainUrl {
    pub host: String,
    pub port: u16,
    pub chain: String,
}

impl ChainUrl {
    pub fn parse(url: &str) -> Result<Self, AteError> {
        let invalid = |why: &str| AteError::InvalidInput(format!("'{url}' is not tcp://HOST[:PORT]/CHAIN: {why}"));
        let rest = url.strip_prefix("tcp://").ok_or_else(|| invalid("it must start with tcp://"))?;
        let (authority, chain) = rest.split_once('/').ok_or_else(|| invalid("no chain"))?;
        crate::protocol::check_chain_name(chain).map_err(|error| AteError::InvalidInput(error.to_string()))?;
        // `[::1]:5000`, `host:5000`, `host`.
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && (!host.contains(':') || host.ends_with(']')) => {
                (host, port.parse::<u16>().map_err(|_| invalid("bad port"))?)
            }
            _ => (authority, DEFAULT_PORT),
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        Ok(Self { host: host.trim_start_matches('[').trim_end_matches(']').to_string(), port, chain: chain.into() })
    }

    /// `host:port`, bracketing IPv6 hosts.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Opens remote chains.
#[derive(Debug)]
pub struct Registry {
    config: RegistryConfig,
    replicas: Arc<ChainBuilder>,
    /// Serialises opens so two callers never attach two followers.
    opening: tokio::sync::Mutex<()>,
}

impl Registry {
    pub async fn new(config: RegistryConfig) -> Self {
        let mut replicas = match &config.replica {
            ReplicaStorage::Memory => ChainBuilder::in_memory(&AteConfig::default()).await,
            ReplicaStorage::Disk(path) => {
                ChainBuilder::new(&AteConfig { log_path: Some(path.clone()), ..AteConfig::default() }).await
            }
        };
        for key in &config.root_keys {
            replicas = replicas.add_root_public_key(key);
        }
        Self { config, replicas: replicas.build(), opening: tokio::sync::Mutex::new(()) }
    }

    /// Opens `tcp://host[:port]/chain`: returns once the replica holds every
    /// event the server had made durable when it was asked.
    pub async fn open(&self, url: &str) -> Result<Arc<Chain>, AteError> {
        let url = ChainUrl::parse(url)?;
        let _opening = self.opening.lock().await;
        let key = ChainKey::from(url.chain.as_str());
        let mut chain = self.replicas.open(&key).await?;
        if chain.is_replica() {
            return Ok(chain);
        }
        let connector = Connector { config: self.config.clone(), url };
        let (link, durable_sequence) = connector.connect().await?;
        // An owner that dropped old segments starts its log at its
        // checkpoint; a replica behind that point starts over from it (its
        // old events are discarded, so nothing deleted meanwhile returns).
        let reply = request_with_deadline(&link, |request| ClientMessage::Checkpoint {
            request,
            chain: connector.url.chain.clone(),
        })
        .await?;
        let checkpoint = match reply {
            ServerMessage::Checkpoint { checkpoint, .. } => checkpoint,
            other => return Err(unexpected(other)),
        };
        if let Some(checkpoint) = checkpoint {
            let first_sequence = ate::chain::checkpoint_first_sequence(&checkpoint)?;
            if chain.next_sequence() < first_sequence {
                if Arc::strong_count(&chain) > 1 {
                    return Err(AteError::Locked { chain: key.name().to_string() });
                }
                tracing::warn!(chain = %key, local = chain.next_sequence(), first_sequence,
                    "the owner dropped this replica's position; refilling from its checkpoint");
                drop(chain);
                self.replicas.reset_from_checkpoint(&key, &checkpoint).await?;
                chain = self.replicas.open(&key).await?;
            }
        }
        let upstream = Arc::new(RemoteUpstream::new(connector, link));
        // Subscribing before the replica is attached makes refusals (no read
        // role, a replica ahead of the server) errors of this call, and
        // leaves the chain unattached for a later attempt.
        let subscription = resubscribe(&upstream, chain.next_sequence()).await?;
        chain.attach_upstream(Arc::clone(&upstream) as Arc<dyn Upstream>, self.config.scope)?;
        let follower = tokio::spawn(follow(Arc::downgrade(&chain), Arc::downgrade(&upstream), Some(subscription)));
        *upstream.follower.lock() = Some(follower);
        if durable_sequence > 0 {
            chain.wait_applied(durable_sequence - 1).await?;
        }
        Ok(chain)
    }

    /// A write-only handle on `tcp://host[:port]/chain`: commits go to the
    /// owner and return once it made them durable. Nothing streams back, so
    /// a producer keeps no replica (the WORM-ingest case: the client writes
    /// and never reads its own events back). Reads, the DIO and queues need
    /// [`Registry::open`].
    pub async fn producer(&self, url: &str) -> Result<Producer, AteError> {
        Ok(Producer { upstream: self.owner(url).await? })
    }

    /// A connection to the owner of `url`'s chain, with nothing to follow.
    async fn owner(&self, url: &str) -> Result<RemoteUpstream, AteError> {
        let url = ChainUrl::parse(url)?;
        let connector = Connector { config: self.config.clone(), url };
        let (link, _) = connector.connect().await?;
        Ok(RemoteUpstream::new(connector, link))
    }

    /// The queue `name` on `tcp://host[:port]/chain`, consumed without a
    /// replica: each take is one request that returns the items it leased
    /// ([`RemoteQueue`]). For encrypted or signed queues, use
    /// [`Registry::open`] and [`ate::messaging::Queue`].
    pub async fn queue(&self, url: &str, name: &str, config: QueueConfig) -> Result<RemoteQueue, AteError> {
        Ok(RemoteQueue::new(self.owner(url).await?, QueueSpec::new(name, config)))
    }
}

/// Appends to a remote chain without a replica ([`Registry::producer`]).
/// The server checks each commit exactly as it checks a replica's
/// (authority, signatures, validators, expectations); events go as given,
/// so signed or encrypted writes are built by the caller or go through a
/// replica's DIO.
#[derive(Debug)]
pub struct Producer {
    upstream: RemoteUpstream,
}

impl Producer {
    /// The chain's name.
    pub fn chain(&self) -> &str {
        &self.upstream.chain
    }

    /// Commits `events` atomically; returns their sequences once the owner
    /// made them durable per `durability` (the engine's default when `None`).
    /// Calls may run concurrently: they share the connection and the
    /// owner's fsync groups.
    pub async fn append(
        &self,
        events: Vec<NewEvent>,
        durability: Option<Durability>,
    ) -> Result<CommitReceipt, AteError> {
        if events.is_empty() {
            return Err(AteError::InvalidInput("a commit needs at least one event".into()));
        }
        let durability = durability.unwrap_or(AteConfig::default().durability);
        self.upstream.commit(events, durability).await
    }
}

/// Finds a chain's owner and connects to it.
#[derive(Debug)]
struct Connector {
    config: RegistryConfig,
    url: ChainUrl,
}

impl Connector {
    /// Members to try, the chain's owner first (configured members, or
    /// every address the URL's host resolves to). The others follow in case
    /// the owner's address is unreachable (say, a dual-stack name whose
    /// server listens on one family only): a server that does not own the
    /// chain redirects.
    async fn candidates(&self) -> Result<Vec<String>, AteError> {
        let mut members = if self.config.members.is_empty() {
            resolve_members(&self.url.host, self.url.port).await?
        } else {
            self.config.members.clone()
        };
        match owner_of(&self.url.chain, members.clone()) {
            Some(owner) => {
                members.retain(|member| *member != owner);
                members.insert(0, owner);
                Ok(members)
            }
            None => Ok(vec![self.url.address()]),
        }
    }

    async fn connect_to(&self, address: &str, server_name: &str) -> Result<RemoteConnection, RemoteError> {
        let token = &self.config.token;
        match &self.config.trust {
            ServerTrust::Fingerprint(fingerprint) => RemoteConnection::connect(address, fingerprint, token).await,
            ServerTrust::KnownServers(file) => RemoteConnection::connect_known(address, file, token).await,
            ServerTrust::CertificateAuthority(roots) => {
                RemoteConnection::connect_ca(address, server_name, roots, token).await
            }
        }
    }

    /// Connects to the owner (following redirects) and opens the chain;
    /// returns the link and the chain's durable sequence.
    async fn connect(&self) -> Result<(crate::link::Link, u64), AteError> {
        // Certificates name the host of the URL, not each resolved address.
        let mut connection = None;
        let mut last_error = None;
        let mut address = String::new();
        for candidate in self.candidates().await? {
            match self.connect_to(&candidate, &self.url.host).await {
                Ok(connected) => {
                    connection = Some(connected);
                    address = candidate;
                    break;
                }
                Err(error @ RemoteError::Transport(_)) => last_error = Some(error),
                Err(error) => return Err(to_ate_error(error)),
            }
        }
        let Some(mut connection) = connection else {
            return Err(to_ate_error(last_error.unwrap_or(RemoteError::Unexpected("no server to connect to".into()))));
        };
        for _ in 0..=MAX_REDIRECTS {
            let link = crate::link::Link::new(connection);
            let chain = self.url.chain.clone();
            match link.request(|request| ClientMessage::Open { request, chain }).await {
                Ok(ServerMessage::Opened { chain_id, durable_sequence, .. }) => {
                    if chain_id != ChainKey::from(self.url.chain.as_str()).chain_id() {
                        return Err(AteError::Remote {
                            failure: RemoteFailure::Refused,
                            message: format!("{address} answered for a different chain than '{}'", self.url.chain),
                        });
                    }
                    return Ok((link, durable_sequence));
                }
                Ok(other) => return Err(unexpected(other)),
                Err(RemoteError::Redirect { address: owner }) => {
                    connection = self.connect_to(&owner, host_of(&owner)).await.map_err(to_ate_error)?;
                    address = owner;
                }
                Err(error) => return Err(to_ate_error(error)),
            }
        }
        Err(unavailable(format!("chain '{}' was redirected more than {MAX_REDIRECTS} times", self.url.chain)))
    }
}

/// The host of `host:port` or `[v6]:port`, without brackets (the name a
/// redirect target's certificate must carry).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Every address `host` resolves to (all A and AAAA records), as sorted
/// `ip:port` members: every client derives the same ring from them.
pub async fn resolve_members(host: &str, port: u16) -> Result<Vec<String>, AteError> {
    let resolved = tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| unavailable(format!("resolving {host}: {error}")))?;
    let mut members: Vec<String> = resolved.map(|address| address.to_string()).collect();
    members.sort();
    members.dedup();
    Ok(members)
}

/// The member that owns `chain` by consistent hashing (the same ring the
/// servers use to redirect); `None` without members.
pub fn owner_of(chain: &str, members: Vec<String>) -> Option<String> {
    match members.len() {
        0 => None,
        1 => members.into_iter().next(),
        _ => HashRing::new(members, DEFAULT_VIRTUAL_NODES).owner(chain).map(str::to_string),
    }
}

fn unavailable(message: String) -> AteError {
    AteError::Remote { failure: RemoteFailure::Unavailable, message }
}

/// Maps a remote failure to the engine's error, keeping what callers match
/// on (conflicts stay `Conflict`).
pub fn to_ate_error(error: RemoteError) -> AteError {
    let message = error.to_string();
    match error {
        RemoteError::Server { code: ErrorCode::Conflict, key: Some(key), .. } => {
            AteError::Conflict { key: PrimaryKey::from_bytes(key) }
        }
        RemoteError::Server { code, .. } => {
            let failure = match code {
                ErrorCode::Forbidden | ErrorCode::Unauthenticated => RemoteFailure::Forbidden,
                ErrorCode::Rejected => RemoteFailure::Rejected,
                ErrorCode::TooLarge => RemoteFailure::TooLarge,
                ErrorCode::Unavailable | ErrorCode::NotOwner => RemoteFailure::Unavailable,
                _ => RemoteFailure::Refused,
            };
            AteError::Remote { failure, message }
        }
        RemoteError::Transport(_) | RemoteError::Redirect { .. } => unavailable(message),
        _ => AteError::Remote { failure: RemoteFailure::Refused, message },
    }
}

fn wire_durability(durability: Durability) -> WireDurability {
    match durability {
        Durability::Sync => WireDurability::Sync,
        Durability::Batched => WireDurability::Batched,
        Durability::Buffered => WireDurability::Buffered,
    }
}

/// The owner of a replica, over one multiplexed connection that is
/// replaced when it drops.
#[derive(Debug)]
pub(crate) struct RemoteUpstream {
    pub(crate) chain: String,
    connector: Connector,
    link: parking_lot::Mutex<Arc<crate::link::Link>>,
    /// One reconnection at a time.
    reconnecting: tokio::sync::Mutex<()>,
    deferred: Arc<parking_lot::Mutex<Option<AteError>>>,
    /// Commits sent in local scope and not answered yet.
    unanswered: Arc<tokio::sync::watch::Sender<u64>>,
    follower: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for RemoteUpstream {
    fn drop(&mut self) {
        if let Some(follower) = self.follower.lock().take() {
            follower.abort();
        }
    }
}

impl RemoteUpstream {
    fn new(connector: Connector, link: crate::link::Link) -> Self {
        Self {
            chain: connector.url.chain.clone(),
            link: parking_lot::Mutex::new(Arc::new(link)),
            reconnecting: tokio::sync::Mutex::new(()),
            deferred: Default::default(),
            unanswered: Arc::new(tokio::sync::watch::Sender::new(0)),
            follower: parking_lot::Mutex::new(None),
            connector,
        }
    }

    /// The live link, reconnecting once if it dropped (requests do not wait
    /// through backoff: they fail as `Unavailable` and the caller decides).
    async fn link(&self) -> Result<Arc<crate::link::Link>, AteError> {
        let current = Arc::clone(&self.link.lock());
        if !current.is_closed() {
            return Ok(current);
        }
        let _one = self.reconnecting.lock().await;
        let current = Arc::clone(&self.link.lock());
        if !current.is_closed() {
            return Ok(current);
        }
        let (link, _) = self.connector.connect().await?;
        let link = Arc::new(link);
        *self.link.lock() = Arc::clone(&link);
        Ok(link)
    }

    pub(crate) async fn request(&self, build: impl FnOnce(u64) -> ClientMessage) -> Result<ServerMessage, AteError> {
        let link = self.link().await?;
        request_with_deadline(&link, build).await
    }

    fn commit_message(&self, request: u64, events: Vec<NewEvent>, durability: Durability) -> ClientMessage {
        ClientMessage::Commit {
            request,
            chain: self.chain.clone(),
            durability: wire_durability(durability),
            events: events.into_iter().map(WireEvent::from).collect(),
        }
    }
}

pub(crate) fn unexpected(message: ServerMessage) -> AteError {
    to_ate_error(RemoteError::Unexpected(format!("{message:?}")))
}

impl Upstream for RemoteUpstream {
    fn commit(&self, events: Vec<NewEvent>, durability: Durability) -> UpstreamFuture<'_, CommitReceipt> {
        Box::pin(async move {
            let count = events.len() as u64;
            match self.request(|request| self.commit_message(request, events, durability)).await? {
                // One sequence per event, or the server is not telling the truth.
                ServerMessage::Committed { first_sequence, last_sequence, .. }
                    if last_sequence >= first_sequence && last_sequence - first_sequence + 1 == count =>
                {
                    Ok(CommitReceipt { first_sequence, last_sequence })
                }
                other => Err(unexpected(other)),
            }
        })
    }

    fn send(&self, events: Vec<NewEvent>, durability: Durability) -> UpstreamFuture<'_, ()> {
        Box::pin(async move {
            let link = self.link().await?;
            let reply =
                link.send(|request| self.commit_message(request, events, durability)).await.map_err(to_ate_error)?;
            // The answer is awaited off the caller's path; the first failure
            // is reported by the next commit.
            let (deferred, unanswered) = (Arc::clone(&self.deferred), Arc::clone(&self.unanswered));
            unanswered.send_modify(|count| *count += 1);
            tokio::spawn(async move {
                if let Err(error) = link.receive(reply).await {
                    deferred.lock().get_or_insert(to_ate_error(error));
                }
                unanswered.send_modify(|count| *count -= 1);
            });
            Ok(())
        })
    }

    fn flush(&self) -> UpstreamFuture<'_, ()> {
        Box::pin(async move {
            let mut watch = self.unanswered.subscribe();
            // The sender lives in `self`: waiting cannot outlive it.
            let _ = watch.wait_for(|count| *count == 0).await;
            Ok(())
        })
    }

    fn take_deferred_error(&self) -> Option<AteError> {
        self.deferred.lock().take()
    }

    fn lease(&self, key: PrimaryKey, token: u64, lease: Duration) -> UpstreamFuture<'_, Option<u32>> {
        Box::pin(async move {
            let chain = self.chain.clone();
            let lease_ms = lease.as_millis().min(u64::MAX as u128) as u64;
            let message = |request| ClientMessage::Lease { request, chain, key: *key.as_bytes(), token, lease_ms };
            match self.request(message).await? {
                ServerMessage::Leased { deliveries, .. } => Ok(deliveries),
                other => Err(unexpected(other)),
            }
        })
    }

    fn lease_holds(&self, key: PrimaryKey, token: u64) -> UpstreamFuture<'_, bool> {
        Box::pin(async move {
            let chain = self.chain.clone();
            match self
                .request(|request| ClientMessage::LeaseHolds { request, chain, key: *key.as_bytes(), token })
                .await?
            {
                ServerMessage::LeaseHeld { held, .. } => Ok(held),
                other => Err(unexpected(other)),
            }
        })
    }

    fn lease_many(
        &self,
        candidates: Vec<PrimaryKey>,
        token: u64,
        lease: Duration,
        max: usize,
    ) -> UpstreamFuture<'_, Vec<(PrimaryKey, u32)>> {
        Box::pin(async move {
            let mut leased = Vec::new();
            // The owner takes at most MAX_LEASE_CANDIDATES keys per request.
            for chunk in candidates.chunks(ate::messaging::MAX_LEASE_CANDIDATES) {
                if leased.len() >= max {
                    break;
                }
                let chain = self.chain.clone();
                let keys = chunk.iter().map(|key| *key.as_bytes()).collect();
                let lease_ms = lease.as_millis().min(u64::MAX as u128) as u64;
                let remaining = u32::try_from(max - leased.len()).unwrap_or(u32::MAX);
                let message =
                    |request| ClientMessage::LeaseMany { request, chain, keys, token, lease_ms, max: remaining };
                match self.request(message).await? {
                    ServerMessage::LeasedMany { leased: batch, .. } => leased
                        .extend(batch.into_iter().map(|(key, deliveries)| (PrimaryKey::from_bytes(key), deliveries))),
                    other => return Err(unexpected(other)),
                }
            }
            Ok(leased)
        })
    }

    fn lease_holds_many(&self, leases: Vec<(PrimaryKey, u64)>) -> UpstreamFuture<'_, Vec<bool>> {
        Box::pin(async move {
            let mut held = Vec::with_capacity(leases.len());
            for chunk in leases.chunks(ate::messaging::MAX_LEASE_CANDIDATES) {
                let chain = self.chain.clone();
                let leases = chunk.iter().map(|(key, token)| (*key.as_bytes(), *token)).collect();
                match self.request(|request| ClientMessage::LeaseHoldsMany { request, chain, leases }).await? {
                    ServerMessage::LeaseHeldMany { held: batch, .. } if batch.len() == chunk.len() => {
                        held.extend(batch)
                    }
                    other => return Err(unexpected(other)),
                }
            }
            Ok(held)
        })
    }

    fn lease_release(&self, key: PrimaryKey, token: u64, forget: bool) -> UpstreamFuture<'_, bool> {
        Box::pin(async move {
            if forget {
                // Forgetting follows the item's deletion, and the server
                // drops a deleted object's lease as it applies the deletion:
                // nothing to send (it saves a round trip per queue ack).
                return Ok(true);
            }
            let chain = self.chain.clone();
            let message = |request| ClientMessage::Release { request, chain, key: *key.as_bytes(), token, forget };
            match self.request(message).await? {
                ServerMessage::Released { released, .. } => Ok(released),
                other => Err(unexpected(other)),
            }
        })
    }
}

/// A subscription with the connection that carries it (dropping the link
/// would end the subscription).
type Stream = (crate::link::Link, crate::link::LinkSubscription);

/// Subscribes from `from` on a connection of its own, so the event stream
/// never queues in front of request replies. First checks that the server
/// has at least that much: a server that lost events this replica already
/// holds (a crash under `Buffered` durability, or another server) must not
/// have its new history spliced onto ours.
async fn resubscribe(remote: &RemoteUpstream, from: u64) -> Result<Stream, AteError> {
    let (link, durable_sequence) = remote.connector.connect().await?;
    if durable_sequence < from {
        return Err(AteError::Remote {
            failure: RemoteFailure::Refused,
            message: format!(
                "the server has {durable_sequence} events of '{}' but this replica already holds {from}: \
                 it lost events it had sent; remove the replica to start over",
                remote.chain
            ),
        });
    }
    let subscription = link.subscribe(&remote.chain, from).await.map_err(to_ate_error)?;
    Ok((link, subscription))
}

/// Longest wait for the answer to one request (a commit included).
const REQUEST_DEADLINE: Duration = Duration::from_secs(60);

/// [`crate::link::Link::request`] that gives up after [`REQUEST_DEADLINE`].
async fn request_with_deadline(
    link: &crate::link::Link,
    build: impl FnOnce(u64) -> ClientMessage,
) -> Result<ServerMessage, AteError> {
    match tokio::time::timeout(REQUEST_DEADLINE, link.request(build)).await {
        Ok(reply) => reply.map_err(to_ate_error),
        Err(_) => Err(unavailable(format!("no answer within {} s", REQUEST_DEADLINE.as_secs()))),
    }
}

/// Keeps the replica following the owner until the chain is dropped or
/// the owner sends something that does not verify. Reconnects with
/// exponential backoff (`reconnect_initial` doubling up to `reconnect_max`)
/// and resubscribes from the replica's next sequence.
async fn follow(chain: Weak<Chain>, upstream: Weak<RemoteUpstream>, mut initial: Option<Stream>) {
    let mut failures = 0u32;
    loop {
        if let Some(subscription) = initial.take() {
            if follow_subscription(&chain, subscription).await.is_break() {
                return;
            }
            failures = 1;
            continue;
        }
        if failures > 0 {
            let Some(remote) = upstream.upgrade() else { return };
            let config = &remote.connector.config;
            let wait = config.reconnect_initial.saturating_mul(1 << (failures - 1).min(16)).min(config.reconnect_max);
            drop(remote);
            tokio::time::sleep(wait).await;
        }
        let Some(remote) = upstream.upgrade() else { return };
        let Some(from) = chain.upgrade().map(|chain| chain.next_sequence()) else { return };
        let subscription = resubscribe(&remote, from).await;
        drop(remote);
        let subscription = match subscription {
            Ok(subscription) => subscription,
            // Refusals do not heal by retrying: the replica stops, and
            // everyone waiting on it gets the reason.
            Err(error @ AteError::Remote { failure: RemoteFailure::Forbidden | RemoteFailure::Refused, .. }) => {
                if let Some(replica) = chain.upgrade() {
                    tracing::error!(%error, "the server refuses this replica; it stops following");
                    replica.fail_replica(error.to_string());
                }
                return;
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::debug!(%error, failures, "subscribing failed; retrying");
                continue;
            }
        };
        if follow_subscription(&chain, subscription).await.is_break() {
            return;
        }
        failures = 1;
    }
}

/// Ingests one subscription until it ends: `Break` when following must stop
/// (chain gone, or the server sent something that does not verify),
/// `Continue` to reconnect.
async fn follow_subscription(chain: &Weak<Chain>, stream: Stream) -> std::ops::ControlFlow<()> {
    use std::ops::ControlFlow;
    let (_link, mut subscription) = stream;
    // Bytes of a commit whose end has not arrived yet.
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let batch = match subscription.next().await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::debug!(%error, "subscription lost; reconnecting");
                return ControlFlow::Continue(());
            }
        };
        let Some(replica) = chain.upgrade() else { return ControlFlow::Break(()) };
        // Usually a batch ends on a commit boundary: ingest it where it
        // arrived, and keep only an unfinished tail for the next one.
        let carried = !carry.is_empty();
        if carried {
            carry.extend_from_slice(&batch);
        }
        match replica.ingest(if carried { &carry } else { &batch }).await {
            Ok(used) if carried => {
                carry.drain(..used);
            }
            Ok(used) => carry.extend_from_slice(&batch[used..]),
            Err(error) => {
                tracing::error!(%error, "the server sent events that do not verify; the replica stops following");
                replica.fail_replica(error.to_string());
                return ControlFlow::Break(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_default_ports_and_ipv6_hosts() {
        let url = ChainUrl::parse("tcp://db.example.com/orders").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.chain.as_str()), ("db.example.com", DEFAULT_PORT, "orders"));
        assert_eq!(url.address(), "db.example.com:5000");
        let url = ChainUrl::parse("tcp://10.0.0.1:7000/orders").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("10.0.0.1", 7000));
        let url = ChainUrl::parse("tcp://[::1]:7000/orders").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.address().as_str()), ("::1", 7000, "[::1]:7000"));
        for bad in ["http://h/c", "tcp://h", "tcp://h/", "tcp:///c", "tcp://h:x/c", "tcp://h/a/b", "tcp://h:99999/c"] {
            assert!(matches!(ChainUrl::parse(bad), Err(AteError::InvalidInput(_))), "{bad} parsed");
        }
    }

    #[tokio::test]
    async fn members_come_from_every_address_of_the_host_and_agree_on_owners() {
        let members = resolve_members("localhost", 5000).await.unwrap();
        assert!(members.iter().any(|member| member == "127.0.0.1:5000"), "{members:?}");
        let mut sorted = members.clone();
        sorted.sort();
        assert_eq!(members, sorted, "every client must build the same ring");
        assert!(matches!(resolve_members("no-such-host.invalid", 5000).await, Err(AteError::Remote { .. })));

        let cluster: Vec<String> = (1..=3).map(|index| format!("10.0.0.{index}:5000")).collect();
        let mut owners = std::collections::HashSet::new();
        for index in 0..100 {
            let chain = format!("chain-{index}");
            let owner = owner_of(&chain, cluster.clone()).unwrap();
            let mut reversed = cluster.clone();
            reversed.reverse();
            assert_eq!(owner_of(&chain, reversed).unwrap(), owner, "member order must not matter");
            owners.insert(owner);
        }
        assert_eq!(owners.len(), 3, "chains spread over every member");
        assert_eq!(owner_of("c", vec!["a:1".into()]).as_deref(), Some("a:1"));
        assert_eq!(owner_of("c", Vec::new()), None);
    }
}
