//! Plugins installed through `ChainBuilder` (validators, linters,
//! transformers) and centralized integrity.

mod common;

use ate::crypto::{PrivateSignKey, ReadKey, SignatureScheme};
use ate::plugin::{Linter, Transformer, ValidationContext, Validator};
use ate::prelude::*;
use ate::trust::{EventView, IntegrityMode, ReadAuthority, RejectReason, WriteAuthority};
use std::sync::Arc;

#[derive(Debug)]
struct NoSwearing;
impl Validator for NoSwearing {
    fn name(&self) -> &'static str {
        "no-swearing"
    }
    fn validate(&self, event: &EventView<'_>, _: &ValidationContext<'_>) -> Result<(), RejectReason> {
        if event.payload.windows(6).any(|w| w == b"darn!!") {
            return Err(RejectReason::Custom { validator: self.name(), reason: "language".into() });
        }
        Ok(())
    }
}

/// Stores payloads reversed: enough to prove the transformer runs both ways.
#[derive(Debug)]
struct Reverse;
impl Transformer for Reverse {
    fn name(&self) -> &'static str {
        "reverse"
    }
    fn encode(&self, mut payload: Vec<u8>) -> ate::Result<Vec<u8>> {
        payload.reverse();
        Ok(payload)
    }
    fn decode(&self, payload: Vec<u8>) -> ate::Result<Vec<u8>> {
        self.encode(payload)
    }
}

#[derive(Debug)]
struct TagEverything;
impl Linter for TagEverything {
    fn name(&self) -> &'static str {
        "tag"
    }
    fn lint(&self, events: &mut Vec<NewEvent>, _: &AteSession) -> ate::Result<()> {
        for event in events.iter_mut() {
            event.type_tag = 42;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_validate_lint_and_transform() {
    let dir = tempfile::tempdir().unwrap();
    let chain = ChainBuilder::new(&common::small_config(dir.path()))
        .await
        .add_validator(Arc::new(NoSwearing))
        .add_transformer(Arc::new(Reverse))
        .add_linter(Arc::new(TagEverything))
        .build()
        .open(&ChainKey::from("plugins"))
        .await
        .unwrap();
    let mut dio = chain.dio(&AteSession::default()).await;
    let key = *dio.store("hello plugins".to_string()).unwrap().key();
    dio.commit().await.unwrap();
    let stored = chain.get(&key).unwrap();
    assert_eq!(stored.header.type_tag(), 42, "the linter ran");
    assert!(stored.payload.starts_with(&b"snigulp olleh"[..]), "stored payload is transformed");
    assert_eq!(*dio.load::<String>(&key).await.unwrap(), "hello plugins");

    // Validators see stored bytes (after transformers and encryption).
    let raw = NewEvent::data(PrimaryKey::generate(), b"darn!!".to_vec());
    let error = chain.append(vec![raw], None).await.unwrap_err();
    assert!(
        matches!(error, AteError::Rejected { reason: RejectReason::Custom { validator: "no-swearing", .. }, .. }),
        "{error}"
    );
    chain.verify().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn centralized_integrity_signs_with_the_server_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = PrivateSignKey::generate(SignatureScheme::MlDsa65);
    let user = PrivateSignKey::generate(SignatureScheme::MlDsa44);
    let chain = ChainBuilder::new(&common::small_config(dir.path()))
        .await
        .add_root_public_key(user.public())
        .integrity(IntegrityMode::Centralized)
        .server_key(server.clone())
        .build()
        .open(&ChainKey::from("central"))
        .await
        .unwrap();
    let mut session = AteSession::new("user");
    session.add_user_write_key(user.clone());
    let mut dio = chain.dio(&session).await;
    let first = *dio.store("one".to_string()).unwrap().key();
    dio.commit().await.unwrap();
    // data + one server signature; the user's key is never published.
    assert_eq!(chain.next_sequence(), 2);
    let mut stranger = chain.dio(&AteSession::new("stranger")).await;
    stranger.store("two".to_string()).unwrap();
    assert!(matches!(stranger.commit().await, Err(AteError::NoWriteAccess { .. })));
    assert_eq!(*dio.load::<String>(&first).await.unwrap(), "one");
    let report = chain.verify().await.unwrap();
    assert_eq!(report.events, 2);

    // Missing server key is a configuration error, not a silent downgrade.
    let other = tempfile::tempdir().unwrap();
    let error = ChainBuilder::new(&common::small_config(other.path()))
        .await
        .integrity(IntegrityMode::Centralized)
        .build()
        .open(&ChainKey::from("broken"))
        .await
        .unwrap_err();
    assert!(matches!(error, AteError::InvalidConfig(_)), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_and_signed_commits_survive_reopen_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let root = PrivateSignKey::generate(SignatureScheme::Falcon512);
    let read = ReadKey::generate().unwrap();
    let open = || common::open_rooted(common::small_config(dir.path()), root.public(), "falcon");
    let chain = open().await;
    let mut session = AteSession::new("owner");
    session.add_user_write_key(root.clone()).add_user_read_key(read.clone());
    let mut dio = chain.dio(&session).await;
    let key = *dio.store(vec![1u8, 2, 3]).unwrap().key();
    dio.set_authority(&key, WriteAuthority::Inherit, ReadAuthority::Specific(read.id())).unwrap();
    dio.commit().await.unwrap();
    drop((dio, chain));
    let chain = open().await;
    chain.verify().await.unwrap();
    assert_eq!(*chain.dio(&session).await.load::<Vec<u8>>(&key).await.unwrap(), vec![1, 2, 3]);
}

/// Deletes whatever a commit puts under the key "ephemeral".
#[derive(Debug)]
struct DropEphemeral;
impl Linter for DropEphemeral {
    fn name(&self) -> &'static str {
        "drop-ephemeral"
    }
    fn lint(&self, events: &mut Vec<NewEvent>, _: &AteSession) -> ate::Result<()> {
        let ephemeral = PrimaryKey::from("ephemeral");
        if events.iter().any(|event| event.key == ephemeral) {
            events.push(NewEvent::tombstone(ephemeral));
        }
        Ok(())
    }
}

/// The DIO remembers what a commit left behind, linters included: a put
/// that a linter deleted in the same commit is remembered as absent, so
/// writing the key again from the same transaction is not a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_a_linter_deleted_is_remembered_as_absent() {
    let dir = tempfile::tempdir().unwrap();
    let chain = ChainBuilder::new(&common::small_config(dir.path()))
        .await
        .add_linter(Arc::new(DropEphemeral))
        .build()
        .open(&ChainKey::from("linted"))
        .await
        .unwrap();
    let key = PrimaryKey::from("ephemeral");
    let mut dio = chain.dio(&AteSession::default()).await;
    dio.store_with_key(key, 1u32).unwrap();
    dio.commit().await.unwrap();
    assert!(chain.get(&key).is_none(), "the linter's tombstone came last");
    dio.store_with_key(key, 2u32).unwrap();
    dio.commit().await.unwrap();
}

/// Without a linter a DIO encrypts straight from what it staged, unless a
/// transformer must change the payload first: both paths round trip, and a
/// refused commit keeps what was staged for the retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_payloads_round_trip_with_and_without_a_transformer() {
    for transformed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let root = PrivateSignKey::generate(SignatureScheme::MlDsa44);
        let read = ReadKey::generate().unwrap();
        let mut builder = ChainBuilder::new(&common::small_config(dir.path())).await.add_root_public_key(root.public());
        if transformed {
            builder = builder.add_transformer(Arc::new(Reverse));
        }
        let chain = builder.build().open(&ChainKey::from("sealed")).await.unwrap();
        let mut owner = AteSession::new("owner");
        owner.add_user_write_key(root.clone()).add_user_read_key(read.clone());
        let mut dio = chain.dio(&owner).await;
        let folder = *dio.store("folder".to_string()).unwrap().key();
        dio.set_authority(&folder, WriteAuthority::Inherit, ReadAuthority::Specific(read.id())).unwrap();
        dio.commit().await.unwrap();

        // A stranger's commit is refused; the staged child stays staged.
        let mut stranger_session = AteSession::new("stranger");
        stranger_session.add_user_read_key(read.clone());
        let mut stranger = chain.dio(&stranger_session).await;
        let refused = *stranger.store_child(&folder, "refused secret".to_string()).unwrap().key();
        assert!(matches!(stranger.commit().await, Err(AteError::NoWriteAccess { .. })));
        assert!(stranger.has_uncommitted(), "a refused commit keeps what was staged");
        assert!(chain.get(&refused).is_none());

        let mut dio = chain.dio(&owner).await;
        let child = *dio.store_child(&folder, "a sealed secret".to_string()).unwrap().key();
        dio.commit().await.unwrap();
        let stored = chain.get(&child).unwrap();
        assert!(!stored.payload.windows(6).any(|window| window == b"secret" || window == b"terces"), "stored sealed");
        assert_eq!(*chain.dio(&owner).await.load::<String>(&child).await.unwrap(), "a sealed secret");
        chain.verify().await.unwrap();
    }
}
