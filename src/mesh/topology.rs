//! What this peer knows of the mesh, as pure data: every peer's latest [`PeerInfo`], merged by
//! version so that gossip in any order converges, and what of it is reachable from us.
//!
//! Only a peer itself changes its entry (bumping the version); everyone else just keeps the
//! highest version seen. A restarted peer starts its version from the wall clock in
//! microseconds, so its new entry outranks the old one without any coordination.
//!
//! Merging is cheap and lazy: it stores newer entries and names them as changed; which
//! entries count, and the route to each, is worked out once per [`Topology::settle`], which
//! the actor calls once per batch of messages rather than per message: from the entries taken
//! in only, unless one lost a connection (then the whole walk, see [`super::reach`]). An entry that arrives before the entries of the path to it is kept, out of every
//! view, and counts once its path arrives; unreachable entries are forgotten on the gossip
//! tick ([`Topology::forget_unreachable`]).

use super::protocol::{ConnectionInfo, Entries, PeerInfo};
use super::reach::{lost_connection, Reach};
use crate::peer::PeerName;
use live::{decides, reindex};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

mod live;

/// What one topology message brought: entries newer than ours (taken in), and entries at
/// exactly our version (the sender already holds what we would pass on).
#[derive(Debug, Default)]
pub struct Absorbed {
    pub taken: Vec<PeerName>,
    pub same: Vec<PeerName>,
}

#[derive(Debug, Clone)]
pub struct Topology {
    me: PeerName,
    /// Every entry held, reachable or not.
    peers: BTreeMap<PeerName, PeerInfo>,
    /// Reachable peers and their routes, as of the last settle.
    reach: Reach,
    /// Entries taken in since the last settle.
    touched: Vec<PeerName>,
    /// One of them lost an established connection: the next settle walks everything.
    shrunk: bool,
    /// Entries taken in, or newly reachable, since the last [`Topology::take_changes`].
    changed: BTreeSet<PeerName>,
    /// For every peer some entry names a connection to: the entries that do (by name, the
    /// order [`Topology::address_of`] reads them in). Kept as entries arrive and go, so an
    /// address costs a lookup, not a pass over every entry.
    reporters: HashMap<PeerName, Vec<PeerName>>,
    /// Peers whose live view (reachable or not, entry, address) may have changed since the
    /// last [`Topology::take_live_changes`]; `live_all`: any may have (a whole walk).
    live_dirty: HashSet<PeerName>,
    live_all: bool,
}

impl Topology {
    pub fn new(me: PeerInfo) -> Topology {
        let name = me.name;
        let (mut reporters, mut live_dirty) = (HashMap::new(), HashSet::new());
        let reach = Reach::new(name);
        reindex(
            &mut reporters,
            &mut live_dirty,
            &reach.routes,
            name,
            &[],
            &me.connections,
        );
        let mut peers = BTreeMap::new();
        peers.insert(name, me);
        Topology {
            me: name,
            peers,
            reach,
            touched: Vec::new(),
            shrunk: false,
            changed: BTreeSet::new(),
            reporters,
            live_dirty,
            live_all: false,
        }
    }

    pub fn me(&self) -> &PeerInfo {
        &self.peers[&self.me]
    }

    /// A reachable peer's entry (as of the last settle).
    pub fn get(&self, name: &PeerName) -> Option<&PeerInfo> {
        self.reach
            .routes
            .get(name)
            .and_then(|_| self.peers.get(name))
    }

    /// Every reachable entry, ourselves included, ordered by name (as of the last settle).
    pub fn peers(&self) -> impl Iterator<Item = &PeerInfo> {
        self.peers
            .values()
            .filter(|p| self.reach.routes.contains_key(&p.name))
    }

    /// Reachable peers, ourselves included (as of the last settle).
    pub fn len(&self) -> usize {
        self.reach.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reach.routes.is_empty()
    }

    /// About how many peers the mesh has as far as we have heard: entries held, reachable
    /// or not yet, or peers named in their connections, whichever are more. While a mesh
    /// forms, this runs ahead of [`len`](Self::len), which waits for paths (every reachable
    /// peer has an entry, so it is never less).
    pub fn heard_of(&self) -> usize {
        self.peers.len().max(self.reporters.len())
    }

    /// Replaces our own connection list; bumps our version if it changed (settle after).
    pub fn set_our_connections(&mut self, mut conns: Vec<ConnectionInfo>) -> bool {
        conns.sort_by_key(|c| (c.peer, c.addr, c.outbound));
        let me = self.peers.get_mut(&self.me).expect("own entry");
        if me.connections == conns {
            return false;
        }
        let old = me.clone();
        me.connections = conns;
        me.version += 1;
        self.shrunk |= lost_connection(&old, me);
        let (reporters, dirty) = (&mut self.reporters, &mut self.live_dirty);
        let reach = &self.reach.routes;
        reindex(
            reporters,
            dirty,
            reach,
            self.me,
            &old.connections,
            &me.connections,
        );
        self.changed.insert(self.me);
        self.touched.push(self.me);
        true
    }

    /// Stores the entries newer than ours (our own entry is never taken from others), without
    /// settling: cost proportional to what was received. True if any was taken in.
    #[cfg(test)]
    pub fn absorb(&mut self, received: Vec<PeerInfo>) -> bool {
        !self.absorb_from(&Entries::from(received)).taken.is_empty()
    }

    /// [`absorb`](Self::absorb), naming the entries taken in and those the sender holds at
    /// the version we hold: the sender needs neither back. Only the entries taken in are
    /// decoded.
    pub fn absorb_from(&mut self, received: &Entries) -> Absorbed {
        let mut out = Absorbed::default();
        for e in received.iter() {
            if e.name == self.me {
                continue;
            }
            match self.peers.get(&e.name).map(|old| old.version) {
                Some(v) if v > e.version => continue,
                Some(v) if v == e.version => {
                    out.same.push(e.name);
                    continue;
                }
                _ => {}
            }
            let p = match e.decode() {
                Ok(p) => p,
                Err(err) => {
                    // Checked on arrival by the same reader: not expected.
                    tracing::warn!("decode the topology entry of {}: {err}", e.name);
                    continue;
                }
            };
            self.changed.insert(p.name);
            out.taken.push(p.name);
            self.touched.push(p.name);
            let name = p.name;
            let old = self.peers.insert(name, p);
            let new = &self.peers[&name];
            if let Some(old) = &old {
                self.shrunk |= lost_connection(old, new);
            }
            let old = old.as_ref().map_or(&[][..], |o| &o.connections[..]);
            reindex(
                &mut self.reporters,
                &mut self.live_dirty,
                &self.reach.routes,
                name,
                old,
                &new.connections,
            );
        }
        out
    }

    /// [`absorb`](Self::absorb) then [`settle`](Self::settle): true if what is reachable, or
    /// a reachable entry, changed. The actor absorbs per message and settles per batch.
    #[cfg(test)]
    pub fn merge(&mut self, received: Vec<PeerInfo>) -> bool {
        let taken = self.absorb_from(&Entries::from(received)).taken;
        let moved = self.settle();
        moved || taken.iter().any(|n| self.reach.routes.contains_key(n))
    }

    /// Recomputes what is reachable (one walk) if entries were taken in since the last time;
    /// entries that became reachable count as changed (they are news to our neighbours).
    /// True if the set of reachable peers changed.
    pub fn settle(&mut self) -> bool {
        if self.touched.is_empty() && !self.shrunk {
            return false;
        }
        let touched = std::mem::take(&mut self.touched);
        if std::mem::take(&mut self.shrunk) {
            let reach = Reach::walk(self.me, &self.peers, self.reach.routes.len());
            let mut moved = reach.routes.len() != self.reach.routes.len();
            for n in reach.routes.keys() {
                if !self.reach.routes.contains_key(n) {
                    self.changed.insert(*n);
                    moved = true;
                }
            }
            self.reach = reach;
            self.live_all = true;
            return moved;
        }
        let mut reached = Vec::new();
        self.reach
            .extend(self.me, &self.peers, &touched, &mut reached);
        self.changed.extend(reached.iter().copied());
        // A peer now reachable counts in the live view, and so may its reports of addresses.
        for r in &reached {
            self.live_dirty.insert(*r);
            let Some(p) = self.peers.get(r) else { continue };
            for c in &p.connections {
                let rs = self.reporters.get(&c.peer);
                if rs.is_none_or(|rs| decides(rs, *r, &self.reach.routes)) {
                    self.live_dirty.insert(c.peer);
                }
            }
        }
        !reached.is_empty()
    }

    /// The reachable entries taken in or made reachable since the last call: what is worth
    /// passing on (gone ones need no news: every peer stops counting what it cannot reach).
    pub fn take_changes(&mut self) -> Vec<PeerInfo> {
        self.settle();
        let changed = std::mem::take(&mut self.changed);
        changed
            .iter()
            .filter_map(|n| self.get(n).cloned())
            .collect()
    }

    /// Notes our own entry as changed again: it was held back from the last
    /// [`take_changes`](Self::take_changes) and goes with the next.
    pub fn keep_own_change(&mut self) {
        self.changed.insert(self.me);
    }

    /// Forgets the changes noted so far (a whole topology is about to go out).
    pub fn clear_changes(&mut self) {
        self.changed.clear();
    }

    /// Forgets the entries no chain of established connections leads to from us; their names.
    pub fn forget_unreachable(&mut self) -> Vec<PeerName> {
        self.settle();
        let gone: Vec<PeerName> = self
            .peers
            .keys()
            .filter(|n| !self.reach.routes.contains_key(n))
            .copied()
            .collect();
        for n in &gone {
            if let Some(old) = self.peers.remove(n) {
                let (reporters, dirty) = (&mut self.reporters, &mut self.live_dirty);
                reindex(
                    reporters,
                    dirty,
                    &self.reach.routes,
                    *n,
                    &old.connections,
                    &[],
                );
            }
            self.changed.remove(n);
        }
        gone
    }

    /// Peers reachable from us, ourselves included, each with the neighbour to send through
    /// (as of the last settle).
    pub fn routes(&self) -> &HashMap<PeerName, PeerName> {
        &self.reach.routes
    }

    pub fn reachable(&self) -> BTreeSet<PeerName> {
        self.reach.routes.keys().copied().collect()
    }

    /// Addresses other peers use to reach peers: candidates for discovery.
    pub fn discovery_candidates(&self) -> Vec<(PeerName, SocketAddr)> {
        let mut out: Vec<(PeerName, SocketAddr)> = self
            .peers()
            .filter(|p| p.name != self.me)
            .flat_map(|p| p.connections.iter())
            .filter(|c| c.peer != self.me)
            .map(|c| (c.peer, c.addr))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// An underlay IP for `peer` as others see it: from the first reachable entry, by name,
    /// that names a connection to it (its first such connection).
    pub fn address_of(&self, peer: &PeerName) -> Option<IpAddr> {
        self.reporters
            .get(peer)?
            .iter()
            .filter(|r| self.reach.routes.contains_key(r))
            .find_map(|r| {
                let p = self.peers.get(r)?;
                p.connections.iter().find(|c| c.peer == *peer)
            })
            .map(|c| c.addr.ip())
    }

    /// The peers whose live view may have changed since the last call (settle first): their
    /// reachability, entry or address. `None`: any may have (after a whole walk).
    pub fn take_live_changes(&mut self) -> Option<Vec<PeerName>> {
        let names: Vec<PeerName> = self.live_dirty.drain().collect();
        if std::mem::take(&mut self.live_all) {
            return None;
        }
        Some(names)
    }

    /// [`address_of`](Self::address_of) for every peer at once, the slow way: one pass over
    /// every reachable entry (what the index is checked against).
    #[cfg(test)]
    pub fn addresses(&self) -> HashMap<PeerName, IpAddr> {
        let mut out = HashMap::with_capacity(self.reach.routes.len());
        for c in self.peers().flat_map(|p| p.connections.iter()) {
            out.entry(c.peer).or_insert(c.addr.ip());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn n(i: u64) -> PeerName {
        PeerName::from_u64(i).unwrap()
    }

    pub(super) fn conn(to: u64, established: bool) -> ConnectionInfo {
        ConnectionInfo {
            peer: n(to),
            addr: format!("192.0.2.{to}:6783").parse().unwrap(),
            outbound: true,
            established,
        }
    }

    pub(super) fn info(i: u64, version: u64, conns: &[(u64, bool)]) -> PeerInfo {
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
        // Only entries taken in are news: not stale ones, not unreachable ones.
        t.take_changes();
        assert!(t.absorb(vec![
            info(2, 5, &[(1, true)]),
            info(2, 1, &[]),
            info(9, 1, &[]),
        ]));
        let news: Vec<PeerName> = t.take_changes().iter().map(|p| p.name).collect();
        assert_eq!(news, vec![n(2)]);
        assert!(t.take_changes().is_empty());
        assert!(!t.set_our_connections(vec![conn(2, true)]));
    }

    #[test]
    fn entries_that_arrive_before_their_path_count_once_it_does() {
        // 1 - 2 - 3 - 4, learnt from the far end first, in separate batches.
        let mut t = Topology::new(info(1, 1, &[]));
        t.set_our_connections(vec![conn(2, true)]);
        t.take_changes();
        assert!(t.absorb(vec![info(4, 1, &[(3, true)])]));
        assert!(t.take_changes().is_empty(), "4 is not reachable yet");
        // Reachable: us alone (2's entry has not come). Heard of: 2 entries (us, 4), or 2
        // peers named in connections (2 by us, 3 by 4), whichever are more.
        assert_eq!((t.len(), t.heard_of()), (1, 2));
        assert!(!t.merge(vec![info(3, 1, &[(2, true), (4, true)])]));
        assert_eq!(names(&t), [1]);
        assert!(t.merge(vec![info(2, 1, &[(1, true), (3, true)])]));
        assert_eq!(names(&t), [1, 2, 3, 4]);
        let news: Vec<u64> = t.take_changes().iter().map(|p| p.name.as_u64()).collect();
        assert_eq!(news, [2, 3, 4], "all of it is news to pass on");
        // What is unreachable on a gossip tick is forgotten: 9 does not come back with 2.
        t.merge(vec![info(9, 1, &[(2, true)])]);
        assert_eq!(t.forget_unreachable(), vec![n(9)]);
        t.merge(vec![info(2, 2, &[(1, true), (3, true), (9, true)])]);
        assert_eq!(names(&t), [1, 2, 3, 4]);
        assert_eq!(t.routes()[&n(4)], n(2));
    }

    #[test]
    fn what_we_have_heard_of_runs_ahead_of_what_is_reachable() {
        let mut t = Topology::new(info(1, 1, &[]));
        t.set_our_connections(vec![conn(2, true)]);
        t.absorb(vec![info(5, 1, &[(6, true), (7, true), (8, true)])]);
        t.settle();
        // Entries: us and 5; named in connections: 2, 6, 7, 8.
        assert_eq!((t.len(), t.heard_of()), (1, 4));
        // 2's entry makes 2 and 5 reachable and names 1 and 5: six named in all.
        t.merge(vec![info(2, 1, &[(1, true), (5, true)])]);
        assert_eq!((t.len(), t.heard_of()), (3, 6));
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
        assert!(t.settle());
        assert_eq!(names(&t), [1]);
        assert_eq!(t.forget_unreachable().len(), 2);
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

    #[test]
    fn settling_by_extension_agrees_with_the_whole_walk() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(15);
        for round in 0..20 {
            let mut t = Topology::new(info(1, 1, &[]));
            let mut versions = [1u64; 41];
            let mut links: Vec<Vec<(u64, bool)>> = vec![vec![]; 41];
            for _ in 0..60 {
                // A batch: a few peers gain (now and then lose) connections, in any order.
                let mut batch = Vec::new();
                for _ in 0..rng.random_range(1..6) {
                    let p = rng.random_range(1..41u64);
                    let to = rng.random_range(1..41u64);
                    let l = &mut links[p as usize];
                    if round % 2 == 1 && !l.is_empty() && rng.random_bool(0.1) {
                        l.remove(0);
                    } else if to != p {
                        l.push((to, rng.random_bool(0.9)));
                    }
                    versions[p as usize] += 1;
                    if p == 1 {
                        t.set_our_connections(l.iter().map(|&(to, e)| conn(to, e)).collect());
                    } else {
                        batch.push(info(p, versions[p as usize], l));
                    }
                }
                t.absorb(batch);
                t.settle();
                let whole = Reach::walk(t.me, &t.peers, 0);
                assert_eq!(t.reachable(), whole.routes.keys().copied().collect());
                for p in whole.routes.keys() {
                    assert_eq!(t.reach.hops(p), whole.hops(p), "hops to {p}");
                    let first = t.reach.routes[p];
                    assert_eq!(
                        whole.hops(&first).map(|h| h.min(1)),
                        Some(u32::from(*p != t.me))
                    );
                }
            }
        }
    }
}
