//! io_uring appends: each group is a linked `write → fdatasync` pair, and the
//! writer fills the next group while the previous pair is in flight.

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
    buffer: WriteBuffer,
    file: Arc<File>,
    offset: u64,
    sync: bool,
    write_result: Option<i32>,
    sync_result: Option<i32>,
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
        self.slots.front().is_some_and(|slot| slot.write_result.is_some() && (!slot.sync || slot.sync_result.is_some()))
    }
}

/// The result of one slot, finishing a short write by hand if needed.
fn settle(slot: &Slot) -> io::Result<()> {
    let written = slot.write_result.expect("settled slot has a write result");
    if written < 0 {
        return Err(io::Error::from_raw_os_error(-written));
    }
    let written = written as usize;
    if written < slot.buffer.len() {
        // A short write breaks the link, so the fdatasync was cancelled:
        // finish both synchronously rather than retrying through the ring.
        super::std_write_all_at(&slot.file, &slot.buffer[written..], slot.offset + written as u64)?;
        return if slot.sync { slot.file.sync_data() } else { Ok(()) };
    }
    match slot.sync_result {
        Some(result) if slot.sync && result < 0 => Err(io::Error::from_raw_os_error(-result)),
        _ => Ok(()),
    }
}

impl LogDevice for UringDevice {
    fn max_in_flight(&self) -> usize {
        MAX_IN_FLIGHT
    }

    fn submit(&mut self, file: &Arc<File>, offset: u64, buffer: WriteBuffer, sync: bool) {
        assert!(self.slots.len() < MAX_IN_FLIGHT, "too many submissions in flight");
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
        let end = offset + buffer.len() as u64;
        if self.slots.iter().any(|slot| {
            Arc::ptr_eq(&slot.file, file) && slot.offset < end && offset < slot.offset + slot.buffer.len() as u64
        }) {
            flags |= squeue::Flags::IO_DRAIN;
        }
        write = write.flags(flags);
        let fsync = opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build().user_data((id << 1) | 1);
        let mut slot = Slot { id, buffer, file: Arc::clone(file), offset, sync, write_result: None, sync_result: None };
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
        let slot = self.slots.pop_front().expect("non-empty");
        let result = settle(&slot);
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
