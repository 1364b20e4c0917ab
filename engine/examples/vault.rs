//! An encrypted vault shared through a group.
//!
//! Alice writes a record readable only by the "auditors" group. Bob is added
//! to the group (Alice seals the group's read key to Bob's ML-KEM-768 public
//! key) and reads it. Carol, who holds no key, gets a clear error.
//!
//! Run: `cargo run --example vault -p ate`

use ate::crypto::{EncryptedReadKey, PrivateEncryptKey, PrivateSignKey, ReadKey, SignatureScheme};
use ate::prelude::*;
use ate::session::RolePurpose;
use ate::trust::{ReadAuthority, WriteAuthority};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    title: String,
    body: String,
}

#[tokio::main]
async fn main() -> Result<(), AteError> {
    // Alice owns the vault: her ML-DSA-65 key is the chain's root key.
    let alice_signing = PrivateSignKey::generate(SignatureScheme::MlDsa65);
    let auditors = ReadKey::generate()?;
    let mut alice = AteSession::new("alice");
    alice.add_user_write_key(alice_signing.clone());
    alice.group_role("auditors", RolePurpose::Owner).read_keys.push(auditors.clone());

    let conf = AteConfig::default();
    let builder = ChainBuilder::new(&conf).await.add_root_public_key(alice_signing.public()).build();
    let chain = builder.open(&ChainKey::from("vault")).await?;

    // 1. Alice writes a record only the auditors group can read.
    let mut dio = chain.dio(&alice).await;
    let record = *dio.store(Record { title: "Q3 ledger".into(), body: "revenue 1.2M, costs 0.9M".into() })?.key();
    dio.set_authority(&record, WriteAuthority::Inherit, ReadAuthority::Specific(auditors.id()))?;
    dio.commit().await?;
    println!("alice stored record {record}, signed with ML-DSA-65, readable by group 'auditors'");

    // 2. Bob publishes an ML-KEM-768 public key; Alice adds him to the group
    //    by sealing the group key to it and storing the grant in the chain.
    let bob_kem = PrivateEncryptKey::generate();
    let grant = bob_kem.public().wrap_read_key(&auditors)?;
    let grant_key = *dio.store(grant)?.key();
    dio.commit().await?;
    println!("alice granted 'auditors' to bob (ML-KEM-768 key {})", bob_kem.id());

    // 3. Bob opens the grant with his private key, joins the group, reads.
    let mut bob = AteSession::new("bob");
    bob.add_user_private_read_key(bob_kem);
    let grant: EncryptedReadKey = chain.dio(&bob).await.load::<EncryptedReadKey>(&grant_key).await?.into_inner();
    let group_key = bob.private_read_key(&grant.recipient).expect("grant is for bob").unwrap_read_key(&grant)?;
    bob.group_role("auditors", RolePurpose::Observer).read_keys.push(group_key);
    let seen = chain.dio(&bob).await.load::<Record>(&record).await?;
    println!("bob reads: {} = {}", seen.title, seen.body);

    // 4. Carol holds no key: a typed error, never garbage.
    let carol = AteSession::new("carol");
    match chain.dio(&carol).await.load::<Record>(&record).await {
        Err(AteError::NoReadAccess { key, node_key_id }) => {
            println!("carol is refused: no key for object {key} (sealed under node key {node_key_id})")
        }
        other => panic!("carol should be refused, got {other:?}"),
    }
    // Nor may Carol write into Alice's vault.
    let mut carol_dio = chain.dio(&carol).await;
    carol_dio.store(Record { title: "spam".into(), body: String::new() })?;
    match carol_dio.commit().await {
        Err(AteError::NoWriteAccess { .. }) => println!("carol cannot write either: the vault's root key is alice's"),
        other => panic!("carol's write should be refused, got {other:?}"),
    }
    Ok(())
}
