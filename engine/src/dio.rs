//! DIO: the typed, transactional data API (store / load / delete / commit).
//!
//! A `Dio` stages changes and commits them as one atomic, optimistic
//! transaction: every object it writes or deletes must still be at the
//! version this transaction saw (read, or wrote in an earlier commit), or
//! the whole commit fails with [`AteError::Conflict`]. Objects that were only
//! read are not re-validated (this is not serializable isolation).

use crate::chain::{Chain, Expect, NewEvent};
use crate::config::Durability;
use crate::format::EventKind;
use crate::key::{CollectionId, PrimaryKey};
use crate::session::AteSession;
use crate::{AteError, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

/// A typed object with its key. Dereferences to the value.
#[derive(Debug, Clone)]
pub struct Dao<T> {
    key: PrimaryKey,
    parent: Option<(PrimaryKey, CollectionId)>,
    value: T,
}

impl<T> Dao<T> {
    pub fn key(&self) -> &PrimaryKey {
        &self.key
    }
    pub fn parent(&self) -> Option<(PrimaryKey, CollectionId)> {
        self.parent
    }
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T> Deref for Dao<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for Dao<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

#[derive(Debug)]
enum Staged {
    Put {
        payload: Vec<u8>,
        parent: Option<(PrimaryKey, CollectionId)>,
        expect: Expect,
    },
    Delete {
        expect: Expect,
    },
    /// Stored and deleted again inside this transaction: nothing to write.
    Cancelled,
}

/// A transaction on one chain.
#[derive(Debug)]
pub struct Dio {
    chain: Arc<Chain>,
    session: AteSession,
    order: Vec<PrimaryKey>,
    staged: HashMap<PrimaryKey, Staged>,
    /// Versions this transaction observed: `Some(seq)` for a version it read
    /// or wrote, `None` for "known absent".
    versions: HashMap<PrimaryKey, Option<u64>>,
}

fn serialize<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|error| AteError::Serialization(error.to_string()))
}

fn deserialize<T: DeserializeOwned>(key: PrimaryKey, payload: &[u8]) -> Result<T> {
    postcard::from_bytes(payload).map_err(|error| AteError::Deserialization { key, reason: error.to_string() })
}

impl Dio {
    pub(crate) fn new(chain: Arc<Chain>, session: AteSession) -> Self {
        Self { chain, session, order: Vec::new(), staged: HashMap::new(), versions: HashMap::new() }
    }

    pub fn chain(&self) -> &Arc<Chain> {
        &self.chain
    }

    pub fn session(&self) -> &AteSession {
        &self.session
    }

    fn stage(&mut self, key: PrimaryKey, staged: Staged) {
        if self.staged.insert(key, staged).is_none() {
            self.order.push(key);
        }
    }

    /// What a write of `key` must expect, from what this transaction saw.
    fn expectation(&self, key: &PrimaryKey) -> Expect {
        match self.versions.get(key) {
            Some(Some(version)) => Expect::Version(*version),
            Some(None) => Expect::Absent,
            None => Expect::Any,
        }
    }

    /// Stages a new object under a fresh random key.
    pub fn store<T: Serialize>(&mut self, value: T) -> Result<Dao<T>> {
        self.store_new(PrimaryKey::generate(), None, value)
    }

    /// Stages `value` under a chosen key (for example `PrimaryKey::from("config")`).
    /// If this transaction read the key, the commit requires that version.
    pub fn store_with_key<T: Serialize>(&mut self, key: PrimaryKey, value: T) -> Result<Dao<T>> {
        let payload = serialize(&value)?;
        let expect = self.expectation(&key);
        self.stage(key, Staged::Put { payload, parent: None, expect });
        Ok(Dao { key, parent: None, value })
    }

    /// Stages a new child of `parent` in its default collection.
    pub fn store_child<T: Serialize>(&mut self, parent: &PrimaryKey, value: T) -> Result<Dao<T>> {
        self.store_child_in(parent, CollectionId::default(), value)
    }

    /// Stages a new child of `parent` in `collection`.
    pub fn store_child_in<T: Serialize>(
        &mut self,
        parent: &PrimaryKey,
        collection: CollectionId,
        value: T,
    ) -> Result<Dao<T>> {
        self.store_new(PrimaryKey::generate(), Some((*parent, collection)), value)
    }

    fn store_new<T: Serialize>(
        &mut self,
        key: PrimaryKey,
        parent: Option<(PrimaryKey, CollectionId)>,
        value: T,
    ) -> Result<Dao<T>> {
        let payload = serialize(&value)?;
        self.stage(key, Staged::Put { payload, parent, expect: Expect::Absent });
        Ok(Dao { key, parent, value })
    }

    /// Stages the current value of `dao` as its next version.
    pub fn update<T: Serialize>(&mut self, dao: &Dao<T>) -> Result<()> {
        let payload = serialize(&dao.value)?;
        let expect = match self.staged.get(&dao.key) {
            Some(Staged::Put { expect, .. }) => *expect,
            _ => self.expectation(&dao.key),
        };
        self.stage(dao.key, Staged::Put { payload, parent: dao.parent, expect });
        Ok(())
    }

    /// Stages the deletion of `key`. Fails with `NotFound` if it does not exist.
    pub fn delete(&mut self, key: &PrimaryKey) -> Result<()> {
        match self.staged.get(key) {
            Some(Staged::Put { expect: Expect::Absent, .. }) => {
                self.staged.insert(*key, Staged::Cancelled);
                return Ok(());
            }
            Some(Staged::Delete { .. }) | Some(Staged::Cancelled) => return Err(AteError::NotFound { key: *key }),
            _ => {}
        }
        let expect = match self.versions.get(key) {
            Some(Some(version)) => Expect::Version(*version),
            Some(None) => return Err(AteError::NotFound { key: *key }),
            None => match self.chain.version(key) {
                Some(version) => Expect::Version(version),
                None => return Err(AteError::NotFound { key: *key }),
            },
        };
        self.stage(*key, Staged::Delete { expect });
        Ok(())
    }

    /// Loads an object: this transaction's staged value if any, otherwise
    /// the latest committed version.
    pub async fn load<T: DeserializeOwned>(&mut self, key: &PrimaryKey) -> Result<Dao<T>> {
        match self.staged.get(key) {
            Some(Staged::Put { payload, parent, .. }) => {
                return Ok(Dao { key: *key, parent: *parent, value: deserialize(*key, payload)? })
            }
            Some(_) => return Err(AteError::NotFound { key: *key }),
            None => {}
        }
        let Some(event) = self.chain.get(key) else {
            self.versions.entry(*key).or_insert(None);
            return Err(AteError::NotFound { key: *key });
        };
        if event.header.kind() != Some(EventKind::Data) {
            return Err(AteError::WrongKind { key: *key, found: "non-data" });
        }
        let parent =
            event.header.parent().map(|p| (PrimaryKey::from_bytes(p), CollectionId(event.header.collection())));
        let value = deserialize(*key, event.payload)?;
        self.versions.insert(*key, Some(event.header.sequence()));
        Ok(Dao { key: *key, parent, value })
    }

    /// Whether `key` exists (staged changes included).
    pub fn exists(&self, key: &PrimaryKey) -> bool {
        match self.staged.get(key) {
            Some(Staged::Put { .. }) => true,
            Some(_) => false,
            None => self.chain.get(key).is_some(),
        }
    }

    /// Children of `parent` in its default collection, in creation order,
    /// followed by children staged in this transaction.
    pub async fn children<T: DeserializeOwned>(&mut self, parent: &PrimaryKey) -> Result<Vec<Dao<T>>> {
        self.children_in(parent, CollectionId::default()).await
    }

    pub async fn children_in<T: DeserializeOwned>(
        &mut self,
        parent: &PrimaryKey,
        collection: CollectionId,
    ) -> Result<Vec<Dao<T>>> {
        let mut keys = self.chain.children(parent, collection);
        let committed: std::collections::HashSet<PrimaryKey> = keys.iter().copied().collect();
        keys.extend(self.order.iter().filter(|key| {
            !committed.contains(key)
                && matches!(self.staged.get(key), Some(Staged::Put { parent: Some(p), .. }) if *p == (*parent, collection))
        }));
        let mut children = Vec::with_capacity(keys.len());
        for key in keys {
            match self.load(&key).await {
                Ok(dao) if dao.parent == Some((*parent, collection)) => children.push(dao),
                Ok(_) | Err(AteError::NotFound { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(children)
    }

    /// Whether anything is staged.
    pub fn has_uncommitted(&self) -> bool {
        self.staged.values().any(|staged| !matches!(staged, Staged::Cancelled))
    }

    /// Discards everything staged.
    pub fn cancel(&mut self) {
        self.staged.clear();
        self.order.clear();
    }

    /// Commits with the chain's default durability.
    pub async fn commit(&mut self) -> Result<()> {
        self.commit_with(None).await
    }

    /// Commits atomically. On error nothing is visible and the staged
    /// changes are kept (call [`Dio::cancel`] or reload and retry).
    pub async fn commit_with(&mut self, durability: Option<Durability>) -> Result<()> {
        let mut events = Vec::with_capacity(self.order.len());
        for key in &self.order {
            let event = match &self.staged[key] {
                Staged::Put { payload, parent, expect } => NewEvent {
                    key: *key,
                    kind: EventKind::Data,
                    parent: *parent,
                    type_tag: 0,
                    payload: payload.clone(),
                    expect: *expect,
                },
                Staged::Delete { expect } => NewEvent { expect: *expect, ..NewEvent::tombstone(*key) },
                Staged::Cancelled => continue,
            };
            events.push(event);
        }
        if events.is_empty() {
            self.cancel();
            return Ok(());
        }
        let receipt = self.chain.append(events, durability).await?;
        for (index, key) in self.order.iter().filter(|key| !matches!(self.staged[*key], Staged::Cancelled)).enumerate()
        {
            let version = match self.staged[key] {
                Staged::Delete { .. } => None,
                _ => Some(receipt.first_sequence + index as u64),
            };
            self.versions.insert(*key, version);
        }
        self.cancel();
        Ok(())
    }
}
