//! A cache on a collection: entries with a time-to-live, read as absent once
//! expired and removed by [`Cache::compact`] (tombstones, which subscribers
//! see as invalidations, like explicit [`Cache::invalidate`] calls).

use super::{StartAt, Subscription};
use crate::chain::{Chain, Expect};
use crate::key::{CollectionId, PrimaryKey};
use crate::session::AteSession;
use crate::{AteError, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Serialize, Deserialize)]
struct Entry<T> {
    /// Microseconds since the Unix epoch after which the entry reads as absent.
    expires_at_us: u64,
    value: T,
}

/// A named cache of `T` values on a chain.
#[derive(Debug, Clone)]
pub struct Cache<T> {
    chain: Arc<Chain>,
    session: AteSession,
    name: String,
    parent: PrimaryKey,
    _values: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Cache<T> {
    pub fn new(chain: &Arc<Chain>, session: &AteSession, name: &str) -> Self {
        Self {
            chain: Arc::clone(chain),
            session: session.clone(),
            name: name.to_string(),
            parent: PrimaryKey::from_name(&format!("ate.cache/{name}")),
            _values: PhantomData,
        }
    }

    fn key(&self, key: &str) -> PrimaryKey {
        PrimaryKey::from_name(&format!("ate.cache/{}/{key}", self.name))
    }

    /// Stores `value` for `ttl` (durable when this returns).
    pub async fn put(&self, key: &str, value: T, ttl: Duration) -> Result<()> {
        let expires_at_us = crate::chain::now_us().saturating_add(ttl.as_micros() as u64);
        let mut dio = self.chain.dio(&self.session).await;
        let placement = Some((self.parent, CollectionId::default()));
        dio.store_tagged(self.key(key), placement, Expect::Any, 0, Entry { expires_at_us, value })?;
        dio.commit().await
    }

    /// The value, or `None` if absent or expired.
    pub async fn get(&self, key: &str) -> Result<Option<T>> {
        let mut dio = self.chain.dio(&self.session).await;
        match dio.load::<Entry<T>>(&self.key(key)).await {
            Ok(entry) if entry.expires_at_us > crate::chain::now_us() => Ok(Some(entry.into_inner().value)),
            Ok(_) | Err(AteError::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The cached value, or `make()` stored for `ttl` and returned.
    pub async fn get_or_insert_with<Make, Fut>(&self, key: &str, ttl: Duration, make: Make) -> Result<T>
    where
        T: Clone,
        Make: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        if let Some(value) = self.get(key).await? {
            return Ok(value);
        }
        let value = make().await?;
        self.put(key, value.clone(), ttl).await?;
        Ok(value)
    }

    /// Removes an entry now (subscribers see the deletion).
    pub async fn invalidate(&self, key: &str) -> Result<()> {
        let mut dio = self.chain.dio(&self.session).await;
        match dio.delete(&self.key(key)) {
            Ok(()) => dio.commit().await,
            Err(AteError::NotFound { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Tombstones every expired entry; returns how many were removed.
    pub async fn compact(&self) -> Result<usize> {
        let now = crate::chain::now_us();
        let mut dio = self.chain.dio(&self.session).await;
        let mut removed = 0;
        let chain = Arc::clone(&self.chain);
        for key in chain.children(&self.parent, CollectionId::default()) {
            let Some(event) = chain.get(&key) else { continue };
            // The expiry is the entry's first field: read it without knowing `T`.
            let Ok(plaintext) = dio.open_payload_borrowed(key, event.header, event.payload) else { continue };
            let Ok((expires_at_us, _)) = postcard::take_from_bytes::<u64>(&plaintext) else { continue };
            if expires_at_us <= now && dio.delete(&key).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            dio.commit().await?;
        }
        Ok(removed)
    }

    /// Every change to the cache (puts, invalidations, compaction) from now.
    pub fn changes(&self) -> Result<Subscription> {
        self.chain.subscribe_collection(&self.session, &self.parent, CollectionId::default(), StartAt::Now)
    }
}
