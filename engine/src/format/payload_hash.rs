//! BLAKE3 of many payloads at once.
//!
//! A payload of at most one chunk (1 KiB) is hashed block after block: BLAKE3
//! cannot spread one chunk over SIMD lanes, so a 1 KiB hash runs at about
//! 1 GB/s here while long inputs reach 6.5 GB/s. A commit carries many such
//! payloads, so they are hashed side by side instead: payloads with the same
//! number of whole blocks before their last one go through BLAKE3's
//! many-inputs kernel together (16 lanes with AVX-512), and each last block is
//! compressed on its own with the chunk-end and root flags. The results are
//! exactly `blake3::hash` of each payload (tested for every length).
//!
//! The many-inputs kernel is the `blake3` crate's `platform` module, which
//! that crate marks as unstable: the workspace pins `blake3` to 1.8.x, and a
//! change there fails to build or fails the equality tests below, never
//! yields other hashes silently.

use super::EventHash;
use blake3::platform::{le_bytes_from_words_32, words_from_le_bytes_32, Platform};
use blake3::{IncrementCounter, BLOCK_LEN, CHUNK_LEN, OUT_LEN};

/// BLAKE3's initialisation vector and domain flags (BLAKE3 specification, §2.1 and §2.2).
const IV: [u32; 8] = [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19];
const CHUNK_START: u8 = 1;
const CHUNK_END: u8 = 2;
const ROOT: u8 = 8;

/// Below this many payloads the plain path is as fast.
const MIN_BATCH: usize = 4;

/// `blake3::hash` of every payload, in order.
pub fn payload_hashes(payloads: &[&[u8]]) -> Vec<EventHash> {
    let mut hashes = vec![[0u8; OUT_LEN]; payloads.len()];
    if payloads.len() < MIN_BATCH {
        for (hash, payload) in hashes.iter_mut().zip(payloads) {
            *hash = blake3::hash(payload).into();
        }
        return hashes;
    }
    // (whole blocks before the last block, index) of every one-chunk payload.
    let mut short: Vec<(u8, u32)> = Vec::with_capacity(payloads.len());
    for (index, payload) in payloads.iter().enumerate() {
        if payload.len() > CHUNK_LEN {
            // Several chunks: the plain path already uses every SIMD lane.
            hashes[index] = blake3::hash(payload).into();
        } else {
            short.push((leading_blocks(payload.len()) as u8, index as u32));
        }
    }
    short.sort_unstable();
    let platform = Platform::detect();
    let mut chaining_values = Vec::new();
    for run in short.chunk_by(|a, b| a.0 == b.0) {
        let blocks = run[0].0 as usize;
        chaining_values.clear();
        chaining_values.resize(run.len() * OUT_LEN, 0);
        if blocks > 0 {
            leading_chaining_values(&platform, blocks, payloads, run, &mut chaining_values);
        }
        for (position, &(_, index)) in run.iter().enumerate() {
            let payload = payloads[index as usize];
            let mut chaining_value = if blocks == 0 {
                IV
            } else {
                let bytes = &chaining_values[position * OUT_LEN..(position + 1) * OUT_LEN];
                words_from_le_bytes_32(bytes.try_into().expect("32 bytes"))
            };
            let last = &payload[blocks * BLOCK_LEN..];
            let mut block = [0u8; BLOCK_LEN];
            block[..last.len()].copy_from_slice(last);
            let start = if blocks == 0 { CHUNK_START } else { 0 };
            platform.compress_in_place(&mut chaining_value, &block, last.len() as u8, 0, start | CHUNK_END | ROOT);
            hashes[index as usize] = le_bytes_from_words_32(&chaining_value);
        }
    }
    hashes
}

/// Whole blocks before the last block of a `len`-byte chunk (whose last
/// block holds 1 to 64 bytes; an empty input is one empty block).
fn leading_blocks(len: usize) -> usize {
    len.saturating_sub(1) / BLOCK_LEN
}

/// Chaining values after the first `blocks` blocks of every payload in `run`.
fn leading_chaining_values(platform: &Platform, blocks: usize, payloads: &[&[u8]], run: &[(u8, u32)], out: &mut [u8]) {
    // The kernel takes inputs of one compile-time length.
    macro_rules! by_length {
        ($($count:literal)*) => {
            match blocks {
                $($count => hash_many::<{ $count * BLOCK_LEN }>(platform, payloads, run, out),)*
                _ => unreachable!("a chunk has at most 15 blocks before its last"),
            }
        };
    }
    by_length!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15)
}

fn hash_many<const LEN: usize>(platform: &Platform, payloads: &[&[u8]], run: &[(u8, u32)], out: &mut [u8]) {
    let inputs: Vec<&[u8; LEN]> = run
        .iter()
        .map(|&(_, index)| payloads[index as usize][..LEN].try_into().expect("payload holds LEN leading bytes"))
        .collect();
    platform.hash_many(&inputs, &IV, 0, IncrementCounter::No, 0, CHUNK_START, 0, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(payloads: &[&[u8]]) -> Vec<EventHash> {
        payloads.iter().map(|payload| blake3::hash(payload).into()).collect()
    }

    #[test]
    fn every_length_up_to_two_chunks_matches_blake3() {
        let data: Vec<u8> = (0..2100u32).map(|i| (i * 31 + 7) as u8).collect();
        let payloads: Vec<&[u8]> = (0..=2100).map(|len| &data[..len]).collect();
        assert_eq!(payload_hashes(&payloads), expected(&payloads));
    }

    #[test]
    fn mixed_batches_keep_their_order() {
        let mut random = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let owned: Vec<Vec<u8>> = (0..random.usize(0..40))
                .map(|_| {
                    let len = if random.bool() { 1024 } else { random.usize(0..1500) };
                    (0..len).map(|_| random.u8(..)).collect()
                })
                .collect();
            let payloads: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
            assert_eq!(payload_hashes(&payloads), expected(&payloads));
        }
    }
}
