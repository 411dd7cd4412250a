//! The IPAM service's vocabulary, shared by [`super::handle`] (which sends requests) and
//! [`super::actor`] (which answers them): options, one request per operation with a reply
//! channel of that operation's own type (a wrong answer cannot be sent, so none is matched
//! at run time), and the summary the status pages show.

use super::core::RingEntry;
use super::file::Owned;
use crate::attachment::Attachment;
use crate::ipam::ring::{InitMode, PeerName};
use crate::Result;
use futures::future::BoxFuture;
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// The mesh channel Weave's IPAM gossips on.
pub const CHANNEL: &str = crate::mesh::channel::names::IPAM;

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
    /// Told the ring's entries whenever its owners change; awaited (bounded by
    /// [`RING_LISTENER_WAIT`]) before the batch's messages leave.
    pub ring_listener: Option<RingListener>,
}

/// Longest the actor waits for its [`RingListener`] before sending anyway.
pub const RING_LISTENER_WAIT: Duration = Duration::from_secs(2);

/// Who follows the ring's owners: the data plane's routes by owner. Awaited by the actor, so
/// a donor has routed a donated range before the receiver can hand out an address from it
/// (a neighbour's first packet to it would otherwise go nowhere).
#[derive(Clone)]
pub struct RingListener(pub Arc<dyn Fn(Vec<RingEntry>) -> BoxFuture<'static, ()> + Send + Sync>);

impl std::fmt::Debug for RingListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RingListener")
    }
}

impl Default for IpamOptions {
    fn default() -> Self {
        IpamOptions {
            mode: InitMode::consensus(1),
            alloc_wait: Duration::from_secs(3),
            ring_wait: Duration::from_secs(30),
            tick: Duration::from_secs(1),
            ring_listener: None,
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

/// Where one request's answer goes.
pub type Reply<T> = oneshot::Sender<Result<T>>;

/// One request to the actor, with a reply channel of its answer's type.
pub enum Request {
    /// An address for `id` in `subnet` (default subnet if `None`), recording `attachment`
    /// with it when given.
    Allocate {
        id: String,
        subnet: Option<Ipv4Net>,
        attachment: Option<Attachment>,
        reply: Reply<Ipv4Net>,
    },
    /// Claims the address of `cidr`; whether anything changed.
    Claim {
        id: String,
        cidr: Ipv4Net,
        reply: Reply<bool>,
    },
    /// Frees every address of `id`; how many.
    Free {
        id: String,
        reply: Reply<usize>,
    },
    FreeOne {
        id: String,
        ip: Ipv4Addr,
        reply: Reply<()>,
    },
    Lookup {
        id: String,
        subnet: Option<Ipv4Net>,
        reply: Reply<Vec<Ipv4Net>>,
    },
    Owned {
        reply: Reply<Owned>,
    },
    Summary {
        reply: Reply<IpamSummary>,
    },
    /// Upserts; whether anything changed.
    PutAttachment {
        attachment: Attachment,
        reply: Reply<bool>,
    },
    /// Whether there was one.
    RemoveAttachment {
        container_id: String,
        ifname: String,
        reply: Reply<bool>,
    },
    Attachments {
        reply: Reply<Vec<Attachment>>,
    },
    /// Start the election and wait for the ring.
    Ring {
        reply: Reply<()>,
    },
    /// `weave reset`: give our ranges to an heir; its name, or "" if none.
    Shutdown {
        reply: Reply<String>,
    },
    /// `weave rmpeer <name or nickname>`: the answer text.
    Rmpeer {
        name: String,
        reply: Reply<String>,
    },
}
