//! Helpers shared by the scenario tests.
#![allow(dead_code)]

use ate::crypto::{PrivateSignKey, PublicSignKey, SignatureScheme};
use ate::storage::{FaultPlan, FaultyStorage, Storage};
use ate::AteSession;
use ate::{AteConfig, AteError, Chain, ChainBuilder, ChainKey, NewEvent, PrimaryKey, Result, StorageBackend};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Small segments and write limits so that rolls, torn windows and scans
/// stay fast in tests.
pub fn small_config(dir: &Path) -> AteConfig {
    AteConfig {
        log_path: Some(dir.to_path_buf()),
        segment_size_bytes: 1 << 20,
        max_commit_bytes: 64 << 10,
        max_write_bytes: 64 << 10,
        ..AteConfig::default()
    }
}

pub async fn open_with(config: &AteConfig, storage: Option<Arc<dyn Storage>>) -> Result<Arc<Chain>> {
    let mut builder = ChainBuilder::new(config).await;
    if let Some(storage) = storage {
        builder = builder.storage(storage);
    }
    builder.build().open(&ChainKey::from("test-chain")).await
}

/// Appends commits `0..commits` of [`commit_events`] through a storage that
/// "crashes" once `budget` bytes are written (never, for `None`); returns
/// how many commits were acknowledged and how many bytes were written.
pub async fn run_until_crash(config: &AteConfig, commits: usize, budget: Option<u64>) -> (usize, u64) {
    let storage = FaultyStorage::new(FaultPlan { write_budget_bytes: budget, ..FaultPlan::default() });
    let chain = open_with(config, Some(storage.clone() as Arc<dyn Storage>)).await.expect("open");
    let mut acknowledged = 0;
    for index in 0..commits {
        match chain.append(commit_events(index), None).await {
            Ok(_) => acknowledged += 1,
            Err(AteError::Poisoned { .. }) => break,
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    (acknowledged, storage.bytes_written())
}

pub async fn open(dir: &Path) -> Result<Arc<Chain>> {
    open_with(&small_config(dir), None).await
}

pub async fn open_portable(dir: &Path) -> Result<Arc<Chain>> {
    let config = AteConfig { backend: StorageBackend::Portable, ..small_config(dir) };
    open_with(&config, None).await
}

/// A deterministic payload for object `index`: its length varies so record
/// boundaries fall at many different offsets.
pub fn payload(index: usize) -> Vec<u8> {
    let len = 1 + (index * 37) % 300;
    (0..len).map(|i| (index as u8).wrapping_mul(31).wrapping_add(i as u8)).collect()
}

pub fn key(index: usize) -> PrimaryKey {
    PrimaryKey::from_name(&format!("object-{index}"))
}

/// Commit `index` of a deterministic workload: 1 to 3 events.
pub fn commit_events(index: usize) -> Vec<NewEvent> {
    (0..1 + index % 3)
        .map(|part| {
            let object = index * 3 + part;
            NewEvent::data(key(object), payload(object))
        })
        .collect()
}

pub fn objects_of_commit(index: usize) -> impl Iterator<Item = usize> {
    (0..1 + index % 3).map(move |part| index * 3 + part)
}

/// A fresh ML-DSA-44 signing key (the fastest to make).
pub fn signing_key() -> PrivateSignKey {
    PrivateSignKey::generate(SignatureScheme::MlDsa44)
}

/// A session that writes with `keys`.
pub fn session_with(keys: &[&PrivateSignKey]) -> AteSession {
    let mut session = AteSession::new("tester");
    for key in keys {
        session.add_user_write_key((*key).clone());
    }
    session
}

/// Opens chain `name` under `config` with `root` as its root key.
pub async fn open_rooted(config: AteConfig, root: &PublicSignKey, name: &str) -> Arc<Chain> {
    ChainBuilder::new(&config).await.add_root_public_key(root).build().open(&ChainKey::from(name)).await.unwrap()
}

/// A 1 KiB payload for object `index` (the page-cache tests' events).
pub fn kib_payload(index: usize) -> Vec<u8> {
    (0..1024).map(|i| (index as u8).wrapping_mul(13).wrapping_add(i as u8)).collect()
}

/// Appends objects `indexes` with [`kib_payload`]s as one commit.
pub async fn append_kib_commit(chain: &Chain, indexes: std::ops::Range<usize>) {
    let events = indexes.map(|index| NewEvent::data(key(index), kib_payload(index)));
    chain.append(events.collect(), None).await.expect("append");
}

/// Every object `0..events` written with [`kib_payload`] reads back intact.
pub fn assert_all_read_back(chain: &Chain, events: usize, context: &str) {
    for index in 0..events {
        let event = chain.get(&key(index)).unwrap_or_else(|| panic!("{context}: event {index} is missing"));
        assert_eq!(event.payload, kib_payload(index).as_slice(), "{context}: event {index}");
    }
}

/// The chain's segment files under `dir`, oldest first.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|extension| extension == "seg") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The share of the 4 KiB pages of `bytes` of the file at `path` that are
/// in the page cache (`mincore` on a mapping of its own).
pub fn cached_share(path: &Path, bytes: impl std::ops::RangeBounds<usize>) -> f64 {
    let file = std::fs::File::open(path).expect("open segment");
    // SAFETY: read-only shared mapping of a log file; only residency is
    // queried, no byte is read through it.
    let map = unsafe { memmap2::Mmap::map(&file) }.expect("map segment");
    let start = match bytes.start_bound() {
        std::ops::Bound::Included(start) => *start,
        std::ops::Bound::Excluded(start) => start + 1,
        std::ops::Bound::Unbounded => 0,
    };
    let end = match bytes.end_bound() {
        std::ops::Bound::Included(end) => end + 1,
        std::ops::Bound::Excluded(end) => *end,
        std::ops::Bound::Unbounded => map.len(),
    };
    assert!(start % 4096 == 0 && start < end && end <= map.len(), "{start}..{end} of {} bytes", map.len());
    let pages = (end - start).div_ceil(4096);
    let mut resident = vec![0u8; pages];
    // SAFETY: `start..end` lies within the live mapping `map`, `start` is
    // page-aligned, and `resident` has one byte per 4 KiB page of the
    // range, as mincore(2) requires.
    let status =
        unsafe { libc::mincore(map.as_ptr().add(start) as *mut libc::c_void, end - start, resident.as_mut_ptr()) };
    assert_eq!(status, 0, "mincore: {}", std::io::Error::last_os_error());
    resident.iter().filter(|page| *page & 1 == 1).count() as f64 / pages as f64
}

/// Polls `done` every 20 ms until it holds or 10 s have passed: for work a
/// chain's helper threads do in the background. The caller asserts after.
pub async fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// tmpfs keeps a file's pages as its only copy: they are never dropped,
/// and their size is the tmpfs's choice.
pub fn on_tmpfs(dir: &Path) -> bool {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    rustix::fs::statfs(dir).is_ok_and(|stat| stat.f_type as u64 == TMPFS_MAGIC)
}
