//! One peer's multi-host allocator as a pure state machine: calls in, `Output`s out.
//!
//! Time is the number of `tick` calls (the router ticks every few seconds); randomness (the
//! choice of donor) comes from a generator seeded by our name and a counter, so a run is
//! reproducible.

use super::addr::AddrRange;
use super::entries::Ring;
use super::merge::MergeError;
use super::messages::{AllocError, Gossip, InitMode, Output, Unicast};
use super::paxos::{Paxos, ProposalId};
use super::space::Space;
use crate::ipam::tracked::Tracked;
use crate::peer::PeerName;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet};

/// A space request without answer for this many ticks is abandoned for the next donor.
pub const REQUEST_TIMEOUT_TICKS: u64 = 3;
/// The whole state goes out again this many ticks after it last did (anti-entropy; see
/// [`Allocator::anti_entropy`]); in between, only what changed. Gossip used to carry the
/// whole ring or election state every tick, which made each round cost peers x state size.
pub const FULL_GOSSIP_TICKS: u64 = 10;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Pending {
    pub(super) id: String,
    pub(super) within: AddrRange,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OutstandingRequest {
    donor: PeerName,
    within: AddrRange,
    sent_at: u64,
}

/// What a batch may change in an [`Allocator`] besides its tracked maps.
#[derive(Debug)]
pub struct Checkpoint {
    ring: Ring,
    space_owned: Vec<AddrRange>,
    paxos: Paxos,
    pending: Vec<Pending>,
    request: Option<OutstandingRequest>,
    tried: BTreeSet<(PeerName, AddrRange)>,
    reachable: Option<BTreeSet<PeerName>>,
    wants_ring: bool,
    now: u64,
    last_paxos_progress: (ProposalId, u64),
    rng_draws: u64,
    ring_dirty: bool,
    paxos_dirty: bool,
    full_gossip_due: bool,
    whole_ring_sent_at: u64,
    claims_gossiped_at: u64,
    ring_asked_at: Option<u64>,
    outputs: Vec<Output>,
}

#[derive(Clone, Debug)]
pub struct Allocator {
    pub(super) me: PeerName,
    pub(super) mode: InitMode,
    pub(super) ring: Ring,
    pub(super) space: Space,
    pub(super) paxos: Paxos,
    /// Container id → its addresses, in allocation order.
    pub(super) owned: Tracked<String, Vec<u32>>,
    pub(super) pending: Vec<Pending>,
    request: Option<OutstandingRequest>,
    /// (Donor, range) pairs that were denied or unanswered during the current search.
    tried: BTreeSet<(PeerName, AddrRange)>,
    /// Peers the mesh can reach, when known: a gone peer (whose ranges stay in the ring until
    /// `rmpeer`) is never asked for space, as its silence would stall allocation until the
    /// request times out. `None`: ask anyone (no mesh view).
    pub(super) reachable: Option<BTreeSet<PeerName>>,
    /// Someone asked for the ring (allocate or prime): keep electing until it exists.
    pub(super) wants_ring: bool,
    pub(super) now: u64,
    pub(super) last_paxos_progress: (ProposalId, u64),
    rng_draws: u64,
    pub(super) ring_dirty: bool,
    pub(super) paxos_dirty: bool,
    /// Pass on ring changes learnt from others (see [`Allocator::relay_merged`]).
    pub(super) relay: bool,
    /// The next flush sends the whole ring, not a delta (anti-entropy when relaying).
    pub(super) full_gossip_due: bool,
    /// The tick our whole ring last went out (anti-entropy, or a delta that was all of it,
    /// as after adopting a ring): the next anti-entropy is due a period after it.
    pub(super) whole_ring_sent_at: u64,
    /// The tick the election's gossip last carried every claim it carries (its
    /// anti-entropy, or a delta that held them all): the next is due a period after it.
    pub(super) claims_gossiped_at: u64,
    /// When we last asked a peer for its whole ring (a delta did not fit ours).
    pub(super) ring_asked_at: Option<u64>,
    pub(super) outputs: Vec<Output>,
}

impl Allocator {
    /// A fresh allocator. In seed mode the ring is split among the seeds straight away.
    pub fn new(me: PeerName, universe: AddrRange, mode: InitMode) -> Self {
        let paxos = match mode {
            InitMode::Consensus { quorum } => Paxos::elector(me, quorum),
            _ => Paxos::observer(me),
        };
        let mut alloc = Allocator {
            me,
            ring: Ring::new(universe, me),
            space: Space::new(),
            paxos,
            owned: Tracked::default(),
            pending: Vec::new(),
            request: None,
            tried: BTreeSet::new(),
            reachable: None,
            wants_ring: false,
            now: 0,
            last_paxos_progress: (ProposalId::default(), 0),
            rng_draws: 0,
            ring_dirty: false,
            paxos_dirty: false,
            relay: false,
            full_gossip_due: false,
            whole_ring_sent_at: 0,
            claims_gossiped_at: 0,
            ring_asked_at: None,
            outputs: Vec::new(),
            mode,
        };
        if let InitMode::Seed(seeds) = &alloc.mode {
            let seeds = seeds.clone();
            alloc.create_ring(&seeds);
            alloc.ring_dirty = false;
            alloc.ring.clear_touched();
        }
        alloc
    }

    /// Whether ring changes merged from others are gossiped on at once. Needed when gossip
    /// goes to a few random peers (the simulation); the mesh floods every broadcast to all
    /// peers, so the router leaves it off and relies on that plus the periodic full state.
    pub fn relay_merged(&mut self, on: bool) {
        self.relay = on;
    }

    pub fn me(&self) -> PeerName {
        self.me
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    pub fn space(&self) -> &Space {
        &self.space
    }

    pub fn paxos(&self) -> &Paxos {
        &self.paxos
    }

    pub fn universe(&self) -> AddrRange {
        self.ring.universe()
    }

    pub fn has_ring(&self) -> bool {
        !self.ring.is_empty()
    }

    /// Container id → addresses it holds.
    pub fn allocations(&self) -> &BTreeMap<String, Vec<u32>> {
        self.owned.as_map()
    }

    /// The ids whose addresses changed since the last [`Allocator::checkpoint`].
    pub fn changed_ids(&self) -> impl Iterator<Item = &String> {
        self.owned.differing()
    }

    /// Starts a batch: what it changes can be taken back with [`Allocator::rollback`].
    /// Costs what the ring and the waiting requests hold, not the allocations.
    pub fn checkpoint(&mut self) -> Checkpoint {
        self.owned.settle();
        Checkpoint {
            ring: self.ring.clone(),
            space_owned: self.space.checkpoint(),
            paxos: self.paxos.clone(),
            pending: self.pending.clone(),
            request: self.request,
            tried: self.tried.clone(),
            reachable: self.reachable.clone(),
            wants_ring: self.wants_ring,
            now: self.now,
            last_paxos_progress: self.last_paxos_progress,
            rng_draws: self.rng_draws,
            ring_dirty: self.ring_dirty,
            paxos_dirty: self.paxos_dirty,
            full_gossip_due: self.full_gossip_due,
            whole_ring_sent_at: self.whole_ring_sent_at,
            claims_gossiped_at: self.claims_gossiped_at,
            ring_asked_at: self.ring_asked_at,
            outputs: self.outputs.clone(),
        }
    }

    /// Takes the batch since `cp` back.
    pub fn rollback(&mut self, cp: Checkpoint) {
        self.owned.rollback();
        self.space.rollback(cp.space_owned);
        self.ring = cp.ring;
        self.paxos = cp.paxos;
        self.pending = cp.pending;
        self.request = cp.request;
        self.tried = cp.tried;
        self.reachable = cp.reachable;
        self.wants_ring = cp.wants_ring;
        self.now = cp.now;
        self.last_paxos_progress = cp.last_paxos_progress;
        self.rng_draws = cp.rng_draws;
        self.ring_dirty = cp.ring_dirty;
        self.paxos_dirty = cp.paxos_dirty;
        self.full_gossip_due = cp.full_gossip_due;
        self.whole_ring_sent_at = cp.whole_ring_sent_at;
        self.claims_gossiped_at = cp.claims_gossiped_at;
        self.ring_asked_at = cp.ring_asked_at;
        self.outputs = cp.outputs;
    }

    /// Ids waiting for an address, with the range they wait on.
    pub fn pending(&self) -> Vec<(String, AddrRange)> {
        self.pending
            .iter()
            .map(|p| (p.id.clone(), p.within))
            .collect()
    }

    /// Messages to send and completed operations since the last call.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    /// Allocates an address for `id` inside `within` (a subnet's host range). `Ok(Some)` now,
    /// or `Ok(None)`: pending, completed later by an `Output::Allocated`. Idempotent: an
    /// address `id` already holds in `within` is returned again.
    pub fn allocate(&mut self, id: &str, within: AddrRange) -> Result<Option<u32>, AllocError> {
        let universe = self.universe();
        if !within.overlaps(universe) {
            return Err(AllocError::OutOfBounds {
                range: within,
                universe,
            });
        }
        let within = within.intersect(universe);
        if let Some(addr) = self
            .owned
            .get(id)
            .and_then(|addrs| addrs.iter().find(|a| within.contains(**a)))
        {
            return Ok(Some(*addr));
        }
        if !self
            .pending
            .iter()
            .any(|p| p.id == id && p.within == within)
        {
            self.pending.push(Pending {
                id: id.to_string(),
                within,
            });
        }
        self.wants_ring = true;
        if self.ring.is_empty() {
            self.establish_ring();
        } else {
            self.serve_pending();
            self.report_free();
        }
        self.flush();
        let done = self
            .outputs
            .iter()
            .rposition(|o| matches!(o, Output::Allocated { id: done, .. } if done == id));
        Ok(done.map(|i| match self.outputs.remove(i) {
            Output::Allocated { addr, .. } => addr,
            _ => unreachable!(),
        }))
    }

    /// Starts the election if there is no ring yet (`GET /ring`, `weave prime`).
    pub fn prime(&mut self) {
        self.wants_ring = true;
        self.establish_ring();
        self.flush();
    }

    /// Drops a pending allocation (the client went away). Returns whether one was pending.
    pub fn cancel(&mut self, id: &str) -> bool {
        let before = self.pending.len();
        self.pending.retain(|p| p.id != id);
        before != self.pending.len()
    }

    /// Frees one address of `id`.
    pub fn free(&mut self, id: &str, addr: u32) -> Result<(), AllocError> {
        let addrs = self.owned.get_mut(id).filter(|a| a.contains(&addr));
        let addrs = addrs.ok_or_else(|| AllocError::NotFound {
            addr,
            id: id.to_string(),
        })?;
        addrs.retain(|a| *a != addr);
        if addrs.is_empty() {
            self.owned.remove(id);
        }
        let _ = self.space.free(addr);
        self.report_free();
        self.flush();
        Ok(())
    }

    /// Frees every address of `id`, returning them.
    pub fn delete(&mut self, id: &str) -> Result<Vec<u32>, AllocError> {
        let addrs = self
            .owned
            .remove(id)
            .ok_or_else(|| AllocError::NoAddresses { id: id.to_string() })?;
        for a in &addrs {
            let _ = self.space.free(*a);
        }
        self.report_free();
        self.flush();
        Ok(addrs)
    }

    /// A gossip message from `from`. An error means the peers cannot share a ring (Weave
    /// drops the connection); our state is unchanged then.
    pub fn on_gossip(&mut self, from: PeerName, msg: &Gossip) -> Result<(), MergeError> {
        let result = match msg {
            Gossip::Ring(ring) => self.merge_ring(ring),
            Gossip::RingDelta(delta) => self.merge_ring_delta(from, delta),
            Gossip::Paxos(state) => {
                self.on_election_gossip(from, state);
                Ok(())
            }
        };
        self.flush();
        result
    }

    /// A unicast message from `from`.
    pub fn on_unicast(&mut self, from: PeerName, msg: &Unicast) -> Result<(), MergeError> {
        let answered = self.request.is_some_and(|r| r.donor == from);
        let result = match msg {
            Unicast::SpaceRequest(range) => {
                self.donate_to(from, *range);
                Ok(())
            }
            Unicast::Ring(ring) => {
                if answered {
                    self.request = None;
                    self.tried.clear();
                }
                self.merge_ring(ring)
            }
            Unicast::Paxos(claims) => {
                self.on_election_claims(from, claims);
                Ok(())
            }
            Unicast::RingRequest => {
                if self.has_ring() {
                    self.send(from, Unicast::RingReply(self.ring.clone()));
                }
                Ok(())
            }
            Unicast::RingReply(ring) => self.merge_ring(ring),
            Unicast::SpaceDenied(ring) => {
                if let Some(r) = self.request.filter(|_| answered) {
                    self.request = None;
                    self.tried.insert((from, r.within));
                }
                let merged = self.merge_ring(ring);
                self.serve_pending();
                merged
            }
        };
        self.report_free();
        self.flush();
        result
    }

    /// The peers the mesh reaches now. An outstanding space request to a peer that left is
    /// given up at once and the next donor asked.
    /// An owner of ranges coming back (a healed partition, a restart) missed our deltas
    /// meanwhile: our own entries go out again, to everyone (a new peer does not count).
    /// While there is no ring, a peer newly reached missed what the election said so far:
    /// see [`Allocator::greet_new_peers`].
    pub fn set_reachable(&mut self, peers: BTreeSet<PeerName>) {
        if let Some(r) = self.request.filter(|r| !peers.contains(&r.donor)) {
            self.tried.insert((r.donor, r.within));
            self.request = None;
        }
        let newly_reached = peers
            .iter()
            .any(|p| *p != self.me && self.reachable.as_ref().is_none_or(|old| !old.contains(p)));
        let back = |old: &BTreeSet<PeerName>| {
            let owners = self.ring.peers();
            peers
                .iter()
                .any(|p| *p != self.me && !old.contains(p) && owners.binary_search(p).is_ok())
        };
        if self.reachable.as_ref().is_some_and(back) {
            self.ring.touch_own();
            self.ring_dirty = true;
        }
        self.reachable = Some(peers);
        if self.has_ring() {
            self.serve_pending();
        } else if newly_reached {
            self.greet_new_peers();
        }
        self.flush();
    }

    /// [`set_reachable`](Self::set_reachable) from what changed: `added` peers became
    /// reachable, `removed` ones did not stay (cost proportional to them, not to all peers).
    pub fn reachable_changed(&mut self, added: &[PeerName], removed: &[PeerName]) {
        let Some(reachable) = &mut self.reachable else {
            return self.set_reachable(added.iter().copied().collect());
        };
        for p in removed {
            reachable.remove(p);
        }
        let new: Vec<PeerName> = added
            .iter()
            .filter(|p| reachable.insert(**p) && **p != self.me)
            .copied()
            .collect();
        if let Some(r) = self.request.filter(|r| !reachable.contains(&r.donor)) {
            self.tried.insert((r.donor, r.within));
            self.request = None;
        }
        if !new.is_empty() {
            let owners = self.ring.peers();
            if new.iter().any(|p| owners.binary_search(p).is_ok()) {
                self.ring.touch_own();
                self.ring_dirty = true;
            }
        }
        if self.has_ring() {
            self.serve_pending();
        } else if !new.is_empty() {
            self.greet_new_peers();
        }
        self.flush();
    }

    /// Periodic work: gossip our state, keep the election going, give up on silent donors.
    pub fn tick(&mut self) {
        self.now += 1;
        if self.ring.is_empty() {
            self.election_tick();
        } else {
            if self.now - self.whole_ring_sent_at >= FULL_GOSSIP_TICKS {
                self.anti_entropy();
            }
            if let Some(r) = self.request {
                if self.now - r.sent_at >= REQUEST_TIMEOUT_TICKS {
                    self.tried.insert((r.donor, r.within));
                    self.request = None;
                }
            }
            self.serve_pending();
            self.report_free();
        }
        self.flush();
    }

    /// `weave rmpeer`: takes over every range of `dead` (which must really be gone, and this
    /// must run on one peer only). Returns how many addresses we took over.
    pub fn rmpeer(&mut self, dead: PeerName) -> Result<u32, AllocError> {
        if dead == self.me {
            return Err(AllocError::CannotRemoveSelf);
        }
        let moved = self.ring.transfer(dead, self.me);
        if self.request.is_some_and(|r| r.donor == dead) {
            self.request = None;
        }
        if !moved.is_empty() {
            self.ring_dirty = true;
            self.after_ring_change();
        }
        self.flush();
        Ok(moved.iter().map(|r| r.size()).sum())
    }

    /// `weave reset` (`DELETE /peer`): cancel pending work and give all our ranges to an
    /// heir: a live peer owning entries, else a live peer, else a gone peer owning entries.
    /// Returns the heir, or `None` if there is nobody to give to.
    pub fn shutdown(&mut self, live_peers: &[PeerName]) -> Option<PeerName> {
        for p in std::mem::take(&mut self.pending) {
            self.outputs.push(Output::Cancelled { id: p.id });
        }
        self.request = None;
        let owners: BTreeSet<PeerName> = self
            .ring
            .peers()
            .into_iter()
            .filter(|p| *p != self.me)
            .collect();
        let live: BTreeSet<PeerName> = live_peers
            .iter()
            .copied()
            .filter(|p| *p != self.me)
            .collect();
        let heir = live
            .intersection(&owners)
            .next()
            .or_else(|| live.iter().next())
            .or_else(|| owners.iter().next())
            .copied();
        if let Some(heir) = heir {
            if !self.ring.transfer_all_to(heir).is_empty() {
                self.ring_dirty = true;
            }
            self.owned.clear();
            self.space.set_owned(Vec::new());
        }
        self.flush();
        heir
    }

    pub(super) fn rng(&mut self) -> StdRng {
        self.rng_draws += 1;
        StdRng::seed_from_u64(self.me.as_u64().wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.rng_draws)
    }

    pub(super) fn send(&mut self, to: PeerName, msg: Unicast) {
        self.outputs.push(Output::Send { to, msg });
    }

    /// Our space follows the ring; then waiting allocations may go ahead.
    pub(super) fn after_ring_change(&mut self) {
        let dropped = self.space.set_owned(self.ring.own_ranges());
        if !dropped.is_empty() {
            self.owned.update_all(|_, addrs| {
                addrs.retain(|a| !dropped.contains(a));
                !addrs.is_empty()
            });
        }
        self.serve_pending();
        self.report_free();
    }

    /// Completes what our space allows, then asks one donor for more if anything waits.
    fn serve_pending(&mut self) {
        let mut i = 0;
        while i < self.pending.len() {
            match self.space.allocate(self.pending[i].within) {
                Some(addr) => {
                    let p = self.pending.remove(i);
                    self.owned.entry_or_default(p.id.clone()).push(addr);
                    self.outputs.push(Output::Allocated { id: p.id, addr });
                }
                None => i += 1,
            }
        }
        if self.pending.is_empty() {
            self.tried.clear();
            return;
        }
        if self.request.is_some() || self.ring.is_empty() {
            return;
        }
        // The first waiting range some untried peer reports free space in: a full subnet
        // must not hold up requests for others.
        let ranges: Vec<AddrRange> = self.pending.iter().map(|p| p.within).collect();
        let mut rng = self.rng();
        for within in ranges {
            let donors = self.ring.choose_peers_to_ask_for_space(within, &mut rng);
            if let Some(donor) = donors.into_iter().find(|d| {
                !self.tried.contains(&(*d, within))
                    && self.reachable.as_ref().is_none_or(|r| r.contains(d))
            }) {
                self.request = Some(OutstandingRequest {
                    donor,
                    within,
                    sent_at: self.now,
                });
                self.send(donor, Unicast::SpaceRequest(within));
                return;
            }
        }
        // Everyone was asked: start over at the next tick.
        self.tried.clear();
    }

    fn donate_to(&mut self, peer: PeerName, within: AddrRange) {
        let gift = if self.has_ring() && peer != self.me {
            self.space.donate(within)
        } else {
            None
        };
        let Some(gift) = gift else {
            self.send(peer, Unicast::SpaceDenied(self.ring.clone()));
            return;
        };
        if self.ring.grant_range_to(peer, gift).is_err() {
            // Space and ring disagreed: trust the ring and give nothing.
            self.space.set_owned(self.ring.owned_ranges(self.me));
            self.send(peer, Unicast::SpaceDenied(self.ring.clone()));
            return;
        }
        self.ring_dirty = true;
        self.report_free();
        self.send(peer, Unicast::Ring(self.ring.clone()));
    }

    /// Publishes changed free counts of our entries (bumping their versions).
    pub(super) fn report_free(&mut self) {
        let counts: BTreeMap<u32, u32> = self
            .ring
            .own_entry_ranges()
            .into_iter()
            .map(|(token, ranges)| {
                (
                    token,
                    ranges.iter().map(|r| self.space.free_count_in(*r)).sum(),
                )
            })
            .collect();
        if self.ring.report_free(&counts) {
            self.ring_dirty = true;
        }
    }
}
