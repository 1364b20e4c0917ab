//! Messaging on chains: the bus (subscriptions that read committed events
//! in order), consumer groups with durable offsets, an exactly-once work
//! queue, a TTL cache and typed services (RPC). All of it is ordinary
//! chain data: every message is validated, signed and encrypted like any
//! other object, and survives restarts like any other commit.

mod bus;
mod cache;
mod consumer;
mod queue;
mod service;

pub use bus::{BusEvent, BusEventKind, BusEventOf, BusEventRef, StartAt, Subscription};
pub use cache::Cache;
pub use consumer::{consumer_offset, set_consumer_offset, Consumer};
pub(crate) use queue::Leases;
pub use queue::{
    ack_each, random_token, Delivery, ItemLeaser, ItemPage, Queue, QueueConfig, QueueSpec, TakenItem, MAX_LEASE,
    MAX_LEASE_CANDIDATES,
};
pub use service::{invoke, serve, Message, ServiceError, ServiceHandle};

/// Type tags with this bit set mark objects the engine itself keeps
/// (consumer offsets, RPC plumbing): the bus does not deliver them.
pub const SYSTEM_TYPE_TAG: u64 = 1 << 63;

/// The stable type tag of a declared type name: 63 bits of BLAKE3.
pub fn type_tag(name: &str) -> u64 {
    let hash = blake3::derive_key("ate 2026 type tag", name.as_bytes());
    u64::from_le_bytes(hash[..8].try_into().expect("8 bytes")) & !SYSTEM_TYPE_TAG
}
