//! Dropping the log's pages from the page cache behind the appends.
//!
//! Every appended byte lands in a page-cache page the kernel takes from
//! free memory. A VM that hands free memory back to its host (free page
//! reporting, as on the machine in docs/benchmarks.md) backs such a page
//! again only when it is first written, and in its slow phases that copy
//! ran at ~0.4 GB/s: half of atedb's CPU in an ingest. Pages dropped a
//! little behind the appends go back to the kernel's free lists and are
//! taken again within milliseconds for the next appends, still backed.
//! Elsewhere it keeps an ingest from filling the page cache with log
//! nobody reads.
//!
//! The cost: a reader of events older than the window (a replica catching
//! up from far behind, a `get` of an old object) reads them from the disk,
//! once. The segments are mapped `MADV_HUGEPAGE`, so those reads fill
//! 2 MiB page-cache pages mapped whole, where the appends' writes left
//! small ones: random lookups over a chain read back this way ran 176-180 ns
//! against 193-221 ns with every page kept (E3, docs/benchmarks.md,
//! eighteenth session). So it is on by default (`AteConfig::drop_behind_bytes`,
//! a window of [`DEFAULT_DROP_BEHIND_BYTES`]); chains in memory never drop.
//! Only bytes the writer has completed are dropped (dirty ones, under
//! `Buffered`, are written back by the kernel rather than dropped); the
//! kernel reads them back on the next access, so nothing a reader sees
//! changes.

use super::page_cache::{Advice, AdviceThread};
use super::segments::SegmentTable;
use std::ops::Range;

/// The window by default: well past what a tail reader or a fresh
/// replica's catch-up reads back, small next to the page cache.
pub(crate) const DEFAULT_DROP_BEHIND_BYTES: u64 = 64 << 20;

/// Bytes dropped at a time: one `madvise` and one `posix_fadvise` per step.
pub(crate) const DROP_STEP_BYTES: u64 = 8 << 20;

/// The range of a segment to drop now, if a whole step of it is more than
/// `window_bytes` behind `durable_end` and not dropped yet (`dropped_until`).
pub(crate) fn next_drop(dropped_until: u64, durable_end: u64, window_bytes: u64) -> Option<Range<u64>> {
    let end = durable_end.saturating_sub(window_bytes) / DROP_STEP_BYTES * DROP_STEP_BYTES;
    (end >= dropped_until.saturating_add(DROP_STEP_BYTES)).then_some(dropped_until..end)
}

/// The log writer's progress in dropping pages behind its durable appends
/// (the drops run on the writer's `AdviceThread`).
#[derive(Debug)]
pub(crate) struct DropBehind {
    window_bytes: u64,
    segment: u32,
    /// Where the active segment starts in the bytes this writer has seen:
    /// the window spans segments shorter than itself.
    segment_start: u64,
    dropped_until: u64,
    /// Parts of sealed segments not dropped yet, with where they end (as
    /// `segment_start`), each dropped once it is a window behind.
    sealed_tails: std::collections::VecDeque<(u32, Range<u64>, u64)>,
}

impl DropBehind {
    /// `None` when `window_bytes` (the chain's `drop_behind_bytes`) is 0 (off).
    pub(crate) fn new(window_bytes: u64, segment: u32) -> Option<Self> {
        let sealed_tails = std::collections::VecDeque::new();
        (window_bytes > 0).then_some(Self { window_bytes, segment, segment_start: 0, dropped_until: 0, sealed_tails })
    }

    /// The writer has completed every group of `segment` up to `durable_end`.
    pub(crate) fn durable(&mut self, advice: &AdviceThread, segments: &SegmentTable, segment: u32, durable_end: u64) {
        if segment != self.segment {
            let sealed_len = segments.get(self.segment).map_or(0, |sealed| sealed.bytes().len() as u64);
            let sealed_end = self.segment_start + sealed_len;
            if self.dropped_until < sealed_len {
                self.sealed_tails.push_back((self.segment, self.dropped_until..sealed_len, sealed_end));
            }
            (self.segment, self.segment_start, self.dropped_until) = (segment, sealed_end, 0);
        }
        let position = self.segment_start + durable_end;
        while let Some((index, range, end)) = self.sealed_tails.front().cloned() {
            if end.saturating_add(self.window_bytes) > position {
                break;
            }
            self.sealed_tails.pop_front();
            advice.send(Advice::Drop(index, range));
        }
        if let Some(range) = next_drop(self.dropped_until, durable_end, self.window_bytes) {
            self.dropped_until = range.end;
            advice.send(Advice::Drop(segment, range));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: u64 = 64 << 20;

    #[test]
    fn nothing_is_dropped_within_the_window() {
        assert_eq!(next_drop(0, WINDOW, WINDOW), None);
        assert_eq!(next_drop(0, WINDOW + DROP_STEP_BYTES - 1, WINDOW), None);
    }

    #[test]
    fn whole_steps_behind_the_window_are_dropped_once() {
        let durable_end = WINDOW + 3 * DROP_STEP_BYTES + 100;
        assert_eq!(next_drop(0, durable_end, WINDOW), Some(0..3 * DROP_STEP_BYTES));
        assert_eq!(next_drop(3 * DROP_STEP_BYTES, durable_end, WINDOW), None, "already dropped");
        let later = durable_end + DROP_STEP_BYTES;
        assert_eq!(next_drop(3 * DROP_STEP_BYTES, later, WINDOW), Some(3 * DROP_STEP_BYTES..4 * DROP_STEP_BYTES));
    }

    #[test]
    fn dropped_ranges_never_reach_into_the_window() {
        for durable_end in (0..400u64).map(|step| step * 1_234_567) {
            for dropped_until in [0, DROP_STEP_BYTES, 5 * DROP_STEP_BYTES] {
                if let Some(range) = next_drop(dropped_until, durable_end, WINDOW) {
                    assert!(range.start == dropped_until && range.end + WINDOW <= durable_end);
                    assert!(range.end % DROP_STEP_BYTES == 0 && range.end > range.start);
                }
            }
        }
    }
}
