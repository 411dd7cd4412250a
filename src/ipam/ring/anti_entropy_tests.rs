//! Anti-entropy comes a period after the state last went out whole, not at fixed ticks: a
//! peer that has just passed on a whole ring or every election claim it gossips does not
//! send them all again at the next multiple of the period (at 5,000 simulated peers those
//! repeats were a quarter of all messages, and every peer sent them in the same round).

use super::allocator::FULL_GOSSIP_TICKS;
use super::ring_tests::{peer, universe};
use super::*;

/// Ticks `a` until its tick counter reaches `until`, returning each tick's outputs.
fn tick_until(a: &mut Allocator, from: u64, until: u64) -> Vec<(u64, Vec<Output>)> {
    (from..=until)
        .map(|now| {
            a.tick();
            (now, a.take_outputs())
        })
        .collect()
}

fn whole_rings(outputs: &[Output]) -> usize {
    outputs
        .iter()
        .filter(|o| matches!(o, Output::Broadcast(Gossip::Ring(_))))
        .count()
}

fn election_gossip(outputs: &[Output]) -> usize {
    outputs
        .iter()
        .filter(|o| matches!(o, Output::Broadcast(Gossip::Paxos(s)) if !s.is_empty()))
        .count()
}

fn claims_to(outputs: &[Output], proposer: PeerName) -> usize {
    outputs
        .iter()
        .filter(|o| matches!(o, Output::Send { to, msg: Unicast::Paxos(_) } if *to == proposer))
        .count()
}

#[test]
fn a_ring_passed_on_whole_puts_off_the_next_whole_ring() {
    let seeds = vec![peer(1), peer(2)];
    let owner = Allocator::new(peer(1), universe(), InitMode::Seed(seeds));
    let mut late = Allocator::new(peer(3), universe(), InitMode::Observer);
    late.relay_merged(true);
    let quiet = tick_until(&mut late, 1, 5);
    assert!(quiet.iter().all(|(_, o)| o.is_empty()), "{quiet:?}");
    // At tick 5 it adopts the ring and passes it on whole, as a complete delta.
    late.on_gossip(peer(1), &Gossip::Ring(owner.ring().clone()))
        .unwrap();
    let passed = late.take_outputs();
    assert!(
        passed
            .iter()
            .any(|o| matches!(o, Output::Broadcast(Gossip::RingDelta(d)) if d.is_complete())),
        "{passed:?}"
    );
    // The next whole ring is a period later: not at tick 10, at tick 15.
    let when: Vec<u64> = tick_until(&mut late, 6, 5 + 2 * FULL_GOSSIP_TICKS)
        .into_iter()
        .filter(|(_, o)| whole_rings(o) > 0)
        .map(|(now, _)| now)
        .collect();
    assert_eq!(when, [5 + FULL_GOSSIP_TICKS, 5 + 2 * FULL_GOSSIP_TICKS]);
}

#[test]
fn election_gossip_that_held_every_claim_puts_off_the_next_regossip() {
    let mut proposer = Allocator::new(peer(1), universe(), InitMode::consensus(3));
    proposer.prime();
    let proposal = proposer
        .take_outputs()
        .into_iter()
        .find_map(|o| match o {
            Output::Broadcast(Gossip::Paxos(s)) if !s.is_empty() => Some(s),
            _ => None,
        })
        .expect("the proposer gossips its proposal");
    let mut acceptor = Allocator::new(peer(2), universe(), InitMode::consensus(3));
    acceptor.relay_merged(true);
    tick_until(&mut acceptor, 1, 5);
    // At tick 5 it promises (to the proposer) and passes the proposal on: every claim its
    // gossip carries.
    acceptor
        .on_gossip(peer(1), &Gossip::Paxos(proposal.clone()))
        .unwrap();
    let out = acceptor.take_outputs();
    assert_eq!((election_gossip(&out), claims_to(&out, peer(1))), (1, 1));
    assert!(acceptor.paxos().is_whole(&proposal, false));
    let ticks = tick_until(&mut acceptor, 6, 5 + FULL_GOSSIP_TICKS);
    let at = |what: fn(&[Output]) -> bool| -> Vec<u64> {
        ticks
            .iter()
            .filter(|(_, o)| what(o))
            .map(|(now, _)| *now)
            .collect()
    };
    // The claims go out again a period after they last did (tick 15, not 10); the
    // acceptor's own claims still go to the proposer at every multiple of the period.
    assert_eq!(at(|o| election_gossip(o) > 0), [5 + FULL_GOSSIP_TICKS]);
    assert_eq!(at(|o| claims_to(o, peer(1)) > 0), [FULL_GOSSIP_TICKS]);
}

#[test]
fn only_a_delta_with_every_gossiped_claim_is_whole() {
    let mut a = Paxos::elector(peer(1), 2);
    let mut b = Paxos::elector(peer(2), 2);
    a.propose();
    b.propose();
    let mut c = Paxos::elector(peer(3), 2);
    c.merge(&a.take_changed(false));
    c.merge(&b.take_changed(false));
    // c knows two proposers' claims (and its own promise, which gossip does not carry).
    let both = c.take_changed(false);
    assert_eq!(both.len(), 2);
    assert!(c.is_whole(&both, false));
    let one: PaxosState = both.into_iter().take(1).collect();
    assert!(!c.is_whole(&one, false));
    // With `own_only` only a proposer's own claim is carried: c has none.
    assert!(c.is_whole(&PaxosState::new(), true));
    assert!(a.is_whole(&a.state().clone(), true));
}

#[test]
fn a_peer_reached_during_the_election_hears_it_at_once() {
    // The proposal goes out while the mesh reaches nobody: lost.
    let mut proposer = Allocator::new(peer(1), universe(), InitMode::consensus(2));
    proposer.set_reachable(Default::default());
    proposer.prime();
    assert_eq!(election_gossip(&proposer.take_outputs()), 1);
    // A peer reached later gets it now, not at the next period.
    proposer.reachable_changed(&[peer(2)], &[]);
    assert_eq!(election_gossip(&proposer.take_outputs()), 1);
    // The same peer again, or one leaving, is no news.
    proposer.reachable_changed(&[peer(2)], &[]);
    proposer.reachable_changed(&[], &[peer(2)]);
    assert_eq!(election_gossip(&proposer.take_outputs()), 0);

    // An observer's ask for a ring, likewise.
    let asks = |o: &[Output]| {
        o.iter()
            .filter(|o| matches!(o, Output::Broadcast(Gossip::Paxos(s)) if s.is_empty()))
            .count()
    };
    let mut observer = Allocator::new(peer(3), universe(), InitMode::Observer);
    observer.set_reachable(Default::default());
    assert_eq!(observer.allocate("c1", universe()), Ok(None));
    assert_eq!(asks(&observer.take_outputs()), 1);
    observer.set_reachable([peer(1)].into());
    assert_eq!(asks(&observer.take_outputs()), 1);
}
