//! BLAKE3 of many payloads at once.
//!
//! A payload of one or two chunks (up to 2 KiB; a 1 KiB value once
//! encrypted is just over one) is hashed block after block: BLAKE3 cannot
//! spread a chunk over SIMD lanes, so a 1 KiB hash runs at about 1 GB/s here
//! while long inputs reach 6.5 GB/s. A commit carries many such payloads, so
//! their chunks are hashed side by side instead: chunks with the same number
//! of whole blocks before their last one and the same chunk counter go
//! through BLAKE3's many-inputs kernel together (16 lanes with AVX-512), each
//! last block is compressed on its own, and a two-chunk payload ends with its
//! parent node. The results are exactly `blake3::hash` of each payload
//! (tested for every length).
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
const PARENT: u8 = 4;
const ROOT: u8 = 8;
const DERIVE_KEY_CONTEXT: u8 = 32;
const DERIVE_KEY_MATERIAL: u8 = 64;

/// Which BLAKE3 function: its key words, the flags on every compression,
/// and for derive-key mode the context (long inputs take the crate's path).
#[derive(Clone, Copy)]
struct Mode {
    key: [u32; 8],
    flags: u8,
    context: Option<&'static str>,
}

const PLAIN: Mode = Mode { key: IV, flags: 0, context: None };

/// The key `blake3::derive_key(context, ..)` hashes its material with,
/// computed once for [`derive_key_hashes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DerivedKey {
    context: &'static str,
    key: [u32; 8],
}

impl DerivedKey {
    pub fn new(context: &'static str) -> Self {
        let mut key = IV;
        let flags = DERIVE_KEY_CONTEXT | CHUNK_START | CHUNK_END | ROOT;
        let mut block = [0u8; BLOCK_LEN];
        assert!(context.len() <= BLOCK_LEN, "contexts are short constants");
        block[..context.len()].copy_from_slice(context.as_bytes());
        Platform::detect().compress_in_place(&mut key, &block, context.len() as u8, 0, flags);
        Self { context, key }
    }
}

/// Below this many payloads the plain path is as fast.
const MIN_BATCH: usize = 4;

/// One chunk of a payload: its bytes, its chunk counter, and whether it is
/// the payload's only chunk (the root).
struct Chunk<'a> {
    bytes: &'a [u8],
    counter: u8,
    root: bool,
}

/// `blake3::hash` of every payload, in order.
pub fn payload_hashes(payloads: &[&[u8]]) -> Vec<EventHash> {
    hash_all(PLAIN, payloads)
}

/// `blake3::derive_key(context, input)` of every input, in order, with
/// `key = DerivedKey::new(context)` computed once.
pub fn derive_key_hashes(key: &DerivedKey, inputs: &[&[u8]]) -> Vec<[u8; 32]> {
    hash_all(Mode { key: key.key, flags: DERIVE_KEY_MATERIAL, context: Some(key.context) }, inputs)
}

fn hash_all(mode: Mode, payloads: &[&[u8]]) -> Vec<[u8; 32]> {
    let mut hashes = vec![[0u8; OUT_LEN]; payloads.len()];
    if payloads.len() < MIN_BATCH {
        for (hash, payload) in hashes.iter_mut().zip(payloads) {
            *hash = one_hash(mode, payload);
        }
        return hashes;
    }
    let mut chunks: Vec<Chunk<'_>> = Vec::with_capacity(payloads.len() * 2);
    // Payloads of two chunks: (payload index, index of its first chunk).
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for (index, payload) in payloads.iter().enumerate() {
        if payload.len() <= CHUNK_LEN {
            chunks.push(Chunk { bytes: payload, counter: 0, root: true });
        } else if payload.len() <= 2 * CHUNK_LEN {
            pairs.push((index, chunks.len()));
            let (first, second) = payload.split_at(CHUNK_LEN);
            chunks.push(Chunk { bytes: first, counter: 0, root: false });
            chunks.push(Chunk { bytes: second, counter: 1, root: false });
        } else {
            // Several chunks: the one-input path already uses the SIMD lanes.
            hashes[index] = one_hash(mode, payload);
        }
    }
    let values = chaining_values(mode, &chunks);
    // Roots are payloads of one chunk, in payload order among those.
    let mut one_chunk = chunks.iter().zip(&values).filter(|(chunk, _)| chunk.root).map(|(_, value)| value);
    for (hash, payload) in hashes.iter_mut().zip(payloads) {
        if payload.len() <= CHUNK_LEN {
            *hash = le_bytes_from_words_32(one_chunk.next().expect("one value per one-chunk payload"));
        }
    }
    let platform = Platform::detect();
    for (index, first) in pairs {
        let mut block = [0u8; BLOCK_LEN];
        block[..OUT_LEN].copy_from_slice(&le_bytes_from_words_32(&values[first]));
        block[OUT_LEN..].copy_from_slice(&le_bytes_from_words_32(&values[first + 1]));
        let mut root = mode.key;
        platform.compress_in_place(&mut root, &block, BLOCK_LEN as u8, 0, mode.flags | PARENT | ROOT);
        hashes[index] = le_bytes_from_words_32(&root);
    }
    hashes
}

/// The chaining value of every chunk (for a root chunk: the hash).
fn chaining_values(mode: Mode, chunks: &[Chunk<'_>]) -> Vec<[u32; 8]> {
    let platform = Platform::detect();
    let mut values = vec![mode.key; chunks.len()];
    // (whole blocks before the last block, counter, chunk index), grouped.
    let mut order: Vec<(u8, u8, u32)> = chunks
        .iter()
        .enumerate()
        .map(|(at, chunk)| (leading_blocks(chunk.bytes.len()), chunk.counter, at as u32))
        .collect();
    order.sort_unstable();
    let mut leading = Vec::new();
    for run in order.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        let (blocks, counter) = (run[0].0 as usize, run[0].1 as u64);
        if blocks > 0 {
            leading.clear();
            leading.resize(run.len() * OUT_LEN, 0);
            leading_chaining_values(&platform, mode, blocks, counter, chunks, run, &mut leading);
        }
        for (position, &(_, _, at)) in run.iter().enumerate() {
            let chunk = &chunks[at as usize];
            let value = &mut values[at as usize];
            if blocks > 0 {
                let bytes = &leading[position * OUT_LEN..(position + 1) * OUT_LEN];
                *value = words_from_le_bytes_32(bytes.try_into().expect("32 bytes"));
            }
            let last = &chunk.bytes[blocks * BLOCK_LEN..];
            let mut block = [0u8; BLOCK_LEN];
            block[..last.len()].copy_from_slice(last);
            let start = if blocks == 0 { CHUNK_START } else { 0 };
            let root = if chunk.root { ROOT } else { 0 };
            let flags = mode.flags | start | CHUNK_END | root;
            platform.compress_in_place(value, &block, last.len() as u8, counter, flags);
        }
    }
    values
}

/// Whole blocks before the last block of a `len`-byte chunk (whose last
/// block holds 1 to 64 bytes; an empty input is one empty block).
fn leading_blocks(len: usize) -> u8 {
    (len.saturating_sub(1) / BLOCK_LEN) as u8
}

/// Chaining values after the first `blocks` blocks of every chunk in `run`.
fn leading_chaining_values(
    platform: &Platform,
    mode: Mode,
    blocks: usize,
    counter: u64,
    chunks: &[Chunk<'_>],
    run: &[(u8, u8, u32)],
    out: &mut [u8],
) {
    // The kernel takes inputs of one compile-time length.
    macro_rules! by_length {
        ($($count:literal)*) => {
            match blocks {
                $($count => hash_many::<{ $count * BLOCK_LEN }>(platform, mode, counter, chunks, run, out),)*
                _ => unreachable!("a chunk has at most 15 blocks before its last"),
            }
        };
    }
    by_length!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15)
}

fn hash_many<const LEN: usize>(
    platform: &Platform,
    mode: Mode,
    counter: u64,
    chunks: &[Chunk<'_>],
    run: &[(u8, u8, u32)],
    out: &mut [u8],
) {
    let inputs: Vec<&[u8; LEN]> = run
        .iter()
        .map(|&(_, _, at)| chunks[at as usize].bytes[..LEN].try_into().expect("chunk holds LEN leading bytes"))
        .collect();
    platform.hash_many(&inputs, &mode.key, counter, IncrementCounter::No, mode.flags, CHUNK_START, 0, out);
}

/// One input through the crate's own path.
fn one_hash(mode: Mode, input: &[u8]) -> [u8; 32] {
    match mode.context {
        None => blake3::hash(input).into(),
        Some(context) => blake3::derive_key(context, input),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(payloads: &[&[u8]]) -> Vec<EventHash> {
        payloads.iter().map(|payload| blake3::hash(payload).into()).collect()
    }

    #[test]
    fn every_length_up_to_three_chunks_matches_blake3() {
        let data: Vec<u8> = (0..3100u32).map(|i| (i * 31 + 7) as u8).collect();
        let payloads: Vec<&[u8]> = (0..=3100).map(|len| &data[..len]).collect();
        assert_eq!(payload_hashes(&payloads), expected(&payloads));
    }

    #[test]
    fn derive_key_mode_matches_blake3_for_every_length() {
        let context = "ate 2026 test context";
        let key = DerivedKey::new(context);
        let data: Vec<u8> = (0..2200u32).map(|i| (i * 13 + 5) as u8).collect();
        let inputs: Vec<&[u8]> = (0..=2200).map(|len| &data[..len]).collect();
        let expected: Vec<[u8; 32]> = inputs.iter().map(|input| blake3::derive_key(context, input)).collect();
        assert_eq!(derive_key_hashes(&key, &inputs), expected);
        assert_eq!(derive_key_hashes(&key, &inputs[..2]), expected[..2]);
    }

    #[test]
    fn mixed_batches_keep_their_order() {
        let mut random = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let owned: Vec<Vec<u8>> = (0..random.usize(0..40))
                .map(|_| {
                    let len = if random.bool() { 1024 } else { random.usize(0..2600) };
                    (0..len).map(|_| random.u8(..)).collect()
                })
                .collect();
            let payloads: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
            assert_eq!(payload_hashes(&payloads), expected(&payloads));
        }
    }
}
