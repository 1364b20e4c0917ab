//! Identifiers: object keys, chain keys, collections.

use std::fmt;

/// The BLAKE3 `derive_key` context of named keys, and its key (derived once).
const NAME_CONTEXT: &str = "ate 2026 primary key from name";
static NAME_KEY: std::sync::LazyLock<crate::format::DerivedKey> =
    std::sync::LazyLock::new(|| crate::format::DerivedKey::new(NAME_CONTEXT));

/// 128-bit object key. Fresh keys come from a CSPRNG (BLAKE3 in keyed mode
/// over a per-thread secret from the OS, so ids are unpredictable and
/// collisions need ~2^64 objects); named keys are derived from the name.
/// All-zero is reserved for "no parent".
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct PrimaryKey([u8; 16]);

impl PrimaryKey {
    /// A fresh random key, from the engine's CSPRNG (`crypto::fill_random`).
    pub fn generate() -> Self {
        loop {
            let mut key = [0u8; 16];
            crate::crypto::fill_random(&mut key).expect("the OS random source is unavailable");
            if key != [0u8; 16] {
                return Self(key);
            }
        }
    }

    /// The key every process derives from the same name: BLAKE3
    /// `derive_key` with the context's key derived once, not per name (a
    /// name of up to 64 bytes is then one compression, not two).
    pub fn from_name(name: &str) -> Self {
        Self::from_derived(crate::format::derive_key_hash(&NAME_KEY, name.as_bytes()))
    }

    /// The first 16 bytes of a name's derived key; all-zero (reserved for
    /// "no parent") is moved off zero.
    fn from_derived(derived: [u8; 32]) -> Self {
        let mut key: [u8; 16] = derived[..16].try_into().expect("16 bytes");
        if key == [0u8; 16] {
            key[15] = 1;
        }
        Self(key)
    }

    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
    pub fn as_u128(&self) -> u128 {
        u128::from_le_bytes(self.0)
    }
    pub fn from_u128(value: u128) -> Self {
        Self(value.to_le_bytes())
    }
}

impl From<&str> for PrimaryKey {
    fn from(name: &str) -> Self {
        Self::from_name(name)
    }
}

impl fmt::Display for PrimaryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PrimaryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrimaryKey({self})")
    }
}

/// Names a child collection of a parent object (a parent may hold several).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct CollectionId(pub u64);

/// Names a chain. The name is free text; it never reaches the filesystem
/// as-is (see [`ChainKey::directory_name`]).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainKey(String);

impl ChainKey {
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }
    pub fn name(&self) -> &str {
        &self.0
    }
    /// BLAKE3 of the name: written into every segment header so a segment
    /// copied into the wrong chain is caught.
    pub fn chain_id(&self) -> [u8; 32] {
        blake3::derive_key("ate 2026 chain id", self.0.as_bytes())
    }
    /// Directory for this chain: a readable prefix of safe characters plus the
    /// full hex chain id. No `/`, `..`, NUL or control byte can get through.
    pub fn directory_name(&self) -> String {
        let readable: String =
            self.0.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').take(32).collect();
        let mut name = String::with_capacity(readable.len() + 65);
        name.push_str(if readable.is_empty() { "chain" } else { &readable });
        name.push('-');
        name.push_str(&crate::crypto::KeyId(self.chain_id()).to_string());
        name
    }
}

impl From<&str> for ChainKey {
    fn from(name: &str) -> Self {
        Self(name.to_string())
    }
}
impl From<String> for ChainKey {
    fn from(name: String) -> Self {
        Self(name)
    }
}
impl fmt::Display for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainKey({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_distinct_and_nonzero() {
        let keys: std::collections::HashSet<_> = (0..10_000).map(|_| PrimaryKey::generate()).collect();
        assert_eq!(keys.len(), 10_000);
        assert!(!keys.contains(&PrimaryKey::from_bytes([0; 16])));
    }

    #[test]
    fn named_keys_are_blake3_derive_key_of_the_name() {
        // Names around BLAKE3's block (64 bytes) and chunk (1024) edges.
        for len in [0usize, 1, 17, 63, 64, 65, 200, 1023, 1024, 1025, 5000] {
            let name: String = (0..len).map(|at| char::from(b'a' + (at % 26) as u8)).collect();
            let derived = blake3::derive_key(NAME_CONTEXT, name.as_bytes());
            assert_eq!(PrimaryKey::from_name(&name).as_bytes()[..], derived[..16], "{len} bytes");
        }
        // A key written to disk under an earlier build.
        assert_eq!(PrimaryKey::from_name("doc-1").to_string(), "d47bddff79633190787c7abc7985dd35");
    }

    #[test]
    fn directory_names_are_safe() {
        for name in ["../../etc/passwd", "a/b", "nul\0byte", "", "..", "ünïcødé", "x".repeat(500).as_str()] {
            let dir = ChainKey::from(name).directory_name();
            assert!(!dir.contains('/') && !dir.contains('\0') && dir != ".." && dir != ".");
            assert!(dir.len() <= 32 + 1 + 64, "{dir}");
        }
        assert_ne!(ChainKey::from("a/b").directory_name(), ChainKey::from("ab").directory_name());
    }
}
