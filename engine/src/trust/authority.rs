//! Who may write and who may read an object, and the node keys that make
//! read access changeable without re-encrypting children.

use crate::crypto::{KeyId, Nonce};
use serde::{Deserialize, Serialize};

/// Who may write (create children of, update, delete, re-authorise) an object.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum WriteAuthority {
    /// Same as the parent (or, for roots, the chain's root keys).
    #[default]
    Inherit,
    /// No signature needed.
    Everyone,
    /// Nobody, not even the root keys: the object is frozen.
    Nobody,
    /// A signature by any one of these keys.
    Specific(Vec<KeyId>),
}

/// Who may read an object's payload.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ReadAuthority {
    /// Same as the parent (roots default to everyone).
    #[default]
    Inherit,
    /// Stored in plaintext.
    Everyone,
    /// Encrypted; readable by holders of this read key.
    Specific(KeyId),
}

/// A node key sealed under a read key, or published in the clear after a
/// node was made public (so ciphertexts written under it stay readable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKeyWrap {
    Sealed { node_key_id: KeyId, read_key_id: KeyId, nonce: Nonce, sealed: Vec<u8> },
    Published { node_key: [u8; 32] },
}

impl NodeKeyWrap {
    pub fn node_key_id(&self) -> KeyId {
        match self {
            NodeKeyWrap::Sealed { node_key_id, .. } => *node_key_id,
            NodeKeyWrap::Published { node_key } => crate::crypto::ReadKey::from_bytes(*node_key).id(),
        }
    }
}

/// Payload of an `Authority` event: the new rules of one object.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuthorityRecord {
    pub write: WriteAuthority,
    pub read: ReadAuthority,
    /// The object's node key, when its read authority is not inherited.
    /// Children that inherit read access wrap their data keys under it.
    pub node_key: Option<NodeKeyWrap>,
    /// Node keys this object used before, re-sealed under the new read key:
    /// when the read key changes, a fresh node key protects what is written
    /// from now on (holders of only the old read key cannot read it), while
    /// holders of the new key still read everything written before.
    #[serde(default)]
    pub previous_node_keys: Vec<NodeKeyWrap>,
}
