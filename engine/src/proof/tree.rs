//! The append-only, in-memory Merkle tree that a chain feeds with its event hashes.

use super::encoding::{ConsistencyProof, InclusionProof};
use super::error::ProofError;
use super::hash::{empty_root, leaf_hash, node_hash, split_point, Hash};

/// An append-only Merkle tree (RFC 9162 §2.1 with BLAKE3) over the event hashes of one chain:
/// leaf `i` is the event hash of sequence number `i`.
///
/// # Memory
///
/// The tree keeps, for every level `h`, the hash of every complete subtree of `2^h` leaves that
/// starts at a multiple of `2^h`: `n + n/2 + n/4 + … < 2n` hashes for `n` leaves, so **under 64 bytes
/// per leaf** (2 × 32), plus about 24 bytes per level for the `Vec` headers. The event hashes
/// themselves are not kept, only their leaf hashes. Each level is a `Vec` that doubles when full,
/// so right after a reallocation up to as much again can be spare capacity (up to 128 bytes per leaf
/// in the worst case); [`MerkleTree::with_capacity`] avoids that when the final size is known.
///
/// # Cost
///
/// [`push`](Self::push) computes one leaf hash and, amortized, one node hash (at most one per
/// level). Every hash of a range of leaves is a fold of at most 64 stored complete subtrees, so
/// [`root`](Self::root) and [`root_at`](Self::root_at) cost O(log n) node hashes, and
/// [`inclusion_proof`](Self::inclusion_proof) and [`consistency_proof`](Self::consistency_proof),
/// which need one range hash per level, O(log² n). Nothing ever rehashes the whole tree.
///
/// # Pruning
///
/// A chain whose oldest segments were dropped starts its tree from the *frontier* of the dropped
/// prefix ([`from_frontier`](Self::from_frontier)): one complete subtree per set bit of its size.
/// That is all any later root, any inclusion proof of a later leaf, and any consistency proof from
/// a size at or above the prefix needs (each such range splits into frontier subtrees and subtrees
/// computed from later leaves); queries that need more fail with [`ProofError::Pruned`].
#[derive(Clone, Default)]
pub struct MerkleTree {
    /// `levels[h][j - first[h]]` is the hash of the complete subtree over leaves
    /// `j·2^h .. (j+1)·2^h`. Invariant, with `count(h) = first[h] + levels[h].len()`:
    /// `count(h + 1) == count(h) / 2`.
    levels: Vec<Vec<Hash>>,
    /// Index of the first stored node of each level: 0 unless pruned.
    first: Vec<u64>,
    /// Leaves before this were dropped (0: none).
    pruned_size: u64,
}

impl std::fmt::Debug for MerkleTree {
    // The hashes themselves would flood any log line; size and root identify the tree.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("MerkleTree").field("len", &self.len()).field("root", &self.root()).finish()
    }
}

impl MerkleTree {
    /// An empty tree; its root is [`empty_root`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty tree with room for `leaf_count` leaves on every level, so that growing to that
    /// size never reallocates and leaves no spare capacity beyond it.
    pub fn with_capacity(leaf_count: usize) -> Self {
        let mut levels = Vec::new();
        let mut count = leaf_count;
        while count > 0 {
            levels.push(Vec::with_capacity(count));
            count /= 2;
        }
        let first = vec![0; levels.len()];
        Self { levels, first, pruned_size: 0 }
    }

    /// A tree of `size` leaves of which only the frontier is known: `frontier` holds the root of
    /// each complete subtree the RFC splits the first `size` leaves into, one per set bit of
    /// `size`, largest (leftmost) first, as [`frontier`](Self::frontier) returns them. Its root is
    /// the root the full tree had at `size`, and it grows exactly like the full tree.
    ///
    /// Errors: [`ProofError::BadProofLength`] if `frontier` does not hold one hash per set bit.
    pub fn from_frontier(size: u64, frontier: &[Hash]) -> Result<Self, ProofError> {
        let expected = size.count_ones() as usize;
        if frontier.len() != expected {
            return Err(ProofError::BadProofLength { expected, found: frontier.len() });
        }
        let mut tree = Self { levels: Vec::new(), first: Vec::new(), pruned_size: size };
        // Largest first: the highest set bit comes first.
        let mut subtrees = frontier.iter();
        let highest = if size == 0 { 0 } else { 64 - size.leading_zeros() };
        let mut by_level = vec![None; highest as usize];
        for level in (0..highest).rev() {
            if size & (1 << level) != 0 {
                by_level[level as usize] = subtrees.next().copied();
            }
        }
        for (level, subtree) in by_level.into_iter().enumerate() {
            let count = size >> level;
            match subtree {
                Some(hash) => {
                    tree.first.push(count - 1);
                    tree.levels.push(vec![hash]);
                }
                None => {
                    tree.first.push(count);
                    tree.levels.push(Vec::new());
                }
            }
        }
        Ok(tree)
    }

    /// The frontier of the first `tree_size` leaves (see [`from_frontier`](Self::from_frontier)).
    ///
    /// Errors: [`ProofError::SizeOutOfRange`] above [`len`](Self::len), [`ProofError::Pruned`] if
    /// the tree no longer holds it.
    pub fn frontier(&self, tree_size: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(tree_size)?;
        let mut subtrees = Vec::new();
        let mut start = 0;
        for level in (0..64u32).rev() {
            if tree_size & (1 << level) != 0 {
                subtrees.push(self.complete_subtree(level, start).ok_or(self.pruned())?);
                start += 1 << level;
            }
        }
        Ok(subtrees)
    }

    /// Leaves before this were dropped (see [`from_frontier`](Self::from_frontier)); 0 if none.
    pub fn pruned_size(&self) -> u64 {
        self.pruned_size
    }

    fn pruned(&self) -> ProofError {
        ProofError::Pruned { pruned_size: self.pruned_size }
    }

    /// Appends the leaf for the next event; `event_hash` becomes leaf number [`len`](Self::len).
    pub fn push(&mut self, event_hash: &Hash) {
        self.push_leaf_hash(leaf_hash(event_hash));
    }

    /// [`push`](Self::push) with the leaf hash ([`leaf_hash`] of the event
    /// hash) already computed, say on another thread.
    pub fn push_leaf_hash(&mut self, leaf: Hash) {
        let mut node = leaf;
        let mut level = 0;
        loop {
            if level == self.levels.len() {
                // No node of this size existed yet: the first one starts at leaf 0.
                self.levels.push(Vec::new());
                self.first.push(0);
            }
            let nodes = &mut self.levels[level];
            nodes.push(node);
            if (self.first[level] + nodes.len() as u64) % 2 == 1 {
                break;
            }
            // This node completed a pair, so their parent is complete too. Its left sibling is
            // stored even in a pruned tree: it is a frontier subtree or was pushed after it.
            let stored = nodes.len();
            node = node_hash(&nodes[stored - 2], &nodes[stored - 1]);
            level += 1;
        }
    }

    /// The number of leaves.
    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| self.first[0] + leaves.len() as u64)
    }

    /// `true` before the first [`push`](Self::push).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The root of the whole tree (of [`len`](Self::len) leaves).
    pub fn root(&self) -> Hash {
        match self.len() {
            0 => empty_root(),
            // The subtrees of the whole tree that end before the pruned size are frontier subtrees.
            size => self.range_hash(0, size).expect("a pruned tree keeps what its root needs"),
        }
    }

    /// The root the tree had when it held its first `tree_size` leaves.
    ///
    /// Errors: [`ProofError::SizeOutOfRange`] if `tree_size` is above [`len`](Self::len).
    pub fn root_at(&self, tree_size: u64) -> Result<Hash, ProofError> {
        self.check_size(tree_size)?;
        match tree_size {
            0 => Ok(empty_root()),
            size => self.range_hash(0, size).ok_or(self.pruned()),
        }
    }

    /// The proof that leaf `leaf_index` is in the tree of the first `tree_size` leaves
    /// (RFC 9162 §2.1.3.1), checked by [`verify_inclusion`](super::verify_inclusion).
    ///
    /// Errors: [`ProofError::SizeOutOfRange`] if `tree_size` is above [`len`](Self::len),
    /// [`ProofError::IndexOutOfRange`] if `leaf_index` is not below `tree_size`.
    pub fn inclusion_proof(&self, leaf_index: u64, tree_size: u64) -> Result<InclusionProof, ProofError> {
        self.check_size(tree_size)?;
        if leaf_index >= tree_size {
            return Err(ProofError::IndexOutOfRange { leaf_index, tree_size });
        }
        // PATH(m, D[n]) of the RFC, unrolled from the root down: at each split the sibling of the
        // half holding the leaf joins the path. The RFC lists the path leaf first, hence the reverse.
        let mut path = Vec::new();
        let (mut start, mut end) = (0, tree_size);
        while end - start > 1 {
            let split = start + split_point(end - start);
            if leaf_index < split {
                path.push(self.range_hash(split, end).ok_or(self.pruned())?);
                end = split;
            } else {
                path.push(self.range_hash(start, split).ok_or(self.pruned())?);
                start = split;
            }
        }
        path.reverse();
        InclusionProof::new(leaf_index, tree_size, path)
    }

    /// The proof that the tree of the first `old_size` leaves is a prefix of the tree of the first
    /// `new_size` leaves (RFC 9162 §2.1.4.1), checked by [`verify_consistency`](super::verify_consistency).
    /// The proof is empty when `old_size` is 0 or equals `new_size`.
    ///
    /// Errors: [`ProofError::SizeOutOfRange`] if `new_size` is above [`len`](Self::len) or
    /// `old_size` above `new_size`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<ConsistencyProof, ProofError> {
        self.check_size(new_size)?;
        if old_size > new_size {
            return Err(ProofError::SizeOutOfRange { size: old_size, limit: new_size });
        }
        let mut path = Vec::new();
        if old_size != 0 && old_size != new_size {
            // SUBPROOF(m, D[n], b) of the RFC, unrolled from the root down; `whole_old_tree` is its
            // `b`: true while the range is still the old tree itself, whose root the verifier knows.
            let (mut start, mut end) = (0, new_size);
            let mut whole_old_tree = true;
            loop {
                if old_size == end {
                    if !whole_old_tree {
                        path.push(self.range_hash(start, end).ok_or(self.pruned())?);
                    }
                    break;
                }
                let split = start + split_point(end - start);
                if old_size <= split {
                    path.push(self.range_hash(split, end).ok_or(self.pruned())?);
                    end = split;
                } else {
                    path.push(self.range_hash(start, split).ok_or(self.pruned())?);
                    start = split;
                    whole_old_tree = false;
                }
            }
            path.reverse();
        }
        ConsistencyProof::new(old_size, new_size, path)
    }

    fn check_size(&self, tree_size: u64) -> Result<(), ProofError> {
        let len = self.len();
        if tree_size > len {
            return Err(ProofError::SizeOutOfRange { size: tree_size, limit: len });
        }
        Ok(())
    }

    /// MTH of leaves `start..end`, for a non-empty range as the RFC recursion produces them: `start`
    /// is a multiple of the largest power of two not above `end - start`, and `end <= len`.
    ///
    /// The RFC splits off the largest power of two that is smaller than the size, so the range is
    /// a row of complete subtrees, one per set bit of its size, largest first, and its hash nests
    /// them to the right: `node(A, node(B, C))`. The fold therefore starts at the smallest one, at
    /// the end of the range. `None` if a pruned tree no longer holds one of the subtrees.
    fn range_hash(&self, start: u64, end: u64) -> Option<Hash> {
        debug_assert!(start < end && end <= self.len(), "range {start}..{end} outside the tree");
        let mut remaining = end - start;
        let mut subtree_end = end;
        let mut folded: Option<Hash> = None;
        while remaining != 0 {
            let level = remaining.trailing_zeros();
            let subtree_start = subtree_end - (1 << level);
            let subtree = self.complete_subtree(level, subtree_start)?;
            folded = Some(match folded {
                None => subtree,
                Some(right) => node_hash(&subtree, &right),
            });
            remaining &= remaining - 1;
            subtree_end = subtree_start;
        }
        Some(folded.unwrap_or_else(empty_root))
    }

    /// The stored hash of the complete subtree of `2^level` leaves starting at leaf `start`;
    /// `None` if the tree was pruned past it.
    fn complete_subtree(&self, level: u32, start: u64) -> Option<Hash> {
        debug_assert!(start % (1 << level) == 0, "subtree at {start} is not aligned to level {level}");
        let index = (start >> level).checked_sub(*self.first.get(level as usize)?)?;
        // Lossless: the index is below the stored count of a level, a `usize`.
        self.levels.get(level as usize)?.get(usize::try_from(index).ok()?).copied()
    }
}
