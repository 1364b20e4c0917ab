//! The chain-of-trust state that validation needs: the authority tree, the
//! published public keys and a bounded anti-replay window. Pure logic: the
//! chain feeds it events (under its append lock, or during recovery) and
//! asks it whether a commit may be appended.

use super::authority::{AuthorityRecord, NodeKeyWrap, ReadAuthority, WriteAuthority};
use super::events::EventContent;
use super::{RejectReason, TrustConfig};
use crate::crypto::{KeyId, PublicSignKey};
use crate::format::EventKind;
use std::collections::{HashMap, HashSet, VecDeque};

/// Resolved write rule of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteRule {
    Everyone,
    Nobody,
    AnyOf(Vec<KeyId>),
}

/// Resolved read rule: plaintext, or encrypted under the node key of `node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadRule {
    Everyone,
    /// The object at `node` (itself or an ancestor) defines read access;
    /// `node_key_id` is the key its children's data keys are sealed under.
    NodeKey {
        node: u128,
        node_key_id: KeyId,
        read_key_id: KeyId,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    parent: Option<u128>,
    record: AuthorityRecord,
}

/// Longest parent chain followed; deeper (or cyclic) trees fall back to the
/// chain's root rule instead of looping.
const MAX_DEPTH: usize = 1024;

/// One event as validation sees it.
#[derive(Debug, Clone, Copy)]
pub struct EventView<'a> {
    pub kind: EventKind,
    pub key: u128,
    pub parent: Option<u128>,
    pub content: &'a EventContent,
    /// `content.hash()`, computed once by the caller.
    pub content_hash: [u8; 32],
    pub payload: &'a [u8],
    /// Part of a signed commit: its content hash is remembered so a replay
    /// is recognised (unsigned commits are stamped by the chain and cannot
    /// be replayed by a client).
    pub replay_protected: bool,
}

/// Changes a validated commit makes to the state, applied by [`TrustState::commit`].
#[derive(Debug, Default)]
pub struct StagedTrust {
    nodes: HashMap<u128, Node>,
    public_keys: Vec<PublicSignKey>,
    pub node_key_wraps: Vec<NodeKeyWrap>,
    /// (content hash, timestamp, position in the commit) of replay-protected events.
    content_hashes: Vec<([u8; 32], u64, u64)>,
    events_seen: u64,
}

impl StagedTrust {
    pub fn public_keys(&self) -> &[PublicSignKey] {
        &self.public_keys
    }
}

#[derive(Debug, Default)]
pub struct TrustState {
    nodes: HashMap<u128, Node>,
    public_keys: HashMap<KeyId, PublicSignKey>,
    /// Content hashes of recent events (within twice the timestamp skew), so
    /// a replayed commit is recognised while its timestamps are still valid.
    /// content hash → sequence it was written at.
    recent: HashMap<[u8; 32], u64>,
    recent_order: VecDeque<([u8; 32], u64)>,
}

impl TrustState {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn public_key(&self, id: &KeyId) -> Option<&PublicSignKey> {
        self.public_keys.get(id)
    }

    pub fn add_public_key(&mut self, key: PublicSignKey) {
        self.public_keys.insert(key.id(), key);
    }

    fn node<'a>(&'a self, staged: &'a StagedTrust, key: u128) -> Option<&'a Node> {
        staged.nodes.get(&key).or_else(|| self.nodes.get(&key))
    }

    fn root_rule(config: &TrustConfig) -> WriteRule {
        if config.root_keys.is_empty() {
            WriteRule::Everyone
        } else {
            WriteRule::AnyOf(config.root_keys.clone())
        }
    }

    /// The write rule governing `key` now (including `staged` changes). For
    /// an object that does not exist yet, the walk starts at `parent`.
    pub fn write_rule(&self, config: &TrustConfig, staged: &StagedTrust, key: u128, parent: Option<u128>) -> WriteRule {
        let mut current = Some(key);
        let mut fallback_parent = parent;
        for _ in 0..MAX_DEPTH {
            let Some(at) = current else { break };
            let Some(node) = self.node(staged, at) else {
                current = fallback_parent.take();
                continue;
            };
            match &node.record.write {
                WriteAuthority::Inherit => current = node.parent,
                WriteAuthority::Everyone => return WriteRule::Everyone,
                WriteAuthority::Nobody => return WriteRule::Nobody,
                WriteAuthority::Specific(keys) => return WriteRule::AnyOf(keys.clone()),
            }
        }
        Self::root_rule(config)
    }

    /// Records in `staged` that `key` has `parent` and, if given, `record`
    /// (what a Data or Authority event does), on top of the current state.
    pub fn stage(&self, staged: &mut StagedTrust, key: u128, parent: Option<u128>, record: Option<AuthorityRecord>) {
        let mut node = self.node(staged, key).cloned().unwrap_or_default();
        match record {
            Some(record) => {
                node.record = record;
                node.parent = node.parent.or(parent);
            }
            None => node.parent = parent,
        }
        staged.nodes.insert(key, node);
    }

    /// The read rule governing `key` (a new object: pass its parent chain
    /// through `parent`).
    pub fn read_rule(&self, staged: &StagedTrust, key: u128, parent: Option<u128>) -> ReadRule {
        let mut current = Some(key);
        let mut fallback_parent = parent;
        for _ in 0..MAX_DEPTH {
            let Some(at) = current else { break };
            let Some(node) = self.node(staged, at) else {
                // Unknown object (e.g. not created yet): continue at the given parent.
                current = fallback_parent.take();
                continue;
            };
            match &node.record.read {
                ReadAuthority::Inherit => current = node.parent,
                ReadAuthority::Everyone => return ReadRule::Everyone,
                ReadAuthority::Specific(read_key_id) => {
                    return match &node.record.node_key {
                        Some(wrap) => {
                            ReadRule::NodeKey { node: at, node_key_id: wrap.node_key_id(), read_key_id: *read_key_id }
                        }
                        None => ReadRule::Everyone,
                    }
                }
            }
        }
        ReadRule::Everyone
    }

    /// The node key currently recorded for `key` itself, if any.
    pub fn own_node_key<'a>(&'a self, staged: &'a StagedTrust, key: u128) -> Option<&'a NodeKeyWrap> {
        self.node(staged, key).and_then(|node| node.record.node_key.as_ref())
    }

    /// Checks one event of a commit against the rules (as changed by the
    /// events before it in the same commit) and stages its effect.
    /// `signers` holds the keys whose signatures over the commit verified.
    pub fn check_event(
        &self,
        config: &TrustConfig,
        staged: &mut StagedTrust,
        event: &EventView<'_>,
        signers: &HashSet<KeyId>,
    ) -> Result<(), RejectReason> {
        // Size and timestamp checks are plugins (crate::plugin), run by the chain.
        let timestamp = event.content.timestamp_us;
        let position = staged.events_seen;
        staged.events_seen += 1;
        if event.replay_protected {
            let content_hash = event.content_hash;
            if self.recent.contains_key(&content_hash)
                || staged.content_hashes.iter().any(|(hash, _, _)| *hash == content_hash)
            {
                return Err(RejectReason::Replay);
            }
            staged.content_hashes.push((content_hash, timestamp, position));
        }
        match event.kind {
            EventKind::PublicKey => {
                let key = PublicSignKey::decode(event.payload)
                    .map_err(|error| RejectReason::MalformedPayload(error.to_string()))?;
                staged.public_keys.push(key);
            }
            EventKind::Signature => {}
            EventKind::Data | EventKind::Tombstone | EventKind::Authority => {
                self.authorize(config, staged, event.key, event.parent, signers)?;
                match event.kind {
                    EventKind::Data => {
                        let current = self.node(staged, event.key).map(|node| node.parent);
                        if (current.is_some() || event.parent.is_some()) && current != Some(event.parent) {
                            self.stage(staged, event.key, event.parent, None);
                        }
                    }
                    EventKind::Authority => {
                        let record: AuthorityRecord = postcard::from_bytes(event.payload)
                            .map_err(|error| RejectReason::MalformedPayload(error.to_string()))?;
                        if let (ReadAuthority::Specific(_), None) = (&record.read, &record.node_key) {
                            return Err(RejectReason::MalformedPayload(
                                "encrypted read authority without a node key".into(),
                            ));
                        }
                        if let Some(wrap) = &record.node_key {
                            staged.node_key_wraps.push(wrap.clone());
                        }
                        self.stage(staged, event.key, event.parent, Some(record));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn authorize(
        &self,
        config: &TrustConfig,
        staged: &StagedTrust,
        key: u128,
        parent: Option<u128>,
        signers: &HashSet<KeyId>,
    ) -> Result<(), RejectReason> {
        // A commit the chain's own server key signed was authorised by the
        // server (centralized integrity): it checked the session's keys.
        if let Some(server) = &config.server_key_id {
            if signers.contains(server) {
                return Ok(());
            }
        }
        match self.write_rule(config, staged, key, parent) {
            WriteRule::Everyone => Ok(()),
            WriteRule::Nobody => Err(RejectReason::Frozen),
            WriteRule::AnyOf(allowed) => {
                if allowed.iter().any(|key| signers.contains(key)) {
                    Ok(())
                } else {
                    Err(RejectReason::Unauthorized { allowed, signed_by: signers.iter().copied().collect() })
                }
            }
        }
    }

    /// If every event of a commit was already written (a client retrying a
    /// commit whose acknowledgement it lost), the sequences they got.
    pub fn replayed_commit(&self, content_hashes: &[[u8; 32]]) -> Option<(u64, u64)> {
        let mut sequences = content_hashes.iter().map(|hash| self.recent.get(hash).copied());
        let first = sequences.next()??;
        let mut last = first;
        for sequence in sequences {
            last = sequence?;
        }
        Some((first, last))
    }

    /// Applies a validated commit whose first event got `first_sequence`.
    pub fn commit(&mut self, staged: StagedTrust, config: &TrustConfig, now_us: u64, first_sequence: u64) {
        self.nodes.extend(staged.nodes);
        for key in staged.public_keys {
            self.add_public_key(key);
        }
        for (hash, timestamp, position) in staged.content_hashes {
            if self.recent.insert(hash, first_sequence + position).is_none() {
                self.recent_order.push_back((hash, timestamp));
            }
        }
        // Forget what can no longer be replayed: its timestamp is out of range.
        let horizon = now_us.saturating_sub(2 * config.timestamp_skew_us);
        while self.recent_order.front().is_some_and(|(_, timestamp)| *timestamp < horizon) {
            let (hash, _) = self.recent_order.pop_front().expect("non-empty");
            self.recent.remove(&hash);
        }
    }

    /// Replays a stored event during recovery: no signature checks (they
    /// were made before it was written; `verify` re-checks everything).
    pub fn apply_recovered(
        &mut self,
        event: &EventView<'_>,
        sequence: u64,
        config: &TrustConfig,
        now_us: u64,
    ) -> Option<NodeKeyWrap> {
        let mut wrap = None;
        match event.kind {
            EventKind::PublicKey => {
                if let Ok(key) = PublicSignKey::decode(event.payload) {
                    self.add_public_key(key);
                }
            }
            EventKind::Data => {
                if let Some(parent) = event.parent {
                    self.nodes.entry(event.key).or_default().parent = Some(parent);
                } else if let Some(node) = self.nodes.get_mut(&event.key) {
                    node.parent = None;
                }
            }
            EventKind::Authority => {
                if let Ok(record) = postcard::from_bytes::<AuthorityRecord>(event.payload) {
                    wrap = record.node_key.clone();
                    let node = self.nodes.entry(event.key).or_default();
                    node.record = record;
                    if node.parent.is_none() {
                        node.parent = event.parent;
                    }
                }
            }
            _ => {}
        }
        let timestamp = event.content.timestamp_us;
        if event.replay_protected && timestamp + 2 * config.timestamp_skew_us >= now_us {
            let hash = event.content_hash;
            if self.recent.insert(hash, sequence).is_none() {
                self.recent_order.push_back((hash, timestamp));
            }
        }
        wrap
    }
}
