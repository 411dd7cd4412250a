//! Ring gossip by deltas: a peer broadcasts only the entries that changed since its last
//! broadcast, and a receiver merges them in O(d log n) for d entries into a ring of n, with
//! the same safety rules as a whole-ring merge ([`Ring::merge`]). Whole rings still go out
//! as anti-entropy and in replies, and still merge (peers of an older release send them).

use super::addr::{ip, AddrRange};
use super::entries::{check_entries, Entry, Ring};
use super::merge::{take_theirs, MergeError};
use super::shared::{Entries, Seeds};
use crate::peer::PeerName;
use serde::{Deserialize, Serialize};

/// The entries of the sender's ring that changed since its previous broadcast.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingDelta {
    pub start: u32,
    pub end: u32,
    /// [`seeds_digest`] of the sender's seeds: checked without sending a list that can be
    /// as long as the ring (consensus seeds every elector).
    pub seeds_digest: u64,
    /// The seeds themselves, only in a complete delta (a receiver without a ring adopts them).
    pub seeds: Seeds,
    /// Entries in the sender's ring: a receiver left with fewer missed something.
    pub total: u32,
    /// Sorted by token, no duplicates. A complete delta shares the sender's list.
    pub entries: Entries,
    /// For each entry, the token where its range ends in the sender's ring (the next one,
    /// wrapping). A receiver that knows no token there missed one (a grant that cut the
    /// range short) and must not take the entry: it would own too much.
    pub ends: Vec<u32>,
    /// For each entry, the token of the entry before it in the sender's ring. A receiver
    /// that knows no token there missed one, and a new entry would stretch back over it.
    pub prevs: Vec<u32>,
    /// For each entry, the version of the entry before it in the sender's ring. A token new
    /// to a receiver was cut from the range before it by a change to that entry too; a
    /// receiver holding an older version of that entry missed the change, and taking the
    /// token alone would make a ring nobody had (the old entry, with its old free count,
    /// ending at the new token), which other peers refuse to merge. Empty from senders of
    /// an earlier release.
    #[serde(default)]
    pub prev_versions: Vec<u32>,
}

/// A digest of a seed list that does not change between releases or platforms (FNV-1a
/// over the names), so peers built apart compare equal lists equal.
pub fn seeds_digest(seeds: &[PeerName]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in seeds {
        for b in p.as_u64().to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

impl RingDelta {
    /// Whether it holds the sender's whole ring.
    pub fn is_complete(&self) -> bool {
        self.entries.len() == self.total as usize
    }

    /// A complete delta as the ring it is, as seen by `me`.
    fn as_ring(&self, me: PeerName) -> Ring {
        let mut ring = Ring::new(AddrRange::new(self.start, self.end), me);
        ring.entries = self.entries.clone();
        ring.seeds = self.seeds.clone();
        ring
    }

    /// Adds a later delta of the same sender (gossip not yet sent, batched): its entries
    /// replace earlier ones of the same token.
    pub fn absorb(&mut self, mut later: RingDelta) {
        if later.is_complete() {
            // The sender's whole ring, which holds every token it sent before.
            *self = later;
            return;
        }
        for d in [&mut *self, &mut later] {
            if d.is_complete() {
                d.ends = vec![0; d.entries.len()];
                d.prevs = vec![0; d.entries.len()];
            }
            if d.prev_versions.len() != d.entries.len() {
                // A complete delta, or one from an earlier release: no version is required.
                d.prev_versions = vec![0; d.entries.len()];
            }
        }
        let mut out: Vec<(Entry, Bounds)> =
            Vec::with_capacity(self.entries.len() + later.entries.len());
        let bounds = bounds_of(&mut self.ends, &mut self.prevs, &mut self.prev_versions);
        let earlier = std::mem::take(&mut self.entries);
        let earlier = earlier.iter().copied().zip(bounds);
        let later_bounds = bounds_of(&mut later.ends, &mut later.prevs, &mut later.prev_versions);
        let (mut a, mut b) = (
            earlier.peekable(),
            later.entries.iter().copied().zip(later_bounds).peekable(),
        );
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.0.token == y.0.token => {
                    a.next();
                    b.next()
                }
                (Some(x), Some(y)) if x.0.token < y.0.token => a.next(),
                (Some(_), None) => a.next(),
                (_, Some(_)) => b.next(),
                (None, None) => break,
            };
            out.extend(next);
        }
        let (entries, bounds): (Vec<Entry>, Vec<Bounds>) = out.into_iter().unzip();
        self.entries = entries.into();
        self.ends = bounds.iter().map(|b| b.0).collect();
        self.prevs = bounds.iter().map(|b| b.1).collect();
        self.prev_versions = bounds.iter().map(|b| b.2).collect();
        if self.entries.len() == later.total as usize {
            (self.ends, self.prevs, self.prev_versions) = (Vec::new(), Vec::new(), Vec::new());
        }
        self.total = later.total;
        self.seeds_digest = later.seeds_digest;
        if !later.seeds.is_empty() || self.seeds_digest != self.seeds.digest() {
            self.seeds = later.seeds;
        }
    }

    /// Sorted strictly by token, inside the universe, no more entries than the sender has.
    fn check(&self) -> Result<(), String> {
        let universe = AddrRange::new(self.start, self.end);
        if self.start >= self.end {
            return Err(format!("empty universe {universe:?}"));
        }
        let bounded = if self.is_complete() {
            0
        } else {
            self.entries.len()
        };
        let versions = self.prev_versions.len();
        if self.ends.len() != bounded
            || self.prevs.len() != bounded
            || (versions != bounded && versions != 0)
        {
            return Err(format!(
                "{} entries but {} ends, {} previous tokens and {versions} of their versions",
                self.entries.len(),
                self.ends.len(),
                self.prevs.len()
            ));
        }
        let bounds = self.ends.iter().chain(&self.prevs);
        if let Some(e) = bounds.into_iter().find(|e| !universe.contains(**e)) {
            return Err(format!("range end {} outside range {universe}", ip(*e)));
        }
        if self.entries.len() > self.total as usize {
            return Err(format!(
                "{} entries of a ring of {}",
                self.entries.len(),
                self.total
            ));
        }
        if self.is_complete() {
            // A whole ring: checked as one (once per shared list).
            let (start, end) = (self.start, self.end);
            self.entries
                .checked(start, end, || check_entries(start, end, &self.entries))?;
        } else {
            for (i, e) in self.entries.iter().enumerate() {
                if !universe.contains(e.token) {
                    return Err(format!("token {} outside range {universe}", ip(e.token)));
                }
                if i > 0 && self.entries[i - 1].token >= e.token {
                    return Err(format!(
                        "tokens out of order or duplicated at {}",
                        ip(e.token)
                    ));
                }
            }
        }
        if !self.seeds.is_empty() && self.seeds.digest() != self.seeds_digest {
            return Err("seed list does not match its digest".into());
        }
        Ok(())
    }
}

/// What merging a delta did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeltaMerge {
    /// Merged; whether our ring changed.
    Merged(bool),
    /// Not applied: we have no ring and the delta is not a whole one, or our seeds are
    /// unknown. Only the sender's whole ring can help.
    NeedWholeRing,
}

impl Ring {
    /// The entries changed since the last call (none: `None`), and forgets them.
    pub fn take_delta(&mut self) -> Option<RingDelta> {
        if self.touched.is_empty() {
            return None;
        }
        let n = self.entries.len();
        let touched = std::mem::take(&mut self.touched);
        let delta = |entries: Entries, seeds: Seeds, ends, prevs, prev_versions| RingDelta {
            start: self.start,
            end: self.end,
            seeds_digest: self.seeds.digest(),
            seeds,
            total: n as u32,
            entries,
            ends,
            prevs,
            prev_versions,
        };
        if touched.all {
            // A complete delta is a whole ring: its bounds are its own tokens.
            let (entries, seeds) = (self.entries.clone(), self.seeds.clone());
            return Some(delta(entries, seeds, Vec::new(), Vec::new(), Vec::new()));
        }
        let mut tokens = touched.tokens;
        tokens.sort_unstable();
        tokens.dedup();
        let at: Vec<usize> = tokens
            .into_iter()
            .filter_map(|t| self.find(t).ok())
            .collect();
        if at.len() == n {
            let (entries, seeds) = (self.entries.clone(), self.seeds.clone());
            return Some(delta(entries, seeds, Vec::new(), Vec::new(), Vec::new()));
        }
        let entries: Vec<Entry> = at.iter().map(|&i| self.entries[i]).collect();
        let ends = at
            .iter()
            .map(|&i| self.entries[(i + 1) % n].token)
            .collect();
        let before = |i: usize| self.entries[(i + n - 1) % n];
        let prevs = at.iter().map(|&i| before(i).token).collect();
        let prev_versions = at.iter().map(|&i| before(i).version).collect();
        Some(delta(
            entries.into(),
            Seeds::default(),
            ends,
            prevs,
            prev_versions,
        ))
    }

    /// Marks our own entries changed: the next delta carries them all.
    pub fn touch_own(&mut self) {
        let me = self.me;
        let own = self
            .entries
            .iter()
            .filter(|e| e.peer == me)
            .map(|e| e.token);
        self.touched.extend(own);
    }

    /// Forgets what changed (it was sent whole, or is not ours to pass on).
    pub fn clear_touched(&mut self) {
        self.touched = Default::default();
    }

    /// Merges a peer's delta: for a receiver that already holds everything the sender had
    /// before this delta, the result and refusals are those of merging the sender's whole
    /// ring. Costs O(d log n) when no token is new to us, plus one O(n) copy when some are.
    /// On error ours is untouched.
    pub fn merge_delta(&mut self, d: &RingDelta) -> Result<DeltaMerge, MergeError> {
        if (d.start, d.end) != (self.start, self.end) {
            d.check().map_err(MergeError::Malformed)?;
            return Err(MergeError::RangeMismatch {
                received: AddrRange::new(d.start, d.end),
                ours: self.universe(),
            });
        }
        d.check().map_err(MergeError::Malformed)?;
        if d.is_complete() {
            return self.merge(&d.as_ring(self.me)).map(DeltaMerge::Merged);
        }
        let no_seeds = seeds_digest(&[]);
        let adopt_seeds = if self.seeds.is_empty() {
            // A digest cannot teach us the seeds.
            if d.seeds_digest != no_seeds && d.seeds.is_empty() {
                return Ok(DeltaMerge::NeedWholeRing);
            }
            !d.seeds.is_empty()
        } else {
            if d.seeds_digest != no_seeds && d.seeds_digest != self.seeds.digest() {
                return Err(MergeError::SeedMismatch {
                    received: d.seeds.to_vec(),
                    ours: self.seeds.to_vec(),
                });
            }
            false
        };
        if self.entries.is_empty() && !d.is_complete() {
            return Ok(DeltaMerge::NeedWholeRing);
        }
        let me = self.me;
        // Plan first (ours untouched): what replaces what, what is inserted where.
        let mut replace: Vec<(usize, Entry)> = Vec::new();
        let mut insert: Vec<(usize, Entry)> = Vec::new();
        let mut taken_ends: Vec<(u32, u32)> = Vec::new();
        let mut inserted_prevs: Vec<(u32, u32, u32)> = Vec::new();
        let mut last_taken: Option<u32> = None;
        let prev_versions = d.prev_versions.iter().copied().chain(std::iter::repeat(0));
        for (((t, &end), &prev), prev_version) in d
            .entries
            .iter()
            .zip(&d.ends)
            .zip(&d.prevs)
            .zip(prev_versions)
        {
            match self.find(t.token) {
                Ok(i) => {
                    if take_theirs(&self.entries[i], t, me)? {
                        replace.push((i, *t));
                        taken_ends.push((t.token, end));
                        last_taken = Some(t.token);
                    }
                }
                Err(pos) => {
                    // The entry before it in the merged ring: ours unless a taken entry
                    // of theirs comes later. A new token right after one of our own
                    // entries would cut into our range.
                    let before_is_mine = pos > 0 && {
                        let p = self.entries[pos - 1];
                        p.peer == me && last_taken.is_none_or(|b| b < p.token)
                    };
                    if before_is_mine && t.peer != me {
                        return Err(MergeError::EntryInMyRange {
                            peer: t.peer,
                            token: t.token,
                        });
                    }
                    insert.push((pos, *t));
                    taken_ends.push((t.token, end));
                    inserted_prevs.push((t.token, prev, prev_version));
                    last_taken = Some(t.token);
                }
            }
        }
        if replace.is_empty() && insert.is_empty() {
            if adopt_seeds {
                self.seeds = d.seeds.clone();
            }
            return Ok(DeltaMerge::Merged(adopt_seeds));
        }
        let old: Vec<(usize, Entry)> = replace.iter().map(|&(i, _)| (i, self.entries[i])).collect();
        for &(i, e) in &replace {
            self.entries[i] = e;
        }
        let before = (!insert.is_empty()).then(|| {
            let merged = with_inserted(&self.entries, &insert);
            std::mem::replace(&mut self.entries, merged.into())
        });
        let changed_tokens = || replace.iter().chain(&insert).map(|(_, e)| e.token);
        if !self.fits_around(&taken_ends, &inserted_prevs) {
            // We miss the token where a taken range ends, hold an older version of the entry
            // a new token was cut from, or a free count is larger than its entry: we missed
            // an earlier change of the sender, or the delta is bad.
            // The sender's whole ring settles which (and is refused if bad).
            if let Some(b) = before {
                self.entries = b;
            }
            for (i, e) in old {
                self.entries[i] = e;
            }
            return Ok(DeltaMerge::NeedWholeRing);
        }
        self.touched.extend(changed_tokens());
        if adopt_seeds {
            self.seeds = d.seeds.clone();
        }
        Ok(DeltaMerge::Merged(true))
    }

    /// Whether each taken entry (token, end in the sender's ring) ends no later here than
    /// there, each inserted one (token, previous token and its version there) starts no
    /// earlier and follows that entry at that version or later, and they and the entries
    /// before the inserted ones (whose ranges shrank) report no more free addresses than
    /// they hold: the rest did not change.
    fn fits_around(&self, taken: &[(u32, u32)], inserted: &[(u32, u32, u32)]) -> bool {
        let n = self.entries.len();
        let index = |t: u32| self.find(t).expect("merged token present");
        let extent = |from: u32, to: u32| {
            if to > from {
                to - from
            } else {
                (self.end - from) + (to - self.start)
            }
        };
        let fits = |i: usize| self.entries[i].free <= self.entry_size(i);
        taken.iter().all(|&(token, end)| {
            let i = index(token);
            fits(i) && self.entry_size(i) <= extent(token, end)
        }) && inserted.iter().all(|&(token, prev, prev_version)| {
            let before = (index(token) + n - 1) % n;
            let b = self.entries[before];
            fits(before)
                && extent(b.token, token) <= extent(prev, token)
                && (b.token != prev || b.version >= prev_version)
        })
    }
}

/// Where an entry of a delta ends, the token before it and that entry's version.
type Bounds = (u32, u32, u32);

/// The bounds of a partial delta's entries, taken out of it.
fn bounds_of(
    ends: &mut Vec<u32>,
    prevs: &mut Vec<u32>,
    versions: &mut Vec<u32>,
) -> impl Iterator<Item = Bounds> {
    let (ends, prevs, versions) = (
        std::mem::take(ends),
        std::mem::take(prevs),
        std::mem::take(versions),
    );
    ends.into_iter()
        .zip(prevs)
        .zip(versions)
        .map(|((e, p), v)| (e, p, v))
}

/// `entries` with `insert` (positions in `entries`, ascending, each new token) merged in.
fn with_inserted(entries: &[Entry], insert: &[(usize, Entry)]) -> Vec<Entry> {
    let mut out = Vec::with_capacity(entries.len() + insert.len());
    let mut from = 0;
    for &(pos, e) in insert {
        out.extend_from_slice(&entries[from..pos]);
        out.push(e);
        from = pos;
    }
    out.extend_from_slice(&entries[from..]);
    out
}
