//! The one error type of the Merkle tree, its proofs and their encodings.

/// Why a tree query, a proof verification or a decode failed.
///
/// "This proof does not verify" ([`RootMismatch`](Self::RootMismatch),
/// [`BadProofLength`](Self::BadProofLength), [`ParameterMismatch`](Self::ParameterMismatch)) and
/// "these bytes are not a proof" ([`Truncated`](Self::Truncated), [`TrailingBytes`](Self::TrailingBytes),
/// [`UnsupportedVersion`](Self::UnsupportedVersion), [`TooLong`](Self::TooLong)) are separate variants,
/// so a caller can tell a lying peer from a broken or newer one. New variants may be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// A leaf index is not below the tree size it is asked about.
    #[error("leaf index {leaf_index} is out of range for a tree of size {tree_size}")]
    IndexOutOfRange { leaf_index: u64, tree_size: u64 },
    /// A tree size is above what is allowed where it is used: above the size of the tree that is
    /// asked, above the newer size of a consistency proof, or above [`MAX_TREE_SIZE`](super::MAX_TREE_SIZE).
    #[error("tree size {size} is out of range: at most {limit} allowed here")]
    SizeOutOfRange { size: u64, limit: u64 },
    /// The proof holds a different number of hashes than its index and sizes imply.
    #[error("proof holds {found} hashes where {expected} are expected")]
    BadProofLength { expected: usize, found: usize },
    /// The proof was made for another leaf index or tree size than the one it is verified against.
    #[error("proof is for {field} {found}, but {expected} is being verified")]
    ParameterMismatch { field: &'static str, expected: u64, found: u64 },
    /// The root recomputed from the proof differs from the expected root. `which` names the root
    /// ("tree", "old" or "new").
    #[error("the {which} root recomputed from the proof does not match the expected one")]
    RootMismatch { which: &'static str },
    /// The input ends before the field that starts at `offset`.
    #[error("input truncated: {needed} bytes needed at offset {offset}, {available} available")]
    Truncated { offset: usize, needed: usize, available: usize },
    /// Bytes follow the end of a complete encoding.
    #[error("{count} unexpected bytes after the end of the encoding")]
    TrailingBytes { count: usize },
    /// The version byte names a format this build does not know.
    #[error("unsupported encoding version {version}")]
    UnsupportedVersion { version: u8 },
    /// A length field is above its bound (path hashes, signature bytes).
    #[error("{what} has length {length}, at most {limit} allowed")]
    TooLong { what: &'static str, length: usize, limit: usize },
    /// The query needs leaves the tree no longer holds: it was started from the frontier of its
    /// first `pruned_size` leaves ([`MerkleTree::from_frontier`](super::MerkleTree::from_frontier)),
    /// after the segments that held them were dropped.
    #[error("leaves before {pruned_size} were dropped; this needs them")]
    Pruned { pruned_size: u64 },
}
