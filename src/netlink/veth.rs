//! Veth pairs whose peer is born inside the container's namespace.

use super::Netlink;
use crate::netns::NetNs;
use crate::{Context, Error, ErrorKind, Result};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::{LinkMessageBuilder, LinkUnspec};
use std::os::fd::AsRawFd;

impl Netlink {
    /// `ip link add HOST mtu MTU [master M] type veth peer name PEER netns NS mtu MTU`:
    /// the peer is created directly inside `peer_ns` (no move, ~2 ms instead of ~20 ms).
    /// The host end is created up (one round trip less); the peer gets `peer_mac` if given.
    /// Returns the host end's index.
    pub async fn create_veth_into(
        &self,
        host_name: &str,
        peer_name: &str,
        mtu: u32,
        master: Option<u32>,
        peer_ns: &NetNs,
        peer_mac: Option<[u8; 6]>,
    ) -> Result<u32> {
        let what = || format!("create veth {host_name:?}");
        // The peer must stay down: the kernel refuses IFF_UP on a peer at creation.
        let mut peer = LinkUnspec::new_with_name(peer_name)
            .mtu(mtu)
            .setns_by_fd(peer_ns.file().as_raw_fd());
        if let Some(mac) = peer_mac {
            peer = peer.address(mac.to_vec());
        }
        let mut host = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(host_name)
            .mtu(mtu)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
        if let Some(master) = master {
            host = host.controller(master);
        }
        self.ack(
            RouteNetlinkMessage::NewLink(host.build()),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
        .with_context(what)?;
        let created = self
            .link(host_name)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "vanished after creation"))
            .with_context(what)?;
        Ok(created.index)
    }
}
