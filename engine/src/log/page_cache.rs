//! Page-cache advice for the log, run on a helper thread of the writer's.
//!
//! Two kinds, both advisory (a failure changes nothing a reader sees):
//! dropping durable pages far behind the appends (`drop_behind`), and
//! populating the cache ahead of them with huge pages (`populate_ahead`).
//! Each call takes milliseconds for megabytes; on the writer's thread that
//! was felt by every commit waiting on it (D1's open-loop p99,
//! docs/benchmarks.md, sixteenth session).

use super::ChainShared;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What to do with a range of one segment's pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Advice {
    Drop(u32, Range<u64>),
    Populate(u32, Range<u64>),
}

/// Requests queued at most; more are skipped (they are advice, and the
/// thread only falls behind if the kernel is slower than the appends).
const QUEUED_REQUESTS: usize = 64;

/// The helper thread and its bounded queue; dropping this skips what is
/// still queued (advice, and a chain closing should not wait for
/// megabytes of it) and joins the thread.
#[derive(Debug)]
pub(crate) struct AdviceThread {
    /// `None` once the thread could not be started.
    sender: Option<crossbeam_channel::Sender<Advice>>,
    closing: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AdviceThread {
    pub(crate) fn start(chain: &Arc<ChainShared>) -> Self {
        let (sender, receiver) = crossbeam_channel::bounded::<Advice>(QUEUED_REQUESTS);
        let name = super::helper_thread_name("cache", &chain.name);
        let shared = Arc::clone(chain);
        let closing = Arc::new(AtomicBool::new(false));
        let closed = Arc::clone(&closing);
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            for advice in receiver {
                if closed.load(Ordering::Relaxed) {
                    continue;
                }
                match advice {
                    Advice::Drop(index, range) => shared.segments.get(index).map(|segment| segment.drop_cached(range)),
                    Advice::Populate(index, range) => shared.segments.get(index).map(|segment| segment.populate(range)),
                };
            }
        });
        match thread {
            Ok(thread) => Self { sender: Some(sender), closing, thread: Some(thread) },
            Err(error) => {
                tracing::warn!(chain = %chain.name, %error, "cannot start the log's page-cache thread; no advice is given");
                Self { sender: None, closing, thread: None }
            }
        }
    }

    pub(crate) fn send(&self, advice: Advice) {
        if let Some(sender) = &self.sender {
            let _ = sender.try_send(advice);
        }
    }
}

impl Drop for AdviceThread {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::Relaxed);
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
