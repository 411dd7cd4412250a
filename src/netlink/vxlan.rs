//! VXLAN devices: the kernel data plane between hosts (`ip link add ... type vxlan`).

use super::{has_errno, Netlink};
use crate::{Context, Error, ErrorKind, Result};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::{LinkUnspec, LinkVxlan};
use std::net::Ipv4Addr;

/// What a VXLAN device is made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec<'a> {
    pub name: &'a str,
    pub vni: u32,
    /// UDP destination port (also the port the kernel listens on).
    pub dstport: u16,
    /// Source address of the outer packets; `None` lets the route decide.
    pub local: Option<Ipv4Addr>,
    /// Learn remote MACs (and the host behind them) from received frames.
    pub learning: bool,
    pub mtu: u32,
}

impl Netlink {
    /// `ip link add NAME mtu MTU type vxlan id VNI dstport PORT [local IP] [no]learning`.
    /// The device is left down; returns its index.
    pub async fn create_vxlan(&self, spec: &VxlanSpec<'_>) -> Result<u32> {
        let name = spec.name;
        let what = || format!("create vxlan {name:?}");
        let mut builder = LinkVxlan::new(name, spec.vni)
            .port(spec.dstport)
            .learning(spec.learning)
            .mtu(spec.mtu);
        if let Some(local) = spec.local {
            builder = builder.local(local);
        }
        self.ack(
            RouteNetlinkMessage::NewLink(builder.build()),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
        .map_err(vxlan_hint)
        .with_context(what)?;
        let created = self
            .link(name)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "vanished after creation"))
            .with_context(what)?;
        Ok(created.index)
    }
}

/// How an existing VXLAN device is configured (what [`Netlink::vxlan_config`] reads back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    pub vni: u32,
    pub dstport: u16,
    pub local: Option<Ipv4Addr>,
    pub learning: bool,
}

impl VxlanSpec<'_> {
    /// True if a device configured as `c` can be kept for this spec (MTU aside: it can be
    /// changed in place).
    pub fn matches(&self, c: &VxlanConfig) -> bool {
        self.vni == c.vni
            && self.dstport == c.dstport
            && self.local == c.local
            && self.learning == c.learning
    }
}

impl Netlink {
    /// `ip -d link show` of a VXLAN device; `Ok(None)` if the link is absent or not VXLAN.
    pub async fn vxlan_config(&self, index: u32) -> Result<Option<VxlanConfig>> {
        let query = LinkUnspec::new_with_index(index).build();
        let replies = match self.ack(RouteNetlinkMessage::GetLink(query), 0).await {
            Err(e) if has_errno(&e, &[libc::ENODEV]) => return Ok(None),
            r => r.with_context(|| format!("get link {index}"))?,
        };
        for reply in replies {
            let RouteNetlinkMessage::NewLink(link) = reply else {
                continue;
            };
            for attr in &link.attributes {
                let LinkAttribute::LinkInfo(infos) = attr else {
                    continue;
                };
                for info in infos {
                    if let LinkInfo::Data(InfoData::Vxlan(data)) = info {
                        return Ok(Some(vxlan_config(data)));
                    }
                }
            }
        }
        Ok(None)
    }
}

fn vxlan_config(data: &[InfoVxlan]) -> VxlanConfig {
    // Kernel defaults when an attribute is missing: learning on, port 8472 (Linux's).
    let mut c = VxlanConfig {
        vni: 0,
        dstport: 8472,
        local: None,
        learning: true,
    };
    for d in data {
        match d {
            InfoVxlan::Id(v) => c.vni = *v,
            InfoVxlan::Port(p) => c.dstport = *p,
            InfoVxlan::Local(ip) if !ip.is_unspecified() => c.local = Some(*ip),
            InfoVxlan::Learning(l) => c.learning = *l,
            _ => {}
        }
    }
    c
}

/// The kernel says "Operation not supported" for an unknown link kind: name the likely cause.
pub(super) fn vxlan_hint(e: Error) -> Error {
    if has_errno(&e, &[libc::EOPNOTSUPP]) {
        let errno = e.errno().unwrap_or(libc::EOPNOTSUPP);
        Error::kernel(
            errno,
            format!("{} (is the vxlan module loaded?)", e.message()),
        )
    } else {
        e
    }
}
