//! Fixed test vectors of the chain-of-trust formats documented in
//! docs/security.md: content hash, commit root and signing message, payload
//! AAD, AES-256-GCM, read key id and encoding, chain and key ids, and the
//! postcard layouts of signature and authority payloads. Each value was
//! computed once and cross-checked with an independent implementation of the
//! documented layout (Python `blake3` and `cryptography`); any change of
//! format breaks these tests, and then the document must change with it.
//!
//! Signatures and ML-KEM ciphertexts are randomized, so they are covered by
//! round trips instead of vectors; a stored encrypted event is decrypted here
//! by hand, with the documented envelope layout, key hierarchy and AADs.

mod common;

use ate::crypto::{
    open, seal, CryptoError, KeyId, PrivateEncryptKey, PrivateSignKey, PublicSignKey, ReadKey, SignatureScheme,
};
use ate::format::{decode_record, DecodedRecord, EventKind, SEGMENT_HEADER_LEN};
use ate::prelude::*;
use ate::trust::events::{commit_root, commit_signing_message, payload_aad};
use ate::trust::{
    sign_commit, AuthorityRecord, CommitSignature, EventContent, NodeKeyWrap, ReadAuthority, RejectReason,
    WriteAuthority,
};
use rkyv::util::AlignedVec;

// ---- the vectors (same values as docs/security.md) ----

const PAYLOAD_HASH: &str = "ec90915fa26ab012a89a88ecc8b47e4dd76c4adfd6abd1fc10e321b0fca18d1d";
const CONTENT_HASH_A: &str = "5496dbe81251fd52b051a25b96de9e6319aeb891c00be6354603c7bfad217f51";
const CONTENT_HASH_B: &str = "5605e3414f49d62a28b56ce9f3bacc903a57b66cde5153b0b32df06a8b56ed42";
const COMMIT_ROOT: &str = "67c3aa6f55f7f729ff4c7265c3582ec27174e3d28a6be4885f5fbac04fdf97b4";
const VECTORS_CHAIN_ID: &str = "828e80419a329649736817f973029abe1fa1a7b69a705fba70cbf6aae65775fe";
const SIGNING_MESSAGE: &str = concat!(
    "41544520636f6d6d697420763100",
    "828e80419a329649736817f973029abe1fa1a7b69a705fba70cbf6aae65775fe",
    "67c3aa6f55f7f729ff4c7265c3582ec27174e3d28a6be4885f5fbac04fdf97b4",
);
const PAYLOAD_AAD: &str = concat!(
    "415445207061796c6f616420763100",
    "01",
    "01010101010101010101010101010101",
    "02020202020202020202020202020202",
    "0300000000000000",
    "0400000000000000",
    "0606060606060606060606060606060606060606060606060606060606060606",
);
const SEALED_HELLO: &str = "7f926b25afbd7425ee1b2750bca450c6e80e8ce40e";
const READ_KEY_ID: &str = "4c87db96803c9640b7ac68903c6c591aba6fca42e4c2ec2a99dc9a11cef860a0";
const READ_KEY_ENCODING: &str =
    concat!("010501", "00000000", "20000000", "3333333333333333333333333333333333333333333333333333333333333333");
const UNIVERSE_CHAIN_ID: &str = "47cbf40fc25134db8b98290e39bed467f1bf980e4a59c537db8f608ea00ab30b";
const UNIVERSE_DIRECTORY: &str = "universe-47cbf40fc25134db8b98290e39bed467f1bf980e4a59c537db8f608ea00ab30b";
const SETTINGS_KEY: &str = "ab840129e5da6c75f75ff00092c14a34";
const COMMIT_SIGNATURE_PAYLOAD: &str = concat!(
    "4444444444444444444444444444444444444444444444444444444444444444",
    "00",
    "67c3aa6f55f7f729ff4c7265c3582ec27174e3d28a6be4885f5fbac04fdf97b4",
    "ac02",
    "04",
    "abababab",
);
const AUTHORITY_RECORD: &str = concat!(
    "03",
    "01",
    "7777777777777777777777777777777777777777777777777777777777777777",
    "02",
    "8888888888888888888888888888888888888888888888888888888888888888",
    "01",
    "00",
    "9999999999999999999999999999999999999999999999999999999999999999",
    "8888888888888888888888888888888888888888888888888888888888888888",
    "aaaaaaaaaaaaaaaaaaaaaaaa",
    "30",
    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    "00",
);

// ---- fixtures ----

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Content A of the documented vectors.
fn content_a() -> EventContent {
    EventContent {
        kind: 1,
        key: [1; 16],
        parent: [2; 16],
        collection: 3,
        type_tag: 4,
        timestamp_us: 5,
        payload_hash: blake3::hash(b"payload").into(),
        read_key_id: [6; 32],
        nonce: [7; 12],
    }
}

/// Content B: a root tombstone, plaintext.
fn content_b() -> EventContent {
    EventContent {
        kind: 2,
        key: [8; 16],
        parent: [0; 16],
        collection: 0,
        type_tag: 0,
        timestamp_us: 9,
        payload_hash: blake3::hash(b"").into(),
        read_key_id: [0; 32],
        nonce: [10; 12],
    }
}

fn vectors_chain_id() -> [u8; 32] {
    ChainKey::from("vectors").chain_id()
}

// ---- fixed vectors ----

#[test]
fn event_content_hash_matches_the_documented_vector() {
    let a = content_a();
    assert_eq!(hex(&a.payload_hash), PAYLOAD_HASH);
    assert_eq!(hex(&a.hash()), CONTENT_HASH_A);
    assert_eq!(hex(&content_b().hash()), CONTENT_HASH_B);
    // Every field is hashed: changing any one changes the hash.
    let variants = [
        EventContent { kind: 3, ..a },
        EventContent { key: [9; 16], ..a },
        EventContent { parent: [9; 16], ..a },
        EventContent { collection: 9, ..a },
        EventContent { type_tag: 9, ..a },
        EventContent { timestamp_us: 9, ..a },
        EventContent { payload_hash: [9; 32], ..a },
        EventContent { read_key_id: [9; 32], ..a },
        EventContent { nonce: [9; 12], ..a },
    ];
    for variant in variants {
        assert_ne!(variant.hash(), a.hash(), "{variant:?}");
    }
}

#[test]
fn commit_root_and_signing_message_match_the_documented_vectors() {
    let root = commit_root(&[content_a().hash(), content_b().hash()]);
    assert_eq!(hex(&root), COMMIT_ROOT);
    assert_eq!(hex(&vectors_chain_id()), VECTORS_CHAIN_ID);
    let message = commit_signing_message(&vectors_chain_id(), &root);
    assert_eq!(message.len(), 78);
    assert_eq!(hex(&message), SIGNING_MESSAGE);
    // Order matters: the root of the swapped pair differs.
    assert_ne!(commit_root(&[content_b().hash(), content_a().hash()]), root);
}

#[test]
fn payload_aad_matches_the_documented_vector() {
    let a = content_a();
    let aad = payload_aad(&a);
    assert_eq!(aad.len(), 96);
    assert_eq!(hex(&aad), PAYLOAD_AAD);
    // Timestamp, payload hash and nonce are not part of it.
    assert_eq!(payload_aad(&EventContent { timestamp_us: 99, payload_hash: [9; 32], nonce: [9; 12], ..a }), aad);
}

#[test]
fn aes_256_gcm_seal_matches_the_documented_vector_and_opens() {
    let (key, nonce) = ([0x11; 32], [0x22; 12]);
    let sealed = seal(&key, &nonce, b"ate", b"hello");
    assert_eq!(hex(&sealed), SEALED_HELLO);
    assert_eq!(open(&key, &nonce, b"ate", &sealed).unwrap(), b"hello");
    assert_eq!(open(&key, &nonce, b"ATE", &sealed), Err(CryptoError::DecryptionFailed));
    assert_eq!(open(&[0x12; 32], &nonce, b"ate", &sealed), Err(CryptoError::DecryptionFailed));
    let mut flipped = sealed.clone();
    flipped[0] ^= 1;
    assert_eq!(open(&key, &nonce, b"ate", &flipped), Err(CryptoError::DecryptionFailed));
}

#[test]
fn read_key_id_encoding_and_debug_match_the_documented_vectors() {
    let key = ReadKey::from_bytes([0x33; 32]);
    assert_eq!(hex(key.id().as_bytes()), READ_KEY_ID);
    let encoded = key.encode();
    assert_eq!(encoded.len(), 43);
    assert_eq!(hex(&encoded), READ_KEY_ENCODING);
    assert_eq!(ReadKey::decode(&encoded).unwrap(), key);
    assert_eq!(format!("{key:?}"), format!("ReadKey({READ_KEY_ID}, secret: <redacted>)"));
}

#[test]
fn chain_ids_directory_names_and_named_keys_match_the_documented_vectors() {
    let universe = ChainKey::from("universe");
    assert_eq!(hex(&universe.chain_id()), UNIVERSE_CHAIN_ID);
    assert_eq!(universe.directory_name(), UNIVERSE_DIRECTORY);
    assert_eq!(hex(PrimaryKey::from_name("settings").as_bytes()), SETTINGS_KEY);
}

#[test]
fn commit_signature_payload_has_the_documented_postcard_layout() {
    let signature = CommitSignature {
        key_id: KeyId([0x44; 32]),
        scheme: SignatureScheme::MlDsa65,
        merkle_root: commit_root(&[content_a().hash(), content_b().hash()]),
        event_count: 300,
        signature: vec![0xab; 4],
    };
    let bytes = postcard::to_stdvec(&signature).unwrap();
    assert_eq!(hex(&bytes), COMMIT_SIGNATURE_PAYLOAD);
    assert_eq!(postcard::from_bytes::<CommitSignature>(&bytes).unwrap(), signature);
    // In payloads the scheme is serde's variant index, not the key-encoding byte.
    for (scheme, index, byte) in
        [(SignatureScheme::MlDsa65, 0, 1), (SignatureScheme::MlDsa44, 1, 2), (SignatureScheme::Falcon512, 2, 3)]
    {
        assert_eq!(postcard::to_stdvec(&scheme).unwrap(), [index]);
        assert_eq!(scheme as u8, byte);
    }
}

#[test]
fn authority_record_has_the_documented_postcard_layout() {
    let record = AuthorityRecord {
        write: WriteAuthority::Specific(vec![KeyId([0x77; 32])]),
        read: ReadAuthority::Specific(KeyId([0x88; 32])),
        node_key: Some(NodeKeyWrap::Sealed {
            node_key_id: KeyId([0x99; 32]),
            read_key_id: KeyId([0x88; 32]),
            nonce: [0xaa; 12],
            sealed: vec![0xbb; 48],
        }),
        previous_node_keys: vec![],
    };
    let bytes = postcard::to_stdvec(&record).unwrap();
    assert_eq!(bytes.len(), 195);
    assert_eq!(hex(&bytes), AUTHORITY_RECORD);
    assert_eq!(postcard::to_stdvec(&AuthorityRecord::default()).unwrap(), [0, 0, 0, 0]);
    let published = NodeKeyWrap::Published { node_key: [0x33; 32] };
    assert_eq!(hex(&postcard::to_stdvec(&published).unwrap()), format!("01{}", "33".repeat(32)));
    assert_eq!(hex(published.node_key_id().as_bytes()), READ_KEY_ID);
}

// ---- randomized primitives: round trips ----

/// (scheme, key-encoding byte, public key, secret key, signature) sizes from
/// FIPS 204 and the Falcon-512 specification (Falcon signatures vary in length).
const SCHEMES: [(SignatureScheme, u8, usize, usize, Option<usize>); 3] = [
    (SignatureScheme::MlDsa65, 1, 1952, 4032, Some(3309)),
    (SignatureScheme::MlDsa44, 2, 1312, 2560, Some(2420)),
    (SignatureScheme::Falcon512, 3, 897, 1281, None),
];

#[test]
fn signing_keys_have_the_documented_encoding_and_ids() {
    for (scheme, byte, public_len, secret_len, _) in SCHEMES {
        let key = PrivateSignKey::generate(scheme);
        let public = key.public().encode();
        assert_eq!(public.len(), 11 + public_len, "{scheme:?}");
        assert_eq!(public[..3], [1, 1, byte]);
        assert_eq!(public[3..7], (public_len as u32).to_le_bytes());
        assert_eq!(public[7..7 + public_len], *key.public().as_bytes());
        assert_eq!(public[7 + public_len..], [0, 0, 0, 0]);
        let private = key.encode();
        assert_eq!(private.len(), 11 + public_len + secret_len);
        assert_eq!(private[..3], [1, 2, byte]);
        assert_eq!(private[7 + public_len..11 + public_len], (secret_len as u32).to_le_bytes());
        assert_eq!(PublicSignKey::decode(&public).unwrap(), *key.public());
        assert_eq!(PrivateSignKey::decode(&private).unwrap().id(), key.id());
        // Key id: BLAKE3 derive_key over the scheme byte and the public key.
        let mut hasher = blake3::Hasher::new_derive_key("ate 2026 signing key id");
        hasher.update(&[byte]);
        hasher.update(key.public().as_bytes());
        assert_eq!(key.id().0, *hasher.finalize().as_bytes());
        let debug = format!("{key:?}");
        assert!(debug.contains("secret: <redacted>") && !debug.contains(&hex(&private[11 + public_len..][..16])));
    }
}

#[test]
fn commit_signatures_verify_for_every_scheme_and_are_randomized() {
    let chain_id = vectors_chain_id();
    let contents = [content_a(), content_b()];
    for (scheme, _, _, _, signature_len) in SCHEMES {
        let key = PrivateSignKey::generate(scheme);
        let signature = sign_commit(&chain_id, &key, &contents);
        assert_eq!(hex(&signature.merkle_root), COMMIT_ROOT);
        assert_eq!((signature.key_id, signature.scheme, signature.event_count), (key.id(), scheme, 2));
        if let Some(len) = signature_len {
            assert_eq!(signature.signature.len(), len, "{scheme:?}");
        }
        // The signature is over the documented message (with the documented context).
        let message = commit_signing_message(&chain_id, &signature.merkle_root);
        key.public().verify(&message, &signature.signature).unwrap();
        let other_chain = commit_signing_message(&ChainKey::from("other").chain_id(), &signature.merkle_root);
        assert_eq!(key.public().verify(&other_chain, &signature.signature), Err(CryptoError::BadSignature));
        // Randomized: signing again gives other bytes that verify as well.
        let again = sign_commit(&chain_id, &key, &contents);
        assert_ne!(again.signature, signature.signature, "{scheme:?}");
        key.public().verify(&message, &again.signature).unwrap();
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64
}

/// `events` stamped with `timestamp_us` and distinct nonces, followed by one
/// signature event per key over them (what a DIO commit does).
fn signed(chain: &str, keys: &[&PrivateSignKey], mut events: Vec<NewEvent>, timestamp_us: u64) -> Vec<NewEvent> {
    for (index, event) in events.iter_mut().enumerate() {
        event.timestamp_us = timestamp_us;
        event.nonce = [index as u8 + 1; 12];
    }
    let contents: Vec<EventContent> =
        events.iter().map(|event| event.content(blake3::hash(&event.payload).into(), timestamp_us)).collect();
    for key in keys {
        let signature = sign_commit(&ChainKey::from(chain).chain_id(), key, &contents);
        let mut event = NewEvent::new(events[0].key, EventKind::Signature, postcard::to_stdvec(&signature).unwrap());
        event.timestamp_us = timestamp_us;
        events.push(event);
    }
    events
}

async fn chain_with_root(dir: &std::path::Path, root: &PrivateSignKey) -> std::sync::Arc<Chain> {
    common::open_rooted(common::small_config(dir), root.public(), "vectors").await
}

fn rejection(result: ate::Result<ate::CommitReceipt>) -> (usize, RejectReason) {
    match result {
        Err(AteError::Rejected { index, reason, .. }) => (index, reason),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_checks_signature_placement_coverage_and_keys_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let root = PrivateSignKey::generate(SignatureScheme::MlDsa44);
    let chain = chain_with_root(dir.path(), &root).await;
    let data = |text: &str| NewEvent::data(PrimaryKey::from_name(text), text.as_bytes().to_vec());
    let now = now_us();

    // Signed for another chain: the message differs, the signature does not verify.
    let result = chain.append(signed("other", &[&root], vec![data("a")], now), None).await;
    assert_eq!(rejection(result), (1, RejectReason::BadSignature { key_id: root.id() }));
    // An event changed after signing: the root no longer matches.
    let mut altered = signed("vectors", &[&root], vec![data("a")], now);
    altered[0].type_tag = 7;
    assert_eq!(rejection(chain.append(altered, None).await), (1, RejectReason::SignatureMismatch));
    // A signature must come after every event it covers.
    let mut misplaced = signed("vectors", &[&root], vec![data("a"), data("b")], now);
    misplaced.swap(1, 2);
    assert_eq!(rejection(chain.append(misplaced, None).await), (2, RejectReason::MisplacedSignature));
    // A key that is neither configured nor published.
    let stranger = PrivateSignKey::generate(SignatureScheme::MlDsa44);
    let result = chain.append(signed("vectors", &[&stranger], vec![data("a")], now), None).await;
    assert_eq!(rejection(result), (1, RejectReason::UnknownSigningKey { key_id: stranger.id() }));
    assert_eq!(chain.next_sequence(), 0, "rejected commits leave no trace");

    // Published in the commit itself: the signature verifies, but the key
    // is not a root key, so authority rejects the data event.
    let publish_key = PrimaryKey::from_bytes(stranger.id().0[..16].try_into().unwrap());
    let publish = NewEvent::new(publish_key, EventKind::PublicKey, stranger.public().encode());
    let result = chain.append(signed("vectors", &[&stranger], vec![publish, data("a")], now), None).await;
    assert!(matches!(rejection(result), (1, RejectReason::Unauthorized { .. })));

    // Root keys come from the configuration: no public key event is needed.
    let commit = signed("vectors", &[&root], vec![data("a"), data("b")], now);
    let receipt = chain.append(commit.clone(), None).await.unwrap();
    assert_eq!((receipt.first_sequence, receipt.last_sequence), (0, 2));
    // A full replay (a retry after a lost acknowledgement) returns the original receipt...
    assert_eq!(chain.append(commit, None).await.unwrap(), receipt);
    assert_eq!(chain.next_sequence(), 3);
    // ...while a new commit that repeats one event carries a new signature by an
    // authorised key over a new root: a new write, not a replay.
    let fresh = chain.append(signed("vectors", &[&root], vec![data("a"), data("c")], now), None).await.unwrap();
    assert_eq!((fresh.first_sequence, fresh.last_sequence), (3, 5));
}

#[test]
fn read_key_sealed_to_an_ml_kem_recipient_round_trips() {
    let read_key = ReadKey::from_bytes([0x33; 32]);
    let recipient = PrivateEncryptKey::generate();
    let public = recipient.public().as_bytes();
    // FIPS 203 ML-KEM-768 sizes; id = BLAKE3 derive_key over the public key.
    assert_eq!(public.len(), 1184);
    assert_eq!(recipient.id().0, blake3::derive_key("ate 2026 encryption key id", public));
    let encoded = recipient.public().encode();
    assert_eq!(encoded[..7], [1, 3, 1, 0xa0, 0x04, 0, 0]);
    assert_eq!(recipient.encode()[..3], [1, 4, 1]);
    assert_eq!(recipient.encode().len(), 11 + 1184 + 2400);

    let wrapped = recipient.public().wrap_read_key(&read_key).unwrap();
    assert_eq!((wrapped.recipient, wrapped.read_key_id), (recipient.id(), read_key.id()));
    assert_eq!((wrapped.kem_ciphertext.len(), wrapped.sealed_key.len()), (1088, 48));
    assert_eq!(recipient.unwrap_read_key(&wrapped).unwrap(), read_key);
    // Randomized: a second grant of the same key shares no ciphertext.
    let again = recipient.public().wrap_read_key(&read_key).unwrap();
    assert_ne!(again.kem_ciphertext, wrapped.kem_ciphertext);
    assert_eq!(recipient.unwrap_read_key(&again).unwrap(), read_key);
    // Anyone else, or a grant whose AAD fields were changed, gets a bare failure.
    let stranger = PrivateEncryptKey::generate();
    assert_eq!(stranger.unwrap_read_key(&wrapped), Err(CryptoError::DecryptionFailed));
    let relabelled = ate::crypto::EncryptedReadKey { read_key_id: KeyId([0x44; 32]), ..wrapped.clone() };
    assert_eq!(recipient.unwrap_read_key(&relabelled), Err(CryptoError::DecryptionFailed));
}

// ---- the key hierarchy of a stored event ----

fn segment(chain: &Chain) -> AlignedVec<16> {
    let bytes = std::fs::read(chain.path().join("00000000000000000000.seg")).unwrap();
    let mut aligned = AlignedVec::<16>::new();
    aligned.extend_from_slice(&bytes);
    aligned
}

/// Every record of the chain's first segment, in order.
fn records(bytes: &AlignedVec<16>) -> Vec<DecodedRecord<'_>> {
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER_LEN;
    while let Some(record) = decode_record(bytes, offset).unwrap() {
        offset = record.next_offset;
        records.push(record);
    }
    records
}

/// The node key an authority record seals under `read_key`, opened by hand.
fn open_node_key(authority: &DecodedRecord<'_>, read_key: &ReadKey) -> (KeyId, [u8; 32]) {
    // Node key: sealed under the read key, AAD "ATE node key v1\0" || node key id || read key id.
    let record: AuthorityRecord = postcard::from_bytes(authority.payload).unwrap();
    let Some(NodeKeyWrap::Sealed { node_key_id, read_key_id, nonce, sealed }) = record.node_key else {
        panic!("expected a sealed node key: {record:?}");
    };
    assert_eq!(read_key_id, read_key.id());
    let aad = [&b"ATE node key v1\0"[..], node_key_id.as_bytes(), read_key_id.as_bytes()].concat();
    // Key wraps are AES-256-GCM-SIV (ReadKey::decrypt); payloads are AES-256-GCM (open).
    let node_key: [u8; 32] = read_key.decrypt(&nonce, &aad, &sealed).unwrap().try_into().unwrap();
    assert_eq!(ReadKey::from_bytes(node_key).id(), node_key_id);
    (node_key_id, node_key)
}

/// The data key and plaintext of a stored encrypted event, opened by hand
/// with the documented envelope layout and AADs.
fn open_envelope(data: &DecodedRecord<'_>, node_key_id: KeyId, node_key: [u8; 32]) -> ([u8; 32], Vec<u8>) {
    // Data key: sealed under the node key, AAD "ATE data key v1\0" || node key id || object key || nonce.
    assert_eq!(data.header.read_key_id, node_key_id.0, "the header names the node key");
    assert_eq!(data.header.payload_hash, *blake3::hash(data.payload).as_bytes(), "the hash covers the envelope");
    // Envelope: wrap nonce (12) | wrapped data key length (u16 LE) | wrapped data key | ciphertext.
    let (wrap_nonce, rest) = data.payload.split_at(12);
    let (length, rest) = rest.split_at(2);
    assert_eq!(length, [48, 0], "a 32-byte key and a 16-byte tag");
    let (wrapped_data_key, ciphertext) = rest.split_at(48);
    let aad = [&b"ATE data key v1\0"[..], &data.header.read_key_id, &data.header.key, &data.header.nonce].concat();
    let data_key: [u8; 32] = ReadKey::from_bytes(node_key)
        .decrypt(&wrap_nonce.try_into().unwrap(), &aad, wrapped_data_key)
        .unwrap()
        .try_into()
        .unwrap();
    assert_ne!(data_key, node_key);

    // Payload: under the data key and the header's nonce, AAD = payload_aad(content).
    let content = EventContent::of_archived(data.header);
    let plaintext = open(&data_key, &data.header.nonce, &payload_aad(&content), ciphertext).unwrap();
    assert_eq!(ciphertext.len(), plaintext.len() + 16);
    (data_key, plaintext)
}

/// A session holding one read key, and that key.
fn reader() -> (ReadKey, AteSession) {
    let read_key = ReadKey::from_bytes([0x33; 32]);
    let mut session = AteSession::new("reader");
    session.add_user_read_key(read_key.clone());
    (read_key, session)
}

/// Stages `value` as a new object readable only with `read_key`.
fn store_readable_by(dio: &mut Dio, value: &str, read_key: &ReadKey) -> PrimaryKey {
    let object = *dio.store(value.to_string()).unwrap().key();
    dio.set_authority(&object, WriteAuthority::Inherit, ReadAuthority::Specific(read_key.id())).unwrap();
    object
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_encrypted_event_opens_with_the_documented_key_hierarchy_and_aads() {
    let dir = tempfile::tempdir().unwrap();
    let chain = common::open(dir.path()).await.unwrap();
    let (read_key, session) = reader();
    let mut dio = chain.dio(&session).await;
    store_readable_by(&mut dio, "attack at dawn", &read_key);
    dio.commit().await.unwrap();

    let bytes = segment(&chain);
    assert!(!bytes.windows(14).any(|window| window == b"attack at dawn"));
    let records = records(&bytes);
    // The authority event comes first; this chain has no root keys, so the
    // commit is unsigned.
    let kinds: Vec<_> = records.iter().map(|record| record.header.kind().unwrap()).collect();
    assert_eq!(kinds, [EventKind::Authority, EventKind::Data]);
    let (node_key_id, node_key) = open_node_key(&records[0], &read_key);
    let (_, plaintext) = open_envelope(&records[1], node_key_id, node_key);
    assert_eq!(postcard::from_bytes::<String>(&plaintext).unwrap(), "attack at dawn");
}

/// The payloads of one commit share one data key (one key schedule per
/// commit), each under its own nonce; the next commit draws a new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_of_a_commit_share_a_data_key_under_distinct_nonces() {
    let dir = tempfile::tempdir().unwrap();
    let chain = common::open(dir.path()).await.unwrap();
    let (read_key, session) = reader();
    let mut dio = chain.dio(&session).await;
    let folder = store_readable_by(&mut dio, "folder", &read_key);
    for value in ["one", "two", "three"] {
        dio.store_child(&folder, value.to_string()).unwrap();
    }
    dio.commit().await.unwrap();
    let mut dio = chain.dio(&session).await;
    dio.store_child(&folder, "four".to_string()).unwrap();
    dio.commit().await.unwrap();

    let bytes = segment(&chain);
    let records = records(&bytes);
    let kinds: Vec<_> = records.iter().map(|record| record.header.kind().unwrap()).collect();
    assert_eq!(kinds, [[EventKind::Authority].as_slice(), &[EventKind::Data; 5]].concat());
    let (node_key_id, node_key) = open_node_key(&records[0], &read_key);
    let opened: Vec<([u8; 32], String)> = records[1..]
        .iter()
        .map(|record| {
            let (data_key, plaintext) = open_envelope(record, node_key_id, node_key);
            (data_key, postcard::from_bytes(&plaintext).unwrap())
        })
        .collect();
    let values: Vec<&str> = opened.iter().map(|(_, value)| value.as_str()).collect();
    assert_eq!(values, ["folder", "one", "two", "three", "four"]);
    // First commit: one data key; the second commit: another.
    assert!(opened[..4].iter().all(|(data_key, _)| *data_key == opened[0].0));
    assert_ne!(opened[4].0, opened[0].0);
    // Every nonce of the first commit is distinct: a shared 8-byte prefix and a counter.
    let nonces: Vec<[u8; 12]> = records.iter().take(5).map(|record| record.header.nonce).collect();
    for (index, nonce) in nonces.iter().enumerate() {
        assert_eq!(nonce[..8], nonces[0][..8], "one random prefix per commit");
        assert_eq!(nonce[8..], (index as u32).to_le_bytes(), "then the event's place in the commit");
    }
    assert_ne!(records[5].header.nonce[..8], nonces[0][..8], "each commit draws its own prefix");
}

/// Payloads under different node keys in one commit get different data keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_key_of_a_commit_seals_under_its_own_data_key() {
    let dir = tempfile::tempdir().unwrap();
    let chain = common::open(dir.path()).await.unwrap();
    let (read_key, session) = reader();
    let mut dio = chain.dio(&session).await;
    store_readable_by(&mut dio, "first", &read_key);
    store_readable_by(&mut dio, "second", &read_key);
    dio.commit().await.unwrap();

    let bytes = segment(&chain);
    let records = records(&bytes);
    let kinds: Vec<_> = records.iter().map(|record| record.header.kind().unwrap()).collect();
    assert_eq!(kinds, [EventKind::Authority, EventKind::Authority, EventKind::Data, EventKind::Data]);
    let mut data_keys = Vec::new();
    for (authority, data, value) in [(&records[0], &records[2], "first"), (&records[1], &records[3], "second")] {
        let (node_key_id, node_key) = open_node_key(authority, &read_key);
        let (data_key, plaintext) = open_envelope(data, node_key_id, node_key);
        assert_eq!(postcard::from_bytes::<String>(&plaintext).unwrap(), value);
        data_keys.push(data_key);
    }
    assert_ne!(data_keys[0], data_keys[1], "one data key per node key");
}
