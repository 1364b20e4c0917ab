//! A work queue on a collection: producers push children; competing
//! consumers take an item under a lease, then acknowledge it (the item is
//! tombstoned by the acknowledgement's own commit, guarded by the item's
//! version, so no item is acknowledged twice) or release it. An expired
//! lease makes the item available again, so nothing is lost when a
//! consumer dies; an item delivered too often moves to a dead-letter
//! collection.

use crate::chain::{Chain, Expect, NewEvent};
use crate::key::{CollectionId, PrimaryKey};
use crate::session::AteSession;
use crate::{AteError, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// How long a taken item stays reserved for its consumer.
    pub lease: Duration,
    /// Deliveries after which an item goes to the dead-letter collection.
    pub max_deliveries: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self { lease: Duration::from_secs(30), max_deliveries: 5 }
    }
}

/// A lease on one item. Only the holder's token can release or acknowledge it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lease {
    token: u64,
    until: Instant,
    deliveries: u32,
}

/// Leases of a chain's queues. In memory: a restarted process starts with
/// every item available, which is at-least-once and loses nothing.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    table: parking_lot::Mutex<LeaseTable>,
}

#[derive(Debug, Default)]
struct LeaseTable {
    /// Item key to its lease (and delivery count).
    leases: HashMap<u128, Lease, crate::FastHash>,
    /// Queue (its items' parent key) to where its takes may start looking.
    scan_hints: HashMap<u128, ScanHint, crate::FastHash>,
}

/// A page of a queue's items, oldest first, as a take looks through them.
#[derive(Debug, Clone)]
pub struct ItemPage {
    /// The queue's items key (the items' parent).
    pub items: PrimaryKey,
    /// Where the page was looked up from.
    pub from_sequence: u64,
    /// `(sequence, key)` of each item.
    pub entries: Vec<(u64, PrimaryKey)>,
}

/// Where a queue's takes may start looking: every item of the queue before
/// `from_sequence` is held by a lease until `valid_until` at least. Takes
/// look for the oldest free items, and with competing consumers the oldest
/// are mostly held: without a hint every take looked through all of them,
/// under the append lock, and an owner's take (which looks through a
/// bounded number) found nothing behind a long run of held items.
#[derive(Debug, Clone, Copy)]
struct ScanHint {
    from_sequence: u64,
    valid_until: Instant,
}

/// Queues one chain keeps a scan hint for; past this they are all dropped
/// (a take without one looks from the oldest item, as before).
const MAX_SCAN_HINTS: usize = 1024;

impl Lease {
    /// Whether the item is taken and its time not yet up at `now`.
    fn held_at(&self, now: Instant) -> bool {
        self.token != 0 && self.until > now
    }
}

/// When a lease of `lease` taken at `now` ends: an embedded queue may ask
/// for any length, and one past what an `Instant` can hold ends in about
/// 136 years instead of overflowing.
fn lease_end(now: Instant, lease: Duration) -> Instant {
    now.checked_add(lease).unwrap_or_else(|| now + Duration::from_secs(1 << 32))
}

/// What [`LeaseTable::acquire_run`] leased, and how many of the first
/// candidates are all held now (by anyone), with the earliest end of
/// their leases.
struct Acquired {
    leased: Vec<(u128, u32)>,
    held_run: usize,
    held_until: Option<Instant>,
}

impl LeaseTable {
    /// Takes `key` for `token` until `until`, unless a live lease holds it;
    /// returns the delivery count.
    fn take(&mut self, key: u128, token: u64, until: Instant, now: Instant) -> Option<u32> {
        let entry = self.leases.entry(key).or_insert(Lease { token: 0, until: now, deliveries: 0 });
        if entry.held_at(now) {
            return None;
        }
        entry.token = token;
        entry.until = until;
        entry.deliveries += 1;
        Some(entry.deliveries)
    }

    /// Leases up to `max` of `candidates`, in order (see [`Leases::acquire_many`]).
    fn acquire_run(
        &mut self,
        candidates: impl Iterator<Item = u128>,
        token: u64,
        lease: Duration,
        max: usize,
        mut is_live: impl FnMut(u128) -> bool,
    ) -> Acquired {
        let now = Instant::now();
        let until = lease_end(now, lease);
        let mut acquired = Acquired { leased: Vec::new(), held_run: 0, held_until: None };
        let mut in_run = true;
        for (index, key) in candidates.enumerate() {
            if acquired.leased.len() >= max {
                break;
            }
            let held = self.leases.get(&key).filter(|held| held.held_at(now)).map(|held| held.until);
            let held_until = match held {
                Some(end) => Some(end),
                // Gone, or one `is_live` turns down: not known to be held.
                None if !is_live(key) => None,
                None => self.take(key, token, until, now).map(|deliveries| {
                    acquired.leased.push((key, deliveries));
                    until
                }),
            };
            match held_until {
                Some(end) if in_run => {
                    acquired.held_run = index + 1;
                    acquired.held_until = Some(acquired.held_until.map_or(end, |earliest| earliest.min(end)));
                }
                Some(_) => {}
                None => in_run = false,
            }
        }
        acquired
    }
}

impl Leases {
    /// Takes the item unless a live lease holds it; returns the delivery count.
    pub(crate) fn acquire(&self, key: u128, token: u64, lease: Duration) -> Option<u32> {
        let now = Instant::now();
        self.table.lock().take(key, token, lease_end(now, lease), now)
    }

    /// Takes up to `max` of `candidates`, in order, as [`Leases::acquire`]
    /// takes one, skipping those a live lease holds and those `is_live`
    /// says are gone. Held candidates are skipped before `is_live` is asked:
    /// with competing consumers most candidates are held, and the table is
    /// small where the view is not (one lock for the lot, too).
    pub(crate) fn acquire_many(
        &self,
        candidates: &[u128],
        token: u64,
        lease: Duration,
        max: usize,
        is_live: impl FnMut(u128) -> bool,
    ) -> Vec<(u128, u32)> {
        self.table.lock().acquire_run(candidates.iter().copied(), token, lease, max, is_live).leased
    }

    /// Where a take from the queue whose items are the children of `queue`
    /// may start looking (see [`ScanHint`]): 0 for its oldest item.
    pub(crate) fn scan_from(&self, queue: u128) -> u64 {
        let now = Instant::now();
        let table = self.table.lock();
        table.scan_hints.get(&queue).filter(|hint| hint.valid_until > now).map_or(0, |hint| hint.from_sequence)
    }

    /// [`Leases::acquire_many`] over a page of a queue's items. A page that
    /// starts where the queue's run of held items ends (or at its start)
    /// carries the run on past the items it finds held or leases.
    pub(crate) fn acquire_page(
        &self,
        page: &ItemPage,
        token: u64,
        lease: Duration,
        max: usize,
        is_live: impl FnMut(u128) -> bool,
    ) -> Vec<(u128, u32)> {
        let mut table = self.table.lock();
        let candidates = page.entries.iter().map(|(_, key)| key.as_u128());
        let acquired = table.acquire_run(candidates, token, lease, max, is_live);
        let (queue, now) = (page.items.as_u128(), Instant::now());
        let hint = table.scan_hints.get(&queue).copied().filter(|hint| hint.valid_until > now);
        let continues = hint.map_or(page.from_sequence == 0, |hint| hint.from_sequence == page.from_sequence);
        if let (true, Some(held_until)) = (continues, acquired.held_until) {
            let from_sequence = page.entries[acquired.held_run - 1].0 + 1;
            let valid_until = hint.map_or(held_until, |hint| hint.valid_until.min(held_until));
            if table.scan_hints.len() >= MAX_SCAN_HINTS && !table.scan_hints.contains_key(&queue) {
                table.scan_hints.clear();
            }
            table.scan_hints.insert(queue, ScanHint { from_sequence, valid_until });
        }
        acquired.leased
    }

    /// Whether `token` still holds `key` (its lease may have run out, but
    /// nobody has taken the item since).
    pub(crate) fn holds(&self, key: u128, token: u64) -> bool {
        self.table.lock().leases.get(&key).is_some_and(|lease| lease.token == token)
    }

    /// Gives the item back, only if `token` holds it: a refused or stale
    /// caller can never release someone else's lease.
    pub(crate) fn release(&self, key: u128, token: u64) -> bool {
        let mut table = self.table.lock();
        match table.leases.get_mut(&key) {
            Some(lease) if lease.token == token => {
                lease.token = 0;
                // The item may sit before where some queue's takes start
                // looking (which queue, the table does not know).
                table.scan_hints.clear();
                true
            }
            _ => false,
        }
    }

    /// Entries of the table: items taken and not yet acknowledged (or
    /// whose lease ran out, until taken again or deleted).
    pub(crate) fn len(&self) -> usize {
        self.table.lock().leases.len()
    }

    /// Drops whatever lease `key` has (the object was deleted).
    pub(crate) fn drop_key(&self, key: u128) {
        self.table.lock().leases.remove(&key);
    }

    pub(crate) fn forget(&self, key: u128, token: u64) -> bool {
        let mut table = self.table.lock();
        let held = table.leases.get(&key).is_some_and(|lease| lease.token == token);
        if held {
            table.leases.remove(&key);
        }
        held
    }
}

/// One taken item.
#[derive(Debug)]
pub struct Delivery<T> {
    pub key: PrimaryKey,
    pub value: T,
    /// 1 on first delivery.
    pub deliveries: u32,
    token: u64,
    version: u64,
    /// Until when the lease is certainly held: measured from before the
    /// lease was asked for, so it ends before the owner's lease does.
    surely_held_until: Instant,
}

impl<T> Delivery<T> {
    /// Whether the lease must be checked with the owner before acknowledging
    /// (it was taken long enough ago that it may have run out).
    pub fn needs_lease_check(&self) -> bool {
        Instant::now() >= self.surely_held_until
    }

    /// The token the item is leased under (one per take).
    pub fn lease_token(&self) -> u64 {
        self.token
    }

    /// The version (sequence) the value was read from: the acknowledgement
    /// deletes only that version.
    pub fn version(&self) -> u64 {
        self.version
    }
}

/// Most candidates one lease request names (a bound the owner enforces too).
pub const MAX_LEASE_CANDIDATES: usize = 1024;

/// A queue named `name` on a chain.
#[derive(Debug, Clone)]
pub struct Queue {
    chain: Arc<Chain>,
    session: AteSession,
    spec: QueueSpec,
}

/// A fresh lease token (odd, so never the 0 of a free item).
pub fn random_token() -> Result<u64> {
    let mut bytes = [0u8; 8];
    crate::crypto::fill_random(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes) | 1)
}

impl<T> Delivery<T> {
    /// (key, value, delivered version, lease token).
    pub(crate) fn into_parts(self) -> (PrimaryKey, T, u64, u64) {
        (self.key, self.value, self.version, self.token)
    }
}

impl Queue {
    pub fn new(chain: &Arc<Chain>, session: &AteSession, name: &str, config: QueueConfig) -> Self {
        Self { chain: Arc::clone(chain), session: session.clone(), spec: QueueSpec::new(name, config) }
    }

    /// The parent whose children are the pending items (subscribe to it to
    /// be woken by pushes).
    pub fn items_key(&self) -> PrimaryKey {
        self.spec.items
    }

    pub fn dead_letter_key(&self) -> PrimaryKey {
        self.spec.dead_letter
    }

    /// Pushes one item (durable when this returns).
    pub async fn push<T: Serialize>(&self, value: T) -> Result<PrimaryKey> {
        let mut dio = self.chain.dio(&self.session).await;
        let key = *dio.store_child(&self.spec.items, value)?.key();
        dio.commit().await?;
        Ok(key)
    }

    /// Pushes several items in one commit.
    pub async fn push_many<T: Serialize>(&self, values: impl IntoIterator<Item = T>) -> Result<Vec<PrimaryKey>> {
        let mut dio = self.chain.dio(&self.session).await;
        let mut keys = Vec::new();
        for value in values {
            keys.push(*dio.store_child(&self.spec.items, value)?.key());
        }
        dio.commit().await?;
        Ok(keys)
    }

    /// Items waiting (taken or not).
    pub fn len(&self) -> usize {
        self.chain.child_count(&self.spec.items, CollectionId::default())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the oldest available item under a lease, or `None` if every
    /// item is taken or the queue is empty.
    pub async fn take<T: DeserializeOwned>(&self) -> Result<Option<Delivery<T>>> {
        Ok(self.take_many(1).await?.pop())
    }

    /// Takes up to `max` available items, oldest first, each under a lease
    /// (one token for the batch). On a replica, leases are asked for in
    /// batches of candidates: one round trip for the usual take, not one per item.
    pub async fn take_many<T: DeserializeOwned>(&self, max: usize) -> Result<Vec<Delivery<T>>> {
        let chain = &self.chain;
        let mut taken = Vec::new();
        let mut dio = self.chain.dio(&self.session).await;
        let token = random_token()?;
        let surely_held_until = self.spec.surely_held_from(Instant::now());
        let mut leaser = ItemLeaser::new(chain, self.spec.items, token, self.spec.config.lease, max);
        while taken.len() < max {
            let Some(leased) = leaser.next(max - taken.len()).await? else { break };
            for (key, deliveries) in leased {
                if deliveries > self.spec.config.max_deliveries {
                    // Also releases an item that is gone meanwhile.
                    self.dead_letter_item(key, token).await?;
                    continue;
                }
                match dio.load::<T>(&key).await {
                    Ok(value) => taken.push(Delivery {
                        key,
                        value: value.into_inner(),
                        deliveries,
                        token,
                        // The version the value was read from, not a second lookup.
                        version: dio.loaded_version(&key).expect("a successful load records its version"),
                        surely_held_until,
                    }),
                    // Acknowledged by someone else in the meantime.
                    Err(AteError::NotFound { .. }) => {
                        chain.lease_release(key, token, true).await?;
                    }
                    // A value that cannot be read is poison: straight to the dead letters.
                    Err(AteError::Deserialization { .. }) => self.dead_letter_item(key, token).await?,
                    Err(error) => {
                        chain.lease_release(key, token, false).await?;
                        for delivery in taken {
                            chain.lease_release(delivery.key, delivery.token, false).await?;
                        }
                        return Err(error);
                    }
                }
            }
        }
        Ok(taken)
    }

    /// Acknowledges many deliveries in one commit. If any of them was lost
    /// meanwhile, each is acknowledged on its own instead, so the others
    /// still go through; returns how many were acknowledged.
    pub async fn ack_many<T>(&self, deliveries: Vec<Delivery<T>>) -> Result<usize> {
        // Leases taken a moment ago are still held (nobody else can take an
        // item before its lease expires): only older ones are checked, in
        // one request. The version guard on each deletion keeps an item from
        // being acknowledged twice either way.
        let (mut held, to_check): (Vec<_>, Vec<_>) =
            deliveries.into_iter().partition(|delivery| !delivery.needs_lease_check());
        if !to_check.is_empty() {
            let leases: Vec<(PrimaryKey, u64)> =
                to_check.iter().map(|delivery| (delivery.key, delivery.token)).collect();
            let holds = self.chain.lease_holds_many(&leases).await?;
            held.extend(to_check.into_iter().zip(holds).filter_map(|(delivery, held)| held.then_some(delivery)));
        }
        let mut dio = self.chain.dio(&self.session).await;
        for delivery in &held {
            let placement = Some((self.spec.items, CollectionId::default()));
            dio.delete_expecting(delivery.key, Expect::Version(delivery.version), placement);
        }
        // The owner ends an item's lease when its tombstone is durable
        // (`Chain::finish`): nothing to release after a successful commit.
        match dio.commit().await {
            Ok(()) => Ok(held.len()),
            Err(AteError::Conflict { .. }) => ack_each(held, |delivery| self.ack(delivery)).await,
            Err(error) => Err(error),
        }
    }

    /// Acknowledges a delivery: the item is tombstoned, atomically, and only
    /// if this delivery still holds it and nobody acknowledged it first.
    pub async fn ack<T>(&self, delivery: Delivery<T>) -> Result<()> {
        if delivery.needs_lease_check() && !self.chain.lease_holds(delivery.key, delivery.token).await? {
            return Err(AteError::LeaseLost { key: delivery.key });
        }
        let mut dio = self.chain.dio(&self.session).await;
        dio.delete_expecting(
            delivery.key,
            Expect::Version(delivery.version),
            Some((self.spec.items, CollectionId::default())),
        );
        // As in `ack_many`, the durable tombstone ends the lease.
        match dio.commit().await {
            Ok(()) => Ok(()),
            Err(AteError::Conflict { .. }) => Err(AteError::LeaseLost { key: delivery.key }),
            Err(error) => Err(error),
        }
    }

    /// Drops the lease of an item whose consumption was committed elsewhere
    /// (a service reply commit).
    pub(crate) async fn finished(&self, key: PrimaryKey, token: u64) -> Result<()> {
        self.chain.lease_release(key, token, true).await.map(drop)
    }

    /// Gives a delivery back for someone else to take.
    pub async fn release<T>(&self, delivery: Delivery<T>) -> Result<()> {
        if self.chain.lease_release(delivery.key, delivery.token, false).await? {
            Ok(())
        } else {
            Err(AteError::LeaseLost { key: delivery.key })
        }
    }

    /// Moves an item to the dead-letter collection in one commit.
    async fn dead_letter_item(&self, key: PrimaryKey, token: u64) -> Result<()> {
        let chain = Arc::clone(&self.chain);
        let mut dio = chain.dio(&self.session).await;
        let Some(event) = chain.get(&key) else {
            chain.lease_release(key, token, true).await?;
            return Ok(());
        };
        let plaintext = dio.open_payload(key, event.header, event.payload)?;
        let version = event.header.sequence();
        dio.store_raw_child(&self.spec.dead_letter, plaintext);
        dio.delete_expecting(key, Expect::Version(version), Some((self.spec.items, CollectionId::default())));
        let result = dio.commit().await;
        chain.lease_release(key, token, true).await?;
        match result {
            Ok(()) | Err(AteError::Conflict { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// After a batch acknowledgement conflicted (an item of it was lost
/// meanwhile): acknowledges each delivery on its own with `ack`, so the
/// others still go through, and counts them. A lost lease is skipped; any
/// other error ends it. Shared by [`Queue::ack_many`] and consumers that
/// keep no replica.
pub async fn ack_each<T, Acked>(
    deliveries: Vec<Delivery<T>>,
    mut ack: impl FnMut(Delivery<T>) -> Acked,
) -> Result<usize>
where
    Acked: std::future::Future<Output = Result<()>>,
{
    let mut acknowledged = 0;
    for delivery in deliveries {
        match ack(delivery).await {
            Ok(()) => acknowledged += 1,
            Err(AteError::LeaseLost { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(acknowledged)
}

/// The longest lease an owner grants (`atedb` caps what it is asked for).
pub const MAX_LEASE: Duration = Duration::from_secs(3600);

/// Until when a lease asked for at `asked_at` is certainly held: a tenth
/// of it is kept as margin for clock rate differences with the owner, and
/// no lease is counted on for longer than an owner grants.
fn surely_held_from(asked_at: Instant, lease: Duration) -> Instant {
    let lease = lease.min(MAX_LEASE);
    asked_at + lease - lease / 10
}

/// Finds and leases a queue's oldest free items, a page of candidates at a
/// time: [`Queue::take_many`] on any chain, and an owner taking items for
/// a consumer that keeps no replica (`atedb`'s `Take`).
#[derive(Debug)]
pub struct ItemLeaser<'a> {
    chain: &'a Chain,
    items: PrimaryKey,
    token: u64,
    lease: Duration,
    per_request: usize,
    from_sequence: u64,
}

impl<'a> ItemLeaser<'a> {
    /// For a take of up to `max` items of the queue whose items are the children of `items`.
    pub fn new(chain: &'a Chain, items: PrimaryKey, token: u64, lease: Duration, max: usize) -> Self {
        // The oldest items are mostly held by the other consumers (taken,
        // not yet acknowledged): ask about enough of the backlog at once that
        // one request usually finds `max` free ones. With twice `max`, four
        // consumers of 16 needed 1-3 requests a take, and D5 over atedb
        // went from 26-27k to 36-40k msgs/s with eight times (a page of 128
        // keys, 2 KiB; docs/benchmarks.md, eleventh session).
        let per_request = max.saturating_mul(8).clamp(64, MAX_LEASE_CANDIDATES);
        // On the owner, past the run of held items the last takes found.
        let from_sequence = chain.lease_scan_from(&items);
        Self { chain, items, token, lease, per_request, from_sequence }
    }

    /// The next page of candidates, oldest first; `None` once none are left.
    fn next_candidates(&mut self) -> Option<ItemPage> {
        let page_from = self.from_sequence;
        let entries = self.chain.children_page(&self.items, CollectionId::default(), page_from, self.per_request);
        let &(last, _) = entries.last()?;
        self.from_sequence = last + 1;
        Some(ItemPage { items: self.items, from_sequence: page_from, entries })
    }

    /// Leases up to `wanted` items of the next page of candidates, oldest
    /// first (possibly none, when the page is all held); `None` once no
    /// candidates are left.
    pub async fn next(&mut self, wanted: usize) -> Result<Option<Vec<(PrimaryKey, u32)>>> {
        let Some(page) = self.next_candidates() else { return Ok(None) };
        self.chain.lease_acquire_page(&page, self.token, self.lease, wanted).await.map(Some)
    }

    /// On the chain's owner, [`ItemLeaser::next`] leasing only the items
    /// `accept` agrees to ([`Chain::lease_acquire_many_where`]).
    pub fn next_where(
        &mut self,
        wanted: usize,
        accept: impl FnMut(&PrimaryKey) -> bool,
    ) -> Option<Vec<(PrimaryKey, u32)>> {
        let page = self.next_candidates()?;
        Some(self.chain.lease_acquire_page_where(&page, self.token, self.lease, wanted, accept))
    }
}

/// A queue's keys and policy without a chain: what a consumer that keeps no
/// replica (`ate_client::RemoteQueue`) needs to build its commits and read
/// the items an owner leased to it. The same names, encoding and policy as
/// [`Queue`], so both kinds of consumer share one queue.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    items: PrimaryKey,
    dead_letter: PrimaryKey,
    config: QueueConfig,
}

/// An item an owner leased to a consumer without a replica, decoded.
#[derive(Debug)]
pub enum TakenItem<T> {
    Deliver(Delivery<T>),
    /// Delivered too often, or its value does not decode as the type asked
    /// for: commit `move_commit` (a copy among the dead letters and the
    /// item's deletion); the owner drops the lease on `key` once the
    /// deletion is durable.
    DeadLetter {
        key: PrimaryKey,
        move_commit: Vec<NewEvent>,
    },
}

impl QueueSpec {
    pub fn new(name: &str, config: QueueConfig) -> Self {
        Self {
            items: PrimaryKey::from_name(&format!("ate.queue/{name}")),
            dead_letter: PrimaryKey::from_name(&format!("ate.queue/{name}/dead-letter")),
            config,
        }
    }

    pub fn items_key(&self) -> PrimaryKey {
        self.items
    }

    pub fn dead_letter_key(&self) -> PrimaryKey {
        self.dead_letter
    }

    pub fn config(&self) -> QueueConfig {
        self.config
    }

    fn placement(parent: PrimaryKey) -> Option<(PrimaryKey, CollectionId)> {
        Some((parent, CollectionId::default()))
    }

    /// The event that pushes `value` (as [`Queue::push`] stores it, in plaintext).
    pub fn push_event<T: Serialize>(&self, value: &T) -> Result<NewEvent> {
        let payload = crate::dio::serialize(value)?;
        let placement = Self::placement(self.items);
        Ok(NewEvent { parent: placement, expect: Expect::Absent, ..NewEvent::data(PrimaryKey::generate(), payload) })
    }

    /// The event that acknowledges `delivery`: deletes the delivered version only.
    pub fn ack_event<T>(&self, delivery: &Delivery<T>) -> NewEvent {
        let placement = Self::placement(self.items);
        NewEvent { expect: Expect::Version(delivery.version), parent: placement, ..NewEvent::tombstone(delivery.key) }
    }

    /// Until when leases asked for at `asked_at` are certainly held.
    pub fn surely_held_from(&self, asked_at: Instant) -> Instant {
        surely_held_from(asked_at, self.config.lease)
    }

    /// The lease to ask an owner for: the configured one, at most [`MAX_LEASE`].
    pub fn lease(&self) -> Duration {
        self.config.lease.min(MAX_LEASE)
    }

    /// The commit that moves the item `key`, delivered at `version`, to the
    /// dead letters: a copy of its (plaintext) payload there, and its deletion.
    fn dead_letter_events(&self, key: PrimaryKey, version: u64, payload: Vec<u8>) -> Vec<NewEvent> {
        let copy = NewEvent {
            parent: Self::placement(self.dead_letter),
            expect: Expect::Absent,
            ..NewEvent::data(PrimaryKey::generate(), payload)
        };
        let delete = NewEvent {
            expect: Expect::Version(version),
            parent: Self::placement(self.items),
            ..NewEvent::tombstone(key)
        };
        vec![copy, delete]
    }

    /// Decodes `record`, the stored record of an item leased under `token`
    /// and delivered `deliveries` times, as the owner sent it. The owner is
    /// trusted as a producer trusts it (an authenticated TLS session): the
    /// record is checked for damage (frame, checksum, payload hash), not
    /// against the chain's signatures. Encrypted payloads need the trust
    /// state a replica keeps: they are refused with [`AteError::NoReadAccess`].
    pub fn taken_item<T: DeserializeOwned>(
        &self,
        record: &[u8],
        deliveries: u32,
        token: u64,
        surely_held_until: Instant,
    ) -> Result<TakenItem<T>> {
        let aligned = crate::format::aligned_copy(record);
        let damaged = |reason: String| AteError::Remote {
            failure: crate::RemoteFailure::Refused,
            message: format!("the owner sent a damaged queue item: {reason}"),
        };
        let decoded = match crate::format::decode_record(&aligned, 0) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => return Err(damaged("an empty record".into())),
            Err(error) => return Err(damaged(error.to_string())),
        };
        decoded.verify_payload_hash().map_err(|error| damaged(error.to_string()))?;
        let header = decoded.header;
        let key = PrimaryKey::from_bytes(header.key);
        if header.kind() != Some(crate::format::EventKind::Data)
            || header.parent() != Some(*self.items.as_bytes())
            || header.collection() != CollectionId::default().0
            || decoded.compacted
        {
            return Err(damaged(format!("object {key} is not a live item of this queue")));
        }
        if header.read_key_id != [0u8; 32] {
            return Err(AteError::NoReadAccess { key, node_key_id: crate::crypto::KeyId(header.read_key_id) });
        }
        let version = header.sequence();
        let dead_letter = || TakenItem::DeadLetter {
            key,
            move_commit: self.dead_letter_events(key, version, decoded.payload.to_vec()),
        };
        if deliveries > self.config.max_deliveries {
            return Ok(dead_letter());
        }
        match crate::dio::deserialize::<T>(key, decoded.payload) {
            Ok(value) => Ok(TakenItem::Deliver(Delivery { key, value, deliveries, token, version, surely_held_until })),
            // A value that cannot be read is poison, as in `Queue::take_many`.
            Err(AteError::Deserialization { .. }) => Ok(dead_letter()),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_leases_skip_held_and_gone_items_and_keep_their_order() {
        let leases = Leases::default();
        let lease = Duration::from_secs(30);
        assert_eq!(leases.acquire(2, 7, lease), Some(1));
        // 2 is held by token 7, 4 is gone; 1, 3 and 5 are free.
        let asked = std::cell::RefCell::new(Vec::new());
        let taken = leases.acquire_many(&[1, 2, 3, 4, 5, 6], 9, lease, 3, |key| {
            asked.borrow_mut().push(key);
            key != 4
        });
        assert_eq!(taken, vec![(1, 1), (3, 1), (5, 1)]);
        assert_eq!(*asked.borrow(), vec![1, 3, 4, 5], "a held item is skipped before the view is asked");
        assert!(leases.holds(5, 9) && leases.holds(2, 7) && !leases.holds(4, 9) && !leases.holds(6, 9));
        // An expired lease is taken over, and the delivery counted.
        assert!(leases.release(1, 9));
        assert_eq!(leases.acquire_many(&[1, 2], 11, lease, 8, |_| true), vec![(1, 2)]);
        let expired = Leases::default();
        assert_eq!(expired.acquire(8, 1, Duration::ZERO), Some(1));
        assert_eq!(expired.acquire_many(&[8], 2, lease, 1, |_| true), vec![(8, 2)]);
        assert_eq!(leases.acquire_many(&[3, 5], 12, lease, 8, |_| true), Vec::new(), "held by 9");
    }

    #[test]
    fn takes_start_past_the_run_of_held_items_while_their_leases_last() {
        let (queue, lease) = (99u128, Duration::from_secs(30));
        let leases = Leases::default();
        let page = |from_sequence: u64, keys: std::ops::Range<u128>| ItemPage {
            items: PrimaryKey::from_u128(queue),
            from_sequence,
            entries: keys.map(|key| (key as u64 * 10, PrimaryKey::from_u128(key))).collect(),
        };
        assert_eq!(leases.scan_from(queue), 0, "no takes yet: from the oldest");
        // A take from the start leases 1-3: the run of held items ends at 3.
        assert_eq!(leases.acquire_page(&page(0, 1..8), 5, lease, 3, |_| true), vec![(1, 1), (2, 1), (3, 1)]);
        assert_eq!(leases.scan_from(queue), 31);
        // A page that starts elsewhere than the run's end leaves the hint alone.
        assert_eq!(leases.acquire_page(&page(50, 5..6), 6, lease, 1, |_| true), vec![(5, 1)]);
        assert_eq!(leases.scan_from(queue), 31);
        // From the run's end: 4 is leased, 5 is held, 6 is gone (the run stops), 7 is leased.
        let taken = leases.acquire_page(&page(31, 4..8), 7, lease, 8, |key| key != 6);
        assert_eq!(taken, vec![(4, 1), (7, 1)]);
        assert_eq!(leases.scan_from(queue), 51, "up to 5, the last before the gone item");
        assert_eq!(leases.scan_from(queue + 1), 0, "hints are per queue");
        // A release may free an item before the run's end: takes look from the start again.
        assert!(leases.release(2, 5));
        assert_eq!(leases.scan_from(queue), 0);
        // A run stops where a take has what it wanted, and lasts only as long as its shortest lease.
        let short = Duration::from_millis(30);
        assert_eq!(leases.acquire_page(&page(0, 1..8), 8, short, 1, |_| true), vec![(2, 2)]);
        assert_eq!(leases.scan_from(queue), 21, "3 was not looked at");
        std::thread::sleep(short + Duration::from_millis(20));
        assert_eq!(leases.scan_from(queue), 0, "2's lease ran out");
    }

    #[test]
    fn leases_of_any_length_are_taken_and_counted_on_for_at_most_an_hour() {
        let leases = Leases::default();
        assert_eq!(leases.acquire(1, 3, Duration::MAX), Some(1));
        assert_eq!(leases.acquire_many(&[2], 3, Duration::MAX, 1, |_| true), vec![(2, 1)]);
        assert_eq!(leases.acquire(1, 5, Duration::from_secs(1)), None, "still held");
        let asked_at = Instant::now();
        let spec = QueueSpec::new("q", QueueConfig { lease: Duration::MAX, max_deliveries: 5 });
        assert_eq!(spec.lease(), MAX_LEASE);
        assert_eq!(spec.surely_held_from(asked_at), asked_at + MAX_LEASE - MAX_LEASE / 10);
    }
}
