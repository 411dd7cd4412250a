//! The live view's bookkeeping inside [`super::Topology`]: which entries report a connection to each
//! peer (so an address is a lookup), and which peers' live view a change may have touched.

use super::{ConnectionInfo, PeerName};
use std::collections::{HashMap, HashSet};

/// Notes `name`'s connections going from `old` to `new` in the reporters index, and marks as
/// possibly changed in the live view `name` and the peers whose address `name`'s report
/// decides (no reporter before it, by name, is `reachable`).
pub(super) fn reindex(
    reporters: &mut HashMap<PeerName, Vec<PeerName>>,
    dirty: &mut HashSet<PeerName>,
    reachable: &HashMap<PeerName, PeerName>,
    name: PeerName,
    old: &[ConnectionInfo],
    new: &[ConnectionInfo],
) {
    dirty.insert(name);
    let same = |o: &ConnectionInfo, n: &ConnectionInfo| o.peer == n.peer && o.addr == n.addr;
    if old.len() == new.len() && old.iter().zip(new).all(|(o, n)| same(o, n)) {
        return;
    }
    let decides = |r: &[PeerName]| decides(r, name, reachable);
    for c in old {
        if new.iter().any(|n| n.peer == c.peer) {
            continue;
        }
        if let Some(r) = reporters.get_mut(&c.peer) {
            if decides(r) {
                dirty.insert(c.peer);
            }
            r.retain(|x| *x != name);
            if r.is_empty() {
                reporters.remove(&c.peer);
            }
        }
    }
    let first =
        |list: &[ConnectionInfo], p: PeerName| list.iter().find(|c| c.peer == p).map(|c| c.addr);
    for c in new {
        // Still a reporter of the same address: nothing to note.
        if first(old, c.peer).is_some_and(|a| Some(a) == first(new, c.peer)) {
            continue;
        }
        let r = reporters.entry(c.peer).or_default();
        if let Err(i) = r.binary_search(&name) {
            r.insert(i, name);
        }
        if decides(r) {
            dirty.insert(c.peer);
        }
    }
}

/// Whether `name`'s report decides the address of a peer `reporters` (in name order) report:
/// none before it is reachable.
pub(super) fn decides(
    reporters: &[PeerName],
    name: PeerName,
    reachable: &HashMap<PeerName, PeerName>,
) -> bool {
    reporters
        .iter()
        .take_while(|x| **x < name)
        .all(|x| !reachable.contains_key(x))
}

#[cfg(test)]
mod tests {
    use super::super::tests::info;
    use super::super::Topology;
    use crate::peer::PeerName;
    use std::collections::BTreeMap;
    use std::net::IpAddr;

    /// The live view built from scratch: every reachable peer but us, with its address.
    fn live_from_scratch(t: &Topology) -> BTreeMap<PeerName, (u64, Option<IpAddr>)> {
        let addresses = t.addresses();
        t.peers()
            .filter(|p| p.name != t.me)
            .map(|p| (p.name, (p.uid, addresses.get(&p.name).copied())))
            .collect()
    }

    #[test]
    fn the_live_view_kept_from_changes_agrees_with_a_rebuild() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(16);
        for round in 0..40 {
            let mut t = Topology::new(info(1, 1, &[]));
            let mut kept = BTreeMap::new();
            let mut versions = [1u64; 31];
            let mut links: Vec<Vec<(u64, bool)>> = vec![vec![]; 31];
            for step in 0..80 {
                let mut batch = Vec::new();
                for _ in 0..rng.random_range(1..5) {
                    let p = rng.random_range(1..31u64);
                    let to = rng.random_range(1..31u64);
                    let l = &mut links[p as usize];
                    if round % 2 == 1 && !l.is_empty() && rng.random_bool(0.15) {
                        l.remove(rng.random_range(0..l.len()));
                    } else if to != p {
                        l.push((to, rng.random_bool(0.9)));
                    }
                    versions[p as usize] += 1;
                    let mut e = info(p, versions[p as usize], l);
                    // Two peers reporting one peer at different addresses: the order counts.
                    for c in e.connections.iter_mut() {
                        let port = 6000 + p as u16;
                        c.addr = format!("192.0.{p}.{}:{port}", c.peer.as_u64())
                            .parse()
                            .unwrap();
                    }
                    if p == 1 {
                        t.set_our_connections(e.connections);
                    } else {
                        e.uid = versions[p as usize];
                        batch.push(e);
                    }
                }
                t.absorb(batch);
                t.settle();
                if step % 17 == 16 {
                    t.forget_unreachable();
                }
                match t.take_live_changes() {
                    None => kept = live_from_scratch(&t),
                    Some(names) => {
                        for n in names {
                            match t.get(&n).filter(|p| p.name != t.me) {
                                Some(p) => kept.insert(n, (p.uid, t.address_of(&n))),
                                None => kept.remove(&n),
                            };
                        }
                    }
                }
                assert_eq!(kept, live_from_scratch(&t), "round {round} step {step}");
            }
        }
    }
}
