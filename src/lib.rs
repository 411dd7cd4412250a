//! Weave Net container networking, re-implemented in Rust for Apache Mesos and every CNI runtime.
//!
//! A tour of the layout, from the edges inward (each module imports only modules below it):
//! - [`plugin`]: the `weave-net` and `weave-ipam` CNI plugins (ADD, DEL, CHECK, STATUS, GC).
//! - [`cli`]: the `weave` command.
//! - [`daemon`]: the composition root of `weaver`: builds IPAM, mesh, data plane and API.
//! - [`router`]: the daemon's state between its parts (targets, expose, status views); the
//!   HTTP API's [`api::Backend`].
//! - [`api`]: the HTTP server over that narrow backend, request parsing, status formats, and
//!   the typed client the plugins and the CLI use.
//! - [`ipam`]: the whole IPAM service: pure ring, its state, the actor, its file.
//! - [`dns`]: weaveDNS: the gossiped record store and its actor, the DNS server and its
//!   forwarder.
//! - [`dataplane`]: the host side (bridge, NAT, per-peer overlays: kernel VXLAN), behind a
//!   trait with a kernel and an in-memory implementation.
//! - [`mesh`]: the peer mesh over TCP 6783 (handshake, Noise encryption, topology, gossip
//!   channels).
//! - [`sleeve`]: the encrypted data path's pure core (datagram, keys, replay window).
//! - [`cni`]: CNI spec types, config parsing, result encoding per version, error JSON, env
//!   dispatch.
//! - [`netlink`], [`netns`] and [`iptables`]: the only code that touches the kernel, calls
//!   `setns` or runs iptables.
//! - Leaves: [`attachment`] and [`peer`] (domain types every layer shares), [`error`],
//!   [`task`].
//!
//! Errors read `verb object: cause`; the CNI error code is decided in one place,
//! [`cni::error::code_for`].

pub mod api;
pub mod attachment;
pub mod cli;
pub mod cni;
pub mod daemon;
pub mod dataplane;
pub mod dns;
pub mod error;
pub mod http;
pub mod ipam;
pub mod iptables;
pub mod mesh;
pub mod netlink;
pub mod netns;
pub mod nftables;
pub mod peer;
pub mod plugin;
pub mod router;
pub mod sleeve;
pub mod task;

pub use error::{Context, Error, ErrorKind, Result};

/// Name of the Linux bridge every container veth is attached to.
pub const BRIDGE_NAME: &str = "weave";
/// Default router HTTP address (IPAM, expose, status).
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:6784";
/// Default read-only status address.
pub const DEFAULT_STATUS_ADDR: &str = "127.0.0.1:6782";
/// Default allocation range, as Weave's script and kube launcher use.
pub const DEFAULT_IPALLOC_RANGE: &str = "10.32.0.0/12";
/// Default MTU of the bridge and container interfaces (fits VXLAN over a 1460-byte underlay).
pub const DEFAULT_MTU: u32 = 1376;
/// Container ID that owns the bridge's own address.
pub const EXPOSE_ID: &str = "weave:expose";
/// Container ID for addresses claimed without a container (stored under the IP itself).
pub const NO_CONTAINER_ID: &str = "_";
/// Prefix of host-side veths of CNI-attached containers (`weave reset` removes `vethwepl*`).
pub const HOST_VETH_PREFIX: &str = "vethwepl";
/// Prefix of a host veth a DEL retired (see [`plugin::retire`]): `vethwepd00` to
/// `vethwepd31`, one name per slot, so at most [`RETIRED_SLOTS`] wait for deletion.
pub const RETIRED_VETH_PREFIX: &str = "vethwepd";
/// How many retired veths may wait at once; a DEL that finds every slot taken deletes the
/// whole backlog itself (one kernel grace period for all of them).
pub const RETIRED_SLOTS: u32 = 32;
/// Link group (IFLA_GROUP, "wvdp") of retired veths: one RTM_DELLINK deletes them all.
pub const RETIRED_GROUP: u32 = 0x7776_6470;
/// Prefix a DEL renames the container's end to (down: it holds no routes) until the pair is
/// deleted, so the interface name is free for the next ADD at once.
pub const RETIRED_IF_PREFIX: &str = "wvdel";
/// Version string reported by every binary.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
