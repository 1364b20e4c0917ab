//! The segment log of one chain: segment files read through mmap, recovery on
//! open, and the writer thread that appends with group commit.

pub(crate) mod checkpoint;
mod drop_behind;
mod page_cache;
mod populate_ahead;
mod recovery;
mod segments;
mod writer;
mod zero_ahead;

pub(crate) use recovery::{list_segments, recover};
pub use segments::EventRef;
pub(crate) use segments::{Segment, SegmentTable};
pub use writer::CommitReceipt;
pub(crate) use writer::{CommitRequest, WriterHandle};
/// Steps of the page-cache helpers, which `AteConfig::validate` bounds
/// their windows by.
pub(crate) use {
    drop_behind::{DEFAULT_DROP_BEHIND_BYTES, DROP_STEP_BYTES},
    populate_ahead::POPULATE_STEP_BYTES,
};

/// The name of a thread of `chain`'s log (`ate-log-`, `ate-zero-`, ...):
/// as much of the chain's name as fits in the 15 bytes Linux keeps, which
/// `top` and `perf` show.
pub(crate) fn helper_thread_name(role: &str, chain: &str) -> String {
    const LINUX_THREAD_NAME_BYTES: usize = 15;
    let mut name = format!("ate-{role}-");
    for character in chain.chars() {
        if name.len() + character.len_utf8() > LINUX_THREAD_NAME_BYTES {
            break;
        }
        name.push(character);
    }
    name
}

use crate::config::AteConfig;
use crate::format::{ArchivedEventHeader, EventKind};
use crate::storage::Storage;
use crate::view::{EventLocation, View, ViewChange};
use rkyv::util::AlignedVec;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// State of a chain shared by its handle, its readers and its writer thread.
#[derive(Debug)]
pub(crate) struct ChainShared {
    pub name: String,
    pub dir: PathBuf,
    pub chain_id: [u8; 32],
    pub storage: Arc<dyn Storage>,
    pub config: AteConfig,
    pub view: View,
    pub segments: SegmentTable,
    pub keys: crate::chain::KeyIndex,
    /// Sequence after the last event that is durable and in the view.
    pub durable_sequence: std::sync::atomic::AtomicU64,
    /// The same, for subscribers to wait on (a watch holds only the latest
    /// value: a slow subscriber is never queued behind, it reads the log).
    pub durable_notify: tokio::sync::watch::Sender<u64>,
    /// (last sequence, location of the first record) of every durable
    /// commit, ascending, 16 bytes a commit: finds the commit an event
    /// belongs to, for verified reads.
    pub commit_ends: parking_lot::RwLock<Vec<(u64, EventLocation)>>,
    /// The first sequence the log holds: 0 unless segments were dropped
    /// (set by recovery, before any reader).
    pub first_sequence: std::sync::atomic::AtomicU64,
    pub metrics: crate::metrics::LogMetrics,
    /// Commit buffers the writer is done with, for the next commits: a
    /// large buffer allocated afresh per commit is mapped and zeroed by the
    /// kernel page by page (13% of an E2 profile).
    record_buffers: parking_lot::Mutex<KeptBuffers>,
    poison: OnceLock<String>,
}

/// Commit buffers kept for reuse: the largest kept, the most bytes kept
/// per chain, and the most buffers. Small commits need many: a group of 28
/// single-event commits (D1, one event per commit) handed back 24 more
/// buffers than four kept, each freed in the writer thread into the arena
/// of the thread that allocated it, and the writer slept on glibc's arena
/// lock about 800 times a second.
const KEPT_RECORD_BUFFER_BYTES: usize = 2 << 20;
const KEPT_RECORD_BYTES: usize = 8 << 20;
const KEPT_RECORD_BUFFERS: usize = 1024;

/// Commit buffers kept for reuse, and their capacity in bytes.
#[derive(Debug, Default)]
struct KeptBuffers {
    buffers: Vec<AlignedVec<16>>,
    bytes: usize,
}

impl KeptBuffers {
    /// A kept buffer, or a new empty one.
    fn take(&mut self) -> AlignedVec<16> {
        let buffer = self.buffers.pop().unwrap_or_default();
        self.bytes -= buffer.capacity();
        buffer
    }

    /// Keeps `buffer` if there is room; gives it back if not.
    fn keep(&mut self, buffer: AlignedVec<16>) -> Option<AlignedVec<16>> {
        if self.buffers.len() >= KEPT_RECORD_BUFFERS || self.bytes + buffer.capacity() > KEPT_RECORD_BYTES {
            return Some(buffer);
        }
        self.bytes += buffer.capacity();
        self.buffers.push(buffer);
        None
    }
}

impl ChainShared {
    pub fn new(name: String, dir: PathBuf, storage: Arc<dyn Storage>, config: AteConfig) -> Self {
        let chain_id = crate::key::ChainKey::from(name.as_str()).chain_id();
        Self {
            name,
            dir,
            chain_id,
            storage,
            config,
            view: View::new(),
            segments: SegmentTable::new(),
            keys: Default::default(),
            durable_sequence: Default::default(),
            durable_notify: tokio::sync::watch::Sender::new(0),
            commit_ends: Default::default(),
            first_sequence: Default::default(),
            metrics: Default::default(),
            record_buffers: Default::default(),
            poison: OnceLock::new(),
        }
    }

    /// An empty buffer for a commit of `bytes`, reused when one is kept.
    pub fn record_buffer(&self, bytes: usize) -> AlignedVec<16> {
        let mut buffer = self.record_buffers.lock().take();
        buffer.reserve(bytes);
        buffer
    }

    /// Hands a commit buffer back for reuse (dropped if too large or enough are kept).
    pub fn recycle_record_buffer(&self, mut buffer: AlignedVec<16>) {
        if buffer.capacity() > KEPT_RECORD_BUFFER_BYTES {
            return;
        }
        buffer.clear();
        let refused = self.record_buffers.lock().keep(buffer);
        // Freed outside the lock.
        drop(refused);
    }

    /// Marks the chain unusable for writes. The first reason sticks.
    pub fn poison(&self, reason: String) {
        if self.poison.set(reason.clone()).is_ok() {
            tracing::error!(chain = %self.name, %reason, "chain poisoned; writes are refused until it is reopened");
        }
    }

    pub fn poisoned(&self) -> Option<crate::AteError> {
        self.poison.get().map(|reason| crate::AteError::Poisoned { chain: self.name.clone(), reason: reason.clone() })
    }
}

/// A file in the chain directory that a failed write group leaves behind:
/// every sequence from the one it names on was never acknowledged (groups
/// are acknowledged in order, and the failure poisons the chain before any
/// later group is). With pipelined writes a later group's bytes can land
/// after the failed group's hole; recovery would otherwise take those valid
/// records for acknowledged data behind damage and refuse to open.
pub(crate) const UNACKNOWLEDGED_MARKER: &str = "unacknowledged-from";

/// Records that nothing from `sequence` on was acknowledged. Best effort and
/// outside the storage seam on purpose: the segment device just failed, the
/// directory's metadata may still be writable; if not, recovery keeps its
/// stricter rule.
pub(crate) fn mark_unacknowledged_from(dir: &std::path::Path, sequence: u64) -> std::io::Result<()> {
    let path = dir.join(UNACKNOWLEDGED_MARKER);
    let file = std::fs::File::create(&path)?;
    std::io::Write::write_all(&mut &file, format!("{sequence}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

/// The sequence a failed group left in the marker, if any.
pub(crate) fn unacknowledged_from(dir: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(UNACKNOWLEDGED_MARKER)).ok()?;
    text.trim().parse().ok()
}

/// Removes the marker once recovery has cut what it names.
pub(crate) fn clear_unacknowledged_marker(dir: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(UNACKNOWLEDGED_MARKER)) {
        Ok(()) => std::fs::File::open(dir)?.sync_all(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// How one durable event changes the view. Shared by recovery and the
/// writer so both build the same view from the same bytes.
pub(crate) fn view_change_for(header: &ArchivedEventHeader, location: EventLocation) -> Option<ViewChange> {
    let key = u128::from_le_bytes(header.key);
    match header.kind()? {
        EventKind::Data => Some(ViewChange::Put {
            key,
            location,
            sequence: header.sequence(),
            parent: header.parent().map(|parent| (u128::from_le_bytes(parent), header.collection())),
        }),
        EventKind::Tombstone => Some(ViewChange::Delete { key }),
        // Trust events are indexed by the chain-of-trust layer, not the object view.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{helper_thread_name, KeptBuffers, KEPT_RECORD_BUFFERS, KEPT_RECORD_BYTES};
    use rkyv::util::AlignedVec;

    fn buffer_of(capacity: usize) -> AlignedVec<16> {
        AlignedVec::with_capacity(capacity)
    }

    #[test]
    fn kept_commit_buffers_stay_within_their_count_and_bytes() {
        let mut kept = KeptBuffers::default();
        // Many small buffers are kept (a group of single-event commits), up to the count.
        for _ in 0..KEPT_RECORD_BUFFERS {
            assert!(kept.keep(buffer_of(2048)).is_none());
        }
        assert!(kept.keep(buffer_of(2048)).is_some(), "over the count");
        while !kept.buffers.is_empty() {
            kept.take();
        }
        assert_eq!(kept.bytes, 0);
        // Large ones up to the bytes.
        let large = KEPT_RECORD_BYTES / 4;
        for _ in 0..4 {
            assert!(kept.keep(buffer_of(large)).is_none());
        }
        let refused = kept.keep(buffer_of(16)).expect("over the bytes");
        assert!(refused.capacity() >= 16);
        // Taking one makes room; an empty pool gives a new buffer.
        assert!(kept.take().capacity() >= large);
        assert!(kept.keep(buffer_of(16)).is_none());
        while !kept.buffers.is_empty() {
            kept.take();
        }
        assert_eq!((kept.bytes, kept.take().capacity()), (0, 0));
    }

    #[test]
    fn helper_thread_names_fit_linux_and_keep_whole_characters() {
        assert_eq!(helper_thread_name("log", "orders"), "ate-log-orders");
        assert_eq!(helper_thread_name("cache", "tenant-7/orders"), "ate-cache-tenan");
        assert_eq!(helper_thread_name("zero", "ünïcödé"), "ate-zero-ünïc");
        assert_eq!(helper_thread_name("zero", "aaaaaü"), "ate-zero-aaaaa", "never half a character");
        for role in ["log", "zero", "next", "cache"] {
            assert!(helper_thread_name(role, &"x".repeat(40)).len() <= 15);
        }
    }
}
