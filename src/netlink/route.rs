//! IPv4 routes of the main table.

use super::{has_errno, Netlink, RouteInfo};
use crate::{Context, Result};
use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
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
        let mut query = RouteMessage::default();
        query.header.address_family = AddressFamily::Inet;
        let replies = self
            .dump(RouteNetlinkMessage::GetRoute(query))
            .await
            .context("list routes")?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => main_table_route(r),
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
