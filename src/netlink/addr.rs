//! IPv4 addresses.

use super::{has_errno, Netlink};
use crate::{Context, Result};
use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::AddressMessageBuilder;
use std::net::{IpAddr, Ipv4Addr};

impl Netlink {
    /// `ip -4 addr show dev INDEX`.
    pub async fn addresses_v4(&self, index: u32) -> Result<Vec<Ipv4Net>> {
        let mut query = AddressMessage::default();
        query.header.family = AddressFamily::Inet;
        query.header.index = index;
        let replies = self
            .dump(RouteNetlinkMessage::GetAddress(query))
            .await
            .with_context(|| format!("list addresses of link {index}"))?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => ipv4_of(a),
                _ => None,
            })
            .collect())
    }

    /// `ip -4 addr show`: every link's IPv4 addresses as (link index, address), one dump.
    pub async fn all_addresses_v4(&self) -> Result<Vec<(u32, Ipv4Net)>> {
        let mut query = AddressMessage::default();
        query.header.family = AddressFamily::Inet;
        let replies = self
            .dump(RouteNetlinkMessage::GetAddress(query))
            .await
            .context("list addresses")?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => ipv4_of(a).map(|n| (a.header.index, n)),
                _ => None,
            })
            .collect())
    }

    /// `ip addr add ADDR dev INDEX`; an existing address is not an error.
    pub async fn add_address(&self, index: u32, addr: Ipv4Net) -> Result<()> {
        let msg = address_message(index, addr);
        match self
            .ack(
                RouteNetlinkMessage::NewAddress(msg),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if has_errno(&e, &[libc::EEXIST]) => Ok(()),
            Err(e) => Err(e.context(format!("add address {addr} to link {index}"))),
        }
    }

    /// `ip addr del ADDR dev INDEX`; `Ok(false)` if it was not there.
    pub async fn delete_address(&self, index: u32, addr: Ipv4Net) -> Result<bool> {
        let msg = address_message(index, addr);
        match self.ack(RouteNetlinkMessage::DelAddress(msg), 0).await {
            Ok(_) => Ok(true),
            Err(e) if has_errno(&e, &[libc::EADDRNOTAVAIL]) => Ok(false),
            Err(e) => Err(e.context(format!("delete address {addr} from link {index}"))),
        }
    }
}

fn address_message(index: u32, addr: Ipv4Net) -> AddressMessage {
    AddressMessageBuilder::<Ipv4Addr>::new()
        .index(index)
        .address(addr.addr(), addr.prefix_len())
        .build()
}

/// The interface's own address (IFA_LOCAL; IFA_ADDRESS is the peer on point-to-point links).
fn ipv4_of(msg: &AddressMessage) -> Option<Ipv4Net> {
    let pick = |want_local: bool| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) if want_local => Some(*ip),
            AddressAttribute::Address(IpAddr::V4(ip)) if !want_local => Some(*ip),
            _ => None,
        })
    };
    let ip = pick(true).or_else(|| pick(false))?;
    Ipv4Net::new(ip, msg.header.prefix_len).ok()
}
