//! Configuration of the engine.

use std::path::PathBuf;

/// When a commit is acknowledged. Chosen per chain, overridable per commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledged after an fdatasync issued for the group this commit closes:
    /// the writer does not wait to gather more commits behind it.
    Sync,
    /// Group commit: acknowledged after the fdatasync of the group that holds
    /// it. Groups fill while the previous group's fdatasync is in flight.
    #[default]
    Batched,
    /// Acknowledged when the write reached the page cache. Lost on power
    /// failure; survives a process crash. Explicit opt-in only.
    Buffered,
}

impl Durability {
    pub(crate) fn needs_sync(self) -> bool {
        !matches!(self, Durability::Buffered)
    }
}

/// Which storage backend appends to segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StorageBackend {
    /// io_uring: the next group is written while the previous fdatasync is in
    /// flight. Falls back to `Portable` (with a log line) if the ring cannot
    /// be set up.
    #[default]
    IoUring,
    /// `pwrite` + `fdatasync`, one group at a time.
    Portable,
}

/// Engine configuration. `AteConfig::default()` keeps the redo log in a fresh
/// temporary folder that is removed when the builder and its chains are gone.
#[derive(Debug, Clone)]
pub struct AteConfig {
    /// Where chains live; `None` means a fresh temporary folder.
    pub log_path: Option<PathBuf>,
    /// Default durability of every chain.
    pub durability: Durability,
    pub backend: StorageBackend,
    /// Segment files are preallocated to this size and roll when full.
    pub segment_size_bytes: u64,
    /// Largest commit accepted (records and framing).
    pub max_commit_bytes: usize,
    /// Largest single write the writer issues; groups close at this size.
    pub max_write_bytes: usize,
    /// Commits that may wait in the writer's queue before committers wait.
    pub writer_queue_commits: usize,
    /// Appends bypass the page cache (`O_DIRECT`, whole 4 KiB blocks) where
    /// the filesystem supports it. Saves the kernel's copy of every byte
    /// into freshly allocated page-cache pages (most of the CPU of an
    /// ingest); readers of just-written events then read them from the
    /// device instead of memory. Falls back to buffered appends when the
    /// filesystem has no direct I/O or the segment size is not a multiple
    /// of 4 KiB.
    pub direct_io: bool,
    /// How far ahead of the appends a helper thread keeps the active
    /// segment written with zeros while the log writer is idle, so that
    /// small durable commits land in written extents and their fdatasync
    /// does not also journal an extent conversion (about half the cost of a
    /// small commit on ext4). 0 turns it off. Only for chains whose default
    /// durability syncs.
    pub zero_ahead_bytes: u64,
    /// Durable log pages more than this far behind the appends are dropped
    /// from the page cache, so that the next appends reuse them (on a VM
    /// that hands free memory back to its host, writing into fresh pages
    /// was half of an ingest's CPU) and an ingest does not fill the cache
    /// with log nobody reads. A reader of older events reads them back from
    /// the disk once, in 2 MiB pages (the log's mappings ask for huge
    /// pages), which then make its random reads faster than the small pages
    /// the appends wrote (E3). Default 64 MiB; 0 keeps every page cached;
    /// otherwise at least 16 MiB.
    pub drop_behind_bytes: u64,
    /// How far ahead of the appends a helper thread populates the page
    /// cache with huge (2 MiB) pages, zeros read from the preallocated
    /// segment without disk I/O, so that the appends write into them and
    /// readers map the log with huge pages: random `get`s then miss the
    /// TLB far less (E3: 20% faster). The kernel zeroes every populated
    /// byte, which cost bulk ingest (E1) 10-15% on the benchmark machine,
    /// so it is for chains read far more than written: 0 (the default)
    /// turns it off; otherwise at least 4 MiB (docs/benchmarks.md,
    /// seventeenth session). Not used with `direct_io`.
    pub populate_ahead_bytes: u64,
}

impl Default for AteConfig {
    fn default() -> Self {
        Self {
            log_path: None,
            durability: Durability::Batched,
            backend: StorageBackend::IoUring,
            segment_size_bytes: 256 << 20,
            max_commit_bytes: 16 << 20,
            max_write_bytes: 4 << 20,
            writer_queue_commits: 4096,
            direct_io: false,
            zero_ahead_bytes: 4 << 20,
            drop_behind_bytes: crate::log::DEFAULT_DROP_BEHIND_BYTES,
            populate_ahead_bytes: 0,
        }
    }
}

/// A size that is 0 (off) or at least `minimum_bytes` (a whole number of MiB).
fn off_or_at_least(name: &str, bytes: u64, minimum_bytes: u64) -> crate::Result<()> {
    if bytes != 0 && bytes < minimum_bytes {
        let why = format!("{name} {bytes} must be 0 (off) or at least {} MiB", minimum_bytes >> 20);
        return Err(crate::AteError::InvalidConfig(why));
    }
    Ok(())
}

impl AteConfig {
    /// Checks the limits fit together (a commit fits in a segment, and so
    /// on); `ChainBuilder::open` runs it too.
    pub fn validate(&self) -> crate::Result<()> {
        use crate::format::SEGMENT_HEADER_LEN;
        let invalid = |why: String| Err(crate::AteError::InvalidConfig(why));
        if self.segment_size_bytes < (SEGMENT_HEADER_LEN as u64) + 4096 || self.segment_size_bytes > u32::MAX as u64 {
            return invalid(format!("segment_size_bytes {} must be within 4 KiB..4 GiB", self.segment_size_bytes));
        }
        if self.max_commit_bytes as u64 > self.segment_size_bytes - SEGMENT_HEADER_LEN as u64 {
            return invalid("max_commit_bytes must fit in one segment".into());
        }
        // Zeroing starts 1 MiB past the appends: a shorter lead would zero
        // little or nothing.
        off_or_at_least("zero_ahead_bytes", self.zero_ahead_bytes, 2 << 20)?;
        // Dropped in steps: a window under two would drop what the follow
        // streams of replicas keeping up are still reading.
        off_or_at_least("drop_behind_bytes", self.drop_behind_bytes, 2 * crate::log::DROP_STEP_BYTES)?;
        // Populated in huge pages from the first one past the appends: a
        // lead under two would populate none ahead of them.
        off_or_at_least("populate_ahead_bytes", self.populate_ahead_bytes, 2 * crate::log::POPULATE_STEP_BYTES)?;
        if self.max_write_bytes < 4096 || self.writer_queue_commits == 0 {
            return invalid("max_write_bytes must be >= 4096 and writer_queue_commits > 0".into());
        }
        Ok(())
    }
}
