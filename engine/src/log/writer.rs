//! The log writer: one thread per chain that owns the active segment and the
//! storage device. Committers hand it encoded commits over a bounded channel;
//! it coalesces queued commits into one write, issues one fdatasync per
//! group, fills the next group while that sync is in flight, and applies
//! each group to the view only once it is durable, then acknowledges.

use super::drop_behind::DropBehind;
use super::page_cache::AdviceThread;
use super::populate_ahead::PopulateAhead;
use super::recovery::{create_segment, prepare_segment_file, start_prepared_segment};
use super::zero_ahead::ZeroAhead;
use super::{view_change_for, ChainShared};
use crate::config::Durability;
use crate::format::{header_at, EventHash};
use crate::storage::{LogDevice, WriteBuffer, DIRECT_BLOCK};
use crate::view::EventLocation;
use crate::Result;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use rkyv::util::AlignedVec;
use std::collections::VecDeque;
use std::fs::File;
use std::sync::Arc;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

/// Sequences a durable commit was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitReceipt {
    pub first_sequence: u64,
    pub last_sequence: u64,
}

/// One commit, encoded and ready to append.
#[derive(Debug)]
pub(crate) struct CommitRequest {
    pub records: AlignedVec<16>,
    pub receipt: CommitReceipt,
    pub last_hash: EventHash,
    pub durability: Durability,
    pub reply: oneshot::Sender<Result<CommitReceipt>>,
    /// Released when the writer is done with the commit: bounds queued bytes.
    pub _permit: OwnedSemaphorePermit,
}

struct ActiveSegment {
    index: u32,
    file: Arc<File>,
    write_offset: u64,
    len: u64,
    /// Set when appends bypass the page cache.
    direct: Option<DirectAppends>,
}

impl ActiveSegment {
    /// Segment `index` of the table, appended to from `write_offset`.
    fn open(chain: &ChainShared, index: u32, write_offset: u64) -> Result<Self> {
        let segment = chain.segments.get(index).expect("the active segment is in the table");
        Ok(Self {
            index,
            file: Arc::clone(&segment.file),
            write_offset,
            len: segment.bytes().len() as u64,
            direct: DirectAppends::open(chain, segment, write_offset)?,
        })
    }
}

/// Appends through `O_DIRECT` write whole blocks: each write starts with
/// the bytes already in its first block (kept here, so nothing is read
/// back) and ends with zeros up to a block boundary, which the next write
/// overwrites. Rewritten leading bytes are identical to what is on disk,
/// so a write torn anywhere leaves acknowledged records as they were.
struct DirectAppends {
    file: Arc<File>,
    /// The segment's bytes from the start of the block holding the write
    /// offset up to the write offset.
    partial_block: Vec<u8>,
}

impl DirectAppends {
    /// `None` when the chain appends through the page cache, the segment
    /// length is not whole blocks, or the filesystem has no direct I/O.
    fn open(chain: &ChainShared, segment: &super::segments::Segment, write_offset: u64) -> Result<Option<Self>> {
        let bytes = segment.bytes();
        if !chain.config.direct_io || bytes.len() % DIRECT_BLOCK != 0 {
            return Ok(None);
        }
        let opened = chain
            .storage
            .open_direct(&segment.path)
            .map_err(|e| crate::AteError::io(format!("opening {} for direct appends", segment.path.display()), e))?;
        let write_offset = write_offset as usize;
        Ok(opened.map(|file| Self {
            file: Arc::new(file),
            partial_block: bytes[write_offset - write_offset % DIRECT_BLOCK..write_offset].to_vec(),
        }))
    }
}

struct Group {
    /// Each commit with the segment offset its records were written at.
    commits: Vec<(u64, CommitRequest)>,
    /// Bytes of the commits' records.
    records_len: usize,
    segment: u32,
    submitted: std::time::Instant,
    synced: bool,
}

pub(crate) struct Writer {
    chain: Arc<ChainShared>,
    device: Box<dyn LogDevice>,
    active: ActiveSegment,
    in_flight: VecDeque<Group>,
    /// Group buffers of direct appends, kept for reuse.
    spare: Vec<WriteBuffer>,
    /// Bytes written since the last fdatasync was requested. Buffered
    /// commits skip the sync, but never more than one write's worth in a
    /// row: that keeps what a power loss can tear inside the window that
    /// recovery knows how to cut (docs/design.md, "Recovery").
    unsynced_bytes: u64,
    /// Bytes of the last group submitted: zeros are written ahead only
    /// while the groups are small (see `idle`).
    last_group_bytes: usize,
    /// Sequence and hash after the last commit handed to the device.
    next_sequence: u64,
    last_hash: EventHash,
    /// Keeps the active segment zeroed ahead of the appends (dropped last:
    /// it stops and joins its thread).
    zero_ahead: Option<ZeroAhead>,
    /// Inline writers (chains in memory): the next segment's file, being
    /// preallocated by a helper thread once the active segment is half
    /// full. Preallocating zeroes a whole segment (64-78 ms for 256 MiB on
    /// the benchmark machine); at the roll, under the append lock, that was
    /// a stall of everything waiting on the chain (docs/benchmarks.md).
    prepared: Option<std::thread::JoinHandle<std::io::Result<(File, std::path::PathBuf)>>>,
    prepare_ahead: bool,
    /// Drops durable pages behind the appends from the page cache.
    drop_behind: Option<DropBehind>,
    /// Populates the page cache with huge pages ahead of the appends.
    populate_ahead: Option<PopulateAhead>,
    /// Runs the two above; `None` when both are off. Dropped after them.
    advice: Option<AdviceThread>,
}

/// How commits reach a chain's writer.
pub(crate) enum WriterHandle {
    /// A thread of its own, fed over a bounded channel: it groups what is
    /// queued into one write and one fdatasync.
    Thread { sender: Option<Sender<CommitRequest>>, thread: Option<std::thread::JoinHandle<()>> },
    /// Written by the committer itself, under the chain's append lock (which
    /// keeps commits in sequence order). For chains in memory: a write there
    /// is a memcpy, cheaper than waking a thread to do it and being woken back.
    Inline(Box<parking_lot::Mutex<Writer>>),
}

impl std::fmt::Debug for WriterHandle {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            WriterHandle::Thread { .. } => "WriterHandle::Thread",
            WriterHandle::Inline(_) => "WriterHandle::Inline",
        })
    }
}

impl WriterHandle {
    /// Starts the writer of a recovered chain: a thread with a queue of
    /// `queue_commits`, or (`inline`) none at all.
    pub(crate) fn start(
        chain: Arc<ChainShared>,
        device: Box<dyn LogDevice>,
        queue_commits: usize,
        inline: bool,
        next_sequence: u64,
        last_hash: EventHash,
        write_offset: u64,
    ) -> std::io::Result<Self> {
        // Recovery leaves the last segment of the table active.
        let active =
            ActiveSegment::open(&chain, chain.segments.len() - 1, write_offset).map_err(std::io::Error::other)?;
        // Inline writers serve chains in memory, which have no extents to zero.
        let zero_ahead =
            if inline { None } else { ZeroAhead::start(&chain, active.index, write_offset, active.direct.is_some())? };
        let name = super::helper_thread_name("log", &chain.name);
        // Chains in memory have no other copy of their pages, and the
        // kernel drops cached pages of ranges written with O_DIRECT.
        let config = &chain.config;
        let drop_behind = if inline { None } else { DropBehind::new(config.drop_behind_bytes, active.index) };
        let populate_ahead = if inline || active.direct.is_some() {
            None
        } else {
            PopulateAhead::new(config.populate_ahead_bytes, active.index)
        };
        let advice = (drop_behind.is_some() || populate_ahead.is_some()).then(|| AdviceThread::start(&chain));
        let mut writer = Writer {
            chain,
            device,
            active,
            in_flight: VecDeque::new(),
            spare: Vec::new(),
            unsynced_bytes: 0,
            // No zeros before the first small group: a chain that is only
            // opened (atedb opens many) writes none.
            last_group_bytes: usize::MAX,
            next_sequence,
            last_hash,
            zero_ahead,
            prepared: None,
            prepare_ahead: inline,
            drop_behind,
            populate_ahead,
            advice,
        };
        if inline {
            return Ok(WriterHandle::Inline(Box::new(parking_lot::Mutex::new(writer))));
        }
        let (sender, receiver) = crossbeam_channel::bounded(queue_commits);
        let thread = std::thread::Builder::new().name(name).spawn(move || writer.run(receiver))?;
        Ok(WriterHandle::Thread { sender: Some(sender), thread: Some(thread) })
    }

    /// Hands a commit over; it comes back if the writer is gone. The
    /// caller holds a permit, so a thread's queue has room, and holds the
    /// chain's append lock, so commits arrive in sequence order.
    pub(crate) fn send(&self, request: CommitRequest) -> std::result::Result<(), CommitRequest> {
        match self {
            WriterHandle::Thread { sender: Some(sender), .. } => {
                sender.try_send(request).map_err(|error| match error {
                    crossbeam_channel::TrySendError::Full(request)
                    | crossbeam_channel::TrySendError::Disconnected(request) => request,
                })
            }
            WriterHandle::Thread { sender: None, .. } => Err(request),
            WriterHandle::Inline(writer) => {
                writer.lock().write_now(request);
                Ok(())
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // The preparing thread writes into the chain's directory, which a
        // chain in memory removes once it is gone.
        if let Some(thread) = self.prepared.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        match self {
            WriterHandle::Thread { sender, thread } => {
                // Closing the channel lets the thread finish what is queued and exit.
                drop(sender.take());
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
            WriterHandle::Inline(writer) => writer.get_mut().drain(),
        }
    }
}

impl Writer {
    fn run(&mut self, receiver: Receiver<CommitRequest>) {
        let mut carried: Option<CommitRequest> = None;
        loop {
            let first = match carried.take() {
                Some(request) => request,
                None if self.in_flight.is_empty() => match receiver.try_recv() {
                    Ok(request) => request,
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => {
                        self.idle();
                        match receiver.recv() {
                            Ok(request) => request,
                            Err(_) => break,
                        }
                    }
                },
                None => match receiver.try_recv() {
                    Ok(request) => request,
                    // Nothing new: finish the oldest group, then look again.
                    Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => {
                        self.complete_oldest();
                        continue;
                    }
                },
            };
            let Some(first) = self.admit(first) else { continue };
            // Gather what is queued behind it, up to one write's worth.
            let max_bytes = self.chain.config.max_write_bytes;
            let mut bytes = first.records.len();
            let mut closes = first.durability == Durability::Sync;
            let mut commits = vec![first];
            while !closes && bytes < max_bytes {
                match receiver.try_recv() {
                    Ok(next) if self.fits_after(bytes, &next) && bytes + next.records.len() <= max_bytes => {
                        bytes += next.records.len();
                        closes = next.durability == Durability::Sync;
                        commits.push(next);
                    }
                    Ok(next) => {
                        carried = Some(next);
                        break;
                    }
                    Err(_) => break,
                }
            }
            if self.in_flight.len() >= self.device.max_in_flight() {
                self.complete_oldest();
            }
            // Completing the oldest group may just have poisoned the chain:
            // nothing is written after a failed group (its hole would sit
            // between acknowledged data and these bytes).
            if self.chain.poisoned().is_some() {
                for request in commits {
                    let _ = request.reply.send(Err(self.chain.poisoned().expect("poisoned above")));
                }
                continue;
            }
            let alone = self.in_flight.is_empty() && carried.is_none() && receiver.is_empty();
            self.submit(commits, alone);
        }
        self.drain();
    }

    /// Checks a group's first commit: refused (and answered) once the chain
    /// is poisoned; the segment is rolled first if the commit does not fit.
    fn admit(&mut self, request: CommitRequest) -> Option<CommitRequest> {
        if let Some(error) = self.chain.poisoned() {
            let _ = request.reply.send(Err(error));
            return None;
        }
        if !self.fits(&request) {
            self.drain();
            if let Err(error) = self.roll() {
                self.chain.poison(error.to_string());
                let _ = request.reply.send(Err(self.chain.poisoned().expect("just poisoned")));
                return None;
            }
        }
        Some(request)
    }

    /// Writes one commit and completes it before returning (an inline
    /// writer: the caller is the committer, and nothing else is queued).
    fn write_now(&mut self, request: CommitRequest) {
        let Some(request) = self.admit(request) else { return };
        self.submit(vec![request], true);
        self.drain();
        if self.prepare_ahead && self.prepared.is_none() && self.active.write_offset > self.active.len / 2 {
            let chain = Arc::clone(&self.chain);
            let name = super::helper_thread_name("next", &chain.name);
            // Without the thread, the roll makes the file itself.
            self.prepared = std::thread::Builder::new().name(name).spawn(move || prepare_segment_file(&chain)).ok();
        }
    }

    /// Nothing is queued or in flight. Zeros are written ahead now only
    /// if the last group was small: idle moments between large groups
    /// (bulk ingest, where each group is megabytes) are brief, and a chunk
    /// of zeros started in one would delay the next group's write, which
    /// would overtake the zeros at once anyway.
    fn idle(&self) {
        if let Some(zero_ahead) = &self.zero_ahead {
            if self.last_group_bytes as u64 <= super::zero_ahead::SMALL_GROUP_BYTES && self.chain.poisoned().is_none() {
                zero_ahead.idle();
            }
        }
    }

    fn fits(&self, request: &CommitRequest) -> bool {
        self.fits_after(0, request)
    }

    fn fits_after(&self, queued: usize, request: &CommitRequest) -> bool {
        self.active.write_offset + (queued + request.records.len()) as u64 <= self.active.len
    }

    fn submit(&mut self, commits: Vec<CommitRequest>, alone: bool) {
        let group_start = self.active.write_offset;
        let mut placed = Vec::with_capacity(commits.len());
        let mut sync = false;
        let mut records_len = 0;
        for request in commits {
            sync |= request.durability.needs_sync();
            let len = request.records.len();
            placed.push((group_start + records_len as u64, request));
            records_len += len;
        }
        self.last_group_bytes = records_len;
        let last = &placed.last().expect("a group holds at least one commit").1;
        self.next_sequence = last.receipt.last_sequence + 1;
        self.last_hash = last.last_hash;
        self.unsynced_bytes += records_len as u64;
        if self.unsynced_bytes >= self.chain.config.max_write_bytes as u64 {
            sync = true;
        }
        if sync {
            self.unsynced_bytes = 0;
        }
        self.active.write_offset += records_len as u64;
        // Direct appends: one buffer of whole blocks, starting with the
        // bytes already in the first one.
        let spare = &mut self.spare;
        let direct_write = self.active.direct.as_mut().map(|direct| {
            let mut buffer = spare.pop().unwrap_or_default();
            buffer.clear();
            buffer.reserve(direct.partial_block.len() + records_len + DIRECT_BLOCK);
            buffer.extend_from_slice(&direct.partial_block);
            let offset = group_start - direct.partial_block.len() as u64;
            for (_, request) in &placed {
                buffer.extend_from_slice(&request.records);
            }
            let end = buffer.len();
            direct.partial_block.clear();
            direct.partial_block.extend_from_slice(&buffer[end - end % DIRECT_BLOCK..end]);
            buffer.resize(end.next_multiple_of(DIRECT_BLOCK), 0);
            (Arc::clone(&direct.file), offset, buffer)
        });
        if let Some((_, offset, buffer)) = &direct_write {
            debug_assert!(offset % DIRECT_BLOCK as u64 == 0 && buffer.len() % DIRECT_BLOCK == 0);
            debug_assert!(offset + buffer.len() as u64 <= self.active.len, "whole segments are whole blocks");
        }
        if let Some(zero_ahead) = &self.zero_ahead {
            let written_end = match &direct_write {
                Some((_, offset, buffer)) => offset + buffer.len() as u64,
                None => self.active.write_offset,
            };
            zero_ahead.claim(written_end);
        }
        if let (Some(populate_ahead), Some(advice)) = (&mut self.populate_ahead, &self.advice) {
            populate_ahead.claimed(advice, self.active.index, self.active.write_offset, self.active.len);
        }
        // Before `submit`: a group written in place is done when it returns.
        let submitted = std::time::Instant::now();
        match direct_write {
            Some((file, offset, buffer)) => self.device.submit(&file, offset, buffer, sync, alone),
            None => {
                // Through the page cache: one vectored write from the
                // commits' own buffers, which the group keeps until it is
                // published (no copy into a group buffer first).
                let parts: Vec<&[u8]> = placed.iter().map(|(_, request)| &request.records[..]).collect();
                self.device.submit_in_place(&self.active.file, group_start, &parts, sync, alone);
            }
        }
        self.in_flight.push_back(Group {
            commits: placed,
            records_len,
            segment: self.active.index,
            submitted,
            synced: sync,
        });
    }

    fn complete_oldest(&mut self) {
        let group = self.in_flight.pop_front().expect("complete_oldest with nothing in flight");
        let completion = self.device.wait_oldest();
        let metrics = &self.chain.metrics;
        if group.synced {
            metrics.sync_latency.record(group.submitted.elapsed());
        }
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        metrics.bytes_appended.fetch_add(group.records_len as u64, relaxed);
        let events: u64 =
            group.commits.iter().map(|(_, r)| r.receipt.last_sequence - r.receipt.first_sequence + 1).sum();
        metrics.events_appended.fetch_add(events, relaxed);
        if let Err(error) = completion.result {
            self.chain.poison(format!("appending to segment {} failed: {error}", group.segment));
            if let Some((_, first)) = group.commits.first() {
                let sequence = first.receipt.first_sequence;
                if let Err(marking) = super::mark_unacknowledged_from(&self.chain.dir, sequence) {
                    tracing::warn!(chain = %self.chain.name, sequence, error = %marking,
                        "could not record where unacknowledged data starts; recovery may ask for a manual check");
                }
            }
        }
        if self.chain.poisoned().is_some() {
            // Nothing of a failed group is acknowledged or made visible; what
            // reached the disk may reappear after reopen, like any commit
            // whose outcome the committer could not learn.
            for (_, request) in group.commits {
                let _ = request.reply.send(Err(self.chain.poisoned().expect("poisoned above")));
            }
        } else {
            self.publish(&group);
            if let (Some(drop_behind), Some(advice), Some((group_start, _))) =
                (&mut self.drop_behind, &self.advice, group.commits.first())
            {
                let durable_end = group_start + group.records_len as u64;
                drop_behind.durable(advice, &self.chain.segments, group.segment, durable_end);
            }
            for (_, request) in group.commits {
                let _ = request.reply.send(Ok(request.receipt));
                self.chain.recycle_record_buffer(request.records);
            }
        }
        if let Some(mut buffer) = completion.buffer {
            buffer.clear();
            if self.spare.len() < 2 {
                self.spare.push(buffer);
            }
        }
    }

    /// Applies a durable group to the view, reading back the headers from
    /// the commits' buffers (the same bytes the mmap now holds).
    fn publish(&self, group: &Group) {
        let changes = group.commits.iter().flat_map(|(commit_offset, request)| {
            let bytes = &request.records[..];
            let mut cursor = 0usize;
            std::iter::from_fn(move || {
                while cursor < bytes.len() {
                    let (header, next) = header_at(bytes, cursor).expect("a record this process encoded parses");
                    let location = EventLocation::new(group.segment, (commit_offset + cursor as u64) as u32);
                    cursor = next;
                    if let Some(change) = view_change_for(header, location) {
                        return Some(change);
                    }
                }
                None
            })
        });
        // The commit index first: whoever finds an object in the view may
        // verify it at once, and verification looks its commit up here.
        self.chain.commit_ends.write().extend(group.commits.iter().map(|(offset, request)| {
            (request.receipt.last_sequence, EventLocation::new(group.segment, *offset as u32))
        }));
        self.chain.view.apply_all(changes);
        if let Some((_, last)) = group.commits.last() {
            let durable = last.receipt.last_sequence + 1;
            self.chain.durable_sequence.store(durable, std::sync::atomic::Ordering::Release);
            self.chain.durable_notify.send_replace(durable);
        }
    }

    fn drain(&mut self) {
        while !self.in_flight.is_empty() {
            self.complete_oldest();
        }
    }

    /// Seals the active segment and starts the next one. The caller has
    /// drained the device; Buffered groups may still be unsynced, and a
    /// sealed segment must be whole, so it is synced first.
    fn roll(&mut self) -> Result<()> {
        if self.unsynced_bytes > 0 {
            self.chain.storage.sync_data(&self.active.file).map_err(|e| {
                crate::AteError::io(format!("syncing segment {} before sealing it", self.active.index), e)
            })?;
            self.unsynced_bytes = 0;
        }
        let segment = match self.prepared.take().map(std::thread::JoinHandle::join) {
            Some(Ok(Ok(prepared))) => {
                start_prepared_segment(&self.chain, prepared, self.next_sequence, self.last_hash)?
            }
            // Not prepared, or preparing failed: made here, where a failure
            // (no space, say) is reported.
            _ => create_segment(&self.chain, self.next_sequence, self.last_hash)?,
        };
        let index = self.chain.segments.push(segment);
        tracing::debug!(chain = %self.chain.name, index, first_sequence = self.next_sequence, "rolled to a new segment");
        self.active = ActiveSegment::open(&self.chain, index, crate::format::SEGMENT_HEADER_LEN as u64)?;
        if let Some(zero_ahead) = &self.zero_ahead {
            zero_ahead.rolled(&self.chain, index, self.active.write_offset, self.active.direct.is_some());
        }
        Ok(())
    }
}
