//! The encrypted data-plane datagram (UDP payload), pure encoding and decoding.
//!
//! A frame is sealed once (one AEAD operation, however long the frame) and the sealed bytes
//! travel in one or more datagrams, each a slice of them behind the same header:
//!
//! ```text
//!  0      1               4               8                              16     17     18      20
//!  +------+---------------+---------------+-------------------------------+------+------+-------+-------------+
//!  | type | session (24b) | epoch (u32)   | counter (u64)                 | index| count| chunk | slice ...   |
//!  +------+---------------+---------------+-------------------------------+------+------+-------+-------------+
//! ```
//!
//! All integers big-endian. The first 16 bytes are the sealed header, the AEAD's associated
//! data; the nonce is the epoch and counter (each epoch has its own key, so a nonce never
//! repeats under a key). The sealed bytes are the ciphertext then AES-256-GCM's
//! 16-byte tag; datagram `index` of `count` carries bytes `index * chunk ..` of them, every
//! datagram but the last exactly `chunk` bytes. The fragment fields are not authenticated
//! themselves: a wrong one misplaces bytes, and the reassembled frame fails the AEAD.
//! The plaintext is what the data path reads from its TAP port: an offload header and an
//! Ethernet frame, up to a 64 KiB TCP super-frame.

/// The sealed header's bytes (the AEAD's associated data).
pub const HEADER_LEN: usize = 16;
/// The fragment fields after the sealed header.
pub const FRAGMENT_LEN: usize = 4;
/// Header bytes before a datagram's slice of the sealed frame.
pub const DATAGRAM_HEADER_LEN: usize = HEADER_LEN + FRAGMENT_LEN;
/// The AEAD tag after the ciphertext.
pub const TAG_LEN: usize = 16;
/// Bytes sealing adds to a frame: the header and the tag.
pub const SEAL_OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Bytes a single datagram adds to the frame it carries whole.
pub const OVERHEAD: usize = DATAGRAM_HEADER_LEN + TAG_LEN;
/// The only datagram type: a slice of a frame sealed with AES-256-GCM (type 2 was the same
/// under ChaCha20-Poly1305, type 1 one frame per datagram: older routers' datagrams are
/// refused as an unknown type, not as failed authentication).
pub const TYPE_FRAME: u8 = 3;
/// Largest UDP payload over IPv4; no datagram is longer.
pub const MAX_DATAGRAM: usize = 65_507;
/// Largest plaintext frame: an offload header and a 64 KiB super-frame, with room to spare.
pub const MAX_FRAME: usize = 65_600;
/// Largest ciphertext and tag of one frame.
pub const MAX_SEALED: usize = MAX_FRAME + TAG_LEN;
/// Most datagrams one frame travels in.
pub const MAX_FRAGMENTS: usize = 255;
/// Smallest slice a multi-datagram frame is cut into (bounds the work per frame).
pub const MIN_CHUNK: usize = 64;

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
    /// Shorter than a header and a tag, or fragment fields that do not add up.
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
    /// A frame some of whose datagrams never came (given up after a while, or crowded out).
    Incomplete,
}

impl Reject {
    pub const ALL: [Reject; 9] = [
        Reject::Truncated,
        Reject::Oversized,
        Reject::UnknownType,
        Reject::StaleSession,
        Reject::UnknownEpoch,
        Reject::Replayed,
        Reject::Forged,
        Reject::NotPeer,
        Reject::Incomplete,
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
            Reject::Incomplete => "incomplete",
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

    /// Reads the header of a sealed frame (header, ciphertext and tag, as reassembled) and
    /// checks its length; the ciphertext and tag are `sealed[HEADER_LEN..]`.
    pub fn decode(sealed: &[u8]) -> Result<Header, Reject> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(Reject::Truncated);
        }
        if sealed.len() > HEADER_LEN + MAX_SEALED {
            return Err(Reject::Oversized);
        }
        Self::decode_prefix(sealed)
    }

    /// The header at the start of `b` (at least [`HEADER_LEN`] bytes).
    fn decode_prefix(b: &[u8]) -> Result<Header, Reject> {
        if b[0] != TYPE_FRAME {
            return Err(Reject::UnknownType);
        }
        Ok(Header {
            session: u32::from_be_bytes([0, b[1], b[2], b[3]]),
            epoch: u32::from_be_bytes(b[4..8].try_into().expect("4 bytes")),
            counter: u64::from_be_bytes(b[8..16].try_into().expect("8 bytes")),
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

/// One datagram: which slice of which sealed frame it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    pub header: Header,
    pub index: u8,
    pub count: u8,
    /// Length of every slice but the last.
    pub chunk: u16,
}

impl Fragment {
    /// How many datagrams `sealed_len` bytes of ciphertext and tag take in slices of
    /// `chunk` (None: more than [`MAX_FRAGMENTS`], or a chunk too small to be valid).
    pub fn count(sealed_len: usize, chunk: usize) -> Option<u8> {
        if chunk < MIN_CHUNK || chunk > usize::from(u16::MAX) {
            return None;
        }
        let n = sealed_len.div_ceil(chunk).max(1);
        u8::try_from(n).ok().filter(|_| n <= MAX_FRAGMENTS)
    }

    /// The datagram header for slice `index` of `count` of the frame whose sealed header is
    /// `sealed_header`.
    pub fn encode(
        sealed_header: &[u8; HEADER_LEN],
        index: u8,
        count: u8,
        chunk: u16,
    ) -> [u8; DATAGRAM_HEADER_LEN] {
        let mut h = [0u8; DATAGRAM_HEADER_LEN];
        h[..HEADER_LEN].copy_from_slice(sealed_header);
        h[16] = index;
        h[17] = count;
        h[18..20].copy_from_slice(&chunk.to_be_bytes());
        h
    }

    /// Reads a datagram's header and checks that its slice fits the frame it claims to be
    /// part of; the slice is `datagram[DATAGRAM_HEADER_LEN..]`, placed at [`Fragment::offset`].
    pub fn decode(datagram: &[u8]) -> Result<Fragment, Reject> {
        if datagram.len() > MAX_DATAGRAM {
            return Err(Reject::Oversized);
        }
        if datagram.len() <= DATAGRAM_HEADER_LEN {
            return Err(Reject::Truncated);
        }
        let header = Header::decode_prefix(datagram)?;
        let (index, count) = (datagram[16], datagram[17]);
        let chunk = u16::from_be_bytes([datagram[18], datagram[19]]);
        let len = datagram.len() - DATAGRAM_HEADER_LEN;
        let (c, n) = (usize::from(chunk), usize::from(count));
        let fits = if count == 1 {
            index == 0 && len >= TAG_LEN && len <= c && len <= MAX_SEALED
        } else {
            let last = usize::from(index) + 1 == n;
            index < count
                && c >= MIN_CHUNK
                && (if last { len <= c } else { len == c })
                && (n - 1) * c + if last { len } else { 1 } <= MAX_SEALED
        };
        if !fits {
            return Err(Reject::Truncated);
        }
        Ok(Fragment {
            header,
            index,
            count,
            chunk,
        })
    }

    /// Where this datagram's slice goes in the sealed frame's ciphertext and tag.
    pub fn offset(&self) -> usize {
        usize::from(self.index) * usize::from(self.chunk)
    }

    pub fn is_last(&self) -> bool {
        self.index + 1 == self.count
    }
}

/// Cuts a sealed frame (header, ciphertext, tag) into datagrams of at most
/// `chunk + DATAGRAM_HEADER_LEN` bytes (tests and tools; the data path sends slices in place).
pub fn fragment_vec(sealed: &[u8], chunk: usize) -> Option<Vec<Vec<u8>>> {
    let head: &[u8; HEADER_LEN] = sealed.get(..HEADER_LEN)?.try_into().ok()?;
    let body = &sealed[HEADER_LEN..];
    let count = Fragment::count(body.len(), chunk)?;
    let out = (0..count)
        .map(|i| {
            let at = usize::from(i) * chunk;
            let mut d = Fragment::encode(head, i, count, chunk as u16).to_vec();
            d.extend_from_slice(&body[at..(at + chunk).min(body.len())]);
            d
        })
        .collect();
    Some(out)
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
            let mut d = vec![0u8; SEAL_OVERHEAD];
            h.encode((&mut d[..HEADER_LEN]).try_into().unwrap());
            assert_eq!(d[0], TYPE_FRAME);
            assert_eq!(Header::decode(&d), Ok(h));
        }
        let h = Header {
            session: 0x0102_0304,
            epoch: 5,
            counter: 6,
        };
        let mut d = [0u8; SEAL_OVERHEAD];
        h.encode((&mut d[..HEADER_LEN]).try_into().unwrap());
        assert_eq!(&d[..16], &[3, 2, 3, 4, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 6]);
        assert_eq!(
            Header::decode(&d).unwrap().session,
            0x0002_0304,
            "24 bits travel"
        );
        assert_eq!(h.nonce(), [0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 6]);
    }

    #[test]
    fn bad_lengths_and_types_are_refused() {
        for n in 0..SEAL_OVERHEAD {
            assert_eq!(Header::decode(&vec![TYPE_FRAME; n]), Err(Reject::Truncated));
        }
        let max = HEADER_LEN + MAX_SEALED;
        assert!(Header::decode(&vec![TYPE_FRAME; max]).is_ok());
        assert_eq!(
            Header::decode(&vec![TYPE_FRAME; max + 1]),
            Err(Reject::Oversized)
        );
        for t in (0..=255u8).filter(|t| *t != TYPE_FRAME) {
            let mut d = [0u8; SEAL_OVERHEAD];
            d[0] = t;
            assert_eq!(Header::decode(&d), Err(Reject::UnknownType));
        }
        // A VXLAN header (flags 0x08) is not one of ours.
        let mut vx = [0u8; 64];
        vx[0] = 0x08;
        assert_eq!(Header::decode(&vx), Err(Reject::UnknownType));
    }

    fn sealed(len: usize) -> Vec<u8> {
        let h = Header {
            session: 7,
            epoch: 1,
            counter: 9,
        };
        let mut d: Vec<u8> = (0..HEADER_LEN + len).map(|i| i as u8).collect();
        h.encode((&mut d[..HEADER_LEN]).try_into().unwrap());
        d
    }

    #[test]
    fn fragments_cover_the_sealed_frame_exactly_once() {
        for (len, chunk) in [
            (16, 1416),
            (1416, 1416),
            (1417, 1416),
            (65_566, 1416),
            (5000, 64),
        ] {
            let s = sealed(len);
            let ds = fragment_vec(&s, chunk).unwrap();
            assert_eq!(ds.len(), len.div_ceil(chunk));
            let mut again = s[..HEADER_LEN].to_vec();
            for (i, d) in ds.iter().enumerate() {
                assert!(d.len() <= chunk + DATAGRAM_HEADER_LEN);
                let f = Fragment::decode(d).unwrap();
                assert_eq!((usize::from(f.index), usize::from(f.count)), (i, ds.len()));
                assert_eq!(f.offset(), again.len() - HEADER_LEN);
                assert_eq!(f.header, Header::decode(&s).unwrap());
                again.extend_from_slice(&d[DATAGRAM_HEADER_LEN..]);
            }
            assert_eq!(again, s);
        }
        // Too many slices, or slices too small, are refused rather than sent.
        assert!(fragment_vec(&sealed(MAX_SEALED), 200).is_none());
        assert!(fragment_vec(&sealed(1000), MIN_CHUNK - 1).is_none());
    }

    #[test]
    fn fragment_fields_that_do_not_add_up_are_refused() {
        let s = sealed(3000);
        let ds = fragment_vec(&s, 1000).unwrap();
        let bad = |d: &[u8]| Fragment::decode(d);
        // Shortened or lengthened slices.
        assert_eq!(bad(&ds[0][..ds[0].len() - 1]), Err(Reject::Truncated));
        let mut long = ds[2].clone();
        long.push(0);
        assert_eq!(bad(&long), Err(Reject::Truncated));
        for n in 0..=DATAGRAM_HEADER_LEN {
            assert_eq!(bad(&ds[0][..n]), Err(Reject::Truncated), "{n} bytes");
        }
        // Index past the count, zero count, a tiny chunk, a frame too long to exist.
        let with = |i: usize, v: &[u8]| {
            let mut d = ds[1].clone();
            d[i..i + v.len()].copy_from_slice(v);
            bad(&d)
        };
        assert_eq!(with(16, &[3]), Err(Reject::Truncated));
        assert_eq!(with(17, &[0]), Err(Reject::Truncated));
        assert_eq!(with(17, &[255]), Err(Reject::Truncated));
        let mut tiny = fragment_vec(&s, MIN_CHUNK).unwrap()[0].clone();
        tiny[18..20].copy_from_slice(&((MIN_CHUNK - 1) as u16).to_be_bytes());
        tiny.pop();
        assert_eq!(bad(&tiny), Err(Reject::Truncated));
        // A lone datagram too short for a tag.
        let one = fragment_vec(&sealed(16), 1000).unwrap();
        assert!(bad(&one[0]).is_ok());
        assert_eq!(bad(&one[0][..one[0].len() - 1]), Err(Reject::Truncated));
        assert_eq!(
            bad(&vec![TYPE_FRAME; MAX_DATAGRAM + 1]),
            Err(Reject::Oversized)
        );
        let mut vx = ds[0].clone();
        vx[0] = 1;
        assert_eq!(bad(&vx), Err(Reject::UnknownType));
    }

    #[test]
    fn drop_names_are_distinct() {
        let names: std::collections::BTreeSet<_> = Reject::ALL.iter().map(|d| d.name()).collect();
        assert_eq!(names.len(), Reject::ALL.len());
    }
}
