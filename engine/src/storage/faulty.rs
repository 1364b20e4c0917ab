//! A storage that fails on purpose, for crash and fault tests.

use super::{LogDevice, PortableStorage, Storage, SynchronousDevice};
use parking_lot::Mutex;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// What to break. Counters run over the life of the storage.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    /// Bytes that may still be written. The write that crosses the budget is
    /// cut at the budget (a torn write: its prefix reaches the file) and
    /// fails, as do all later writes: the process "crashed" there.
    pub write_budget_bytes: Option<u64>,
    /// errno for failing writes (`libc::EIO` when 0; `libc::ENOSPC` for disk full).
    pub write_errno: i32,
    /// fdatasync calls that succeed before every later one fails with EIO.
    pub syncs_before_failure: Option<u64>,
    /// When set, a write of more than this many bytes writes only a prefix
    /// and fails (a short write that the caller must not mistake for success).
    pub short_write_at_bytes: Option<usize>,
    /// Renames fail with EIO (and do nothing).
    pub fail_renames: bool,
    /// Directory syncs fail with EIO.
    pub fail_dir_syncs: bool,
    /// The log writes zeros ahead of its appends through this storage
    /// (off by default: its writes and syncs count against the budgets).
    pub zero_ahead: bool,
}

#[derive(Debug, Default)]
struct FaultState {
    plan: FaultPlan,
    bytes_written: u64,
    syncs: u64,
    crashed: bool,
}

/// Wraps [`PortableStorage`] and applies a [`FaultPlan`].
#[derive(Debug, Default)]
pub struct FaultyStorage {
    inner: PortableStorage,
    state: Mutex<FaultState>,
}

impl FaultyStorage {
    pub fn new(plan: FaultPlan) -> Arc<Self> {
        Arc::new(Self { inner: PortableStorage, state: Mutex::new(FaultState { plan, ..Default::default() }) })
    }
    /// Replaces the plan (counters keep running).
    pub fn set_plan(&self, plan: FaultPlan) {
        let mut state = self.state.lock();
        state.plan = plan;
        state.crashed = false;
    }
    pub fn bytes_written(&self) -> u64 {
        self.state.lock().bytes_written
    }
    fn injected(errno: i32) -> io::Error {
        io::Error::from_raw_os_error(if errno == 0 { libc::EIO } else { errno })
    }
}

impl Storage for FaultyStorage {
    fn name(&self) -> &'static str {
        "faulty"
    }
    fn create_preallocated(&self, path: &Path, len: u64) -> io::Result<File> {
        let state = self.state.lock();
        if state.crashed {
            return Err(Self::injected(state.plan.write_errno));
        }
        self.inner.create_preallocated(path, len)
    }
    fn open(&self, path: &Path) -> io::Result<File> {
        self.inner.open(path)
    }
    /// A plain file: the writer still appends whole aligned blocks (so
    /// faults hit that path), but a torn write may end mid-block, which
    /// `O_DIRECT` would refuse.
    fn open_direct(&self, path: &Path) -> io::Result<Option<File>> {
        self.inner.open(path).map(Some)
    }
    fn write_all_at(&self, file: &File, buffer: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        if state.crashed {
            return Err(Self::injected(state.plan.write_errno));
        }
        let mut allowed = buffer.len();
        let mut fail = false;
        if let Some(budget) = state.plan.write_budget_bytes {
            let left = budget.saturating_sub(state.bytes_written);
            if (allowed as u64) > left {
                allowed = left as usize;
                fail = true;
                state.crashed = true;
            }
        }
        if let Some(short) = state.plan.short_write_at_bytes {
            if allowed > short {
                allowed = short;
                fail = true;
            }
        }
        self.inner.write_all_at(file, &buffer[..allowed], offset)?;
        state.bytes_written += allowed as u64;
        if fail {
            Err(Self::injected(state.plan.write_errno))
        } else {
            Ok(())
        }
    }
    fn sync_data(&self, file: &File) -> io::Result<()> {
        let mut state = self.state.lock();
        if state.crashed {
            return Err(Self::injected(0));
        }
        if let Some(limit) = state.plan.syncs_before_failure {
            if state.syncs >= limit {
                return Err(Self::injected(libc::EIO));
            }
        }
        state.syncs += 1;
        self.inner.sync_data(file)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.state.lock().plan.fail_dir_syncs {
            return Err(Self::injected(libc::EIO));
        }
        self.inner.sync_dir(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if self.state.lock().plan.fail_renames {
            return Err(Self::injected(libc::EIO));
        }
        self.inner.rename(from, to)
    }
    fn zero_ahead(&self, _segment: &File) -> bool {
        self.state.lock().plan.zero_ahead
    }
    fn log_device(self: Arc<Self>) -> io::Result<Box<dyn LogDevice>> {
        Ok(Box::new(SynchronousDevice::new(self)))
    }
}
