//! Audit bundles: an exported range verifies offline with no chain at hand,
//! and changing any byte of the bundle makes verification fail, naming the
//! item (event, commit, tree head, key) that no longer checks.

mod common;

use ate::audit::{export, verify_bundle};
use ate::crypto::{PrivateSignKey, SignatureScheme};
use ate::prelude::*;
use common::small_config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_range_verifies_offline_and_any_changed_byte_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    // Root keys: every commit must be signed, so the bundle has signatures to check.
    let writer = PrivateSignKey::generate(SignatureScheme::MlDsa44);
    let chain = common::open_rooted(small_config(dir.path()), writer.public(), "audited").await;
    let mut session = AteSession::default();
    session.add_user_write_key(writer.clone());
    let mut dio = chain.dio(&session).await;
    for index in 0..8 {
        for part in 0..=index % 2 {
            dio.store(format!("entry {index}.{part}")).unwrap();
        }
        dio.commit().await.unwrap();
    }
    drop(dio);
    let auditor = PrivateSignKey::generate(SignatureScheme::MlDsa44);
    let total = chain.durable_sequence();
    // From inside the second commit (events 2..=4: two entries and a
    // signature) to inside a later one: whole commits are exported.
    let bundle = export(&chain, 3, total - 5, &auditor).unwrap();
    let bytes = bundle.encode();
    drop(chain);
    std::fs::remove_dir_all(dir.path()).unwrap();

    let report = verify_bundle(&bytes, Some(&auditor.id())).expect("a fresh bundle verifies with no chain at hand");
    assert_eq!(report.first_sequence, 2, "starts at the first event of the commit holding event 3");
    assert!(report.last_sequence >= total - 5 && report.commits >= 5);
    assert_eq!(report.tree_size, total);
    let stranger = PrivateSignKey::generate(SignatureScheme::MlDsa44);
    assert_eq!(verify_bundle(&bytes, Some(&stranger.id())).unwrap_err().item, "tree head key");

    // Every byte, changed: never a pass, never a panic.
    let mut named = std::collections::BTreeMap::<String, usize>::new();
    for position in 0..bytes.len() {
        let mut tampered = bytes.clone();
        tampered[position] ^= 0x01;
        let error = verify_bundle(&tampered, None).expect_err(&format!("byte {position} changed and still verified"));
        let kind = error.item.split_whitespace().next().unwrap_or_default().to_string();
        *named.entry(kind).or_default() += 1;
    }
    for item in ["event", "commit", "tree", "bundle", "signing"] {
        assert!(named.contains_key(item), "no change was blamed on '{item}': {named:?}");
    }
    eprintln!(
        "audit bundle: {} bytes, {} events; every single-bit change caught: {named:?}",
        bytes.len(),
        report.events
    );
}
