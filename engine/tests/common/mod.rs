//! Helpers shared by the scenario tests.
#![allow(dead_code)]

use ate::crypto::{PrivateSignKey, PublicSignKey, SignatureScheme};
use ate::storage::{FaultPlan, FaultyStorage, Storage};
use ate::AteSession;
use ate::{AteConfig, AteError, Chain, ChainBuilder, ChainKey, NewEvent, PrimaryKey, Result, StorageBackend};
use std::path::Path;
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
