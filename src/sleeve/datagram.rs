//! The encrypted data-plane datagram (UDP payload), pure encoding and decoding:
//!
//! ```text
//!  0      1               4               8                              16
//!  +------+---------------+---------------+-------------------------------+----------------+-----+
//!  | type | session (24b) | epoch (u32)   | counter (u64)                 | ciphertext ... | tag |
//!  +------+---------------+---------------+-------------------------------+----------------+-----+
//! ```
//!
//! All integers big-endian. The 16-byte header is the AEAD's associated data; the nonce is
//! the epoch and counter (each epoch has its own key, so a nonce never repeats under a key).
//! The plaintext is one Ethernet frame; the tag is ChaCha20-Poly1305's 16 bytes.

/// Header bytes before the ciphertext.
pub const HEADER_LEN: usize = 16;
/// The AEAD tag after the ciphertext.
pub const TAG_LEN: usize = 16;
/// Bytes a datagram adds to the frame it carries.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// The only datagram type so far: an encrypted Ethernet frame.
pub const TYPE_FRAME: u8 = 1;
/// Largest UDP payload over IPv4; no datagram is longer.
pub const MAX_DATAGRAM: usize = 65_507;
/// Largest frame a datagram can carry.
pub const MAX_FRAME: usize = MAX_DATAGRAM - OVERHEAD;

/// A datagram's clear header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Low 24 bits of the session id (see `keys::SessionKeys`).
    pub session: u32,
    pub epoch: u32,
    pub counter: u64,
}

/// Why a datagram was not accepted; each is counted as a drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    /// Shorter than a header and a tag.
    Truncated,
    /// Longer than any datagram we send.
    Oversized,
    /// A type we do not know.
    UnknownType,
    /// Another session's (e.g. the peer's previous life, before a restart).
    StaleSession,
    /// An epoch we have no key for (long gone, or too far ahead).
    UnknownEpoch,
    /// A counter already seen, or too old for the replay window.
    Replayed,
    /// Authentication failed: tampered, or not sealed with our key.
    Forged,
    /// From an address that is not a peer's.
    NotPeer,
}

impl Reject {
    pub const ALL: [Reject; 8] = [
        Reject::Truncated,
        Reject::Oversized,
        Reject::UnknownType,
        Reject::StaleSession,
        Reject::UnknownEpoch,
        Reject::Replayed,
        Reject::Forged,
        Reject::NotPeer,
    ];

    /// Its name in status output and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Reject::Truncated => "truncated",
            Reject::Oversized => "oversized",
            Reject::UnknownType => "unknown_type",
            Reject::StaleSession => "stale_session",
            Reject::UnknownEpoch => "unknown_epoch",
            Reject::Replayed => "replayed",
            Reject::Forged => "forged",
            Reject::NotPeer => "not_peer",
        }
    }
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn encode(&self, out: &mut [u8; HEADER_LEN]) {
        let s = (self.session & super::keys::SESSION_MASK).to_be_bytes();
        out[0] = TYPE_FRAME;
        out[1..4].copy_from_slice(&s[1..4]);
        out[4..8].copy_from_slice(&self.epoch.to_be_bytes());
        out[8..16].copy_from_slice(&self.counter.to_be_bytes());
    }

    /// Reads the header of a whole datagram and checks its length; the ciphertext and tag are
    /// `datagram[HEADER_LEN..]`.
    pub fn decode(datagram: &[u8]) -> Result<Header, Reject> {
        if datagram.len() < OVERHEAD {
            return Err(Reject::Truncated);
        }
        if datagram.len() > MAX_DATAGRAM {
            return Err(Reject::Oversized);
        }
        if datagram[0] != TYPE_FRAME {
            return Err(Reject::UnknownType);
        }
        let b = |r: std::ops::Range<usize>| &datagram[r];
        Ok(Header {
            session: u32::from_be_bytes([0, datagram[1], datagram[2], datagram[3]]),
            epoch: u32::from_be_bytes(b(4..8).try_into().expect("4 bytes")),
            counter: u64::from_be_bytes(b(8..16).try_into().expect("8 bytes")),
        })
    }

    /// The AEAD nonce: epoch then counter.
    pub fn nonce(&self) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&self.epoch.to_be_bytes());
        n[4..].copy_from_slice(&self.counter.to_be_bytes());
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_at_the_edges() {
        for (session, epoch, counter) in [
            (0, 0, 0),
            (0x00ab_cdef, 1, 1),
            (0x00ff_ffff, u32::MAX, u64::MAX),
            (0x0012_3456, 0x0102_0304, 0x0102_0304_0506_0708),
        ] {
            let h = Header {
                session,
                epoch,
                counter,
            };
            let mut d = vec![0u8; OVERHEAD];
            h.encode((&mut d[..HEADER_LEN]).try_into().unwrap());
            assert_eq!(d[0], TYPE_FRAME);
            assert_eq!(Header::decode(&d), Ok(h));
        }
        let h = Header {
            session: 0x0102_0304,
            epoch: 5,
            counter: 6,
        };
        let mut d = [0u8; OVERHEAD];
        h.encode((&mut d[..HEADER_LEN]).try_into().unwrap());
        assert_eq!(&d[..16], &[1, 2, 3, 4, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 6]);
        assert_eq!(
            Header::decode(&d).unwrap().session,
            0x0002_0304,
            "24 bits travel"
        );
        assert_eq!(h.nonce(), [0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 6]);
    }

    #[test]
    fn bad_lengths_and_types_are_refused() {
        for n in 0..OVERHEAD {
            assert_eq!(Header::decode(&vec![TYPE_FRAME; n]), Err(Reject::Truncated));
        }
        assert!(Header::decode(&vec![TYPE_FRAME; MAX_DATAGRAM]).is_ok());
        assert_eq!(
            Header::decode(&vec![TYPE_FRAME; MAX_DATAGRAM + 1]),
            Err(Reject::Oversized)
        );
        for t in (0..=255u8).filter(|t| *t != TYPE_FRAME) {
            let mut d = [0u8; OVERHEAD];
            d[0] = t;
            assert_eq!(Header::decode(&d), Err(Reject::UnknownType));
        }
        // A VXLAN header (flags 0x08) is not one of ours.
        let mut vx = [0u8; 64];
        vx[0] = 0x08;
        assert_eq!(Header::decode(&vx), Err(Reject::UnknownType));
    }

    #[test]
    fn drop_names_are_distinct() {
        let names: std::collections::BTreeSet<_> = Reject::ALL.iter().map(|d| d.name()).collect();
        assert_eq!(names.len(), Reject::ALL.len());
    }
}
