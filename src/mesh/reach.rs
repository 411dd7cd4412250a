//! What is reachable from us over established connections, and the first hop of a shortest
//! path to each peer, kept up to date by extension: while peers join, entries only gain
//! connections, and redoing the whole breadth-first walk per batch (every peer, every
//! batch) was the largest cost of 500 peers converging. A lost connection still needs the
//! whole walk ([`Reach::walk`]); a gained one only relaxes the paths through it
//! ([`Reach::extend`]).

use super::protocol::PeerInfo;
use crate::peer::PeerName;
use std::collections::{BTreeMap, HashMap, VecDeque};

#[derive(Debug, Clone)]
pub(super) struct Reach {
    /// Reachable peers (ourselves included), each with the neighbour to send through.
    pub routes: HashMap<PeerName, PeerName>,
    /// Hops from us to each reachable peer.
    dist: HashMap<PeerName, u32>,
    /// Established connections of reachable peers to peers we hold no entry of: they count
    /// once the entry arrives.
    waiting: HashMap<PeerName, Vec<PeerName>>,
}

impl Reach {
    pub fn new(me: PeerName) -> Reach {
        Reach {
            routes: HashMap::from([(me, me)]),
            dist: HashMap::from([(me, 0)]),
            waiting: HashMap::new(),
        }
    }

    /// Breadth-first over the established connections of the entries held, from scratch.
    pub fn walk(me: PeerName, peers: &BTreeMap<PeerName, PeerInfo>, hint: usize) -> Reach {
        let mut r = Reach {
            routes: HashMap::with_capacity(hint),
            dist: HashMap::with_capacity(hint),
            waiting: HashMap::new(),
        };
        r.routes.insert(me, me);
        r.dist.insert(me, 0);
        r.spread(me, peers, VecDeque::from([me]), &mut Vec::new());
        r
    }

    /// Hops from us to `p`, if reachable.
    #[cfg(test)]
    pub fn hops(&self, p: &PeerName) -> Option<u32> {
        self.dist.get(p).copied()
    }

    /// Takes in entries that only gained connections or are new (`touched`), relaxing the
    /// paths through them; the peers newly reachable go into `reached`.
    pub fn extend(
        &mut self,
        me: PeerName,
        peers: &BTreeMap<PeerName, PeerInfo>,
        touched: &[PeerName],
        reached: &mut Vec<PeerName>,
    ) {
        let mut queue = VecDeque::new();
        for &u in touched {
            if self.dist.contains_key(&u) {
                queue.push_back(u);
            }
            if let Some(from) = self.waiting.remove(&u) {
                for w in from {
                    self.relax(me, w, u, peers, &mut queue, reached);
                }
            }
        }
        self.spread(me, peers, queue, reached);
    }

    /// Relaxes the established connections of every peer in `queue`, and of every peer a
    /// shorter path was found to, until none is left.
    fn spread(
        &mut self,
        me: PeerName,
        peers: &BTreeMap<PeerName, PeerInfo>,
        mut queue: VecDeque<PeerName>,
        reached: &mut Vec<PeerName>,
    ) {
        while let Some(u) = queue.pop_front() {
            let Some(info) = peers.get(&u) else {
                continue;
            };
            for c in info.connections.iter().filter(|c| c.established) {
                self.relax(me, u, c.peer, peers, &mut queue, reached);
            }
        }
    }

    /// The connection u -> v: a path to v through u if that is shorter than any known.
    fn relax(
        &mut self,
        me: PeerName,
        u: PeerName,
        v: PeerName,
        peers: &BTreeMap<PeerName, PeerInfo>,
        queue: &mut VecDeque<PeerName>,
        reached: &mut Vec<PeerName>,
    ) {
        let Some(&du) = self.dist.get(&u) else {
            return;
        };
        // Most connections lead to a peer already as close (reachable peers have entries).
        if self.dist.get(&v).is_some_and(|&dv| dv <= du + 1) {
            return;
        }
        if !peers.contains_key(&v) {
            let w = self.waiting.entry(v).or_default();
            if !w.contains(&u) {
                w.push(u);
            }
            return;
        }
        let first = if u == me { v } else { self.routes[&u] };
        if self.dist.insert(v, du + 1).is_none() {
            reached.push(v);
        }
        self.routes.insert(v, first);
        queue.push_back(v);
    }
}

/// True if `new` lacks an established connection `old` had: reachability may shrink.
pub(super) fn lost_connection(old: &PeerInfo, new: &PeerInfo) -> bool {
    let has = |peer: PeerName| {
        new.connections
            .iter()
            .any(|c| c.established && c.peer == peer)
    };
    if new.connections.len() > 32 {
        let now: std::collections::HashSet<PeerName> = new
            .connections
            .iter()
            .filter(|c| c.established)
            .map(|c| c.peer)
            .collect();
        return old
            .connections
            .iter()
            .any(|c| c.established && !now.contains(&c.peer));
    }
    old.connections
        .iter()
        .any(|c| c.established && !has(c.peer))
}
