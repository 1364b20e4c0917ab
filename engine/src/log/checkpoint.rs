//! The checkpoint a chain keeps when its oldest segments are dropped: what
//! the rest of the chain needs from the dropped prefix to be opened, served
//! and verified without it.
//!
//! - where the kept log starts: the first kept sequence, the hash of the
//!   event before it (the first kept segment links to it) and the latest
//!   timestamp of the prefix;
//! - the Merkle frontier of the prefix (one subtree root per set bit of its
//!   size): every later tree head, inclusion proof and consistency proof
//!   from the prefix's size on stays exactly what it was
//!   (`MerkleTree::from_frontier`), so a tree head signed before the drop
//!   still checks against the truncated chain;
//! - the prefix's trust records (authority, published keys, retention
//!   policy and object retention), byte for byte as they were stored, so
//!   later commits are validated against the same rules.
//!
//! Layout (little endian; `docs/design.md`, "Dropping segments"):
//!
//! ```text
//! 0    8   magic "ATECKPT1"
//! 8    8   first kept sequence S
//! 16   32  event hash of S - 1
//! 48   8   latest timestamp of the prefix (us)
//! 56   8   when the segments were dropped (us)
//! 64   32  chain id
//! 96   4   frontier subtrees F (= popcount of S)
//! 100  4   trust record bytes R
//! 104  32F frontier, largest subtree first
//! ...      zero padding to a multiple of 16
//! ...  R   trust records, framed as in a segment
//! ...  32  BLAKE3 of everything above
//! ```

use crate::format::{decode_record, EventKind, RECORD_ALIGN};
use crate::proof::Hash;
use crate::storage::Storage;
use crate::{AteError, Result};
use rkyv::util::AlignedVec;
use std::path::Path;

pub(crate) const CHECKPOINT_FILE: &str = "checkpoint";
const WRITING_FILE: &str = "checkpoint.writing";
const MAGIC: &[u8; 8] = b"ATECKPT1";
const FIXED_LEN: usize = 104;
/// Trust records are few (keys, authority, policies): a bound well above any
/// real chain keeps a damaged length field from allocating without limit.
const MAX_TRUST_RECORD_BYTES: usize = 256 << 20;

/// The decoded checkpoint of a chain (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Checkpoint {
    pub first_sequence: u64,
    pub last_hash: Hash,
    pub last_timestamp_us: u64,
    pub dropped_at_us: u64,
    pub chain_id: [u8; 32],
    pub frontier: Vec<Hash>,
    /// Framed records, each at a multiple of `RECORD_ALIGN` from the start.
    pub trust_records: AlignedVec<16>,
}

/// Whether an event of this kind belongs in a checkpoint.
pub(crate) fn is_trust_record(kind: Option<EventKind>) -> bool {
    matches!(kind, Some(EventKind::Authority | EventKind::PublicKey | EventKind::Retention))
}

impl Checkpoint {
    fn records_offset(&self) -> usize {
        (FIXED_LEN + 32 * self.frontier.len()).next_multiple_of(RECORD_ALIGN)
    }

    pub fn encode(&self) -> AlignedVec<16> {
        let records_offset = self.records_offset();
        let mut out = AlignedVec::<16>::with_capacity(records_offset + self.trust_records.len() + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.first_sequence.to_le_bytes());
        out.extend_from_slice(&self.last_hash);
        out.extend_from_slice(&self.last_timestamp_us.to_le_bytes());
        out.extend_from_slice(&self.dropped_at_us.to_le_bytes());
        out.extend_from_slice(&self.chain_id);
        out.extend_from_slice(&(self.frontier.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.trust_records.len() as u32).to_le_bytes());
        for subtree in &self.frontier {
            out.extend_from_slice(subtree);
        }
        out.resize(records_offset, 0);
        out.extend_from_slice(&self.trust_records);
        let checksum = blake3::hash(&out);
        out.extend_from_slice(checksum.as_bytes());
        out
    }

    /// Decodes and checks a checkpoint: checksum, layout, frontier size and
    /// every trust record (whole, of a trust kind, before the first kept
    /// sequence). The error says what is wrong. `bytes` need no alignment:
    /// the records are copied into an aligned buffer before they are read.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        let body_len = bytes.len().checked_sub(32).ok_or("shorter than a checksum")?;
        let (body, checksum) = bytes.split_at(body_len);
        if blake3::hash(body).as_bytes() != checksum {
            return Err("checksum does not match".into());
        }
        if body.len() < FIXED_LEN || &body[..8] != MAGIC {
            return Err("not a checkpoint (bad magic)".into());
        }
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().expect("4 bytes")) as usize;
        let hash_at = |at: usize| -> Hash { body[at..at + 32].try_into().expect("32 bytes") };
        let first_sequence = u64_at(8);
        let frontier_len = u32_at(96);
        let records_len = u32_at(100);
        if frontier_len != first_sequence.count_ones() as usize {
            return Err(format!("{frontier_len} frontier subtrees for a prefix of {first_sequence} events"));
        }
        if records_len > MAX_TRUST_RECORD_BYTES {
            return Err(format!("{records_len} bytes of trust records is above the bound"));
        }
        let mut checkpoint = Self {
            first_sequence,
            last_hash: hash_at(16),
            last_timestamp_us: u64_at(48),
            dropped_at_us: u64_at(56),
            chain_id: hash_at(64),
            frontier: Vec::new(),
            trust_records: AlignedVec::new(),
        };
        if body.len() < FIXED_LEN + 32 * frontier_len {
            return Err("frontier truncated".into());
        }
        checkpoint.frontier = (0..frontier_len).map(|index| hash_at(FIXED_LEN + 32 * index)).collect();
        let records_offset = checkpoint.records_offset();
        if body.len() != records_offset + records_len {
            return Err(format!("{} bytes where the header implies {}", body.len(), records_offset + records_len));
        }
        checkpoint.trust_records.extend_from_slice(&body[records_offset..]);
        checkpoint.check_records()?;
        Ok(checkpoint)
    }

    fn check_records(&self) -> std::result::Result<(), String> {
        let mut offset = 0;
        while offset < self.trust_records.len() {
            let record = match decode_record(&self.trust_records, offset) {
                Ok(Some(record)) => record,
                Ok(None) => return Err(format!("trust record area ends early at {offset}")),
                Err(error) => return Err(format!("trust record at {offset}: {error}")),
            };
            if !is_trust_record(record.header.kind()) || record.compacted {
                return Err(format!("record at {offset} is not a trust record"));
            }
            if record.sequence() >= self.first_sequence {
                return Err(format!("trust record {} is not in the dropped prefix", record.sequence()));
            }
            record.verify_payload_hash().map_err(|error| format!("trust record {}: {error}", record.sequence()))?;
            offset = record.next_offset;
        }
        Ok(())
    }

    /// The trust records, in sequence order.
    pub fn records(&self) -> impl Iterator<Item = crate::format::DecodedRecord<'_>> {
        let mut offset = 0;
        std::iter::from_fn(move || {
            // Checked by `decode` (or written by this process).
            let record = decode_record(&self.trust_records, offset).ok().flatten()?;
            offset = record.next_offset;
            Some(record)
        })
    }
}

/// The chain's checkpoint, if segments were ever dropped.
pub(crate) fn read(dir: &Path) -> std::result::Result<Option<Checkpoint>, String> {
    let bytes = match std::fs::read(dir.join(CHECKPOINT_FILE)) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("reading the checkpoint: {error}")),
    };
    Checkpoint::decode(&bytes).map(Some).map_err(|reason| format!("checkpoint: {reason}"))
}

/// Replaces the chain's checkpoint atomically: written beside, synced,
/// renamed over, directory synced. A kill leaves the old one or the new one.
pub(crate) fn write(storage: &dyn Storage, dir: &Path, checkpoint: &Checkpoint) -> Result<()> {
    let temporary = dir.join(WRITING_FILE);
    let bytes = checkpoint.encode();
    let context = |what: &str| format!("writing the checkpoint of {}: {what}", dir.display());
    remove_leftover(dir)?;
    let file = storage
        .create_preallocated(&temporary, bytes.len() as u64)
        .map_err(|error| AteError::io(context("creating"), error))?;
    let written = storage
        .write_all_at(&file, &bytes, 0)
        .and_then(|()| storage.sync_data(&file))
        .and_then(|()| storage.rename(&temporary, &dir.join(CHECKPOINT_FILE)))
        .and_then(|()| storage.sync_dir(dir));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(AteError::io(context("installing"), error));
    }
    Ok(())
}

/// Removes what an interrupted [`write`] left (the old checkpoint, if any, is intact).
pub(crate) fn remove_leftover(dir: &Path) -> Result<()> {
    match std::fs::remove_file(dir.join(WRITING_FILE)) {
        Ok(()) => tracing::warn!(dir = %dir.display(), "removed the leftover of an interrupted checkpoint write"),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(AteError::io(format!("removing {WRITING_FILE} in {}", dir.display()), error)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            first_sequence: 5,
            last_hash: [7; 32],
            last_timestamp_us: 11,
            dropped_at_us: 13,
            chain_id: [3; 32],
            frontier: vec![[1; 32], [2; 32]],
            trust_records: AlignedVec::new(),
        }
    }

    #[test]
    fn a_checkpoint_round_trips_and_any_flipped_bit_is_refused() {
        let encoded = sample().encode();
        assert_eq!(Checkpoint::decode(&encoded).unwrap().encode().as_slice(), encoded.as_slice());
        for bit in 0..encoded.len() * 8 {
            let mut damaged = AlignedVec::<16>::new();
            damaged.extend_from_slice(&encoded);
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(Checkpoint::decode(&damaged).is_err(), "bit {bit}");
        }
        assert!(Checkpoint::decode(&encoded[..encoded.len() - 1]).is_err());
    }

    #[test]
    fn a_frontier_that_does_not_match_the_prefix_size_is_refused() {
        let mut wrong = sample();
        wrong.frontier.pop();
        let error = Checkpoint::decode(&wrong.encode()).unwrap_err();
        assert!(error.contains("frontier"), "{error}");
    }
}
