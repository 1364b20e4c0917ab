//! A queue consumed without a replica (`Registry::queue`): the owner picks,
//! leases and sends back the items, and the consumer receives nothing else.
//! It shares queues with replica consumers, exactly once, and keeps the
//! engine queue's dead-letter rules. Over real TCP + TLS on loopback.

mod common;

use ate::crypto::ReadKey;
use ate::messaging::{Queue, QueueConfig, QueueSpec, TakenItem};
use ate::prelude::*;
use ate::trust::{ReadAuthority, WriteAuthority};
use ate::RemoteFailure;
use ate_client::registry::{Registry, RegistryConfig, ServerTrust};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{start, Running};

async fn registry(running: &Running) -> Registry {
    let token = std::fs::read_to_string(running.data.admin_token()).unwrap();
    Registry::new(RegistryConfig::new(token, ServerTrust::Fingerprint(running.fingerprint.clone()))).await
}

async fn owner_chain(running: &Running, name: &str) -> Arc<Chain> {
    running.server.open_chains().await.into_iter().find(|chain| chain.key().name() == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_without_a_replica_share_a_queue_with_replica_consumers_exactly_once() {
    let running = start().await;
    let url = format!("tcp://{}/jobs", running.address);
    let config = QueueConfig { lease: Duration::from_secs(60), ..QueueConfig::default() };
    let remote_registry = registry(&running).await;
    let producer = remote_registry.queue(&url, "work", config).await.unwrap();
    let pushed: HashSet<PrimaryKey> = producer.push_many(0..40u32).await.unwrap().into_iter().collect();

    let replica_registry = registry(&running).await;
    let replica = replica_registry.open(&url).await.unwrap();
    let replica_consumer = Queue::new(&replica, &AteSession::default(), "work", config);
    let remote_consumer = remote_registry.queue(&url, "work", config).await.unwrap();
    let remote = tokio::spawn(async move {
        let mut done = Vec::new();
        loop {
            let batch = remote_consumer.take_many::<u32>(6).await.unwrap();
            if batch.is_empty() {
                break;
            }
            assert!(batch.iter().all(|delivery| delivery.deliveries == 1 && delivery.value < 40));
            done.extend(batch.iter().map(|delivery| delivery.key));
            let count = batch.len();
            assert_eq!(remote_consumer.ack_many(batch).await.unwrap(), count, "every lease in the batch was held");
        }
        done
    });
    let local = tokio::spawn(async move {
        let mut done = Vec::new();
        while let Some(delivery) = replica_consumer.take::<u32>().await.unwrap() {
            done.push(delivery.key);
            replica_consumer.ack(delivery).await.unwrap();
        }
        done
    });
    let mut taken = remote.await.unwrap();
    taken.extend(local.await.unwrap());
    let unique: HashSet<PrimaryKey> = taken.iter().copied().collect();
    assert_eq!(taken.len(), unique.len(), "an item was delivered twice");
    assert_eq!(unique, pushed);
    let owner = owner_chain(&running, "jobs").await;
    assert_eq!(owner.leases_held(), 0, "acknowledged items left leases behind");
    assert_eq!(owner.child_count(&producer.items_key(), CollectionId::default()), 0);

    // A released delivery is taken again, counted as a second delivery; an
    // acknowledgement of a delivery someone else acknowledged is refused.
    let consumer = remote_registry.queue(&url, "work", config).await.unwrap();
    consumer.push("again".to_string()).await.unwrap();
    let first = consumer.take::<String>().await.unwrap().unwrap();
    assert_eq!((first.value.as_str(), first.deliveries), ("again", 1));
    assert!(consumer.take::<String>().await.unwrap().is_none(), "a held item is not taken twice");
    consumer.release(first).await.unwrap();
    let second = consumer.take::<String>().await.unwrap().unwrap();
    assert_eq!(second.deliveries, 2);
    consumer.ack(second).await.unwrap();
    assert!(consumer.take::<String>().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_and_overdelivered_items_go_to_the_dead_letters_and_old_leases_are_checked() {
    let running = start().await;
    let url = format!("tcp://{}/mail", running.address);
    let remote_registry = registry(&running).await;
    let short = QueueConfig { lease: Duration::from_millis(300), max_deliveries: 1 };
    let queue = remote_registry.queue(&url, "inbox", short).await.unwrap();
    let dead_letters = PrimaryKey::from_name("ate.queue/inbox/dead-letter");
    let owner = owner_chain(&running, "mail").await;

    // A value that does not decode as the type asked for is poison.
    queue.push(7u8).await.unwrap();
    assert!(queue.take::<(u64, u64, u64)>().await.unwrap().is_none());
    assert_eq!(owner.child_count(&dead_letters, CollectionId::default()), 1);

    // Taken, not acknowledged, lease run out: the second delivery is one
    // too many, and the item moves to the dead letters with its value.
    let key = queue.push(11u32).await.unwrap();
    let delivery = queue.take::<u32>().await.unwrap().unwrap();
    assert_eq!((delivery.key, delivery.value), (key, 11));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(queue.take::<u32>().await.unwrap().is_none());
    assert!(owner.get(&key).is_none());
    assert_eq!(owner.child_count(&dead_letters, CollectionId::default()), 2);
    let moved: Vec<Vec<u8>> = owner
        .children_page(&dead_letters, CollectionId::default(), 0, 10)
        .into_iter()
        .map(|(_, key)| owner.get(&key).unwrap().payload.to_vec())
        .collect();
    assert_eq!(moved, vec![vec![7], vec![11]], "the dead letters keep the values as pushed");
    assert!(matches!(queue.ack(delivery).await, Err(AteError::LeaseLost { .. })));
    assert_eq!(owner.leases_held(), 0);

    // An old lease is checked before its acknowledgement, and holds when
    // nobody took the item meanwhile.
    let key = queue.push(12u32).await.unwrap();
    let delivery = queue.take::<u32>().await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(delivery.needs_lease_check());
    assert_eq!(queue.ack_many(vec![delivery]).await.unwrap(), 1);
    assert!(owner.get(&key).is_none());
    assert_eq!(owner.leases_held(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_items_are_left_for_replica_consumers_without_counting_a_delivery() {
    let running = start().await;
    let url = format!("tcp://{}/vault", running.address);
    let remote_registry = registry(&running).await;
    let config = QueueConfig { lease: Duration::from_secs(60), ..QueueConfig::default() };
    let remote = remote_registry.queue(&url, "sealed", config).await.unwrap();
    let plain: Vec<PrimaryKey> = remote.push_many(["one".to_string(), "two".to_string()]).await.unwrap();

    // From now on the queue's items are encrypted under a key only `holder` has.
    let read_key = ReadKey::generate().unwrap();
    let mut holder = AteSession::new("holder");
    holder.add_user_read_key(read_key.clone());
    let replica_registry = registry(&running).await;
    let replica = replica_registry.open(&url).await.unwrap();
    let sealed = Queue::new(&replica, &holder, "sealed", config);
    let mut dio = replica.dio(&holder).await;
    dio.set_authority(&sealed.items_key(), WriteAuthority::Inherit, ReadAuthority::Specific(read_key.id())).unwrap();
    dio.commit().await.unwrap();
    let secret = sealed.push("the combination is 1234".to_string()).await.unwrap();
    // A plaintext push under the read authority is refused by the server.
    let pushed = remote.push("three".to_string()).await;
    assert!(matches!(pushed, Err(AteError::Remote { failure: RemoteFailure::Rejected, .. })), "{pushed:?}");

    // The consumer without a replica gets the plaintext items...
    let batch = remote.take_many::<String>(10).await.unwrap();
    let keys: Vec<PrimaryKey> = batch.iter().map(|delivery| delivery.key).collect();
    assert_eq!(keys, plain);
    assert_eq!(remote.ack_many(batch).await.unwrap(), 2);
    // ... and a typed refusal once only the encrypted one is left.
    let refused = remote.take::<String>().await;
    assert!(matches!(refused, Err(AteError::NoReadAccess { key, .. }) if key == secret), "{refused:?}");
    let refused_again = remote.take::<String>().await;
    assert!(matches!(refused_again, Err(AteError::NoReadAccess { .. })), "{refused_again:?}");
    // Nothing was leased for it: a consumer that can read it gets its first delivery.
    let delivery = sealed.take::<String>().await.unwrap().expect("the encrypted item is free");
    assert_eq!((delivery.value.as_str(), delivery.deliveries), ("the combination is 1234", 1));
    sealed.ack(delivery).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_leases_only_what_fits_in_its_reply() {
    let running = start().await;
    let url = format!("tcp://{}/large", running.address);
    let config = QueueConfig { lease: Duration::from_secs(60), ..QueueConfig::default() };
    let queue = registry(&running).await.queue(&url, "blobs", config).await.unwrap();
    // 12 items of 384 KiB: a reply carries about 1 MiB of records.
    let blobs: Vec<Vec<u8>> = (0..12u8).map(|index| vec![index; 384 << 10]).collect();
    let pushed = queue.push_many(blobs).await.unwrap();
    let first = queue.take_many::<Vec<u8>>(12).await.unwrap();
    assert!(!first.is_empty() && first.len() < 12, "{} items in one reply", first.len());
    let owner = owner_chain(&running, "large").await;
    assert_eq!(owner.leases_held(), first.len(), "only what was sent is leased");
    let mut taken = first.len();
    assert_eq!(queue.ack_many(first).await.unwrap(), taken);
    while taken < 12 {
        let batch = queue.take_many::<Vec<u8>>(12).await.unwrap();
        assert!(!batch.is_empty());
        assert!(batch.iter().all(|delivery| delivery.deliveries == 1), "an item left out was counted as delivered");
        assert_eq!(batch[0].key, pushed[taken], "oldest first");
        assert_eq!(batch[0].value, vec![taken as u8; 384 << 10]);
        taken += batch.len();
        let count = batch.len();
        assert_eq!(queue.ack_many(batch).await.unwrap(), count);
    }
    assert_eq!(taken, 12);
}

/// A take looks through a bounded number of candidates, oldest first. The
/// items before where the last take stopped are all held, so a take starts
/// there: a long backlog of held items does not hide the free ones behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_items_behind_a_long_run_of_held_ones_are_taken() {
    let running = start().await;
    let url = format!("tcp://{}/backlog", running.address);
    let config = QueueConfig { lease: Duration::from_secs(60), ..QueueConfig::default() };
    let registry = registry(&running).await;
    let slow = registry.queue(&url, "jobs", config).await.unwrap();
    let pushed = slow.push_many(0..3000u32).await.unwrap();
    // A consumer holds the oldest 2,100 items (more than one small take
    // looks through: 16 pages of 64 candidates).
    let mut held = Vec::new();
    while held.len() < 2100 {
        let batch = slow.take_many::<u32>(100).await.unwrap();
        assert_eq!(batch.first().map(|delivery| delivery.key), Some(pushed[held.len()]), "oldest first");
        held.extend(batch);
    }
    let fresh = registry.queue(&url, "jobs", config).await.unwrap();
    for (expected, &key) in pushed.iter().enumerate().skip(2100).take(5) {
        let taken = fresh.take_many::<u32>(1).await.unwrap();
        assert_eq!(taken.len(), 1, "item {expected} is free but was not found");
        assert_eq!((taken[0].key, taken[0].value), (key, expected as u32));
        fresh.ack_many(taken).await.unwrap();
    }
    // A released item before the rest is found again at once.
    let released = held.remove(7);
    let key = released.key;
    slow.release(released).await.unwrap();
    let again = fresh.take_many::<u32>(1).await.unwrap();
    assert_eq!(again.iter().map(|delivery| (delivery.key, delivery.deliveries)).collect::<Vec<_>>(), vec![(key, 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_or_foreign_records_from_the_owner_are_typed_errors() {
    let running = start().await;
    let url = format!("tcp://{}/checks", running.address);
    let queue = registry(&running).await.queue(&url, "a", QueueConfig::default()).await.unwrap();
    let key = queue.push(5u32).await.unwrap();
    let owner = owner_chain(&running, "checks").await;
    let record = owner.record_bytes(&key).unwrap().to_vec();
    let spec = QueueSpec::new("a", QueueConfig::default());
    let until = Instant::now() + Duration::from_secs(1);
    match spec.taken_item::<u32>(&record, 1, 3, until).unwrap() {
        TakenItem::Deliver(delivery) => assert_eq!((delivery.key, delivery.value, delivery.lease_token()), (key, 5, 3)),
        other => panic!("expected a delivery, got {other:?}"),
    }
    let refused = |result: ate::Result<TakenItem<u32>>| {
        matches!(result, Err(AteError::Remote { failure: RemoteFailure::Refused, .. }))
    };
    // Every byte flipped in turn: a typed refusal or (a flip in the frame's
    // padding) the same delivery, never a panic.
    for at in 0..record.len() {
        let mut damaged = record.clone();
        damaged[at] ^= 0x40;
        match spec.taken_item::<u32>(&damaged, 1, 3, until) {
            Ok(TakenItem::Deliver(delivery)) => assert_eq!((delivery.key, delivery.value), (key, 5), "byte {at}"),
            result => assert!(refused(result), "byte {at}"),
        }
    }
    assert!(refused(spec.taken_item::<u32>(&record[..record.len() / 2], 1, 3, until)));
    assert!(refused(spec.taken_item::<u32>(&[], 1, 3, until)));
    // Another queue's item is not this queue's to deliver.
    let other = QueueSpec::new("b", QueueConfig::default());
    assert!(refused(other.taken_item::<u32>(&record, 1, 3, until)));
}
