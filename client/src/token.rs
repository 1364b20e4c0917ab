//! Access tokens: signed claims (subject, roles, allowed chains, validity)
//! issued by a key the server trusts. Unlike the original ATE's tokens,
//! which were dumps of the holder's private keys, a token carries no secret:
//! it proves what its holder may do, for a limited time.
//!
//! ```text
//! token = "ate-token-v1." hex(postcard(SignedToken))
//! signed message = b"ATE token v1\0" || postcard(Claims)
//! ```

use ate::crypto::{KeyId, PrivateSignKey, PublicSignKey};
use serde::{Deserialize, Serialize};

const PREFIX: &str = "ate-token-v1.";
const SIGNING_DOMAIN: &[u8] = b"ATE token v1\0";
/// Largest token accepted (ML-DSA-65 signature 3.3 KiB plus generous claims).
pub const MAX_TOKEN_BYTES: usize = 16 << 10;

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub subject: String,
    pub roles: Vec<String>,
    /// Chain names this token may open: exact names, or prefixes ending in `*`
    /// (`"*"` alone allows every chain).
    pub chains: Vec<String>,
    pub issued_at_us: u64,
    pub expires_at_us: u64,
}

/// Roles a token can carry: `read` streams and loads events, `write`
/// commits and takes queue leases, `admin` does both.
pub const ROLE_READ: &str = "read";
pub const ROLE_WRITE: &str = "write";
pub const ROLE_ADMIN: &str = "admin";

impl Claims {
    fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|held| held == role || held == ROLE_ADMIN)
    }

    /// May subscribe to and load events.
    pub fn may_read(&self) -> bool {
        self.has_role(ROLE_READ)
    }

    /// May commit and take leases.
    pub fn may_write(&self) -> bool {
        self.has_role(ROLE_WRITE)
    }

    pub fn allows_chain(&self, chain: &str) -> bool {
        self.chains.iter().any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => chain.starts_with(prefix),
            None => pattern == chain,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SignedToken {
    /// postcard(Claims), exactly as signed.
    claims: Vec<u8>,
    issuer: KeyId,
    signature: Vec<u8>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("not an ATE token (bad prefix, encoding or size)")]
    Malformed,
    #[error("token issuer {0} is not trusted here")]
    UntrustedIssuer(KeyId),
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token expired at {expires_at_us} (now {now_us})")]
    Expired { expires_at_us: u64, now_us: u64 },
    #[error("token is not valid before {issued_at_us} (now {now_us})")]
    NotYetValid { issued_at_us: u64, now_us: u64 },
}

/// Signs `claims` with `issuer` into a token string.
pub fn issue(claims: &Claims, issuer: &PrivateSignKey) -> String {
    let claims = postcard::to_stdvec(claims).expect("claims serialize");
    let mut message = SIGNING_DOMAIN.to_vec();
    message.extend_from_slice(&claims);
    let signed = SignedToken { issuer: issuer.id(), signature: issuer.sign(&message), claims };
    let bytes = postcard::to_stdvec(&signed).expect("tokens serialize");
    format!("{PREFIX}{}", crate::cli::to_hex(&bytes))
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() / 2 > MAX_TOKEN_BYTES {
        return None;
    }
    crate::cli::from_hex(text)
}

/// Checks a token: issuer trusted, signature valid, within its validity
/// (with `skew_us` of tolerance for clocks); returns its claims.
pub fn verify(token: &str, trusted: &[PublicSignKey], now_us: u64, skew_us: u64) -> Result<Claims, TokenError> {
    let hex = token.trim().strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
    let bytes = unhex(hex).ok_or(TokenError::Malformed)?;
    let signed: SignedToken = postcard::from_bytes(&bytes).map_err(|_| TokenError::Malformed)?;
    let issuer =
        trusted.iter().find(|key| key.id() == signed.issuer).ok_or(TokenError::UntrustedIssuer(signed.issuer))?;
    let mut message = SIGNING_DOMAIN.to_vec();
    message.extend_from_slice(&signed.claims);
    issuer.verify(&message, &signed.signature).map_err(|_| TokenError::BadSignature)?;
    let claims: Claims = postcard::from_bytes(&signed.claims).map_err(|_| TokenError::Malformed)?;
    if now_us > claims.expires_at_us.saturating_add(skew_us) {
        return Err(TokenError::Expired { expires_at_us: claims.expires_at_us, now_us });
    }
    if claims.issued_at_us > now_us.saturating_add(skew_us) {
        return Err(TokenError::NotYetValid { issued_at_us: claims.issued_at_us, now_us });
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ate::crypto::SignatureScheme;

    fn claims(expires_at_us: u64) -> Claims {
        Claims {
            subject: "alice".into(),
            roles: vec!["writer".into()],
            chains: vec!["orders".into(), "tenant-a/*".into()],
            issued_at_us: 1_000,
            expires_at_us,
        }
    }

    #[test]
    fn issued_tokens_verify_and_scope_chains() {
        let issuer = PrivateSignKey::generate(SignatureScheme::MlDsa44);
        let token = issue(&claims(10_000), &issuer);
        let verified = verify(&token, &[issuer.public().clone()], 5_000, 0).unwrap();
        assert_eq!(verified, claims(10_000));
        assert!(verified.allows_chain("orders") && verified.allows_chain("tenant-a/x"));
        assert!(!verified.allows_chain("orders2") && !verified.allows_chain("tenant-b/x"));
        assert!(!token.contains("alice"), "claims are not stored as readable text");
    }

    #[test]
    fn expired_forged_untrusted_and_garbage_tokens_are_refused() {
        let issuer = PrivateSignKey::generate(SignatureScheme::MlDsa44);
        let trusted = [issuer.public().clone()];
        let token = issue(&claims(10_000), &issuer);
        assert!(matches!(verify(&token, &trusted, 20_000, 0), Err(TokenError::Expired { .. })));
        assert!(verify(&token, &trusted, 10_500, 1_000).is_ok(), "skew tolerance");
        assert!(matches!(verify(&token, &trusted, 0, 0), Err(TokenError::NotYetValid { .. })));
        let stranger = PrivateSignKey::generate(SignatureScheme::MlDsa44);
        let foreign = issue(&claims(10_000), &stranger);
        assert!(matches!(verify(&foreign, &trusted, 5_000, 0), Err(TokenError::UntrustedIssuer(_))));
        // Flip one hex digit anywhere: refused, never accepted or a panic.
        for index in [PREFIX.len() + 10, token.len() / 2, token.len() - 3] {
            let mut tampered = token.clone().into_bytes();
            tampered[index] = if tampered[index] == b'0' { b'1' } else { b'0' };
            let tampered = String::from_utf8(tampered).unwrap();
            assert!(verify(&tampered, &trusted, 5_000, 0).is_err(), "tampered at {index}");
        }
        for garbage in ["", "ate-token-v1.", "ate-token-v1.zz", "hello", &"ab".repeat(MAX_TOKEN_BYTES + 1)] {
            assert!(verify(garbage, &trusted, 5_000, 0).is_err());
        }
    }
}
