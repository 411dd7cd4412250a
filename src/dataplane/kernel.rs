//! The kernel data plane: the `weave` bridge (netlink), the router's iptables rules (NAT for
//! exposed addresses, forwarding, the API port guard, no conntrack between containers) and
//! the overlays behind an [`OverlaySwitch`], the first that accepts a peer: the routed path
//! to neighbours (no encapsulation, never with a password; `--dataplane`), the encrypted path
//! when a password is set, kernel VXLAN otherwise and for trusted subnets ([`PathPolicy`]).
//! Needs CAP_NET_ADMIN.

use super::encrypted::{EncryptedOverlay, EncryptedStats};
use super::notrack::{Backend, Notrack};
use super::path::{Only, PathPolicy};
use super::routed::{Mode, Routed, RoutedOverlay};
use super::vxlan::{Datapath, VxlanOverlay};
use super::{iptables, DataPlane, Overlay, OverlaySwitch, Peer, PlaneFuture};
use crate::netlink::Netlink;
use crate::peer::PeerName;
use crate::sleeve::Limits;
use crate::task::blocking;
use crate::{Context, Result};
use futures::FutureExt;
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::Mutex;

/// How the kernel data plane is set up (from the router's flags).
#[derive(Debug, Clone)]
pub struct KernelOptions {
    pub bridge: String,
    pub mtu: u32,
    /// The VXLAN UDP port (Weave: mesh port + 1).
    pub udp_port: u16,
    /// The API's loopback port, guarded by an INPUT rule; `None` when it listens elsewhere.
    pub protect_port: Option<u16>,
    /// The allocation range (traffic inside it skips conntrack).
    pub range: Ipv4Net,
    /// Which peers get which path (password, trusted subnets).
    pub policy: PathPolicy,
    /// The encrypted path's UDP port (the mesh port, as Weave's sleeve).
    pub encrypted_port: u16,
    /// When the encrypted path rekeys.
    pub rekey: Limits,
    /// `--dataplane`.
    pub mode: Mode,
    /// The mesh has a password: no unencrypted routed path.
    pub password: bool,
}

/// The bridge, the rules and the VXLAN overlay of this host.
pub struct KernelDataPlane {
    /// Also serializes expose/hide, so check-then-add on rules cannot race.
    netlink: Mutex<Netlink>,
    bridge_index: u32,
    switch: OverlaySwitch,
    encrypted: Option<EncryptedStats>,
    routed: Option<Arc<Routed>>,
    /// The peers of the last [`DataPlane::set_peers`] (re-sorted when the host's subnets
    /// change).
    peers: Mutex<Vec<Peer>>,
    /// The connection-tracking exemptions, told of each exposed address.
    notrack: Notrack,
}

/// The bridge's own addresses (host parts of its subnets), which stay tracked.
fn bridge_hosts(subnets: &[Ipv4Net]) -> Vec<std::net::Ipv4Addr> {
    subnets.iter().map(Ipv4Net::addr).collect()
}

impl KernelDataPlane {
    /// Ensures the bridge, the base rules and the VXLAN device (each adopted if present).
    pub async fn start(opts: KernelOptions) -> Result<KernelDataPlane> {
        let netlink = Netlink::open().context("open netlink")?;
        let bridge = netlink
            .ensure_bridge(&opts.bridge, opts.mtu)
            .await
            .context("ensure bridge")?;
        let (protect, range) = (opts.protect_port, opts.range);
        // The UDP the data plane carries between hosts skips conntrack: VXLAN's port, and
        // the encrypted path's (conntrack on both hosts lengthens every round trip).
        let mut udp_ports = Vec::new();
        if opts.mode != Mode::Routed {
            udp_ports.push(opts.udp_port);
        }
        if opts.policy.encrypt {
            udp_ports.push(opts.encrypted_port);
        }
        // A restarted router finds its exposed addresses still on the bridge.
        let tracked = bridge_hosts(
            &netlink
                .addresses_v4(bridge.index)
                .await
                .context("list bridge addresses")?,
        );
        let notrack = blocking(move || Notrack::install(range, &udp_ports, protect, &tracked))
            .await
            .context("configure connection tracking")?;
        // Without nftables the API port's guard goes to iptables' INPUT.
        let guard = protect.filter(|_| notrack.backend() == Backend::Iptables);
        blocking(move || iptables::configure_base(guard))
            .await
            .context("configure iptables")?;
        let mut overlays: Vec<Box<dyn Overlay>> = Vec::new();
        let routed = match opts.mode {
            Mode::Vxlan => None,
            Mode::Auto if opts.password => None,
            Mode::Auto | Mode::Routed => Some(Arc::new(
                Routed::start(
                    Netlink::open().context("open netlink")?,
                    &bridge,
                    opts.range,
                    opts.password,
                )
                .await?,
            )),
        };
        if let Some(r) = &routed {
            let r = r.clone();
            blocking(move || iptables::allow_routed(range))
                .await
                .context("configure iptables")?;
            overlays.push(Box::new(RoutedOverlay(r)));
        }
        let mut encrypted = None;
        if opts.policy.encrypt {
            let e = EncryptedOverlay::start(
                &netlink,
                bridge.index,
                opts.mtu,
                opts.encrypted_port,
                opts.rekey,
            )
            .await
            .context("start encrypted data path")?;
            encrypted = Some(e.stats());
            overlays.push(Box::new(Only {
                policy: opts.policy.clone(),
                inner: Box::new(e),
            }));
        }
        if opts.policy.encrypt && opts.policy.trusted.is_empty() {
            // No peer may use clear VXLAN, and a device left by a run without password would
            // let anyone on the underlay inject frames into the bridge: remove it.
            Datapath::remove(&netlink, opts.udp_port)
                .await
                .context("remove the unencrypted data path")?;
        } else if opts.mode != Mode::Routed {
            // VXLAN on port+1, flooding to every live peer the switch gives it.
            let dp = Datapath::ensure(&netlink, bridge.index, opts.udp_port, opts.mtu, None)
                .await
                .context("start data plane")?;
            let vxlan =
                VxlanOverlay::new(dp, Netlink::open().context("open netlink")?).with_bypass(range);
            overlays.push(Box::new(Only {
                policy: opts.policy.clone(),
                inner: Box::new(vxlan),
            }));
        }
        Ok(KernelDataPlane {
            netlink: Mutex::new(netlink),
            bridge_index: bridge.index,
            switch: OverlaySwitch::new(overlays),
            encrypted,
            routed,
            notrack,
            peers: Mutex::new(Vec::new()),
        })
    }
}

impl DataPlane for KernelDataPlane {
    fn bridge_addresses(&self) -> PlaneFuture<'_, Vec<Ipv4Net>> {
        async move {
            let nl = self.netlink.lock().await;
            nl.addresses_v4(self.bridge_index)
                .await
                .context("list bridge addresses")
        }
        .boxed()
    }

    fn expose(&self, cidr: Ipv4Net, skip_nat: bool) -> PlaneFuture<'_, ()> {
        async move {
            let nl = self.netlink.lock().await;
            nl.add_address(self.bridge_index, cidr)
                .await
                .with_context(|| format!("add {cidr} to bridge"))?;
            let tracked = bridge_hosts(&nl.addresses_v4(self.bridge_index).await?);
            let notrack = self.notrack.clone();
            blocking(move || {
                iptables::expose(cidr, skip_nat)?;
                notrack.track(cidr.addr(), &tracked)
            })
            .await
        }
        .boxed()
    }

    fn hide(&self, cidr: Ipv4Net) -> PlaneFuture<'_, ()> {
        async move {
            let nl = self.netlink.lock().await;
            nl.delete_address(self.bridge_index, cidr)
                .await
                .with_context(|| format!("remove {cidr} from bridge"))?;
            let tracked = bridge_hosts(&nl.addresses_v4(self.bridge_index).await?);
            let notrack = self.notrack.clone();
            blocking(move || {
                iptables::hide(cidr)?;
                notrack.untrack(cidr.addr(), &tracked)
            })
            .await
        }
        .boxed()
    }

    fn set_peers(&self, peers: Vec<Peer>) -> PlaneFuture<'_, ()> {
        async move {
            let mut last = self.peers.lock().await;
            *last = peers;
            self.switch.set_peers(&last).await
        }
        .boxed()
    }

    fn wants_ranges(&self) -> bool {
        self.routed.is_some()
    }

    fn set_ranges(
        &self,
        ranges: BTreeMap<PeerName, Vec<Ipv4Net>>,
        heal: bool,
    ) -> PlaneFuture<'_, ()> {
        async move {
            let Some(routed) = &self.routed else {
                return Ok(());
            };
            // A new or lost underlay address may change which peers are neighbours.
            if routed.refresh_subnets(heal).await? {
                let last = self.peers.lock().await;
                self.switch.set_peers(&last).await?;
            }
            routed.set_ranges(ranges, heal).await
        }
        .boxed()
    }

    fn link_names(&self) -> PlaneFuture<'_, BTreeSet<String>> {
        async move {
            let links = self.netlink.lock().await.links().await?;
            Ok(links.into_iter().map(|l| l.name).collect())
        }
        .boxed()
    }

    fn paths(&self) -> BTreeMap<PeerName, &'static str> {
        self.switch.paths()
    }

    fn encrypted_stats(&self) -> Option<super::EncryptedReport> {
        self.encrypted.as_ref().map(|e| e.report())
    }
}
