//! Queue items as an owner sends them to a consumer without a replica
//! (`Taken` records): any bytes, and valid records of the queue around any
//! payload and header fields, give a delivery, a dead-letter move or a
//! typed error, never a panic.
#![no_main]

use ate::format::{encode_record, EventHeader, EventKind};
use ate::messaging::{QueueConfig, QueueSpec};
use libfuzzer_sys::fuzz_target;
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    let spec = QueueSpec::new("fuzz", QueueConfig::default());
    let until = Instant::now();
    let _ = spec.taken_item::<(u64, String)>(data, 1, 1, until);
    let Some((&choice, payload)) = data.split_first() else { return };
    // A record that passes the frame, checksum and payload-hash checks, so
    // the value decoding and the queue's own checks see the fuzzed parts.
    let header = EventHeader {
        sequence: u64::from(choice) << 20,
        timestamp_us: 1,
        collection: u64::from(choice & 0x40 != 0),
        type_tag: 0,
        payload_len: payload.len() as u32,
        kind: if choice & 0x20 == 0 { EventKind::Data as u8 } else { choice & 0x0f },
        flags: 0,
        reserved: 0,
        key: [choice; 16],
        parent: if choice & 0x10 == 0 { *spec.items_key().as_bytes() } else { [choice; 16] },
        prev_hash: [0; 32],
        payload_hash: *blake3::hash(payload).as_bytes(),
        read_key_id: if choice & 0x80 == 0 { [0; 32] } else { [choice; 32] },
        nonce: [0; 12],
        reserved_tail: [0; 4],
    };
    let mut record = rkyv::util::AlignedVec::<16>::new();
    encode_record(&mut record, &header, payload);
    for deliveries in [1, 9] {
        let _ = spec.taken_item::<(u64, String)>(&record, deliveries, 1, until);
        let _ = spec.taken_item::<Vec<u8>>(&record, deliveries, 1, until);
    }
});
