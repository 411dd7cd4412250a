//! weaveDNS: names for containers and Mesos tasks on the weave network, answered by a DNS
//! server in every router and shared between routers over the mesh.
//!
//! - [`name`]: the one spelling of a DNS name (lowercase, absolute) and reverse names.
//! - [`store`]: the records, owned per peer, merged from gossip as a CRDT (pure).
//! - [`wire`]: the records' gossip encoding (versioned JSON, split to fit a mesh message).

pub mod name;
pub mod store;
pub mod wire;

pub use store::{OwnerUpdate, Record, RecordKey, Stamp, Store, Zone};

/// Weave's default DNS domain.
pub const DEFAULT_DOMAIN: &str = "weave.local.";
/// Weave's default TTL of local answers, in seconds.
pub const DEFAULT_TTL: u32 = 1;
/// Mesh gossip channel of the records.
pub const CHANNEL: &str = "dns";
