//! Assigning a commit its sequences, and settling it once durable.
//!
//! A commit is checked in its own task first (size, signatures), in
//! parallel with other committers. What follows must be serial: conflict
//! and trust checks against the state of every commit before it, the hash
//! chain, the sequences. That part runs under the append lock, for about a
//! microsecond per event.
//!
//! Committers do not wait for that lock on a worker thread: a blocked
//! thread takes its core from every other task (E2's two runtime workers
//! were parked on it 14% of the time), and an asynchronous lock hands the
//! turn to a task that may not run for milliseconds. Instead each commit is
//! queued, and the first committer to find nobody assigning takes the role
//! and assigns every queued commit, in queue order, before it steps down
//! ("flat combining"). The others wait for their answer without a thread.

use super::{AppendState, Chain, NewEvent};
use crate::config::Durability;
use crate::format::{encode_record, padded_record_len, EventFlags, EventHeader, EventKind, HEADER_LEN};
use crate::log::{CommitReceipt, CommitRequest};
use crate::plugin::ValidationContext;
use crate::trust::{
    verify_commit_signatures_with_root, CommitSigners, EventContent, EventView, RejectReason, SignedContents,
    SignedEvent, StagedTrust,
};
use crate::{AteError, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

/// Durable commits whose keys may wait for the append lock's next holder
/// to leave `in_flight`; past this, settling waits for the lock itself.
const MAX_SETTLED_COMMITS: usize = 64;

/// A commit whose sequences are assigned, on its way to the disk.
pub(super) enum Assigned {
    /// A replay of a commit already appended: its original receipt.
    Done(CommitReceipt),
    Pending {
        receipt: oneshot::Receiver<Result<CommitReceipt>>,
        /// (key, sequence, is a tombstone) of the events: cleared from
        /// `in_flight` when durable; a tombstone also ends the key's lease.
        written: Vec<(u128, u64, bool)>,
    },
}

/// A commit checked outside the lock, queued for its sequences.
struct AssignRequest {
    commit: CheckedCommit,
    answer: oneshot::Sender<Result<Assigned>>,
}

/// What [`Chain::assign`] checked before queueing a commit.
struct CheckedCommit {
    events: Vec<NewEvent>,
    payload_hashes: Vec<[u8; 32]>,
    signers: CommitSigners,
    durability: Option<Durability>,
    /// Encoded size of its records.
    bytes: usize,
    /// Room in the writer's queue, held until the writer is done with it.
    permit: OwnedSemaphorePermit,
}

/// Commits waiting for their sequences (see the module's comment).
#[derive(Debug, Default)]
pub(super) struct AssignQueue {
    /// At most one commit per writer permit: each holds one.
    requests: Combiner<AssignRequest>,
    /// Keys of durable commits whose settling found the append lock busy,
    /// left for its next holder (until then each `in_flight` entry says
    /// what the view says). At most [`MAX_SETTLED_COMMITS`].
    settled: parking_lot::Mutex<Vec<Vec<(u128, u64, bool)>>>,
}

impl std::fmt::Debug for AssignRequest {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AssignRequest")
            .field("events", &self.commit.events.len())
            .field("bytes", &self.commit.bytes)
            .finish()
    }
}

/// Items queued by many threads and handled one at a time, in queue
/// order, by whichever caller of [`Combiner::combine`] finds nobody else
/// at it ("flat combining").
#[derive(Debug)]
pub(super) struct Combiner<T> {
    waiting: parking_lot::Mutex<Vec<T>>,
    /// Set while a caller handles what is queued.
    combining: AtomicBool,
}

impl<T> Default for Combiner<T> {
    fn default() -> Self {
        Self { waiting: parking_lot::Mutex::new(Vec::new()), combining: AtomicBool::new(false) }
    }
}

impl<T> Combiner<T> {
    pub(super) fn push(&self, item: T) {
        self.waiting.lock().push(item);
    }

    /// Handles every queued item unless another caller is at it, and then
    /// whatever it queues meanwhile: an item pushed before this call is
    /// handled by the time some `combine` call returns. An item queued
    /// while the combiner steps down is seen by its last look at the
    /// queue, after the role is given back.
    pub(super) fn combine(&self, mut handle: impl FnMut(T)) {
        while !self.waiting.lock().is_empty() && !self.combining.swap(true, Ordering::SeqCst) {
            let _role = CombinerRole(&self.combining);
            loop {
                let batch = std::mem::take(&mut *self.waiting.lock());
                if batch.is_empty() {
                    break;
                }
                batch.into_iter().for_each(&mut handle);
            }
        }
    }
}

/// The combiner's role, given back however its holder leaves (a panic, a
/// bug, included), or no commit would be assigned again.
struct CombinerRole<'a>(&'a AtomicBool);

impl Drop for CombinerRole<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Chain {
    /// Validates a commit, assigns its sequences and hands it to the writer
    /// (waiting only for room in the writer's queue); [`Chain::finish`]
    /// waits for durability. Commits are assigned in the order this is
    /// called. Once it has queued the commit, dropping this future does not
    /// withdraw it: the commit's outcome is then unknown to the caller, as
    /// for one dropped while it waits for durability.
    pub(super) async fn assign(
        &self,
        events: Vec<NewEvent>,
        payload_hashes: Vec<[u8; 32]>,
        signed_contents: Option<SignedContents>,
        durability: Option<Durability>,
    ) -> Result<Assigned> {
        let limit = self.shared.config.max_commit_bytes;
        let mut bytes = 0usize;
        for event in &events {
            bytes = bytes.saturating_add(padded_record_len(HEADER_LEN.saturating_add(event.payload.len())));
        }
        if bytes > limit || events.iter().any(|event| event.payload.len() > u32::MAX as usize) {
            return Err(AteError::CommitTooLarge { bytes, limit });
        }
        // Signatures are checked before the commit is queued, in parallel across committers.
        let signed = events.iter().any(|event| event.kind == EventKind::Signature);
        if signed && events.iter().any(|event| event.timestamp_us == 0) {
            return Err(AteError::InvalidInput("signed commits carry their own timestamps".into()));
        }
        let contents_of = |events: &[NewEvent]| -> Vec<EventContent> {
            events.iter().zip(&payload_hashes).map(|(event, hash)| event.content(*hash, event.timestamp_us)).collect()
        };
        let signers: CommitSigners = if signed {
            let (hashes, computed_root) = match signed_contents {
                // The signature events themselves are not covered: their
                // content hashes are never read.
                Some(SignedContents { mut content_hashes, root }) => {
                    debug_assert_eq!(
                        content_hashes,
                        EventContent::hashes(contents_of(&events[..content_hashes.len()])),
                        "the DIO signed what it appends"
                    );
                    debug_assert_eq!(root, crate::trust::events::commit_root(&content_hashes));
                    content_hashes.resize(events.len(), [0; 32]);
                    (content_hashes, Some(root))
                }
                None => (EventContent::hashes(contents_of(&events)), None),
            };
            let views: Vec<SignedEvent<'_>> = events
                .iter()
                .zip(&hashes)
                .map(|(event, hash)| SignedEvent { kind: event.kind, content_hash: *hash, payload: &event.payload })
                .collect();
            let keys = &self.shared.keys.public_keys;
            verify_commit_signatures_with_root(&self.shared.chain_id, &views, computed_root, |id| {
                keys.get(id).map(|key| key.clone())
            })
            .map_err(|(index, reason)| AteError::Rejected { index, key: events[index].key, reason })?
        } else {
            CommitSigners::default()
        };
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| AteError::Closed { chain: self.key.to_string() })?;
        let (answer, assigned) = oneshot::channel();
        let commit = CheckedCommit { events, payload_hashes, signers, durability, bytes, permit };
        let request = AssignRequest { commit, answer };
        self.assign_queue.requests.push(request);
        self.assign_queue.requests.combine(|request| self.assign_queued(request));
        // Answered before the combiner steps down: by this task just now,
        // or by the committer that held the role when this one was queued.
        assigned.await.map_err(|_| AteError::Closed { chain: self.key.to_string() })?
    }

    /// Assigns a queued commit and answers its committer. The lock is
    /// taken per commit, so that a DIO's plan or a lease waits for one
    /// commit, not for a combiner's whole batch.
    fn assign_queued(&self, request: AssignRequest) {
        let mut state = self.append.lock();
        self.clear_settled(&mut state);
        let outcome = self.assign_locked(&mut state, request.commit);
        drop(state);
        // The committer may have gone: its commit stands all the same.
        let _ = request.answer.send(outcome);
    }

    /// The serial part of [`Chain::assign`], under the append lock.
    fn assign_locked(&self, state: &mut AppendState, commit: CheckedCommit) -> Result<Assigned> {
        let CheckedCommit { events, payload_hashes, signers, durability, bytes, permit } = commit;
        if let Some(error) = self.shared.poisoned() {
            return Err(error);
        }
        let (reply, durable) = oneshot::channel();
        let now = super::now_us();
        let stamp = now.max(state.last_timestamp_us);
        let contents: Vec<EventContent> = events
            .iter()
            .zip(&payload_hashes)
            .map(|(event, hash)| event.content(*hash, if event.timestamp_us == 0 { stamp } else { event.timestamp_us }))
            .collect();
        let commit_time_us = contents.iter().map(|content| content.timestamp_us).max().unwrap_or(stamp);
        if let Some(root) = &signers.root {
            // A retried commit whose acknowledgement was lost: idempotent.
            if let Some((first_sequence, last_sequence)) = state.trust.replayed_commit(root) {
                return Ok(Assigned::Done(CommitReceipt { first_sequence, last_sequence }));
            }
            state.trust.check_replay_window(&self.trust, commit_time_us, now).map_err(|reason| AteError::Rejected {
                index: 0,
                key: events[0].key,
                reason,
            })?;
        }
        for event in &events {
            self.check_expectation(state, event)?;
        }
        let mut staged = StagedTrust::for_commit(events.len());
        for (index, (event, content)) in events.iter().zip(&contents).enumerate() {
            let view = EventView {
                kind: event.kind,
                key: event.key.as_u128(),
                parent: event.parent.map(|(parent, _)| parent.as_u128()),
                content,
                payload: &event.payload,
            };
            let rejected = |reason| AteError::Rejected { index, key: event.key, reason };
            state.trust.check_event(&self.trust, &mut staged, &view, &signers.keys).map_err(rejected)?;
            let context = ValidationContext {
                chain: self.key.name(),
                config: &self.trust,
                signers: &signers.keys,
                now_us: now,
                index,
            };
            for validator in &self.plugins.validators {
                // The application's code, run by whichever committer holds
                // the combiner's role: its panic rejects its own commit, not
                // the others queued with it. (It runs before this commit
                // changes any state.)
                let verdict =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| validator.validate(&view, &context)))
                        .unwrap_or_else(|_| {
                            Err(RejectReason::Custom {
                                validator: validator.name(),
                                reason: "the validator panicked".into(),
                            })
                        });
                verdict.map_err(rejected)?;
            }
        }
        let first_sequence = state.next_sequence;
        let mut records = self.shared.record_buffer(bytes);
        let count = events.len();
        let mut keys = Vec::with_capacity(count);
        for (index, (event, content)) in events.iter().zip(&contents).enumerate() {
            let sequence = first_sequence + index as u64;
            let header = EventHeader {
                sequence,
                timestamp_us: content.timestamp_us,
                collection: content.collection,
                type_tag: event.type_tag,
                payload_len: event.payload.len() as u32,
                kind: event.kind as u8,
                flags: if index + 1 == count { EventFlags::COMMIT_END } else { 0 },
                reserved: 0,
                key: content.key,
                parent: content.parent,
                prev_hash: state.last_hash,
                payload_hash: content.payload_hash,
                read_key_id: content.read_key_id,
                nonce: content.nonce,
                reserved_tail: [0; 4],
            };
            state.last_hash = encode_record(&mut records, &header, &event.payload);
            keys.push((event.key.as_u128(), sequence, event.kind == EventKind::Tombstone));
        }
        debug_assert_eq!(records.len(), bytes);
        let receipt = CommitReceipt { first_sequence, last_sequence: first_sequence + count as u64 - 1 };
        let request = CommitRequest {
            records,
            receipt,
            last_hash: state.last_hash,
            durability: durability.unwrap_or(self.durability),
            reply,
            _permit: permit,
        };
        for key in staged.public_keys() {
            self.shared.keys.public_keys.insert(key.id(), key.clone());
        }
        for wrap in &staged.node_key_wraps {
            self.shared.keys.add_wrap(wrap.clone());
        }
        if let Some(root) = signers.root {
            staged.set_commit_root(root, commit_time_us);
        }
        state.trust.commit(staged, &self.trust, now, first_sequence, receipt.last_sequence);
        for (event, (key, sequence, tombstone)) in events.iter().zip(&keys) {
            if matches!(event.kind, EventKind::Data | EventKind::Tombstone) {
                state.in_flight.insert(*key, (*sequence, *tombstone));
            }
        }
        // Last: an inline writer publishes the commit to readers at once,
        // and they may look up the keys and trust it brought.
        self.send_to_writer(request)?;
        state.next_sequence = receipt.last_sequence + 1;
        state.last_timestamp_us = stamp;
        Ok(Assigned::Pending { receipt: durable, written: keys })
    }

    /// Hands an encoded commit to the writer (under the append lock, with a
    /// permit: the writer's queue has room).
    pub(crate) fn send_to_writer(&self, request: CommitRequest) -> Result<()> {
        self.writer.send(request).map_err(|_| AteError::Closed { chain: self.key.to_string() })
    }

    /// Waits until an assigned commit is durable and in the view.
    pub(super) async fn finish(&self, assigned: Assigned) -> Result<CommitReceipt> {
        let (receipt, written) = match assigned {
            Assigned::Done(receipt) => return Ok(receipt),
            Assigned::Pending { receipt, written } => (receipt, written),
        };
        let outcome = receipt.await.map_err(|_| AteError::Closed { chain: self.key.to_string() })?;
        if outcome.is_ok() {
            for &(key, _, tombstone) in &written {
                if tombstone {
                    // A deleted object cannot be leased again: its lease
                    // entry goes with it, even if a later commit already
                    // wrote the key again (a new object, leased afresh). So
                    // an acknowledgement needs no separate "forget" (on a
                    // replica that was a round trip per item) and the
                    // table stays bounded. No lease of the key can start
                    // meanwhile: it is gone, in the view or in flight.
                    self.leases.drop_key(key);
                }
            }
            self.settle(written);
        }
        outcome
    }

    /// The view has a durable commit now: its keys leave `in_flight` (if no
    /// later commit took them over), at once when the append lock is free
    /// (with any left before), else by the next commit assigned or the next
    /// settling that finds the lock free, so that an acknowledgement does
    /// not wait behind a commit being assigned.
    fn settle(&self, written: Vec<(u128, u64, bool)>) {
        let mut state = match self.append.try_lock() {
            Some(state) => state,
            None => {
                let mut settled = self.assign_queue.settled.lock();
                if settled.len() < MAX_SETTLED_COMMITS {
                    settled.push(written);
                    return;
                }
                drop(settled);
                self.append.lock()
            }
        };
        clear_in_flight(&mut state, &written);
        self.clear_settled(&mut state);
    }

    /// Clears what [`Chain::settle`] left for the append lock's holder.
    fn clear_settled(&self, state: &mut AppendState) {
        let settled = std::mem::take(&mut *self.assign_queue.settled.lock());
        for written in &settled {
            clear_in_flight(state, written);
        }
    }
}

fn clear_in_flight(state: &mut AppendState, written: &[(u128, u64, bool)]) {
    for &(key, sequence, _) in written {
        if state.in_flight.get(&key).is_some_and(|&(latest, _)| latest == sequence) {
            state.in_flight.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Combiner;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Threads that push and combine at once, many times: every item is
    /// handled exactly once, each thread's in the order it pushed them,
    /// and nothing is left queued (an item missed while a combiner steps
    /// down would be).
    #[test]
    fn every_pushed_item_is_handled_once_in_order() {
        const THREADS: u64 = 4;
        const ITEMS: u64 = 100_000;
        let combiner = Combiner::<(u64, u64)>::default();
        let handled = AtomicU64::new(0);
        let next: Vec<AtomicU64> = (0..THREADS).map(|_| AtomicU64::new(0)).collect();
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let (combiner, handled, next) = (&combiner, &handled, &next);
                scope.spawn(move || {
                    for item in 0..ITEMS {
                        combiner.push((thread, item));
                        combiner.combine(|(from, item)| {
                            let expected = next[from as usize].fetch_add(1, Ordering::Relaxed);
                            assert_eq!(item, expected, "thread {from}'s items in push order");
                            handled.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        assert!(combiner.waiting.lock().is_empty(), "an item was left queued");
        assert_eq!(handled.load(Ordering::Relaxed), THREADS * ITEMS);
    }

    #[test]
    fn a_panicking_handler_gives_the_role_back() {
        let combiner = Combiner::<u32>::default();
        combiner.push(1);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| combiner.combine(|_| panic!("a bug"))));
        assert!(panicked.is_err());
        combiner.push(2);
        let mut seen = Vec::new();
        combiner.combine(|item| seen.push(item));
        assert_eq!(seen, [2]);
    }
}
