//! A replica follows an owner chain: it ingests the owner's records only
//! after verifying them, forwards its commits and leases to the owner, and
//! refuses a stream that was tampered with, reordered or forged.

mod common;

use ate::chain::{CommitScope, Upstream, UpstreamFuture};
use ate::crypto::{PrivateSignKey, ReadKey, SignatureScheme};
use ate::messaging::{Queue, QueueConfig};
use ate::prelude::*;
use ate::trust::{ReadAuthority, WriteAuthority};
use ate::CommitReceipt;
use std::sync::Arc;
use std::time::Duration;

/// An owner in the same process, standing in for a server.
#[derive(Debug)]
struct LocalOwner {
    owner: Arc<Chain>,
    deferred: parking_lot::Mutex<Option<AteError>>,
}

impl Upstream for LocalOwner {
    fn commit(&self, events: Vec<NewEvent>, durability: Durability) -> UpstreamFuture<'_, CommitReceipt> {
        Box::pin(self.owner.append(events, Some(durability)))
    }
    fn send(&self, events: Vec<NewEvent>, durability: Durability) -> UpstreamFuture<'_, ()> {
        Box::pin(async move {
            if let Err(error) = self.owner.append(events, Some(durability)).await {
                self.deferred.lock().get_or_insert(error);
            }
            Ok(())
        })
    }
    fn take_deferred_error(&self) -> Option<AteError> {
        self.deferred.lock().take()
    }
    fn flush(&self) -> UpstreamFuture<'_, ()> {
        // `send` above returns only once the owner answered.
        Box::pin(async { Ok(()) })
    }
    fn lease(&self, key: PrimaryKey, token: u64, lease: Duration) -> UpstreamFuture<'_, Option<u32>> {
        Box::pin(self.owner.lease_acquire(key, token, lease))
    }
    fn lease_holds(&self, key: PrimaryKey, token: u64) -> UpstreamFuture<'_, bool> {
        Box::pin(self.owner.lease_holds(key, token))
    }
    fn lease_release(&self, key: PrimaryKey, token: u64, forget: bool) -> UpstreamFuture<'_, bool> {
        Box::pin(self.owner.lease_release(key, token, forget))
    }
}

async fn open(dir: &std::path::Path) -> Arc<Chain> {
    let config = AteConfig { log_path: Some(dir.to_path_buf()), ..AteConfig::default() };
    ChainBuilder::new(&config).await.build().open(&ChainKey::from("shared")).await.unwrap()
}

/// Copies the owner's records into the replica as they become durable,
/// in deliberately awkward batch sizes (commits split across batches).
fn pump(owner: Arc<Chain>, replica: Arc<Chain>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut carry = Vec::new();
        let mut next = replica.next_sequence();
        loop {
            let (records, after) = owner.read_records(next, 700).unwrap();
            if records.is_empty() {
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
            next = after;
            carry.extend_from_slice(&records);
            let used = replica.ingest(&carry).await.unwrap();
            carry.drain(..used);
        }
    })
}

async fn follow(owner_dir: &std::path::Path, replica_dir: &std::path::Path) -> (Arc<Chain>, Arc<Chain>) {
    let owner = open(owner_dir).await;
    let replica = open(replica_dir).await;
    let upstream = Arc::new(LocalOwner { owner: Arc::clone(&owner), deferred: Default::default() });
    replica.attach_upstream(upstream, CommitScope::Full).unwrap();
    (owner, replica)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_through_a_replica_are_sequenced_by_the_owner_and_read_back_verified() {
    let (owner_dir, replica_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (owner, replica) = follow(owner_dir.path(), replica_dir.path()).await;
    let pumping = pump(Arc::clone(&owner), Arc::clone(&replica));

    // Signed and encrypted data written through the replica.
    let writer = PrivateSignKey::generate(SignatureScheme::MlDsa44);
    let read_key = ReadKey::generate().unwrap();
    let mut session = AteSession::new("alice");
    session.add_user_write_key(writer.clone()).add_user_read_key(read_key.clone());
    let mut dio = replica.dio(&session).await;
    let folder = *dio.store("folder".to_string()).unwrap().key();
    dio.set_authority(&folder, WriteAuthority::Specific(vec![writer.id()]), ReadAuthority::Specific(read_key.id()))
        .unwrap();
    dio.commit().await.unwrap();
    let mut keys = Vec::new();
    for index in 0..20 {
        keys.push(*dio.store_child(&folder, format!("secret {index}")).unwrap().key());
        dio.commit().await.unwrap();
    }
    // Full scope: the replica has applied each commit when it returns.
    for (index, key) in keys.iter().enumerate() {
        assert_eq!(*dio.load::<String>(key).await.unwrap(), format!("secret {index}"));
    }
    assert_eq!(replica.next_sequence(), owner.next_sequence());
    assert_eq!(replica.tree_head().unwrap().root, owner.tree_head().unwrap().root);

    // Optimistic concurrency is decided by the owner.
    let mut stale = replica.dio(&session).await;
    let mut first = stale.load::<String>(&keys[0]).await.unwrap();
    let mut other = replica.dio(&session).await;
    let mut same = other.load::<String>(&keys[0]).await.unwrap();
    *same = "changed".into();
    other.update(&same).unwrap();
    other.commit().await.unwrap();
    *first = "lost update".into();
    stale.update(&first).unwrap();
    assert!(matches!(stale.commit().await, Err(AteError::Conflict { .. })));

    // Leases live on the owner: a queue item taken through the replica is
    // not available to a consumer of the owner, and acknowledging removes it.
    let config = QueueConfig { lease: Duration::from_secs(30), ..QueueConfig::default() };
    let remote_queue = Queue::new(&replica, &AteSession::default(), "jobs", config);
    let owner_queue = Queue::new(&owner, &AteSession::default(), "jobs", config);
    remote_queue.push("job".to_string()).await.unwrap();
    let taken = remote_queue.take::<String>().await.unwrap().unwrap();
    assert!(owner_queue.take::<String>().await.unwrap().is_none(), "the owner handed out a leased item");
    remote_queue.ack(taken).await.unwrap();
    assert!(replica.children(&remote_queue.items_key(), CollectionId::default()).is_empty());
    pumping.abort();

    // The replica's files verify on their own, like any chain.
    drop(dio);
    drop((stale, other, remote_queue, owner_queue));
    let report = replica.verify().await.unwrap();
    assert_eq!(report.events, owner.next_sequence());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_scope_returns_before_the_owner_answers_and_reports_rejections_later() {
    let (owner_dir, replica_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let owner = open(owner_dir.path()).await;
    let replica = open(replica_dir.path()).await;
    let upstream = Arc::new(LocalOwner { owner: Arc::clone(&owner), deferred: Default::default() });
    replica.attach_upstream(upstream, CommitScope::Local).unwrap();
    let session = AteSession::default();
    let mut dio = replica.dio(&session).await;
    let key = *dio.store(1u32).unwrap().key();
    dio.commit().await.unwrap();
    // Not ingested yet (no pump): local scope did not wait for it.
    assert!(replica.get(&key).is_none());
    assert!(owner.get(&key).is_some());
    // A commit the owner rejects (too large) is reported by the next one.
    let mut dio = replica.dio(&session).await;
    dio.store(vec![0u8; 17 << 20]).unwrap();
    dio.commit().await.unwrap();
    assert!(matches!(replica.flush().await, Err(AteError::CommitTooLarge { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_reordered_or_forged_streams_are_refused_and_nothing_of_them_is_applied() {
    let (owner_dir, replica_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let owner = open(owner_dir.path()).await;
    let writer = PrivateSignKey::generate(SignatureScheme::MlDsa44);
    let mut session = AteSession::new("owner");
    session.add_user_write_key(writer.clone());
    let mut dio = owner.dio(&session).await;
    let guarded = *dio.store("guarded".to_string()).unwrap().key();
    dio.set_authority(&guarded, WriteAuthority::Specific(vec![writer.id()]), ReadAuthority::Everyone).unwrap();
    dio.commit().await.unwrap();
    for index in 0..3 {
        dio.store(index).unwrap();
        dio.commit().await.unwrap();
    }
    let (records, _) = owner.read_records(0, usize::MAX).unwrap();

    let replica = open(replica_dir.path()).await;
    // One flipped payload byte anywhere: refused.
    let mut tampered = records.clone();
    let last = tampered.len() - 20;
    tampered[last] ^= 1;
    let before = replica.next_sequence();
    let consumed = replica.ingest(&tampered).await;
    assert!(matches!(consumed, Err(AteError::Corrupt { .. })), "{consumed:?}");
    // Commits before the damage were whole and verified: they were applied.
    assert!(replica.next_sequence() > before);
    assert!(replica.next_sequence() < owner.next_sequence());

    // Starting from a sequence the replica is not at: refused.
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = open(fresh_dir.path()).await;
    let (later, _) = owner.read_records(2, usize::MAX).unwrap();
    assert!(matches!(fresh.ingest(&later).await, Err(AteError::Corrupt { .. })));
    assert_eq!(fresh.next_sequence(), 0);

    // A forged commit: well-formed, correctly linked and checksummed, but
    // an unsigned write to an object only `writer` may change.
    let (history, next) = owner.read_records(0, usize::MAX).unwrap();
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(&history);
    let (mut offset, mut last_hash) = (0, [0u8; 32]);
    while let Some(record) = ate::format::decode_record(&aligned, offset).unwrap() {
        last_hash = record.event_hash();
        offset = record.next_offset;
    }
    let payload = b"forged".to_vec();
    let header = ate::format::EventHeader {
        sequence: next,
        timestamp_us: ate::chain::now_us(),
        collection: 0,
        type_tag: 0,
        reserved: 0,
        parent: [0; 16],
        read_key_id: [0; 32],
        nonce: [0; 12],
        reserved_tail: [0; 4],
        payload_len: payload.len() as u32,
        kind: ate::format::EventKind::Data as u8,
        flags: ate::format::EventFlags::COMMIT_END,
        key: *guarded.as_bytes(),
        prev_hash: last_hash,
        payload_hash: blake3::hash(&payload).into(),
    };
    let mut forged = aligned.clone();
    ate::format::encode_record(&mut forged, &header, &payload);
    let follower_dir = tempfile::tempdir().unwrap();
    let follower = open(follower_dir.path()).await;
    let refused = follower.ingest(&forged).await;
    assert!(matches!(refused, Err(AteError::Corrupt { .. })), "{refused:?}");
    assert_eq!(follower.next_sequence(), next, "the honest history was applied, the forgery was not");
    assert_eq!(follower.get(&guarded).unwrap().payload, owner.get(&guarded).unwrap().payload);
}

/// A server that appends a copy of an old signed commit (to roll an object
/// back, or to bring back an old read key) is caught by the replica: the
/// copy is older than the replay window, measured against the log's own
/// time, exactly as the live append measures it against its clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_signed_commit_appended_again_is_refused() {
    let writer = PrivateSignKey::generate(SignatureScheme::MlDsa44);
    let skewed = |dir: &std::path::Path| {
        let config = AteConfig { log_path: Some(dir.to_path_buf()), ..AteConfig::default() };
        let writer = writer.public().clone();
        async move {
            ChainBuilder::new(&config)
                .await
                .timestamp_skew(Duration::from_millis(200))
                .add_root_public_key(&writer)
                .build()
                .open(&ChainKey::from("shared"))
                .await
                .unwrap()
        }
    };
    let owner_dir = tempfile::tempdir().unwrap();
    let owner = skewed(owner_dir.path()).await;
    let mut session = AteSession::default();
    session.add_user_write_key(writer.clone());
    let mut dio = owner.dio(&session).await;
    let balance = *dio.store(100u32).unwrap().key();
    dio.commit().await.unwrap();
    let first_commit_end = owner.next_sequence();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut update = dio.load::<u32>(&balance).await.unwrap();
    *update = 5;
    dio.update(&update).unwrap();
    dio.commit().await.unwrap();
    drop(dio);

    // The honest history, then the first commit's records again on top.
    let (history, next) = owner.read_records(0, usize::MAX).unwrap();
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(&history);
    let mut records = Vec::new();
    let (mut offset, mut last_hash) = (0, [0u8; 32]);
    while let Some(record) = ate::format::decode_record(&aligned, offset).unwrap() {
        if record.sequence() < first_commit_end {
            let header: ate::format::EventHeader = rkyv::deserialize::<_, rkyv::rancor::Error>(record.header).unwrap();
            records.push((header, record.payload.to_vec()));
        }
        last_hash = record.event_hash();
        offset = record.next_offset;
    }
    let mut replayed = aligned.clone();
    for (index, (mut header, payload)) in records.into_iter().enumerate() {
        header.sequence = next + index as u64;
        header.prev_hash = last_hash;
        last_hash = ate::format::encode_record(&mut replayed, &header, &payload);
    }
    let replica_dir = tempfile::tempdir().unwrap();
    let replica = skewed(replica_dir.path()).await;
    match replica.ingest(&replayed).await {
        Err(AteError::Corrupt { reason, .. }) => assert!(reason.contains("replay window"), "{reason}"),
        other => panic!("an old signed commit appended again must be refused, got {other:?}"),
    }
    assert_eq!(replica.next_sequence(), next, "the honest history was applied, the replay was not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_ingested_alike_wherever_the_received_buffer_starts() {
    let owner_dir = tempfile::tempdir().unwrap();
    let owner = open(owner_dir.path()).await;
    for index in 0..20u32 {
        owner
            .append(vec![NewEvent::data(PrimaryKey::from_name(&format!("k{index}")), vec![index as u8; 300])], None)
            .await
            .unwrap();
    }
    let (records, _) = owner.read_records(0, usize::MAX).unwrap();
    // Received buffers are usually 16-byte aligned and ingested in place;
    // one that is not is copied first, never misread.
    for shift in [0usize, 1, 7, 8, 15] {
        let mut buffer = vec![0u8; shift];
        buffer.extend_from_slice(&records);
        let replica_dir = tempfile::tempdir().unwrap();
        let replica = open(replica_dir.path()).await;
        assert_eq!(replica.ingest(&buffer[shift..]).await.unwrap(), records.len(), "shift {shift}");
        assert_eq!(replica.next_sequence(), owner.next_sequence());
        assert_eq!(replica.get(&PrimaryKey::from_name("k19")).unwrap().payload, vec![19u8; 300].as_slice());
    }
}

/// A server that splices records (each well-formed and checksummed) whose
/// hash links do not follow: refused at the first broken link, whether it
/// is inside a commit or where a commit meets the one before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_hash_chain_breaks_is_refused_at_the_break() {
    let owner_dir = tempfile::tempdir().unwrap();
    let owner = open(owner_dir.path()).await;
    for commit in 0..3u8 {
        let events = (0..4u8)
            .map(|index| NewEvent::data(PrimaryKey::from_name(&format!("c{commit}-{index}")), vec![index; 100]))
            .collect();
        owner.append(events, None).await.unwrap();
    }
    let (records, _) = owner.read_records(0, usize::MAX).unwrap();
    let mut offsets = Vec::new();
    let aligned = ate::format::aligned_copy(&records);
    let mut offset = 0;
    while let Some(record) = ate::format::decode_record(&aligned, offset).unwrap() {
        offsets.push(offset);
        offset = record.next_offset;
    }
    assert_eq!(offsets.len(), 12);
    // Record 6 sits inside the second commit; record 8 starts the third.
    for broken in [6usize, 8] {
        let mut spliced = aligned.clone();
        let at = offsets[broken];
        let field = at + ate::format::FRAME_LEN + std::mem::offset_of!(ate::format::ArchivedEventHeader, prev_hash);
        spliced[field] ^= 1;
        let body_len = u32::from_le_bytes(spliced[at..at + 4].try_into().unwrap()) as usize;
        let crc = crc32c::crc32c(&spliced[at + 8..at + ate::format::FRAME_LEN + body_len]);
        spliced[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        let replica_dir = tempfile::tempdir().unwrap();
        let replica = open(replica_dir.path()).await;
        match replica.ingest(&spliced).await {
            Err(AteError::Corrupt { sequence, reason, .. }) => {
                assert_eq!(sequence, Some(broken as u64), "the first broken link is named");
                assert!(reason.contains("hash chain"), "{reason}");
            }
            other => panic!("a broken hash chain must be refused, got {other:?}"),
        }
        // The commits before the broken one were applied, nothing of it.
        assert_eq!(replica.next_sequence(), (broken as u64 / 4) * 4, "record {broken}");
    }
}

/// What a server streams is the stored bytes, whichever segments they span
/// and however the batches are cut: read whole or in pieces, the same
/// bytes, and a replica ingests them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_read_across_segments_are_the_stored_bytes() {
    let owner_dir = tempfile::tempdir().unwrap();
    let config = AteConfig {
        segment_size_bytes: 64 << 10,
        max_commit_bytes: 32 << 10,
        ..common::small_config(owner_dir.path())
    };
    let owner = common::open_with(&config, None).await.unwrap();
    for commit in 0..40u32 {
        let events = (0..3u32)
            .map(|index| NewEvent::data(PrimaryKey::from_name(&format!("k{commit}-{index}")), vec![commit as u8; 3000]))
            .collect();
        owner.append(events, None).await.unwrap();
    }
    assert!(owner.segment_count() > 3, "the records span several segments");
    let (whole, next) = owner.read_records(0, usize::MAX).unwrap();
    assert_eq!(next, owner.next_sequence());
    let mut pieces = Vec::new();
    let mut from = 0;
    while from < next {
        let (piece, after) = owner.read_records(from, 10_000).unwrap();
        assert!(after > from && !piece.is_empty());
        pieces.extend_from_slice(&piece);
        from = after;
    }
    assert_eq!(pieces, whole);
    let replica_dir = tempfile::tempdir().unwrap();
    let replica = open(replica_dir.path()).await;
    assert_eq!(replica.ingest(&whole).await.unwrap(), whole.len());
    assert_eq!(replica.next_sequence(), next);
}
