//! Starting the mesh ([`MeshRouter::start`]) and [`MeshHandle`], the API the rest of the
//! daemon uses: subsystems open a [`GossipChannel`] each (IPAM on `IPallocation`), the data
//! plane follows [`MeshHandle::peers`], the HTTP API connects, forgets and reads status.
//!
//! Broadcasts are flooded with deduplication by `(origin, uid, seq)`, so they reach every
//! peer that is reachable at all; unicasts follow the shortest path over the topology.

use super::actor::Actor;
use super::command::Cmd;
use super::config::{GossipMessage, LivePeer, MeshConfig};
use super::dial::accept_loop;
use super::protocol::{check_channel, Hello, PeerInfo, MAX_GOSSIP_PAYLOAD};
use super::status::MeshStatus;
use crate::peer::PeerName;
use crate::{Context, Error, ErrorKind, Result};
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

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

    /// Opens the gossip channel `name` for one subsystem: its sender and the messages other
    /// peers send on it. This is how a subsystem joins the mesh (see [`super::channel`]).
    pub async fn channel(&self, name: &'static str) -> Result<GossipChannel> {
        let receiver = self.subscribe(name).await?;
        Ok(GossipChannel {
            sender: GossipSender {
                mesh: self.clone(),
                channel: name,
            },
            receiver,
        })
    }

    /// Messages arriving on `channel`. A slow subscriber loses messages (logged), so gossip
    /// users must also resend their state periodically, as Weave's do.
    pub async fn subscribe(&self, channel: &str) -> Result<mpsc::Receiver<GossipMessage>> {
        check_channel(channel).map_err(|e| Error::new(ErrorKind::InvalidConfig, e.to_string()))?;
        let (tx, rx) = mpsc::channel(4096);
        let (done, subscribed) = oneshot::channel();
        self.send(Cmd::Subscribe(channel.into(), tx, done)).await?;
        subscribed.await.map_err(|_| stopped())?;
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

/// One subsystem's end of a channel.
pub struct GossipChannel {
    pub sender: GossipSender,
    pub receiver: mpsc::Receiver<GossipMessage>,
}

/// Sends on one channel; cheap to clone.
#[derive(Clone)]
pub struct GossipSender {
    mesh: MeshHandle,
    channel: &'static str,
}

impl GossipSender {
    pub fn channel(&self) -> &'static str {
        self.channel
    }

    /// To every reachable peer's subscribers of this channel (not our own).
    pub async fn broadcast(&self, payload: Vec<u8>) -> Result<()> {
        self.mesh.broadcast(self.channel, payload).await
    }

    /// To `peer`'s subscribers of this channel; an error if no route is known.
    pub async fn unicast(&self, peer: PeerName, payload: Vec<u8>) -> Result<()> {
        self.mesh.unicast(peer, self.channel, payload).await
    }

    /// The live peers, updated whenever the topology changes.
    pub fn peers(&self) -> watch::Receiver<Vec<LivePeer>> {
        self.mesh.peers()
    }
}
