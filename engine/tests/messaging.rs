//! Messaging on chains: bus ordering and filtering, slow subscribers,
//! consumer offsets across restarts, the exactly-once work queue (leases,
//! expiry, dead letters, refused releases) and typed services.

mod common;

use ate::crypto::ReadKey;
use ate::messaging::{invoke, serve, BusEventKind, Consumer, Message, Queue, QueueConfig, ServiceError, StartAt};
use ate::prelude::*;
use ate::trust::{ReadAuthority, WriteAuthority};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

async fn chain() -> (tempfile::TempDir, Arc<Chain>) {
    let dir = tempfile::tempdir().unwrap();
    let chain = common::open(dir.path()).await.unwrap();
    (dir, chain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_delivers_committed_changes_in_order_and_filters_collections() {
    let (_dir, chain) = chain().await;
    let session = AteSession::default();
    let mut dio = chain.dio(&session).await;
    let inbox = *dio.store("inbox".to_string()).unwrap().key();
    dio.commit().await.unwrap();
    let mut everything = chain.subscribe(&session, StartAt::Beginning).unwrap();
    let mut now = chain.subscribe(&session, StartAt::Now).unwrap();
    let mut only_inbox = chain.subscribe_collection(&session, &inbox, CollectionId::default(), StartAt::Now).unwrap();

    let mut letters = Vec::new();
    for index in 0..5 {
        letters.push(*dio.store_child(&inbox, format!("letter {index}")).unwrap().key());
        dio.store(format!("elsewhere {index}")).unwrap();
        dio.commit().await.unwrap();
    }
    dio.delete(&letters[2]).unwrap();
    dio.commit().await.unwrap();
    // A rejected commit is never delivered.
    let error = chain.append(vec![NewEvent::data(PrimaryKey::generate(), vec![0; 100 << 10])], None).await;
    assert!(error.is_err());

    let first = everything.next().await.unwrap();
    assert_eq!((first.sequence, first.decode::<String>().unwrap()), (0, "inbox".to_string()));
    let mut last = first.sequence;
    for _ in 0..11 {
        let event = everything.next().await.unwrap();
        assert!(event.sequence > last, "out of order");
        last = event.sequence;
    }
    assert!(everything.try_next().unwrap().is_none(), "more events than were committed");
    for _ in 0..11 {
        now.next().await.unwrap();
    }
    for (index, key) in letters.iter().enumerate() {
        let event = only_inbox.next().await.unwrap();
        assert_eq!(event.key, *key);
        assert_eq!(event.kind, BusEventKind::Data);
        assert_eq!(event.decode::<String>().unwrap(), format!("letter {index}"));
    }
    let deleted = only_inbox.next().await.unwrap();
    assert_eq!((deleted.key, deleted.kind), (letters[2], BusEventKind::Deleted));
    assert!(only_inbox.try_next().unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_a_subscriber_cannot_read_are_reported_not_dropped() {
    let (_dir, chain) = chain().await;
    let key = ReadKey::generate().unwrap();
    let mut owner_session = AteSession::new("owner");
    owner_session.add_user_read_key(key.clone());
    let mut outsider = chain.subscribe(&AteSession::default(), StartAt::Beginning).unwrap();
    let mut insider = chain.subscribe(&owner_session, StartAt::Beginning).unwrap();
    let mut dio = chain.dio(&owner_session).await;
    let secret = *dio.store("classified".to_string()).unwrap().key();
    dio.set_authority(&secret, WriteAuthority::Inherit, ReadAuthority::Specific(key.id())).unwrap();
    dio.commit().await.unwrap();
    let seen = outsider.next().await.unwrap();
    assert_eq!(seen.key, secret);
    assert!(matches!(seen.payload, Err(AteError::NoReadAccess { .. })));
    assert_eq!(insider.next().await.unwrap().decode::<String>().unwrap(), "classified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_reads_the_log_and_never_slows_producers() {
    let (_dir, chain) = chain().await;
    let session = AteSession::default();
    let mut slow = chain.subscribe(&session, StartAt::Now).unwrap();
    // Producers commit 5,000 events while the subscriber reads nothing.
    for batch in 0..50u64 {
        let events =
            (0..100u64).map(|i| NewEvent::data(PrimaryKey::generate(), (batch * 100 + i).to_le_bytes().to_vec()));
        chain.append(events.collect(), None).await.unwrap();
    }
    for expected in 0..5_000u64 {
        let event = slow.next().await.unwrap();
        assert_eq!(event.payload.unwrap(), expected.to_le_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_resumes_after_its_last_commit_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let session = AteSession::default();
    {
        let chain = common::open(dir.path()).await.unwrap();
        let mut dio = chain.dio(&session).await;
        for index in 0..10u32 {
            dio.store(index).unwrap();
            dio.commit().await.unwrap();
        }
        let mut consumer = chain.consumer(&session, "billing").await.unwrap();
        for expected in 0..4u32 {
            consumer
                .process(|event| async move {
                    assert_eq!(event.decode::<u32>().unwrap(), expected);
                    Ok(())
                })
                .await
                .unwrap();
        }
        // Handled but not committed: comes again after the restart.
        let uncommitted = consumer.next().await.unwrap();
        assert_eq!(uncommitted.decode::<u32>().unwrap(), 4);
        // Two live consumers with one name fence each other.
        let mut first = chain.consumer(&session, "fenced").await.unwrap();
        let mut second = chain.consumer(&session, "fenced").await.unwrap();
        first.commit(5).await.unwrap();
        assert!(matches!(second.commit(6).await, Err(AteError::Conflict { .. })));
    }
    let chain = common::open(dir.path()).await.unwrap();
    let mut consumer = Consumer::open(&chain, &session, "billing", None).await.unwrap();
    assert_eq!(consumer.next().await.unwrap().decode::<u32>().unwrap(), 4, "resumed after the last commit");
    // Another name starts from the beginning.
    let mut other = chain.consumer(&session, "audit").await.unwrap();
    assert_eq!(other.next().await.unwrap().decode::<u32>().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_consumers_acknowledge_every_item_exactly_once() {
    let (_dir, chain) = chain().await;
    let session = AteSession::default();
    let config = QueueConfig { lease: Duration::from_millis(200), max_deliveries: 100 };
    let queue = Queue::new(&chain, &session, "jobs", config);
    let items: Vec<u32> = (0..400).collect();
    for chunk in items.chunks(50) {
        queue.push_many(chunk.iter().copied()).await.unwrap();
    }
    let acked = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let (queue, acked) = (queue.clone(), acked.clone());
        workers.push(tokio::spawn(async move {
            let mut taken = 0;
            loop {
                let Some(delivery) = queue.take::<u32>().await.unwrap() else {
                    if queue.is_empty() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                taken += 1;
                // Worker 0 "crashes" on every 7th item: it walks away without ack.
                if worker == 0 && taken % 7 == 0 {
                    continue;
                }
                let value = delivery.value;
                match queue.ack(delivery).await {
                    Ok(()) => acked.lock().push(value),
                    Err(AteError::LeaseLost { .. }) => {}
                    Err(error) => panic!("{error}"),
                }
            }
        }));
    }
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(60), worker).await.unwrap().unwrap();
    }
    let mut acked = acked.lock().clone();
    acked.sort();
    assert_eq!(acked, items, "every item acknowledged exactly once");
    assert!(queue.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_poison_goes_to_dead_letters_and_refused_releases_change_nothing() {
    let (_dir, chain) = chain().await;
    let session = AteSession::default();
    let config = QueueConfig { lease: Duration::from_millis(50), max_deliveries: 2 };
    let queue = Queue::new(&chain, &session, "fragile", config);
    queue.push("poison".to_string()).await.unwrap();

    let first = queue.take::<String>().await.unwrap().unwrap();
    assert_eq!(first.deliveries, 1);
    assert!(queue.take::<String>().await.unwrap().is_none(), "a leased item was handed out twice");
    tokio::time::sleep(Duration::from_millis(80)).await;
    let second = queue.take::<String>().await.unwrap().unwrap();
    assert_eq!(second.deliveries, 2, "the expired lease made the item available again");
    // The first holder's lease is gone: it can neither release nor acknowledge.
    assert!(matches!(queue.release(first).await, Err(AteError::LeaseLost { .. })));
    assert!(queue.take::<String>().await.unwrap().is_none(), "a refused release freed someone else's lease");
    queue.release(second).await.unwrap();
    // Third delivery would exceed max_deliveries: the item moves to the dead letters.
    assert!(queue.take::<String>().await.unwrap().is_none());
    assert!(queue.is_empty());
    let dead = chain.children(&queue.dead_letter_key(), CollectionId::default());
    assert_eq!(dead.len(), 1);
    let mut dio = chain.dio(&session).await;
    assert_eq!(*dio.load::<String>(&dead[0]).await.unwrap(), "poison");
}

#[derive(Debug, Serialize, Deserialize)]
struct Ping {
    count: u32,
}
impl Message for Ping {
    const TYPE_NAME: &'static str = "test.Ping/v1";
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Pong {
    count: u32,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
enum PingError {
    TooHigh(u32),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_answer_typed_responses_errors_and_time_out() {
    let (_dir, chain) = chain().await;
    let session = AteSession::default();
    let service = serve(&chain, &session, |ping: Ping| async move {
        if ping.count > 10 {
            Err(PingError::TooHigh(ping.count))
        } else {
            Ok(Pong { count: ping.count + 1 })
        }
    })
    .unwrap();
    for count in 0..5 {
        let pong: Pong =
            invoke::<Ping, Pong, PingError>(&chain, &session, Ping { count }, Duration::from_secs(10)).await.unwrap();
        assert_eq!(pong, Pong { count: count + 1 });
    }
    let error = invoke::<Ping, Pong, PingError>(&chain, &session, Ping { count: 99 }, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(error, ServiceError::Failed(PingError::TooHigh(99))), "{error:?}");
    drop(service);
    let error = invoke::<Ping, Pong, PingError>(&chain, &session, Ping { count: 1 }, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(error, ServiceError::Engine(AteError::Timeout { .. })), "{error:?}");
    // Consumed requests and read replies are tombstoned: only the unanswered request remains.
    let live: HashSet<_> = chain.keys().into_iter().collect();
    assert_eq!(live.len(), 1, "requests and replies must not pile up: {live:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_entries_expire_compact_away_and_announce_invalidations() {
    let (_dir, chain) = chain().await;
    let session = AteSession::default();
    let cache = ate::messaging::Cache::<String>::new(&chain, &session, "sessions");
    let mut changes = cache.changes().unwrap();
    cache.put("alice", "token-a".into(), Duration::from_millis(150)).await.unwrap();
    cache.put("bob", "token-b".into(), Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get("alice").await.unwrap().as_deref(), Some("token-a"));
    let made = cache.get_or_insert_with("carol", Duration::from_secs(60), || async { Ok("token-c".to_string()) });
    assert_eq!(made.await.unwrap(), "token-c");
    let again = cache.get_or_insert_with("carol", Duration::from_secs(60), || async { panic!("cached value ignored") });
    assert_eq!(again.await.unwrap(), "token-c");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(cache.get("alice").await.unwrap(), None, "expired entries read as absent");
    assert_eq!(cache.compact().await.unwrap(), 1);
    cache.invalidate("bob").await.unwrap();
    assert_eq!(cache.get("bob").await.unwrap(), None);
    let kinds: Vec<BusEventKind> = [(); 5].iter().map(|_| changes.try_next().unwrap().unwrap().kind).collect();
    assert_eq!(
        kinds,
        [BusEventKind::Data, BusEventKind::Data, BusEventKind::Data, BusEventKind::Deleted, BusEventKind::Deleted]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_takes_and_acknowledgements_skip_lost_leases() {
    let (_dir, chain) = chain().await;
    let session = AteSession::default();
    let queue =
        Queue::new(&chain, &session, "batch", QueueConfig { lease: Duration::from_millis(50), max_deliveries: 10 });
    queue.push_many(0..10u32).await.unwrap();
    let first = queue.take_many::<u32>(4).await.unwrap();
    assert_eq!(first.iter().map(|d| d.value).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    let second = queue.take_many::<u32>(100).await.unwrap();
    assert_eq!(second.len(), 6, "leased items are skipped");
    tokio::time::sleep(Duration::from_millis(80)).await;
    // The first batch's leases ran out and another consumer takes two of them.
    let thief = queue.take_many::<u32>(2).await.unwrap();
    assert_eq!(thief.len(), 2);
    assert_eq!(queue.ack_many(first).await.unwrap(), 2, "only the still-held deliveries are acknowledged");
    assert_eq!(queue.ack_many(thief).await.unwrap(), 2);
    assert_eq!(queue.ack_many(second).await.unwrap(), 6);
    assert!(queue.is_empty());
    assert_eq!(chain.leases_held(), 0, "durable acknowledgements ended every lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effects_and_offset_commit_together_so_handling_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let session = AteSession::default();
    let totals = PrimaryKey::from_name("totals");
    {
        let chain = common::open(dir.path()).await.unwrap();
        let mut dio = chain.dio(&session).await;
        for amount in [5u64, 7, 11] {
            dio.store(amount).unwrap();
            dio.commit().await.unwrap();
        }
        let mut consumer = chain.consumer(&session, "summer").await.unwrap();
        // Handle two events: the running total and the offset move in one commit each.
        for _ in 0..2 {
            let event = consumer.next().await.unwrap();
            let amount: u64 = event.decode().unwrap();
            let current = match consumer.dio().load::<u64>(&totals).await {
                Ok(total) => *total,
                Err(AteError::NotFound { .. }) => 0,
                Err(error) => panic!("{error}"),
            };
            consumer.dio().store_with_key(totals, current + amount).unwrap();
            consumer.commit(event.sequence).await.unwrap();
        }
        // Third event handled but the process "crashes" before committing.
        let event = consumer.next().await.unwrap();
        let amount: u64 = event.decode().unwrap();
        consumer.dio().store_with_key(totals, 12 + amount).unwrap();
    }
    let chain = common::open(dir.path()).await.unwrap();
    let mut dio = chain.dio(&session).await;
    assert_eq!(*dio.load::<u64>(&totals).await.unwrap(), 12, "no effect without its offset");
    let mut consumer = chain.consumer(&session, "summer").await.unwrap();
    assert_eq!(consumer.next().await.unwrap().decode::<u64>().unwrap(), 11, "the uncommitted event comes again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_start_exactly_where_asked_across_segments_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        AteConfig { segment_size_bytes: 64 << 10, max_commit_bytes: 16 << 10, ..common::small_config(dir.path()) };
    let open = || async { ChainBuilder::new(&config).await.build().open(&ChainKey::from("segments")).await.unwrap() };
    let chain = open().await;
    for index in 0..300 {
        chain.append(common::commit_events(index), None).await.unwrap();
    }
    assert!(chain.segment_count() > 3);
    let total = chain.next_sequence();
    let check = |chain: Arc<Chain>| async move {
        for start in [0, 1, 5, total / 3, total / 2 + 1, total - 1] {
            let mut subscription = chain.subscribe(&AteSession::default(), StartAt::Sequence(start)).unwrap();
            assert_eq!(subscription.next().await.unwrap().sequence, start);
        }
        let mut now = chain.subscribe(&AteSession::default(), StartAt::Now).unwrap();
        assert_eq!(now.position(), total);
        assert!(now.try_next().unwrap().is_none());
    };
    check(chain).await;
    // After a restart the commit index is rebuilt by recovery.
    check(open().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_after_the_lease_passed_to_someone_else_is_refused_alone_or_in_a_batch() {
    let (_dir, chain) = chain().await;
    let session = AteSession::default();
    let config = QueueConfig { lease: Duration::from_millis(50), max_deliveries: 10 };
    let queue = Queue::new(&chain, &session, "expiring", config);
    queue.push_many(["a".to_string(), "b".to_string()]).await.unwrap();
    let stale = queue.take_many::<String>(2).await.unwrap();
    assert_eq!(stale.len(), 2);
    tokio::time::sleep(Duration::from_millis(80)).await;
    let fresh = queue.take_many::<String>(2).await.unwrap();
    assert_eq!(fresh.len(), 2, "expired leases made both items available again");
    // The stale holder's acknowledgements are refused (its leases were
    // checked: they are past their sure window); the fresh ones go through
    // without a check.
    assert_eq!(queue.ack_many(stale).await.unwrap(), 0);
    let mut fresh = fresh.into_iter();
    queue.ack(fresh.next().unwrap()).await.unwrap();
    assert_eq!(queue.ack_many(fresh.collect()).await.unwrap(), 1);
    assert!(queue.is_empty());
    assert_eq!(chain.leases_held(), 0, "single and batched acknowledgements ended every lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lent_events_borrow_plaintext_from_the_log_and_decrypt_the_rest() {
    let (_dir, chain) = chain().await;
    let read = ReadKey::generate().unwrap();
    let mut owner = AteSession::new("owner");
    owner.add_user_read_key(read.clone());
    let mut dio = chain.dio(&owner).await;
    let open_key = *dio.store("in the clear".to_string()).unwrap().key();
    let vault = *dio.store("vault".to_string()).unwrap().key();
    dio.set_authority(&vault, WriteAuthority::Inherit, ReadAuthority::Specific(read.id())).unwrap();
    dio.commit().await.unwrap();
    dio.store_child(&vault, "sealed".to_string()).unwrap();
    dio.delete(&open_key).unwrap();
    dio.commit().await.unwrap();

    let mut lent = chain.subscribe(&owner, StartAt::Beginning).unwrap();
    let mut owned = chain.subscribe(&owner, StartAt::Beginning).unwrap();
    let mut seen = Vec::new();
    while let Some((borrowed, same)) = lent
        .try_next_with(|event| {
            let borrowed = matches!(event.payload, Ok(std::borrow::Cow::Borrowed(_)));
            (borrowed, event.into_owned())
        })
        .unwrap()
    {
        let copy = owned.try_next().unwrap().expect("both see the same events");
        assert_eq!((same.sequence, same.kind, same.key), (copy.sequence, copy.kind, copy.key));
        assert_eq!(same.payload.as_ref().ok(), copy.payload.as_ref().ok());
        seen.push((same.decode::<String>().ok(), borrowed));
    }
    assert!(owned.try_next().unwrap().is_none());
    assert_eq!(
        seen,
        vec![
            (Some("in the clear".to_string()), true),
            (Some("vault".to_string()), false), // under its own read authority: decrypted, owned
            (Some("sealed".to_string()), false), // the same
            (None, true),                       // the deletion: empty, borrowed
        ]
    );
    // Without the read key the sealed payload is an error, lent or not.
    let mut stranger = chain.subscribe(&AteSession::default(), StartAt::Beginning).unwrap();
    let mut refused = 0;
    while let Some(denied) =
        stranger.try_next_with(|event| matches!(event.payload, Err(AteError::NoReadAccess { .. }))).unwrap()
    {
        refused += usize::from(denied);
    }
    assert_eq!(refused, 2);
}
