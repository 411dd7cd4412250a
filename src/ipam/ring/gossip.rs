//! The allocator's ring gossip: what changed goes out as a delta at each flush, the whole
//! ring now and then (anti-entropy) and when a peer asks for it because a delta did not fit.

use super::allocator::{Allocator, REQUEST_TIMEOUT_TICKS};
use super::delta::{DeltaMerge, RingDelta};
use super::entries::Ring;
use super::merge::MergeError;
use super::messages::{Gossip, Output, Unicast};
use crate::peer::PeerName;
use rand::Rng;

impl Allocator {
    /// The periodic whole ring. Over a mesh that floods broadcasts (no relay), a broadcast
    /// from every peer would cost n^2 messages of n entries each period: one random peer
    /// gets it instead, which still reaches a peer that missed a change within a few periods.
    pub(super) fn anti_entropy(&mut self) {
        let peers: Vec<PeerName> = match &self.reachable {
            Some(r) if !self.relay => r.iter().copied().filter(|p| *p != self.me).collect(),
            _ => {
                self.full_gossip_due = true;
                return;
            }
        };
        if peers.is_empty() {
            return;
        }
        let i = self.rng().random_range(0..peers.len());
        self.send(peers[i], Unicast::Ring(self.ring.clone()));
        self.whole_ring_sent_at = self.now;
    }

    pub(super) fn merge_ring(&mut self, ring: &Ring) -> Result<(), MergeError> {
        self.merged(|r| r.merge(ring))
    }

    /// A delta from `from`. When it does not fit our ring (we have none yet, or do not know
    /// the seeds it names), or leaves us with fewer entries than the sender has (we missed
    /// an earlier one), we ask `from` for its whole ring rather than wait for anti-entropy:
    /// that costs one message, and a peer without a ring cannot allocate meanwhile. At most
    /// one such request per [`REQUEST_TIMEOUT_TICKS`].
    pub(super) fn merge_ring_delta(
        &mut self,
        from: PeerName,
        delta: &RingDelta,
    ) -> Result<(), MergeError> {
        let mut fits = true;
        self.merged(|r| match r.merge_delta(delta)? {
            DeltaMerge::Merged(changed) => Ok(changed),
            DeltaMerge::NeedWholeRing => {
                fits = false;
                Ok(false)
            }
        })?;
        let behind = self.ring.entries().len() < delta.total as usize;
        let asked_lately = self
            .ring_asked_at
            .is_some_and(|at| self.now - at < REQUEST_TIMEOUT_TICKS);
        if (!fits || behind) && !asked_lately {
            self.ring_asked_at = Some(self.now);
            self.send(from, Unicast::RingRequest);
        }
        Ok(())
    }

    /// Runs a merge; on a change our space follows. Over gossip that reaches a few peers,
    /// news travels only if passed on (`relay`): what the merge took goes out with our next
    /// delta. A mesh that floods every broadcast to everyone needs no relay, so then what
    /// the merge took is not ours to send.
    fn merged(
        &mut self,
        merge: impl FnOnce(&mut Ring) -> Result<bool, MergeError>,
    ) -> Result<(), MergeError> {
        let ours = (!self.relay).then(|| std::mem::take(&mut self.ring.touched));
        let result = merge(&mut self.ring);
        if let Some(ours) = ours {
            self.ring.touched = ours;
        }
        if result? {
            self.ring_dirty |= self.relay;
            self.after_ring_change();
        }
        Ok(())
    }

    pub(super) fn flush(&mut self) {
        if self.has_ring() && self.full_gossip_due {
            self.ring.clear_touched();
            self.outputs
                .push(Output::Broadcast(Gossip::Ring(self.ring.clone())));
            self.whole_ring_sent_at = self.now;
        } else if self.has_ring() && self.ring_dirty {
            if let Some(delta) = self.ring.take_delta() {
                if delta.is_complete() {
                    self.whole_ring_sent_at = self.now;
                }
                self.outputs
                    .push(Output::Broadcast(Gossip::RingDelta(delta)));
            }
        } else if self.paxos_dirty && !self.has_ring() {
            // Only the claims that changed (an empty election state means "an observer
            // wants a ring", so nothing is sent when nothing changed).
            let delta = self.paxos.take_changed(!self.relay);
            if !delta.is_empty() {
                if self.paxos.is_whole(&delta, !self.relay) {
                    self.claims_gossiped_at = self.now;
                }
                self.outputs.push(Output::Broadcast(Gossip::Paxos(delta)));
            }
        }
        if !self.has_ring() {
            if let Some((to, claims)) = self.paxos.take_for_proposer() {
                self.send(to, Unicast::Paxos(claims));
            }
        }
        self.ring_dirty = false;
        self.paxos_dirty = false;
        self.full_gossip_due = false;
    }
}
