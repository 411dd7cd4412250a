//! [`IpamHandle`]: the IPAM service's typed async API. Cheap to clone; every call is one
//! [`Request`] to the actor ([`super::actor`]) and waits for its typed reply. The HTTP API,
//! the router's re-expose and the sweep use it.

use super::actor;
use super::core::Core;
use super::file::Owned;
use super::service::{IpamOptions, IpamSummary, Reply, Request};
use super::store::DataDir;
use crate::attachment::Attachment;
use crate::mesh::GossipChannel;
use crate::{Error, ErrorKind, Result};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use tokio::sync::{mpsc, oneshot};

/// Cheap, cloneable handle to the IPAM actor.
#[derive(Clone)]
pub struct IpamHandle {
    tx: mpsc::Sender<Request>,
}

impl IpamHandle {
    /// Spawns the actor on the current runtime. `gossip` is the mesh channel
    /// ([`super::CHANNEL`]); `None` in unit tests (one peer).
    pub fn spawn(
        core: Core,
        datadir: DataDir,
        peer_name: String,
        gossip: Option<GossipChannel>,
        opts: IpamOptions,
    ) -> IpamHandle {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(actor::run(core, datadir, peer_name, gossip, opts, rx));
        IpamHandle { tx }
    }

    async fn call<T>(&self, request: impl FnOnce(Reply<T>) -> Request) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        let gone = || Error::new(ErrorKind::Internal, "ipam actor has stopped");
        self.tx.send(request(reply)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// An address for `id` in `subnet` (default subnet if `None`), idempotent per id.
    pub async fn allocate(&self, id: &str, subnet: Option<Ipv4Net>) -> Result<Ipv4Net> {
        self.allocate_attached(id, subnet, None).await
    }

    /// Allocates and records `attachment` (its ips, mac and ipam_id are filled in) in the
    /// same write.
    pub async fn allocate_attached(
        &self,
        id: &str,
        subnet: Option<Ipv4Net>,
        attachment: Option<Attachment>,
    ) -> Result<Ipv4Net> {
        self.call(|reply| Request::Allocate {
            id: id.into(),
            subnet,
            attachment,
            reply,
        })
        .await
    }

    /// Inserts or replaces the attachment with the same (container id, ifname).
    pub async fn put_attachment(&self, attachment: Attachment) -> Result<()> {
        self.call(|reply| Request::PutAttachment { attachment, reply })
            .await
            .map(drop)
    }

    /// Removes an attachment; absent is fine.
    pub async fn remove_attachment(&self, container_id: &str, ifname: &str) -> Result<()> {
        self.call(|reply| Request::RemoveAttachment {
            container_id: container_id.into(),
            ifname: ifname.into(),
            reply,
        })
        .await
        .map(drop)
    }

    pub async fn attachments(&self) -> Result<Vec<Attachment>> {
        self.call(|reply| Request::Attachments { reply }).await
    }

    /// Claims the address of `cidr` for `id`; true if something changed.
    pub async fn claim(&self, id: &str, cidr: Ipv4Net) -> Result<bool> {
        self.call(|reply| Request::Claim {
            id: id.into(),
            cidr,
            reply,
        })
        .await
    }

    /// Frees all addresses of `id`; the number freed.
    pub async fn free(&self, id: &str) -> Result<usize> {
        self.call(|reply| Request::Free {
            id: id.into(),
            reply,
        })
        .await
    }

    pub async fn free_one(&self, id: &str, ip: Ipv4Addr) -> Result<()> {
        self.call(|reply| Request::FreeOne {
            id: id.into(),
            ip,
            reply,
        })
        .await
    }

    /// CIDRs `id` owns in `subnet` (default subnet if `None`).
    pub async fn lookup(&self, id: &str, subnet: Option<Ipv4Net>) -> Result<Vec<Ipv4Net>> {
        self.call(|reply| Request::Lookup {
            id: id.into(),
            subnet,
            reply,
        })
        .await
    }

    /// A copy of every owner's CIDRs.
    pub async fn owned(&self) -> Result<Owned> {
        self.call(|reply| Request::Owned { reply }).await
    }

    pub async fn summary(&self) -> Result<IpamSummary> {
        self.call(|reply| Request::Summary { reply }).await
    }

    /// `GET /ring`: starts the election and waits (bounded) until the ring exists.
    pub async fn ring(&self) -> Result<()> {
        self.call(|reply| Request::Ring { reply }).await
    }

    /// `DELETE /peer`: hands our ranges to a live peer; the heir's name, or "" if none.
    pub async fn shutdown(&self) -> Result<String> {
        self.call(|reply| Request::Shutdown { reply }).await
    }

    /// `DELETE /peer/<name>`: the answer text, `"<N> IPs taken over from <name>\n"`.
    pub async fn rmpeer(&self, name: &str) -> Result<String> {
        self.call(|reply| Request::Rmpeer {
            name: name.into(),
            reply,
        })
        .await
    }
}

#[cfg(test)]
#[path = "handle_tests.rs"]
mod tests;
