//! The mesh's value types: how it runs ([`MeshConfig`]) and what it tells its users
//! ([`GossipMessage`], [`LivePeer`]).

use super::maker::MeshTimers;
use super::ratelimit::AcceptLimits;
use crate::peer::PeerName;
use std::net::{IpAddr, SocketAddr};

pub use super::status::MeshStatus;

/// How the mesh runs (from `weaver`'s flags).
#[derive(Debug, Clone)]
pub struct MeshConfig {
    pub name: PeerName,
    pub nickname: String,
    /// Where to listen; port 0 picks a free one (tests).
    pub listen: SocketAddr,
    pub password: Option<String>,
    pub discovery: bool,
    /// Most connections; 0 means unlimited.
    pub conn_limit: usize,
    /// Recorded and shown; the control plane is encrypted regardless (documented).
    pub trusted_subnets: Vec<String>,
    pub targets: Vec<String>,
    /// Peers the mesh is sure to reach (from `--ipalloc-init`: IPAM's quorum or seeds; 0 when
    /// unknown). The flush interval follows the mesh's size, and while a mesh forms each peer
    /// has heard of only a few others: 500 peers starting together flushed at a small mesh's
    /// pace at first, which cost them a tenth more topology messages.
    pub least_peers: usize,
    pub timers: MeshTimers,
    /// Admission of inbound connections before their handshake (rate and pending caps).
    pub accept_limits: AcceptLimits,
}

impl MeshConfig {
    pub fn new(name: PeerName, nickname: &str, listen: SocketAddr) -> MeshConfig {
        MeshConfig {
            name,
            nickname: nickname.into(),
            listen,
            password: None,
            discovery: true,
            conn_limit: super::DEFAULT_CONN_LIMIT,
            trusted_subnets: vec![],
            targets: vec![],
            least_peers: 0,
            timers: MeshTimers::default(),
            accept_limits: AcceptLimits::default(),
        }
    }
}

/// A gossip message delivered to a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipMessage {
    pub channel: String,
    pub from: PeerName,
    pub broadcast: bool,
    pub payload: Vec<u8>,
}

/// A peer currently in the topology (not ourselves), with an underlay address for VXLAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivePeer {
    pub name: PeerName,
    pub nickname: String,
    pub uid: u64,
    /// From our direct connection if there is one, else as other peers reach it.
    pub address: Option<IpAddr>,
    /// True when we have a connection of our own to it.
    pub direct: bool,
    /// With a password: the encrypted data path's keys from our connection to it (new on
    /// every connection, so a restarted peer brings new ones).
    pub data_keys: Option<crate::sleeve::SessionKeys>,
}
