//! What a peer that does not know the password can send during and after the Noise
//! handshake. Nothing it crafts may complete a handshake or be accepted as a sealed frame:
//! a success here would be an authentication bypass, so it fails the run.
//! Input: one mode byte, then the attacker's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use weave::mesh::crypto::{initiate, psk_from_password, respond};

const PROLOGUE: &[u8] = b"weave fuzz prologue";
/// The password's key, derived once: the KDF is deliberately slow (PBKDF2, 100,000 rounds)
/// and would otherwise be all the fuzzer measures.
static PSK: OnceLock<[u8; 32]> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let psk = *PSK.get_or_init(|| psk_from_password(b"the defenders' password"));
    match mode % 3 {
        // The listener reads a crafted first handshake message.
        0 => assert!(
            respond(&psk, PROLOGUE, bytes).is_err(),
            "a crafted first message completed the handshake"
        ),
        // The dialler reads a crafted reply.
        1 => {
            let (initiator, _first) = initiate(&psk, PROLOGUE).unwrap();
            assert!(
                initiator.finish(bytes).is_err(),
                "a crafted reply completed the handshake"
            );
        }
        // Two real peers: a crafted frame is refused; real frames of the same bytes round-trip.
        _ => {
            let (initiator, first) = initiate(&psk, PROLOGUE).unwrap();
            let (mut listener, reply) = respond(&psk, PROLOGUE, &first).unwrap();
            let mut dialler = initiator.finish(&reply).unwrap();
            assert!(
                listener.open(bytes).is_err(),
                "a crafted frame was accepted as sealed"
            );
            if let Ok(sealed) = dialler.seal(bytes) {
                assert_eq!(listener.open(&sealed).unwrap(), bytes);
            }
        }
    }
});
