//! Delta gossip against whole-ring gossip: random histories (seeded, so a failure names
//! its seed), delivery in any order, and the refusals.

use super::ring_tests::{peer, ring_of, universe};
use super::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

fn seeded(me: u64, seeds: &[u64]) -> Ring {
    let mut r = ring_of(me, seeds);
    r.clear_touched();
    r
}

/// One local change by `ring`'s owner: a new free count, a grant to one of `others`, or
/// (`rmpeer`) taking over all of `dead`'s entries.
fn local_change(ring: &mut Ring, others: &[PeerName], dead: Option<PeerName>, rng: &mut StdRng) {
    let me = ring.me();
    let mine: Vec<usize> = (0..ring.entries().len())
        .filter(|&i| ring.entries()[i].peer == me)
        .collect();
    if let Some(dead) = dead {
        ring.transfer(dead, me);
        return;
    }
    if mine.is_empty() {
        return;
    }
    if rng.random_bool(0.6) {
        let i = mine[rng.random_range(0..mine.len())];
        let free = rng.random_range(0..=ring.entry_size(i));
        ring.report_free(&BTreeMap::from([(ring.entries()[i].token, free)]));
    } else {
        let owned = ring.owned_ranges(me);
        let r = owned[rng.random_range(0..owned.len())];
        let start = rng.random_range(r.start..r.end);
        let end = rng.random_range(start + 1..=r.end);
        let to = others[rng.random_range(0..others.len())];
        ring.grant_range_to(to, AddrRange::new(start, end)).unwrap();
    }
}

/// Each step one live peer changes its ring and sends the delta to every other live peer,
/// while twins of the same peers get the sender's whole ring instead: outcomes (changed,
/// or the same refusal) and rings must match at every step. Returns every delta sent, with
/// the final ring.
fn history(seed: u64, steps: usize) -> (Vec<RingDelta>, Ring) {
    let mut rng = StdRng::seed_from_u64(seed);
    let seeds = [1, 2, 3, 4, 5];
    let mut by_delta: BTreeMap<u64, Ring> = seeds.iter().map(|&p| (p, seeded(p, &seeds))).collect();
    let mut by_whole = by_delta.clone();
    let mut sent = Vec::new();
    for step in 0..steps {
        let live: Vec<u64> = by_delta.keys().copied().collect();
        let actor = live[rng.random_range(0..live.len())];
        let others: Vec<PeerName> = live
            .iter()
            .filter(|p| **p != actor)
            .map(|p| peer(*p))
            .collect();
        // Now and then a peer dies and the actor takes its ranges over (rmpeer).
        let dead = (live.len() > 2 && rng.random_bool(0.05)).then(|| others[0]);
        if let Some(d) = dead {
            by_delta.remove(&d.as_u64());
            by_whole.remove(&d.as_u64());
        }
        let mut change_rng = rng.clone();
        local_change(by_delta.get_mut(&actor).unwrap(), &others, dead, &mut rng);
        local_change(
            by_whole.get_mut(&actor).unwrap(),
            &others,
            dead,
            &mut change_rng,
        );
        let Some(delta) = by_delta.get_mut(&actor).unwrap().take_delta() else {
            continue;
        };
        let whole = by_whole[&actor].clone();
        by_whole.get_mut(&actor).unwrap().clear_touched();
        for p in by_delta
            .keys()
            .copied()
            .filter(|p| *p != actor)
            .collect::<Vec<_>>()
        {
            let d = by_delta.get_mut(&p).unwrap().merge_delta(&delta);
            let w = by_whole.get_mut(&p).unwrap().merge(&whole);
            let d = d.map(|m| match m {
                DeltaMerge::Merged(changed) => changed,
                DeltaMerge::NeedWholeRing => {
                    panic!("seed {seed} step {step}: {p} needs the whole ring")
                }
            });
            assert_eq!(
                d, w,
                "seed {seed} step {step}: peer {p} merging from {actor}"
            );
            assert_eq!(
                by_delta[&p], by_whole[&p],
                "seed {seed} step {step}: peer {p}"
            );
            by_delta.get_mut(&p).unwrap().clear_touched();
            by_whole.get_mut(&p).unwrap().clear_touched();
        }
        sent.push(delta);
    }
    let last = by_delta.values().next().unwrap().clone();
    for r in by_delta.values() {
        assert_eq!(r.entries(), last.entries(), "seed {seed}: all peers agree");
        r.check_invariants().unwrap();
    }
    (sent, last)
}

#[test]
fn delta_merge_equals_whole_ring_merge_over_random_histories() {
    let mut deltas = 0;
    for seed in 0..300 {
        deltas += history(seed, 60).0.len();
    }
    assert!(deltas > 10_000, "only {deltas} deltas exercised");
}

#[test]
fn deltas_in_any_order_reach_the_same_ring() {
    for seed in 0..100 {
        let (sent, last) = history(seed, 40);
        let mut rng = StdRng::seed_from_u64(seed ^ 0xd00d);
        let mut pending = sent.clone();
        pending.shuffle(&mut rng);
        // A peer that took no part (not a seed) hears the deltas out of order; one that does
        // not fit waits and is tried again, as a repeated delta or anti-entropy would.
        let mut observer = seeded(99, &[1, 2, 3, 4, 5]);
        let mut waits = 0;
        while !pending.is_empty() {
            let before = pending.len();
            pending.retain(|d| {
                observer
                    .merge_delta(d)
                    .unwrap_or_else(|e| panic!("seed {seed}: {e}"))
                    == DeltaMerge::NeedWholeRing
            });
            waits += pending.len();
            assert!(
                pending.len() < before,
                "seed {seed}: no delta fits any more"
            );
        }
        assert_eq!(
            observer.entries(),
            last.entries(),
            "seed {seed} ({waits} waits)"
        );
        observer.check_invariants().unwrap();
        // Twice changes nothing.
        for d in &sent {
            assert_eq!(observer.merge_delta(d), Ok(DeltaMerge::Merged(false)));
        }
    }
}

fn delta_of(ring: &mut Ring, change: impl FnOnce(&mut Ring)) -> RingDelta {
    ring.clear_touched();
    change(ring);
    ring.take_delta().expect("something changed")
}

#[test]
fn a_delta_without_what_it_builds_on_is_not_applied() {
    let base = universe().start;
    let mut sender = seeded(1, &[1, 2]);
    let grant = delta_of(&mut sender, |r| {
        r.grant_range_to(peer(3), AddrRange::new(base + 16, base + 32))
            .unwrap()
    });
    assert_eq!(
        grant.entries.len(),
        3,
        "shrunk entry, granted one, and ours after it"
    );
    assert!(!grant.is_complete() && grant.seeds.is_empty());
    // A peer without a ring cannot use a partial delta.
    let mut empty = Ring::new(universe(), peer(3));
    assert_eq!(empty.merge_delta(&grant), Ok(DeltaMerge::NeedWholeRing));
    assert!(empty.is_empty());
    // A peer that missed the grant gets a later change of the granted entry alone: it does
    // not know the token where that entry ends, so nothing is taken.
    let free = delta_of(&mut sender, |r| {
        assert!(r.transfer(peer(3), peer(1)).len() == 1);
    });
    let mut behind = seeded(2, &[1, 2]);
    let before = behind.clone();
    assert_eq!(behind.merge_delta(&free), Ok(DeltaMerge::NeedWholeRing));
    assert_eq!(behind, before);
    // In order, both fit.
    assert_eq!(behind.merge_delta(&grant), Ok(DeltaMerge::Merged(true)));
    assert_eq!(behind.merge_delta(&free), Ok(DeltaMerge::Merged(true)));
    assert_eq!(behind.entries(), sender.entries());
    // A complete delta is a whole ring: an empty peer adopts it, seeds too.
    let mut fresh = seeded(1, &[1, 2]);
    let tokens: Vec<u32> = fresh.entries().iter().map(|e| e.token).collect();
    fresh.touched.extend(tokens);
    let whole = fresh.take_delta().unwrap();
    assert!(whole.is_complete() && whole.ends.is_empty());
    assert_eq!(empty.merge_delta(&whole), Ok(DeltaMerge::Merged(true)));
    assert_eq!(empty.seeds(), fresh.seeds());
}

#[test]
fn a_token_cut_by_a_change_we_missed_is_not_taken_alone() {
    // The sender's first entry reports 1 free and a peer hears it; then the sender grants
    // that entry's first address (the entry changes owner, a new token keeps the rest
    // ours), which the peer misses, and changes the new token's entry. Taken alone, that
    // new token would end the peer's stale first entry (old owner, 1 free) right after
    // its first address: a ring nobody had, which the peers that know the older entry's
    // later free counts refuse to merge (a random schedule of the ring simulation found it).
    let base = universe().start;
    let mut sender = seeded(1, &[1, 2]);
    assert_eq!(sender.entries()[0].token, base);
    let heard = delta_of(&mut sender, |r| {
        r.report_free(&BTreeMap::from([(base, 1)]));
    });
    let mut behind = seeded(2, &[1, 2]);
    assert_eq!(behind.merge_delta(&heard), Ok(DeltaMerge::Merged(true)));
    let _missed = delta_of(&mut sender, |r| {
        r.grant_range_to(peer(3), AddrRange::new(base, base + 1))
            .unwrap()
    });
    let later = delta_of(&mut sender, |r| {
        r.report_free(&BTreeMap::from([(base + 1, 3)]));
    });
    assert_eq!(later.entries.len(), 1);
    assert_eq!(later.prevs, vec![base]);
    let before = behind.clone();
    assert_eq!(behind.merge_delta(&later), Ok(DeltaMerge::NeedWholeRing));
    assert_eq!(behind, before);
    // The sender's whole ring settles it.
    assert_eq!(behind.merge(&sender), Ok(true));
    assert_eq!(behind.entries(), sender.entries());
    // From a sender of an earlier release (no versions), the delta is taken as before.
    let mut old = later.clone();
    old.prev_versions.clear();
    assert_eq!(
        before.clone().merge_delta(&old),
        Ok(DeltaMerge::Merged(true))
    );
}

#[test]
fn delta_refusals_match_whole_ring_refusals() {
    let base = universe().start;
    let mine = seeded(1, &[1, 2]);
    // Peer 2 claims a token inside our range.
    let mut theirs = seeded(2, &[1, 2]);
    theirs.entries[0].free = 10;
    theirs.entries.insert(
        1,
        Entry {
            token: base + 10,
            peer: peer(2),
            version: 0,
            free: 1,
        },
    );
    theirs.touched.insert(base + 10);
    let bad = theirs.take_delta().unwrap();
    let whole_err = mine.clone().merge(&theirs).unwrap_err();
    let mut r = mine.clone();
    assert_eq!(r.merge_delta(&bad), Err(whole_err));
    assert_eq!(r, mine, "untouched on error");
    // A newer version of our entry naming another owner.
    let mut stolen = seeded(2, &[1, 2]);
    let d = delta_of(&mut stolen, |s| {
        s.transfer(peer(1), peer(2));
    });
    let whole_err = mine.clone().merge(&stolen).unwrap_err();
    assert!(matches!(whole_err, MergeError::UpdateForMyRange { .. }));
    assert_eq!(mine.clone().merge_delta(&d), Err(whole_err));
    // Other universe; other seeds (known by digest only).
    let mut other = Ring::new(AddrRange::from_cidr("10.0.1.0/24").unwrap(), peer(2));
    other.claim_for_peers(&[peer(2)]).unwrap();
    let d = other.take_delta().unwrap();
    assert!(matches!(
        mine.clone().merge_delta(&d),
        Err(MergeError::RangeMismatch { .. })
    ));
    let mut reseeded = seeded(2, &[2, 3]);
    let d = delta_of(&mut reseeded, |r| {
        let t = r.entries()[0].token;
        r.report_free(&BTreeMap::from([(t, 1)]));
    });
    assert!(matches!(
        mine.clone().merge_delta(&d),
        Err(MergeError::SeedMismatch { .. })
    ));
    // Malformed: out of order, bounds missing, outside the universe.
    let mut d = delta_of(&mut seeded(2, &[1, 2]), |r| {
        let t = r.entries()[1].token;
        r.report_free(&BTreeMap::from([(t, 1)]));
    });
    let first = d.entries[0];
    d.entries.push(first);
    d.ends.push(d.ends[0]);
    d.prevs.push(d.prevs[0]);
    assert!(matches!(
        mine.clone().merge_delta(&d),
        Err(MergeError::Malformed(_))
    ));
    d.entries.pop();
    d.prevs.clear();
    assert!(matches!(
        mine.clone().merge_delta(&d),
        Err(MergeError::Malformed(_))
    ));
    d.prevs.push(base + 1000);
    assert!(matches!(
        mine.clone().merge_delta(&d),
        Err(MergeError::Malformed(_))
    ));
}

#[test]
fn absorbed_deltas_carry_the_later_entries() {
    let base = universe().start;
    let mut r = seeded(1, &[1, 2]);
    let mut first = delta_of(&mut r, |r| {
        r.report_free(&BTreeMap::from([(base, 7)]));
    });
    let second = delta_of(&mut r, |r| {
        r.grant_range_to(peer(3), AddrRange::new(base + 8, base + 16))
            .unwrap()
    });
    first.absorb(second);
    let mut behind = seeded(2, &[1, 2]);
    assert_eq!(behind.merge_delta(&first), Ok(DeltaMerge::Merged(true)));
    assert_eq!(behind.entries(), r.entries());
}

#[test]
fn seeds_digest_is_stable() {
    assert_eq!(seeds_digest(&[]), 0xcbf2_9ce4_8422_2325);
    assert_ne!(
        seeds_digest(&[peer(1), peer(2)]),
        seeds_digest(&[peer(2), peer(1)])
    );
}

#[test]
fn an_allocator_asks_for_the_whole_ring_when_a_delta_does_not_fit() {
    let seeds = vec![peer(1), peer(2)];
    let mut a = Allocator::new(peer(1), universe(), InitMode::Seed(seeds));
    let mut late = Allocator::new(peer(3), universe(), InitMode::Observer);
    a.allocate("c1", universe()).unwrap();
    let delta = a
        .take_outputs()
        .into_iter()
        .find_map(|o| match o {
            Output::Broadcast(Gossip::RingDelta(d)) => Some(d),
            _ => None,
        })
        .expect("a delta, not the whole ring");
    assert_eq!(delta.entries.len(), 1, "one free count changed");
    late.on_gossip(peer(1), &Gossip::RingDelta(delta.clone()))
        .unwrap();
    assert!(!late.has_ring());
    let asked = late.take_outputs();
    assert_eq!(
        asked,
        vec![Output::Send {
            to: peer(1),
            msg: Unicast::RingRequest
        }]
    );
    // Asked once per timeout, however many deltas arrive.
    late.on_gossip(peer(1), &Gossip::RingDelta(delta)).unwrap();
    assert!(late.take_outputs().is_empty());
    a.on_unicast(peer(3), &Unicast::RingRequest).unwrap();
    let reply = a.take_outputs();
    let [Output::Send { to, msg }] = reply.as_slice() else {
        panic!("one reply: {reply:?}");
    };
    assert_eq!(*to, peer(3));
    late.on_unicast(peer(1), msg).unwrap();
    assert_eq!(late.ring().entries(), a.ring().entries());
}

#[test]
fn an_owner_coming_back_gets_our_own_entries_again() {
    let seeds = vec![peer(1), peer(2), peer(3)];
    let mut a = Allocator::new(peer(1), universe(), InitMode::Seed(seeds));
    a.set_reachable([peer(2), peer(3)].into());
    a.set_reachable([peer(2)].into());
    a.set_reachable([peer(2), peer(9)].into());
    assert!(
        a.take_outputs().is_empty(),
        "a peer leaving or a new one: nothing"
    );
    a.set_reachable([peer(2), peer(3), peer(9)].into());
    let out = a.take_outputs();
    let [Output::Broadcast(Gossip::RingDelta(d))] = out.as_slice() else {
        panic!("one delta: {out:?}");
    };
    assert!(d.entries.iter().all(|e| e.peer == peer(1)) && !d.entries.is_empty());
}

#[test]
fn reachability_by_changes_does_what_the_whole_set_does() {
    use std::collections::BTreeSet;
    let mut rng = StdRng::seed_from_u64(15);
    let seeds = vec![peer(1), peer(2), peer(3)];
    let mut whole = Allocator::new(peer(1), universe(), InitMode::Seed(seeds.clone()));
    let mut by_changes = Allocator::new(peer(1), universe(), InitMode::Seed(seeds));
    let mut held: BTreeSet<PeerName> = BTreeSet::new();
    for step in 0..300 {
        let mut now = BTreeSet::new();
        for i in 2..9u64 {
            if rng.random_bool(0.5) {
                now.insert(peer(i));
            }
        }
        let added: Vec<PeerName> = now.difference(&held).copied().collect();
        let removed: Vec<PeerName> = held.difference(&now).copied().collect();
        whole.set_reachable(now.clone());
        by_changes.reachable_changed(&added, &removed);
        assert_eq!(
            whole.take_outputs(),
            by_changes.take_outputs(),
            "step {step}"
        );
        held = now;
    }
}
