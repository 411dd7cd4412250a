//! IPv4 routes: of the main table, and the VXLAN bypass's one route per container.

use super::{has_errno, Netlink, RouteInfo};
use crate::{Context, Result};
use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::RouteMessageBuilder;
use std::net::Ipv4Addr;

impl Netlink {
    /// `ip route add DST [via GW] dev OIF [scope link]`; an existing route is not an error.
    pub async fn add_route_v4(
        &self,
        dst: Ipv4Net,
        gateway: Option<Ipv4Addr>,
        oif: u32,
        link_scope: bool,
    ) -> Result<()> {
        let msg = route_message(dst, gateway, oif, link_scope);
        match self
            .ack(
                RouteNetlinkMessage::NewRoute(msg),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if has_errno(&e, &[libc::EEXIST]) => Ok(()),
            Err(e) => Err(e.context(format!("add route {}", describe(dst, gateway, oif)))),
        }
    }

    /// `ip route replace DST dev OIF table TABLE scope link`: one container's route in
    /// [`super::BYPASS_TABLE`] (a re-ADD, or an address handed to another container on this
    /// host, points it at the new veth). The kernel removes it when OIF goes.
    pub async fn replace_link_route_in_table(
        &self,
        dst: Ipv4Net,
        oif: u32,
        table: u32,
    ) -> Result<()> {
        let mut msg = route_message(dst, None, oif, true);
        // The attribute overrides the header's (8-bit) table.
        msg.attributes.push(RouteAttribute::Table(table));
        self.replace_route(msg, || format!("{dst} dev {oif} table {table}"))
            .await
    }

    /// `ip route replace` of `msg`: one request whether the route is new or moves.
    async fn replace_route(&self, msg: RouteMessage, what: impl FnOnce() -> String) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .map(drop)
        .with_context(|| format!("replace route {}", what()))
    }

    /// `ip route del DST [via GW] dev OIF`; `Ok(false)` if there was no such route.
    pub async fn delete_route_v4(
        &self,
        dst: Ipv4Net,
        gateway: Option<Ipv4Addr>,
        oif: u32,
    ) -> Result<bool> {
        let mut msg = route_message(dst, gateway, oif, false);
        // Scope "nowhere" matches a route of any scope, as `ip route del` does.
        msg.header.scope = RouteScope::NoWhere;
        match self.ack(RouteNetlinkMessage::DelRoute(msg), 0).await {
            Ok(_) => Ok(true),
            Err(e) if has_errno(&e, &[libc::ESRCH]) => Ok(false),
            Err(e) => Err(e.context(format!("delete route {}", describe(dst, gateway, oif)))),
        }
    }

    /// `ip -4 route show` (main table).
    pub async fn routes_v4(&self) -> Result<Vec<RouteInfo>> {
        let routes = self.dump_routes_v4().await?;
        Ok(routes.iter().filter_map(main_table_route).collect())
    }

    /// Every IPv4 route of every table, as the kernel dumps them.
    async fn dump_routes_v4(&self) -> Result<Vec<RouteMessage>> {
        let mut query = RouteMessage::default();
        query.header.address_family = AddressFamily::Inet;
        let replies = self
            .dump(RouteNetlinkMessage::GetRoute(query))
            .await
            .context("list routes")?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => Some(r),
                _ => None,
            })
            .collect())
    }
}

fn route_message(
    dst: Ipv4Net,
    gateway: Option<Ipv4Addr>,
    oif: u32,
    link_scope: bool,
) -> RouteMessage {
    let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst.network(), dst.prefix_len())
        .output_interface(oif)
        // What `ip route add` uses for routes an administrator adds.
        .protocol(RouteProtocol::Boot);
    if let Some(gw) = gateway {
        builder = builder.gateway(gw);
    }
    if link_scope {
        builder = builder.scope(RouteScope::Link);
    }
    builder.build()
}

fn describe(dst: Ipv4Net, gateway: Option<Ipv4Addr>, oif: u32) -> String {
    match gateway {
        Some(gw) => format!("{dst} via {gw} dev {oif}"),
        None => format!("{dst} dev {oif}"),
    }
}

fn main_table_route(r: &RouteMessage) -> Option<RouteInfo> {
    let mut table = u32::from(r.header.table);
    let (mut dst, mut gateway, mut oif) = (Ipv4Addr::UNSPECIFIED, None, None);
    for attr in &r.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let dst = Ipv4Net::new(dst, r.header.destination_prefix_length).ok()?;
    Some(RouteInfo { dst, gateway, oif })
}

/// A route owned by one subsystem, told apart from everyone else's by its protocol number
/// (`ip route ... proto N metric M`): the routed data plane lists and deletes only its own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OwnedRoute {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub oif: u32,
    pub metric: u32,
}

impl Netlink {
    /// `ip route replace DST [via GW] dev OIF proto PROTO metric M` (scope link without a
    /// gateway): one request whether the route is new or moves to another gateway.
    pub async fn replace_owned_route(&self, r: &OwnedRoute, proto: u8) -> Result<()> {
        let msg = owned_route_message(r, proto);
        self.replace_route(msg, || describe(r.dst, r.gateway, r.oif))
            .await
    }

    /// `ip route del` of exactly this route; `Ok(false)` if it was not there.
    pub async fn delete_owned_route(&self, r: &OwnedRoute, proto: u8) -> Result<bool> {
        let mut msg = owned_route_message(r, proto);
        msg.header.scope = RouteScope::NoWhere;
        match self.ack(RouteNetlinkMessage::DelRoute(msg), 0).await {
            Ok(_) => Ok(true),
            Err(e) if has_errno(&e, &[libc::ESRCH]) => Ok(false),
            Err(e) => Err(e.context(format!(
                "delete route {}",
                describe(r.dst, r.gateway, r.oif)
            ))),
        }
    }

    /// `ip -4 route show proto PROTO` (main table).
    pub async fn owned_routes(&self, proto: u8) -> Result<Vec<OwnedRoute>> {
        let routes = self.dump_routes_v4().await?;
        Ok(routes
            .iter()
            .filter(|r| r.header.protocol == RouteProtocol::from(proto))
            .filter_map(owned_route)
            .collect())
    }
}

fn owned_route_message(r: &OwnedRoute, proto: u8) -> RouteMessage {
    let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(r.dst.network(), r.dst.prefix_len())
        .output_interface(r.oif)
        .priority(r.metric)
        .protocol(RouteProtocol::from(proto));
    match r.gateway {
        Some(gw) => builder = builder.gateway(gw),
        None => builder = builder.scope(RouteScope::Link),
    }
    builder.build()
}

fn owned_route(r: &RouteMessage) -> Option<OwnedRoute> {
    let info = main_table_route(r)?;
    let metric = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0);
    Some(OwnedRoute {
        dst: info.dst,
        gateway: info.gateway,
        oif: info.oif?,
        metric,
    })
}
