//! The kernel half of ADD and DEL, without the router: veth into the container namespace,
//! address (with a MAC derived from it), routes (and the host's route to the address for the
//! VXLAN bypass), sysctls; and the teardown. Kept apart so it can be tested against a bridge
//! in a throw-away namespace.

use crate::cni::Route;
use crate::error::ErrorList;
use crate::netlink::{mac_for_ip, LinkInfo, Netlink, BYPASS_TABLE};
use crate::netns::{write_net_sysctl, NetNs};
use crate::{Error, ErrorKind, Result};
use ipnet::Ipv4Net;
use std::net::{IpAddr, Ipv4Addr};

/// The two namespaces an attachment spans, each with its own netlink connection.
pub struct Sides<'a> {
    pub host_ns: &'a NetNs,
    pub host: &'a Netlink,
    pub container_ns: &'a NetNs,
    pub container: &'a Netlink,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct AttachRequest<'a> {
    /// The veth pair: what [`prepare`] builds before the address is known.
    pub link: LinkRequest<'a>,
    pub address: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    /// `None`: default route via the gateway; `Some(list)`: exactly these (maybe none).
    pub routes: Option<&'a [Route]>,
}

/// What was built.
#[derive(Debug, Clone)]
pub struct Attached {
    /// The host end; `None` only when a re-run found an interface someone else made.
    pub host: Option<LinkInfo>,
    pub container: LinkInfo,
    /// Routes installed in the container, in order.
    pub routes: Vec<Route>,
    /// False when the container interface already existed (a repeated ADD).
    pub created: bool,
}

/// `vethwepl` + 7 hex digits of FNV-1a over `container_id/ifname`: unique per interface (two
/// interfaces of one container, or IDs sharing a prefix, do not collide) and 15 chars long.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(ifname.bytes())
    {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{}{:07x}", crate::HOST_VETH_PREFIX, hash & 0x0fff_ffff)
}

/// The part of an attachment that does not depend on the address.
#[derive(Debug, Clone, Copy)]
pub struct LinkRequest<'a> {
    pub host_veth: &'a str,
    pub ifname: &'a str,
    pub mtu: u32,
    pub bridge_index: u32,
    pub hairpin: bool,
}

/// The outcome of [`prepare`]: the interface, created now or found from an earlier ADD.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The container interface when it already existed (a repeated ADD).
    existing: Option<LinkInfo>,
    /// The host end's index when the veth was created now.
    host_index: Option<u32>,
}

impl Prepared {
    pub fn created(&self) -> bool {
        self.host_index.is_some()
    }
}

/// Creates (unless `ifname` already exists in the container) and configures the interface.
/// On failure, a veth created here is deleted again.
pub async fn attach(sides: &Sides<'_>, req: &AttachRequest<'_>) -> Result<Attached> {
    let prepared = prepare(sides, &req.link).await?;
    finish(sides, req, prepared).await
}

/// Phase one, which needs no address and so can run while the router allocates: the veth
/// (unless `ifname` already exists), hairpin and sysctls. A veth it created is deleted again
/// if a later step fails.
pub async fn prepare(sides: &Sides<'_>, req: &LinkRequest<'_>) -> Result<Prepared> {
    let existing = sides.container.link(req.ifname).await?;
    if existing.is_some() {
        return Ok(Prepared {
            existing,
            host_index: None,
        });
    }
    let index = sides
        .host
        .create_veth_into(
            req.host_veth,
            req.ifname,
            req.mtu,
            Some(req.bridge_index),
            sides.container_ns,
            None,
        )
        .await?;
    let configured = async {
        // The host end was created up.
        if req.hairpin {
            sides.host.set_hairpin(index, true).await?;
        }
        sides
            .host_ns
            .write_sysctl(&format!("net/ipv6/conf/{}/accept_ra", req.host_veth), "0")?;
        sides.container_ns.run(|| container_sysctls(req.ifname))?
    }
    .await;
    match configured {
        Ok(()) => Ok(Prepared {
            existing: None,
            host_index: Some(index),
        }),
        Err(e) => {
            undo_prepare(sides, req.host_veth).await;
            Err(e)
        }
    }
}

/// Deletes the veth [`prepare`] created (best effort: the original error is what counts).
pub async fn undo_prepare(sides: &Sides<'_>, host_veth: &str) {
    if let Err(e) = sides.host.delete_link(host_veth).await {
        tracing::warn!("{e}");
    }
}

/// Phase two: MAC (derived from the address), address, link up, routes. Deletes a veth
/// that [`prepare`] created if a step fails.
pub async fn finish(
    sides: &Sides<'_>,
    req: &AttachRequest<'_>,
    prepared: Prepared,
) -> Result<Attached> {
    let created = prepared.created();
    let result = configure(sides, req, prepared).await;
    if result.is_err() && created {
        undo_prepare(sides, req.link.host_veth).await;
    }
    result
}

async fn configure(
    sides: &Sides<'_>,
    req: &AttachRequest<'_>,
    prepared: Prepared,
) -> Result<Attached> {
    let Prepared {
        existing,
        host_index,
    } = prepared;
    let created = host_index.is_some();
    let mut link = match existing {
        Some(l) => l,
        None => sides
            .container
            .link(req.link.ifname)
            .await?
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("interface {:?} vanished after creation", req.link.ifname),
                )
            })?,
    };
    if created {
        let mac = mac_for_ip(req.address.addr());
        sides.container.set_mac(link.index, mac).await?;
        link.mac = mac;
    }
    sides.container.add_address(link.index, req.address).await?;
    if !link.up {
        // No gratuitous ARP: the MAC is derived from the address, so no neighbour cache can
        // hold a stale entry for it (and closing the packet socket to send one costs an RCU
        // grace period, ~14 ms of every ADD).
        sides.container.set_up(link.index).await?;
        link.up = true;
    }
    let routes = install_routes(sides.container, link.index, req).await?;
    let host = match host_index {
        Some(i) => sides.host.link_by_index(i).await?,
        None => sides.host.link(req.link.host_veth).await?,
    };
    if let Some(host) = &host {
        // Frames from VXLAN peers to this address skip the bridge (see `VxlanBypass`). Only
        // a shortcut: without the route they take the bridge, so a failure is no reason to
        // fail the attachment.
        let own = Ipv4Net::from(req.address.addr());
        if let Err(e) = sides
            .host
            .replace_link_route_in_table(own, host.index, BYPASS_TABLE)
            .await
        {
            tracing::warn!("{e} (frames from VXLAN peers take the bridge)");
        }
    }
    Ok(Attached {
        host,
        container: link,
        routes,
        created,
    })
}

/// Sysctls of the container end, written from inside its namespace.
fn container_sysctls(ifname: &str) -> Result<()> {
    write_net_sysctl(&format!("net/ipv6/conf/{ifname}/accept_ra"), "0")?;
    // Weave's values: notice a moved IP within seconds instead of minutes.
    for (key, value) in [
        ("base_reachable_time", "5"),
        ("delay_first_probe_time", "2"),
        ("ucast_solicit", "1"),
    ] {
        write_net_sysctl(&format!("net/ipv4/neigh/{ifname}/{key}"), value)?;
    }
    Ok(())
}

async fn install_routes(nl: &Netlink, index: u32, req: &AttachRequest<'_>) -> Result<Vec<Route>> {
    let mut installed = Vec::new();
    match req.routes {
        None => {
            let Some(gw) = req.gateway else {
                return Ok(installed);
            };
            if !req.address.contains(&gw) {
                // The gateway is off-subnet: make it reachable on the link first.
                let host_route = Ipv4Net::from(gw);
                nl.add_route_v4(host_route, None, index, true).await?;
                installed.push(Route {
                    dst: host_route,
                    gw: None,
                });
            }
            let default = Ipv4Net::default();
            nl.add_route_v4(default, Some(gw), index, false).await?;
            installed.push(Route {
                dst: default,
                gw: Some(IpAddr::V4(gw)),
            });
        }
        Some(list) => {
            for r in list {
                let gw = match r.gw {
                    Some(IpAddr::V4(g)) => Some(g),
                    Some(IpAddr::V6(g)) => {
                        return Err(Error::new(
                            ErrorKind::InvalidConfig,
                            format!(
                                "add route {} via {g}: IPv6 gateways are not supported",
                                r.dst
                            ),
                        ))
                    }
                    None => req.gateway,
                };
                nl.add_route_v4(r.dst, gw, index, false).await?;
                installed.push(Route {
                    dst: r.dst,
                    gw: gw.map(IpAddr::V4),
                });
            }
        }
    }
    Ok(installed)
}

/// Removes `ifname` from the container (if its namespace is given) and the host veth.
/// Missing links are fine; returns whether anything was deleted.
pub async fn detach(
    host: &Netlink,
    container: Option<&Netlink>,
    ifname: &str,
    host_veth: &str,
) -> Result<bool> {
    let mut errors = ErrorList::default();
    let mut deleted = false;
    if let Some(c) = container {
        deleted |= errors
            .push_err(c.delete_link(ifname).await)
            .unwrap_or(false);
    }
    // Gone already when the container end was deleted (a veth dies as a pair).
    deleted |= errors
        .push_err(host.delete_link(host_veth).await)
        .unwrap_or(false);
    errors.into_result().map(|()| deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_unique_per_interface_and_fit_ifnamsiz() {
        let a = host_veth_name("abcdefg-1", "eth0");
        let b = host_veth_name("abcdefg-1", "net1");
        let c = host_veth_name("abcdefg-2", "eth0");
        for n in [&a, &b, &c] {
            assert!(n.starts_with("vethwepl"), "{n}");
            assert_eq!(n.len(), 15, "{n}");
        }
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            a,
            host_veth_name("abcdefg-1", "eth0"),
            "stable across calls (DEL finds it)"
        );
    }
}
