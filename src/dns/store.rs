//! The record store: every peer's names, each owned by the peer that registered it, merged
//! from gossip as a state-based CRDT. Pure: no I/O, the caller passes the time in.
//!
//! The model. For one owner, every possible record key (name, container, address) has a
//! stamp `(version, deleted)`; only the owner issues versions, and they only grow. Gossip
//! carries facts about one owner at a time ([`OwnerUpdate`]): stamps of listed keys, and a
//! *floor*: "every key of this owner that is not listed is deleted as of version F". Merging
//! keeps, per key, the larger stamp (at equal versions the tombstone wins) and the larger
//! floor: a pointwise maximum, so merges commute, associate and are idempotent, whatever
//! order, duplication or delay gossip suffers. Then:
//! - a change is a delta: floor 0 and the changed stamps (a removal is a tombstone);
//! - the owner's periodic snapshot is a floor at a fresh version plus its live records; it
//!   repairs anything a peer missed and lets every peer forget the owner's tombstones (no
//!   tombstone timers, no clock agreement between hosts);
//! - `rmpeer` is a floor set by another peer at the highest version it knows of the dead
//!   peer: its records go everywhere, and late gossip of them is refused.
//!
//! The owner is the authority for its own records. Facts about us from others never change
//! what we hold; when they disagree with it (an `rmpeer` of a live peer, or an old record of
//! ours still alive somewhere after we lost our state), we answer with fresher versions. A
//! restarted router re-announces its persisted records at fresh versions the same way.

use super::name;
use crate::mesh::PeerName;
use crate::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

/// Most live records one peer may register; its snapshot must fit one gossip message.
pub const MAX_OWN_RECORDS: usize = 2000;
/// Most entries (live and tombstones) kept for one other peer; gossip beyond is dropped.
pub const MAX_ENTRIES_PER_OWNER: usize = 8192;

/// What a record says: `name` resolves to `ip`, registered for `container_id`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordKey {
    pub name: String,
    pub container_id: String,
    pub ip: Ipv4Addr,
}

impl RecordKey {
    /// Checks and normalises the parts (the name lowercased and made absolute).
    pub fn new(fqdn: &str, container_id: &str, ip: Ipv4Addr) -> Result<RecordKey> {
        crate::ipam::validate_id(container_id)?;
        Ok(RecordKey {
            name: name::normalize(fqdn)?,
            container_id: container_id.to_string(),
            ip,
        })
    }

    /// True if the parts are in the form [`RecordKey::new`] makes (gossip is checked).
    pub fn is_valid(&self) -> bool {
        name::normalize(&self.name).is_ok_and(|n| n == self.name)
            && crate::ipam::validate_id(&self.container_id).is_ok()
    }
}

/// A key's state in its owner's history. Ordered by version, then tombstone over live, so
/// the larger stamp is the one that wins a merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    pub version: u64,
    pub deleted: bool,
}

impl Stamp {
    pub fn live(version: u64) -> Stamp {
        Stamp {
            version,
            deleted: false,
        }
    }

    pub fn tombstone(version: u64) -> Stamp {
        Stamp {
            version,
            deleted: true,
        }
    }
}

/// Facts about one owner: the stamps in `entries`, and every other key of the owner
/// deleted as of `floor` (0 says nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerUpdate {
    pub owner: PeerName,
    pub floor: u64,
    pub entries: Vec<(RecordKey, Stamp)>,
}

impl OwnerUpdate {
    fn delta(owner: PeerName, entries: Vec<(RecordKey, Stamp)>) -> OwnerUpdate {
        OwnerUpdate {
            owner,
            floor: 0,
            entries,
        }
    }

    /// The highest version the update speaks of.
    fn top(&self) -> u64 {
        self.entries
            .iter()
            .map(|(_, s)| s.version)
            .fold(self.floor, u64::max)
    }
}

/// A live record with its owner, for listings (`weave status dns`, `GET /name`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Record {
    pub name: String,
    pub ip: Ipv4Addr,
    pub container_id: String,
    pub owner: PeerName,
    pub version: u64,
}

/// What [`Store::merge`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// The set of live records changed (the zone must be rebuilt).
    pub changed: bool,
    /// Our answer to facts about us that disagree with what we hold; broadcast it.
    pub correction: Option<OwnerUpdate>,
    /// Entries refused: malformed, or past [`MAX_ENTRIES_PER_OWNER`].
    pub rejected: usize,
}

/// The persisted form of our own records (`dns.json` in the data dir).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    pub version: u32,
    pub peer: String,
    /// Our version clock, so versions keep growing across restarts even if time goes back.
    pub clock: u64,
    pub records: Vec<RecordKey>,
}

/// Layout version of [`Persisted`].
pub const PERSISTED_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct OwnerState {
    floor: u64,
    /// Keys whose stamp differs from the default `(floor, deleted)`.
    entries: BTreeMap<RecordKey, Stamp>,
}

impl OwnerState {
    /// The key's stamp, the floor's tombstone when not held.
    fn stamp(&self, k: &RecordKey) -> Stamp {
        self.entries
            .get(k)
            .copied()
            .unwrap_or(Stamp::tombstone(self.floor))
    }

    fn live(&self) -> impl Iterator<Item = (&RecordKey, &Stamp)> {
        self.entries.iter().filter(|(_, s)| !s.deleted)
    }

    /// Joins facts into this state; returns (live set changed, entries refused).
    fn join(&mut self, u: &OwnerUpdate, cap: usize) -> (bool, usize) {
        let mut changed = false;
        let mut rejected = 0;
        for (k, s) in &u.entries {
            if s.version == 0 || !k.is_valid() {
                rejected += 1;
                continue;
            }
            let cur = self.stamp(k);
            if *s <= cur {
                continue;
            }
            if !self.entries.contains_key(k) && self.entries.len() >= cap {
                rejected += 1;
                continue;
            }
            changed |= s.deleted != cur.deleted;
            self.entries.insert(k.clone(), *s);
        }
        // Every key not listed is deleted as of the floor, even when we hold a higher floor
        // already (an rmpeer by a peer that saw less of the owner than we did).
        if u.floor > 0 {
            let listed: BTreeSet<&RecordKey> = u.entries.iter().map(|(k, _)| k).collect();
            let floor = u.floor;
            self.entries.retain(|k, s| {
                let keep = s.version > floor || (listed.contains(k) && !s.deleted);
                changed |= !keep && !s.deleted;
                keep
            });
            self.floor = self.floor.max(floor);
        }
        (changed, rejected)
    }

    fn top(&self) -> u64 {
        self.entries
            .values()
            .map(|s| s.version)
            .fold(self.floor, u64::max)
    }
}

/// Every peer's records as this peer knows them, ours included.
#[derive(Debug, Clone)]
pub struct Store {
    me: PeerName,
    /// The last version we issued.
    clock: u64,
    owners: BTreeMap<PeerName, OwnerState>,
}

impl Store {
    pub fn new(me: PeerName) -> Store {
        Store {
            me,
            clock: 0,
            owners: BTreeMap::new(),
        }
    }

    pub fn me(&self) -> PeerName {
        self.me
    }

    /// A fresh version: above every one issued or seen for us, and at least the time in ms,
    /// so a peer that lost its state still outranks what it said before.
    fn tick(&mut self, now_ms: u64) -> u64 {
        self.clock = (self.clock + 1).max(now_ms);
        self.clock
    }

    fn mine(&mut self) -> &mut OwnerState {
        self.owners.entry(self.me).or_default()
    }

    /// Registers `key` as ours. `None` when it is already live (nothing to gossip).
    pub fn add(&mut self, key: RecordKey, now_ms: u64) -> Result<Option<OwnerUpdate>> {
        let mine = self.mine();
        if !mine.stamp(&key).deleted {
            return Ok(None);
        }
        if mine.live().count() >= MAX_OWN_RECORDS {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "add {}: this peer already has {MAX_OWN_RECORDS} names",
                    key.name
                ),
            ));
        }
        let s = Stamp::live(self.tick(now_ms));
        self.mine().entries.insert(key.clone(), s);
        Ok(Some(OwnerUpdate::delta(self.me, vec![(key, s)])))
    }

    /// Removes our live records of `container_id` (or of every container with `"*"`),
    /// narrowed to one address and one name when given. Returns the tombstones to gossip,
    /// `None` when nothing matched.
    pub fn remove(
        &mut self,
        container_id: &str,
        ip: Option<Ipv4Addr>,
        fqdn: Option<&str>,
        now_ms: u64,
    ) -> Option<OwnerUpdate> {
        let fqdn = fqdn.and_then(|n| name::normalize(n).ok());
        let matching: Vec<RecordKey> = self
            .mine()
            .live()
            .map(|(k, _)| k)
            .filter(|k| container_id == "*" || k.container_id == container_id)
            .filter(|k| ip.is_none_or(|ip| k.ip == ip))
            .filter(|k| fqdn.as_ref().is_none_or(|n| &k.name == n))
            .cloned()
            .collect();
        if matching.is_empty() {
            return None;
        }
        let s = Stamp::tombstone(self.tick(now_ms));
        let mine = self.mine();
        for k in &matching {
            mine.entries.insert(k.clone(), s);
        }
        Some(OwnerUpdate::delta(
            self.me,
            matching.into_iter().map(|k| (k, s)).collect(),
        ))
    }

    /// Our snapshot: a floor at a fresh version with our live records. It replaces every
    /// older fact about us anywhere, so our own tombstones can go now.
    pub fn snapshot(&mut self, now_ms: u64) -> OwnerUpdate {
        let floor = self.tick(now_ms);
        let me = self.me;
        let mine = self.mine();
        mine.entries.retain(|_, s| !s.deleted);
        mine.floor = floor;
        OwnerUpdate {
            owner: me,
            floor,
            entries: mine.live().map(|(k, s)| (k.clone(), *s)).collect(),
        }
    }

    /// All we know about another owner, to pass on (e.g. records of a peer that is not
    /// reachable now, for peers that never heard of it). `None` for us or an unknown owner.
    pub fn relay(&self, owner: PeerName) -> Option<OwnerUpdate> {
        if owner == self.me {
            return None;
        }
        let st = self.owners.get(&owner)?;
        Some(OwnerUpdate {
            owner,
            floor: st.floor,
            entries: st.entries.iter().map(|(k, s)| (k.clone(), *s)).collect(),
        })
    }

    /// Owners other than us that we hold anything about.
    pub fn other_owners(&self) -> Vec<PeerName> {
        self.owners
            .keys()
            .copied()
            .filter(|o| *o != self.me)
            .collect()
    }

    /// Merges gossip. Facts about others are joined; facts about us are checked against
    /// what we hold and answered with a correction where they disagree.
    pub fn merge(&mut self, u: &OwnerUpdate, now_ms: u64) -> Merged {
        if u.owner == self.me {
            return Merged {
                correction: self.answer_about_me(u, now_ms),
                ..Merged::default()
            };
        }
        let st = self.owners.entry(u.owner).or_default();
        let (changed, rejected) = st.join(u, MAX_ENTRIES_PER_OWNER);
        if st.floor == 0 && st.entries.is_empty() {
            self.owners.remove(&u.owner);
        }
        Merged {
            changed,
            correction: None,
            rejected,
        }
    }

    /// Others' facts about us that differ from ours get our state restated at a fresh
    /// version (so it wins); facts they merely lack are left to our next snapshot.
    fn answer_about_me(&mut self, u: &OwnerUpdate, now_ms: u64) -> Option<OwnerUpdate> {
        self.clock = self.clock.max(u.top());
        let mine = self.owners.get(&self.me).cloned().unwrap_or_default();
        let mut restate: BTreeSet<RecordKey> = BTreeSet::new();
        for (k, s) in u.entries.iter().filter(|(k, _)| k.is_valid()) {
            let m = mine.stamp(k);
            if *s > m || s.deleted != m.deleted {
                restate.insert(k.clone());
            }
        }
        // A floor from someone else (rmpeer of us while we live) deletes our live records
        // at or below it in their eyes.
        if u.floor > 0 {
            restate.extend(
                mine.live()
                    .filter(|(_, s)| s.version <= u.floor)
                    .map(|(k, _)| k.clone()),
            );
        }
        if restate.is_empty() {
            return None;
        }
        let v = self.tick(now_ms);
        let mine = self.mine();
        let entries = restate
            .into_iter()
            .map(|k| {
                let s = Stamp {
                    version: v,
                    deleted: mine.stamp(&k).deleted,
                };
                mine.entries.insert(k.clone(), s);
                (k, s)
            })
            .collect();
        Some(OwnerUpdate::delta(self.me, entries))
    }

    /// `rmpeer`: forgets `peer`'s records and refuses any of its gossip up to the highest
    /// version we know of it. Returns the floor to gossip; `None` for us or an unknown peer.
    pub fn remove_peer(&mut self, peer: PeerName) -> Option<OwnerUpdate> {
        if peer == self.me {
            return None;
        }
        let st = self.owners.get_mut(&peer)?;
        let floor = st.top();
        st.entries.clear();
        st.floor = floor;
        Some(OwnerUpdate {
            owner: peer,
            floor,
            entries: vec![],
        })
    }

    /// `weave reset`: all our records go (a snapshot with none).
    pub fn reset(&mut self, now_ms: u64) -> OwnerUpdate {
        self.mine().entries.clear();
        self.snapshot(now_ms)
    }

    /// Our live records, for persisting.
    pub fn persisted(&self) -> Persisted {
        Persisted {
            version: PERSISTED_VERSION,
            peer: self.me.to_string(),
            clock: self.clock,
            records: self
                .owners
                .get(&self.me)
                .map(|m| m.live().map(|(k, _)| k.clone()).collect())
                .unwrap_or_default(),
        }
    }

    /// A store holding our persisted records, and the snapshot that re-announces them at
    /// fresh versions. A file of another peer or layout is refused.
    pub fn restore(me: PeerName, p: &Persisted, now_ms: u64) -> Result<(Store, OwnerUpdate)> {
        if p.version != PERSISTED_VERSION {
            return Err(Error::new(
                ErrorKind::Decode,
                format!(
                    "DNS records file has layout {}, want {PERSISTED_VERSION}",
                    p.version
                ),
            ));
        }
        if p.peer != me.to_string() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("DNS records file belongs to peer {}, we are {me}", p.peer),
            ));
        }
        let mut store = Store::new(me);
        store.clock = p.clock;
        let v = store.tick(now_ms);
        let mine = store.mine();
        for k in p.records.iter().filter(|k| k.is_valid()) {
            mine.entries.insert(k.clone(), Stamp::live(v));
        }
        let snap = store.snapshot(now_ms);
        Ok((store, snap))
    }

    /// Every live record of every owner, sorted by name.
    pub fn records(&self) -> Vec<Record> {
        let mut out: Vec<Record> = self
            .owners
            .iter()
            .flat_map(|(owner, st)| {
                st.live().map(move |(k, s)| Record {
                    name: k.name.clone(),
                    ip: k.ip,
                    container_id: k.container_id.clone(),
                    owner: *owner,
                    version: s.version,
                })
            })
            .collect();
        out.sort();
        out
    }

    /// The addresses `fqdn` resolves to (any owner), sorted and distinct.
    pub fn lookup(&self, fqdn: &str) -> Vec<Ipv4Addr> {
        let Ok(n) = name::normalize(fqdn) else {
            return vec![];
        };
        let set: BTreeSet<Ipv4Addr> = self
            .owners
            .values()
            .flat_map(|st| st.live())
            .filter(|(k, _)| k.name == n)
            .map(|(k, _)| k.ip)
            .collect();
        set.into_iter().collect()
    }

    /// The query path's index of the live records.
    pub fn zone(&self) -> Zone {
        let mut z = Zone::default();
        for st in self.owners.values() {
            for (k, _) in st.live() {
                let ips = z.by_name.entry(k.name.clone()).or_default();
                if !ips.contains(&k.ip) {
                    ips.push(k.ip);
                }
                let names = z.by_ip.entry(k.ip).or_default();
                if !names.contains(&k.name) {
                    names.push(k.name.clone());
                }
            }
        }
        z
    }

    /// Entries held for `owner` (live and tombstones) and its floor: for tests and status.
    pub fn owner_state(&self, owner: PeerName) -> Option<(u64, usize)> {
        self.owners
            .get(&owner)
            .map(|st| (st.floor, st.entries.len()))
    }
}

/// Live records indexed for answering queries: name → addresses, address → names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Zone {
    pub by_name: HashMap<String, Vec<Ipv4Addr>>,
    pub by_ip: HashMap<Ipv4Addr, Vec<String>>,
}

impl Zone {
    /// A zone from `(name, address)` pairs (benchmarks, tests); names are normalised.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, Ipv4Addr)>) -> Result<Zone> {
        let mut store = Store::new(PeerName::default());
        for (i, (n, ip)) in pairs.into_iter().enumerate() {
            store
                .mine()
                .entries
                .insert(RecordKey::new(n, &format!("c{i}"), ip)?, Stamp::live(1));
        }
        Ok(store.zone())
    }

    pub fn len(&self) -> usize {
        self.by_name.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
