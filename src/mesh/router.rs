//! The mesh actor: one task owns the topology, the connections and the targets; connections,
//! dials and the listener talk to it over channels, and [`MeshHandle`] is the API for the rest
//! of the daemon (IPAM and the data plane use `broadcast`, `unicast`, `subscribe`, `peers`).
//!
//! Broadcasts are flooded with deduplication by `(origin, uid, seq)`, so they reach every
//! peer that is reachable at all; unicasts follow the shortest path over the topology.

use super::actor::{Actor, Cmd};
use super::dial::accept_loop;
use super::protocol::{check_channel, Hello, PeerInfo, MAX_GOSSIP_PAYLOAD};
use super::ratelimit::AcceptLimits;
use super::status::MeshStatus;
use super::PeerName;
use crate::{Context, Error, ErrorKind, Result};
use std::net::{IpAddr, SocketAddr};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

pub use super::maker::MeshTimers;

/// How the mesh runs (from `weaver`'s flags).
#[derive(Debug, Clone)]
pub struct MeshConfig {
    pub name: PeerName,
    pub nickname: String,
    /// Where to listen; port 0 picks a free one (tests).
    pub listen: SocketAddr,
    pub password: Option<String>,
    pub discovery: bool,
    /// Most connections; 0 means unlimited.
    pub conn_limit: usize,
    /// Recorded and shown; the control plane is encrypted regardless (documented).
    pub trusted_subnets: Vec<String>,
    pub targets: Vec<String>,
    pub timers: MeshTimers,
    /// Admission of inbound connections before their handshake (rate and pending caps).
    pub accept_limits: AcceptLimits,
}

impl MeshConfig {
    pub fn new(name: PeerName, nickname: &str, listen: SocketAddr) -> MeshConfig {
        MeshConfig {
            name,
            nickname: nickname.into(),
            listen,
            password: None,
            discovery: true,
            conn_limit: super::DEFAULT_CONN_LIMIT,
            trusted_subnets: vec![],
            targets: vec![],
            timers: MeshTimers::default(),
            accept_limits: AcceptLimits::default(),
        }
    }
}

/// A gossip message delivered to a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipMessage {
    pub channel: String,
    pub from: PeerName,
    pub broadcast: bool,
    pub payload: Vec<u8>,
}

/// A peer currently in the topology (not ourselves), with an underlay address for VXLAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivePeer {
    pub name: PeerName,
    pub nickname: String,
    pub uid: u64,
    /// From our direct connection if there is one, else as other peers reach it.
    pub address: Option<IpAddr>,
    /// True when we have a connection of our own to it.
    pub direct: bool,
}

/// The API other subsystems use; cheap to clone.
#[derive(Clone)]
pub struct MeshHandle {
    tx: mpsc::Sender<Cmd>,
    peers: watch::Receiver<Vec<LivePeer>>,
    name: PeerName,
    local_addr: SocketAddr,
}

fn stopped() -> Error {
    Error::new(ErrorKind::Internal, "mesh router has stopped")
}

impl MeshHandle {
    pub fn name(&self) -> PeerName {
        self.name
    }

    /// The address the mesh listens on (the real port when configured with 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    async fn send(&self, c: Cmd) -> Result<()> {
        self.tx.send(c).await.map_err(|_| stopped())
    }

    /// Sends `payload` to every reachable peer's subscribers of `channel` (not our own).
    pub async fn broadcast(&self, channel: &str, payload: Vec<u8>) -> Result<()> {
        check_gossip(channel, &payload)?;
        self.send(Cmd::Broadcast(channel.into(), payload)).await
    }

    /// Sends `payload` to `peer`'s subscribers of `channel`; an error if no route is known.
    pub async fn unicast(&self, peer: PeerName, channel: &str, payload: Vec<u8>) -> Result<()> {
        check_gossip(channel, &payload)?;
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Unicast(peer, channel.into(), payload, tx))
            .await?;
        rx.await.map_err(|_| stopped())?
    }

    /// Messages arriving on `channel`. A slow subscriber loses messages (logged), so gossip
    /// users must also resend their state periodically, as Weave's do.
    pub async fn subscribe(&self, channel: &str) -> Result<mpsc::Receiver<GossipMessage>> {
        check_channel(channel).map_err(|e| Error::new(ErrorKind::InvalidConfig, e.to_string()))?;
        let (tx, rx) = mpsc::channel(4096);
        self.send(Cmd::Subscribe(channel.into(), tx)).await?;
        Ok(rx)
    }

    /// The live peers, updated whenever the topology changes.
    pub fn peers(&self) -> watch::Receiver<Vec<LivePeer>> {
        self.peers.clone()
    }

    /// Adds targets (or replaces all with `replace`).
    pub async fn connect(&self, targets: Vec<String>, replace: bool) -> Result<()> {
        self.send(Cmd::Targets(targets, replace, false)).await
    }

    /// Stops retrying these targets; open connections stay, as in Weave.
    pub async fn forget(&self, targets: Vec<String>) -> Result<()> {
        self.send(Cmd::Targets(targets, false, true)).await
    }

    pub async fn status(&self) -> Result<MeshStatus> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Status(tx)).await?;
        rx.await.map_err(|_| stopped())
    }

    /// Says goodbye to every neighbour, closes all connections and stops connecting.
    pub async fn leave(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Leave(tx)).await?;
        rx.await.map_err(|_| stopped())
    }

    /// Stops the actor and the listener; connections close.
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Cmd::Shutdown).await;
    }
}

fn check_gossip(channel: &str, payload: &[u8]) -> Result<()> {
    check_channel(channel).map_err(|e| Error::new(ErrorKind::InvalidConfig, e.to_string()))?;
    if payload.len() > MAX_GOSSIP_PAYLOAD {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!(
                "gossip payload of {} bytes exceeds {MAX_GOSSIP_PAYLOAD}",
                payload.len()
            ),
        ));
    }
    Ok(())
}

/// Namespace for starting the mesh.
pub struct MeshRouter;

impl MeshRouter {
    /// Binds the listener (so a busy port fails here) and starts the actor.
    pub async fn start(config: MeshConfig) -> Result<MeshHandle> {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listen on {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(1024);
        let (peers_tx, peers_rx) = watch::channel(Vec::new());
        let (ev_tx, ev_rx) = mpsc::channel(4096);
        let name = config.name;
        let uid: u64 = rand::random();
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        let me = PeerInfo {
            name: config.name,
            nickname: config.nickname.clone(),
            uid,
            version: now_us,
            connections: vec![],
        };
        let psk = config
            .password
            .as_deref()
            .map(|p| super::crypto::psk_from_password(p.as_bytes()));
        let hello = Hello {
            name: config.name,
            nickname: config.nickname.clone(),
            uid,
            conn_id: 0,
            listen_port: local_addr.port(),
            encrypted: psk.is_some(),
        };
        let accept = tokio::spawn(accept_loop(
            listener,
            tx.clone(),
            hello.clone(),
            psk,
            config.timers,
            config.accept_limits,
        ));
        let actor = Actor::new(config, me, hello, psk, peers_tx, tx.clone(), ev_tx);
        tokio::spawn(async move {
            actor.run(rx, ev_rx).await;
            accept.abort();
        });
        Ok(MeshHandle {
            tx,
            peers: peers_rx,
            name,
            local_addr,
        })
    }
}
