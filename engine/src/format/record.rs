//! Record framing: how one event sits in a segment.
//!
//! ```text
//!  0      4      8              16                16+HEADER_LEN
//!  | len  | crc  |   sequence    |  EventHeader   |  payload  | zero pad to 16 |
//!  u32 LE u32 LE     u64 LE        rkyv, 184 B       len-184 B
//! ```
//! `len` counts header + payload (never 0: a zero length marks the end of the
//! written part of a preallocated segment). A *compacted* record keeps its
//! header and drops its payload (`len` = header only while the header's
//! payload length is not 0): its event hash, the hash chain, commit
//! signatures and Merkle proofs all still check; only superseded Data
//! versions are ever compacted (`log::compaction`). `crc` is CRC32C over bytes
//! `8 .. 16 + len`, i.e. the sequence and the whole body, so a record can be
//! checked, and its sequence trusted, before any field of the body is read.

use super::header::{ArchivedEventHeader, EventFlags, EventHeader, EventKind, HEADER_LEN};
use super::EventHash;
use rkyv::util::AlignedVec;

/// Records start at offsets that are multiples of this, so the archived header
/// (align 8) can be accessed in place in the mmap.
pub const RECORD_ALIGN: usize = 16;
/// Bytes of framing before the body.
pub const FRAME_LEN: usize = 16;

/// Total bytes a record with this body length occupies, padding included.
pub const fn padded_record_len(body_len: usize) -> usize {
    (FRAME_LEN + body_len).div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

/// Why the bytes at an offset are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("record frame is cut off ({available} bytes left)")]
    Truncated { available: usize },
    #[error("record length {body_len} is outside 184..={max}")]
    BadLength { body_len: u32, max: usize },
    #[error("record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("record offset {offset} is not {RECORD_ALIGN}-byte aligned")]
    Misaligned { offset: usize },
    #[error("event header failed validation: {0}")]
    Header(String),
    #[error("frame sequence {frame} disagrees with header sequence {header}")]
    SequenceMismatch { frame: u64, header: u64 },
    #[error("header payload length {header} disagrees with record length {record}")]
    PayloadLength { header: u32, record: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u8),
    #[error("unknown flag bits {0:#04x}")]
    UnknownFlags(u8),
    #[error("payload hash does not match the header")]
    PayloadHash,
    #[error("a compacted record of kind {0}: only superseded data versions may lose their payload")]
    CompactedTrustEvent(u8),
}

/// Appends one record to `out` and returns the event hash (BLAKE3 of the
/// archived header bytes).
///
/// `out` must be 16-aligned in memory and its length a multiple of
/// [`RECORD_ALIGN`]; both hold for buffers built only by this function.
pub fn encode_record(out: &mut AlignedVec<16>, header: &EventHeader, payload: &[u8]) -> EventHash {
    assert_eq!(out.len() % RECORD_ALIGN, 0, "record buffer misaligned");
    assert_eq!(header.payload_len as usize, payload.len(), "payload length");
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_LEN]);
    let mut buffer = std::mem::take(out);
    buffer =
        rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Panic>(header, buffer).unwrap_or_else(|never| match never {});
    *out = buffer;
    // The header has no out-of-line data, so rkyv wrote exactly the struct.
    assert_eq!(out.len(), start + FRAME_LEN + HEADER_LEN, "archived header size");
    let event_hash = super::payload_hash::hash(&out[start + FRAME_LEN..start + FRAME_LEN + HEADER_LEN]);
    out.extend_from_slice(payload);
    let body_len = HEADER_LEN + payload.len();
    let padded = padded_record_len(body_len);
    out.resize(start + padded, 0);
    out[start + 8..start + 16].copy_from_slice(&header.sequence.to_le_bytes());
    let crc = crc32c::crc32c(&out[start + 8..start + FRAME_LEN + body_len]);
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    event_hash
}

/// Whether a record whose body is `body_len` bytes, with a header that
/// says `payload_len`, is compacted: a header alone where a payload was.
pub fn is_compacted(body_len: usize, payload_len: u32) -> bool {
    body_len == HEADER_LEN && payload_len > 0
}

/// Appends the compacted form of a decoded record to `out`: its frame and
/// header, no payload. The event hash is unchanged (it covers the header).
pub fn encode_compacted(out: &mut AlignedVec<16>, record: &DecodedRecord<'_>) {
    assert_eq!(out.len() % RECORD_ALIGN, 0, "record buffer misaligned");
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_LEN]);
    out.extend_from_slice(record.header_bytes);
    out.resize(start + padded_record_len(HEADER_LEN), 0);
    out[start + 8..start + 16].copy_from_slice(&record.sequence().to_le_bytes());
    let crc = crc32c::crc32c(&out[start + 8..start + FRAME_LEN + HEADER_LEN]);
    out[start..start + 4].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A record validated in place: frame, checksum, header layout and kind.
#[derive(Debug, Clone, Copy)]
pub struct DecodedRecord<'a> {
    pub header: &'a ArchivedEventHeader,
    pub header_bytes: &'a [u8],
    /// Empty for a compacted record.
    pub payload: &'a [u8],
    /// The payload was removed by compaction (the header is whole).
    pub compacted: bool,
    /// Offset just past this record's padding.
    pub next_offset: usize,
}

impl DecodedRecord<'_> {
    pub fn event_hash(&self) -> EventHash {
        super::payload_hash::hash(self.header_bytes)
    }
    pub fn sequence(&self) -> u64 {
        self.header.sequence()
    }
    /// Checks the payload against the header's payload hash (costs a BLAKE3
    /// pass over the payload; recovery does it for the unsealed tail only).
    /// A compacted record has no payload to check: it passes if it is a
    /// Data event (the only kind compaction touches; the others carry what
    /// trust needs).
    pub fn verify_payload_hash(&self) -> Result<(), RecordError> {
        self.payload_hash_is(|| super::payload_hash::hash(self.payload))
    }

    /// The check of [`DecodedRecord::verify_payload_hash`] with the payload's
    /// hash computed elsewhere (only asked for when there is a payload).
    fn payload_hash_is(&self, computed: impl FnOnce() -> [u8; 32]) -> Result<(), RecordError> {
        if self.compacted {
            return match self.header.kind() {
                Some(EventKind::Data) => Ok(()),
                _ => Err(RecordError::CompactedTrustEvent(self.header.kind)),
            };
        }
        if computed() == self.header.payload_hash {
            Ok(())
        } else {
            Err(RecordError::PayloadHash)
        }
    }
}

/// [`DecodedRecord::verify_payload_hash`] of every record, their payloads
/// hashed side by side (`payload_hashes`).
pub fn verify_payload_hashes<'r, 'a: 'r>(
    records: impl IntoIterator<Item = &'r DecodedRecord<'a>>,
) -> Vec<Result<(), RecordError>> {
    let records: Vec<&DecodedRecord<'a>> = records.into_iter().collect();
    let payloads: Vec<&[u8]> =
        records.iter().map(|record| if record.compacted { &[][..] } else { record.payload }).collect();
    let hashes = super::payload_hashes(&payloads);
    records.iter().zip(hashes).map(|(record, hash)| record.payload_hash_is(|| hash)).collect()
}

/// [`DecodedRecord::event_hash`] of each record, hashed side by side: a
/// header is three BLAKE3 blocks, and one after another they cost a replica
/// more than its payload hashes did.
pub fn event_hashes<'r, 'a: 'r>(records: impl IntoIterator<Item = &'r DecodedRecord<'a>>) -> Vec<EventHash> {
    let headers: Vec<&[u8]> = records.into_iter().map(|record| record.header_bytes).collect();
    super::payload_hashes(&headers)
}

/// Reads the frame at `offset`: `Ok(None)` where a zero length marks the end
/// of written data, `Err` for anything that is not a whole, valid record.
pub fn decode_record(bytes: &[u8], offset: usize) -> Result<Option<DecodedRecord<'_>>, RecordError> {
    decode(bytes, offset, true)
}

/// [`decode_record`] without the checksum, for records this process already
/// validated (checksum included) when it wrote or recovered them: readers
/// below the durable frontier, which would otherwise checksum every record
/// once per reader (16 subscribers: 16 times). Everything else is still
/// checked, so a wrong offset or changed bytes give an error, never UB.
pub(crate) fn decode_validated_record(bytes: &[u8], offset: usize) -> Result<Option<DecodedRecord<'_>>, RecordError> {
    decode(bytes, offset, false)
}

fn decode(bytes: &[u8], offset: usize, check_crc: bool) -> Result<Option<DecodedRecord<'_>>, RecordError> {
    if offset % RECORD_ALIGN != 0 {
        return Err(RecordError::Misaligned { offset });
    }
    let available = bytes.len().saturating_sub(offset);
    if available < FRAME_LEN {
        // Fewer bytes than a frame left: only a clean end if they are all zero.
        return if bytes[offset.min(bytes.len())..].iter().all(|&b| b == 0) {
            Ok(None)
        } else {
            Err(RecordError::Truncated { available })
        };
    }
    let frame = &bytes[offset..offset + FRAME_LEN];
    let body_len = u32::from_le_bytes(frame[0..4].try_into().expect("4 bytes"));
    if body_len == 0 {
        return Ok(None);
    }
    let max = available - FRAME_LEN;
    if (body_len as usize) < HEADER_LEN || body_len as usize > max {
        return Err(RecordError::BadLength { body_len, max });
    }
    let stored = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
    let frame_sequence = u64::from_le_bytes(frame[8..16].try_into().expect("8 bytes"));
    let body_end = offset + FRAME_LEN + body_len as usize;
    if check_crc {
        let computed = crc32c::crc32c(&bytes[offset + 8..body_end]);
        if computed != stored {
            return Err(RecordError::Checksum { stored, computed });
        }
    }
    let header_bytes = &bytes[offset + FRAME_LEN..offset + FRAME_LEN + HEADER_LEN];
    let header = ArchivedEventHeader::from_bytes(header_bytes)
        .ok_or_else(|| RecordError::Header("header bytes are not aligned for the archived header".into()))?;
    if header.sequence() != frame_sequence {
        return Err(RecordError::SequenceMismatch { frame: frame_sequence, header: header.sequence() });
    }
    let payload = &bytes[offset + FRAME_LEN + HEADER_LEN..body_end];
    let compacted = is_compacted(body_len as usize, header.payload_len());
    if header.payload_len() as usize != payload.len() && !compacted {
        return Err(RecordError::PayloadLength { header: header.payload_len(), record: payload.len() });
    }
    if EventKind::from_u8(header.kind).is_none() {
        return Err(RecordError::UnknownKind(header.kind));
    }
    if header.flags & !EventFlags::KNOWN != 0 {
        return Err(RecordError::UnknownFlags(header.flags));
    }
    let next_offset = offset + padded_record_len(body_len as usize);
    Ok(Some(DecodedRecord { header, header_bytes, payload, compacted, next_offset: next_offset.min(bytes.len()) }))
}

/// The header of the record at `offset` and the offset after it, checking
/// bounds and layout but not the checksum: for bytes this process encoded
/// itself (the writer walking a group it just wrote). Never for bytes from
/// disk or network: use [`decode_record`].
pub fn header_at(bytes: &[u8], offset: usize) -> Option<(&ArchivedEventHeader, usize)> {
    let frame = bytes.get(offset..offset + FRAME_LEN)?;
    let body_len = u32::from_le_bytes(frame[0..4].try_into().expect("4 bytes")) as usize;
    let header_bytes = bytes.get(offset + FRAME_LEN..offset + FRAME_LEN + HEADER_LEN)?;
    let header = ArchivedEventHeader::from_bytes(header_bytes)?;
    (body_len >= HEADER_LEN).then_some((header, offset + padded_record_len(body_len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(sequence: u64, payload: &[u8]) -> EventHeader {
        EventHeader {
            sequence,
            timestamp_us: 7,
            collection: 0,
            type_tag: 0,
            payload_len: payload.len() as u32,
            kind: EventKind::Data as u8,
            flags: EventFlags::COMMIT_END,
            reserved: 0,
            key: [1; 16],
            parent: [0; 16],
            prev_hash: [0; 32],
            payload_hash: blake3::hash(payload).into(),
            read_key_id: [0; 32],
            nonce: [0; 12],
            reserved_tail: [0; 4],
        }
    }

    #[test]
    fn round_trip_then_end_marker() {
        let mut buffer = AlignedVec::<16>::new();
        let hash = encode_record(&mut buffer, &header(0, b"hello"), b"hello");
        encode_record(&mut buffer, &header(1, b""), b"");
        buffer.extend_from_slice(&[0u8; 64]);
        let first = decode_record(&buffer, 0).unwrap().unwrap();
        assert_eq!(first.payload, b"hello");
        assert_eq!(first.event_hash(), hash);
        first.verify_payload_hash().unwrap();
        let second = decode_record(&buffer, first.next_offset).unwrap().unwrap();
        assert_eq!(second.sequence(), 1);
        assert!(decode_record(&buffer, second.next_offset).unwrap().is_none());
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let mut buffer = AlignedVec::<16>::new();
        encode_record(&mut buffer, &header(3, b"payload bytes"), b"payload bytes");
        let body_end = FRAME_LEN + HEADER_LEN + 13;
        for index in 0..body_end {
            let mut copy = AlignedVec::<16>::new();
            copy.extend_from_slice(&buffer);
            copy[index] ^= 0x40;
            match decode_record(&copy, 0) {
                Ok(Some(_)) => panic!("flip at byte {index} went unnoticed"),
                Ok(None) => assert!(index < 4, "only a zeroed length may read as the end"),
                Err(_) => {}
            }
        }
    }

    #[test]
    fn lengths_beyond_the_buffer_are_rejected_without_panic() {
        let mut buffer = AlignedVec::<16>::new();
        encode_record(&mut buffer, &header(0, b"x"), b"x");
        buffer[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_record(&buffer, 0), Err(RecordError::BadLength { .. })));
        assert!(matches!(decode_record(&buffer[..10], 0), Err(RecordError::Truncated { .. })));
        assert!(matches!(decode_record(&buffer, 8), Err(RecordError::Misaligned { .. })));
    }
}
