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
    assert_eq!(pushed.len(), 40);
    assert_eq!(producer.push_many(Vec::<u32>::new()).await.unwrap(), Vec::new());

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
            assert!(batch.len() <= 6);
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
async fn poison_and_overdelivered_items_go_to_the_dead_letters_and_encrypted_ones_are_given_back() {
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
    assert!(matches!(queue.ack(delivery).await, Err(AteError::LeaseLost { .. })));
    assert_eq!(owner.leases_held(), 0);

    // Encrypted items need a replica's trust state: refused, and given back
    // at once for a consumer that can read them.
    let read_key = ReadKey::generate().unwrap();
    let mut holder = AteSession::new("holder");
    holder.add_user_read_key(read_key.clone());
    let replica_registry = registry(&running).await;
    let replica = replica_registry.open(&url).await.unwrap();
    let config = QueueConfig { lease: Duration::from_secs(60), ..QueueConfig::default() };
    let sealed = Queue::new(&replica, &holder, "sealed", config);
    let mut dio = replica.dio(&holder).await;
    dio.set_authority(&sealed.items_key(), WriteAuthority::Inherit, ReadAuthority::Specific(read_key.id())).unwrap();
    dio.commit().await.unwrap();
    let secret = sealed.push("the combination is 1234".to_string()).await.unwrap();
    assert!(owner.record_bytes(&secret).is_some());
    let refused = remote_registry.queue(&url, "sealed", config).await.unwrap().take::<String>().await;
    assert!(matches!(refused, Err(AteError::NoReadAccess { key, .. }) if key == secret), "{refused:?}");
    let delivery = sealed.take::<String>().await.unwrap().expect("the refused item was given back");
    assert_eq!(delivery.value, "the combination is 1234");
    sealed.ack(delivery).await.unwrap();
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
