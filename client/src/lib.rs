//! Network client for remote ATE chains, and the wire protocol that it and
//! the `atedb` daemon share (one definition, used by both sides).
//!
//! Today: the protocol (framing, messages, version negotiation), pure and
//! tested without sockets. The TLS transport, the daemon and the remote
//! chain API build on it.

pub mod cli;
pub mod protocol;
pub mod remote;
pub mod ring;
pub mod token;
pub mod transport;
