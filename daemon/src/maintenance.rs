//! Log upkeep atedb runs on its own (`[log]` in the configuration):
//! compaction and time-based retention (dropping old segments) of every
//! chain it serves, at each chain's first open and then periodically.
//!
//! A drop on an open chain unlinks the segment files, but the chain keeps
//! serving from its mappings of them until it is closed (when its last
//! connection ends) or atedb restarts: the new start of the log and the
//! freed space take effect then. At a chain's first open nothing maps it
//! yet, so the drop is applied and the chain reopened right away.

use ate::chain::{now_us, DropRule};
use ate::prelude::*;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// What to run, and how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogMaintenance {
    pub drop_older_than_us: Option<u64>,
    pub tombstone_horizon_us: u64,
    pub compact: bool,
    pub every: Duration,
}

impl LogMaintenance {
    fn drop_rule(&self, now_us: u64) -> Option<DropRule> {
        self.drop_older_than_us.map(|older_than_us| DropRule {
            older_than_us: now_us.saturating_sub(older_than_us),
            tombstone_horizon_us: self.tombstone_horizon_us,
        })
    }

    /// Compacts and drops what the settings allow; how many segments were dropped.
    /// Failures are logged, never fatal: a protected version that stops a
    /// drop is the policy working.
    pub async fn run(&self, chain: &Chain) -> u32 {
        let now = now_us();
        if self.compact {
            match chain.compact(now).await {
                Ok(report) if report.events_compacted > 0 => {
                    tracing::info!(chain = %chain.key(), ?report, "compacted")
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(chain = %chain.key(), %error, "compaction failed"),
            }
        }
        let Some(rule) = self.drop_rule(now) else { return 0 };
        match chain.drop_segments(rule, now).await {
            Ok(report) => report.segments_dropped,
            // Already dropped since the chain was opened: it takes effect at reopen.
            Err(AteError::InvalidInput(reason)) => {
                tracing::debug!(chain = %chain.key(), %reason, "no drop");
                0
            }
            Err(error) => {
                tracing::warn!(chain = %chain.key(), %error, "old segments not dropped");
                0
            }
        }
    }

    /// Opens `key`; on its first open (nobody else holds it), runs the
    /// upkeep and, if segments were dropped, reopens so the log starts at
    /// the checkpoint and the space is freed.
    pub async fn open(&self, chains: &ChainBuilder, key: &ChainKey) -> ate::Result<Arc<Chain>> {
        let chain = chains.open(key).await?;
        if Arc::strong_count(&chain) > 1 || self.drop_older_than_us.is_none() {
            return Ok(chain);
        }
        if self.run(&chain).await == 0 {
            return Ok(chain);
        }
        drop(chain);
        chains.open(key).await
    }
}

/// Runs the upkeep on every open chain every `every`, until the server is gone.
pub fn spawn_periodic(server: Weak<crate::server::Server>, maintenance: LogMaintenance) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(maintenance.every).await;
            let Some(server) = server.upgrade() else { return };
            for chain in server.open_chains().await {
                maintenance.run(&chain).await;
            }
        }
    })
}
