//! Who is acting. The chain-of-trust issue fills sessions with keys and
//! roles; today a session only names its holder.

/// The caller's identity and keys, handed to [`crate::Chain::dio`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct AteSession {
    /// Free-text identity for logs (never a secret).
    pub identity: Option<String>,
}

impl AteSession {
    pub fn new(identity: impl Into<String>) -> Self {
        Self { identity: Some(identity.into()) }
    }
}
