//! The storage seam: every byte the engine writes to disk goes through
//! [`Storage`], so tests can swap in [`FaultyStorage`] and inject torn writes,
//! EIO, ENOSPC and crashes at any byte. Reads go through the mmap of each
//! segment (see `log::segments`), which is outside this seam on purpose: a
//! read fault shows up as bytes that fail their checksum, which tests produce
//! by editing files.

mod faulty;
mod portable;
mod uring;

pub use faulty::{FaultPlan, FaultyStorage};
pub use portable::PortableStorage;
pub use uring::UringStorage;

use rkyv::util::AlignedVec;
use std::fmt;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// File operations the log needs. Implementations must be thread-safe; the
/// log writer calls them from its own thread.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Short name for logs and benchmark labels.
    fn name(&self) -> &'static str;
    /// Creates a new file of `len` bytes, preallocated, read-write.
    fn create_preallocated(&self, path: &Path, len: u64) -> io::Result<File> {
        std_create_preallocated(path, len)
    }
    /// Opens an existing file read-write.
    fn open(&self, path: &Path) -> io::Result<File> {
        std_open(path)
    }
    /// Opens a segment for appends that bypass the page cache (`O_DIRECT`):
    /// every write through it is then whole [`DIRECT_BLOCK`]s, at a block
    /// offset, from block-aligned memory. `None` where the filesystem does
    /// not support it (the log then appends through the page cache).
    fn open_direct(&self, path: &Path) -> io::Result<Option<File>> {
        std_open_direct(path)
    }
    fn write_all_at(&self, file: &File, buffer: &[u8], offset: u64) -> io::Result<()> {
        std_write_all_at(file, buffer, offset)
    }
    /// Writes `parts` one after another from `offset`. This default joins
    /// them into one [`Storage::write_all_at`], so a storage that overrides
    /// only that (fault injection) sees one write per group, as before
    /// groups were written from their commits' own buffers.
    fn write_all_vectored_at(&self, file: &File, parts: &[&[u8]], offset: u64) -> io::Result<()> {
        self.write_all_at(file, &parts.concat(), offset)
    }
    fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }
    /// Makes a directory entry (a new segment) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std_sync_dir(dir)
    }
    /// Atomically replaces `to` with `from` (compaction installs a rewritten segment).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    /// Whether writing zeros ahead of the appends to `segment` pays off
    /// (`log::zero_ahead`): only on filesystems whose preallocated extents
    /// are converted on first write (ext4, XFS). On a copy-on-write
    /// filesystem (btrfs) zeros would turn preallocated extents into plain
    /// ones, so every later append would be copied elsewhere and could meet
    /// ENOSPC; on tmpfs they would only cost memory copies.
    /// Fault-injecting storages say no unless asked, so that zeros do not
    /// spend their budgets.
    fn zero_ahead(&self, segment: &File) -> bool {
        converts_extents_on_first_write(segment)
    }
    /// The device the log writer appends through.
    fn log_device(self: Arc<Self>) -> io::Result<Box<dyn LogDevice>>;
}

/// Block size and alignment of direct appends: the page size, which is a
/// multiple of every logical block size in use (512 B and 4 KiB).
pub const DIRECT_BLOCK: usize = 4096;

/// What the log writer hands a device: aligned for direct appends.
pub type WriteBuffer = AlignedVec<DIRECT_BLOCK>;

/// A finished submission: the buffer of [`LogDevice::submit`] comes back
/// for reuse (`None` after [`LogDevice::submit_in_place`]).
#[derive(Debug)]
pub struct Completion {
    pub buffer: Option<WriteBuffer>,
    pub result: io::Result<()>,
}

/// Pipelined appends: a device may have up to `max_in_flight` write(+sync)
/// operations outstanding and completes them in submission order.
pub trait LogDevice: Send {
    fn max_in_flight(&self) -> usize;
    /// Starts writing `buffer` at `offset` of `file`, followed by an
    /// fdatasync of the file when `sync` is set: a group of direct appends
    /// (whole aligned blocks; buffered groups go to `submit_in_place`).
    /// `alone`: nothing else is in flight or waiting, so nothing can overlap
    /// this submission and the caller will wait for it next (a device may
    /// then just do it).
    fn submit(&mut self, file: &Arc<File>, offset: u64, buffer: WriteBuffer, sync: bool, alone: bool);
    /// Writes `parts` (a group's commits, in order) at `offset` of `file`,
    /// which is appended to through the page cache, before returning: the
    /// commits' own buffers, so the group is not first copied into one.
    /// The fdatasync (when `sync` is set) may still be in flight; the
    /// completion says how both went. `alone` as for [`LogDevice::submit`].
    fn submit_in_place(&mut self, file: &Arc<File>, offset: u64, parts: &[&[u8]], sync: bool, alone: bool);
    /// Waits for the oldest outstanding submission. Panics if there is none
    /// (a caller bug, not an I/O condition).
    fn wait_oldest(&mut self) -> Completion;
}

/// The device for storages without a native asynchronous path: each
/// submission runs to completion before `submit` returns.
#[derive(Debug)]
pub(crate) struct SynchronousDevice<S: Storage + ?Sized> {
    storage: Arc<S>,
    done: std::collections::VecDeque<Completion>,
}

impl<S: Storage + ?Sized> SynchronousDevice<S> {
    pub(crate) fn new(storage: Arc<S>) -> Self {
        Self { storage, done: std::collections::VecDeque::with_capacity(1) }
    }

    /// Completes a submission: the fdatasync follows a write that succeeded.
    fn synced_after(&mut self, file: &File, written: io::Result<()>, sync: bool, buffer: Option<WriteBuffer>) {
        let result = written.and_then(|()| if sync { self.storage.sync_data(file) } else { Ok(()) });
        self.done.push_back(Completion { buffer, result });
    }
}

impl<S: Storage + ?Sized> LogDevice for SynchronousDevice<S> {
    fn max_in_flight(&self) -> usize {
        1
    }
    fn submit(&mut self, file: &Arc<File>, offset: u64, buffer: WriteBuffer, sync: bool, _alone: bool) {
        let written = self.storage.write_all_at(file, &buffer, offset);
        self.synced_after(file, written, sync, Some(buffer));
    }
    fn submit_in_place(&mut self, file: &Arc<File>, offset: u64, parts: &[&[u8]], sync: bool, _alone: bool) {
        let written = self.storage.write_all_vectored_at(file, parts, offset);
        self.synced_after(file, written, sync, None);
    }
    fn wait_oldest(&mut self) -> Completion {
        self.done.pop_front().expect("wait_oldest called with nothing in flight")
    }
}

/// ext4 (and ext2/3, which share its magic) or XFS, by `statfs`.
fn converts_extents_on_first_write(file: &File) -> bool {
    const EXT4_SUPER_MAGIC: u64 = 0xEF53;
    const XFS_SUPER_MAGIC: u64 = 0x5846_5342;
    rustix::fs::fstatfs(file).is_ok_and(|stat| matches!(stat.f_type as u64, EXT4_SUPER_MAGIC | XFS_SUPER_MAGIC))
}

pub(crate) fn std_create_preallocated(path: &Path, len: u64) -> io::Result<File> {
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
    preallocate(&file, len)?;
    Ok(file)
}

fn preallocate(file: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: plain syscall on a file descriptor we own; no memory is passed.
    let status = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if status == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    // Filesystems without fallocate (tmpfs on old kernels, some FUSE) still
    // work with a sparse file; ENOSPC and friends must surface.
    if error.raw_os_error() == Some(libc::EOPNOTSUPP) {
        file.set_len(len as u64)
    } else {
        Err(error)
    }
}

pub(crate) fn std_sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(crate) fn std_write_all_at(file: &File, buffer: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(buffer, offset)
}

/// Most slices one `pwritev` takes (Linux's `IOV_MAX`).
const MAX_SLICES_PER_WRITE: usize = 1024;

/// `pwritev` until every part is written: short writes continue where they
/// stopped, and more parts than one call takes go in several calls.
pub(crate) fn std_write_all_vectored_at(file: &File, parts: &[&[u8]], mut offset: u64) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> =
        parts.iter().filter(|part| !part.is_empty()).map(|part| io::IoSlice::new(part)).collect();
    let mut remaining: &mut [io::IoSlice<'_>] = &mut slices;
    while !remaining.is_empty() {
        let window = remaining.len().min(MAX_SLICES_PER_WRITE);
        match rustix::io::pwritev(file, &remaining[..window], offset) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(written) => {
                offset += written as u64;
                io::IoSlice::advance_slices(&mut remaining, written);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(())
}

pub(crate) fn std_open(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new().read(true).write(true).open(path)
}

pub(crate) fn std_open_direct(path: &Path) -> io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path) {
        Ok(file) if direct_alignment_fits(&file) => Ok(Some(file)),
        Ok(_) => Ok(None),
        // The filesystem has no direct I/O (EINVAL is how open says so).
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Whether whole [`DIRECT_BLOCK`]s from [`DIRECT_BLOCK`]-aligned memory
/// satisfy the file's direct I/O alignment, as `statx` reports it. A file
/// that opens with `O_DIRECT` but needs larger blocks (or reports none)
/// would fail its first append; it is appended to through the page cache
/// instead. Kernels that do not report it are taken at their word.
fn direct_alignment_fits(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: statx is plain old data; all zeroes is a valid value.
    let mut status: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd, an empty NUL-terminated path with AT_EMPTY_PATH
    // (the fd itself), and a pointer to a statx the kernel fills.
    let result =
        unsafe { libc::statx(file.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH, libc::STATX_DIOALIGN, &mut status) };
    if result != 0 || status.stx_mask & libc::STATX_DIOALIGN == 0 {
        return true;
    }
    let fits = |align: u32| align != 0 && DIRECT_BLOCK % align as usize == 0;
    fits(status.stx_dio_mem_align) && fits(status.stx_dio_offset_align)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// Parts of 0 to 16 bytes, more of them than one `pwritev` takes.
    fn parts_and_joined() -> (Vec<Vec<u8>>, Vec<u8>) {
        let parts: Vec<Vec<u8>> =
            (0..3 * MAX_SLICES_PER_WRITE + 5).map(|index| vec![index as u8; index % 17]).collect();
        let joined = parts.concat();
        (parts, joined)
    }

    #[test]
    fn a_vectored_write_of_more_parts_than_one_call_takes_lands_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = std_create_preallocated(&dir.path().join("segment"), 65536).unwrap();
        let (parts, joined) = parts_and_joined();
        let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        PortableStorage.write_all_vectored_at(&file, &slices, 100).unwrap();
        let mut landed = vec![0u8; joined.len() + 1];
        file.read_exact_at(&mut landed, 100).unwrap();
        assert_eq!(&landed[..joined.len()], &joined[..]);
        assert_eq!(landed[joined.len()], 0, "nothing written past the parts");
    }

    #[test]
    fn a_fault_injecting_storage_sees_a_vectored_write_as_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let file = std_create_preallocated(&dir.path().join("segment"), 65536).unwrap();
        let (parts, joined) = parts_and_joined();
        let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let budget = joined.len() as u64 / 2;
        let storage = FaultyStorage::new(FaultPlan { write_budget_bytes: Some(budget), ..FaultPlan::default() });
        let error = storage.write_all_vectored_at(&file, &slices, 0).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EIO));
        assert_eq!(storage.bytes_written(), budget, "torn at the budget, like a single write");
        let mut landed = vec![0u8; joined.len()];
        file.read_exact_at(&mut landed, 0).unwrap();
        assert_eq!(&landed[..budget as usize], &joined[..budget as usize]);
        assert!(landed[budget as usize..].iter().all(|&byte| byte == 0), "nothing past the tear");
    }
}
