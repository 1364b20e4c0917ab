//! The byte formats that live on disk and on the wire. Pure logic: no I/O here,
//! so every decoder can be tested (and fuzzed) on plain byte slices.
//!
//! `docs/design.md` draws these layouts byte by byte; keep the two in step.

mod header;
mod payload_hash;
mod record;
mod segment_header;

pub use header::{ArchivedEventHeader, EventFlags, EventHeader, EventKind, HEADER_LEN};
pub use payload_hash::{derive_key_hash, derive_key_hashes, hash, payload_hashes, DerivedKey};
pub(crate) use record::decode_validated_record;
pub use record::{
    decode_record, encode_compacted, encode_record, event_hashes, header_at, is_compacted, padded_record_len,
    verify_payload_hashes, DecodedRecord, RecordError, FRAME_LEN, RECORD_ALIGN,
};
pub use segment_header::{SegmentHeader, SegmentHeaderError, SEGMENT_FORMAT_VERSION, SEGMENT_HEADER_LEN};

/// A 16-byte aligned buffer, for decoding records received from elsewhere.
pub type AlignedBytes = rkyv::util::AlignedVec<16>;

/// `bytes` copied into an [`AlignedBytes`]: rkyv reads record headers in
/// place, so records that arrive in an ordinary buffer get one aligned copy.
pub fn aligned_copy(bytes: &[u8]) -> AlignedBytes {
    let mut aligned = AlignedBytes::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    aligned
}

/// BLAKE3 hash of an event header: the link of the hash chain.
pub type EventHash = [u8; 32];
