//! Link notifications (`ip monitor link`): the kernel's announcements of links added,
//! changed and removed, for the routed forwarder, which follows the bridge's ports.

use super::link::link_info;
use super::{connect, Announcements, LinkInfo};
use crate::{Context, Result};
use futures::StreamExt;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

/// `RTMGRP_LINK`: the multicast group of link announcements, as a bind mask.
const RTMGRP_LINK: u32 = 1;

/// What the kernel announced about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// Added or changed (up, MTU, master, name...): the link as it is now.
    Changed(LinkInfo),
    /// Removed: its index.
    Removed(u32),
}

/// A subscription to link announcements in one namespace. The kernel drops announcements
/// when the socket's buffer overflows; that (or the socket failing) ends the subscription
/// ([`LinkWatch::next`] returns `None`): the owner then subscribes again and reads the
/// links afresh.
pub struct LinkWatch {
    announcements: Announcements,
    connection: tokio::task::JoinHandle<()>,
}

impl LinkWatch {
    /// Subscribes in the calling thread's namespace. Must run inside a tokio runtime.
    pub fn open() -> Result<LinkWatch> {
        // Bound (the kernel picks the port id): an unbound socket's id is 0, the id the
        // kernel's own announcements exclude.
        let (_, announcements, connection) =
            connect(|socket| socket.bind(&netlink_sys::SocketAddr::new(0, RTMGRP_LINK)))
                .context("subscribe to link announcements")?;
        Ok(LinkWatch {
            announcements,
            connection,
        })
    }

    /// The next announcement; `None` when the subscription has ended. The bridge's own
    /// announcements about its ports (family `AF_BRIDGE`, without the link's kind) are
    /// skipped: every change they report comes in a link's own announcement too.
    pub async fn next(&mut self) -> Option<LinkEvent> {
        loop {
            let (message, _) = self.announcements.next().await?;
            match message.payload {
                NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewLink(ref l) | RouteNetlinkMessage::DelLink(ref l),
                ) if l.header.interface_family == AddressFamily::Bridge => continue,
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                    return Some(LinkEvent::Changed(link_info(&l)))
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => {
                    return Some(LinkEvent::Removed(l.header.index))
                }
                // Announcements were lost: what follows no longer tells the whole story.
                NetlinkPayload::Overrun(_) => return None,
                _ => continue,
            }
        }
    }
}

impl Drop for LinkWatch {
    fn drop(&mut self) {
        self.connection.abort();
    }
}
