//! Segments roll at the configured size; every event stays readable across
//! rolls and reopens; a commit never straddles two segments.

mod common;

use ate::{AteConfig, AteError, NewEvent, PrimaryKey};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolls_and_reopens_with_every_event_readable() {
    let dir = tempfile::tempdir().unwrap();
    let config = AteConfig { segment_size_bytes: 64 << 10, max_commit_bytes: 16 << 10, ..small_config(dir.path()) };
    let chain = open_with(&config, None).await.unwrap();
    for index in 0..300 {
        chain.append(commit_events(index), None).await.unwrap();
    }
    let segments = chain.segment_count();
    assert!(segments >= 4, "expected several segments, got {segments}");
    let files = std::fs::read_dir(chain.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "seg"))
        .count();
    assert_eq!(files as u32, segments);
    let next = chain.next_sequence();
    drop(chain);
    let chain = open_with(&config, None).await.unwrap();
    assert_eq!(chain.segment_count(), segments);
    assert_eq!(chain.next_sequence(), next);
    for index in 0..300 {
        for object in objects_of_commit(index) {
            assert_eq!(chain.get(&key(object)).unwrap().payload, payload(object).as_slice(), "object {object}");
        }
    }
    // Appending continues in the last segment after reopen.
    chain.append(commit_events(1000), None).await.unwrap();
    assert!(chain.get(&key(3000)).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_commit_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let chain = open(dir.path()).await.unwrap();
    let huge = NewEvent::data(PrimaryKey::generate(), vec![7u8; 65 << 10]);
    let error = chain.append(vec![huge], None).await.unwrap_err();
    assert!(matches!(error, AteError::CommitTooLarge { limit, .. } if limit == 64 << 10), "{error}");
    assert_eq!(chain.next_sequence(), 0);
    let error = chain.append(vec![], None).await.unwrap_err();
    assert!(matches!(error, AteError::InvalidInput(_)), "{error}");
}
