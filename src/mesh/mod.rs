//! The peer mesh over TCP 6783: handshake, optional Noise encryption, topology gossip,
//! connection management, and a gossip API for IPAM and the data plane.
//!
//! Layers, from the wire inward:
//! - [`protocol`]: pure framing, handshake fields and messages, with validation (no I/O).
//! - [`crypto`]: the Noise session used when a password is set (snow; no hand-rolled crypto).
//! - [`topology`]: pure peer/connection graph, merging by version, reachability, routes.
//! - [`connection`]: one TCP connection's task (handshake, heartbeats, framing).
//! - [`router`]: the mesh actor: listener, connection maker with backoff, gossip, and
//!   [`MeshHandle`], the API other subsystems call.
//! - [`ratelimit`]: admission of inbound connections before any handshake work.
//! - [`status`]: Weave's text formats for `/status/connections|peers` and `/report`.

pub mod actor;
pub mod connection;
pub mod crypto;
pub mod dial;
pub mod maker;
pub mod protocol;
pub mod ratelimit;
pub mod router;
pub mod status;
pub mod topology;

pub use router::{GossipMessage, LivePeer, MeshConfig, MeshHandle, MeshRouter, MeshTimers};
pub use status::MeshStatus;

use std::fmt;
use std::str::FromStr;

/// Default mesh (control) port.
pub const DEFAULT_PORT: u16 = 6783;
/// Default most connections (inbound plus outbound); 0 means unlimited.
pub const DEFAULT_CONN_LIMIT: usize = 200;

/// A peer's 48-bit name, shown MAC-like (`aa:bb:cc:dd:ee:ff`), stable across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PeerName(u64);

impl PeerName {
    /// The name from its 48 low bits; `None` if higher bits are set.
    pub fn from_u64(v: u64) -> Option<PeerName> {
        (v >> 48 == 0).then_some(PeerName(v))
    }

    pub fn as_u64(self) -> u64 {
        self.0
    }

    pub fn to_bytes(self) -> [u8; 6] {
        let b = self.0.to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    }

    pub fn from_bytes(b: [u8; 6]) -> PeerName {
        PeerName(b.iter().fold(0u64, |acc, x| (acc << 8) | *x as u64))
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.to_bytes();
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for PeerName {
    type Err = crate::Error;

    /// Accepts exactly six `:`-separated hex octets, as the store's peer names.
    fn from_str(s: &str) -> crate::Result<PeerName> {
        let bad = || {
            crate::Error::new(
                crate::ErrorKind::InvalidConfig,
                format!("invalid peer name {s:?}: want six hex octets like aa:bb:cc:dd:ee:ff"),
            )
        };
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut b = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(bad());
            }
            b[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        Ok(PeerName::from_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_name_round_trips() {
        let n: PeerName = "AA:bb:0c:dd:ee:0f".parse().unwrap();
        assert_eq!(n.to_string(), "aa:bb:0c:dd:ee:0f");
        assert_eq!(PeerName::from_bytes(n.to_bytes()), n);
        assert_eq!(PeerName::from_u64(n.as_u64()), Some(n));
        assert_eq!(PeerName::from_u64(1 << 48), None);
        for bad in [
            "",
            "aa:bb",
            "aa:bb:cc:dd:ee:fg",
            "aaa:bb:cc:dd:ee:f",
            "a:b:c:d:e:f:0",
        ] {
            assert!(bad.parse::<PeerName>().is_err(), "{bad}");
        }
    }
}
