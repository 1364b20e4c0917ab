//! The logic behind the `ate` command-line tool, kept out of `main` so it
//! is testable and reusable: targets, the value format of named keys,
//! and the operations.
//!
//! Named keys map to object keys with `PrimaryKey::from_name(name)`; the
//! stored value is postcard(`CliValue { name, value }`) with type tag
//! `type_tag("ate.cli.value/v1")`, so `ls` can show names.

use crate::registry::{Registry, RegistryConfig, ServerTrust};
use ate::messaging::{type_tag, BusEvent, BusEventKind};
use ate::prelude::*;
use ate::CommitReceipt;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The type tag of values written by the CLI.
pub fn cli_type_tag() -> u64 {
    type_tag("ate.cli.value/v1")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CliValue {
    pub name: String,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// Errors with the exit code a script can rely on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("verification failed: {0}")]
    VerifyFailed(String),
    #[error("{0}")]
    Usage(String),
    #[error("I/O error: {0}")]
    Io(String),
    #[error(transparent)]
    Engine(#[from] AteError),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::NotFound(_) | CliError::VerifyFailed(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Io(_) | CliError::Engine(_) => 3,
        }
    }
}

/// Where a command works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A local data directory and a chain in it (`DIR/CHAIN`).
    Local { data_dir: PathBuf, chain: String },
    /// An `atedb` server (`tcp://host[:port]/CHAIN`, port 5000 by default).
    Remote { address: String, chain: String },
}

/// Where the fingerprints of servers trusted on first use are kept:
/// `$ATE_KNOWN_SERVERS`, else `$HOME/.ate/known_servers`.
pub fn known_servers_path() -> PathBuf {
    if let Some(path) = std::env::var_os("ATE_KNOWN_SERVERS") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".ate").join("known_servers")
}

impl Target {
    pub fn parse(text: &str) -> Result<Self, CliError> {
        if let Some(rest) = text.strip_prefix("tcp://") {
            let (host, chain) =
                rest.split_once('/').ok_or_else(|| CliError::Usage(format!("target '{text}' names no chain")))?;
            if host.is_empty() || chain.is_empty() {
                return Err(CliError::Usage(format!("target '{text}' needs tcp://HOST[:PORT]/CHAIN")));
            }
            let address = if host.contains(':') { host.to_string() } else { format!("{host}:5000") };
            return Ok(Target::Remote { address, chain: chain.to_string() });
        }
        let (dir, chain) = text.rsplit_once('/').ok_or_else(|| {
            CliError::Usage(format!("target '{text}' is neither DIR/CHAIN nor tcp://HOST[:PORT]/CHAIN"))
        })?;
        if chain.is_empty() {
            return Err(CliError::Usage(format!("target '{text}' names no chain after the last '/'")));
        }
        let data_dir = if dir.is_empty() { PathBuf::from("/") } else { PathBuf::from(dir) };
        Ok(Target::Local { data_dir, chain: chain.to_string() })
    }

    /// Opens the chain: embedded for local targets; for network targets a
    /// verified in-memory replica through a [`crate::registry::Registry`],
    /// filled up to the server's durable frontier, whose commits go to the
    /// server.
    pub async fn open(&self, options: &ConnectOptions<'_>) -> Result<Arc<Chain>, CliError> {
        match self {
            Target::Local { data_dir, chain } => {
                let config = AteConfig { log_path: Some(data_dir.clone()), ..AteConfig::default() };
                Ok(ChainBuilder::new(&config).await.build().open(&ChainKey::from(chain.as_str())).await?)
            }
            Target::Remote { address, chain } => {
                let registry = Registry::new(options.registry_config()?).await;
                Ok(registry.open(&format!("tcp://{address}/{chain}")).await?)
            }
        }
    }
}

/// How the CLI reaches servers.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectOptions<'a> {
    pub token_file: Option<&'a Path>,
    /// Pinned fingerprint; without it the known-servers file (first use).
    pub fingerprint: Option<&'a str>,
    /// CA certificates to verify the server against instead of pinning.
    pub ca_file: Option<&'a Path>,
}

impl ConnectOptions<'_> {
    /// The [`Registry`] settings these options describe (shared by the
    /// `ate` CLI and `ate-loadgen`): the token from `token_file`, and the
    /// fingerprint, else the CA file, else the known-servers file.
    pub fn registry_config(&self) -> Result<RegistryConfig, CliError> {
        let token_file = self
            .token_file
            .ok_or_else(|| CliError::Usage("network targets need --token-file (or ATE_TOKEN_FILE)".into()))?;
        let token =
            std::fs::read_to_string(token_file).map_err(|e| CliError::Io(format!("{}: {e}", token_file.display())))?;
        let trust = match (self.fingerprint, self.ca_file) {
            (Some(fingerprint), _) => ServerTrust::Fingerprint(fingerprint.to_string()),
            (None, Some(roots)) => ServerTrust::CertificateAuthority(roots.to_path_buf()),
            (None, None) => ServerTrust::KnownServers(known_servers_path()),
        };
        Ok(RegistryConfig::new(token, trust))
    }
}

/// The event storing `value` under the named key `name`, in the format
/// `ate get` reads (also used by `ate-loadgen`, whose acknowledged-write
/// log names keys `ate get` accepts).
pub fn named_event(name: &str, value: Vec<u8>) -> Result<NewEvent, CliError> {
    let payload = postcard::to_stdvec(&CliValue { name: name.to_string(), value })
        .map_err(|e| CliError::Io(format!("encoding the value: {e}")))?;
    let mut event = NewEvent::data(PrimaryKey::from_name(name), payload);
    event.type_tag = cli_type_tag();
    Ok(event)
}

pub use ate::chain::now_us;

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

/// Stores `value` under the named key (a blind write).
pub async fn put(chain: &Chain, name: &str, value: Vec<u8>) -> Result<CommitReceipt, CliError> {
    Ok(chain.append(vec![named_event(name, value)?], None).await?)
}

/// The stored value of a named key. Objects not written by the CLI are
/// returned as their raw payload.
pub fn get(chain: &Chain, name: &str) -> Result<CliValue, CliError> {
    let event = chain.get(&PrimaryKey::from_name(name)).ok_or_else(|| CliError::NotFound(format!("key '{name}'")))?;
    Ok(postcard::from_bytes::<CliValue>(event.payload)
        .unwrap_or_else(|_| CliValue { name: name.to_string(), value: event.payload.to_vec() }))
}

pub async fn delete(chain: &Chain, name: &str) -> Result<CommitReceipt, CliError> {
    let key = PrimaryKey::from_name(name);
    let Some(version) = chain.version(&key) else { return Err(CliError::NotFound(format!("key '{name}'"))) };
    let mut event = NewEvent::tombstone(key);
    event.expect = Expect::Version(version);
    Ok(chain.append(vec![event], None).await?)
}

/// Names of the live keys written by the CLI, sorted.
pub fn list(chain: &Chain) -> Vec<String> {
    let mut names: Vec<String> = chain
        .keys()
        .into_iter()
        .filter_map(|key| {
            let event = chain.get(&key)?;
            (event.header.type_tag() == cli_type_tag()).then_some(())?;
            postcard::from_bytes::<CliValue>(event.payload).ok().map(|value| value.name)
        })
        .collect();
    names.sort();
    names
}

/// One line of `ate tail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailLine {
    pub sequence: u64,
    pub key: String,
    pub kind: &'static str,
    pub name: Option<String>,
    pub value: Option<String>,
}

impl TailLine {
    pub fn to_text(&self) -> String {
        match (&self.name, &self.value) {
            (Some(name), Some(value)) => format!("{} {} {} {}={}", self.sequence, self.kind, self.key, name, value),
            _ => format!("{} {} {}", self.sequence, self.kind, self.key),
        }
    }

    pub fn to_json(&self) -> String {
        let optional = |value: &Option<String>| value.as_deref().map_or("null".to_string(), json_string);
        format!(
            "{{\"sequence\":{},\"kind\":\"{}\",\"key\":\"{}\",\"name\":{},\"value\":{}}}",
            self.sequence,
            self.kind,
            self.key,
            optional(&self.name),
            optional(&self.value)
        )
    }
}

pub fn describe(event: &BusEvent) -> TailLine {
    let kind = match event.kind {
        BusEventKind::Data => "put",
        BusEventKind::Deleted => "del",
    };
    let decoded = event.payload.as_ref().ok().and_then(|bytes| postcard::from_bytes::<CliValue>(bytes).ok());
    TailLine {
        sequence: event.sequence,
        key: event.key.to_string(),
        kind,
        name: decoded.as_ref().map(|value| value.name.clone()),
        value: decoded.map(|value| String::from_utf8_lossy(&value.value).into_owned()),
    }
}

/// A JSON string literal (quotes and escapes included).
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            control if (control as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", control as u32)),
            other => out.push(other),
        }
    }
    out.push('"');
    out
}

/// Writes a secret (a private key) readable by the owner only.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CliError::Io(format!("{}: {e}", path.display())))?;
    file.write_all(bytes).map_err(|e| CliError::Io(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            Target::parse("ate-data/demo").unwrap(),
            Target::Local { data_dir: PathBuf::from("ate-data"), chain: "demo".into() }
        );
        assert_eq!(
            Target::parse("/var/lib/ate/orders").unwrap(),
            Target::Local { data_dir: PathBuf::from("/var/lib/ate"), chain: "orders".into() }
        );
        assert_eq!(
            Target::parse("tcp://host:5001/x").unwrap(),
            Target::Remote { address: "host:5001".into(), chain: "x".into() }
        );
        assert_eq!(
            Target::parse("tcp://host/x").unwrap(),
            Target::Remote { address: "host:5000".into(), chain: "x".into() }
        );
        assert!(matches!(Target::parse("tcp://host"), Err(CliError::Usage(_))));
        assert!(matches!(Target::parse("nodir"), Err(CliError::Usage(_))));
        assert!(matches!(Target::parse("dir/"), Err(CliError::Usage(_))));
    }

    #[test]
    fn json_strings_escape() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }
}
