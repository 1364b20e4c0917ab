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

pub use frame::{
    encode_frame, encode_frame_with, FrameKind, FrameReader, PartialFrame, DEFAULT_MAX_FRAME_BYTES, FRAME_HEADER_LEN,
    TRUSTED_RESERVE_AHEAD_BYTES,
};
pub use messages::{
    negotiate_version, ClientMessage, ErrorCode, ServerMessage, TakenRecord, WireDurability, WireEvent, WireExpect,
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
    #[error("invalid chain name {name:?}: {reason}")]
    InvalidChainName { name: String, reason: &'static str },
}

/// Longest chain name on the wire, in bytes.
pub const MAX_CHAIN_NAME_BYTES: usize = 255;

/// The rule for chain names that cross the network: 1 to 255 bytes, no
/// control characters (NUL included), no `/`, and not `.` or `..`. The
/// engine never uses a name as a path (it hashes it), but a name is also
/// shown in logs, metrics and URLs, where these would mislead.
pub fn check_chain_name(name: &str) -> Result<(), ProtocolError> {
    let invalid = |reason| Err(ProtocolError::InvalidChainName { name: name.chars().take(64).collect(), reason });
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() > MAX_CHAIN_NAME_BYTES {
        return invalid("longer than 255 bytes");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are not names");
    }
    if name.contains('/') {
        return invalid("contains '/'");
    }
    if name.chars().any(char::is_control) {
        return invalid("contains a control character");
    }
    Ok(())
}

#[cfg(test)]
mod chain_name_tests {
    use super::*;

    #[test]
    fn chain_names_that_would_mislead_are_refused() {
        for good in ["orders", "shop-2026.q1", "é-ünïcode", &"x".repeat(255)] {
            assert_eq!(check_chain_name(good), Ok(()), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "../etc", "nul\0byte", "line\nbreak", &"x".repeat(256)] {
            assert!(matches!(check_chain_name(bad), Err(ProtocolError::InvalidChainName { .. })), "{bad:?}");
        }
    }
}
