//! Tests of the tree, the verifiers and the encodings, against a naive implementation of the
//! RFC 9162 definitions written here and against fixed vectors (also printed in `docs/security.md`).

use super::verify::{consistency_path_length, inclusion_path_length, verify_consistency_path, verify_inclusion_path};
use super::*;

/// Every size from 1 to this is checked exhaustively: enough for trees of up to 7 levels, with
/// every shape of right edge below 64 leaves and a few above.
const LARGEST_SIZE: u64 = 70;

fn event_hash(index: u64) -> Hash {
    blake3::hash(format!("event {index}").as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn hex_path(path: &[Hash]) -> Vec<String> {
    path.iter().map(|hash| hex(hash)).collect()
}

// The naive reference: the recursive definitions of RFC 9162 §2.1, on slices, hashing with its
// own BLAKE3 calls so that a mistake in `leaf_hash`/`node_hash` is not mirrored here.

fn naive_leaf(event_hash: &Hash) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[0x00]);
    hasher.update(event_hash);
    hasher.finalize().into()
}

fn naive_node(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The largest power of two smaller than `size`, by counting.
fn naive_split(size: usize) -> usize {
    let mut split = 1;
    while split * 2 < size {
        split *= 2;
    }
    split
}

fn naive_root(events: &[Hash]) -> Hash {
    match events {
        [] => blake3::hash(b"").into(),
        [only] => naive_leaf(only),
        _ => {
            let split = naive_split(events.len());
            naive_node(&naive_root(&events[..split]), &naive_root(&events[split..]))
        }
    }
}

fn naive_inclusion_path(leaf_index: usize, events: &[Hash]) -> Vec<Hash> {
    if events.len() <= 1 {
        return Vec::new();
    }
    let split = naive_split(events.len());
    let (mut path, sibling) = if leaf_index < split {
        (naive_inclusion_path(leaf_index, &events[..split]), naive_root(&events[split..]))
    } else {
        (naive_inclusion_path(leaf_index - split, &events[split..]), naive_root(&events[..split]))
    };
    path.push(sibling);
    path
}

fn naive_subproof(old_size: usize, events: &[Hash], whole_old_tree: bool) -> Vec<Hash> {
    if old_size == events.len() {
        return if whole_old_tree { Vec::new() } else { vec![naive_root(events)] };
    }
    let split = naive_split(events.len());
    let (mut path, sibling) = if old_size <= split {
        (naive_subproof(old_size, &events[..split], whole_old_tree), naive_root(&events[split..]))
    } else {
        (naive_subproof(old_size - split, &events[split..], false), naive_root(&events[..split]))
    };
    path.push(sibling);
    path
}

fn naive_consistency_path(old_size: usize, events: &[Hash]) -> Vec<Hash> {
    if old_size == 0 {
        Vec::new()
    } else {
        naive_subproof(old_size, events, true)
    }
}

/// The events `0..LARGEST_SIZE`, the tree over them and `roots[size]` from the naive reference.
struct Fixture {
    events: Vec<Hash>,
    tree: MerkleTree,
    roots: Vec<Hash>,
}

fn fixture() -> Fixture {
    let events: Vec<Hash> = (0..LARGEST_SIZE).map(event_hash).collect();
    let mut tree = MerkleTree::new();
    for event in &events {
        tree.push(event);
    }
    let roots = (0..=events.len()).map(|size| naive_root(&events[..size])).collect();
    Fixture { events, tree, roots }
}

fn flip(hash: &Hash, byte: usize) -> Hash {
    let mut flipped = *hash;
    flipped[byte] ^= 0x01;
    flipped
}

/// A small deterministic generator (SplitMix64), so the random tests are reproducible without a
/// dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut value = self.0;
        value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        value ^ (value >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn bytes(&mut self, length: usize) -> Vec<u8> {
        (0..length).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn hashing_rules_are_the_specified_ones() {
    let event = event_hash(0);
    assert_eq!(leaf_hash(&event), naive_leaf(&event));
    let other = event_hash(1);
    assert_eq!(node_hash(&event, &other), naive_node(&event, &other));
    assert_ne!(node_hash(&event, &other), node_hash(&other, &event));
    assert_eq!(hex(&empty_root()), "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
    assert_eq!(MerkleTree::new().root(), empty_root());
    assert!(MerkleTree::new().is_empty());
}

#[test]
fn incremental_roots_equal_the_naive_tree_hash() {
    let events: Vec<Hash> = (0..LARGEST_SIZE).map(event_hash).collect();
    let mut tree = MerkleTree::new();
    let mut preallocated = MerkleTree::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        tree.push(event);
        preallocated.push(event);
        assert_eq!(tree.len(), index as u64 + 1);
        assert_eq!(tree.root(), naive_root(&events[..=index]), "size {}", index + 1);
        assert_eq!(preallocated.root(), tree.root());
    }
    for size in 0..=LARGEST_SIZE {
        assert_eq!(tree.root_at(size), Ok(naive_root(&events[..size as usize])), "size {size}");
    }
    assert_eq!(
        tree.root_at(LARGEST_SIZE + 1),
        Err(ProofError::SizeOutOfRange { size: LARGEST_SIZE + 1, limit: LARGEST_SIZE })
    );
    assert!(format!("{tree:?}").contains("len: 70"));
}

#[test]
fn roots_hashed_level_by_level_equal_the_naive_tree_hash() {
    // Past 70 too: commits hold up to thousands of events, and levels of
    // every parity (odd nodes carried up) must come out the same.
    let events: Vec<Hash> = (0..1_100).map(event_hash).collect();
    for size in (0..=70).chain([127, 128, 129, 255, 256, 257, 999, 1000, 1_023, 1_024, 1_025, 1_100]) {
        assert_eq!(root_of(&events[..size]), naive_root(&events[..size]), "size {size}");
    }
}

#[test]
fn every_inclusion_proof_verifies() {
    let Fixture { events, tree, roots } = fixture();
    for size in 1..=LARGEST_SIZE {
        for index in 0..size {
            let proof = tree.inclusion_proof(index, size).expect("in range");
            assert_eq!((proof.leaf_index(), proof.tree_size()), (index, size));
            assert_eq!(proof.path(), naive_inclusion_path(index as usize, &events[..size as usize]));
            assert_eq!(proof.path().len(), inclusion_path_length(index, size));
            let event = &events[index as usize];
            assert_eq!(
                verify_inclusion(event, index, size, &proof, &roots[size as usize]),
                Ok(()),
                "{index} in {size}"
            );
        }
    }
}

#[test]
fn every_consistency_proof_verifies() {
    let Fixture { events, tree, roots } = fixture();
    for new_size in 1..=LARGEST_SIZE {
        for old_size in 0..=new_size {
            let proof = tree.consistency_proof(old_size, new_size).expect("in range");
            assert_eq!((proof.old_size(), proof.new_size()), (old_size, new_size));
            assert_eq!(proof.path(), naive_consistency_path(old_size as usize, &events[..new_size as usize]));
            assert_eq!(proof.path().len(), consistency_path_length(old_size, new_size));
            let (old_root, new_root) = (&roots[old_size as usize], &roots[new_size as usize]);
            assert_eq!(
                verify_consistency(old_size, new_size, old_root, new_root, &proof),
                Ok(()),
                "{old_size} -> {new_size}"
            );
        }
    }
}

#[test]
fn tampered_inclusion_proofs_roots_and_events_fail() {
    let Fixture { events, tree, roots } = fixture();
    for size in 1..=LARGEST_SIZE {
        let root = &roots[size as usize];
        for index in 0..size {
            let proof = tree.inclusion_proof(index, size).expect("in range");
            let event = &events[index as usize];
            for position in 0..proof.path().len() {
                for byte in 0..32 {
                    let mut path = proof.path().to_vec();
                    path[position] = flip(&path[position], byte);
                    let tampered = InclusionProof::new(index, size, path).expect("same shape");
                    assert_eq!(
                        verify_inclusion(event, index, size, &tampered, root),
                        Err(ProofError::RootMismatch { which: "tree" })
                    );
                }
            }
            for byte in 0..32 {
                assert!(verify_inclusion(event, index, size, &proof, &flip(root, byte)).is_err());
                assert!(verify_inclusion(&flip(event, byte), index, size, &proof, root).is_err());
            }
        }
    }
}

#[test]
fn tampered_consistency_proofs_and_roots_fail() {
    let Fixture { tree, roots, .. } = fixture();
    for new_size in 1..=LARGEST_SIZE {
        for old_size in 0..=new_size {
            let proof = tree.consistency_proof(old_size, new_size).expect("in range");
            let (old_root, new_root) = (&roots[old_size as usize], &roots[new_size as usize]);
            for position in 0..proof.path().len() {
                for byte in 0..32 {
                    let mut path = proof.path().to_vec();
                    path[position] = flip(&path[position], byte);
                    let tampered = ConsistencyProof::new(old_size, new_size, path).expect("same shape");
                    assert!(matches!(
                        verify_consistency(old_size, new_size, old_root, new_root, &tampered),
                        Err(ProofError::RootMismatch { .. })
                    ));
                }
            }
            for byte in 0..32 {
                let result = verify_consistency(old_size, new_size, &flip(old_root, byte), new_root, &proof);
                assert!(matches!(result, Err(ProofError::RootMismatch { .. })), "{old_size} -> {new_size}");
                // Every tree extends the empty one, whatever its root: nothing to check there.
                if old_size != 0 {
                    let result = verify_consistency(old_size, new_size, old_root, &flip(new_root, byte), &proof);
                    assert!(matches!(result, Err(ProofError::RootMismatch { .. })), "{old_size} -> {new_size}");
                }
            }
        }
    }
}

#[test]
fn wrong_index_or_size_fails_inclusion() {
    let Fixture { events, tree, roots } = fixture();
    for size in 1..=LARGEST_SIZE {
        for index in 0..size {
            let proof = tree.inclusion_proof(index, size).expect("in range");
            let event = &events[index as usize];
            let root = &roots[size as usize];
            // Through the public API the proof's own parameters must match.
            assert_eq!(
                verify_inclusion(event, index ^ 1, size, &proof, root),
                Err(ProofError::ParameterMismatch { field: "leaf index", expected: index ^ 1, found: index })
            );
            assert_eq!(
                verify_inclusion(event, index, size + 1, &proof, root),
                Err(ProofError::ParameterMismatch { field: "tree size", expected: size + 1, found: size })
            );
            // The bare path, moved to any other leaf of the same tree, fails.
            for other_index in (0..size).filter(|&other| other != index) {
                assert!(verify_inclusion_path(event, other_index, size, proof.path(), root).is_err());
            }
            // The bare path, checked against another tree head (size and its root), fails unless it
            // happens to be that tree's proof of the same leaf too.
            for other_size in (index + 1..=LARGEST_SIZE).filter(|&other| other != size) {
                let other_proof = tree.inclusion_proof(index, other_size).expect("in range");
                if other_proof.path() != proof.path() {
                    let other_root = &roots[other_size as usize];
                    assert!(verify_inclusion_path(event, index, other_size, proof.path(), other_root).is_err());
                }
            }
            assert_eq!(
                verify_inclusion_path(event, size, size, proof.path(), root),
                Err(ProofError::IndexOutOfRange { leaf_index: size, tree_size: size })
            );
        }
    }
    assert_eq!(
        verify_inclusion_path(&events[0], 0, MAX_TREE_SIZE + 1, &[], &roots[1]),
        Err(ProofError::SizeOutOfRange { size: MAX_TREE_SIZE + 1, limit: MAX_TREE_SIZE })
    );
}

#[test]
fn wrong_sizes_fail_consistency() {
    let Fixture { tree, roots, .. } = fixture();
    for new_size in 1..=LARGEST_SIZE {
        for old_size in 0..=new_size {
            let proof = tree.consistency_proof(old_size, new_size).expect("in range");
            let (old_root, new_root) = (&roots[old_size as usize], &roots[new_size as usize]);
            assert!(matches!(
                verify_consistency(old_size + 1, new_size, old_root, new_root, &proof),
                Err(ProofError::ParameterMismatch { field: "old size", .. })
            ));
            assert!(matches!(
                verify_consistency(old_size, new_size + 1, old_root, new_root, &proof),
                Err(ProofError::ParameterMismatch { field: "new size", .. })
            ));
            // The bare path between other tree heads (sizes with their roots) fails unless it is
            // also their proof.
            for other_old in (0..=new_size).filter(|&other| other != old_size) {
                let other_proof = tree.consistency_proof(other_old, new_size).expect("in range");
                if other_proof.path() != proof.path() {
                    let other_root = &roots[other_old as usize];
                    assert!(
                        verify_consistency_path(other_old, new_size, other_root, new_root, proof.path()).is_err(),
                        "{old_size} -> {new_size} as {other_old} -> {new_size}"
                    );
                }
            }
            for other_new in (old_size.max(1)..=LARGEST_SIZE).filter(|&other| other != new_size) {
                let other_proof = tree.consistency_proof(old_size, other_new).expect("in range");
                if other_proof.path() != proof.path() {
                    let other_root = &roots[other_new as usize];
                    assert!(
                        verify_consistency_path(old_size, other_new, old_root, other_root, proof.path()).is_err(),
                        "{old_size} -> {new_size} as {old_size} -> {other_new}"
                    );
                }
            }
        }
    }
    assert_eq!(
        verify_consistency_path(5, 4, &roots[5], &roots[4], &[]),
        Err(ProofError::SizeOutOfRange { size: 5, limit: 4 })
    );
    assert_eq!(
        verify_consistency_path(1, MAX_TREE_SIZE + 1, &roots[1], &roots[2], &[]),
        Err(ProofError::SizeOutOfRange { size: MAX_TREE_SIZE + 1, limit: MAX_TREE_SIZE })
    );
}

/// Not a defect but a property of RFC 9162 that callers must respect: the root does not commit to
/// the tree size. The proof of leaf 0 in the tree of 4 also "verifies" as a proof in a tree of 3
/// against the root of 4. Which is why sizes and roots must come from the same signed tree head.
#[test]
fn the_root_does_not_commit_to_the_tree_size() {
    let Fixture { events, tree, roots } = fixture();
    let proof = tree.inclusion_proof(0, 4).expect("in range");
    assert_eq!(verify_inclusion_path(&events[0], 0, 3, proof.path(), &roots[4]), Ok(()));
    assert!(verify_inclusion_path(&events[0], 0, 3, proof.path(), &roots[3]).is_err());
}

#[test]
fn tree_rejects_out_of_range_queries() {
    let Fixture { tree, .. } = fixture();
    let past_end = LARGEST_SIZE + 1;
    assert_eq!(
        tree.inclusion_proof(0, past_end),
        Err(ProofError::SizeOutOfRange { size: past_end, limit: LARGEST_SIZE })
    );
    assert_eq!(tree.inclusion_proof(5, 5), Err(ProofError::IndexOutOfRange { leaf_index: 5, tree_size: 5 }));
    assert_eq!(tree.inclusion_proof(0, 0), Err(ProofError::IndexOutOfRange { leaf_index: 0, tree_size: 0 }));
    assert_eq!(
        tree.consistency_proof(1, past_end),
        Err(ProofError::SizeOutOfRange { size: past_end, limit: LARGEST_SIZE })
    );
    assert_eq!(tree.consistency_proof(6, 5), Err(ProofError::SizeOutOfRange { size: 6, limit: 5 }));
    assert_eq!(MerkleTree::new().consistency_proof(0, 0).map(|proof| proof.path().len()), Ok(0));
    assert_eq!(MerkleTree::new().root_at(0), Ok(empty_root()));
}

#[test]
fn path_lengths_stay_within_the_encoding_bound() {
    let mut random = SplitMix(7);
    let mut longest_consistency = 0;
    for _ in 0..10_000 {
        let new_size = match random.below(3) {
            0 => MAX_TREE_SIZE,
            1 => MAX_TREE_SIZE - random.below(1 << 20),
            _ => random.below(MAX_TREE_SIZE) + 1,
        };
        let old_size = random.below(new_size) + 1;
        assert!(inclusion_path_length(old_size - 1, new_size) <= 63);
        longest_consistency = longest_consistency.max(consistency_path_length(old_size, new_size));
    }
    assert!(longest_consistency <= MAX_PATH_LEN);
    // The bound is reached: the last leaf of an odd old size, then 63 levels above it.
    assert_eq!(consistency_path_length(3, MAX_TREE_SIZE), MAX_PATH_LEN);
    let longest = ConsistencyProof::new(3, MAX_TREE_SIZE, vec![[7; 32]; MAX_PATH_LEN]).expect("64 hashes");
    assert_eq!(ConsistencyProof::decode(&longest.encode()), Ok(longest));
    let deepest = InclusionProof::new(MAX_TREE_SIZE - 1, MAX_TREE_SIZE, vec![[9; 32]; 63]).expect("63 hashes");
    assert_eq!(InclusionProof::decode(&deepest.encode()), Ok(deepest));
}

fn sample_signed_tree_head(signature_len: usize) -> SignedTreeHead {
    let head = TreeHead {
        chain_id: blake3::hash(b"chain").into(),
        tree_size: 7,
        root: fixture().roots[7],
        timestamp_us: 1_700_000_000_000_000,
    };
    SignedTreeHead::new(head, blake3::hash(b"key").into(), vec![0xab; signature_len]).expect("within bounds")
}

#[test]
fn encodings_round_trip() {
    let Fixture { tree, .. } = fixture();
    for size in 1..=LARGEST_SIZE {
        for index in 0..size {
            let proof = tree.inclusion_proof(index, size).expect("in range");
            let bytes = proof.encode();
            assert_eq!(bytes.len(), 18 + 32 * proof.path().len());
            assert_eq!(InclusionProof::decode(&bytes), Ok(proof));
        }
        for old_size in 0..=size {
            let proof = tree.consistency_proof(old_size, size).expect("in range");
            let bytes = proof.encode();
            assert_eq!(bytes.len(), 18 + 32 * proof.path().len());
            assert_eq!(ConsistencyProof::decode(&bytes), Ok(proof));
        }
    }
    for signature_len in [0, 1, 64, 4627, MAX_SIGNATURE_LEN] {
        let head = sample_signed_tree_head(signature_len);
        let bytes = head.encode();
        assert_eq!(bytes.len(), 115 + signature_len);
        assert_eq!(SignedTreeHead::decode(&bytes), Ok(head));
    }
}

/// The three kinds of valid encodings the decode tests start from.
fn valid_encodings() -> Vec<Vec<u8>> {
    let Fixture { tree, .. } = fixture();
    vec![
        tree.inclusion_proof(2, 7).expect("in range").encode(),
        tree.inclusion_proof(0, 1).expect("in range").encode(),
        tree.consistency_proof(3, 7).expect("in range").encode(),
        tree.consistency_proof(7, 7).expect("in range").encode(),
        sample_signed_tree_head(5).encode(),
        sample_signed_tree_head(0).encode(),
    ]
}

/// Decodes `bytes` with all three decoders, checking that whatever decodes re-encodes to the same
/// bytes (the encodings are canonical), and returns whether any decoder accepted them.
fn decode_all(bytes: &[u8]) -> bool {
    let mut accepted = false;
    if let Ok(proof) = InclusionProof::decode(bytes) {
        assert_eq!(proof.encode(), bytes);
        accepted = true;
    }
    if let Ok(proof) = ConsistencyProof::decode(bytes) {
        assert_eq!(proof.encode(), bytes);
        accepted = true;
    }
    if let Ok(head) = SignedTreeHead::decode(bytes) {
        assert_eq!(head.encode(), bytes);
        accepted = true;
    }
    accepted
}

#[test]
fn decode_rejects_truncated_and_extended_input() {
    let Fixture { tree, .. } = fixture();
    let inclusion = tree.inclusion_proof(2, 7).expect("in range").encode();
    let consistency = tree.consistency_proof(3, 7).expect("in range").encode();
    let signed = sample_signed_tree_head(5).encode();
    for end in 0..inclusion.len() {
        assert!(matches!(InclusionProof::decode(&inclusion[..end]), Err(ProofError::Truncated { .. })), "{end}");
    }
    for end in 0..consistency.len() {
        assert!(matches!(ConsistencyProof::decode(&consistency[..end]), Err(ProofError::Truncated { .. })), "{end}");
    }
    for end in 0..signed.len() {
        assert!(matches!(SignedTreeHead::decode(&signed[..end]), Err(ProofError::Truncated { .. })), "{end}");
    }
    for extra in [1, 31, 32, 1000] {
        let mut extended = inclusion.clone();
        extended.resize(inclusion.len() + extra, 0);
        assert_eq!(InclusionProof::decode(&extended), Err(ProofError::TrailingBytes { count: extra }));
        let mut extended = consistency.clone();
        extended.resize(consistency.len() + extra, 0);
        assert_eq!(ConsistencyProof::decode(&extended), Err(ProofError::TrailingBytes { count: extra }));
        let mut extended = signed.clone();
        extended.resize(signed.len() + extra, 0);
        assert_eq!(SignedTreeHead::decode(&extended), Err(ProofError::TrailingBytes { count: extra }));
    }
}

#[test]
fn decode_rejects_adversarial_input() {
    let truncated_at_start = Some(ProofError::Truncated { offset: 0, needed: 1, available: 0 });
    assert_eq!(InclusionProof::decode(&[]).err(), truncated_at_start);
    assert_eq!(ConsistencyProof::decode(&[]).err(), truncated_at_start);
    assert_eq!(SignedTreeHead::decode(&[]).err(), truncated_at_start);

    for bytes in valid_encodings() {
        for version in [0, 2, 255] {
            let mut changed = bytes.clone();
            changed[0] = version;
            assert!(!decode_all(&changed));
            assert_eq!(InclusionProof::decode(&changed), Err(ProofError::UnsupportedVersion { version }));
            assert_eq!(SignedTreeHead::decode(&changed[..1]), Err(ProofError::UnsupportedVersion { version }));
        }
    }

    // A proof header: version, two u64 fields, then a hostile count byte.
    let proof_header = |first: u64, second: u64, count: u8| {
        let mut bytes = vec![ENCODING_VERSION];
        bytes.extend_from_slice(&first.to_le_bytes());
        bytes.extend_from_slice(&second.to_le_bytes());
        bytes.push(count);
        bytes
    };
    for count in [65, 128, 255] {
        let too_long =
            Some(ProofError::TooLong { what: "proof path", length: usize::from(count), limit: MAX_PATH_LEN });
        let mut bytes = proof_header(2, 7, count);
        assert_eq!(InclusionProof::decode(&bytes).err(), too_long);
        assert_eq!(ConsistencyProof::decode(&bytes).err(), too_long);
        bytes.resize(bytes.len() + usize::from(count) * 32, 0);
        assert_eq!(InclusionProof::decode(&bytes).err(), too_long);
    }
    assert_eq!(
        InclusionProof::decode(&proof_header(2, 7, 64)),
        Err(ProofError::Truncated { offset: 18, needed: 64 * 32, available: 0 })
    );
    let with_hashes = |first: u64, second: u64, count: u8| {
        let mut bytes = proof_header(first, second, count);
        bytes.resize(bytes.len() + usize::from(count) * 32, 0x5a);
        bytes
    };
    assert_eq!(
        InclusionProof::decode(&with_hashes(2, 7, 2)),
        Err(ProofError::BadProofLength { expected: 3, found: 2 })
    );
    assert_eq!(
        InclusionProof::decode(&with_hashes(2, 7, 4)),
        Err(ProofError::BadProofLength { expected: 3, found: 4 })
    );
    assert_eq!(
        InclusionProof::decode(&with_hashes(7, 7, 3)),
        Err(ProofError::IndexOutOfRange { leaf_index: 7, tree_size: 7 })
    );
    assert_eq!(
        InclusionProof::decode(&with_hashes(0, 0, 0)),
        Err(ProofError::IndexOutOfRange { leaf_index: 0, tree_size: 0 })
    );
    assert_eq!(
        InclusionProof::decode(&with_hashes(0, u64::MAX, 64)),
        Err(ProofError::SizeOutOfRange { size: u64::MAX, limit: MAX_TREE_SIZE })
    );
    assert_eq!(ConsistencyProof::decode(&with_hashes(8, 7, 1)), Err(ProofError::SizeOutOfRange { size: 8, limit: 7 }));
    assert_eq!(
        ConsistencyProof::decode(&with_hashes(3, 7, 3)),
        Err(ProofError::BadProofLength { expected: 4, found: 3 })
    );
    assert_eq!(
        ConsistencyProof::decode(&with_hashes(7, 7, 1)),
        Err(ProofError::BadProofLength { expected: 0, found: 1 })
    );

    // A signed tree head with a hostile signature length or tree size.
    let signed = sample_signed_tree_head(0).encode();
    for length in [MAX_SIGNATURE_LEN as u16 + 1, u16::MAX] {
        let mut bytes = signed.clone();
        bytes[113..115].copy_from_slice(&length.to_le_bytes());
        bytes.resize(bytes.len() + usize::from(length), 0);
        assert_eq!(
            SignedTreeHead::decode(&bytes),
            Err(ProofError::TooLong { what: "signature", length: usize::from(length), limit: MAX_SIGNATURE_LEN })
        );
    }
    let mut bytes = signed.clone();
    bytes[113..115].copy_from_slice(&(MAX_SIGNATURE_LEN as u16).to_le_bytes());
    bytes.extend_from_slice(&[1; 10]);
    assert_eq!(
        SignedTreeHead::decode(&bytes),
        Err(ProofError::Truncated { offset: 115, needed: MAX_SIGNATURE_LEN, available: 10 })
    );
    let mut bytes = signed;
    bytes[33..41].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(
        SignedTreeHead::decode(&bytes),
        Err(ProofError::SizeOutOfRange { size: u64::MAX, limit: MAX_TREE_SIZE })
    );

    let head = *sample_signed_tree_head(0).head();
    assert!(matches!(
        SignedTreeHead::new(head, [0; 32], vec![0; MAX_SIGNATURE_LEN + 1]),
        Err(ProofError::TooLong { what: "signature", .. })
    ));
    let oversized = TreeHead { tree_size: MAX_TREE_SIZE + 1, ..head };
    assert!(matches!(SignedTreeHead::new(oversized, [0; 32], Vec::new()), Err(ProofError::SizeOutOfRange { .. })));
}

#[test]
fn decode_never_panics_on_random_or_mutated_input() {
    let mut random = SplitMix(0x5eed);
    for _ in 0..20_000 {
        let length = if random.below(10) == 0 { random.below(3_000) } else { random.below(200) } as usize;
        let mut bytes = random.bytes(length);
        // Mostly get past the version byte, and often give a plausible count, to reach deeper code.
        if !bytes.is_empty() && random.below(4) != 0 {
            bytes[0] = ENCODING_VERSION;
        }
        if bytes.len() > 17 && random.below(2) == 0 {
            bytes[17] = random.below(8) as u8;
        }
        decode_all(&bytes);
    }
    let valid = valid_encodings();
    for _ in 0..20_000 {
        let mut bytes = valid[random.below(valid.len() as u64) as usize].clone();
        for _ in 0..=random.below(3) {
            let position = random.below(bytes.len() as u64) as usize;
            bytes[position] = random.next() as u8;
        }
        if random.below(4) == 0 {
            bytes.truncate(random.below(bytes.len() as u64 + 1) as usize);
        }
        decode_all(&bytes);
    }
}

/// Changing any byte of an encoded proof makes it fail to decode or fail to verify against what
/// the verifier expects.
#[test]
fn tampered_encodings_fail() {
    let Fixture { events, tree, roots } = fixture();
    for size in 1..=16u64 {
        for index in 0..size {
            let bytes = tree.inclusion_proof(index, size).expect("in range").encode();
            for position in 0..bytes.len() {
                let mut tampered = bytes.clone();
                tampered[position] ^= 0x01;
                let result = InclusionProof::decode(&tampered).and_then(|proof| {
                    verify_inclusion(&events[index as usize], index, size, &proof, &roots[size as usize])
                });
                assert!(result.is_err(), "{index} in {size}, byte {position}");
            }
        }
        for old_size in 0..=size {
            let bytes = tree.consistency_proof(old_size, size).expect("in range").encode();
            for position in 0..bytes.len() {
                let mut tampered = bytes.clone();
                tampered[position] ^= 0x01;
                let result = ConsistencyProof::decode(&tampered).and_then(|proof| {
                    verify_consistency(old_size, size, &roots[old_size as usize], &roots[size as usize], &proof)
                });
                assert!(result.is_err(), "{old_size} -> {size}, byte {position}");
            }
        }
    }
}

#[test]
fn signing_bytes_are_canonical_and_domain_separated() {
    let signed = sample_signed_tree_head(0);
    let head = signed.head();
    let bytes = head.signing_bytes();
    assert_eq!(bytes.len(), TREE_HEAD_SIGNING_LEN);
    assert_eq!(TREE_HEAD_SIGNING_LEN, 97);
    assert_eq!(&bytes[..17], b"ATE tree head v1\0");
    assert_eq!(&bytes[17..49], &head.chain_id);
    assert_eq!(&bytes[49..57], &head.tree_size.to_le_bytes());
    assert_eq!(&bytes[57..89], &head.root);
    assert_eq!(&bytes[89..97], &head.timestamp_us.to_le_bytes());
    let changed = [
        TreeHead { chain_id: flip(&head.chain_id, 0), ..*head },
        TreeHead { tree_size: head.tree_size + 1, ..*head },
        TreeHead { root: flip(&head.root, 31), ..*head },
        TreeHead { timestamp_us: head.timestamp_us + 1, ..*head },
    ];
    for other in changed {
        assert_ne!(other.signing_bytes(), bytes);
    }
}

/// The vectors of `docs/security.md`: event hashes are BLAKE3 of the ASCII strings "event 0" to
/// "event 6". A re-implementation that reproduces these agrees with this one byte for byte.
#[test]
fn fixed_test_vectors() {
    let Fixture { tree, .. } = fixture();
    let tree_root = |size| hex(&tree.root_at(size).expect("in range"));
    let events = [
        "a059c5031a74ad1a810fc2e4c6972d72c83a09fb08af45f99d3f1e97be103150",
        "5c144656da082f61b177f6f0e24ae42d6726193fbf862d582e7bcbf425b7c751",
        "b7c28f5eef95c76c362c703c8f903e45230e5f943196176fe9213092d0ccb281",
        "d2ed76630c45a66dfec856463930b4a165f562e311acc1b8e7fde6fc055d0931",
        "fb7790fbc069547b761d863ccb1394ef3e78198a2d8ee5c5aeddaa8a41aad208",
        "6eeb53c5b8d0232f68f4a97e0d3c3d7b886c5996ef4c8cc0c0e542b52c92c570",
        "1ba327d25f14074823b3498e11c46b59129c75e1b2439215343d324ced26b4c2",
    ];
    for (index, expected) in events.iter().enumerate() {
        assert_eq!(hex(&event_hash(index as u64)), *expected);
    }
    assert_eq!(hex(&leaf_hash(&event_hash(0))), "ba6d3439de9a25fd08c8de4ded8701c017c3cb82c0afde669820b6b9f3cca3a5");
    assert_eq!(tree_root(0), "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
    assert_eq!(tree_root(1), "ba6d3439de9a25fd08c8de4ded8701c017c3cb82c0afde669820b6b9f3cca3a5");
    assert_eq!(tree_root(2), "046e9565f1f7a40f58c213fd22f002723d946b1d3eb2fc00afaa855a7efe8188");
    assert_eq!(tree_root(3), "ec7700a0229c73595daba5c4a99b36e89f1d658a4de44d3fa5c3d41c305260df");
    assert_eq!(tree_root(4), "1df4d1f09f7257ef26aa44a391cdbd0f6104896bed3c63341290655c42be0755");
    assert_eq!(tree_root(7), "294fbe44798e12f53935b14963472b451c4bca2fe917b166660c46bff86f290d");

    let inclusion = tree.inclusion_proof(2, 7).expect("in range");
    assert_eq!(
        hex_path(inclusion.path()),
        [
            "de607c9f443f1818da2ba11a86670fbd733ce3237db110c69b70352dec1bffad",
            "046e9565f1f7a40f58c213fd22f002723d946b1d3eb2fc00afaa855a7efe8188",
            "3a7267948f39df39ea971ebc37f1aa61cacb7fcbccd51c573c8ff67d2ee469b5",
        ]
    );
    assert_eq!(
        hex(&inclusion.encode()),
        concat!(
            "01",
            "0200000000000000",
            "0700000000000000",
            "03",
            "de607c9f443f1818da2ba11a86670fbd733ce3237db110c69b70352dec1bffad",
            "046e9565f1f7a40f58c213fd22f002723d946b1d3eb2fc00afaa855a7efe8188",
            "3a7267948f39df39ea971ebc37f1aa61cacb7fcbccd51c573c8ff67d2ee469b5",
        )
    );

    let consistency = tree.consistency_proof(3, 7).expect("in range");
    assert_eq!(
        hex_path(consistency.path()),
        [
            "6b9a3fabd181f6dad6014b588820f68dacae0d74cfe410351617d0e146d0cdef",
            "de607c9f443f1818da2ba11a86670fbd733ce3237db110c69b70352dec1bffad",
            "046e9565f1f7a40f58c213fd22f002723d946b1d3eb2fc00afaa855a7efe8188",
            "3a7267948f39df39ea971ebc37f1aa61cacb7fcbccd51c573c8ff67d2ee469b5",
        ]
    );
    assert_eq!(
        hex(&consistency.encode()),
        concat!(
            "01",
            "0300000000000000",
            "0700000000000000",
            "04",
            "6b9a3fabd181f6dad6014b588820f68dacae0d74cfe410351617d0e146d0cdef",
            "de607c9f443f1818da2ba11a86670fbd733ce3237db110c69b70352dec1bffad",
            "046e9565f1f7a40f58c213fd22f002723d946b1d3eb2fc00afaa855a7efe8188",
            "3a7267948f39df39ea971ebc37f1aa61cacb7fcbccd51c573c8ff67d2ee469b5",
        )
    );

    // chain_id = BLAKE3("chain"), key_id = BLAKE3("key"), tree size 7 with its root,
    // timestamp 1 700 000 000 000 000 µs, signature four 0xab bytes.
    let signed = sample_signed_tree_head(4);
    assert_eq!(
        hex(&signed.head().signing_bytes()),
        concat!(
            "4154452074726565206865616420763100",
            "ed2314e8b37e504072414a91c8c56aaccfb48f5d3aac7ac45ccf275f2984ebee",
            "0700000000000000",
            "294fbe44798e12f53935b14963472b451c4bca2fe917b166660c46bff86f290d",
            "00401e18240a0600",
        )
    );
    assert_eq!(
        hex(&signed.encode()),
        concat!(
            "01",
            "ed2314e8b37e504072414a91c8c56aaccfb48f5d3aac7ac45ccf275f2984ebee",
            "0700000000000000",
            "294fbe44798e12f53935b14963472b451c4bca2fe917b166660c46bff86f290d",
            "00401e18240a0600",
            "ff8e2bab3b26e0c127002127905539b47eb421de85d554e15f55a446459b52b4",
            "0400",
            "abababab",
        )
    );
}

/// A tree started from the frontier of its first `pruned` leaves answers every query about later
/// leaves exactly like the full tree, including after a second pruning from its own frontier, and
/// refuses (rather than mis-answers) queries that need dropped leaves.
#[test]
fn a_tree_started_from_a_frontier_answers_like_the_full_tree() {
    for size in 1..=LARGEST_SIZE {
        let mut full = MerkleTree::new();
        for index in 0..size {
            full.push(&event_hash(index));
        }
        for pruned in 0..=size {
            let mut tree = MerkleTree::from_frontier(pruned, &full.frontier(pruned).unwrap()).unwrap();
            assert_eq!(tree.root_at(pruned).unwrap(), full.root_at(pruned).unwrap(), "size {size}, pruned {pruned}");
            for index in pruned..size {
                tree.push(&event_hash(index));
                assert_eq!(tree.root(), full.root_at(index + 1).unwrap());
            }
            assert_eq!(tree.len(), size);
            for tree_size in pruned.max(1)..=size {
                assert_eq!(tree.root_at(tree_size), full.root_at(tree_size));
                for leaf in pruned..tree_size {
                    assert_eq!(tree.inclusion_proof(leaf, tree_size), full.inclusion_proof(leaf, tree_size));
                }
                for old_size in pruned..=tree_size {
                    assert_eq!(
                        tree.consistency_proof(old_size, tree_size),
                        full.consistency_proof(old_size, tree_size)
                    );
                }
            }
            // Below the pruned size an answer may still be possible (from frontier subtrees); it
            // is then the right one.
            let dropped = Err(ProofError::Pruned { pruned_size: pruned });
            for old_size in 1..pruned {
                let root = tree.root_at(old_size);
                assert!(root == full.root_at(old_size) || root == dropped, "size {size}, pruned {pruned}");
                let proof = tree.consistency_proof(old_size, size);
                assert!(
                    proof == full.consistency_proof(old_size, size) || proof.as_ref().err() == dropped.as_ref().err()
                );
                let inclusion = tree.inclusion_proof(old_size - 1, size);
                assert!(
                    inclusion == full.inclusion_proof(old_size - 1, size)
                        || inclusion.as_ref().err() == dropped.as_ref().err()
                );
            }
            if pruned == 3 && size == 3 {
                assert_eq!(tree.root_at(1), dropped, "leaf 0 alone is not a frontier subtree of 3");
            }
            // Pruning again, from the pruned tree's own frontier.
            for again in pruned..=size {
                let twice = MerkleTree::from_frontier(again, &tree.frontier(again).unwrap()).unwrap();
                assert_eq!(twice.root_at(again).unwrap(), full.root_at(again).unwrap());
            }
        }
    }
}

#[test]
fn a_frontier_of_the_wrong_length_is_refused() {
    assert_eq!(
        MerkleTree::from_frontier(5, &[[0; 32]]).unwrap_err(),
        ProofError::BadProofLength { expected: 2, found: 1 }
    );
}
