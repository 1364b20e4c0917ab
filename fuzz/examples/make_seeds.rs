//! Writes the seed corpora in fuzz/seeds/ from real data: a chain written
//! through the engine (its segment and records), the wire messages a
//! client and a server exchange, a token issued by a throwaway key, and
//! proofs and a signed tree head of that chain. Run from fuzz/:
//! `cargo +nightly run --release --example make_seeds`.

use ate::prelude::*;
use ate_client::protocol::{encode_frame, ClientMessage, FrameKind, ServerMessage, WireEvent, PROTOCOL_VERSION};
use std::path::Path;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("seeds").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn frame(kind: FrameKind, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0];
    encode_frame(kind, body, usize::MAX, &mut bytes).unwrap();
    bytes
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let config = AteConfig { log_path: Some(dir.path().to_path_buf()), ..AteConfig::default() };
    let chain = ChainBuilder::new(&config).await.build().open(&ChainKey::from("seeds")).await.unwrap();
    let mut events = Vec::new();
    for index in 0..6u8 {
        let event = NewEvent::data(PrimaryKey::from_name(&format!("seed-{index}")), vec![index; 40 + index as usize * 30]);
        events.push(event.clone());
        chain.append(vec![event], None).await.unwrap();
    }
    chain.append(vec![NewEvent::tombstone(PrimaryKey::from_name("seed-0"))], None).await.unwrap();
    let mut session = AteSession::default();
    session.add_user_write_key(ate::crypto::PrivateSignKey::generate(Default::default()));
    let mut dio = chain.dio(&session).await;
    dio.store(String::from("signed seed")).unwrap();
    dio.commit().await.unwrap();

    // The written part of the segment (it is preallocated).
    let segment = std::fs::read_dir(chain.path()).unwrap().flatten().find(|e| e.path().extension().is_some_and(|x| x == "seg")).unwrap();
    let bytes = std::fs::read(segment.path()).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).map_or(bytes.len(), |p| (p + 16) & !15);
    write("segment_scan", "chain.seg", &bytes[..end]);
    write("segment_scan", "header-only.seg", &bytes[..128]);
    write("record_decode", "records", &bytes[128..end]);

    let (records, _) = chain.read_records(0, 1 << 20).unwrap();
    let wire_events: Vec<WireEvent> = events.iter().map(WireEvent::from).collect();
    let client = [
        ClientMessage::Hello { versions: vec![PROTOCOL_VERSION], client: "seed".into() },
        ClientMessage::Authenticate { token: b"token".to_vec() },
        ClientMessage::Open { request: 1, chain: "seeds".into() },
        ClientMessage::Subscribe { request: 2, chain: "seeds".into(), from: 0, collection: None },
        ClientMessage::Commit { request: 3, chain: "seeds".into(), durability: ate_client::protocol::WireDurability::Batched, events: wire_events },
        ClientMessage::Ping { nonce: 4 },
    ];
    for (index, message) in client.iter().enumerate() {
        write("wire_frame", &format!("client-{index}"), &frame(FrameKind::Client, &message.encode()));
    }
    let server = [
        ServerMessage::Events { subscription: 1, records: records.clone() },
        ServerMessage::Committed { request: 3, first_sequence: 0, last_sequence: 5 },
        ServerMessage::Pong { nonce: 4 },
    ];
    for (index, message) in server.iter().enumerate() {
        write("wire_frame", &format!("server-{index}"), &frame(FrameKind::Server, &message.encode()));
    }

    let issuer = ate::crypto::PrivateSignKey::generate(Default::default());
    let claims = ate_client::token::Claims {
        subject: "seed".into(),
        roles: vec!["read".into(), "write".into()],
        chains: vec!["seed-*".into()],
        issued_at_us: 1_800_000_000_000_000,
        expires_at_us: 1_800_000_600_000_000,
    };
    write("token_parse", "token", ate_client::token::issue(&claims, &issuer).as_bytes());

    let head = chain.tree_head().unwrap();
    let (event_hash, inclusion) = chain.inclusion_proof(3, head.tree_size).unwrap();
    let mut input = event_hash.to_vec();
    input.extend_from_slice(&head.root);
    input.extend_from_slice(&inclusion.encode());
    write("proof_verify", "inclusion", &input);
    let consistency = chain.consistency_proof(2, head.tree_size).unwrap();
    let mut input = [0u8; 32].to_vec();
    input.extend_from_slice(&head.root);
    input.extend_from_slice(&consistency.encode());
    write("proof_verify", "consistency", &input);
    let signed = ate::verify::sign_tree_head(head, &issuer);
    let mut input = [0u8; 64].to_vec();
    input.extend_from_slice(&signed.encode());
    write("proof_verify", "signed-tree-head", &input);
    // A checkpoint: small segments, a policy (a trust record), old ones dropped.
    let small = AteConfig {
        log_path: Some(dir.path().join("small")),
        segment_size_bytes: 16 << 10,
        max_commit_bytes: 4 << 10,
        max_write_bytes: 4 << 10,
        ..AteConfig::default()
    };
    let trimmed = ChainBuilder::new(&small).await.build().open(&ChainKey::from("trimmed")).await.unwrap();
    let policy = ate::trust::retention::RetentionPolicy::default();
    trimmed.append(vec![NewEvent::retention_policy(policy)], None).await.unwrap();
    for index in 0..60u32 {
        trimmed.append(vec![NewEvent::data(PrimaryKey::from_name(&format!("old-{index}")), vec![7; 900])], None).await.unwrap();
    }
    let rule = ate::chain::DropRule { older_than_us: ate::chain::now_us(), tombstone_horizon_us: 0 };
    trimmed.drop_segments(rule, ate::chain::now_us()).await.unwrap();
    write("checkpoint_decode", "checkpoint", &trimmed.checkpoint().unwrap().expect("segments were dropped"));

    // A queue item as an owner sends it to a consumer without a replica,
    // and the fuzz target's own layout (a choice byte, then a payload).
    let queue = ate::messaging::Queue::new(&chain, &AteSession::default(), "fuzz", Default::default());
    let item = queue.push((7u64, String::from("seed"))).await.unwrap();
    write("queue_item", "record", chain.record_bytes(&item).expect("the pushed item is stored"));
    let mut structured = vec![0u8];
    structured.extend_from_slice(&[7, 4, b's', b'e', b'e', b'd']);
    write("queue_item", "structured", &structured);

    println!("seeds written to fuzz/seeds/");
}
