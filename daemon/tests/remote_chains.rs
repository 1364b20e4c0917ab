//! Applications on different machines share chains through `atedb` with
//! the embedded API: `Registry::open("tcp://…/chain")` gives a `Chain`
//! whose DIO, bus, consumers, queues and services behave as locally, over
//! real TCP + TLS on loopback.

mod common;

use ate::crypto::ReadKey;
use ate::messaging::{invoke, serve, Message, Queue, QueueConfig, StartAt};
use ate::prelude::*;
use ate::trust::{ReadAuthority, WriteAuthority};
use ate_client::registry::{Registry, RegistryConfig, ReplicaStorage, ServerTrust};
use atedb::server::DataDirectory;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::time::Duration;

use common::{start, Running};

fn config(data: &DataDirectory, fingerprint: &str) -> RegistryConfig {
    let token = std::fs::read_to_string(data.admin_token()).unwrap();
    RegistryConfig::new(token, ServerTrust::Fingerprint(fingerprint.to_string()))
}

async fn registry(running: &Running) -> Registry {
    Registry::new(config(&running.data, &running.fingerprint)).await
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    item: String,
    quantity: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Quote {
    item: String,
}

impl Message for Quote {
    const TYPE_NAME: &'static str = "test.Quote/v1";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_applications_share_a_chain_through_the_dio_bus_and_encryption() {
    let running = start().await;
    let url = format!("tcp://{}/shop", running.address);
    let (alice_registry, bob_registry) = (registry(&running).await, registry(&running).await);
    let alice = alice_registry.open(&url).await.unwrap();
    let bob = bob_registry.open(&url).await.unwrap();
    let session = AteSession::default();

    // Bob listens; Alice writes; Bob's replica receives it live.
    let mut changes = bob.subscribe(&session, StartAt::Now).unwrap();
    let mut dio = alice.dio(&session).await;
    let key = *dio.store(Order { item: "coffee".into(), quantity: 2 }).unwrap().key();
    dio.commit().await.unwrap();
    let event = changes.next().await.unwrap();
    assert_eq!(event.key, key);
    let mut bobs = bob.dio(&session).await;
    let mut order = bobs.load::<Order>(&key).await.unwrap();
    assert_eq!(order.quantity, 2);

    // Optimistic concurrency across applications: the second writer of the
    // same version gets a typed conflict naming the object.
    let mut late = alice.dio(&session).await;
    let mut stale = late.load::<Order>(&key).await.unwrap();
    order.quantity = 3;
    bobs.update(&order).unwrap();
    bobs.commit().await.unwrap();
    stale.quantity = 9;
    late.update(&stale).unwrap();
    match late.commit().await {
        Err(AteError::Conflict { key: conflicted }) => assert_eq!(conflicted, key),
        other => panic!("expected a conflict, got {other:?}"),
    }

    // Encrypted under a read key only Alice and Carol hold: the server and
    // Bob's replica hold ciphertext, Carol (another process) reads it.
    let read_key = ReadKey::generate().unwrap();
    let mut holder = AteSession::new("alice");
    holder.add_user_read_key(read_key.clone());
    let mut secret = alice.dio(&holder).await;
    let vault = *secret.store("vault".to_string()).unwrap().key();
    secret.set_authority(&vault, WriteAuthority::Inherit, ReadAuthority::Specific(read_key.id())).unwrap();
    secret.commit().await.unwrap();
    let note = *secret.store_child(&vault, "the combination is 1234".to_string()).unwrap().key();
    secret.commit().await.unwrap();
    let carol_registry = registry(&running).await;
    let carol = carol_registry.open(&url).await.unwrap();
    let mut carols = carol.dio(&holder).await;
    assert_eq!(*carols.load::<String>(&note).await.unwrap(), "the combination is 1234");
    bob.wait_applied(alice.next_sequence() - 1).await.unwrap();
    let mut nosy = bob.dio(&session).await;
    assert!(matches!(nosy.load::<String>(&note).await, Err(AteError::NoReadAccess { .. })));

    // Every replica verifies on its own and agrees with the others.
    for replica in [&alice, &bob, &carol] {
        replica.wait_applied(alice.next_sequence() - 1).await.unwrap();
    }
    let heads: HashSet<[u8; 32]> = [&alice, &bob, &carol].iter().map(|c| c.tree_head().unwrap().root).collect();
    assert_eq!(heads.len(), 1);
    assert_eq!(carol.verify().await.unwrap().events, alice.next_sequence());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_consumers_and_services_work_across_applications() {
    let running = start().await;
    let url = format!("tcp://{}/jobs", running.address);
    let (first_registry, second_registry) = (registry(&running).await, registry(&running).await);
    let first = first_registry.open(&url).await.unwrap();
    let second = second_registry.open(&url).await.unwrap();
    let session = AteSession::default();

    // Exactly once: leases live on the server, so two workers in two
    // processes never take the same item.
    let config = QueueConfig { lease: Duration::from_secs(60), ..QueueConfig::default() };
    let producer = Queue::new(&first, &session, "work", config);
    let pushed: HashSet<PrimaryKey> = producer.push_many(0..30u32).await.unwrap().into_iter().collect();
    second.wait_applied(first.next_sequence() - 1).await.unwrap();
    let workers = [Queue::new(&first, &session, "work", config), Queue::new(&second, &session, "work", config)];
    let mut handles = Vec::new();
    for (index, worker) in workers.into_iter().enumerate() {
        handles.push(tokio::spawn(async move {
            let mut done = Vec::new();
            if index == 0 {
                while let Some(delivery) = worker.take::<u32>().await.unwrap() {
                    done.push(delivery.key);
                    worker.ack(delivery).await.unwrap();
                }
            } else {
                // Batches: one lease request and one lease check per batch.
                loop {
                    let batch = worker.take_many::<u32>(5).await.unwrap();
                    if batch.is_empty() {
                        break;
                    }
                    done.extend(batch.iter().map(|delivery| delivery.key));
                    let count = batch.len();
                    assert_eq!(worker.ack_many(batch).await.unwrap(), count, "every lease in the batch was held");
                }
            }
            done
        }));
    }
    let mut taken = Vec::new();
    for handle in handles {
        taken.extend(handle.await.unwrap());
    }
    let unique: HashSet<PrimaryKey> = taken.iter().copied().collect();
    assert_eq!(taken.len(), unique.len(), "an item was delivered twice");
    assert_eq!(unique, pushed);
    // The durable tombstones ended the leases on the server: acknowledging
    // costs no release round trip per item, and the lease table empties.
    let owner = running.server.open_chains().await.into_iter().find(|chain| chain.key().name() == "jobs").unwrap();
    assert_eq!(owner.leases_held(), 0, "acknowledged items left leases behind");

    // A consumer's position is stored on the server: another process
    // resumes where the first one committed.
    let mut dio = first.dio(&session).await;
    for index in 0..3u32 {
        dio.store(index).unwrap();
        dio.commit().await.unwrap();
    }
    let mut billing = first.consumer(&session, "billing").await.unwrap();
    let mut last = 0;
    for _ in 0..3 {
        last = billing.next().await.unwrap().sequence;
    }
    billing.commit(last).await.unwrap();
    drop(billing);
    // The offset commit is the newest event: wait until the other replica has it.
    second.wait_applied(first.next_sequence() - 1).await.unwrap();
    let resumed = second.consumer(&session, "billing").await.unwrap();
    assert_eq!(resumed.committed(), last + 1);

    // A typed service served by one application, invoked by another.
    let service = serve(&first, &session, |quote: Quote| async move {
        if quote.item.is_empty() {
            Err("no item".to_string())
        } else {
            Ok(quote.item.len() as u32 * 100)
        }
    })
    .unwrap();
    let price: u32 =
        invoke::<Quote, u32, String>(&second, &session, Quote { item: "tea".into() }, Duration::from_secs(20))
            .await
            .unwrap();
    assert_eq!(price, 300);
    drop(service);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_replica_reopens_with_what_it_has_and_fetches_only_the_rest() {
    let running = start().await;
    let url = format!("tcp://{}/archive", running.address);
    let replica_dir = tempfile::tempdir().unwrap();
    let mut with_disk = config(&running.data, &running.fingerprint);
    with_disk.replica = ReplicaStorage::Disk(replica_dir.path().to_path_buf());
    let session = AteSession::default();
    {
        let registry = Registry::new(with_disk.clone()).await;
        let chain = registry.open(&url).await.unwrap();
        let mut dio = chain.dio(&session).await;
        for index in 0..10u32 {
            dio.store(index).unwrap();
        }
        dio.commit().await.unwrap();
    }
    // Someone else writes while this client is away.
    let other_registry = registry(&running).await;
    let other = other_registry.open(&url).await.unwrap();
    let mut dio = other.dio(&session).await;
    let late = *dio.store(99u32).unwrap().key();
    dio.commit().await.unwrap();

    let registry = Registry::new(with_disk).await;
    let chain = registry.open(&url).await.unwrap();
    assert_eq!(chain.next_sequence(), other.next_sequence());
    assert_eq!(*chain.dio(&session).await.load::<u32>(&late).await.unwrap(), 99);
    assert_eq!(chain.len(), 11);
    chain.verify().await.unwrap();
}

/// Refusals are errors of `open`, not hangs: a token without the read role,
/// and a disk replica that holds more than the server it is pointed at
/// (whose history would otherwise be spliced onto the replica's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_appends_without_a_replica_and_readers_see_its_events() {
    use ate::RemoteFailure;
    let running = start().await;
    let url = format!("tcp://{}/archive", running.address);
    let trust = ServerTrust::Fingerprint(running.fingerprint.clone());
    // Writing needs no read role: a producer never subscribes.
    let write_only = RegistryConfig::new(running.token(&["write"], Duration::from_secs(60)), trust.clone());
    let producer = std::sync::Arc::new(Registry::new(write_only).await.producer(&url).await.unwrap());
    assert_eq!(producer.chain(), "archive");
    let named = |index: u32| ate_client::cli::named_event(&format!("doc-{index}"), vec![index as u8; 100]).unwrap();
    // Concurrent appends share the connection; each gets its own sequences.
    let mut appends = tokio::task::JoinSet::new();
    for index in 0..8u32 {
        let (producer, events) = (std::sync::Arc::clone(&producer), vec![named(2 * index), named(2 * index + 1)]);
        appends.spawn(async move { producer.append(events, Some(Durability::Sync)).await });
    }
    let mut firsts = Vec::new();
    while let Some(receipt) = appends.join_next().await {
        let receipt = receipt.unwrap().unwrap();
        assert_eq!(receipt.last_sequence, receipt.first_sequence + 1);
        firsts.push(receipt.first_sequence);
    }
    firsts.sort_unstable();
    firsts.dedup();
    assert_eq!(firsts.len(), 8, "every commit has sequences of its own");
    assert!(matches!(producer.append(Vec::new(), None).await, Err(AteError::InvalidInput(_))));

    let reader = registry(&running).await.open(&url).await.unwrap();
    for index in 0..16u32 {
        let stored = ate_client::cli::get(&reader, &format!("doc-{index}")).expect("acknowledged event is there");
        assert_eq!(stored.value, vec![index as u8; 100]);
    }

    // A read-only token may not produce: refused before anything is written.
    let read_only = RegistryConfig::new(running.token(&["read"], Duration::from_secs(60)), trust);
    let refused = Registry::new(read_only).await.producer(&url).await.unwrap().append(vec![named(99)], None).await;
    assert!(matches!(refused, Err(AteError::Remote { failure: RemoteFailure::Forbidden, .. })), "{refused:?}");
    assert!(reader.get(&PrimaryKey::from_name("doc-99")).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_that_cannot_work_fail_instead_of_hanging() {
    use ate::RemoteFailure;
    let running = start().await;
    let write_only = running.token(&["write"], Duration::from_secs(60));
    let registry =
        Registry::new(RegistryConfig::new(write_only, ServerTrust::Fingerprint(running.fingerprint.clone()))).await;
    let refused =
        tokio::time::timeout(Duration::from_secs(20), registry.open(&format!("tcp://{}/jobs", running.address)))
            .await
            .expect("open returns");
    assert!(matches!(refused, Err(AteError::Remote { failure: RemoteFailure::Forbidden, .. })), "{refused:?}");

    // A disk replica of a 3-event chain, pointed at a fresh server that has
    // a chain of the same name with fewer events.
    let replica_dir = tempfile::tempdir().unwrap();
    let mut with_disk = config(&running.data, &running.fingerprint);
    with_disk.replica = ReplicaStorage::Disk(replica_dir.path().to_path_buf());
    {
        let chain =
            Registry::new(with_disk.clone()).await.open(&format!("tcp://{}/ledger", running.address)).await.unwrap();
        let mut dio = chain.dio(&AteSession::default()).await;
        for index in 0..3u32 {
            dio.store(index).unwrap();
            dio.commit().await.unwrap();
        }
    }
    let other = start().await;
    let mut elsewhere = config(&other.data, &other.fingerprint);
    elsewhere.replica = ReplicaStorage::Disk(replica_dir.path().to_path_buf());
    // The first registry's follower lets go of the replica asynchronously.
    let url = format!("tcp://{}/ledger", other.address);
    let mut refused = Err(AteError::Locked { chain: "ledger".into() });
    for _ in 0..100 {
        let registry = Registry::new(elsewhere.clone()).await;
        refused = tokio::time::timeout(Duration::from_secs(20), registry.open(&url)).await.expect("open returns");
        if !matches!(refused, Err(AteError::Locked { .. })) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match refused {
        Err(AteError::Remote { failure: RemoteFailure::Refused, message }) => {
            assert!(message.contains("already holds 3"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_keys_anchor_chains_on_the_server_and_in_every_replica() {
    use ate::crypto::{PrivateSignKey, SignatureScheme};
    use ate::RemoteFailure;
    let root = PrivateSignKey::generate(SignatureScheme::MlDsa44);
    let options = atedb::server::ServerOptions { root_keys: vec![root.public().clone()], ..Default::default() };
    let running = common::start_with(options).await;
    let url = format!("tcp://{}/anchored", running.address);

    // A write token is not enough to write a root object: the server wants the root's signature.
    let anonymous = registry(&running).await.open(&url).await.unwrap();
    let mut dio = anonymous.dio(&AteSession::default()).await;
    dio.store(String::from("unsigned")).unwrap();
    match dio.commit().await {
        Err(AteError::Remote { failure: RemoteFailure::Rejected, message }) => {
            assert!(message.contains("not signed by an authorised key"), "{message}")
        }
        other => panic!("an unsigned root write must be rejected, got {other:?}"),
    }

    // A client that knows the root key signs with it, and its replica checks it.
    let mut anchored = config(&running.data, &running.fingerprint);
    anchored.root_keys = vec![root.public().clone()];
    let chain = Registry::new(anchored).await.open(&url).await.unwrap();
    let mut session = AteSession::default();
    session.add_user_write_key(root.clone());
    let mut dio = chain.dio(&session).await;
    let key = *dio.store(String::from("signed by the root")).unwrap().key();
    dio.commit().await.unwrap();
    assert_eq!(dio.load::<String>(&key).await.unwrap().as_str(), "signed by the root");

    // A replica anchored to another root refuses this history.
    let mut elsewhere = config(&running.data, &running.fingerprint);
    elsewhere.root_keys = vec![PrivateSignKey::generate(SignatureScheme::MlDsa44).public().clone()];
    let refused = tokio::time::timeout(Duration::from_secs(20), Registry::new(elsewhere).await.open(&url))
        .await
        .expect("open returns");
    assert!(refused.is_err(), "a history under another root must not be accepted: {refused:?}");
}
