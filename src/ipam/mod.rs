//! Address allocation for one range (the "universe", e.g. 10.32.0.0/12), without I/O.
//!
//! [`Ipam`] keeps the addresses we may hand out as a map of free intervals (so the lowest free
//! address in a subnet is an O(log n) lookup) plus two indexes of what is allocated: address →
//! owner and owner → CIDRs. Today the local peer owns the whole universe; when the ring arrives,
//! only the free intervals change (they become the ranges the ring gives us).
//! [`store`] is the only part that touches the disk.

pub mod ring;
pub mod store;

#[cfg(test)]
mod tests;

use crate::{Error, ErrorKind, Result, NO_CONTAINER_ID};
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

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

/// The allocation state of the local peer.
#[derive(Debug, Clone)]
pub struct Ipam {
    universe: Ipv4Net,
    default_subnet: Ipv4Net,
    /// Free addresses of the space we own: interval start → inclusive end.
    free: BTreeMap<u32, u32>,
    /// Number of addresses we own (for status).
    owned_size: u64,
    /// Allocated address → owner id.
    owner: HashMap<u32, String>,
    /// Owner id → its CIDRs, in allocation order.
    by_id: BTreeMap<String, Vec<Ipv4Net>>,
}

impl Ipam {
    /// A fresh state owning the whole `universe`. `default_subnet` must overlap it.
    pub fn new(universe: Ipv4Net, default_subnet: Ipv4Net) -> Result<Ipam> {
        if universe.addr() != universe.network() {
            return Err(bad(format!(
                "invalid range - bits after network prefix are not all zero: {universe}"
            )));
        }
        validate_subnet(default_subnet, universe)?;
        let mut free = BTreeMap::new();
        free.insert(
            u32::from(universe.network()),
            u32::from(universe.broadcast()),
        );
        Ok(Ipam {
            universe,
            default_subnet,
            free,
            owned_size: size_of(universe),
            owner: HashMap::new(),
            by_id: BTreeMap::new(),
        })
    }

    /// Rebuilds a state from persisted ownership (each CIDR is re-claimed; conflicts are
    /// reported, not silently merged).
    pub fn from_owned(
        universe: Ipv4Net,
        default_subnet: Ipv4Net,
        owned: &BTreeMap<String, Vec<Ipv4Net>>,
    ) -> Result<Ipam> {
        let mut ipam = Ipam::new(universe, default_subnet)?;
        for (id, cidrs) in owned {
            for cidr in cidrs {
                ipam.insert(id, *cidr)?;
            }
        }
        Ok(ipam)
    }

    pub fn universe(&self) -> Ipv4Net {
        self.universe
    }

    pub fn default_subnet(&self) -> Ipv4Net {
        self.default_subnet
    }

    /// Ranges this peer owns (the whole universe until the ring exists).
    pub fn owned_ranges(&self) -> Vec<Ipv4Net> {
        vec![self.universe]
    }

    /// Number of addresses this peer owns.
    pub fn owned_size(&self) -> u64 {
        self.owned_size
    }

    /// Number of allocated addresses.
    pub fn active(&self) -> usize {
        self.owner.len()
    }

    /// Number of free addresses in the space we own.
    pub fn free_count(&self) -> u64 {
        self.free.iter().map(|(s, e)| u64::from(e - s) + 1).sum()
    }

    /// Every owner and its CIDRs.
    pub fn owned(&self) -> &BTreeMap<String, Vec<Ipv4Net>> {
        &self.by_id
    }

    /// Who owns `addr`, if anyone.
    pub fn owner_of(&self, addr: Ipv4Addr) -> Option<&str> {
        self.owner.get(&u32::from(addr)).map(String::as_str)
    }

    /// The CIDRs `id` owns inside `subnet`.
    pub fn lookup(&self, id: &str, subnet: Ipv4Net) -> Vec<Ipv4Net> {
        self.by_id
            .get(id)
            .map(|v| {
                v.iter()
                    .filter(|c| subnet.contains(&c.addr()))
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Gives `id` an address in `subnet` (idempotent: an address it already owns there is
    /// returned). Picks the lowest free address of the subnet's host range (network and
    /// broadcast excluded). Returns the CIDR (with the subnet's prefix) and whether it is new.
    pub fn allocate(&mut self, id: &str, subnet: Ipv4Net) -> Result<(Ipv4Net, bool)> {
        validate_id(id)?;
        validate_subnet(subnet, self.universe)?;
        if let Some(existing) = self.lookup(id, subnet).first() {
            return Ok((
                Ipv4Net::new(existing.addr(), subnet.prefix_len()).unwrap(),
                false,
            ));
        }
        let lo = u32::from(subnet.network()) + 1;
        let hi = u32::from(subnet.broadcast()) - 1;
        let addr = self.lowest_free(lo, hi).ok_or_else(|| {
            Error::new(
                ErrorKind::TryAgainLater,
                format!("no free addresses in subnet {subnet}"),
            )
        })?;
        let cidr = Ipv4Net::new(Ipv4Addr::from(addr), subnet.prefix_len()).unwrap();
        self.insert(id, cidr)?;
        Ok((cidr, true))
    }

    /// Gives `id` the specific address of `cidr`. The id `_` stores the address under its own
    /// IP string and succeeds on addresses somebody already owns (Weave #2548).
    /// Returns true when something changed.
    pub fn claim(&mut self, id: &str, cidr: Ipv4Net) -> Result<bool> {
        validate_id(id)?;
        let addr = cidr.addr();
        if let Some(current) = self.owner_of(addr) {
            if current == id || id == NO_CONTAINER_ID {
                return Ok(false);
            }
            return Err(bad(format!("address {addr} is already owned by {current}")));
        }
        let key = if id == NO_CONTAINER_ID {
            addr.to_string()
        } else {
            id.to_string()
        };
        self.insert(&key, cidr)?;
        Ok(true)
    }

    /// Frees every address of `id`; returns what was freed (never empty).
    pub fn free(&mut self, id: &str) -> Result<Vec<Ipv4Net>> {
        let cidrs = self
            .by_id
            .remove(id)
            .ok_or_else(|| bad(format!("Delete: no addresses for {id}")))?;
        for c in &cidrs {
            self.owner.remove(&u32::from(c.addr()));
            self.release(u32::from(c.addr()));
        }
        Ok(cidrs)
    }

    /// Frees one address of `id` (for `_`, the address is looked up under its IP string).
    pub fn free_one(&mut self, id: &str, addr: Ipv4Addr) -> Result<Ipv4Net> {
        let key = if id == NO_CONTAINER_ID {
            addr.to_string()
        } else {
            id.to_string()
        };
        self.remove(&key, addr)
            .ok_or_else(|| bad(format!("Free: address {addr} not found for {id}")))
    }

    /// Puts back CIDRs taken by [`Ipam::free`] (rollback when the store write failed).
    pub fn restore(&mut self, id: &str, cidrs: &[Ipv4Net]) -> Result<()> {
        for c in cidrs {
            self.insert(id, *c)?;
        }
        Ok(())
    }

    /// Removes `addr` from `id`; returns its CIDR if `id` owned it.
    pub fn remove(&mut self, id: &str, addr: Ipv4Addr) -> Option<Ipv4Net> {
        let list = self.by_id.get_mut(id)?;
        let pos = list.iter().position(|c| c.addr() == addr)?;
        let cidr = list.remove(pos);
        if list.is_empty() {
            self.by_id.remove(id);
        }
        self.owner.remove(&u32::from(addr));
        self.release(u32::from(addr));
        Some(cidr)
    }

    /// Records `id` → `cidr`; the address must not be owned yet.
    fn insert(&mut self, id: &str, cidr: Ipv4Net) -> Result<()> {
        let a = u32::from(cidr.addr());
        if let Some(current) = self.owner.get(&a) {
            return Err(bad(format!(
                "address {} is already owned by {current}",
                cidr.addr()
            )));
        }
        self.take(a);
        self.owner.insert(a, id.to_string());
        self.by_id.entry(id.to_string()).or_default().push(cidr);
        Ok(())
    }

    /// Lowest free address in `[lo, hi]`.
    fn lowest_free(&self, lo: u32, hi: u32) -> Option<u32> {
        if let Some((_, &end)) = self.free.range(..=lo).next_back() {
            if end >= lo {
                return Some(lo);
            }
        }
        self.free
            .range(lo..)
            .next()
            .map(|(&s, _)| s)
            .filter(|&s| s <= hi)
    }

    /// Marks `a` used in the free map (no-op for addresses outside our space).
    fn take(&mut self, a: u32) {
        let Some((&start, &end)) = self.free.range(..=a).next_back() else {
            return;
        };
        if end < a {
            return;
        }
        self.free.remove(&start);
        if start < a {
            self.free.insert(start, a - 1);
        }
        if a < end {
            self.free.insert(a + 1, end);
        }
    }

    /// Returns `a` to the free map if it lies in our space, merging neighbours.
    fn release(&mut self, a: u32) {
        if !self.universe.contains(&Ipv4Addr::from(a)) {
            return;
        }
        let (mut start, mut end) = (a, a);
        if let Some((&s, &e)) = self.free.range(..a).next_back() {
            if e >= a {
                return; // already free
            }
            if e + 1 == a {
                start = s;
            }
        }
        if a < u32::MAX {
            if let Some(&e) = self.free.get(&(a + 1)) {
                self.free.remove(&(a + 1));
                end = e;
            }
        }
        self.free.insert(start, end);
    }
}
