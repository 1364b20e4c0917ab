//! `pwrite` + `fdatasync`: works everywhere, one group at a time.

use super::{LogDevice, Storage, SynchronousDevice};
use std::io;
use std::sync::Arc;

#[derive(Debug, Default, Clone, Copy)]
pub struct PortableStorage;

impl Storage for PortableStorage {
    fn name(&self) -> &'static str {
        "pwrite"
    }
    fn log_device(self: Arc<Self>) -> io::Result<Box<dyn LogDevice>> {
        Ok(Box::new(SynchronousDevice::new(self)))
    }
}
