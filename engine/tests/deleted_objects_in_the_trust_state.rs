//! Deleted objects and the authority tree: a deleted leaf leaves no link
//! behind (a queue's acknowledged items do not accumulate), a deleted
//! object that still has children keeps its link (they inherit through it),
//! and recovery rebuilds exactly what validation kept.

mod common;

use ate::crypto::PrivateSignKey;
use ate::messaging::{Queue, QueueConfig};
use ate::prelude::*;
use ate::trust::{ReadAuthority, WriteAuthority};
use common::{session_with, signing_key};
use std::sync::Arc;

async fn chain_with_root(dir: &std::path::Path, root: &PrivateSignKey) -> Arc<Chain> {
    common::open_rooted(common::small_config(dir), root.public(), "trusted").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_queue_items_leave_no_links_behind() {
    let dir = tempfile::tempdir().unwrap();
    let chain = common::open(dir.path()).await.unwrap();
    let queue = Queue::new(&chain, &AteSession::default(), "jobs", QueueConfig::default());
    let before = chain.trust_tree_entries();
    for round in 0..20 {
        queue.push_many((0..25).map(|index| format!("job {round}-{index}"))).await.unwrap();
        assert_eq!(chain.trust_tree_entries(), before + 25, "one link per waiting item");
        let deliveries = queue.take_many::<String>(25).await.unwrap();
        assert_eq!(deliveries.len(), 25);
        assert_eq!(queue.ack_many(deliveries).await.unwrap(), 25);
        assert_eq!(chain.trust_tree_entries(), before, "round {round}: acknowledged items left links");
    }
    // Half of a last batch stays waiting: recovery keeps exactly those links.
    queue.push_many((0..10).map(|index| format!("left {index}"))).await.unwrap();
    let deliveries = queue.take_many::<String>(5).await.unwrap();
    assert_eq!(queue.ack_many(deliveries).await.unwrap(), 5);
    assert_eq!(chain.trust_tree_entries(), before + 5);
    drop((queue, chain));
    let chain = common::open(dir.path()).await.unwrap();
    assert_eq!(chain.trust_tree_entries(), before + 5, "recovery rebuilt what validation kept");
    chain.verify().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_object_with_children_keeps_passing_its_parents_rule_down() {
    let dir = tempfile::tempdir().unwrap();
    let (root, editor, stranger) = (signing_key(), signing_key(), signing_key());
    let chain = chain_with_root(dir.path(), &root).await;
    // folder (editor only) → section → note; then the section is deleted.
    let mut owner = chain.dio(&session_with(&[&root, &editor])).await;
    let folder = *owner.store("folder".to_string()).unwrap().key();
    owner.set_authority(&folder, WriteAuthority::Specific(vec![editor.id()]), ReadAuthority::Inherit).unwrap();
    owner.commit().await.unwrap();
    let mut as_editor = chain.dio(&session_with(&[&editor])).await;
    let section = *as_editor.store_child(&folder, "section".to_string()).unwrap().key();
    as_editor.commit().await.unwrap();
    as_editor.store_child(&section, "note".to_string()).unwrap();
    as_editor.commit().await.unwrap();
    let entries = chain.trust_tree_entries();
    as_editor.delete(&section).unwrap();
    as_editor.commit().await.unwrap();
    assert_eq!(chain.trust_tree_entries(), entries, "the section still has a child: its link stays");

    // New children under the deleted section are still the folder's business.
    assert_only_the_editor_writes_under(&chain, &section, &editor, &stranger).await;
    drop((owner, as_editor, chain));
    let chain = chain_with_root(dir.path(), &root).await;
    assert_eq!(chain.trust_tree_entries(), entries + 1, "recovery kept the links too");
    assert_only_the_editor_writes_under(&chain, &section, &editor, &stranger).await;
}

/// Under `parent`, the editor may write and a stranger may not: the
/// folder's rule, reached through `parent`'s link.
async fn assert_only_the_editor_writes_under(
    chain: &Arc<Chain>,
    parent: &PrimaryKey,
    editor: &PrivateSignKey,
    stranger: &PrivateSignKey,
) {
    let mut intruder = chain.dio(&session_with(&[stranger])).await;
    intruder.store_child(parent, "planted".to_string()).unwrap();
    let result = intruder.commit().await;
    assert!(matches!(result, Err(AteError::NoWriteAccess { .. })), "a stranger wrote under the folder: {result:?}");
    let mut as_editor = chain.dio(&session_with(&[editor])).await;
    as_editor.store_child(parent, "another note".to_string()).unwrap();
    as_editor.commit().await.expect("the editor writes under the folder");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_leaf_leaves_nothing_and_comes_back_only_where_its_parent_allows() {
    let dir = tempfile::tempdir().unwrap();
    let (root, editor) = (signing_key(), signing_key());
    let chain = chain_with_root(dir.path(), &root).await;
    let mut owner = chain.dio(&session_with(&[&root, &editor])).await;
    let folder = *owner.store("folder".to_string()).unwrap().key();
    owner.set_authority(&folder, WriteAuthority::Specific(vec![editor.id()]), ReadAuthority::Inherit).unwrap();
    owner.commit().await.unwrap();
    let entries = chain.trust_tree_entries();
    let mut as_editor = chain.dio(&session_with(&[&editor])).await;
    let page = *as_editor.store_child(&folder, "page".to_string()).unwrap().key();
    as_editor.commit().await.unwrap();
    assert_eq!(chain.trust_tree_entries(), entries + 1);
    as_editor.delete(&page).unwrap();
    as_editor.commit().await.unwrap();
    assert_eq!(chain.trust_tree_entries(), entries, "a deleted leaf leaves nothing behind");

    // Written again under the folder, it is judged by the folder's rule, as a new object is.
    let forged = NewEvent { parent: Some((folder, CollectionId::default())), ..NewEvent::data(page, b"x".to_vec()) };
    let error = chain.append(vec![forged], None).await.unwrap_err();
    assert!(
        matches!(error, AteError::Rejected { reason: ate::trust::RejectReason::Unauthorized { .. }, .. }),
        "{error}"
    );
    as_editor.store_child(&folder, "another page".to_string()).unwrap();
    as_editor.commit().await.unwrap();
    assert_eq!(chain.trust_tree_entries(), entries + 1);
    drop((owner, as_editor, chain));
    let chain = chain_with_root(dir.path(), &root).await;
    assert_eq!(chain.trust_tree_entries(), entries + 1, "recovery forgot the same link");
    chain.verify().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_one_commit_the_last_word_on_an_object_decides() {
    let dir = tempfile::tempdir().unwrap();
    let chain = common::open(dir.path()).await.unwrap();
    let parent = PrimaryKey::from_name("parent");
    let under_parent = |key: PrimaryKey| NewEvent {
        parent: Some((parent, CollectionId::default())),
        ..NewEvent::data(key, b"v".to_vec())
    };
    let (kept, gone, grandchild) =
        (PrimaryKey::from_name("kept"), PrimaryKey::from_name("gone"), PrimaryKey::from_name("grandchild"));
    chain.append(vec![NewEvent::data(parent, b"p".to_vec())], None).await.unwrap();
    let before = chain.trust_tree_entries();
    chain.append(vec![under_parent(kept), under_parent(gone)], None).await.unwrap();
    assert_eq!(chain.trust_tree_entries(), before + 2);
    // Deleted, then written again: stays. Written, then deleted: goes.
    chain.append(vec![NewEvent::tombstone(kept), under_parent(kept)], None).await.unwrap();
    chain.append(vec![under_parent(gone), NewEvent::tombstone(gone)], None).await.unwrap();
    assert_eq!(chain.trust_tree_entries(), before + 1);
    // Deleted while a child is written under it in the same commit: its link stays.
    let child = NewEvent { parent: Some((kept, CollectionId::default())), ..NewEvent::data(grandchild, b"c".to_vec()) };
    chain.append(vec![NewEvent::tombstone(kept), child], None).await.unwrap();
    assert_eq!(chain.trust_tree_entries(), before + 2);
    drop(chain);
    let chain = common::open(dir.path()).await.unwrap();
    assert_eq!(chain.trust_tree_entries(), before + 2, "recovery decided the same");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_object_with_its_own_authority_keeps_its_name_governed() {
    let dir = tempfile::tempdir().unwrap();
    let (root, editor) = (signing_key(), signing_key());
    let chain = common::open(dir.path()).await.unwrap();
    let mut as_editor = chain.dio(&session_with(&[&root, &editor])).await;
    let folder = *as_editor.store("folder".to_string()).unwrap().key();
    as_editor.set_authority(&folder, WriteAuthority::Specific(vec![editor.id()]), ReadAuthority::Inherit).unwrap();
    as_editor.commit().await.unwrap();
    let entries = chain.trust_tree_entries();
    as_editor.delete(&folder).unwrap();
    as_editor.commit().await.unwrap();
    assert_eq!(chain.trust_tree_entries(), entries, "an authority record outlives its object");
    // On this chain anyone may write at the root, but not this name.
    let squatter = NewEvent::data(folder, b"mine now".to_vec());
    let error = chain.append(vec![squatter], None).await.unwrap_err();
    assert!(
        matches!(error, AteError::Rejected { reason: ate::trust::RejectReason::Unauthorized { .. }, .. }),
        "{error}"
    );
    chain.append(vec![NewEvent::data(PrimaryKey::from_name("elsewhere"), b"free".to_vec())], None).await.unwrap();
}
