//! The mesh's live peers as IPAM follows them: what changed since the last look, found in one
//! walk of the published list (in name order) beside the peers held, without copying either.
//! Rebuilding and re-indexing every peer on every change (n log n, with a copy of each
//! nickname) was most of what IPAM did while hundreds of peers joined.

use crate::mesh::LivePeer;
use crate::peer::PeerName;
use std::collections::BTreeMap;

/// What changed between two looks at the live peers.
#[derive(Debug, Default, PartialEq)]
pub(super) struct PeersDiff {
    /// Peers new to the list or with a new nickname, with the nickname.
    pub named: Vec<(PeerName, String)>,
    /// Peers new to the list.
    pub added: Vec<PeerName>,
    /// Peers gone from it.
    pub removed: Vec<PeerName>,
}

impl PeersDiff {
    pub fn is_empty(&self) -> bool {
        self.named.is_empty() && self.removed.is_empty()
    }
}

/// What changed from `held` (the live peers with their nicknames) to `now`, the mesh's list.
/// The mesh keeps it in name order; a list out of order is sorted first.
pub(super) fn diff(held: &BTreeMap<PeerName, String>, now: &[LivePeer]) -> PeersDiff {
    if !now.is_sorted_by(|a, b| a.name < b.name) {
        let mut sorted = now.to_vec();
        sorted.sort_by_key(|p| p.name);
        sorted.dedup_by_key(|p| p.name);
        return diff(held, &sorted);
    }
    let mut d = PeersDiff::default();
    let mut old = held.iter().peekable();
    for p in now {
        while let Some((&gone, _)) = old.next_if(|(n, _)| **n < p.name) {
            d.removed.push(gone);
        }
        match old.next_if(|(n, _)| **n == p.name) {
            Some((_, nick)) if *nick == p.nickname => {}
            Some(_) => d.named.push((p.name, p.nickname.clone())),
            None => {
                d.added.push(p.name);
                d.named.push((p.name, p.nickname.clone()));
            }
        }
    }
    d.removed.extend(old.map(|(n, _)| *n));
    d
}

/// Brings `held` to what the diff was taken against.
pub(super) fn apply(held: &mut BTreeMap<PeerName, String>, d: &PeersDiff) {
    for n in &d.removed {
        held.remove(n);
    }
    for (n, nick) in &d.named {
        held.insert(*n, nick.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn live(i: u64, nick: &str) -> LivePeer {
        LivePeer {
            name: PeerName::from_u64(i).unwrap(),
            nickname: nick.into(),
            uid: i,
            address: None,
            direct: false,
            data_keys: None,
        }
    }

    #[test]
    fn a_diff_brings_the_held_peers_to_the_list_as_a_rebuild_would() {
        let mut rng = StdRng::seed_from_u64(15);
        let mut held = BTreeMap::new();
        for round in 0..500 {
            let mut now = Vec::new();
            for i in 1..40u64 {
                if rng.random_bool(0.6) {
                    now.push(live(i, ["a", "b"][rng.random_range(0..2)]));
                }
            }
            if round % 7 == 0 {
                now.reverse();
            }
            let d = diff(&held, &now);
            let before: Vec<PeerName> = held.keys().copied().collect();
            apply(&mut held, &d);
            let rebuilt: BTreeMap<PeerName, String> =
                now.iter().map(|p| (p.name, p.nickname.clone())).collect();
            assert_eq!(held, rebuilt, "round {round}");
            for n in &d.added {
                assert!(!before.contains(n) && rebuilt.contains_key(n));
            }
            for n in &d.removed {
                assert!(before.contains(n) && !rebuilt.contains_key(n));
            }
            let added = rebuilt.keys().filter(|n| !before.contains(n)).count();
            assert_eq!(d.added.len(), added);
            assert!(diff(&held, &now).is_empty(), "nothing left to change");
        }
    }
}
