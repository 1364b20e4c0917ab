//! Time-based log retention: dropping whole sealed segments from the start
//! of the log, as Kafka's `retention.ms` does, for chains whose policy
//! allows it.
//!
//! What a drop keeps true, and how:
//! - nothing protected goes: a segment holding any version of an object
//!   under a legal hold or a retain-until date in the future is refused
//!   with the rule and the date (the same `check_delete` that judges
//!   tombstones, with no bypass signature: a drop is nobody's signature);
//! - tombstones stay for `tombstone_horizon` after they were written, so a
//!   replica that was away for less than that resumes and learns every
//!   deletion; one away longer finds its position dropped
//!   (`AteError::HistoryDropped`) and must refill from the checkpoint: it
//!   can never resume past a deletion it did not see;
//! - the rest of the chain stays verifiable: the checkpoint
//!   (`log::checkpoint`) keeps the prefix's Merkle frontier (tree heads and
//!   proofs of kept events are unchanged) and its trust records (later
//!   signatures and rules check as before).
//!
//! Crash safety: the checkpoint is written (temp file, sync, rename,
//! directory sync) before any segment file is deleted, and recovery deletes
//! segments wholly before the checkpoint; a kill at any point leaves the old
//! log or the new one. The running chain keeps serving from its mappings of
//! the dropped files (they are unlinked, not unmapped); the new start and
//! the freed space take effect when the chain is next opened.

use super::Chain;
use crate::format::{decode_record, EventKind, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::key::ChainKey;
use crate::key::PrimaryKey;
use crate::log::checkpoint::{self, is_trust_record, Checkpoint};
use crate::trust::{retention, RejectReason};
use crate::{AteError, Result};
use rkyv::util::AlignedVec;
use std::path::PathBuf;
use std::sync::Arc;

/// Which sealed segments [`Chain::drop_segments`] may drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropRule {
    /// A segment goes only if every event in it is older than this (µs since the epoch).
    pub older_than_us: u64,
    /// ... and every tombstone in it is at least this old (µs).
    pub tombstone_horizon_us: u64,
}

/// What a drop did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropReport {
    pub segments_dropped: u32,
    pub events_dropped: u64,
    pub bytes_freed: u64,
    /// The first sequence the log keeps (unchanged if nothing was dropped).
    pub first_sequence: u64,
    /// Trust records the checkpoint carries, in all.
    pub trust_records_carried: u64,
}

/// A sealed segment as both the segment table and the directory know it.
pub(crate) struct SealedSegment {
    pub index: u32,
    pub path: PathBuf,
}

impl Chain {
    /// The sealed segments (all but the active one) whose files are still
    /// in the directory, paired with their place in the segment table. After
    /// a drop the directory holds fewer files than the running chain maps.
    pub(crate) fn sealed_segments(&self) -> Result<Vec<SealedSegment>> {
        let files = crate::log::list_segments(&self.shared.dir)?;
        let sealed = self.shared.segments.len().saturating_sub(1);
        let mut out = Vec::new();
        for index in 0..sealed {
            let segment = self.shared.segments.get(index).expect("sealed segments are in the table");
            let header = SegmentHeader::decode(segment.bytes()).map_err(|error| self.corrupt(0, error.to_string()))?;
            if let Some((_, path)) = files.iter().find(|(first, _)| *first == header.first_sequence) {
                out.push(SealedSegment { index, path: path.clone() });
            }
        }
        Ok(out)
    }

    pub(crate) fn corrupt(&self, offset: usize, reason: String) -> AteError {
        AteError::Corrupt {
            chain: self.key.to_string(),
            segment: self.shared.dir.clone(),
            offset: offset as u64,
            sequence: None,
            reason,
        }
    }

    /// Drops the sealed segments at the start of the log that `rule` allows
    /// (see the module docs); `now_us` decides which retention dates and
    /// tombstone horizons have passed.
    ///
    /// Errors: `AteError::Rejected` with `RejectReason::Retention` naming the
    /// rule and date if a segment old enough to go holds a protected
    /// version (nothing is dropped then); `InvalidInput` on a replica or if
    /// segments were already dropped since the chain was opened.
    pub async fn drop_segments(&self, rule: DropRule, now_us: u64) -> Result<DropReport> {
        if self.is_replica() {
            return Err(AteError::InvalidInput("a replica's log is trimmed by its owner".into()));
        }
        let _upkeep = self.upkeep.lock().await;
        let sealed = self.sealed_segments()?;
        if sealed.first().map(|segment| segment.index).unwrap_or(0) != 0 {
            return Err(AteError::InvalidInput(
                "segments were dropped since this chain was opened; reopen it before dropping more".into(),
            ));
        }
        let previous = checkpoint::read(&self.shared.dir).map_err(|reason| self.corrupt(0, reason))?;
        let mut trust_records = AlignedVec::<16>::new();
        let mut last_timestamp_us = 0;
        if let Some(previous) = &previous {
            trust_records.extend_from_slice(&previous.trust_records);
            last_timestamp_us = previous.last_timestamp_us;
        }
        let policy = self.retention_policy();
        let mut dropped: Vec<&SealedSegment> = Vec::new();
        for segment in &sealed {
            let bytes = self.shared.segments.get(segment.index).expect("sealed segments are in the table").bytes();
            match self.judge_segment(bytes, rule, &policy, now_us)? {
                Verdict::Keep => break,
                Verdict::Drop { segment_trust_records, latest_us } => {
                    trust_records.extend_from_slice(&segment_trust_records);
                    last_timestamp_us = last_timestamp_us.max(latest_us);
                    dropped.push(segment);
                }
            }
        }
        let log_start = previous.as_ref().map_or(0, |previous| previous.first_sequence);
        let Some(last_dropped) = dropped.last() else {
            let carried = previous.as_ref().map_or(0, |previous| previous.records().count() as u64);
            return Ok(DropReport {
                first_sequence: log_start,
                trust_records_carried: carried,
                ..DropReport::default()
            });
        };
        // The first kept segment links to the last dropped event.
        let kept = self.shared.segments.get(last_dropped.index + 1).expect("the active segment follows");
        let kept_header = SegmentHeader::decode(kept.bytes()).map_err(|error| self.corrupt(0, error.to_string()))?;
        let first_sequence = kept_header.first_sequence;
        let frontier = {
            let mut cache = self.proofs.lock();
            self.extend_proofs(&mut cache)?;
            cache.tree.frontier(first_sequence)?
        };
        let new_checkpoint = Checkpoint {
            first_sequence,
            last_hash: kept_header.prev_hash,
            last_timestamp_us,
            dropped_at_us: now_us,
            chain_id: self.shared.chain_id,
            frontier,
            trust_records,
        };
        let carried = new_checkpoint.records().count() as u64;
        checkpoint::write(self.shared.storage.as_ref(), &self.shared.dir, &new_checkpoint)?;
        let mut bytes_freed = 0;
        for segment in &dropped {
            bytes_freed += std::fs::metadata(&segment.path).map(|metadata| metadata.len()).unwrap_or(0);
            std::fs::remove_file(&segment.path)
                .map_err(|error| AteError::io(format!("removing {}", segment.path.display()), error))?;
        }
        self.shared
            .storage
            .sync_dir(&self.shared.dir)
            .map_err(|error| AteError::io("syncing chain directory", error))?;
        let report = DropReport {
            segments_dropped: dropped.len() as u32,
            events_dropped: first_sequence - log_start,
            bytes_freed,
            first_sequence,
            trust_records_carried: carried,
        };
        tracing::info!(chain = %self.key, ?report, "dropped old segments");
        Ok(report)
    }

    /// Whether `rule` lets one sealed segment go, with what it must carry.
    fn judge_segment(
        &self,
        bytes: &[u8],
        rule: DropRule,
        policy: &retention::RetentionPolicy,
        now_us: u64,
    ) -> Result<Verdict> {
        let mut segment_trust_records = AlignedVec::<16>::new();
        let mut latest_us = 0;
        let mut protected = None;
        let mut offset = SEGMENT_HEADER_LEN;
        let tombstones_before_us = now_us.saturating_sub(rule.tombstone_horizon_us);
        loop {
            let record = match decode_record(bytes, offset) {
                Ok(Some(record)) => record,
                Ok(None) => break,
                Err(error) => return Err(self.corrupt(offset, error.to_string())),
            };
            let timestamp_us = record.header.timestamp_us();
            let kind = record.header.kind();
            if timestamp_us >= rule.older_than_us
                || (kind == Some(EventKind::Tombstone) && timestamp_us >= tombstones_before_us)
            {
                return Ok(Verdict::Keep);
            }
            latest_us = latest_us.max(timestamp_us);
            if is_trust_record(kind) {
                segment_trust_records.extend_from_slice(&bytes[offset..record.next_offset]);
            }
            if protected.is_none() && matches!(kind, Some(EventKind::Data | EventKind::Tombstone)) {
                let key = PrimaryKey::from_bytes(record.header.key);
                let object = self.retention(&key);
                if let Err(violation) = retention::check_delete(policy, &object, now_us, &Default::default()) {
                    protected = Some((key, violation));
                }
            }
            offset = record.next_offset;
        }
        match protected {
            Some((key, violation)) => {
                Err(AteError::Rejected { index: 0, key, reason: RejectReason::Retention(violation) })
            }
            None => Ok(Verdict::Drop { segment_trust_records, latest_us }),
        }
    }
}

enum Verdict {
    Keep,
    Drop { segment_trust_records: AlignedVec<16>, latest_us: u64 },
}

impl Chain {
    /// The chain's checkpoint as stored (`None` if no segment was ever
    /// dropped), for a replica that must start where the log now starts
    /// ([`ChainBuilder::reset_from_checkpoint`](super::ChainBuilder::reset_from_checkpoint)).
    pub fn checkpoint(&self) -> Result<Option<Vec<u8>>> {
        match std::fs::read(self.shared.dir.join(checkpoint::CHECKPOINT_FILE)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(AteError::io("reading the checkpoint", error)),
        }
    }
}

/// The sequence a checkpoint ([`Chain::checkpoint`]) starts the log at,
/// after checking it decodes. Errors: `InvalidInput` naming what is wrong.
pub fn checkpoint_first_sequence(checkpoint_bytes: &[u8]) -> Result<u64> {
    Checkpoint::decode(checkpoint_bytes)
        .map(|checkpoint| checkpoint.first_sequence)
        .map_err(|reason| AteError::InvalidInput(format!("checkpoint: {reason}")))
}

impl super::ChainBuilder {
    /// Replaces everything stored for the closed chain `key` with the
    /// owner's `checkpoint` ([`Chain::checkpoint`]): the next open starts an
    /// empty log at the checkpoint's first sequence, with the trust state it
    /// carries, ready to follow the owner from there. For a replica whose
    /// position the owner dropped (`AteError::HistoryDropped`): its old
    /// events are discarded, never merged, so nothing the owner deleted in
    /// the meantime can come back. The checkpoint is taken on the owner's
    /// word (the events it summarises are gone); everything after it is
    /// verified as usual.
    ///
    /// Errors: `Corrupt` for a checkpoint that does not decode or belongs to
    /// another chain, `Locked` if the chain is open.
    pub async fn reset_from_checkpoint(&self, key: &ChainKey, checkpoint_bytes: &[u8]) -> Result<()> {
        let root = self.root.clone().map_err(AteError::InvalidConfig)?;
        let open = self.open_chains.lock().await;
        if open.get(key).is_some_and(|chain| chain.strong_count() > 0) {
            return Err(AteError::Locked { chain: key.name().to_string() });
        }
        let dir = root.join("chains").join(key.directory_name());
        std::fs::create_dir_all(&dir).map_err(|e| AteError::io(format!("creating {}", dir.display()), e))?;
        let _lock = super::lock_directory(&dir, key)?;
        let bad = |reason: String| AteError::Corrupt {
            chain: key.name().to_string(),
            segment: dir.join(checkpoint::CHECKPOINT_FILE),
            offset: 0,
            sequence: None,
            reason,
        };
        let decoded = Checkpoint::decode(checkpoint_bytes).map_err(|reason| bad(format!("checkpoint: {reason}")))?;
        if decoded.chain_id != key.chain_id() {
            return Err(bad("the checkpoint belongs to another chain".into()));
        }
        let storage: Arc<dyn crate::storage::Storage> = match &self.storage {
            Some(storage) => Arc::clone(storage),
            None => Arc::new(crate::storage::PortableStorage),
        };
        for entry in std::fs::read_dir(&dir).map_err(|e| AteError::io(format!("listing {}", dir.display()), e))? {
            let path = entry.map_err(|e| AteError::io(format!("listing {}", dir.display()), e))?.path();
            let stale = path.extension().is_some_and(|extension| extension == "seg" || extension == "compacting")
                || path.file_name().is_some_and(|name| name == crate::log::UNACKNOWLEDGED_MARKER);
            if stale {
                std::fs::remove_file(&path).map_err(|e| AteError::io(format!("removing {}", path.display()), e))?;
            }
        }
        checkpoint::write(storage.as_ref(), &dir, &decoded)?;
        tracing::info!(chain = %key, first_sequence = decoded.first_sequence, "replica reset to its owner's checkpoint");
        Ok(())
    }
}
