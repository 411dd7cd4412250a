//! Many peers' allocators over an in-memory network that loses, duplicates and reorders
//! messages, driven by seeded random schedules (peers join, partition, heal, restart from
//! persisted state, die and are removed with rmpeer on exactly one survivor, reset, allocate
//! and free). After every step: no address is held twice, peers' spaces never overlap, rings
//! are well formed; once healed and quiet, all rings converge and waiting allocations that
//! can be served are served. The network itself lives in `tests/ring_sim`.
//!
//! `WEAVE_SIM_SCHEDULES=N` sets the number of schedules; `WEAVE_SIM_SEED` the first seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
#[path = "ring_sim/mod.rs"]
mod sim;

use sim::{Net, Stats};
use weave::ipam::ring::{AddrRange, InitMode, PeerName};

struct Outcome {
    steps: usize,
    allocations: usize,
    stats: Stats,
}

fn run_schedule(seed: u64) -> Outcome {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let prefix = [24u32, 26, 27][rng.random_range(0..3)];
    let universe =
        AddrRange::from_cidr(&format!("10.{}.0.0/{prefix}", rng.random_range(0..200u32))).unwrap();
    let mut net = Net::new(seed, universe);
    net.loss = [0.0, 0.1, 0.3][rng.random_range(0..3)];
    net.duplicate = [0.0, 0.05, 0.2][rng.random_range(0..3)];
    let initial = rng.random_range(1..=5usize);
    let names: Vec<PeerName> = (0..initial).map(|_| net.fresh_name()).collect();
    let seeded = rng.random_bool(0.3);
    for &n in &names {
        let mode = if seeded {
            InitMode::Seed(names.clone())
        } else {
            InitMode::consensus(initial)
        };
        net.add(n, mode);
    }
    let steps = rng.random_range(40..160);
    let mut allocations = 0;
    for _ in 0..steps {
        let Some(who) = net.random_live() else { break };
        match rng.random_range(0..100) {
            0..=29 => {
                let within = match rng.random_range(0..4) {
                    0 => AddrRange::new(universe.start, universe.start + universe.size() / 2),
                    1 => AddrRange::new(universe.start + universe.size() / 2, universe.end),
                    _ => universe.host_range(),
                };
                net.allocate(who, within);
                allocations += 1;
            }
            30..=39 => net.free_random(who),
            40..=59 => net.round(true),
            60..=74 => {
                for _ in 0..rng.random_range(1..20) {
                    net.deliver_one(true);
                }
            }
            75..=79 => {
                for n in net.nodes.values_mut() {
                    n.group = rng.random_range(0..2);
                }
                net.stats.partitions += 1;
            }
            80..=83 => {
                for n in net.nodes.values_mut() {
                    n.group = 0;
                }
            }
            84..=87 => net.restart(who),
            88..=89 if net.nodes.len() < 7 => {
                let name = net.fresh_name();
                net.add(name, InitMode::Observer);
                net.stats.joins += 1;
            }
            90..=91 if net.nodes.len() > 1 && who_has_ring(&net, who) => net.kill(who),
            92..=94 => net.rmpeer_one(),
            95 if net.nodes.len() > 1 && who_has_ring(&net, who) => net.reset(who),
            _ => net.round(true),
        }
        net.check();
    }
    while !net.dead.is_empty() {
        net.rmpeer_one();
        net.check();
    }
    net.quiesce("end of schedule");
    check_waiting_allocations_are_served(&mut net);
    Outcome {
        steps,
        allocations,
        stats: net.stats,
    }
}

/// Only peers that know the ring may die: an elector lost before the ring exists could leave
/// the survivors without a quorum forever, which Weave answers with operator action too.
fn who_has_ring(net: &Net, who: PeerName) -> bool {
    net.nodes[&who].alloc.has_ring()
}

/// Liveness: once quiet, a waiting allocation is served whenever live peers have free
/// addresses in its range.
fn check_waiting_allocations_are_served(net: &mut Net) {
    for _ in 0..80 {
        let servable = net.nodes.values().any(|n| {
            n.alloc.pending().iter().any(|(_, within)| {
                net.nodes
                    .values()
                    .any(|m| m.alloc.space().free_count_in(*within) > 0)
            })
        });
        if !servable {
            return;
        }
        net.round(false);
        net.check();
    }
    let waiting: Vec<String> = net
        .nodes
        .values()
        .map(|n| {
            let a = &n.alloc;
            format!(
                "{}: waiting {:?} space {:?} allocated {:?}",
                a.me(),
                a.pending(),
                a.space().owned(),
                a.allocations()
            )
        })
        .collect();
    eprintln!(
        "ring: {:?}",
        net.nodes
            .values()
            .next()
            .map(|n| n.alloc.ring().entries().to_vec())
    );
    panic!(
        "seed {}: allocations still waiting although space is free:\n{}",
        net.seed,
        waiting.join("\n")
    );
}

#[test]
fn random_schedules_keep_allocations_unique_and_converge() {
    let schedules: u64 = std::env::var("WEAVE_SIM_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4000);
    let first: u64 = std::env::var("WEAVE_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let (mut steps, mut allocations, mut stats) = (0, 0, Stats::default());
    for seed in first..first + schedules {
        let o = run_schedule(seed);
        steps += o.steps;
        allocations += o.allocations;
        stats.add(&o.stats);
    }
    println!("ipam ring simulation: {schedules} schedules, {steps} steps, {allocations} allocation requests");
    println!("ipam ring simulation exercised: {stats:?}");
    assert!(
        stats.rmpeers > 0
            && stats.restarts > 0
            && stats.ring_replies > 0
            && stats.resets > 0
            && stats.partitions > 0
    );
}

/// Schedules that once failed, beyond the seeds the test runs by default: each runs every
/// time.
const ONCE_FAILED: &[u64] = &[
    // A ring delta's new token was taken over a stale copy of the entry it was cut from: a
    // ring nobody had, which other peers refused to merge (fixed by the deltas carrying
    // that entry's version).
    17389, 38255,
];

#[test]
fn schedules_that_once_failed_pass() {
    for &seed in ONCE_FAILED {
        run_schedule(seed);
    }
}

fn report_convergence(n: usize) {
    let c = sim::converge(n, 3, 200).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.owners > n / 2, "ring split among a quorum at least");
    let (rounds, messages) = (c.rounds, c.messages);
    println!("ipam ring convergence: {n} peers agreed after {rounds} rounds, {messages} messages");
    assert!(rounds <= 60, "{n} peers took {rounds} rounds");
}

#[test]
fn ten_and_a_hundred_peers_converge() {
    report_convergence(10);
    report_convergence(100);
}

#[test]
fn a_thousand_peers_converge() {
    report_convergence(1000);
}

/// The byte counts of the scale bench: the sizer, which encodes each shared list once, must
/// give every message's full JSON length.
#[test]
fn sizes_are_the_full_encoded_lengths() {
    use weave::ipam::ring::{Allocator, Gossip, Output, Ring, Unicast};
    fn json_len<T: serde::Serialize>(m: &T) -> u64 {
        serde_json::to_vec(m).unwrap().len() as u64
    }
    let universe = AddrRange::from_cidr("10.32.0.0/24").unwrap();
    let names: Vec<PeerName> = (1..=5).map(|n| PeerName::from_u64(n).unwrap()).collect();
    let mut a = Allocator::new(names[0], universe, InitMode::Seed(names.clone()));
    let whole = a.ring().clone();
    a.allocate("c1", universe).unwrap();
    let partial = a.take_outputs().into_iter().find_map(|o| match o {
        Output::Broadcast(g @ Gossip::RingDelta(_)) => Some(g),
        _ => None,
    });
    let partial = partial.expect("an allocation gossips a delta");
    let mut fresh = Ring::new(universe, names[1]);
    fresh.claim_for_peers(&names).unwrap();
    let complete = Gossip::RingDelta(fresh.take_delta().expect("a new ring is a change"));
    let mut sizer = sim::size::Sizer::default();
    for g in [
        Gossip::Ring(whole.clone()),
        partial,
        complete,
        Gossip::Paxos(Default::default()),
    ] {
        assert_eq!(sizer.gossip(&g), json_len(&g), "{g:?}");
        assert_eq!(sizer.gossip(&g), json_len(&g), "asked again: {g:?}");
    }
    for u in [
        Unicast::Ring(whole.clone()),
        Unicast::RingReply(a.ring().clone()),
        Unicast::SpaceDenied(whole),
        Unicast::RingRequest,
    ] {
        assert_eq!(sizer.unicast(&u), json_len(&u), "{u:?}");
    }
}
