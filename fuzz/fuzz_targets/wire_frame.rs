//! Bytes from a socket: the frame reader and both message decoders return a
//! message or a typed error for any input, split at any point, and never
//! buffer more than the frame limit, whole frames or partly received ones.
#![no_main]

use ate_client::protocol::{ClientMessage, FrameReader, ServerMessage};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let mut reader = FrameReader::new(LIMIT);
    let cut = (split as usize).min(rest.len());
    for chunk in [&rest[..cut], &rest[cut..]] {
        if reader.push(chunk).is_err() {
            return;
        }
        loop {
            match reader.next_frame() {
                Ok(Some((_, body))) => {
                    assert!(body.len() <= LIMIT);
                    let _ = ClientMessage::decode(&body);
                    let _ = ServerMessage::decode(&body);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        // The socket reader takes large frames out partly received.
        if split % 2 == 1 {
            match reader.take_partial(usize::from(split) * 16, usize::from(split) << 10) {
                Ok(Some(partial)) => {
                    assert!(partial.body.len() < partial.length && partial.length < LIMIT);
                    assert_eq!(reader.buffered(), 0);
                    return;
                }
                Ok(None) => {}
                Err(_) => return,
            }
        }
    }
    // Bodies without framing too: every message decoder sees raw input.
    let _ = ClientMessage::decode(rest);
    let _ = ServerMessage::decode(rest);
});
