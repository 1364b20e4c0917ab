//! `atedb`: serves ATE chains to remote clients over TLS 1.3.
//!
//! Three tasks per connection (it reads and handles requests, writes what
//! is queued for the client, and replies to commits as they turn durable),
//! plus one per subscription. Each request is authorised by the connection's
//! token (which chains it may open) before any chain is touched, and by the
//! chain's own trust rules when a commit is validated. Subscriptions stream
//! stored records straight from the log, so a slow subscriber never holds
//! producers back and is never disconnected for lagging.

pub mod config;
pub mod maintenance;
pub mod metrics;
pub mod server;
pub mod systemd;
