//! ATE: a distributed, immutable data store with strong encryption and
//! authentication. This crate is the embeddable engine: event format, segment
//! log, materialized view and the DIO transaction API.
//!
//! ```no_run
//! use ate::prelude::*;
//! # #[derive(serde::Serialize, serde::Deserialize)] struct World { commandment: String }
//! # async fn demo() -> Result<(), AteError> {
//! let conf = AteConfig::default();
//! let builder = ChainBuilder::new(&conf).await.build();
//! let chain = builder.open(&ChainKey::from("universe")).await?;
//! let session = AteSession::default();
//! let mut dio = chain.dio(&session).await;
//! let key = dio.store(World { commandment: "Hello".into() })?.key().clone();
//! dio.commit().await?;
//! println!("{} world!", dio.load::<World>(&key).await?.commandment);
//! # Ok(()) }
//! ```

pub mod audit;
pub mod chain;
pub mod config;
pub mod crypto;
pub mod dio;
pub mod error;
pub mod format;
pub mod key;
mod log;
pub mod messaging;
pub mod metrics;
pub mod plugin;
pub mod prelude;
pub mod proof;
pub mod session;
pub mod storage;
pub mod trust;
pub mod verify;
pub mod view;

pub use chain::{Chain, ChainBuilder, Expect, NewEvent};
pub use config::{AteConfig, Durability, StorageBackend};
pub use dio::{Dao, Dio};
pub use error::{AteError, RemoteFailure, Result};
pub use key::{ChainKey, CollectionId, PrimaryKey};
pub use log::CommitReceipt;
pub use log::EventRef;
pub use session::AteSession;

/// The hasher of the engine's maps keyed by object keys, key ids and the
/// like. Each map is seeded at random on its own, so a writer choosing keys
/// cannot aim collisions at a seed it never sees; SipHash's stronger flood
/// resistance cost 7% of `verify` (docs/benchmarks.md) and showed in E2.
pub(crate) type FastHash = foldhash::fast::RandomState;
