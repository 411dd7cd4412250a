//! [`Tracked`]: a map that remembers, since it was last settled, each changed key's value
//! before its first change. The IPAM actor applies a batch of events to its state, then
//! writes what the batch changed and settles, or, if the write fails, rolls the batch back:
//! both cost what the batch changed, not what the state holds (no copy of the state per
//! event, no comparison of whole maps).

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::ops::Deref;

/// A `BTreeMap` with an undo record of the changes since [`Tracked::settle`].
#[derive(Clone, Debug)]
pub struct Tracked<K, V> {
    map: BTreeMap<K, V>,
    /// Each key changed since the last settle, with its value before (`None`: absent).
    before: BTreeMap<K, Option<V>>,
}

impl<K, V> Default for Tracked<K, V> {
    fn default() -> Self {
        Tracked {
            map: BTreeMap::new(),
            before: BTreeMap::new(),
        }
    }
}

/// Two maps are equal when their contents are; pending undo records do not count.
impl<K: PartialEq, V: PartialEq> PartialEq for Tracked<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<K: Eq, V: Eq> Eq for Tracked<K, V> {}

/// Reads go to the map itself; every change goes through a method that records it.
impl<K, V> Deref for Tracked<K, V> {
    type Target = BTreeMap<K, V>;
    fn deref(&self) -> &BTreeMap<K, V> {
        &self.map
    }
}

impl<K: Ord + Clone, V: Clone> From<BTreeMap<K, V>> for Tracked<K, V> {
    fn from(map: BTreeMap<K, V>) -> Self {
        Tracked {
            map,
            before: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone, V: Clone> Tracked<K, V> {
    fn note(&mut self, key: &K) {
        if !self.before.contains_key(key) {
            self.before.insert(key.clone(), self.map.get(key).cloned());
        }
    }

    /// Notes a key that is in the map (absent keys cannot change by removal or update).
    fn note_present<Q: Ord + ?Sized>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
    {
        if let Some((k, v)) = self.map.get_key_value(key) {
            if !self.before.contains_key(key) {
                let (k, v) = (k.clone(), v.clone());
                self.before.insert(k, Some(v));
            }
        }
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.note(&key);
        self.map.insert(key, value)
    }

    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.note_present(key);
        self.map.remove(key)
    }

    pub fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.note_present(key);
        self.map.get_mut(key)
    }

    /// The value of `key`, inserted as the default if absent.
    pub fn entry_or_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        self.note(&key);
        self.map.entry(key).or_default()
    }

    /// Lets `f` change every value and keeps those it returns true for. Visits the whole
    /// map: for rare, wide changes (the ring took ranges from us).
    pub fn update_all(&mut self, mut f: impl FnMut(&K, &mut V) -> bool)
    where
        V: PartialEq,
    {
        let keys: Vec<K> = self.map.keys().cloned().collect();
        for k in keys {
            let Some(v) = self.map.get_mut(&k) else {
                continue;
            };
            let old = v.clone();
            let keep = f(&k, v);
            if !keep || *v != old {
                if !self.before.contains_key(&k) {
                    self.before.insert(k.clone(), Some(old));
                }
                if !keep {
                    self.map.remove(&k);
                }
            }
        }
    }

    pub fn clear(&mut self) {
        for (k, v) in std::mem::take(&mut self.map) {
            self.before.entry(k).or_insert(Some(v));
        }
    }

    /// The keys changed since the last settle (some may be back at their old value).
    pub fn changed(&self) -> impl Iterator<Item = &K> {
        self.before.keys()
    }

    /// The keys whose value now differs from the one at the last settle: what must be
    /// written (the journal keeps no copy of the values to compare with).
    pub fn differing(&self) -> impl Iterator<Item = &K>
    where
        V: PartialEq,
    {
        self.before
            .iter()
            .filter(|(k, old)| old.as_ref() != self.map.get(*k))
            .map(|(k, _)| k)
    }

    /// The changes are kept: the next undo record starts here.
    pub fn settle(&mut self) {
        self.before.clear();
    }

    /// Takes back every change since the last settle.
    pub fn rollback(&mut self) {
        for (k, old) in std::mem::take(&mut self.before) {
            match old {
                Some(v) => self.map.insert(k, v),
                None => self.map.remove(&k),
            };
        }
    }

    /// The map itself.
    pub fn as_map(&self) -> &BTreeMap<K, V> {
        &self.map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_restores_what_was_there_at_the_last_settle() {
        let mut t: Tracked<&str, Vec<u32>> =
            BTreeMap::from([("a", vec![1]), ("b", vec![2])]).into();
        t.insert("c", vec![3]);
        t.settle();
        let before = t.as_map().clone();
        t.entry_or_default("a").push(9);
        t.remove(&"b");
        t.insert("d", vec![4]);
        t.get_mut(&"c").unwrap().clear();
        t.update_all(|_, v| !v.is_empty());
        t.entry_or_default("e");
        t.clear();
        let changed: Vec<&str> = t.changed().copied().collect();
        assert_eq!(changed, ["a", "b", "c", "d", "e"]);
        t.rollback();
        assert_eq!(*t.as_map(), before);
        assert_eq!(t.changed().count(), 0);
    }

    #[test]
    fn settled_changes_stay_and_untouched_keys_are_not_reported() {
        let mut t: Tracked<u32, ()> = Tracked::default();
        t.insert(1, ());
        t.insert(2, ());
        t.settle();
        t.remove(&7);
        t.update_all(|k, _| *k != 2);
        assert_eq!(t.changed().copied().collect::<Vec<_>>(), [2]);
        t.settle();
        t.rollback();
        assert_eq!(t.keys().copied().collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn differing_leaves_out_keys_back_at_their_settled_value() {
        let mut t: Tracked<u32, Vec<u32>> = BTreeMap::from([(1, vec![1]), (2, vec![2])]).into();
        t.get_mut(&1).unwrap().push(5);
        t.get_mut(&1).unwrap().pop();
        t.insert(2, vec![3]);
        t.insert(4, vec![4]);
        t.remove(&4);
        t.insert(5, vec![5]);
        assert_eq!(t.changed().copied().collect::<Vec<_>>(), [1, 2, 4, 5]);
        assert_eq!(t.differing().copied().collect::<Vec<_>>(), [2, 5]);
    }
}
