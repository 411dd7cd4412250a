//! Gathering a sealed frame from its datagrams ([`Fragment`]), per peer, before it is
//! authenticated once as a whole.
//!
//! Memory is bounded: a few slots, each with one buffer for the largest sealed frame,
//! allocated the first time the slot is used and reused after. A frame whose datagrams do
//! not all come within [`TIMEOUT`], or that is crowded out by newer frames, is given up
//! (counted; TCP sends it again). A frame in a single datagram needs no slot: see
//! [`single`].

use super::datagram::{Fragment, Header, Reject, DATAGRAM_HEADER_LEN, HEADER_LEN, MAX_SEALED};
use super::Opener;
use std::time::{Duration, Instant};

/// Frames being gathered at once per peer (a GSO burst delivers them in order).
pub const SLOTS: usize = 4;
/// How long a frame's datagrams may take to all arrive.
pub const TIMEOUT: Duration = Duration::from_millis(500);

struct Slot {
    buf: Vec<u8>,
    /// The frame being gathered (None: free).
    key: Option<Header>,
    count: u8,
    chunk: u16,
    have: [u64; 4],
    got: u8,
    /// Ciphertext and tag length, known once the last datagram came.
    len: usize,
    started: Instant,
}

/// One peer's frames in flight.
pub struct Reassembly {
    slots: Vec<Slot>,
    gave_up: u64,
}

impl Default for Reassembly {
    fn default() -> Self {
        let now = Instant::now();
        let slots = (0..SLOTS)
            .map(|_| Slot {
                buf: Vec::new(),
                key: None,
                count: 0,
                chunk: 0,
                have: [0; 4],
                got: 0,
                len: 0,
                started: now,
            })
            .collect();
        Reassembly { slots, gave_up: 0 }
    }
}

/// The sealed frame carried whole by a single datagram, made contiguous in place (the
/// fragment fields removed): header, ciphertext and tag.
pub fn single<'a>(f: &Fragment, datagram: &'a mut [u8]) -> &'a mut [u8] {
    debug_assert_eq!(f.count, 1);
    datagram.copy_within(..HEADER_LEN, DATAGRAM_HEADER_LEN - HEADER_LEN);
    &mut datagram[DATAGRAM_HEADER_LEN - HEADER_LEN..]
}

/// One datagram through a peer's receiving side: decoded, checked against the replay
/// window, gathered, and once its frame is whole, authenticated and decrypted. The
/// plaintext when a frame completed; `None` while it waits for more datagrams.
pub fn receive<'a>(
    opener: &mut Opener,
    frames: &'a mut Reassembly,
    now: Instant,
    datagram: &'a mut [u8],
) -> Result<Option<&'a [u8]>, Reject> {
    let f = Fragment::decode(datagram)?;
    opener.check(&f.header)?;
    let sealed = if f.count == 1 {
        single(&f, datagram)
    } else {
        match frames.add(now, &f, datagram)? {
            Some(sealed) => sealed,
            None => return Ok(None),
        }
    };
    let n = opener.open(now, sealed)?;
    Ok(Some(&sealed[HEADER_LEN..HEADER_LEN + n]))
}

impl Reassembly {
    /// Frames given up since the last call (each one drop of [`Reject::Incomplete`]).
    pub fn take_gave_up(&mut self) -> u64 {
        std::mem::take(&mut self.gave_up)
    }

    /// Adds `datagram` (decoded as `f`); returns the whole sealed frame (header, ciphertext,
    /// tag, ready for [`super::Opener::open`]) once its last datagram is in.
    pub fn add(
        &mut self,
        now: Instant,
        f: &Fragment,
        datagram: &[u8],
    ) -> Result<Option<&mut [u8]>, Reject> {
        let i = match self.slots.iter().position(|s| s.key == Some(f.header)) {
            Some(i) => {
                let s = &self.slots[i];
                if (s.count, s.chunk) != (f.count, f.chunk) {
                    return Err(Reject::Truncated);
                }
                i
            }
            None => self.claim(now, f),
        };
        let s = &mut self.slots[i];
        let (word, bit) = (usize::from(f.index / 64), 1u64 << (f.index % 64));
        if s.have[word] & bit != 0 {
            return Err(Reject::Replayed);
        }
        let data = &datagram[DATAGRAM_HEADER_LEN..];
        let at = HEADER_LEN + f.offset();
        s.buf[at..at + data.len()].copy_from_slice(data);
        s.have[word] |= bit;
        s.got += 1;
        if f.is_last() {
            s.len = f.offset() + data.len();
        }
        if s.got < s.count {
            return Ok(None);
        }
        s.key = None;
        s.buf[..HEADER_LEN].copy_from_slice(&datagram[..HEADER_LEN]);
        Ok(Some(&mut s.buf[..HEADER_LEN + s.len]))
    }

    /// A slot for a new frame: a free or timed-out one, else the oldest (given up).
    fn claim(&mut self, now: Instant, f: &Fragment) -> usize {
        let expired = |s: &Slot| now.saturating_duration_since(s.started) >= TIMEOUT;
        let i = match self.slots.iter().position(|s| s.key.is_none()) {
            Some(i) => i,
            None => {
                let i = (self.slots.iter().position(expired))
                    .or_else(|| (0..self.slots.len()).min_by_key(|&i| self.slots[i].started))
                    .expect("slots");
                self.gave_up += 1;
                i
            }
        };
        let s = &mut self.slots[i];
        if s.buf.is_empty() {
            s.buf = vec![0u8; HEADER_LEN + MAX_SEALED];
        }
        s.key = Some(f.header);
        (s.count, s.chunk, s.have, s.got, s.len, s.started) = (f.count, f.chunk, [0; 4], 0, 0, now);
        i
    }

    /// Gives up frames older than [`TIMEOUT`] (call now and then; they are also reclaimed
    /// when their slots are needed).
    pub fn expire(&mut self, now: Instant) {
        for s in &mut self.slots {
            if s.key.is_some() && now.saturating_duration_since(s.started) >= TIMEOUT {
                s.key = None;
                self.gave_up += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sleeve::datagram::fragment_vec;
    use crate::sleeve::session::seal_vec;
    use crate::sleeve::{Limits, Sealer};

    fn frames(n: usize, len: usize, chunk: usize) -> (Vec<Vec<u8>>, Vec<Vec<Vec<u8>>>) {
        let t = Instant::now();
        let mut s = Sealer::new(&[3; 32], 5, Limits::default(), t);
        let plain: Vec<Vec<u8>> = (0..n)
            .map(|i| (0..len).map(|j| (i * 7 + j) as u8).collect())
            .collect();
        let wire = plain
            .iter()
            .map(|p| fragment_vec(&seal_vec(&mut s, t, p).unwrap(), chunk).unwrap())
            .collect();
        (plain, wire)
    }

    /// Feeds datagrams through decode, check, reassembly and open; the frames that opened.
    fn deliver(o: &mut Opener, r: &mut Reassembly, t: Instant, ds: &[&Vec<u8>]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for d in ds {
            let mut d = d.to_vec();
            if let Ok(Some(plain)) = receive(o, r, t, &mut d) {
                out.push(plain.to_vec());
            }
        }
        out
    }

    #[test]
    fn interleaved_and_reordered_fragments_reassemble_each_frame_once() {
        let t = Instant::now();
        let (plain, wire) = frames(3, 60_000, 1400);
        let mut all: Vec<&Vec<u8>> = Vec::new();
        // Round-robin across the three frames, each frame's datagrams backwards.
        let longest = wire.iter().map(|w| w.len()).max().unwrap();
        for k in 0..longest {
            for w in &wire {
                if k < w.len() {
                    all.push(&w[w.len() - 1 - k]);
                }
            }
        }
        let (mut o, mut r) = (Opener::new(&[3; 32], 5), Reassembly::default());
        let mut got = deliver(&mut o, &mut r, t, &all);
        got.sort();
        let mut want = plain.clone();
        want.sort();
        assert_eq!(got, want);
        // Everything again: nothing opens twice.
        assert!(deliver(&mut o, &mut r, t, &all).is_empty());
        assert_eq!(
            r.take_gave_up(),
            0,
            "replays are refused before taking a slot"
        );
    }

    #[test]
    fn a_lost_fragment_drops_its_frame_only_and_is_given_up() {
        let t = Instant::now();
        let (plain, wire) = frames(2, 5000, 1400);
        let mut ds: Vec<&Vec<u8>> = wire.iter().flatten().collect();
        ds.remove(1); // frame 0 loses a datagram
        let (mut o, mut r) = (Opener::new(&[3; 32], 5), Reassembly::default());
        assert_eq!(deliver(&mut o, &mut r, t, &ds), vec![plain[1].clone()]);
        assert_eq!(r.take_gave_up(), 0);
        r.expire(t + TIMEOUT);
        assert_eq!(r.take_gave_up(), 1);
    }

    #[test]
    fn a_flood_of_partial_frames_stays_within_the_slots() {
        let t = Instant::now();
        let (plain, wire) = frames(SLOTS * 3, 3000, 1000);
        // Only the first datagram of every frame, then one whole frame.
        let mut ds: Vec<&Vec<u8>> = wire.iter().map(|w| &w[0]).collect();
        ds.extend(wire[0].iter());
        let (mut o, mut r) = (Opener::new(&[3; 32], 5), Reassembly::default());
        assert_eq!(deliver(&mut o, &mut r, t, &ds), vec![plain[0].clone()]);
        assert_eq!(r.slots.len(), SLOTS);
        assert_eq!(r.take_gave_up(), (SLOTS * 3 - SLOTS + 1) as u64);
    }

    #[test]
    fn a_tampered_fragment_fails_the_whole_frame() {
        let t = Instant::now();
        let (_, wire) = frames(1, 5000, 1400);
        for (i, field) in [(2, 30), (0, 17), (1, 19)] {
            let mut bad = wire[0].clone();
            bad[i][field] ^= 1;
            let ds: Vec<&Vec<u8>> = bad.iter().collect();
            let (mut o, mut r) = (Opener::new(&[3; 32], 5), Reassembly::default());
            assert!(deliver(&mut o, &mut r, t, &ds).is_empty(), "{i} {field}");
        }
    }
}
