//! Proofs and tree heads, and their versioned binary encodings.
//!
//! Every encoding starts with one version byte ([`ENCODING_VERSION`]); integers are little-endian;
//! a path is a `u8` count followed by that many 32-byte hashes. Decoders read only what the input
//! holds, check every length against its bound before allocating, and reject unknown versions,
//! truncated input and trailing bytes. `docs/security.md` draws the layouts byte by byte; keep the
//! two in step.

use super::error::ProofError;
use super::hash::{Hash, MAX_PATH_LEN, MAX_TREE_SIZE};
use super::verify::{
    check_consistency_parameters, check_inclusion_parameters, check_path_length, consistency_path_length,
    inclusion_path_length,
};

/// The version byte every encoding of this module starts with.
pub const ENCODING_VERSION: u8 = 1;

/// The most signature bytes a [`SignedTreeHead`] may carry (8 KiB: room for post-quantum
/// signatures, bounded so a hostile peer cannot make a decoder hold more).
pub const MAX_SIGNATURE_LEN: usize = 8 * 1024;

/// The domain separator that starts [`TreeHead::signing_bytes`], so a tree head signature can
/// never be mistaken for a signature over anything else the same key signs.
pub const TREE_HEAD_SIGNING_DOMAIN: &[u8; 17] = b"ATE tree head v1\0";

/// The length of [`TreeHead::signing_bytes`].
pub const TREE_HEAD_SIGNING_LEN: usize = TREE_HEAD_SIGNING_DOMAIN.len() + 32 + 8 + 32 + 8;

const HASH_LEN: usize = 32;
/// Version, index or old size, tree size or new size, path count.
const PROOF_HEADER_LEN: usize = 1 + 8 + 8 + 1;
/// Version, chain id, tree size, root, timestamp, key id, signature length.
const SIGNED_TREE_HEAD_HEADER_LEN: usize = 1 + 32 + 8 + 32 + 8 + 32 + 2;

/// The proof that one leaf is in a tree of a given size: the sibling hashes from the leaf up to
/// the root (RFC 9162 §2.1.3). Always well-formed: the index is below the size and the path has
/// exactly the length they imply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    leaf_index: u64,
    tree_size: u64,
    path: Vec<Hash>,
}

impl InclusionProof {
    /// Assembles a proof from its parts, as received by some other transport.
    ///
    /// Errors: [`ProofError::SizeOutOfRange`] above [`MAX_TREE_SIZE`], [`ProofError::IndexOutOfRange`],
    /// [`ProofError::BadProofLength`] if `path` does not have the length the index and size imply.
    pub fn new(leaf_index: u64, tree_size: u64, path: Vec<Hash>) -> Result<Self, ProofError> {
        check_inclusion_parameters(leaf_index, tree_size)?;
        check_path_length(inclusion_path_length(leaf_index, tree_size), path.len())?;
        Ok(Self { leaf_index, tree_size, path })
    }

    /// The index of the leaf (the event's sequence number).
    pub fn leaf_index(&self) -> u64 {
        self.leaf_index
    }

    /// The size of the tree the proof leads to the root of.
    pub fn tree_size(&self) -> u64 {
        self.tree_size
    }

    /// The sibling hashes, from the leaf's sibling up to the root's child.
    pub fn path(&self) -> &[Hash] {
        &self.path
    }

    /// Version 1 layout: `version u8 = 1 | leaf_index u64 | tree_size u64 | count u8 | count × hash`.
    pub fn encode(&self) -> Vec<u8> {
        encode_proof(self.leaf_index, self.tree_size, &self.path)
    }

    /// Decodes [`encode`](Self::encode)'s output, then checks it as [`new`](Self::new) does.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProofError> {
        let (leaf_index, tree_size, path) = decode_proof(bytes)?;
        Self::new(leaf_index, tree_size, path)
    }
}

/// The proof that a tree of an old size is a prefix of the tree of a new size (RFC 9162 §2.1.4).
/// Always well-formed: the old size is not above the new one and the path has exactly the length
/// they imply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyProof {
    old_size: u64,
    new_size: u64,
    path: Vec<Hash>,
}

impl ConsistencyProof {
    /// Assembles a proof from its parts, as received by some other transport.
    ///
    /// Errors: [`ProofError::SizeOutOfRange`] if `new_size` is above [`MAX_TREE_SIZE`] or
    /// `old_size` above `new_size`, [`ProofError::BadProofLength`] if `path` does not have the length
    /// the sizes imply.
    pub fn new(old_size: u64, new_size: u64, path: Vec<Hash>) -> Result<Self, ProofError> {
        check_consistency_parameters(old_size, new_size)?;
        check_path_length(consistency_path_length(old_size, new_size), path.len())?;
        Ok(Self { old_size, new_size, path })
    }

    /// The size of the older tree.
    pub fn old_size(&self) -> u64 {
        self.old_size
    }

    /// The size of the newer tree.
    pub fn new_size(&self) -> u64 {
        self.new_size
    }

    /// The proof hashes in RFC 9162 order.
    pub fn path(&self) -> &[Hash] {
        &self.path
    }

    /// Version 1 layout: `version u8 = 1 | old_size u64 | new_size u64 | count u8 | count × hash`.
    pub fn encode(&self) -> Vec<u8> {
        encode_proof(self.old_size, self.new_size, &self.path)
    }

    /// Decodes [`encode`](Self::encode)'s output, then checks it as [`new`](Self::new) does.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProofError> {
        let (old_size, new_size, path) = decode_proof(bytes)?;
        Self::new(old_size, new_size, path)
    }
}

/// What a log states about itself at one moment: "chain `chain_id` had `tree_size` events, with
/// Merkle root `root`, at `timestamp_us`". The root only means something together with its size,
/// which is why both are signed together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeHead {
    /// The chain's id (`ChainKey::chain_id`), so a head of one chain is never valid for another.
    pub chain_id: Hash,
    pub tree_size: u64,
    pub root: Hash,
    /// Microseconds since the Unix epoch.
    pub timestamp_us: u64,
}

impl TreeHead {
    /// The exact bytes a signer signs and a verifier checks ([`TREE_HEAD_SIGNING_LEN`] bytes):
    /// `"ATE tree head v1\0" | chain_id | tree_size u64 LE | root | timestamp_us u64 LE`. Every
    /// field has a fixed size, so the string is canonical without length prefixes.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(TREE_HEAD_SIGNING_LEN);
        bytes.extend_from_slice(TREE_HEAD_SIGNING_DOMAIN);
        bytes.extend_from_slice(&self.chain_id);
        bytes.extend_from_slice(&self.tree_size.to_le_bytes());
        bytes.extend_from_slice(&self.root);
        bytes.extend_from_slice(&self.timestamp_us.to_le_bytes());
        bytes
    }
}

/// A [`TreeHead`] with the signature over its [`signing_bytes`](TreeHead::signing_bytes) and the
/// id of the key that made it. This type does not check the signature; the signature scheme
/// does. Always well-formed: tree size at most [`MAX_TREE_SIZE`], signature at most
/// [`MAX_SIGNATURE_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTreeHead {
    head: TreeHead,
    key_id: Hash,
    signature: Vec<u8>,
}

impl SignedTreeHead {
    /// Errors: [`ProofError::SizeOutOfRange`] if the tree size is above [`MAX_TREE_SIZE`],
    /// [`ProofError::TooLong`] if the signature is above [`MAX_SIGNATURE_LEN`] bytes.
    pub fn new(head: TreeHead, key_id: Hash, signature: Vec<u8>) -> Result<Self, ProofError> {
        if head.tree_size > MAX_TREE_SIZE {
            return Err(ProofError::SizeOutOfRange { size: head.tree_size, limit: MAX_TREE_SIZE });
        }
        if signature.len() > MAX_SIGNATURE_LEN {
            return Err(ProofError::TooLong { what: "signature", length: signature.len(), limit: MAX_SIGNATURE_LEN });
        }
        Ok(Self { head, key_id, signature })
    }

    pub fn head(&self) -> &TreeHead {
        &self.head
    }

    /// Which key signed; a hint for finding the public key, not itself signed.
    pub fn key_id(&self) -> &Hash {
        &self.key_id
    }

    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// Version 1 layout: `version u8 = 1 | chain_id | tree_size u64 | root | timestamp_us u64 |
    /// key_id | signature_len u16 | signature`.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(SIGNED_TREE_HEAD_HEADER_LEN + self.signature.len());
        bytes.push(ENCODING_VERSION);
        bytes.extend_from_slice(&self.head.chain_id);
        bytes.extend_from_slice(&self.head.tree_size.to_le_bytes());
        bytes.extend_from_slice(&self.head.root);
        bytes.extend_from_slice(&self.head.timestamp_us.to_le_bytes());
        bytes.extend_from_slice(&self.key_id);
        // Lossless: `new` bounds the signature to MAX_SIGNATURE_LEN, far below u16::MAX.
        bytes.extend_from_slice(&(self.signature.len() as u16).to_le_bytes());
        bytes.extend_from_slice(&self.signature);
        bytes
    }

    /// Decodes [`encode`](Self::encode)'s output, then checks it as [`new`](Self::new) does.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProofError> {
        let mut reader = Reader::new(bytes);
        reader.version()?;
        let chain_id = reader.hash()?;
        let tree_size = reader.u64()?;
        let root = reader.hash()?;
        let timestamp_us = reader.u64()?;
        let key_id = reader.hash()?;
        let signature_len = usize::from(reader.u16()?);
        // Bound first, then make sure the bytes are there, then copy: the allocation never
        // exceeds what the input holds.
        if signature_len > MAX_SIGNATURE_LEN {
            return Err(ProofError::TooLong { what: "signature", length: signature_len, limit: MAX_SIGNATURE_LEN });
        }
        let signature = reader.take(signature_len)?.to_vec();
        reader.finish()?;
        Self::new(TreeHead { chain_id, tree_size, root, timestamp_us }, key_id, signature)
    }
}

fn encode_proof(first: u64, second: u64, path: &[Hash]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(PROOF_HEADER_LEN + path.len() * HASH_LEN);
    bytes.push(ENCODING_VERSION);
    bytes.extend_from_slice(&first.to_le_bytes());
    bytes.extend_from_slice(&second.to_le_bytes());
    // Lossless: every constructor bounds the path by its sizes, which bound it to MAX_PATH_LEN.
    bytes.push(path.len() as u8);
    for hash in path {
        bytes.extend_from_slice(hash);
    }
    bytes
}

/// The shared layout of both proofs: version, two `u64`s, path.
fn decode_proof(bytes: &[u8]) -> Result<(u64, u64, Vec<Hash>), ProofError> {
    let mut reader = Reader::new(bytes);
    reader.version()?;
    let first = reader.u64()?;
    let second = reader.u64()?;
    let count = usize::from(reader.u8()?);
    if count > MAX_PATH_LEN {
        return Err(ProofError::TooLong { what: "proof path", length: count, limit: MAX_PATH_LEN });
    }
    // All hashes must be present before the path is allocated.
    let path = reader.take(count * HASH_LEN)?.chunks_exact(HASH_LEN).map(to_hash).collect();
    reader.finish()?;
    Ok((first, second, path))
}

fn to_hash(chunk: &[u8]) -> Hash {
    let mut hash = [0u8; HASH_LEN];
    hash.copy_from_slice(chunk);
    hash
}

/// A cursor over untrusted input: every read is bounds-checked and fails with
/// [`ProofError::Truncated`] instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    /// Invariant: `offset <= bytes.len()`.
    offset: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, offset: 0 }
    }

    fn take(&mut self, needed: usize) -> Result<&'a [u8], ProofError> {
        let rest = &self.bytes[self.offset..];
        if needed > rest.len() {
            return Err(ProofError::Truncated { offset: self.offset, needed, available: rest.len() });
        }
        self.offset += needed;
        Ok(&rest[..needed])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProofError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, ProofError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, ProofError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ProofError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn hash(&mut self) -> Result<Hash, ProofError> {
        self.array()
    }

    /// Reads the version byte first, so that a newer format is reported as such rather than as
    /// whatever its different layout happens to break.
    fn version(&mut self) -> Result<(), ProofError> {
        match self.u8()? {
            ENCODING_VERSION => Ok(()),
            version => Err(ProofError::UnsupportedVersion { version }),
        }
    }

    fn finish(self) -> Result<(), ProofError> {
        match self.bytes.len() - self.offset {
            0 => Ok(()),
            count => Err(ProofError::TrailingBytes { count }),
        }
    }
}
