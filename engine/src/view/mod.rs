//! The materialized view of one chain: object key → location of its latest
//! event, and parent/collection → children in the order they were created.
//!
//! Pure logic over [`EventLocation`]s: no I/O. One writer (the chain's log
//! writer thread applies durable commits); readers run concurrently and only
//! ever hold a shard lock for the duration of one map probe.
//!
//! The map type was chosen by `bench/benches/view_maps.rs` (see
//! docs/benchmarks.md): DashMap with foldhash had the best point lookups of
//! the candidates at the smallest memory per key.

use dashmap::DashMap;
use std::collections::BTreeMap;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use crate::FastHash;

/// Where an event lives: segment index and byte offset of its record.
/// Packed into 8 bytes to keep the view small (segments are ≤ 4 GiB).
/// Records are 16-byte aligned, so the low bit of the offset is free; the
/// view uses it to remember "this key is a child" without a second lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventLocation(u64);

const CHILD_FLAG: u64 = 1;

impl EventLocation {
    pub fn new(segment: u32, offset: u32) -> Self {
        debug_assert_eq!(offset % 16, 0, "record offsets are 16-byte aligned");
        Self(((segment as u64) << 32) | (offset as u64 & !CHILD_FLAG))
    }
    pub fn segment(self) -> u32 {
        (self.0 >> 32) as u32
    }
    pub fn offset(self) -> u32 {
        self.0 as u32 & !(CHILD_FLAG as u32)
    }
    fn is_child(self) -> bool {
        self.0 & CHILD_FLAG != 0
    }
    fn with_child_flag(self, child: bool) -> Self {
        Self(if child { self.0 | CHILD_FLAG } else { self.0 & !CHILD_FLAG })
    }
}

/// Where a child sits in its parent's ordered collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChildPosition {
    parent: u128,
    collection: u64,
    created_sequence: u64,
}

/// One change to the view, produced by a durable event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewChange {
    Put { key: u128, location: EventLocation, sequence: u64, parent: Option<(u128, u64)> },
    Delete { key: u128 },
}

/// Shards of the object map. A shard grows by rehashing all of its entries
/// into a table twice the size while holding its lock, so its size bounds
/// that pause. With dashmap's default (8 shards on 2 cores) a view of a few
/// million keys stalled the log writer 5–15 ms per resize, mostly first
/// touches of the new table's memory (this VM hands free memory back to the
/// host); 64 shards still gave 15 ms pauses at 4.5M keys; 512 keep each
/// table under a few MiB (D1 open loop, docs/benchmarks.md). Each shard
/// costs 128 bytes (cache-padded), 64 KiB per chain.
const OBJECT_SHARDS: usize = 512;
/// The child index only holds objects with a parent.
const CHILD_SHARDS: usize = 64;

#[derive(Debug)]
pub struct View {
    /// Seqlock over whole commits: odd while a group is being applied, so a
    /// reader of several keys can tell it saw no commit half-applied.
    epoch: AtomicU64,
    objects: DashMap<u128, EventLocation, FastHash>,
    children: DashMap<(u128, u64), BTreeMap<u64, u128>, FastHash>,
    positions: DashMap<u128, ChildPosition, FastHash>,
}

impl Default for View {
    fn default() -> Self {
        Self {
            epoch: AtomicU64::new(0),
            objects: DashMap::with_hasher_and_shard_amount(FastHash::default(), OBJECT_SHARDS),
            children: DashMap::with_hasher_and_shard_amount(FastHash::default(), CHILD_SHARDS),
            positions: DashMap::with_hasher_and_shard_amount(FastHash::default(), CHILD_SHARDS),
        }
    }
}

impl View {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn apply(&self, change: ViewChange) {
        match change {
            ViewChange::Put { key, location, sequence, parent } => {
                let old = self.objects.insert(key, location.with_child_flag(parent.is_some()));
                let was_child = old.is_some_and(EventLocation::is_child);
                // Roots that never were children skip the child index entirely.
                if parent.is_some() || was_child {
                    self.place_child(key, sequence, parent, was_child);
                }
            }
            ViewChange::Delete { key } => {
                if self.objects.remove(&key).is_some_and(|(_, old)| old.is_child()) {
                    self.place_child(key, 0, None, true);
                }
            }
        }
    }

    /// Keeps the child index in step: a new version under the same parent
    /// keeps its place; a move or a delete takes it out of the old list.
    /// `was_child`: the object's previous version had a parent, so it has a
    /// position (a new child has none: one lookup per new child saved).
    fn place_child(&self, key: u128, sequence: u64, parent: Option<(u128, u64)>, was_child: bool) {
        let old = if was_child { self.positions.get(&key).map(|entry| *entry) } else { None };
        if let (Some(old), Some((parent, collection))) = (old, parent) {
            if old.parent == parent && old.collection == collection {
                return;
            }
        }
        if let Some(old) = old {
            self.positions.remove(&key);
            if let Some(mut list) = self.children.get_mut(&(old.parent, old.collection)) {
                list.remove(&old.created_sequence);
            }
            self.children.remove_if(&(old.parent, old.collection), |_, list| list.is_empty());
        }
        if let Some((parent, collection)) = parent {
            self.positions.insert(key, ChildPosition { parent, collection, created_sequence: sequence });
            self.children.entry((parent, collection)).or_default().insert(sequence, key);
        }
    }

    /// Applies many changes as one unit for [`View::read_consistent`] readers.
    pub fn apply_all(&self, changes: impl IntoIterator<Item = ViewChange>) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for change in changes {
            self.apply(change);
        }
        self.epoch.fetch_add(1, Ordering::Release);
    }

    /// Runs `read` until it ran while no commit was being applied, so that
    /// every key it read reflects the same set of whole commits. `read` may
    /// run more than once and must not have side effects.
    pub fn read_consistent<R>(&self, mut read: impl FnMut() -> R) -> R {
        loop {
            let before = self.epoch.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let result = read();
            fence(Ordering::Acquire);
            if self.epoch.load(Ordering::Relaxed) == before {
                return result;
            }
        }
    }

    pub fn get(&self, key: u128) -> Option<EventLocation> {
        self.objects.get(&key).map(|entry| entry.with_child_flag(false))
    }

    /// Children of `parent` in `collection`, oldest first (a snapshot).
    pub fn children(&self, parent: u128, collection: u64) -> Vec<u128> {
        self.children.get(&(parent, collection)).map(|list| list.values().copied().collect()).unwrap_or_default()
    }

    /// At most `limit` children created at or after `from_sequence`, oldest
    /// first, with the sequence that created each: a page of a long list
    /// (a queue's backlog) without copying the whole of it.
    pub fn children_page(&self, parent: u128, collection: u64, from_sequence: u64, limit: usize) -> Vec<(u64, u128)> {
        self.children
            .get(&(parent, collection))
            .map(|list| list.range(from_sequence..).take(limit).map(|(sequence, key)| (*sequence, *key)).collect())
            .unwrap_or_default()
    }

    /// How many children `parent` has in `collection`.
    pub fn child_count(&self, parent: u128, collection: u64) -> usize {
        self.children.get(&(parent, collection)).map_or(0, |list| list.len())
    }

    /// Number of live objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Every live key (a snapshot, unordered).
    pub fn keys(&self) -> Vec<u128> {
        self.objects.iter().map(|entry| *entry.key()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(view: &View, key: u128, sequence: u64, parent: Option<(u128, u64)>) {
        let location = EventLocation::new(0, sequence as u32 * 16);
        view.apply(ViewChange::Put { key, location, sequence, parent });
    }

    #[test]
    fn overwrite_keeps_latest_location() {
        let view = View::new();
        put(&view, 1, 1, None);
        put(&view, 1, 2, None);
        assert_eq!(view.get(1), Some(EventLocation::new(0, 32)));
        assert_eq!(view.len(), 1);
    }

    #[test]
    fn delete_removes_key_and_child_entry() {
        let view = View::new();
        put(&view, 10, 1, Some((99, 0)));
        put(&view, 11, 2, Some((99, 0)));
        view.apply(ViewChange::Delete { key: 10 });
        assert_eq!(view.get(10), None);
        assert_eq!(view.children(99, 0), vec![11]);
        view.apply(ViewChange::Delete { key: 11 });
        assert!(view.children(99, 0).is_empty());
        assert!(view.is_empty());
    }

    #[test]
    fn children_keep_creation_order_across_updates_and_moves() {
        let view = View::new();
        put(&view, 3, 1, Some((7, 0)));
        put(&view, 1, 2, Some((7, 0)));
        put(&view, 2, 3, Some((7, 0)));
        put(&view, 3, 4, Some((7, 0))); // update in place keeps position
        assert_eq!(view.children(7, 0), vec![3, 1, 2]);
        put(&view, 1, 5, Some((7, 1))); // move to another collection
        assert_eq!(view.children(7, 0), vec![3, 2]);
        assert_eq!(view.children(7, 1), vec![1]);
        put(&view, 2, 6, None); // becomes a root
        assert_eq!(view.children(7, 0), vec![3]);
    }

    #[test]
    fn children_come_in_pages_in_creation_order() {
        let view = View::new();
        for key in 0..10u128 {
            put(&view, 100 + key, 10 + key as u64, Some((7, 0)));
        }
        view.apply(ViewChange::Delete { key: 102 });
        let first = view.children_page(7, 0, 0, 4);
        assert_eq!(first, vec![(10, 100), (11, 101), (13, 103), (14, 104)]);
        let next = view.children_page(7, 0, first.last().unwrap().0 + 1, 4);
        assert_eq!(next, vec![(15, 105), (16, 106), (17, 107), (18, 108)]);
        assert_eq!(view.children_page(7, 0, 19, 4), vec![(19, 109)]);
        assert!(view.children_page(7, 0, 20, 4).is_empty() && view.children_page(8, 0, 0, 4).is_empty());
        assert_eq!(view.child_count(7, 0), 9);
    }

    #[test]
    fn consistent_reads_retry_across_an_apply() {
        let view = View::new();
        let mut runs = 0;
        let seen = view.read_consistent(|| {
            runs += 1;
            if runs == 1 {
                view.apply_all([ViewChange::Delete { key: 1 }]); // a commit lands mid-read
            }
            runs
        });
        assert_eq!(seen, 2, "the read overlapping an apply must be retried");
    }

    #[test]
    fn location_packing_round_trips() {
        let location = EventLocation::new(u32::MAX, 123_456);
        assert_eq!((location.segment(), location.offset()), (u32::MAX, 123_456));
        let flagged = location.with_child_flag(true);
        assert!(flagged.is_child());
        assert_eq!((flagged.segment(), flagged.offset()), (u32::MAX, 123_456));
    }
}
