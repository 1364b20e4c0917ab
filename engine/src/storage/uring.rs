//! io_uring appends: the writer fills the next group while the previous
//! group's fdatasync is in flight. A direct (`O_DIRECT`) group
//! ([`LogDevice::submit`]) goes to the ring as a linked `write → fdatasync`
//! pair. A buffered group is written in place
//! ([`LogDevice::submit_in_place`]: a copy into the page cache, which ext4
//! would otherwise hand to a kernel worker thread), one `pwritev` from its
//! commits' own buffers, and only its fdatasync goes to the ring. A group
//! with nothing to overlap (the ring idle, no commit waiting) is written and
//! synced in place.

use super::{Completion, LogDevice, Storage, WriteBuffer};
use io_uring::{opcode, squeue, types, IoUring};
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

/// File set-up goes through std (it is rare); appends go through the ring.
#[derive(Debug, Default, Clone, Copy)]
pub struct UringStorage;

impl Storage for UringStorage {
    fn name(&self) -> &'static str {
        "io_uring"
    }
    fn log_device(self: Arc<Self>) -> io::Result<Box<dyn LogDevice>> {
        Ok(Box::new(UringDevice::new()?))
    }
}

/// Submissions in flight at once. Two is enough to overlap one group's
/// fdatasync with the next group's write; more only adds unsynced bytes
/// that a crash can tear.
const MAX_IN_FLIGHT: usize = 2;

struct Slot {
    id: u64,
    /// The bytes of a write through the ring (`None` once written in place
    /// from borrowed parts).
    buffer: Option<WriteBuffer>,
    /// Bytes written from `offset`.
    len: usize,
    file: Arc<File>,
    offset: u64,
    sync: bool,
    write_result: Option<i32>,
    /// Written whole by `pwrite` before the fdatasync went to the ring.
    written_in_place: bool,
    sync_result: Option<i32>,
    /// The whole outcome of a submission written and synced in place.
    done_in_place: Option<io::Result<()>>,
}

impl Slot {
    /// A submission whose outcome is not known yet.
    fn new(id: u64, buffer: Option<WriteBuffer>, len: usize, file: &Arc<File>, offset: u64, sync: bool) -> Self {
        Self {
            id,
            buffer,
            len,
            file: Arc::clone(file),
            offset,
            sync,
            write_result: None,
            written_in_place: false,
            sync_result: None,
            done_in_place: None,
        }
    }
}

struct UringDevice {
    ring: IoUring,
    slots: VecDeque<Slot>,
    next_id: u64,
}

impl UringDevice {
    fn new() -> io::Result<Self> {
        Ok(Self { ring: IoUring::new(8)?, slots: VecDeque::with_capacity(MAX_IN_FLIGHT), next_id: 0 })
    }

    fn reap(&mut self) {
        for entry in self.ring.completion() {
            let id = entry.user_data() >> 1;
            let is_sync = entry.user_data() & 1 == 1;
            if let Some(slot) = self.slots.iter_mut().find(|slot| slot.id == id) {
                if is_sync {
                    slot.sync_result = Some(entry.result());
                } else {
                    slot.write_result = Some(entry.result());
                }
            }
        }
    }

    fn oldest_done(&self) -> bool {
        self.slots.front().is_some_and(|slot| {
            slot.done_in_place.is_some()
                || ((slot.written_in_place || slot.write_result.is_some())
                    && (!slot.sync || slot.sync_result.is_some()))
        })
    }
}

/// The result of one slot, finishing a short write by hand if needed.
/// `overlapped` says a later write in flight covers some of the same bytes
/// (a direct append's shared block).
fn settle(slot: &Slot, overlapped: bool) -> io::Result<()> {
    if slot.written_in_place {
        return match slot.sync_result {
            Some(result) if result < 0 => Err(io::Error::from_raw_os_error(-result)),
            _ => Ok(()),
        };
    }
    let written = slot.write_result.expect("settled slot has a write result");
    if written < 0 {
        return Err(io::Error::from_raw_os_error(-written));
    }
    let written = written as usize;
    if written < slot.len && overlapped {
        // Finishing it now would write this slot's older copy of the shared
        // block over the later write's records, which may have landed.
        return Err(io::Error::other(format!(
            "short write ({written} of {} bytes) while a later write to the same blocks was in flight",
            slot.len
        )));
    }
    if written < slot.len {
        // A short write breaks the link, so the fdatasync was cancelled:
        // finish both synchronously rather than retrying through the ring.
        let buffer = slot.buffer.as_ref().expect("a write through the ring owns its buffer");
        super::std_write_all_at(&slot.file, &buffer[written..], slot.offset + written as u64)?;
        return if slot.sync { slot.file.sync_data() } else { Ok(()) };
    }
    match slot.sync_result {
        Some(result) if slot.sync && result < 0 => Err(io::Error::from_raw_os_error(-result)),
        _ => Ok(()),
    }
}

/// The ring entry of submission `id`'s fdatasync (its user data: `id`, odd).
fn datasync_entry(fd: types::Fd, id: u64) -> squeue::Entry {
    opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build().user_data((id << 1) | 1)
}

/// Whether `slot` writes any of the `len` bytes at `offset` of `file`.
fn overlaps(slot: &Slot, file: &Arc<File>, offset: u64, len: usize) -> bool {
    Arc::ptr_eq(&slot.file, file) && slot.offset < offset + len as u64 && offset < slot.offset + slot.len as u64
}

impl UringDevice {
    /// Writes `parts` here, in order. A buffered write is a copy into the
    /// page cache: through the ring, ext4 hands it to a kernel worker (a
    /// wake-up on the other core) that would only do the same copy. Idle
    /// (nothing to overlap, and the writer waits for this next), the
    /// fdatasync is done here too, for the same reason: unpipelined durable
    /// puts (D3) +9-14%. Otherwise it goes to the ring, which waits for the
    /// disk while the writer goes on.
    fn write_in_place(&mut self, file: &Arc<File>, offset: u64, parts: &[&[u8]], sync: bool, idle: bool) -> Slot {
        let id = self.next_id;
        self.next_id += 1;
        let len = parts.iter().map(|part| part.len()).sum();
        let written = super::std_write_all_vectored_at(file, parts, offset);
        if written.is_err() || !sync || idle {
            let result = written.and_then(|()| if sync { file.sync_data() } else { Ok(()) });
            return Slot { done_in_place: Some(result), ..Slot::new(id, None, len, file, offset, sync) };
        }
        let fsync = datasync_entry(types::Fd(file.as_raw_fd()), id);
        let mut slot = Slot { written_in_place: true, ..Slot::new(id, None, len, file, offset, sync) };
        // SAFETY: the file is owned by `slot`, which stays in `self.slots`
        // until the completion is reaped (wait_oldest, Drop), so the kernel
        // never sees a closed fd.
        let pushed = unsafe { self.ring.submission().push(&fsync).is_ok() };
        if !(pushed && self.ring.submit().is_ok()) {
            slot.sync_result = Some(-libc::EIO);
        }
        slot
    }
}

impl LogDevice for UringDevice {
    fn max_in_flight(&self) -> usize {
        MAX_IN_FLIGHT
    }

    fn submit(&mut self, file: &Arc<File>, offset: u64, buffer: WriteBuffer, sync: bool, alone: bool) {
        assert!(self.slots.len() < MAX_IN_FLIGHT, "too many submissions in flight");
        // Only direct groups come here (buffered ones go to
        // `submit_in_place`); one with nothing to overlap is done here too.
        let idle = alone && self.slots.is_empty();
        if idle {
            let slot = self.write_in_place(file, offset, &[&buffer], sync, idle);
            self.slots.push_back(Slot { buffer: Some(buffer), ..slot });
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let fd = types::Fd(file.as_raw_fd());
        let length = u32::try_from(buffer.len()).expect("write larger than 4 GiB");
        let mut write = opcode::Write::new(fd, buffer.as_ptr(), length).offset(offset).build().user_data(id << 1);
        let mut flags = squeue::Flags::empty();
        if sync {
            flags |= squeue::Flags::IO_LINK;
        }
        // The ring does not order writes. Direct appends rewrite the block
        // the previous write ended in, so a write overlapping one still in
        // flight waits for everything before it: otherwise the older write
        // could land last and zero the newer records in that block.
        if self.slots.iter().any(|slot| overlaps(slot, file, offset, buffer.len())) {
            flags |= squeue::Flags::IO_DRAIN;
        }
        write = write.flags(flags);
        let fsync = datasync_entry(fd, id);
        let len = buffer.len();
        let mut slot = Slot::new(id, Some(buffer), len, file, offset, sync);
        // SAFETY: the buffer and the file are owned by `slot`, which stays in
        // `self.slots` until both completions are reaped (wait_oldest, Drop),
        // so the kernel never sees a dangling pointer or a closed fd. The
        // heap bytes of an AlignedVec do not move when the slot moves.
        let pushed = unsafe {
            let mut queue = self.ring.submission();
            queue.push(&write).is_ok() && (!sync || queue.push(&fsync).is_ok())
        };
        let submitted = pushed && self.ring.submit().is_ok();
        if !submitted {
            // The queue has room for 8 entries and we use at most 4, so this
            // is an unexpected ring failure: report it as this write's error.
            slot.write_result = Some(-libc::EIO);
            slot.sync_result = Some(-libc::EIO);
        }
        self.slots.push_back(slot);
    }

    fn submit_in_place(&mut self, file: &Arc<File>, offset: u64, parts: &[&[u8]], sync: bool, alone: bool) {
        assert!(self.slots.len() < MAX_IN_FLIGHT, "too many submissions in flight");
        let idle = alone && self.slots.is_empty();
        let slot = self.write_in_place(file, offset, parts, sync, idle);
        self.slots.push_back(slot);
    }

    fn wait_oldest(&mut self) -> Completion {
        assert!(!self.slots.is_empty(), "wait_oldest called with nothing in flight");
        while !self.oldest_done() {
            if let Err(error) = self.ring.submit_and_wait(1) {
                if error.kind() != io::ErrorKind::Interrupted {
                    let slot = self.slots.front_mut().expect("non-empty");
                    slot.write_result.get_or_insert(-error.raw_os_error().unwrap_or(libc::EIO));
                    slot.sync_result.get_or_insert(-libc::EIO);
                }
            }
            self.reap();
        }
        let mut slot = self.slots.pop_front().expect("non-empty");
        if let Some(result) = slot.done_in_place.take() {
            return Completion { buffer: slot.buffer, result };
        }
        let overlapped = self.slots.iter().any(|later| overlaps(later, &slot.file, slot.offset, slot.len));
        let result = settle(&slot, overlapped);
        Completion { buffer: slot.buffer, result }
    }
}

impl Drop for UringDevice {
    fn drop(&mut self) {
        // Buffers must outlive the kernel's use of them.
        while !self.slots.is_empty() {
            let _ = self.wait_oldest();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether appends to `file` bypass the page cache (`O_DIRECT`).
    fn appends_direct(file: &File) -> bool {
        rustix::fs::fcntl_getfl(file).is_ok_and(|flags| flags.contains(rustix::fs::OFlags::DIRECT))
    }

    fn short_slot(file: &Arc<File>, written: usize) -> Slot {
        let mut buffer = WriteBuffer::new();
        buffer.extend_from_slice(&[7u8; 8192]);
        Slot { write_result: Some(written as i32), ..Slot::new(0, Some(buffer), 8192, file, 0, false) }
    }

    #[test]
    fn a_short_write_is_finished_unless_a_later_write_shares_its_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(super::super::std_create_preallocated(&dir.path().join("segment"), 16384).unwrap());
        // Nothing else in flight over these bytes: the rest (the kernel
        // "wrote" the first 4096) is written by hand.
        settle(&short_slot(&file, 4096), false).unwrap();
        let mut rest = vec![0u8; 4096];
        std::os::unix::fs::FileExt::read_exact_at(&*file, &mut rest, 4096).unwrap();
        assert!(rest.iter().all(|&byte| byte == 7));
        // A later write covers the same block: finishing would overwrite it.
        let error = settle(&short_slot(&file, 4096), true).unwrap_err();
        assert!(error.to_string().contains("short write"), "{error}");
    }

    #[test]
    fn a_submission_alone_is_done_in_place_and_reports_errors_like_the_ring() {
        let Ok(mut device) = UringDevice::new() else {
            eprintln!("SKIPPED: no io_uring here");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let file = Arc::new(super::super::std_create_preallocated(&path, 16384).unwrap());
        let mut buffer = WriteBuffer::new();
        buffer.extend_from_slice(&[9u8; 4096]);
        // Alone (done in place), then overlapped through the ring: both land, in order.
        device.submit(&file, 0, buffer.clone(), true, true);
        assert!(device.oldest_done(), "done before submit returned");
        let completion = device.wait_oldest();
        completion.result.unwrap();
        device.submit(&file, 4096, completion.buffer.expect("submitted with a buffer"), true, false);
        device.wait_oldest().result.unwrap();
        let mut written = vec![0u8; 8192];
        std::os::unix::fs::FileExt::read_exact_at(&*file, &mut written, 0).unwrap();
        assert!(written.iter().all(|&byte| byte == 9));
        // A write that fails (a read-only descriptor) is this submission's error.
        let read_only = Arc::new(std::fs::File::open(&path).unwrap());
        device.submit(&read_only, 0, buffer, true, true);
        let error = device.wait_oldest().result.unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EBADF), "{error}");
    }

    #[test]
    fn a_buffered_group_is_written_from_its_commits_before_submit_returns_and_synced_through_the_ring() {
        let Ok(mut device) = UringDevice::new() else {
            eprintln!("SKIPPED: no io_uring here");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(super::super::std_create_preallocated(&dir.path().join("segment"), 16384).unwrap());
        assert!(!appends_direct(&file));
        let commits = [vec![1u8; 100], vec![2u8; 3000], vec![3u8; 50]];
        let parts: Vec<&[u8]> = commits.iter().map(Vec::as_slice).collect();
        let mut offset = 10;
        for _ in 0..2 {
            // Not alone: written here, synced through the ring.
            device.submit_in_place(&file, offset, &parts, true, false);
            let mut landed = vec![0u8; 3150];
            std::os::unix::fs::FileExt::read_exact_at(&*file, &mut landed, offset).unwrap();
            assert_eq!(landed, commits.concat(), "written in place, in order, before submit returned");
            let slot = device.slots.back().unwrap();
            assert!(slot.written_in_place && slot.done_in_place.is_none(), "the fdatasync is the ring's");
            assert_eq!(slot.len, 3150);
            offset += 3150;
        }
        for _ in 0..2 {
            let completion = device.wait_oldest();
            completion.result.unwrap();
            assert!(completion.buffer.is_none(), "no buffer of the device's to give back");
        }
        // Without a sync nothing goes to the ring at all.
        device.submit_in_place(&file, offset, &parts, false, false);
        assert!(device.oldest_done());
        device.wait_oldest().result.unwrap();
        // Alone: written and synced here.
        device.submit_in_place(&file, offset + 3150, &parts, true, true);
        assert!(device.oldest_done(), "done before submit returned");
        device.wait_oldest().result.unwrap();
    }

    #[test]
    fn a_direct_group_goes_to_the_ring_as_a_linked_write_and_sync() {
        let Ok(mut device) = UringDevice::new() else {
            eprintln!("SKIPPED: no io_uring here");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        drop(super::super::std_create_preallocated(&path, 16384).unwrap());
        let Ok(Some(file)) = super::super::std_open_direct(&path) else {
            eprintln!("SKIPPED: no O_DIRECT on this file system");
            return;
        };
        let file = Arc::new(file);
        assert!(appends_direct(&file));
        let mut buffer = WriteBuffer::new();
        buffer.extend_from_slice(&[6u8; 4096]);
        device.submit(&file, 0, buffer, true, false);
        assert!(!device.slots.back().unwrap().written_in_place);
        device.wait_oldest().result.unwrap();
        let mut landed = vec![0u8; 4096];
        std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(&path).unwrap(), &mut landed, 0).unwrap();
        assert!(landed.iter().all(|&byte| byte == 6));
    }

    #[test]
    fn overlap_is_by_file_and_byte_range() {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(super::super::std_create_preallocated(&dir.path().join("a"), 16384).unwrap());
        let other = Arc::new(super::super::std_create_preallocated(&dir.path().join("b"), 16384).unwrap());
        let slot = short_slot(&file, 0); // bytes 0..8192
        assert!(overlaps(&slot, &file, 4096, 4096));
        assert!(!overlaps(&slot, &file, 8192, 4096), "adjacent blocks do not overlap");
        assert!(!overlaps(&slot, &other, 0, 4096), "another file");
    }
}
