//! Network client for remote ATE chains, and the wire protocol that it and
//! the `atedb` daemon share (one definition, used by both sides).
//!
//! - `protocol`: framing, messages, version negotiation (pure, tested without sockets);
//! - `transport`, `remote`, `link`: TLS connections, one request at a time or multiplexed;
//! - `registry`: remote chains with the embedded engine's API over a verified local replica;
//! - `queue`: a remote queue consumed without a replica;
//! - `ring`, `token`, `cli`: chain placement, access tokens, the `ate` tool's logic.

pub mod cli;
pub mod link;
pub mod protocol;
pub mod queue;
pub mod registry;
pub mod remote;
pub mod ring;
pub mod token;
pub mod transport;
