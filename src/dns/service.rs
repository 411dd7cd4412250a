//! The records' actor: one task owns the [`Store`], persists our own records, publishes the
//! zone the DNS server answers from, and gossips over the mesh channel [`super::CHANNEL`]:
//! a delta at once on every change, our snapshot every gossip interval and whenever a peer
//! appears, and (by the lowest-named live peer only) what we know of peers that are not
//! reachable, so a newcomer learns their records too.

use super::server::ZoneCell;
use super::store::{OwnerUpdate, Persisted, Record, RecordKey, Store};
use super::wire;
use crate::mesh::protocol::MAX_GOSSIP_PAYLOAD;
use crate::mesh::{GossipChannel, GossipMessage, GossipSender, LivePeer, PeerName};
use crate::{Context, Error, ErrorKind, Result};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};

/// File of our own records in the data dir.
pub const FILE: &str = "dns.json";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1)
}

enum Cmd {
    Add(RecordKey, oneshot::Sender<Result<bool>>),
    Remove {
        container_id: String,
        ip: Option<Ipv4Addr>,
        fqdn: Option<String>,
        reply: oneshot::Sender<Result<usize>>,
    },
    Records(oneshot::Sender<Vec<Record>>),
    RemovePeer(PeerName, oneshot::Sender<usize>),
    Reset(oneshot::Sender<Result<()>>),
}

/// The API of the records for the HTTP handlers and the router; cheap to clone.
#[derive(Clone)]
pub struct DnsHandle {
    tx: mpsc::Sender<Cmd>,
    zone: Arc<ZoneCell>,
}

fn stopped() -> Error {
    Error::new(ErrorKind::Internal, "dns records actor has stopped")
}

impl DnsHandle {
    /// The zone the DNS server reads (swapped on every change).
    pub fn zone(&self) -> Arc<ZoneCell> {
        self.zone.clone()
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }

    /// Registers `fqdn` → `ip` for `container_id` as ours; `false` if it already was.
    pub async fn add(&self, container_id: &str, ip: Ipv4Addr, fqdn: &str) -> Result<bool> {
        let key = RecordKey::new(fqdn, container_id, ip)?;
        self.call(|r| Cmd::Add(key, r)).await?
    }

    /// Removes our records of `container_id` (`*`: all), narrowed by address and name;
    /// returns how many went.
    pub async fn remove(
        &self,
        container_id: &str,
        ip: Option<Ipv4Addr>,
        fqdn: Option<&str>,
    ) -> Result<usize> {
        let (container_id, fqdn) = (container_id.to_string(), fqdn.map(str::to_string));
        self.call(|reply| Cmd::Remove {
            container_id,
            ip,
            fqdn,
            reply,
        })
        .await?
    }

    /// The addresses `fqdn` resolves to, from any peer's records.
    pub fn lookup(&self, fqdn: &str) -> Vec<Ipv4Addr> {
        let Ok(n) = super::name::normalize(fqdn) else {
            return vec![];
        };
        let mut v = self
            .zone
            .load()
            .by_name
            .get(&n)
            .cloned()
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Every live record with its owner.
    pub async fn records(&self) -> Result<Vec<Record>> {
        self.call(Cmd::Records).await
    }

    /// `rmpeer`: drops `peer`'s records everywhere; returns how many we held.
    pub async fn remove_peer(&self, peer: PeerName) -> Result<usize> {
        self.call(|r| Cmd::RemovePeer(peer, r)).await
    }

    /// `reset`: withdraws all our records from every peer and deletes the file.
    pub async fn reset(&self) -> Result<()> {
        self.call(Cmd::Reset).await?
    }
}

/// How the actor runs.
pub struct ServiceConfig {
    pub me: PeerName,
    /// Where [`FILE`] lives; `None` keeps records in memory (tests).
    pub datadir: Option<PathBuf>,
    /// Our snapshot goes out this often.
    pub gossip_interval: Duration,
}

/// Starts the actor on its gossip channel (`None`: a peer alone, e.g. tests): loads our
/// persisted records and announces them at fresh versions.
pub async fn spawn(cfg: ServiceConfig, channel: Option<GossipChannel>) -> Result<DnsHandle> {
    let path = cfg.datadir.as_ref().map(|d| d.join(FILE));
    let persisted: Option<Persisted> = match &path {
        Some(p) => crate::ipam::store::read_json(p)?,
        None => None,
    };
    let (store, announce) = match persisted {
        Some(p) => match Store::restore(cfg.me, &p, now_ms()) {
            Ok((s, a)) => {
                tracing::info!("dns: {} records restored", p.records.len());
                (s, Some(a))
            }
            Err(e) => {
                tracing::warn!("dns: {e}; starting without records");
                (Store::new(cfg.me), None)
            }
        },
        None => (Store::new(cfg.me), None),
    };
    let (sender, gossip) = match channel {
        Some(c) => (Some(c.sender), Some(c.receiver)),
        None => (None, None),
    };
    let zone = Arc::new(ZoneCell::new(store.zone()));
    let (tx, rx) = mpsc::channel(256);
    let peers = sender.as_ref().map(|s| s.peers());
    let actor = Actor {
        store,
        path,
        sender,
        zone: zone.clone(),
        interval: cfg.gossip_interval,
        known_live: BTreeSet::new(),
    };
    tokio::spawn(actor.run(rx, gossip, peers, announce));
    Ok(DnsHandle { tx, zone })
}

struct Actor {
    store: Store,
    path: Option<PathBuf>,
    sender: Option<GossipSender>,
    zone: Arc<ZoneCell>,
    interval: Duration,
    known_live: BTreeSet<PeerName>,
}

impl Actor {
    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Cmd>,
        mut gossip: Option<mpsc::Receiver<GossipMessage>>,
        mut peers: Option<watch::Receiver<Vec<LivePeer>>>,
        announce: Option<OwnerUpdate>,
    ) {
        if let Some(a) = announce {
            self.broadcast(vec![a]).await;
        }
        let mut tick = tokio::time::interval(self.interval);
        tick.tick().await;
        loop {
            tokio::select! {
                c = cmds.recv() => match c {
                    Some(c) => self.command(c).await,
                    None => break,
                },
                Some(m) = async { gossip.as_mut()?.recv().await } => self.on_gossip(m).await,
                Some(()) = async { peers.as_mut()?.changed().await.ok() } => {
                    let live: BTreeSet<PeerName> =
                        peers.as_ref().map(|p| p.borrow().iter().map(|l| l.name).collect())
                            .unwrap_or_default();
                    let newcomer = live.difference(&self.known_live).next().is_some();
                    self.known_live = live;
                    if newcomer {
                        self.gossip_state().await;
                    }
                }
                _ = tick.tick() => self.gossip_state().await,
            }
        }
    }

    async fn command(&mut self, c: Cmd) {
        match c {
            Cmd::Add(key, reply) => {
                let r = match self.store.add(key, now_ms()) {
                    Ok(Some(u)) => self.changed_own(vec![u]).await.map(|_| true),
                    Ok(None) => Ok(false),
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            Cmd::Remove {
                container_id,
                ip,
                fqdn,
                reply,
            } => {
                let r = match self
                    .store
                    .remove(&container_id, ip, fqdn.as_deref(), now_ms())
                {
                    Some(u) => {
                        let n = u.entries.len();
                        self.changed_own(vec![u]).await.map(|_| n)
                    }
                    None => Ok(0),
                };
                let _ = reply.send(r);
            }
            Cmd::Records(reply) => {
                let _ = reply.send(self.store.records());
            }
            Cmd::RemovePeer(peer, reply) => {
                let before = self.store.records().len();
                let n = match self.store.remove_peer(peer) {
                    Some(u) => {
                        self.publish();
                        self.broadcast(vec![u]).await;
                        before - self.store.records().len()
                    }
                    None => 0,
                };
                let _ = reply.send(n);
            }
            Cmd::Reset(reply) => {
                let u = self.store.reset(now_ms());
                self.publish();
                self.broadcast(vec![u]).await;
                let r = match &self.path {
                    Some(p) => match std::fs::remove_file(p) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            Err(Error::from(e).context(format!("remove {}", p.display())))
                        }
                        _ => Ok(()),
                    },
                    None => Ok(()),
                };
                let _ = reply.send(r);
            }
        }
    }

    /// Our records changed: persist, publish, gossip the delta.
    async fn changed_own(&mut self, updates: Vec<OwnerUpdate>) -> Result<()> {
        let saved = self.save();
        self.publish();
        self.broadcast(updates).await;
        saved
    }

    fn save(&self) -> Result<()> {
        match &self.path {
            Some(p) => crate::ipam::store::write_json(p, &self.store.persisted())
                .context("save dns records"),
            None => Ok(()),
        }
    }

    fn publish(&self) {
        self.zone.store(self.store.zone());
    }

    async fn on_gossip(&mut self, m: GossipMessage) {
        let updates = match wire::decode(&m.payload) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!("dns: gossip from {}: {e}", m.from);
                return;
            }
        };
        let (mut changed, mut corrections, mut rejected) = (false, vec![], 0);
        for u in &updates {
            let r = self.store.merge(u, now_ms());
            changed |= r.changed;
            rejected += r.rejected;
            corrections.extend(r.correction);
        }
        if rejected > 0 {
            tracing::warn!("dns: {rejected} bad entries in gossip from {}", m.from);
        }
        if changed {
            self.publish();
        }
        if !corrections.is_empty() {
            if let Err(e) = self.save() {
                tracing::warn!("dns: {e}");
            }
            self.broadcast(corrections).await;
        }
    }

    /// Our snapshot, and, if we are the lowest-named live peer, what we hold of peers that
    /// are not live (they cannot speak for themselves).
    async fn gossip_state(&mut self) {
        let mut out = vec![self.store.snapshot(now_ms())];
        let me = self.store.me();
        if self.known_live.iter().all(|p| *p > me) {
            out.extend(
                self.store
                    .other_owners()
                    .into_iter()
                    .filter(|o| !self.known_live.contains(o))
                    .filter_map(|o| self.store.relay(o)),
            );
        }
        self.broadcast(out).await;
    }

    async fn broadcast(&self, updates: Vec<OwnerUpdate>) {
        let Some(sender) = &self.sender else { return };
        for msg in wire::encode(&updates, MAX_GOSSIP_PAYLOAD) {
            if let Err(e) = sender.broadcast(msg).await {
                tracing::warn!("dns: gossip: {e}");
            }
        }
    }
}
