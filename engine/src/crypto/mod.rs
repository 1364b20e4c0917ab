//! Cryptographic building blocks of the chain of trust: post-quantum
//! signatures, key encapsulation for sharing read keys, and the AEAD that
//! encrypts payloads. Every key has a 32-byte id: a full BLAKE3 hash of its
//! public material (or, for symmetric keys, a one-way derivation of the key).
//!
//! Secrets live in `Zeroizing` buffers, are wiped on drop, and never appear
//! in `Debug` output. Keys serialize to the versioned format documented in
//! docs/security.md ("Key encoding").

mod aead;
mod encoding;
mod kem;
mod random;
mod sign;

pub use aead::{open, seal, DataKey, Nonce, ReadKey, AEAD_TAG_LEN, NONCE_LEN};
pub use kem::{EncryptedReadKey, PrivateEncryptKey, PublicEncryptKey};
pub(crate) use random::random_bytes;
pub use sign::{PrivateSignKey, PublicSignKey, SignatureScheme};

use std::fmt;

/// Identifies a key: BLAKE3 of its public material (never truncated).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct KeyId(pub [u8; 32]);

impl KeyId {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Why a cryptographic operation failed. Deliberately coarse where detail
/// would help an attacker (a failed decryption says only that).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    #[error("signature does not verify")]
    BadSignature,
    #[error("decryption failed: wrong key or tampered data")]
    DecryptionFailed,
    #[error("{what} has length {found}, expected {expected}")]
    BadLength { what: &'static str, found: usize, expected: usize },
    #[error("key encoding version {0} is not supported")]
    UnsupportedVersion(u8),
    #[error("unknown {what} identifier {value}")]
    UnknownAlgorithm { what: &'static str, value: u8 },
    #[error("key encoding is truncated or has trailing bytes")]
    Malformed,
    #[error("the key is for {found}, not {expected}")]
    WrongKeyKind { expected: &'static str, found: &'static str },
    #[error("the operating system's random source failed")]
    Random,
}

/// Fills `buffer` with cryptographically secure random bytes.
pub fn fill_random(buffer: &mut [u8]) -> Result<(), CryptoError> {
    random_bytes(buffer)
}

#[cfg(test)]
mod tests;
