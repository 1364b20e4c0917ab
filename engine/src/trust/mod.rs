//! The chain of trust: who may write and read what, signed atomic commits,
//! and the validation every commit passes before anything of it is written.
//!
//! See docs/security.md for the model. In short:
//! * every object has a write authority and a read authority, set on it or
//!   inherited from its parent; roots inherit the chain's root keys;
//! * a commit is signed once per required key, over the Merkle root of the
//!   content hashes of its events (`events::commit_root`);
//! * payloads under a read authority are AES-256-GCM under a fresh data key,
//!   sealed under the governing node's key, which is sealed under the read
//!   key (so read access changes without touching children);
//! * validation (signatures, authority, timestamps, size, anti-replay) runs
//!   before a commit gets sequence numbers: a rejected commit leaves no trace.

pub mod authority;
pub mod events;
pub mod retention;
mod state;

pub use authority::{AuthorityRecord, NodeKeyWrap, ReadAuthority, WriteAuthority};
pub use events::{CommitSignature, EncryptedPayload, EventContent};
pub use state::{EventView, ReadRule, StagedTrust, TrustState, WriteRule};

use crate::crypto::{KeyId, PrivateSignKey, PublicSignKey};
use crate::format::EventKind;
use std::collections::HashSet;

/// How a chain establishes that a write was authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IntegrityMode {
    /// Every protected write carries signatures that any reader can check;
    /// nobody, including the server, has to be trusted.
    #[default]
    Distributed,
    /// The chain's server key signs each commit after checking that the
    /// session holds an authorised key. Readers trust the server key.
    Centralized,
}

/// Trust settings of a chain (from its `ChainBuilder`).
#[derive(Debug, Clone)]
pub struct TrustConfig {
    pub integrity: IntegrityMode,
    /// Keys that govern objects without a parent. Empty: anyone may write roots.
    pub root_keys: Vec<KeyId>,
    /// In centralized mode, the id of the key the chain signs with.
    pub server_key_id: Option<KeyId>,
    /// Largest accepted distance between an event's timestamp and now.
    pub timestamp_skew_us: u64,
    /// Largest payload of one event.
    pub max_event_bytes: usize,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            integrity: IntegrityMode::Distributed,
            root_keys: Vec::new(),
            server_key_id: None,
            timestamp_skew_us: 30_000_000,
            max_event_bytes: 8 << 20,
        }
    }
}

/// Why a commit was rejected. Carried by `AteError::Rejected` with the index
/// and key of the offending event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    #[error("not signed by an authorised key (allowed: {allowed:?}, signed by: {signed_by:?})")]
    Unauthorized { allowed: Vec<KeyId>, signed_by: Vec<KeyId> },
    #[error("the object's write authority is 'nobody'")]
    Frozen,
    #[error("signature by {key_id} does not verify")]
    BadSignature { key_id: KeyId },
    #[error("signature by unknown key {key_id} (publish the public key in the commit)")]
    UnknownSigningKey { key_id: KeyId },
    #[error("signature covers a different set of events than its commit")]
    SignatureMismatch,
    #[error("signature events must follow every other event of their commit")]
    MisplacedSignature,
    #[error("timestamp {timestamp_us} is more than {skew_us} µs away from now ({now_us})")]
    TimestampOutOfRange { timestamp_us: u64, now_us: u64, skew_us: u64 },
    #[error("payload of {bytes} bytes exceeds the limit of {limit}")]
    TooLarge { bytes: usize, limit: usize },
    #[error("this commit was already written (replay)")]
    Replay,
    #[error("signed commit from {timestamp_us} is older than the {window_us} µs replay window")]
    Stale { timestamp_us: u64, window_us: u64 },
    #[error("data under a read authority must be encrypted under node key {node_key_id}")]
    NotEncrypted { node_key_id: KeyId },
    #[error("malformed payload: {0}")]
    MalformedPayload(String),
    #[error("unknown event kind {0}")]
    UnknownKind(u8),
    #[error("validator '{validator}' rejected it: {reason}")]
    Custom { validator: &'static str, reason: String },
    #[error("retention: {0}")]
    Retention(#[from] retention::RetentionViolation),
}

/// One event of a commit, as signature checks see it.
#[derive(Debug, Clone, Copy)]
pub struct SignedEvent<'a> {
    pub kind: EventKind,
    /// `EventContent::hash()` of the event, computed once by the caller.
    pub content_hash: [u8; 32],
    pub payload: &'a [u8],
}

/// Verifies the signature events of a commit (pure: no chain state but the
/// public keys `known` can look up). Returns the keys that signed, or the
/// index of the first bad event and why.
pub fn verify_commit_signatures(
    chain_id: &[u8; 32],
    events: &[SignedEvent<'_>],
    known: impl Fn(&KeyId) -> Option<PublicSignKey>,
) -> Result<CommitSigners, (usize, RejectReason)> {
    verify_commit_signatures_with_root(chain_id, events, None, known)
}

/// [`verify_commit_signatures`] with the Merkle root of the covered events
/// already computed by this process (the DIO, which computed it to sign):
/// the signatures are still checked, the tree is not hashed again.
pub(crate) fn verify_commit_signatures_with_root(
    chain_id: &[u8; 32],
    events: &[SignedEvent<'_>],
    computed_root: Option<[u8; 32]>,
    known: impl Fn(&KeyId) -> Option<PublicSignKey>,
) -> Result<CommitSigners, (usize, RejectReason)> {
    let mut signers = Signers::default();
    let Some(first_signature) = events.iter().position(|event| event.kind == EventKind::Signature) else {
        return Ok(CommitSigners { keys: signers, root: None });
    };
    if let Some(stray) = events[first_signature..].iter().position(|event| event.kind != EventKind::Signature) {
        return Err((first_signature + stray, RejectReason::MisplacedSignature));
    }
    let root = computed_root.unwrap_or_else(|| {
        let covered: Vec<[u8; 32]> = events[..first_signature].iter().map(|event| event.content_hash).collect();
        events::commit_root(&covered)
    });
    let message = events::commit_signing_message(chain_id, &root);
    let published: Vec<PublicSignKey> = events[..first_signature]
        .iter()
        .filter(|event| event.kind == EventKind::PublicKey)
        .filter_map(|event| PublicSignKey::decode(event.payload).ok())
        .collect();
    for (offset, event) in events[first_signature..].iter().enumerate() {
        let index = first_signature + offset;
        let signature: CommitSignature = postcard::from_bytes(event.payload)
            .map_err(|error| (index, RejectReason::MalformedPayload(error.to_string())))?;
        if signature.merkle_root != root || signature.event_count as usize != first_signature {
            return Err((index, RejectReason::SignatureMismatch));
        }
        let key = published
            .iter()
            .find(|key| key.id() == signature.key_id)
            .cloned()
            .or_else(|| known(&signature.key_id))
            .ok_or((index, RejectReason::UnknownSigningKey { key_id: signature.key_id }))?;
        if key.scheme() != signature.scheme || key.verify(&message, &signature.signature).is_err() {
            return Err((index, RejectReason::BadSignature { key_id: signature.key_id }));
        }
        signers.insert(signature.key_id);
    }
    Ok(CommitSigners { keys: signers, root: Some(root) })
}

/// The keys that signed a commit: a few at most, looked up once per event
/// by the trust checks. Key ids are hashes already, so foldhash, not SipHash.
pub type Signers = HashSet<KeyId, foldhash::fast::RandomState>;

/// Who signed a commit, and the Merkle root they signed (`None`: unsigned).
#[derive(Debug, Clone, Default)]
pub struct CommitSigners {
    pub keys: Signers,
    pub root: Option<[u8; 32]>,
}

/// Builds the signature payload for `key` over a commit's non-signature events.
pub fn sign_commit(chain_id: &[u8; 32], key: &PrivateSignKey, contents: &[EventContent]) -> CommitSignature {
    let covered = EventContent::hashes(contents);
    sign_commit_root(chain_id, key, events::commit_root(&covered), contents.len())
}

/// [`sign_commit`] over a root computed already (of `event_count` events).
pub(crate) fn sign_commit_root(
    chain_id: &[u8; 32],
    key: &PrivateSignKey,
    merkle_root: [u8; 32],
    event_count: usize,
) -> CommitSignature {
    let signature = key.sign(&events::commit_signing_message(chain_id, &merkle_root));
    CommitSignature {
        key_id: key.id(),
        scheme: key.public().scheme(),
        merkle_root,
        event_count: event_count as u32,
        signature,
    }
}

/// What the DIO computed to sign a commit: the content hashes of the events
/// its signatures cover and their Merkle root. The chain takes them instead
/// of hashing the same bytes again (it still checks the signatures).
#[derive(Debug, Clone)]
pub(crate) struct SignedContents {
    pub content_hashes: Vec<[u8; 32]>,
    pub root: [u8; 32],
}
