//! Records as stored: decoding any bytes at any offset gives a record or a
//! typed error, never a panic or an out-of-bounds read.
#![no_main]

use ate::format::{decode_record, header_at};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // rkyv reads headers in place: the engine always hands it aligned bytes.
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(data.len());
    aligned.extend_from_slice(data);
    let bytes = aligned.as_slice();
    let mut offset = 0usize;
    while offset < bytes.len() {
        match decode_record(bytes, offset) {
            Ok(Some(record)) => {
                let _ = record.verify_payload_hash();
                let _ = record.event_hash();
                assert!(record.next_offset > offset, "a record must advance");
                offset = record.next_offset;
            }
            Ok(None) | Err(_) => offset += 16,
        }
        let _ = header_at(bytes, offset);
    }
});
