//! Payloads of trust events, and the hashes a commit's signatures cover.

use crate::crypto::{KeyId, Nonce, SignatureScheme, NONCE_LEN};
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

/// Bytes of an envelope before its wrapped key: the wrap nonce and the
/// wrapped key's length.
const ENVELOPE_HEAD_LEN: usize = NONCE_LEN + 2;

impl EncryptedPayload {
    pub fn encode(&self) -> Vec<u8> {
        let wrapped = &self.wrapped_data_key;
        let head = Self::encode_head_sealing(wrapped.len(), self.ciphertext.len(), |out| {
            out.extend_from_slice(wrapped);
            Ok::<_, std::convert::Infallible>(self.wrap_nonce)
        });
        let Ok(mut out) = head;
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// The envelope up to its ciphertext, with room for `ciphertext_len`
    /// more bytes (a writer appends the plaintext and seals it in place),
    /// the data key sealed straight into it by `seal`, which appends
    /// `wrapped_len` bytes and returns the nonce it sealed them under.
    pub fn encode_head_sealing<E>(
        wrapped_len: usize,
        ciphertext_len: usize,
        seal: impl FnOnce(&mut Vec<u8>) -> Result<Nonce, E>,
    ) -> Result<Vec<u8>, E> {
        let mut out = Vec::with_capacity(ENVELOPE_HEAD_LEN + wrapped_len + ciphertext_len);
        out.extend_from_slice(&[0; NONCE_LEN]);
        out.extend_from_slice(&(wrapped_len as u16).to_le_bytes());
        let wrap_nonce = seal(&mut out)?;
        assert_eq!(out.len(), ENVELOPE_HEAD_LEN + wrapped_len, "the sealed data key is as long as announced");
        out[..NONCE_LEN].copy_from_slice(&wrap_nonce);
        Ok(out)
    }

    /// `None` for anything that is not a well-formed envelope.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let wrap_nonce: Nonce = bytes.get(..NONCE_LEN)?.try_into().ok()?;
        let wrapped_len = u16::from_le_bytes(bytes.get(NONCE_LEN..ENVELOPE_HEAD_LEN)?.try_into().ok()?) as usize;
        let wrapped_data_key = bytes.get(ENVELOPE_HEAD_LEN..ENVELOPE_HEAD_LEN + wrapped_len)?.to_vec();
        let ciphertext = bytes.get(ENVELOPE_HEAD_LEN + wrapped_len..)?.to_vec();
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

const CONTENT_CONTEXT: &str = "ate 2026 event content";
/// Bytes of [`EventContent::hashed_bytes`].
const CONTENT_LEN: usize = 1 + 16 + 16 + 8 + 8 + 8 + 32 + 32 + 12;

impl EventContent {
    /// BLAKE3 (derive-key mode, so no other ATE hash can collide with it)
    /// over the fields in a fixed little-endian layout.
    pub fn hash(&self) -> [u8; 32] {
        blake3::derive_key(CONTENT_CONTEXT, &self.hashed_bytes())
    }

    /// [`EventContent::hash`] of each, hashed side by side.
    pub fn hashes<C: std::borrow::Borrow<EventContent>>(contents: impl IntoIterator<Item = C>) -> Vec<[u8; 32]> {
        static KEY: std::sync::LazyLock<crate::format::DerivedKey> =
            std::sync::LazyLock::new(|| crate::format::DerivedKey::new(CONTENT_CONTEXT));
        let bytes: Vec<[u8; CONTENT_LEN]> =
            contents.into_iter().map(|content| content.borrow().hashed_bytes()).collect();
        let inputs: Vec<&[u8]> = bytes.iter().map(|content| content.as_slice()).collect();
        crate::format::derive_key_hashes(&KEY, &inputs)
    }

    /// The hashed layout: kind, key, parent, collection, type tag,
    /// timestamp, payload hash, read key id, nonce.
    fn hashed_bytes(&self) -> [u8; CONTENT_LEN] {
        let mut out = [0u8; CONTENT_LEN];
        let fields: [&[u8]; 9] = [
            &[self.kind],
            &self.key,
            &self.parent,
            &self.collection.to_le_bytes(),
            &self.type_tag.to_le_bytes(),
            &self.timestamp_us.to_le_bytes(),
            &self.payload_hash,
            &self.read_key_id,
            &self.nonce,
        ];
        let mut at = 0;
        for field in fields {
            out[at..at + field.len()].copy_from_slice(field);
            at += field.len();
        }
        debug_assert_eq!(at, CONTENT_LEN);
        out
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
    crate::proof::root_of(content_hashes)
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
pub fn payload_aad(content: &EventContent) -> [u8; 96] {
    concat_fixed(&[
        b"ATE payload v1\0",
        &[content.kind],
        &content.key,
        &content.parent,
        &content.collection.to_le_bytes(),
        &content.type_tag.to_le_bytes(),
        &content.read_key_id,
    ])
}

/// `parts` laid end to end in an array of exactly their total length: the
/// fixed layouts of AADs, without a heap allocation per event.
pub(crate) fn concat_fixed<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut at = 0;
    for part in parts {
        out[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    assert_eq!(at, N, "the parts fill the array exactly");
    out
}

#[cfg(test)]
mod content_hash_tests {
    use super::EventContent;

    /// The hash as it was first defined: field by field into a derive-key
    /// hasher. Stored signatures cover these bytes, so they must not move.
    fn reference(content: &EventContent) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_derive_key("ate 2026 event content");
        hasher.update(&[content.kind]);
        hasher.update(&content.key);
        hasher.update(&content.parent);
        hasher.update(&content.collection.to_le_bytes());
        hasher.update(&content.type_tag.to_le_bytes());
        hasher.update(&content.timestamp_us.to_le_bytes());
        hasher.update(&content.payload_hash);
        hasher.update(&content.read_key_id);
        hasher.update(&content.nonce);
        hasher.finalize().into()
    }

    #[test]
    fn one_and_many_content_hashes_match_the_field_by_field_definition() {
        let contents: Vec<EventContent> = (0..40u8)
            .map(|i| EventContent {
                kind: i % 7,
                key: [i; 16],
                parent: [i.wrapping_mul(3); 16],
                collection: u64::from(i) << 40,
                type_tag: u64::from(i) * 977,
                timestamp_us: 1_700_000_000_000_000 + u64::from(i),
                payload_hash: [i ^ 0x5a; 32],
                read_key_id: [i.wrapping_add(9); 32],
                nonce: [i; 12],
            })
            .collect();
        let expected: Vec<[u8; 32]> = contents.iter().map(reference).collect();
        assert_eq!(contents.iter().map(EventContent::hash).collect::<Vec<_>>(), expected);
        assert_eq!(EventContent::hashes(&contents), expected);
    }
}
