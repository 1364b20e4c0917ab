//! Checkpoints as a replica receives them from a server (and recovery reads
//! them from disk): any bytes decode or give a typed error, never a panic
//! or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ate::chain::checkpoint_first_sequence(data);
});
