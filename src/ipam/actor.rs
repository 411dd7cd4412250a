//! The IPAM actor: one task owns the multi-host [`Core`] (ring allocator, CNI attachments) and
//! its file, talks to the other peers over the mesh channel `IPallocation`, and ticks.
//!
//! Work arriving together (requests, gossip, a tick) is applied as one batch and persisted
//! with one write (group commit). Nothing leaves the actor before that write succeeded:
//! neither an answer nor a message to a peer (a donation must be on disk before the receiver
//! hears of it). If the write fails, the state returns to what it was before the batch.
//! Requests that need the ring or another peer's space wait a bounded time, then get 503.

use super::core::{Claimed, Core};
use super::file::Owned;
use super::journal::{self, Journal};
use super::live::{self, PeersDiff};
use super::ring::{Gossip, Output, PeerName, Unicast};
use super::service::{IpamOptions, IpamSummary, Reply, Request, RING_LISTENER_WAIT};
use super::store::DataDir;
use crate::attachment::Attachment;
use crate::mesh::{GossipChannel, GossipMessage, GossipSender, LivePeer};
use crate::{Error, ErrorKind, Result};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Most requests applied before one write.
const MAX_BATCH: usize = 256;

/// Runs the actor until every handle is gone.
pub(super) async fn run(
    core: Core,
    datadir: DataDir,
    peer_name: String,
    gossip: Option<GossipChannel>,
    opts: IpamOptions,
    rx: mpsc::Receiver<Request>,
) {
    let peers = gossip.as_ref().map(|g| g.sender.peers());
    let (mesh, gossip) = match gossip {
        Some(g) => (Some(g.sender), Some(g.receiver)),
        None => (None, None),
    };
    let actor = Actor {
        journal: Journal::new(Vec::new()),
        core,
        datadir,
        peer_name,
        mesh,
        opts,
        waiters: Vec::new(),
        nicknames: BTreeMap::new(),
        live: BTreeMap::new(),
        batch: 0,
        ring_print: 0,
    };
    actor.run(rx, gossip, peers).await;
}

/// A request waiting for the ring or for space, with its typed reply.
enum Wait {
    Alloc {
        id: String,
        subnet: Ipv4Net,
        attachment: Option<Attachment>,
        reply: Reply<Ipv4Net>,
    },
    Claim {
        id: String,
        cidr: Ipv4Net,
        reply: Reply<bool>,
    },
    Ring {
        reply: Reply<()>,
    },
}

impl Wait {
    /// The waiter answered with `e`, whatever it waited for.
    fn fail(self, e: Error) -> Answer {
        match self {
            Wait::Alloc { reply, .. } => Answer::new(reply, Err(e), false),
            Wait::Claim { reply, .. } => Answer::new(reply, Err(e), false),
            Wait::Ring { reply } => Answer::new(reply, Err(e), false),
        }
    }
}

struct Waiter {
    what: Wait,
    deadline: Instant,
    /// The batch it arrived in (answered with the error if that batch's write fails).
    batch: u64,
}

/// One reply with its result, of any type.
trait Ready: Send {
    fn fail(&mut self, e: Error);
    fn send(self: Box<Self>);
}

struct Typed<T> {
    reply: Reply<T>,
    result: Result<T>,
}

impl<T: Send> Ready for Typed<T> {
    fn fail(&mut self, e: Error) {
        self.result = Err(e);
    }

    fn send(self: Box<Self>) {
        let _ = self.reply.send(self.result);
    }
}

/// An answer ready to go once the batch is on disk; `mutating` answers become the write's
/// error if it fails.
struct Answer {
    ready: Box<dyn Ready>,
    mutating: bool,
    /// For completed allocations: the id to cancel in the allocator on rollback.
    waited_id: Option<String>,
}

impl Answer {
    fn new<T: Send + 'static>(reply: Reply<T>, result: Result<T>, mutating: bool) -> Answer {
        Answer {
            ready: Box::new(Typed { reply, result }),
            mutating,
            waited_id: None,
        }
    }
}

struct Actor {
    core: Core,
    datadir: DataDir,
    peer_name: String,
    mesh: Option<GossipSender>,
    opts: IpamOptions,
    waiters: Vec<Waiter>,
    nicknames: BTreeMap<PeerName, String>,
    /// The mesh's live peers as last looked at, with their nicknames.
    live: BTreeMap<PeerName, String>,
    /// What `ipam.json` holds; decides between appending a record and a snapshot.
    journal: Journal,
    batch: u64,
    /// A fingerprint of the ring's owners as last told to the ring listener.
    ring_print: u64,
}

/// What woke the actor.
enum Event {
    Requests(Vec<Request>),
    Gossip(Vec<GossipMessage>),
    Tick,
    Deadline,
    /// The mesh's live peers changed (applied in the batch: they can complete allocations).
    Peers(PeersDiff),
}

fn not_ready(status: &str) -> Error {
    Error::new(
        ErrorKind::TryAgainLater,
        format!("IP allocation not ready: {status}"),
    )
}

impl Actor {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Request>,
        mut gossip: Option<mpsc::Receiver<GossipMessage>>,
        mut peers: Option<watch::Receiver<Vec<LivePeer>>>,
    ) {
        self.journal = Journal::new(self.core.alloc.persist_without_addresses());
        if let Some(p) = &mut peers {
            let d = live::diff(&self.live, &p.borrow_and_update());
            self.update_peers(d);
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
                    let d = peers.as_mut().map(|p| live::diff(&self.live, &p.borrow_and_update()));
                    match d {
                        Some(d) if !d.is_empty() => Event::Peers(d),
                        _ => continue,
                    }
                },
            };
            self.step(event).await;
        }
    }

    /// Tells the ring listener the entries if the owners changed, and waits for it: before
    /// the batch's messages leave, so a donor routes a donated range before its receiver
    /// hears of it.
    async fn publish_ring(&mut self) {
        use std::hash::{Hash, Hasher};
        let Some(listener) = self.opts.ring_listener.clone() else {
            return;
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for e in self.core.alloc.ring().entries() {
            (e.token, e.peer).hash(&mut h);
        }
        let print = h.finish();
        if print == self.ring_print {
            return;
        }
        self.ring_print = print;
        let told = (listener.0)(self.core.entries());
        if tokio::time::timeout(RING_LISTENER_WAIT, told)
            .await
            .is_err()
        {
            tracing::warn!(
                "ipam: ring listener still busy after {RING_LISTENER_WAIT:?}; sending anyway"
            );
        }
    }

    /// Takes in what changed in the live peers (proportional to the change).
    fn update_peers(&mut self, d: PeersDiff) {
        live::apply(&mut self.live, &d);
        self.core.alloc.reachable_changed(&d.added, &d.removed);
        self.nicknames.extend(d.named);
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
        let checkpoint = self.core.checkpoint();
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
            Event::Peers(d) => self.update_peers(d),
        }
        let outputs = self.core.alloc.take_outputs();
        let mut messages = Vec::new();
        for o in outputs {
            match o {
                Output::Allocated { id, addr } => self.allocated(&id, addr, &mut answers),
                Output::Cancelled { id } => self.take_waiters(
                    |w| matches!(&w.what, Wait::Alloc { id: i, .. } if *i == id),
                    |w| Some(w.fail(not_ready("cancelled"))),
                    &mut answers,
                ),
                m => messages.push(m),
            }
        }
        self.retry_claims(&mut answers);
        // Waiting claims can start an election: its messages go out too.
        messages.extend(self.core.alloc.take_outputs());
        if self.core.alloc.has_ring() {
            self.take_waiters(
                |w| matches!(w.what, Wait::Ring { .. }),
                |w| match w {
                    Wait::Ring { reply } => Some(Answer::new(reply, Ok(()), false)),
                    _ => None,
                },
                &mut answers,
            );
        }
        if let Err(e) = self.persist().await {
            tracing::error!("{e}; rolling back this batch");
            self.core.rollback(checkpoint);
            messages.clear();
            let batch = self.batch;
            self.take_waiters(
                |w| w.batch == batch,
                |w| Some(w.fail(e.clone())),
                &mut answers,
            );
            for a in answers.iter_mut().filter(|a| a.mutating) {
                a.ready.fail(e.clone());
                if let Some(id) = &a.waited_id {
                    self.core.alloc.cancel(id);
                }
            }
        }
        self.publish_ring().await;
        self.send(messages).await;
        for a in answers {
            a.ready.send();
        }
    }

    /// Makes this batch's changes durable: one appended record, or a whole snapshot when
    /// one is due (first write, compaction, or the append failed).
    async fn persist(&mut self) -> Result<()> {
        let ring = self.core.alloc.persist_without_addresses();
        let core = &self.core;
        let owned = core.changed_ids().into_iter().map(|id| {
            let now = core.owned_of(id);
            (id.clone(), (!now.is_empty()).then_some(now))
        });
        let attachments = core
            .attachments
            .changed()
            .map(|k| (k.clone(), core.attachments.get(k).cloned()));
        let delta = self.journal.delta(&ring, owned, attachments);
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
        let owned = self.core.owned();
        let bytes = self.encode(&owned)?;
        let len = bytes.len();
        let dd = self.datadir.clone();
        blocking(move || dd.write_ipam(&bytes)).await?;
        self.journal.snapshotted(ring, len);
        Ok(())
    }

    async fn send(&self, messages: Vec<Output>) {
        let Some(mesh) = &self.mesh else { return };
        for m in messages {
            let r = match m {
                Output::Broadcast(g) => match serde_json::to_vec(&g) {
                    Ok(b) => mesh.broadcast(b).await,
                    Err(e) => Err(Error::new(ErrorKind::Internal, e.to_string())),
                },
                Output::Send { to, msg } => match serde_json::to_vec(&msg) {
                    Ok(b) => mesh.unicast(to, b).await,
                    Err(e) => Err(Error::new(ErrorKind::Internal, e.to_string())),
                },
                _ => Ok(()),
            };
            if let Err(e) = r {
                tracing::debug!("ipam: send: {e}");
            }
        }
    }

    fn receive(&mut self, m: GossipMessage) {
        let from = m.from;
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

    fn wait(&mut self, what: Wait, wait: Duration) {
        self.waiters.push(Waiter {
            what,
            deadline: Instant::now() + wait,
            batch: self.batch,
        });
    }

    fn apply(&mut self, req: Request, answers: &mut Vec<Answer>) {
        let core = &mut self.core;
        let answer = match req {
            Request::Allocate {
                id,
                subnet,
                attachment,
                reply,
            } => {
                let subnet = match core.subnet(subnet) {
                    Ok(s) => s,
                    Err(e) => return answers.push(Answer::new(reply, Err(e), false)),
                };
                match core.allocate(&id, subnet) {
                    Ok(Some(cidr)) => {
                        if let Some(a) = attachment {
                            core.attach(&id, cidr, a);
                        }
                        Answer::new(reply, Ok(cidr), true)
                    }
                    Ok(None) => {
                        let what = Wait::Alloc {
                            id,
                            subnet,
                            attachment,
                            reply,
                        };
                        return self.wait(what, self.opts.alloc_wait);
                    }
                    Err(e) => Answer::new(reply, Err(e), false),
                }
            }
            Request::Claim { id, cidr, reply } => match core.claim(&id, cidr) {
                Ok(Claimed::Done(b)) => Answer::new(reply, Ok(b), true),
                Ok(Claimed::NotReady) => {
                    let wait = self.opts.alloc_wait;
                    return self.wait(Wait::Claim { id, cidr, reply }, wait);
                }
                Err(e) => Answer::new(reply, Err(e), false),
            },
            Request::Free { id, reply } => Answer::new(reply, core.free(&id), true),
            Request::FreeOne { id, ip, reply } => Answer::new(reply, core.free_one(&id, ip), true),
            Request::Lookup { id, subnet, reply } => {
                let found = core.subnet(subnet).map(|s| core.lookup(&id, s));
                Answer::new(reply, found, false)
            }
            Request::Owned { reply } => Answer::new(reply, Ok(core.owned()), false),
            Request::Summary { reply } => Answer::new(reply, Ok(self.summary()), false),
            Request::PutAttachment { attachment, reply } => {
                Answer::new(reply, Ok(core.put_attachment(attachment)), true)
            }
            Request::RemoveAttachment {
                container_id,
                ifname,
                reply,
            } => Answer::new(
                reply,
                Ok(core.remove_attachment(&container_id, &ifname)),
                true,
            ),
            Request::Attachments { reply } => Answer::new(
                reply,
                Ok(core.attachments.values().cloned().collect()),
                false,
            ),
            Request::Ring { reply } => {
                core.alloc.prime();
                if core.alloc.has_ring() {
                    Answer::new(reply, Ok(()), false)
                } else {
                    let wait = self.opts.ring_wait;
                    return self.wait(Wait::Ring { reply }, wait);
                }
            }
            Request::Shutdown { reply } => {
                let live: Vec<PeerName> = self.live.keys().copied().collect();
                let heir = core.alloc.shutdown(&live);
                let heir = heir.map(|h| h.to_string()).unwrap_or_default();
                if !heir.is_empty() {
                    tracing::info!("ipam: gave our ranges to {heir}");
                }
                Answer::new(reply, Ok(heir), true)
            }
            Request::Rmpeer { name, reply } => {
                let text = self.rmpeer(&name);
                Answer::new(reply, Ok(text), true)
            }
        };
        answers.push(answer);
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
                reply,
            } = w.what
            {
                let cidr = self.core.record(addr, subnet);
                if let Some(a) = attachment {
                    self.core.attach(&id, cidr, a);
                }
                let mut answer = Answer::new(reply, Ok(cidr), true);
                answer.waited_id = Some(id);
                answers.push(answer);
            }
        }
    }

    fn retry_claims(&mut self, answers: &mut Vec<Answer>) {
        if !self.core.alloc.has_ring() {
            return;
        }
        let mut i = 0;
        while i < self.waiters.len() {
            let Wait::Claim { id, cidr, .. } = &self.waiters[i].what else {
                i += 1;
                continue;
            };
            let result = match self.core.claim(id, *cidr) {
                Ok(Claimed::NotReady) => {
                    i += 1;
                    continue;
                }
                Ok(Claimed::Done(b)) => Ok(b),
                Err(e) => Err(e),
            };
            if let Wait::Claim { reply, .. } = self.waiters.remove(i).what {
                answers.push(Answer::new(reply, result, true));
            }
        }
    }

    /// Removes the waiters `pick` selects and adds the answers `answer` makes of them.
    fn take_waiters(
        &mut self,
        pick: impl Fn(&Waiter) -> bool,
        answer: impl Fn(Wait) -> Option<Answer>,
        answers: &mut Vec<Answer>,
    ) {
        let mut i = 0;
        while i < self.waiters.len() {
            if pick(&self.waiters[i]) {
                let w = self.waiters.remove(i);
                answers.extend(answer(w.what));
            } else {
                i += 1;
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
            answers.push(w.what.fail(not_ready(&status)));
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
            live: self.live.keys().copied().collect(),
            pending_allocates: c.alloc.pending_ids(),
            pending_claims: claims,
        }
    }
}

/// Runs file I/O off the runtime's threads.
async fn blocking(f: impl FnOnce() -> Result<()> + Send + 'static) -> Result<()> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::Internal, format!("ipam store task: {e}")))?
}
