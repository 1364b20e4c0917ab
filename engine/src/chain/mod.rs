//! Chains and the builder that opens them.

mod assign;
mod compaction;
mod log_retention;
mod replica;
use assign::{AssignQueue, Assigned};
pub use compaction::CompactionReport;
pub use log_retention::{checkpoint_first_sequence, DropReport, DropRule};
pub use replica::{CommitScope, Upstream, UpstreamFuture};

use crate::config::{AteConfig, Durability, StorageBackend};
use crate::crypto::{KeyId, PrivateSignKey, PublicSignKey};
use crate::format::{EventHash, EventKind};
use crate::key::{ChainKey, CollectionId, PrimaryKey};
use crate::log::{recover, ChainShared, CommitReceipt, WriterHandle};
use crate::messaging::ItemPage;
use crate::plugin::{Linter, SizeValidator, TimestampValidator, Transformer, Validator};
use crate::proof::{ConsistencyProof, InclusionProof, MerkleTree, TreeHead};
use crate::session::AteSession;
use crate::storage::{PortableStorage, Storage, UringStorage};
use crate::trust::{
    verify_commit_signatures, EventContent, IntegrityMode, NodeKeyWrap, SignedContents, SignedEvent, StagedTrust,
    TrustConfig, TrustState,
};
use crate::verify::{verify_chain, VerifyError, VerifyReport};
use crate::{AteError, Result};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

/// Microseconds since the Unix epoch (the clock every ATE timestamp uses).
pub fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// What a commit expects of an object's current version (optimistic
/// concurrency). Checked atomically with sequence assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Blind write.
    Any,
    /// The object must not exist.
    Absent,
    /// The object's latest event must be this sequence.
    Version(u64),
}

/// One event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub key: PrimaryKey,
    pub kind: EventKind,
    pub parent: Option<(PrimaryKey, CollectionId)>,
    pub type_tag: u64,
    pub payload: Vec<u8>,
    pub expect: Expect,
    /// Node key the payload is encrypted under (all zero: plaintext).
    pub read_key_id: [u8; 32],
    /// AEAD nonce of an encrypted payload; a random salt for signed plaintext.
    pub nonce: [u8; 12],
    /// Set by signed commits (the signature covers it); 0 lets the chain
    /// stamp the commit time.
    pub timestamp_us: u64,
}

impl NewEvent {
    /// BLAKE3 of every event's payload, hashed side by side (see
    /// `format::payload_hashes`).
    pub(crate) fn payload_hashes(events: &[NewEvent]) -> Vec<[u8; 32]> {
        let payloads: Vec<&[u8]> = events.iter().map(|event| event.payload.as_slice()).collect();
        crate::format::payload_hashes(&payloads)
    }

    pub fn new(key: PrimaryKey, kind: EventKind, payload: Vec<u8>) -> Self {
        Self {
            key,
            kind,
            parent: None,
            type_tag: 0,
            payload,
            expect: Expect::Any,
            read_key_id: [0; 32],
            nonce: [0; 12],
            timestamp_us: 0,
        }
    }
    /// A data event: a new version of `key`.
    pub fn data(key: PrimaryKey, payload: Vec<u8>) -> Self {
        Self::new(key, EventKind::Data, payload)
    }
    /// A tombstone for `key`.
    pub fn tombstone(key: PrimaryKey) -> Self {
        Self::new(key, EventKind::Tombstone, Vec::new())
    }

    /// A retention change: the chain's policy (on `trust::retention::policy_key()`)
    /// or an object's retain-until date and legal hold (on the object).
    pub fn retention(key: PrimaryKey, change: &crate::trust::retention::RetentionChange) -> Self {
        Self::new(key, EventKind::Retention, postcard::to_stdvec(change).expect("retention changes serialize"))
    }

    /// Sets the chain's retention policy (only ever tightened).
    pub fn retention_policy(policy: crate::trust::retention::RetentionPolicy) -> Self {
        let change = crate::trust::retention::RetentionChange::Policy(policy);
        Self::retention(crate::trust::retention::policy_key(), &change)
    }

    /// The signed fields of this event, given its payload hash and timestamp.
    pub fn content(&self, payload_hash: [u8; 32], timestamp_us: u64) -> EventContent {
        let (parent, collection) = self.parent.map_or(([0u8; 16], 0), |(p, c)| (*p.as_bytes(), c.0));
        EventContent {
            kind: self.kind as u8,
            key: *self.key.as_bytes(),
            parent,
            collection,
            type_tag: self.type_tag,
            timestamp_us,
            payload_hash,
            read_key_id: self.read_key_id,
            nonce: self.nonce,
        }
    }
}

/// Public keys and node-key wraps published in a chain, for readers and for
/// signature checks outside the append lock.
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    pub public_keys: dashmap::DashMap<KeyId, PublicSignKey>,
    pub node_keys: dashmap::DashMap<KeyId, Vec<NodeKeyWrap>>,
}

impl KeyIndex {
    pub fn add_wrap(&self, wrap: NodeKeyWrap) {
        let mut wraps = self.node_keys.entry(wrap.node_key_id()).or_default();
        if !wraps.contains(&wrap) {
            wraps.push(wrap);
        }
    }
}

/// Builds chains that share one configuration and data directory.
#[derive(Debug)]
pub struct ChainBuilder {
    config: AteConfig,
    root: std::result::Result<PathBuf, String>,
    temp: Option<Arc<tempfile::TempDir>>,
    storage: Option<Arc<dyn Storage>>,
    open_chains: tokio::sync::Mutex<HashMap<ChainKey, Weak<Chain>>>,
    trust: TrustConfig,
    root_public_keys: Vec<PublicSignKey>,
    server_key: Option<PrivateSignKey>,
    plugins: Plugins,
    /// Commits are written by the committer, not a writer thread (chains in memory).
    inline_writes: bool,
}

/// Plugins of a chain (see `crate::plugin`).
#[derive(Debug, Clone)]
pub(crate) struct Plugins {
    pub validators: Vec<Arc<dyn Validator>>,
    pub linters: Vec<Arc<dyn Linter>>,
    pub transformers: Vec<Arc<dyn Transformer>>,
}

impl Default for Plugins {
    fn default() -> Self {
        Self {
            validators: vec![Arc::new(TimestampValidator), Arc::new(SizeValidator)],
            linters: Vec::new(),
            transformers: Vec::new(),
        }
    }
}

impl ChainBuilder {
    /// Uses `config.log_path`, or a fresh temporary folder when it is `None`.
    /// Errors (an unusable folder) surface at [`ChainBuilder::open`].
    pub async fn new(config: &AteConfig) -> Self {
        let (root, temp) = match &config.log_path {
            Some(path) => (Ok(path.clone()), None),
            None => match tempfile::Builder::new().prefix("ate-").tempdir() {
                Ok(dir) => (Ok(dir.path().to_path_buf()), Some(Arc::new(dir))),
                Err(error) => (Err(format!("cannot create a temporary folder: {error}")), None),
            },
        };
        Self {
            config: config.clone(),
            root,
            temp,
            storage: None,
            open_chains: Default::default(),
            trust: TrustConfig::default(),
            root_public_keys: Vec::new(),
            server_key: None,
            plugins: Plugins::default(),
            inline_writes: false,
        }
    }

    /// Keeps chains in memory: a temporary folder on `/dev/shm` (tmpfs) when
    /// the machine has one, else in the system temporary folder; removed
    /// when the builder and its chains are gone. `config.log_path` is ignored.
    pub async fn in_memory(config: &AteConfig) -> Self {
        let shm = Path::new("/dev/shm");
        let created = if shm.is_dir() {
            tempfile::Builder::new().prefix("ate-").tempdir_in(shm)
        } else {
            tempfile::Builder::new().prefix("ate-").tempdir()
        };
        let mut builder = Self::new(&AteConfig { log_path: Some(PathBuf::new()), ..config.clone() }).await;
        match created {
            Ok(dir) => {
                builder.root = Ok(dir.path().to_path_buf());
                builder.temp = Some(Arc::new(dir));
            }
            Err(error) => builder.root = Err(format!("cannot create a temporary folder: {error}")),
        }
        builder.config.log_path = None;
        // A write to tmpfs is a memcpy: io_uring would hand each one to a
        // kernel worker thread, a wakeup per group for nothing.
        builder.config.backend = StorageBackend::Portable;
        // tmpfs has no unwritten extents for zeros to convert ahead of time.
        builder.config.zero_ahead_bytes = 0;
        // A commit is a memcpy here: written by the committer, no thread hop.
        builder.inline_writes = true;
        builder
    }

    /// Adds a validator: every commit must pass it before it is written.
    pub fn add_validator(mut self, validator: Arc<dyn Validator>) -> Self {
        self.plugins.validators.push(validator);
        self
    }

    /// Adds a linter, run by every DIO on this chain before it signs.
    pub fn add_linter(mut self, linter: Arc<dyn Linter>) -> Self {
        self.plugins.linters.push(linter);
        self
    }

    /// Adds a payload transformer (applied in order on write, in reverse on read).
    pub fn add_transformer(mut self, transformer: Arc<dyn Transformer>) -> Self {
        self.plugins.transformers.push(transformer);
        self
    }

    /// Removes every validator, the built-in timestamp and size checks
    /// included (signatures and authority are always checked).
    pub fn without_default_validators(mut self) -> Self {
        self.plugins.validators.clear();
        self
    }

    /// Objects without a parent may only be written by these keys (any one).
    pub fn add_root_public_key(mut self, key: &PublicSignKey) -> Self {
        self.trust.root_keys.push(key.id());
        self.root_public_keys.push(key.clone());
        self
    }

    /// Distributed (default) or centralized integrity. Centralized needs a
    /// server key ([`ChainBuilder::server_key`]).
    pub fn integrity(mut self, mode: IntegrityMode) -> Self {
        self.trust.integrity = mode;
        self
    }

    /// The key this process signs commits with in centralized mode.
    pub fn server_key(mut self, key: PrivateSignKey) -> Self {
        self.trust.server_key_id = Some(key.id());
        self.root_public_keys.push(key.public().clone());
        self.server_key = Some(key);
        self
    }

    /// How far an event's timestamp may be from this machine's clock.
    pub fn timestamp_skew(mut self, skew: std::time::Duration) -> Self {
        self.trust.timestamp_skew_us = skew.as_micros() as u64;
        self
    }

    /// Replaces the storage backend (fault injection in tests).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Default durability of chains opened by this builder.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.config.durability = durability;
        self
    }

    pub fn build(self) -> Arc<Self> {
        Arc::new(self)
    }

    /// Chains opened through this builder that are still open.
    pub async fn open_chains(&self) -> Vec<Arc<Chain>> {
        self.open_chains.lock().await.values().filter_map(Weak::upgrade).collect()
    }

    /// The data folder, once known.
    pub fn path(&self) -> Option<&Path> {
        self.root.as_ref().ok().map(PathBuf::as_path)
    }

    /// Opens (recovering if needed) or creates a chain. Opening a chain that
    /// is already open returns the same handle.
    pub async fn open(&self, key: &ChainKey) -> Result<Arc<Chain>> {
        self.config.validate()?;
        let root = self.root.clone().map_err(AteError::InvalidConfig)?;
        let mut open = self.open_chains.lock().await;
        if let Some(chain) = open.get(key).and_then(Weak::upgrade) {
            return Ok(chain);
        }
        let dir = root.join("chains").join(key.directory_name());
        std::fs::create_dir_all(&dir).map_err(|e| AteError::io(format!("creating {}", dir.display()), e))?;
        // A handle of this builder whose last reference was just dropped may
        // still be closing (its writer finishing, then its lock released):
        // wait for that rather than report the chain as open elsewhere.
        let closing_here = open.contains_key(key);
        let mut waited = std::time::Duration::ZERO;
        let lock = loop {
            match lock_directory(&dir, key) {
                Err(AteError::Locked { .. }) if closing_here && waited < CLOSE_WAIT => {
                    tokio::time::sleep(CLOSE_POLL).await;
                    waited += CLOSE_POLL;
                }
                locked => break locked?,
            }
        };
        let (storage, device) = self.storage_and_device()?;
        let shared = Arc::new(ChainShared::new(key.name().to_string(), dir, storage, self.config.clone()));
        if self.trust.integrity == IntegrityMode::Centralized && self.server_key.is_none() {
            return Err(AteError::InvalidConfig("centralized integrity needs a server key".into()));
        }
        let recovering = Arc::clone(&shared);
        let trust_config = self.trust.clone();
        let root_keys = self.root_public_keys.clone();
        let (recovered, trust) = tokio::task::spawn_blocking(move || {
            let mut trust = TrustState::new();
            for key in root_keys {
                recovering.keys.public_keys.insert(key.id(), key.clone());
                trust.add_public_key(key);
            }
            let now = now_us();
            let recovered = recover(&recovering, &mut |commit| {
                for event in commit {
                    for wrap in trust.apply_recovered(event.header, event.payload) {
                        recovering.keys.add_wrap(wrap);
                    }
                    if event.header.kind() == Some(EventKind::PublicKey) {
                        if let Ok(key) = PublicSignKey::decode(event.payload) {
                            recovering.keys.public_keys.insert(key.id(), key);
                        }
                    }
                }
                // Recent signed commits are remembered so a retry after a
                // restart is still recognised as a replay.
                let signed_from = commit.iter().position(|event| event.header.kind() == Some(EventKind::Signature));
                let timestamp_us = commit.iter().map(|event| event.header.timestamp_us()).max().unwrap_or(0);
                if let (Some(signed_from), Some(first), Some(last)) = (signed_from, commit.first(), commit.last()) {
                    if timestamp_us + 2 * trust_config.timestamp_skew_us >= now {
                        let hashes: Vec<[u8; 32]> = commit[..signed_from]
                            .iter()
                            .map(|event| EventContent::of_archived(event.header).hash())
                            .collect();
                        let root = crate::trust::events::commit_root(&hashes);
                        let (first, last) = (first.header.sequence(), last.header.sequence());
                        trust.remember_commit(root, timestamp_us, first, last, &trust_config, now);
                    }
                }
            })?;
            Ok::<_, AteError>((recovered, trust))
        })
        .await
        .map_err(|e| AteError::io("recovering chain", std::io::Error::other(e.to_string())))??;
        let first_sequence = recovered.checkpoint.as_ref().map_or(0, |checkpoint| checkpoint.first_sequence);
        shared.first_sequence.store(first_sequence, std::sync::atomic::Ordering::Release);
        let proofs = match &recovered.checkpoint {
            Some(checkpoint) => ProofCache {
                tree: MerkleTree::from_frontier(checkpoint.first_sequence, &checkpoint.frontier)?,
                last_timestamp_us: checkpoint.last_timestamp_us,
                ..ProofCache::default()
            },
            None => ProofCache::default(),
        };
        shared.durable_sequence.store(recovered.next_sequence, std::sync::atomic::Ordering::Release);
        shared.durable_notify.send_replace(recovered.next_sequence);
        if recovered.truncated_bytes > 0 {
            tracing::info!(chain = %key, bytes = recovered.truncated_bytes, "recovery cut a torn tail");
        }
        let writer = WriterHandle::start(
            Arc::clone(&shared),
            device,
            self.config.writer_queue_commits,
            self.inline_writes,
            recovered.next_sequence,
            recovered.last_hash,
            recovered.active_write_offset,
        )
        .map_err(|e| AteError::io("starting the log writer thread", e))?;
        let chain = Arc::new(Chain {
            key: key.clone(),
            durability: self.config.durability,
            permits: Arc::new(tokio::sync::Semaphore::new(self.config.writer_queue_commits)),
            append: parking_lot::Mutex::new(AppendState {
                next_sequence: recovered.next_sequence,
                last_hash: recovered.last_hash,
                last_timestamp_us: recovered.last_timestamp_us,
                in_flight: HashMap::default(),
                trust,
            }),
            trust: self.trust.clone(),
            server_key: self.server_key.clone(),
            root_keys: self.root_public_keys.clone(),
            plugins: self.plugins.clone(),
            leases: Default::default(),
            upstream: Default::default(),
            verified_commits: Default::default(),
            checked_from: recovered.next_sequence,
            proofs: parking_lot::Mutex::new(proofs),
            upkeep: tokio::sync::Mutex::new(()),
            assign_queue: AssignQueue::default(),
            shared,
            writer,
            _lock: lock,
            _temp: self.temp.clone(),
        });
        open.insert(key.clone(), Arc::downgrade(&chain));
        Ok(chain)
    }

    fn storage_and_device(&self) -> Result<(Arc<dyn Storage>, Box<dyn crate::storage::LogDevice>)> {
        let storage: Arc<dyn Storage> = match (&self.storage, self.config.backend) {
            (Some(storage), _) => Arc::clone(storage),
            (None, StorageBackend::IoUring) => Arc::new(UringStorage),
            (None, StorageBackend::Portable) => Arc::new(PortableStorage),
        };
        match Arc::clone(&storage).log_device() {
            Ok(device) => Ok((storage, device)),
            Err(error) if self.storage.is_none() && self.config.backend == StorageBackend::IoUring => {
                tracing::warn!(%error, "io_uring is unavailable; falling back to the pwrite backend");
                let portable: Arc<dyn Storage> = Arc::new(PortableStorage);
                let device = Arc::clone(&portable).log_device().map_err(|e| AteError::io("creating log device", e))?;
                Ok((portable, device))
            }
            Err(error) => Err(AteError::io("creating log device", error)),
        }
    }
}

/// How long `open` waits for a handle of the same builder to finish closing.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
const CLOSE_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// One process at a time may write a chain: an advisory lock on `LOCK`.
fn lock_directory(dir: &Path, key: &ChainKey) -> Result<File> {
    use std::os::fd::AsRawFd;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| AteError::io(format!("opening {}", path.display()), e))?;
    // SAFETY: plain syscall on a descriptor we own; no memory is passed.
    let status = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if status != 0 {
        let error = std::io::Error::last_os_error();
        return Err(if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            AteError::Locked { chain: key.name().to_string() }
        } else {
            AteError::io(format!("locking {}", path.display()), error)
        });
    }
    Ok(file)
}

/// A position in a chain's log for readers that walk it in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogCursor {
    segment: u32,
    offset: usize,
    /// Sequence of the next event this cursor returns.
    pub next_sequence: u64,
}

#[derive(Debug, Default)]
struct ProofCache {
    tree: MerkleTree,
    /// Event hashes from the tree's pruned size (the log's first sequence) on.
    event_hashes: Vec<[u8; 32]>,
    last_timestamp_us: u64,
    /// Where the next event to add starts.
    segment: u32,
    offset: usize,
}

#[derive(Debug)]
struct AppendState {
    next_sequence: u64,
    last_hash: EventHash,
    last_timestamp_us: u64,
    /// Keys written by commits that are assigned but not yet in the view:
    /// key → (sequence, deleted). Conflict checks look here first.
    /// Randomly seeded foldhash, as the view's maps (SipHash was 6% of an
    /// ingest profile).
    in_flight: HashMap<u128, (u64, bool), crate::FastHash>,
    /// Authority tree, public keys and anti-replay window, as of the last
    /// assigned commit.
    trust: TrustState,
}

/// A submitted commit (see [`Chain::submit`]).
#[must_use = "a submitted commit is only acknowledged once `durable` returns"]
pub struct PendingCommit {
    chain: Arc<Chain>,
    assigned: Assigned,
}

impl std::fmt::Debug for PendingCommit {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("PendingCommit").field("chain", &self.chain.key).finish_non_exhaustive()
    }
}

impl PendingCommit {
    /// Waits until the commit is durable (per its durability) and visible.
    pub async fn durable(self) -> Result<CommitReceipt> {
        self.chain.finish(self.assigned).await
    }
}

/// An open chain: append commits, read the materialized view.
#[derive(Debug)]
pub struct Chain {
    key: ChainKey,
    durability: Durability,
    trust: TrustConfig,
    server_key: Option<PrivateSignKey>,
    root_keys: Vec<PublicSignKey>,
    plugins: Plugins,
    leases: crate::messaging::Leases,
    /// Set on a replica: the owner that takes its commits and leases.
    upstream: std::sync::OnceLock<(Arc<dyn Upstream>, CommitScope)>,
    /// Commits `verify_event` already checked (by last sequence): only
    /// commits recovered from disk, so at most the log as it was opened.
    verified_commits: dashmap::DashSet<u64>,
    /// The first sequence this process appended or ingested: every commit
    /// from here on was checked on its way in (signatures and authority by
    /// `assign`, or `ate verify`'s checks by `ingest_commit` on a replica).
    checked_from: u64,
    /// Merkle tree over event hashes, built on first use and extended after.
    proofs: parking_lot::Mutex<ProofCache>,
    /// Held by compaction and segment drops: one rewrite of the directory at a time.
    upkeep: tokio::sync::Mutex<()>,
    shared: Arc<ChainShared>,
    append: parking_lot::Mutex<AppendState>,
    /// Commits checked and waiting for the append lock (see `assign.rs`).
    assign_queue: AssignQueue,
    permits: Arc<tokio::sync::Semaphore>,
    /// Dropped before the segment files' lock: finishes what is queued.
    writer: WriterHandle,
    _lock: File,
    _temp: Option<Arc<tempfile::TempDir>>,
}

impl Chain {
    pub fn key(&self) -> &ChainKey {
        &self.key
    }

    /// Folder holding this chain's segments.
    pub fn path(&self) -> &Path {
        &self.shared.dir
    }

    /// Default durability of commits on this chain.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Starts a transaction.
    pub async fn dio(self: &Arc<Self>, session: &AteSession) -> crate::dio::Dio {
        crate::dio::Dio::new(Arc::clone(self), session.clone())
    }

    /// Latest version of `key`, zero-copy from the mmap; `None` if absent or deleted.
    pub fn get(&self, key: &PrimaryKey) -> Option<crate::EventRef<'_>> {
        let location = self.shared.view.get(key.as_u128())?;
        self.shared.segments.event(location)
    }

    /// Latest versions of many keys, in the order of `keys`: what
    /// [`Chain::get`] returns for each. Each key is read on its own; wrap the
    /// call in [`Chain::read_consistent`] to see no commit half-applied.
    ///
    /// Faster than a `get` per key when the keys are spread over a chain
    /// larger than the CPU caches: the records of a batch are fetched from
    /// memory side by side rather than one after another (E3 in
    /// docs/benchmarks.md).
    pub fn get_many(&self, keys: &[PrimaryKey]) -> Vec<Option<crate::EventRef<'_>>> {
        // Enough records in flight to cover memory latency, few enough to
        // stay in L1 until they are read.
        const BATCH: usize = 32;
        let mut found = Vec::with_capacity(keys.len());
        let mut locations = [None; BATCH];
        for batch in keys.chunks(BATCH) {
            let locations = &mut locations[..batch.len()];
            for (location, key) in locations.iter_mut().zip(batch) {
                *location = self.shared.view.get(key.as_u128());
            }
            self.shared.segments.warm(locations);
            found.extend(locations.iter().map(|location| location.and_then(|at| self.shared.segments.event(at))));
        }
        found
    }

    /// Runs `read` against a view in which no commit is half-applied (it
    /// may run more than once). Single-key reads need no such care.
    pub fn read_consistent<R>(&self, read: impl FnMut() -> R) -> R {
        self.shared.view.read_consistent(read)
    }

    /// Sequence of the latest event of `key`, if it exists.
    pub fn version(&self, key: &PrimaryKey) -> Option<u64> {
        self.get(key).map(|event| event.header.sequence())
    }

    /// Children of `parent` in `collection`, in creation order.
    pub fn children(&self, parent: &PrimaryKey, collection: CollectionId) -> Vec<PrimaryKey> {
        self.shared.view.children(parent.as_u128(), collection.0).into_iter().map(PrimaryKey::from_u128).collect()
    }

    /// At most `limit` children of `parent` in `collection` created at or
    /// after `from_sequence`, oldest first, each with the sequence that
    /// created it (pass the last one + 1 for the next page).
    pub fn children_page(
        &self,
        parent: &PrimaryKey,
        collection: CollectionId,
        from_sequence: u64,
        limit: usize,
    ) -> Vec<(u64, PrimaryKey)> {
        self.shared
            .view
            .children_page(parent.as_u128(), collection.0, from_sequence, limit)
            .into_iter()
            .map(|(sequence, key)| (sequence, PrimaryKey::from_u128(key)))
            .collect()
    }

    /// How many children `parent` has in `collection`.
    pub fn child_count(&self, parent: &PrimaryKey, collection: CollectionId) -> usize {
        self.shared.view.child_count(parent.as_u128(), collection.0)
    }

    /// Number of live objects in the view.
    pub fn len(&self) -> usize {
        self.shared.view.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shared.view.is_empty()
    }

    /// Queue items this chain holds a lease table entry for (on the owner;
    /// a replica's leases live there): taken and not yet acknowledged, or
    /// released with a delivery count. An acknowledged item leaves none.
    pub fn leases_held(&self) -> usize {
        self.leases.len()
    }

    /// Entries of the chain's authority tree: a link per live object under
    /// a parent (and per deleted one that still has children), a node per
    /// authority record or retention. Deleted leaves leave nothing behind.
    pub fn trust_tree_entries(&self) -> usize {
        self.append.lock().trust.tree_entries()
    }

    /// Every live key (snapshot, unordered).
    pub fn keys(&self) -> Vec<PrimaryKey> {
        self.shared.view.keys().into_iter().map(PrimaryKey::from_u128).collect()
    }

    /// The next sequence number this chain will assign.
    pub fn next_sequence(&self) -> u64 {
        self.append.lock().next_sequence
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> u32 {
        self.shared.segments.len()
    }

    /// Appends one commit atomically: every event becomes visible together,
    /// once durable per `durability` (the chain's default when `None`), or
    /// none does. Expectations are checked against the latest versions,
    /// including commits still in flight.
    pub async fn append(&self, events: Vec<NewEvent>, durability: Option<Durability>) -> Result<CommitReceipt> {
        if self.upstream().is_some() {
            // The owner hashes what it sequences; the replica verifies it.
            return self.append_hashed(events, Vec::new(), None, durability).await;
        }
        // Hash payloads before taking the lock: it is the costly part and
        // runs in parallel across committers.
        let payload_hashes = NewEvent::payload_hashes(&events);
        self.append_hashed(events, payload_hashes, None, durability).await
    }

    /// [`Chain::append`] with payload hashes this process computed itself
    /// (the DIO, which hashed them to sign), and for a commit it signed, the
    /// content hashes and root it signed. Never for bytes from outside.
    pub(crate) async fn append_hashed(
        &self,
        events: Vec<NewEvent>,
        payload_hashes: Vec<[u8; 32]>,
        signed_contents: Option<SignedContents>,
        durability: Option<Durability>,
    ) -> Result<CommitReceipt> {
        if events.is_empty() {
            return Err(AteError::InvalidInput("a commit needs at least one event".into()));
        }
        if let Some((upstream, _)) = self.upstream() {
            // `Chain::append` always waits for the sequences (full scope).
            let receipt = self.forward(upstream, CommitScope::Full, events, durability).await?;
            return receipt.ok_or_else(|| AteError::InvalidInput("full scope returns a receipt".into()));
        }
        assert_eq!(events.len(), payload_hashes.len(), "one payload hash per event");
        let assigned = self.assign(events, payload_hashes, signed_contents, durability).await?;
        self.finish(assigned).await
    }

    /// [`Chain::append`] in two steps, for servers that pipeline one
    /// client's commits: this call validates the commit and assigns its
    /// sequences (so commits are ordered as submitted), and
    /// [`PendingCommit::durable`] waits for durability. Not on replicas.
    pub async fn submit(
        self: &Arc<Self>,
        events: Vec<NewEvent>,
        durability: Option<Durability>,
    ) -> Result<PendingCommit> {
        if self.is_replica() {
            return Err(AteError::InvalidInput(
                "submit is for the chain's owner; a replica forwards with append".into(),
            ));
        }
        if events.is_empty() {
            return Err(AteError::InvalidInput("a commit needs at least one event".into()));
        }
        let payload_hashes = NewEvent::payload_hashes(&events);
        let assigned = self.assign(events, payload_hashes, None, durability).await?;
        Ok(PendingCommit { chain: Arc::clone(self), assigned })
    }

    /// Counters and latency histograms of this chain's log.
    pub fn log_metrics(&self) -> &crate::metrics::LogMetrics {
        &self.shared.metrics
    }

    /// Sequence after the last durable event.
    pub fn durable_sequence(&self) -> u64 {
        self.shared.durable_sequence.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Verifies every durable event of this chain from its files: checksums,
    /// hash chain, payload hashes, signatures and authority at each step.
    pub async fn verify(&self) -> std::result::Result<VerifyReport, VerifyError> {
        let (dir, key, trust, roots) =
            (self.shared.dir.clone(), self.key.clone(), self.trust.clone(), self.root_keys.clone());
        let stop = self.durable_sequence();
        let validators = self.plugins.validators.clone();
        tokio::task::spawn_blocking(move || {
            verify_chain(&dir, &key, &trust, &roots, &validators, Some(stop), &mut |_| {})
        })
        .await
        .map_err(|error| VerifyError {
            sequence: None,
            segment: PathBuf::new(),
            offset: 0,
            reason: error.to_string(),
        })?
    }

    /// The chain's retention policy (WORM; `trust::retention`), as of the
    /// last accepted commit.
    pub fn retention_policy(&self) -> crate::trust::retention::RetentionPolicy {
        self.append.lock().trust.retention_policy().clone()
    }

    /// The retain-until date and legal hold of `key`, as of the last
    /// accepted commit.
    pub fn retention(&self, key: &PrimaryKey) -> crate::trust::retention::ObjectRetention {
        self.append.lock().trust.retention(key.as_u128())
    }

    /// The Merkle tree head over every durable event.
    pub fn tree_head(&self) -> Result<TreeHead> {
        let mut cache = self.proofs.lock();
        self.extend_proofs(&mut cache)?;
        Ok(TreeHead {
            chain_id: self.shared.chain_id,
            tree_size: cache.tree.len(),
            root: cache.tree.root(),
            timestamp_us: cache.last_timestamp_us,
        })
    }

    /// The event hash of `sequence` and its inclusion proof in the tree of
    /// `tree_size` events (a size from a tree head).
    pub fn inclusion_proof(&self, sequence: u64, tree_size: u64) -> Result<([u8; 32], InclusionProof)> {
        let mut cache = self.proofs.lock();
        self.extend_proofs(&mut cache)?;
        let proof = cache.tree.inclusion_proof(sequence, tree_size)?;
        let index = sequence.checked_sub(cache.tree.pruned_size()).ok_or(self.dropped(sequence))?;
        Ok((cache.event_hashes[index as usize], proof))
    }

    /// Proof that the tree of `new_size` events extends the one of `old_size`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<ConsistencyProof> {
        let mut cache = self.proofs.lock();
        self.extend_proofs(&mut cache)?;
        Ok(cache.tree.consistency_proof(old_size, new_size)?)
    }

    /// Adds every durable event not yet in the proof tree, reading the
    /// segments from where the last call stopped.
    fn extend_proofs(&self, cache: &mut ProofCache) -> Result<()> {
        let durable = self.durable_sequence();
        while cache.tree.len() < durable {
            let Some(segment) = self.shared.segments.get(cache.segment) else { break };
            let offset = cache.offset.max(crate::format::SEGMENT_HEADER_LEN);
            match crate::format::decode_record(segment.bytes(), offset) {
                Ok(Some(record)) => {
                    let hash = record.event_hash();
                    cache.tree.push(&hash);
                    cache.event_hashes.push(hash);
                    cache.last_timestamp_us = cache.last_timestamp_us.max(record.header.timestamp_us());
                    cache.offset = record.next_offset;
                }
                Ok(None) => {
                    cache.segment += 1;
                    cache.offset = 0;
                }
                Err(error) => {
                    return Err(AteError::Corrupt {
                        chain: self.key.to_string(),
                        segment: self.shared.dir.clone(),
                        offset: offset as u64,
                        sequence: Some(cache.tree.len()),
                        reason: error.to_string(),
                    })
                }
            }
        }
        Ok(())
    }

    /// Takes `key` under a lease held by `token` unless a live lease holds
    /// it; returns the delivery count. On a replica the owner decides.
    pub async fn lease_acquire(&self, key: PrimaryKey, token: u64, lease: std::time::Duration) -> Result<Option<u32>> {
        match self.upstream() {
            Some((upstream, _)) => upstream.lease(key, token, lease).await,
            None => {
                let state = self.append.lock();
                Ok(self.lease_locally(&state, key, token, lease))
            }
        }
    }

    /// Only live objects can be leased, counting deletions still on their
    /// way to the disk: an item whose acknowledgement is being written must
    /// not be handed out again (and the lease table stays as small as the
    /// queues). Under the append lock: no deletion can be assigned between
    /// the check and the lease.
    fn lease_locally(
        &self,
        state: &AppendState,
        key: PrimaryKey,
        token: u64,
        lease: std::time::Duration,
    ) -> Option<u32> {
        self.is_live(state, key.as_u128()).then(|| self.leases.acquire(key.as_u128(), token, lease)).flatten()
    }

    /// Whether `key` exists, counting commits in flight (a deletion
    /// assigned but not yet durable makes it gone). The view alone answers
    /// for the rest: its record is not read.
    fn is_live(&self, state: &AppendState, key: u128) -> bool {
        match state.in_flight.get(&key) {
            Some(&(_, deleted)) => !deleted,
            None => self.shared.view.get(key).is_some(),
        }
    }

    /// Leases up to `max` of `candidates`, in order, under one `token`,
    /// skipping items that are gone or held by someone else: the leased keys
    /// and their delivery counts. On a replica, one request to the owner.
    pub async fn lease_acquire_many(
        &self,
        candidates: &[PrimaryKey],
        token: u64,
        lease: std::time::Duration,
        max: usize,
    ) -> Result<Vec<(PrimaryKey, u32)>> {
        match self.upstream() {
            Some((upstream, _)) => upstream.lease_many(candidates.to_vec(), token, lease, max).await,
            None => Ok(self.lease_acquire_many_where(candidates, token, lease, max, |_| true)),
        }
    }

    /// On the chain's owner, [`Chain::lease_acquire_many`] leasing only the
    /// live candidates that `accept` agrees to. `accept` is asked in order,
    /// only about candidates that are free and live, and each one it accepts
    /// is leased (up to `max`): an owner taking items for a remote consumer
    /// leaves alone what it would not send. It runs under the append lock,
    /// so it must be quick. A replica's own lease table is not the owner's:
    /// there this leases nothing.
    pub fn lease_acquire_many_where(
        &self,
        candidates: &[PrimaryKey],
        token: u64,
        lease: std::time::Duration,
        max: usize,
        accept: impl FnMut(&PrimaryKey) -> bool,
    ) -> Vec<(PrimaryKey, u32)> {
        let keys: Vec<u128> = candidates.iter().map(PrimaryKey::as_u128).collect();
        self.lease_on_owner(accept, |leases, is_live| leases.acquire_many(&keys, token, lease, max, is_live))
    }

    /// Runs `acquire` on the owner's lease table under the append lock,
    /// with a liveness check that also asks `accept`; a replica leases nothing.
    fn lease_on_owner(
        &self,
        mut accept: impl FnMut(&PrimaryKey) -> bool,
        acquire: impl FnOnce(&crate::messaging::Leases, &mut dyn FnMut(u128) -> bool) -> Vec<(u128, u32)>,
    ) -> Vec<(PrimaryKey, u32)> {
        if self.upstream().is_some() {
            return Vec::new();
        }
        let state = self.append.lock();
        let mut is_live = |key| self.is_live(&state, key) && accept(&PrimaryKey::from_u128(key));
        let leased = acquire(&self.leases, &mut is_live);
        leased.into_iter().map(|(key, deliveries)| (PrimaryKey::from_u128(key), deliveries)).collect()
    }

    /// Where a take of the queue whose items are the children of `items`
    /// may start looking: past the run of its oldest items that the last
    /// takes found held, while those leases last (0 on a replica).
    pub fn lease_scan_from(&self, items: &PrimaryKey) -> u64 {
        match self.upstream() {
            Some(_) => 0,
            None => self.leases.scan_from(items.as_u128()),
        }
    }

    /// [`Chain::lease_acquire_many`] of a page of a queue's items: the
    /// owner also notes how far the run of held items at the queue's start
    /// reaches ([`Chain::lease_scan_from`]).
    pub async fn lease_acquire_page(
        &self,
        page: &ItemPage,
        token: u64,
        lease: std::time::Duration,
        max: usize,
    ) -> Result<Vec<(PrimaryKey, u32)>> {
        match self.upstream() {
            Some((upstream, _)) => {
                let candidates = page.entries.iter().map(|&(_, key)| key).collect();
                upstream.lease_many(candidates, token, lease, max).await
            }
            None => Ok(self.lease_acquire_page_where(page, token, lease, max, |_| true)),
        }
    }

    /// [`Chain::lease_acquire_many_where`] of a page of a queue's items, as
    /// [`Chain::lease_acquire_page`] takes one.
    pub fn lease_acquire_page_where(
        &self,
        page: &ItemPage,
        token: u64,
        lease: std::time::Duration,
        max: usize,
        accept: impl FnMut(&PrimaryKey) -> bool,
    ) -> Vec<(PrimaryKey, u32)> {
        self.lease_on_owner(accept, |leases, is_live| leases.acquire_page(page, token, lease, max, is_live))
    }

    /// [`Chain::lease_holds`] for many leases; on a replica, one request.
    pub async fn lease_holds_many(&self, leases: &[(PrimaryKey, u64)]) -> Result<Vec<bool>> {
        match self.upstream() {
            Some((upstream, _)) => upstream.lease_holds_many(leases.to_vec()).await,
            None => Ok(leases.iter().map(|(key, token)| self.leases.holds(key.as_u128(), *token)).collect()),
        }
    }

    /// Whether `token` still holds the lease on `key`.
    pub async fn lease_holds(&self, key: PrimaryKey, token: u64) -> Result<bool> {
        match self.upstream() {
            Some((upstream, _)) => upstream.lease_holds(key, token).await,
            None => Ok(self.leases.holds(key.as_u128(), token)),
        }
    }

    /// Gives the lease on `key` back if `token` holds it (`forget`: and its
    /// delivery count, once the item is gone); whether it did.
    pub async fn lease_release(&self, key: PrimaryKey, token: u64, forget: bool) -> Result<bool> {
        match self.upstream() {
            Some((upstream, _)) => upstream.lease_release(key, token, forget).await,
            None if forget => Ok(self.leases.forget(key.as_u128(), token)),
            None => Ok(self.leases.release(key.as_u128(), token)),
        }
    }

    /// The durable frontier (sequence after the last durable event), to
    /// wait for it to move: every commit moves it, system events included.
    pub fn durable_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.durable_notify.subscribe()
    }

    /// A reading position at `sequence` (the first durable event at or
    /// after it): the commit index gives the first record of the commit
    /// that holds it (O(log commits)); the rest is a scan within that commit.
    /// Before the log's first sequence (segments were dropped) it starts there.
    pub(crate) fn cursor_at(&self, sequence: u64) -> Result<LogCursor> {
        let log_first = self.first_sequence();
        let start = {
            let ends = self.shared.commit_ends.read();
            let index = ends.partition_point(|(end, _)| *end < sequence).min(ends.len().saturating_sub(1));
            self.commit_at(&ends, index).map(|(first_sequence, _, first_record)| (first_record, first_sequence))
        };
        let mut cursor = match start {
            Some((location, first_sequence)) => LogCursor {
                segment: location.segment(),
                offset: location.offset() as usize,
                next_sequence: first_sequence,
            },
            None => LogCursor { segment: 0, offset: crate::format::SEGMENT_HEADER_LEN, next_sequence: log_first },
        };
        while cursor.next_sequence < sequence {
            if self.read_at(&mut cursor)?.is_none() {
                break;
            }
        }
        Ok(cursor)
    }

    /// First and last sequence of the durable commit that holds `sequence`,
    /// and where its first record is.
    pub(crate) fn commit_bounds(&self, sequence: u64) -> Option<(u64, u64, crate::view::EventLocation)> {
        if sequence < self.first_sequence() {
            return None;
        }
        let ends = self.shared.commit_ends.read();
        self.commit_at(&ends, ends.partition_point(|(end, _)| *end < sequence))
    }

    /// First and last sequence, and first record, of entry `index` of the
    /// commit index (the first commit starts at the log's first sequence).
    fn commit_at(
        &self,
        ends: &[(u64, crate::view::EventLocation)],
        index: usize,
    ) -> Option<(u64, u64, crate::view::EventLocation)> {
        let &(last, location) = ends.get(index)?;
        let first = if index == 0 { self.first_sequence() } else { ends[index - 1].0 + 1 };
        Some((first, last, location))
    }

    /// The first sequence the log holds: 0 unless old segments were dropped
    /// ([`Chain::drop_segments`]) and the chain reopened since.
    pub fn first_sequence(&self) -> u64 {
        self.shared.first_sequence.load(std::sync::atomic::Ordering::Acquire)
    }

    fn dropped(&self, sequence: u64) -> AteError {
        AteError::HistoryDropped { chain: self.key.to_string(), sequence, first_sequence: self.first_sequence() }
    }

    /// Errors: [`AteError::HistoryDropped`] if `sequence` is before the log's
    /// first sequence (its segment was dropped).
    pub fn ensure_held(&self, sequence: u64) -> Result<()> {
        if sequence < self.first_sequence() {
            return Err(self.dropped(sequence));
        }
        Ok(())
    }

    /// A public signing key published in this chain.
    pub(crate) fn published_key(&self, id: &crate::crypto::KeyId) -> Option<crate::crypto::PublicSignKey> {
        self.shared.keys.public_keys.get(id).map(|key| key.clone())
    }

    /// Whether the commit holding event `sequence` entered the log while
    /// this chain was open, and so was checked on its way in: appended
    /// (`assign` validates signatures and authority under the append lock)
    /// or ingested from the owner (`check_commit`, as `ate verify` would).
    /// Only what was recovered from disk still needs [`Chain::verify_event`]
    /// on load. Recovery keeps whole commits only, so no commit straddles
    /// the boundary. Arrival checks judge an unsigned write by the rule at
    /// its time, as `ate verify` does; `verify_event` can only judge it by
    /// today's rule, so an unsigned write to an object locked later loads
    /// while the chain stays open and is refused after a reopen.
    pub(crate) fn checked_on_arrival(&self, sequence: u64) -> bool {
        sequence >= self.checked_from
    }

    /// Checks that the commit holding event `sequence` is authentic, from the
    /// stored bytes: its checksums, and its signatures over the Merkle root
    /// of its events by keys published in the chain (or configured as root
    /// keys). An unsigned commit passes only if the object may, today, be
    /// written by anyone. Each commit recovered from disk is verified once,
    /// then remembered; one that arrived while the chain is open is verified
    /// at every call, never remembered, so the memory stays bounded by the
    /// log as it was opened.
    pub fn verify_event(&self, sequence: u64) -> Result<()> {
        let Some((first, last, location)) = self.commit_bounds(sequence) else {
            return Err(AteError::InvalidInput(format!("no durable event {sequence}")));
        };
        if self.verified_commits.contains(&last) {
            return Ok(());
        }
        let unverified = |reason: String| AteError::Unverified { sequence, reason };
        let mut cursor =
            LogCursor { segment: location.segment(), offset: location.offset() as usize, next_sequence: first };
        let mut events = Vec::with_capacity((last - first + 1) as usize);
        while cursor.next_sequence <= last {
            // Bounded by the commit index, not the durable frontier: an
            // object can be in the view (and so be loaded and verified)
            // a moment before the frontier passes it.
            let event =
                self.read_before(&mut cursor, last + 1)?.ok_or_else(|| unverified("commit ends early".into()))?;
            let kind = event.header.kind().ok_or_else(|| unverified("unknown event kind".into()))?;
            events.push((kind, EventContent::of_archived(event.header).hash(), event.payload, event.header));
        }
        if events.first().map(|(_, _, _, header)| header.sequence()) != Some(first) {
            return Err(unverified("commit index does not match the log".into()));
        }
        let signed: Vec<SignedEvent<'_>> = events
            .iter()
            .map(|(kind, content_hash, payload, _)| SignedEvent { kind: *kind, content_hash: *content_hash, payload })
            .collect();
        let keys = &self.shared.keys.public_keys;
        let signers =
            verify_commit_signatures(&self.shared.chain_id, &signed, |id| keys.get(id).map(|key| key.clone()))
                .map_err(|(index, reason)| unverified(format!("event {}: {reason}", first + index as u64)))?;
        if signers.root.is_none() {
            let (_, _, _, header) = events[(sequence - first) as usize];
            let key = u128::from_le_bytes(header.key);
            let parent = header.parent().map(u128::from_le_bytes);
            let rule = self.with_trust(|state, config| state.write_rule(config, &StagedTrust::default(), key, parent));
            if rule != crate::trust::WriteRule::Everyone {
                return Err(unverified("unsigned commit for an object that needs a signature".into()));
            }
        }
        if !self.checked_on_arrival(first) {
            self.verified_commits.insert(last);
        }
        Ok(())
    }

    /// The stored record (frame, header, payload: the on-disk bytes) of the
    /// latest version of `key`, for shipping to replicas unchanged.
    pub fn record_bytes(&self, key: &PrimaryKey) -> Option<&[u8]> {
        let location = self.shared.view.get(key.as_u128())?;
        let bytes = self.shared.segments.get(location.segment())?.bytes();
        let offset = location.offset() as usize;
        // In the view, so durable: checksummed when written or recovered
        // (as for `read_before`). Whoever receives these bytes decodes and
        // checks them again (a replica, a queue consumer without one).
        let record = crate::format::decode_validated_record(bytes, offset).ok()??;
        Some(&bytes[offset..record.next_offset])
    }

    /// Stored records from sequence `from` onwards (durable only), at most
    /// about `max_bytes`, concatenated as on disk; and the next sequence.
    /// Errors: [`AteError::HistoryDropped`] if `from` is before the log's first sequence.
    pub fn read_records(&self, from: u64, max_bytes: usize) -> Result<(Vec<u8>, u64)> {
        let (records, next) = self.stored_records(from, max_bytes)?;
        let mut out = Vec::with_capacity(records.len());
        for run in records.runs() {
            out.extend_from_slice(run);
        }
        Ok((out, next))
    }

    /// [`Chain::read_records`] without the copy: where the records lie in
    /// the segments, to be copied once by whoever sends them.
    pub fn stored_records(&self, from: u64, max_bytes: usize) -> Result<(StoredRecords, u64)> {
        self.ensure_held(from)?;
        let mut cursor = self.cursor_at(from)?;
        let mut records = StoredRecords { shared: Arc::clone(&self.shared), runs: Vec::new(), len: 0 };
        while records.len < max_bytes {
            let Some(event) = self.read_at(&mut cursor)? else { break };
            // The cursor now sits right after this record, in the same segment.
            let (segment, start) = (event.location.segment(), event.location.offset() as usize);
            records.len += cursor.offset - start;
            match records.runs.last_mut() {
                Some((last_segment, run)) if *last_segment == segment && run.end == start => run.end = cursor.offset,
                _ => records.runs.push((segment, start..cursor.offset)),
            }
        }
        Ok((records, cursor.next_sequence))
    }

    /// The next durable event at `cursor`, checksum verified; `None` at the
    /// durable frontier.
    pub(crate) fn read_at(&self, cursor: &mut LogCursor) -> Result<Option<crate::EventRef<'_>>> {
        self.read_before(cursor, self.durable_sequence())
    }

    /// [`Chain::read_at`] up to `frontier` (exclusive), which the caller
    /// knows to be durable: the commit index holds only durable commits, and
    /// the writer extends it before it moves the durable frontier.
    fn read_before(&self, cursor: &mut LogCursor, frontier: u64) -> Result<Option<crate::EventRef<'_>>> {
        loop {
            if cursor.next_sequence >= frontier {
                return Ok(None);
            }
            let Some(segment) = self.shared.segments.get(cursor.segment) else { return Ok(None) };
            // Below the frontier: checksummed when written or recovered.
            match crate::format::decode_validated_record(segment.bytes(), cursor.offset) {
                Ok(Some(record)) => {
                    let location = crate::view::EventLocation::new(cursor.segment, cursor.offset as u32);
                    cursor.offset = record.next_offset;
                    cursor.next_sequence = record.sequence() + 1;
                    let compacted = record.compacted;
                    return Ok(Some(crate::EventRef {
                        header: record.header,
                        payload: record.payload,
                        location,
                        compacted,
                    }));
                }
                Ok(None) => {
                    cursor.segment += 1;
                    cursor.offset = crate::format::SEGMENT_HEADER_LEN;
                }
                Err(error) => {
                    return Err(AteError::Corrupt {
                        chain: self.key.to_string(),
                        segment: self.shared.dir.clone(),
                        offset: cursor.offset as u64,
                        sequence: Some(cursor.next_sequence),
                        reason: error.to_string(),
                    })
                }
            }
        }
    }

    /// Runs `query` against the trust state as of the last assigned commit.
    pub(crate) fn with_trust<R>(&self, query: impl FnOnce(&TrustState, &TrustConfig) -> R) -> R {
        let state = self.append.lock();
        query(&state.trust, &self.trust)
    }

    pub(crate) fn plugins(&self) -> &Plugins {
        &self.plugins
    }

    pub(crate) fn trust_config(&self) -> &TrustConfig {
        &self.trust
    }

    pub(crate) fn server_key(&self) -> Option<&PrivateSignKey> {
        self.server_key.as_ref()
    }

    pub(crate) fn chain_id(&self) -> &[u8; 32] {
        &self.shared.chain_id
    }

    pub(crate) fn knows_public_key(&self, id: &KeyId) -> bool {
        self.shared.keys.public_keys.contains_key(id)
    }

    /// Every wrap of node key `id` published in this chain.
    pub(crate) fn node_key_wraps(&self, id: &KeyId) -> Vec<NodeKeyWrap> {
        self.shared.keys.node_keys.get(id).map(|wraps| wraps.clone()).unwrap_or_default()
    }

    fn check_expectation(&self, state: &AppendState, event: &NewEvent) -> Result<()> {
        if event.expect == Expect::Any {
            return Ok(());
        }
        let current = match state.in_flight.get(&event.key.as_u128()) {
            Some((_, true)) => None,
            Some((sequence, false)) => Some(*sequence),
            None => self.version(&event.key),
        };
        let holds = match event.expect {
            Expect::Any => true,
            Expect::Absent => current.is_none(),
            Expect::Version(version) => current == Some(version),
        };
        if holds {
            Ok(())
        } else {
            Err(AteError::Conflict { key: event.key })
        }
    }
}

/// Where a batch of stored records lies ([`Chain::stored_records`]):
/// records follow each other within a segment, so a batch is one run of
/// bytes per segment it spans. Sealed segments never change while their
/// chain is open (compaction and log drops take effect on reopening), and
/// the batch keeps the chain's segments alive, so its runs stay valid.
pub struct StoredRecords {
    shared: Arc<ChainShared>,
    runs: Vec<(u32, std::ops::Range<usize>)>,
    len: usize,
}

impl std::fmt::Debug for StoredRecords {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("StoredRecords").field("runs", &self.runs).field("len", &self.len).finish()
    }
}

impl StoredRecords {
    /// Bytes in all.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The runs of bytes, in order; together they are the batch.
    pub fn runs(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.runs.iter().map(|(segment, run)| {
            &self.shared.segments.get(*segment).expect("records were read from it").bytes()[run.clone()]
        })
    }
}
