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

/// One committed change, delivered in commit order; `P` holds the payload
/// ([`BusEvent`]: owned, [`BusEventRef`]: lent).
#[derive(Debug)]
pub struct BusEventOf<P> {
    pub sequence: u64,
    pub key: PrimaryKey,
    pub kind: BusEventKind,
    pub parent: Option<(PrimaryKey, CollectionId)>,
    pub type_tag: u64,
    pub timestamp_us: u64,
    /// The plaintext payload (empty for deletions), or why this subscriber
    /// cannot read it (for example `AteError::NoReadAccess`): reported, not dropped.
    pub payload: std::result::Result<P, AteError>,
}

/// A committed change with its payload copied out (`Subscription::next`).
pub type BusEvent = BusEventOf<Vec<u8>>;

/// A committed change lent by [`Subscription::next_with`]: the payload is
/// borrowed from the log when it is stored in plaintext.
pub type BusEventRef<'a> = BusEventOf<std::borrow::Cow<'a, [u8]>>;

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

impl BusEventRef<'_> {
    /// The event as an owned [`BusEvent`] (copies a borrowed payload).
    pub fn into_owned(self) -> BusEvent {
        BusEvent {
            sequence: self.sequence,
            key: self.key,
            kind: self.kind,
            parent: self.parent,
            type_tag: self.type_tag,
            timestamp_us: self.timestamp_us,
            payload: self.payload.map(std::borrow::Cow::into_owned),
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
        self.try_next_with(|event| event.into_owned())
    }

    /// [`Subscription::try_next`] lending the event to `read` instead of
    /// copying it out: a plaintext payload is borrowed straight from the log
    /// (zero-copy), an encrypted one decrypted into a buffer.
    pub fn try_next_with<R>(&mut self, mut read: impl FnMut(BusEventRef<'_>) -> R) -> Result<Option<R>> {
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
                BusEventKind::Data => self.reader.open_payload_borrowed(key, header, event.payload),
                BusEventKind::Deleted => Ok(std::borrow::Cow::Borrowed(&[][..])),
            };
            return Ok(Some(read(BusEventRef {
                sequence: header.sequence(),
                key,
                kind,
                parent,
                type_tag: header.type_tag(),
                timestamp_us: header.timestamp_us(),
                payload,
            })));
        }
    }

    /// [`Subscription::next`] lending the event (see [`Subscription::try_next_with`]).
    pub async fn next_with<R>(&mut self, mut read: impl FnMut(BusEventRef<'_>) -> R) -> Result<R> {
        loop {
            if let Some(result) = self.try_next_with(&mut read)? {
                return Ok(result);
            }
            self.wait_past_cursor().await?;
        }
    }

    /// Waits for the next matching committed event.
    pub async fn next(&mut self) -> Result<BusEvent> {
        loop {
            if let Some(event) = self.try_next()? {
                return Ok(event);
            }
            self.wait_past_cursor().await?;
        }
    }

    /// Nothing new: waits for the durable frontier to pass the cursor.
    async fn wait_past_cursor(&mut self) -> Result<()> {
        let position = self.cursor.next_sequence;
        match self.durable.wait_for(|durable| *durable > position).await {
            Ok(_) => Ok(()),
            Err(_) => Err(AteError::Closed { chain: self.chain.key().to_string() }),
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
