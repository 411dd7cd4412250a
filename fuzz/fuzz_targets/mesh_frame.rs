//! What a peer on the underlay can send before and after the handshake: the header, the
//! Hello, and length-prefixed frames split at arbitrary points, each decoded as a Message.
//! Input: one byte for the chunk size, then the byte stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weave::mesh::protocol::{
    decode_header, FrameDecoder, Hello, Message, HEADER_LEN, MAX_FRAME, MAX_HANDSHAKE_FRAME,
};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let _ = decode_header(stream);
    let stream = stream
        .get(HEADER_LEN.min(stream.len())..)
        .unwrap_or_default();

    // Directly as a Hello and a Message, with round trips for whatever decodes.
    if let Ok(h) = Hello::decode(stream) {
        assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
    }
    if let Ok(m) = Message::decode(stream) {
        assert_eq!(Message::decode(&m.encode()).unwrap(), m);
    }

    // As a connection sees it: a handshake frame, then full-size frames.
    let mut dec = FrameDecoder::new(MAX_HANDSHAKE_FRAME);
    let mut handshaken = false;
    for piece in stream.chunks(chunk) {
        dec.push(piece);
        loop {
            match dec.next_frame() {
                Ok(Some(frame)) => {
                    if handshaken {
                        assert!(frame.len() <= MAX_FRAME);
                        let _ = Message::decode(&frame);
                    } else {
                        assert!(frame.len() <= MAX_HANDSHAKE_FRAME);
                        let _ = Hello::decode(&frame);
                        handshaken = true;
                        dec.set_max(MAX_FRAME);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        // Never more than one frame's worth plus what was just pushed is kept.
        assert!(dec.buffered() <= 4 + MAX_FRAME + chunk);
    }
});
