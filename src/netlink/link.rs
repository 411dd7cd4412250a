//! Links: lookup, bridge, delete, up/MTU/master, hairpin.

use super::{has_errno, LinkInfo, Netlink};
use crate::attachment::format_mac;
use crate::{Context, Error, ErrorKind, Result};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{self, LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::{LinkBridge, LinkBridgePort, LinkUnspec};

impl Netlink {
    /// `ip link show NAME`; `Ok(None)` if absent.
    pub async fn link(&self, name: &str) -> Result<Option<LinkInfo>> {
        let query = LinkUnspec::new_with_name(name).build();
        self.get_link(query)
            .await
            .with_context(|| format!("get link {name:?}"))
    }

    /// `ip link show` by index; `Ok(None)` if absent.
    /// `ip link show dev INDEX`; `Ok(None)` if absent.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<LinkInfo>> {
        let query = LinkUnspec::new_with_index(index).build();
        self.get_link(query)
            .await
            .with_context(|| format!("get link {index}"))
    }

    async fn get_link(&self, query: LinkMessage) -> Result<Option<LinkInfo>> {
        match self.ack(RouteNetlinkMessage::GetLink(query), 0).await {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_info(&l)),
                _ => None,
            })),
            Err(e) if has_errno(&e, &[libc::ENODEV]) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `ip link show`.
    pub async fn links(&self) -> Result<Vec<LinkInfo>> {
        let replies = self
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .await
            .context("list links")?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_info(l)),
                _ => None,
            })
            .collect())
    }

    /// `ip link add NAME type bridge mtu MTU; ip link set NAME up` unless it exists (then just up).
    pub async fn ensure_bridge(&self, name: &str, mtu: u32) -> Result<LinkInfo> {
        let what = || format!("create bridge {name:?}");
        if self.link(name).await?.is_none() {
            let create = LinkBridge::new(name).mtu(mtu).up().build();
            match self
                .ack(
                    RouteNetlinkMessage::NewLink(create),
                    NLM_F_CREATE | NLM_F_EXCL,
                )
                .await
            {
                // Someone else created it meanwhile: fine, checked below.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                r => {
                    r.with_context(what)?;
                }
            }
        }
        let bridge = self
            .link(name)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "vanished after creation"))
            .with_context(what)?;
        if bridge.kind.as_deref() != Some("bridge") {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "link exists and is a {}, not a bridge",
                    bridge.kind.as_deref().unwrap_or("device")
                ),
            )
            .context(what()));
        }
        // Set the MTU explicitly even right after creation: the kernel then treats it as
        // chosen by the user and stops lowering it to the smallest port's MTU (a container
        // with `"mtu": 1300` must not shrink the bridge for everyone). It also applies a
        // changed --mtu to an existing bridge, which Weave only did after a reset (#3293).
        // The kernel ignores a change to the current value, so step away from it first.
        if bridge.mtu == mtu && mtu > 68 {
            self.set_mtu(bridge.index, mtu - 1)
                .await
                .with_context(what)?;
        }
        self.set_mtu(bridge.index, mtu).await.with_context(what)?;
        // Likewise the MAC: unless set explicitly, a bridge takes the lowest MAC of its ports,
        // so attaching a container could change the gateway's MAC under every other one.
        self.set_mac(bridge.index, bridge.mac)
            .await
            .with_context(what)?;
        if !bridge.up {
            self.set_up(bridge.index).await?;
        }
        Ok(LinkInfo {
            up: true,
            mtu,
            ..bridge
        })
    }

    /// `ip link del NAME`; `Ok(false)` if it did not exist.
    pub async fn delete_link(&self, name: &str) -> Result<bool> {
        let del = LinkUnspec::new_with_name(name).build();
        match self.ack(RouteNetlinkMessage::DelLink(del), 0).await {
            Ok(_) => Ok(true),
            Err(e) if has_errno(&e, &[libc::ENODEV]) => Ok(false),
            Err(e) => Err(e.context(format!("delete link {name:?}"))),
        }
    }

    /// `ip link set dev INDEX up`.
    pub async fn set_up(&self, index: u32) -> Result<()> {
        self.set_link(LinkUnspec::new_with_index(index).up().build())
            .await
            .with_context(|| format!("set link {index} up"))
    }

    /// `ip link set dev INDEX address MAC` (the link should be down).
    pub async fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<()> {
        self.set_link(
            LinkUnspec::new_with_index(index)
                .address(mac.to_vec())
                .build(),
        )
        .await
        .with_context(|| format!("set link {index} address {}", format_mac(&mac)))
    }

    /// `ip link set dev INDEX down`.
    pub async fn set_down(&self, index: u32) -> Result<()> {
        self.set_link(LinkUnspec::new_with_index(index).down().build())
            .await
            .with_context(|| format!("set link {index} down"))
    }

    /// `ip link set dev INDEX name NAME`.
    pub async fn rename_link(&self, index: u32, name: &str) -> Result<()> {
        self.set_link(LinkUnspec::new_with_index(index).name(name).build())
            .await
            .with_context(|| format!("rename link {index} to {name:?}"))
    }

    /// `ip link set dev INDEX group GROUP`.
    pub async fn set_group(&self, index: u32, group: u32) -> Result<()> {
        self.set_link(LinkUnspec::new_with_index(index).link_group(group).build())
            .await
            .with_context(|| format!("set link {index} group {group}"))
    }

    /// `ip link set dev INDEX nomaster name NAME`: off its bridge and under a new name, in
    /// one request (the rename fails with `AlreadyExists` when NAME is taken).
    pub async fn unbridge_as(&self, index: u32, name: &str) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index)
            .nocontroller()
            .name(name)
            .build();
        self.set_link(msg)
            .await
            .with_context(|| format!("rename link {index} to {name:?} off its bridge"))
    }

    /// `ip link delete group GROUP`: every link of the group in one request, so the kernel
    /// waits for one grace period for all of them. `Ok(false)` if the group was empty.
    pub async fn delete_group(&self, group: u32) -> Result<bool> {
        let del = LinkUnspec::new_with_index(0).link_group(group).build();
        match self.ack(RouteNetlinkMessage::DelLink(del), 0).await {
            Ok(_) => Ok(true),
            Err(e) if has_errno(&e, &[libc::ENODEV]) => Ok(false),
            Err(e) => Err(e.context(format!("delete link group {group}"))),
        }
    }

    /// `ip link set dev INDEX mtu MTU`.
    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        self.set_link(LinkUnspec::new_with_index(index).mtu(mtu).build())
            .await
            .with_context(|| format!("set link {index} mtu {mtu}"))
    }

    /// `ip link set dev INDEX master MASTER`.
    pub async fn set_master(&self, index: u32, master: u32) -> Result<()> {
        self.set_link(LinkUnspec::new_with_index(index).controller(master).build())
            .await
            .with_context(|| format!("set link {index} master {master}"))
    }

    /// `echo 0|1 > /sys/class/net/<port>/brport/hairpin_mode` (or IFLA_BRPORT_MODE).
    pub async fn set_hairpin(&self, index: u32, on: bool) -> Result<()> {
        // Bridge-port attributes go in IFLA_INFO_PORT_DATA of an RTM_NEWLINK without CREATE.
        let msg = LinkBridgePort::new(index).hairpin(on).build();
        self.ack(RouteNetlinkMessage::NewLink(msg), 0)
            .await
            .map(|_| ())
            .with_context(|| {
                format!(
                    "set hairpin {} on link {index}",
                    if on { "on" } else { "off" }
                )
            })
    }

    async fn set_link(&self, msg: LinkMessage) -> Result<()> {
        self.ack(RouteNetlinkMessage::SetLink(msg), 0)
            .await
            .map(|_| ())
    }
}

/// Extracts what we keep from a kernel link message.
pub(super) fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        name: String::new(),
        mtu: 0,
        mac: [0; 6],
        up: msg.header.flags.contains(LinkFlags::Up),
        master: None,
        kind: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => info.name = n.clone(),
            LinkAttribute::Mtu(m) => info.mtu = *m,
            LinkAttribute::Address(a) if a.len() == 6 => info.mac.copy_from_slice(a),
            LinkAttribute::Controller(m) if *m != 0 => info.master = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let link::LinkInfo::Kind(k) = i {
                        info.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    info
}
