//! The routed data path ("no encapsulation"): between two peers whose underlay addresses
//! share a directly connected subnet, container traffic is routed by the kernel to the
//! peer's underlay address, as flannel's host-gw does. No VXLAN header, no bridge hop on the
//! underlay: a container packet is one IP packet on the wire.
//!
//! How the kernel is set up (all routes carry protocol [`ROUTE_PROTO`], so only ours are
//! listed and removed):
//! - for every routed peer, one route per CIDR block of the ranges it owns in the IPAM ring,
//!   `via <its underlay address> dev <our underlay link>`; kept in step with the ring (the
//!   daemon hands ring changes over with [`super::DataPlane::set_ranges`]);
//! - the whole allocation range `dev weave` (the bridge), so that ranges of peers that are
//!   not routed (VXLAN, gone) stay on the flat L2 segment;
//! - proxy ARP on the bridge (no delay): a container asking for the MAC of an address
//!   routed elsewhere gets the bridge's, so the flat network is kept (containers keep their
//!   one on-link route) while the host does the routing; addresses whose route is the bridge
//!   itself are not answered, so VXLAN peers' containers answer for themselves;
//! - IPv4 forwarding on, once a first peer is routed;
//! - the forwarder ([`crate::netlink::Forwarder`]) on the ingress of the bridge and of the
//!   underlay links of routed peers, once a first peer is routed: container-to-container
//!   packets are routed by that program with the same routes, skipping the hosts' IP stack
//!   and netfilter (they are exempt from tracking and never NATed anyway), and on the
//!   receiving host the bridge too when the container's address has its route in
//!   [`crate::netlink::BYPASS_TABLE`] (the plugin's ADD adds it); its port variant on the
//!   ingress of the bridge's veth ports ([`super::routed_ports`]), so on the sending host
//!   the bridge is skipped as well; on kernels without tcx (before 6.6), or with
//!   `WEAVE_ROUTED_BPF=off`, the kernel forwards them (`=bridge`: no port variant).
//!
//! Which peers: [`routed_path`], the one per-peer choice. A peer pair with a password never
//! uses this (unencrypted) path: the kernel data plane does not even build it then.

use super::routed_ports::PortForwarding;
use super::{Overlay, Peer, PlaneFuture};
use crate::error::ErrorList;
use crate::ipam::core::RingEntry;
use crate::netlink::{Forwarder, LinkInfo, Netlink, OwnedRoute};
use crate::peer::PeerName;
use crate::{Context, Error, ErrorKind, Result};
use futures::FutureExt;
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::OwnedFd;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Protocol number of our routes (`ip route show proto 87`; 87 is 'W').
pub const ROUTE_PROTO: u8 = 87;
/// Metric of our routes: a kernel route for the same prefix (an exposed bridge address's
/// subnet, metric 0) wins over ours.
pub const ROUTE_METRIC: u32 = 50;
/// How long the list of directly connected subnets is trusted before it is read again.
const SUBNETS_TTL: Duration = Duration::from_secs(5);

/// `--dataplane`: how traffic to peers is carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Routed to neighbours (peers on a directly connected subnet), VXLAN to the others.
    #[default]
    Auto,
    /// VXLAN to every peer.
    Vxlan,
    /// Routed to neighbours only; no VXLAN (other peers are not reachable).
    Routed,
}

impl FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mode> {
        match s {
            "auto" => Ok(Mode::Auto),
            "vxlan" => Ok(Mode::Vxlan),
            "routed" => Ok(Mode::Routed),
            _ => Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("--dataplane {s:?}: want auto, vxlan or routed"),
            )),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::Vxlan => "vxlan",
            Mode::Routed => "routed",
        })
    }
}

/// A directly connected IPv4 subnet of this host and the link it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Connected {
    pub net: Ipv4Net,
    pub oif: u32,
}

/// The per-peer path choice: the link to route `peer` through, if it is routed. It is when
/// the pair has no password, we hold a direct mesh connection to it, and its underlay
/// address lies on one of our directly connected subnets (and is not ours).
pub fn routed_path(peer: &Peer, password: bool, subnets: &[Connected]) -> Option<u32> {
    let Some(IpAddr::V4(ip)) = peer.underlay else {
        return None;
    };
    if password || !peer.direct || subnets.iter().any(|c| c.net.addr() == ip) {
        return None;
    }
    subnets
        .iter()
        .filter(|c| c.net.prefix_len() < 32 && c.net.contains(&ip))
        .max_by_key(|c| c.net.prefix_len())
        .map(|c| c.oif)
}

/// Which links count as underlay: up, not the bridge or one of its ports (container veths,
/// VXLAN), not loopback, not VXLAN.
pub fn connected_subnets(
    links: &[LinkInfo],
    addrs: &[(u32, Ipv4Net)],
    bridge: u32,
) -> Vec<Connected> {
    let underlay: BTreeSet<u32> = links
        .iter()
        .filter(|l| {
            l.up && l.index != bridge
                && l.master.is_none()
                && l.name != "lo"
                && l.kind.as_deref() != Some("vxlan")
        })
        .map(|l| l.index)
        .collect();
    let mut out: Vec<Connected> = addrs
        .iter()
        .filter(|(i, n)| underlay.contains(i) && !n.addr().is_loopback())
        .map(|&(oif, net)| Connected { net, oif })
        .collect();
    out.sort();
    out
}

/// The ring as CIDR blocks per owner: each entry covers `size` addresses from its token,
/// wrapping from the end of `universe` to its start.
pub fn ring_ranges(entries: &[RingEntry], universe: Ipv4Net) -> BTreeMap<PeerName, Vec<Ipv4Net>> {
    let (lo, hi) = (
        u64::from(u32::from(universe.network())),
        u64::from(u32::from(universe.broadcast())) + 1,
    );
    let mut pieces: BTreeMap<PeerName, Vec<(u64, u64)>> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.size > 0) {
        let start = u64::from(u32::from(e.token));
        if start < lo || start >= hi {
            continue;
        }
        let end = start + e.size;
        let list = pieces.entry(e.peer).or_default();
        list.push((start, end.min(hi)));
        if end > hi {
            list.push((lo, (lo + end - hi).min(start)));
        }
    }
    pieces
        .into_iter()
        .map(|(peer, mut list)| {
            list.sort();
            let mut joined: Vec<(u64, u64)> = Vec::new();
            for (s, e) in list {
                match joined.last_mut() {
                    Some(last) if last.1 >= s => last.1 = last.1.max(e),
                    _ => joined.push((s, e)),
                }
            }
            let cidrs = joined.into_iter().flat_map(|(s, e)| cidrs(s, e)).collect();
            (peer, cidrs)
        })
        .collect()
}

/// The fewest CIDR blocks covering exactly the addresses `start..end`.
pub fn cidrs(mut start: u64, end: u64) -> Vec<Ipv4Net> {
    let mut out = Vec::new();
    while start < end {
        let align = if start == 0 {
            32
        } else {
            start.trailing_zeros().min(32)
        };
        let mut bits = align;
        while bits > 0 && start + (1u64 << bits) > end {
            bits -= 1;
        }
        let net = Ipv4Net::new(Ipv4Addr::from(start as u32), (32 - bits) as u8)
            .expect("prefix length <= 32");
        out.push(net);
        start += 1u64 << bits;
    }
    out
}

/// A routed peer: where its traffic goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hop {
    name: PeerName,
    gateway: Ipv4Addr,
    oif: u32,
}

/// The routes wanted: the range on the bridge, each routed peer's blocks via its address.
/// A block equal to the whole range is skipped (it would shadow the bridge route).
fn plan(
    universe: Ipv4Net,
    bridge: u32,
    hops: &[Hop],
    ranges: &BTreeMap<PeerName, Vec<Ipv4Net>>,
) -> BTreeSet<OwnedRoute> {
    let mut want = BTreeSet::new();
    want.insert(OwnedRoute {
        dst: universe,
        gateway: None,
        oif: bridge,
        metric: ROUTE_METRIC,
    });
    for hop in hops {
        for dst in ranges.get(&hop.name).into_iter().flatten() {
            if *dst != universe {
                want.insert(OwnedRoute {
                    dst: *dst,
                    gateway: Some(hop.gateway),
                    oif: hop.oif,
                    metric: ROUTE_METRIC,
                });
            }
        }
    }
    want
}

#[derive(Default)]
struct State {
    hops: Vec<Hop>,
    ranges: BTreeMap<PeerName, Vec<Ipv4Net>>,
    /// What was installed last (skips the route dump when nothing changed).
    installed: Option<BTreeSet<OwnedRoute>>,
    forwarding: bool,
    forwarder: ForwarderState,
}

/// The forwarder and the links it is attached to (each attachment lasts as long as its
/// descriptor: until the router exits).
#[derive(Default)]
enum ForwarderState {
    #[default]
    NotYet,
    On {
        forwarder: Arc<Forwarder>,
        links: BTreeMap<u32, OwnedFd>,
        /// The port variant on the bridge's ports (none with `WEAVE_ROUTED_BPF=bridge`);
        /// held for its drop.
        _ports: Option<PortForwarding>,
    },
    /// Turned off, or the kernel cannot: the kernel forwards.
    Off,
}

/// The routed path of one host. Shared by the overlay switch ([`RoutedOverlay`]) and the
/// kernel data plane (ring updates).
pub struct Routed {
    netlink: Netlink,
    bridge: LinkInfo,
    universe: Ipv4Net,
    password: bool,
    subnets: Mutex<(Vec<Connected>, Option<Instant>)>,
    state: tokio::sync::Mutex<State>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Routed {
    /// Turns on proxy ARP on the bridge and reads the connected subnets. `netlink` is its own
    /// connection.
    pub async fn start(
        netlink: Netlink,
        bridge: &LinkInfo,
        universe: Ipv4Net,
        password: bool,
    ) -> Result<Routed> {
        let b = bridge.name.clone();
        crate::task::blocking(move || {
            sysctl(&format!("net/ipv4/conf/{b}/proxy_arp"), "1")?;
            // Answer at once: the default delays proxied answers to broadcasts by up to 0.8 s.
            sysctl(&format!("net/ipv4/neigh/{b}/proxy_delay"), "0")
        })
        .await
        .context("set up routed path")?;
        let routed = Routed {
            netlink,
            bridge: bridge.clone(),
            universe,
            password,
            subnets: Mutex::new((Vec::new(), None)),
            state: tokio::sync::Mutex::new(State::default()),
        };
        routed.refresh_subnets(true).await?;
        Ok(routed)
    }

    /// Reads the directly connected subnets again when `force` or when they are older than
    /// [`SUBNETS_TTL`]; true if they changed.
    pub async fn refresh_subnets(&self, force: bool) -> Result<bool> {
        let fresh = lock(&self.subnets)
            .1
            .is_some_and(|t| t.elapsed() < SUBNETS_TTL);
        if fresh && !force {
            return Ok(false);
        }
        let links = self.netlink.links().await?;
        let addrs = self.netlink.all_addresses_v4().await?;
        let now = connected_subnets(&links, &addrs, self.bridge.index);
        let mut s = lock(&self.subnets);
        let changed = s.0 != now;
        *s = (now, Some(Instant::now()));
        Ok(changed)
    }

    fn choose(&self, peer: &Peer) -> Option<u32> {
        routed_path(peer, self.password, &lock(&self.subnets).0)
    }

    /// Routes exactly `peers` (those the switch gave this path) from now on.
    pub async fn set_peers(&self, peers: &[Peer]) -> Result<()> {
        let hops: Vec<Hop> = peers
            .iter()
            .filter_map(|p| match (p.underlay, self.choose(p)) {
                (Some(IpAddr::V4(gateway)), Some(oif)) => Some(Hop {
                    name: p.name,
                    gateway,
                    oif,
                }),
                _ => None,
            })
            .collect();
        let mut state = self.state.lock().await;
        state.hops = hops;
        self.reconcile(&mut state, false).await
    }

    /// The ring's owners changed (or not: `heal` re-reads the kernel's routes anyway).
    pub async fn set_ranges(
        &self,
        ranges: BTreeMap<PeerName, Vec<Ipv4Net>>,
        heal: bool,
    ) -> Result<()> {
        let mut state = self.state.lock().await;
        state.ranges = ranges;
        self.reconcile(&mut state, heal).await
    }

    async fn reconcile(&self, state: &mut State, heal: bool) -> Result<()> {
        let want = plan(self.universe, self.bridge.index, &state.hops, &state.ranges);
        if !heal && state.installed.as_ref() == Some(&want) {
            return Ok(());
        }
        if !state.hops.is_empty() && !state.forwarding {
            crate::task::blocking(|| sysctl("net/ipv4/ip_forward", "1"))
                .await
                .context("route to peers")?;
            state.forwarding = true;
        }
        if !state.hops.is_empty() {
            let links: BTreeSet<u32> = std::iter::once(self.bridge.index)
                .chain(state.hops.iter().map(|h| h.oif))
                .collect();
            self.attach_forwarder(&mut state.forwarder, &links);
        }
        let have: BTreeSet<OwnedRoute> = self
            .netlink
            .owned_routes(ROUTE_PROTO)
            .await?
            .into_iter()
            .collect();
        let mut errors = ErrorList::default();
        for r in have.difference(&want) {
            tracing::info!("routed: remove {} via {:?}", r.dst, r.gateway);
            errors.push_err(self.netlink.delete_owned_route(r, ROUTE_PROTO).await);
        }
        for r in want.difference(&have) {
            match r.gateway {
                Some(gw) => tracing::info!("routed: {} via {gw}", r.dst),
                None => tracing::info!("routed: {} on {}", r.dst, self.bridge.name),
            }
            errors.push_err(self.netlink.replace_owned_route(r, ROUTE_PROTO).await);
        }
        let result = errors.into_result().context("set routes to peers");
        state.installed = result.is_ok().then_some(want);
        result
    }
}

impl Routed {
    /// Puts the forwarder on the ingress of `links` it is not on yet. Failing to is not an
    /// error: the kernel forwards those packets as before (logged once).
    fn attach_forwarder(&self, state: &mut ForwarderState, links: &BTreeSet<u32>) {
        if matches!(state, ForwarderState::NotYet) {
            let setting = std::env::var("WEAVE_ROUTED_BPF").unwrap_or_default();
            *state = if setting == "off" {
                tracing::info!("routed: forwarder off (WEAVE_ROUTED_BPF=off): the kernel forwards");
                ForwarderState::Off
            } else {
                match Forwarder::load(self.universe, self.bridge.index, self.bridge.mac) {
                    Ok(forwarder) => {
                        let forwarder = Arc::new(forwarder);
                        let ports = (setting != "bridge")
                            .then(|| PortForwarding::start(forwarder.clone(), self.bridge.index));
                        ForwarderState::On {
                            forwarder,
                            links: BTreeMap::new(),
                            _ports: ports,
                        }
                    }
                    Err(e) => {
                        tracing::warn!("routed: load the forwarder: {e}: the kernel forwards");
                        ForwarderState::Off
                    }
                }
            };
        }
        let ForwarderState::On {
            forwarder,
            links: attached,
            ..
        } = state
        else {
            return;
        };
        for &link in links {
            if attached.contains_key(&link) {
                continue;
            }
            match forwarder.attach(link) {
                Ok(fd) => {
                    tracing::info!("routed: forwarder on link {link}");
                    attached.insert(link, fd);
                }
                Err(e) => {
                    tracing::warn!(
                        "routed: attach the forwarder to link {link}: {e}: the kernel forwards"
                    );
                    *state = ForwarderState::Off;
                    return;
                }
            }
        }
    }
}

fn sysctl(key: &str, value: &str) -> Result<()> {
    match crate::netns::write_net_sysctl(key, value)? {
        true => Ok(()),
        false => Err(Error::new(
            ErrorKind::NotFound,
            format!("write sysctl {key:?}: no such key"),
        )),
    }
}

/// The routed path as an overlay of the switch: accepts the peers [`routed_path`] picks.
pub struct RoutedOverlay(pub Arc<Routed>);

impl Overlay for RoutedOverlay {
    fn name(&self) -> &'static str {
        "routed"
    }

    fn accepts(&self, peer: &Peer) -> bool {
        self.0.choose(peer).is_some()
    }

    fn set_peers<'a>(&'a self, peers: &'a [Peer]) -> PlaneFuture<'a, ()> {
        async move { self.0.set_peers(peers).await }.boxed()
    }
}

#[cfg(test)]
#[path = "routed_tests.rs"]
mod tests;
