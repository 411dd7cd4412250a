//! Saving an allocator's durable state (ring, our own election claims, container
//! addresses) and starting again from it, as Weave keeps `ring` and `ownedAddresses` in its
//! database.

use super::addr::AddrRange;
use super::allocator::Allocator;
use super::entries::Ring;
use super::messages::InitMode;
use super::paxos::PaxosState;
use crate::peer::PeerName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Format version of the saved state; a different one is refused.
const STATE_VERSION: u32 = 1;

#[derive(Deserialize)]
struct Persisted {
    version: u32,
    me: PeerName,
    universe: AddrRange,
    ring: Ring,
    paxos: PaxosState,
    owned: BTreeMap<String, Vec<u32>>,
}

/// [`Persisted`] as written: the same fields, borrowed.
#[derive(Serialize)]
struct PersistedRef<'a> {
    version: u32,
    me: PeerName,
    universe: AddrRange,
    ring: &'a Ring,
    /// Our own claims only (see [`super::paxos::Paxos::durable`]); a state saved with every
    /// known claim, as before, still restores.
    paxos: PaxosState,
    owned: &'a BTreeMap<String, Vec<u32>>,
}

impl Allocator {
    /// The durable state as JSON bytes. Write it after every call that changed anything.
    pub fn persist(&self) -> Vec<u8> {
        self.encode(self.owned.as_map())
    }

    /// [`Allocator::persist`] without the container addresses (`owned` left empty): the ring
    /// and election state, whose size does not grow with the number of containers. The
    /// IPAM journal records this on each change and the addresses separately
    /// (see [`crate::ipam::journal`]).
    pub fn persist_without_addresses(&self) -> Vec<u8> {
        self.encode(&BTreeMap::new())
    }

    /// Serialises borrowed state: nothing is cloned on the allocation path.
    fn encode(&self, owned: &BTreeMap<String, Vec<u32>>) -> Vec<u8> {
        let state = PersistedRef {
            version: STATE_VERSION,
            me: self.me,
            universe: self.universe(),
            ring: &self.ring,
            paxos: self.paxos.durable(),
            owned,
        };
        serde_json::to_vec(&state).expect("allocator state serialises")
    }

    /// An allocator resumed from `bytes`. Like Weave, saved data for another peer name or
    /// another range is refused (the caller logs it and starts fresh with `new`). Pending
    /// allocations are not saved: their clients went away with the old process.
    pub fn restore(
        me: PeerName,
        universe: AddrRange,
        mode: InitMode,
        bytes: &[u8],
    ) -> Result<Self, String> {
        let saved: Persisted = serde_json::from_slice(bytes)
            .map_err(|e| format!("decode persisted IPAM state: {e}"))?;
        if saved.version != STATE_VERSION {
            return Err(format!(
                "persisted IPAM state has version {}, we read {STATE_VERSION}",
                saved.version
            ));
        }
        if saved.me != me {
            return Err(format!(
                "persisted IPAM state belongs to peer {}, we are {me}",
                saved.me
            ));
        }
        if saved.universe != universe {
            return Err(format!(
                "persisted IPAM range {} differs from {universe}",
                saved.universe
            ));
        }
        saved
            .ring
            .check_invariants()
            .map_err(|e| format!("persisted ring is inconsistent: {e}"))?;
        let mut alloc = Allocator::new(me, universe, mode);
        if !saved.ring.is_empty() {
            if !alloc.ring.is_empty() && alloc.ring.seeds() != saved.ring.seeds() {
                return Err("persisted ring was seeded by different peers".to_string());
            }
            alloc.ring = saved.ring;
            alloc.ring.me = me;
        }
        if !alloc.paxos.is_observer() {
            alloc.paxos.restore(saved.paxos);
        }
        alloc.space.set_owned(alloc.ring.owned_ranges(me));
        for (id, addrs) in saved.owned {
            let kept: Vec<u32> = addrs
                .into_iter()
                .filter(|a| alloc.space.claim(*a).is_ok())
                .collect();
            if !kept.is_empty() {
                alloc.owned.insert(id, kept);
            }
        }
        Ok(alloc)
    }
}
