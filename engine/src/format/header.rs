//! The event header: a fixed-size rkyv struct, identical on disk and on the wire.

use rkyv::{Archive, Deserialize, Serialize};

/// What an event does to the object it names.
///
/// Stored as a `u8` so that every byte pattern of a header is structurally
/// valid; an unknown value is a typed error at the decoder, not UB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum EventKind {
    /// A new version of an object; the payload is its value.
    Data = 1,
    /// Deletes an object; no payload.
    Tombstone = 2,
    /// Sets read/write authority on an object (chain-of-trust issue).
    Authority = 3,
    /// Publishes a public key into the chain.
    PublicKey = 4,
    /// Signature over a commit's Merkle root.
    Signature = 5,
    /// Changes retention: the chain's policy, or one object's retain-until
    /// date and legal hold (`trust::retention`).
    Retention = 6,
}

impl EventKind {
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Data,
            2 => Self::Tombstone,
            3 => Self::Authority,
            4 => Self::PublicKey,
            5 => Self::Signature,
            6 => Self::Retention,
            _ => return None,
        })
    }
}

/// Bit flags carried in [`EventHeader::flags`].
#[derive(Debug, Clone, Copy)]
pub struct EventFlags;

impl EventFlags {
    /// Set on the last event of a commit. Recovery only keeps whole commits:
    /// events after the last `COMMIT_END` belong to a commit that was never
    /// acknowledged and are cut off with the torn tail.
    pub const COMMIT_END: u8 = 0b0000_0001;
    /// Every flag this format version knows; others are rejected.
    pub const KNOWN: u8 = Self::COMMIT_END;
}

/// The header of every event. All fields are fixed-size integers or byte
/// arrays, so the archived form has one constant size ([`HEADER_LEN`]) and
/// zero-copy access needs no pointer chasing.
///
/// Field order is chosen so that the archived struct has no padding.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct EventHeader {
    /// Position in the chain: dense, from 0.
    pub sequence: u64,
    /// Commit time, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// Collection of the parent this object is a child of (0 when no parent).
    pub collection: u64,
    /// Stable, declared type tag of the payload (0 = untyped).
    pub type_tag: u64,
    /// Length of the payload that follows the header.
    pub payload_len: u32,
    /// [`EventKind`] as a byte.
    pub kind: u8,
    /// [`EventFlags`] bits.
    pub flags: u8,
    /// Zero in this version.
    pub reserved: u16,
    /// 128-bit object key.
    pub key: [u8; 16],
    /// Key of the parent object; all zero when the object is a root.
    pub parent: [u8; 16],
    /// BLAKE3 hash of the previous event's header (all zero for sequence 0).
    pub prev_hash: [u8; 32],
    /// BLAKE3 hash of the stored payload bytes (as stored, i.e. encrypted).
    pub payload_hash: [u8; 32],
    /// Id of the read key the payload is encrypted under; all zero = plaintext.
    pub read_key_id: [u8; 32],
    /// AEAD nonce for the payload; all zero for plaintext.
    pub nonce: [u8; 12],
    /// Zero in this version; keeps the size a multiple of 8.
    pub reserved_tail: [u8; 4],
}

/// Size in bytes of an archived [`EventHeader`].
pub const HEADER_LEN: usize = core::mem::size_of::<ArchivedEventHeader>();

// The layout is a persistent format: a change of size is a format change.
const _: () = assert!(HEADER_LEN == 184);
const _: () = assert!(core::mem::align_of::<ArchivedEventHeader>() <= 16);

impl ArchivedEventHeader {
    /// The header stored in `bytes` (exactly [`HEADER_LEN`] bytes, aligned
    /// for the archived struct); `None` otherwise. No rkyv validator runs:
    /// every field is an integer or a byte array, so every byte pattern is a
    /// valid header and the validator would have nothing to reject (test
    /// `any_bytes_are_a_valid_header` holds the type to that). E3 showed no
    /// speed difference within its noise.
    pub fn from_bytes(bytes: &[u8]) -> Option<&Self> {
        if bytes.len() != HEADER_LEN || bytes.as_ptr().align_offset(core::mem::align_of::<Self>()) != 0 {
            return None;
        }
        // SAFETY: the length and alignment are checked above, and every bit
        // pattern of these bytes is a valid `ArchivedEventHeader` (integers
        // and byte arrays only; unknown kinds and flags are rejected by the
        // decoder, not by the type). The result borrows `bytes`.
        Some(unsafe { &*bytes.as_ptr().cast::<Self>() })
    }

    /// An owned copy of the header.
    pub fn to_native(&self) -> EventHeader {
        rkyv::deserialize::<EventHeader, rkyv::rancor::Panic>(self).unwrap_or_else(|never| match never {})
    }
    pub fn sequence(&self) -> u64 {
        self.sequence.to_native()
    }
    pub fn timestamp_us(&self) -> u64 {
        self.timestamp_us.to_native()
    }
    pub fn collection(&self) -> u64 {
        self.collection.to_native()
    }
    pub fn type_tag(&self) -> u64 {
        self.type_tag.to_native()
    }
    pub fn payload_len(&self) -> u32 {
        self.payload_len.to_native()
    }
    /// `None` when the kind byte is not one this version knows.
    pub fn kind(&self) -> Option<EventKind> {
        EventKind::from_u8(self.kind)
    }
    pub fn is_commit_end(&self) -> bool {
        self.flags & EventFlags::COMMIT_END != 0
    }
    pub fn key(&self) -> [u8; 16] {
        self.key
    }
    /// `None` for root objects.
    pub fn parent(&self) -> Option<[u8; 16]> {
        (self.parent != [0u8; 16]).then_some(self.parent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `from_bytes` skips rkyv's validator because no byte pattern is invalid
    /// for this type. A field with invalid patterns (a bool, an enum, a
    /// `NonZero`) would make the validator reject some of these bytes.
    #[test]
    fn any_bytes_are_a_valid_header() {
        let mut buffer = rkyv::util::AlignedVec::<16>::new();
        for seed in [0x00u8, 0x01, 0x02, 0x7F, 0x80, 0xFE, 0xFF] {
            buffer.clear();
            buffer.extend_from_slice(&std::array::from_fn::<u8, HEADER_LEN, _>(|index| {
                seed.wrapping_add((index as u8).wrapping_mul(37))
            }));
            let checked = rkyv::access::<ArchivedEventHeader, rkyv::rancor::Error>(&buffer);
            assert!(checked.is_ok(), "seed {seed:#x}: {checked:?}");
            let header = ArchivedEventHeader::from_bytes(&buffer).expect("length and alignment are right");
            assert_eq!(header.to_native(), checked.unwrap().to_native());
        }
        assert!(ArchivedEventHeader::from_bytes(&buffer[..HEADER_LEN - 1]).is_none(), "too short");
        buffer.extend_from_slice(&[0]);
        assert!(ArchivedEventHeader::from_bytes(&buffer[1..]).is_none(), "misaligned");
    }
}
