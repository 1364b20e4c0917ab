//! BLAKE3 of many payloads at once.
//!
//! A payload of one or two chunks (up to 2 KiB; a 1 KiB value once
//! encrypted is just over one) is hashed block after block: BLAKE3 cannot
//! spread a chunk over SIMD lanes, so a 1 KiB hash runs at about 1 GB/s here
//! while long inputs reach 6.5 GB/s. A commit carries many such payloads, so
//! their chunks are hashed side by side instead: chunks with the same block
//! count, counter and flags go through BLAKE3's many-inputs kernel together
//! (16 lanes with AVX-512); a chunk ending in a partial block has that block
//! compressed on its own, and a two-chunk payload ends with its parent node.
//! The results are exactly `blake3::hash` of each payload (tested for every
//! length). A single input of one chunk ([`hash`]) is compressed block by
//! block here too: without the crate's hasher state around it, a record
//! header (184 bytes) hashes in 185 ns instead of 206.
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
        assert!(context.len() <= BLOCK_LEN, "contexts are short constants");
        let flags = DERIVE_KEY_CONTEXT | CHUNK_START | CHUNK_END | ROOT;
        compress_last_block(&Platform::detect(), &mut key, context.as_bytes(), 0, flags);
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

/// `blake3::hash` of one input: a record header (three blocks), a Merkle
/// node, a payload.
pub fn hash(input: &[u8]) -> EventHash {
    one_hash(PLAIN, input)
}

/// [`derive_key_hashes`] of one input.
pub fn derive_key_hash(key: &DerivedKey, input: &[u8]) -> [u8; 32] {
    one_hash(Mode { key: key.key, flags: DERIVE_KEY_MATERIAL, context: Some(key.context) }, input)
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
    // (payload index, index of its chunk), for payloads of one chunk and,
    // of their first chunk, for payloads of two.
    let mut singles: Vec<(usize, usize)> = Vec::with_capacity(payloads.len());
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for (index, payload) in payloads.iter().enumerate() {
        if payload.len() <= CHUNK_LEN {
            singles.push((index, chunks.len()));
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
    let platform = Platform::detect();
    let values = chaining_values(&platform, mode, &chunks);
    for (index, chunk) in singles {
        hashes[index] = le_bytes_from_words_32(&values[chunk]);
    }
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
fn chaining_values(platform: &Platform, mode: Mode, chunks: &[Chunk<'_>]) -> Vec<[u32; 8]> {
    let mut values = vec![mode.key; chunks.len()];
    // (blocks the kernel takes, whether that is all, counter, root, chunk
    // index), grouped. A chunk of whole blocks goes through the kernel
    // entirely (its last block flagged there); any other keeps its partial
    // last block for a compression of its own.
    let order = grouped(chunks);
    let mut kernel_output = Vec::new();
    for run in order.chunk_by(|a, b| (a.0, a.1, a.2, a.3) == (b.0, b.1, b.2, b.3)) {
        let (blocks, whole, counter, root) = (run[0].0 as usize, run[0].1, run[0].2 as u64, run[0].3);
        let root_flag = if root { ROOT } else { 0 };
        if blocks > 0 {
            kernel_output.clear();
            kernel_output.resize(run.len() * OUT_LEN, 0);
            let end = if whole { CHUNK_END | root_flag } else { 0 };
            let batch = KernelBatch { mode, blocks, counter, end_flags: end, chunks, run };
            batch.hash(platform, &mut kernel_output);
        }
        for (position, &(_, _, _, _, at)) in run.iter().enumerate() {
            let value = &mut values[at as usize];
            if blocks > 0 {
                let bytes = &kernel_output[position * OUT_LEN..(position + 1) * OUT_LEN];
                *value = words_from_le_bytes_32(bytes.try_into().expect("32 bytes"));
            }
            if whole {
                continue;
            }
            let start = if blocks == 0 { CHUNK_START } else { 0 };
            let flags = mode.flags | start | CHUNK_END | root_flag;
            compress_last_block(platform, value, &chunks[at as usize].bytes[blocks * BLOCK_LEN..], counter, flags);
        }
    }
    values
}

/// Kinds of chunk [`grouped`] tells apart: up to 16 kernel blocks, whole
/// or not, counter 0 or 1, root or not.
const CHUNK_KINDS: usize = (CHUNK_LEN / BLOCK_LEN + 1) * 8;

/// Every chunk as (kernel blocks, whole, counter, root, index), chunks of
/// one kind next to each other: a counting sort, since a commit's
/// thousand payloads come in a handful of kinds (a comparison sort of the
/// tuples was 1.3% of E2's samples).
fn grouped(chunks: &[Chunk<'_>]) -> Vec<(u8, bool, u8, bool, u32)> {
    let kind = |chunk: &Chunk<'_>| {
        let (blocks, whole) = kernel_blocks(chunk.bytes.len());
        let kind = (blocks as usize) << 3 | (whole as usize) << 2 | (chunk.counter as usize) << 1 | chunk.root as usize;
        (kind, (blocks, whole, chunk.counter, chunk.root))
    };
    let mut starts = [0usize; CHUNK_KINDS + 1];
    for chunk in chunks {
        starts[kind(chunk).0 + 1] += 1;
    }
    for at in 1..starts.len() {
        starts[at] += starts[at - 1];
    }
    let mut order = vec![(0, false, 0, false, 0); chunks.len()];
    for (at, chunk) in chunks.iter().enumerate() {
        let (kind, (blocks, whole, counter, root)) = kind(chunk);
        order[starts[kind]] = (blocks, whole, counter, root, at as u32);
        starts[kind] += 1;
    }
    order
}

/// Compresses a chunk's last block (0 to 64 bytes, zero-padded) into `value`.
fn compress_last_block(platform: &Platform, value: &mut [u32; 8], last: &[u8], counter: u64, flags: u8) {
    let mut block = [0u8; BLOCK_LEN];
    block[..last.len()].copy_from_slice(last);
    platform.compress_in_place(value, &block, last.len() as u8, counter, flags);
}

/// Blocks of a `len`-byte chunk that the many-inputs kernel takes, and
/// whether that is all of it: every block when they are whole, else those
/// before the partial last one (an empty input is one empty block,
/// compressed alone).
fn kernel_blocks(len: usize) -> (u8, bool) {
    ((len / BLOCK_LEN) as u8, len > 0 && len % BLOCK_LEN == 0)
}

/// Chunks that go through the many-inputs kernel together: the same number
/// of blocks, counter and flags on their last block.
struct KernelBatch<'r, 'a> {
    mode: Mode,
    blocks: usize,
    counter: u64,
    end_flags: u8,
    chunks: &'r [Chunk<'a>],
    run: &'r [(u8, bool, u8, bool, u32)],
}

impl KernelBatch<'_, '_> {
    fn hash(&self, platform: &Platform, out: &mut [u8]) {
        // The kernel takes inputs of one compile-time length.
        macro_rules! by_length {
            ($($count:literal)*) => {
                match self.blocks {
                    $($count => self.hash_many::<{ $count * BLOCK_LEN }>(platform, out),)*
                    _ => unreachable!("a chunk has at most 16 blocks"),
                }
            };
        }
        by_length!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
    }

    fn hash_many<const LEN: usize>(&self, platform: &Platform, out: &mut [u8]) {
        let inputs: Vec<&[u8; LEN]> = self
            .run
            .iter()
            .map(|&(_, _, _, _, at)| self.chunks[at as usize].bytes[..LEN].try_into().expect("chunk holds LEN bytes"))
            .collect();
        let (mode, counter) = (self.mode, self.counter);
        platform.hash_many(
            &inputs,
            &mode.key,
            counter,
            IncrementCounter::No,
            mode.flags,
            CHUNK_START,
            self.end_flags,
            out,
        );
    }
}

/// One input: up to a chunk compressed here, longer ones through the
/// crate's own path.
fn one_hash(mode: Mode, input: &[u8]) -> [u8; 32] {
    // One chunk: its compressions, with the mode's key (which for
    // derive-key mode the crate would first derive from the context again)
    // and without the crate's hasher state around them.
    if input.len() <= CHUNK_LEN {
        let platform = Platform::detect();
        let mut value = mode.key;
        let (blocks, whole) = kernel_blocks(input.len());
        let full_before_last = if whole { blocks as usize - 1 } else { blocks as usize };
        for at in 0..full_before_last {
            let start = if at == 0 { CHUNK_START } else { 0 };
            let block: &[u8; BLOCK_LEN] =
                input[at * BLOCK_LEN..(at + 1) * BLOCK_LEN].try_into().expect("a whole block");
            platform.compress_in_place(&mut value, block, BLOCK_LEN as u8, 0, mode.flags | start);
        }
        let start = if full_before_last == 0 { CHUNK_START } else { 0 };
        let flags = mode.flags | start | CHUNK_END | ROOT;
        compress_last_block(&platform, &mut value, &input[full_before_last * BLOCK_LEN..], 0, flags);
        return le_bytes_from_words_32(&value);
    }
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
        for (input, expected) in inputs.iter().zip(&expected) {
            assert_eq!(&derive_key_hash(&key, input), expected, "{} bytes", input.len());
        }
    }

    #[test]
    fn inputs_alone_match_blake3_for_every_length() {
        let data: Vec<u8> = (0..2200u32).map(|i| (i * 7 + 1) as u8).collect();
        for len in 0..=2200 {
            assert_eq!(payload_hashes(&[&data[..len]]), expected(&[&data[..len]]), "{len} bytes");
            assert_eq!(hash(&data[..len]), expected(&[&data[..len]])[0], "{len} bytes");
        }
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
