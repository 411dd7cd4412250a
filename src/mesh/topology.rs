//! What this peer knows of the mesh, as pure data: every peer's latest [`PeerInfo`], merged by
//! version so that gossip in any order converges, and pruned to what is reachable from us.
//!
//! Only a peer itself changes its entry (bumping the version); everyone else just keeps the
//! highest version seen. A restarted peer starts its version from the wall clock in
//! microseconds, so its new entry outranks the old one without any coordination.

use super::protocol::{ConnectionInfo, PeerInfo};
use crate::peer::PeerName;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone)]
pub struct Topology {
    me: PeerName,
    peers: BTreeMap<PeerName, PeerInfo>,
}

impl Topology {
    pub fn new(me: PeerInfo) -> Topology {
        let name = me.name;
        let mut peers = BTreeMap::new();
        peers.insert(name, me);
        Topology { me: name, peers }
    }

    pub fn me(&self) -> &PeerInfo {
        &self.peers[&self.me]
    }

    pub fn get(&self, name: &PeerName) -> Option<&PeerInfo> {
        self.peers.get(name)
    }

    /// Every entry, ourselves included, ordered by name.
    pub fn peers(&self) -> impl Iterator<Item = &PeerInfo> {
        self.peers.values()
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Replaces our own connection list; bumps our version and prunes if it changed.
    pub fn set_our_connections(&mut self, mut conns: Vec<ConnectionInfo>) -> bool {
        conns.sort_by_key(|c| (c.peer, c.addr, c.outbound));
        let me = self.peers.get_mut(&self.me).expect("own entry");
        if me.connections == conns {
            return false;
        }
        me.connections = conns;
        me.version += 1;
        self.prune();
        true
    }

    /// Merges gossip: newer versions replace older ones, our own entry is never taken from
    /// others. True if anything we know changed (then it is worth passing on).
    pub fn merge(&mut self, received: Vec<PeerInfo>) -> bool {
        self.merge_updates(received).0
    }

    /// [`merge`](Self::merge), also naming the entries that were taken in (newer than ours and
    /// still reachable): what is worth passing on, rather than the whole topology.
    pub fn merge_updates(&mut self, received: Vec<PeerInfo>) -> (bool, Vec<PeerName>) {
        let before = self.fingerprint();
        let mut updated = Vec::new();
        for p in received {
            if p.name == self.me {
                continue;
            }
            match self.peers.get(&p.name) {
                Some(old) if old.version >= p.version => {}
                _ => {
                    updated.push(p.name);
                    self.peers.insert(p.name, p);
                }
            }
        }
        if updated.is_empty() {
            // Nothing taken in: the graph, and so what is reachable, is unchanged. Most gossip
            // is a repeat (every neighbour passes each change on), so this skips most prunes.
            return (false, updated);
        }
        self.prune();
        updated.retain(|n| self.peers.contains_key(n));
        (self.fingerprint() != before, updated)
    }

    fn fingerprint(&self) -> Vec<(PeerName, u64, u64)> {
        self.peers
            .values()
            .map(|p| (p.name, p.uid, p.version))
            .collect()
    }

    /// Forgets peers no chain of established connections leads to from us; their names.
    pub fn prune(&mut self) -> Vec<PeerName> {
        let reachable = self.reachable();
        let gone: Vec<PeerName> = self
            .peers
            .keys()
            .filter(|n| !reachable.contains(n))
            .copied()
            .collect();
        for n in &gone {
            self.peers.remove(n);
        }
        gone
    }

    /// Peers reachable from us, ourselves included, each with the neighbour to send through.
    pub fn routes(&self) -> HashMap<PeerName, PeerName> {
        let mut via: HashMap<PeerName, PeerName> = HashMap::new();
        let mut queue = VecDeque::new();
        via.insert(self.me, self.me);
        queue.push_back(self.me);
        while let Some(n) = queue.pop_front() {
            let Some(info) = self.peers.get(&n) else {
                continue;
            };
            for c in info.connections.iter().filter(|c| c.established) {
                if via.contains_key(&c.peer) || !self.peers.contains_key(&c.peer) {
                    continue;
                }
                let first = if n == self.me { c.peer } else { via[&n] };
                via.insert(c.peer, first);
                queue.push_back(c.peer);
            }
        }
        via
    }

    pub fn reachable(&self) -> BTreeSet<PeerName> {
        self.routes().into_keys().collect()
    }

    /// Addresses other peers use to reach peers: candidates for discovery.
    pub fn discovery_candidates(&self) -> Vec<(PeerName, SocketAddr)> {
        let mut out: Vec<(PeerName, SocketAddr)> = self
            .peers
            .values()
            .filter(|p| p.name != self.me)
            .flat_map(|p| p.connections.iter())
            .filter(|c| c.peer != self.me)
            .map(|c| (c.peer, c.addr))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// An underlay IP for `peer` as others see it (the first one, by name order of reporter).
    pub fn address_of(&self, peer: &PeerName) -> Option<IpAddr> {
        self.peers
            .values()
            .flat_map(|p| p.connections.iter())
            .find(|c| c.peer == *peer)
            .map(|c| c.addr.ip())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: u64) -> PeerName {
        PeerName::from_u64(i).unwrap()
    }

    fn conn(to: u64, established: bool) -> ConnectionInfo {
        ConnectionInfo {
            peer: n(to),
            addr: format!("192.0.2.{to}:6783").parse().unwrap(),
            outbound: true,
            established,
        }
    }

    fn info(i: u64, version: u64, conns: &[(u64, bool)]) -> PeerInfo {
        PeerInfo {
            name: n(i),
            nickname: format!("h{i}"),
            uid: i * 100,
            version,
            connections: conns.iter().map(|&(t, e)| conn(t, e)).collect(),
        }
    }

    fn names(t: &Topology) -> Vec<u64> {
        t.peers().map(|p| p.name.as_u64()).collect()
    }

    #[test]
    fn merge_keeps_the_highest_version_in_any_order() {
        let updates = vec![
            info(2, 1, &[(1, true)]),
            info(2, 3, &[(1, true), (3, true)]),
            info(3, 5, &[(2, true)]),
            info(2, 2, &[(1, true)]),
        ];
        let mut results = Vec::new();
        for order in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]] {
            let mut t = Topology::new(info(1, 1, &[]));
            t.set_our_connections(vec![conn(2, true)]);
            for i in order {
                t.merge(vec![updates[i].clone()]);
            }
            // Re-merging everything once more settles whatever the pruning dropped early.
            t.merge(updates.clone());
            results.push(t.peers().cloned().collect::<Vec<_>>());
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:#?}");
        assert_eq!(results[0][1].version, 3);
        assert_eq!(results[0].len(), 3);
    }

    #[test]
    fn our_own_entry_is_never_overwritten_and_stale_gossip_changes_nothing() {
        let mut t = Topology::new(info(1, 10, &[]));
        t.set_our_connections(vec![conn(2, true)]);
        assert!(!t.merge(vec![info(1, 999, &[])]));
        assert_eq!(t.me().version, 11);
        assert!(t.merge(vec![info(2, 4, &[(1, true)])]));
        assert!(!t.merge(vec![info(2, 4, &[(1, true)])]));
        assert!(!t.merge(vec![info(2, 3, &[])]));
        // Only entries taken in are named: not stale ones, not unreachable ones.
        let (changed, updated) = t.merge_updates(vec![
            info(2, 5, &[(1, true)]),
            info(2, 1, &[]),
            info(9, 1, &[]),
        ]);
        assert!(changed);
        assert_eq!(updated, vec![n(2)]);
        assert!(!t.set_our_connections(vec![conn(2, true)]));
    }

    #[test]
    fn unreachable_peers_are_pruned() {
        // 1 - 2 - 3, then 2 loses its connection to 3.
        let mut t = Topology::new(info(1, 1, &[]));
        t.set_our_connections(vec![conn(2, true)]);
        t.merge(vec![
            info(2, 1, &[(1, true), (3, true)]),
            info(3, 1, &[(2, true)]),
        ]);
        assert_eq!(names(&t), [1, 2, 3]);
        assert!(t.merge(vec![info(2, 2, &[(1, true)])]));
        assert_eq!(names(&t), [1, 2]);
        // A pending (not established) connection does not make a peer reachable.
        t.merge(vec![
            info(2, 3, &[(1, true), (3, false)]),
            info(3, 2, &[(2, true)]),
        ]);
        assert_eq!(names(&t), [1, 2]);
        // Losing our only connection leaves just us.
        assert!(t.set_our_connections(vec![]));
        assert_eq!(names(&t), [1]);
    }

    #[test]
    fn routes_go_through_the_first_hop() {
        // 1 - 2 - 3 - 4, and 1 - 5.
        let mut t = Topology::new(info(1, 1, &[]));
        t.set_our_connections(vec![conn(2, true), conn(5, true)]);
        t.merge(vec![
            info(2, 1, &[(1, true), (3, true)]),
            info(3, 1, &[(2, true), (4, true)]),
            info(4, 1, &[(3, true)]),
            info(5, 1, &[(1, true)]),
        ]);
        let r = t.routes();
        assert_eq!(r[&n(4)], n(2));
        assert_eq!(r[&n(3)], n(2));
        assert_eq!(r[&n(2)], n(2));
        assert_eq!(r[&n(5)], n(5));
        assert_eq!(r[&n(1)], n(1));
        let cands = t.discovery_candidates();
        assert!(cands.contains(&(n(3), "192.0.2.3:6783".parse().unwrap())));
        assert!(cands.contains(&(n(4), "192.0.2.4:6783".parse().unwrap())));
        assert!(!cands.iter().any(|(p, _)| *p == n(1)));
        assert_eq!(t.address_of(&n(4)), Some("192.0.2.4".parse().unwrap()));
    }

    #[test]
    fn a_restarted_peer_outranks_its_previous_life() {
        let mut t = Topology::new(info(1, 1, &[]));
        t.set_our_connections(vec![conn(2, true)]);
        t.merge(vec![info(2, 500, &[(1, true)])]);
        let mut reborn = info(2, 1_000_000, &[(1, true)]);
        reborn.uid = 7;
        assert!(t.merge(vec![reborn]));
        assert_eq!(t.get(&n(2)).unwrap().uid, 7);
    }
}
