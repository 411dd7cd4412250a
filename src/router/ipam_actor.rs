//! The IPAM actor's loop (see [`super::state`] for the contract): batches of requests, gossip
//! and ticks applied to the [`Core`], persisted, then answered and sent to peers.

use super::ipam_core::{Claimed, Core};
use super::state::{IpamOptions, IpamSummary, Op, Reply, Request, CHANNEL};
use crate::api::Attachment;
use crate::ipam::journal::{self, Journal, Saved};
use crate::ipam::ring::{Gossip, Output, PeerName, Unicast};
use crate::ipam::store::{DataDir, Owned};
use crate::mesh::{GossipMessage, LivePeer, MeshHandle};
use crate::{Error, ErrorKind, Result};
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// Most requests applied before one write.
const MAX_BATCH: usize = 256;

/// Subscribes to the mesh channel and runs the actor until every handle is gone.
pub(super) async fn run(
    core: Core,
    datadir: DataDir,
    peer_name: String,
    mesh: Option<MeshHandle>,
    opts: IpamOptions,
    rx: mpsc::Receiver<Request>,
) {
    let gossip = match &mesh {
        Some(m) => match m.subscribe(CHANNEL).await {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::error!("ipam: subscribe to {CHANNEL}: {e}");
                None
            }
        },
        None => None,
    };
    let peers = mesh.as_ref().map(|m| m.peers());
    let actor = Actor {
        journal: Journal::new(Saved::default()),
        core,
        datadir,
        peer_name,
        mesh,
        opts,
        waiters: Vec::new(),
        nicknames: BTreeMap::new(),
        live: BTreeSet::new(),
        batch: 0,
    };
    actor.run(rx, gossip, peers).await;
}

enum Wait {
    Alloc {
        id: String,
        subnet: Ipv4Net,
        attachment: Option<Attachment>,
    },
    Claim {
        id: String,
        cidr: Ipv4Net,
    },
    Ring,
}

struct Waiter {
    what: Wait,
    reply: oneshot::Sender<Result<Reply>>,
    deadline: Instant,
    /// The batch it arrived in (answered with the error if that batch's write fails).
    batch: u64,
}

/// An answer ready to go once the batch is on disk; `mutating` answers become the write's
/// error if it fails.
struct Answer {
    reply: oneshot::Sender<Result<Reply>>,
    result: Result<Reply>,
    mutating: bool,
    /// For completed allocations: the id to cancel in the allocator on rollback.
    waited_id: Option<String>,
}

struct Actor {
    core: Core,
    datadir: DataDir,
    peer_name: String,
    mesh: Option<MeshHandle>,
    opts: IpamOptions,
    waiters: Vec<Waiter>,
    nicknames: BTreeMap<PeerName, String>,
    live: BTreeSet<PeerName>,
    /// What `ipam.json` holds; decides between appending a record and a snapshot.
    journal: Journal,
    batch: u64,
}

/// What woke the actor.
enum Event {
    Requests(Vec<Request>),
    Gossip(Vec<GossipMessage>),
    Tick,
    Deadline,
    Peers,
}

fn not_ready(status: &str) -> Error {
    Error::new(
        ErrorKind::TryAgainLater,
        format!("IP allocation not ready: {status}"),
    )
}

fn ring_peer(p: crate::mesh::PeerName) -> Option<PeerName> {
    PeerName::new(p.as_u64())
}

impl Actor {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Request>,
        mut gossip: Option<mpsc::Receiver<GossipMessage>>,
        mut peers: Option<watch::Receiver<Vec<LivePeer>>>,
    ) {
        self.journal = Journal::new(Saved {
            ring: self.core.alloc.persist_without_addresses(),
            owned: self.core.owned(),
            attachments: self.core.attachments.clone(),
        });
        if let Some(p) = &mut peers {
            self.update_peers(&p.borrow_and_update());
        }
        let mut tick = tokio::time::interval(self.opts.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.waiters.iter().map(|w| w.deadline).min();
            let event = tokio::select! {
                first = rx.recv() => match first {
                    Some(first) => {
                        let mut batch = vec![first];
                        while batch.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(r) => batch.push(r),
                                Err(_) => break,
                            }
                        }
                        Event::Requests(batch)
                    }
                    None => return,
                },
                Some(first) = async { gossip.as_mut()?.recv().await } => {
                    let mut batch = vec![first];
                    while let Some(Ok(m)) = gossip.as_mut().map(|g| g.try_recv()) {
                        batch.push(m);
                        if batch.len() >= MAX_BATCH {
                            break;
                        }
                    }
                    Event::Gossip(batch)
                },
                _ = tick.tick() => Event::Tick,
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => Event::Deadline,
                Some(()) = async { peers.as_mut()?.changed().await.ok() } => {
                    if let Some(p) = &mut peers {
                        self.update_peers(&p.borrow_and_update());
                    }
                    Event::Peers
                },
            };
            self.step(event).await;
        }
    }

    fn update_peers(&mut self, peers: &[LivePeer]) {
        self.live.clear();
        for p in peers {
            if let Some(name) = ring_peer(p.name) {
                self.live.insert(name);
                self.nicknames.insert(name, p.nickname.clone());
            }
        }
        self.core.alloc.set_reachable(self.live.clone());
    }

    /// The whole state as a snapshot line.
    fn encode(&self, owned: &Owned) -> Result<Vec<u8>> {
        let atts: Vec<&Attachment> = self.core.attachments.values().collect();
        DataDir::encode_ipam(
            &self.peer_name,
            self.core.universe,
            owned,
            &self.core.alloc.persist(),
            &atts,
        )
    }

    /// Applies one event, persists, then answers and sends.
    async fn step(&mut self, event: Event) {
        self.batch += 1;
        let snapshot = self.core.clone();
        let mut answers = Vec::new();
        match event {
            Event::Requests(reqs) => {
                for r in reqs {
                    self.apply(r, &mut answers);
                }
            }
            Event::Gossip(msgs) => {
                for m in msgs {
                    self.receive(m);
                }
            }
            Event::Tick => self.core.alloc.tick(),
            Event::Deadline => self.expire(&mut answers),
            Event::Peers => {}
        }
        let outputs = self.core.alloc.take_outputs();
        let mut messages = Vec::new();
        for o in outputs {
            match o {
                Output::Allocated { id, addr } => self.allocated(&id, addr, &mut answers),
                Output::Cancelled { id } => self.answer_waiters(&mut answers, |w| {
                    matches!(&w.what, Wait::Alloc { id: i, .. } if *i == id)
                        .then(|| Err(not_ready("cancelled")))
                }),
                m => messages.push(m),
            }
        }
        self.retry_claims(&mut answers);
        // Waiting claims can start an election: its messages go out too.
        messages.extend(self.core.alloc.take_outputs());
        if self.core.alloc.has_ring() {
            self.answer_waiters(&mut answers, |w| {
                matches!(w.what, Wait::Ring).then_some(Ok(Reply::Text(String::new())))
            });
        }
        if let Err(e) = self.persist().await {
            tracing::error!("{e}; rolling back this batch");
            self.core = snapshot;
            messages.clear();
            let batch = self.batch;
            self.answer_waiters(&mut answers, |w| (w.batch == batch).then(|| Err(e.clone())));
            for a in answers.iter_mut().filter(|a| a.mutating) {
                a.result = Err(e.clone());
                if let Some(id) = &a.waited_id {
                    self.core.alloc.cancel(id);
                }
            }
        }
        self.send(messages).await;
        for a in answers {
            let _ = a.reply.send(a.result);
        }
    }

    /// Makes this batch's changes durable: one appended record, or a whole snapshot when
    /// one is due (first write, compaction, or the append failed).
    async fn persist(&mut self) -> Result<()> {
        let ring = self.core.alloc.persist_without_addresses();
        let owned = self.core.owned();
        let delta = self.journal.diff(&ring, &owned, &self.core.attachments);
        if delta.is_empty() {
            return Ok(());
        }
        let path = self.datadir.ipam_path();
        if let Some(line) = self.journal.record(&delta)? {
            let p = path.clone();
            let len = line.len();
            match blocking(move || journal::append(&p, &line)).await {
                Ok(()) => {
                    self.journal.appended(delta, len);
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!("save ipam state: {e}; writing a snapshot instead");
                    self.journal.append_failed();
                }
            }
        }
        let bytes = self.encode(&owned)?;
        let len = bytes.len();
        let dd = self.datadir.clone();
        blocking(move || dd.write_ipam(&bytes)).await?;
        self.journal.snapshotted(
            Saved {
                ring,
                owned,
                attachments: self.core.attachments.clone(),
            },
            len,
        );
        Ok(())
    }

    async fn send(&self, messages: Vec<Output>) {
        let Some(mesh) = &self.mesh else { return };
        for m in messages {
            let r = match m {
                Output::Broadcast(g) => match serde_json::to_vec(&g) {
                    Ok(b) => mesh.broadcast(CHANNEL, b).await,
                    Err(e) => Err(Error::new(ErrorKind::Internal, e.to_string())),
                },
                Output::Send { to, msg } => {
                    let to = crate::mesh::PeerName::from_u64(to.as_u64()).unwrap_or_default();
                    match serde_json::to_vec(&msg) {
                        Ok(b) => mesh.unicast(to, CHANNEL, b).await,
                        Err(e) => Err(Error::new(ErrorKind::Internal, e.to_string())),
                    }
                }
                _ => Ok(()),
            };
            if let Err(e) = r {
                tracing::debug!("ipam: send: {e}");
            }
        }
    }

    fn receive(&mut self, m: GossipMessage) {
        let Some(from) = ring_peer(m.from) else {
            return;
        };
        let result = if m.broadcast {
            match serde_json::from_slice::<Gossip>(&m.payload) {
                Ok(g) => self.core.alloc.on_gossip(from, &g),
                Err(e) => {
                    tracing::warn!("ipam: bad gossip from {from}: {e}");
                    return;
                }
            }
        } else {
            match serde_json::from_slice::<Unicast>(&m.payload) {
                Ok(u) => self.core.alloc.on_unicast(from, &u),
                Err(e) => {
                    tracing::warn!("ipam: bad message from {from}: {e}");
                    return;
                }
            }
        };
        if let Err(e) = result {
            tracing::warn!("ipam: update from {from} refused: {e}");
        }
    }

    fn wait(&mut self, what: Wait, reply: oneshot::Sender<Result<Reply>>, wait: Duration) {
        self.waiters.push(Waiter {
            what,
            reply,
            deadline: Instant::now() + wait,
            batch: self.batch,
        });
    }

    fn apply(&mut self, req: Request, answers: &mut Vec<Answer>) {
        let core = &mut self.core;
        let (result, mutating) = match req.op {
            Op::Allocate(id, subnet, attachment) => {
                let subnet = match core.subnet(subnet) {
                    Ok(s) => s,
                    Err(e) => return push(answers, req.reply, Err(e), false),
                };
                match core.allocate(&id, subnet) {
                    Ok(Some(cidr)) => {
                        if let Some(a) = attachment {
                            core.attach(&id, cidr, a);
                        }
                        (Ok(Reply::Cidr(cidr)), true)
                    }
                    Ok(None) => {
                        let what = Wait::Alloc {
                            id,
                            subnet,
                            attachment,
                        };
                        return self.wait(what, req.reply, self.opts.alloc_wait);
                    }
                    Err(e) => (Err(e), false),
                }
            }
            Op::Claim(id, cidr) => match core.claim(&id, cidr) {
                Ok(Claimed::Done(b)) => (Ok(Reply::Changed(b)), true),
                Ok(Claimed::NotReady) => {
                    let wait = self.opts.alloc_wait;
                    return self.wait(Wait::Claim { id, cidr }, req.reply, wait);
                }
                Err(e) => (Err(e), false),
            },
            Op::Free(id) => (core.free(&id).map(Reply::Freed), true),
            Op::FreeOne(id, ip) => (core.free_one(&id, ip).map(|_| Reply::Changed(true)), true),
            Op::Lookup(id, subnet) => (
                core.subnet(subnet)
                    .map(|s| Reply::Cidrs(core.lookup(&id, s))),
                false,
            ),
            Op::Owned => (Ok(Reply::Owned(core.owned())), false),
            Op::Summary => (Ok(Reply::Summary(Box::new(self.summary()))), false),
            Op::PutAttachment(a) => (Ok(Reply::Changed(core.put_attachment(a))), true),
            Op::RemoveAttachment(c, i) => {
                (Ok(Reply::Changed(core.remove_attachment(&c, &i))), true)
            }
            Op::Attachments => (
                Ok(Reply::Attachments(
                    core.attachments.values().cloned().collect(),
                )),
                false,
            ),
            Op::Ring => {
                core.alloc.prime();
                if core.alloc.has_ring() {
                    (Ok(Reply::Text(String::new())), false)
                } else {
                    let wait = self.opts.ring_wait;
                    return self.wait(Wait::Ring, req.reply, wait);
                }
            }
            Op::Shutdown => {
                let live: Vec<PeerName> = self.live.iter().copied().collect();
                let heir = core.alloc.shutdown(&live);
                let heir = heir.map(|h| h.to_string()).unwrap_or_default();
                if !heir.is_empty() {
                    tracing::info!("ipam: gave our ranges to {heir}");
                }
                (Ok(Reply::Text(heir)), true)
            }
            Op::Rmpeer(name) => (Ok(Reply::Text(self.rmpeer(&name))), true),
        };
        push(answers, req.reply, result, mutating);
    }

    fn rmpeer(&mut self, name: &str) -> String {
        let peer = name.parse::<PeerName>().ok().or_else(|| {
            self.nicknames
                .iter()
                .find(|(_, nick)| *nick == name)
                .map(|(p, _)| *p)
        });
        let n = match peer.map(|p| self.core.alloc.rmpeer(p)) {
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                tracing::warn!("rmpeer {name}: {e}");
                0
            }
            None => {
                tracing::warn!("rmpeer {name}: no such peer");
                0
            }
        };
        format!("{n} IPs taken over from {name}\n")
    }

    fn allocated(&mut self, id: &str, addr: u32, answers: &mut Vec<Answer>) {
        let mut i = 0;
        while i < self.waiters.len() {
            let hit = matches!(&self.waiters[i].what,
                Wait::Alloc { id: w, subnet, .. } if w == id && subnet.contains(&Ipv4Addr::from(addr)));
            if !hit {
                i += 1;
                continue;
            }
            let w = self.waiters.remove(i);
            if let Wait::Alloc {
                id,
                subnet,
                attachment,
                ..
            } = w.what
            {
                let cidr = self.core.record(addr, subnet);
                if let Some(a) = attachment {
                    self.core.attach(&id, cidr, a);
                }
                answers.push(Answer {
                    reply: w.reply,
                    result: Ok(Reply::Cidr(cidr)),
                    mutating: true,
                    waited_id: Some(id),
                });
            }
        }
    }

    fn retry_claims(&mut self, answers: &mut Vec<Answer>) {
        if !self.core.alloc.has_ring() {
            return;
        }
        let mut i = 0;
        while i < self.waiters.len() {
            let Wait::Claim { id, cidr } = &self.waiters[i].what else {
                i += 1;
                continue;
            };
            let result = match self.core.claim(id, *cidr) {
                Ok(Claimed::NotReady) => {
                    i += 1;
                    continue;
                }
                Ok(Claimed::Done(b)) => Ok(Reply::Changed(b)),
                Err(e) => Err(e),
            };
            let w = self.waiters.remove(i);
            push(answers, w.reply, result, true);
        }
    }

    /// Answers waiters for which `f` gives a result.
    fn answer_waiters(
        &mut self,
        answers: &mut Vec<Answer>,
        f: impl Fn(&Waiter) -> Option<Result<Reply>>,
    ) {
        let mut i = 0;
        while i < self.waiters.len() {
            match f(&self.waiters[i]) {
                Some(result) => {
                    let w = self.waiters.remove(i);
                    push(answers, w.reply, result, false);
                }
                None => i += 1,
            }
        }
    }

    /// Answers the waiters whose time is up with 503 and the status.
    fn expire(&mut self, answers: &mut Vec<Answer>) {
        let now = Instant::now();
        let status = self.core.status();
        let mut i = 0;
        while i < self.waiters.len() {
            if self.waiters[i].deadline > now {
                i += 1;
                continue;
            }
            let w = self.waiters.remove(i);
            if let Wait::Alloc { id, .. } = &w.what {
                let others = self
                    .waiters
                    .iter()
                    .any(|o| matches!(&o.what, Wait::Alloc { id: x, .. } if x == id));
                if !others {
                    self.core.alloc.cancel(id);
                }
            }
            push(answers, w.reply, Err(not_ready(&status)), false);
        }
    }

    fn summary(&self) -> IpamSummary {
        let c = &self.core;
        let space = c.alloc.space();
        let owned_size: u64 = space.owned().iter().map(|r| r.size() as u64).sum();
        let free: u64 = space
            .owned()
            .iter()
            .map(|r| space.free_count_in(*r) as u64)
            .sum();
        let mut claims = Vec::new();
        for w in &self.waiters {
            if let Wait::Claim { id, .. } = &w.what {
                claims.push(id.clone());
            }
        }
        IpamSummary {
            universe: c.universe,
            default_subnet: c.default_subnet,
            owned_size,
            active: c.active(),
            free,
            ids: c.owned().len(),
            status: c.status(),
            entries: c.entries(),
            peer_sizes: c.peer_sizes(),
            me: c.alloc.me(),
            nicknames: self.nicknames.clone(),
            live: self.live.clone(),
            pending_allocates: c.alloc.pending_ids(),
            pending_claims: claims,
        }
    }
}

fn push(
    answers: &mut Vec<Answer>,
    reply: oneshot::Sender<Result<Reply>>,
    result: Result<Reply>,
    mutating: bool,
) {
    answers.push(Answer {
        reply,
        result,
        mutating,
        waited_id: None,
    });
}

/// Runs file I/O off the runtime's threads.
async fn blocking(f: impl FnOnce() -> Result<()> + Send + 'static) -> Result<()> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::Internal, format!("ipam store task: {e}")))?
}
