//! A chain that follows another node's copy: a client's replica of a chain a
//! server owns. The owner assigns sequence numbers; the replica ingests the
//! owner's records unchanged, but only after checking each commit exactly as
//! `ate verify` would (checksums, sequence, hash chain, payload hashes,
//! signatures, authority, validators), so a server can withhold events but
//! cannot forge or reorder them. Writes and leases go to the owner through
//! an [`Upstream`]; reads, subscriptions and the DIO work on the replica.

use super::{Chain, NewEvent};
use crate::config::Durability;
use crate::format::{decode_record, padded_record_len, DecodedRecord, FRAME_LEN};
use crate::log::{CommitReceipt, CommitRequest};
use crate::trust::EventContent;
use crate::{AteError, PrimaryKey, Result};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed future, so [`Upstream`] stays object-safe.
pub type UpstreamFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Where a replica's writes and leases go: the chain's owner.
pub trait Upstream: Send + Sync + std::fmt::Debug {
    /// Commits `events` on the owner; resolves once the owner made them
    /// durable per `durability` and assigned their sequences.
    fn commit(&self, events: Vec<NewEvent>, durability: Durability) -> UpstreamFuture<'_, CommitReceipt>;

    /// Queues `events` for the owner and resolves as soon as they are on
    /// their way (commit scope "local"); a rejection surfaces later through
    /// [`Upstream::take_deferred_error`].
    fn send(&self, events: Vec<NewEvent>, durability: Durability) -> UpstreamFuture<'_, ()>;

    /// The first failure of a commit sent with [`Upstream::send`] since the
    /// last call, if any.
    fn take_deferred_error(&self) -> Option<AteError>;

    /// Resolves once every commit sent with [`Upstream::send`] so far has
    /// been answered.
    fn flush(&self) -> UpstreamFuture<'_, ()>;

    /// Takes `key` under a lease held by `token` unless someone else holds
    /// it; returns the delivery count.
    fn lease(&self, key: PrimaryKey, token: u64, lease: Duration) -> UpstreamFuture<'_, Option<u32>>;

    /// Whether `token` still holds `key`.
    fn lease_holds(&self, key: PrimaryKey, token: u64) -> UpstreamFuture<'_, bool>;

    /// Gives `key` back (`forget`: and drops its delivery count, once the
    /// item is gone); only if `token` holds it. An owner drops a deleted
    /// object's lease as it applies the deletion, so an upstream may answer
    /// a `forget` without asking.
    fn lease_release(&self, key: PrimaryKey, token: u64, forget: bool) -> UpstreamFuture<'_, bool>;

    /// Leases up to `max` of `candidates`, in order, skipping those someone
    /// else holds, all under `token`: the leased keys with their delivery
    /// counts. One request instead of one per key; the default asks key by key.
    fn lease_many(
        &self,
        candidates: Vec<PrimaryKey>,
        token: u64,
        lease: Duration,
        max: usize,
    ) -> UpstreamFuture<'_, Vec<(PrimaryKey, u32)>> {
        Box::pin(async move {
            let mut leased = Vec::new();
            for key in candidates {
                if leased.len() >= max {
                    break;
                }
                if let Some(deliveries) = self.lease(key, token, lease).await? {
                    leased.push((key, deliveries));
                }
            }
            Ok(leased)
        })
    }

    /// [`Upstream::lease_holds`] for many leases at once.
    fn lease_holds_many(&self, leases: Vec<(PrimaryKey, u64)>) -> UpstreamFuture<'_, Vec<bool>> {
        Box::pin(async move {
            let mut held = Vec::with_capacity(leases.len());
            for (key, token) in leases {
                held.push(self.lease_holds(key, token).await?);
            }
            Ok(held)
        })
    }
}

/// Longest wait for an acknowledged commit to reach the replica.
const APPLY_DEADLINE: Duration = Duration::from_secs(60);

/// When a commit through a replica returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CommitScope {
    /// Once the owner made it durable and the replica applied it: a read
    /// after the commit sees it.
    #[default]
    Full,
    /// Once it is queued for the owner. Failures are reported by the next
    /// commit on the chain (or [`Chain::flush`]).
    Local,
}

impl Chain {
    /// Turns this chain into a replica of a chain `upstream` owns: from now
    /// on commits and leases go there, and only [`Chain::ingest`] appends.
    pub fn attach_upstream(&self, upstream: Arc<dyn Upstream>, scope: CommitScope) -> Result<()> {
        self.upstream
            .set((upstream, scope))
            .map_err(|_| AteError::InvalidInput(format!("chain '{}' already follows an upstream", self.key)))
    }

    pub(crate) fn upstream(&self) -> Option<&(Arc<dyn Upstream>, CommitScope)> {
        self.upstream.get()
    }

    /// Whether this chain is a replica (see [`Chain::attach_upstream`]).
    pub fn is_replica(&self) -> bool {
        self.upstream.get().is_some()
    }

    /// A commit on a replica: to the owner, then (full scope) wait until the
    /// replica has applied it, so the caller reads its own write.
    pub(crate) async fn forward(
        &self,
        upstream: &Arc<dyn Upstream>,
        scope: CommitScope,
        events: Vec<NewEvent>,
        durability: Option<Durability>,
    ) -> Result<Option<CommitReceipt>> {
        if let Some(error) = upstream.take_deferred_error() {
            return Err(error);
        }
        let durability = durability.unwrap_or(self.durability);
        if scope == CommitScope::Local {
            upstream.send(events, durability).await?;
            return Ok(None);
        }
        let receipt = upstream.commit(events, durability).await?;
        // Bounded: an owner that acknowledges a sequence it never sends
        // must not hang the committer.
        match tokio::time::timeout(APPLY_DEADLINE, self.wait_applied(receipt.last_sequence)).await {
            Ok(applied) => applied?,
            Err(_) => return Err(AteError::Timeout { timeout_ms: APPLY_DEADLINE.as_millis() as u64 }),
        }
        Ok(Some(receipt))
    }

    /// Waits until this chain's view holds event `sequence`.
    pub async fn wait_applied(&self, sequence: u64) -> Result<()> {
        let mut watch = self.shared.durable_notify.subscribe();
        loop {
            if let Some(error) = self.shared.poisoned() {
                return Err(error);
            }
            if *watch.borrow_and_update() > sequence {
                return Ok(());
            }
            watch.changed().await.map_err(|_| AteError::Closed { chain: self.key.to_string() })?;
        }
    }

    /// On a replica in local scope: waits until every commit sent so far
    /// was answered, and reports the first failure. Elsewhere a no-op.
    pub async fn flush(&self) -> Result<()> {
        let Some((upstream, _)) = self.upstream() else { return Ok(()) };
        upstream.flush().await?;
        match upstream.take_deferred_error() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Marks a replica as unusable (its owner sent something that does not
    /// verify): readers keep what was verified, writes and waits fail.
    pub fn fail_replica(&self, reason: String) {
        self.shared.poison(reason);
        self.shared.durable_notify.send_modify(|_| {});
    }

    /// Appends records the owner sequenced (`records`: stored records back
    /// to back, as the owner sends them, starting at this chain's next
    /// sequence). Only whole commits are taken; returns how many leading
    /// bytes were consumed, so the caller keeps the rest for the next batch.
    /// A commit that does not verify is an error and nothing of it is
    /// applied; the verified commits before it are.
    pub async fn ingest(&self, records: &[u8]) -> Result<usize> {
        if let Some(error) = self.shared.poisoned() {
            return Err(error);
        }
        // Records are decoded in place, which needs the 16-byte alignment
        // they were framed with; a received buffer usually has it already
        // (allocations are 16-aligned), and copying 256 KiB batches was a
        // share of the replica's cost (docs/benchmarks.md, eleventh session).
        let copy;
        let aligned: &[u8] = if (records.as_ptr() as usize) % crate::format::RECORD_ALIGN == 0 {
            records
        } else {
            copy = crate::format::aligned_copy(records);
            &copy
        };
        let mut offset = 0usize;
        let mut waiting = Vec::new();
        let outcome = loop {
            // Room in the writer queue first: waiting must not hold the lock.
            let permit = match Arc::clone(&self.permits).acquire_owned().await {
                Ok(permit) => permit,
                Err(_) => break Err(AteError::Closed { chain: self.key.to_string() }),
            };
            match self.ingest_commit(aligned, offset, permit) {
                Ok(Some((next_offset, receipt))) => {
                    waiting.push(receipt);
                    offset = next_offset;
                }
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            }
        };
        // Verified commits before a bad one are applied either way.
        for receipt in waiting {
            receipt.await.map_err(|_| AteError::Closed { chain: self.key.to_string() })??;
        }
        outcome.map(|()| offset)
    }

    /// Verifies the commit starting at `offset` and hands it to the writer;
    /// `None` if `records` ends before the commit does.
    fn ingest_commit(
        &self,
        records: &[u8],
        offset: usize,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Option<(usize, tokio::sync::oneshot::Receiver<Result<CommitReceipt>>)>> {
        let corrupt = |offset: usize, sequence: u64, reason: String| AteError::Corrupt {
            chain: self.key.to_string(),
            segment: std::path::PathBuf::from("<from upstream>"),
            offset: offset as u64,
            sequence: Some(sequence),
            reason,
        };
        let mut state = self.append.lock();
        let mut pending: Vec<(usize, DecodedRecord<'_>)> = Vec::new();
        let mut cursor = offset;
        let mut next_sequence = state.next_sequence;
        loop {
            if !whole_record_at(records, cursor) {
                // Bounded: a commit may not outgrow the chain's limit while it arrives.
                if records.len() - offset > self.shared.config.max_commit_bytes {
                    return Err(corrupt(cursor, next_sequence, "commit larger than this chain allows".into()));
                }
                return Ok(None);
            }
            let record = match decode_record(records, cursor) {
                Ok(Some(record)) => record,
                // An end marker is how a segment ends, never part of a stream.
                Ok(None) => return Err(corrupt(cursor, next_sequence, "empty record in the stream".into())),
                Err(error) => return Err(corrupt(cursor, next_sequence, error.to_string())),
            };
            if record.sequence() != next_sequence {
                let reason = format!("sent sequence {} where {next_sequence} belongs", record.sequence());
                return Err(corrupt(cursor, next_sequence, reason));
            }
            if record.next_offset - offset > self.shared.config.max_commit_bytes {
                return Err(corrupt(cursor, next_sequence, "commit larger than this chain allows".into()));
            }
            next_sequence += 1;
            let commit_end = record.header.is_commit_end();
            pending.push((cursor, record));
            cursor = record.next_offset;
            if commit_end {
                break;
            }
        }
        // The hash chain: each header names the hash of the one before
        // (hashed side by side; the first break is named).
        let event_hashes = crate::format::event_hashes(pending.iter().map(|(_, record)| record));
        let previous_hashes = std::iter::once(&state.last_hash).chain(&event_hashes);
        if let Some(((at, record), _)) =
            pending.iter().zip(previous_hashes).find(|((_, record), previous)| record.header.prev_hash != **previous)
        {
            return Err(corrupt(*at, record.sequence(), "hash chain broken".into()));
        }
        let last_hash = *event_hashes.last().expect("a commit holds at least one record");
        // Payloads are checked together (hashed side by side); the first
        // mismatch is named.
        let payload_checks = crate::format::verify_payload_hashes(pending.iter().map(|(_, record)| record));
        if let Some(((at, record), Err(error))) = pending.iter().zip(payload_checks).find(|(_, check)| check.is_err()) {
            return Err(corrupt(*at, record.sequence(), error.to_string()));
        }
        let content_hashes =
            EventContent::hashes(pending.iter().map(|(_, record)| EventContent::of_archived(record.header)));
        let changes = crate::verify::check_commit(
            &mut state.trust,
            &self.trust,
            &self.plugins.validators,
            self.key.name(),
            &self.shared.chain_id,
            &pending,
            &content_hashes,
        )
        .map_err(|(index, reason)| corrupt(pending[index].0, pending[index].1.sequence(), reason))?;
        for key in changes.public_keys {
            self.shared.keys.public_keys.insert(key.id(), key);
        }
        for wrap in changes.node_key_wraps {
            self.shared.keys.add_wrap(wrap);
        }
        let last_timestamp_us = pending.iter().map(|(_, record)| record.header.timestamp_us()).max().unwrap_or(0);
        let bytes = crate::format::aligned_copy(&records[offset..cursor]);
        let (reply, receipt) = tokio::sync::oneshot::channel();
        let request = CommitRequest {
            records: bytes,
            receipt: CommitReceipt { first_sequence: state.next_sequence, last_sequence: next_sequence - 1 },
            last_hash,
            // The owner made these durable before sending them; a replica
            // that loses its unsynced tail in a power cut fetches it again
            // (it resumes from what it has). No fsync on this path.
            durability: Durability::Buffered,
            reply,
            _permit: permit,
        };
        self.send_to_writer(request)?;
        state.next_sequence = next_sequence;
        state.last_hash = last_hash;
        state.last_timestamp_us = state.last_timestamp_us.max(last_timestamp_us);
        Ok(Some((cursor, receipt)))
    }
}

/// Whether `bytes` holds a whole record frame and body at `offset` (a batch
/// may end inside one; the rest comes with the next batch).
fn whole_record_at(bytes: &[u8], offset: usize) -> bool {
    let Some(frame) = bytes.get(offset..offset + FRAME_LEN) else { return false };
    let body_len = u32::from_le_bytes(frame[0..4].try_into().expect("4 bytes")) as usize;
    // Padding included: records are appended as they arrive and must keep
    // the segment's alignment.
    bytes.len() - offset >= padded_record_len(body_len)
}
