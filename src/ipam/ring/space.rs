//! The addresses one peer may hand out: the ranges its ring says it owns, minus what is
//! allocated.

use super::addr::AddrRange;
use crate::ipam::tracked::Tracked;

/// Owned ranges (sorted, disjoint, adjacent ones joined) and the allocated addresses in them
/// (a set whose changes are [`Tracked`], so a failed batch can be taken back).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Space {
    owned: Vec<AddrRange>,
    allocated: Tracked<u32, ()>,
}

impl Space {
    pub fn new() -> Self {
        Space::default()
    }

    pub fn owned(&self) -> &[AddrRange] {
        &self.owned
    }

    pub fn allocated(&self) -> impl Iterator<Item = u32> + '_ {
        self.allocated.keys().copied()
    }

    pub fn owns(&self, addr: u32) -> bool {
        self.owned.iter().any(|r| r.contains(addr))
    }

    /// Replaces the owned ranges (from the ring). Allocations that fall outside are dropped
    /// and returned, which only happens when we gave ranges away (reset).
    pub fn set_owned(&mut self, owned: Vec<AddrRange>) -> Vec<u32> {
        self.owned = owned;
        let dropped: Vec<u32> = self
            .allocated
            .keys()
            .copied()
            .filter(|a| !self.owns(*a))
            .collect();
        for a in &dropped {
            self.allocated.remove(a);
        }
        dropped
    }

    /// Free sub-ranges of our space inside `within`, in address order.
    fn free_ranges(&self, within: AddrRange) -> Vec<AddrRange> {
        let mut out = Vec::new();
        for r in self
            .owned
            .iter()
            .map(|r| r.intersect(within))
            .filter(|r| !r.is_empty())
        {
            let mut cursor = r.start;
            for &a in self.allocated.range(r.start..r.end).map(|(a, _)| a) {
                if a > cursor {
                    out.push(AddrRange::new(cursor, a));
                }
                cursor = a + 1;
            }
            if cursor < r.end {
                out.push(AddrRange::new(cursor, r.end));
            }
        }
        out
    }

    pub fn free_count_in(&self, within: AddrRange) -> u32 {
        let owned: u32 = self.owned.iter().map(|r| r.intersect(within).size()).sum();
        let used = self.allocated.range(within.start..within.end).count() as u32;
        owned - used
    }

    /// Allocates the lowest free address inside `within`.
    pub fn allocate(&mut self, within: AddrRange) -> Option<u32> {
        let addr = self.free_ranges(within).first()?.start;
        self.allocated.insert(addr, ());
        Some(addr)
    }

    /// Marks a specific owned, free address as allocated.
    pub fn claim(&mut self, addr: u32) -> Result<(), String> {
        if !self.owns(addr) {
            return Err(format!(
                "address {} is not in our space",
                super::addr::ip(addr)
            ));
        }
        if self.allocated.insert(addr, ()).is_some() {
            return Err(format!(
                "address {} is already allocated",
                super::addr::ip(addr)
            ));
        }
        Ok(())
    }

    pub fn free(&mut self, addr: u32) -> Result<(), String> {
        if self.allocated.remove(&addr).is_some() {
            Ok(())
        } else {
            Err(format!("address {} not allocated", super::addr::ip(addr)))
        }
    }

    /// The owned ranges and the undo record of the allocated set, to take a batch back.
    pub(super) fn checkpoint(&mut self) -> Vec<AddrRange> {
        self.allocated.settle();
        self.owned.clone()
    }

    /// Back to the checkpoint: its owned ranges, and the allocated set as it was.
    pub(super) fn rollback(&mut self, owned: Vec<AddrRange>) {
        self.owned = owned;
        self.allocated.rollback();
    }

    /// Gives away part of our free space inside `within`: the upper half of the largest free
    /// CIDR-aligned block there (a single address if that block is one address), so a donor
    /// keeps at least half of its free space. The block leaves our space.
    pub fn donate(&mut self, within: AddrRange) -> Option<AddrRange> {
        let biggest = self
            .free_ranges(within)
            .into_iter()
            .map(|r| r.largest_aligned_block())
            .fold(AddrRange::new(0, 0), |best, b| {
                if b.size() > best.size() {
                    b
                } else {
                    best
                }
            });
        if biggest.is_empty() {
            return None;
        }
        let gift = AddrRange::new(biggest.start + biggest.size() / 2, biggest.end);
        self.remove_owned(gift);
        Some(gift)
    }

    fn remove_owned(&mut self, gone: AddrRange) {
        let mut kept = Vec::with_capacity(self.owned.len() + 1);
        for r in &self.owned {
            let before = AddrRange::new(r.start, gone.start.clamp(r.start, r.end));
            let after = AddrRange::new(gone.end.clamp(r.start, r.end), r.end);
            if !r.overlaps(gone) {
                kept.push(*r);
                continue;
            }
            kept.extend([before, after].into_iter().filter(|p| !p.is_empty()));
        }
        self.owned = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(owned: &[(u32, u32)]) -> Space {
        let mut s = Space::new();
        s.set_owned(owned.iter().map(|&(a, b)| AddrRange::new(a, b)).collect());
        s
    }

    #[test]
    fn allocates_lowest_free_in_the_subnet() {
        let mut s = space(&[(0, 4), (10, 12)]);
        assert_eq!(s.allocate(AddrRange::new(1, 100)), Some(1));
        assert_eq!(s.allocate(AddrRange::new(0, 100)), Some(0));
        assert_eq!(s.allocate(AddrRange::new(0, 100)), Some(2));
        assert_eq!(s.allocate(AddrRange::new(0, 100)), Some(3));
        assert_eq!(s.allocate(AddrRange::new(0, 100)), Some(10));
        assert_eq!(s.allocate(AddrRange::new(0, 10)), None);
        s.free(2).unwrap();
        assert!(s.free(2).is_err());
        assert_eq!(s.allocate(AddrRange::new(0, 100)), Some(2));
        assert_eq!(s.free_count_in(AddrRange::new(0, 100)), 1);
    }

    #[test]
    fn donates_upper_half_of_largest_aligned_free_block() {
        let mut s = space(&[(0, 64)]);
        s.claim(3).unwrap();
        // Free: [0,3) and [4,64); largest aligned block is [32,64), its upper half is given.
        assert_eq!(
            s.donate(AddrRange::new(0, 64)),
            Some(AddrRange::new(48, 64))
        );
        assert_eq!(s.owned(), &[AddrRange::new(0, 48)]);
        assert_eq!(s.donate(AddrRange::new(0, 8)), Some(AddrRange::new(6, 8)));
        assert_eq!(s.owned(), &[AddrRange::new(0, 6), AddrRange::new(8, 48)]);
        let mut single = space(&[(5, 6)]);
        assert_eq!(
            single.donate(AddrRange::new(0, 64)),
            Some(AddrRange::new(5, 6))
        );
        assert_eq!(single.donate(AddrRange::new(0, 64)), None);
    }

    #[test]
    fn set_owned_drops_allocations_outside() {
        let mut s = space(&[(0, 8)]);
        s.claim(1).unwrap();
        s.claim(6).unwrap();
        assert_eq!(s.set_owned(vec![AddrRange::new(0, 4)]), vec![6]);
        assert!(s.claim(6).is_err());
    }
}
