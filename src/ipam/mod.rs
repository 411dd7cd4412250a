//! Address allocation, without I/O: [`ring`] is Weave's ring of owned ranges, the space each
//! peer allocates from and the consensus that creates the ring; this module holds the input
//! checks the HTTP API and the router share. [`store`] is the only part that touches the disk.

pub mod journal;
pub mod ring;
pub mod store;

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

/// Checks a container ID: non-empty, at most 255 bytes, printable ASCII without `/` or
/// whitespace (so it is safe in a URL path and a log line). `weave:expose` and `_` pass.
pub fn validate_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        "empty"
    } else if id.len() > 255 {
        "longer than 255 bytes"
    } else if !id.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
        "must be printable ASCII without '/' or whitespace"
    } else {
        return Ok(());
    };
    Err(bad(format!("invalid container id {id:?}: {reason}")))
}

fn bad(message: String) -> Error {
    Error::new(ErrorKind::InvalidConfig, message)
}
