//! Which path carries a peer's container traffic, decided in one place ([`PathPolicy::choose`])
//! from the router's flags, and [`Only`], which makes an overlay accept exactly the peers
//! the policy gives it.
//!
//! With a password, traffic to a peer is encrypted unless the peer's underlay address is in a
//! trusted subnet (Weave's `--trusted-subnets`), where plain VXLAN is used; a peer we hold no
//! data keys for (no direct connection yet) gets no path rather than a clear one.

use super::{Overlay, Peer, PlaneFuture};
use ipnet::IpNet;

/// The encrypted user-space path (`super::encrypted`).
pub const ENCRYPTED: &str = "encrypted";
/// Kernel VXLAN (`super::vxlan`).
pub const VXLAN: &str = "vxlan";

/// What the router's flags say about paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathPolicy {
    /// A password is set: container traffic must be encrypted.
    pub encrypt: bool,
    /// Underlay networks where VXLAN is used even with a password.
    pub trusted: Vec<IpNet>,
}

impl PathPolicy {
    /// The path for `peer`, or `None` when it must get none (yet).
    pub fn choose(&self, peer: &Peer) -> Option<&'static str> {
        let addr = peer.underlay?;
        if !self.encrypt || self.trusted.iter().any(|n| n.contains(&addr)) {
            return Some(VXLAN);
        }
        peer.keys.as_ref().map(|_| ENCRYPTED)
    }
}

/// An overlay restricted to the peers the policy assigns to it.
pub struct Only {
    pub policy: PathPolicy,
    pub inner: Box<dyn Overlay>,
}

impl Overlay for Only {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn accepts(&self, peer: &Peer) -> bool {
        self.policy.choose(peer) == Some(self.inner.name()) && self.inner.accepts(peer)
    }

    fn set_peers<'a>(&'a self, peers: &'a [Peer]) -> PlaneFuture<'a, ()> {
        self.inner.set_peers(peers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::PeerName;
    use crate::sleeve::SessionKeys;
    use std::net::IpAddr;

    fn peer(ip: Option<&str>, keys: bool) -> Peer {
        Peer {
            name: PeerName::from_u64(1).unwrap(),
            nickname: "p".into(),
            underlay: ip.map(|i| i.parse::<IpAddr>().unwrap()),
            direct: keys,
            keys: keys.then(|| SessionKeys::from_handshake((&[1; 32], &[2; 32]), &[3; 32], true)),
        }
    }

    #[test]
    fn the_password_and_trusted_subnets_decide() {
        let open = PathPolicy::default();
        let secret = PathPolicy {
            encrypt: true,
            trusted: vec!["192.0.2.0/24".parse().unwrap()],
        };
        let cases = [
            (&open, peer(Some("198.51.100.1"), false), Some(VXLAN)),
            (&open, peer(Some("198.51.100.1"), true), Some(VXLAN)),
            (&open, peer(None, true), None),
            (&secret, peer(Some("198.51.100.1"), true), Some(ENCRYPTED)),
            // No keys yet: nothing, never clear VXLAN.
            (&secret, peer(Some("198.51.100.1"), false), None),
            (&secret, peer(Some("192.0.2.9"), true), Some(VXLAN)),
            (&secret, peer(Some("192.0.2.9"), false), Some(VXLAN)),
            (&secret, peer(None, true), None),
        ];
        for (policy, p, want) in cases {
            assert_eq!(policy.choose(&p), want, "{policy:?} {p:?}");
        }
    }
}
