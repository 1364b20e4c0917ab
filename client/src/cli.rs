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
use ate::trust::retention::{RetentionChange, RetentionMode, RetentionPolicy, RetentionViolation};
use ate::CommitReceipt;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The type tag of values written by the CLI.
pub fn cli_type_tag() -> u64 {
    // Derived once: it is stamped on every event a producer writes.
    static TAG: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TAG.get_or_init(|| type_tag("ate.cli.value/v1"))
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
    /// The chain's rules (retention, authority) forbid it.
    #[error("refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Engine(#[from] AteError),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::NotFound(_) | CliError::VerifyFailed(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Io(_) | CliError::Engine(_) => 3,
            CliError::Refused(_) => 4,
        }
    }

    /// A rejection by the chain's rules, told in terms of the named key.
    fn from_commit(error: AteError, name: &str) -> Self {
        match error {
            AteError::Rejected { reason: ate::trust::RejectReason::Retention(violation), .. } => {
                CliError::Refused(format!("'{name}': {}", describe_violation(&violation)))
            }
            AteError::Rejected { reason, .. } => CliError::Refused(format!("'{name}': {reason}")),
            // The same rejection made by a server (its message names the rule).
            AteError::Remote { failure: ate::RemoteFailure::Rejected, message } => {
                CliError::Refused(format!("'{name}': {message}"))
            }
            other => CliError::Engine(other),
        }
    }
}

fn describe_violation(violation: &RetentionViolation) -> String {
    match violation {
        RetentionViolation::Protected { rule, until_us: Some(until) } => {
            format!("protected by {rule} until {}", format_instant(*until))
        }
        RetentionViolation::Shortened { rule, current_us, requested_us } => format!(
            "retention may only be extended ({rule}): retained until {}, asked for {}",
            format_instant(*current_us),
            format_instant(*requested_us)
        ),
        other => other.to_string(),
    }
}

/// `2030-01-01T00:00:00Z` (RFC 3339, any offset) or `2030-01-01` (midnight
/// UTC), as µs since the epoch.
pub fn parse_instant(text: &str) -> Result<u64, CliError> {
    use time::format_description::well_known::Rfc3339;
    let invalid = || CliError::Usage(format!("'{text}' is not a date (2030-01-01 or 2030-01-01T12:00:00Z)"));
    let instant = match time::OffsetDateTime::parse(text, &Rfc3339) {
        Ok(instant) => instant,
        Err(_) => {
            let format =
                time::format_description::parse_borrowed::<2>("[year]-[month]-[day]").map_err(|_| invalid())?;
            time::Date::parse(text, &format).map_err(|_| invalid())?.midnight().assume_utc()
        }
    };
    u64::try_from(instant.unix_timestamp_nanos() / 1_000).map_err(|_| invalid())
}

/// µs since the epoch as RFC 3339 in UTC.
pub fn format_instant(us: u64) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .ok()
        .and_then(|instant| instant.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{us} µs"))
}

/// A key id as `ate keygen` prints it (64 hex digits).
pub fn parse_key_id(text: &str) -> Result<ate::crypto::KeyId, CliError> {
    let invalid = || CliError::Usage(format!("'{text}' is not a key id (64 hex digits)"));
    let bytes = from_hex(text.trim()).ok_or_else(invalid)?;
    Ok(ate::crypto::KeyId(bytes.try_into().map_err(|_| invalid())?))
}

/// `90s`, `15m`, `12h`, `30d`, `7y` (365 days) as µs.
pub fn parse_period(text: &str) -> Result<u64, CliError> {
    let invalid = || CliError::Usage(format!("'{text}' is not a period (90s, 15m, 12h, 30d, 7y)"));
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?);
    let seconds: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "y" => 365 * 86_400,
        _ => return Err(invalid()),
    };
    number.parse::<u64>().ok().and_then(|n| n.checked_mul(seconds)?.checked_mul(1_000_000)).ok_or_else(invalid)
}

/// Stores `value` under the named key, retained until `retain_until_us` if given
/// (one commit: the value never exists without its retention).
pub async fn put_retained(
    chain: &Chain,
    name: &str,
    value: Vec<u8>,
    retain_until_us: Option<u64>,
) -> Result<CommitReceipt, CliError> {
    let mut events = vec![named_event(name, value)?];
    if let Some(until) = retain_until_us {
        let change = RetentionChange::Object { retain_until_us: Some(until), legal_hold: None };
        events.push(NewEvent::retention(PrimaryKey::from_name(name), &change));
    }
    chain.append(events, None).await.map_err(|error| CliError::from_commit(error, name))
}

/// Changes the retention of an existing named key.
pub async fn change_retention(
    chain: &Chain,
    name: &str,
    retain_until_us: Option<u64>,
    legal_hold: Option<bool>,
) -> Result<CommitReceipt, CliError> {
    let key = PrimaryKey::from_name(name);
    if chain.get(&key).is_none() {
        return Err(CliError::NotFound(format!("key '{name}'")));
    }
    let event = NewEvent::retention(key, &RetentionChange::Object { retain_until_us, legal_hold });
    chain.append(vec![event], None).await.map_err(|error| CliError::from_commit(error, name))
}

/// Sets (tightens) the chain's retention policy.
pub async fn set_policy(chain: &Chain, policy: RetentionPolicy) -> Result<CommitReceipt, CliError> {
    chain
        .append(vec![NewEvent::retention_policy(policy)], None)
        .await
        .map_err(|error| CliError::from_commit(error, "retention policy"))
}

/// The policy in one line, for `stat` and `retention show`.
pub fn describe_policy(policy: &RetentionPolicy) -> String {
    if policy.mode == RetentionMode::None && policy.default_retention_us == 0 {
        return "none".into();
    }
    let days = policy.default_retention_us as f64 / 86_400e6;
    format!(
        "{:?}, default {days:.2} days, {} bypass key(s), {} hold key(s)",
        policy.mode,
        policy.bypass_keys.len(),
        policy.hold_keys.len()
    )
    .to_lowercase()
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
                let mut builder = ChainBuilder::new(&config).await;
                for key in options.root_keys()? {
                    builder = builder.add_root_public_key(&key);
                }
                Ok(builder.build().open(&ChainKey::from(chain.as_str())).await?)
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
    /// Public key files (`ate keygen` writes `FILE.pub`) that must govern
    /// the chain's root objects; history is verified against them.
    pub root_keys: &'a [PathBuf],
}

impl ConnectOptions<'_> {
    /// The root keys, read from their files.
    pub fn root_keys(&self) -> Result<Vec<ate::crypto::PublicSignKey>, CliError> {
        self.root_keys
            .iter()
            .map(|path| {
                let bytes = std::fs::read(path).map_err(|e| CliError::Io(format!("{}: {e}", path.display())))?;
                ate::crypto::PublicSignKey::decode(&bytes)
                    .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
            })
            .collect()
    }

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
        let mut config = RegistryConfig::new(token, trust);
        config.root_keys = self.root_keys()?;
        Ok(config)
    }
}

/// The event storing `value` under the named key `name`, in the format
/// `ate get` reads (also used by `ate-loadgen`, whose acknowledged-write
/// log names keys `ate get` accepts).
pub fn named_event(name: &str, value: impl AsRef<[u8]>) -> Result<NewEvent, CliError> {
    /// [`CliValue`], borrowed: the same encoding without copying the value first.
    #[derive(Serialize)]
    struct Borrowed<'a> {
        name: &'a str,
        #[serde(with = "serde_bytes")]
        value: &'a [u8],
    }
    let value = value.as_ref();
    // Sized up front (two length varints of at most 10 bytes each): grown
    // from empty, a 1 KiB value was copied through three allocations.
    let buffer = Vec::with_capacity(name.len() + value.len() + 20);
    let payload = postcard::to_extend(&Borrowed { name, value }, buffer)
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

/// The bytes of an even-length run of hex digits; `None` for anything else.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok()).collect()
}

/// Stores `value` under the named key (a blind write).
pub async fn put(chain: &Chain, name: &str, value: Vec<u8>) -> Result<CommitReceipt, CliError> {
    put_retained(chain, name, value, None).await
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
    chain.append(vec![event], None).await.map_err(|error| CliError::from_commit(error, name))
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
    fn a_named_event_stores_the_cli_value_encoding() {
        let event = named_event("doc-1", [1u8, 2, 3]).unwrap();
        let value = CliValue { name: "doc-1".into(), value: vec![1, 2, 3] };
        assert_eq!(event.payload, postcard::to_stdvec(&value).unwrap());
        assert_eq!(postcard::from_bytes::<CliValue>(&event.payload).unwrap(), value);
        assert_eq!(event.key, PrimaryKey::from_name("doc-1"));
        // Lengths past one varint byte, and a value as large as the loadgen's.
        for (name_len, value_len) in [(0, 0), (200, 1024), (3, 70_000)] {
            let name = "n".repeat(name_len);
            let value = CliValue { name: name.clone(), value: vec![7; value_len] };
            let event = named_event(&name, &value.value).unwrap();
            assert_eq!(event.payload, postcard::to_stdvec(&value).unwrap(), "{name_len} {value_len}");
        }
    }

    #[test]
    fn json_strings_escape() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }
}
