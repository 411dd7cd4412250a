//! The allocator's part in electing the first ring (Weave's Paxos): proposing, merging the
//! claims that arrive, and creating the ring once a quorum agreed. Only a proposer counts a
//! quorum; acceptors send their claims to it ([`Unicast::Paxos`]).

use super::allocator::{Allocator, FULL_GOSSIP_TICKS};
use super::messages::{Gossip, Output, Unicast};
use super::paxos::PaxosState;
use crate::peer::PeerName;

impl Allocator {
    /// Election gossip from `from`: an observer asking for a ring (empty), or a proposer's
    /// claims.
    pub(super) fn on_election_gossip(&mut self, from: PeerName, state: &PaxosState) {
        if self.has_ring() {
            // They are still electing: tell them how it ended.
            self.send(from, Unicast::Ring(self.ring.clone()));
        } else if !self.paxos.is_observer() {
            if state.is_empty() {
                // An observer wants a ring: elect one.
                self.wants_ring = true;
                if !self.paxos.has_proposed() {
                    self.paxos.propose();
                    self.paxos_dirty = true;
                }
            }
            if self.paxos.merge(state) {
                self.paxos_dirty = true;
            }
            self.after_paxos_step();
        }
    }

    /// An acceptor's claims, sent to us as its proposer.
    pub(super) fn on_election_claims(&mut self, from: PeerName, claims: &PaxosState) {
        if self.has_ring() {
            // The election is over: tell them how it ended.
            self.send(from, Unicast::Ring(self.ring.clone()));
        } else if !self.paxos.is_observer() {
            if self.paxos.merge(claims) {
                self.paxos_dirty = true;
            }
            self.after_paxos_step();
        }
    }

    /// A tick without a ring: observers ask again, participants re-propose when stalled.
    pub(super) fn election_tick(&mut self) {
        if self.paxos.is_observer() {
            self.ask_for_ring_if_wanted();
        } else {
            if self.wants_ring && self.paxos_stalled() {
                self.paxos.propose();
                self.after_paxos_step();
            }
            if self.now - self.claims_gossiped_at >= FULL_GOSSIP_TICKS {
                self.paxos.mark_all_changed();
                self.claims_gossiped_at = self.now;
            }
            // Our own claims go to our proposer again at every multiple of the period.
            // Counting it from when they last went, as the gossip does, made 5,000 simulated
            // electors take 28 rounds instead of 21.
            if self.now.is_multiple_of(FULL_GOSSIP_TICKS) {
                self.paxos.resend_own();
            }
            self.paxos_dirty = true;
        }
    }

    /// A peer newly reached while there is no ring missed what we said so far, most likely
    /// all of it (a proposal made as the mesh formed goes nowhere): an observer that wants
    /// a ring asks again, an elector gossips its claims again and sends its own to its
    /// proposer, now rather than at the next period. With a daemon's 1 s ticks a proposal
    /// lost that way waited up to 10 s, past a CNI ADD's deadline.
    pub(super) fn greet_new_peers(&mut self) {
        if self.paxos.is_observer() {
            self.ask_for_ring_if_wanted();
        } else {
            self.paxos.mark_all_changed();
            self.paxos.resend_own();
            self.paxos_dirty = true;
        }
    }

    /// An observer's ask for the ring, when it wants one: an empty election state, which
    /// whoever holds a ring answers with it.
    fn ask_for_ring_if_wanted(&mut self) {
        if self.wants_ring {
            self.outputs
                .push(Output::Broadcast(Gossip::Paxos(Default::default())));
        }
    }

    pub(super) fn establish_ring(&mut self) {
        if self.has_ring() {
            return;
        }
        if self.paxos.is_observer() {
            self.ask_for_ring_if_wanted();
        } else if !self.paxos.has_proposed() {
            self.paxos.propose();
            self.paxos_dirty = true;
            self.after_paxos_step();
        }
    }

    /// Re-proposes after a pause that differs per peer, so duelling proposers stop duelling.
    pub(super) fn paxos_stalled(&self) -> bool {
        if !self.paxos.has_proposed() {
            return true;
        }
        let backoff = 4 + self.me.as_u64() % 5;
        self.now - self.last_paxos_progress.1 >= backoff
    }

    pub(super) fn after_paxos_step(&mut self) {
        let highest = self.paxos.highest_promise();
        if highest != self.last_paxos_progress.0 || self.paxos_dirty {
            self.last_paxos_progress = (highest, self.now);
        }
        if let Some(peers) = self.paxos.consensus() {
            self.create_ring(&peers);
        }
    }

    pub(super) fn create_ring(&mut self, peers: &[PeerName]) {
        if self.ring.claim_for_peers(peers).is_ok() {
            self.ring_dirty = true;
            self.after_ring_change();
        }
    }
}
