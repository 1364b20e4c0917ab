//! The segment log of one chain: segment files read through mmap, recovery on
//! open, and the writer thread that appends with group commit.

mod recovery;
mod segments;
mod writer;

pub(crate) use recovery::{list_segments, recover};
pub use segments::EventRef;
pub(crate) use segments::{Segment, SegmentTable};
pub use writer::CommitReceipt;
pub(crate) use writer::{spawn_writer, CommitRequest};

use crate::config::AteConfig;
use crate::format::{ArchivedEventHeader, EventKind};
use crate::storage::Storage;
use crate::view::{EventLocation, View, ViewChange};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// State of a chain shared by its handle, its readers and its writer thread.
#[derive(Debug)]
pub(crate) struct ChainShared {
    pub name: String,
    pub dir: PathBuf,
    pub chain_id: [u8; 32],
    pub storage: Arc<dyn Storage>,
    pub config: AteConfig,
    pub view: View,
    pub segments: SegmentTable,
    pub keys: crate::chain::KeyIndex,
    /// Sequence after the last event that is durable and in the view.
    pub durable_sequence: std::sync::atomic::AtomicU64,
    /// The same, for subscribers to wait on (a watch holds only the latest
    /// value: a slow subscriber is never queued behind, it reads the log).
    pub durable_notify: tokio::sync::watch::Sender<u64>,
    /// (last sequence, location of the first record) of every durable
    /// commit, ascending, 16 bytes a commit: finds the commit an event
    /// belongs to, for verified reads.
    pub commit_ends: parking_lot::RwLock<Vec<(u64, EventLocation)>>,
    pub metrics: crate::metrics::LogMetrics,
    poison: OnceLock<String>,
}

impl ChainShared {
    pub fn new(name: String, dir: PathBuf, storage: Arc<dyn Storage>, config: AteConfig) -> Self {
        let chain_id = crate::key::ChainKey::from(name.as_str()).chain_id();
        Self {
            name,
            dir,
            chain_id,
            storage,
            config,
            view: View::new(),
            segments: SegmentTable::new(),
            keys: Default::default(),
            durable_sequence: Default::default(),
            durable_notify: tokio::sync::watch::Sender::new(0),
            commit_ends: Default::default(),
            metrics: Default::default(),
            poison: OnceLock::new(),
        }
    }

    /// Marks the chain unusable for writes. The first reason sticks.
    pub fn poison(&self, reason: String) {
        if self.poison.set(reason.clone()).is_ok() {
            tracing::error!(chain = %self.name, %reason, "chain poisoned; writes are refused until it is reopened");
        }
    }

    pub fn poisoned(&self) -> Option<crate::AteError> {
        self.poison.get().map(|reason| crate::AteError::Poisoned { chain: self.name.clone(), reason: reason.clone() })
    }
}

/// How one durable event changes the view. Shared by recovery and the
/// writer so both build the same view from the same bytes.
pub(crate) fn view_change_for(header: &ArchivedEventHeader, location: EventLocation) -> Option<ViewChange> {
    let key = u128::from_le_bytes(header.key);
    match header.kind()? {
        EventKind::Data => Some(ViewChange::Put {
            key,
            location,
            sequence: header.sequence(),
            parent: header.parent().map(|parent| (u128::from_le_bytes(parent), header.collection())),
        }),
        EventKind::Tombstone => Some(ViewChange::Delete { key }),
        // Trust events are indexed by the chain-of-trust layer, not the object view.
        _ => None,
    }
}
