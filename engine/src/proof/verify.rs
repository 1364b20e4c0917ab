//! Standalone verification of inclusion and consistency proofs (RFC 9162 §2.1.3.2 and §2.1.4.2).
//!
//! Nothing here needs a [`MerkleTree`](super::MerkleTree): a client holding only a tree head
//! (size and root) checks a proof it received from a server it does not trust.

use super::encoding::{ConsistencyProof, InclusionProof};
use super::error::ProofError;
use super::hash::{empty_root, leaf_hash, node_hash, Hash, MAX_TREE_SIZE};

/// Checks that `event_hash` is the leaf at `leaf_index` of the tree of `tree_size` leaves whose
/// root is `root`.
///
/// `tree_size` and `root` must come from the same (signed) tree head: a root hash does not commit
/// to the size of its tree, so a proof may also verify against the same root under another size.
///
/// Errors: [`ProofError::ParameterMismatch`] if the proof was made for another index or size,
/// [`ProofError::IndexOutOfRange`] / [`ProofError::SizeOutOfRange`] for impossible parameters,
/// [`ProofError::BadProofLength`] and [`ProofError::RootMismatch`] if the proof is wrong.
pub fn verify_inclusion(
    event_hash: &Hash,
    leaf_index: u64,
    tree_size: u64,
    proof: &InclusionProof,
    root: &Hash,
) -> Result<(), ProofError> {
    expect_parameter("leaf index", leaf_index, proof.leaf_index())?;
    expect_parameter("tree size", tree_size, proof.tree_size())?;
    verify_inclusion_path(event_hash, leaf_index, tree_size, proof.path(), root)
}

/// Checks that the tree of `old_size` leaves with root `old_root` is a prefix of the tree of
/// `new_size` leaves with root `new_root`, i.e. that the log only appended in between.
///
/// Each size must come from the same (signed) tree head as its root. The empty tree
/// (`old_size == 0`, `old_root == empty_root()`) is a prefix of every tree and needs an empty
/// proof, as does `old_size == new_size` (then the roots must be equal).
///
/// Errors: as [`verify_inclusion`]; a [`ProofError::RootMismatch`] names the root that failed.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &ConsistencyProof,
) -> Result<(), ProofError> {
    expect_parameter("old size", old_size, proof.old_size())?;
    expect_parameter("new size", new_size, proof.new_size())?;
    verify_consistency_path(old_size, new_size, old_root, new_root, proof.path())
}

fn expect_parameter(field: &'static str, expected: u64, found: u64) -> Result<(), ProofError> {
    if expected == found {
        Ok(())
    } else {
        Err(ProofError::ParameterMismatch { field, expected, found })
    }
}

pub(crate) fn check_inclusion_parameters(leaf_index: u64, tree_size: u64) -> Result<(), ProofError> {
    if tree_size > MAX_TREE_SIZE {
        return Err(ProofError::SizeOutOfRange { size: tree_size, limit: MAX_TREE_SIZE });
    }
    if leaf_index >= tree_size {
        return Err(ProofError::IndexOutOfRange { leaf_index, tree_size });
    }
    Ok(())
}

pub(crate) fn check_consistency_parameters(old_size: u64, new_size: u64) -> Result<(), ProofError> {
    if new_size > MAX_TREE_SIZE {
        return Err(ProofError::SizeOutOfRange { size: new_size, limit: MAX_TREE_SIZE });
    }
    if old_size > new_size {
        return Err(ProofError::SizeOutOfRange { size: old_size, limit: new_size });
    }
    Ok(())
}

pub(crate) fn check_path_length(expected: usize, found: usize) -> Result<(), ProofError> {
    if expected == found {
        Ok(())
    } else {
        Err(ProofError::BadProofLength { expected, found })
    }
}

/// The number of hashes in the inclusion proof of `leaf_index` in a tree of `tree_size` leaves
/// (valid parameters assumed). The path has one hash per level where the leaf's subtree has a
/// sibling: `inner` levels below the point where the leaf's path leaves the right edge of the tree,
/// then one per set bit of the remaining index (left siblings on the right edge).
pub(crate) fn inclusion_path_length(leaf_index: u64, tree_size: u64) -> usize {
    let inner = 64 - (leaf_index ^ (tree_size - 1)).leading_zeros();
    let border = leaf_index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// The number of hashes in the consistency proof from `old_size` to `new_size` leaves (valid
/// parameters assumed). Such a proof is the inclusion proof of the last complete subtree of the old
/// tree in the new tree, preceded by that subtree's hash unless it is the whole old tree (old size a
/// power of two), which the verifier already knows as the old root.
pub(crate) fn consistency_path_length(old_size: u64, new_size: u64) -> usize {
    if old_size == 0 || old_size == new_size {
        return 0;
    }
    let level = old_size.trailing_zeros();
    let subtree_index = (old_size - 1) >> level;
    let subtree_count = ((new_size - 1) >> level) + 1;
    let path = inclusion_path_length(subtree_index, subtree_count);
    if subtree_index == 0 {
        path
    } else {
        path + 1
    }
}

pub(crate) fn verify_inclusion_path(
    event_hash: &Hash,
    leaf_index: u64,
    tree_size: u64,
    path: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    check_inclusion_parameters(leaf_index, tree_size)?;
    check_path_length(inclusion_path_length(leaf_index, tree_size), path.len())?;

    // RFC 9162 §2.1.3.2 step by step; `node_index` is the RFC's `fn`, `last_index` its `sn`: the
    // positions of the current node and of the tree's last node on the current level.
    let mut node_index = leaf_index;
    let mut last_index = tree_size - 1;
    let mut computed = leaf_hash(event_hash);
    for sibling in path {
        if last_index == 0 {
            // More hashes than levels; unreachable after the length check, kept as in the RFC so
            // the loop is correct on its own.
            return Err(ProofError::BadProofLength {
                expected: inclusion_path_length(leaf_index, tree_size),
                found: path.len(),
            });
        }
        if node_index & 1 == 1 || node_index == last_index {
            computed = node_hash(sibling, &computed);
            // A node that is the last of its level and a left child has no sibling there: it rises
            // unchanged until it is a right child, and `sibling` is the left sibling it meets
            // there. This catches the indices up with the levels it skipped.
            while node_index & 1 == 0 && node_index != 0 {
                node_index >>= 1;
                last_index >>= 1;
            }
        } else {
            computed = node_hash(&computed, sibling);
        }
        node_index >>= 1;
        last_index >>= 1;
    }
    if last_index != 0 {
        return Err(ProofError::BadProofLength {
            expected: inclusion_path_length(leaf_index, tree_size),
            found: path.len(),
        });
    }
    // Roots are public values, so a plain (non-constant-time) comparison leaks nothing.
    if computed != *root {
        return Err(ProofError::RootMismatch { which: "tree" });
    }
    Ok(())
}

pub(crate) fn verify_consistency_path(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    path: &[Hash],
) -> Result<(), ProofError> {
    check_consistency_parameters(old_size, new_size)?;
    let expected_length = consistency_path_length(old_size, new_size);
    check_path_length(expected_length, path.len())?;
    let bad_length = ProofError::BadProofLength { expected: expected_length, found: path.len() };

    if old_size == 0 {
        // Every tree extends the empty tree; what is left to check is that the caller's old root
        // really is the empty root, so a wrong tree head is not silently accepted.
        return if *old_root == empty_root() { Ok(()) } else { Err(ProofError::RootMismatch { which: "old" }) };
    }
    if old_size == new_size {
        return if old_root == new_root { Ok(()) } else { Err(ProofError::RootMismatch { which: "new" }) };
    }

    // RFC 9162 §2.1.4.2. When the old size is a power of two the old tree is itself a complete
    // subtree of the new one, so the proof omits its hash and the old root seeds the walk.
    let (seed, rest) = if old_size.is_power_of_two() {
        (old_root, path)
    } else {
        match path.split_first() {
            Some((first, rest)) => (first, rest),
            None => return Err(bad_length),
        }
    };
    let mut node_index = old_size - 1;
    let mut last_index = new_size - 1;
    while node_index & 1 == 1 {
        node_index >>= 1;
        last_index >>= 1;
    }
    let mut old_computed = *seed;
    let mut new_computed = *seed;
    for sibling in rest {
        if last_index == 0 {
            return Err(bad_length);
        }
        if node_index & 1 == 1 || node_index == last_index {
            // A left sibling is part of both trees.
            old_computed = node_hash(sibling, &old_computed);
            new_computed = node_hash(sibling, &new_computed);
            while node_index & 1 == 0 && node_index != 0 {
                node_index >>= 1;
                last_index >>= 1;
            }
        } else {
            // A right sibling holds only leaves appended after the old tree.
            new_computed = node_hash(&new_computed, sibling);
        }
        node_index >>= 1;
        last_index >>= 1;
    }
    if last_index != 0 {
        return Err(bad_length);
    }
    if old_computed != *old_root {
        return Err(ProofError::RootMismatch { which: "old" });
    }
    if new_computed != *new_root {
        return Err(ProofError::RootMismatch { which: "new" });
    }
    Ok(())
}
