//! The versioned key encoding (docs/security.md, "Key encoding"):
//!
//! ```text
//! 0  1  version (1)
//! 1  1  kind       1 public sign, 2 private sign, 3 public encrypt, 4 private encrypt, 5 read key
//! 2  1  algorithm  per kind (SignatureScheme, 1 = ML-KEM-768, 1 = AES-256-GCM)
//! 3  4  public length  u32 LE
//! 7  n  public bytes
//! .  4  secret length  u32 LE (0 for public keys)
//! .  m  secret bytes
//! ```

use super::CryptoError;
use zeroize::Zeroizing;

pub(crate) const VERSION: u8 = 1;
/// Larger than any key this build knows (ML-DSA-65 secret key: 4,032 bytes).
const MAX_PART_LEN: usize = 16 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum KeyKind {
    PublicSign = 1,
    PrivateSign = 2,
    PublicEncrypt = 3,
    PrivateEncrypt = 4,
    Read = 5,
}

impl KeyKind {
    fn name(value: u8) -> &'static str {
        match value {
            1 => "a public signing key",
            2 => "a private signing key",
            3 => "a public encryption key",
            4 => "a private encryption key",
            5 => "a read key",
            _ => "an unknown key kind",
        }
    }
}

pub(crate) fn encode(kind: KeyKind, algorithm: u8, public: &[u8], secret: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(11 + public.len() + secret.len()));
    out.extend_from_slice(&[VERSION, kind as u8, algorithm]);
    out.extend_from_slice(&(public.len() as u32).to_le_bytes());
    out.extend_from_slice(public);
    out.extend_from_slice(&(secret.len() as u32).to_le_bytes());
    out.extend_from_slice(secret);
    out
}

/// Decoded parts: (algorithm, public bytes, secret bytes).
pub(crate) fn decode(bytes: &[u8], kind: KeyKind) -> Result<(u8, &[u8], &[u8]), CryptoError> {
    let header = bytes.get(..3).ok_or(CryptoError::Malformed)?;
    if header[0] != VERSION {
        return Err(CryptoError::UnsupportedVersion(header[0]));
    }
    if header[1] != kind as u8 {
        return Err(CryptoError::WrongKeyKind { expected: KeyKind::name(kind as u8), found: KeyKind::name(header[1]) });
    }
    let mut rest = &bytes[3..];
    let mut part = || -> Result<&[u8], CryptoError> {
        let len =
            u32::from_le_bytes(rest.get(..4).ok_or(CryptoError::Malformed)?.try_into().expect("4 bytes")) as usize;
        if len > MAX_PART_LEN {
            return Err(CryptoError::Malformed);
        }
        let value = rest.get(4..4 + len).ok_or(CryptoError::Malformed)?;
        rest = &rest[4 + len..];
        Ok(value)
    };
    let public = part()?;
    let secret = part()?;
    if !rest.is_empty() {
        return Err(CryptoError::Malformed);
    }
    Ok((header[2], public, secret))
}
