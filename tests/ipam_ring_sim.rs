//! Many peers' allocators over an in-memory network that loses, duplicates and reorders
//! messages, driven by seeded random schedules (peers join, partition, heal, restart from
//! persisted state, die and are removed with rmpeer on exactly one survivor, reset, allocate
//! and free). After every step: no address is held twice, peers' spaces never overlap, rings
//! are well formed; once healed and quiet, all rings converge and waiting allocations that
//! can be served are served.
//!
//! `WEAVE_SIM_SCHEDULES=N` sets the number of schedules; `WEAVE_SIM_SEED` the first seed.

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use weave::ipam::ring::{AddrRange, Allocator, Gossip, InitMode, Output, PeerName, Unicast};

enum Payload {
    /// Shared: one broadcast goes to many peers.
    Gossip(Rc<Gossip>),
    Unicast(Unicast),
}

struct Message {
    from: PeerName,
    to: PeerName,
    payload: Payload,
}

struct Node {
    alloc: Allocator,
    mode: InitMode,
    /// Partition group: messages only flow inside a group.
    group: u32,
}

struct Net {
    universe: AddrRange,
    nodes: BTreeMap<PeerName, Node>,
    inflight: Vec<Message>,
    rng: StdRng,
    loss: f64,
    duplicate: f64,
    /// Deliver each broadcast to this many random peers (mesh-like gossip) instead of all.
    fanout: Option<usize>,
    /// With `fanout`: each peer's latest gossip not yet sent, sent once per round.
    unsent_gossip: BTreeMap<PeerName, Rc<Gossip>>,
    next_peer: u64,
    next_container: u64,
    delivered: u64,
    /// Peers gone for good (killed, removed, reset): names never reused.
    gone: BTreeSet<PeerName>,
    /// Killed peers not yet removed with rmpeer.
    dead: Vec<PeerName>,
    seed: u64,
    stats: Stats,
}

/// What a run exercised, so a green run shows it tested something.
#[derive(Default, Debug)]
struct Stats {
    restarts: usize,
    kills: usize,
    rmpeers: usize,
    resets: usize,
    joins: usize,
    partitions: usize,
    space_requests: usize,
    ring_replies: usize,
    lost: usize,
    duplicated: usize,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.restarts += o.restarts;
        self.kills += o.kills;
        self.rmpeers += o.rmpeers;
        self.resets += o.resets;
        self.joins += o.joins;
        self.partitions += o.partitions;
        self.space_requests += o.space_requests;
        self.ring_replies += o.ring_replies;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
    }
}

impl Net {
    fn new(seed: u64, universe: AddrRange) -> Self {
        Net {
            universe,
            nodes: BTreeMap::new(),
            inflight: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
            loss: 0.0,
            duplicate: 0.0,
            fanout: None,
            unsent_gossip: BTreeMap::new(),
            next_peer: 1,
            next_container: 0,
            delivered: 0,
            gone: BTreeSet::new(),
            dead: Vec::new(),
            seed,
            stats: Stats::default(),
        }
    }

    fn fresh_name(&mut self) -> PeerName {
        // Spread names out so their order differs from creation order.
        let n = self.next_peer;
        self.next_peer += 1;
        PeerName::new((n * 0x9e37_79b9) % PeerName::MAX).unwrap()
    }

    fn add(&mut self, name: PeerName, mode: InitMode) {
        let alloc = Allocator::new(name, self.universe, mode.clone());
        self.nodes.insert(
            name,
            Node {
                alloc,
                mode,
                group: 0,
            },
        );
    }

    fn live(&self) -> Vec<PeerName> {
        self.nodes.keys().copied().collect()
    }

    fn random_live(&mut self) -> Option<PeerName> {
        let live = self.live();
        live.choose(&mut self.rng).copied()
    }

    /// Moves a node's outputs into the network.
    fn collect(&mut self, name: PeerName) {
        let Some(node) = self.nodes.get_mut(&name) else {
            return;
        };
        let group = node.group;
        for out in node.alloc.take_outputs() {
            match out {
                Output::Broadcast(g) if self.fanout.is_some() => {
                    // Gossip is full state: a later broadcast supersedes an unsent one.
                    self.unsent_gossip.insert(name, Rc::new(g));
                }
                Output::Broadcast(g) => {
                    let g = Rc::new(g);
                    let targets: Vec<PeerName> = self
                        .nodes
                        .iter()
                        .filter(|(p, n)| **p != name && n.group == group)
                        .map(|(p, _)| *p)
                        .collect();
                    for to in targets {
                        self.inflight.push(Message {
                            from: name,
                            to,
                            payload: Payload::Gossip(Rc::clone(&g)),
                        });
                    }
                }
                Output::Send { to, msg } => {
                    self.inflight.push(Message {
                        from: name,
                        to,
                        payload: Payload::Unicast(msg),
                    });
                }
                Output::Allocated { .. } | Output::Cancelled { .. } => {}
            }
        }
    }

    /// Delivers one random in-flight message (reordering), maybe losing or duplicating it.
    fn deliver_one(&mut self, lossy: bool) {
        if self.inflight.is_empty() {
            return;
        }
        let i = self.rng.random_range(0..self.inflight.len());
        let msg = self.inflight.swap_remove(i);
        self.deliver(msg, lossy);
    }

    fn deliver(&mut self, msg: Message, lossy: bool) {
        if lossy && self.rng.random_bool(self.loss) {
            self.stats.lost += 1;
            return;
        }
        let connected = match (self.nodes.get(&msg.from), self.nodes.get(&msg.to)) {
            (Some(a), Some(b)) => a.group == b.group,
            // A departed (reset) peer's last words still arrive.
            (None, Some(_)) => self.gone.contains(&msg.from) && !self.dead.contains(&msg.from),
            _ => false,
        };
        if !connected {
            return;
        }
        match &msg.payload {
            Payload::Unicast(Unicast::SpaceRequest(_)) => self.stats.space_requests += 1,
            Payload::Unicast(Unicast::Ring(_)) => self.stats.ring_replies += 1,
            _ => {}
        }
        if lossy && self.rng.random_bool(self.duplicate) {
            self.stats.duplicated += 1;
            let copy = match &msg.payload {
                Payload::Gossip(g) => Payload::Gossip(Rc::clone(g)),
                Payload::Unicast(u) => Payload::Unicast(u.clone()),
            };
            self.inflight.push(Message {
                from: msg.from,
                to: msg.to,
                payload: copy,
            });
        }
        self.delivered += 1;
        let node = self.nodes.get_mut(&msg.to).unwrap();
        let result = match &msg.payload {
            Payload::Gossip(g) => node.alloc.on_gossip(msg.from, g),
            Payload::Unicast(u) => node.alloc.on_unicast(msg.from, u),
        };
        if let Err(e) = result {
            panic!(
                "seed {}: {} refused a message from {}: {e}",
                self.seed, msg.to, msg.from
            );
        }
        self.collect(msg.to);
    }

    /// Mesh-like gossip: each peer's latest state goes to `fanout` random peers of its group.
    fn send_unsent_gossip(&mut self) {
        let Some(k) = self.fanout else { return };
        for (from, g) in std::mem::take(&mut self.unsent_gossip) {
            let Some(group) = self.nodes.get(&from).map(|n| n.group) else {
                continue;
            };
            let peers: Vec<PeerName> = self
                .nodes
                .iter()
                .filter(|(p, n)| **p != from && n.group == group)
                .map(|(p, _)| *p)
                .collect();
            for to in peers.choose_multiple(&mut self.rng, k).copied() {
                self.inflight.push(Message {
                    from,
                    to,
                    payload: Payload::Gossip(Rc::clone(&g)),
                });
            }
        }
    }

    fn tick_all(&mut self) {
        for name in self.live() {
            self.nodes.get_mut(&name).unwrap().alloc.tick();
            self.collect(name);
        }
    }

    /// One round: every peer ticks, then the messages of the round are delivered (replies
    /// they cause wait for the next round).
    fn round(&mut self, lossy: bool) {
        self.tick_all();
        self.send_unsent_gossip();
        // What is sent while delivering this batch belongs to the next round.
        let mut batch = std::mem::take(&mut self.inflight);
        batch.shuffle(&mut self.rng);
        for msg in batch {
            self.deliver(msg, lossy);
        }
    }

    fn converged(&self) -> bool {
        let mut rings = self.nodes.values().map(|n| n.alloc.ring());
        let Some(first) = rings.next() else {
            return true;
        };
        rings.all(|r| r.entries() == first.entries() && r.seeds() == first.seeds())
    }

    /// Heals every partition and runs lossless rounds until all rings agree.
    fn quiesce(&mut self, what: &str) -> usize {
        for n in self.nodes.values_mut() {
            n.group = 0;
        }
        for rounds in 1..=60 {
            self.round(false);
            self.check();
            if self.converged() {
                return rounds;
            }
        }
        let rings: Vec<String> = self
            .nodes
            .values()
            .map(|n| format!("{}: {:?}", n.alloc.me(), n.alloc.ring().entries()))
            .collect();
        panic!(
            "seed {}: rings did not converge ({what}):\n{}",
            self.seed,
            rings.join("\n")
        );
    }

    /// Safety invariants over all live peers.
    fn check(&self) {
        let seed = self.seed;
        let mut holder: BTreeMap<u32, (PeerName, &str)> = BTreeMap::new();
        let mut spaces: Vec<(AddrRange, PeerName)> = Vec::new();
        for (name, node) in &self.nodes {
            let a = &node.alloc;
            a.ring()
                .check_invariants()
                .unwrap_or_else(|e| panic!("seed {seed}: {name}'s ring: {e}"));
            assert_eq!(
                a.space().owned(),
                a.ring().owned_ranges(*name).as_slice(),
                "seed {seed}: {name} space vs ring"
            );
            for (id, addrs) in a.allocations() {
                for addr in addrs {
                    assert!(
                        a.space().owns(*addr),
                        "seed {seed}: {name} holds {addr} outside its space"
                    );
                    if let Some((other, other_id)) = holder.insert(*addr, (*name, id)) {
                        panic!("seed {seed}: address {addr} held by {other}/{other_id} and {name}/{id}");
                    }
                }
            }
            spaces.extend(a.space().owned().iter().map(|r| (*r, *name)));
        }
        spaces.sort();
        for w in spaces.windows(2) {
            assert!(
                w[0].0.end <= w[1].0.start,
                "seed {seed}: {} and {} both own {:?}/{:?}",
                w[0].1,
                w[1].1,
                w[0].0,
                w[1].0
            );
        }
    }

    fn allocate(&mut self, name: PeerName, within: AddrRange) {
        self.next_container += 1;
        let id = format!("c{}", self.next_container);
        let node = self.nodes.get_mut(&name).unwrap();
        node.alloc.allocate(&id, within).unwrap();
        self.collect(name);
    }

    fn free_random(&mut self, name: PeerName) {
        let node = self.nodes.get_mut(&name).unwrap();
        let ids: Vec<String> = node.alloc.allocations().keys().cloned().collect();
        if let Some(id) = ids.choose(&mut self.rng) {
            node.alloc.delete(id).unwrap();
            self.collect(name);
        }
    }

    /// Crash and start again from the persisted state; connections drop.
    fn restart(&mut self, name: PeerName) {
        let node = self.nodes.remove(&name).unwrap();
        let saved = node.alloc.persist();
        self.stats.restarts += 1;
        self.inflight.retain(|m| m.from != name && m.to != name);
        let alloc = Allocator::restore(name, self.universe, node.mode.clone(), &saved)
            .unwrap_or_else(|e| panic!("seed {}: restore {name}: {e}", self.seed));
        assert_eq!(alloc.ring(), node.alloc.ring());
        assert_eq!(alloc.allocations(), node.alloc.allocations());
        self.nodes.insert(name, Node { alloc, ..node });
    }

    fn kill(&mut self, name: PeerName) {
        self.nodes.remove(&name);
        self.inflight.retain(|m| m.from != name && m.to != name);
        self.gone.insert(name);
        self.dead.push(name);
        self.stats.kills += 1;
    }

    /// `weave rmpeer` of a dead peer, done on exactly one survivor once the ring is settled.
    fn rmpeer_one(&mut self) {
        let Some(dead) = self.dead.pop() else { return };
        self.quiesce("before rmpeer");
        let Some(on) = self.random_live() else { return };
        self.nodes.get_mut(&on).unwrap().alloc.rmpeer(dead).unwrap();
        self.stats.rmpeers += 1;
        self.collect(on);
    }

    /// `weave reset`: give our ranges to an heir and leave.
    fn reset(&mut self, name: PeerName) {
        let live = self.live();
        let mut node = self.nodes.remove(&name).unwrap();
        node.alloc.shutdown(&live);
        self.stats.resets += 1;
        self.nodes.insert(name, node);
        self.collect(name);
        self.nodes.remove(&name);
        self.inflight.retain(|m| m.to != name);
        self.gone.insert(name);
    }
}

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

/// Rounds and messages until `n` electors agree on a ring, gossiping to 3 random peers.
fn converge(n: usize) -> (usize, u64) {
    let universe = AddrRange::from_cidr("10.32.0.0/12").unwrap();
    let mut net = Net::new(n as u64, universe);
    net.fanout = Some(3);
    let names: Vec<PeerName> = (0..n).map(|_| net.fresh_name()).collect();
    for &p in &names {
        net.add(p, InitMode::consensus(n));
    }
    net.nodes.get_mut(&names[0]).unwrap().alloc.prime();
    net.collect(names[0]);
    for round in 1..=200 {
        net.round(false);
        if net.nodes.values().all(|p| p.alloc.has_ring()) && net.converged() {
            let ring = net.nodes[&names[0]].alloc.ring();
            assert!(
                ring.peers().len() > n / 2,
                "ring split among a quorum at least"
            );
            return (round, net.delivered);
        }
    }
    panic!("{n} peers did not converge in 200 rounds");
}

fn report_convergence(n: usize) {
    let (rounds, messages) = converge(n);
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
