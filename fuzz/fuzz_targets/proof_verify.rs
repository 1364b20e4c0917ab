//! Proofs and signed tree heads from an untrusted server: decoding and
//! checking any bytes gives a verdict or a typed error, never a panic.
#![no_main]

use ate::proof::{verify_consistency, verify_inclusion, ConsistencyProof, InclusionProof, SignedTreeHead};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 64 {
        return;
    }
    let (hashes, proof) = data.split_at(64);
    let (first, second) = hashes.split_at(32);
    let first: [u8; 32] = first.try_into().unwrap();
    let second: [u8; 32] = second.try_into().unwrap();
    if let Ok(inclusion) = InclusionProof::decode(proof) {
        let _ = verify_inclusion(&first, inclusion.leaf_index(), inclusion.tree_size(), &inclusion, &second);
    }
    if let Ok(consistency) = ConsistencyProof::decode(proof) {
        let (old, new) = (consistency.old_size(), consistency.new_size());
        let _ = verify_consistency(old, new, &first, &second, &consistency);
    }
    let _ = SignedTreeHead::decode(proof);
});
