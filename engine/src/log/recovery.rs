//! Opening a chain: check every segment, cut a torn tail, rebuild the view.
//!
//! Rules (docs/design.md, "Recovery"):
//! * sealed segments (all but the last) must be whole: any bad record, gap in
//!   sequence, or unfinished commit is corruption, reported with its place;
//! * in the active (last) segment the hash chain and payload hashes are
//!   verified too, and a bad record is a torn tail only when no valid record
//!   follows it; the tail is cut at the end of the last whole commit and
//!   zeroed (as far as the torn window: the bytes at most two in-flight write
//!   groups could cover), so stale bytes can never be read as records later;
//! * only whole commits reach the view.

use super::checkpoint::{self, Checkpoint, CHECKPOINT_FILE};
use super::{view_change_for, ChainShared, Segment};
use crate::format::{decode_record, EventHash, SegmentHeader, FRAME_LEN, HEADER_LEN, RECORD_ALIGN, SEGMENT_HEADER_LEN};
use crate::view::{EventLocation, ViewChange};
use crate::{AteError, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Where appending resumes.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub next_sequence: u64,
    pub last_hash: EventHash,
    pub active_write_offset: u64,
    pub truncated_bytes: u64,
    /// Timestamp of the last kept event, so timestamps never go backwards
    /// across a reopen.
    pub last_timestamp_us: u64,
    /// Set once segments were dropped: where the kept log starts.
    pub checkpoint: Option<Checkpoint>,
}

/// One stored event: its header and payload, borrowed from the mmap.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoredEvent<'a> {
    pub header: &'a crate::format::ArchivedEventHeader,
    pub payload: &'a [u8],
}

pub(crate) fn segment_file_name(first_sequence: u64) -> String {
    format!("{first_sequence:020}.seg")
}

pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| AteError::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| AteError::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".seg") else {
            continue;
        };
        if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(first) = stem.parse::<u64>() {
                found.push((first, entry.path()));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// A compaction killed before it renamed its rewritten segment leaves
/// `NAME.compacting` beside the intact original: remove it.
fn remove_interrupted_compactions(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| AteError::io(format!("listing {}", dir.display()), e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|extension| extension == "compacting") {
            tracing::warn!(file = %path.display(), "removing the leftover of an interrupted compaction");
            std::fs::remove_file(&path).map_err(|e| AteError::io(format!("removing {}", path.display()), e))?;
        }
    }
    Ok(())
}

/// Creates and makes durable a new, empty segment.
pub(crate) fn create_segment(chain: &ChainShared, first_sequence: u64, prev_hash: EventHash) -> Result<Segment> {
    let path = chain.dir.join(segment_file_name(first_sequence));
    let len = chain.config.segment_size_bytes;
    let file = chain
        .storage
        .create_preallocated(&path, len)
        .map_err(|e| AteError::io(format!("creating segment {}", path.display()), e))?;
    start_segment(chain, file, &path, first_sequence, prev_hash)
}

/// Name of the file [`prepare_segment_file`] makes: not a segment's name,
/// so nothing reads it as one.
const PREPARED_SEGMENT_FILE: &str = "next-segment.prepared";

/// Preallocates the file of a chain's next segment ahead of the roll, for
/// chains in memory only: there, preallocation zeroes every page of it,
/// which takes tens of milliseconds, and a roll happens under the append
/// lock. (Their directories are temporary: no recovery ever meets the file.)
pub(crate) fn prepare_segment_file(chain: &ChainShared) -> std::io::Result<(File, PathBuf)> {
    let path = chain.dir.join(PREPARED_SEGMENT_FILE);
    match chain.storage.create_preallocated(&path, chain.config.segment_size_bytes) {
        Ok(file) => Ok((file, path)),
        Err(error) => {
            let _ = std::fs::remove_file(&path);
            Err(error)
        }
    }
}

/// Turns a file from [`prepare_segment_file`] into the segment that starts
/// at `first_sequence`: its header written and synced, then the file
/// renamed to the segment's name.
pub(crate) fn start_prepared_segment(
    chain: &ChainShared,
    (file, prepared): (File, PathBuf),
    first_sequence: u64,
    prev_hash: EventHash,
) -> Result<Segment> {
    let path = chain.dir.join(segment_file_name(first_sequence));
    let renamed = chain.storage.rename(&prepared, &path);
    renamed.map_err(|e| AteError::io(format!("naming prepared segment {}", path.display()), e))?;
    start_segment(chain, file, &path, first_sequence, prev_hash)
}

/// Writes and syncs the header of the new segment `file` at `path`, and maps it.
fn start_segment(
    chain: &ChainShared,
    file: File,
    path: &Path,
    first_sequence: u64,
    prev_hash: EventHash,
) -> Result<Segment> {
    let context = |what: &str| format!("{what} segment {}", path.display());
    let header = SegmentHeader {
        first_sequence,
        created_unix_us: crate::chain::now_us(),
        chain_id: chain.chain_id,
        prev_hash,
        segment_len: chain.config.segment_size_bytes,
    };
    chain
        .storage
        .write_all_at(&file, &header.encode(), 0)
        .map_err(|e| AteError::io(context("writing header of"), e))?;
    chain.storage.sync_data(&file).map_err(|e| AteError::io(context("syncing"), e))?;
    chain.storage.sync_dir(&chain.dir).map_err(|e| AteError::io(context("syncing directory of"), e))?;
    let (segment, decoded) = Segment::open(file, path).map_err(|e| AteError::io(context("mapping"), e))?;
    decoded.map_err(|e| corrupt(chain, path, 0, None, format!("header just written does not read back: {e}")))?;
    Ok(segment)
}

fn corrupt(chain: &ChainShared, segment: &Path, offset: u64, sequence: Option<u64>, reason: String) -> AteError {
    AteError::Corrupt { chain: chain.name.clone(), segment: segment.to_path_buf(), offset, sequence, reason }
}

/// The sequence a frame claims, read without trusting anything else.
fn frame_sequence(bytes: &[u8], offset: usize) -> Option<u64> {
    bytes.get(offset + 8..offset + 16).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// Looks for a whole, valid record with a plausible sequence at any aligned
/// offset in `bytes[from..to]`.
fn find_valid_record(bytes: &[u8], from: usize, to: usize, min_sequence: u64) -> Option<usize> {
    let mut offset = from.next_multiple_of(RECORD_ALIGN);
    while offset + FRAME_LEN + HEADER_LEN <= to.min(bytes.len()) {
        let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes")) as usize;
        let plausible = length >= HEADER_LEN
            && frame_sequence(bytes, offset).is_some_and(|s| s >= min_sequence && s - min_sequence < (1 << 32));
        if plausible && matches!(decode_record(bytes, offset), Ok(Some(_))) {
            return Some(offset);
        }
        offset += RECORD_ALIGN;
    }
    None
}

/// Scans the chain directory, fills `chain.segments` and `chain.view`, and
/// returns where appending resumes.
/// `on_commit` sees the events of every kept commit, in order, once the
/// commit is known to be whole (the trust layer rebuilds its state from it).
pub(crate) fn recover(chain: &ChainShared, on_commit: &mut dyn FnMut(&[StoredEvent<'_>])) -> Result<Recovered> {
    remove_interrupted_compactions(&chain.dir)?;
    checkpoint::remove_leftover(&chain.dir)?;
    let checkpoint = checkpoint::read(&chain.dir)
        .map_err(|reason| corrupt(chain, &chain.dir.join(CHECKPOINT_FILE), 0, None, reason))?;
    let mut files = list_segments(&chain.dir)?;
    if let Some(checkpoint) = &checkpoint {
        if checkpoint.chain_id != chain.chain_id {
            let reason = "the checkpoint belongs to another chain".to_string();
            return Err(corrupt(chain, &chain.dir.join(CHECKPOINT_FILE), 64, None, reason));
        }
        remove_dropped_segments(chain, &mut files, checkpoint.first_sequence)?;
        // The prefix's trust records, as one commit before the kept log.
        let records: Vec<StoredEvent<'_>> =
            checkpoint.records().map(|record| StoredEvent { header: record.header, payload: record.payload }).collect();
        if !records.is_empty() {
            on_commit(&records);
        }
    }
    let start_sequence = checkpoint.as_ref().map_or(0, |checkpoint| checkpoint.first_sequence);
    let start_hash = checkpoint.as_ref().map_or([0; 32], |checkpoint| checkpoint.last_hash);
    let start_timestamp_us = checkpoint.as_ref().map_or(0, |checkpoint| checkpoint.last_timestamp_us);
    let torn_window = 2 * chain.config.max_write_bytes.max(chain.config.max_commit_bytes);
    let unacknowledged_from = super::unacknowledged_from(&chain.dir).unwrap_or(u64::MAX);

    // A last segment whose header never became durable holds no data: its
    // creation was interrupted. Remove it (only if everything after the
    // header area is still zero, so no data can be lost by doing so).
    if let Some((_, path)) = files.last().cloned() {
        let file = chain.storage.open(&path).map_err(|e| AteError::io(format!("opening {}", path.display()), e))?;
        let (segment, header) =
            Segment::open(file, &path).map_err(|e| AteError::io(format!("mapping {}", path.display()), e))?;
        if header.is_err() {
            let untouched = segment.bytes().get(SEGMENT_HEADER_LEN..).is_none_or(|rest| rest.iter().all(|&b| b == 0));
            if untouched {
                tracing::warn!(segment = %path.display(), "removing a segment whose creation was interrupted");
                drop(segment);
                std::fs::remove_file(&path).map_err(|e| AteError::io(format!("removing {}", path.display()), e))?;
                chain.storage.sync_dir(&chain.dir).map_err(|e| AteError::io("syncing chain directory", e))?;
                files.pop();
            }
        }
    }

    if files.is_empty() {
        // A new chain, or a replica that starts from its owner's checkpoint.
        let segment = create_segment(chain, start_sequence, start_hash)?;
        chain.segments.push(segment);
        return Ok(Recovered {
            next_sequence: start_sequence,
            last_hash: start_hash,
            active_write_offset: SEGMENT_HEADER_LEN as u64,
            truncated_bytes: 0,
            last_timestamp_us: start_timestamp_us,
            checkpoint,
        });
    }

    let mut next_sequence = start_sequence;
    let mut last_hash: EventHash = start_hash;
    let mut pending: Vec<ViewChange> = Vec::new();
    let count = files.len();
    let mut active_write_offset = SEGMENT_HEADER_LEN as u64;
    let mut truncated_bytes = 0u64;
    let mut last_timestamp_us = start_timestamp_us;

    for (position, (first_sequence, path)) in files.into_iter().enumerate() {
        let active = position + 1 == count;
        let file = chain.storage.open(&path).map_err(|e| AteError::io(format!("opening {}", path.display()), e))?;
        let (segment, header) =
            Segment::open(file, &path).map_err(|e| AteError::io(format!("mapping {}", path.display()), e))?;
        let header = header.map_err(|e| corrupt(chain, &path, 0, None, format!("segment header: {e}")))?;
        header
            .check_continues(&chain.chain_id, first_sequence, next_sequence, &last_hash)
            .map_err(|(sequence, reason)| corrupt(chain, &path, 0, sequence, reason))?;
        let index = chain.segments.len();
        let bytes = segment.bytes();
        let mut offset = SEGMENT_HEADER_LEN;
        // End of the last whole commit, and the chain state at that point.
        let mut committed = (offset, next_sequence, last_hash);
        let mut failure: Option<(usize, String)> = None;
        // The records of the commit being read, with their offsets. A commit
        // never spans segments (a sealed one that ends inside a commit is
        // corrupt), and it counts whatever its kinds: a commit of trust
        // events alone changes no view but is just as unfinished.
        let mut pending_events: Vec<(usize, StoredEvent<'_>)> = Vec::new();
        loop {
            match decode_record(bytes, offset) {
                Ok(None) => break,
                Ok(Some(record)) => {
                    let sequence = record.sequence();
                    if sequence != next_sequence {
                        return Err(corrupt(
                            chain,
                            &path,
                            offset as u64,
                            Some(sequence),
                            format!("expected sequence {next_sequence}"),
                        ));
                    }
                    if active {
                        if record.header.prev_hash != last_hash {
                            return Err(corrupt(
                                chain,
                                &path,
                                offset as u64,
                                Some(sequence),
                                "hash chain broken: prev_hash does not match the previous event".into(),
                            ));
                        }
                        record
                            .verify_payload_hash()
                            .map_err(|e| corrupt(chain, &path, offset as u64, Some(sequence), e.to_string()))?;
                        last_hash = record.event_hash();
                    }
                    let location = EventLocation::new(index, offset as u32);
                    pending.extend(view_change_for(record.header, location));
                    pending_events.push((offset, StoredEvent { header: record.header, payload: record.payload }));
                    next_sequence += 1;
                    offset = record.next_offset;
                    if record.header.is_commit_end() {
                        if !active {
                            last_hash = record.event_hash();
                        }
                        for change in pending.drain(..) {
                            chain.view.apply(change);
                        }
                        let first = pending_events.first().map_or(offset, |(at, _)| *at);
                        chain.commit_ends.write().push((next_sequence - 1, EventLocation::new(index, first as u32)));
                        let commit: Vec<StoredEvent<'_>> = pending_events.drain(..).map(|(_, event)| event).collect();
                        on_commit(&commit);
                        committed = (offset, next_sequence, last_hash);
                        last_timestamp_us = last_timestamp_us.max(record.header.timestamp_us());
                    }
                }
                Err(error) => {
                    failure = Some((offset, error.to_string()));
                    break;
                }
            }
        }
        if !active {
            if let Some((at, reason)) = failure {
                return Err(corrupt(chain, &path, at as u64, frame_sequence(bytes, at), reason));
            }
            if !pending_events.is_empty() {
                return Err(corrupt(
                    chain,
                    &path,
                    offset as u64,
                    Some(next_sequence),
                    "sealed segment ends inside a commit".into(),
                ));
            }
        } else {
            let (commit_offset, commit_sequence, commit_hash) = committed;
            if let Some((at, reason)) = &failure {
                // A valid record after the damaged one may have been acknowledged
                // (the damage could be bit rot, not a torn write): cutting it
                // could lose acknowledged data, so refuse and report instead.
                // Unless a failed write group said that nothing from its first
                // sequence on was acknowledged (`mark_unacknowledged_from`).
                let beyond = find_valid_record(bytes, at + RECORD_ALIGN, bytes.len(), commit_sequence)
                    .filter(|&beyond| frame_sequence(bytes, beyond).is_none_or(|s| s < unacknowledged_from));
                if let Some(beyond) = beyond {
                    return Err(corrupt(
                        chain,
                        &path,
                        *at as u64,
                        frame_sequence(bytes, *at),
                        format!(
                            "{reason}; valid records follow at offset {beyond}, so this is not only a torn tail: refusing to cut possibly acknowledged data"
                        ),
                    ));
                }
            }
            if failure.is_some() || !pending_events.is_empty() {
                let scan_end =
                    failure.as_ref().map_or(offset, |(at, _)| *at).saturating_add(torn_window).min(bytes.len());
                let dirty_end = bytes[commit_offset..scan_end]
                    .iter()
                    .rposition(|&b| b != 0)
                    .map_or(commit_offset, |p| commit_offset + p + 1);
                truncated_bytes = (dirty_end - commit_offset) as u64;
                tracing::warn!(
                    chain = %chain.name, segment = %path.display(), offset = commit_offset,
                    dropped_events = next_sequence - commit_sequence, bytes = truncated_bytes,
                    reason = failure.as_ref().map_or("unfinished commit", |(_, r)| r.as_str()),
                    "cutting torn tail (never acknowledged)"
                );
                if dirty_end > commit_offset {
                    let zeros = vec![0u8; dirty_end - commit_offset];
                    let context = || format!("zeroing torn tail of {}", path.display());
                    chain
                        .storage
                        .write_all_at(&segment.file, &zeros, commit_offset as u64)
                        .map_err(|e| AteError::io(context(), e))?;
                    chain.storage.sync_data(&segment.file).map_err(|e| AteError::io(context(), e))?;
                }
                pending.clear();
                pending_events.clear();
                next_sequence = commit_sequence;
                last_hash = commit_hash;
            }
            active_write_offset = commit_offset as u64;
        }
        chain.segments.push(segment);
    }
    // Whatever the marker named is cut (or was never written).
    super::clear_unacknowledged_marker(&chain.dir)
        .map_err(|e| AteError::io("removing the unacknowledged marker", e))?;
    Ok(Recovered { next_sequence, last_hash, active_write_offset, truncated_bytes, last_timestamp_us, checkpoint })
}

/// Segments wholly before the checkpoint are what an interrupted drop did
/// not get to delete (the checkpoint is written first): delete them now.
fn remove_dropped_segments(chain: &ChainShared, files: &mut Vec<(u64, PathBuf)>, first_kept: u64) -> Result<()> {
    let dropped = files.iter().take_while(|(first, _)| *first < first_kept).count();
    if dropped == 0 {
        return Ok(());
    }
    for (_, path) in files.drain(..dropped) {
        tracing::warn!(segment = %path.display(), "removing a segment an interrupted drop left behind");
        std::fs::remove_file(&path).map_err(|e| AteError::io(format!("removing {}", path.display()), e))?;
    }
    chain.storage.sync_dir(&chain.dir).map_err(|e| AteError::io("syncing chain directory", e))
}
