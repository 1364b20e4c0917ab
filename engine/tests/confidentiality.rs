//! Read authority: payloads encrypted under node keys, inherited read access
//! at depth, changing a parent's read key without rewriting children,
//! sharing through ML-KEM, making data public, and crypto-shredding.

mod common;

use ate::crypto::{PrivateEncryptKey, ReadKey};
use ate::prelude::*;
use ate::trust::{ReadAuthority, WriteAuthority};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Secret {
    text: String,
}

fn secret(text: &str) -> Secret {
    Secret { text: text.into() }
}

fn reader(keys: &[&ReadKey]) -> AteSession {
    let mut session = AteSession::new("reader");
    for key in keys {
        session.add_user_read_key((*key).clone());
    }
    session
}

fn segment_bytes(chain: &Chain) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(chain.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "seg") {
            all.extend(std::fs::read(path).unwrap());
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_children_at_depth_and_parent_key_changes_without_rewrites() {
    let dir = tempfile::tempdir().unwrap();
    let chain = common::open(dir.path()).await.unwrap();
    let first = ReadKey::generate().unwrap();
    let second = ReadKey::generate().unwrap();
    let mut dio = chain.dio(&reader(&[&first, &second])).await;
    let top = *dio.store(secret("top")).unwrap().key();
    dio.set_authority(&top, WriteAuthority::Inherit, ReadAuthority::Specific(first.id())).unwrap();
    let middle = *dio.store_child(&top, secret("middle")).unwrap().key();
    let lower = *dio.store_child(&middle, secret("lower")).unwrap().key();
    let deep = *dio.store_child(&lower, secret("needle in the haystack")).unwrap().key();
    dio.commit().await.unwrap();
    assert!(
        !segment_bytes(&chain).windows(22).any(|w| w == b"needle in the haystack"),
        "plaintext of an encrypted object reached the disk"
    );

    // Holder of `first` reads depth 4; a session without it gets a clear error.
    let mut holder = chain.dio(&reader(&[&first])).await;
    assert_eq!(holder.load::<Secret>(&deep).await.unwrap().text, "needle in the haystack");
    let mut outsider = chain.dio(&reader(&[&ReadKey::generate().unwrap()])).await;
    let error = outsider.load::<Secret>(&deep).await.unwrap_err();
    assert!(matches!(error, AteError::NoReadAccess { key, .. } if key == deep), "{error}");
    let mut anonymous = chain.dio(&AteSession::default()).await;
    assert!(matches!(anonymous.load::<Secret>(&top).await, Err(AteError::NoReadAccess { .. })));

    // Move the top to `second`: children are not rewritten, yet holders of
    // `second` read every level.
    let before = chain.next_sequence();
    dio.set_authority(&top, WriteAuthority::Inherit, ReadAuthority::Specific(second.id())).unwrap();
    dio.commit().await.unwrap();
    assert_eq!(chain.next_sequence() - before, 1, "only the authority event is written");
    drop((dio, holder, outsider, anonymous, chain));
    let chain = common::open(dir.path()).await.unwrap();
    let mut second_only = chain.dio(&reader(&[&second])).await;
    for (key, text) in [(top, "top"), (middle, "middle"), (lower, "lower"), (deep, "needle in the haystack")] {
        assert_eq!(second_only.load::<Secret>(&key).await.unwrap().text, text);
    }
    // New children written now are readable with `second` too.
    let mut writer = chain.dio(&reader(&[&second])).await;
    let newer = *writer.store_child(&deep, secret("newer")).unwrap().key();
    writer.commit().await.unwrap();
    assert_eq!(second_only.load::<Secret>(&newer).await.unwrap().text, "newer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_ciphertext_is_an_error_not_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let chain = common::open(dir.path()).await.unwrap();
    let key = ReadKey::generate().unwrap();
    let mut dio = chain.dio(&reader(&[&key])).await;
    let object = *dio.store(secret("x".repeat(200).as_str())).unwrap().key();
    dio.set_authority(&object, WriteAuthority::Inherit, ReadAuthority::Specific(key.id())).unwrap();
    dio.commit().await.unwrap();
    let path = chain.path().join("00000000000000000000.seg");
    drop((dio, chain));
    // Flip a byte of the payload and fix up the record checksum, as an
    // attacker with disk access would: the AEAD still catches it.
    let mut bytes = std::fs::read(&path).unwrap();
    let mut offset = 128;
    let mut patched = false;
    while offset + 16 < bytes.len() {
        let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        if len > 184 + 200 {
            let target = offset + 16 + len - 5;
            bytes[target] ^= 1;
            let crc = crc32c_of(&bytes[offset + 8..offset + 16 + len]);
            bytes[offset + 4..offset + 8].copy_from_slice(&crc.to_le_bytes());
            patched = true;
        }
        offset += (16 + len).div_ceil(16) * 16;
    }
    assert!(patched);
    std::fs::write(&path, &bytes).unwrap();
    // The payload hash in the header no longer matches: recovery refuses the
    // tail as corrupt rather than serving altered data.
    let error = common::open(dir.path()).await.unwrap_err();
    assert!(matches!(error, AteError::Corrupt { .. }), "{error}");
}

fn crc32c_of(bytes: &[u8]) -> u32 {
    // CRC32C (Castagnoli), bitwise: slow but independent of the engine's code.
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_keys_are_granted_through_ml_kem() {
    let dir = tempfile::tempdir().unwrap();
    let chain = common::open(dir.path()).await.unwrap();
    let group_key = ReadKey::generate().unwrap();
    let mut alice = chain.dio(&reader(&[&group_key])).await;
    let record = *alice.store(secret("for the group")).unwrap().key();
    alice.set_authority(&record, WriteAuthority::Inherit, ReadAuthority::Specific(group_key.id())).unwrap();
    alice.commit().await.unwrap();

    // Bob publishes his ML-KEM public key; Alice seals the group key to it.
    let bob_kem = PrivateEncryptKey::generate();
    let grant = bob_kem.public().wrap_read_key(&group_key).unwrap();
    let grant_key = *alice.store(grant).unwrap().key();
    alice.commit().await.unwrap();

    let mut bob_session = AteSession::new("bob");
    bob_session.add_user_private_read_key(bob_kem.clone());
    let mut bob = chain.dio(&bob_session).await;
    assert!(matches!(bob.load::<Secret>(&record).await, Err(AteError::NoReadAccess { .. })));
    let grant = bob.load::<ate::crypto::EncryptedReadKey>(&grant_key).await.unwrap();
    let unwrapped = bob_session.private_read_key(&grant.recipient).unwrap().unwrap_read_key(&grant).unwrap();
    bob_session.add_user_read_key(unwrapped);
    let mut bob = chain.dio(&bob_session).await;
    assert_eq!(bob.load::<Secret>(&record).await.unwrap().text, "for the group");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn making_a_node_public_keeps_old_ciphertexts_readable() {
    let dir = tempfile::tempdir().unwrap();
    let chain = common::open(dir.path()).await.unwrap();
    let key = ReadKey::generate().unwrap();
    let mut dio = chain.dio(&reader(&[&key])).await;
    let parent = *dio.store(secret("parent")).unwrap().key();
    dio.set_authority(&parent, WriteAuthority::Inherit, ReadAuthority::Specific(key.id())).unwrap();
    let child = *dio.store_child(&parent, secret("once private")).unwrap().key();
    dio.commit().await.unwrap();
    dio.set_authority(&parent, WriteAuthority::Inherit, ReadAuthority::Everyone).unwrap();
    dio.commit().await.unwrap();
    let mut anyone = chain.dio(&AteSession::default()).await;
    assert_eq!(anyone.load::<Secret>(&child).await.unwrap().text, "once private");
    // New children of a public parent are stored in plaintext.
    let plain = *dio.store_child(&parent, secret("plain from now on")).unwrap().key();
    dio.commit().await.unwrap();
    assert_eq!(chain.get(&plain).unwrap().header.read_key_id, [0u8; 32]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroying_the_read_key_crypto_shreds_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let chain = common::open(dir.path()).await.unwrap();
    let doomed = ReadKey::generate().unwrap();
    let keys: Vec<PrimaryKey> = {
        let mut dio = chain.dio(&reader(&[&doomed])).await;
        let folder = *dio.store(secret("folder")).unwrap().key();
        dio.set_authority(&folder, WriteAuthority::Inherit, ReadAuthority::Specific(doomed.id())).unwrap();
        let mut keys = vec![folder];
        for index in 0..10 {
            keys.push(*dio.store_child(&folder, secret(&format!("personal data {index}"))).unwrap().key());
        }
        dio.commit().await.unwrap();
        keys
    };
    // Every copy of the key is destroyed (dropped and zeroized).
    drop(doomed);
    drop(chain);
    let chain = common::open(dir.path()).await.unwrap();
    let mut dio = chain.dio(&reader(&[&ReadKey::generate().unwrap()])).await;
    for key in &keys {
        assert!(matches!(dio.load::<Secret>(key).await, Err(AteError::NoReadAccess { .. })));
    }
    // The chain itself is intact: every event is still there and reopens.
    assert_eq!(chain.len(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_read_key_locks_the_old_one_out_of_new_data() {
    let dir = tempfile::tempdir().unwrap();
    let chain = common::open(dir.path()).await.unwrap();
    let old = ReadKey::generate().unwrap();
    let new = ReadKey::generate().unwrap();
    let mut owner = chain.dio(&reader(&[&old, &new])).await;
    let folder = *owner.store(secret("folder")).unwrap().key();
    owner.set_authority(&folder, WriteAuthority::Inherit, ReadAuthority::Specific(old.id())).unwrap();
    let before = *owner.store_child(&folder, secret("written under the old key")).unwrap().key();
    owner.commit().await.unwrap();
    owner.set_authority(&folder, WriteAuthority::Inherit, ReadAuthority::Specific(new.id())).unwrap();
    owner.commit().await.unwrap();
    let after = *owner.store_child(&folder, secret("written after the change")).unwrap().key();
    owner.commit().await.unwrap();

    let mut revoked = chain.dio(&reader(&[&old])).await;
    assert_eq!(revoked.load::<Secret>(&before).await.unwrap().text, "written under the old key");
    assert!(matches!(revoked.load::<Secret>(&after).await, Err(AteError::NoReadAccess { .. })));
    let mut current = chain.dio(&reader(&[&new])).await;
    assert_eq!(current.load::<Secret>(&before).await.unwrap().text, "written under the old key");
    assert_eq!(current.load::<Secret>(&after).await.unwrap().text, "written after the change");
    chain.verify().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_under_a_read_authority_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let chain = common::open(dir.path()).await.unwrap();
    let key = ReadKey::generate().unwrap();
    let mut dio = chain.dio(&reader(&[&key])).await;
    let folder = *dio.store(secret("folder")).unwrap().key();
    dio.set_authority(&folder, WriteAuthority::Inherit, ReadAuthority::Specific(key.id())).unwrap();
    dio.commit().await.unwrap();
    // A raw append that skips the DIO's encryption is refused by the chain.
    let mut leak = NewEvent::data(PrimaryKey::generate(), b"in the clear".to_vec());
    leak.parent = Some((folder, CollectionId::default()));
    let error = chain.append(vec![leak], None).await.unwrap_err();
    assert!(
        matches!(error, AteError::Rejected { reason: ate::trust::RejectReason::NotEncrypted { .. }, .. }),
        "{error}"
    );
}
