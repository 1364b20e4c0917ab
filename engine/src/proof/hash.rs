//! The hashing rules of the tree: RFC 9162 §2.1.1 with BLAKE3 in place of SHA-256.

/// A BLAKE3 output: event hashes, leaf hashes, node hashes and roots all have this type.
pub type Hash = [u8; 32];

/// Prefix of a leaf hash input. Distinct from [`NODE_PREFIX`] so that no leaf can be passed off
/// as an inner node (second-preimage defence of RFC 9162 §2.1.1).
pub const LEAF_PREFIX: u8 = 0x00;

/// Prefix of an inner node hash input.
pub const NODE_PREFIX: u8 = 0x01;

/// The largest tree size any function of this module accepts: 2^63 leaves.
///
/// Sequence numbers are `u64`, but no chain reaches 2^63 events; capping there keeps every
/// inclusion proof at 63 hashes and every consistency proof at 64 ([`MAX_PATH_LEN`]).
pub const MAX_TREE_SIZE: u64 = 1 << 63;

/// The most hashes a proof may hold, in memory and in its encoding.
pub const MAX_PATH_LEN: usize = 64;

/// `BLAKE3(0x00 || event_hash)`: the hash of one leaf, whose content is an event hash.
pub fn leaf_hash(event_hash: &Hash) -> Hash {
    let mut input = [0u8; 33];
    input[0] = LEAF_PREFIX;
    input[1..].copy_from_slice(event_hash);
    blake3::hash(&input).into()
}

/// `BLAKE3(0x01 || left || right)`: the hash of an inner node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut input = [0u8; 65];
    input[0] = NODE_PREFIX;
    input[1..33].copy_from_slice(left);
    input[33..].copy_from_slice(right);
    blake3::hash(&input).into()
}

/// The root of the empty tree: `BLAKE3("")`, as RFC 9162 defines `MTH({}) = HASH()`.
pub fn empty_root() -> Hash {
    blake3::hash(b"").into()
}

/// The largest power of two strictly below `size` (the `k` of RFC 9162 §2.1.1). `size` must be at
/// least 2; callers only split ranges of two or more leaves.
pub(crate) fn split_point(size: u64) -> u64 {
    debug_assert!(size >= 2, "only ranges of two or more leaves are split");
    1 << (63 - (size - 1).leading_zeros())
}
