//! Multi-host IP allocation as Weave does it, as pure state machines (no I/O, no clocks):
//! the ring of range ownership (a CRDT), each peer's free space, the initial election, and
//! the allocator that combines them. The router feeds it messages and ticks.

pub mod addr;
pub mod allocator;
pub mod claim;
pub mod delta;
mod election;
pub mod entries;
mod gossip;
pub mod merge;
pub mod messages;
pub mod paxos;
pub mod persist;
pub mod shared;
pub mod space;

pub use crate::peer::PeerName;
pub use addr::{ip, AddrRange};
pub use allocator::{Allocator, Checkpoint, REQUEST_TIMEOUT_TICKS};
pub use claim::ClaimOutcome;
pub use delta::{seeds_digest, DeltaMerge, RingDelta};
pub use entries::{Entry, Ring, RingError, TRANSFER_VERSION_BUMP};
pub use merge::MergeError;
pub use messages::{AllocError, Gossip, InitMode, Output, Unicast};
pub use paxos::{Paxos, PaxosState, ProposalId};
pub use shared::{Entries, Seeds};
pub use space::Space;

#[cfg(test)]
mod anti_entropy_tests;
#[cfg(test)]
mod delta_tests;
#[cfg(test)]
mod ring_tests;
