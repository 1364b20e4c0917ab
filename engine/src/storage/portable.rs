//! `pwrite` + `fdatasync`: works everywhere, one group at a time.

use super::{LogDevice, Storage, SynchronousDevice};
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Default, Clone, Copy)]
pub struct PortableStorage;

impl Storage for PortableStorage {
    fn name(&self) -> &'static str {
        "pwrite"
    }
    fn create_preallocated(&self, path: &Path, len: u64) -> io::Result<File> {
        super::std_create_preallocated(path, len)
    }
    fn open(&self, path: &Path) -> io::Result<File> {
        super::std_open(path)
    }
    fn write_all_at(&self, file: &File, buffer: &[u8], offset: u64) -> io::Result<()> {
        super::std_write_all_at(file, buffer, offset)
    }
    fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        super::std_sync_dir(dir)
    }
    fn log_device(self: Arc<Self>) -> io::Result<Box<dyn LogDevice>> {
        Ok(Box::new(SynchronousDevice::new(self)))
    }
}
