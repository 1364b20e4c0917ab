//! The fixed header at the start of every segment file.
//!
//! ```text
//!   0  8  magic            b"ATESEG\r\n"
//!   8  4  format_version   u32 LE (this code: 1)
//!  12  4  header_len       u32 LE (128)
//!  16  8  first_sequence   u64 LE
//!  24  8  created_unix_us  u64 LE
//!  32 32  chain_id         BLAKE3 of the chain name
//!  64 32  prev_hash        hash of the last event before this segment (zero for the first)
//!  96  8  segment_len      u64 LE, preallocated file length
//! 104 20  reserved         zero
//! 124  4  crc32c           over bytes 0..124
//! ```
//! Plain little-endian fields rather than rkyv: a reader must be able to read
//! the version before it knows which record layout follows.

/// Identifies an ATE segment; the `\r\n` catches text-mode mangling.
pub const SEGMENT_MAGIC: [u8; 8] = *b"ATESEG\r\n";
/// Version of the record layout in this segment.
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
/// Records start here.
pub const SEGMENT_HEADER_LEN: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub first_sequence: u64,
    pub created_unix_us: u64,
    pub chain_id: [u8; 32],
    pub prev_hash: [u8; 32],
    pub segment_len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentHeaderError {
    #[error("file is shorter than a segment header")]
    Truncated,
    #[error("not an ATE segment (bad magic)")]
    BadMagic,
    #[error("segment header checksum mismatch")]
    Checksum,
    #[error("segment format version {found} is not supported (this build reads {SEGMENT_FORMAT_VERSION})")]
    UnsupportedVersion { found: u32 },
    #[error("segment header length {0} is not {SEGMENT_HEADER_LEN}")]
    BadHeaderLen(u32),
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
        out[16..24].copy_from_slice(&self.first_sequence.to_le_bytes());
        out[24..32].copy_from_slice(&self.created_unix_us.to_le_bytes());
        out[32..64].copy_from_slice(&self.chain_id);
        out[64..96].copy_from_slice(&self.prev_hash);
        out[96..104].copy_from_slice(&self.segment_len.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..124]);
        out[124..128].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Checks that this segment continues a chain: it belongs to `chain_id`,
    /// starts at `next_sequence` (which its file name must say too) and links
    /// to `prev_hash`, the last event before it. The error carries the
    /// sequence to report (if any) and why.
    pub fn check_continues(
        &self,
        chain_id: &[u8; 32],
        file_name_sequence: u64,
        next_sequence: u64,
        prev_hash: &[u8; 32],
    ) -> Result<(), (Option<u64>, String)> {
        if self.chain_id != *chain_id {
            return Err((None, "segment belongs to another chain".into()));
        }
        if self.first_sequence != file_name_sequence || self.first_sequence != next_sequence {
            let reason = format!(
                "segment starts at sequence {} (file name says {file_name_sequence}), expected {next_sequence}",
                self.first_sequence
            );
            return Err((Some(next_sequence), reason));
        }
        if self.prev_hash != *prev_hash {
            let reason = "segment header does not link to the previous segment's last event".to_string();
            return Err((Some(next_sequence), reason));
        }
        Ok(())
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, SegmentHeaderError> {
        let bytes = bytes.get(..SEGMENT_HEADER_LEN).ok_or(SegmentHeaderError::Truncated)?;
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err(SegmentHeaderError::BadMagic);
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        if crc32c::crc32c(&bytes[0..124]) != u32_at(124) {
            return Err(SegmentHeaderError::Checksum);
        }
        let version = u32_at(8);
        if version != SEGMENT_FORMAT_VERSION {
            return Err(SegmentHeaderError::UnsupportedVersion { found: version });
        }
        if u32_at(12) != SEGMENT_HEADER_LEN as u32 {
            return Err(SegmentHeaderError::BadHeaderLen(u32_at(12)));
        }
        Ok(Self {
            first_sequence: u64_at(16),
            created_unix_us: u64_at(24),
            chain_id: bytes[32..64].try_into().expect("32 bytes"),
            prev_hash: bytes[64..96].try_into().expect("32 bytes"),
            segment_len: u64_at(96),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_damage() {
        let header = SegmentHeader {
            first_sequence: 42,
            created_unix_us: 9,
            chain_id: [3; 32],
            prev_hash: [4; 32],
            segment_len: 1 << 20,
        };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes).unwrap(), header);
        for index in 0..SEGMENT_HEADER_LEN {
            let mut copy = bytes;
            copy[index] ^= 1;
            assert!(SegmentHeader::decode(&copy).is_err(), "flip at {index}");
        }
        assert_eq!(SegmentHeader::decode(&bytes[..100]), Err(SegmentHeaderError::Truncated));
    }
}
