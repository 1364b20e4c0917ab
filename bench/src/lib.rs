//! Shared set-up for the benchmarks in `benches/` (see docs/benchmarks.md).

use ate::{AteConfig, Chain, ChainBuilder, ChainKey, NewEvent, PrimaryKey, StorageBackend};
use std::path::Path;
use std::sync::Arc;

/// Folder for benchmark chains: `$ATE_BENCH_DIR`, or the system temp folder.
/// Put it on the disk you want to measure.
pub fn scratch_dir() -> tempfile::TempDir {
    match std::env::var_os("ATE_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).expect("ATE_BENCH_DIR is usable"),
        None => tempfile::tempdir().expect("temp folder"),
    }
}

pub fn config(dir: &Path, backend: StorageBackend) -> AteConfig {
    AteConfig { log_path: Some(dir.to_path_buf()), backend, ..AteConfig::default() }
}

pub async fn open(config: &AteConfig) -> Arc<Chain> {
    ChainBuilder::new(config).await.build().open(&ChainKey::from("bench")).await.expect("open bench chain")
}

/// Incompressible payload of `len` bytes (a BLAKE3 XOF stream).
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut out);
    out
}

/// Key number `index` of a benchmark data set.
pub fn key(index: u64) -> PrimaryKey {
    PrimaryKey::from_u128(((index as u128) << 64 | 0x5eed) ^ 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834)
}

/// Seed of [`random_index`] in every lookup bench, so they read the same keys.
pub const RANDOM_SEED: u64 = 0x2545_f491_4f6c_dd1d;

/// The next index below `below` from a xorshift64 generator: random keys for
/// lookup benches, a few instructions that do not show in a lookup's time.
pub fn random_index(state: &mut u64, below: u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state % below
}

/// Appends `commits` commits of `events_per_commit` events, spread over
/// `committers` concurrent tasks; keys start at `first_key`.
pub async fn ingest(
    chain: &Arc<Chain>,
    commits: u64,
    events_per_commit: u64,
    committers: u64,
    value: &[u8],
    first_key: u64,
) {
    let mut tasks = Vec::new();
    for committer in 0..committers {
        let chain = Arc::clone(chain);
        let value = value.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut commit = committer;
            while commit < commits {
                let base = first_key + commit * events_per_commit;
                let events = (0..events_per_commit).map(|i| NewEvent::data(key(base + i), value.clone())).collect();
                chain.append(events, None).await.expect("append");
                commit += committers;
            }
        }));
    }
    for task in tasks {
        task.await.expect("committer task");
    }
}

/// Resident set size of this process in bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}
