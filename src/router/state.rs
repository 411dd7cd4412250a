//! The IPAM actor: one task owns the multi-host [`Core`] (ring allocator, CNI attachments) and
//! its file, talks to the other peers over the mesh channel `IPallocation`, and ticks.
//!
//! Work arriving together (requests, gossip, a tick) is applied as one batch and persisted
//! with one write (group commit). Nothing leaves the actor before that write succeeded:
//! neither an answer nor a message to a peer (a donation must be on disk before the receiver
//! hears of it). If the write fails, the state returns to its copy from before the batch.
//! Requests that need the ring or another peer's space wait a bounded time, then get 503.

use super::ipam_core::{Core, RingEntry};
use crate::api::Attachment;
use crate::ipam::ring::{InitMode, PeerName};
use crate::ipam::store::DataDir;
use crate::mesh::MeshHandle;
use crate::{Error, ErrorKind, Result};
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The mesh channel Weave's IPAM gossips on.
pub const CHANNEL: &str = "IPallocation";

/// How the allocator takes part and how long clients wait.
#[derive(Debug, Clone)]
pub struct IpamOptions {
    pub mode: InitMode,
    /// Longest an allocation or claim waits for the ring or for space (then 503).
    pub alloc_wait: Duration,
    /// Longest `GET /ring` waits.
    pub ring_wait: Duration,
    /// Allocator tick (election retries, donor time-outs, state re-broadcast).
    pub tick: Duration,
}

impl Default for IpamOptions {
    fn default() -> Self {
        IpamOptions {
            mode: InitMode::consensus(1),
            alloc_wait: Duration::from_secs(3),
            ring_wait: Duration::from_secs(30),
            tick: Duration::from_secs(1),
        }
    }
}

/// Counters and ring view for status, report and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamSummary {
    pub universe: Ipv4Net,
    pub default_subnet: Ipv4Net,
    /// Addresses the ring gives us.
    pub owned_size: u64,
    pub active: usize,
    pub free: u64,
    pub ids: usize,
    /// Weave's status words ("ready", "awaiting consensus (quorum: Q, known: K)", ...).
    pub status: String,
    pub entries: Vec<RingEntry>,
    /// (peer, addresses owned), ours first.
    pub peer_sizes: Vec<(PeerName, u64)>,
    pub me: PeerName,
    /// Nicknames of peers we have seen, and which are live now.
    pub nicknames: BTreeMap<PeerName, String>,
    pub live: BTreeSet<PeerName>,
    pub pending_allocates: Vec<String>,
    pub pending_claims: Vec<String>,
}

pub(super) enum Op {
    Allocate(String, Option<Ipv4Net>, Option<Attachment>),
    Claim(String, Ipv4Net),
    Free(String),
    FreeOne(String, Ipv4Addr),
    Lookup(String, Option<Ipv4Net>),
    Owned,
    Summary,
    PutAttachment(Attachment),
    RemoveAttachment(String, String),
    Attachments,
    /// Start the election and wait for the ring.
    Ring,
    /// `weave reset`: give our ranges to an heir.
    Shutdown,
    /// `weave rmpeer <name or nickname>`.
    Rmpeer(String),
}

pub(super) enum Reply {
    Cidr(Ipv4Net),
    Changed(bool),
    Freed(usize),
    Cidrs(Vec<Ipv4Net>),
    Owned(BTreeMap<String, Vec<Ipv4Net>>),
    Summary(Box<IpamSummary>),
    Attachments(Vec<Attachment>),
    Text(String),
}

pub(super) struct Request {
    pub(super) op: Op,
    pub(super) reply: oneshot::Sender<Result<Reply>>,
}

/// Cheap, cloneable handle to the IPAM actor.
#[derive(Clone)]
pub struct IpamHandle {
    tx: mpsc::Sender<Request>,
}

macro_rules! expect_reply {
    ($e:expr, $pat:pat => $v:expr) => {
        match $e? {
            $pat => Ok($v),
            _ => unreachable!("ipam actor answered the wrong kind"),
        }
    };
}

impl IpamHandle {
    /// Spawns the actor on the current runtime. `mesh` is `None` in unit tests (one peer).
    pub fn spawn(
        core: Core,
        datadir: DataDir,
        peer_name: String,
        mesh: Option<MeshHandle>,
        opts: IpamOptions,
    ) -> IpamHandle {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(super::ipam_actor::run(
            core, datadir, peer_name, mesh, opts, rx,
        ));
        IpamHandle { tx }
    }

    async fn call(&self, op: Op) -> Result<Reply> {
        let (reply, rx) = oneshot::channel();
        let gone = || Error::new(ErrorKind::Internal, "ipam actor has stopped");
        self.tx
            .send(Request { op, reply })
            .await
            .map_err(|_| gone())?;
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
        let op = Op::Allocate(id.into(), subnet, attachment);
        expect_reply!(self.call(op).await, Reply::Cidr(c) => c)
    }

    /// Inserts or replaces the attachment with the same (container id, ifname).
    pub async fn put_attachment(&self, a: Attachment) -> Result<()> {
        self.call(Op::PutAttachment(a)).await.map(drop)
    }

    /// Removes an attachment; absent is fine.
    pub async fn remove_attachment(&self, container_id: &str, ifname: &str) -> Result<()> {
        self.call(Op::RemoveAttachment(container_id.into(), ifname.into()))
            .await
            .map(drop)
    }

    pub async fn attachments(&self) -> Result<Vec<Attachment>> {
        expect_reply!(self.call(Op::Attachments).await, Reply::Attachments(v) => v)
    }

    /// Claims the address of `cidr` for `id`; true if something changed.
    pub async fn claim(&self, id: &str, cidr: Ipv4Net) -> Result<bool> {
        expect_reply!(self.call(Op::Claim(id.into(), cidr)).await, Reply::Changed(b) => b)
    }

    /// Frees all addresses of `id`; the number freed.
    pub async fn free(&self, id: &str) -> Result<usize> {
        expect_reply!(self.call(Op::Free(id.into())).await, Reply::Freed(n) => n)
    }

    pub async fn free_one(&self, id: &str, ip: Ipv4Addr) -> Result<()> {
        self.call(Op::FreeOne(id.into(), ip)).await.map(drop)
    }

    /// CIDRs `id` owns in `subnet` (default subnet if `None`).
    pub async fn lookup(&self, id: &str, subnet: Option<Ipv4Net>) -> Result<Vec<Ipv4Net>> {
        expect_reply!(self.call(Op::Lookup(id.into(), subnet)).await, Reply::Cidrs(v) => v)
    }

    /// A copy of every owner's CIDRs.
    pub async fn owned(&self) -> Result<BTreeMap<String, Vec<Ipv4Net>>> {
        expect_reply!(self.call(Op::Owned).await, Reply::Owned(m) => m)
    }

    pub async fn summary(&self) -> Result<IpamSummary> {
        expect_reply!(self.call(Op::Summary).await, Reply::Summary(s) => *s)
    }

    /// `GET /ring`: starts the election and waits (bounded) until the ring exists.
    pub async fn ring(&self) -> Result<()> {
        self.call(Op::Ring).await.map(drop)
    }

    /// `DELETE /peer`: hands our ranges to a live peer; the heir's name, or "" if none.
    pub async fn shutdown(&self) -> Result<String> {
        expect_reply!(self.call(Op::Shutdown).await, Reply::Text(t) => t)
    }

    /// `DELETE /peer/<name>`: the answer text, `"<N> IPs taken over from <name>\n"`.
    pub async fn rmpeer(&self, name: &str) -> Result<String> {
        expect_reply!(self.call(Op::Rmpeer(name.into())).await, Reply::Text(t) => t)
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
