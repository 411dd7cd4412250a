//! Gossip channels: how a subsystem talks to its counterparts on other peers. Each subsystem
//! opens one named channel with [`super::MeshHandle::channel`] and gets a
//! [`super::GossipChannel`]: a cloneable [`super::GossipSender`] (broadcast to all, unicast to
//! one peer) and the receiver of what others send on that channel. The mesh floods and
//! routes; it never looks inside a payload.
//!
//! Adding a subsystem that gossips (e.g. DNS records): give it a name in [`names`], have the
//! composition root (`crate::daemon`) open the channel and hand it to the subsystem's actor.

/// The channel names in use, one place so no two subsystems pick the same.
pub mod names {
    /// Weave's IPAM ring gossip (`ipam`).
    pub const IPAM: &str = "IPallocation";
}
