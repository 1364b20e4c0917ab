//! What a run drives: `--embedded DIR` (the engine in this process) or
//! `--target tcp://host:port/chain` (an `atedb` server, authenticated like
//! the `ate` CLI). Either way the workload gets `ate::Chain` handles.

use ate::prelude::*;
use ate_client::registry::{Registry, RegistryConfig, ServerTrust};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum Target {
    Embedded { dir: PathBuf, chain: String },
    Remote { url: String, token: String, trust: ServerTrust },
}

impl Target {
    /// A short description for reports.
    pub fn describe(&self) -> String {
        match self {
            Target::Embedded { dir, chain } => format!("embedded {}/{chain}", dir.display()),
            Target::Remote { url, .. } => format!("atedb {url}"),
        }
    }

    /// Opens `connections` handles on the chain: one embedded chain shared
    /// by every worker, or one remote connection (and replica) each.
    pub async fn open(&self, connections: usize, durability: Durability) -> Result<Vec<Arc<Chain>>, AteError> {
        match self {
            Target::Embedded { dir, chain } => {
                let config = AteConfig { log_path: Some(dir.clone()), durability, ..AteConfig::default() };
                let chain = ChainBuilder::new(&config).await.build().open(&ChainKey::from(chain.as_str())).await?;
                Ok(vec![chain])
            }
            Target::Remote { url, token, trust } => {
                let mut chains = Vec::with_capacity(connections.max(1));
                for _ in 0..connections.max(1) {
                    let registry = Registry::new(RegistryConfig::new(token.clone(), trust.clone())).await;
                    chains.push(registry.open(url).await?);
                }
                Ok(chains)
            }
        }
    }
}
