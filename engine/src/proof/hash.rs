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
    crate::format::hash(&leaf_input(event_hash))
}

/// `BLAKE3(0x01 || left || right)`: the hash of an inner node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    crate::format::hash(&node_input(left, right))
}

/// What a leaf hash hashes: `0x00 || event_hash`.
fn leaf_input(event_hash: &Hash) -> [u8; 33] {
    let mut input = [0u8; 33];
    input[0] = LEAF_PREFIX;
    input[1..].copy_from_slice(event_hash);
    input
}

/// What a node hash hashes: `0x01 || left || right`.
fn node_input(left: &Hash, right: &Hash) -> [u8; 65] {
    let mut input = [0u8; 65];
    input[0] = NODE_PREFIX;
    input[1..33].copy_from_slice(left);
    input[33..].copy_from_slice(right);
    input
}

/// The root of a tree whose leaves are `event_hashes`, equal to what
/// [`MerkleTree::root`](super::MerkleTree::root) gives for them, computed
/// level by level with many hashes side by side
/// ([`crate::format::payload_hashes`]): a commit's root takes a hash per
/// event and per inner node, a third of verifying a commit's trust rules
/// when done one hash at a time. Pairing neighbours bottom-up and carrying
/// an odd last node up unchanged builds the same tree as RFC 9162's split
/// at the largest power of two below the size.
pub fn root_of(event_hashes: &[Hash]) -> Hash {
    if event_hashes.is_empty() {
        return empty_root();
    }
    let leaves: Vec<[u8; 33]> = event_hashes.iter().map(leaf_input).collect();
    let mut level = crate::format::payload_hashes(&leaves.iter().map(|input| &input[..]).collect::<Vec<_>>());
    while level.len() > 1 {
        let nodes: Vec<[u8; 65]> = level.chunks_exact(2).map(|pair| node_input(&pair[0], &pair[1])).collect();
        let mut next = crate::format::payload_hashes(&nodes.iter().map(|input| &input[..]).collect::<Vec<_>>());
        if let [.., odd] = level.chunks_exact(2).remainder() {
            next.push(*odd);
        }
        level = next;
    }
    level[0]
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
