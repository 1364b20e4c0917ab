//! `pwrite` + `fdatasync`: works everywhere, one group at a time.

use super::{LogDevice, Storage, SynchronousDevice};
use std::fs::File;
use std::io;
use std::sync::Arc;

#[derive(Debug, Default, Clone, Copy)]
pub struct PortableStorage;

impl Storage for PortableStorage {
    fn name(&self) -> &'static str {
        "pwrite"
    }
    fn write_all_vectored_at(&self, file: &File, parts: &[&[u8]], offset: u64) -> io::Result<()> {
        super::std_write_all_vectored_at(file, parts, offset)
    }
    fn log_device(self: Arc<Self>) -> io::Result<Box<dyn LogDevice>> {
        Ok(Box::new(SynchronousDevice::new(self)))
    }
}
