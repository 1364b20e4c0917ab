//! Full verification of a chain, offline: every record's checksum, the hash
//! chain across segments, every payload hash, every commit signature and
//! the authority rules at each step, plus the Merkle tree head of the
//! result. Reports the first bad sequence number.
//!
//! It reads the segment files on its own (read-only) and replays the trust
//! rules from scratch, so it trusts nothing the running engine computed.

use crate::crypto::{CryptoError, PrivateSignKey, PublicSignKey};
use crate::format::{decode_record, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::key::ChainKey;
use crate::log::list_segments;
use crate::plugin::{ValidationContext, Validator};
use crate::proof::{MerkleTree, SignedTreeHead, TreeHead};
use crate::trust::{
    verify_commit_signatures, EventContent, EventView, SignedEvent, StagedTrust, TrustConfig, TrustState,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Where the verified log starts: 0, or the first sequence kept after
    /// old segments were dropped (what came before is vouched for by the
    /// checkpoint: its Merkle frontier and trust records, see `docs/worm.md`).
    pub first_sequence: u64,
    /// Events verified (from `first_sequence` on).
    pub events: u64,
    pub commits: u64,
    pub bytes: u64,
    pub segments: usize,
    /// Merkle tree head over every event hash, for signing and proofs.
    pub tree_head: TreeHead,
}

/// The first place the chain fails verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("verification failed at sequence {sequence:?} ({}, offset {offset}): {reason}", segment.display())]
pub struct VerifyError {
    pub sequence: Option<u64>,
    pub segment: PathBuf,
    pub offset: u64,
    pub reason: String,
}

/// Verifies the chain stored in `dir` (a chain directory, as
/// `Chain::path()` returns), up to but not including `stop_before` when
/// given (the durable frontier of a live chain). `progress` receives the
/// bytes verified so far.
pub fn verify_chain(
    dir: &Path,
    chain: &ChainKey,
    trust: &TrustConfig,
    root_keys: &[PublicSignKey],
    validators: &[Arc<dyn Validator>],
    stop_before: Option<u64>,
    progress: &mut dyn FnMut(u64),
) -> Result<VerifyReport, VerifyError> {
    let fail = |segment: &Path, offset: usize, sequence: Option<u64>, reason: String| VerifyError {
        sequence,
        segment: segment.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let chain_id = chain.chain_id();
    let mut files = list_segments(dir).map_err(|error| fail(dir, 0, None, error.to_string()))?;
    let mut state = TrustState::new();
    for key in root_keys {
        state.add_public_key(key.clone());
    }
    let mut tree = MerkleTree::new();
    let mut next_sequence = 0u64;
    let mut last_hash = [0u8; 32];
    let mut last_timestamp = 0u64;
    let checkpoint_path = dir.join(crate::log::checkpoint::CHECKPOINT_FILE);
    let checkpoint = crate::log::checkpoint::read(dir).map_err(|reason| fail(&checkpoint_path, 0, None, reason))?;
    if let Some(checkpoint) = &checkpoint {
        if checkpoint.chain_id != chain_id {
            return Err(fail(&checkpoint_path, 64, None, "the checkpoint belongs to another chain".into()));
        }
        // Segments an interrupted drop left behind are not part of the log.
        files.retain(|(first, _)| *first >= checkpoint.first_sequence);
        tree = MerkleTree::from_frontier(checkpoint.first_sequence, &checkpoint.frontier)
            .map_err(|error| fail(&checkpoint_path, 0, None, error.to_string()))?;
        next_sequence = checkpoint.first_sequence;
        last_hash = checkpoint.last_hash;
        last_timestamp = checkpoint.last_timestamp_us;
        state.note_commit_time(checkpoint.last_timestamp_us);
        for record in checkpoint.records() {
            state.apply_recovered(record.header, record.payload);
        }
    }
    let first_sequence = next_sequence;
    let (mut commits, mut bytes) = (0u64, 0u64);
    let mut finished = false;
    for (first_sequence, path) in &files {
        if finished {
            break;
        }
        let file = std::fs::File::open(path).map_err(|error| fail(path, 0, None, error.to_string()))?;
        // SAFETY: a read-only private view of a segment; ATE only appends
        // beyond `stop_before`, and any other change shows up as a failed
        // checksum below (bytes are only used after validation).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|error| fail(path, 0, None, error.to_string()))?;
        let header =
            SegmentHeader::decode(&map).map_err(|error| fail(path, 0, None, format!("segment header: {error}")))?;
        header
            .check_continues(&chain_id, *first_sequence, next_sequence, &last_hash)
            .map_err(|(sequence, reason)| fail(path, 0, sequence, reason))?;
        // Pass 1: frame every record (checksums). Pass 2, on every core: the
        // hashes that do not depend on earlier records, most of the work.
        // Pass 3, in order: the checks that do. A window of records at a
        // time keeps the memory bounded, and a producer thread frames and
        // hashes the next window while this one is checked. Failures are
        // reported in log order all the same.
        let mut pending: Vec<(usize, crate::format::DecodedRecord<'_>)> = Vec::new();
        let mut pending_content_hashes: Vec<[u8; 32]> = Vec::new();
        let map: &[u8] = &map;
        let producer_tree = std::mem::replace(&mut tree, MerkleTree::new());
        tree = std::thread::scope(|scope| -> Result<MerkleTree, VerifyError> {
            let (windows, received) = crossbeam_channel::bounded(1);
            let first_sequence = next_sequence;
            let producer = scope.spawn(move || {
                // The Merkle tree needs only the leaf hashes in log order, so
                // it grows here rather than on the checker's thread (which
                // was the bottleneck); a failed check discards it.
                let mut tree = producer_tree;
                let (mut window_start, mut window_sequence) = (SEGMENT_HEADER_LEN, first_sequence);
                // The checker waits for the first window: start small.
                let mut window_records = PARALLEL_HASH_MIN_RECORDS;
                loop {
                    let (records, stopped) =
                        frame_records(map, window_start, window_sequence, window_records, stop_before);
                    window_records = (window_records * 2).min(WINDOW_RECORDS);
                    let hashes = hash_records(&records);
                    for record_hashes in &hashes {
                        tree.push_leaf_hash(record_hashes.leaf_hash);
                    }
                    window_sequence += records.len() as u64;
                    let next = match stopped {
                        Stopped::Window { next_offset } => Some(next_offset),
                        _ => None,
                    };
                    // The checker stopped early (a failure): nothing more to do.
                    if windows.send((records, hashes, stopped)).is_err() {
                        return tree;
                    }
                    match next {
                        Some(next_offset) => window_start = next_offset,
                        None => return tree,
                    }
                }
            });
            for (records, hashes, stopped) in received {
                for ((offset, record), hashes) in records.into_iter().zip(hashes) {
                    let sequence = record.sequence();
                    if sequence != next_sequence {
                        // The chain is bad from the position where `next_sequence` belongs.
                        return Err(fail(
                            path,
                            offset,
                            Some(next_sequence),
                            format!("found sequence {sequence} where {next_sequence} belongs"),
                        ));
                    }
                    if record.header.prev_hash != last_hash {
                        let reason =
                            "hash chain broken: this event does not link to the one before it (either was altered)";
                        return Err(fail(path, offset, Some(sequence), reason.into()));
                    }
                    hashes.payload_check.map_err(|error| fail(path, offset, Some(sequence), error))?;
                    last_hash = hashes.event_hash;
                    last_timestamp = last_timestamp.max(record.header.timestamp_us());
                    next_sequence += 1;
                    bytes += (record.next_offset - offset) as u64;
                    let commit_end = record.header.is_commit_end();
                    pending.push((offset, record));
                    pending_content_hashes.push(hashes.content_hash);
                    if commit_end {
                        check_commit(
                            &mut state,
                            trust,
                            validators,
                            chain.name(),
                            &chain_id,
                            &pending,
                            &pending_content_hashes,
                        )
                        .map_err(|(index, reason)| {
                            fail(path, pending[index].0, Some(pending[index].1.sequence()), reason)
                        })?;
                        pending.clear();
                        pending_content_hashes.clear();
                        commits += 1;
                        progress(bytes);
                    }
                }
                match stopped {
                    Stopped::Window { .. } => {}
                    Stopped::End => break,
                    Stopped::Limit => {
                        finished = true;
                        break;
                    }
                    Stopped::Damaged { offset, reason } => return Err(fail(path, offset, Some(next_sequence), reason)),
                }
            }
            // Every window it sent was checked whole: its tree holds exactly those events.
            Ok(producer.join().expect("framing and hashing never panic"))
        })?;
        if let Some((at, record)) = pending.first() {
            return Err(fail(path, *at, Some(record.sequence()), "segment ends inside a commit".into()));
        }
    }
    Ok(VerifyReport {
        first_sequence,
        events: next_sequence - first_sequence,
        commits,
        bytes,
        segments: files.len(),
        tree_head: TreeHead { chain_id, tree_size: tree.len(), root: tree.root(), timestamp_us: last_timestamp },
    })
}

/// Why framing a segment stopped.
enum Stopped {
    /// A full window; the next one starts at `next_offset`.
    Window { next_offset: usize },
    /// The end marker.
    End,
    /// `stop_before` was reached.
    Limit,
    /// A record that does not decode, at `offset`.
    Damaged { offset: usize, reason: String },
}

/// Most records framed and hashed at a time (a few MiB of bookkeeping).
/// Windows of 65,536 left the checker waiting a third of the time: the
/// first window has to be ready before any check starts.
const WINDOW_RECORDS: usize = 16_384;

/// The records of a segment from `offset`, checksums checked, up to a full
/// window, the end marker, `stop_before`, or the first damaged record.
fn frame_records(
    map: &[u8],
    mut offset: usize,
    first_sequence: u64,
    window_records: usize,
    stop_before: Option<u64>,
) -> (Vec<(usize, crate::format::DecodedRecord<'_>)>, Stopped) {
    let mut records = Vec::with_capacity(window_records);
    loop {
        if stop_before.is_some_and(|stop| first_sequence + records.len() as u64 >= stop) {
            return (records, Stopped::Limit);
        }
        if records.len() == window_records {
            return (records, Stopped::Window { next_offset: offset });
        }
        match decode_record(map, offset) {
            Ok(Some(record)) => {
                records.push((offset, record));
                offset = record.next_offset;
            }
            Ok(None) => return (records, Stopped::End),
            Err(error) => return (records, Stopped::Damaged { offset, reason: error.to_string() }),
        }
    }
}

/// Below this many records one thread hashes them all (threads cost more).
const PARALLEL_HASH_MIN_RECORDS: usize = 4096;

/// The hashes of one record that do not depend on the records before it.
struct RecordHashes {
    payload_check: Result<(), String>,
    event_hash: [u8; 32],
    /// Of the event hash, for the Merkle tree.
    leaf_hash: [u8; 32],
    /// What commit signatures cover.
    content_hash: [u8; 32],
}

/// [`RecordHashes`] of each record, computed on up to every available core.
fn hash_records(records: &[(usize, crate::format::DecodedRecord<'_>)]) -> Vec<RecordHashes> {
    let hash = |chunk: &[(usize, crate::format::DecodedRecord<'_>)]| -> Vec<RecordHashes> {
        // Each kind of hash side by side over the chunk (format::payload_hashes).
        let records = || chunk.iter().map(|(_, record)| record);
        let payload_checks = crate::format::verify_payload_hashes(records());
        let headers: Vec<&[u8]> = records().map(|record| record.header_bytes).collect();
        let event_hashes = crate::format::payload_hashes(&headers);
        let content_hashes = EventContent::hashes(records().map(|record| EventContent::of_archived(record.header)));
        payload_checks
            .into_iter()
            .zip(event_hashes)
            .zip(content_hashes)
            .map(|((payload_check, event_hash), content_hash)| RecordHashes {
                payload_check: payload_check.map_err(|error| error.to_string()),
                event_hash,
                leaf_hash: crate::proof::leaf_hash(&event_hash),
                content_hash,
            })
            .collect()
    };
    let threads = std::thread::available_parallelism().map_or(1, usize::from).min(8);
    if threads < 2 || records.len() < PARALLEL_HASH_MIN_RECORDS {
        return hash(records);
    }
    let chunk_len = records.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = records.chunks(chunk_len).map(|chunk| scope.spawn(move || hash(chunk))).collect();
        workers.into_iter().flat_map(|worker| worker.join().expect("hashing never panics")).collect()
    })
}

/// What a checked commit added to the chain of trust.
#[derive(Debug, Default)]
pub(crate) struct CommitTrustChanges {
    pub public_keys: Vec<PublicSignKey>,
    pub node_key_wraps: Vec<crate::trust::NodeKeyWrap>,
}

/// Signatures, then authority and the other validators, for one commit
/// (whose records are already checksum-, sequence- and hash-chain-checked);
/// on success `state` includes it. Shared by offline verification and by
/// replicas ingesting commits another node sequenced.
pub(crate) fn check_commit(
    state: &mut TrustState,
    trust: &TrustConfig,
    validators: &[Arc<dyn Validator>],
    chain_name: &str,
    chain_id: &[u8; 32],
    events: &[(usize, crate::format::DecodedRecord<'_>)],
    content_hashes: &[[u8; 32]],
) -> Result<CommitTrustChanges, (usize, String)> {
    assert_eq!(events.len(), content_hashes.len(), "one content hash per event");
    let mut kinds = Vec::with_capacity(events.len());
    for (index, (_, record)) in events.iter().enumerate() {
        kinds.push(record.header.kind().ok_or((index, "unknown event kind".to_string()))?);
    }
    let contents: Vec<EventContent> =
        events.iter().map(|(_, record)| EventContent::of_archived(record.header)).collect();
    let signed_events: Vec<SignedEvent<'_>> = events
        .iter()
        .zip(content_hashes)
        .zip(&kinds)
        .map(|(((_, record), content_hash), kind)| SignedEvent {
            kind: *kind,
            content_hash: *content_hash,
            payload: record.payload,
        })
        .collect();
    let signers = verify_commit_signatures(chain_id, &signed_events, |id| state.public_key(id).cloned())
        .map_err(|(index, reason)| (index, reason.to_string()))?;
    // Judge timestamps against the commit's own time: history is old.
    let now = contents.iter().map(|content| content.timestamp_us).max().unwrap_or(0);
    if let Some(root) = &signers.root {
        if state.replayed_commit(root).is_some() {
            return Err((0, "this signed commit appears twice (replay)".into()));
        }
        // A copy of an old signed commit appended later (by a server, or by
        // someone writing its disk) is older than the window the live append
        // enforces against its clock: the same rule, against the log's own time.
        state
            .check_replay_window(trust, now, state.latest_commit_us())
            .map_err(|reason| (0, format!("{reason} (an old signed commit appended again?)")))?;
    }
    let mut staged = StagedTrust::for_commit(events.len());
    for (index, (((_, record), content), kind)) in events.iter().zip(&contents).zip(&kinds).enumerate() {
        let view = EventView {
            kind: *kind,
            key: u128::from_le_bytes(record.header.key),
            parent: record.header.parent().map(u128::from_le_bytes),
            content,
            payload: record.payload,
        };
        state.check_event(trust, &mut staged, &view, &signers.keys).map_err(|reason| (index, reason.to_string()))?;
        let context =
            ValidationContext { chain: chain_name, config: trust, signers: &signers.keys, now_us: now, index };
        for validator in validators {
            validator.validate(&view, &context).map_err(|reason| (index, reason.to_string()))?;
        }
    }
    if let Some(root) = signers.root {
        staged.set_commit_root(root, now);
    }
    let changes = CommitTrustChanges {
        public_keys: staged.public_keys().to_vec(),
        node_key_wraps: staged.node_key_wraps.clone(),
    };
    let (first, last) = (events[0].1.sequence(), events[events.len() - 1].1.sequence());
    state.commit(staged, trust, now, first, last);
    Ok(changes)
}

/// Signs a tree head (for example `VerifyReport::tree_head`).
pub fn sign_tree_head(head: TreeHead, key: &PrivateSignKey) -> SignedTreeHead {
    let signature = key.sign(&head.signing_bytes());
    SignedTreeHead::new(head, key.id().0, signature).expect("ML-DSA and Falcon signatures fit the 8 KiB bound")
}

/// Checks a signed tree head against the public key it names.
pub fn verify_tree_head(head: &SignedTreeHead, key: &PublicSignKey) -> Result<(), CryptoError> {
    if key.id().0 != *head.key_id() {
        return Err(CryptoError::BadSignature);
    }
    key.verify(&head.head().signing_bytes(), head.signature())
}
