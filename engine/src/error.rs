//! The one error type of the engine.

use crate::key::PrimaryKey;
use std::path::PathBuf;

/// Every fallible call in `ate` returns this. Variants are stable enough to
/// match on; new ones may be added.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AteError {
    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A write or fsync failed earlier; the chain refuses further writes
    /// because the state of the disk is unknown. Reopen the chain to recover.
    #[error("chain '{chain}' is poisoned by an earlier failure and refuses writes: {reason}")]
    Poisoned { chain: String, reason: String },
    /// Bytes on disk are damaged somewhere recovery may not simply cut off.
    #[error("chain '{chain}' is corrupt in {segment} at offset {offset} (sequence {sequence:?}): {reason}")]
    Corrupt { chain: String, segment: PathBuf, offset: u64, sequence: Option<u64>, reason: String },
    /// Optimistic concurrency: someone else committed a change to this object
    /// after this DIO read it.
    #[error("commit conflict on object {key}: it changed after this transaction read it")]
    Conflict { key: PrimaryKey },
    #[error("object {key} not found")]
    NotFound { key: PrimaryKey },
    #[error("could not serialize value: {0}")]
    Serialization(String),
    #[error("object {key} could not be deserialized as the requested type: {reason}")]
    Deserialization { key: PrimaryKey, reason: String },
    #[error("object {key} is a {found} event, not data")]
    WrongKind { key: PrimaryKey, found: &'static str },
    #[error("commit of {bytes} bytes exceeds the limit of {limit} bytes")]
    CommitTooLarge { bytes: usize, limit: usize },
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A commit failed validation; nothing of it was written.
    #[error("commit rejected at event {index} (object {key}): {reason}")]
    Rejected { index: usize, key: PrimaryKey, reason: crate::trust::RejectReason },
    /// The session holds no key allowed to write this object.
    #[error("the session holds no key allowed to write object {key}")]
    NoWriteAccess { key: PrimaryKey },
    /// The session holds no key that can decrypt this object.
    #[error("the session holds no key that can read object {key} (encrypted under node key {node_key_id})")]
    NoReadAccess { key: PrimaryKey, node_key_id: crate::crypto::KeyId },
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    #[error(transparent)]
    Proof(#[from] crate::proof::ProofError),
    /// A superseded version whose payload compaction removed: its header
    /// (and so its place in the hash chain and the Merkle tree) remains.
    #[error("event {sequence} was compacted: a later version superseded it and its payload was removed")]
    Compacted { sequence: u64 },
    /// The segments that held this sequence were dropped (time-based log
    /// retention); the log now starts at `first_sequence`.
    #[error("chain '{chain}': event {sequence} was in a dropped segment; the log starts at {first_sequence}")]
    HistoryDropped { chain: String, sequence: u64, first_sequence: u64 },
    /// A stored event failed verification on read (distributed integrity).
    #[error("event {sequence} failed verification: {reason}")]
    Unverified { sequence: u64, reason: String },
    /// A queue delivery is no longer held by this consumer (its lease ran
    /// out and someone else took the item, or it was acknowledged already).
    #[error("the lease on queue item {key} was lost")]
    LeaseLost { key: PrimaryKey },
    #[error("no reply within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("chain '{chain}' is open in another process")]
    Locked { chain: String },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("chain '{chain}' is closed")]
    Closed { chain: String },
    /// The server that owns a remote chain refused a request, or could not
    /// be reached (see [`RemoteFailure`] for what a caller can do).
    #[error("remote chain: {failure:?}: {message}")]
    Remote { failure: RemoteFailure, message: String },
}

/// Classes of remote failures a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteFailure {
    /// The connection is down or the server is unavailable: retry later (a
    /// retried signed commit is recognised and not applied twice).
    Unavailable,
    /// The token does not allow this.
    Forbidden,
    /// Validation on the server refused the commit.
    Rejected,
    /// The commit is larger than the server allows.
    TooLarge,
    /// Any other refusal; the message says why.
    Refused,
}

impl AteError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }
}

pub type Result<T, E = AteError> = std::result::Result<T, E>;
