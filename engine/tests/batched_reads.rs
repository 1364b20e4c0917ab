//! `Chain::get_many` answers exactly what one `get` per key would, in the
//! order asked, across its internal batches.

mod common;

use ate::{NewEvent, PrimaryKey};

fn summary(event: Option<ate::EventRef<'_>>) -> Option<(u64, Vec<u8>)> {
    event.map(|event| (event.header.sequence(), event.payload.to_vec()))
}

#[tokio::test]
async fn many_keys_read_like_one_get_each() {
    let dir = tempfile::tempdir().unwrap();
    let chain = common::open(dir.path()).await.unwrap();
    for commit in 0..40 {
        chain.append(common::commit_events(commit), None).await.unwrap();
    }
    // Overwrite some objects and delete others, so the answers mix new
    // versions, old ones and absences.
    let overwrites = (0..60).step_by(7).map(|object| NewEvent::data(common::key(object), vec![0xAB; 3000]));
    chain.append(overwrites.collect(), None).await.unwrap();
    let deletes = (0..60).step_by(5).map(|object| NewEvent::tombstone(common::key(object)));
    chain.append(deletes.collect(), None).await.unwrap();

    // Written, deleted, never written, and the same key twice, over several
    // of get_many's batches (it reads 32 records at a time).
    let mut keys: Vec<PrimaryKey> = (0..130).map(common::key).collect();
    keys.extend((0..10).map(|index| PrimaryKey::from_name(&format!("never-{index}"))));
    keys.extend([common::key(3), common::key(3), common::key(5)]);
    keys.reverse();

    let batched: Vec<_> = chain.get_many(&keys).into_iter().map(summary).collect();
    let single: Vec<_> = keys.iter().map(|key| summary(chain.get(key))).collect();
    assert_eq!(batched.len(), keys.len());
    assert_eq!(batched, single);
    let present = batched.iter().filter(|event| event.is_some()).count();
    assert!(present > 50 && present < keys.len() - 20, "the keys mix present and absent ones: {present}");
    assert!(batched.iter().flatten().any(|(_, payload)| payload == &vec![0xAB; 3000]), "overwrites are read");
    assert!(chain.get_many(&[]).is_empty());
}
