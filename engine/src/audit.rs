//! Audit bundles: a range of a chain exported as one self-contained file
//! that an auditor checks offline, on another machine, with no access to
//! the server: the records as stored (whole commits), an inclusion proof of
//! every event in a tree head signed by the exporter, and the public keys
//! that signed the commits. `ate export` writes one, `ate verify-bundle`
//! checks it (docs/worm.md, "Audit export").
//!
//! Layout (postcard, version 1):
//! ```text
//! AuditBundle { format u16, chain, chain_id [32], first_sequence u64,
//!               records (bytes, stored records back to back),
//!               proofs [InclusionProof encoding, one per event],
//!               tree_head (SignedTreeHead encoding), head_key (PublicSignKey encoding),
//!               signing_keys [PublicSignKey encoding] }
//! ```

use crate::chain::Chain;
use crate::crypto::{KeyId, PrivateSignKey, PublicSignKey};
use crate::format::{decode_record, EventKind};
use crate::proof::{verify_inclusion, InclusionProof, SignedTreeHead};
use crate::trust::{verify_commit_signatures, CommitSignature, EventContent, SignedEvent};
use crate::{AteError, Result};
use serde::{Deserialize, Serialize};

/// Bundle format version written by this build.
pub const BUNDLE_FORMAT: u16 = 1;
/// Largest bundle `verify_bundle` accepts (and `export` writes).
pub const MAX_BUNDLE_BYTES: usize = 1 << 30;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditBundle {
    pub format: u16,
    pub chain: String,
    pub chain_id: [u8; 32],
    pub first_sequence: u64,
    #[serde(with = "serde_bytes")]
    pub records: Vec<u8>,
    pub proofs: Vec<serde_bytes::ByteBuf>,
    #[serde(with = "serde_bytes")]
    pub tree_head: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub head_key: Vec<u8>,
    pub signing_keys: Vec<serde_bytes::ByteBuf>,
}

impl AuditBundle {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("bundles serialize")
    }
}

/// What a bundle that verified holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleReport {
    pub chain: String,
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub events: u64,
    pub commits: u64,
    pub tree_size: u64,
    pub root: [u8; 32],
    /// The key that signed the tree head: compare it with the exporter's.
    pub head_key: KeyId,
}

/// Why a bundle does not verify, naming the item that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{item}: {reason}")]
pub struct BundleError {
    /// "bundle", "tree head", "event 17", "commit 12..=15", ...
    pub item: String,
    pub reason: String,
}

fn fail(item: impl Into<String>, reason: impl ToString) -> BundleError {
    BundleError { item: item.into(), reason: reason.to_string() }
}

/// Exports the whole commits that hold events `from..=to`, with proofs in
/// the current tree head, signed by `signer`.
pub fn export(chain: &Chain, from: u64, to: u64, signer: &PrivateSignKey) -> Result<AuditBundle> {
    let head = chain.tree_head()?;
    if from > to || to >= head.tree_size {
        let message = format!("range {from}..={to} is not within the chain's {} durable events", head.tree_size);
        return Err(AteError::InvalidInput(message));
    }
    let no_commit = |sequence| AteError::InvalidInput(format!("no durable commit holds event {sequence}"));
    let (first, _, _) = chain.commit_bounds(from).ok_or_else(|| no_commit(from))?;
    let (_, last, _) = chain.commit_bounds(to).ok_or_else(|| no_commit(to))?;
    let mut records = Vec::new();
    let mut next = first;
    while next <= last {
        let (batch, after) = chain.read_records(next, 1 << 20)?;
        if batch.is_empty() {
            return Err(no_commit(next));
        }
        records.extend_from_slice(&batch);
        next = after;
        if records.len() > MAX_BUNDLE_BYTES {
            return Err(AteError::InvalidInput(format!("the range is larger than {MAX_BUNDLE_BYTES} bytes")));
        }
    }
    // `read_records` may overshoot the last commit: keep exactly first..=last.
    let stored = crate::format::aligned_copy(&records);
    let (mut kept, mut offset) = (0usize, 0usize);
    let mut signing_keys: Vec<PublicSignKey> = Vec::new();
    let mut proofs = Vec::new();
    while let Ok(Some(record)) = decode_record(&stored, offset) {
        if record.sequence() > last {
            break;
        }
        if record.header.kind() == Some(EventKind::Signature) {
            if let Ok(signature) = postcard::from_bytes::<CommitSignature>(record.payload) {
                if !signing_keys.iter().any(|key| key.id() == signature.key_id) {
                    signing_keys.extend(chain.published_key(&signature.key_id));
                }
            }
        }
        let (_, proof) = chain.inclusion_proof(record.sequence(), head.tree_size)?;
        proofs.push(serde_bytes::ByteBuf::from(proof.encode()));
        kept = record.next_offset;
        offset = record.next_offset;
    }
    records.truncate(kept);
    let signed = crate::verify::sign_tree_head(head, signer);
    Ok(AuditBundle {
        format: BUNDLE_FORMAT,
        chain: chain.key().name().to_string(),
        chain_id: chain.key().chain_id(),
        first_sequence: first,
        records,
        proofs,
        tree_head: signed.encode(),
        head_key: signer.public().encode(),
        signing_keys: signing_keys.iter().map(|key| serde_bytes::ByteBuf::from(key.encode())).collect(),
    })
}

/// Checks a bundle offline: the tree head's signature (by `trusted_head_key`
/// when given), every record (checksum, sequence, payload hash, hash chain),
/// every event's inclusion in the signed tree, and every commit's
/// signatures. Pure: no chain, no network.
pub fn verify_bundle(bytes: &[u8], trusted_head_key: Option<&KeyId>) -> std::result::Result<BundleReport, BundleError> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(fail("bundle", format!("larger than {MAX_BUNDLE_BYTES} bytes")));
    }
    let bundle: AuditBundle = postcard::from_bytes(bytes).map_err(|error| fail("bundle", error))?;
    if bundle.format != BUNDLE_FORMAT {
        return Err(fail("bundle", format!("format {} (this build reads {BUNDLE_FORMAT})", bundle.format)));
    }
    if crate::ChainKey::from(bundle.chain.as_str()).chain_id() != bundle.chain_id {
        return Err(fail("bundle", "the chain id does not belong to the chain's name"));
    }
    let head_key = PublicSignKey::decode(&bundle.head_key).map_err(|error| fail("tree head key", error))?;
    if trusted_head_key.is_some_and(|trusted| *trusted != head_key.id()) {
        return Err(fail("tree head key", format!("{} is not the trusted key", head_key.id())));
    }
    let signed = SignedTreeHead::decode(&bundle.tree_head).map_err(|error| fail("tree head", error))?;
    crate::verify::verify_tree_head(&signed, &head_key).map_err(|error| fail("tree head", error))?;
    let head = signed.head();
    if head.chain_id != bundle.chain_id {
        return Err(fail("tree head", "signed for another chain"));
    }
    let mut keys = Vec::with_capacity(bundle.signing_keys.len());
    for (index, key) in bundle.signing_keys.iter().enumerate() {
        keys.push(PublicSignKey::decode(key).map_err(|error| fail(format!("signing key {index}"), error))?);
    }

    let records = crate::format::aligned_copy(&bundle.records);
    let (mut offset, mut expected, mut commits, mut events) = (0usize, bundle.first_sequence, 0u64, 0u64);
    let mut previous_hash: Option<[u8; 32]> = None;
    let mut commit: Vec<(EventKind, [u8; 32], &[u8])> = Vec::new();
    let mut commit_first = expected;
    while offset < records.len() {
        let item = format!("event {expected}");
        let record = match decode_record(&records, offset) {
            Ok(Some(record)) => record,
            Ok(None) => return Err(fail(item, "the records end early")),
            Err(error) => return Err(fail(item, error)),
        };
        if record.sequence() != expected {
            return Err(fail(item, format!("the record says sequence {}", record.sequence())));
        }
        let padding = &records
            [offset + crate::format::FRAME_LEN + record.header_bytes.len() + record.payload.len()..record.next_offset];
        if padding.iter().any(|&byte| byte != 0) {
            return Err(fail(item, "non-zero padding"));
        }
        record.verify_payload_hash().map_err(|error| fail(item.as_str(), error))?;
        if previous_hash.is_some_and(|hash| hash != record.header.prev_hash) {
            return Err(fail(item, "the hash chain is broken"));
        }
        let event_hash = record.event_hash();
        let proof = bundle.proofs.get(events as usize).ok_or_else(|| fail(item.as_str(), "no inclusion proof"))?;
        let proof = InclusionProof::decode(proof).map_err(|error| fail(item.as_str(), error))?;
        verify_inclusion(&event_hash, expected, head.tree_size, &proof, &head.root)
            .map_err(|error| fail(item.as_str(), format!("not in the signed tree: {error}")))?;
        let kind = record.header.kind().ok_or_else(|| fail(item.as_str(), "unknown event kind"))?;
        commit.push((kind, EventContent::of_archived(record.header).hash(), record.payload));
        if record.header.is_commit_end() {
            let events: Vec<SignedEvent<'_>> = commit
                .iter()
                .map(|(kind, content_hash, payload)| SignedEvent { kind: *kind, content_hash: *content_hash, payload })
                .collect();
            verify_commit_signatures(&bundle.chain_id, &events, |id| keys.iter().find(|key| key.id() == *id).cloned())
                .map_err(|(index, reason)| {
                    fail(format!("commit {commit_first}..={expected}, event {}", commit_first + index as u64), reason)
                })?;
            commit.clear();
            commits += 1;
            commit_first = expected + 1;
        }
        previous_hash = Some(event_hash);
        offset = record.next_offset;
        expected += 1;
        events += 1;
    }
    if !commit.is_empty() {
        return Err(fail(format!("commit {commit_first}.."), "ends inside the bundle: not a whole commit"));
    }
    if events == 0 {
        return Err(fail("bundle", "no events"));
    }
    if bundle.proofs.len() as u64 != events {
        return Err(fail("bundle", format!("{} proofs for {events} events", bundle.proofs.len())));
    }
    Ok(BundleReport {
        chain: bundle.chain,
        first_sequence: bundle.first_sequence,
        last_sequence: expected - 1,
        events,
        commits,
        tree_size: head.tree_size,
        root: head.root,
        head_key: head_key.id(),
    })
}
