//! The task that owns the mesh state. Handshakes and dials run in their own tasks and hand
//! finished connections here; the actor decides (self, duplicate, connection limit), gossips
//! topology, floods broadcasts, routes unicasts and drives the connection maker.

use super::command::{Cmd, NewConn};
use super::config::{GossipMessage, LivePeer, MeshConfig};
use super::connection::{self, ConnEvent, HandshakeError, Timers};
use super::maker::{Maker, Target};
use super::protocol::{Hello, Message, PeerInfo, DEFAULT_TTL};
use super::seen::Seen;
use super::topology::Topology;
use crate::peer::PeerName;
use crate::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

mod flush;
mod totals;
mod view;

pub use totals::{topology_totals, TopologyTotals};

struct Conn {
    peer: PeerName,
    nickname: String,
    remote: SocketAddr,
    /// The peer's listening address: what targets and discovery compare against.
    listen: SocketAddr,
    outbound: bool,
    established: bool,
    encrypted: bool,
    /// The encrypted data path's keys from this connection's handshake.
    data_keys: Option<crate::sleeve::SessionKeys>,
    since: Instant,
    target: Option<String>,
    tx: mpsc::Sender<Arc<Vec<u8>>>,
}

/// Most connection events taken in one go before the follow-ups run.
const BATCH: usize = 256;

pub(super) struct Actor {
    config: MeshConfig,
    topology: Topology,
    conns: HashMap<u64, Conn>,
    next_key: u64,
    maker: Maker,
    hello: Hello,
    psk: Option<[u8; 32]>,
    subscribers: HashMap<String, Vec<mpsc::Sender<GossipMessage>>>,
    seen: HashMap<(PeerName, u64), Seen>,
    seq: u64,
    peers_tx: watch::Sender<Vec<LivePeer>>,
    self_tx: mpsc::Sender<Cmd>,
    ev_tx: mpsc::Sender<ConnEvent>,
    /// Send the whole topology to every neighbour (periodic).
    gossip_due: bool,
    /// The topology or our connections changed since the last [`Actor::flush`].
    dirty: bool,
    /// For entries taken in since the last flush: the connections whose peer already holds
    /// them (it sent them), which the flush's delta leaves out.
    holders: HashMap<PeerName, Vec<u64>>,
    /// Peers whose connection of ours came or went since the live peers were published.
    live_dirty: Vec<PeerName>,
    /// No flush before this: changes arriving meanwhile are batched.
    next_flush: Instant,
    leaving: bool,
    terminations: u64,
}

impl Actor {
    pub(super) fn new(
        config: MeshConfig,
        me: PeerInfo,
        hello: Hello,
        psk: Option<[u8; 32]>,
        peers_tx: watch::Sender<Vec<LivePeer>>,
        self_tx: mpsc::Sender<Cmd>,
        ev_tx: mpsc::Sender<ConnEvent>,
    ) -> Actor {
        Actor {
            maker: Maker::new(&config.targets, config.timers),
            topology: Topology::new(me),
            conns: HashMap::new(),
            next_key: 1,
            hello,
            psk,
            subscribers: HashMap::new(),
            seen: HashMap::new(),
            seq: 0,
            peers_tx,
            self_tx,
            ev_tx,
            gossip_due: false,
            dirty: false,
            holders: HashMap::new(),
            live_dirty: Vec::new(),
            next_flush: Instant::now(),
            leaving: false,
            terminations: 0,
            config,
        }
    }

    pub(super) async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Cmd>,
        mut events: mpsc::Receiver<ConnEvent>,
    ) {
        let timers = self.config.timers;
        let mut maker_tick =
            tokio::time::interval(timers.backoff_initial.min(Duration::from_millis(200)));
        let mut gossip_tick = tokio::time::interval(timers.gossip_interval);
        loop {
            let (flush_at, waiting) = (self.next_flush, self.dirty);
            tokio::select! {
                c = cmds.recv() => match c {
                    None | Some(Cmd::Shutdown) => break,
                    Some(c) => self.command(c),
                },
                Some(e) = events.recv() => {
                    self.event(e);
                    // Whatever else has arrived joins the batch: the follow-ups run once.
                    for _ in 1..BATCH {
                        match events.try_recv() {
                            Ok(e) => self.event(e),
                            Err(_) => break,
                        }
                    }
                }
                _ = maker_tick.tick() => self.make_connections(),
                _ = gossip_tick.tick() => self.gossip_due = true,
                _ = tokio::time::sleep_until(flush_at), if waiting => {}
            }
            if self.gossip_due {
                self.gossip_due = false;
                self.topology.forget_unreachable();
                self.flush(false);
                self.send_topology();
            } else if self.dirty && Instant::now() >= self.next_flush {
                self.flush(true);
            }
        }
        tracing::info!("mesh router stopped");
    }

    fn command(&mut self, c: Cmd) {
        match c {
            Cmd::Broadcast(channel, payload) => {
                self.seq += 1;
                let m = Message::Broadcast {
                    origin: self.hello.name,
                    origin_uid: self.hello.uid,
                    seq: self.seq,
                    channel,
                    payload,
                };
                self.seen
                    .entry((self.hello.name, self.hello.uid))
                    .or_default()
                    .first(self.seq);
                self.send_all(&m, None);
            }
            Cmd::Unicast(dest, channel, payload, reply) => {
                let m = Message::Unicast {
                    origin: self.hello.name,
                    dest,
                    ttl: DEFAULT_TTL,
                    channel,
                    payload,
                };
                let _ = reply.send(self.route(m));
            }
            Cmd::Subscribe(channel, tx, done) => {
                self.subscribers.entry(channel).or_default().push(tx);
                let _ = done.send(());
            }
            Cmd::Targets(list, replace, remove) => {
                self.maker.set(list, replace, remove);
                self.make_connections();
            }
            Cmd::Status(reply) => {
                // What status shows and what the live peers say agree at once.
                if self.dirty {
                    self.flush(true);
                }
                let _ = reply.send(self.status());
            }
            Cmd::Leave(reply) => {
                self.leaving = true;
                let bye = Arc::new(Message::Goodbye.encode());
                for (_, c) in self.conns.drain() {
                    let _ = c.tx.try_send(bye.clone());
                    self.live_dirty.push(c.peer);
                }
                self.dirty = true;
                self.update_topology();
                let _ = reply.send(());
            }
            Cmd::Shutdown => {}
            Cmd::Handshaken(nc) => self.register(*nc),
            Cmd::DialFailed(target, e, resolved) => {
                let refused = matches!(e, HandshakeError::Refused(_));
                if refused {
                    let addr = resolved
                        .first()
                        .map(|a| a.to_string())
                        .unwrap_or(target.clone());
                    tracing::warn!("peer {addr} refused: {e}");
                } else {
                    tracing::info!("connect to {target}: {e}");
                }
                self.maker.failed(&target, e.to_string(), refused, resolved);
            }
        }
    }

    fn conn_limit_reached(&self) -> bool {
        self.config.conn_limit > 0 && self.conns.len() >= self.config.conn_limit
    }

    /// Accepts or refuses a handshaken connection and starts its task.
    fn register(&mut self, nc: NewConn) {
        let remote = nc.hs.remote.clone();
        let outbound = nc.target.is_some();
        let refuse = |actor: &mut Actor, why: String| match &nc.target {
            Some((t, resolved)) => {
                tracing::info!("connection to {} ({t}) dropped: {why}", nc.remote);
                actor.maker.failed(t, why, false, resolved.clone());
            }
            None => tracing::info!("connection from {} refused: {why}", nc.remote),
        };
        if self.leaving {
            return refuse(self, "leaving the mesh".into());
        }
        if remote.name == self.hello.name {
            let why = if remote.uid == self.hello.uid {
                "cannot connect to ourself".to_string()
            } else {
                format!("peer name collision: {} is our name", remote.name)
            };
            return refuse(self, why);
        }
        if self.conn_limit_reached() {
            let why = format!("Connection limit reached ({})", self.config.conn_limit);
            tracing::warn!("{why}");
            return refuse(self, why);
        }
        if let Some((&old_key, old)) = self.conns.iter().find(|(_, c)| c.peer == remote.name) {
            // Both ends keep the connection dialled by the smaller name, so they agree; a
            // second connection from the same dialler replaces the first (it is a reconnect).
            let initiator = |out: bool| if out { self.hello.name } else { remote.name };
            let (old_init, new_init) = (initiator(old.outbound), initiator(outbound));
            if new_init > old_init {
                return refuse(self, format!("duplicate connection to {}", remote.name));
            }
            self.conns.remove(&old_key);
        }
        self.live_dirty.push(remote.name);
        self.dirty = true;
        let key = self.next_key;
        self.next_key += 1;
        let (tx, rx) = mpsc::channel(4096);
        let listen = if outbound {
            nc.remote
        } else {
            SocketAddr::new(nc.remote.ip(), remote.listen_port)
        };
        let encrypted = nc.hs.session.is_some();
        let data_keys = nc.hs.session.as_ref().map(|s| s.data_keys().clone());
        tracing::info!(
            "connection {} {} {}({}) established ({})",
            if outbound { "to" } else { "from" },
            nc.remote,
            remote.name,
            remote.nickname,
            if encrypted {
                "encrypted"
            } else {
                "unencrypted"
            }
        );
        if let Some((t, resolved)) = &nc.target {
            self.maker.connected(t, resolved.clone());
        }
        self.conns.insert(
            key,
            Conn {
                peer: remote.name,
                nickname: remote.nickname.clone(),
                remote: nc.remote,
                listen,
                outbound,
                established: false,
                encrypted,
                data_keys,
                since: Instant::now(),
                target: nc.target.map(|t| t.0),
                tx: tx.clone(),
            },
        );
        let timers = Timers {
            heartbeat: self.config.timers.heartbeat,
            dead_after: self.config.timers.dead_after,
        };
        tokio::spawn(connection::run(
            key,
            nc.stream,
            nc.hs,
            rx,
            self.ev_tx.clone(),
            timers,
        ));
        self.topology.settle();
        for m in self.snapshot(true) {
            let _ = tx.try_send(Arc::new(m.encode()));
        }
        self.update_topology();
    }

    fn event(&mut self, e: ConnEvent) {
        match e {
            ConnEvent::Closed(key, reason) => {
                if let Some(c) = self.conns.remove(&key) {
                    self.terminations += 1;
                    self.live_dirty.push(c.peer);
                    self.dirty = true;
                    tracing::info!(
                        "connection to {}({}) at {} closed: {reason}",
                        c.peer,
                        c.nickname,
                        c.remote
                    );
                    if let Some(t) = &c.target {
                        self.maker.closed(t, c.since.elapsed(), reason);
                    }
                    self.update_topology();
                }
            }
            ConnEvent::Message(key, msg) => {
                let Some(c) = self.conns.get_mut(&key) else {
                    return;
                };
                let from = c.peer;
                if !c.established {
                    c.established = true;
                    self.update_topology();
                }
                self.message(key, from, msg);
            }
        }
    }

    fn message(&mut self, key: u64, from: PeerName, msg: Message) {
        match msg {
            Message::Heartbeat => {}
            Message::Goodbye => {
                if let Some(c) = self.conns.remove(&key) {
                    tracing::info!("peer {}({}) left the mesh", c.peer, c.nickname);
                    self.live_dirty.push(c.peer);
                    self.dirty = true;
                    self.terminations += 1;
                    self.update_topology();
                }
            }
            Message::Topology(peers) => {
                let received = peers.len();
                let got = self.topology.absorb_from(&peers);
                totals::count_message(received, got.taken.len(), got.same.len());
                if !got.taken.is_empty() {
                    self.dirty = true;
                }
                for n in got.taken {
                    // Room for the neighbours that send it next, before the flush.
                    let mut by = Vec::with_capacity(4);
                    by.push(key);
                    self.holders.insert(n, by);
                }
                for n in got.same {
                    if let Some(h) = self.holders.get_mut(&n) {
                        h.push(key);
                    }
                }
            }
            Message::Broadcast {
                origin,
                origin_uid,
                seq,
                ref channel,
                ref payload,
            } => {
                if origin == self.hello.name
                    || !self
                        .seen
                        .entry((origin, origin_uid))
                        .or_default()
                        .first(seq)
                {
                    return;
                }
                self.deliver(channel, origin, true, payload);
                self.send_all(&msg, Some(key));
            }
            Message::Unicast { .. } => {
                if let Err(e) = self.route(msg) {
                    tracing::debug!("unicast from {from} dropped: {e}");
                }
            }
        }
    }

    /// Delivers a unicast here or sends it one hop on.
    fn route(&mut self, msg: Message) -> Result<()> {
        let Message::Unicast {
            origin,
            dest,
            ttl,
            channel,
            payload,
        } = msg
        else {
            return Ok(());
        };
        if dest == self.hello.name {
            self.deliver(&channel, origin, false, &payload);
            return Ok(());
        }
        if ttl == 0 {
            return Err(Error::new(
                ErrorKind::TryAgainLater,
                format!("unicast to {dest}: hop limit reached"),
            ));
        }
        self.topology.settle();
        let hop = self.topology.routes().get(&dest).copied();
        let conn = hop.and_then(|h| self.conns.values().find(|c| c.peer == h));
        let Some(conn) = conn else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("unicast to {dest}: no route to peer"),
            ));
        };
        let m = Message::Unicast {
            origin,
            dest,
            ttl: ttl - 1,
            channel,
            payload,
        };
        let _ = conn.tx.try_send(Arc::new(m.encode()));
        Ok(())
    }

    fn deliver(&mut self, channel: &str, from: PeerName, broadcast: bool, payload: &[u8]) {
        let Some(subs) = self.subscribers.get_mut(channel) else {
            return;
        };
        subs.retain(|s| !s.is_closed());
        for s in subs.iter() {
            let m = GossipMessage {
                channel: channel.into(),
                from,
                broadcast,
                payload: payload.to_vec(),
            };
            if s.try_send(m).is_err() {
                tracing::warn!(
                    "gossip subscriber of {channel:?} is not keeping up; message dropped"
                );
            }
        }
    }

    fn send_all(&mut self, m: &Message, except: Option<u64>) {
        let bytes = Arc::new(m.encode());
        for (k, c) in &self.conns {
            if Some(*k) != except && c.tx.try_send(bytes.clone()).is_err() {
                tracing::warn!("send queue to {} full; message dropped", c.peer);
            }
        }
    }

    fn make_connections(&mut self) {
        if self.leaving {
            return;
        }
        let connected: Vec<PeerName> = self.conns.values().map(|c| c.peer).collect();
        let candidates: Vec<(PeerName, SocketAddr)> = if self.config.discovery {
            self.topology
                .discovery_candidates()
                .into_iter()
                .filter(|(p, _)| !connected.contains(p))
                .collect()
        } else {
            vec![]
        };
        let room = !self.conn_limit_reached();
        let conns = &self.conns;
        let satisfied = |t: &Target| {
            conns
                .values()
                .any(|c| t.resolved.contains(&c.listen) || t.discovered_for == Some(c.peer))
        };
        let due = self.maker.due(&candidates, satisfied, room);
        for target in due {
            let mut hello = self.hello.clone();
            hello.conn_id = rand::random();
            tokio::spawn(super::dial::dial(
                target,
                hello,
                self.psk,
                self.config.timers,
                self.self_tx.clone(),
            ));
        }
    }
}
