//! Post-quantum signatures: ML-DSA-65 (default), ML-DSA-44, Falcon-512.

use super::encoding::{self, KeyKind};
use super::{CryptoError, KeyId};
use pqcrypto_traits::sign::{DetachedSignature as _, PublicKey as _, SecretKey as _};
use std::fmt;
use zeroize::Zeroizing;

/// Signature algorithm. Stored as a byte in keys and signature events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum SignatureScheme {
    /// FIPS 204 ML-DSA-65: signature 3,309 B, public key 1,952 B.
    #[default]
    MlDsa65 = 1,
    /// FIPS 204 ML-DSA-44: smaller and faster, NIST category 2.
    MlDsa44 = 2,
    /// Falcon-512: 655-byte signatures, slow key generation.
    Falcon512 = 3,
}

impl SignatureScheme {
    pub fn from_u8(value: u8) -> Result<Self, CryptoError> {
        match value {
            1 => Ok(Self::MlDsa65),
            2 => Ok(Self::MlDsa44),
            3 => Ok(Self::Falcon512),
            _ => Err(CryptoError::UnknownAlgorithm { what: "signature scheme", value }),
        }
    }
}

/// Domain separation for every signature ATE makes (the ML-DSA context
/// string; prepended to the message for Falcon, which has none).
const SIGNING_CONTEXT: &[u8] = b"ATE chain of trust v1";

/// A public signing key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicSignKey {
    scheme: SignatureScheme,
    bytes: Vec<u8>,
    /// Computed once: hashing a 1,952-byte key per lookup showed up in profiles.
    id: KeyId,
}

fn signing_key_id(scheme: SignatureScheme, bytes: &[u8]) -> KeyId {
    let mut hasher = blake3::Hasher::new_derive_key("ate 2026 signing key id");
    hasher.update(&[scheme as u8]);
    hasher.update(bytes);
    KeyId(hasher.finalize().into())
}

/// A private signing key (and its public half). Wiped on drop.
#[derive(Clone)]
pub struct PrivateSignKey {
    public: PublicSignKey,
    secret: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for PublicSignKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicSignKey({:?}, {})", self.scheme, self.id())
    }
}

impl fmt::Debug for PrivateSignKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateSignKey({:?}, {}, secret: <redacted>)", self.public.scheme, self.public.id())
    }
}

macro_rules! with_scheme {
    ($scheme:expr, $module:ident => $body:expr) => {
        match $scheme {
            SignatureScheme::MlDsa65 => {
                use pqcrypto_mldsa::mldsa65 as $module;
                $body
            }
            SignatureScheme::MlDsa44 => {
                use pqcrypto_mldsa::mldsa44 as $module;
                $body
            }
            SignatureScheme::Falcon512 => {
                use pqcrypto_falcon::falcon512 as $module;
                $body
            }
        }
    };
}

fn falcon_message(message: &[u8]) -> Vec<u8> {
    let mut prefixed = Vec::with_capacity(SIGNING_CONTEXT.len() + message.len());
    prefixed.extend_from_slice(SIGNING_CONTEXT);
    prefixed.extend_from_slice(message);
    prefixed
}

impl PublicSignKey {
    pub fn from_bytes(scheme: SignatureScheme, bytes: &[u8]) -> Result<Self, CryptoError> {
        let expected = with_scheme!(scheme, m => m::public_key_bytes());
        if bytes.len() != expected {
            return Err(CryptoError::BadLength { what: "public signing key", found: bytes.len(), expected });
        }
        Ok(Self { scheme, bytes: bytes.to_vec(), id: signing_key_id(scheme, bytes) })
    }

    pub fn scheme(&self) -> SignatureScheme {
        self.scheme
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// BLAKE3 (derive-key mode) over the scheme byte and the public key bytes.
    pub fn id(&self) -> KeyId {
        self.id
    }

    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        let ok = match self.scheme {
            SignatureScheme::MlDsa65 => {
                use pqcrypto_mldsa::mldsa65 as m;
                let public = m::PublicKey::from_bytes(&self.bytes).map_err(|_| CryptoError::BadSignature)?;
                let signature = m::DetachedSignature::from_bytes(signature).map_err(|_| CryptoError::BadSignature)?;
                m::verify_detached_signature_ctx(&signature, message, SIGNING_CONTEXT, &public).is_ok()
            }
            SignatureScheme::MlDsa44 => {
                use pqcrypto_mldsa::mldsa44 as m;
                let public = m::PublicKey::from_bytes(&self.bytes).map_err(|_| CryptoError::BadSignature)?;
                let signature = m::DetachedSignature::from_bytes(signature).map_err(|_| CryptoError::BadSignature)?;
                m::verify_detached_signature_ctx(&signature, message, SIGNING_CONTEXT, &public).is_ok()
            }
            SignatureScheme::Falcon512 => {
                use pqcrypto_falcon::falcon512 as m;
                let public = m::PublicKey::from_bytes(&self.bytes).map_err(|_| CryptoError::BadSignature)?;
                let signature = m::DetachedSignature::from_bytes(signature).map_err(|_| CryptoError::BadSignature)?;
                m::verify_detached_signature(&signature, &falcon_message(message), &public).is_ok()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(CryptoError::BadSignature)
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(KeyKind::PublicSign, self.scheme as u8, &self.bytes, &[]).to_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CryptoError> {
        let (algorithm, public, secret) = encoding::decode(bytes, KeyKind::PublicSign)?;
        if !secret.is_empty() {
            return Err(CryptoError::Malformed);
        }
        Self::from_bytes(SignatureScheme::from_u8(algorithm)?, public)
    }
}

impl PrivateSignKey {
    /// A fresh key pair from the OS CSPRNG (inside PQClean's randombytes).
    pub fn generate(scheme: SignatureScheme) -> Self {
        let (public, secret) = with_scheme!(scheme, m => {
            let (public, secret) = m::keypair();
            (public.as_bytes().to_vec(), Zeroizing::new(secret.as_bytes().to_vec()))
        });
        let id = signing_key_id(scheme, &public);
        Self { public: PublicSignKey { scheme, bytes: public, id }, secret }
    }

    pub fn public(&self) -> &PublicSignKey {
        &self.public
    }

    pub fn id(&self) -> KeyId {
        self.public.id()
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self.public.scheme {
            SignatureScheme::MlDsa65 => {
                use pqcrypto_mldsa::mldsa65 as m;
                let secret = m::SecretKey::from_bytes(&self.secret).expect("length checked at construction");
                m::detached_sign_ctx(message, SIGNING_CONTEXT, &secret).as_bytes().to_vec()
            }
            SignatureScheme::MlDsa44 => {
                use pqcrypto_mldsa::mldsa44 as m;
                let secret = m::SecretKey::from_bytes(&self.secret).expect("length checked at construction");
                m::detached_sign_ctx(message, SIGNING_CONTEXT, &secret).as_bytes().to_vec()
            }
            SignatureScheme::Falcon512 => {
                use pqcrypto_falcon::falcon512 as m;
                let secret = m::SecretKey::from_bytes(&self.secret).expect("length checked at construction");
                m::detached_sign(&falcon_message(message), &secret).as_bytes().to_vec()
            }
        }
    }

    /// The versioned encoding, secret included: store it like a password.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        encoding::encode(KeyKind::PrivateSign, self.public.scheme as u8, &self.public.bytes, &self.secret)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CryptoError> {
        let (algorithm, public, secret) = encoding::decode(bytes, KeyKind::PrivateSign)?;
        let public = PublicSignKey::from_bytes(SignatureScheme::from_u8(algorithm)?, public)?;
        let expected = with_scheme!(public.scheme, m => m::secret_key_bytes());
        if secret.len() != expected {
            return Err(CryptoError::BadLength { what: "private signing key", found: secret.len(), expected });
        }
        let key = Self { public, secret: Zeroizing::new(secret.to_vec()) };
        // A secret that does not match its public half is rejected here, not
        // discovered later as signatures nobody can verify.
        let probe = key.sign(b"ate key self-test");
        key.public.verify(b"ate key self-test", &probe).map_err(|_| CryptoError::Malformed)?;
        Ok(key)
    }
}
