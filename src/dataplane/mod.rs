//! The data plane: how container traffic leaves and enters this host. The router decides
//! *what* (which addresses the bridge has, which peers are live); a [`DataPlane`] makes the
//! host do it.
//!
//! - [`DataPlane`]: the seam the router talks to: bridge addresses, expose/hide (`weave
//!   expose`), the set of peers to forward to, and the host's links (for the sweep).
//! - [`Overlay`]: one way of carrying frames to a peer. [`OverlaySwitch`] picks one per peer:
//!   the first overlay, in preference order, that accepts it (Weave's overlay switch):
//!   [`routed::RoutedOverlay`] (no encapsulation, for peers on a directly connected subnet,
//!   `--dataplane auto|routed`, never with a password), then [`encrypted::EncryptedOverlay`]
//!   (with a password, except peers in trusted subnets: [`path`]), then
//!   [`vxlan::VxlanOverlay`] (kernel VXLAN, learning, flood entry per peer).
//! - [`kernel::KernelDataPlane`]: the real one: the `weave` bridge through netlink, NAT and
//!   forwarding rules through iptables, overlays behind a switch. Needs CAP_NET_ADMIN.
//! - [`memory::MemoryDataPlane`]: records what it is told; lets whole routers run in one
//!   test process without root (the kernel tests stay for what touches the kernel).
//!
//! Calls return boxed futures so that the router holds an `Arc<dyn DataPlane>` and the
//! composition root (`crate::daemon`) chooses the implementation at run time.

pub mod encrypted;
mod encrypted_counters;
pub mod iptables;
pub mod kernel;
pub mod memory;
pub mod notrack;
pub mod path;
pub mod routed;
mod routed_ports;
mod sleeve_io;
pub mod vxlan;

pub use encrypted::EncryptedReport;

use crate::error::ErrorList;
use crate::mesh::LivePeer;
use crate::peer::PeerName;
use crate::Result;
use futures::future::BoxFuture;
use futures::FutureExt;
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// What a data-plane call returns.
pub type PlaneFuture<'a, T> = BoxFuture<'a, Result<T>>;

/// A live peer as the data plane needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: PeerName,
    pub nickname: String,
    /// Where frames for it are sent (its underlay address), when known.
    pub underlay: Option<IpAddr>,
    /// We hold a mesh connection of our own to it.
    pub direct: bool,
    /// With a password: the encrypted path's keys for this peer pair (see
    /// [`crate::sleeve::SessionKeys`]).
    pub keys: Option<crate::sleeve::SessionKeys>,
}

/// The host side of the router: everything it asks of the kernel.
pub trait DataPlane: Send + Sync + 'static {
    /// The bridge's IPv4 addresses (re-exposed when the router starts).
    fn bridge_addresses(&self) -> PlaneFuture<'_, Vec<Ipv4Net>>;

    /// Puts `cidr` on the bridge and, unless `skip_nat`, masquerades it. Idempotent.
    fn expose(&self, cidr: Ipv4Net, skip_nat: bool) -> PlaneFuture<'_, ()>;

    /// Takes `cidr` off the bridge and removes its rules. Idempotent.
    fn hide(&self, cidr: Ipv4Net) -> PlaneFuture<'_, ()>;

    /// Forwards container traffic to exactly `peers` from now on, each over the overlay
    /// chosen for it; peers not listed are forgotten. Idempotent.
    fn set_peers(&self, peers: Vec<Peer>) -> PlaneFuture<'_, ()>;

    /// Names of the host's network interfaces (the sweep looks for attachments' host veths).
    fn link_names(&self) -> PlaneFuture<'_, BTreeSet<String>>;

    /// The overlay carrying each peer's traffic since the last [`DataPlane::set_peers`].
    fn paths(&self) -> BTreeMap<PeerName, &'static str>;

    /// The encrypted path's counters, when it runs.
    fn encrypted_stats(&self) -> Option<EncryptedReport> {
        None
    }

    /// Which peer owns which blocks of the allocation range (the IPAM ring), for paths that
    /// route by address ([`routed`]); `heal` asks to check the kernel even if nothing
    /// changed. The daemon calls it whenever the ring changes. Default: not needed.
    fn set_ranges(
        &self,
        _ranges: BTreeMap<PeerName, Vec<Ipv4Net>>,
        _heal: bool,
    ) -> PlaneFuture<'_, ()> {
        async { Ok(()) }.boxed()
    }

    /// Whether [`DataPlane::set_ranges`] is used at all (if not, the daemon does not follow
    /// the ring for it: many in-process routers stay cheap).
    fn wants_ranges(&self) -> bool {
        false
    }
}

/// One way of carrying container frames to peers.
pub trait Overlay: Send + Sync + 'static {
    /// Its name in status output and logs, e.g. `"vxlan"`.
    fn name(&self) -> &'static str;

    /// Whether it can carry traffic to `peer` (decided per peer, in preference order).
    fn accepts(&self, peer: &Peer) -> bool;

    /// Carries traffic to exactly `peers` from now on (those the switch gave it, possibly
    /// none); forgets every other peer.
    fn set_peers<'a>(&'a self, peers: &'a [Peer]) -> PlaneFuture<'a, ()>;
}

impl From<&LivePeer> for Peer {
    fn from(p: &LivePeer) -> Peer {
        Peer {
            name: p.name,
            nickname: p.nickname.clone(),
            underlay: p.address,
            direct: p.direct,
            keys: p.data_keys.clone(),
        }
    }
}

/// How soon a failed update is tried again when no peer change comes first.
const RETRY: Duration = Duration::from_secs(5);

/// Hands the mesh's live peers to `apply` whenever they change, until the sender is dropped;
/// a failed update is logged and retried. The daemon runs it with
/// [`DataPlane::set_peers`].
pub async fn follow<F>(
    mut peers: watch::Receiver<Vec<LivePeer>>,
    mut apply: impl FnMut(Vec<Peer>) -> F,
) where
    F: Future<Output = Result<()>>,
{
    loop {
        let want: Vec<Peer> = peers.borrow_and_update().iter().map(Peer::from).collect();
        let failed = match apply(want).await {
            Ok(()) => false,
            Err(e) => {
                tracing::warn!("data plane: {e}");
                true
            }
        };
        tokio::select! {
            changed = peers.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(RETRY), if failed => {}
        }
    }
}

/// Overlays in preference order; each peer goes to the first that accepts it.
pub struct OverlaySwitch {
    overlays: Vec<Box<dyn Overlay>>,
    chosen: Mutex<BTreeMap<PeerName, &'static str>>,
}

impl OverlaySwitch {
    pub fn new(overlays: Vec<Box<dyn Overlay>>) -> OverlaySwitch {
        OverlaySwitch {
            overlays,
            chosen: Mutex::new(BTreeMap::new()),
        }
    }

    /// Which overlay (by index) carries `peer`, if any.
    pub fn choose(&self, peer: &Peer) -> Option<usize> {
        self.overlays.iter().position(|o| o.accepts(peer))
    }

    /// Gives every overlay its share of `peers` (every overlay is told, so one that lost a
    /// peer to another forgets it). All overlays are updated even if one fails.
    pub async fn set_peers(&self, peers: &[Peer]) -> Result<()> {
        let mut shares: Vec<Vec<Peer>> = vec![Vec::new(); self.overlays.len()];
        let mut chosen = BTreeMap::new();
        for p in peers {
            match self.choose(p) {
                Some(i) => {
                    chosen.insert(p.name, self.overlays[i].name());
                    shares[i].push(p.clone());
                }
                None => tracing::warn!(
                    "data plane: no path to peer {}({}) at {:?}",
                    p.name,
                    p.nickname,
                    p.underlay
                ),
            }
        }
        let mut errors = ErrorList::default();
        for (overlay, share) in self.overlays.iter().zip(&shares) {
            errors.push_err(overlay.set_peers(share).await);
        }
        *self.chosen.lock().unwrap_or_else(|p| p.into_inner()) = chosen;
        errors.into_result()
    }

    pub fn paths(&self) -> BTreeMap<PeerName, &'static str> {
        self.chosen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::memory::MemoryOverlay;
    use super::*;
    use std::net::Ipv4Addr;

    fn peer(n: u64, ip: Option<[u8; 4]>) -> Peer {
        Peer {
            name: PeerName::from_u64(n).unwrap(),
            nickname: format!("p{n}"),
            underlay: ip.map(|o| IpAddr::V4(Ipv4Addr::from(o))),
            direct: true,
            keys: None,
        }
    }

    #[tokio::test]
    async fn each_peer_takes_the_first_overlay_that_accepts_it() {
        let near = MemoryOverlay::new(
            "near",
            |p: &Peer| matches!(p.underlay, Some(IpAddr::V4(a)) if a.octets()[..3] == [192, 0, 2]),
        );
        let any = MemoryOverlay::new("any", |p: &Peer| p.underlay.is_some());
        let (near_seen, any_seen) = (near.peers_handle(), any.peers_handle());
        let switch = OverlaySwitch::new(vec![Box::new(near), Box::new(any)]);
        let (a, b, c) = (
            peer(1, Some([192, 0, 2, 1])),
            peer(2, Some([198, 51, 100, 2])),
            peer(3, None),
        );
        switch
            .set_peers(&[a.clone(), b.clone(), c.clone()])
            .await
            .unwrap();
        assert_eq!(near_seen.lock().unwrap().clone(), vec![a.clone()]);
        assert_eq!(any_seen.lock().unwrap().clone(), vec![b.clone()]);
        let paths = switch.paths();
        assert_eq!(paths.get(&a.name), Some(&"near"));
        assert_eq!(paths.get(&b.name), Some(&"any"));
        assert_eq!(paths.get(&c.name), None, "no path without an address");
        // A peer that leaves is forgotten by the overlay that carried it.
        switch.set_peers(std::slice::from_ref(&b)).await.unwrap();
        assert!(near_seen.lock().unwrap().is_empty());
        assert_eq!(any_seen.lock().unwrap().clone(), vec![b]);
    }
}
