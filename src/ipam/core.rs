//! The IPAM service's state without I/O: the multi-host ring [`Allocator`] plus what the
//! HTTP API needs around it (the prefix each address was handed out with, claims outside the
//! range, CNI attachments), and Weave's `_` and `weave:expose` rules. The actor in
//! [`super::actor`] adds the mesh, the clock, waiting clients and the file.

use super::file::Owned;
use super::ring::{self, ip, AddrRange, AllocError, Allocator, ClaimOutcome, PeerName};
use super::store::Persisted;
use super::tracked::Tracked;
use super::{validate_id, validate_subnet};
use crate::attachment::{format_mac, mac_for_ip, Attachment, AttachmentKey};
use crate::{Error, ErrorKind, Result, NO_CONTAINER_ID};
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// Everything persisted in `ipam.json` besides the header.
#[derive(Clone, Debug)]
pub struct Core {
    pub alloc: Allocator,
    pub universe: Ipv4Net,
    pub default_subnet: Ipv4Net,
    /// Prefix length each of our addresses was handed out with (`GET /ip`, `/report`).
    prefixes: Tracked<u32, u8>,
    /// Claims outside the range: only recorded, as Weave does.
    outside: Tracked<String, Vec<Ipv4Net>>,
    pub attachments: Attachments,
}

/// What a batch may change in a [`Core`] besides its tracked maps.
#[derive(Debug)]
pub struct Checkpoint(ring::Checkpoint);

/// The CNI attachments, by key and by the IPAM id their addresses are held under (so freeing
/// an id finds its attachments without a scan).
#[derive(Clone, Debug, Default)]
pub struct Attachments {
    by_key: Tracked<AttachmentKey, Attachment>,
    by_ipam_id: Tracked<String, BTreeSet<AttachmentKey>>,
}

impl Attachments {
    fn of(list: Vec<Attachment>) -> Attachments {
        let mut a = Attachments::default();
        for x in list {
            a.insert(x);
        }
        a.settle();
        a
    }

    pub fn get(&self, key: &AttachmentKey) -> Option<&Attachment> {
        self.by_key.get(key)
    }

    pub fn values(&self) -> impl Iterator<Item = &Attachment> {
        self.by_key.values()
    }

    pub fn as_map(&self) -> &BTreeMap<AttachmentKey, Attachment> {
        self.by_key.as_map()
    }

    /// Upserts by key; true if it changed anything.
    pub fn insert(&mut self, a: Attachment) -> bool {
        let key = a.key();
        if self.by_key.get(&key) == Some(&a) {
            return false;
        }
        let ipam_id = a.ipam_id.clone();
        if let Some(old) = self.by_key.insert(key.clone(), a) {
            self.unindex(&old.ipam_id, &key);
        }
        self.by_ipam_id.entry_or_default(ipam_id).insert(key);
        true
    }

    pub fn remove(&mut self, key: &AttachmentKey) -> Option<Attachment> {
        let old = self.by_key.remove(key)?;
        self.unindex(&old.ipam_id, key);
        Some(old)
    }

    /// Drops the attachments recorded under `ipam_id`.
    pub fn remove_ipam_id(&mut self, ipam_id: &str) {
        for key in self.by_ipam_id.remove(ipam_id).unwrap_or_default() {
            self.by_key.remove(&key);
        }
    }

    fn unindex(&mut self, ipam_id: &str, key: &AttachmentKey) {
        if let Some(keys) = self.by_ipam_id.get_mut(ipam_id) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_ipam_id.remove(ipam_id);
            }
        }
    }

    /// Keys whose attachment changed since the last checkpoint.
    pub fn changed(&self) -> impl Iterator<Item = &AttachmentKey> {
        self.by_key.differing()
    }

    fn settle(&mut self) {
        self.by_key.settle();
        self.by_ipam_id.settle();
    }

    fn rollback(&mut self) {
        self.by_key.rollback();
        self.by_ipam_id.rollback();
    }
}

/// A claim's result: done (and whether anything changed), or waiting for the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    Done(bool),
    NotReady,
}

fn bad(m: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidConfig, m)
}

fn alloc_err(e: AllocError) -> Error {
    bad(e.to_string())
}

/// The host addresses of a subnet as the allocator's range.
pub fn within(subnet: Ipv4Net) -> AddrRange {
    let r = AddrRange::new(
        u32::from(subnet.network()),
        u32::from(subnet.broadcast()).saturating_add(1),
    );
    r.host_range()
}

/// `_` stores an address under its own IP string (Weave #2548).
fn storage_key(id: &str, addr: Ipv4Addr) -> String {
    if id == NO_CONTAINER_ID {
        addr.to_string()
    } else {
        id.to_string()
    }
}

impl Core {
    /// A state around `alloc`; `owned` (from the file) gives prefixes and outside claims.
    pub fn new(
        alloc: Allocator,
        universe: Ipv4Net,
        default_subnet: Ipv4Net,
        owned: &Owned,
        attachments: Vec<Attachment>,
    ) -> Core {
        let mut core = Core {
            alloc,
            universe,
            default_subnet,
            prefixes: Tracked::default(),
            outside: Tracked::default(),
            attachments: Attachments::of(attachments),
        };
        for (id, cidrs) in owned {
            for c in cidrs {
                if universe.contains(&c.addr()) {
                    core.prefixes.insert(u32::from(c.addr()), c.prefix_len());
                } else {
                    core.outside.entry_or_default(id.clone()).push(*c);
                }
            }
        }
        core
    }

    fn cidr_of(&self, addr: u32) -> Ipv4Net {
        let prefix = self.prefixes.get(&addr).copied().unwrap_or_else(|| {
            if self.default_subnet.contains(&ip(addr)) {
                self.default_subnet.prefix_len()
            } else {
                self.universe.prefix_len()
            }
        });
        Ipv4Net::new(ip(addr), prefix).expect("prefix at most 32")
    }

    /// Every id's CIDRs: the allocator's, then claims outside the range.
    pub fn owned(&self) -> BTreeMap<String, Vec<Ipv4Net>> {
        let mut out: BTreeMap<String, Vec<Ipv4Net>> = self
            .alloc
            .allocations()
            .iter()
            .map(|(id, addrs)| (id.clone(), addrs.iter().map(|a| self.cidr_of(*a)).collect()))
            .collect();
        for (id, cidrs) in self.outside.iter() {
            out.entry(id.clone()).or_default().extend(cidrs);
        }
        out
    }

    /// One id's CIDRs (empty if none), as [`Core::owned`] lists them.
    pub fn owned_of(&self, id: &str) -> Vec<Ipv4Net> {
        let ours = self.alloc.allocations().get(id).into_iter().flatten();
        let mut out: Vec<Ipv4Net> = ours.map(|a| self.cidr_of(*a)).collect();
        out.extend(self.outside.get(id).into_iter().flatten());
        out
    }

    /// Starts a batch; [`Core::rollback`] takes everything it changes back. Costs what the
    /// ring and the waiting requests hold, not the allocations or attachments.
    pub fn checkpoint(&mut self) -> Checkpoint {
        self.prefixes.settle();
        self.outside.settle();
        self.attachments.settle();
        Checkpoint(self.alloc.checkpoint())
    }

    pub fn rollback(&mut self, cp: Checkpoint) {
        self.prefixes.rollback();
        self.outside.rollback();
        self.attachments.rollback();
        self.alloc.rollback(cp.0);
    }

    /// The ids whose CIDRs changed since the checkpoint.
    pub fn changed_ids(&self) -> BTreeSet<&String> {
        self.alloc
            .changed_ids()
            .chain(self.outside.differing())
            .collect()
    }

    /// Addresses in use (ours plus outside claims).
    pub fn active(&self) -> usize {
        let ours: usize = self.alloc.allocations().values().map(Vec::len).sum();
        ours + self.outside.values().map(Vec::len).sum::<usize>()
    }

    /// The subnet a request means, checked.
    pub fn subnet(&self, subnet: Option<Ipv4Net>) -> Result<Ipv4Net> {
        let s = subnet.unwrap_or(self.default_subnet);
        validate_subnet(s, self.universe)?;
        Ok(s)
    }

    /// Allocate: `Ok(Some)` now, `Ok(None)` pending (completed by an `Allocated` output).
    pub fn allocate(&mut self, id: &str, subnet: Ipv4Net) -> Result<Option<Ipv4Net>> {
        validate_id(id)?;
        match self.alloc.allocate(id, within(subnet)).map_err(alloc_err)? {
            Some(addr) => Ok(Some(self.record(addr, subnet))),
            None => Ok(None),
        }
    }

    /// Notes the prefix of a new address; the CIDR answered to the client.
    pub fn record(&mut self, addr: u32, subnet: Ipv4Net) -> Ipv4Net {
        if !self.prefixes.contains_key(&addr) {
            self.prefixes.insert(addr, subnet.prefix_len());
        }
        Ipv4Net::new(ip(addr), subnet.prefix_len()).expect("prefix at most 32")
    }

    /// Records the attachment an allocation is for (ips, mac and ipam_id filled in).
    pub fn attach(&mut self, id: &str, cidr: Ipv4Net, mut a: Attachment) {
        a.ips = vec![cidr.to_string()];
        a.mac = format_mac(&mac_for_ip(cidr.addr()));
        a.ipam_id = id.to_string();
        self.attachments.insert(a);
    }

    /// Claims the address of `cidr` for `id`. `_` succeeds on addresses somebody holds.
    pub fn claim(&mut self, id: &str, cidr: Ipv4Net) -> Result<Claimed> {
        validate_id(id)?;
        let addr = cidr.addr();
        let key = storage_key(id, addr);
        if !self.universe.contains(&addr) {
            let holder = self
                .outside
                .iter()
                .find(|(_, c)| c.iter().any(|c| c.addr() == addr))
                .map(|(h, _)| h.clone());
            return match holder {
                Some(h) if h == id || id == NO_CONTAINER_ID || h == key => Ok(Claimed::Done(false)),
                Some(h) => Err(bad(format!("address {addr} is already owned by {h}"))),
                None => {
                    self.outside.entry_or_default(key).push(cidr);
                    Ok(Claimed::Done(true))
                }
            };
        }
        let a = u32::from(addr);
        if let Some(holder) = self.alloc.holder_of(a) {
            if holder == id || id == NO_CONTAINER_ID {
                return Ok(Claimed::Done(false));
            }
            return Err(bad(format!("address {addr} is already owned by {holder}")));
        }
        match self.alloc.claim(&key, a).map_err(alloc_err)? {
            ClaimOutcome::Claimed => {
                self.prefixes.insert(a, cidr.prefix_len());
                Ok(Claimed::Done(true))
            }
            ClaimOutcome::AlreadyHeld => Ok(Claimed::Done(false)),
            ClaimOutcome::NotReady => Ok(Claimed::NotReady),
        }
    }

    /// Frees every address of `id` and drops the attachments recorded with it (also when the
    /// addresses were freed already). The number of addresses freed.
    pub fn free(&mut self, id: &str) -> Result<usize> {
        self.attachments.remove_ipam_id(id);
        let mut n = 0;
        if let Ok(addrs) = self.alloc.delete(id) {
            for a in &addrs {
                self.prefixes.remove(a);
            }
            n += addrs.len();
        }
        n += self.outside.remove(id).map_or(0, |v| v.len());
        if n == 0 {
            return Err(bad(format!("Delete: no addresses for {id}")));
        }
        Ok(n)
    }

    /// Frees one address of `id` (for `_`, looked up under its IP string).
    pub fn free_one(&mut self, id: &str, addr: Ipv4Addr) -> Result<()> {
        let key = storage_key(id, addr);
        let not_found = || bad(format!("Free: address {addr} not found for {id}"));
        if !self.universe.contains(&addr) {
            let list = self.outside.get_mut(&key).ok_or_else(not_found)?;
            let before = list.len();
            list.retain(|c| c.addr() != addr);
            if list.len() == before {
                return Err(not_found());
            }
            if list.is_empty() {
                self.outside.remove(&key);
            }
            return Ok(());
        }
        self.alloc
            .free(&key, u32::from(addr))
            .map_err(|_| not_found())?;
        self.prefixes.remove(&u32::from(addr));
        Ok(())
    }

    /// The CIDRs `id` holds inside `subnet`.
    pub fn lookup(&self, id: &str, subnet: Ipv4Net) -> Vec<Ipv4Net> {
        self.owned_of(id)
            .into_iter()
            .filter(|c| subnet.contains(&c.addr()))
            .collect()
    }

    /// Upserts; true if it changed anything.
    pub fn put_attachment(&mut self, a: Attachment) -> bool {
        self.attachments.insert(a)
    }

    pub fn remove_attachment(&mut self, container_id: &str, ifname: &str) -> bool {
        self.attachments
            .remove(&(container_id.to_string(), ifname.to_string()))
            .is_some()
    }

    /// Weave's IPAM status word(s) for `/status`.
    pub fn status(&self) -> String {
        let a = &self.alloc;
        if !a.has_ring() {
            if a.paxos().is_observer() {
                return "priming".into();
            }
            if !a.wants_ring() {
                return "idle".into();
            }
            return format!(
                "awaiting consensus (quorum: {}, known: {})",
                a.paxos().quorum(),
                a.paxos().state().len().max(1)
            );
        }
        if !a.pending().is_empty() {
            return "waiting for IP(s) to become available".into();
        }
        "ready".into()
    }

    /// The ring's entries as (token, size, owner, version, free).
    pub fn entries(&self) -> Vec<RingEntry> {
        let ring = self.alloc.ring();
        let entries = ring.entries();
        (0..entries.len())
            .map(|i| {
                let e = entries[i];
                RingEntry {
                    token: ip(e.token),
                    size: ring.entry_ranges(i).iter().map(|r| r.size() as u64).sum(),
                    peer: e.peer,
                    version: e.version,
                    free: e.free,
                }
            })
            .collect()
    }

    /// Addresses each peer owns in the ring, ours first.
    pub fn peer_sizes(&self) -> Vec<(PeerName, u64)> {
        let me = self.alloc.me();
        let mut by: BTreeMap<PeerName, u64> = BTreeMap::new();
        for e in self.entries() {
            *by.entry(e.peer).or_default() += e.size;
        }
        let mine = by.remove(&me).unwrap_or(0);
        let mut out = vec![(me, mine)];
        out.extend(by);
        out
    }
}

/// One ring entry for `/report`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingEntry {
    pub token: Ipv4Addr,
    pub size: u64,
    pub peer: PeerName,
    pub version: u32,
    pub free: u32,
}

/// The allocator's universe for a CIDR range.
pub fn universe_of(range: Ipv4Net) -> Result<AddrRange> {
    AddrRange::from_cidr(&range.to_string()).map_err(bad)
}

/// Builds the state from `ipam.json` (already checked against our name and range): the
/// allocator's saved state if present, else a fresh one. A single-host file (no allocator
/// state) is migrated when we form the ring alone (quorum 1): its addresses are re-claimed.
pub fn load(
    me: PeerName,
    universe: Ipv4Net,
    default_subnet: Ipv4Net,
    mode: crate::ipam::ring::InitMode,
    persisted: Persisted,
) -> Result<Core> {
    let range = universe_of(universe)?;
    let fresh = || Allocator::new(me, range, mode.clone());
    let (alloc, migrate) = match &persisted.allocator {
        Some(bytes) => match Allocator::restore(me, range, mode.clone(), bytes) {
            Ok(a) => (a, false),
            Err(why) => {
                tracing::warn!("discarding persisted IPAM ring: {why}");
                (fresh(), false)
            }
        },
        None => (fresh(), !persisted.owned.is_empty()),
    };
    let mut core = Core::new(
        alloc,
        universe,
        default_subnet,
        &persisted.owned,
        persisted.attachments,
    );
    if migrate {
        let alone = matches!(mode, crate::ipam::ring::InitMode::Consensus { quorum: 1 });
        if !alone {
            tracing::warn!(
                "ipam.json has single-host allocations and no ring; they are not carried over \
                 into a multi-peer ring"
            );
            return Ok(core);
        }
        core.alloc.prime();
        for (id, cidrs) in &persisted.owned {
            for c in cidrs.iter().filter(|c| universe.contains(&c.addr())) {
                if let Err(e) = core.claim(id, *c) {
                    tracing::warn!("migrate {id} {c}: {e}");
                }
            }
        }
        core.alloc.take_outputs();
    }
    Ok(core)
}
