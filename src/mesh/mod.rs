//! The peer mesh over TCP 6783: handshake, optional Noise encryption, topology gossip,
//! connection management, and gossip channels for the daemon's subsystems.
//!
//! Layers, from the wire inward (each imports only the ones above it in this list, except
//! `status`, `config` and `command`, which are vocabulary):
//! - [`protocol`]: pure framing, handshake fields and messages, with validation (no I/O).
//! - [`crypto`]: the Noise session used when a password is set (snow; no hand-rolled crypto).
//! - [`topology`]: pure peer/connection graph, merging by version, reachability, routes.
//! - [`maker`]: the connection maker's bookkeeping (targets, backoff), pure.
//! - [`ratelimit`]: admission of inbound connections before any handshake work.
//! - [`seen`]: which broadcasts were already seen (deduplication of the flood).
//! - [`connection`]: one TCP connection's task (handshake, heartbeats, framing).
//! - [`config`], [`command`], [`status`]: what the mesh is told, what its actor receives, and
//!   what it reports (Weave's text formats for `/status/connections|peers` and `/report`).
//! - [`dial`]: outbound dials and the inbound listener, ending in handshaken connections.
//! - [`actor`]: the one task that owns topology, connections and gossip routing.
//! - [`handle`]: [`MeshRouter::start`] and [`MeshHandle`], the API other subsystems call,
//!   and [`GossipChannel`], a subsystem's named gossip channel ([`channel`] lists the names).

pub mod actor;
pub mod channel;
pub mod command;
pub mod config;
pub mod connection;
pub mod crypto;
pub mod dial;
pub mod handle;
pub mod maker;
pub mod protocol;
pub mod ratelimit;
mod reach;
pub mod seen;
pub mod status;
pub mod topology;

pub use crate::peer::PeerName;
pub use config::{GossipMessage, LivePeer, MeshConfig};
pub use handle::{GossipChannel, GossipSender, MeshHandle, MeshRouter};
pub use maker::MeshTimers;
pub use status::MeshStatus;

/// Default mesh (control) port.
pub const DEFAULT_PORT: u16 = 6783;
/// Default most connections (inbound plus outbound); 0 means unlimited.
pub const DEFAULT_CONN_LIMIT: usize = 200;
