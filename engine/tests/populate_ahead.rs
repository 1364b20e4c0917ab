//! Populating the page cache ahead of the appends (`AteConfig::populate_ahead_bytes`):
//! the lead past the appends is cached before it is written, in the
//! segment after a roll too, nothing past the lead is, every event reads
//! back before and after a reopen; with it off, or with direct appends,
//! nothing is cached ahead.

mod common;

use ate::AteConfig;
use common::{
    append_kib_commit, assert_all_read_back, cached_share, on_tmpfs, open_with, segment_files, small_config, wait_until,
};
use std::path::Path;
use std::time::Duration;

const SEGMENT: u64 = 32 << 20;
const LEAD: u64 = 8 << 20;
const EVENTS_PER_COMMIT: usize = 32;
const MIB: usize = 1 << 20;

fn config(dir: &Path, populate_ahead_bytes: u64, direct_io: bool) -> AteConfig {
    AteConfig { segment_size_bytes: SEGMENT, populate_ahead_bytes, direct_io, ..small_config(dir) }
}

/// Appends until the chain has rolled to a second segment, then 8 more
/// commits: the active segment then holds at most about 1 MiB, so the
/// lead reaches past 8 MiB of it and the zeros written ahead (4 MiB past
/// the appends, `zero_ahead_bytes`) stay under 6 MiB.
async fn write_past_a_roll(config: &AteConfig) -> (std::sync::Arc<ate::Chain>, usize) {
    let chain = open_with(config, None).await.expect("open");
    let dir = config.log_path.as_deref().expect("on disk");
    let (mut written, mut after_roll) = (0, 0);
    while after_roll < 8 {
        append_kib_commit(&chain, written..written + EVENTS_PER_COMMIT).await;
        written += EVENTS_PER_COMMIT;
        if segment_files(dir).len() >= 2 {
            after_roll += 1;
        }
    }
    assert_eq!(segment_files(dir).len(), 2, "one roll");
    (chain, written)
}

/// Huge pages in this process's mappings of `path` (`FilePmdMapped`), in KiB.
fn huge_mapped_kib(path: &Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut in_segment = false;
    let mut total = 0;
    for line in smaps.lines() {
        if line.split_whitespace().next().is_some_and(|first| first.contains('-') && !first.ends_with(':')) {
            in_segment = line.ends_with(&*path.to_string_lossy());
        } else if let (true, Some(kib)) = (in_segment, line.strip_prefix("FilePmdMapped:")) {
            total += kib.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0);
        }
    }
    total
}

#[tokio::test]
async fn the_lead_is_cached_before_it_is_written_and_nothing_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), LEAD, false);
    let (chain, events) = write_past_a_roll(&config).await;
    let active = segment_files(dir.path()).pop().expect("two segments");
    // Populated by a thread of the writer's: give it a moment.
    wait_until(|| cached_share(&active, 6 * MIB..9 * MIB) >= 1.0).await;
    let ahead = cached_share(&active, 6 * MIB..9 * MIB);
    assert_eq!(ahead, 1.0, "only {:.0}% of 6..9 MiB, ahead of the appends, is cached", 100.0 * ahead);
    // The kernel's readahead brings in a few MiB more than asked (10..16
    // MiB, seen on Linux 6.18), but not the rest of the segment.
    let past = cached_share(&active, 20 * MIB..SEGMENT as usize);
    assert!(past < 0.05, "{:.0}% of 20..32 MiB, far past the lead, is cached", 100.0 * past);
    // Whether those pages are huge depends on the kernel and filesystem
    // (large folios) and on free memory: reported, not asserted.
    eprintln!("huge pages mapped from the active segment: {} KiB", huge_mapped_kib(&active));
    assert_all_read_back(&chain, events, "populated ahead");
    drop(chain);
    let reopened = open_with(&config, None).await.expect("reopen");
    assert_all_read_back(&reopened, events, "after a reopen");
}

#[tokio::test]
async fn with_it_off_nothing_is_cached_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let (chain, events) = write_past_a_roll(&config(dir.path(), 0, false)).await;
    let active = segment_files(dir.path()).pop().expect("two segments");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ahead = cached_share(&active, 6 * MIB..9 * MIB);
    assert!(ahead < 0.05, "{:.0}% of 6..9 MiB is cached with populating off", 100.0 * ahead);
    assert_all_read_back(&chain, events, "populating off");
}

#[tokio::test]
async fn direct_appends_are_not_populated_ahead() {
    let dir = tempfile::tempdir().unwrap();
    if on_tmpfs(dir.path()) {
        eprintln!("skipped: the temporary folder is on tmpfs, which has no direct I/O");
        return;
    }
    let (chain, events) = write_past_a_roll(&config(dir.path(), LEAD, true)).await;
    let active = segment_files(dir.path()).pop().expect("two segments");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ahead = cached_share(&active, 6 * MIB..9 * MIB);
    assert!(ahead < 0.05, "{:.0}% of 6..9 MiB is cached ahead of direct appends", 100.0 * ahead);
    assert_all_read_back(&chain, events, "direct appends");
}

#[test]
fn a_lead_shorter_than_two_huge_pages_is_refused() {
    let config = AteConfig::default();
    assert!(AteConfig { populate_ahead_bytes: 0, ..config.clone() }.validate().is_ok());
    assert!(AteConfig { populate_ahead_bytes: 2 << 20, ..config.clone() }.validate().is_err());
    assert!(AteConfig { populate_ahead_bytes: 4 << 20, ..config }.validate().is_ok());
}
