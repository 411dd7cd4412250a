//! An in-memory network of many peers' allocators for simulations and benchmarks: it
//! loses, duplicates and reorders messages, partitions and heals, restarts peers from their
//! persisted state, and checks the safety invariants after every step. Shared by the
//! randomized test (tests/ipam_ring_sim.rs) and the scale benchmark (benches/scale.rs), so
//! both measure the same thing. Pure: no I/O, no clocks. Kept out of the library: nothing
//! the daemon ships needs it.

// Each of the two users takes part of it.
#![allow(dead_code)]

pub mod nodes;
pub mod size;

use nodes::{Nodes, Slot};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use weave::ipam::ring::{AddrRange, Allocator, Gossip, InitMode, Output, PeerName, Unicast};

pub enum Payload {
    /// Shared: one broadcast goes to many peers.
    Gossip(Rc<Gossip>),
    /// Boxed: a ring by value would make every message several times larger to move.
    Unicast(Box<Unicast>),
}

pub struct Message {
    pub from: PeerName,
    pub to: PeerName,
    /// Where `from` and `to` are in [`Net::nodes`].
    pub from_slot: Slot,
    pub to_slot: Slot,
    pub payload: Payload,
    /// Its JSON size (as the router sends it) when the network counts bytes, else 0.
    pub size: u64,
}

pub struct Node {
    pub alloc: Allocator,
    pub mode: InitMode,
    /// Partition group: messages only flow inside a group.
    pub group: u32,
    /// With [`Net::fanout`]: this peer's gossip not yet sent, sent once per round.
    unsent: Vec<Gossip>,
}

pub struct Net {
    pub universe: AddrRange,
    pub nodes: Nodes,
    pub inflight: Vec<Message>,
    /// The last round's emptied batch, kept for its capacity.
    spare: Vec<Message>,
    pub rng: StdRng,
    pub loss: f64,
    pub duplicate: f64,
    /// Deliver each broadcast to this many random peers (mesh-like gossip) instead of all.
    pub fanout: Option<usize>,
    /// A round's messages by recipient slot (kept between rounds for their capacity).
    buckets: Vec<Vec<Message>>,
    pub next_peer: u64,
    pub next_container: u64,
    pub delivered: u64,
    /// Count the bytes of delivered messages (each distinct ring list is encoded once).
    pub count_bytes: bool,
    pub delivered_bytes: u64,
    /// Measures what `count_bytes` counts.
    sizer: size::Sizer,
    /// Peers gone for good (killed, removed, reset): names never reused.
    pub gone: BTreeSet<PeerName>,
    /// Killed peers not yet removed with rmpeer.
    pub dead: Vec<PeerName>,
    pub seed: u64,
    pub stats: Stats,
}

/// What a run exercised, so a green run shows it tested something.
#[derive(Default, Debug)]
pub struct Stats {
    pub restarts: usize,
    pub kills: usize,
    pub rmpeers: usize,
    pub resets: usize,
    pub joins: usize,
    pub partitions: usize,
    pub space_requests: usize,
    pub ring_replies: usize,
    /// Whole rings asked for because a delta did not fit.
    pub ring_requests: usize,
    pub lost: usize,
    pub duplicated: usize,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.restarts += o.restarts;
        self.kills += o.kills;
        self.rmpeers += o.rmpeers;
        self.resets += o.resets;
        self.joins += o.joins;
        self.partitions += o.partitions;
        self.space_requests += o.space_requests;
        self.ring_replies += o.ring_replies;
        self.ring_requests += o.ring_requests;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
    }
}

impl Net {
    pub fn new(seed: u64, universe: AddrRange) -> Self {
        Net {
            universe,
            nodes: Nodes::default(),
            inflight: Vec::new(),
            spare: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
            loss: 0.0,
            duplicate: 0.0,
            fanout: None,
            buckets: Vec::new(),
            next_peer: 1,
            next_container: 0,
            delivered: 0,
            count_bytes: false,
            delivered_bytes: 0,
            sizer: size::Sizer::default(),
            gone: BTreeSet::new(),
            dead: Vec::new(),
            seed,
            stats: Stats::default(),
        }
    }

    pub fn fresh_name(&mut self) -> PeerName {
        // Spread names out so their order differs from creation order.
        let n = self.next_peer;
        self.next_peer += 1;
        PeerName::from_u64((n * 0x9e37_79b9) % PeerName::MAX).unwrap()
    }

    pub fn add(&mut self, name: PeerName, mode: InitMode) {
        let mut alloc = Allocator::new(name, self.universe, mode.clone());
        alloc.relay_merged(true);
        self.nodes.insert(
            name,
            Node {
                alloc,
                mode,
                group: 0,
                unsent: Vec::new(),
            },
        );
    }

    pub fn live(&self) -> Vec<PeerName> {
        self.nodes.keys().collect()
    }

    pub fn random_live(&mut self) -> Option<PeerName> {
        let live = self.live();
        live.choose(&mut self.rng).copied()
    }

    /// Moves a node's outputs into the network.
    pub fn collect(&mut self, name: PeerName) {
        let Some(slot) = self.nodes.slot(&name) else {
            return;
        };
        self.route(slot, name);
    }

    /// Puts the outputs of the peer `name` in `slot` into the network.
    fn route(&mut self, slot: Slot, name: PeerName) {
        let Some(node) = self.nodes.at_mut(slot) else {
            return;
        };
        let (group, outputs) = (node.group, node.alloc.take_outputs());
        for out in outputs {
            match out {
                Output::Broadcast(g) if self.fanout.is_some() => {
                    // A later whole ring supersedes anything unsent; deltas add up.
                    let Some(node) = self.nodes.at_mut(slot) else {
                        continue;
                    };
                    let unsent = &mut node.unsent;
                    match (unsent.last_mut(), g) {
                        (Some(Gossip::Paxos(earlier)), Gossip::Paxos(later)) => {
                            earlier.extend(later);
                        }
                        (Some(Gossip::RingDelta(earlier)), Gossip::RingDelta(later)) => {
                            earlier.absorb(later);
                        }
                        (_, Gossip::Ring(ring)) => *unsent = vec![Gossip::Ring(ring)],
                        (_, later) => unsent.push(later),
                    }
                }
                Output::Broadcast(g) => {
                    let size = self.gossip_size(&g);
                    let g = Rc::new(g);
                    let targets: Vec<(Slot, PeerName)> = self
                        .nodes
                        .by_slot()
                        .filter(|(s, _, n)| *s != slot && n.group == group)
                        .map(|(s, p, _)| (s, p))
                        .collect();
                    for (to_slot, to) in targets {
                        self.inflight.push(Message {
                            from: name,
                            to,
                            from_slot: slot,
                            to_slot,
                            payload: Payload::Gossip(Rc::clone(&g)),
                            size,
                        });
                    }
                }
                Output::Send { to, msg } => {
                    // To a peer that is not there (gone, or never was): lost.
                    let Some(to_slot) = self.nodes.slot(&to) else {
                        continue;
                    };
                    let size = if self.count_bytes {
                        self.sizer.unicast(&msg)
                    } else {
                        0
                    };
                    self.inflight.push(Message {
                        from: name,
                        to,
                        from_slot: slot,
                        to_slot,
                        payload: Payload::Unicast(Box::new(msg)),
                        size,
                    });
                }
                Output::Allocated { .. } | Output::Cancelled { .. } => {}
            }
        }
    }

    /// Delivers one random in-flight message (reordering), maybe losing or duplicating it.
    pub fn deliver_one(&mut self, lossy: bool) {
        if self.inflight.is_empty() {
            return;
        }
        let i = self.rng.random_range(0..self.inflight.len());
        let msg = self.inflight.swap_remove(i);
        self.deliver(msg, lossy);
    }

    pub fn deliver(&mut self, msg: Message, lossy: bool) {
        if lossy && self.rng.random_bool(self.loss) {
            self.stats.lost += 1;
            return;
        }
        let connected = match (self.nodes.at(msg.from_slot), self.nodes.at(msg.to_slot)) {
            (Some(a), Some(b)) => a.group == b.group,
            // A departed (reset) peer's last words still arrive.
            (None, Some(_)) => self.gone.contains(&msg.from) && !self.dead.contains(&msg.from),
            _ => false,
        };
        if !connected {
            return;
        }
        match &msg.payload {
            Payload::Unicast(u) => match **u {
                Unicast::SpaceRequest(_) => self.stats.space_requests += 1,
                Unicast::Ring(_) => self.stats.ring_replies += 1,
                Unicast::RingRequest => self.stats.ring_requests += 1,
                _ => {}
            },
            Payload::Gossip(_) => {}
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
                from_slot: msg.from_slot,
                to_slot: msg.to_slot,
                payload: copy,
                size: msg.size,
            });
        }
        self.delivered += 1;
        self.delivered_bytes += msg.size;
        let node = self.nodes.at_mut(msg.to_slot).expect("connected");
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
        self.route(msg.to_slot, msg.to);
    }

    /// Mesh-like gossip: each peer's latest state goes to `fanout` random peers of its group.
    pub fn send_unsent_gossip(&mut self) {
        let Some(k) = self.fanout else { return };
        // Members of each partition group, listed once per round (not once per sender), and
        // what each peer has to say.
        let mut groups: BTreeMap<u32, Vec<(Slot, PeerName)>> = BTreeMap::new();
        let mut said = Vec::new();
        for (slot, name, n) in self.nodes.by_slot_mut() {
            groups.entry(n.group).or_default().push((slot, name));
            if !n.unsent.is_empty() {
                said.push((slot, name, n.group, std::mem::take(&mut n.unsent)));
            }
        }
        for (from_slot, from, group, gs) in said {
            let members = &groups[&group];
            for g in gs {
                let size = self.gossip_size(&g);
                let g = Rc::new(g);
                // k distinct random peers other than the sender (all of them when fewer).
                let mut chosen: Vec<(Slot, PeerName)> = Vec::with_capacity(k);
                if members.len() <= k + 1 {
                    chosen.extend(members.iter().copied().filter(|(s, _)| *s != from_slot));
                } else {
                    while chosen.len() < k {
                        let m = members[self.rng.random_range(0..members.len())];
                        if m.0 != from_slot && !chosen.contains(&m) {
                            chosen.push(m);
                        }
                    }
                }
                for (to_slot, to) in chosen {
                    self.inflight.push(Message {
                        from,
                        to,
                        from_slot,
                        to_slot,
                        payload: Payload::Gossip(Rc::clone(&g)),
                        size,
                    });
                }
            }
        }
    }

    fn gossip_size(&mut self, g: &Gossip) -> u64 {
        if !self.count_bytes {
            return 0;
        }
        self.sizer.gossip(g)
    }

    /// Every peer ticks, in the order they joined; then what each says goes out in that
    /// order.
    pub fn tick_all(&mut self) {
        let mut ticked = Vec::with_capacity(self.nodes.slots());
        for (slot, name, node) in self.nodes.by_slot_mut() {
            node.alloc.tick();
            ticked.push((slot, name));
        }
        for (slot, name) in ticked {
            self.route(slot, name);
        }
    }

    /// One round: every peer ticks, then the messages of the round are delivered (replies
    /// they cause wait for the next round).
    pub fn round(&mut self, lossy: bool) {
        self.tick_all();
        self.send_unsent_gossip();
        // What is sent while delivering this batch belongs to the next round, so deliveries
        // to different peers commute: only each peer's own messages need a random order.
        // Delivered peer by peer (grouped by recipient slot in one pass, each group shuffled),
        // each peer's state is touched once a round instead of at random (at 5,000 peers it
        // outgrows the caches).
        let mut buckets = std::mem::take(&mut self.buckets);
        buckets.resize_with(self.nodes.slots(), Vec::new);
        let mut batch = std::mem::replace(&mut self.inflight, std::mem::take(&mut self.spare));
        for msg in batch.drain(..) {
            buckets[msg.to_slot].push(msg);
        }
        self.spare = batch;
        for bucket in buckets.iter_mut() {
            bucket.shuffle(&mut self.rng);
            for msg in bucket.drain(..) {
                self.deliver(msg, lossy);
            }
        }
        self.buckets = buckets;
    }

    pub fn converged(&self) -> bool {
        let mut rings = self.nodes.by_slot().map(|(_, _, n)| n.alloc.ring());
        let Some(first) = rings.next() else {
            return true;
        };
        rings.all(|r| r.agrees_with(first))
    }

    /// Heals every partition and runs lossless rounds until all rings agree.
    pub fn quiesce(&mut self, what: &str) -> usize {
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
    pub fn check(&self) {
        let seed = self.seed;
        let mut holder: BTreeMap<u32, (PeerName, &str)> = BTreeMap::new();
        let mut spaces: Vec<(AddrRange, PeerName)> = Vec::new();
        for (name, node) in self.nodes.iter() {
            let a = &node.alloc;
            a.ring()
                .check_invariants()
                .unwrap_or_else(|e| panic!("seed {seed}: {name}'s ring: {e}"));
            assert_eq!(
                a.space().owned(),
                a.ring().owned_ranges(name).as_slice(),
                "seed {seed}: {name} space vs ring"
            );
            for (id, addrs) in a.allocations() {
                for addr in addrs {
                    assert!(
                        a.space().owns(*addr),
                        "seed {seed}: {name} holds {addr} outside its space"
                    );
                    if let Some((other, other_id)) = holder.insert(*addr, (name, id)) {
                        panic!("seed {seed}: address {addr} held by {other}/{other_id} and {name}/{id}");
                    }
                }
            }
            spaces.extend(a.space().owned().iter().map(|r| (*r, name)));
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

    pub fn allocate(&mut self, name: PeerName, within: AddrRange) {
        self.next_container += 1;
        let id = format!("c{}", self.next_container);
        let node = self.nodes.get_mut(&name).unwrap();
        node.alloc.allocate(&id, within).unwrap();
        self.collect(name);
    }

    pub fn free_random(&mut self, name: PeerName) {
        let node = self.nodes.get_mut(&name).unwrap();
        let ids: Vec<String> = node.alloc.allocations().keys().cloned().collect();
        if let Some(id) = ids.choose(&mut self.rng) {
            node.alloc.delete(id).unwrap();
            self.collect(name);
        }
    }

    /// Crash and start again from the persisted state; connections drop.
    pub fn restart(&mut self, name: PeerName) {
        let node = self.nodes.remove(&name).unwrap();
        let saved = node.alloc.persist();
        self.stats.restarts += 1;
        self.inflight.retain(|m| m.from != name && m.to != name);
        let mut alloc = Allocator::restore(name, self.universe, node.mode.clone(), &saved)
            .unwrap_or_else(|e| panic!("seed {}: restore {name}: {e}", self.seed));
        alloc.relay_merged(true);
        assert_eq!(alloc.ring(), node.alloc.ring());
        assert_eq!(alloc.allocations(), node.alloc.allocations());
        self.nodes.insert(name, Node { alloc, ..node });
    }

    pub fn kill(&mut self, name: PeerName) {
        self.nodes.remove(&name);
        self.inflight.retain(|m| m.from != name && m.to != name);
        self.gone.insert(name);
        self.dead.push(name);
        self.stats.kills += 1;
    }

    /// `weave rmpeer` of a dead peer, done on exactly one survivor once the ring is settled.
    pub fn rmpeer_one(&mut self) {
        let Some(dead) = self.dead.pop() else { return };
        self.quiesce("before rmpeer");
        let Some(on) = self.random_live() else { return };
        self.nodes.get_mut(&on).unwrap().alloc.rmpeer(dead).unwrap();
        self.stats.rmpeers += 1;
        self.collect(on);
    }

    /// `weave reset`: give our ranges to an heir and leave.
    pub fn reset(&mut self, name: PeerName) {
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

/// How `n` electors came to agree on one ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Convergence {
    pub peers: usize,
    /// Gossip rounds until every peer had the same ring.
    pub rounds: usize,
    /// Messages delivered until then (gossip and unicast).
    pub messages: u64,
    /// Their JSON bytes, when counted (else 0).
    pub bytes: u64,
    /// Peers that own part of the ring at the end.
    pub owners: usize,
}

/// After agreement, `changes` owners each allocate one address (a new free count in one
/// entry) at once, and gossip runs until every peer has the same ring again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Churn {
    pub changes: usize,
    pub rounds: usize,
    pub messages: u64,
    pub bytes: u64,
}

/// Runs `n` electors from scratch (consensus mode, one primed) with each peer gossiping its
/// latest state to `fanout` random peers per round, until every peer has the same ring.
/// Err if that takes more than `max_rounds`.
pub fn converge(n: usize, fanout: usize, max_rounds: usize) -> Result<Convergence, String> {
    converge_seeded(n, fanout, max_rounds, n as u64)
}

/// [`converge`] with the network's random choices (gossip targets, delivery order) drawn
/// from `seed`.
pub fn converge_seeded(
    n: usize,
    fanout: usize,
    max_rounds: usize,
    seed: u64,
) -> Result<Convergence, String> {
    let (net, c) = elect(n, fanout, max_rounds, false, seed)?;
    drop(net);
    Ok(c)
}

/// [`converge`], counting bytes, then a [`Churn`] of `changes` allocations.
pub fn converge_and_churn(
    n: usize,
    fanout: usize,
    max_rounds: usize,
    changes: usize,
) -> Result<(Convergence, Churn), String> {
    let (mut net, c) = elect(n, fanout, max_rounds, true, n as u64)?;
    let (messages, bytes) = (net.delivered, net.delivered_bytes);
    let owners: Vec<PeerName> = net
        .nodes
        .iter()
        .filter(|(_, p)| !p.alloc.space().owned().is_empty())
        .map(|(name, _)| name)
        .take(changes)
        .collect();
    for &p in &owners {
        let within = net.universe;
        net.allocate(p, within);
    }
    for round in 1..=max_rounds {
        net.round(false);
        if net.converged() {
            return Ok((
                c,
                Churn {
                    changes: owners.len(),
                    rounds: round,
                    messages: net.delivered - messages,
                    bytes: net.delivered_bytes - bytes,
                },
            ));
        }
    }
    Err(format!(
        "{n} peers did not agree again in {max_rounds} rounds"
    ))
}

fn elect(
    n: usize,
    fanout: usize,
    max_rounds: usize,
    count_bytes: bool,
    seed: u64,
) -> Result<(Net, Convergence), String> {
    let universe = AddrRange::from_cidr("10.32.0.0/12").expect("valid universe");
    let mut net = Net::new(seed, universe);
    net.fanout = Some(fanout);
    net.count_bytes = count_bytes;
    let names: Vec<PeerName> = (0..n).map(|_| net.fresh_name()).collect();
    for &p in &names {
        net.add(p, InitMode::consensus(n));
    }
    net.nodes
        .get_mut(&names[0])
        .expect("first peer exists")
        .alloc
        .prime();
    net.collect(names[0]);
    for round in 1..=max_rounds {
        net.round(false);
        if net.nodes.values().all(|p| p.alloc.has_ring()) && net.converged() {
            let owners = net.nodes[&names[0]].alloc.ring().peers().len();
            let c = Convergence {
                peers: n,
                rounds: round,
                messages: net.delivered,
                bytes: net.delivered_bytes,
                owners,
            };
            return Ok((net, c));
        }
    }
    Err(format!("{n} peers did not converge in {max_rounds} rounds"))
}
