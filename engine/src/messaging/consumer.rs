//! Named consumers whose position is committed into the chain itself, so a
//! consumer restarted after a crash resumes after its last committed event
//! (at-least-once; `process` makes "handle, then commit" one step).

use super::{BusEvent, StartAt, Subscription, SYSTEM_TYPE_TAG};
use crate::chain::{Chain, Expect};
use crate::dio::Dio;
use crate::key::{CollectionId, PrimaryKey};
use crate::session::AteSession;
use crate::{AteError, Result};
use std::future::Future;
use std::sync::Arc;

/// Type tag of consumer offset objects (never delivered on the bus).
const CONSUMER_OFFSET_TAG: u64 = SYSTEM_TYPE_TAG | 1;

/// A durable, named reader of a chain or of one collection.
#[derive(Debug)]
pub struct Consumer {
    subscription: Subscription,
    offsets: Dio,
    offset_key: PrimaryKey,
    committed: u64,
}

impl Consumer {
    /// Opens consumer `name`, resuming after its last committed position.
    /// Two live consumers with one name fence each other: the second to
    /// commit gets `AteError::Conflict`.
    pub async fn open(
        chain: &Arc<Chain>,
        session: &AteSession,
        name: &str,
        collection: Option<(PrimaryKey, CollectionId)>,
    ) -> Result<Self> {
        let offset_key = offset_key(chain, name);
        let mut offsets = chain.dio(session).await;
        let committed = load_offset(&mut offsets, &offset_key).await?;
        let subscription = Subscription::new(chain, session, StartAt::Sequence(committed), collection)?;
        Ok(Self { subscription, offsets, offset_key, committed })
    }

    /// Sequence after the last committed event.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The next event after the committed position (and after any event
    /// already returned by this handle).
    pub async fn next(&mut self) -> Result<BusEvent> {
        self.subscription.next().await
    }

    /// Records that every event up to and including `sequence` is done.
    pub async fn commit(&mut self, sequence: u64) -> Result<()> {
        let offset = sequence + 1;
        if offset <= self.committed {
            // Nothing new to record; still commit any effects staged in `dio()`.
            return if self.offsets.has_uncommitted() { self.offsets.commit().await } else { Ok(()) };
        }
        let expect = match self.offsets.expectation(&self.offset_key) {
            Expect::Any => Expect::Absent,
            known => known,
        };
        self.offsets.store_tagged(self.offset_key, None, expect, CONSUMER_OFFSET_TAG, offset)?;
        if let Err(error) = self.offsets.commit().await {
            self.offsets.cancel();
            return Err(error);
        }
        self.committed = offset;
        Ok(())
    }

    /// The transaction the next [`Consumer::commit`] writes the offset with.
    /// Stage the effects of handling an event here and they commit together
    /// with the offset, atomically: handling becomes idempotent (either the
    /// effects and the new position are both durable, or neither is).
    pub fn dio(&mut self) -> &mut Dio {
        &mut self.offsets
    }

    /// Takes the next event, runs `handler` on it, then commits it. If the
    /// handler fails nothing is committed and the error is returned; the
    /// event comes again after a restart (at-least-once), and events at or
    /// below the committed position are never handed out again.
    pub async fn process<F, Fut>(&mut self, handler: F) -> Result<u64>
    where
        F: FnOnce(BusEvent) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let event = self.next().await?;
        let sequence = event.sequence;
        handler(event).await?;
        self.commit(sequence).await?;
        Ok(sequence)
    }
}

/// Where consumer `name` of `chain` keeps its position.
fn offset_key(chain: &Chain, name: &str) -> PrimaryKey {
    PrimaryKey::from_name(&format!("ate.consumer/{}/{name}", chain.key().name()))
}

async fn load_offset(dio: &mut Dio, key: &PrimaryKey) -> Result<u64> {
    match dio.load::<u64>(key).await {
        Ok(offset) => Ok(*offset),
        Err(AteError::NotFound { .. }) => Ok(0),
        Err(error) => Err(error),
    }
}

/// The committed position of consumer `name` (0 if it never committed):
/// for tools and remote clients that track offsets without a [`Consumer`].
pub async fn consumer_offset(chain: &Arc<Chain>, name: &str) -> Result<u64> {
    let mut dio = chain.dio(&AteSession::default()).await;
    load_offset(&mut dio, &offset_key(chain, name)).await
}

/// Sets the committed position of consumer `name` (an operator's reset or
/// a remote client's commit).
pub async fn set_consumer_offset(chain: &Arc<Chain>, name: &str, offset: u64) -> Result<()> {
    let mut dio = chain.dio(&AteSession::default()).await;
    dio.store_tagged(offset_key(chain, name), None, Expect::Any, CONSUMER_OFFSET_TAG, offset)?;
    dio.commit().await
}

impl Chain {
    /// Opens a named consumer of the whole chain (see [`Consumer::open`]).
    pub async fn consumer(self: &Arc<Self>, session: &AteSession, name: &str) -> Result<Consumer> {
        Consumer::open(self, session, name, None).await
    }
}
