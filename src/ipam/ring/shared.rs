//! Entry and seed lists shared between rings and the gossip that carries them, copied on
//! the first write. With thousands of peers every peer holds, passes on and receives the
//! same ring many times: copying, comparing or validating n entries each time costs n^2 in
//! all, while sharing makes adopting or re-receiving an unchanged ring O(1). What follows
//! from a list alone (its validity, each owner's tokens, the seeds' digest) is worked out
//! once per list, not once per holder.

use super::entries::Entry;
use crate::peer::PeerName;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// A ring's entries, sorted by token. Clones share one list; a write through `DerefMut`
/// copies a shared list first and forgets what was derived from it.
#[derive(Clone)]
pub struct Entries(Arc<Shared>);

struct Shared {
    list: Vec<Entry>,
    /// Unique per list contents: a new list or a write gets a new one, so a holder can tell
    /// whether what it derived from the list still holds.
    id: u64,
    /// `Ring::check_invariants` of this list, with the universe it was checked against.
    checked: OnceLock<(u32, u32, Result<(), String>)>,
    /// Each owner's tokens, ascending.
    owners: OnceLock<HashMap<PeerName, Vec<u32>>>,
}

fn fresh_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Shared {
    fn new(list: Vec<Entry>) -> Self {
        Shared {
            list,
            id: fresh_id(),
            checked: OnceLock::new(),
            owners: OnceLock::new(),
        }
    }
}

impl Clone for Shared {
    /// A private copy about to be written: nothing derived carries over.
    fn clone(&self) -> Self {
        Shared::new(self.list.clone())
    }
}

impl Entries {
    pub fn new(list: Vec<Entry>) -> Self {
        Entries(Arc::new(Shared::new(list)))
    }

    /// Whether both are the same list (not merely equal): then equal without a walk.
    pub fn same(&self, other: &Entries) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Identifies the current contents: never the same for different contents.
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// `check` (a walk of the list for universe `[start, end)`), run once per list.
    pub(super) fn checked(
        &self,
        start: u32,
        end: u32,
        check: impl FnOnce() -> Result<(), String>,
    ) -> Result<(), String> {
        match self.0.checked.get() {
            Some((s, e, result)) if (*s, *e) == (start, end) => result.clone(),
            Some(_) => check(),
            None => self
                .0
                .checked
                .get_or_init(|| (start, end, check()))
                .2
                .clone(),
        }
    }

    /// The tokens `peer` owns, ascending: from an index of all owners built once per list
    /// when others share it (they will ask too), else by one walk.
    pub(super) fn tokens_of(&self, peer: PeerName) -> Vec<u32> {
        if Arc::strong_count(&self.0) == 1 && self.0.owners.get().is_none() {
            return self
                .0
                .list
                .iter()
                .filter(|e| e.peer == peer)
                .map(|e| e.token)
                .collect();
        }
        let owners = self.0.owners.get_or_init(|| {
            let mut owners: HashMap<PeerName, Vec<u32>> = HashMap::new();
            for e in &self.0.list {
                owners.entry(e.peer).or_default().push(e.token);
            }
            owners
        });
        owners.get(&peer).cloned().unwrap_or_default()
    }
}

impl Default for Entries {
    fn default() -> Self {
        Entries::new(Vec::new())
    }
}

impl Deref for Entries {
    type Target = Vec<Entry>;
    fn deref(&self) -> &Vec<Entry> {
        &self.0.list
    }
}

impl DerefMut for Entries {
    fn deref_mut(&mut self) -> &mut Vec<Entry> {
        let shared = Arc::make_mut(&mut self.0);
        shared.id = fresh_id();
        shared.checked = OnceLock::new();
        shared.owners = OnceLock::new();
        &mut shared.list
    }
}

impl From<Vec<Entry>> for Entries {
    fn from(list: Vec<Entry>) -> Self {
        Entries::new(list)
    }
}

impl PartialEq for Entries {
    fn eq(&self, other: &Entries) -> bool {
        self.same(other) || self.0.list == other.0.list
    }
}

impl Eq for Entries {}

impl fmt::Debug for Entries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.list.fmt(f)
    }
}

/// On the wire and on disk: the plain list, as before sharing.
impl Serialize for Entries {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.list.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<Entry>::deserialize(d).map(Entries::new)
    }
}

/// The peers a ring was first split among (consensus seeds every elector, so as long as the
/// ring), shared, with their digest worked out once.
#[derive(Clone)]
pub struct Seeds(Arc<(Vec<PeerName>, u64)>);

impl Seeds {
    pub fn new(list: Vec<PeerName>) -> Self {
        let digest = super::delta::seeds_digest(&list);
        Seeds(Arc::new((list, digest)))
    }

    /// [`super::delta::seeds_digest`] of the list.
    pub fn digest(&self) -> u64 {
        self.0 .1
    }
}

impl Default for Seeds {
    fn default() -> Self {
        Seeds::new(Vec::new())
    }
}

impl Deref for Seeds {
    type Target = Vec<PeerName>;
    fn deref(&self) -> &Vec<PeerName> {
        &self.0 .0
    }
}

impl PartialEq for Seeds {
    fn eq(&self, other: &Seeds) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.digest() == other.digest() && self.0 .0 == other.0 .0)
    }
}

impl Eq for Seeds {}

impl fmt::Debug for Seeds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0 .0.fmt(f)
    }
}

impl Serialize for Seeds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0 .0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Seeds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<PeerName>::deserialize(d).map(Seeds::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::ring::ring_tests::{peer, ring_of, universe};
    use crate::ipam::ring::Ring;

    #[test]
    fn a_write_copies_a_shared_list_and_forgets_what_was_derived() {
        let a = Entries::new(ring_of(1, &[1, 2, 3]).entries().to_vec());
        let mut b = a.clone();
        assert!(a.same(&b));
        let (start, end) = (universe().start, universe().end);
        assert_eq!(a.checked(start, end, || Ok(())), Ok(()));
        assert_eq!(a.tokens_of(peer(2)).len(), 1);
        b[1].free = u32::MAX;
        assert!(!a.same(&b) && a != b && a.id() != b.id());
        assert!(a[1].free < u32::MAX, "the other holder's list is untouched");
        let bad = b.checked(start, end, || Err("walked again".into()));
        assert_eq!(bad, Err("walked again".into()));
        // Another universe is not answered from the cache.
        assert_eq!(
            a.checked(start, end - 1, || Err("other".into())),
            Err("other".into())
        );
    }

    #[test]
    fn a_first_ring_is_adopted_shared_and_hearing_it_again_changes_nothing() {
        let theirs = ring_of(1, &[1, 2, 3]);
        let mut mine = Ring::new(universe(), peer(2));
        assert_eq!(mine.merge(&theirs), Ok(true));
        assert!(mine.shared_entries().same(theirs.shared_entries()));
        assert!(mine.agrees_with(&theirs));
        assert_eq!(mine.merge(&theirs), Ok(false));
        assert_eq!(mine.own_ranges(), mine.owned_ranges(peer(2)));
        assert_eq!(mine.own_ranges().len(), 1);
        // An equal list that is not shared still agrees.
        let copy = ring_of(3, &[1, 2, 3]);
        assert!(!copy.shared_entries().same(theirs.shared_entries()));
        assert!(copy.agrees_with(&theirs));
    }

    #[test]
    fn lists_encode_as_plain_lists() {
        let r = ring_of(1, &[1, 2]);
        let plain = serde_json::to_string(&r.entries().to_vec()).unwrap();
        assert_eq!(serde_json::to_string(r.shared_entries()).unwrap(), plain);
        let back: Entries = serde_json::from_str(&plain).unwrap();
        assert_eq!(&back, r.shared_entries());
        let seeds = serde_json::to_string(r.shared_seeds()).unwrap();
        assert_eq!(
            seeds,
            serde_json::to_string(&vec![peer(1), peer(2)]).unwrap()
        );
        let back: Seeds = serde_json::from_str(&seeds).unwrap();
        assert_eq!(
            back.digest(),
            super::super::delta::seeds_digest(&[peer(1), peer(2)])
        );
    }
}
