//! The AEAD seam: AES-256-GCM through aws-lc-rs (chosen by measurement over
//! the `aes-gcm` crate: see docs/benchmarks.md, "AEAD choice"). Nothing
//! outside this file names the implementation.

use super::encoding::{self, KeyKind};
use super::{random_bytes, CryptoError, KeyId};
use aws_lc_rs::aead::{Aad, Algorithm, LessSafeKey, Nonce as AeadNonce, UnboundKey, AES_256_GCM, AES_256_GCM_SIV};
use std::fmt;
use zeroize::Zeroizing;

pub const NONCE_LEN: usize = 12;
pub const AEAD_TAG_LEN: usize = 16;
pub type Nonce = [u8; NONCE_LEN];

/// AES-256-GCM encryption: returns ciphertext followed by the 16-byte tag.
/// The caller guarantees `nonce` is never reused under `key`.
pub fn seal(key: &[u8; 32], nonce: &Nonce, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    seal_with(&AES_256_GCM, key, nonce, aad, plaintext)
}

/// A fresh AES-256-GCM payload key with its key schedule prepared once.
/// The DIO draws one per commit and node key and seals each payload of the
/// commit under it: one key schedule per commit instead of one per event.
/// Its callers give every payload sealed under one `DataKey` its own nonce.
pub struct DataKey {
    secret: Zeroizing<[u8; 32]>,
    key: LessSafeKey,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(secret: <redacted>)")
    }
}

impl DataKey {
    pub fn generate() -> Result<Self, CryptoError> {
        let mut secret = Zeroizing::new([0u8; 32]);
        random_bytes(secret.as_mut())?;
        let key = less_safe_key(&AES_256_GCM, &secret);
        Ok(Self { secret, key })
    }

    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// [`seal`] of `buffer[from..]` in place, the tag appended: no second
    /// buffer for the ciphertext. `nonce` must be new to this key.
    pub fn seal_in_place(&self, nonce: &Nonce, aad: &[u8], buffer: &mut Vec<u8>, from: usize) {
        seal_tail(&self.key, nonce, aad, buffer, from);
    }
}

/// Decrypts and authenticates what [`seal`] produced.
pub fn open(key: &[u8; 32], nonce: &Nonce, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    open_with(&AES_256_GCM, key, nonce, aad, sealed)
}

fn less_safe_key(algorithm: &'static Algorithm, key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(algorithm, key).expect("AES-256 takes a 32-byte key"))
}

fn seal_with(algorithm: &'static Algorithm, key: &[u8; 32], nonce: &Nonce, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    seal_with_key(&less_safe_key(algorithm, key), nonce, aad, plaintext)
}

fn seal_with_key(key: &LessSafeKey, nonce: &Nonce, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(plaintext.len() + AEAD_TAG_LEN);
    buffer.extend_from_slice(plaintext);
    seal_tail(key, nonce, aad, &mut buffer, 0);
    buffer
}

/// Seals `buffer[from..]` in place and appends its tag.
fn seal_tail(key: &LessSafeKey, nonce: &Nonce, aad: &[u8], buffer: &mut Vec<u8>, from: usize) {
    let tag = key
        .seal_in_place_separate_tag(AeadNonce::assume_unique_for_key(*nonce), Aad::from(aad), &mut buffer[from..])
        .expect("AES sealing fails only for inputs beyond 64 GiB");
    buffer.extend_from_slice(tag.as_ref());
}

fn open_with(
    algorithm: &'static Algorithm,
    key: &[u8; 32],
    nonce: &Nonce,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    open_with_key(&less_safe_key(algorithm, key), nonce, aad, sealed)
}

fn open_with_key(key: &LessSafeKey, nonce: &Nonce, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut buffer = sealed.to_vec();
    let plain_len = key
        .open_in_place(AeadNonce::assume_unique_for_key(*nonce), Aad::from(aad), &mut buffer)
        .map_err(|_| CryptoError::DecryptionFailed)?
        .len();
    buffer.truncate(plain_len);
    Ok(buffer)
}

/// A symmetric read key (AES-256). Whoever holds it can decrypt what is
/// readable under it; destroying every copy crypto-shreds that data.
#[derive(Clone)]
pub struct ReadKey {
    bytes: Zeroizing<[u8; 32]>,
    /// Derived on first use: per-event data keys never need one.
    id: std::sync::OnceLock<KeyId>,
    /// The AES-GCM-SIV key schedule, prepared on first use: a node key
    /// seals one data key per encrypted event.
    wrapping: std::sync::OnceLock<std::sync::Arc<LessSafeKey>>,
}

impl fmt::Debug for ReadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReadKey({}, secret: <redacted>)", self.id())
    }
}

impl PartialEq for ReadKey {
    fn eq(&self, other: &Self) -> bool {
        // Compare ids, not secrets, to keep comparisons constant-time in the key.
        self.id() == other.id()
    }
}
impl Eq for ReadKey {}

impl ReadKey {
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        random_bytes(bytes.as_mut())?;
        Ok(Self { bytes, id: std::sync::OnceLock::new(), wrapping: std::sync::OnceLock::new() })
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self { bytes: Zeroizing::new(bytes), id: std::sync::OnceLock::new(), wrapping: std::sync::OnceLock::new() }
    }

    /// One-way: the id reveals nothing about the key.
    pub fn id(&self) -> KeyId {
        *self.id.get_or_init(|| KeyId(blake3::derive_key("ate 2026 read key id", self.bytes.as_ref())))
    }

    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.bytes
    }

    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        encoding::encode(KeyKind::Read, 1, &[], self.bytes.as_ref())
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CryptoError> {
        let (algorithm, public, secret) = encoding::decode(bytes, KeyKind::Read)?;
        if algorithm != 1 {
            return Err(CryptoError::UnknownAlgorithm { what: "read key algorithm", value: algorithm });
        }
        if !public.is_empty() {
            return Err(CryptoError::Malformed);
        }
        let bytes: [u8; 32] = secret.try_into().map_err(|_| CryptoError::BadLength {
            what: "read key",
            found: secret.len(),
            expected: 32,
        })?;
        Ok(Self::from_bytes(bytes))
    }

    /// Encrypts with a fresh random nonce; returns (nonce, sealed).
    ///
    /// AES-256-GCM-SIV, not GCM: read keys and node keys are long-lived and
    /// seal many small secrets (node keys, per-event data keys) under random
    /// 96-bit nonces, and SIV keeps a repeated nonce from costing more than
    /// revealing that two sealed secrets are equal.
    pub fn encrypt(&self, aad: &[u8], plaintext: &[u8]) -> Result<(Nonce, Vec<u8>), CryptoError> {
        let mut sealed = Vec::with_capacity(plaintext.len() + AEAD_TAG_LEN);
        let nonce = self.encrypt_append(aad, plaintext, &mut sealed)?;
        Ok((nonce, sealed))
    }

    /// [`ReadKey::encrypt`] appending the sealed bytes (the plaintext's
    /// length plus [`AEAD_TAG_LEN`]) to `out`: no buffer of its own, for a
    /// per-event data key sealed straight into its envelope.
    pub fn encrypt_append(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) -> Result<Nonce, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        let from = out.len();
        out.extend_from_slice(plaintext);
        seal_tail(self.wrapping_key(), &nonce, aad, out, from);
        Ok(nonce)
    }

    pub fn decrypt(&self, nonce: &Nonce, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        open_with_key(self.wrapping_key(), nonce, aad, sealed)
    }

    fn wrapping_key(&self) -> &LessSafeKey {
        self.wrapping.get_or_init(|| std::sync::Arc::new(less_safe_key(&AES_256_GCM_SIV, &self.bytes)))
    }
}
