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
mod sign;

pub use aead::{open, seal, Nonce, ReadKey, AEAD_TAG_LEN, NONCE_LEN};
pub use kem::{EncryptedReadKey, PrivateEncryptKey, PublicEncryptKey};
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

const RANDOM_BUFFER_LEN: usize = 512;

struct Generator {
    seed: zeroize::Zeroizing<[u8; 32]>,
    counter: u64,
    /// A forked child must not replay its parent's stream.
    process_id: u32,
    /// Output not handed out yet; handed-out bytes are zeroed.
    buffer: zeroize::Zeroizing<[u8; RANDOM_BUFFER_LEN]>,
    used: usize,
}

thread_local! {
    static GENERATOR: std::cell::RefCell<Option<Generator>> = const { std::cell::RefCell::new(None) };
}

/// A per-thread CSPRNG: BLAKE3 in keyed mode over a counter (an XOF
/// stream), its key drawn from the OS once per thread (and again after a
/// fork). One syscall per thread instead of one per data key and nonce,
/// which matters at hundreds of thousands of encrypted events a second.
pub(crate) fn random_bytes(buffer: &mut [u8]) -> Result<(), CryptoError> {
    GENERATOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let process_id = std::process::id();
        if slot.as_ref().is_none_or(|generator| generator.process_id != process_id) {
            let mut seed = zeroize::Zeroizing::new([0u8; 32]);
            getrandom::fill(seed.as_mut()).map_err(|_| CryptoError::Random)?;
            *slot = Some(Generator {
                seed,
                counter: 0,
                process_id,
                buffer: zeroize::Zeroizing::new([0u8; RANDOM_BUFFER_LEN]),
                used: RANDOM_BUFFER_LEN,
            });
        }
        let generator = slot.as_mut().expect("initialised above");
        let mut filled = 0;
        while filled < buffer.len() {
            if generator.used == RANDOM_BUFFER_LEN {
                generator.counter += 1;
                let mut hasher = blake3::Hasher::new_keyed(&generator.seed);
                hasher.update(&generator.counter.to_le_bytes());
                hasher.finalize_xof().fill(generator.buffer.as_mut());
                generator.used = 0;
            }
            let take = (buffer.len() - filled).min(RANDOM_BUFFER_LEN - generator.used);
            let source = &mut generator.buffer[generator.used..generator.used + take];
            buffer[filled..filled + take].copy_from_slice(source);
            source.fill(0);
            generator.used += take;
            filled += take;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests;
