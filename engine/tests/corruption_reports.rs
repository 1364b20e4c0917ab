//! Damaged bytes are reported with chain, segment, offset and sequence:
//! never a panic, never silently skipped.

mod common;

use ate::{AteConfig, AteError};
use common::*;
use std::path::{Path, PathBuf};

fn config(dir: &Path) -> AteConfig {
    // Small segments (so there are sealed ones) and a small torn window.
    AteConfig { segment_size_bytes: 64 << 10, max_commit_bytes: 4096, max_write_bytes: 4096, ..small_config(dir) }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    files
}

fn flip(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    byte[0] ^= 0x10;
    file.write_all_at(&byte, offset).unwrap();
}

async fn populated(dir: &Path, commits: usize) -> PathBuf {
    let chain = open_with(&config(dir), None).await.unwrap();
    for index in 0..commits {
        chain.append(commit_events(index), None).await.unwrap();
    }
    chain.path().to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_in_a_sealed_segment_is_reported_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let chain_dir = populated(dir.path(), 400).await;
    let files = segments(&chain_dir);
    assert!(files.len() >= 3);
    // First record of segment 0 starts at 128; byte 300 is inside its body.
    flip(&files[0], 300);
    match open_with(&config(dir.path()), None).await {
        Err(AteError::Corrupt { chain, segment, offset, sequence, reason }) => {
            assert_eq!(chain, "test-chain");
            assert_eq!(segment, files[0]);
            assert_eq!(offset, 128);
            assert_eq!(sequence, Some(0));
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected a corruption report, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_early_in_the_active_segment_is_not_mistaken_for_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let one_segment = AteConfig { segment_size_bytes: 1 << 20, ..config(dir.path()) };
    let chain = open_with(&one_segment, None).await.unwrap();
    for index in 0..100 {
        chain.append(commit_events(index), None).await.unwrap();
    }
    let files = segments(chain.path());
    drop(chain);
    assert_eq!(files.len(), 1, "test wants one active segment");
    flip(&files[0], 300);
    let error = open_with(&one_segment, None).await.unwrap_err();
    assert!(matches!(&error, AteError::Corrupt { offset: 128, .. }), "{error}");
    assert!(error.to_string().contains("not only a torn tail"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_segment_header_and_foreign_segments_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let chain_dir = populated(dir.path(), 400).await;
    let files = segments(&chain_dir);
    flip(&files[1], 20);
    let error = open_with(&config(dir.path()), None).await.unwrap_err();
    assert!(matches!(&error, AteError::Corrupt { segment, offset: 0, .. } if *segment == files[1]), "{error}");
    flip(&files[1], 20);
    open_with(&config(dir.path()), None).await.expect("restored header opens");

    // A segment copied in from another chain.
    let other = tempfile::tempdir().unwrap();
    let other_config = config(other.path());
    let other_chain =
        ate::ChainBuilder::new(&other_config).await.build().open(&ate::ChainKey::from("other")).await.unwrap();
    other_chain.append(commit_events(0), None).await.unwrap();
    let foreign = segments(other_chain.path())[0].clone();
    drop(other_chain);
    std::fs::copy(&foreign, &files[0]).unwrap();
    let error = open_with(&config(dir.path()), None).await.unwrap_err();
    assert!(error.to_string().contains("another chain"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_files_never_panic() {
    // Random and adversarial bytes in place of a segment: always a typed error or a clean open.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let chain_dir = populated(dir.path(), 20).await;
        let file = &segments(&chain_dir)[0];
        let bytes = std::fs::read(file).unwrap();
        let mut damaged = bytes.clone();
        for _ in 0..(1 + round % 8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = 128 + (state as usize) % 6000;
            damaged[at] = (state >> 24) as u8;
        }
        std::fs::write(file, &damaged).unwrap();
        match open_with(&config(dir.path()), None).await {
            Ok(chain) => {
                // Whatever survived is a readable prefix.
                for key in chain.keys() {
                    assert!(chain.get(&key).is_some());
                }
            }
            Err(AteError::Corrupt { .. }) => {}
            Err(other) => panic!("unexpected error kind {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_segment_creation_is_cleaned_up_not_reported() {
    // A crash after preallocating a segment but before its header was
    // durable leaves an all-zero file: it holds no data and is removed.
    let dir = tempfile::tempdir().unwrap();
    let chain = open_with(&config(dir.path()), None).await.unwrap();
    let chain_dir = chain.path().to_path_buf();
    drop(chain);
    let only = segments(&chain_dir)[0].clone();
    std::fs::write(&only, vec![0u8; 64 << 10]).unwrap();
    let chain = open_with(&config(dir.path()), None).await.expect("zeroed first segment is recreated");
    chain.append(commit_events(0), None).await.unwrap();

    // The same for a later segment, after sealed ones with data.
    for index in 1..400 {
        chain.append(commit_events(index), None).await.unwrap();
    }
    let sealed = segments(&chain_dir);
    let next = chain.next_sequence();
    drop(chain);
    let interrupted = chain_dir.join(format!("{:020}.seg", next + 5));
    std::fs::write(&interrupted, vec![0u8; 64 << 10]).unwrap();
    let chain = open_with(&config(dir.path()), None).await.expect("interrupted creation is not corruption");
    assert_eq!(segments(&chain_dir), sealed);
    assert_eq!(chain.next_sequence(), next);
    // But a damaged header over real data is corruption, not something to delete.
    drop(chain);
    let last = sealed.last().unwrap();
    flip(last, 3);
    assert!(matches!(open_with(&config(dir.path()), None).await, Err(AteError::Corrupt { .. })));
    assert!(last.exists(), "a segment holding data was removed");
}

/// Offset of the record with `sequence` in a segment file (records are
/// 16-byte aligned; the frame holds the length, then the sequence at +8).
fn record_offset(path: &Path, sequence: u64) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    (128..bytes.len() - 16)
        .step_by(16)
        .find(|&offset| {
            let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap());
            length > 0 && u64::from_le_bytes(bytes[offset + 8..offset + 16].try_into().unwrap()) == sequence
        })
        .expect("record present") as u64
}

/// A write group that failed leaves `unacknowledged-from` behind (the
/// writer's marker): damage at or after that sequence, followed by valid
/// records that a pipelined write put there, is cut as never acknowledged
/// instead of blocking the open. Without the marker the same bytes are
/// reported, as damage before acknowledged data must be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_groups_marker_lets_recovery_cut_what_was_never_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let one_segment = AteConfig { segment_size_bytes: 1 << 20, ..config(dir.path()) };
    let chain = open_with(&one_segment, None).await.unwrap();
    let mut first_unacknowledged = 0;
    for index in 0..100 {
        let receipt = chain.append(commit_events(index), None).await.unwrap();
        if index == 97 {
            first_unacknowledged = receipt.first_sequence;
        }
    }
    let (chain_dir, files) = (chain.path().to_path_buf(), segments(chain.path()));
    drop(chain);
    // The failed group's hole: its first record is damaged, later ones are whole.
    flip(&files[0], record_offset(&files[0], first_unacknowledged) + 40);
    let error = open_with(&one_segment, None).await.unwrap_err();
    assert!(error.to_string().contains("not only a torn tail"), "{error}");

    std::fs::write(chain_dir.join("unacknowledged-from"), format!("{first_unacknowledged}\n")).unwrap();
    let chain = open_with(&one_segment, None).await.expect("the marked tail is cut");
    assert_eq!(chain.next_sequence(), first_unacknowledged);
    for index in 0..97 {
        for object in objects_of_commit(index) {
            assert!(chain.get(&key(object)).is_some(), "commit {index} lost");
        }
    }
    for object in objects_of_commit(98) {
        assert!(chain.get(&key(object)).is_none(), "a commit after the failed group survived");
    }
    assert!(!chain_dir.join("unacknowledged-from").exists(), "the marker is cleared once used");
    chain.verify().await.unwrap();
    chain.append(commit_events(500), None).await.unwrap();
    drop(chain);
    // The stale records were zeroed: a second reopen is clean too.
    let chain = open_with(&one_segment, None).await.unwrap();
    assert!(chain.get(&key(objects_of_commit(500).next().unwrap())).is_some());
}
