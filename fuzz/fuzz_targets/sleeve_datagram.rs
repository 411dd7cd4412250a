//! What anyone on the underlay can send to the encrypted data path's UDP port: datagrams
//! fed to `Fragment::decode` and through a receiving side (replay check, reassembly, an
//! `Opener` that holds real keys). Without the key no frame may open (a success is a
//! forgery); a genuine frame sealed from the same bytes, cut into datagrams, opens exactly
//! once (sent twice), whatever garbage came before it.
//! Input: one mode byte (low bits: epoch offset of the genuine frame; high bits: its slice
//! size), then datagrams, each after a 2-byte little-endian length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::Instant;
use weave::sleeve::datagram::{
    fragment_vec, Fragment, DATAGRAM_HEADER_LEN, MAX_FRAME, MAX_SEALED, MIN_CHUNK,
};
use weave::sleeve::fragments::{receive, Reassembly};
use weave::sleeve::session::seal_vec;
use weave::sleeve::{Limits, Opener, Sealer};

const CHAIN: [u8; 32] = [0x17; 32];
const SESSION: u32 = 0x0000_beef;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mut datagrams = Vec::new();
    while rest.len() >= 2 {
        let n = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        datagrams.push(&rest[2..2 + n]);
        rest = &rest[2 + n..];
    }
    let t = Instant::now();
    let mut opener = Opener::new(&CHAIN, SESSION);
    let mut frames = Reassembly::default();
    for bytes in &datagrams {
        if let Ok(f) = Fragment::decode(bytes) {
            let slice = bytes.len() - DATAGRAM_HEADER_LEN;
            assert!(f.offset() + slice <= MAX_SEALED, "slice past any frame");
            let head = bytes[..16].try_into().unwrap();
            assert_eq!(
                Fragment::encode(head, f.index, f.count, f.chunk)[..],
                bytes[..DATAGRAM_HEADER_LEN]
            );
        }
        // Attacker's bytes, as sent, then with our session id (so they reach the AEAD).
        let mut d = bytes.to_vec();
        let r = receive(&mut opener, &mut frames, t, &mut d);
        assert!(!matches!(r, Ok(Some(_))), "forged frame accepted");
        if bytes.len() >= 4 {
            let mut d = bytes.to_vec();
            d[1..4].copy_from_slice(&SESSION.to_be_bytes()[1..]);
            let r = receive(&mut opener, &mut frames, t, &mut d);
            assert!(!matches!(r, Ok(Some(_))), "forged frame accepted");
        }
    }
    assert_eq!(opener.epoch(), 0, "a forged datagram moved the epoch");

    // A genuine frame carrying all the input opens once, after the garbage.
    if data.len() > MAX_FRAME {
        return;
    }
    let limits = Limits {
        packets: 1,
        ..Limits::default()
    };
    let mut sealer = Sealer::new(&CHAIN, SESSION, limits, t);
    let mut genuine = Vec::new();
    for _ in 0..=(mode % 4) {
        genuine = seal_vec(&mut sealer, t, data).expect("fits");
    }
    let chunk = (MIN_CHUNK + usize::from(mode >> 2) * 331).max(MAX_SEALED / 255 + 1);
    let pieces = fragment_vec(&genuine, chunk).expect("fragments");
    // Spoofed datagrams may hold reassembly slots (a spoofer can delay frames, as it can
    // drop them) but must leave the keys and the replay window as they were: the genuine
    // frame is gathered afresh.
    let mut frames = Reassembly::default();
    let mut opened = 0;
    for _ in 0..2 {
        for p in &pieces {
            let mut d = p.clone();
            if let Ok(Some(plain)) = receive(&mut opener, &mut frames, t, &mut d) {
                assert_eq!(plain, data);
                opened += 1;
            }
        }
    }
    assert_eq!(opened, 1, "genuine frame opened {opened} times");
});
