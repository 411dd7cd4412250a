//! Unit tests of the ring, its merge, the election and the allocator on their own.

use super::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::BTreeMap;

pub(super) fn peer(n: u64) -> PeerName {
    PeerName::from_u64(n).unwrap()
}

pub(super) fn universe() -> AddrRange {
    AddrRange::from_cidr("10.0.0.0/24").unwrap()
}

pub(super) fn ring_of(me: u64, peers: &[u64]) -> Ring {
    let mut r = Ring::new(universe(), peer(me));
    let names: Vec<PeerName> = peers.iter().map(|p| peer(*p)).collect();
    r.claim_for_peers(&names).unwrap();
    r
}

#[test]
fn claim_for_peers_bisects_in_peer_order() {
    let r = ring_of(1, &[4, 2, 3, 1, 2]);
    let base = universe().start;
    let got: Vec<(u32, PeerName)> = r
        .entries()
        .iter()
        .map(|e| (e.token - base, e.peer))
        .collect();
    assert_eq!(
        got,
        vec![(0, peer(1)), (64, peer(2)), (128, peer(3)), (192, peer(4))]
    );
    assert!(r.entries().iter().all(|e| e.free == 64 && e.version == 0));
    assert_eq!(r.seeds(), &[peer(1), peer(2), peer(3), peer(4)]);
    let three = ring_of(1, &[1, 2, 3]);
    let sizes: Vec<usize> = [1, 2, 3]
        .iter()
        .map(|p| three.owned_ranges(peer(*p))[0].size() as usize)
        .collect();
    assert_eq!(sizes, vec![128, 64, 64]);
    assert_eq!(r.owner(base + 65), Some(peer(2)));
    r.check_invariants().unwrap();
    assert_eq!(
        three.clone().claim_for_peers(&[peer(9)]),
        Err(RingError::AlreadyInitialised)
    );
}

#[test]
fn merge_takes_higher_versions_and_is_order_independent() {
    let mut a = ring_of(1, &[1, 2]);
    let mut b = ring_of(2, &[1, 2]);
    let mut counts = BTreeMap::new();
    counts.insert(a.entries()[0].token, 10);
    assert!(a.report_free(&counts));
    assert_eq!(a.entries()[0].version, 1);
    assert!(b.merge(&a).unwrap());
    assert!(!b.merge(&a).unwrap(), "merging twice changes nothing");
    assert_eq!(b.entries(), a.entries());
    // Equal version, same owner, different free: the higher free wins on both sides.
    let mut c = ring_of(3, &[1, 2]);
    let mut d = ring_of(3, &[1, 2]);
    c.entries[1].free = 5;
    c.entries[1].version = 7;
    d.entries[1].free = 9;
    d.entries[1].version = 7;
    let (mut cd, mut dc) = (c.clone(), d.clone());
    cd.merge(&d).unwrap();
    dc.merge(&c).unwrap();
    assert_eq!(cd.entries(), dc.entries());
    assert_eq!(cd.entries()[1].free, 9);
}

#[test]
fn merge_refuses_taking_our_range_and_mismatches() {
    let mine = ring_of(1, &[1, 2]);
    let mut theirs = ring_of(2, &[1, 2]);
    // Peer 2 pretends to have split our range.
    theirs.entries[0].free = 10;
    theirs.entries.insert(
        1,
        Entry {
            token: universe().start + 10,
            peer: peer(2),
            version: 0,
            free: 1,
        },
    );
    let err = mine.clone().merge(&theirs).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Peer 00:00:00:00:00:02 says it owns the IP range from 10.0.0.10, which I think I own"
    );
    let mut stolen = ring_of(2, &[1, 2]);
    stolen.entries[0].peer = peer(2);
    stolen.entries[0].version = 3;
    let err = mine.clone().merge(&stolen).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Received update for IP range I own at 10.0.0.0 v0"),
        "{err}"
    );
    let other = Ring::new(AddrRange::from_cidr("10.0.1.0/24").unwrap(), peer(2));
    let err = mine.clone().merge(&other).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Incompatible IP allocation ranges (received: 10.0.1.0/24, ours: 10.0.0.0/24)"
    );
    let err = mine.clone().merge(&ring_of(2, &[2, 3])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "IP allocation was seeded by different peers (received: [00:00:00:00:00:02, 00:00:00:00:00:03], ours: [00:00:00:00:00:01, 00:00:00:00:00:02])"
    );
    let mut unchanged = mine.clone();
    assert!(unchanged.merge(&theirs).is_err());
    assert_eq!(unchanged, mine);
}

#[test]
fn merge_into_empty_ring_adopts_it() {
    let source = ring_of(1, &[1, 2, 3]);
    let mut empty = Ring::new(universe(), peer(3));
    assert!(empty.merge(&source).unwrap());
    assert_eq!(empty.entries(), source.entries());
    assert_eq!(empty.seeds(), source.seeds());
}

#[test]
fn grant_splits_and_hands_over() {
    let mut r = ring_of(1, &[1, 2]);
    let base = universe().start;
    r.grant_range_to(peer(3), AddrRange::new(base + 32, base + 64))
        .unwrap();
    r.check_invariants().unwrap();
    assert_eq!(
        r.owned_ranges(peer(3)),
        vec![AddrRange::new(base + 32, base + 64)]
    );
    let rest = AddrRange::new(base + 64, base + 128);
    assert_eq!(
        r.owned_ranges(peer(1)),
        vec![AddrRange::new(base, base + 32), rest]
    );
    assert_eq!(
        r.entries()[0].free,
        32,
        "shrunk entry clamps its free count"
    );
    // Granting the start of an existing token bumps its version.
    r.grant_range_to(peer(3), AddrRange::new(base, base + 16))
        .unwrap();
    assert_eq!(r.entries()[0].version, 2);
    assert_eq!(
        r.owned_ranges(peer(1)),
        vec![AddrRange::new(base + 16, base + 32), rest]
    );
    let err = r
        .grant_range_to(peer(4), AddrRange::new(base + 130, base + 131))
        .unwrap_err();
    assert_eq!(
        err,
        RingError::NotOwned(AddrRange::new(base + 130, base + 131))
    );
    // The last entry of the universe: nothing wraps to the grantee.
    let mut last = ring_of(2, &[1, 2]);
    last.grant_range_to(peer(5), AddrRange::new(base + 192, base + 256))
        .unwrap();
    assert_eq!(
        last.owned_ranges(peer(5)),
        vec![AddrRange::new(base + 192, base + 256)]
    );
    assert_eq!(
        last.owned_ranges(peer(1)),
        vec![AddrRange::new(base, base + 128)]
    );
}

#[test]
fn transfer_moves_everything_with_a_big_version_bump() {
    let mut r = ring_of(1, &[1, 2, 3]);
    let moved = r.transfer(peer(2), peer(1));
    assert_eq!(moved.iter().map(|r| r.size()).sum::<u32>(), 64);
    assert!(r.entries().iter().all(|e| e.peer != peer(2)));
    assert_eq!(r.entries()[1].version, TRANSFER_VERSION_BUMP);
    let heir_view = ring_of(3, &[1, 2, 3]);
    let mut merged = heir_view.clone();
    merged.merge(&r).unwrap();
    assert_eq!(merged.entries(), r.entries());
    let all = r.transfer_all_to(peer(3));
    assert_eq!(all.iter().map(|r| r.size()).sum::<u32>(), 192);
    assert_eq!(r.peers(), vec![peer(3)]);
}

#[test]
fn donors_are_weighted_by_reported_free_space() {
    let mut r = ring_of(1, &[1, 2, 3, 4]);
    r.entries[1].free = 0;
    let mut rng = StdRng::seed_from_u64(7);
    let donors = r.choose_peers_to_ask_for_space(universe(), &mut rng);
    assert_eq!(
        donors.len(),
        2,
        "ourselves and peers without free space are skipped: {donors:?}"
    );
    assert!(!donors.contains(&peer(1)) && !donors.contains(&peer(2)));
    // Only peer 4's range overlaps the top quarter.
    let top = AddrRange::new(universe().start + 200, universe().end);
    assert_eq!(
        r.choose_peers_to_ask_for_space(top, &mut rng),
        vec![peer(4)]
    );
}

#[test]
fn invariants_catch_bad_rings() {
    let mut r = ring_of(1, &[1, 2]);
    r.entries.swap(0, 1);
    assert!(r.check_invariants().is_err());
    let mut r = ring_of(1, &[1, 2]);
    r.entries[1].token = r.entries[0].token;
    assert!(r.check_invariants().is_err());
    let mut r = ring_of(1, &[1, 2]);
    r.entries[0].free = 129;
    assert!(r.check_invariants().is_err());
    let mut r = ring_of(1, &[1, 2]);
    r.entries[1].token = universe().end;
    assert!(r.check_invariants().is_err());
}

fn elect(n: u64) -> Vec<Paxos> {
    let mut nodes: Vec<Paxos> = (1..=n)
        .map(|i| Paxos::elector(peer(i), n as usize / 2 + 1))
        .collect();
    nodes[0].propose();
    for _ in 0..10 {
        for i in 0..nodes.len() {
            let state = nodes[i].state().clone();
            for (j, node) in nodes.iter_mut().enumerate() {
                if i != j {
                    node.merge(&state);
                }
            }
        }
    }
    nodes
}

#[test]
fn paxos_agrees_on_the_electors() {
    // The value is the electors the proposer heard from when its quorum of promises came
    // in: at least a quorum, proposer included, and the same everywhere.
    let nodes = elect(5);
    let decided = nodes[0].consensus().expect("consensus");
    assert!(
        decided.len() >= 3 && decided.contains(&peer(1)),
        "{decided:?}"
    );
    assert!(decided.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
    for n in &nodes {
        assert_eq!(n.consensus().as_ref(), Some(&decided));
    }
}

#[test]
fn paxos_without_quorum_decides_nothing() {
    let mut a = Paxos::elector(peer(1), 2);
    a.propose();
    assert_eq!(a.consensus(), None);
    let mut obs = Paxos::observer(peer(9));
    obs.propose();
    assert!(obs.state().is_empty());
}

#[test]
fn duelling_proposers_still_agree_once() {
    let mut nodes: Vec<Paxos> = (1..=3).map(|i| Paxos::elector(peer(i), 2)).collect();
    nodes[0].propose();
    nodes[2].propose();
    let s0 = nodes[0].state().clone();
    nodes[1].merge(&s0);
    let s1 = nodes[1].state().clone();
    nodes[0].merge(&s1);
    for _ in 0..5 {
        for i in 0..3 {
            let s = nodes[i].state().clone();
            for (j, node) in nodes.iter_mut().enumerate() {
                if i != j {
                    node.merge(&s);
                }
            }
        }
    }
    let decided = nodes[0].consensus().expect("consensus after gossip");
    for n in &nodes {
        assert_eq!(n.consensus().as_ref(), Some(&decided));
    }
}

#[test]
fn seeded_allocator_allocates_at_once_and_frees() {
    let seeds = vec![peer(1), peer(2)];
    let mut a = Allocator::new(peer(1), universe(), InitMode::Seed(seeds));
    let subnet = universe().host_range();
    assert_eq!(
        a.allocate("c1", subnet).unwrap(),
        Some(universe().start + 1)
    );
    assert_eq!(
        a.allocate("c1", subnet).unwrap(),
        Some(universe().start + 1),
        "idempotent"
    );
    assert_eq!(
        a.allocate("c2", subnet).unwrap(),
        Some(universe().start + 2)
    );
    let err = a
        .allocate("c3", AddrRange::from_cidr("10.9.0.0/24").unwrap())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "range 10.9.0.0/24 out of bounds: 10.0.0.0/24"
    );
    assert_eq!(
        a.free("c2", universe().start + 9).unwrap_err().to_string(),
        "Free: address 10.0.0.9 not found for c2"
    );
    a.free("c2", universe().start + 2).unwrap();
    assert_eq!(
        a.delete("c2").unwrap_err().to_string(),
        "Delete: no addresses for c2"
    );
    assert_eq!(a.delete("c1").unwrap(), vec![universe().start + 1]);
    let restored =
        Allocator::restore(peer(1), universe(), InitMode::Observer, &a.persist()).unwrap();
    assert_eq!(restored.ring(), a.ring());
    assert!(Allocator::restore(peer(2), universe(), InitMode::Observer, &a.persist()).is_err());
}

#[test]
fn allocator_asks_a_donor_when_its_space_is_full() {
    let seeds = vec![peer(1), peer(2)];
    let mut a = Allocator::new(peer(1), universe(), InitMode::Seed(seeds.clone()));
    let mut b = Allocator::new(peer(2), universe(), InitMode::Seed(seeds));
    let low = AddrRange::new(universe().start, universe().start + 128);
    for i in 0..128 {
        assert!(a.allocate(&format!("c{i}"), low).unwrap().is_some());
    }
    a.take_outputs();
    assert_eq!(a.allocate("more", universe()).unwrap(), None);
    let outs = a.take_outputs();
    let request = outs.iter().find_map(|o| match o {
        Output::Send { to, msg } if *to == peer(2) => Some(msg.clone()),
        _ => None,
    });
    let request = request.expect("a space request to peer 2");
    b.on_unicast(peer(1), &request).unwrap();
    let reply = b.take_outputs().into_iter().find_map(|o| match o {
        Output::Send { to, msg } if to == peer(1) => Some(msg),
        _ => None,
    });
    a.on_unicast(peer(2), &reply.expect("a reply")).unwrap();
    let done = a.take_outputs().into_iter().find_map(|o| match o {
        Output::Allocated { id, addr } => Some((id, addr)),
        _ => None,
    });
    assert_eq!(done, Some(("more".to_string(), universe().start + 192)));
    assert_eq!(
        b.space().owned(),
        &[AddrRange::new(
            universe().start + 128,
            universe().start + 192
        )]
    );
}

#[test]
fn allocator_never_asks_an_unreachable_peer_for_space() {
    let seeds = vec![peer(1), peer(2), peer(3)];
    // Uses up our own space without asking anyone yet.
    let fill = |a: &mut Allocator| {
        for i in 0..a.space().free_count_in(universe()) {
            assert!(a.allocate(&format!("c{i}"), universe()).unwrap().is_some());
        }
        a.take_outputs();
    };
    let asked = |a: &mut Allocator| -> Vec<PeerName> {
        a.take_outputs()
            .into_iter()
            .filter_map(|o| match o {
                Output::Send {
                    to,
                    msg: Unicast::SpaceRequest(_),
                } => Some(to),
                _ => None,
            })
            .collect()
    };
    // Peer 3 is gone: peer 2 is asked, whatever the weights say (many draws).
    for n in 0..20 {
        let mut a = Allocator::new(peer(1), universe(), InitMode::Seed(seeds.clone()));
        fill(&mut a);
        a.set_reachable([peer(2)].into());
        assert_eq!(a.allocate(&format!("more{n}"), universe()).unwrap(), None);
        assert_eq!(asked(&mut a), vec![peer(2)], "draw {n}");
    }
    // A request outstanding to a peer that leaves is given up and the next one asked.
    let mut a = Allocator::new(peer(1), universe(), InitMode::Seed(seeds.clone()));
    fill(&mut a);
    a.set_reachable([peer(2), peer(3)].into());
    assert_eq!(a.allocate("more", universe()).unwrap(), None);
    let first = asked(&mut a);
    assert_eq!(first.len(), 1);
    let other = if first[0] == peer(2) {
        peer(3)
    } else {
        peer(2)
    };
    a.set_reachable([other].into());
    assert_eq!(asked(&mut a), vec![other]);
    // Nobody reachable: nobody asked.
    a.set_reachable(Default::default());
    assert!(asked(&mut a).is_empty());
}

#[test]
fn acceptors_send_their_claims_to_the_proposer_only() {
    // Five electors, every message delivered at once: the proposer's claims are gossiped,
    // an acceptor's only reach the proposer, and the proposer's ring settles the election.
    let names: Vec<PeerName> = (1..=5).map(peer).collect();
    let mut nodes: BTreeMap<PeerName, Allocator> = names
        .iter()
        .map(|&p| (p, Allocator::new(p, universe(), InitMode::consensus(5))))
        .collect();
    nodes.get_mut(&peer(1)).unwrap().prime();
    let mut queue: Vec<(PeerName, Output)> = nodes
        .get_mut(&peer(1))
        .unwrap()
        .take_outputs()
        .into_iter()
        .map(|o| (peer(1), o))
        .collect();
    let (mut claims_to_proposer, mut steps) = (0, 0);
    while let Some((from, out)) = queue.pop() {
        steps += 1;
        assert!(steps < 1000, "the election does not settle");
        let to: Vec<PeerName> = match &out {
            Output::Broadcast(Gossip::Paxos(state)) => {
                assert!(
                    state.iter().all(|(p, c)| c.promise.proposer == *p),
                    "{from} gossiped an acceptor's claims: {state:?}"
                );
                names.iter().copied().filter(|p| *p != from).collect()
            }
            Output::Broadcast(_) => names.iter().copied().filter(|p| *p != from).collect(),
            Output::Send { to, msg } => {
                if let Unicast::Paxos(state) = msg {
                    assert_eq!(*to, peer(1), "claims go to the proposer");
                    assert_eq!(state.keys().copied().collect::<Vec<_>>(), vec![from]);
                    claims_to_proposer += 1;
                }
                vec![*to]
            }
            _ => vec![],
        };
        for p in to {
            let node = nodes.get_mut(&p).unwrap();
            match &out {
                Output::Broadcast(g) => node.on_gossip(from, g).unwrap(),
                Output::Send { msg, .. } => node.on_unicast(from, msg).unwrap(),
                _ => unreachable!(),
            }
            queue.extend(node.take_outputs().into_iter().map(|o| (p, o)));
        }
    }
    // A promise and an acceptance from each of the four acceptors at most.
    assert!(
        (4..=8).contains(&claims_to_proposer),
        "{claims_to_proposer}"
    );
    let ring = nodes[&peer(1)].ring().clone();
    assert!(
        ring.peers().len() >= 3,
        "a quorum at least: {:?}",
        ring.peers()
    );
    for n in nodes.values() {
        assert_eq!(
            (n.ring().entries(), n.ring().seeds()),
            (ring.entries(), ring.seeds())
        );
    }
}

#[test]
fn a_proposer_saves_its_own_claims_only_and_decides_again_after_a_restart() {
    let nodes = elect(5);
    let decided = nodes[0].consensus().expect("consensus");
    assert_eq!(nodes[0].state().len(), 5, "the proposer knows every claim");
    let saved = nodes[0].durable();
    assert_eq!(saved.keys().copied().collect::<Vec<_>>(), vec![peer(1)]);
    assert_eq!(saved[&peer(1)], nodes[0].state()[&peer(1)]);
    // Restarted from what it saved, it knows its own claims only, until the others' come
    // again (what each of them resends is its own).
    let mut restarted = Paxos::elector(peer(1), 3);
    restarted.restore(saved);
    assert_eq!(restarted.consensus(), None);
    for other in &nodes[1..] {
        restarted.merge(&other.durable());
    }
    assert_eq!(restarted.consensus(), Some(decided));
    assert_eq!(restarted.state(), nodes[0].state());
}

#[test]
fn the_proposer_saves_its_own_claims_not_those_it_heard() {
    let mut proposer = Allocator::new(peer(1), universe(), InitMode::consensus(5));
    proposer.prime();
    let gossip = proposer.take_outputs();
    for i in 2..=3 {
        let mut acceptor = Allocator::new(peer(i), universe(), InitMode::consensus(5));
        for out in &gossip {
            if let Output::Broadcast(g) = out {
                acceptor.on_gossip(peer(1), g).unwrap();
            }
        }
        for out in acceptor.take_outputs() {
            if let Output::Send { msg, .. } = out {
                proposer.on_unicast(peer(i), &msg).unwrap();
            }
        }
    }
    assert_eq!(
        proposer.paxos().state().len(),
        3,
        "two acceptors' claims heard"
    );
    let saved: serde_json::Value = serde_json::from_slice(&proposer.persist()).unwrap();
    let claims: Vec<&String> = saved["paxos"].as_object().unwrap().keys().collect();
    assert_eq!(claims, vec![&peer(1).to_string()]);
}
