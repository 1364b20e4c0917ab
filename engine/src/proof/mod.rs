//! Merkle tree over the event hashes of a chain, with inclusion and consistency proofs and
//! signed tree heads: RFC 9162 (Certificate Transparency v2) §2.1, with BLAKE3 in place of SHA-256.
//!
//! Pure logic, no I/O. The leaves are the event hashes of the chain in sequence order (leaf index =
//! sequence number), so a tree head of size `n` commits to the first `n` events, and:
//! - an [`InclusionProof`] shows one event is among them ([`verify_inclusion`]);
//! - a [`ConsistencyProof`] shows a later tree head only appended to an earlier one
//!   ([`verify_consistency`]).
//!
//! Both verifiers are standalone: they need the proof, the sizes, the hashes and the root(s), not a
//! [`MerkleTree`]. The hashing rules, byte layouts and test vectors are in `docs/security.md`
//! ("Merkle tree and proofs"); keep the two in step.

mod encoding;
mod error;
mod hash;
#[cfg(test)]
mod tests;
mod tree;
mod verify;

pub use encoding::{
    ConsistencyProof, InclusionProof, SignedTreeHead, TreeHead, ENCODING_VERSION, MAX_SIGNATURE_LEN,
    TREE_HEAD_SIGNING_DOMAIN, TREE_HEAD_SIGNING_LEN,
};
pub use error::ProofError;
pub use hash::{
    empty_root, leaf_hash, node_hash, root_of, Hash, LEAF_PREFIX, MAX_PATH_LEN, MAX_TREE_SIZE, NODE_PREFIX,
};
pub use tree::MerkleTree;
pub use verify::{verify_consistency, verify_inclusion};
