//! An in-memory data plane: keeps what it is told (bridge addresses, NAT, peers per overlay,
//! the host's links) and touches nothing. With it, complete routers (IPAM, mesh, HTTP API)
//! run in one test process on loopback without root; tests read [`MemoryDataPlane::state`]
//! where a namespace test would ask the kernel.

use super::{DataPlane, Overlay, OverlaySwitch, Peer, PlaneFuture};
use crate::peer::PeerName;
use futures::FutureExt;
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// What a [`MemoryDataPlane`] holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryState {
    /// The bridge's addresses, in the order they were added.
    pub bridge: Vec<Ipv4Net>,
    /// Exposed addresses that are masqueraded (not `skipNAT`).
    pub nat: BTreeSet<Ipv4Net>,
    /// The host's interfaces (the sweep's view).
    pub links: BTreeSet<String>,
}

/// A data plane of plain memory.
pub struct MemoryDataPlane {
    state: Mutex<MemoryState>,
    switch: OverlaySwitch,
    peers: Arc<Mutex<Vec<Peer>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for MemoryDataPlane {
    fn default() -> Self {
        MemoryDataPlane::new()
    }
}

impl MemoryDataPlane {
    /// One overlay, `"memory"`, that carries every peer with an underlay address.
    pub fn new() -> MemoryDataPlane {
        let overlay = MemoryOverlay::new("memory", |p: &Peer| p.underlay.is_some());
        let peers = overlay.peers_handle();
        MemoryDataPlane {
            state: Mutex::new(MemoryState::default()),
            switch: OverlaySwitch::new(vec![Box::new(overlay)]),
            peers,
        }
    }

    /// A copy of what it holds.
    pub fn state(&self) -> MemoryState {
        lock(&self.state).clone()
    }

    /// The peers the `"memory"` overlay forwards to.
    pub fn peers(&self) -> Vec<Peer> {
        lock(&self.peers).clone()
    }

    /// A host interface appears (a container's veth, as the plugin would create it).
    pub fn add_link(&self, name: &str) {
        lock(&self.state).links.insert(name.to_string());
    }

    /// A host interface disappears (the container's namespace was destroyed).
    pub fn remove_link(&self, name: &str) {
        lock(&self.state).links.remove(name);
    }
}

impl DataPlane for MemoryDataPlane {
    fn bridge_addresses(&self) -> PlaneFuture<'_, Vec<Ipv4Net>> {
        let addrs = lock(&self.state).bridge.clone();
        async move { Ok(addrs) }.boxed()
    }

    fn expose(&self, cidr: Ipv4Net, skip_nat: bool) -> PlaneFuture<'_, ()> {
        let mut s = lock(&self.state);
        if !s.bridge.contains(&cidr) {
            s.bridge.push(cidr);
        }
        if !skip_nat {
            s.nat.insert(cidr);
        }
        async { Ok(()) }.boxed()
    }

    fn hide(&self, cidr: Ipv4Net) -> PlaneFuture<'_, ()> {
        let mut s = lock(&self.state);
        s.bridge.retain(|c| *c != cidr);
        s.nat.remove(&cidr);
        async { Ok(()) }.boxed()
    }

    fn set_peers(&self, peers: Vec<Peer>) -> PlaneFuture<'_, ()> {
        async move { self.switch.set_peers(&peers).await }.boxed()
    }

    fn link_names(&self) -> PlaneFuture<'_, BTreeSet<String>> {
        let links = lock(&self.state).links.clone();
        async move { Ok(links) }.boxed()
    }

    fn paths(&self) -> BTreeMap<PeerName, &'static str> {
        self.switch.paths()
    }
}

/// An overlay that records its peers; `accepts` decides which peers it takes.
pub struct MemoryOverlay {
    name: &'static str,
    accepts: Box<dyn Fn(&Peer) -> bool + Send + Sync>,
    peers: Arc<Mutex<Vec<Peer>>>,
}

impl MemoryOverlay {
    pub fn new(
        name: &'static str,
        accepts: impl Fn(&Peer) -> bool + Send + Sync + 'static,
    ) -> MemoryOverlay {
        MemoryOverlay {
            name,
            accepts: Box::new(accepts),
            peers: Arc::default(),
        }
    }

    /// Where it records the peers it was last given.
    pub fn peers_handle(&self) -> Arc<Mutex<Vec<Peer>>> {
        self.peers.clone()
    }
}

impl Overlay for MemoryOverlay {
    fn name(&self) -> &'static str {
        self.name
    }

    fn accepts(&self, peer: &Peer) -> bool {
        (self.accepts)(peer)
    }

    fn set_peers<'a>(&'a self, peers: &'a [Peer]) -> PlaneFuture<'a, ()> {
        *lock(&self.peers) = peers.to_vec();
        async { Ok(()) }.boxed()
    }
}
