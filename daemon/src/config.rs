//! `atedb run --config FILE`: the TOML configuration.
//!
//! ```toml
//! data = "/var/lib/atedb"              # default: $STATE_DIRECTORY, else ./ate-data
//! listen = "0.0.0.0:5000"
//! metrics = "127.0.0.1:9500"           # Prometheus text over HTTP; off when absent
//! durability = "batched"               # sync | batched | buffered
//! trusted_issuers = ["/etc/atedb/partner-issuer.pub"]   # encoded public signing keys
//!
//! [chains]
//! allow_create = ["*"]                 # names (or prefixes ending in *) that may be created
//! root_keys = ["/etc/atedb/root.pub"]  # writing a root object needs one of these signatures
//!
//! [cluster]                            # optional
//! this = "10.0.0.1:5000"
//! members = ["10.0.0.1:5000", "10.0.0.2:5000"]
//!
//! [log]                                # optional: segments and their upkeep
//! segment_bytes = 268435456            # size of new segment files (default 256 MiB)
//! backend = "io_uring"                 # io_uring (default) | pwrite
//! direct_io = true                     # append with O_DIRECT, bypassing the page cache (default: false)
//! zero_ahead_bytes = 4194304           # zeros kept written ahead of the appends while idle (default 4 MiB; 0 = off)
//! drop_behind_bytes = 67108864         # drop log pages this far behind the appends from the page cache (default 64 MiB; 0 = off)
//! populate_ahead_bytes = 33554432      # populate the page cache with huge pages this far ahead of the appends (default 0 = off)
//! drop_older_than = "30d"              # drop sealed segments older than this (default: never)
//! tombstone_horizon = "7d"             # ...but keep those holding younger deletions
//! compact = true                       # compact sealed segments too (default: false)
//! every = "1h"                         # how often (and at each chain's first open)
//!
//! [tls]                                # optional: a CA-issued identity
//! certificate = "/etc/atedb/tls.crt"   # PEM chain (server first) or one DER certificate
//! key = "/etc/atedb/tls.key"           # PEM (PKCS#8, PKCS#1, SEC1) or PKCS#8 DER
//! ```
//! Without `[tls]`, atedb creates a self-signed certificate in the data
//! directory on first start and clients pin its fingerprint.
//! Unknown keys are errors, so a typo never silently means a default.
//! `SIGHUP` re-reads the file and applies `trusted_issuers` and
//! `chains.allow_create`; the other settings (`chains.root_keys` too) need a restart.

use ate::crypto::PublicSignKey;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data: Option<PathBuf>,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where Prometheus metrics are served over HTTP (off when absent).
    pub metrics: Option<SocketAddr>,
    #[serde(default)]
    pub durability: DurabilitySetting,
    #[serde(default)]
    pub trusted_issuers: Vec<PathBuf>,
    #[serde(default)]
    pub chains: ChainPolicy,
    pub cluster: Option<Cluster>,
    pub tls: Option<TlsIdentity>,
    #[serde(default)]
    pub log: LogSettings,
}

/// Segment size and the log upkeep atedb runs on its own (`docs/worm.md`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub segment_bytes: Option<u64>,
    #[serde(default)]
    pub backend: BackendSetting,
    #[serde(default)]
    pub direct_io: bool,
    pub zero_ahead_bytes: Option<u64>,
    pub drop_behind_bytes: Option<u64>,
    pub populate_ahead_bytes: Option<u64>,
    pub drop_older_than: Option<String>,
    #[serde(default = "default_tombstone_horizon")]
    pub tombstone_horizon: String,
    #[serde(default)]
    pub compact: bool,
    #[serde(default = "default_every")]
    pub every: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            segment_bytes: None,
            backend: BackendSetting::default(),
            direct_io: false,
            zero_ahead_bytes: None,
            drop_behind_bytes: None,
            populate_ahead_bytes: None,
            drop_older_than: None,
            tombstone_horizon: default_tombstone_horizon(),
            compact: false,
            every: default_every(),
        }
    }
}

fn default_tombstone_horizon() -> String {
    "7d".into()
}

fn default_every() -> String {
    "1h".into()
}

impl LogSettings {
    /// The upkeep to run, periods parsed; `None` when there is none.
    pub fn maintenance(&self) -> Result<Option<crate::maintenance::LogMaintenance>, String> {
        let period = |text: &str| ate_client::cli::parse_period(text).map_err(|error| error.to_string());
        if self.drop_older_than.is_none() && !self.compact {
            return Ok(None);
        }
        let every = std::time::Duration::from_micros(period(&self.every)?);
        if every.is_zero() {
            return Err("log.every must be above zero".into());
        }
        Ok(Some(crate::maintenance::LogMaintenance {
            drop_older_than_us: self.drop_older_than.as_deref().map(period).transpose()?,
            tombstone_horizon_us: period(&self.tombstone_horizon)?,
            compact: self.compact,
            every,
        }))
    }
}

/// Certificate and key files for the server's TLS identity.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsIdentity {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// How segments are appended to (`ate::StorageBackend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum BackendSetting {
    #[default]
    #[serde(rename = "io_uring")]
    IoUring,
    #[serde(rename = "pwrite")]
    Pwrite,
}

impl From<BackendSetting> for ate::StorageBackend {
    fn from(value: BackendSetting) -> Self {
        match value {
            BackendSetting::IoUring => ate::StorageBackend::IoUring,
            BackendSetting::Pwrite => ate::StorageBackend::Portable,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilitySetting {
    Sync,
    #[default]
    Batched,
    Buffered,
}

impl From<DurabilitySetting> for ate::Durability {
    fn from(value: DurabilitySetting) -> Self {
        match value {
            DurabilitySetting::Sync => ate::Durability::Sync,
            DurabilitySetting::Batched => ate::Durability::Batched,
            DurabilitySetting::Buffered => ate::Durability::Buffered,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainPolicy {
    /// Chain names that may be created on first open (existing chains can
    /// always be opened by a token that allows them).
    #[serde(default = "allow_everything")]
    pub allow_create: Vec<String>,
    /// Public signing keys (`ate keygen` writes `FILE.pub`) that govern the
    /// root objects of every chain: with any, writing a root object (or
    /// its authority) needs a signature by one of them. Without, anyone
    /// with the `write` role may write roots (docs/security.md, G3).
    #[serde(default)]
    pub root_keys: Vec<PathBuf>,
}

impl Default for ChainPolicy {
    fn default() -> Self {
        Self { allow_create: allow_everything(), root_keys: Vec::new() }
    }
}

impl ChainPolicy {
    pub fn may_create(&self, chain: &str) -> bool {
        self.allow_create.iter().any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => chain.starts_with(prefix),
            None => pattern == chain,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub this: String,
    pub members: Vec<String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5000))
}

fn allow_everything() -> Vec<String> {
    vec!["*".to_string()]
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|error| ConfigError::Invalid { path: path.into(), message: error.to_string() })?;
        config.log.maintenance().map_err(|message| ConfigError::Invalid { path: path.into(), message })?;
        if let Some(cluster) = &config.cluster {
            if !cluster.members.contains(&cluster.this) {
                let message = format!("cluster.this ({}) is not among cluster.members", cluster.this);
                return Err(ConfigError::Invalid { path: path.into(), message });
            }
        }
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    /// The trusted issuer keys the configuration names.
    pub fn issuer_keys(&self) -> Result<Vec<PublicSignKey>, ConfigError> {
        read_public_keys(&self.trusted_issuers)
    }

    pub fn root_keys(&self) -> Result<Vec<PublicSignKey>, ConfigError> {
        read_public_keys(&self.chains.root_keys)
    }
}

fn read_public_keys(paths: &[PathBuf]) -> Result<Vec<PublicSignKey>, ConfigError> {
    paths
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
            PublicSignKey::decode(&bytes)
                .map_err(|error| ConfigError::Invalid { path: path.clone(), message: error.to_string() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_configuration_parses_and_defaults_fill_the_rest() {
        let text = r#"
            data = "/var/lib/atedb"
            listen = "0.0.0.0:5001"
            durability = "sync"
            trusted_issuers = ["/etc/atedb/a.pub"]
            [chains]
            allow_create = ["tenant-*", "audit"]
            [cluster]
            this = "10.0.0.1:5001"
            members = ["10.0.0.1:5001", "10.0.0.2:5001"]
            [log]
            segment_bytes = 1048576
            direct_io = true
            zero_ahead_bytes = 0
            drop_behind_bytes = 67108864
            populate_ahead_bytes = 33554432
            drop_older_than = "30d"
        "#;
        let config = Config::parse(text, Path::new("atedb.toml")).unwrap();
        assert_eq!(config.listen, "0.0.0.0:5001".parse::<SocketAddr>().unwrap());
        assert_eq!(config.durability, DurabilitySetting::Sync);
        assert!(config.chains.may_create("tenant-7") && config.chains.may_create("audit"));
        assert!(!config.chains.may_create("other"));
        assert!(config.log.direct_io);
        assert_eq!(config.log.zero_ahead_bytes, Some(0));
        assert_eq!(config.log.drop_behind_bytes, Some(64 << 20));
        assert_eq!(config.log.populate_ahead_bytes, Some(32 << 20));
        let minimal = Config::parse("", Path::new("empty.toml")).unwrap();
        assert_eq!(minimal.listen, default_listen());
        assert!(minimal.chains.may_create("anything"));
        assert_eq!(minimal.durability, DurabilitySetting::Batched);
        assert!(!minimal.log.direct_io, "appends go through the page cache unless asked");
        assert_eq!(minimal.log.zero_ahead_bytes, None, "the engine's default lead");
        assert_eq!(minimal.log.drop_behind_bytes, None, "atedb's default window");
        assert_eq!(minimal.log.populate_ahead_bytes, None, "no page cache populated ahead unless asked");
        assert_eq!(minimal.log.maintenance(), Ok(None), "no upkeep unless asked for");
        let upkeep = config.log.maintenance().unwrap().unwrap();
        assert_eq!(upkeep.drop_older_than_us, Some(30 * 86_400 * 1_000_000));
        assert_eq!(upkeep.tombstone_horizon_us, 7 * 86_400 * 1_000_000);
        assert_eq!((upkeep.compact, upkeep.every), (false, std::time::Duration::from_secs(3600)));
        let bad = Config::parse("[log]\ndrop_older_than = \"soon\"", Path::new("bad.toml"));
        assert!(bad.unwrap_err().to_string().contains("not a period"));
    }

    #[test]
    fn typos_and_inconsistencies_are_errors() {
        for text in [
            "listen_address = \"0.0.0.0:1\"",
            "durability = \"sometimes\"",
            "[cluster]\nthis = \"a:1\"\nmembers = [\"b:1\"]",
            "listen = \"not an address\"",
        ] {
            assert!(Config::parse(text, Path::new("bad.toml")).is_err(), "{text}");
        }
    }
}
