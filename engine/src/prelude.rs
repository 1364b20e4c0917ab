//! `use ate::prelude::*;` brings in everything the Quick Start needs.

pub use crate::chain::{Chain, ChainBuilder, Expect, NewEvent};
pub use crate::config::{AteConfig, Durability, StorageBackend};
pub use crate::dio::{Dao, Dio};
pub use crate::error::AteError;
pub use crate::key::{ChainKey, CollectionId, PrimaryKey};
pub use crate::session::AteSession;
