//! Payloads of trust events, and the hashes a commit's signatures cover.

use crate::crypto::{KeyId, Nonce, SignatureScheme};
use crate::format::{ArchivedEventHeader, EventHeader};
use serde::{Deserialize, Serialize};

/// The payload of an encrypted `Data` event. The payload itself is
/// AES-256-GCM under a fresh data key; the data key is sealed under the
/// governing node key (`header.read_key_id`). `header.nonce` is the payload
/// nonce.
///
/// Stored as `wrap_nonce (12) | wrapped key length (u16 LE) | wrapped key |
/// ciphertext (the rest)`: a plain layout, because a byte-by-byte serde
/// encoding of the ciphertext cost more than the encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedPayload {
    pub wrap_nonce: Nonce,
    pub wrapped_data_key: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl EncryptedPayload {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(14 + self.wrapped_data_key.len() + self.ciphertext.len());
        out.extend_from_slice(&self.wrap_nonce);
        out.extend_from_slice(&(self.wrapped_data_key.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.wrapped_data_key);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// `None` for anything that is not a well-formed envelope.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let wrap_nonce: Nonce = bytes.get(..12)?.try_into().ok()?;
        let wrapped_len = u16::from_le_bytes(bytes.get(12..14)?.try_into().ok()?) as usize;
        let wrapped_data_key = bytes.get(14..14 + wrapped_len)?.to_vec();
        let ciphertext = bytes.get(14 + wrapped_len..)?.to_vec();
        Some(Self { wrap_nonce, wrapped_data_key, ciphertext })
    }
}

/// Payload of a `Signature` event: one key's signature over the Merkle root
/// of the content hashes of every non-signature event of its commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitSignature {
    pub key_id: KeyId,
    pub scheme: SignatureScheme,
    pub merkle_root: [u8; 32],
    pub event_count: u32,
    pub signature: Vec<u8>,
}

/// The fields of an event fixed before it gets a place in the chain; what
/// signatures and anti-replay are about. Sequence, previous hash and flags
/// are left out: they are assigned later, under the chain's append lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventContent {
    pub kind: u8,
    pub key: [u8; 16],
    pub parent: [u8; 16],
    pub collection: u64,
    pub type_tag: u64,
    pub timestamp_us: u64,
    pub payload_hash: [u8; 32],
    pub read_key_id: [u8; 32],
    pub nonce: [u8; 12],
}

impl EventContent {
    /// BLAKE3 (derive-key mode, so no other ATE hash can collide with it)
    /// over the fields in a fixed little-endian layout.
    pub fn hash(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_derive_key("ate 2026 event content");
        hasher.update(&[self.kind]);
        hasher.update(&self.key);
        hasher.update(&self.parent);
        hasher.update(&self.collection.to_le_bytes());
        hasher.update(&self.type_tag.to_le_bytes());
        hasher.update(&self.timestamp_us.to_le_bytes());
        hasher.update(&self.payload_hash);
        hasher.update(&self.read_key_id);
        hasher.update(&self.nonce);
        hasher.finalize().into()
    }

    pub fn of_header(header: &EventHeader) -> Self {
        Self {
            kind: header.kind,
            key: header.key,
            parent: header.parent,
            collection: header.collection,
            type_tag: header.type_tag,
            timestamp_us: header.timestamp_us,
            payload_hash: header.payload_hash,
            read_key_id: header.read_key_id,
            nonce: header.nonce,
        }
    }

    pub fn of_archived(header: &ArchivedEventHeader) -> Self {
        Self {
            kind: header.kind,
            key: header.key,
            parent: header.parent,
            collection: header.collection(),
            type_tag: header.type_tag(),
            timestamp_us: header.timestamp_us(),
            payload_hash: header.payload_hash,
            read_key_id: header.read_key_id,
            nonce: header.nonce,
        }
    }
}

/// Merkle root (RFC 9162 shape, see `proof`) of a commit's content hashes.
pub fn commit_root(content_hashes: &[[u8; 32]]) -> [u8; 32] {
    let mut tree = crate::proof::MerkleTree::with_capacity(content_hashes.len());
    for hash in content_hashes {
        tree.push(hash);
    }
    tree.root()
}

/// What a commit signature signs: domain, chain and root, so a signature
/// can be replayed neither into another chain nor as another kind of
/// signature (tree heads use their own domain).
pub fn commit_signing_message(chain_id: &[u8; 32], merkle_root: &[u8; 32]) -> Vec<u8> {
    let mut message = Vec::with_capacity(16 + 64);
    message.extend_from_slice(b"ATE commit v1\0");
    message.extend_from_slice(chain_id);
    message.extend_from_slice(merkle_root);
    message
}

/// The additional authenticated data of an encrypted payload: the header
/// fields known before encryption, so a ciphertext cannot be moved to
/// another object, parent, type or key.
pub fn payload_aad(content: &EventContent) -> Vec<u8> {
    let mut aad = Vec::with_capacity(96);
    aad.extend_from_slice(b"ATE payload v1\0");
    aad.push(content.kind);
    aad.extend_from_slice(&content.key);
    aad.extend_from_slice(&content.parent);
    aad.extend_from_slice(&content.collection.to_le_bytes());
    aad.extend_from_slice(&content.type_tag.to_le_bytes());
    aad.extend_from_slice(&content.read_key_id);
    aad
}
