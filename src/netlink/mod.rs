//! Kernel networking through rtnetlink (plus the few raw netlink-packet-route messages it
//! lacks). With [`crate::netns`], the only code that touches the kernel.
//!
//! A [`Netlink`] is bound to the namespace it was opened in: open one per namespace
//! (see [`Netlink::open_in`]) and never switch namespaces again.
//!
//! Requests go through [`Netlink::ack`] and [`Netlink::dump`] rather than rtnetlink's request
//! types, so every kernel error keeps its errno and interrupted dumps are retried.

mod addr;
mod bpf;
mod bpf_forward;
mod fdb;
mod link;
mod route;
mod tap;
mod veth;
mod vxlan;
mod watch;

pub use crate::attachment::{format_mac, mac_for_ip};
pub use bpf::steer_reuseport_by_cpu;
pub use bpf_forward::{Forwarder, VxlanBypass, BYPASS_TABLE};
pub use fdb::{FdbEntry, FLOOD_MAC};
pub use route::OwnedRoute;
pub use tap::{
    open_tap, open_tap_queues, steer_tap_by_cpu, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN,
    VNET_HDR_LEN,
};
pub use vxlan::VxlanSpec;
pub use watch::{LinkEvent, LinkWatch};

use crate::netns::NetNs;
use crate::{Context, Error, ErrorKind, Result};
use futures::StreamExt;
use ipnet::Ipv4Net;
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use std::net::Ipv4Addr;

/// What we need to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub mac: [u8; 6],
    pub up: bool,
    /// Index of the bridge this link is enslaved to.
    pub master: Option<u32>,
    /// `bridge`, `veth`, `vxlan`, ... when the kernel reports it.
    pub kind: Option<String>,
}

/// A route as listed by [`Netlink::routes_v4`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

/// A netlink route connection bound to one network namespace.
pub struct Netlink {
    handle: rtnetlink::Handle,
}

/// The unsolicited messages of a netlink socket: announcements of the groups it joined.
type Announcements = futures::channel::mpsc::UnboundedReceiver<(
    NetlinkMessage<RouteNetlinkMessage>,
    netlink_sys::SocketAddr,
)>;

/// What [`connect`] gives: the request handle, the announcements, and the connection's task
/// on the runtime.
type Connected = (
    rtnetlink::Handle,
    Announcements,
    tokio::task::JoinHandle<()>,
);

/// Opens a route netlink socket in the calling thread's namespace, lets `setup` prepare it
/// (e.g. join announcement groups), and spawns its connection on the current tokio runtime.
fn connect(
    setup: impl FnOnce(&mut netlink_sys::Socket) -> std::io::Result<()>,
) -> Result<Connected> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| Error::new(ErrorKind::Internal, "open netlink socket: no tokio runtime"))?;
    let (mut connection, handle, unsolicited) =
        rtnetlink::new_connection().context("open netlink socket")?;
    setup(netlink_sys::AsyncSocket::socket_mut(
        connection.socket_mut(),
    ))
    .context("set up netlink socket")?;
    Ok((handle, unsolicited, runtime.spawn(connection)))
}

/// How often an interrupted dump (the table changed while the kernel walked it) is retried.
const DUMP_ATTEMPTS: usize = 5;

impl Netlink {
    /// Opens a connection in the calling thread's namespace. Must run inside a tokio runtime
    /// (a current-thread one is enough); the connection task is spawned on it.
    pub fn open() -> Result<Netlink> {
        let (handle, _, _) = connect(|_| Ok(()))?;
        Ok(Netlink { handle })
    }

    /// Opens a connection inside `ns` (setns in, open the socket, setns back).
    pub fn open_in(ns: &NetNs) -> Result<Netlink> {
        ns.run(Netlink::open)?
            .with_context(|| format!("in netns {:?}", ns.path().display().to_string()))
    }

    /// The underlying rtnetlink handle, for requests this module does not wrap (FDB, VXLAN).
    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    /// Sends one request that expects an ACK (`NLM_F_ACK` is added to `flags`); returns
    /// whatever messages came back (e.g. for `NLM_F_ECHO`).
    pub async fn ack(
        &self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let (replies, _) = self
            .exchange(message, NLM_F_REQUEST | NLM_F_ACK | flags)
            .await?;
        Ok(replies)
    }

    /// Sends a dump request; retries when the kernel reports the dump was interrupted.
    pub async fn dump(&self, message: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .exchange(message.clone(), NLM_F_REQUEST | NLM_F_DUMP)
                .await
            {
                Ok((replies, false)) => return Ok(replies),
                Ok((_, true)) if attempt < DUMP_ATTEMPTS => continue,
                Ok((_, true)) => {
                    return Err(Error::kernel(libc::EINTR, "dump interrupted too often"))
                }
                Err(e) if e.errno() == Some(libc::EINTR) && attempt < DUMP_ATTEMPTS => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// One request/response exchange; `true` if any reply carried `NLM_F_DUMP_INTR`.
    async fn exchange(
        &self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(Vec<RouteNetlinkMessage>, bool)> {
        let mut request = NetlinkMessage::from(message);
        request.header.flags = flags;
        let mut handle = self.handle.clone();
        let mut responses = handle
            .request(request)
            .map_err(|e| Error::new(ErrorKind::Kernel, e.to_string()))?;
        let mut replies = Vec::new();
        let mut interrupted = false;
        while let Some(reply) = responses.next().await {
            interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
            match reply.payload {
                NetlinkPayload::InnerMessage(m) => replies.push(m),
                NetlinkPayload::Error(err) => {
                    if let Some(code) = err.code {
                        return Err(kernel_error(-code.get()));
                    }
                }
                _ => {}
            }
        }
        Ok((replies, interrupted))
    }
}

/// A kernel error from an errno: the OS message, the errno kept, EEXIST as `AlreadyExists`.
fn kernel_error(errno: i32) -> Error {
    let e = Error::kernel(errno, std::io::Error::from_raw_os_error(errno).to_string());
    if errno == libc::EEXIST {
        e.with_kind(ErrorKind::AlreadyExists)
    } else {
        e
    }
}

/// True if `e` carries one of `errnos`.
fn has_errno(e: &Error, errnos: &[i32]) -> bool {
    e.errno().is_some_and(|n| errnos.contains(&n))
}
