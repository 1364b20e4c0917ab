//! DIO: the typed, transactional data API (store / load / delete / commit).
//!
//! A `Dio` stages changes and commits them as one atomic, optimistic
//! transaction: every object it writes or deletes must still be at the
//! version this transaction saw (read, or wrote in an earlier commit), or
//! the whole commit fails with [`AteError::Conflict`]. Objects that were only
//! read are not re-validated (this is not serializable isolation).

use crate::chain::{Chain, Expect, NewEvent};
use crate::config::Durability;
use crate::crypto::{DataKey, KeyId, PrivateSignKey, ReadKey};
use crate::format::EventKind;
use crate::key::{CollectionId, PrimaryKey};
use crate::session::AteSession;
use crate::trust::events::{concat_fixed, payload_aad};
use crate::trust::retention::{RetentionChange, RetentionPolicy};
use crate::trust::{
    AuthorityRecord, EncryptedPayload, EventContent, IntegrityMode, NodeKeyWrap, ReadAuthority, ReadRule,
    SignedContents, StagedTrust, WriteAuthority, WriteRule,
};
use crate::{AteError, CommitReceipt, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

/// A typed object with its key. Dereferences to the value.
#[derive(Debug, Clone)]
pub struct Dao<T> {
    key: PrimaryKey,
    parent: Option<(PrimaryKey, CollectionId)>,
    value: T,
}

impl<T> Dao<T> {
    pub fn key(&self) -> &PrimaryKey {
        &self.key
    }
    pub fn parent(&self) -> Option<(PrimaryKey, CollectionId)> {
        self.parent
    }
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T> Deref for Dao<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for Dao<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

/// Where an object sits: its parent and the collection within it.
type Placement = (PrimaryKey, CollectionId);

#[derive(Debug)]
enum Staged {
    Put {
        payload: Vec<u8>,
        parent: Option<(PrimaryKey, CollectionId)>,
        expect: Expect,
        type_tag: u64,
    },
    Delete {
        expect: Expect,
        /// Where the object was, so collection subscribers see its removal.
        parent: Option<Placement>,
    },
    /// Stored and deleted again inside this transaction: nothing to write.
    Cancelled,
}

/// A transaction on one chain.
#[derive(Debug)]
pub struct Dio {
    chain: Arc<Chain>,
    session: AteSession,
    order: Vec<PrimaryKey>,
    staged: HashMap<PrimaryKey, Staged, FastHash>,
    /// Authority changes, written before the data of the same commit.
    authority: Vec<(PrimaryKey, Option<Placement>, AuthorityRecord)>,
    /// Node keys this transaction unwrapped or created, by id.
    node_keys: HashMap<KeyId, ReadKey, FastHash>,
    /// Check each loaded event's commit signatures (distributed integrity).
    verify_loads: bool,
    /// Versions this transaction observed: `Some(seq)` for a version it read
    /// or wrote, `None` for "known absent".
    versions: HashMap<PrimaryKey, Option<u64>, FastHash>,
    /// Retention changes (WORM), written after the data of the same commit.
    retention: Vec<NewEvent>,
}

use crate::FastHash;

/// postcard bytes of `value` in a buffer of their exact size: sized first,
/// where growing a buffer from empty reallocated and copied about ten times
/// for a 1 KiB value (15% of E2's allocations).
pub(crate) fn serialize<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let failed = |error: postcard::Error| AteError::Serialization(error.to_string());
    let len = postcard::experimental::serialized_size(value).map_err(failed)?;
    let bytes = postcard::to_extend(value, Vec::with_capacity(len)).map_err(failed)?;
    debug_assert_eq!(bytes.len(), len);
    Ok(bytes)
}

pub(crate) fn deserialize<T: DeserializeOwned>(key: PrimaryKey, payload: &[u8]) -> Result<T> {
    postcard::from_bytes(payload).map_err(|error| AteError::Deserialization { key, reason: error.to_string() })
}

impl Dio {
    pub(crate) fn new(chain: Arc<Chain>, session: AteSession) -> Self {
        Self {
            session,
            order: Vec::new(),
            staged: HashMap::default(),
            authority: Vec::new(),
            retention: Vec::new(),
            node_keys: HashMap::default(),
            verify_loads: chain.trust_config().integrity == IntegrityMode::Distributed,
            versions: HashMap::default(),
            chain,
        }
    }

    /// Whether loads verify the signatures of the commit they read from
    /// (on by default under distributed integrity; each commit recovered
    /// from disk is checked once per open chain, then remembered; commits
    /// appended or ingested since the chain opened were checked on arrival).
    pub fn set_verify_loads(&mut self, verify: bool) {
        self.verify_loads = verify;
    }

    pub fn chain(&self) -> &Arc<Chain> {
        &self.chain
    }

    pub fn session(&self) -> &AteSession {
        &self.session
    }

    fn stage(&mut self, key: PrimaryKey, staged: Staged) {
        if self.staged.insert(key, staged).is_none() {
            self.order.push(key);
        }
    }

    /// What a write of `key` must expect, from what this transaction saw.
    pub(crate) fn expectation(&self, key: &PrimaryKey) -> Expect {
        match self.versions.get(key) {
            Some(Some(version)) => Expect::Version(*version),
            Some(None) => Expect::Absent,
            None => Expect::Any,
        }
    }

    /// The version of `key` this transaction last loaded, if it loaded it.
    pub(crate) fn loaded_version(&self, key: &PrimaryKey) -> Option<u64> {
        self.versions.get(key).copied().flatten()
    }

    /// Stages a new object under a fresh random key.
    pub fn store<T: Serialize>(&mut self, value: T) -> Result<Dao<T>> {
        self.store_new(PrimaryKey::generate(), None, value)
    }

    /// Stages `value` under a chosen key (for example `PrimaryKey::from("config")`).
    /// If this transaction read the key, the commit requires that version.
    pub fn store_with_key<T: Serialize>(&mut self, key: PrimaryKey, value: T) -> Result<Dao<T>> {
        let payload = serialize(&value)?;
        let expect = self.expectation(&key);
        self.stage(key, Staged::Put { payload, parent: None, expect, type_tag: 0 });
        Ok(Dao { key, parent: None, value })
    }

    /// Stages a new child of `parent` in its default collection.
    pub fn store_child<T: Serialize>(&mut self, parent: &PrimaryKey, value: T) -> Result<Dao<T>> {
        self.store_child_in(parent, CollectionId::default(), value)
    }

    /// Stages a new child of `parent` in `collection`.
    pub fn store_child_in<T: Serialize>(
        &mut self,
        parent: &PrimaryKey,
        collection: CollectionId,
        value: T,
    ) -> Result<Dao<T>> {
        self.store_new(PrimaryKey::generate(), Some((*parent, collection)), value)
    }

    fn store_new<T: Serialize>(
        &mut self,
        key: PrimaryKey,
        parent: Option<(PrimaryKey, CollectionId)>,
        value: T,
    ) -> Result<Dao<T>> {
        self.store_tagged(key, parent, Expect::Absent, 0, value)
    }

    /// Stages `value` with a declared type tag (messaging: RPC requests and
    /// replies, consumer offsets, cache entries).
    pub(crate) fn store_tagged<T: Serialize>(
        &mut self,
        key: PrimaryKey,
        parent: Option<Placement>,
        expect: Expect,
        type_tag: u64,
        value: T,
    ) -> Result<Dao<T>> {
        let payload = serialize(&value)?;
        self.stage(key, Staged::Put { payload, parent, expect, type_tag });
        Ok(Dao { key, parent, value })
    }

    /// Stages the current value of `dao` as its next version.
    pub fn update<T: Serialize>(&mut self, dao: &Dao<T>) -> Result<()> {
        let payload = serialize(&dao.value)?;
        let (expect, type_tag) = match self.staged.get(&dao.key) {
            Some(Staged::Put { expect, type_tag, .. }) => (*expect, *type_tag),
            _ => (self.expectation(&dao.key), self.chain.get(&dao.key).map_or(0, |event| event.header.type_tag())),
        };
        self.stage(dao.key, Staged::Put { payload, parent: dao.parent, expect, type_tag });
        Ok(())
    }

    /// Stages a tombstone for `key` with an explicit expectation (the queue's
    /// acknowledgement: only the version that was delivered may be removed).
    pub(crate) fn delete_expecting(&mut self, key: PrimaryKey, expect: Expect, parent: Option<Placement>) {
        self.stage(key, Staged::Delete { expect, parent });
    }

    /// Stages already-serialized plaintext as a new child of `parent`.
    pub(crate) fn store_raw_child(&mut self, parent: &PrimaryKey, payload: Vec<u8>) -> PrimaryKey {
        let key = PrimaryKey::generate();
        let parent = Some((*parent, CollectionId::default()));
        self.stage(key, Staged::Put { payload, parent, expect: Expect::Absent, type_tag: 0 });
        key
    }

    /// Stages the deletion of `key`. Fails with `NotFound` if it does not exist.
    pub fn delete(&mut self, key: &PrimaryKey) -> Result<()> {
        match self.staged.get(key) {
            Some(Staged::Put { expect: Expect::Absent, .. }) => {
                self.staged.insert(*key, Staged::Cancelled);
                return Ok(());
            }
            Some(Staged::Delete { .. }) | Some(Staged::Cancelled) => return Err(AteError::NotFound { key: *key }),
            _ => {}
        }
        let Some(current) = self.chain.get(key) else { return Err(AteError::NotFound { key: *key }) };
        let parent =
            current.header.parent().map(|p| (PrimaryKey::from_bytes(p), CollectionId(current.header.collection())));
        let expect = match self.versions.get(key) {
            Some(Some(version)) => Expect::Version(*version),
            Some(None) => return Err(AteError::NotFound { key: *key }),
            None => Expect::Version(current.header.sequence()),
        };
        self.stage(*key, Staged::Delete { expect, parent });
        Ok(())
    }

    /// Loads an object: this transaction's staged value if any, otherwise
    /// the latest committed version.
    pub async fn load<T: DeserializeOwned>(&mut self, key: &PrimaryKey) -> Result<Dao<T>> {
        match self.staged.get(key) {
            Some(Staged::Put { payload, parent, .. }) => {
                return Ok(Dao { key: *key, parent: *parent, value: deserialize(*key, payload)? })
            }
            Some(_) => return Err(AteError::NotFound { key: *key }),
            None => {}
        }
        let chain = Arc::clone(&self.chain);
        let Some(event) = chain.get(key) else {
            self.versions.entry(*key).or_insert(None);
            return Err(AteError::NotFound { key: *key });
        };
        if event.header.kind() != Some(EventKind::Data) {
            return Err(AteError::WrongKind { key: *key, found: "non-data" });
        }
        let parent =
            event.header.parent().map(|p| (PrimaryKey::from_bytes(p), CollectionId(event.header.collection())));
        // A commit this process checked on its way in is not checked again
        // (and remembering each one would grow without bound).
        if self.verify_loads && !chain.checked_on_arrival(event.header.sequence()) {
            chain.verify_event(event.header.sequence())?;
        }
        let plaintext = self.open_payload_borrowed(*key, event.header, event.payload)?;
        let value = deserialize(*key, &plaintext)?;
        self.versions.insert(*key, Some(event.header.sequence()));
        Ok(Dao { key: *key, parent, value })
    }

    /// Whether `key` exists (staged changes included).
    pub fn exists(&self, key: &PrimaryKey) -> bool {
        match self.staged.get(key) {
            Some(Staged::Put { .. }) => true,
            Some(_) => false,
            None => self.chain.get(key).is_some(),
        }
    }

    /// Children of `parent` in its default collection, in creation order,
    /// followed by children staged in this transaction.
    pub async fn children<T: DeserializeOwned>(&mut self, parent: &PrimaryKey) -> Result<Vec<Dao<T>>> {
        self.children_in(parent, CollectionId::default()).await
    }

    pub async fn children_in<T: DeserializeOwned>(
        &mut self,
        parent: &PrimaryKey,
        collection: CollectionId,
    ) -> Result<Vec<Dao<T>>> {
        let mut keys = self.chain.children(parent, collection);
        let committed: std::collections::HashSet<PrimaryKey> = keys.iter().copied().collect();
        keys.extend(self.order.iter().filter(|key| {
            !committed.contains(key)
                && matches!(self.staged.get(key), Some(Staged::Put { parent: Some(p), .. }) if *p == (*parent, collection))
        }));
        let mut children = Vec::with_capacity(keys.len());
        for key in keys {
            match self.load(&key).await {
                Ok(dao) if dao.parent == Some((*parent, collection)) => children.push(dao),
                Ok(_) | Err(AteError::NotFound { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(children)
    }

    /// Whether anything is staged.
    pub fn has_uncommitted(&self) -> bool {
        !self.authority.is_empty() || self.staged.values().any(|staged| !matches!(staged, Staged::Cancelled))
    }

    /// Discards everything staged.
    pub fn cancel(&mut self) {
        self.staged.clear();
        self.order.clear();
        self.authority.clear();
        self.retention.clear();
    }

    /// Commits with the chain's default durability.
    pub async fn commit(&mut self) -> Result<()> {
        self.commit_with(None).await
    }

    /// Commits atomically. On error nothing is visible and the staged
    /// changes are kept (call [`Dio::cancel`] or reload and retry).
    ///
    /// This is where the chain of trust is applied: each change is checked
    /// against the write authority that governs it (the session must hold an
    /// allowed key), payloads under a read authority are encrypted, public
    /// keys are published on first use, and the commit is signed once per
    /// required key over the Merkle root of its events.
    pub async fn commit_with(&mut self, durability: Option<Durability>) -> Result<()> {
        let plan = self.plan()?;
        if plan.is_empty() {
            self.cancel();
            return Ok(());
        }
        let timestamp_us = crate::chain::now_us();
        let centralized = self.chain.trust_config().integrity == IntegrityMode::Centralized;
        let mut signing_keys: Vec<PrivateSignKey> = Vec::new();
        let mut events = Vec::with_capacity(plan.len() + 2);
        let mut nonces = CommitNonces::draw()?;
        // One per node key this commit seals payloads under (usually one).
        let mut data_keys: HashMap<KeyId, DataKey, FastHash> = HashMap::default();
        // Retention rules accept designated signers (governance bypass, legal
        // holds) beyond the write rule: sign with those this session holds.
        // Only deletions and retention changes need them (and the policy).
        if plan.iter().any(|step| matches!(step.event.kind, EventKind::Tombstone | EventKind::Retention)) {
            let policy = self.chain.retention_policy();
            for step in &plan {
                let designated: Vec<&KeyId> = match step.event.kind {
                    EventKind::Tombstone => policy.bypass_keys.iter().collect(),
                    EventKind::Retention => policy.bypass_keys.iter().chain(&policy.hold_keys).collect(),
                    _ => Vec::new(),
                };
                for key in self.session.write_keys().filter(|key| designated.contains(&&key.id())) {
                    if !signing_keys.iter().any(|known| known.id() == key.id()) {
                        signing_keys.push(key.clone());
                    }
                }
            }
        }
        for step in plan {
            if let WriteRule::AnyOf(allowed) = &*step.write_rule {
                let key = self
                    .session
                    .write_keys()
                    .find(|key| allowed.contains(&key.id()))
                    .ok_or(AteError::NoWriteAccess { key: step.event.key })?;
                if !signing_keys.iter().any(|known| known.id() == key.id()) {
                    signing_keys.push(key.clone());
                }
            } else if *step.write_rule == WriteRule::Nobody {
                return Err(AteError::Rejected {
                    index: events.len(),
                    key: step.event.key,
                    reason: crate::trust::RejectReason::Frozen,
                });
            }
            let mut event = step.event;
            let transformers = &self.chain.plugins().transformers;
            let sealed_under = match step.read_rule {
                ReadRule::NodeKey { node_key_id, .. } if event.kind == EventKind::Data => Some(node_key_id),
                _ => None,
            };
            // Encrypted from the staged plaintext unless it must change first.
            let from_staged = step.payload_staged && sealed_under.is_some() && transformers.is_empty();
            if step.payload_staged && !from_staged {
                event.payload = staged_payload(&self.staged, &event.key).to_vec();
            }
            if event.kind == EventKind::Data {
                for transformer in transformers {
                    event.payload = transformer.encode(std::mem::take(&mut event.payload))?;
                }
            }
            event.timestamp_us = timestamp_us;
            event.nonce = nonces.next()?;
            if let Some(node_key_id) = sealed_under {
                let node_key = node_key_in(&mut self.node_keys, &self.chain, &self.session, event.key, node_key_id)?;
                let data_key = match data_keys.entry(node_key_id) {
                    std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                    std::collections::hash_map::Entry::Vacant(entry) => entry.insert(DataKey::generate()?),
                };
                event.read_key_id = node_key_id.0;
                let content = event.content([0; 32], timestamp_us);
                let plaintext = if from_staged { staged_payload(&self.staged, &event.key) } else { &event.payload };
                event.payload = encrypt_payload(node_key, data_key, &content, plaintext)?;
            }
            events.push(event);
        }
        if centralized && !signing_keys.is_empty() {
            // The session proved it holds an authorised key; the chain's
            // server key vouches for the commit.
            let server = self
                .chain
                .server_key()
                .cloned()
                .ok_or_else(|| AteError::InvalidConfig("centralized integrity needs a server key".into()))?;
            signing_keys = vec![server];
        }
        let mut published = Vec::new();
        for key in &signing_keys {
            if !self.chain.knows_public_key(&key.id()) {
                let mut event = NewEvent::new(
                    PrimaryKey::from_bytes(key.id().0[..16].try_into().expect("16 bytes")),
                    EventKind::PublicKey,
                    key.public().encode(),
                );
                event.timestamp_us = timestamp_us;
                event.nonce = nonces.next()?;
                published.push(event);
            }
        }
        published.extend(events);
        let mut events = published;
        let mut payload_hashes: Vec<[u8; 32]> = Vec::new();
        let mut signed_contents = None;
        if !signing_keys.is_empty() {
            payload_hashes = NewEvent::payload_hashes(&events);
            let contents: Vec<EventContent> =
                events.iter().zip(&payload_hashes).map(|(event, hash)| event.content(*hash, timestamp_us)).collect();
            let content_hashes = EventContent::hashes(&contents);
            let root = crate::trust::events::commit_root(&content_hashes);
            for key in &signing_keys {
                let signature = crate::trust::sign_commit_root(self.chain.chain_id(), key, root, contents.len());
                let payload = postcard::to_stdvec(&signature).map_err(|e| AteError::Serialization(e.to_string()))?;
                let mut event = NewEvent::new(events[0].key, EventKind::Signature, payload);
                event.timestamp_us = timestamp_us;
                event.nonce = nonces.next()?;
                payload_hashes.push(blake3::hash(&event.payload).into());
                events.push(event);
            }
            signed_contents = Some(SignedContents { content_hashes, root });
        }
        let event_keys: Vec<(PrimaryKey, EventKind)> = events.iter().map(|event| (event.key, event.kind)).collect();
        let receipt = if let Some((upstream, scope)) = self.chain.upstream() {
            // A replica: the owner sequences it (see `CommitScope`).
            self.chain.forward(upstream, *scope, events, durability).await?
        } else if payload_hashes.is_empty() {
            Some(self.chain.append(events, durability).await?)
        } else {
            // Hashed once above, by this process: the chain need not hash again.
            Some(self.chain.append_hashed(events, payload_hashes, signed_contents, durability).await?)
        };
        self.remember_written(receipt, &event_keys);
        self.cancel();
        Ok(())
    }

    /// Versions of what this transaction wrote, for later optimistic checks.
    /// A commit's events got consecutive sequences from the receipt's first,
    /// so each key's version is its last event's: no view lookup (a cache
    /// miss each, and a later commit by someone else may already have moved
    /// the key on, which the next write must then detect, not adopt).
    fn remember_written(&mut self, receipt: Option<CommitReceipt>, event_keys: &[(PrimaryKey, EventKind)]) {
        let numbered = receipt.filter(|receipt| {
            receipt.last_sequence.checked_sub(receipt.first_sequence).map(|span| span + 1)
                == Some(event_keys.len() as u64)
        });
        if let Some(receipt) = numbered {
            // Newest first: the first Data or Tombstone met for a staged key
            // decides its version (a linter may have deleted what was put).
            for (index, (key, kind)) in event_keys.iter().enumerate().rev() {
                let version = match kind {
                    EventKind::Data => Some(receipt.first_sequence + index as u64),
                    EventKind::Tombstone => None,
                    _ => continue,
                };
                if let Some(staged) = self.staged.get_mut(key) {
                    if matches!(staged, Staged::Put { .. }) {
                        *staged = Staged::Cancelled;
                        self.versions.insert(*key, version);
                    }
                }
            }
        }
        // Deletions, and (without a numbered receipt, or if a linter dropped
        // a write) whatever the view holds now.
        for key in &self.order {
            let version = match self.staged[key] {
                Staged::Cancelled => continue,
                Staged::Delete { .. } => None,
                Staged::Put { .. } => self.chain.version(key),
            };
            self.versions.insert(*key, version);
        }
    }

    /// The plaintext of a stored data payload: decrypted with this
    /// session's keys if it is encrypted, then un-transformed.
    pub(crate) fn open_payload(
        &mut self,
        key: PrimaryKey,
        header: &crate::format::ArchivedEventHeader,
        payload: &[u8],
    ) -> Result<Vec<u8>> {
        let stored = if header.read_key_id == [0u8; 32] {
            payload.to_vec()
        } else {
            // Encrypted: the header names the node key the data key is sealed under.
            let content = EventContent::of_archived(header);
            let node_key_id = KeyId(header.read_key_id);
            let node_key = self.node_key(key, node_key_id)?;
            decrypt_payload(node_key, &content, payload).map_err(|_| AteError::NoReadAccess { key, node_key_id })?
        };
        if self.chain.plugins().transformers.is_empty() {
            Ok(stored)
        } else {
            self.untransform(stored)
        }
    }

    /// [`Dio::open_payload`] without a copy when there is nothing to undo:
    /// a plaintext payload on a chain without transformers is lent as stored.
    pub(crate) fn open_payload_borrowed<'a>(
        &mut self,
        key: PrimaryKey,
        header: &crate::format::ArchivedEventHeader,
        payload: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>> {
        if header.read_key_id == [0u8; 32] && self.chain.plugins().transformers.is_empty() {
            Ok(std::borrow::Cow::Borrowed(payload))
        } else {
            self.open_payload(key, header, payload).map(std::borrow::Cow::Owned)
        }
    }

    /// Undoes the chain's transformers, last first.
    fn untransform(&self, mut payload: Vec<u8>) -> Result<Vec<u8>> {
        for transformer in self.chain.plugins().transformers.iter().rev() {
            payload = transformer.decode(payload)?;
        }
        Ok(payload)
    }

    /// Resolves, under the chain's trust state plus this transaction's own
    /// changes, which rule governs each staged event.
    fn plan(&self) -> Result<Vec<PlannedEvent>> {
        let mut events: Vec<NewEvent> = Vec::new();
        for (key, parent, record) in &self.authority {
            let payload = postcard::to_stdvec(record).map_err(|e| AteError::Serialization(e.to_string()))?;
            let mut event = NewEvent::new(*key, EventKind::Authority, payload);
            event.parent = *parent;
            events.push(event);
        }
        // Without linters (which read and may rewrite payloads) a payload
        // stays staged until the commit needs it: one sealed under a node
        // key is encrypted straight from there, with no copy of its own.
        let linted = !self.chain.plugins().linters.is_empty();
        for key in &self.order {
            let event = match &self.staged[key] {
                Staged::Put { payload, parent, expect, type_tag } => NewEvent {
                    parent: *parent,
                    expect: *expect,
                    type_tag: *type_tag,
                    ..NewEvent::data(*key, if linted { payload.clone() } else { Vec::new() })
                },
                Staged::Delete { expect, parent } => {
                    NewEvent { expect: *expect, parent: *parent, ..NewEvent::tombstone(*key) }
                }
                Staged::Cancelled => continue,
            };
            events.push(event);
        }
        events.extend(self.retention.iter().cloned());
        // Linters see the plaintext commit, before rules are resolved and
        // payloads encrypted, so what they add is governed like the rest.
        for linter in &self.chain.plugins().linters {
            linter.lint(&mut events, &self.session)?;
        }
        let authority = &self.authority;
        Ok(self.chain.with_trust(|state, config| {
            let mut overlay = StagedTrust::for_commit(events.len());
            let mut previous: Option<Arc<WriteRule>> = None;
            events
                .into_iter()
                .map(|event| {
                    let key = event.key.as_u128();
                    let parent = event.parent.map(|(parent, _)| parent.as_u128());
                    let stage = match event.kind {
                        EventKind::Authority => Some(
                            authority.iter().find(|(k, _, _)| *k == event.key).map(|(_, _, record)| record.clone()),
                        ),
                        EventKind::Data => Some(None),
                        _ => None,
                    };
                    let (write_rule, read_rule) =
                        state.plan_event(config, &mut overlay, key, parent, stage, previous.as_ref());
                    previous = Some(Arc::clone(&write_rule));
                    let payload_staged = !linted && event.kind == EventKind::Data;
                    PlannedEvent { event, write_rule, read_rule, payload_staged }
                })
                .collect()
        }))
    }

    /// Retains `key` until `retain_until_us` (µs since the epoch): extends
    /// its retention; shortening needs governance mode and a bypass key in
    /// this session (`trust::retention`).
    pub fn set_retention(&mut self, key: &PrimaryKey, retain_until_us: u64) {
        let change = RetentionChange::Object { retain_until_us: Some(retain_until_us), legal_hold: None };
        self.retention.push(NewEvent::retention(*key, &change));
    }

    /// Places or lifts a legal hold on `key` (needs a hold key of the
    /// chain's policy in this session, when the policy names any).
    pub fn set_legal_hold(&mut self, key: &PrimaryKey, hold: bool) {
        let change = RetentionChange::Object { retain_until_us: None, legal_hold: Some(hold) };
        self.retention.push(NewEvent::retention(*key, &change));
    }

    /// Sets the chain's retention policy (it may only be tightened).
    pub fn set_retention_policy(&mut self, policy: RetentionPolicy) {
        self.retention.push(NewEvent::retention_policy(policy));
    }

    /// Sets who may write and read `key` (an existing object, or one staged
    /// in this transaction). Encrypted read access needs the read key in the
    /// session; the object's node key is kept if it has one (so children
    /// stay readable without being rewritten) or created.
    pub fn set_authority(&mut self, key: &PrimaryKey, write: WriteAuthority, read: ReadAuthority) -> Result<()> {
        let parent = match self.staged.get(key) {
            Some(Staged::Put { parent, .. }) => *parent,
            _ => self.chain.get(key).and_then(|event| {
                event.header.parent().map(|p| (PrimaryKey::from_bytes(p), CollectionId(event.header.collection())))
            }),
        };
        let staged_record = self.authority.iter().find(|(k, _, _)| k == key).map(|(_, _, record)| record.clone());
        let existing = match staged_record {
            Some(record) => Some(record),
            None => self.chain.with_trust(|state, _| state.own_record(&StagedTrust::default(), key.as_u128()).cloned()),
        };
        let old_read = existing.as_ref().map(|record| record.read.clone());
        // Every node key this object has used, unwrapped with the session's keys.
        let mut old_node_keys = Vec::new();
        if let Some(record) = &existing {
            for wrap in record.node_key.iter().chain(&record.previous_node_keys) {
                old_node_keys.push(self.node_key(*key, wrap.node_key_id())?.clone());
            }
        }
        let (node_key, previous_node_keys) = match &read {
            ReadAuthority::Specific(read_key_id) => {
                let read_key = self
                    .session
                    .read_key(read_key_id)
                    .cloned()
                    .ok_or(AteError::NoReadAccess { key: *key, node_key_id: *read_key_id })?;
                let same_reader = old_read.as_ref() == Some(&read);
                let current = match (old_node_keys.first(), same_reader) {
                    // Same read key (only write authority changes): keep the node key.
                    (Some(current), true) => current.clone(),
                    // New read key: a fresh node key, so holders of only the old read
                    // key cannot read what is written from now on.
                    _ => ReadKey::generate()?,
                };
                let previous = old_node_keys
                    .iter()
                    .filter(|old| old.id() != current.id())
                    .map(|old| seal_node_key(old, &read_key))
                    .collect::<Result<Vec<_>>>()?;
                let wrap = seal_node_key(&current, &read_key)?;
                self.node_keys.insert(current.id(), current);
                (Some(wrap), previous)
            }
            // Made public: publish every node key so what was written under them stays readable.
            ReadAuthority::Everyone => {
                let mut published = old_node_keys.iter().map(|old| NodeKeyWrap::Published { node_key: *old.secret() });
                (published.next(), published.collect())
            }
            ReadAuthority::Inherit => (None, Vec::new()),
        };
        self.authority.retain(|(k, _, _)| k != key);
        self.authority.push((*key, parent, AuthorityRecord { write, read, node_key, previous_node_keys }));
        Ok(())
    }

    /// Node key `id`, unwrapped with any read key of the session.
    /// Lent, not cloned: the key keeps its prepared cipher across events.
    fn node_key(&mut self, key: PrimaryKey, id: KeyId) -> Result<&ReadKey> {
        node_key_in(&mut self.node_keys, &self.chain, &self.session, key, id)
    }
}

/// [`Dio::node_key`] borrowing only the cache, so a commit can seal with
/// the key while it reads what is staged: one lookup per event.
fn node_key_in<'a>(
    node_keys: &'a mut HashMap<KeyId, ReadKey, FastHash>,
    chain: &Chain,
    session: &AteSession,
    key: PrimaryKey,
    id: KeyId,
) -> Result<&'a ReadKey> {
    match node_keys.entry(id) {
        std::collections::hash_map::Entry::Occupied(entry) => Ok(entry.into_mut()),
        std::collections::hash_map::Entry::Vacant(entry) => {
            let opened = chain
                .node_key_wraps(&id)
                .iter()
                .filter_map(|wrap| open_node_key(wrap, session))
                .find(|node_key| node_key.id() == id)
                .ok_or(AteError::NoReadAccess { key, node_key_id: id })?;
            Ok(entry.insert(opened))
        }
    }
}

/// One event of a commit with the rules that govern it.
struct PlannedEvent {
    event: NewEvent,
    /// Shared by neighbours under the same rule.
    write_rule: Arc<WriteRule>,
    read_rule: ReadRule,
    /// The payload is still the staged one (`event.payload` is empty).
    payload_staged: bool,
}

/// The payload staged for `key`, which [`Dio::plan`] planned as data.
fn staged_payload<'a>(staged: &'a HashMap<PrimaryKey, Staged, FastHash>, key: &PrimaryKey) -> &'a [u8] {
    match staged.get(key) {
        Some(Staged::Put { payload, .. }) => payload,
        _ => unreachable!("a data event is planned only from a staged put"),
    }
}

fn node_key_aad(node_key_id: &KeyId, read_key_id: &KeyId) -> Vec<u8> {
    let mut aad = b"ATE node key v1\0".to_vec();
    aad.extend_from_slice(node_key_id.as_bytes());
    aad.extend_from_slice(read_key_id.as_bytes());
    aad
}

fn seal_node_key(node_key: &ReadKey, read_key: &ReadKey) -> Result<NodeKeyWrap> {
    let (nonce, sealed) = read_key.encrypt(&node_key_aad(&node_key.id(), &read_key.id()), node_key.secret())?;
    Ok(NodeKeyWrap::Sealed { node_key_id: node_key.id(), read_key_id: read_key.id(), nonce, sealed })
}

fn open_node_key(wrap: &NodeKeyWrap, session: &AteSession) -> Option<ReadKey> {
    match wrap {
        NodeKeyWrap::Published { node_key } => Some(ReadKey::from_bytes(*node_key)),
        NodeKeyWrap::Sealed { node_key_id, read_key_id, nonce, sealed } => {
            let read_key = session.read_key(read_key_id)?;
            let plain =
                zeroize::Zeroizing::new(read_key.decrypt(nonce, &node_key_aad(node_key_id, read_key_id), sealed).ok()?);
            let bytes: [u8; 32] = plain.as_slice().try_into().ok()?;
            Some(ReadKey::from_bytes(bytes))
        }
    }
}

fn data_key_aad(content: &EventContent) -> [u8; 76] {
    concat_fixed(&[b"ATE data key v1\0", &content.read_key_id, &content.key, &content.nonce])
}

/// Nonces for the events of one commit: 8 random bytes drawn once per
/// commit, then a 4-byte counter. The payloads of a commit share its data
/// key (one per commit and node key), and the counter is what keeps their
/// GCM nonces distinct under it: by construction, not by chance.
struct CommitNonces {
    prefix: [u8; 8],
    next: u32,
}

impl CommitNonces {
    fn draw() -> Result<Self> {
        let mut prefix = [0u8; 8];
        crate::crypto::fill_random(&mut prefix)?;
        Ok(Self { prefix, next: 0 })
    }

    fn next(&mut self) -> Result<[u8; 12]> {
        let counter = self.next;
        self.next = counter
            .checked_add(1)
            .ok_or_else(|| AteError::InvalidInput("a commit holds at most 2^32 - 1 events".into()))?;
        Ok(concat_fixed(&[&self.prefix, &counter.to_le_bytes()]))
    }
}

/// AES-256-GCM under the commit's data key and the event's nonce (unique in
/// the commit), a copy of the data key sealed under the node key for this
/// event (its AAD names the event), so each envelope opens on its own.
fn encrypt_payload(
    node_key: &ReadKey,
    data_key: &DataKey,
    content: &EventContent,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let secret = data_key.secret();
    let mut envelope = EncryptedPayload::encode_head_sealing(
        secret.len() + crate::crypto::AEAD_TAG_LEN,
        plaintext.len() + crate::crypto::AEAD_TAG_LEN,
        |out| node_key.encrypt_append(&data_key_aad(content), secret, out),
    )?;
    let sealed_from = envelope.len();
    envelope.extend_from_slice(plaintext);
    data_key.seal_in_place(&content.nonce, &payload_aad(content), &mut envelope, sealed_from);
    Ok(envelope)
}

fn decrypt_payload(node_key: &ReadKey, content: &EventContent, stored: &[u8]) -> Result<Vec<u8>> {
    let envelope =
        EncryptedPayload::decode(stored).ok_or(AteError::Crypto(crate::crypto::CryptoError::DecryptionFailed))?;
    let data_key = zeroize::Zeroizing::new(node_key.decrypt(
        &envelope.wrap_nonce,
        &data_key_aad(content),
        &envelope.wrapped_data_key,
    )?);
    let data_key: [u8; 32] =
        data_key.as_slice().try_into().map_err(|_| AteError::Crypto(crate::crypto::CryptoError::DecryptionFailed))?;
    let data_key = ReadKey::from_bytes(data_key);
    Ok(crate::crypto::open(data_key.secret(), &content.nonce, &payload_aad(content), &envelope.ciphertext)?)
}
