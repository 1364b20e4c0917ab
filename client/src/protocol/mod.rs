//! The wire protocol: length-prefixed frames with a hard size limit, each
//! carrying one postcard-encoded message. Events travel as the same record
//! bytes as on disk (rkyv header + payload), never re-encoded.
//!
//! ```text
//! frame:  u32 LE body length | body
//! body:   u8 frame kind (1 = client message, 2 = server message) | postcard message
//! ```
//! Documented in docs/protocol.md.

mod frame;
mod messages;

pub use frame::{encode_frame, FrameKind, FrameReader, DEFAULT_MAX_FRAME_BYTES, FRAME_HEADER_LEN};
pub use messages::{
    negotiate_version, ClientMessage, ErrorCode, ServerMessage, WireDurability, WireEvent, WireExpect,
    PROTOCOL_VERSION, SUPPORTED_VERSIONS,
};

/// Why bytes from the network are not a valid frame or message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("frame of {length} bytes exceeds the limit of {limit}")]
    FrameTooLarge { length: usize, limit: usize },
    #[error("empty frame")]
    EmptyFrame,
    #[error("unknown frame kind {0}")]
    UnknownFrameKind(u8),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("no protocol version in common (peer offers {offered:?}, this build speaks {supported:?})")]
    NoCommonVersion { offered: Vec<u16>, supported: Vec<u16> },
    #[error("invalid event in message: {0}")]
    InvalidEvent(String),
}
