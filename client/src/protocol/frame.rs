//! Framing. The reader never allocates more than the configured limit: the
//! length is checked before any buffer grows to hold the frame.

use super::ProtocolError;

/// Bytes before a frame's body.
pub const FRAME_HEADER_LEN: usize = 4;
/// Largest body accepted by default: a maximal 16 MiB commit plus envelope.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 17 << 20;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    Client = 1,
    Server = 2,
}

impl FrameKind {
    fn from_u8(value: u8) -> Result<Self, ProtocolError> {
        match value {
            1 => Ok(Self::Client),
            2 => Ok(Self::Server),
            other => Err(ProtocolError::UnknownFrameKind(other)),
        }
    }
}

/// Appends one frame to `out`.
pub fn encode_frame(
    kind: FrameKind,
    message: &[u8],
    max_frame_bytes: usize,
    out: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    let length = message.len() + 1;
    if length > max_frame_bytes {
        return Err(ProtocolError::FrameTooLarge { length, limit: max_frame_bytes });
    }
    out.extend_from_slice(&(length as u32).to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(message);
    Ok(())
}

/// Incremental frame reader: feed it whatever the socket returned, take
/// out whole frames. Bounded by `max_frame_bytes` (+ one header).
#[derive(Debug)]
pub struct FrameReader {
    buffer: Vec<u8>,
    max_frame_bytes: usize,
}

impl FrameReader {
    pub fn new(max_frame_bytes: usize) -> Self {
        Self { buffer: Vec::new(), max_frame_bytes }
    }

    /// Bytes held that are not yet a whole frame.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Adds received bytes. Fails (and the connection should be closed)
    /// as soon as a frame header announces more than the limit.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        self.buffer.extend_from_slice(bytes);
        self.check_announced_length()
    }

    fn check_announced_length(&self) -> Result<(), ProtocolError> {
        if let Some(header) = self.buffer.get(..FRAME_HEADER_LEN) {
            let length = u32::from_le_bytes(header.try_into().expect("4 bytes")) as usize;
            if length > self.max_frame_bytes {
                return Err(ProtocolError::FrameTooLarge { length, limit: self.max_frame_bytes });
            }
            if length == 0 {
                return Err(ProtocolError::EmptyFrame);
            }
        }
        Ok(())
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<(FrameKind, Vec<u8>)>, ProtocolError> {
        self.check_announced_length()?;
        let Some(header) = self.buffer.get(..FRAME_HEADER_LEN) else { return Ok(None) };
        let length = u32::from_le_bytes(header.try_into().expect("4 bytes")) as usize;
        if self.buffer.len() < FRAME_HEADER_LEN + length {
            return Ok(None);
        }
        let kind = FrameKind::from_u8(self.buffer[FRAME_HEADER_LEN])?;
        let message = self.buffer[FRAME_HEADER_LEN + 1..FRAME_HEADER_LEN + length].to_vec();
        self.buffer.drain(..FRAME_HEADER_LEN + length);
        // Keep the allocation bounded after a large frame.
        if self.buffer.capacity() > 2 * self.max_frame_bytes.max(64 << 10) && self.buffer.len() < (64 << 10) {
            self.buffer.shrink_to(64 << 10);
        }
        Ok(Some((kind, message)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_and_joined_arbitrarily_come_out_whole() {
        let mut wire = Vec::new();
        for index in 0..20u8 {
            encode_frame(FrameKind::Client, &vec![index; index as usize * 37], 1 << 20, &mut wire).unwrap();
        }
        for chunk in [1usize, 3, 7, 64, 4096] {
            let mut reader = FrameReader::new(1 << 20);
            let mut seen = Vec::new();
            for piece in wire.chunks(chunk) {
                reader.push(piece).unwrap();
                while let Some((kind, body)) = reader.next_frame().unwrap() {
                    assert_eq!(kind, FrameKind::Client);
                    seen.push(body);
                }
            }
            assert_eq!(seen.len(), 20);
            for (index, body) in seen.iter().enumerate() {
                assert_eq!(*body, vec![index as u8; index * 37]);
            }
            assert_eq!(reader.buffered(), 0);
        }
    }

    #[test]
    fn oversized_announcements_fail_before_any_allocation() {
        let mut reader = FrameReader::new(1024);
        let error = reader.push(&u32::MAX.to_le_bytes()).unwrap_err();
        assert_eq!(error, ProtocolError::FrameTooLarge { length: u32::MAX as usize, limit: 1024 });
        assert!(reader.buffered() <= 4);
        let mut out = Vec::new();
        assert!(encode_frame(FrameKind::Server, &[0; 2048], 1024, &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..2000 {
            let mut reader = FrameReader::new(4096);
            let mut bytes = vec![0u8; (state % 64) as usize];
            for byte in &mut bytes {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            if reader.push(&bytes).is_ok() {
                while let Ok(Some(_)) = reader.next_frame() {}
            }
        }
        let mut reader = FrameReader::new(4096);
        reader.push(&[0, 0, 0, 0]).unwrap_err();
        let mut reader = FrameReader::new(4096);
        reader.push(&[1, 0, 0, 0, 9]).unwrap();
        assert_eq!(reader.next_frame(), Err(ProtocolError::UnknownFrameKind(9)));
    }
}
