//! Claiming a specific address (`PUT /ip/<id>/<ip>/<len>`), as Weave's claim: we may take an
//! address only inside our own ranges; one inside another peer's range is refused.
//! Addresses outside the universe are the caller's to record (the ring knows nothing of them).

use super::allocator::Allocator;
use super::messages::AllocError;

/// What a claim did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The address is now `id`'s.
    Claimed,
    /// `id` already held it: nothing changed.
    AlreadyHeld,
    /// No ring yet: the election was started; try again once it exists.
    NotReady,
}

impl Allocator {
    /// Gives `id` the address `addr`, which must lie inside the universe.
    pub fn claim(&mut self, id: &str, addr: u32) -> Result<ClaimOutcome, AllocError> {
        let universe = self.universe();
        if !universe.contains(addr) {
            let range = super::addr::AddrRange::new(addr, addr.saturating_add(1));
            return Err(AllocError::OutOfBounds { range, universe });
        }
        if let Some(holder) = self.holder_of(addr) {
            if holder == id {
                return Ok(ClaimOutcome::AlreadyHeld);
            }
            return Err(AllocError::AlreadyOwned {
                addr,
                by: holder.to_string(),
            });
        }
        if !self.has_ring() {
            self.wants_ring = true;
            self.establish_ring();
            self.flush();
            return Ok(ClaimOutcome::NotReady);
        }
        match self.ring.owner(addr) {
            Some(peer) if peer != self.me => Err(AllocError::OwnedByOther { addr, peer }),
            _ => {
                if self.space.claim(addr).is_err() {
                    // Ours by the ring but not in our space: the two disagree; trust the ring.
                    self.space.set_owned(self.ring.owned_ranges(self.me));
                    self.space
                        .claim(addr)
                        .map_err(|_| AllocError::OwnedByOther {
                            addr,
                            peer: self.me,
                        })?;
                }
                self.owned.entry_or_default(id.to_string()).push(addr);
                self.report_free();
                self.flush();
                Ok(ClaimOutcome::Claimed)
            }
        }
    }

    /// The id holding `addr`, if any of ours does.
    pub fn holder_of(&self, addr: u32) -> Option<&str> {
        self.owned
            .iter()
            .find(|(_, addrs)| addrs.contains(&addr))
            .map(|(id, _)| id.as_str())
    }

    /// Ids waiting for an address.
    pub fn pending_ids(&self) -> Vec<String> {
        self.pending.iter().map(|p| p.id.clone()).collect()
    }

    /// Whether an allocation or claim asked for the ring (Weave's "idle" otherwise).
    pub fn wants_ring(&self) -> bool {
        self.wants_ring
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::ring::{AddrRange, InitMode, Output, PeerName};

    fn universe() -> AddrRange {
        AddrRange::from_cidr("10.32.0.0/12").unwrap()
    }

    #[test]
    fn claims_in_own_space_and_refuses_others() {
        let me = PeerName::from_u64(1).unwrap();
        let other = PeerName::from_u64(2).unwrap();
        let mut a = Allocator::new(me, universe(), InitMode::Seed(vec![me, other]));
        let lo = universe().start + 9;
        let hi = universe().end - 5;
        assert_eq!(a.claim("c1", lo), Ok(ClaimOutcome::Claimed));
        assert_eq!(a.claim("c1", lo), Ok(ClaimOutcome::AlreadyHeld));
        let e = a.claim("c2", lo).unwrap_err();
        assert_eq!(e.to_string(), "address 10.32.0.9 is already owned by c1");
        let e = a.claim("c2", hi).unwrap_err();
        assert_eq!(
            e.to_string(),
            "address 10.47.255.251 is owned by other peer 00:00:00:00:00:02"
        );
        // A claimed address is not handed out again.
        let within = AddrRange::new(lo, lo + 2);
        assert_eq!(a.allocate("c3", within), Ok(Some(lo + 1)));
        assert!(a.claim("c4", 1).is_err());
    }

    #[test]
    fn claim_without_ring_starts_the_election() {
        let me = PeerName::from_u64(1).unwrap();
        let mut a = Allocator::new(me, universe(), InitMode::consensus(3));
        assert_eq!(
            a.claim("c1", universe().start + 1),
            Ok(ClaimOutcome::NotReady)
        );
        assert!(a
            .take_outputs()
            .iter()
            .any(|o| matches!(o, Output::Broadcast(_))));
        let mut lone = Allocator::new(me, universe(), InitMode::consensus(0));
        assert_eq!(
            lone.claim("c1", universe().start + 1),
            Ok(ClaimOutcome::NotReady)
        );
        assert!(lone.has_ring(), "a quorum of one forms the ring at once");
        assert_eq!(
            lone.claim("c1", universe().start + 1),
            Ok(ClaimOutcome::Claimed)
        );
    }
}
