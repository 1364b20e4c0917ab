//! Segment files as readers see them: an append-only table of mmaps.

use crate::format::{ArchivedEventHeader, SegmentHeader, FRAME_LEN, HEADER_LEN};
use crate::view::EventLocation;
use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

/// One segment file, mapped read-only over its whole preallocated length.
#[derive(Debug)]
pub(crate) struct Segment {
    pub file: Arc<File>,
    pub map: Mmap,
    /// Where the file lives (the log writer opens it a second time for direct appends).
    pub path: PathBuf,
}

impl Segment {
    pub fn open(
        file: File,
        path: &Path,
    ) -> std::io::Result<(Self, Result<SegmentHeader, crate::format::SegmentHeaderError>)> {
        // SAFETY: the mapping is read-only and shared with our own writer.
        // Readers only dereference bytes below the durable frontier (records
        // that were validated or written by this process); those bytes never
        // change while the chain is open, since the log is append-only and
        // the chain directory is locked against other processes (flock).
        // Direct appends rewrite the last partial block with the same
        // leading bytes, and the kernel drops cached pages of a range
        // written that way, so readers keep seeing those bytes.
        let map = unsafe { Mmap::map(&file)? };
        // Huge pages where the page cache has them (see `populate`); on
        // kernels without transparent huge pages the advice is refused.
        let _ = map.advise(memmap2::Advice::HugePage);
        let header = SegmentHeader::decode(&map);
        let segment = Self { file: Arc::new(file), map, path: path.to_path_buf() };
        Ok((segment, header))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Lets the kernel drop `range` from the page cache (`log::drop_behind`):
    /// a later read of it comes from the file. Only for bytes the log wrote
    /// and never rewrites (the kernel writes dirty pages back rather than
    /// dropping them). Advisory: a failure changes nothing a reader sees,
    /// so it is ignored.
    pub fn drop_cached(&self, range: std::ops::Range<u64>) {
        let Some(len) = self.mapped_len(&range) else { return };
        // SAFETY: a shared, read-only file mapping: MADV_DONTNEED unmaps its
        // pages from this process, and the next access maps the file's
        // bytes again (unchanged: the log never rewrites what it wrote
        // behind the window). References into the mapping stay valid;
        // only anonymous or private mappings would read back zeros.
        let unmapped = unsafe {
            self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, range.start as usize, len as usize)
        };
        // Pages still mapped are not dropped: the file advice comes second.
        let dropped =
            rustix::fs::fadvise(&*self.file, range.start, std::num::NonZeroU64::new(len), rustix::fs::Advice::DontNeed);
        if let Err(error) = unmapped {
            tracing::debug!(%error, "unmapping log pages failed");
        }
        if let Err(error) = dropped {
            tracing::debug!(%error, "dropping log pages from the page cache failed");
        }
    }

    /// Reads `range` into the page cache and this mapping (`log::populate_ahead`):
    /// faults on a mapping advised `MADV_HUGEPAGE` bring in 2 MiB folios.
    /// Only for ranges the log has not written yet, which read as zeros
    /// from a preallocated extent without disk I/O. Advisory: a failure
    /// (a kernel without `MADV_POPULATE_READ`, say) is ignored.
    pub fn populate(&self, range: std::ops::Range<u64>) {
        let Some(len) = self.mapped_len(&range) else { return };
        if let Err(error) = self.map.advise_range(memmap2::Advice::PopulateRead, range.start as usize, len as usize) {
            tracing::debug!(%error, "populating log pages ahead of the appends failed");
        }
    }

    /// How many bytes of `range` lie within the mapping, if any.
    fn mapped_len(&self, range: &std::ops::Range<u64>) -> Option<u64> {
        let end = range.end.min(self.map.len() as u64);
        end.checked_sub(range.start).filter(|len| *len > 0)
    }
}

const CHUNK_BITS: u32 = 10;
const CHUNK: usize = 1 << CHUNK_BITS;
/// 1M segments per chain (256 TiB at the default segment size).
const MAX_SEGMENTS: usize = CHUNK * CHUNK;

type SegmentChunk = Box<[OnceLock<Segment>]>;

/// Append-only, lock-free for readers: a reference to a segment stays valid
/// for as long as the table lives, so reads hand out plain `&[u8]` into the
/// mmap with no reference counting on the hot path.
#[derive(Debug)]
pub(crate) struct SegmentTable {
    chunks: Box<[OnceLock<SegmentChunk>]>,
    count: AtomicU32,
}

/// A zero-copy view of one stored event.
#[derive(Debug, Clone, Copy)]
pub struct EventRef<'a> {
    pub header: &'a ArchivedEventHeader,
    /// Empty when `compacted`.
    pub payload: &'a [u8],
    pub location: EventLocation,
    /// A superseded version whose payload compaction removed.
    pub compacted: bool,
}

impl SegmentTable {
    pub fn new() -> Self {
        Self { chunks: (0..CHUNK).map(|_| OnceLock::new()).collect(), count: AtomicU32::new(0) }
    }

    /// Adds the next segment. Only the writer (or recovery, before the writer
    /// starts) calls this, so pushes never race each other.
    pub fn push(&self, segment: Segment) -> u32 {
        let index = self.count.load(Ordering::Acquire) as usize;
        assert!(index < MAX_SEGMENTS, "segment table full");
        let chunk = self.chunks[index >> CHUNK_BITS].get_or_init(|| (0..CHUNK).map(|_| OnceLock::new()).collect());
        assert!(chunk[index & (CHUNK - 1)].set(segment).is_ok(), "segment slot reused");
        self.count.store(index as u32 + 1, Ordering::Release);
        index as u32
    }

    pub fn get(&self, index: u32) -> Option<&Segment> {
        let index = index as usize;
        self.chunks.get(index >> CHUNK_BITS)?.get()?.get(index & (CHUNK - 1))?.get()
    }

    pub fn len(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }

    /// The event at `location`. The record was fully validated (checksum,
    /// layout) when it was recovered or written; here bounds and alignment
    /// are checked again so that a wrong location can only produce `None`,
    /// never UB.
    pub fn event(&self, location: EventLocation) -> Option<EventRef<'_>> {
        let bytes = self.get(location.segment())?.bytes();
        let offset = location.offset() as usize;
        let body_len = u32::from_le_bytes(bytes.get(offset..offset + 4)?.try_into().ok()?) as usize;
        let body = bytes.get(offset + FRAME_LEN..)?;
        let header = ArchivedEventHeader::from_bytes(body.get(..HEADER_LEN)?)?;
        let compacted = crate::format::is_compacted(body_len, header.payload_len());
        let payload_len = if compacted { 0 } else { header.payload_len() as usize };
        let payload = body.get(HEADER_LEN..HEADER_LEN + payload_len)?;
        Some(EventRef { header, payload, location, compacted })
    }

    /// Loads, for each record in `locations`, a byte of each cache line that
    /// [`SegmentTable::event`] and a reader of the payload's start touch: the
    /// frame, the header's `payload_len`, the first payload byte. The loads
    /// are independent, so the CPU fetches the records side by side; one
    /// `event` after another waits for each in turn (E3, docs/benchmarks.md).
    pub fn warm(&self, locations: &[Option<EventLocation>]) {
        const TOUCHED: [usize; 3] =
            [0, FRAME_LEN + core::mem::offset_of!(ArchivedEventHeader, payload_len), FRAME_LEN + HEADER_LEN];
        let mut folded = 0u8;
        for location in locations.iter().flatten() {
            let Some(segment) = self.get(location.segment()) else { continue };
            let record = segment.bytes().get(location.offset() as usize..).unwrap_or_default();
            for offset in TOUCHED {
                folded ^= record.get(offset).copied().unwrap_or(0);
            }
        }
        std::hint::black_box(folded);
    }
}
