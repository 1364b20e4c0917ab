//! Dropping the log's pages from the page cache behind the appends
//! (`AteConfig::drop_behind_bytes`): pages a window behind the appends
//! leave the cache, sealed segments included, and every event still reads
//! back, before and after a reopen. With it off, the pages stay cached.

mod common;

use ate::AteConfig;
use common::{
    append_kib_commit, assert_all_read_back, cached_share, on_tmpfs, open_with, segment_files, small_config, wait_until,
};
use std::path::Path;

const WINDOW: u64 = 16 << 20;
/// Small segments, so that several are sealed behind the window.
const SEGMENT: u64 = 8 << 20;
const EVENTS_PER_COMMIT: usize = 32;
/// 1 KiB each: about 44 MiB, five segments and more.
const EVENTS: usize = 40_000;

fn config(dir: &Path, drop_behind_bytes: u64) -> AteConfig {
    AteConfig { segment_size_bytes: SEGMENT, drop_behind_bytes, ..small_config(dir) }
}

async fn write_all(config: &AteConfig) -> std::sync::Arc<ate::Chain> {
    let chain = open_with(config, None).await.expect("open");
    for first in (0..EVENTS).step_by(EVENTS_PER_COMMIT) {
        append_kib_commit(&chain, first..first + EVENTS_PER_COMMIT).await;
    }
    chain
}

#[tokio::test]
async fn pages_behind_the_window_leave_the_cache_and_every_event_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    if on_tmpfs(dir.path()) {
        eprintln!("skipped: the temporary folder is on tmpfs, whose pages are never dropped");
        return;
    }
    let config = config(dir.path(), WINDOW);
    let chain = write_all(&config).await;
    let segments = segment_files(dir.path());
    assert!(segments.len() >= 5, "the workload sealed several segments: {segments:?}");
    // Dropped by a thread of the writer's: give it a moment.
    let oldest = &segments[0];
    wait_until(|| cached_share(oldest, ..) <= 0.05).await;
    assert!(cached_share(oldest, ..) <= 0.05, "the oldest segment is {:.0}% cached", 100.0 * cached_share(oldest, ..));
    // The newest segment is inside the window: still cached.
    assert!(cached_share(segments.last().unwrap(), ..) > 0.0, "the active segment was dropped");
    assert_all_read_back(&chain, EVENTS, "after dropping");
    drop(chain);
    let reopened = open_with(&config, None).await.expect("reopen");
    assert_all_read_back(&reopened, EVENTS, "after a reopen");
}

#[tokio::test]
async fn with_it_off_the_log_stays_cached() {
    let dir = tempfile::tempdir().unwrap();
    let chain = write_all(&config(dir.path(), 0)).await;
    let segments = segment_files(dir.path());
    let share = cached_share(&segments[0], ..);
    assert!(share > 0.5, "the oldest segment is only {:.0}% cached with dropping off", 100.0 * share);
    assert_all_read_back(&chain, EVENTS, "dropping off");
}

#[test]
fn a_window_shorter_than_two_steps_is_refused() {
    let config = AteConfig::default();
    assert!(AteConfig { drop_behind_bytes: 0, ..config.clone() }.validate().is_ok());
    assert!(AteConfig { drop_behind_bytes: 8 << 20, ..config.clone() }.validate().is_err());
    assert!(AteConfig { drop_behind_bytes: 16 << 20, ..config }.validate().is_ok());
}
