//! Populating the page cache ahead of the appends with huge pages.
//!
//! A reader's `get` lands on a random record of a mapping the size of the
//! log; mapped with 4 KiB pages, that is a TLB miss (and a page-table walk
//! that misses the cache) on top of the record's own miss. The kernel maps
//! a file's page-cache folio with one huge-page entry only if the folio is
//! 2 MiB and aligned, and a buffered write makes folios no larger than
//! itself: a log written in groups of a few KiB to 1 MiB is cached, and
//! mapped, in small pages. Read faults on a mapping advised
//! `MADV_HUGEPAGE` do make 2 MiB folios, and reading a preallocated
//! (unwritten) extent costs no disk I/O, only zeroed memory. So a helper
//! thread populates the active segment a little ahead of the appends, and
//! the appends then write into huge folios already in the cache. E3's
//! single lookups: 148-167 ns against 189-208 ns, interleaved
//! (docs/benchmarks.md, seventeenth session).
//!
//! The cost: the kernel zeroes every populated byte before the appends
//! overwrite it (a fifth of the machine's samples in a bulk ingest, which
//! ran 10-15% slower), so it is off unless a chain asks for it
//! (`AteConfig::populate_ahead_bytes`): for chains read far more than
//! written. Mapping segments `MADV_HUGEPAGE` costs nothing and is always
//! done: a chain reopened, or read back after `drop_behind`, is read into
//! huge pages by the kernel's readahead anyway.
//!
//! Not for direct appends (the kernel drops cached pages of a range written
//! with `O_DIRECT`) nor chains in memory (tmpfs pages are the only copy,
//! and their size is set by the tmpfs).

use super::page_cache::{Advice, AdviceThread};
use std::ops::Range;

/// One huge page on x86-64 (a PMD): the unit the kernel maps whole.
pub(crate) const POPULATE_STEP_BYTES: u64 = 2 << 20;

/// The range of the active segment to populate now, if any: from the
/// first whole step the writer has not reached (or where populating got
/// to) up to `lead_bytes` past `claimed_end`, within the segment's whole
/// steps. Asked only once a quarter of the lead is missing, so that it is
/// one request per few MiB of appends rather than one per group.
pub(crate) fn next_populate(
    populated_until: u64,
    claimed_end: u64,
    segment_len: u64,
    lead_bytes: u64,
) -> Option<Range<u64>> {
    let whole_steps_end = segment_len / POPULATE_STEP_BYTES * POPULATE_STEP_BYTES;
    let from = populated_until.max(claimed_end.next_multiple_of(POPULATE_STEP_BYTES));
    let to = claimed_end.saturating_add(lead_bytes).next_multiple_of(POPULATE_STEP_BYTES).min(whole_steps_end);
    let missing = to.saturating_sub(from);
    let due = missing >= (lead_bytes / 4).max(POPULATE_STEP_BYTES) || (to == whole_steps_end && missing > 0);
    due.then_some(from..to)
}

/// The writer's progress in populating its active segment ahead.
#[derive(Debug)]
pub(crate) struct PopulateAhead {
    lead_bytes: u64,
    segment: u32,
    populated_until: u64,
}

impl PopulateAhead {
    /// `None` when the chain's `populate_ahead_bytes` is 0 (off).
    pub(crate) fn new(lead_bytes: u64, segment: u32) -> Option<Self> {
        (lead_bytes > 0).then_some(Self { lead_bytes, segment, populated_until: 0 })
    }

    /// The writer has claimed `segment` up to `claimed_end` (of `segment_len`).
    pub(crate) fn claimed(&mut self, advice: &AdviceThread, segment: u32, claimed_end: u64, segment_len: u64) {
        if segment != self.segment {
            (self.segment, self.populated_until) = (segment, 0);
        }
        if let Some(range) = next_populate(self.populated_until, claimed_end, segment_len, self.lead_bytes) {
            self.populated_until = range.end;
            advice.send(Advice::Populate(segment, range));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: u64 = POPULATE_STEP_BYTES;
    const LEAD: u64 = 32 << 20;
    const SEGMENT: u64 = 256 << 20;

    #[test]
    fn a_new_segment_is_populated_from_the_first_step_past_the_appends() {
        assert_eq!(next_populate(0, 4096, SEGMENT, LEAD), Some(STEP..LEAD + STEP));
    }

    #[test]
    fn nothing_is_asked_until_a_quarter_of_the_lead_is_missing() {
        let populated_until = LEAD + STEP;
        assert_eq!(next_populate(populated_until, 4096 + 3 * STEP, SEGMENT, LEAD), None);
        let claimed = 4096 + 4 * STEP;
        assert_eq!(next_populate(populated_until, claimed, SEGMENT, LEAD), Some(populated_until..LEAD + 5 * STEP));
    }

    #[test]
    fn an_overtaken_populate_restarts_past_the_appends() {
        let claimed = 100 * STEP + 5;
        assert_eq!(next_populate(3 * STEP, claimed, SEGMENT, LEAD), Some(101 * STEP..101 * STEP + LEAD));
    }

    #[test]
    fn the_segment_end_is_populated_even_when_less_than_a_quarter_is_left() {
        let near_end = SEGMENT - 3 * STEP;
        assert_eq!(next_populate(SEGMENT - STEP, near_end, SEGMENT, LEAD), Some(SEGMENT - STEP..SEGMENT));
        assert_eq!(next_populate(SEGMENT, near_end, SEGMENT, LEAD), None, "already populated to the end");
    }

    #[test]
    fn ranges_are_whole_steps_ahead_of_the_appends_within_the_segment() {
        for segment_len in [SEGMENT, SEGMENT + 4096, 5 << 20] {
            for claimed in (0..300u64).map(|step| step * 1_234_567).filter(|claimed| *claimed <= segment_len) {
                for populated_until in [0, STEP, 40 * STEP] {
                    if let Some(range) = next_populate(populated_until, claimed, segment_len, LEAD) {
                        assert!(range.start >= claimed && range.start >= populated_until && range.end > range.start);
                        assert!(range.start % STEP == 0 && range.end % STEP == 0 && range.end <= segment_len);
                        assert!(range.end <= claimed + LEAD + STEP);
                    }
                }
            }
        }
    }
}
