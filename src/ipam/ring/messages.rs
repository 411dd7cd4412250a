//! What allocators say to each other, and what they hand back to their driver.

use super::addr::{ip, AddrRange};
use super::delta::RingDelta;
use super::entries::Ring;
use super::paxos::PaxosState;
use crate::peer::PeerName;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Broadcast on the `IPallocation` gossip channel: the election before a ring exists, then
/// what changed in the ring; the whole ring now and then (anti-entropy).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gossip {
    Paxos(PaxosState),
    Ring(Ring),
    RingDelta(RingDelta),
}

/// Point-to-point messages for moving space between peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unicast {
    /// "Please give me some free space inside this range."
    SpaceRequest(AddrRange),
    /// The sender's ring, sent back after a grant (or to a peer still electing).
    Ring(Ring),
    /// Nothing to give; the sender's ring so the requester's view of free space improves.
    SpaceDenied(Ring),
    /// The sender's election claims, for the proposer it promised (see `paxos`).
    Paxos(PaxosState),
    /// "Your delta did not fit my ring: send me your whole ring."
    RingRequest,
    /// The answer to a `RingRequest`.
    RingReply(Ring),
}

/// What the driver (router, or the simulator) must do after a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Broadcast(Gossip),
    Send {
        to: PeerName,
        msg: Unicast,
    },
    /// A pending allocation completed.
    Allocated {
        id: String,
        addr: u32,
    },
    /// A pending allocation was dropped (cancel or shutdown).
    Cancelled {
        id: String,
    },
}

/// How this peer takes part in creating the ring (`--ipalloc-init`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InitMode {
    /// `consensus[=N]`: vote; a ring needs `quorum` (N/2+1) agreeing electors.
    Consensus { quorum: usize },
    /// `seed=<names>`: the ring is split among these peers at once, no vote.
    Seed(Vec<PeerName>),
    /// `observer`: never votes; waits for electors' ring.
    Observer,
}

impl InitMode {
    /// `consensus=N`: quorum N/2+1.
    pub fn consensus(initial_peers: usize) -> Self {
        InitMode::Consensus {
            quorum: initial_peers / 2 + 1,
        }
    }

    /// Peers the mesh is sure to have once the ring exists: a consensus needs its quorum, a
    /// seeded ring its seeds; an observer knows nothing of the mesh's size.
    pub fn least_peers(&self) -> usize {
        match self {
            InitMode::Consensus { quorum } => *quorum,
            InitMode::Seed(seeds) => seeds.len(),
            InitMode::Observer => 0,
        }
    }
}

/// Errors reported to the caller of an allocator operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllocError {
    OutOfBounds {
        range: AddrRange,
        universe: AddrRange,
    },
    NoAddresses {
        id: String,
    },
    NotFound {
        addr: u32,
        id: String,
    },
    CannotRemoveSelf,
    /// A claim of an address another id of ours holds.
    AlreadyOwned {
        addr: u32,
        by: String,
    },
    /// A claim of an address in a range another peer owns.
    OwnedByOther {
        addr: u32,
        peer: PeerName,
    },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::OutOfBounds { range, universe } => {
                write!(f, "range {range} out of bounds: {universe}")
            }
            AllocError::NoAddresses { id } => write!(f, "Delete: no addresses for {id}"),
            AllocError::NotFound { addr, id } => {
                write!(f, "Free: address {} not found for {id}", ip(*addr))
            }
            AllocError::CannotRemoveSelf => {
                write!(f, "cannot remove ourself from the ring; use reset")
            }
            AllocError::AlreadyOwned { addr, by } => {
                write!(f, "address {} is already owned by {by}", ip(*addr))
            }
            AllocError::OwnedByOther { addr, peer } => {
                write!(f, "address {} is owned by other peer {peer}", ip(*addr))
            }
        }
    }
}

impl std::error::Error for AllocError {}
