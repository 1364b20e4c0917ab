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
    encode_frame_with(kind, max_frame_bytes, out, |out| out.extend_from_slice(message))
}

/// Appends one frame to `out` whose message `write` appends: the message is
/// encoded in place, not into a buffer of its own and then copied. On a
/// frame over the limit `out` is left as it was.
pub fn encode_frame_with(
    kind: FrameKind,
    max_frame_bytes: usize,
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>),
) -> Result<(), ProtocolError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    out.push(kind as u8);
    write(out);
    let length = out.len() - start - FRAME_HEADER_LEN;
    if length > max_frame_bytes || length > u32::MAX as usize {
        out.truncate(start);
        return Err(ProtocolError::FrameTooLarge { length, limit: max_frame_bytes });
    }
    out[start..start + FRAME_HEADER_LEN].copy_from_slice(&(length as u32).to_le_bytes());
    Ok(())
}

/// Incremental frame reader: feed it whatever the socket returned, take
/// out whole frames. Bounded by `max_frame_bytes` (+ one header).
#[derive(Debug)]
pub struct FrameReader {
    buffer: Vec<u8>,
    /// Where the bytes not yet taken out start. Frames are taken from the
    /// front without moving what follows them; the rest moves to the front
    /// only before more bytes are added (one move per read, not per frame).
    start: usize,
    max_frame_bytes: usize,
}

/// A frame whose header has arrived but not all of its body, taken out of
/// a [`FrameReader`] so that the rest can be read straight into `body`.
#[derive(Debug)]
pub struct PartialFrame {
    pub kind: FrameKind,
    /// The message bytes received so far.
    pub body: Vec<u8>,
    /// The message's whole length (`body` is complete at this length).
    pub length: usize,
}

impl FrameReader {
    pub fn new(max_frame_bytes: usize) -> Self {
        Self { buffer: Vec::new(), start: 0, max_frame_bytes }
    }

    /// Bytes held that are not yet a whole frame.
    pub fn buffered(&self) -> usize {
        self.buffer.len() - self.start
    }

    /// Adds received bytes. Fails (and the connection should be closed)
    /// as soon as a frame header announces more than the limit.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        self.room(bytes.len()).extend_from_slice(bytes);
        self.check_announced_length()
    }

    /// The buffer to append received bytes to, with room for `additional`
    /// more; call [`FrameReader::received`] after appending.
    pub fn room(&mut self, additional: usize) -> &mut Vec<u8> {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.reserve(additional);
        &mut self.buffer
    }

    /// Checks what [`FrameReader::room`]'s buffer received.
    pub fn received(&self) -> Result<(), ProtocolError> {
        self.check_announced_length()
    }

    fn unread(&self) -> &[u8] {
        &self.buffer[self.start..]
    }

    /// The length the frame at the front announces, once its header is here.
    fn announced_length(&self) -> Option<usize> {
        let header = self.unread().get(..FRAME_HEADER_LEN)?;
        Some(u32::from_le_bytes(header.try_into().expect("4 bytes")) as usize)
    }

    fn check_announced_length(&self) -> Result<(), ProtocolError> {
        if let Some(length) = self.announced_length() {
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
        let Some(length) = self.announced_length() else { return Ok(None) };
        let unread = self.unread();
        if unread.len() < FRAME_HEADER_LEN + length {
            return Ok(None);
        }
        let kind = FrameKind::from_u8(unread[FRAME_HEADER_LEN])?;
        let message = unread[FRAME_HEADER_LEN + 1..FRAME_HEADER_LEN + length].to_vec();
        self.start += FRAME_HEADER_LEN + length;
        if self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
            // Keep the allocation bounded after a large frame.
            if self.buffer.capacity() > 2 * self.max_frame_bytes.max(64 << 10) {
                self.buffer.shrink_to(64 << 10);
            }
        }
        Ok(Some((kind, message)))
    }

    /// Takes out the frame at the front if its header (and kind) arrived,
    /// its message is at least `min_length` bytes long and not all of it
    /// is here yet: the caller reads the rest straight into its body
    /// instead of through this buffer. Nothing else may be buffered
    /// behind it, so the buffer is empty afterwards. The body has room
    /// for up to `reserve_ahead` bytes of the message before they arrive.
    pub fn take_partial(
        &mut self,
        min_length: usize,
        reserve_ahead: usize,
    ) -> Result<Option<PartialFrame>, ProtocolError> {
        self.check_announced_length()?;
        let unread = self.unread();
        let Some(length) = self.announced_length().filter(|_| unread.len() > FRAME_HEADER_LEN) else {
            return Ok(None);
        };
        let message_length = length - 1;
        if message_length < min_length || unread.len() >= FRAME_HEADER_LEN + length {
            return Ok(None);
        }
        let kind = FrameKind::from_u8(unread[FRAME_HEADER_LEN])?;
        let received = &unread[FRAME_HEADER_LEN + 1..];
        let mut body = Vec::with_capacity(message_length.min(reserve_ahead.max(received.len())));
        body.extend_from_slice(received);
        self.buffer.clear();
        self.start = 0;
        Ok(Some(PartialFrame { kind, body, length: message_length }))
    }
}

/// What a reader of a trusted peer may reserve for a message before its
/// bytes arrive ([`FrameReader::take_partial`]): a subscription's batch of
/// records (256 KiB) and its envelope fit, so they are never copied to
/// grow. An untrusted peer gets room only for what it sent.
pub const TRUSTED_RESERVE_AHEAD_BYTES: usize = 260 << 10;

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

    /// What `FramedReader` does, without a socket: whole frames from the
    /// buffer, large ones taken out partly received and completed straight
    /// from the wire.
    fn read_all(wire: &[u8], piece: usize, min_partial: usize) -> Vec<Vec<u8>> {
        let mut reader = FrameReader::new(1 << 22);
        let mut seen = Vec::new();
        let mut partial: Option<PartialFrame> = None;
        let mut at = 0;
        while at < wire.len() {
            let end = (at + piece).min(wire.len());
            if let Some(frame) = &mut partial {
                let end = end.min(at + frame.length - frame.body.len());
                frame.body.extend_from_slice(&wire[at..end]);
                at = end;
                if frame.body.len() == frame.length {
                    seen.push(partial.take().expect("just filled").body);
                }
                continue;
            }
            reader.push(&wire[at..end]).unwrap();
            at = end;
            while let Some((_, body)) = reader.next_frame().unwrap() {
                seen.push(body);
            }
            if let Some(frame) = reader.take_partial(min_partial, TRUSTED_RESERVE_AHEAD_BYTES).unwrap() {
                assert!(frame.body.len() < frame.length);
                assert!(frame.body.capacity() <= frame.length.max(TRUSTED_RESERVE_AHEAD_BYTES));
                assert_eq!(reader.buffered(), 0, "nothing may sit behind a partial frame");
                partial = Some(frame);
            }
        }
        assert!(partial.is_none() && reader.buffered() == 0);
        seen
    }

    #[test]
    fn large_frames_read_partly_then_whole_come_out_whole() {
        let sizes = [3usize, 70_000, 0, 1, 300_000, 17, 9_000, 1 << 20, 5];
        let mut wire = Vec::new();
        let messages: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(index, size)| (0..*size).map(|at| (at * 7 + index) as u8).collect())
            .collect();
        for message in &messages {
            encode_frame(FrameKind::Server, message, 1 << 22, &mut wire).unwrap();
        }
        for piece in [1usize, 5, 4096, 16 << 10, 100_000] {
            for min_partial in [0usize, 8 << 10, usize::MAX] {
                assert_eq!(
                    read_all(&wire, piece, min_partial),
                    messages,
                    "pieces of {piece}, partial from {min_partial}"
                );
            }
        }
    }

    #[test]
    fn frames_encoded_in_place_match_and_fail_cleanly() {
        let mut copied = vec![9u8; 3];
        let mut in_place = copied.clone();
        encode_frame(FrameKind::Client, b"hello", 64, &mut copied).unwrap();
        encode_frame_with(FrameKind::Client, 64, &mut in_place, |out| out.extend_from_slice(b"hello")).unwrap();
        assert_eq!(copied, in_place);
        let error = encode_frame_with(FrameKind::Client, 64, &mut in_place, |out| out.extend_from_slice(&[0; 64]));
        assert_eq!(error, Err(ProtocolError::FrameTooLarge { length: 65, limit: 64 }));
        assert_eq!(in_place, copied, "a refused frame leaves nothing behind");
    }

    #[test]
    fn an_announced_frame_reserves_only_what_the_reader_allows() {
        let announce = |reader: &mut FrameReader| {
            reader.push(&(16u32 << 20).to_le_bytes()).unwrap();
            assert!(reader.take_partial(0, 0).unwrap().is_none(), "the kind byte is not here yet");
            reader.push(&[FrameKind::Client as u8, 1, 2]).unwrap();
        };
        // An untrusted peer: only what it sent is held.
        let mut reader = FrameReader::new(16 << 20);
        announce(&mut reader);
        let partial = reader.take_partial(0, 0).unwrap().expect("a partial frame");
        let expected = (FrameKind::Client, &[1u8, 2][..], (16 << 20) - 1);
        assert_eq!((partial.kind, partial.body.as_slice(), partial.length), expected);
        assert!(partial.body.capacity() < 64);
        // A trusted one: room ahead, bounded.
        let mut reader = FrameReader::new(16 << 20);
        announce(&mut reader);
        let partial = reader.take_partial(0, TRUSTED_RESERVE_AHEAD_BYTES).unwrap().expect("a partial frame");
        assert!((TRUSTED_RESERVE_AHEAD_BYTES..2 * TRUSTED_RESERVE_AHEAD_BYTES).contains(&partial.body.capacity()));
        let mut reader = FrameReader::new(1 << 20);
        reader.push(&[10, 0, 0, 0, 7]).unwrap();
        assert_eq!(reader.take_partial(0, 0).unwrap_err(), ProtocolError::UnknownFrameKind(7));
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
