//! DIO semantics: read-your-writes, optimistic conflicts, atomic commits,
//! deletes, children in order, persistence across reopen.

mod common;

use ate::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Account {
    owner: String,
    balance: i64,
}

fn account(owner: &str, balance: i64) -> Account {
    Account { owner: owner.into(), balance }
}

async fn chain() -> (tempfile::TempDir, std::sync::Arc<Chain>) {
    let dir = tempfile::tempdir().unwrap();
    let chain = common::open(dir.path()).await.unwrap();
    (dir, chain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_values_are_readable_before_commit_and_durable_after() {
    let (dir, chain) = chain().await;
    let mut dio = chain.dio(&AteSession::default()).await;
    let key = *dio.store(account("ann", 10)).unwrap().key();
    assert_eq!(dio.load::<Account>(&key).await.unwrap().balance, 10);
    assert!(chain.get(&key).is_none(), "visible before commit");
    dio.commit().await.unwrap();
    assert!(!dio.has_uncommitted());
    drop(dio);
    drop(chain);
    let chain = common::open(dir.path()).await.unwrap();
    let mut dio = chain.dio(&AteSession::default()).await;
    assert_eq!(*dio.load::<Account>(&key).await.unwrap(), account("ann", 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_update_of_the_same_object_conflicts() {
    let (_dir, chain) = chain().await;
    let mut setup = chain.dio(&AteSession::default()).await;
    let key = *setup.store(account("bob", 100)).unwrap().key();
    setup.commit().await.unwrap();

    let mut first = chain.dio(&AteSession::default()).await;
    let mut second = chain.dio(&AteSession::default()).await;
    let mut a = first.load::<Account>(&key).await.unwrap();
    let mut b = second.load::<Account>(&key).await.unwrap();
    a.balance -= 30;
    b.balance -= 50;
    first.update(&a).unwrap();
    second.update(&b).unwrap();
    first.commit().await.unwrap();
    let error = second.commit().await.unwrap_err();
    assert!(matches!(error, AteError::Conflict { key: k } if k == key), "{error}");
    assert_eq!(chain.dio(&AteSession::default()).await.load::<Account>(&key).await.unwrap().balance, 70);

    // The winner can keep going without reloading: it knows its own version.
    a.balance -= 1;
    first.update(&a).unwrap();
    first.commit().await.unwrap();
    // The loser reloads and retries.
    second.cancel();
    let mut b = second.load::<Account>(&key).await.unwrap();
    assert_eq!(b.balance, 69);
    b.balance -= 50;
    second.update(&b).unwrap();
    second.commit().await.unwrap();
    assert_eq!(chain.dio(&AteSession::default()).await.load::<Account>(&key).await.unwrap().balance, 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_with_one_conflict_makes_nothing_visible() {
    let (_dir, chain) = chain().await;
    let mut setup = chain.dio(&AteSession::default()).await;
    let contested = *setup.store(account("carl", 1)).unwrap().key();
    setup.commit().await.unwrap();

    let mut loser = chain.dio(&AteSession::default()).await;
    let mut value = loser.load::<Account>(&contested).await.unwrap();
    let mut winner = chain.dio(&AteSession::default()).await;
    let mut other = winner.load::<Account>(&contested).await.unwrap();
    other.balance = 2;
    winner.update(&other).unwrap();
    winner.commit().await.unwrap();

    let fresh: Vec<PrimaryKey> = (0..5).map(|i| *loser.store(account(&format!("new{i}"), i)).unwrap().key()).collect();
    value.balance = 99;
    loser.update(&value).unwrap();
    let before = chain.next_sequence();
    assert!(matches!(loser.commit().await, Err(AteError::Conflict { .. })));
    assert_eq!(chain.next_sequence(), before, "a rejected commit consumed sequences");
    for key in &fresh {
        assert!(chain.get(key).is_none(), "part of a rejected commit became visible");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_not_found() {
    let (_dir, chain) = chain().await;
    let mut dio = chain.dio(&AteSession::default()).await;
    let key = *dio.store(account("dee", 5)).unwrap().key();
    dio.commit().await.unwrap();
    dio.delete(&key).unwrap();
    assert!(matches!(dio.load::<Account>(&key).await, Err(AteError::NotFound { .. })), "deleted in this DIO");
    assert!(chain.get(&key).is_some(), "delete visible before commit");
    dio.commit().await.unwrap();
    assert!(chain.get(&key).is_none());
    let mut other = chain.dio(&AteSession::default()).await;
    assert!(matches!(other.load::<Account>(&key).await, Err(AteError::NotFound { .. })));
    assert!(matches!(other.delete(&key), Err(AteError::NotFound { .. })));
    // Store then delete in one transaction writes nothing.
    let before = chain.next_sequence();
    let temporary = *other.store(account("tmp", 0)).unwrap().key();
    other.delete(&temporary).unwrap();
    other.commit().await.unwrap();
    assert_eq!(chain.next_sequence(), before);
    // Wrong type is a typed error, not garbage.
    let mut dio = chain.dio(&AteSession::default()).await;
    let text = *dio.store("just text".to_string()).unwrap().key();
    dio.commit().await.unwrap();
    assert!(matches!(dio.load::<Account>(&text).await, Err(AteError::Deserialization { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_come_back_in_creation_order() {
    let (dir, chain) = chain().await;
    let mut dio = chain.dio(&AteSession::default()).await;
    let parent = *dio.store(account("parent", 0)).unwrap().key();
    let mut expected = Vec::new();
    for i in 0..5 {
        expected.push(*dio.store_child(&parent, account(&format!("c{i}"), i)).unwrap().key());
    }
    // Staged children are listed too, in order.
    let staged: Vec<PrimaryKey> = dio.children::<Account>(&parent).await.unwrap().iter().map(|c| *c.key()).collect();
    assert_eq!(staged, expected);
    dio.commit().await.unwrap();
    let extra = *dio.store_child_in(&parent, CollectionId(7), account("other-collection", 0)).unwrap().key();
    // Updating a child keeps its place; deleting removes it.
    let mut second = dio.load::<Account>(&expected[1]).await.unwrap();
    second.balance = 100;
    dio.update(&second).unwrap();
    dio.delete(&expected[3]).unwrap();
    dio.commit().await.unwrap();
    expected.remove(3);
    drop(dio);
    drop(chain);
    let chain = common::open(dir.path()).await.unwrap();
    let mut dio = chain.dio(&AteSession::default()).await;
    let children = dio.children::<Account>(&parent).await.unwrap();
    assert_eq!(children.iter().map(|c| *c.key()).collect::<Vec<_>>(), expected);
    assert_eq!(children[1].balance, 100);
    let other: Vec<_> =
        dio.children_in::<Account>(&parent, CollectionId(7)).await.unwrap().iter().map(|c| *c.key()).collect();
    assert_eq!(other, vec![extra]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_durability_mode_commits_and_survives_reopen() {
    let (dir, chain) = chain().await;
    let mut keys = Vec::new();
    for durability in [Durability::Sync, Durability::Batched, Durability::Buffered] {
        let mut dio = chain.dio(&AteSession::default()).await;
        keys.push(*dio.store(format!("{durability:?}")).unwrap().key());
        dio.commit_with(Some(durability)).await.unwrap();
    }
    drop(chain);
    let chain = common::open(dir.path()).await.unwrap();
    let mut dio = chain.dio(&AteSession::default()).await;
    for key in keys {
        dio.load::<String>(&key).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_at_a_time_and_one_handle_per_chain() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::small_config(dir.path());
    let builder = ChainBuilder::new(&config).await.build();
    let first = builder.open(&ChainKey::from("shared")).await.unwrap();
    let again = builder.open(&ChainKey::from("shared")).await.unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &again));
    let other_builder = ChainBuilder::new(&config).await.build();
    let error = other_builder.open(&ChainKey::from("shared")).await.unwrap_err();
    assert!(matches!(error, AteError::Locked { .. }), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_keys_and_blind_writes() {
    let (_dir, chain) = chain().await;
    let key = PrimaryKey::from("settings");
    let mut dio = chain.dio(&AteSession::default()).await;
    dio.store_with_key(key, 1u32).unwrap();
    dio.commit().await.unwrap();
    let mut other = chain.dio(&AteSession::default()).await;
    other.store_with_key(key, 2u32).unwrap();
    other.commit().await.unwrap();
    // `dio` saw version 1 of the key when it wrote it: writing again conflicts.
    dio.store_with_key(key, 3u32).unwrap();
    assert!(matches!(dio.commit().await, Err(AteError::Conflict { .. })));
    assert_eq!(*chain.dio(&AteSession::default()).await.load::<u32>(&key).await.unwrap(), 2);
}

/// A commit's versions come from its receipt: on a signed chain the commit
/// also carries a published key (first) and a signature (last), so a
/// numbering off by one would make the next writes of these keys conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_commit_remembers_each_key_at_its_own_version() {
    let dir = tempfile::tempdir().unwrap();
    let root = common::signing_key();
    let chain = common::open_rooted(common::small_config(dir.path()), root.public(), "versions").await;
    let session = common::session_with(&[&root]);
    let mut dio = chain.dio(&session).await;
    let folder = *dio.store(account("folder", 0)).unwrap().key();
    let mut children = Vec::new();
    for balance in 0..5 {
        children.push(dio.store_child(&folder, account("child", balance)).unwrap());
    }
    dio.commit().await.unwrap();

    // Another transaction moves one child on; this one must notice, and
    // keep writing the others without reloading.
    let mut other = chain.dio(&session).await;
    let mut moved = other.load::<Account>(children[2].key()).await.unwrap();
    moved.balance = 100;
    other.update(&moved).unwrap();
    other.commit().await.unwrap();
    for (index, child) in children.iter_mut().enumerate() {
        child.balance += 1;
        dio.update(child).unwrap();
        let outcome = dio.commit().await;
        if index == 2 {
            assert!(matches!(outcome, Err(AteError::Conflict { .. })), "{outcome:?}");
            dio.cancel();
        } else {
            outcome.unwrap();
        }
    }
}
