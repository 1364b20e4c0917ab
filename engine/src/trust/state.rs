//! The chain-of-trust state that validation needs: the authority tree, the
//! published public keys and a bounded anti-replay window. Pure logic: the
//! chain feeds it events (under its append lock, or during recovery) and
//! asks it whether a commit may be appended.

use super::authority::{AuthorityRecord, NodeKeyWrap, ReadAuthority, WriteAuthority};
use super::events::EventContent;
use super::retention::{self, ObjectRetention, RetentionChange, RetentionPolicy};
use super::Signers;
use super::{RejectReason, TrustConfig};
use crate::crypto::{KeyId, PublicSignKey};
use crate::format::{ArchivedEventHeader, EventKind};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::FastHash;

/// Resolved write rule of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteRule {
    Everyone,
    Nobody,
    AnyOf(Vec<KeyId>),
}

/// [`WriteRule`] borrowed from the trust state: checking an event's
/// authority allocates nothing (a copy of the allowed keys per event was
/// one allocation in seven on E2's ingest path, under the append lock).
#[derive(Debug, Clone, Copy)]
enum WriteRuleRef<'a> {
    Everyone,
    Nobody,
    AnyOf(&'a [KeyId]),
}

impl WriteRuleRef<'_> {
    fn is(self, owned: &WriteRule) -> bool {
        match (self, owned) {
            (Self::Everyone, WriteRule::Everyone) | (Self::Nobody, WriteRule::Nobody) => true,
            (Self::AnyOf(keys), WriteRule::AnyOf(owned)) => keys == owned.as_slice(),
            _ => false,
        }
    }

    fn to_owned(self) -> WriteRule {
        match self {
            Self::Everyone => WriteRule::Everyone,
            Self::Nobody => WriteRule::Nobody,
            Self::AnyOf(keys) => WriteRule::AnyOf(keys.to_vec()),
        }
    }
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
    /// Boxed: most nodes are plain children that only link to a parent, and
    /// an inline record would make every entry of a large map ~4× bigger.
    record: Option<Box<AuthorityRecord>>,
    retention: ObjectRetention,
}

/// What a node without an authority record of its own has.
static NO_RECORD: AuthorityRecord = AuthorityRecord {
    write: WriteAuthority::Inherit,
    read: ReadAuthority::Inherit,
    node_key: None,
    previous_node_keys: Vec::new(),
};

impl Node {
    /// Only a link to a parent: kept in the compact `parents` map.
    fn is_plain_link(&self) -> Option<u128> {
        match (self.parent, &self.record) {
            (Some(parent), None) if self.retention == ObjectRetention::default() => Some(parent),
            _ => None,
        }
    }
}

/// A node as lookups see it, wherever it is kept.
#[derive(Debug, Clone, Copy)]
struct NodeRef<'a> {
    parent: Option<u128>,
    record: Option<&'a AuthorityRecord>,
    retention: ObjectRetention,
}

impl<'a> NodeRef<'a> {
    fn of(node: &'a Node) -> Self {
        Self { parent: node.parent, record: node.record.as_deref(), retention: node.retention }
    }

    fn link(parent: u128) -> Self {
        Self { parent: Some(parent), record: None, retention: ObjectRetention::default() }
    }

    fn record(&self) -> &'a AuthorityRecord {
        self.record.unwrap_or(&NO_RECORD)
    }

    fn to_node(self) -> Node {
        Node {
            parent: self.parent,
            record: self.record.map(|record| Box::new(record.clone())),
            retention: self.retention,
        }
    }
}

/// An object written again (Data, Authority, an object's Retention) after
/// its tombstone in the same commit stays linked: `check_event` and
/// recovery cancel the deletion at the same events. Most commits delete
/// nothing: no hashing then.
fn cancel_deletion(deleted: &mut HashSet<u128, FastHash>, key: u128) {
    if !deleted.is_empty() {
        deleted.remove(&key);
    }
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
    pub payload: &'a [u8],
}

/// Changes a validated commit makes to the state, applied by [`TrustState::commit`].
#[derive(Debug, Default)]
pub struct StagedTrust {
    nodes: HashMap<u128, Node, FastHash>,
    public_keys: Vec<PublicSignKey>,
    pub node_key_wraps: Vec<NodeKeyWrap>,
    /// Merkle root and timestamp of a signed commit, remembered for anti-replay.
    commit_root: Option<([u8; 32], u64)>,
    /// A retention policy set by this commit.
    policy: Option<RetentionPolicy>,
    /// Objects this commit deletes (and does not write again after): their
    /// links go at commit if nothing links to them ([`TrustState::forget_deleted`]).
    deleted: HashSet<u128, FastHash>,
}

impl StagedTrust {
    /// Room for a commit of `events` events, each of which may stage a
    /// node: an overlay that starts empty rehashes its way up, every commit.
    pub fn for_commit(events: usize) -> Self {
        Self { nodes: HashMap::with_capacity_and_hasher(events, FastHash::default()), ..Self::default() }
    }

    /// Marks the commit being validated as the signed commit with this root.
    pub fn set_commit_root(&mut self, root: [u8; 32], timestamp_us: u64) {
        self.commit_root = Some((root, timestamp_us));
    }

    pub fn public_keys(&self) -> &[PublicSignKey] {
        &self.public_keys
    }
}

#[derive(Debug, Default)]
pub struct TrustState {
    /// Objects with an authority record or a retention of their own, and
    /// objects known to sit at the root.
    nodes: HashMap<u128, Node, FastHash>,
    /// Every other object that has a parent, as just the link: most objects
    /// are plain children, and 32-byte entries keep this map (one entry per
    /// live object under a parent) small to grow and to search. A key is in
    /// at most one of `nodes` and `parents`.
    parents: HashMap<u128, u128, FastHash>,
    /// How many entries of `nodes` and `parents` link to each key (keys
    /// with none are absent). A deleted object's link is dropped only when
    /// this is zero: its children still inherit their rules through it.
    children: HashMap<u128, u32, FastHash>,
    /// Recovery: objects the commit being replayed deleted, forgotten at its
    /// end as [`TrustState::commit`] forgets a validated commit's.
    recovered_deletions: HashSet<u128, FastHash>,
    public_keys: HashMap<KeyId, PublicSignKey>,
    /// Content hashes of recent events (within twice the timestamp skew), so
    /// a replayed commit is recognised while its timestamps are still valid.
    /// Merkle roots of recent signed commits → their (first, last) sequences.
    /// One entry per commit, kept for twice the timestamp skew: older signed
    /// commits are refused outright, so nothing older needs remembering.
    recent: HashMap<[u8; 32], (u64, u64), FastHash>,
    recent_order: VecDeque<([u8; 32], u64)>,
    policy: RetentionPolicy,
    /// The latest commit time seen (verification: the commits' own times),
    /// against which a signed commit must not be older than the replay window.
    latest_commit_us: u64,
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

    fn node<'a>(&'a self, staged: &'a StagedTrust, key: u128) -> Option<NodeRef<'a>> {
        if let Some(node) = staged.nodes.get(&key).or_else(|| self.nodes.get(&key)) {
            return Some(NodeRef::of(node));
        }
        self.parents.get(&key).map(|parent| NodeRef::link(*parent))
    }

    /// Takes `key`'s committed node out of whichever map holds it: recovery
    /// changes it and files it again with [`TrustState::put_node`], as
    /// `commit` files what validation staged.
    fn take_node(&mut self, key: u128) -> Option<Node> {
        let node = self
            .nodes
            .remove(&key)
            .or_else(|| self.parents.remove(&key).map(|parent| Node { parent: Some(parent), ..Node::default() }))?;
        self.unlink_child(node.parent);
        Some(node)
    }

    /// Files a node in whichever map fits it (what `commit` validated, what
    /// recovery replayed).
    fn put_node(&mut self, key: u128, node: Node) {
        let new_parent = node.parent;
        let (old_node, old_link) = match node.is_plain_link() {
            Some(parent) => {
                let old_node = if self.nodes.is_empty() { None } else { self.nodes.remove(&key) };
                (old_node, self.parents.insert(key, parent))
            }
            None => {
                let old_link = if self.parents.is_empty() { None } else { self.parents.remove(&key) };
                (self.nodes.insert(key, node), old_link)
            }
        };
        // `None`: the key had no entry; `Some(parent)`: the parent it had.
        let old_parent = old_node.map(|node| node.parent).or(old_link.map(Some));
        if old_parent != Some(new_parent) {
            self.unlink_child(old_parent.flatten());
            if let Some(parent) = new_parent {
                *self.children.entry(parent).or_insert(0) += 1;
            }
        }
    }

    fn unlink_child(&mut self, parent: Option<u128>) {
        let Some(parent) = parent else { return };
        if let std::collections::hash_map::Entry::Occupied(mut count) = self.children.entry(parent) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
    }

    /// A deleted object's link goes unless something still links to it, so
    /// that deleted objects (a queue's acknowledged items, say) do not
    /// accumulate. Only plain links go: authority records and retention stay.
    /// Later children of that key are then checked as those of any object
    /// without a link, against the chain's root rule, as after a log drop
    /// removed the object (docs/security.md, "Inheritance walk").
    ///
    /// `deleted`: what one commit deleted. Forgetting a child may free a
    /// parent deleted in the same commit, so the walk goes up from each
    /// leaf: the outcome does not depend on the set's order (recovery must
    /// reach validation's), and each link goes once.
    fn forget_deleted(&mut self, deleted: &HashSet<u128, FastHash>) {
        for &key in deleted {
            let mut at = key;
            while !self.children.contains_key(&at) {
                let Some(parent) = self.parents.remove(&at) else { break };
                self.unlink_child(Some(parent));
                if !deleted.contains(&parent) {
                    break;
                }
                at = parent;
            }
        }
    }

    /// Entries the authority tree holds (links and nodes): what the state
    /// costs in memory grows with this.
    pub fn tree_entries(&self) -> usize {
        self.nodes.len() + self.parents.len()
    }

    /// The chain's retention policy (as of the last validated commit).
    pub fn retention_policy(&self) -> &RetentionPolicy {
        &self.policy
    }

    /// The retention of `key` (as of the last validated commit).
    pub fn retention(&self, key: u128) -> ObjectRetention {
        self.nodes.get(&key).map(|node| node.retention).unwrap_or_default()
    }

    fn staged_policy<'a>(&'a self, staged: &'a StagedTrust) -> &'a RetentionPolicy {
        staged.policy.as_ref().unwrap_or(&self.policy)
    }

    /// The retention of `key` including `staged` changes.
    fn staged_retention(&self, staged: &StagedTrust, key: u128) -> ObjectRetention {
        self.node(staged, key).map(|node| node.retention).unwrap_or_default()
    }

    fn stage_retention(&self, staged: &mut StagedTrust, key: u128, parent: Option<u128>, retention: ObjectRetention) {
        if self.staged_retention(staged, key) == retention {
            return;
        }
        let mut node = self.node(staged, key).map(NodeRef::to_node).unwrap_or(Node { parent, ..Node::default() });
        node.retention = retention;
        staged.nodes.insert(key, node);
    }

    /// Applies a `Retention` event: checks it against the policy and stages it.
    fn check_retention(
        &self,
        staged: &mut StagedTrust,
        event: &EventView<'_>,
        signers: &Signers,
    ) -> Result<(), RejectReason> {
        let change: RetentionChange =
            postcard::from_bytes(event.payload).map_err(|error| RejectReason::MalformedPayload(error.to_string()))?;
        let on_policy_object = event.key == u128::from_le_bytes(*retention::policy_key().as_bytes());
        match change {
            RetentionChange::Policy(next) if on_policy_object => {
                retention::check_policy_change(self.staged_policy(staged), &next)?;
                staged.policy = Some(next);
            }
            RetentionChange::Object { retain_until_us, legal_hold } if !on_policy_object => {
                cancel_deletion(&mut staged.deleted, event.key);
                let current = self.staged_retention(staged, event.key);
                let policy = self.staged_policy(staged);
                let next = retention::apply_object_change(policy, current, retain_until_us, legal_hold, signers)?;
                self.stage_retention(staged, event.key, event.parent, next);
            }
            _ => return Err(retention::RetentionViolation::WrongObject.into()),
        }
        Ok(())
    }

    fn root_rule(config: &TrustConfig) -> WriteRuleRef<'_> {
        if config.root_keys.is_empty() {
            WriteRuleRef::Everyone
        } else {
            WriteRuleRef::AnyOf(&config.root_keys)
        }
    }

    /// The write rule governing `key` now (including `staged` changes). For
    /// an object that does not exist yet, the walk starts at `parent`.
    pub fn write_rule(&self, config: &TrustConfig, staged: &StagedTrust, key: u128, parent: Option<u128>) -> WriteRule {
        self.write_rule_from(config, staged, key, None, parent).to_owned()
    }

    fn write_rule_from<'a>(
        &'a self,
        config: &'a TrustConfig,
        staged: &'a StagedTrust,
        key: u128,
        known: Option<Option<NodeRef<'a>>>,
        parent: Option<u128>,
    ) -> WriteRuleRef<'a> {
        self.walk_from(staged, key, known, parent, |_, node| match &node.record().write {
            WriteAuthority::Inherit => None,
            WriteAuthority::Everyone => Some(WriteRuleRef::Everyone),
            WriteAuthority::Nobody => Some(WriteRuleRef::Nobody),
            WriteAuthority::Specific(keys) => Some(WriteRuleRef::AnyOf(keys)),
        })
        .unwrap_or_else(|| Self::root_rule(config))
    }

    /// Walks from `key` up its parents until `decide` returns a rule. An
    /// object with no entry yet (a new object) continues at `parent`, once.
    /// `None` when the walk runs out (a root) or exceeds `MAX_DEPTH` (a cycle).
    /// `known`: the caller already looked `key` up (a new object's lookup
    /// misses in the largest map, so each one saved is a cache miss saved
    /// per event); `None` looks it up here.
    fn walk_from<'a, R>(
        &'a self,
        staged: &'a StagedTrust,
        key: u128,
        mut known: Option<Option<NodeRef<'a>>>,
        parent: Option<u128>,
        decide: impl Fn(u128, NodeRef<'a>) -> Option<R>,
    ) -> Option<R> {
        let mut current = Some(key);
        let mut fallback_parent = parent;
        for _ in 0..MAX_DEPTH {
            let at = current?;
            let found = match known.take() {
                Some(node) => node,
                None => self.node(staged, at),
            };
            let Some(node) = found else {
                current = fallback_parent.take();
                continue;
            };
            if let Some(rule) = decide(at, node) {
                return Some(rule);
            }
            current = node.parent;
        }
        None
    }

    /// Records in `staged` that `key` has `parent` and, if given, `record`
    /// (what a Data or Authority event does), on top of the current state.
    pub fn stage(&self, staged: &mut StagedTrust, key: u128, parent: Option<u128>, record: Option<AuthorityRecord>) {
        let node = self.node(staged, key).map(NodeRef::to_node);
        Self::stage_over(staged, key, node, parent, record);
    }

    /// [`TrustState::stage`] over `current`, the node `key` has now.
    fn stage_over(
        staged: &mut StagedTrust,
        key: u128,
        current: Option<Node>,
        parent: Option<u128>,
        record: Option<AuthorityRecord>,
    ) {
        let mut node = current.unwrap_or_default();
        match record {
            Some(record) => {
                node.record = Some(Box::new(record));
                node.parent = node.parent.or(parent);
            }
            None => node.parent = parent,
        }
        staged.nodes.insert(key, node);
    }

    /// What a DIO plans for one event: the write rule that governs it, then
    /// (after staging `stage`, if given, as [`TrustState::stage`] would) the
    /// read rule, with one lookup of `key` for both. A write rule equal to
    /// `previous` (the one before it, usually) is shared, not copied.
    pub fn plan_event(
        &self,
        config: &TrustConfig,
        staged: &mut StagedTrust,
        key: u128,
        parent: Option<u128>,
        stage: Option<Option<AuthorityRecord>>,
        previous: Option<&Arc<WriteRule>>,
    ) -> (Arc<WriteRule>, ReadRule) {
        let known = self.node(staged, key);
        let write_rule = match (self.write_rule_from(config, staged, key, Some(known), parent), previous) {
            (rule, Some(previous)) if rule.is(previous) => Arc::clone(previous),
            (rule, _) => Arc::new(rule.to_owned()),
        };
        match stage {
            Some(record) => {
                let current = known.map(NodeRef::to_node);
                Self::stage_over(staged, key, current, parent, record);
                (write_rule, self.read_rule(staged, key, parent))
            }
            None => (write_rule, self.read_rule_from(staged, key, Some(known), parent)),
        }
    }

    /// The read rule governing `key` (a new object: pass its parent chain
    /// through `parent`).
    pub fn read_rule(&self, staged: &StagedTrust, key: u128, parent: Option<u128>) -> ReadRule {
        self.read_rule_from(staged, key, None, parent)
    }

    fn read_rule_from<'a>(
        &'a self,
        staged: &'a StagedTrust,
        key: u128,
        known: Option<Option<NodeRef<'a>>>,
        parent: Option<u128>,
    ) -> ReadRule {
        self.walk_from(staged, key, known, parent, |at, node| match &node.record().read {
            ReadAuthority::Inherit => None,
            ReadAuthority::Everyone => Some(ReadRule::Everyone),
            ReadAuthority::Specific(read_key_id) => Some(match &node.record().node_key {
                Some(wrap) => {
                    ReadRule::NodeKey { node: at, node_key_id: wrap.node_key_id(), read_key_id: *read_key_id }
                }
                None => ReadRule::Everyone,
            }),
        })
        .unwrap_or(ReadRule::Everyone)
    }

    /// The authority record of `key` itself, if it has one.
    pub fn own_record<'a>(&'a self, staged: &'a StagedTrust, key: u128) -> Option<&'a AuthorityRecord> {
        self.node(staged, key).map(|node| node.record())
    }

    /// The node key currently recorded for `key` itself, if any.
    pub fn own_node_key<'a>(&'a self, staged: &'a StagedTrust, key: u128) -> Option<&'a NodeKeyWrap> {
        self.node(staged, key).and_then(|node| node.record().node_key.as_ref())
    }

    /// Checks one event of a commit against the rules (as changed by the
    /// events before it in the same commit) and stages its effect.
    /// `signers` holds the keys whose signatures over the commit verified.
    pub fn check_event(
        &self,
        config: &TrustConfig,
        staged: &mut StagedTrust,
        event: &EventView<'_>,
        signers: &Signers,
    ) -> Result<(), RejectReason> {
        // Size and timestamp checks are plugins (crate::plugin), run by the
        // chain; replays are recognised per commit (`replayed_commit`).
        match event.kind {
            EventKind::PublicKey => {
                let key = PublicSignKey::decode(event.payload)
                    .map_err(|error| RejectReason::MalformedPayload(error.to_string()))?;
                staged.public_keys.push(key);
            }
            EventKind::Signature => {}
            EventKind::Data | EventKind::Tombstone | EventKind::Authority | EventKind::Retention => {
                let known = self.node(staged, event.key);
                self.authorize_from(config, staged, event.key, Some(known), event.parent, signers)?;
                match event.kind {
                    EventKind::Retention => self.check_retention(staged, event, signers)?,
                    EventKind::Tombstone => {
                        let current = self.staged_retention(staged, event.key);
                        let policy = self.staged_policy(staged);
                        retention::check_delete(policy, &current, event.content.timestamp_us, signers)?;
                        staged.deleted.insert(event.key);
                    }
                    EventKind::Data => {
                        // Written again after a delete in the same commit: it stays.
                        let current = known.map(|node| node.parent);
                        if (current.is_some() || event.parent.is_some()) && current != Some(event.parent) {
                            // A move must also be allowed where the object lands.
                            if let (Some(_), Some(new_parent)) = (current, event.parent) {
                                self.authorize(config, staged, new_parent, None, signers)?;
                            }
                            let current = known.map(NodeRef::to_node);
                            Self::stage_over(staged, event.key, current, event.parent, None);
                        }
                        cancel_deletion(&mut staged.deleted, event.key);
                        // Data under a read authority must be sealed under its current node key.
                        if let ReadRule::NodeKey { node_key_id, .. } = self.read_rule(staged, event.key, event.parent) {
                            if event.content.read_key_id != node_key_id.0 {
                                return Err(RejectReason::NotEncrypted { node_key_id });
                            }
                        }
                        self.default_retention(staged, event);
                    }
                    EventKind::Authority => {
                        let record: AuthorityRecord = postcard::from_bytes(event.payload)
                            .map_err(|error| RejectReason::MalformedPayload(error.to_string()))?;
                        if let (ReadAuthority::Specific(_), None) = (&record.read, &record.node_key) {
                            return Err(RejectReason::MalformedPayload(
                                "encrypted read authority without a node key".into(),
                            ));
                        }
                        cancel_deletion(&mut staged.deleted, event.key);
                        staged.node_key_wraps.extend(record.node_key.iter().cloned());
                        staged.node_key_wraps.extend(record.previous_node_keys.iter().cloned());
                        self.stage(staged, event.key, event.parent, Some(record));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// A new version is retained for the policy's default period.
    fn default_retention(&self, staged: &mut StagedTrust, event: &EventView<'_>) {
        let policy = self.staged_policy(staged);
        if policy.default_retention_us > 0 {
            let current = self.staged_retention(staged, event.key);
            let next = retention::after_new_version(policy, current, event.content.timestamp_us);
            self.stage_retention(staged, event.key, event.parent, next);
        }
    }

    fn authorize(
        &self,
        config: &TrustConfig,
        staged: &StagedTrust,
        key: u128,
        parent: Option<u128>,
        signers: &Signers,
    ) -> Result<(), RejectReason> {
        self.authorize_from(config, staged, key, None, parent, signers)
    }

    /// [`TrustState::authorize`] with `key` already looked up (`known`, as
    /// in [`TrustState::walk_from`]).
    fn authorize_from(
        &self,
        config: &TrustConfig,
        staged: &StagedTrust,
        key: u128,
        known: Option<Option<NodeRef<'_>>>,
        parent: Option<u128>,
        signers: &Signers,
    ) -> Result<(), RejectReason> {
        // Under centralized integrity the server key vouches for a commit
        // (the server checked the session's keys); a frozen object stays frozen.
        let vouched = config.integrity == super::IntegrityMode::Centralized
            && config.server_key_id.as_ref().is_some_and(|server| signers.contains(server));
        match self.write_rule_from(config, staged, key, known, parent) {
            WriteRuleRef::Everyone => Ok(()),
            WriteRuleRef::Nobody => Err(RejectReason::Frozen),
            WriteRuleRef::AnyOf(_) if vouched => Ok(()),
            WriteRuleRef::AnyOf(allowed) => {
                if allowed.iter().any(|key| signers.contains(key)) {
                    Ok(())
                } else {
                    Err(RejectReason::Unauthorized {
                        allowed: allowed.to_vec(),
                        signed_by: signers.iter().copied().collect(),
                    })
                }
            }
        }
    }

    /// Records that commits up to `timestamp_us` were seen (by `commit`, and
    /// for the dropped prefix of a chain, which verification does not replay).
    pub fn note_commit_time(&mut self, timestamp_us: u64) {
        self.latest_commit_us = self.latest_commit_us.max(timestamp_us);
    }

    /// The latest commit time this state has seen.
    pub fn latest_commit_us(&self) -> u64 {
        self.latest_commit_us
    }

    /// The sequences a signed commit with this Merkle root got, if it was
    /// written recently: a client retrying a commit whose acknowledgement it
    /// lost gets the original receipt (idempotent), never a duplicate.
    pub fn replayed_commit(&self, root: &[u8; 32]) -> Option<(u64, u64)> {
        self.recent.get(root).copied()
    }

    /// A signed commit older than the replay window cannot be told apart
    /// from a replay, so it is refused whatever the validators say.
    pub fn check_replay_window(
        &self,
        config: &TrustConfig,
        timestamp_us: u64,
        now_us: u64,
    ) -> Result<(), RejectReason> {
        let window_us = 2 * config.timestamp_skew_us;
        if timestamp_us.saturating_add(window_us) < now_us {
            return Err(RejectReason::Stale { timestamp_us, window_us });
        }
        Ok(())
    }

    /// Applies a validated commit that got sequences `first..=last`.
    pub fn commit(&mut self, staged: StagedTrust, config: &TrustConfig, now_us: u64, first: u64, last: u64) {
        self.note_commit_time(now_us);
        for (key, node) in staged.nodes {
            self.put_node(key, node);
        }
        self.forget_deleted(&staged.deleted);
        if let Some(policy) = staged.policy {
            self.policy = policy;
        }
        for key in staged.public_keys {
            self.add_public_key(key);
        }
        if let Some((root, timestamp_us)) = staged.commit_root {
            self.remember_commit(root, timestamp_us, first, last, config, now_us);
        }
    }

    /// Records a signed commit for anti-replay and forgets what fell out of the window.
    pub fn remember_commit(
        &mut self,
        root: [u8; 32],
        timestamp_us: u64,
        first: u64,
        last: u64,
        config: &TrustConfig,
        now_us: u64,
    ) {
        let horizon = now_us.saturating_sub(2 * config.timestamp_skew_us);
        if timestamp_us >= horizon && self.recent.insert(root, (first, last)).is_none() {
            self.recent_order.push_back((root, timestamp_us));
        }
        while self.recent_order.front().is_some_and(|(_, timestamp)| *timestamp < horizon) {
            let (old, _) = self.recent_order.pop_front().expect("non-empty");
            self.recent.remove(&old);
        }
    }

    /// Replays a stored event during recovery (and from a checkpoint): no
    /// signature checks (they were made before it was written; `verify`
    /// re-checks everything). Events of unknown kinds change nothing.
    pub fn apply_recovered(&mut self, header: &ArchivedEventHeader, payload: &[u8]) -> Vec<NodeKeyWrap> {
        let wraps = match header.kind() {
            Some(kind) => self.replay_event(kind, header, payload),
            None => Vec::new(),
        };
        if header.is_commit_end() {
            let deleted = std::mem::take(&mut self.recovered_deletions);
            self.forget_deleted(&deleted);
        }
        wraps
    }

    fn replay_event(&mut self, kind: EventKind, header: &ArchivedEventHeader, payload: &[u8]) -> Vec<NodeKeyWrap> {
        let mut wraps = Vec::new();
        let key = u128::from_le_bytes(header.key);
        let parent = header.parent().map(u128::from_le_bytes);
        match kind {
            EventKind::Tombstone => {
                self.recovered_deletions.insert(key);
            }
            EventKind::PublicKey => {
                if let Ok(public) = PublicSignKey::decode(payload) {
                    self.add_public_key(public);
                }
            }
            EventKind::Data => {
                // Written again after a delete in the same commit: it stays (as in `check_event`).
                cancel_deletion(&mut self.recovered_deletions, key);
                let retained = self.policy.default_retention_us > 0;
                let existing = self.take_node(key);
                // A root that never had an entry still has none.
                if existing.is_some() || parent.is_some() || retained {
                    let mut node = existing.unwrap_or_default();
                    node.parent = parent;
                    if retained {
                        node.retention =
                            retention::after_new_version(&self.policy, node.retention, header.timestamp_us());
                    }
                    self.put_node(key, node);
                }
            }
            EventKind::Retention => match postcard::from_bytes::<RetentionChange>(payload) {
                Ok(RetentionChange::Policy(policy)) => self.policy = policy,
                Ok(RetentionChange::Object { retain_until_us, legal_hold }) => {
                    cancel_deletion(&mut self.recovered_deletions, key);
                    let mut node = self.take_node(key).unwrap_or_default();
                    if let Some(until) = retain_until_us {
                        node.retention.retain_until_us = until;
                    }
                    if let Some(hold) = legal_hold {
                        node.retention.legal_hold = hold;
                    }
                    self.put_node(key, node);
                }
                Err(_) => {}
            },
            EventKind::Authority => {
                if let Ok(record) = postcard::from_bytes::<AuthorityRecord>(payload) {
                    cancel_deletion(&mut self.recovered_deletions, key);
                    wraps.extend(record.node_key.iter().cloned());
                    wraps.extend(record.previous_node_keys.iter().cloned());
                    let mut node = self.take_node(key).unwrap_or_default();
                    node.record = Some(Box::new(record));
                    if node.parent.is_none() {
                        node.parent = parent;
                    }
                    self.put_node(key, node);
                }
            }
            _ => {}
        }
        wraps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic xorshift: the properties below run over many random trees.
    struct Random(u64);
    impl Random {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, limit: u64) -> u64 {
            self.next() % limit
        }
    }

    fn key_id(index: u8) -> KeyId {
        KeyId([index; 32])
    }

    /// The reference model: resolve by plain recursion over the parent map.
    fn model_write(nodes: &[(Option<usize>, WriteAuthority)], index: usize, roots: &[KeyId]) -> WriteRule {
        match &nodes[index].1 {
            WriteAuthority::Everyone => WriteRule::Everyone,
            WriteAuthority::Nobody => WriteRule::Nobody,
            WriteAuthority::Specific(keys) => WriteRule::AnyOf(keys.clone()),
            WriteAuthority::Inherit => match nodes[index].0 {
                Some(parent) => model_write(nodes, parent, roots),
                None if roots.is_empty() => WriteRule::Everyone,
                None => WriteRule::AnyOf(roots.to_vec()),
            },
        }
    }

    #[test]
    fn write_rules_and_authorization_match_a_recursive_model_on_random_trees() {
        let mut random = Random(0x9E37_79B9_7F4A_7C15);
        for trial in 0..300 {
            let roots: Vec<KeyId> = (0..random.below(3)).map(|i| key_id(100 + i as u8)).collect();
            let config = TrustConfig { root_keys: roots.clone(), ..TrustConfig::default() };
            let size = 1 + random.below(40) as usize;
            let mut nodes: Vec<(Option<usize>, WriteAuthority)> = Vec::new();
            for index in 0..size {
                let parent =
                    if index == 0 || random.below(5) == 0 { None } else { Some(random.below(index as u64) as usize) };
                let write = match random.below(6) {
                    0 => WriteAuthority::Everyone,
                    1 => WriteAuthority::Nobody,
                    2 => WriteAuthority::Specific(
                        (0..1 + random.below(2)).map(|_| key_id(random.below(4) as u8)).collect(),
                    ),
                    _ => WriteAuthority::Inherit,
                };
                nodes.push((parent, write));
            }
            // Inheriting nodes are sometimes plain children (no record of
            // their own: kept as bare parent links), committed in two
            // commits so that lookups cross both maps and both commits.
            let mut state = TrustState::new();
            let mut staged = StagedTrust::default();
            for (index, (parent, write)) in nodes.iter().enumerate() {
                let record = match write {
                    WriteAuthority::Inherit if random.below(2) == 0 => None,
                    _ => Some(AuthorityRecord { write: write.clone(), ..AuthorityRecord::default() }),
                };
                state.stage(&mut staged, index as u128 + 1, parent.map(|p| p as u128 + 1), record);
                if index == size / 2 {
                    state.commit(std::mem::take(&mut staged), &config, 0, 0, 0);
                }
            }
            state.commit(staged, &config, 0, 0, 0);
            let empty = StagedTrust::default();
            for index in 0..size {
                let expected = model_write(&nodes, index, &roots);
                let actual = state.write_rule(&config, &empty, index as u128 + 1, None);
                assert_eq!(actual, expected, "trial {trial}, node {index}: {nodes:?}");
                // A new child of this node is governed by the node's rule.
                assert_eq!(
                    state.write_rule(&config, &empty, 10_000 + index as u128, Some(index as u128 + 1)),
                    expected
                );
                // Authorization agrees with the rule for a random signer set.
                let signers: Signers = (0..random.below(3)).map(|_| key_id(random.below(4) as u8)).collect();
                let allowed = match &expected {
                    WriteRule::Everyone => true,
                    WriteRule::Nobody => false,
                    WriteRule::AnyOf(keys) => keys.iter().any(|key| signers.contains(key)),
                };
                let result = state.authorize(&config, &empty, index as u128 + 1, None, &signers);
                assert_eq!(result.is_ok(), allowed, "trial {trial}, node {index}");
            }
        }
    }

    /// A plain child is kept as a bare link, and the link still governs it:
    /// a write that claims an open parent is checked where the child is.
    #[test]
    fn a_plain_child_stays_governed_by_the_folder_it_is_in() {
        let config = TrustConfig { root_keys: vec![key_id(1)], ..TrustConfig::default() };
        let (protected, open, child) = (1u128, 2u128, 3u128);
        let mut state = TrustState::new();
        let mut staged = StagedTrust::default();
        let record = |write| AuthorityRecord { write, ..AuthorityRecord::default() };
        state.stage(&mut staged, protected, None, Some(record(WriteAuthority::Specific(vec![key_id(7)]))));
        state.stage(&mut staged, open, None, Some(record(WriteAuthority::Everyone)));
        state.commit(staged, &config, 0, 0, 0);
        let mut staged = StagedTrust::default();
        state.stage(&mut staged, child, Some(protected), None);
        state.commit(staged, &config, 0, 0, 0);
        assert_eq!(state.parents.get(&child), Some(&protected), "kept as a bare link");
        assert!(!state.nodes.contains_key(&child));

        let nobody = Signers::default();
        let empty = StagedTrust::default();
        assert!(state.authorize(&config, &empty, child, Some(open), &nobody).is_err());
        assert!(state.authorize(&config, &empty, child, Some(open), &Signers::from_iter([key_id(7)])).is_ok());

        // Given a record of its own, the child leaves the link map.
        let mut staged = StagedTrust::default();
        state.stage(&mut staged, child, None, Some(record(WriteAuthority::Everyone)));
        state.commit(staged, &config, 0, 0, 0);
        assert!(!state.parents.contains_key(&child));
        assert_eq!(state.nodes.get(&child).and_then(|node| node.parent), Some(protected));
        assert!(state.authorize(&config, &empty, child, None, &nobody).is_ok());
    }

    #[test]
    fn cyclic_parents_end_at_the_root_rule_instead_of_looping() {
        let config = TrustConfig { root_keys: vec![key_id(1)], ..TrustConfig::default() };
        let mut state = TrustState::new();
        let mut staged = StagedTrust::default();
        state.stage(&mut staged, 1, Some(2), Some(AuthorityRecord::default()));
        state.stage(&mut staged, 2, Some(1), Some(AuthorityRecord::default()));
        state.commit(staged, &config, 0, 0, 0);
        assert_eq!(state.write_rule(&config, &StagedTrust::default(), 1, None), WriteRule::AnyOf(vec![key_id(1)]));
        assert_eq!(state.read_rule(&StagedTrust::default(), 1, None), ReadRule::Everyone);
    }

    #[test]
    fn child_counts_follow_random_writes_moves_and_deletes_and_deleted_leaves_leave_no_link() {
        let mut random = Random(0x005E_ED0F_7EE5);
        let config = TrustConfig::default();
        let mut state = TrustState::new();
        for step in 0..3000 {
            let mut staged = StagedTrust::default();
            let mut deleted_last = HashSet::new();
            for _ in 0..1 + random.below(4) {
                let key = 1 + random.below(48) as u128;
                if random.below(3) == 0 {
                    staged.deleted.insert(key);
                    deleted_last.insert(key);
                } else {
                    let parent = (random.below(4) != 0).then(|| 1 + random.below(48) as u128);
                    // A write after a delete cancels it, as `check_event` does.
                    cancel_deletion(&mut staged.deleted, key);
                    state.stage(&mut staged, key, parent, None);
                    deleted_last.remove(&key);
                }
            }
            state.commit(staged, &config, 0, 0, 0);
            let mut recount: HashMap<u128, u32> = HashMap::new();
            let links = state.parents.values().copied().chain(state.nodes.values().filter_map(|node| node.parent));
            for parent in links {
                *recount.entry(parent).or_insert(0) += 1;
            }
            let counted: HashMap<u128, u32> = state.children.iter().map(|(key, count)| (*key, *count)).collect();
            assert_eq!(counted, recount, "step {step}");
            for key in deleted_last {
                if !state.children.contains_key(&key) {
                    assert!(!state.parents.contains_key(&key), "step {step}: deleted leaf {key} kept its link");
                }
            }
        }
    }
}
