//! Key material: the password KDF (the mesh's Noise pre-shared key), the per-direction data
//! keys derived from a finished Noise handshake, and the ratchet that rekeys them.
//!
//! Everything is HKDF-SHA256 or PBKDF2-HMAC-SHA256 from `ring`; nothing here is hand-rolled.

use ring::{hkdf, pbkdf2};
use std::num::NonZeroU32;

/// PBKDF2 rounds for the password. Costs each password guess this many HMACs; run once per
/// router start.
pub const PASSWORD_ROUNDS: u32 = 100_000;

/// The salt every peer derives alike: fixed for this protocol (peers share nothing else before
/// the handshake), so a guessing table must be built for weave-rs alone, at the rounds' cost.
const PASSWORD_SALT: &[u8] = b"weave-rs mesh psk v2 (pbkdf2-hmac-sha256)";

/// The mesh's Noise pre-shared key for `password`: PBKDF2-HMAC-SHA256.
pub fn psk_from_password(password: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(PASSWORD_ROUNDS).expect("rounds are non-zero"),
        PASSWORD_SALT,
        password,
        &mut out,
    );
    out
}

/// 32 bytes of HKDF output.
struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// HKDF-Expand of `prk` (already pseudorandom) with `info`.
fn expand(prk: &hkdf::Prk, info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    prk.expand(&[info], Len32)
        .and_then(|okm| okm.fill(&mut out))
        .expect("32 bytes is a valid HKDF-SHA256 length");
    out
}

fn prk(salt: &[u8], ikm: &[u8]) -> hkdf::Prk {
    hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm)
}

/// The data plane's secrets for one peer pair, as one side sees them: the chain key each
/// direction starts from, and a session id both sides share (it names the handshake, so a
/// datagram from a peer's previous life is recognised without trying to decrypt it).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    pub send: [u8; 32],
    pub recv: [u8; 32],
    pub session: u32,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key bytes.
        write!(f, "SessionKeys {{ session: {:06x} }}", self.session)
    }
}

/// Only the low 24 bits of the session id travel in a datagram.
pub const SESSION_MASK: u32 = 0x00ff_ffff;

impl SessionKeys {
    /// Derives both directions from a finished Noise handshake: `split` is its raw split (the
    /// initiator→responder key first, on both sides), `hash` the handshake hash, `initiator`
    /// whether this side dialled. The split depends on the ephemeral Diffie-Hellman, so every
    /// handshake (a restarted peer included) gives new, unrelated keys; the Noise transport
    /// keeps using the split itself, the data plane only these HKDF outputs of it.
    pub fn from_handshake(split: (&[u8; 32], &[u8; 32]), hash: &[u8], initiator: bool) -> Self {
        let mut ikm = [0u8; 64];
        ikm[..32].copy_from_slice(split.0);
        ikm[32..].copy_from_slice(split.1);
        let prk = prk(hash, &ikm);
        let i2r = expand(&prk, b"weave-rs sleeve v1 initiator to responder");
        let r2i = expand(&prk, b"weave-rs sleeve v1 responder to initiator");
        let id = expand(&prk, b"weave-rs sleeve v1 session id");
        let session = u32::from_be_bytes([0, id[0], id[1], id[2]]);
        let (send, recv) = if initiator { (i2r, r2i) } else { (r2i, i2r) };
        SessionKeys {
            send,
            recv,
            session,
        }
    }
}

/// One step of a direction's ratchet: from a chain key, the AEAD key of this epoch and the
/// chain key of the next. Both sides step alike, so a rekey needs no message; an old chain
/// key is dropped once stepped, so a key leaked later does not open earlier epochs.
pub fn ratchet(chain: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, chain);
    (
        expand(&prk, b"weave-rs sleeve v1 epoch key"),
        expand(&prk, b"weave-rs sleeve v1 next chain"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_kdf_is_deterministic_and_separates_passwords() {
        let a = psk_from_password(b"s3cret");
        assert_eq!(a, psk_from_password(b"s3cret"));
        assert_ne!(a, psk_from_password(b"s3creT"));
        assert_ne!(a, psk_from_password(b""));
        // Not the old single SHA-256 of domain and password.
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"weave-rs mesh psk v1\0");
        h.update(b"s3cret");
        let old: [u8; 32] = h.finalize().into();
        assert_ne!(a, old);
    }

    #[test]
    fn password_kdf_matches_pbkdf2_reference() {
        // PBKDF2-HMAC-SHA256 test vector (RFC 7914 section 11, 1 round) through ring, to show
        // the primitive is the standard one; our rounds and salt differ.
        let mut out = [0u8; 64];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(1).unwrap(),
            b"salt",
            b"passwd",
            &mut out,
        );
        assert_eq!(&out[..8], &[0x55, 0xac, 0x04, 0x6e, 0x56, 0xe3, 0x08, 0x9f]);
    }

    #[test]
    fn both_sides_agree_and_directions_differ() {
        let (c1, c2) = ([1u8; 32], [2u8; 32]);
        let hash = [9u8; 32];
        let i = SessionKeys::from_handshake((&c1, &c2), &hash, true);
        let r = SessionKeys::from_handshake((&c1, &c2), &hash, false);
        assert_eq!(i.send, r.recv);
        assert_eq!(i.recv, r.send);
        assert_ne!(i.send, i.recv);
        assert_eq!(i.session, r.session);
        assert_eq!(i.session & !SESSION_MASK, 0);
        // Not the Noise keys themselves.
        assert!(![c1, c2].contains(&i.send) && ![c1, c2].contains(&i.recv));
        // Any change of split or transcript gives other keys.
        let other = SessionKeys::from_handshake((&c1, &[3u8; 32]), &hash, true);
        assert_ne!(other.send, i.send);
        assert_ne!(other.recv, i.recv);
        let other = SessionKeys::from_handshake((&c1, &c2), &[8u8; 32], true);
        assert_ne!(other.send, i.send);
        assert!(!format!("{i:?}").contains("send"));
    }

    #[test]
    fn ratchet_steps_to_fresh_keys() {
        let c0 = [7u8; 32];
        let (k0, c1) = ratchet(&c0);
        let (k1, c2) = ratchet(&c1);
        let all = [c0, k0, c1, k1, c2];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(ratchet(&c0), (k0, c1), "deterministic");
    }
}
