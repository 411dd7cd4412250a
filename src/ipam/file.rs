//! The layout of `ipam.json`'s snapshot line: what both the writer ([`super::store`]) and
//! the replay of records ([`super::journal`]) read and write. A leaf of the IPAM service's
//! persistence, so the journal and the store do not import each other.

use crate::attachment::Attachment;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the `ipam.json` layout; another major version is refused.
pub const IPAM_FILE_VERSION: u32 = 1;

/// Contents of `ipam.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamFile {
    pub version: u32,
    pub peername: String,
    pub range: Ipv4Net,
    pub owned: BTreeMap<String, Vec<Ipv4Net>>,
    /// CNI attachments, kept in the same file so that an allocation and the attachment it is
    /// for are written together (one fsync per container start).
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// The multi-host allocator's state (ring, election, its ids' addresses); absent in files
    /// written by the single-host router, whose `owned` map is then migrated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocator: Option<serde_json::Value>,
}

/// Owner id → its CIDRs, as persisted.
pub type Owned = BTreeMap<String, Vec<Ipv4Net>>;
