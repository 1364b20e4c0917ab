//! A segment file with any content: recovery (opening the chain) and the
//! offline verifier report corruption as typed errors, never panic, and
//! never allocate without bound.
#![no_main]

use ate::prelude::*;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let key = ChainKey::from("fuzz");
    let chain_dir = dir.path().join("chains").join(key.directory_name());
    std::fs::create_dir_all(&chain_dir).unwrap();
    std::fs::write(chain_dir.join("00000000000000000000.seg"), data).unwrap();
    let _ = ate::verify::verify_chain(&chain_dir, &key, &Default::default(), &[], &[], None, &mut |_| {});
    runtime().block_on(async {
        let config = AteConfig {
            log_path: Some(dir.path().to_path_buf()),
            backend: StorageBackend::Portable,
            segment_size_bytes: 1 << 20,
            max_commit_bytes: 64 << 10,
            max_write_bytes: 64 << 10,
            ..AteConfig::default()
        };
        if let Ok(chain) = ChainBuilder::new(&config).await.build().open(&key).await {
            let _ = chain.verify().await;
        }
    });
});
