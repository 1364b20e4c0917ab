//! WORM retention on a chain: each rule in each mode, the clock edge at the
//! retain-until instant, legal holds, policies that only tighten, and the
//! same verdicts after a reopen (recovery rebuilds retention from the log).

mod common;

use ate::crypto::{PrivateSignKey, SignatureScheme};
use ate::prelude::*;
use ate::trust::retention::{
    policy_key, RetentionChange, RetentionMode, RetentionPolicy, RetentionRule, RetentionViolation,
};
use ate::trust::RejectReason;
use common::*;

const HOUR_US: u64 = 3_600_000_000;

fn violation(result: ate::Result<impl std::fmt::Debug>) -> RetentionViolation {
    match result {
        Err(AteError::Rejected { reason: RejectReason::Retention(violation), .. }) => violation,
        other => panic!("expected a retention rejection, got {other:?}"),
    }
}

fn object_change(key: PrimaryKey, retain_until_us: Option<u64>, legal_hold: Option<bool>) -> NewEvent {
    NewEvent::retention(key, &RetentionChange::Object { retain_until_us, legal_hold })
}

async fn put(chain: &Chain, name: &str) -> PrimaryKey {
    let key = PrimaryKey::from_name(name);
    chain.append(vec![NewEvent::data(key, name.as_bytes().to_vec())], None).await.unwrap();
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_mode_refuses_early_deletion_and_shortening_by_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let chain = open(dir.path()).await.unwrap();
    let policy =
        RetentionPolicy { mode: RetentionMode::Compliance, default_retention_us: HOUR_US, ..Default::default() };
    chain.append(vec![NewEvent::retention_policy(policy.clone())], None).await.unwrap();
    let key = put(&chain, "invoice-1").await;
    let until = chain.retention(&key).retain_until_us;
    assert!(until > now_us() + HOUR_US - 60_000_000, "the default period applies to the new version");

    match violation(chain.append(vec![NewEvent::tombstone(key)], None).await) {
        RetentionViolation::Protected { rule: RetentionRule::Compliance, until_us } => {
            assert_eq!(until_us, Some(until))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        violation(chain.append(vec![object_change(key, Some(until - 1), None)], None).await),
        RetentionViolation::Shortened { rule: RetentionRule::Compliance, .. }
    ));
    // Extending is always allowed; a policy may tighten, never loosen.
    chain.append(vec![object_change(key, Some(until + HOUR_US), None)], None).await.unwrap();
    assert_eq!(chain.retention(&key).retain_until_us, until + HOUR_US);
    let weaker = RetentionPolicy { mode: RetentionMode::Governance, ..policy.clone() };
    assert!(matches!(
        violation(chain.append(vec![NewEvent::retention_policy(weaker)], None).await),
        RetentionViolation::Loosened(_)
    ));
    let shorter = RetentionPolicy { default_retention_us: 1, ..policy.clone() };
    assert!(matches!(
        violation(chain.append(vec![NewEvent::retention_policy(shorter)], None).await),
        RetentionViolation::Loosened(_)
    ));
    // Object retention on the policy object, or a policy on an object: refused.
    assert!(matches!(
        violation(chain.append(vec![object_change(policy_key(), Some(1), None)], None).await),
        RetentionViolation::WrongObject
    ));
    // The object is still there, and so is every rule after a reopen.
    assert!(chain.get(&key).is_some());
    drop(chain);
    let chain = open(dir.path()).await.unwrap();
    assert_eq!(chain.retention_policy(), policy);
    assert_eq!(chain.retention(&key).retain_until_us, until + HOUR_US);
    assert!(matches!(
        violation(chain.append(vec![NewEvent::tombstone(key)], None).await),
        RetentionViolation::Protected { rule: RetentionRule::Compliance, .. }
    ));
    chain.verify().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_is_allowed_exactly_at_the_retain_until_instant() {
    let dir = tempfile::tempdir().unwrap();
    let chain = open(dir.path()).await.unwrap();
    chain
        .append(
            vec![NewEvent::retention_policy(RetentionPolicy { mode: RetentionMode::Compliance, ..Default::default() })],
            None,
        )
        .await
        .unwrap();
    let key = put(&chain, "edge").await;
    let until = now_us() + 5_000_000;
    chain.append(vec![object_change(key, Some(until), None)], None).await.unwrap();
    let tombstone_at = |timestamp_us| {
        let mut event = NewEvent::tombstone(key);
        event.timestamp_us = timestamp_us;
        vec![event]
    };
    assert!(matches!(
        violation(chain.append(tombstone_at(until - 1), None).await),
        RetentionViolation::Protected { until_us: Some(at), .. } if at == until
    ));
    chain.append(tombstone_at(until), None).await.expect("not protected at the instant itself");
    assert!(chain.get(&key).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governance_yields_to_bypass_keys_and_legal_holds_to_hold_keys_only() {
    let dir = tempfile::tempdir().unwrap();
    let chain = open(dir.path()).await.unwrap();
    let (bypass, holder, stranger) = (
        PrivateSignKey::generate(SignatureScheme::MlDsa44),
        PrivateSignKey::generate(SignatureScheme::MlDsa44),
        PrivateSignKey::generate(SignatureScheme::MlDsa44),
    );
    let policy = RetentionPolicy {
        mode: RetentionMode::Governance,
        default_retention_us: HOUR_US,
        bypass_keys: vec![bypass.id()],
        hold_keys: vec![holder.id()],
    };
    chain.append(vec![NewEvent::retention_policy(policy)], None).await.unwrap();
    let session_of = |key: &PrivateSignKey| {
        let mut session = AteSession::default();
        session.add_user_write_key(key.clone());
        session
    };
    let (a, b) = (put(&chain, "record-a").await, put(&chain, "record-b").await);
    // Every DIO holds the chain: they go with this block before the reopen.
    {
        // Unsigned and stranger-signed deletions are refused; a bypass signer may delete early.
        assert!(matches!(
            violation(chain.append(vec![NewEvent::tombstone(a)], None).await),
            RetentionViolation::Protected { rule: RetentionRule::Governance, .. }
        ));
        let mut dio = chain.dio(&session_of(&stranger)).await;
        dio.delete(&a).unwrap();
        assert!(matches!(violation(dio.commit().await), RetentionViolation::Protected { .. }));
        let mut dio = chain.dio(&session_of(&bypass)).await;
        dio.delete(&a).unwrap();
        dio.commit().await.expect("governance bypass");
        assert!(chain.get(&a).is_none());

        // A legal hold blocks even the bypass key; only a hold key places or lifts it.
        assert!(matches!(
            violation(chain.append(vec![object_change(b, None, Some(true))], None).await),
            RetentionViolation::NotHoldKey
        ));
        let hold = |on: bool, key: &PrivateSignKey| {
            let chain = &chain;
            let session = session_of(key);
            async move {
                let mut dio = chain.dio(&session).await;
                dio.set_legal_hold(&b, on);
                dio.commit().await
            }
        };
        hold(true, &holder).await.unwrap();
        assert!(chain.retention(&b).legal_hold);
        let mut dio = chain.dio(&session_of(&bypass)).await;
        dio.delete(&b).unwrap();
        assert!(matches!(
            violation(dio.commit().await),
            RetentionViolation::Protected { rule: RetentionRule::LegalHold, until_us: None }
        ));
        assert!(matches!(violation(hold(false, &stranger).await), RetentionViolation::NotHoldKey));
        hold(false, &holder).await.unwrap();
        let mut dio = chain.dio(&session_of(&bypass)).await;
        dio.delete(&b).unwrap();
        dio.commit().await.expect("hold lifted, governance bypass");
    }
    drop(chain);
    let chain = open(dir.path()).await.unwrap();
    chain.verify().await.unwrap();
}

fn now_us() -> u64 {
    ate::chain::now_us()
}

/// The erasure path under retention: a record that may not be deleted is
/// made unreadable by destroying every copy of its read key, and the chain
/// stays whole and verifiable (docs/worm.md, "Right to erasure").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crypto_shredding_erases_what_retention_forbids_deleting() {
    use ate::crypto::ReadKey;
    use ate::trust::{ReadAuthority, WriteAuthority};
    let dir = tempfile::tempdir().unwrap();
    let chain = open(dir.path()).await.unwrap();
    let policy =
        RetentionPolicy { mode: RetentionMode::Compliance, default_retention_us: HOUR_US, ..Default::default() };
    chain.append(vec![NewEvent::retention_policy(policy)], None).await.unwrap();
    let subject_key = ReadKey::generate().unwrap();
    let mut session = AteSession::new("controller");
    session.add_user_read_key(subject_key.clone());
    let record = {
        let mut dio = chain.dio(&session).await;
        let record = *dio.store(String::from("name, address, date of birth")).unwrap().key();
        dio.set_authority(&record, WriteAuthority::Inherit, ReadAuthority::Specific(subject_key.id())).unwrap();
        dio.commit().await.unwrap();
        record
    };
    assert!(matches!(
        violation(chain.append(vec![NewEvent::tombstone(record)], None).await),
        RetentionViolation::Protected { rule: RetentionRule::Compliance, .. }
    ));
    // Every copy of the key destroyed (zeroized on drop).
    drop(session);
    drop(subject_key);
    drop(chain);
    let chain = open(dir.path()).await.unwrap();
    let mut dio = chain.dio(&AteSession::new("anyone")).await;
    assert!(matches!(dio.load::<String>(&record).await, Err(AteError::NoReadAccess { .. })));
    assert!(chain.get(&record).is_some(), "the record is still in the chain, as retention requires");
    chain.verify().await.expect("the chain stays verifiable");
}
