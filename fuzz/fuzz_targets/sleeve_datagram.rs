//! What anyone on the underlay can send to the encrypted data path's UDP port: a datagram
//! fed to `Header::decode` and to an `Opener` that holds real keys. Without the key no
//! datagram may open (a success is a forgery); a genuine datagram sealed from the same bytes
//! opens exactly once, whatever garbage came before it.
//! Input: one mode byte (low bits: epoch offset of the genuine datagram), then the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::Instant;
use weave::sleeve::datagram::{Header, HEADER_LEN, MAX_FRAME, OVERHEAD};
use weave::sleeve::session::seal_vec;
use weave::sleeve::{Limits, Opener, Sealer};

const CHAIN: [u8; 32] = [0x17; 32];
const SESSION: u32 = 0x0000_beef;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let t = Instant::now();
    if let Ok(h) = Header::decode(bytes) {
        assert!(bytes.len() >= OVERHEAD);
        let mut again = [0u8; HEADER_LEN];
        h.encode(&mut again);
        assert_eq!(&again[..], &bytes[..HEADER_LEN]);
    }

    // Attacker's bytes, as sent, then with our session id (so they reach the AEAD).
    let mut opener = Opener::new(&CHAIN, SESSION);
    let mut d = bytes.to_vec();
    assert!(opener.open(t, &mut d).is_err(), "forged datagram accepted");
    if bytes.len() >= 4 {
        let mut d = bytes.to_vec();
        d[1..4].copy_from_slice(&SESSION.to_be_bytes()[1..]);
        assert!(opener.open(t, &mut d).is_err(), "forged datagram accepted");
    }
    assert_eq!(opener.epoch(), 0, "a forged datagram moved the epoch");

    // A genuine datagram carrying the same bytes opens once, after the garbage.
    if bytes.len() > MAX_FRAME {
        return;
    }
    let limits = Limits {
        packets: 1,
        ..Limits::default()
    };
    let mut sealer = Sealer::new(&CHAIN, SESSION, limits, t);
    let mut genuine = Vec::new();
    for _ in 0..=(mode % 4) {
        genuine = seal_vec(&mut sealer, t, bytes).expect("fits");
    }
    let mut d = genuine.clone();
    let n = opener.open(t, &mut d).expect("genuine datagram refused");
    assert_eq!(&d[HEADER_LEN..HEADER_LEN + n], bytes);
    let mut d = genuine;
    assert!(opener.open(t, &mut d).is_err(), "replay accepted");
});
