//! The kernel data plane between hosts: one VXLAN device attached to the `weave` bridge.
//!
//! Weave's fastdp puts an Open vSwitch datapath beside the bridge; here the Linux VXLAN
//! driver does the same job with no user-space work per packet:
//! - the device `vxlan-<port>` (UDP port = mesh port + 1, 6784 by default) is a port of the
//!   `weave` bridge, so containers on every host share one flat L2 segment;
//! - one all-zeros ("flood") FDB entry per live peer's underlay address carries broadcasts
//!   (ARP) and frames for still-unknown MACs to every peer;
//! - learning is on: the kernel records the sending host of every received frame, so known
//!   unicast goes straight to the one host that has the MAC.
//!
//! All peers use one fixed VNI, [`VNI`], because the device is shared by all of them (Weave's
//! per-pair VNIs need the OVS datapath). The MTU follows the bridge's: 1376 by default leaves
//! the 50 bytes of VXLAN/UDP/IP/Ethernet headers plus margin inside a 1500-byte underlay.
//!
//! [`VxlanOverlay`] is this device as an [`Overlay`] of the data plane: it accepts every peer
//! with an IPv4 underlay address. The mesh decides who is live; nothing here talks to it.

use super::{Overlay, Peer, PlaneFuture};
use crate::mesh::LivePeer;
use crate::netlink::{FdbEntry, Netlink, VxlanBypass, VxlanSpec, FLOOD_MAC};
use crate::netns::write_net_sysctl;
use crate::{Context, Error, ErrorKind, Result};
use futures::FutureExt;
use ipnet::Ipv4Net;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use tokio::sync::watch;

/// The VXLAN network identifier every peer uses: 0x5745, "WE".
pub const VNI: u32 = 0x5745;

/// The default VXLAN UDP port: Weave's mesh port 6783 plus one.
pub const DEFAULT_UDP_PORT: u16 = 6784;

/// The VXLAN UDP port for a mesh port (Weave: `--port` + 1).
pub fn udp_port(mesh_port: u16) -> u16 {
    mesh_port.wrapping_add(1)
}

/// The device name for a UDP port, as Weave names its vport: `vxlan-6784`.
pub fn device_name(udp_port: u16) -> String {
    format!("vxlan-{udp_port}")
}

/// A VXLAN device attached to the bridge. Holds no kernel resources itself: the device stays
/// when this is dropped (a restarted router picks it up); [`Datapath::remove`] deletes it.
#[derive(Debug, Clone)]
pub struct Datapath {
    name: String,
    index: u32,
    local: Option<Ipv4Addr>,
}

impl Datapath {
    /// Creates (or adopts) `vxlan-<udp_port>`, sets its MTU, attaches it to `bridge_index`
    /// and brings it up. A device left with another VNI, port, local address or learning
    /// mode is recreated; one that matches keeps its FDB (peers stay reachable across a
    /// router restart). `local` is the underlay source address (`None`: chosen by route).
    pub async fn ensure(
        nl: &Netlink,
        bridge_index: u32,
        udp_port: u16,
        mtu: u32,
        local: Option<Ipv4Addr>,
    ) -> Result<Datapath> {
        let name = device_name(udp_port);
        let spec = VxlanSpec {
            name: &name,
            vni: VNI,
            dstport: udp_port,
            local,
            learning: true,
            mtu,
        };
        let what = || format!("set up datapath {name:?}");
        let existing = match nl.link(&name).await? {
            Some(link) => match nl.vxlan_config(link.index).await? {
                Some(c) if spec.matches(&c) => Some(link),
                found => {
                    tracing::info!(
                        "datapath: replacing {name} (found {:?}, want {spec:?})",
                        found
                    );
                    nl.delete_link(&name).await.with_context(what)?;
                    None
                }
            },
            None => None,
        };
        let index = match existing {
            Some(link) => {
                if link.mtu != mtu {
                    nl.set_mtu(link.index, mtu).await.with_context(what)?;
                }
                if link.master != Some(bridge_index) {
                    nl.set_master(link.index, bridge_index)
                        .await
                        .with_context(what)?;
                }
                link.index
            }
            None => {
                let index = nl.create_vxlan(&spec).await?;
                nl.set_master(index, bridge_index)
                    .await
                    .with_context(what)?;
                index
            }
        };
        nl.set_up(index).await.with_context(what)?;
        Ok(Datapath { name, index, local })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    /// Makes the flood entries exactly `peers` (our own `local` address is skipped: flooding
    /// to ourselves would loop frames back). Adds new peers, removes gone ones together with
    /// what was learnt behind them, so no frame goes to a host that left. Idempotent.
    pub async fn set_peers(&self, nl: &Netlink, peers: &[Ipv4Addr]) -> Result<()> {
        let want: BTreeSet<Ipv4Addr> = peers
            .iter()
            .copied()
            .filter(|p| Some(*p) != self.local && !p.is_unspecified())
            .collect();
        let entries = nl.fdb_list(self.index).await?;
        let have: BTreeSet<Ipv4Addr> = entries
            .iter()
            .filter(|e| e.is_flood())
            .filter_map(|e| e.dst)
            .collect();
        let mut errors = crate::error::ErrorList::default();
        for peer in want.difference(&have) {
            tracing::info!("datapath: flood to peer {peer}");
            errors.push_err(nl.fdb_append(self.index, FLOOD_MAC, *peer).await);
        }
        for e in stale(&entries, &want) {
            let dst = e.dst.unwrap_or(Ipv4Addr::UNSPECIFIED);
            if e.is_flood() {
                tracing::info!("datapath: stop flooding to gone peer {dst}");
            }
            errors.push_err(nl.fdb_delete(self.index, e.mac, dst).await);
        }
        errors
            .into_result()
            .with_context(|| format!("set peers of {}", self.name))
    }

    /// Keeps the flood entries equal to the mesh's live peers (their IPv4 underlay
    /// addresses) until the sender is dropped. A failed reconciliation is logged and retried.
    pub async fn follow(self, nl: Netlink, peers: watch::Receiver<Vec<LivePeer>>) {
        let overlay = std::sync::Arc::new(VxlanOverlay::new(self, nl));
        super::follow(peers, move |p: Vec<Peer>| {
            let overlay = overlay.clone();
            async move { overlay.set_peers(&p).await }
        })
        .await
    }

    /// The underlay addresses frames are flooded to now.
    pub async fn peers(&self, nl: &Netlink) -> Result<Vec<Ipv4Addr>> {
        Ok(nl
            .fdb_list(self.index)
            .await?
            .into_iter()
            .filter(|e| e.is_flood())
            .filter_map(|e| e.dst)
            .collect())
    }

    /// Deletes the device of `udp_port` (with its FDB), e.g. on `weave reset`. `Ok(false)`
    /// if there was none.
    pub async fn remove(nl: &Netlink, udp_port: u16) -> Result<bool> {
        let name = device_name(udp_port);
        match nl.link(&name).await? {
            Some(l) if l.kind.as_deref() != Some("vxlan") => Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "remove datapath {name:?}: link is a {}, not vxlan",
                    l.kind.as_deref().unwrap_or("device")
                ),
            )),
            Some(_) => nl.delete_link(&name).await,
            None => Ok(false),
        }
    }
}

/// The IPv4 underlay addresses of peers (VXLAN here runs over IPv4 only).
pub fn ipv4_underlays(peers: &[Peer]) -> Vec<Ipv4Addr> {
    peers
        .iter()
        .filter_map(|p| match p.underlay {
            Some(IpAddr::V4(ip)) => Some(ip),
            _ => None,
        })
        .collect()
}

/// The VXLAN device as an overlay: flood entries for the peers it is given, and the
/// receive bypass while it lives.
pub struct VxlanOverlay {
    datapath: Datapath,
    netlink: Netlink,
    _bypass: Option<VxlanBypass>,
}

impl VxlanOverlay {
    /// `netlink` is its own connection (FDB updates do not wait for expose/hide).
    pub fn new(datapath: Datapath, netlink: Netlink) -> VxlanOverlay {
        VxlanOverlay {
            datapath,
            netlink,
            _bypass: None,
        }
    }

    /// With the receive bypass for allocation range `range` on the device: frames from VXLAN
    /// peers to our containers go to their veths without the bridge (see [`VxlanBypass`]).
    /// Not an error when it cannot be had (a kernel before 6.6, `WEAVE_VXLAN_BPF=off`): the
    /// bridge forwards them, as it does any frame the bypass leaves alone.
    pub fn with_bypass(mut self, range: Ipv4Net) -> VxlanOverlay {
        let name = self.datapath.name().to_string();
        if std::env::var("WEAVE_VXLAN_BPF").is_ok_and(|v| v == "off") {
            tracing::info!("datapath: bypass off on {name} (WEAVE_VXLAN_BPF=off)");
            return self;
        }
        // The program's route lookup is that of a packet forwarded from this device.
        let forwarding = format!("net/ipv4/conf/{name}/forwarding");
        if let Err(e) = write_net_sysctl(&forwarding, "1") {
            tracing::warn!("datapath: no bypass on {name}: {e}");
            return self;
        }
        match VxlanBypass::attach(range, self.datapath.index()) {
            Ok(b) => {
                tracing::info!("datapath: bypass on {name}");
                self._bypass = Some(b);
            }
            Err(e) => tracing::warn!("datapath: no bypass on {name}: attach the program: {e}"),
        }
        self
    }
}

impl Overlay for VxlanOverlay {
    fn name(&self) -> &'static str {
        "vxlan"
    }

    fn accepts(&self, peer: &Peer) -> bool {
        matches!(peer.underlay, Some(IpAddr::V4(_)))
    }

    fn set_peers<'a>(&'a self, peers: &'a [Peer]) -> PlaneFuture<'a, ()> {
        async move {
            self.datapath
                .set_peers(&self.netlink, &ipv4_underlays(peers))
                .await
        }
        .boxed()
    }
}

/// Entries pointing at a host that is not in `want`: its flood entry and learnt MACs.
fn stale<'a>(
    entries: &'a [FdbEntry],
    want: &'a BTreeSet<Ipv4Addr>,
) -> impl Iterator<Item = &'a FdbEntry> {
    entries
        .iter()
        .filter(move |e| e.dst.is_some_and(|d| !want.contains(&d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ports_follow_weave() {
        assert_eq!(udp_port(6783), DEFAULT_UDP_PORT);
        assert_eq!(device_name(udp_port(6783)), "vxlan-6784");
        assert_eq!(device_name(7001), "vxlan-7001");
    }

    #[test]
    fn stale_entries_are_those_of_gone_peers() {
        let a: Ipv4Addr = "192.0.2.1".parse().unwrap();
        let b: Ipv4Addr = "192.0.2.2".parse().unwrap();
        let e = |mac: [u8; 6], dst: Option<Ipv4Addr>, permanent| FdbEntry {
            mac,
            dst,
            permanent,
        };
        let entries = vec![
            e(FLOOD_MAC, Some(a), true),
            e(FLOOD_MAC, Some(b), true),
            e([2, 0, 0, 0, 0, 1], Some(b), false),
            e([2, 0, 0, 0, 0, 2], Some(a), false),
            e([2, 0, 0, 0, 0, 3], None, true),
        ];
        let want: BTreeSet<Ipv4Addr> = [a].into();
        let gone: Vec<_> = stale(&entries, &want).cloned().collect();
        assert_eq!(gone, vec![entries[1].clone(), entries[2].clone()]);
    }
}
