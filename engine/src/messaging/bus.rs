//! Subscriptions: a cursor over the log plus a watch on the durable
//! frontier. Subscribers read committed, validated events at their own pace
//! straight from the segments, so a slow subscriber is never dropped and
//! never holds memory on the producer side.

use super::SYSTEM_TYPE_TAG;
use crate::chain::{Chain, LogCursor};
use crate::dio::Dio;
use crate::format::EventKind;
use crate::key::{CollectionId, PrimaryKey};
use crate::session::AteSession;
use crate::{AteError, Result};
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Beginning,
    /// Only events committed after the subscription is made.
    Now,
    Sequence(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusEventKind {
    /// A new version of an object.
    Data,
    /// The object was deleted.
    Deleted,
}

/// One committed change, delivered in commit order.
#[derive(Debug)]
pub struct BusEvent {
    pub sequence: u64,
    pub key: PrimaryKey,
    pub kind: BusEventKind,
    pub parent: Option<(PrimaryKey, CollectionId)>,
    pub type_tag: u64,
    pub timestamp_us: u64,
    /// The plaintext payload (empty for deletions), or why this subscriber
    /// cannot read it (for example `AteError::NoReadAccess`): reported, not dropped.
    pub payload: std::result::Result<Vec<u8>, AteError>,
}

impl BusEvent {
    /// The payload as a value of `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        match &self.payload {
            Ok(bytes) => postcard::from_bytes(bytes)
                .map_err(|error| AteError::Deserialization { key: self.key, reason: error.to_string() }),
            Err(error) => Err(AteError::NoReadAccess {
                key: self.key,
                node_key_id: match error {
                    AteError::NoReadAccess { node_key_id, .. } => *node_key_id,
                    _ => crate::crypto::KeyId([0; 32]),
                },
            }),
        }
    }
}

/// A live subscription. Dropping it releases everything it holds.
#[derive(Debug)]
pub struct Subscription {
    chain: Arc<Chain>,
    /// Decrypts with the subscriber's keys.
    reader: Dio,
    cursor: LogCursor,
    collection: Option<(PrimaryKey, CollectionId)>,
    durable: tokio::sync::watch::Receiver<u64>,
}

impl Subscription {
    pub(crate) fn new(
        chain: &Arc<Chain>,
        session: &AteSession,
        start: StartAt,
        collection: Option<(PrimaryKey, CollectionId)>,
    ) -> Result<Self> {
        let durable = chain.durable_watch();
        let from = match start {
            StartAt::Beginning => 0,
            StartAt::Now => chain.durable_sequence(),
            StartAt::Sequence(sequence) => sequence,
        };
        let cursor = chain.cursor_at(from)?;
        Ok(Self {
            chain: Arc::clone(chain),
            reader: Dio::new(Arc::clone(chain), session.clone()),
            cursor,
            collection,
            durable,
        })
    }

    /// Sequence of the next event this subscription will look at.
    pub fn position(&self) -> u64 {
        self.cursor.next_sequence
    }

    /// The next matching event already committed, without waiting.
    pub fn try_next(&mut self) -> Result<Option<BusEvent>> {
        loop {
            // Disjoint field borrows: the event borrows `chain`, decryption uses `reader`.
            let Some(event) = self.chain.read_at(&mut self.cursor)? else { return Ok(None) };
            let header = event.header;
            let kind = match header.kind() {
                Some(EventKind::Data) => BusEventKind::Data,
                Some(EventKind::Tombstone) => BusEventKind::Deleted,
                _ => continue,
            };
            if header.type_tag() & SYSTEM_TYPE_TAG != 0 {
                continue;
            }
            let parent = header.parent().map(|p| (PrimaryKey::from_bytes(p), CollectionId(header.collection())));
            if self.collection.is_some() && parent != self.collection {
                continue;
            }
            let key = PrimaryKey::from_bytes(header.key);
            let payload = match kind {
                BusEventKind::Data if event.compacted => Err(AteError::Compacted { sequence: header.sequence() }),
                BusEventKind::Data => self.reader.open_payload(key, header, event.payload),
                BusEventKind::Deleted => Ok(Vec::new()),
            };
            return Ok(Some(BusEvent {
                sequence: header.sequence(),
                key,
                kind,
                parent,
                type_tag: header.type_tag(),
                timestamp_us: header.timestamp_us(),
                payload,
            }));
        }
    }

    /// Waits for the next matching committed event.
    pub async fn next(&mut self) -> Result<BusEvent> {
        loop {
            if let Some(event) = self.try_next()? {
                return Ok(event);
            }
            // Nothing new: wait for the durable frontier to pass our cursor.
            let position = self.cursor.next_sequence;
            let waited = self.durable.wait_for(|durable| *durable > position).await;
            if waited.is_err() {
                return Err(AteError::Closed { chain: self.chain.key().to_string() });
            }
        }
    }
}

impl Chain {
    /// Subscribes to every data change of the chain.
    pub fn subscribe(self: &Arc<Self>, session: &AteSession, start: StartAt) -> Result<Subscription> {
        Subscription::new(self, session, start, None)
    }

    /// Subscribes to the children of `parent` in `collection`.
    pub fn subscribe_collection(
        self: &Arc<Self>,
        session: &AteSession,
        parent: &PrimaryKey,
        collection: CollectionId,
        start: StartAt,
    ) -> Result<Subscription> {
        Subscription::new(self, session, start, Some((*parent, collection)))
    }
}
