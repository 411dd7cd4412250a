//! Forwarding-database entries of a VXLAN device (`bridge fdb append|del|show ... self`).
//!
//! rtnetlink can add one entry per MAC (it sends EXCL/REPLACE); flooding to several peers
//! needs several all-zeros entries, which only `NLM_F_APPEND` allows, so the messages are
//! built here by hand.

use super::{has_errno, Netlink};
use crate::{Context, Result};
use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::Ipv4Addr;

/// The MAC of a flood entry: frames for unknown destinations (and broadcasts) go to every
/// all-zeros entry's destination.
pub const FLOOD_MAC: [u8; 6] = [0; 6];

const NUD_NOARP: u16 = 0x40;
const NUD_PERMANENT: u16 = 0x80;

/// One entry of a device's own FDB, as `bridge fdb show dev DEV` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    pub mac: [u8; 6],
    /// Remote VTEP the frames are sent to (absent on local entries).
    pub dst: Option<Ipv4Addr>,
    /// Added by us (permanent) rather than learnt from a received frame.
    pub permanent: bool,
}

impl FdbEntry {
    pub fn is_flood(&self) -> bool {
        self.mac == FLOOD_MAC
    }
}

impl Netlink {
    /// `bridge fdb append MAC dev DEV dst IP self permanent`: adds an entry even when the MAC
    /// already has others (so all-zeros can point at many peers). Re-adding the same
    /// (MAC, dst) is a no-op.
    pub async fn fdb_append(&self, dev: u32, mac: [u8; 6], dst: Ipv4Addr) -> Result<()> {
        let msg = fdb_message(dev, mac, dst);
        match self
            .ack(
                RouteNetlinkMessage::NewNeighbour(msg),
                NLM_F_CREATE | NLM_F_APPEND,
            )
            .await
        {
            // Older kernels answer EEXIST for an identical (MAC, dst) pair.
            Err(e) if has_errno(&e, &[libc::EEXIST]) => Ok(()),
            r => r.map(|_| ()),
        }
        .map_err(super::vxlan::vxlan_hint)
        .with_context(|| format!("append fdb entry {} dst {dst} on link {dev}", mac_str(&mac)))
    }

    /// `bridge fdb del MAC dev DEV dst IP self`; `Ok(false)` if there was no such entry.
    /// Looks first: the kernel answers ENOENT only when the MAC has no entry at all, and
    /// silently accepts a missing destination of a MAC that has others.
    pub async fn fdb_delete(&self, dev: u32, mac: [u8; 6], dst: Ipv4Addr) -> Result<bool> {
        let what = || format!("delete fdb entry {} dst {dst} on link {dev}", mac_str(&mac));
        let present = self
            .fdb_list(dev)
            .await
            .with_context(what)?
            .iter()
            .any(|e| e.mac == mac && e.dst == Some(dst));
        if !present {
            return Ok(false);
        }
        let msg = fdb_message(dev, mac, dst);
        match self.ack(RouteNetlinkMessage::DelNeighbour(msg), 0).await {
            Ok(_) => Ok(true),
            // Gone between the look and the delete.
            Err(e) if has_errno(&e, &[libc::ENOENT]) => Ok(false),
            Err(e) => Err(e.context(what())),
        }
    }

    /// `bridge fdb show dev DEV`: the device's own entries (NTF_SELF), IPv4 destinations.
    pub async fn fdb_list(&self, dev: u32) -> Result<Vec<FdbEntry>> {
        let mut query = NeighbourMessage::default();
        query.header.family = AddressFamily::Bridge;
        let replies = self
            .dump(RouteNetlinkMessage::GetNeighbour(query))
            .await
            .with_context(|| format!("list fdb of link {dev}"))?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => Some(n),
                _ => None,
            })
            // The dump covers every bridge port; keep this device's own entries.
            .filter(|n| n.header.ifindex == dev && n.header.flags.contains(NeighbourFlags::Own))
            .filter_map(fdb_entry)
            .collect())
    }
}

fn fdb_message(dev: u32, mac: [u8; 6], dst: Ipv4Addr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = dev;
    msg.header.flags = NeighbourFlags::Own;
    msg.header.state = NeighbourState::from(NUD_PERMANENT | NUD_NOARP);
    msg.attributes = vec![
        NeighbourAttribute::LinkLayerAddress(mac.to_vec()),
        NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)),
    ];
    msg
}

fn fdb_entry(n: &NeighbourMessage) -> Option<FdbEntry> {
    let mut mac = None;
    let mut dst = None;
    for attr in &n.attributes {
        match attr {
            NeighbourAttribute::LinkLayerAddress(a) if a.len() == 6 => {
                let mut m = [0; 6];
                m.copy_from_slice(a);
                mac = Some(m);
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => dst = Some(*ip),
            // In an AF_BRIDGE message the parser cannot know the destination's family.
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
                dst = Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            _ => {}
        }
    }
    Some(FdbEntry {
        mac: mac?,
        dst,
        permanent: u16::from(n.header.state) & NUD_PERMANENT != 0,
    })
}

fn mac_str(mac: &[u8; 6]) -> String {
    super::format_mac(mac)
}
