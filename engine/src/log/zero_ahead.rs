//! Zeroing ahead of the log writer.
//!
//! Segments are preallocated with `fallocate`, which leaves *unwritten*
//! extents. The first write into one makes ext4 (and XFS) convert it, and
//! the fdatasync that makes that write durable must then also commit the
//! conversion to the journal. On this machine a 4 KiB write + fdatasync
//! costs 289 µs into unwritten extents and 134 µs into written ones, so the
//! small durable commits of a cache or a queue paid twice what the disk
//! needs (docs/benchmarks.md, eighth session).
//!
//! A helper thread per chain therefore writes zeros, and syncs them, a few
//! MiB ahead of the appends while the writer is idle, so that small commits
//! land in written extents. It starts a chunk only while the writer is
//! idle after a small group: bulk ingest would only pay twice for its
//! bandwidth. And it never writes where the writer may: the writer claims
//! each range before it writes it, and waits if a chunk of zeros is being
//! written there (which the gap below makes rare). Zeros over
//! zeros change nothing a reader or recovery can see, torn or not.

use super::ChainShared;
use crate::storage::{WriteBuffer, DIRECT_BLOCK};
use parking_lot::{Condvar, Mutex};
use std::fs::File;
use std::ops::Range;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Zeros written (and synced) per step. A commit's fdatasync flushes every
/// dirty page of the file, zeros not yet written back included, so a commit
/// that meets a chunk in flight waits for it. With 1 MiB chunks, the 5% of
/// D1's commits (open loop, half rate) that met one mostly took 0.25-2 ms
/// (16% over 1 ms, against 0.1% of the others), and the run's p99 was
/// 2.5-3.7 ms; with 256 KiB chunks it was 0.9-2.4 ms. Smaller chunks cost
/// more writes, fdatasyncs and VM doorbells: 128 KiB gained nothing more
/// (docs/benchmarks.md, tenth session).
pub(crate) const ZERO_CHUNK_BYTES: u64 = 256 << 10;

/// Room left between the appends and the zeros when zeroing (re)starts,
/// so that the writer's next commits do not wait for a chunk in flight.
pub(crate) const ZERO_GAP_BYTES: u64 = 1 << 20;

/// Zeroing starts only after groups up to this size: idle moments between
/// bulk groups are brief, and a chunk started in one would delay the next.
pub(crate) const SMALL_GROUP_BYTES: u64 = 1 << 20;

/// The next range to zero: `None` when `lead_bytes` past the writer's
/// claimed end are zeroed already, or the segment is zeroed to its end.
///
/// `claimed_end`: end of the last range the writer claimed. `zeroed_end`:
/// end of the zeroed run ahead of it (0 for none). `zeroable_end`: the
/// segment length in whole blocks. When the writer has overtaken the zeros
/// (or nothing was zeroed yet), zeroing starts [`ZERO_GAP_BYTES`] past the
/// claimed end, so that the writer's next commits do not wait for it.
pub(crate) fn next_chunk(claimed_end: u64, zeroed_end: u64, zeroable_end: u64, lead_bytes: u64) -> Option<Range<u64>> {
    let claimed = claimed_end.next_multiple_of(DIRECT_BLOCK as u64);
    let from = if zeroed_end >= claimed { zeroed_end } else { claimed + ZERO_GAP_BYTES };
    if from >= claimed.saturating_add(lead_bytes) || from >= zeroable_end {
        return None;
    }
    Some(from..(from + ZERO_CHUNK_BYTES).min(zeroable_end))
}

#[derive(Debug)]
struct Frontier {
    /// The segment being appended to, and its length in whole blocks.
    segment: u32,
    zeroable_end: u64,
    /// The writer appends to this segment with `O_DIRECT`: zeros go direct too.
    direct: bool,
    claimed_end: u64,
    zeroed_end: u64,
    /// The chunk being written now, if any: the writer may not write there.
    zeroing: Option<Range<u64>>,
    writer_idle: bool,
    zeroer_waiting: bool,
    /// Asked by the writer (on drop).
    stopping: bool,
    /// Set however the thread ends (a panic included): nobody waits for it then.
    stopped: bool,
}

impl Frontier {
    fn next_chunk(&self, lead_bytes: u64) -> Option<Range<u64>> {
        next_chunk(self.claimed_end, self.zeroed_end, self.zeroable_end, lead_bytes)
    }
}

#[derive(Debug)]
struct Shared {
    frontier: Mutex<Frontier>,
    /// Signalled when the writer goes idle with zeroing to do, when it
    /// rolls, when a chunk is finished, and when the thread stops.
    changed: Condvar,
    lead_bytes: u64,
}

/// The writer's handle on its chain's zeroing thread; stops it when dropped.
#[derive(Debug)]
pub(crate) struct ZeroAhead {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn zeroable_end(chain: &ChainShared, segment: u32) -> u64 {
    let len = chain.segments.get(segment).expect("the active segment is in the table").bytes().len() as u64;
    len - len % DIRECT_BLOCK as u64
}

impl ZeroAhead {
    /// Starts zeroing ahead of `write_offset` in `segment` (`direct`: the
    /// writer appends to it with `O_DIRECT`); `None` when the chain's
    /// `zero_ahead_bytes` is 0, its commits are not synced by default, or
    /// its storage says zeros would not help (`Storage::zero_ahead`).
    pub(crate) fn start(
        chain: &Arc<ChainShared>,
        segment: u32,
        write_offset: u64,
        direct: bool,
    ) -> std::io::Result<Option<Self>> {
        let lead_bytes = chain.config.zero_ahead_bytes;
        let file = &chain.segments.get(segment).expect("the active segment is in the table").file;
        if lead_bytes == 0 || !chain.config.durability.needs_sync() || !chain.storage.zero_ahead(file) {
            return Ok(None);
        }
        let shared = Arc::new(Shared {
            frontier: Mutex::new(Frontier {
                segment,
                zeroable_end: zeroable_end(chain, segment),
                direct,
                claimed_end: write_offset,
                zeroed_end: 0,
                zeroing: None,
                writer_idle: false,
                zeroer_waiting: false,
                stopping: false,
                stopped: false,
            }),
            changed: Condvar::new(),
            lead_bytes,
        });
        let name = super::helper_thread_name("zero", &chain.name);
        let thread = {
            let (shared, chain) = (Arc::clone(&shared), Arc::clone(chain));
            std::thread::Builder::new().name(name).spawn(move || run(&shared, &chain))?
        };
        Ok(Some(Self { shared, thread: Some(thread) }))
    }

    /// The writer is about to write up to `end` of the active segment:
    /// waits if zeros are being written below it. No new chunk starts
    /// meanwhile (the writer is no longer idle).
    pub(crate) fn claim(&self, end: u64) {
        let mut frontier = self.shared.frontier.lock();
        frontier.writer_idle = false;
        while !frontier.stopped && frontier.zeroing.as_ref().is_some_and(|chunk| chunk.start < end) {
            self.shared.changed.wait(&mut frontier);
        }
        frontier.claimed_end = frontier.claimed_end.max(end);
    }

    /// The writer has nothing in flight and nothing queued, after a small group.
    pub(crate) fn idle(&self) {
        let mut frontier = self.shared.frontier.lock();
        frontier.writer_idle = true;
        if frontier.zeroer_waiting && frontier.next_chunk(self.shared.lead_bytes).is_some() {
            self.shared.changed.notify_all();
        }
    }

    /// The writer rolled to `segment`, appending from `write_offset`.
    pub(crate) fn rolled(&self, chain: &ChainShared, segment: u32, write_offset: u64, direct: bool) {
        let mut frontier = self.shared.frontier.lock();
        frontier.writer_idle = false;
        while !frontier.stopped && frontier.zeroing.is_some() {
            self.shared.changed.wait(&mut frontier);
        }
        frontier.segment = segment;
        frontier.zeroable_end = zeroable_end(chain, segment);
        frontier.direct = direct;
        frontier.claimed_end = write_offset;
        frontier.zeroed_end = 0;
        // Wakes the thread so that it lets go of the sealed segment's file.
        self.shared.changed.notify_all();
    }
}

impl Drop for ZeroAhead {
    fn drop(&mut self) {
        self.shared.frontier.lock().stopping = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Marks the thread stopped however it ends, so that the writer never
/// waits for a chunk that will not finish; a panic (in a `Storage`
/// implementation, say) poisons the chain.
struct MarkStopped<'a> {
    shared: &'a Shared,
    chain: &'a ChainShared,
}

impl Drop for MarkStopped<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.chain.poison("the thread writing zeros ahead of the appends panicked".into());
        }
        let mut frontier = self.shared.frontier.lock();
        frontier.stopped = true;
        frontier.zeroing = None;
        drop(frontier);
        self.shared.changed.notify_all();
    }
}

/// Why a chunk was not zeroed.
enum ZeroFailure {
    /// The segment could not be opened again: zeroing stops, nothing else is wrong.
    Open(std::io::Error),
    /// A write or fdatasync failed: the device fails, as the writer's would.
    Write(std::io::Error),
}

/// The zeroing thread: one chunk at a time, while the writer is idle.
fn run(shared: &Shared, chain: &ChainShared) {
    let _stopped = MarkStopped { shared, chain };
    let mut zeros = WriteBuffer::new();
    let mut open: Option<(u32, File)> = None;
    let mut frontier = shared.frontier.lock();
    loop {
        if frontier.stopping || chain.poisoned().is_some() {
            return;
        }
        // A sealed segment may be dropped later: hold no file of it.
        if open.as_ref().is_some_and(|(index, _)| *index != frontier.segment) {
            open = None;
        }
        let chunk = if frontier.writer_idle { frontier.next_chunk(shared.lead_bytes) } else { None };
        let Some(chunk) = chunk else {
            frontier.zeroer_waiting = true;
            shared.changed.wait(&mut frontier);
            frontier.zeroer_waiting = false;
            continue;
        };
        let (segment, direct) = (frontier.segment, frontier.direct);
        frontier.zeroing = Some(chunk.clone());
        let result = parking_lot::MutexGuard::unlocked(&mut frontier, || {
            write_zeros(chain, &mut open, &mut zeros, segment, direct, &chunk)
        });
        frontier.zeroing = None;
        shared.changed.notify_all();
        match result {
            Ok(()) => {
                chain.metrics.zeroed_bytes.fetch_add(chunk.end - chunk.start, std::sync::atomic::Ordering::Relaxed);
                if frontier.segment == segment {
                    frontier.zeroed_end = chunk.end;
                }
            }
            Err(ZeroFailure::Open(error)) => {
                tracing::warn!(chain = %chain.name, segment, %error, "cannot open the segment to zero ahead; zeroing stops");
                return;
            }
            Err(ZeroFailure::Write(error)) => {
                // The chunk was beyond every acknowledged byte, but a device
                // that fails writes or syncs fails the log's too: stop writing.
                chain.poison(format!("writing zeros ahead of the appends in segment {segment} failed: {error}"));
                return;
            }
        }
    }
}

/// Writes and syncs zeros over `chunk` of `segment`, through a file of its
/// own: a second fdatasync on the writer's file would consume a writeback
/// error before the writer's own sync saw it (errors are reported to each
/// open file, Linux 4.13 and later). Through the page cache when the
/// writer appends through it: a buffered write into part of a page of a
/// *written* extent first reads that page from the disk unless it is
/// cached (130 µs a commit here, more than the sync saves), and zeros
/// written this way stay cached. With direct appends, which write whole
/// blocks, zeros go direct too.
fn write_zeros(
    chain: &ChainShared,
    open: &mut Option<(u32, File)>,
    zeros: &mut WriteBuffer,
    segment: u32,
    direct: bool,
    chunk: &Range<u64>,
) -> Result<(), ZeroFailure> {
    let file = match open {
        Some((index, file)) if *index == segment => file,
        _ => {
            let path = &chain.segments.get(segment).expect("the active segment is in the table").path;
            let opened = if direct { chain.storage.open_direct(path).map_err(ZeroFailure::Open)? } else { None };
            let file = match opened {
                Some(file) => file,
                None => chain.storage.open(path).map_err(ZeroFailure::Open)?,
            };
            &open.insert((segment, file)).1
        }
    };
    let len = (chunk.end - chunk.start) as usize;
    debug_assert!(chunk.start % DIRECT_BLOCK as u64 == 0 && len % DIRECT_BLOCK == 0, "direct I/O needs whole blocks");
    if zeros.len() < len {
        zeros.resize(len, 0);
    }
    chain.storage.write_all_at(file, &zeros[..len], chunk.start).map_err(ZeroFailure::Write)?;
    chain.storage.sync_data(file).map_err(ZeroFailure::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEAD: u64 = 4 << 20;
    const SEGMENT: u64 = 64 << 20;

    #[test]
    fn a_fresh_segment_is_zeroed_from_a_gap_past_the_appends() {
        assert_eq!(
            next_chunk(128, 0, SEGMENT, LEAD),
            Some(4096 + ZERO_GAP_BYTES..4096 + ZERO_GAP_BYTES + ZERO_CHUNK_BYTES)
        );
    }

    #[test]
    fn zeroing_continues_from_where_it_stopped_until_the_lead_is_full() {
        let claimed = 10_000;
        // Closer to the appends than a restart would begin: where it stopped, not past a new gap.
        let start = 12_288 + 4096;
        assert_eq!(next_chunk(claimed, start, SEGMENT, LEAD), Some(start..start + ZERO_CHUNK_BYTES));
        assert_eq!(next_chunk(claimed, 12_288 + LEAD, SEGMENT, LEAD), None, "the lead is full");
    }

    #[test]
    fn a_writer_that_overtook_the_zeros_gets_a_gap_of_room() {
        let claimed = 5 << 20;
        assert_eq!(
            next_chunk(claimed, 1 << 20, SEGMENT, LEAD),
            Some(claimed + ZERO_GAP_BYTES..claimed + ZERO_GAP_BYTES + ZERO_CHUNK_BYTES)
        );
    }

    #[test]
    fn zeroing_stops_at_the_last_whole_block_of_the_segment() {
        let zeroable = SEGMENT - 4096;
        assert_eq!(next_chunk(zeroable - 8192, zeroable - 4096, zeroable, LEAD), Some(zeroable - 4096..zeroable));
        assert_eq!(next_chunk(zeroable - 8192, zeroable, zeroable, LEAD), None);
    }

    #[test]
    fn chunks_never_start_below_the_claimed_end() {
        for claimed in [0, 1, 4095, 4096, 4097, 300_000, 5 << 20] {
            for zeroed in [0, 4096, 1 << 20, 6 << 20] {
                if let Some(chunk) = next_chunk(claimed, zeroed, SEGMENT, LEAD) {
                    assert!(chunk.start >= claimed && chunk.start % 4096 == 0 && chunk.end % 4096 == 0);
                    assert!(chunk.end <= SEGMENT && chunk.start < chunk.end);
                }
            }
        }
    }
}
