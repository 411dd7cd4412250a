//! Control-plane encryption when a password is set: a Noise `NNpsk0` handshake (snow) whose
//! pre-shared key is derived from the password, then ChaCha20-Poly1305 on every frame.
//!
//! Both handshake headers and hellos go into the Noise prologue, so a man in the middle who
//! changes a field (e.g. clears the encryption flag) breaks the handshake. The psk is
//! PBKDF2-HMAC-SHA256 of the password ([`crate::sleeve::keys::psk_from_password`]): a weak
//! password can still be guessed offline from a recorded handshake, only more slowly, so use
//! a long one.
//!
//! A finished handshake also yields the encrypted data path's keys for this peer pair
//! ([`SessionKeys`], derived from the handshake's split), so both sides agree on them and
//! every new connection (a restarted peer's) gets new ones.

use super::protocol::{ProtocolError, MAX_FRAME};
pub use crate::sleeve::keys::psk_from_password;
use crate::sleeve::SessionKeys;
use snow::{HandshakeState, TransportState};

pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Largest Noise message (the spec's limit) and the tag each one carries.
const NOISE_MAX: usize = 65535;
const TAG_LEN: usize = 16;
const CHUNK: usize = NOISE_MAX - TAG_LEN;
/// Longest sealed frame: a full plaintext frame plus per-chunk length and tag.
pub const MAX_SEALED_FRAME: usize = MAX_FRAME + (MAX_FRAME / CHUNK + 1) * (2 + TAG_LEN);

fn builder_error(e: snow::Error) -> ProtocolError {
    ProtocolError::Invalid(format!("noise setup: {e}"))
}

/// The dialling side's half-done handshake.
pub struct Initiator {
    state: HandshakeState,
}

/// Starts the handshake as the dialler; returns the first message to send.
pub fn initiate(psk: &[u8; 32], prologue: &[u8]) -> Result<(Initiator, Vec<u8>), ProtocolError> {
    let params = NOISE_PARAMS.parse().map_err(builder_error)?;
    let mut state = snow::Builder::new(params)
        .psk(0, psk)
        .and_then(|b| b.prologue(prologue))
        .and_then(|b| b.build_initiator())
        .map_err(builder_error)?;
    let mut msg = vec![0u8; 256];
    let n = state.write_message(&[], &mut msg).map_err(builder_error)?;
    msg.truncate(n);
    Ok((Initiator { state }, msg))
}

impl Initiator {
    /// Reads the responder's reply; fails when the passwords differ.
    pub fn finish(mut self, reply: &[u8]) -> Result<Session, ProtocolError> {
        let mut buf = vec![0u8; reply.len()];
        self.state
            .read_message(reply, &mut buf)
            .map_err(|_| password_mismatch())?;
        Session::from_handshake(self.state)
    }
}

/// Answers the dialler's first message as the listener; fails when the passwords differ.
pub fn respond(
    psk: &[u8; 32],
    prologue: &[u8],
    first: &[u8],
) -> Result<(Session, Vec<u8>), ProtocolError> {
    let params = NOISE_PARAMS.parse().map_err(builder_error)?;
    let mut state = snow::Builder::new(params)
        .psk(0, psk)
        .and_then(|b| b.prologue(prologue))
        .and_then(|b| b.build_responder())
        .map_err(builder_error)?;
    let mut buf = vec![0u8; first.len()];
    state
        .read_message(first, &mut buf)
        .map_err(|_| password_mismatch())?;
    let mut msg = vec![0u8; 256];
    let n = state.write_message(&[], &mut msg).map_err(builder_error)?;
    msg.truncate(n);
    Ok((Session::from_handshake(state)?, msg))
}

pub fn password_mismatch() -> ProtocolError {
    ProtocolError::Invalid("password mismatch".into())
}

/// An established encrypted session: seals and opens whole frames, in order (a replayed,
/// reordered or altered frame fails authentication and closes the connection).
pub struct Session {
    t: TransportState,
    data_keys: SessionKeys,
}

impl Session {
    fn from_handshake(mut state: HandshakeState) -> Result<Session, ProtocolError> {
        let initiator = state.is_initiator();
        let hash = state.get_handshake_hash().to_vec();
        let (c1, c2) = state.dangerously_get_raw_split();
        let data_keys = SessionKeys::from_handshake((&c1, &c2), &hash, initiator);
        let t = state.into_transport_mode().map_err(builder_error)?;
        Ok(Session { t, data_keys })
    }

    /// This peer pair's keys for the encrypted data path.
    pub fn data_keys(&self) -> &SessionKeys {
        &self.data_keys
    }

    /// The frame body for `plain`: chunks of `[u16 length][noise message]`.
    pub fn seal(&mut self, plain: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        if plain.len() > MAX_FRAME {
            return Err(ProtocolError::FrameTooLarge {
                len: plain.len(),
                max: MAX_FRAME,
            });
        }
        let mut out = Vec::with_capacity(plain.len() + (plain.len() / CHUNK + 1) * 18);
        let mut chunks: Vec<&[u8]> = plain.chunks(CHUNK).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let mut buf = vec![0u8; NOISE_MAX];
        for c in chunks {
            let n = self
                .t
                .write_message(c, &mut buf)
                .map_err(|e| ProtocolError::Invalid(format!("encrypt: {e}")))?;
            out.extend_from_slice(&(n as u16).to_be_bytes());
            out.extend_from_slice(&buf[..n]);
        }
        Ok(out)
    }

    /// The plaintext of a sealed frame body.
    pub fn open(&mut self, body: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Vec::new();
        let mut rest = body;
        let mut buf = vec![0u8; NOISE_MAX];
        if rest.is_empty() {
            return Err(ProtocolError::Truncated("encrypted frame"));
        }
        while !rest.is_empty() {
            if rest.len() < 2 {
                return Err(ProtocolError::Truncated("encrypted chunk length"));
            }
            let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            if n < TAG_LEN || rest.len() < 2 + n {
                return Err(ProtocolError::Truncated("encrypted chunk"));
            }
            let m = self
                .t
                .read_message(&rest[2..2 + n], &mut buf)
                .map_err(|_| {
                    ProtocolError::Invalid("decrypt frame: authentication failed".into())
                })?;
            if out.len() + m > MAX_FRAME {
                return Err(ProtocolError::FrameTooLarge {
                    len: out.len() + m,
                    max: MAX_FRAME,
                });
            }
            out.extend_from_slice(&buf[..m]);
            rest = &rest[2 + n..];
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(pw_a: &[u8], pw_b: &[u8]) -> Result<(Session, Session), ProtocolError> {
        let (i, m1) = initiate(&psk_from_password(pw_a), b"prologue")?;
        let (rs, m2) = respond(&psk_from_password(pw_b), b"prologue", &m1)?;
        Ok((i.finish(&m2)?, rs))
    }

    #[test]
    fn same_password_talks_both_ways() {
        let (mut a, mut b) = pair(b"s3cret", b"s3cret").unwrap();
        for plain in [vec![], vec![1, 2, 3], vec![9; 200_000], vec![5; MAX_FRAME]] {
            let sealed = a.seal(&plain).unwrap();
            assert!(sealed.len() <= MAX_SEALED_FRAME);
            assert_ne!(sealed.get(2..10), plain.get(..8), "looks unencrypted");
            assert_eq!(b.open(&sealed).unwrap(), plain);
            let back = b.seal(&plain).unwrap();
            assert_eq!(a.open(&back).unwrap(), plain);
        }
        assert!(a.seal(&vec![0; MAX_FRAME + 1]).is_err());
    }

    #[test]
    fn both_sides_derive_matching_data_keys_and_each_handshake_new_ones() {
        let (a, b) = pair(b"pw", b"pw").unwrap();
        let (ka, kb) = (a.data_keys(), b.data_keys());
        assert_eq!(ka.send, kb.recv);
        assert_eq!(ka.recv, kb.send);
        assert_eq!(ka.session, kb.session);
        assert_ne!(ka.send, ka.recv);
        let (c, _) = pair(b"pw", b"pw").unwrap();
        assert_ne!(c.data_keys().send, ka.send, "a new handshake reuses keys");
        assert_ne!(c.data_keys().recv, ka.recv);
        // The data keys seal and open across the pair.
        let t = std::time::Instant::now();
        let mut s = crate::sleeve::Sealer::new(&ka.send, ka.session, Default::default(), t);
        let mut o = crate::sleeve::Opener::new(&kb.recv, kb.session);
        let mut d = crate::sleeve::session::seal_vec(&mut s, t, b"frame").unwrap();
        assert_eq!(o.open(t, &mut d), Ok(5));
    }

    #[test]
    fn wrong_password_or_prologue_is_refused() {
        assert_eq!(pair(b"one", b"two").err(), Some(password_mismatch()));
        assert_eq!(pair(b"", b"x").err(), Some(password_mismatch()));
        let psk = psk_from_password(b"pw");
        let (_, m1) = initiate(&psk, b"what A saw").unwrap();
        assert!(respond(&psk, b"what B saw", &m1).is_err());
    }

    #[test]
    fn tampering_replay_and_garbage_fail_authentication() {
        let (mut a, mut b) = pair(b"pw", b"pw").unwrap();
        let s1 = a.seal(b"first").unwrap();
        let mut flipped = s1.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(b.open(&flipped).is_err());
        let (mut a, mut b) = pair(b"pw", b"pw").unwrap();
        let s1 = a.seal(b"first").unwrap();
        assert_eq!(b.open(&s1).unwrap(), b"first");
        assert!(b.open(&s1).is_err(), "replay accepted");
        for garbage in [&[][..], &[0][..], &[0, 20, 1, 2][..], &[0, 1, 0][..]] {
            let (_, mut b) = pair(b"pw", b"pw").unwrap();
            assert!(b.open(garbage).is_err());
        }
    }
}
