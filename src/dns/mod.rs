//! weaveDNS: names for containers and Mesos tasks on the weave network, answered by a DNS
//! server in every router and shared between routers over the mesh.
//!
//! - [`name`]: the one spelling of a DNS name (lowercase, absolute) and reverse names.
//! - [`store`]: the records, owned per peer, merged from gossip as a CRDT (pure).
//! - [`wire`]: the records' gossip encoding (versioned JSON, split to fit a mesh message).
//! - [`answer`]: the query path, pure: packet in, reply or forward out (hickory-proto).
//! - [`server`]: UDP and TCP listeners; [`forward`] to the host's resolvers; [`ratelimit`]
//!   per source in bounded memory; [`metrics`] for `/metrics`.

pub mod answer;
pub mod forward;
pub mod metrics;
pub mod name;
pub mod node;
pub mod ratelimit;
pub mod server;
pub mod service;
pub mod store;
pub mod wire;

pub use metrics::DnsMetrics;
pub use node::{Dns, DnsFlags};
pub use server::{DnsConfig, DnsServer, ZoneCell};
pub use service::{DnsHandle, ServiceConfig};
pub use store::{OwnerUpdate, Record, RecordKey, Stamp, Store, Zone};

/// Weave's default DNS domain.
pub const DEFAULT_DOMAIN: &str = "weave.local.";
/// Weave's default TTL of local answers, in seconds.
pub const DEFAULT_TTL: u32 = 1;
/// Mesh gossip channel of the records.
pub const CHANNEL: &str = crate::mesh::channel::names::DNS;
