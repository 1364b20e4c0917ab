//! A queue on a remote chain whose consumer keeps no replica: the owner
//! picks and leases the items and sends their records back with the lease
//! ([`ClientMessage::Take`]), so a consumer receives the items it takes and
//! nothing else. A replica's queue ([`ate::messaging::Queue`] on
//! [`Registry::open`]) receives every event of the chain, other consumers'
//! items and acknowledgements included.
//!
//! The same queue as the engine's: names, encoding, leases, delivery
//! counts and dead letters are [`QueueSpec`]'s, so both kinds of consumer
//! (and producers of either kind) can share one queue. Like a [`Producer`],
//! it trusts the owner it authenticated over TLS rather than verifying
//! signatures itself, and writes what it is given: plaintext items,
//! unsigned commits. Encrypted items need a replica's trust state to open:
//! the server does not lease them to it (a take of only encrypted items
//! fails with [`AteError::NoReadAccess`]), so their delivery counts are
//! untouched for consumers that can read them.
//!
//! [`Registry::open`]: crate::registry::Registry::open
//! [`Producer`]: crate::registry::Producer

use crate::protocol::{ClientMessage, ServerMessage};
use crate::registry::{unexpected, RemoteUpstream};
use ate::chain::Upstream;
use ate::messaging::{ack_each, random_token, Delivery, QueueSpec, TakenItem, MAX_LEASE_CANDIDATES};
use ate::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Instant;

/// A queue named `name` on a remote chain ([`crate::registry::Registry::queue`]).
#[derive(Debug)]
pub struct RemoteQueue {
    upstream: RemoteUpstream,
    spec: QueueSpec,
    durability: Durability,
}

impl RemoteQueue {
    pub(crate) fn new(upstream: RemoteUpstream, spec: QueueSpec) -> Self {
        Self { upstream, spec, durability: AteConfig::default().durability }
    }

    /// Commits pushes and acknowledgements with `durability` (by default
    /// the engine's).
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// The parent whose children are the pending items.
    pub fn items_key(&self) -> PrimaryKey {
        self.spec.items_key()
    }

    /// The parent of the items moved to the dead letters.
    pub fn dead_letter_key(&self) -> PrimaryKey {
        self.spec.dead_letter_key()
    }

    /// Pushes one item (durable when this returns).
    pub async fn push<T: Serialize>(&self, value: T) -> Result<PrimaryKey, AteError> {
        Ok(self.push_many([value]).await?[0])
    }

    /// Pushes several items in one commit.
    pub async fn push_many<T: Serialize>(
        &self,
        values: impl IntoIterator<Item = T>,
    ) -> Result<Vec<PrimaryKey>, AteError> {
        let events = values.into_iter().map(|value| self.spec.push_event(&value)).collect::<Result<Vec<_>, _>>()?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let keys = events.iter().map(|event| event.key).collect();
        self.upstream.commit(events, self.durability).await?;
        Ok(keys)
    }

    /// Takes the oldest available item, or `None` if every item is taken or the queue is empty.
    pub async fn take<T: DeserializeOwned>(&self) -> Result<Option<Delivery<T>>, AteError> {
        Ok(self.take_many(1).await?.pop())
    }

    /// Takes up to `max` available items (at most [`MAX_LEASE_CANDIDATES`]),
    /// oldest first, each under a lease: one round trip. Items delivered
    /// too often, or whose value does not decode as `T`, are moved to the
    /// dead letters instead (one commit for all of them), as the engine's
    /// queue does. The server leases no encrypted item for this consumer:
    /// when only encrypted items are free, the take fails with
    /// [`AteError::NoReadAccess`] naming the first. A record that fails its
    /// checks (a server bug) is reported as `AteError::Remote` if nothing
    /// else could be delivered, else logged; its lease runs out on its own.
    pub async fn take_many<T: DeserializeOwned>(&self, max: usize) -> Result<Vec<Delivery<T>>, AteError> {
        let max = max.min(MAX_LEASE_CANDIDATES);
        if max == 0 {
            return Ok(Vec::new());
        }
        let token = random_token()?;
        let surely_held_until = self.spec.surely_held_from(Instant::now());
        let lease_ms = self.spec.lease().as_millis() as u64;
        let (chain, items) = (self.upstream.chain.clone(), *self.spec.items_key().as_bytes());
        let message = |request| ClientMessage::Take { request, chain, items, token, lease_ms, max: max as u32 };
        let (records, encrypted) = match self.upstream.request(message).await? {
            ServerMessage::Taken { items, encrypted, .. } if items.len() <= max => (items, encrypted),
            other => return Err(unexpected(other)),
        };
        let mut taken = Vec::with_capacity(records.len());
        let mut moves = Vec::new();
        let mut refused = None;
        for item in records {
            match self.spec.taken_item::<T>(&item.record, item.deliveries, token, surely_held_until) {
                Ok(TakenItem::Deliver(delivery)) => taken.push(delivery),
                Ok(TakenItem::DeadLetter { move_commit, .. }) => moves.push(move_commit),
                // The server sent something it should not have (its lease
                // runs out on its own: the key of a damaged record is unknown).
                Err(error) => refused = refused.or(Some(error)),
            }
        }
        if let Err(error) = self.move_to_dead_letters(moves).await {
            self.give_back(&taken).await;
            return Err(error);
        }
        match (refused, encrypted) {
            (Some(error), _) if taken.is_empty() => Err(error),
            (None, Some((key, node_key_id))) if taken.is_empty() => Err(AteError::NoReadAccess {
                key: PrimaryKey::from_bytes(key),
                node_key_id: ate::crypto::KeyId(node_key_id),
            }),
            (Some(error), _) => {
                tracing::warn!(chain = %self.upstream.chain, %error, "a queue item from the server was refused");
                Ok(taken)
            }
            _ => Ok(taken),
        }
    }

    /// Commits dead-letter moves: all in one commit, or each on its own if
    /// one of them conflicts (acknowledged or moved by someone else
    /// meanwhile, which is no error). The owner drops each moved item's
    /// lease once its deletion is durable.
    async fn move_to_dead_letters(&self, moves: Vec<Vec<NewEvent>>) -> Result<(), AteError> {
        if moves.is_empty() {
            return Ok(());
        }
        let together = moves.iter().flatten().cloned().collect();
        match self.upstream.commit(together, self.durability).await {
            Ok(_) => return Ok(()),
            Err(AteError::Conflict { .. }) if moves.len() > 1 => {}
            Err(AteError::Conflict { .. }) => return Ok(()),
            Err(error) => return Err(error),
        }
        for move_commit in moves {
            match self.upstream.commit(move_commit, self.durability).await {
                Ok(_) | Err(AteError::Conflict { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Gives deliveries back after a failed take, as far as the server can
    /// be reached (what it cannot be told about runs out with its lease).
    async fn give_back<T>(&self, deliveries: &[Delivery<T>]) {
        for delivery in deliveries {
            if self.upstream.lease_release(delivery.key, delivery.lease_token(), false).await.is_err() {
                return;
            }
        }
    }

    /// Acknowledges many deliveries in one commit. If any of them was lost
    /// meanwhile, each is acknowledged on its own instead, so the others
    /// still go through; returns how many were acknowledged.
    pub async fn ack_many<T>(&self, deliveries: Vec<Delivery<T>>) -> Result<usize, AteError> {
        // As the engine's queue: leases taken a moment ago are still held;
        // older ones are checked in one request.
        let (mut held, to_check): (Vec<_>, Vec<_>) =
            deliveries.into_iter().partition(|delivery| !delivery.needs_lease_check());
        if !to_check.is_empty() {
            let leases = to_check.iter().map(|delivery| (delivery.key, delivery.lease_token())).collect();
            let holds = self.upstream.lease_holds_many(leases).await?;
            held.extend(to_check.into_iter().zip(holds).filter_map(|(delivery, held)| held.then_some(delivery)));
        }
        if held.is_empty() {
            return Ok(0);
        }
        let events = held.iter().map(|delivery| self.spec.ack_event(delivery)).collect();
        match self.upstream.commit(events, self.durability).await {
            Ok(_) => Ok(held.len()),
            Err(AteError::Conflict { .. }) => ack_each(held, |delivery| self.ack(delivery)).await,
            Err(error) => Err(error),
        }
    }

    /// Acknowledges a delivery: the item is deleted, only if this delivery
    /// still holds it and nobody acknowledged it first.
    pub async fn ack<T>(&self, delivery: Delivery<T>) -> Result<(), AteError> {
        if delivery.needs_lease_check() && !self.upstream.lease_holds(delivery.key, delivery.lease_token()).await? {
            return Err(AteError::LeaseLost { key: delivery.key });
        }
        match self.upstream.commit(vec![self.spec.ack_event(&delivery)], self.durability).await {
            Ok(_) => Ok(()),
            Err(AteError::Conflict { .. }) => Err(AteError::LeaseLost { key: delivery.key }),
            Err(error) => Err(error),
        }
    }

    /// Gives a delivery back for someone else to take.
    pub async fn release<T>(&self, delivery: Delivery<T>) -> Result<(), AteError> {
        if self.upstream.lease_release(delivery.key, delivery.lease_token(), false).await? {
            Ok(())
        } else {
            Err(AteError::LeaseLost { key: delivery.key })
        }
    }
}
