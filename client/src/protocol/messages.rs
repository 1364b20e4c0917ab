//! Protocol messages. Encoded with postcard; enums gain variants only at
//! the end, and any incompatible change bumps [`PROTOCOL_VERSION`], which
//! the first exchange (Hello / HelloAck) negotiates.

use super::ProtocolError;
use ate::format::EventKind;
use ate::{CollectionId, Durability, Expect, NewEvent, PrimaryKey};
use serde::{Deserialize, Serialize};

/// The version this build speaks by default.
pub const PROTOCOL_VERSION: u16 = 1;
/// Every version this build can speak, newest first.
pub const SUPPORTED_VERSIONS: &[u16] = &[1];

/// The newest version both sides speak.
pub fn negotiate_version(offered: &[u16]) -> Result<u16, ProtocolError> {
    SUPPORTED_VERSIONS.iter().copied().find(|version| offered.contains(version)).ok_or_else(|| {
        ProtocolError::NoCommonVersion { offered: offered.to_vec(), supported: SUPPORTED_VERSIONS.to_vec() }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireDurability {
    Sync,
    Batched,
    Buffered,
}

impl From<WireDurability> for Durability {
    fn from(value: WireDurability) -> Self {
        match value {
            WireDurability::Sync => Durability::Sync,
            WireDurability::Batched => Durability::Batched,
            WireDurability::Buffered => Durability::Buffered,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireExpect {
    Any,
    Absent,
    Version(u64),
}

/// One event of a commit, as a client sends it (the server assigns
/// sequence and previous hash, exactly as for a local append).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEvent {
    pub key: [u8; 16],
    pub kind: u8,
    pub parent: Option<([u8; 16], u64)>,
    pub type_tag: u64,
    pub timestamp_us: u64,
    pub read_key_id: [u8; 32],
    pub nonce: [u8; 12],
    pub expect: WireExpect,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

impl From<&NewEvent> for WireEvent {
    fn from(event: &NewEvent) -> Self {
        Self::from(event.clone())
    }
}

/// Moves the payload (a producer's 1 KiB events are not copied once more).
impl From<NewEvent> for WireEvent {
    fn from(event: NewEvent) -> Self {
        Self {
            key: *event.key.as_bytes(),
            kind: event.kind as u8,
            parent: event.parent.map(|(parent, collection)| (*parent.as_bytes(), collection.0)),
            type_tag: event.type_tag,
            timestamp_us: event.timestamp_us,
            read_key_id: event.read_key_id,
            nonce: event.nonce,
            expect: match event.expect {
                Expect::Any => WireExpect::Any,
                Expect::Absent => WireExpect::Absent,
                Expect::Version(version) => WireExpect::Version(version),
            },
            payload: event.payload,
        }
    }
}

impl TryFrom<WireEvent> for NewEvent {
    type Error = ProtocolError;

    fn try_from(event: WireEvent) -> Result<Self, ProtocolError> {
        let kind = EventKind::from_u8(event.kind)
            .ok_or_else(|| ProtocolError::InvalidEvent(format!("unknown event kind {}", event.kind)))?;
        let mut new = NewEvent::new(PrimaryKey::from_bytes(event.key), kind, event.payload);
        new.parent =
            event.parent.map(|(parent, collection)| (PrimaryKey::from_bytes(parent), CollectionId(collection)));
        new.type_tag = event.type_tag;
        new.timestamp_us = event.timestamp_us;
        new.read_key_id = event.read_key_id;
        new.nonce = event.nonce;
        new.expect = match event.expect {
            WireExpect::Any => Expect::Any,
            WireExpect::Absent => Expect::Absent,
            WireExpect::Version(version) => Expect::Version(version),
        };
        Ok(new)
    }
}

/// Error classes a client can act on; the message says the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    BadRequest,
    UnsupportedVersion,
    Unauthenticated,
    /// Authenticated, but the token or the chain's authority forbids it.
    Forbidden,
    NotFound,
    /// Optimistic concurrency: the object changed.
    Conflict,
    /// Validation rejected the commit (event index and reason in the message).
    Rejected,
    TooLarge,
    /// This server does not own the chain (see `ServerMessage::Redirect`).
    NotOwner,
    Unavailable,
    Internal,
    /// The events asked for were in segments the owner dropped (time-based
    /// log retention); a replica must restart from the chain's checkpoint.
    HistoryDropped,
}

/// From client to server. Requests carry an id echoed by their response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// First message: the versions this client speaks.
    Hello {
        versions: Vec<u16>,
        client: String,
    },
    /// A signed token (before any chain is opened).
    Authenticate {
        #[serde(with = "serde_bytes")]
        token: Vec<u8>,
    },
    Open {
        request: u64,
        chain: String,
    },
    /// Stream committed events from `from` (records as stored), optionally
    /// only one collection's.
    Subscribe {
        request: u64,
        chain: String,
        from: u64,
        collection: Option<([u8; 16], u64)>,
    },
    Unsubscribe {
        subscription: u64,
    },
    Commit {
        request: u64,
        chain: String,
        durability: WireDurability,
        events: Vec<WireEvent>,
    },
    /// The latest version of one object (on-demand replica fill).
    Load {
        request: u64,
        chain: String,
        key: [u8; 16],
    },
    /// Take a lease on a queue item for `lease_ms`, held by `token` (chosen
    /// by the client, random): answered by `Leased`.
    Lease {
        request: u64,
        chain: String,
        key: [u8; 16],
        token: u64,
        lease_ms: u64,
    },
    /// Give a lease back if `token` holds it (`forget`: and drop the
    /// item's delivery count, once it is gone): answered by `Released`.
    Release {
        request: u64,
        chain: String,
        key: [u8; 16],
        token: u64,
        forget: bool,
    },
    /// Read (`offset: None`) or commit a named consumer's position.
    ConsumerOffset {
        request: u64,
        chain: String,
        consumer: String,
        offset: Option<u64>,
    },
    /// Answered by `Pong` with the same nonce (clients use it as a request id).
    Ping {
        nonce: u64,
    },
    /// Whether `token` still holds the lease on `key`: answered by `LeaseHeld`.
    LeaseHolds {
        request: u64,
        chain: String,
        key: [u8; 16],
        token: u64,
    },
    /// The chain's checkpoint (where its log starts after old segments were
    /// dropped): answered by `Checkpoint`.
    Checkpoint {
        request: u64,
        chain: String,
    },
    /// Lease up to `max` of `keys` (at most `MAX_LEASE_CANDIDATES`), in
    /// order, under `token`: answered by `LeasedMany`.
    LeaseMany {
        request: u64,
        chain: String,
        keys: Vec<[u8; 16]>,
        token: u64,
        lease_ms: u64,
        max: u32,
    },
    /// Whether each `(key, token)` lease is still held: answered by `LeaseHeldMany`.
    LeaseHoldsMany {
        request: u64,
        chain: String,
        leases: Vec<([u8; 16], u64)>,
    },
    /// Lease up to `max` (at most `MAX_LEASE_CANDIDATES`) of the oldest free
    /// children of `items` (a queue's items) under `token`, and send them
    /// back: answered by `Taken`. A consumer that keeps no replica.
    Take {
        request: u64,
        chain: String,
        items: [u8; 16],
        token: u64,
        lease_ms: u64,
        max: u32,
    },
}

/// One item a `Take` leased: its stored record and how often it was delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakenRecord {
    pub deliveries: u32,
    #[serde(with = "serde_bytes")]
    pub record: Vec<u8>,
}

/// From server to client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    HelloAck {
        version: u16,
        server: String,
    },
    Authenticated {
        subject: String,
    },
    Opened {
        request: u64,
        chain_id: [u8; 32],
        durable_sequence: u64,
    },
    /// Another server owns the chain.
    Redirect {
        request: u64,
        address: String,
    },
    Subscribed {
        request: u64,
        subscription: u64,
    },
    /// Committed records, concatenated exactly as stored (frame + rkyv
    /// header + payload each), in commit order.
    Events {
        subscription: u64,
        #[serde(with = "serde_bytes")]
        records: Vec<u8>,
    },
    Committed {
        request: u64,
        first_sequence: u64,
        last_sequence: u64,
    },
    Loaded {
        request: u64,
        #[serde(with = "serde_bytes")]
        record: Option<Vec<u8>>,
    },
    /// The delivery count, or `None` when a live lease of someone else holds the item.
    Leased {
        request: u64,
        deliveries: Option<u32>,
    },
    Released {
        request: u64,
        released: bool,
    },
    Offset {
        request: u64,
        offset: u64,
    },
    /// A request failed (or, without a request id, the connection did).
    /// `key`: the object concerned, for conflicts and rejections.
    Error {
        request: Option<u64>,
        code: ErrorCode,
        message: String,
        key: Option<[u8; 16]>,
    },
    Pong {
        nonce: u64,
    },
    LeaseHeld {
        request: u64,
        held: bool,
    },
    /// `None`: the chain's log starts at 0.
    Checkpoint {
        request: u64,
        #[serde(with = "serde_bytes")]
        checkpoint: Option<Vec<u8>>,
    },
    /// The keys leased, with their delivery counts.
    LeasedMany {
        request: u64,
        leased: Vec<([u8; 16], u32)>,
    },
    /// One answer per lease asked about, in order.
    LeaseHeldMany {
        request: u64,
        held: Vec<bool>,
    },
    /// The items a `Take` leased, oldest first (fewer than asked when the
    /// rest are held, or would not fit in one reply). Encrypted items are
    /// not leased (the taker keeps no trust state to open them): `encrypted`
    /// names the first one passed over, with the node key it is sealed under.
    Taken {
        request: u64,
        items: Vec<TakenRecord>,
        encrypted: Option<([u8; 16], [u8; 32])>,
    },
}

impl ServerMessage {
    /// The request this message answers, if it answers one.
    pub fn request(&self) -> Option<u64> {
        match self {
            ServerMessage::Opened { request, .. }
            | ServerMessage::Redirect { request, .. }
            | ServerMessage::Subscribed { request, .. }
            | ServerMessage::Committed { request, .. }
            | ServerMessage::Loaded { request, .. }
            | ServerMessage::Leased { request, .. }
            | ServerMessage::Released { request, .. }
            | ServerMessage::Offset { request, .. }
            | ServerMessage::LeaseHeld { request, .. }
            | ServerMessage::Checkpoint { request, .. }
            | ServerMessage::LeasedMany { request, .. }
            | ServerMessage::LeaseHeldMany { request, .. }
            | ServerMessage::Taken { request, .. } => Some(*request),
            ServerMessage::Error { request, .. } => *request,
            ServerMessage::Pong { nonce } => Some(*nonce),
            ServerMessage::HelloAck { .. } | ServerMessage::Authenticated { .. } | ServerMessage::Events { .. } => None,
        }
    }
}

fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    postcard::to_stdvec(message).expect("protocol messages always serialize")
}

/// Appends `message` to `out`, as [`encode`] would return it.
fn encode_into<T: Serialize>(message: &T, out: &mut Vec<u8>) {
    postcard::serialize_with_flavor(message, AppendTo(out)).expect("protocol messages always serialize")
}

/// A postcard output that appends to a vector the caller owns (a frame
/// being built), copying byte strings in one go.
struct AppendTo<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendTo<'_> {
    type Output = ();
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ProtocolError> {
    postcard::from_bytes(bytes).map_err(|error| ProtocolError::Malformed(error.to_string()))
}

impl ClientMessage {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
    /// [`ClientMessage::encode`], appended to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        encode_into(self, out)
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        decode(bytes)
    }
}

impl ServerMessage {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
    /// [`ServerMessage::encode`], appended to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        encode_into(self, out)
    }

    /// Appends the encoding of `Events { subscription, records }` where
    /// `records` is `runs` concatenated (`len` bytes in all), without
    /// gathering them first: a server streams straight from its segments.
    pub fn encode_events_into<'a>(
        subscription: u64,
        len: usize,
        runs: impl IntoIterator<Item = &'a [u8]>,
        out: &mut Vec<u8>,
    ) {
        // `records` is the variant's last field, a byte string: its
        // encoding is a varint length, then the bytes.
        encode_into(&ServerMessage::Events { subscription, records: Vec::new() }, out);
        assert_eq!(out.pop(), Some(0), "an empty byte string ends the encoding");
        // A byte string's length is encoded as a `usize` is.
        encode_into(&len, out);
        let start = out.len();
        for run in runs {
            out.extend_from_slice(run);
        }
        assert_eq!(out.len() - start, len, "the runs make up the length given");
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<ClientMessage> {
        let event = WireEvent {
            key: [1; 16],
            kind: EventKind::Data as u8,
            parent: Some(([2; 16], 3)),
            type_tag: 4,
            timestamp_us: 5,
            read_key_id: [6; 32],
            nonce: [7; 12],
            expect: WireExpect::Version(8),
            payload: b"payload".to_vec(),
        };
        vec![
            ClientMessage::Hello { versions: vec![1, 2], client: "test".into() },
            ClientMessage::Authenticate { token: vec![9; 40] },
            ClientMessage::Open { request: 1, chain: "universe".into() },
            ClientMessage::Subscribe { request: 2, chain: "c".into(), from: 10, collection: Some(([3; 16], 0)) },
            ClientMessage::Commit {
                request: 3,
                chain: "c".into(),
                durability: WireDurability::Sync,
                events: vec![event],
            },
            ClientMessage::Load { request: 4, chain: "c".into(), key: [5; 16] },
            ClientMessage::Lease { request: 5, chain: "c".into(), key: [5; 16], token: 3, lease_ms: 1000 },
            ClientMessage::Release { request: 5, chain: "c".into(), key: [5; 16], token: 3, forget: true },
            ClientMessage::LeaseHolds { request: 5, chain: "c".into(), key: [5; 16], token: 3 },
            ClientMessage::ConsumerOffset { request: 6, chain: "c".into(), consumer: "billing".into(), offset: None },
            ClientMessage::Ping { nonce: 99 },
            ClientMessage::Checkpoint { request: 7, chain: "c".into() },
            ClientMessage::LeaseMany {
                request: 8,
                chain: "c".into(),
                keys: vec![[1; 16], [2; 16]],
                token: 3,
                lease_ms: 10,
                max: 1,
            },
            ClientMessage::LeaseHoldsMany { request: 9, chain: "c".into(), leases: vec![([1; 16], 3)] },
            ClientMessage::Take { request: 10, chain: "c".into(), items: [4; 16], token: 5, lease_ms: 30, max: 16 },
        ]
    }

    #[test]
    fn events_encoded_from_runs_match_the_message() {
        for len in [0usize, 1, 127, 128, 16_383, 16_384, 300_000] {
            let records: Vec<u8> = (0..len).map(|at| at as u8).collect();
            let subscription = 7 + len as u64;
            let expected = ServerMessage::Events { subscription, records: records.clone() }.encode();
            let cuts = [0, len / 3, len / 2, len];
            let runs = cuts.windows(2).map(|cut| &records[cut[0]..cut[1]]);
            let mut out = vec![9u8];
            ServerMessage::encode_events_into(subscription, len, runs, &mut out);
            assert_eq!(out[1..], expected[..], "{len} bytes");
            assert_eq!(out[0], 9, "appended after what was there");
        }
    }

    #[test]
    fn messages_round_trip() {
        for message in samples() {
            assert_eq!(ClientMessage::decode(&message.encode()).unwrap(), message);
        }
        let replies = [
            ServerMessage::HelloAck { version: 1, server: "atedb".into() },
            ServerMessage::Committed { request: 3, first_sequence: 10, last_sequence: 12 },
            ServerMessage::Error {
                request: Some(3),
                code: ErrorCode::Rejected,
                message: "event 1: frozen".into(),
                key: Some([1; 16]),
            },
            ServerMessage::Leased { request: 4, deliveries: Some(2) },
            ServerMessage::Events { subscription: 1, records: vec![0; 64] },
            ServerMessage::Taken {
                request: 10,
                items: vec![TakenRecord { deliveries: 2, record: vec![7; 48] }],
                encrypted: Some(([1; 16], [2; 32])),
            },
        ];
        for reply in replies {
            assert_eq!(ServerMessage::decode(&reply.encode()).unwrap(), reply);
        }
    }

    #[test]
    fn wire_events_convert_to_engine_events_and_back() {
        let ClientMessage::Commit { events, .. } = &samples()[4] else { unreachable!() };
        let engine = NewEvent::try_from(events[0].clone()).unwrap();
        assert_eq!(WireEvent::from(&engine), events[0]);
        let mut bad = events[0].clone();
        bad.kind = 200;
        assert!(matches!(NewEvent::try_from(bad), Err(ProtocolError::InvalidEvent(_))));
    }

    #[test]
    fn truncated_or_garbage_messages_are_typed_errors() {
        for message in samples() {
            let bytes = message.encode();
            for cut in 0..bytes.len() {
                // Any prefix either decodes to something else or errors: never a panic.
                let _ = ClientMessage::decode(&bytes[..cut]);
            }
        }
        assert!(matches!(ClientMessage::decode(&[250, 1, 2]), Err(ProtocolError::Malformed(_))));
        // A huge announced length inside a message does not allocate it.
        assert!(ClientMessage::decode(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

    #[test]
    fn versions_are_negotiated() {
        assert_eq!(negotiate_version(&[3, 2, 1]).unwrap(), 1);
        assert!(matches!(negotiate_version(&[7]), Err(ProtocolError::NoCommonVersion { .. })));
    }
}
