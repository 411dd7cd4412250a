//! The ring: who owns which part of the address universe, as a CRDT of tokens.
//!
//! Each entry says "from `token` up to the next token, addresses belong to `peer`". Only the
//! owner of a range edits its entries (except `transfer`, the operator's rmpeer/reset), and
//! every edit bumps the entry's version, so merging by "higher version wins" converges.

use super::addr::AddrRange;
use super::shared::{Entries, Seeds};
use crate::peer::PeerName;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version bump applied by `transfer`, so it beats any update the old owner still had in flight.
pub const TRANSFER_VERSION_BUMP: u32 = 100;

/// One token of the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub token: u32,
    pub peer: PeerName,
    pub version: u32,
    /// Free addresses the owner last reported in this entry's range.
    pub free: u32,
}

/// The ring of one peer (`me`), over the universe `[start, end)`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ring {
    pub(super) start: u32,
    pub(super) end: u32,
    pub(super) me: PeerName,
    /// Shared with the rings and gossip it came from or went to, until written.
    pub(super) entries: Entries,
    /// The peers the ring was first split among; rings with different seeds never merge.
    pub(super) seeds: Seeds,
    /// Tokens whose entry changed since the last [`Ring::take_delta`]: what the next gossip
    /// carries. Local bookkeeping, never sent nor saved, not part of equality.
    #[serde(skip)]
    pub(super) touched: Touched,
    /// Our own tokens, for the entries list with this id (see [`Ring::own_tokens`]): asked
    /// for at every tick, while the list changes seldom.
    #[serde(skip)]
    own: (u64, Vec<u32>),
}

/// Tokens changed since the last delta: a list (cheap to add to; sorted when taken), or all.
#[derive(Clone, Debug, Default)]
pub(super) struct Touched {
    pub(super) all: bool,
    pub(super) tokens: Vec<u32>,
}

impl Touched {
    pub(super) fn insert(&mut self, token: u32) {
        if !self.all {
            self.tokens.push(token);
        }
    }

    pub(super) fn extend(&mut self, tokens: impl IntoIterator<Item = u32>) {
        if !self.all {
            self.tokens.extend(tokens);
        }
    }

    pub(super) fn set_all(&mut self) {
        *self = Touched {
            all: true,
            tokens: Vec::new(),
        };
    }

    pub(super) fn is_empty(&self) -> bool {
        !self.all && self.tokens.is_empty()
    }
}

impl PartialEq for Ring {
    fn eq(&self, other: &Ring) -> bool {
        (self.start, self.end, self.me) == (other.start, other.end, other.me)
            && self.entries == other.entries
            && self.seeds == other.seeds
    }
}

impl Eq for Ring {}

/// Why a ring operation by the local peer is not allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingError {
    AlreadyInitialised,
    NotOwned(AddrRange),
    BadRange(AddrRange),
    NoRing,
}

impl std::fmt::Display for RingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RingError::AlreadyInitialised => write!(f, "ring already initialised"),
            RingError::NotOwned(r) => write!(f, "range {r} is not wholly owned by us"),
            RingError::BadRange(r) => write!(f, "range {r} is empty or outside the universe"),
            RingError::NoRing => write!(f, "IP allocation ring not established yet"),
        }
    }
}

impl std::error::Error for RingError {}

impl Ring {
    pub fn new(universe: AddrRange, me: PeerName) -> Self {
        assert!(!universe.is_empty(), "empty IP allocation universe");
        Ring {
            start: universe.start,
            end: universe.end,
            me,
            entries: Entries::default(),
            seeds: Seeds::default(),
            touched: Touched::default(),
            own: (0, Vec::new()),
        }
    }

    pub fn universe(&self) -> AddrRange {
        AddrRange::new(self.start, self.end)
    }

    pub fn me(&self) -> PeerName {
        self.me
    }

    /// True until the ring was split (by consensus, seeding, or a merged gossip).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn seeds(&self) -> &[PeerName] {
        &self.seeds
    }

    /// The entries as shared with other rings and messages.
    pub fn shared_entries(&self) -> &Entries {
        &self.entries
    }

    pub fn shared_seeds(&self) -> &Seeds {
        &self.seeds
    }

    /// Same entries and seeds: O(1) when both share their lists, as rings that spread by
    /// gossip do.
    pub fn agrees_with(&self, other: &Ring) -> bool {
        self.entries == other.entries && self.seeds == other.seeds
    }

    /// Tokens of our own entries, ascending; worked out again only when the entries changed.
    pub(super) fn own_tokens(&mut self) -> &[u32] {
        if self.own.0 != self.entries.id() {
            self.own = (self.entries.id(), self.entries.tokens_of(self.me));
        }
        &self.own.1
    }

    pub(super) fn find(&self, token: u32) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&token, |e| e.token)
    }

    /// The address ranges entry `i` covers: one, or two when it wraps past the universe's end.
    pub fn entry_ranges(&self, i: usize) -> Vec<AddrRange> {
        let token = self.entries[i].token;
        match self.entries.get(i + 1) {
            Some(next) => vec![AddrRange::new(token, next.token)],
            None => {
                let first = self.entries[0].token;
                let mut out = vec![AddrRange::new(token, self.end)];
                if first > self.start {
                    out.push(AddrRange::new(self.start, first));
                }
                out
            }
        }
    }

    pub(super) fn entry_size(&self, i: usize) -> u32 {
        let token = self.entries[i].token;
        match self.entries.get(i + 1) {
            Some(next) => next.token - token,
            None => (self.end - token) + (self.entries[0].token - self.start),
        }
    }

    /// Index of the entry whose range holds `addr`.
    fn index_owning(&self, addr: u32) -> Option<usize> {
        if self.entries.is_empty() || !self.universe().contains(addr) {
            return None;
        }
        Some(match self.find(addr) {
            Ok(i) => i,
            Err(0) => self.entries.len() - 1,
            Err(i) => i - 1,
        })
    }

    pub fn owner(&self, addr: u32) -> Option<PeerName> {
        self.index_owning(addr).map(|i| self.entries[i].peer)
    }

    /// Initial split among `peers` (sorted and de-duplicated here) by recursive bisection: the
    /// lower half of a range goes to the first half of the list, so each peer gets one chunk
    /// of about universe/N addresses, CIDR-aligned when N is a power of two.
    pub fn claim_for_peers(&mut self, peers: &[PeerName]) -> Result<(), RingError> {
        if !self.entries.is_empty() {
            return Err(RingError::AlreadyInitialised);
        }
        let mut peers = peers.to_vec();
        peers.sort();
        peers.dedup();
        fn split(out: &mut Vec<Entry>, start: u32, end: u32, peers: &[PeerName]) {
            let size = end - start;
            if size == 0 || peers.is_empty() {
                return;
            }
            if peers.len() == 1 || size == 1 {
                out.push(Entry {
                    token: start,
                    peer: peers[0],
                    version: 0,
                    free: size,
                });
                return;
            }
            let mid = start + size / 2;
            let half = peers.len() / 2;
            split(out, start, mid, &peers[..half]);
            split(out, mid, end, &peers[half..]);
        }
        let mut entries = Vec::new();
        split(&mut entries, self.start, self.end, &peers);
        self.entries = entries.into();
        self.touched.set_all();
        self.seeds = Seeds::new(peers);
        Ok(())
    }

    /// Ranges owned by `peer`, sorted, adjacent ones joined, never wrapping.
    pub fn owned_ranges(&self, peer: PeerName) -> Vec<AddrRange> {
        self.ranges_of(&self.entries.tokens_of(peer))
    }

    /// [`Ring::owned_ranges`] of our own: what our space follows after every ring change.
    pub fn own_ranges(&mut self) -> Vec<AddrRange> {
        let tokens = self.own_tokens().to_vec();
        self.ranges_of(&tokens)
    }

    /// The ranges of the entries at `tokens`, sorted, adjacent ones joined, never wrapping.
    fn ranges_of(&self, tokens: &[u32]) -> Vec<AddrRange> {
        let mut pieces: Vec<AddrRange> = tokens
            .iter()
            .filter_map(|t| self.find(*t).ok())
            .flat_map(|i| self.entry_ranges(i))
            .filter(|r| !r.is_empty())
            .collect();
        pieces.sort();
        let mut out: Vec<AddrRange> = Vec::new();
        for r in pieces {
            match out.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => out.push(r),
            }
        }
        out
    }

    /// Tokens of our own entries with the ranges each covers (for free-space reports).
    pub fn own_entry_ranges(&mut self) -> Vec<(u32, Vec<AddrRange>)> {
        let tokens = self.own_tokens().to_vec();
        tokens
            .into_iter()
            .filter_map(|t| self.find(t).ok())
            .map(|i| (self.entries[i].token, self.entry_ranges(i)))
            .collect()
    }

    /// Hands `range`, which must be wholly ours, to `peer`: up to two tokens are inserted
    /// (at its start for `peer`, after its end for us) and tokens inside it change owner.
    pub fn grant_range_to(&mut self, peer: PeerName, range: AddrRange) -> Result<(), RingError> {
        if range.is_empty() || range.intersect(self.universe()) != range {
            return Err(RingError::BadRange(range));
        }
        if self.owner(range.start) != Some(self.me)
            || self
                .entries
                .iter()
                .any(|e| range.contains(e.token) && e.peer != self.me)
        {
            return Err(RingError::NotOwned(range));
        }
        // Keep what follows the grant ours: a token where our range resumes, if none is there.
        let after = if range.end == self.end {
            self.start
        } else {
            range.end
        };
        if let Err(pos) = self.find(after) {
            let continues_ours = self.owner(after) == Some(self.me);
            if continues_ours {
                self.entries.insert(
                    pos,
                    Entry {
                        token: after,
                        peer: self.me,
                        version: 0,
                        free: 0,
                    },
                );
                self.touched.insert(after);
            }
        }
        let start_is_new = match self.find(range.start) {
            Ok(_) => false,
            Err(pos) => {
                self.entries.insert(
                    pos,
                    Entry {
                        token: range.start,
                        peer: self.me,
                        version: 0,
                        free: 0,
                    },
                );
                true
            }
        };
        for i in 0..self.entries.len() {
            let size = self.entry_size(i);
            let e = &mut self.entries[i];
            if range.contains(e.token) {
                e.peer = peer;
                if !(start_is_new && e.token == range.start) {
                    e.version += 1;
                }
                e.free = size;
            } else if e.free > size {
                // Our entry just shrank: its old free count cannot stand.
                e.free = size;
                e.version += 1;
            } else {
                continue;
            }
            self.touched.insert(e.token);
        }
        Ok(())
    }

    /// Gives every entry of `from` to `to`, bumping versions by 100 so the change wins
    /// everywhere (rmpeer of a dead peer, or reset handing our ranges to an heir).
    /// Returns the ranges that moved.
    pub fn transfer(&mut self, from: PeerName, to: PeerName) -> Vec<AddrRange> {
        let moved = self.owned_ranges(from);
        if from == to {
            return moved;
        }
        for e in self.entries.iter_mut().filter(|e| e.peer == from) {
            e.peer = to;
            e.version += TRANSFER_VERSION_BUMP;
            self.touched.insert(e.token);
        }
        moved
    }

    /// Reset: all our ranges go to `heir`.
    pub fn transfer_all_to(&mut self, heir: PeerName) -> Vec<AddrRange> {
        self.transfer(self.me, heir)
    }

    /// Records our own free counts (token → free); a changed count bumps that entry's version.
    /// Tokens not ours are ignored: only the owner edits its entries. Returns whether anything
    /// changed.
    pub fn report_free(&mut self, counts: &BTreeMap<u32, u32>) -> bool {
        let mut changed = false;
        for (&token, &free) in counts {
            let Ok(i) = self.find(token) else { continue };
            let e = self.entries[i];
            if e.peer == self.me && e.free != free {
                let e = &mut self.entries[i];
                e.free = free;
                e.version += 1;
                self.touched.insert(token);
                changed = true;
            }
        }
        changed
    }

    /// Other peers that reported free space in entries overlapping `range`, best donor first:
    /// each peer's weight is its reported free count times a random number.
    pub fn choose_peers_to_ask_for_space<R: Rng>(
        &self,
        range: AddrRange,
        rng: &mut R,
    ) -> Vec<PeerName> {
        let mut free: BTreeMap<PeerName, u64> = BTreeMap::new();
        for (i, e) in self.entries.iter().enumerate() {
            if e.peer == self.me || e.free == 0 {
                continue;
            }
            if self.entry_ranges(i).iter().any(|r| r.overlaps(range)) {
                *free.entry(e.peer).or_default() += u64::from(e.free);
            }
        }
        let mut weighted: Vec<(f64, PeerName)> = free
            .into_iter()
            .map(|(p, f)| (f as f64 * rng.random::<f64>(), p))
            .collect();
        weighted.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        weighted.into_iter().map(|(_, p)| p).collect()
    }

    /// Every peer that owns at least one entry.
    pub fn peers(&self) -> Vec<PeerName> {
        let mut peers: Vec<PeerName> = self.entries.iter().map(|e| e.peer).collect();
        peers.sort();
        peers.dedup();
        peers
    }

    /// Structural invariants: sorted strictly by token, tokens inside the universe, free
    /// counts no larger than the entry. Walked once per entries list (shared lists are
    /// checked once for all their holders).
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.start >= self.end {
            return Err(format!("empty universe {:?}", self.universe()));
        }
        let (start, end) = (self.start, self.end);
        self.entries
            .checked(start, end, || check_entries(start, end, &self.entries))
    }
}

/// [`Ring::check_invariants`]'s walk of `entries` for the universe `[start, end)`.
pub(super) fn check_entries(start: u32, end: u32, entries: &[Entry]) -> Result<(), String> {
    let universe = AddrRange::new(start, end);
    for (i, e) in entries.iter().enumerate() {
        if !universe.contains(e.token) {
            return Err(format!(
                "token {} outside range {}",
                super::addr::ip(e.token),
                universe
            ));
        }
        if i > 0 && entries[i - 1].token >= e.token {
            return Err(format!(
                "tokens out of order or duplicated at {}",
                super::addr::ip(e.token)
            ));
        }
    }
    for (i, e) in entries.iter().enumerate() {
        let size = match entries.get(i + 1) {
            Some(next) => next.token - e.token,
            None => (end - e.token) + (entries[0].token - start),
        };
        if e.free > size {
            return Err(format!(
                "entry {} of {} reports {} free in {} addresses",
                super::addr::ip(e.token),
                e.peer,
                e.free,
                size
            ));
        }
    }
    Ok(())
}
