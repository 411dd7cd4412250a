//! IPv4 addresses as `u32` and half-open ranges `[start, end)` of them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;

/// Dotted-quad form of an address held as `u32`.
pub fn ip(addr: u32) -> Ipv4Addr {
    Ipv4Addr::from(addr)
}

/// A half-open range `[start, end)` of IPv4 addresses. `end` is exclusive, so a range can
/// never contain 255.255.255.255 (Weave has the same limit).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AddrRange {
    pub start: u32,
    pub end: u32,
}

impl AddrRange {
    pub fn new(start: u32, end: u32) -> Self {
        debug_assert!(start <= end, "range start after end");
        AddrRange { start, end }
    }

    /// The whole of a CIDR block, e.g. `10.32.0.0/12`. The address must be the block's start.
    pub fn from_cidr(cidr: &str) -> Result<Self, String> {
        let (addr, len) = cidr
            .split_once('/')
            .ok_or_else(|| format!("invalid CIDR {cidr:?}: missing prefix length"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|e| format!("invalid CIDR {cidr:?}: {e}"))?;
        let len: u32 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("invalid CIDR {cidr:?}: bad prefix length"))?;
        let start = u32::from(addr);
        let size = 1u64 << (32 - len);
        if !u64::from(start).is_multiple_of(size) {
            return Err(format!(
                "invalid CIDR {cidr:?}: not aligned to its prefix length"
            ));
        }
        let end = u64::from(start) + size;
        let end = u32::try_from(end)
            .map_err(|_| format!("invalid CIDR {cidr:?}: range must end below 255.255.255.255"))?;
        Ok(AddrRange { start, end })
    }

    /// The usable host addresses of a CIDR block: without network and broadcast addresses
    /// when the block is bigger than /31, as Weave's allocate path does.
    pub fn host_range(self) -> AddrRange {
        if self.size() > 2 {
            AddrRange::new(self.start + 1, self.end - 1)
        } else {
            self
        }
    }

    pub fn size(self) -> u32 {
        self.end - self.start
    }

    pub fn is_empty(self) -> bool {
        self.start >= self.end
    }

    pub fn contains(self, addr: u32) -> bool {
        self.start <= addr && addr < self.end
    }

    pub fn overlaps(self, other: AddrRange) -> bool {
        !self.intersect(other).is_empty()
    }

    /// The common part of two ranges (possibly empty).
    pub fn intersect(self, other: AddrRange) -> AddrRange {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end).max(start);
        AddrRange { start, end }
    }

    /// The CIDR prefix length if the range is exactly one aligned block.
    pub fn prefix_len(self) -> Option<u32> {
        let size = self.size();
        (size.is_power_of_two() && self.start.is_multiple_of(size))
            .then(|| 32 - size.trailing_zeros())
    }

    /// The largest CIDR-aligned block inside the range (lowest one on ties); empty if the
    /// range is.
    pub fn largest_aligned_block(self) -> AddrRange {
        let mut best = AddrRange::new(self.start, self.start);
        let mut pos = u64::from(self.start);
        let end = u64::from(self.end);
        while pos < end {
            let align = if pos == 0 {
                1u64 << 32
            } else {
                1u64 << pos.trailing_zeros()
            };
            let mut size = align;
            while pos + size > end {
                size >>= 1;
            }
            if size > u64::from(best.size()) {
                best = AddrRange::new(pos as u32, (pos + size) as u32);
            }
            pos += size;
        }
        best
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix_len() {
            Some(len) => write!(f, "{}/{}", ip(self.start), len),
            None => write!(f, "{}-{}", ip(self.start), ip(self.end)),
        }
    }
}

impl fmt::Debug for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", ip(self.start), ip(self.end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing_and_display() {
        let r = AddrRange::from_cidr("10.32.0.0/12").unwrap();
        assert_eq!(r.size(), 1 << 20);
        assert_eq!(r.to_string(), "10.32.0.0/12");
        assert_eq!(r.host_range().start, r.start + 1);
        assert!(AddrRange::from_cidr("10.32.0.1/12").is_err());
        assert!(AddrRange::from_cidr("240.0.0.0/4").is_err());
        assert!(AddrRange::from_cidr("10.0.0.0/33").is_err());
        assert_eq!(AddrRange::new(10, 13).to_string(), "0.0.0.10-0.0.0.13");
    }

    #[test]
    fn largest_aligned_block_finds_the_biggest_cidr() {
        assert_eq!(
            AddrRange::new(1, 15).largest_aligned_block(),
            AddrRange::new(4, 8)
        );
        assert_eq!(
            AddrRange::new(0, 16).largest_aligned_block(),
            AddrRange::new(0, 16)
        );
        assert_eq!(
            AddrRange::new(3, 4).largest_aligned_block(),
            AddrRange::new(3, 4)
        );
        assert_eq!(
            AddrRange::new(6, 11).largest_aligned_block(),
            AddrRange::new(6, 8)
        );
        assert!(AddrRange::new(5, 5).largest_aligned_block().is_empty());
    }
}
