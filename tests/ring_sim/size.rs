//! Message sizes as the router sends them (JSON), without encoding a whole ring for every
//! message: a ring's entry and seed lists are shared by the messages that carry the same
//! ring, so each list's encoded length is measured once and the rest of the message (a few
//! dozen bytes) is encoded with the lists left empty. Exact: `[]` stands in for each list.

use std::collections::HashMap;
use weave::ipam::ring::{Entries, Gossip, Ring, Seeds, Unicast};

#[derive(Default)]
pub struct Sizer {
    /// Encoded length of each entry list, by its id.
    entries: HashMap<u64, u64>,
    /// Encoded length of each seed list, by its digest.
    seeds: HashMap<u64, u64>,
}

fn json<T: serde::Serialize>(msg: &T) -> u64 {
    serde_json::to_vec(msg).map_or(0, |b| b.len() as u64)
}

/// What an empty list (`[]`) takes of an encoded message.
const EMPTY: u64 = 2;

impl Sizer {
    pub fn gossip(&mut self, g: &Gossip) -> u64 {
        match g {
            Gossip::Ring(r) => self.with_ring(r, Gossip::Ring),
            Gossip::RingDelta(d) => {
                let mut bare = d.clone();
                bare.entries = Entries::default();
                bare.seeds = Seeds::default();
                json(&Gossip::RingDelta(bare)) + self.lists(&d.entries, &d.seeds)
            }
            other => json(other),
        }
    }

    pub fn unicast(&mut self, u: &Unicast) -> u64 {
        match u {
            Unicast::Ring(r) => self.with_ring(r, Unicast::Ring),
            Unicast::RingReply(r) => self.with_ring(r, Unicast::RingReply),
            Unicast::SpaceDenied(r) => self.with_ring(r, Unicast::SpaceDenied),
            other => json(other),
        }
    }

    /// `wrap(ring)`'s length: the message around an empty ring, plus the ring's lists.
    fn with_ring<T: serde::Serialize>(&mut self, r: &Ring, wrap: impl FnOnce(Ring) -> T) -> u64 {
        let bare = Ring::new(r.universe(), r.me());
        json(&wrap(bare)) + self.lists(r.shared_entries(), r.shared_seeds())
    }

    /// The lists' encoded lengths beyond the `[]` each takes in a bare message.
    fn lists(&mut self, entries: &Entries, seeds: &Seeds) -> u64 {
        let e = *self
            .entries
            .entry(entries.id())
            .or_insert_with(|| json(&**entries));
        let s = *self
            .seeds
            .entry(seeds.digest())
            .or_insert_with(|| json(&**seeds));
        e + s - 2 * EMPTY
    }
}
