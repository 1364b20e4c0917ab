//! The systems ATE is compared with, driven through their established Rust
//! clients with the same workload code, configured for the same durability
//! as ATE where the client can set it (and the report says how each ran).

pub mod nats;
pub mod redis;
