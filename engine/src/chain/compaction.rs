//! Compaction: sealed segments are rewritten with the payload of every
//! superseded Data version removed (the record keeps its header), for cache
//! and queue chains whose old versions are dead weight.
//!
//! What stays true afterwards, and why:
//! - every event keeps its place: the header, and so the event hash, the
//!   hash chain, commit signatures (which cover content hashes, computed
//!   from headers) and every Merkle proof and tree head, are unchanged;
//! - the latest version of every object, every tombstone (the horizon is
//!   forever: a replica that was offline still learns every deletion), and
//!   every trust event (authority, keys, signatures, retention) stay whole;
//! - an object under retention or legal hold keeps all of its versions.
//!
//! Crash safety: a segment is rewritten into `NAME.compacting` through the
//! storage seam, synced, renamed over the original and the directory
//! synced. A kill at any point leaves the old file or the new one, never a
//! mix; recovery deletes a leftover `.compacting` file. The live chain keeps
//! reading its mapping of the old file (sealed segments never change for
//! it); the space is reclaimed when the chain is next opened.

use super::Chain;
use crate::format::{decode_record, encode_compacted, EventKind, SegmentHeader, FRAME_LEN, SEGMENT_HEADER_LEN};
use crate::key::PrimaryKey;
use crate::view::EventLocation;
use crate::{AteError, Result};
use rkyv::util::AlignedVec;

/// Suffix of a segment being rewritten.
pub(crate) const COMPACTING_SUFFIX: &str = "compacting";

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Sealed segments looked at, and rewritten.
    pub segments_scanned: u32,
    pub segments_rewritten: u32,
    /// Superseded versions whose payload was removed.
    pub events_compacted: u64,
    /// Superseded versions kept because their object is under retention or a legal hold.
    pub events_retained: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl Chain {
    /// Compacts every sealed segment (see the module docs). `now_us` decides
    /// which retention dates have passed.
    pub async fn compact(&self, now_us: u64) -> Result<CompactionReport> {
        if self.is_replica() {
            return Err(AteError::InvalidInput("a replica is compacted by its owner".into()));
        }
        let _upkeep = self.upkeep.lock().await;
        let mut report = CompactionReport::default();
        // The active segment is never touched; segments dropped since the
        // chain was opened are skipped (their files are gone).
        for sealed in self.sealed_segments()? {
            let (index, path) = (sealed.index, &sealed.path);
            report.segments_scanned += 1;
            let segment = self.shared.segments.get(index).expect("sealed segments are in the table");
            let bytes = segment.bytes();
            let rewrite = self.compacted_segment(index, bytes, now_us)?;
            report.events_retained += rewrite.retained;
            if rewrite.compacted == 0 {
                continue;
            }
            let rewritten = rewrite.bytes;
            report.bytes_before += rewrite.written_before as u64;
            report.bytes_after += rewritten.len() as u64;
            self.install(path, &rewritten)?;
            report.segments_rewritten += 1;
            report.events_compacted += rewrite.compacted;
        }
        tracing::info!(chain = %self.key, ?report, "compacted");
        Ok(report)
    }

    /// The segment's bytes with superseded versions compacted.
    fn compacted_segment(&self, index: u32, bytes: &[u8], now_us: u64) -> Result<Rewrite> {
        let header = SegmentHeader::decode(bytes).map_err(|error| self.corrupt(0, error.to_string()))?;
        let mut out = AlignedVec::<16>::with_capacity(bytes.len().min(64 << 20));
        let (mut compacted, mut retained, mut offset) = (0u64, 0u64, SEGMENT_HEADER_LEN);
        out.extend_from_slice(&bytes[..SEGMENT_HEADER_LEN]);
        loop {
            let record = match decode_record(bytes, offset) {
                Ok(Some(record)) => record,
                Ok(None) => break,
                Err(error) => return Err(self.corrupt(offset, error.to_string())),
            };
            let superseded = !record.compacted
                && record.header.kind() == Some(EventKind::Data)
                && self.shared.view.get(u128::from_le_bytes(record.header.key))
                    != Some(EventLocation::new(index, offset as u32));
            if superseded {
                let protection = self.retention(&PrimaryKey::from_bytes(record.header.key));
                if protection.legal_hold || protection.retained_at(now_us) {
                    retained += 1;
                    out.extend_from_slice(&bytes[offset..record.next_offset]);
                } else {
                    compacted += 1;
                    encode_compacted(&mut out, &record);
                }
            } else {
                out.extend_from_slice(&bytes[offset..record.next_offset]);
            }
            offset = record.next_offset;
        }
        // Up to and including the end marker, as the rewrite has it.
        let written_before = (offset + FRAME_LEN).min(bytes.len());
        if compacted > 0 {
            // The end marker, then the header again with the new length.
            out.extend_from_slice(&[0u8; FRAME_LEN]);
            let new_header = SegmentHeader { segment_len: out.len() as u64, ..header };
            out[..SEGMENT_HEADER_LEN].copy_from_slice(&new_header.encode());
        }
        Ok(Rewrite { bytes: out, compacted, retained, written_before })
    }

    /// Writes `bytes` beside `path`, syncs, renames over it, syncs the directory.
    fn install(&self, path: &std::path::Path, bytes: &[u8]) -> Result<()> {
        let storage = &self.shared.storage;
        let temporary = path.with_extension(COMPACTING_SUFFIX);
        let context = |what: &str| format!("compacting {}: {what}", path.display());
        // A leftover from an interrupted compaction would make create fail.
        let _ = std::fs::remove_file(&temporary);
        let file = storage
            .create_preallocated(&temporary, bytes.len() as u64)
            .map_err(|error| AteError::io(context("creating the new segment"), error))?;
        let written = storage
            .write_all_at(&file, bytes, 0)
            .and_then(|()| storage.sync_data(&file))
            .and_then(|()| storage.rename(&temporary, path))
            .and_then(|()| storage.sync_dir(&self.shared.dir));
        if let Err(error) = written {
            // The original is intact until the rename succeeded; after it the
            // new file is whole (synced before the rename).
            let _ = std::fs::remove_file(&temporary);
            return Err(AteError::io(context("installing the new segment"), error));
        }
        Ok(())
    }
}

/// One sealed segment, compacted in memory.
struct Rewrite {
    bytes: AlignedVec<16>,
    /// Superseded versions compacted, and kept for retention.
    compacted: u64,
    retained: u64,
    /// Bytes the original's written part takes, end marker included.
    written_before: usize,
}
