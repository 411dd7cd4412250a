//! The IPAM service, whole: from the pure ring to the actor the HTTP API talks to.
//!
//! From the inside out:
//! - [`ring`]: Weave's ring of owned ranges, the space each peer allocates from and the
//!   consensus that creates the ring, as pure state machines (no I/O, no clock).
//! - [`core`]: what the service keeps around the ring (prefixes, claims outside the range,
//!   CNI attachments) and Weave's `_`/`weave:expose` rules; pure.
//! - [`file`], [`journal`], [`store`]: `ipam.json` (a snapshot plus appended change records)
//!   and the data dir; the only parts that touch the disk.
//! - [`service`]: the service's vocabulary: options, requests with their typed replies, the
//!   status summary.
//! - [`actor`]: one task owning the [`core::Core`], batching requests, gossip and ticks into
//!   one write each, talking to other peers over the mesh channel `IPallocation`.
//! - [`handle`]: [`IpamHandle`], the typed async API (`allocate`, `claim`, `free`, ...).
//!
//! It depends on the leaf types ([`crate::attachment`], [`crate::peer`]) and on the mesh's
//! gossip channel only; neither on the HTTP API nor on the router.

pub mod actor;
pub mod core;
pub mod file;
pub mod handle;
pub mod journal;
mod live;
pub mod ring;
pub mod service;
pub mod store;
pub mod tracked;

pub use crate::attachment::validate_id;
pub use handle::IpamHandle;
pub use service::{IpamOptions, IpamSummary, RingListener, CHANNEL};

#[cfg(test)]
mod tests;

use crate::{Error, ErrorKind, Result};
use ipnet::Ipv4Net;

/// Smallest subnet we allocate in: network + two hosts + broadcast.
pub const MIN_SUBNET_SIZE: u64 = 4;

/// Number of addresses in `net`.
pub fn size_of(net: Ipv4Net) -> u64 {
    1u64 << (32 - net.prefix_len())
}

/// Checks a subnet given by a client: no host bits, at least 4 addresses, overlapping the
/// universe. Messages are Weave's.
pub fn validate_subnet(subnet: Ipv4Net, universe: Ipv4Net) -> Result<()> {
    if subnet.addr() != subnet.network() {
        return Err(bad(format!(
            "invalid subnet - bits after network prefix are not all zero: {subnet}"
        )));
    }
    if size_of(subnet) < MIN_SUBNET_SIZE {
        return Err(bad(format!(
            "invalid subnet - smaller than minimum size {MIN_SUBNET_SIZE}: {subnet}"
        )));
    }
    if !(universe.contains(&subnet) || subnet.contains(&universe)) {
        return Err(bad(format!("range {subnet} out of bounds: {universe}")));
    }
    Ok(())
}

fn bad(message: String) -> Error {
    Error::new(ErrorKind::InvalidConfig, message)
}
