//! ML-KEM-768 key pairs, used to hand a read key to another user without
//! knowing their secret: the read key is sealed under a key derived from a
//! fresh encapsulation to the recipient's public key.

use super::aead::{open, seal, Nonce, ReadKey, NONCE_LEN};
use super::encoding::{self, KeyKind};
use super::{random_bytes, CryptoError, KeyId};
use pqcrypto_mlkem::mlkem768;
use pqcrypto_traits::kem::{Ciphertext as _, PublicKey as _, SecretKey as _, SharedSecret as _};
use std::fmt;
use zeroize::Zeroizing;

const ML_KEM_768: u8 = 1;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicEncryptKey {
    bytes: Vec<u8>,
    id: KeyId,
}

fn encryption_key_id(bytes: &[u8]) -> KeyId {
    KeyId(blake3::derive_key("ate 2026 encryption key id", bytes))
}

#[derive(Clone)]
pub struct PrivateEncryptKey {
    public: PublicEncryptKey,
    secret: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for PublicEncryptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicEncryptKey(ML-KEM-768, {})", self.id())
    }
}

impl fmt::Debug for PrivateEncryptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateEncryptKey(ML-KEM-768, {}, secret: <redacted>)", self.public.id())
    }
}

/// A read key sealed to one recipient's ML-KEM-768 public key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EncryptedReadKey {
    pub recipient: KeyId,
    pub read_key_id: KeyId,
    pub kem_ciphertext: Vec<u8>,
    pub nonce: Nonce,
    pub sealed_key: Vec<u8>,
}

fn wrapping_key(shared_secret: &[u8], ciphertext: &[u8], recipient: &KeyId) -> Zeroizing<[u8; 32]> {
    let mut hasher = blake3::Hasher::new_derive_key("ate 2026 read key wrap");
    hasher.update(shared_secret);
    hasher.update(ciphertext);
    hasher.update(recipient.as_bytes());
    Zeroizing::new(hasher.finalize().into())
}

fn wrap_aad(recipient: &KeyId, read_key_id: &KeyId) -> [u8; 64] {
    let mut aad = [0u8; 64];
    aad[..32].copy_from_slice(recipient.as_bytes());
    aad[32..].copy_from_slice(read_key_id.as_bytes());
    aad
}

impl PublicEncryptKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let expected = mlkem768::public_key_bytes();
        if bytes.len() != expected {
            return Err(CryptoError::BadLength { what: "public encryption key", found: bytes.len(), expected });
        }
        Ok(Self { bytes: bytes.to_vec(), id: encryption_key_id(bytes) })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Seals `read_key` so that only the holder of the matching private key
    /// can recover it.
    pub fn wrap_read_key(&self, read_key: &ReadKey) -> Result<EncryptedReadKey, CryptoError> {
        let public = mlkem768::PublicKey::from_bytes(&self.bytes).map_err(|_| CryptoError::Malformed)?;
        let (shared, ciphertext) = mlkem768::encapsulate(&public);
        let recipient = self.id();
        let key = wrapping_key(shared.as_bytes(), ciphertext.as_bytes(), &recipient);
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        let read_key_id = read_key.id();
        let sealed_key = seal(&key, &nonce, &wrap_aad(&recipient, &read_key_id), read_key.secret());
        Ok(EncryptedReadKey {
            recipient,
            read_key_id,
            kem_ciphertext: ciphertext.as_bytes().to_vec(),
            nonce,
            sealed_key,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(KeyKind::PublicEncrypt, ML_KEM_768, &self.bytes, &[]).to_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CryptoError> {
        let (algorithm, public, secret) = encoding::decode(bytes, KeyKind::PublicEncrypt)?;
        if algorithm != ML_KEM_768 {
            return Err(CryptoError::UnknownAlgorithm { what: "encryption key algorithm", value: algorithm });
        }
        if !secret.is_empty() {
            return Err(CryptoError::Malformed);
        }
        Self::from_bytes(public)
    }
}

impl PrivateEncryptKey {
    pub fn generate() -> Self {
        let (public, secret) = mlkem768::keypair();
        Self {
            public: PublicEncryptKey { bytes: public.as_bytes().to_vec(), id: encryption_key_id(public.as_bytes()) },
            secret: Zeroizing::new(secret.as_bytes().to_vec()),
        }
    }

    pub fn public(&self) -> &PublicEncryptKey {
        &self.public
    }

    pub fn id(&self) -> KeyId {
        self.public.id()
    }

    pub fn unwrap_read_key(&self, wrapped: &EncryptedReadKey) -> Result<ReadKey, CryptoError> {
        let recipient = self.id();
        if wrapped.recipient != recipient {
            return Err(CryptoError::DecryptionFailed);
        }
        let secret = mlkem768::SecretKey::from_bytes(&self.secret).map_err(|_| CryptoError::Malformed)?;
        let ciphertext =
            mlkem768::Ciphertext::from_bytes(&wrapped.kem_ciphertext).map_err(|_| CryptoError::DecryptionFailed)?;
        let shared = mlkem768::decapsulate(&ciphertext, &secret);
        let key = wrapping_key(shared.as_bytes(), &wrapped.kem_ciphertext, &recipient);
        let plain = Zeroizing::new(open(
            &key,
            &wrapped.nonce,
            &wrap_aad(&recipient, &wrapped.read_key_id),
            &wrapped.sealed_key,
        )?);
        let bytes: [u8; 32] = plain.as_slice().try_into().map_err(|_| CryptoError::DecryptionFailed)?;
        let read_key = ReadKey::from_bytes(bytes);
        if read_key.id() != wrapped.read_key_id {
            return Err(CryptoError::DecryptionFailed);
        }
        Ok(read_key)
    }

    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        encoding::encode(KeyKind::PrivateEncrypt, ML_KEM_768, &self.public.bytes, &self.secret)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CryptoError> {
        let (algorithm, public, secret) = encoding::decode(bytes, KeyKind::PrivateEncrypt)?;
        if algorithm != ML_KEM_768 {
            return Err(CryptoError::UnknownAlgorithm { what: "encryption key algorithm", value: algorithm });
        }
        let expected = mlkem768::secret_key_bytes();
        if secret.len() != expected {
            return Err(CryptoError::BadLength { what: "private encryption key", found: secret.len(), expected });
        }
        // FIPS 203: the decapsulation key embeds the encapsulation key at
        // offset 384·k (k = 3). A secret that belongs to another public key
        // is refused here rather than failing every unwrap later.
        const EMBEDDED_PUBLIC_AT: usize = 384 * 3;
        if secret.get(EMBEDDED_PUBLIC_AT..EMBEDDED_PUBLIC_AT + public.len()) != Some(public) {
            return Err(CryptoError::Malformed);
        }
        Ok(Self { public: PublicEncryptKey::from_bytes(public)?, secret: Zeroizing::new(secret.to_vec()) })
    }
}
