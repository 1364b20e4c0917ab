//! Write authority: root keys, inheritance at depth, frozen objects, signed
//! atomic commits, forged signatures, replays and timestamps.

mod common;

use ate::crypto::PrivateSignKey;
use ate::format::EventKind;
use ate::prelude::*;
use ate::trust::{sign_commit, ReadAuthority, RejectReason, WriteAuthority};
use std::sync::Arc;

use common::session_with;

fn key() -> PrivateSignKey {
    common::signing_key()
}

async fn chain_with_root(dir: &std::path::Path, root: &PrivateSignKey) -> Arc<Chain> {
    common::open_rooted(common::small_config(dir), root.public(), "trusted").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roots_need_a_root_key_and_commits_are_signed() {
    let dir = tempfile::tempdir().unwrap();
    let root = key();
    let chain = chain_with_root(dir.path(), &root).await;

    let mut stranger = chain.dio(&session_with(&[&key()])).await;
    stranger.store("nope".to_string()).unwrap();
    assert!(matches!(stranger.commit().await, Err(AteError::NoWriteAccess { .. })));

    let mut owner = chain.dio(&session_with(&[&root])).await;
    let object = *owner.store("hello".to_string()).unwrap().key();
    owner.commit().await.unwrap();
    // Root keys are known from the chain's configuration: data + signature.
    assert_eq!(chain.next_sequence(), 2);
    owner.store("again".to_string()).unwrap();
    owner.commit().await.unwrap();
    assert_eq!(chain.next_sequence(), 4);
    assert_eq!(*owner.load::<String>(&object).await.unwrap(), "hello");

    // An unsigned raw append of a root object is rejected by validation.
    let error = chain.append(vec![NewEvent::data(PrimaryKey::generate(), b"x".to_vec())], None).await.unwrap_err();
    assert!(matches!(error, AteError::Rejected { index: 0, reason: RejectReason::Unauthorized { .. }, .. }), "{error}");
    assert_eq!(chain.next_sequence(), 4);

    // After a reopen, the published key and the rules still hold.
    drop((owner, stranger, chain));
    let chain = chain_with_root(dir.path(), &root).await;
    let mut owner = chain.dio(&session_with(&[&root])).await;
    owner.store("after reopen".to_string()).unwrap();
    owner.commit().await.unwrap();
    assert_eq!(chain.next_sequence(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inherited_write_authority_changes_reach_depth_four() {
    let dir = tempfile::tempdir().unwrap();
    let root = key();
    let first = key();
    let second = key();
    let chain = chain_with_root(dir.path(), &root).await;
    let all = session_with(&[&root, &first, &second]);
    let mut dio = chain.dio(&all).await;
    let a = *dio.store("a".to_string()).unwrap().key();
    dio.set_authority(&a, WriteAuthority::Specific(vec![first.id()]), ReadAuthority::Inherit).unwrap();
    dio.commit().await.unwrap();
    let b = *dio.store_child(&a, "b".to_string()).unwrap().key();
    dio.commit().await.unwrap();
    let c = *dio.store_child(&b, "c".to_string()).unwrap().key();
    dio.commit().await.unwrap();

    // Depth 4 inherits `first`: only it may add children.
    let mut with_first = chain.dio(&session_with(&[&first])).await;
    let d = *with_first.store_child(&c, "d".to_string()).unwrap().key();
    let before = chain.next_sequence();
    with_first.commit().await.unwrap();
    assert_eq!(chain.next_sequence() - before, 2, "data + signature: `first` was published when it first signed (b)");
    let mut with_second = chain.dio(&session_with(&[&second])).await;
    with_second.store_child(&d, "e".to_string()).unwrap();
    assert!(matches!(with_second.commit().await, Err(AteError::NoWriteAccess { .. })));
    with_second.cancel();

    // Re-authorise the top with `second`: no child is rewritten, and depth 4 follows.
    let mut change = chain.dio(&session_with(&[&first])).await;
    change.set_authority(&a, WriteAuthority::Specific(vec![second.id()]), ReadAuthority::Inherit).unwrap();
    change.commit().await.unwrap();
    let before = chain.next_sequence();
    let mut loaded = with_second.load::<String>(&d).await.unwrap();
    loaded.push('!');
    with_second.update(&loaded).unwrap();
    with_second.commit().await.unwrap();
    assert!(chain.next_sequence() > before);
    let mut with_first = chain.dio(&session_with(&[&first])).await;
    with_first.store_child(&d, "f".to_string()).unwrap();
    assert!(matches!(with_first.commit().await, Err(AteError::NoWriteAccess { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_object_rejects_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let root = key();
    let chain = chain_with_root(dir.path(), &root).await;
    let session = session_with(&[&root]);
    let mut dio = chain.dio(&session).await;
    let frozen = *dio.store("frozen".to_string()).unwrap().key();
    dio.commit().await.unwrap();
    dio.set_authority(&frozen, WriteAuthority::Nobody, ReadAuthority::Inherit).unwrap();
    dio.commit().await.unwrap();

    let before = chain.next_sequence();
    let fresh = *dio.store("new".to_string()).unwrap().key();
    let mut value = dio.load::<String>(&frozen).await.unwrap();
    value.push('!');
    dio.update(&value).unwrap();
    let error = dio.commit().await.unwrap_err();
    assert!(matches!(error, AteError::Rejected { reason: RejectReason::Frozen, .. }), "{error}");
    assert_eq!(chain.next_sequence(), before);
    assert!(chain.get(&fresh).is_none(), "part of a rejected batch is visible");
}

/// Builds a commit by hand: data events, then a signature by `signer`
/// claiming to be `claimed` (the same key for an honest signature).
fn signed_commit(chain: &Chain, signer: &PrivateSignKey, publish: &PrivateSignKey, objects: usize) -> Vec<NewEvent> {
    let timestamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
    let mut events = Vec::new();
    let mut public = NewEvent::new(PrimaryKey::generate(), EventKind::PublicKey, publish.public().encode());
    public.timestamp_us = timestamp;
    events.push(public);
    for index in 0..objects {
        let mut event = NewEvent::data(PrimaryKey::generate(), format!("object {index}").into_bytes());
        event.timestamp_us = timestamp;
        event.nonce = [index as u8 + 1; 12];
        events.push(event);
    }
    let contents: Vec<_> = events.iter().map(|e| e.content(blake3::hash(&e.payload).into(), timestamp)).collect();
    let mut signature = sign_commit(&chain_id(chain), signer, &contents);
    signature.key_id = publish.id();
    let mut event = NewEvent::new(events[0].key, EventKind::Signature, postcard::to_stdvec(&signature).unwrap());
    event.timestamp_us = timestamp;
    events.push(event);
    events
}

fn chain_id(chain: &Chain) -> [u8; 32] {
    chain.key().chain_id()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_signatures_are_rejected_and_replays_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let root = key();
    let chain = chain_with_root(dir.path(), &root).await;

    // Signed by another key but claiming to be the root key.
    let forger = key();
    let forged = signed_commit(&chain, &forger, &root, 2);
    let error = chain.append(forged, None).await.unwrap_err();
    assert!(matches!(error, AteError::Rejected { reason: RejectReason::BadSignature { .. }, .. }), "{error}");
    assert_eq!(chain.next_sequence(), 0);

    // Honest, then tampered after signing.
    let honest = signed_commit(&chain, &root, &root, 2);
    let mut tampered = honest.clone();
    tampered[1].payload = b"changed".to_vec();
    let error = chain.append(tampered, None).await.unwrap_err();
    assert!(matches!(error, AteError::Rejected { index: 3, reason: RejectReason::SignatureMismatch, .. }), "{error}");

    let receipt = chain.append(honest.clone(), None).await.unwrap();
    let again = chain.append(honest.clone(), None).await.unwrap();
    assert_eq!(receipt, again, "a replayed commit is acknowledged with its original sequences");
    assert_eq!(chain.next_sequence(), receipt.last_sequence + 1, "a replay wrote something");

    // Reusing an old event in a new commit needs a new signature by an
    // authorised key: that is a new write, not a replay, and it is accepted.
    let mut mixed = signed_commit(&chain, &root, &root, 1);
    mixed[1] = honest[1].clone();
    let contents: Vec<_> =
        mixed[..2].iter().map(|e| e.content(blake3::hash(&e.payload).into(), e.timestamp_us)).collect();
    let signature = sign_commit(&chain_id(&chain), &root, &contents);
    mixed[2].payload = postcard::to_stdvec(&signature).unwrap();
    let fresh = chain.append(mixed, None).await.unwrap();
    assert!(fresh.first_sequence > receipt.last_sequence);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_far_from_now_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let root = key();
    let chain = chain_with_root(dir.path(), &root).await;
    let hour_us = 3_600_000_000u64;
    for (shift, future) in [(hour_us, true), (hour_us, false)] {
        let mut events = signed_commit(&chain, &root, &root, 1);
        let moved = if future { events[0].timestamp_us + shift } else { events[0].timestamp_us - shift };
        for event in &mut events {
            event.timestamp_us = moved;
        }
        let contents: Vec<_> = events[..2].iter().map(|e| e.content(blake3::hash(&e.payload).into(), moved)).collect();
        let signature = sign_commit(&chain_id(&chain), &root, &contents);
        events[2].payload = postcard::to_stdvec(&signature).unwrap();
        let error = chain.append(events, None).await.unwrap_err();
        if future {
            // The timestamp validator refuses clocks running ahead.
            assert!(
                matches!(error, AteError::Rejected { reason: RejectReason::TimestampOutOfRange { .. }, .. }),
                "{error}"
            );
        } else {
            // An old signed commit could be a replay: refused by the trust core itself.
            assert!(matches!(error, AteError::Rejected { reason: RejectReason::Stale { .. }, .. }), "{error}");
        }
    }
    assert_eq!(chain.next_sequence(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_an_object_needs_authority_where_it_lands() {
    let dir = tempfile::tempdir().unwrap();
    let root = key();
    let guarded_key = key();
    let chain = chain_with_root(dir.path(), &root).await;
    let mut owner = chain.dio(&session_with(&[&root, &guarded_key])).await;
    let open_folder = *owner.store("open".to_string()).unwrap().key();
    owner.set_authority(&open_folder, WriteAuthority::Everyone, ReadAuthority::Inherit).unwrap();
    let guarded = *owner.store("guarded".to_string()).unwrap().key();
    owner.set_authority(&guarded, WriteAuthority::Specific(vec![guarded_key.id()]), ReadAuthority::Inherit).unwrap();
    owner.commit().await.unwrap();

    // Anyone may add to the open folder...
    let mut stranger = chain.dio(&AteSession::default()).await;
    let item = *stranger.store_child(&open_folder, "item".to_string()).unwrap().key();
    stranger.commit().await.unwrap();
    // ...but not move that item into the guarded one.
    let mut raw = NewEvent::data(item, postcard::to_stdvec(&"moved".to_string()).unwrap());
    raw.parent = Some((guarded, CollectionId::default()));
    let error = chain.append(vec![raw], None).await.unwrap_err();
    assert!(matches!(error, AteError::Rejected { reason: RejectReason::Unauthorized { .. }, .. }), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_key_has_no_power_in_distributed_mode() {
    let dir = tempfile::tempdir().unwrap();
    let root = key();
    let server = key();
    let chain = ChainBuilder::new(&common::small_config(dir.path()))
        .await
        .add_root_public_key(root.public())
        .server_key(server.clone())
        .build()
        .open(&ChainKey::from("trusted"))
        .await
        .unwrap();
    // Signed by the server key alone: not a root key, so refused in distributed mode.
    let events = signed_commit(&chain, &server, &server, 1);
    let error = chain.append(events, None).await.unwrap_err();
    assert!(matches!(error, AteError::Rejected { reason: RejectReason::Unauthorized { .. }, .. }), "{error}");
}
