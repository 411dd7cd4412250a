use super::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

fn peer(n: u64) -> PeerName {
    PeerName::from_u64(0x0200_0000_0000 + n).unwrap()
}

fn key(name: &str, cid: &str, ip: &str) -> RecordKey {
    RecordKey::new(name, cid, ip.parse().unwrap()).unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// (name, ip, owner) of every live record: what a peer answers.
fn view(s: &Store) -> Vec<(String, Ipv4Addr, PeerName)> {
    s.records()
        .into_iter()
        .map(|r| (r.name, r.ip, r.owner))
        .collect()
}

/// Peers that gossip to each other when `linked`; a tiny stand-in for the mesh's broadcast
/// (every message reaches every peer on the sender's side of a partition).
struct Net {
    stores: Vec<Store>,
    side: Vec<u8>,
    now: u64,
}

impl Net {
    fn new(n: usize) -> Net {
        Net {
            stores: (1..=n as u64).map(|i| Store::new(peer(i))).collect(),
            side: vec![0; n],
            now: 1_000,
        }
    }

    fn now(&mut self) -> u64 {
        self.now += 1;
        self.now
    }

    /// Delivers `u` from peer `from` to every peer on its side, and their corrections on.
    fn send(&mut self, from: usize, u: OwnerUpdate) {
        let mut queue = vec![(from, u)];
        while let Some((from, u)) = queue.pop() {
            for i in 0..self.stores.len() {
                if i != from && self.side[i] == self.side[from] {
                    let now = self.now();
                    let m = self.stores[i].merge(&u, now);
                    assert_eq!(m.rejected, 0);
                    if let Some(c) = m.correction {
                        queue.push((i, c));
                    }
                }
            }
        }
    }

    fn add(&mut self, i: usize, name: &str, cid: &str, ip: &str) {
        let now = self.now();
        let u = self.stores[i]
            .add(key(name, cid, ip), now)
            .unwrap()
            .unwrap();
        self.send(i, u);
    }

    fn remove(&mut self, i: usize, cid: &str) {
        let now = self.now();
        let u = self.stores[i].remove(cid, None, None, now).unwrap();
        self.send(i, u);
    }

    /// Every peer broadcasts its snapshot (the periodic gossip).
    fn gossip_round(&mut self) {
        for i in 0..self.stores.len() {
            let now = self.now();
            let u = self.stores[i].snapshot(now);
            self.send(i, u);
        }
    }

    fn views(&self) -> Vec<Vec<(String, Ipv4Addr, PeerName)>> {
        self.stores.iter().map(view).collect()
    }

    fn assert_all_see(&self, want: &[(&str, &str, u64)]) {
        let mut want: Vec<(String, Ipv4Addr, PeerName)> = want
            .iter()
            .map(|(n, a, o)| (name::normalize(n).unwrap(), ip(a), peer(*o)))
            .collect();
        want.sort();
        for (i, v) in self.views().into_iter().enumerate() {
            assert_eq!(v, want, "peer {}", i + 1);
        }
    }
}

#[test]
fn add_lookup_remove() {
    let mut s = Store::new(peer(1));
    let u = s.add(key("Web.weave.local", "c1", "10.32.0.2"), 5).unwrap();
    let u = u.expect("a new record is gossiped");
    assert_eq!(u.floor, 0);
    assert_eq!(u.entries.len(), 1);
    assert_eq!(u.entries[0].0.name, "web.weave.local.");
    // The same record again changes nothing.
    assert_eq!(
        s.add(key("web.weave.local.", "c1", "10.32.0.2"), 6)
            .unwrap(),
        None
    );
    s.add(key("web.weave.local", "c2", "10.32.0.3"), 7).unwrap();
    assert_eq!(
        s.lookup("WEB.weave.local"),
        [ip("10.32.0.2"), ip("10.32.0.3")]
    );
    let z = s.zone();
    assert_eq!(z.by_ip[&ip("10.32.0.3")], ["web.weave.local."]);
    assert_eq!(z.len(), 2);

    assert_eq!(s.remove("nope", None, None, 8), None);
    assert_eq!(s.remove("c1", Some(ip("10.9.9.9")), None, 8), None);
    let t = s.remove("c1", Some(ip("10.32.0.2")), None, 9).unwrap();
    assert!(t.entries.iter().all(|(_, st)| st.deleted));
    assert_eq!(s.lookup("web.weave.local"), [ip("10.32.0.3")]);
    // Removing by name only touches that name.
    s.add(key("db.weave.local", "c2", "10.32.0.3"), 10).unwrap();
    s.remove("c2", None, Some("DB.weave.local"), 11).unwrap();
    assert!(s.lookup("db.weave.local").is_empty());
    assert_eq!(s.lookup("web.weave.local"), [ip("10.32.0.3")]);
    // "*" matches every container.
    s.remove("*", None, None, 12).unwrap();
    assert!(s.records().is_empty());
}

#[test]
fn versions_grow_even_when_time_goes_back() {
    let mut s = Store::new(peer(1));
    let a = s.add(key("a.x", "c", "10.0.0.1"), 1_000).unwrap().unwrap();
    let b = s.add(key("b.x", "c", "10.0.0.1"), 10).unwrap().unwrap();
    assert!(b.entries[0].1.version > a.entries[0].1.version);
}

#[test]
fn own_records_are_capped() {
    let mut s = Store::new(peer(1));
    for i in 0..MAX_OWN_RECORDS {
        let n = format!("n{i}.x");
        s.add(key(&n, "c", "10.0.0.1"), 1).unwrap();
    }
    let e = s.add(key("one-more.x", "c", "10.0.0.1"), 1).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("add one-more.x.: this peer already has {MAX_OWN_RECORDS} names")
    );
}

#[test]
fn tombstone_wins_a_tie_and_older_facts_lose() {
    let k = key("web.x", "c1", "10.0.0.1");
    let mut o = Store::new(peer(9));
    let live = OwnerUpdate::delta(peer(1), vec![(k.clone(), Stamp::live(5))]);
    let dead = OwnerUpdate::delta(peer(1), vec![(k.clone(), Stamp::tombstone(5))]);
    assert!(o.merge(&live, 0).changed);
    assert!(o.merge(&dead, 0).changed);
    assert!(
        !o.merge(&live, 0).changed,
        "a live stamp never beats an equal tombstone"
    );
    assert!(o.records().is_empty());
    // The other order ends the same.
    let mut p = Store::new(peer(9));
    p.merge(&dead, 0);
    assert!(!p.merge(&live, 0).changed);
    assert!(p.records().is_empty());
    // An older live fact after a newer tombstone changes nothing either.
    let older = OwnerUpdate::delta(peer(1), vec![(k.clone(), Stamp::live(4))]);
    assert!(!o.merge(&older, 0).changed);
    // A newer live fact (re-registration) wins.
    let newer = OwnerUpdate::delta(peer(1), vec![(k, Stamp::live(6))]);
    assert!(o.merge(&newer, 0).changed);
    assert_eq!(o.records().len(), 1);
}

/// A history from three owners (adds, removals, snapshots) plus a third party's rmpeer,
/// applied by observers in random orders, with duplicates: every observer ends with the
/// same records, and applying everything again changes nothing.
#[test]
fn merge_is_commutative_associative_and_idempotent() {
    let mut rng = StdRng::seed_from_u64(14);
    for round in 0..40 {
        let mut owners: Vec<Store> = (1..=3).map(|i| Store::new(peer(i))).collect();
        let mut remover = Store::new(peer(7));
        let mut updates = Vec::new();
        let mut now = 100;
        for _ in 0..60 {
            now += rng.random_range(0..3);
            let o = rng.random_range(0..3);
            let s = &mut owners[o];
            let n = format!("n{}.weave.local", rng.random_range(0..6));
            let cid = format!("c{}", rng.random_range(0..3));
            let a = format!("10.0.{o}.{}", rng.random_range(1..4));
            let u = match rng.random_range(0..10) {
                0..=4 => s.add(key(&n, &cid, &a), now).unwrap(),
                5..=7 => s.remove(&cid, None, None, now),
                _ => Some(s.snapshot(now)),
            };
            if let Some(u) = u {
                // The remover sees only some of the gossip (it may be behind the others).
                if rng.random_range(0..10) < 6 {
                    remover.merge(&u, now);
                }
                updates.push(u);
            }
        }
        // rmpeer of owner 3 by that peer; then owner 3 answers.
        if round % 2 == 0 {
            let floor = remover.remove_peer(peer(3)).unwrap();
            let c = owners[2].merge(&floor, now + 1).correction;
            updates.push(floor);
            updates.extend(c);
        }
        let mut results = Vec::new();
        for _ in 0..6 {
            let mut order = updates.clone();
            for _ in 0..10 {
                let dup = order[rng.random_range(0..order.len())].clone();
                order.push(dup);
            }
            order.shuffle(&mut rng);
            let mut obs = Store::new(peer(8));
            for u in &order {
                obs.merge(u, 0);
            }
            let before = view(&obs);
            for u in &updates {
                assert!(!obs.merge(u, 0).changed, "idempotent");
            }
            assert_eq!(view(&obs), before);
            results.push(before);
        }
        for r in &results[1..] {
            assert_eq!(r, &results[0], "round {round}: order changed the result");
        }
        // In order, the observer agrees with the owners themselves (ground truth), except
        // for records an rmpeer removed and the owner restated.
        let mut obs = Store::new(peer(8));
        for u in &updates {
            obs.merge(u, 0);
        }
        let mut truth: Vec<_> = owners.iter().flat_map(view).collect();
        truth.sort();
        assert_eq!(view(&obs), truth, "round {round}");
    }
}

#[test]
fn partition_register_on_both_sides_then_heal() {
    let mut net = Net::new(3);
    net.add(0, "web.weave.local", "w1", "10.32.0.2");
    net.add(2, "db.weave.local", "d1", "10.40.0.2");
    net.add(2, "old.weave.local", "o1", "10.40.0.9");
    net.assert_all_see(&[
        ("db.weave.local", "10.40.0.2", 3),
        ("old.weave.local", "10.40.0.9", 3),
        ("web.weave.local", "10.32.0.2", 1),
    ]);
    // Partition {1} | {2, 3}: both sides register, side 2 also removes a name.
    net.side = vec![0, 1, 1];
    net.add(0, "web.weave.local", "w2", "10.32.0.3");
    net.add(1, "api.weave.local", "a1", "10.48.0.2");
    net.remove(2, "o1");
    assert_eq!(net.stores[0].lookup("old.weave.local"), [ip("10.40.0.9")]);
    assert_eq!(net.stores[1].lookup("web.weave.local"), [ip("10.32.0.2")]);
    // Heal: one round of snapshots, and every peer sees everything, no stale record.
    net.side = vec![0, 0, 0];
    net.gossip_round();
    net.assert_all_see(&[
        ("api.weave.local", "10.48.0.2", 2),
        ("db.weave.local", "10.40.0.2", 3),
        ("web.weave.local", "10.32.0.2", 1),
        ("web.weave.local", "10.32.0.3", 1),
    ]);
    // The snapshots also let every peer forget the owners' tombstones.
    for s in &net.stores {
        assert_eq!(s.owner_state(peer(3)).unwrap().1, 1, "only db is held");
    }
}

/// A peer that missed a removal while partitioned, and then missed the tombstone too
/// (lost message), still drops the record at the owner's next snapshot.
#[test]
fn no_stale_record_survives_a_missed_tombstone() {
    let mut net = Net::new(3);
    net.add(0, "web.weave.local", "w1", "10.32.0.2");
    net.side = vec![0, 0, 1];
    net.remove(0, "w1");
    assert_eq!(net.stores[2].lookup("web.weave.local"), [ip("10.32.0.2")]);
    net.side = vec![0, 0, 0];
    // Peer 3 gossips its stale view first: nobody takes it, the owner restates.
    let stale = net.stores[2].relay(peer(1)).unwrap();
    net.send(2, stale);
    net.assert_all_see(&[]);
    // And in the plain case the owner's snapshot alone is enough.
    let mut net = Net::new(2);
    net.add(0, "a.weave.local", "c", "10.0.0.1");
    net.side = vec![0, 1];
    net.remove(0, "c");
    net.side = vec![0, 0];
    let now = net.now();
    let snap = net.stores[0].snapshot(now);
    net.send(0, snap);
    net.assert_all_see(&[]);
}

#[test]
fn rmpeer_removes_a_dead_peers_records_for_good() {
    let mut net = Net::new(3);
    net.add(2, "db.weave.local", "d1", "10.40.0.2");
    net.add(0, "web.weave.local", "w1", "10.32.0.2");
    // Peer 3 dies; peer 1 runs rmpeer; peer 2 learns it by gossip.
    let late = net.stores[2].relay(peer(3));
    assert!(late.is_none(), "we never relay ourselves");
    let late = net.stores[0].relay(peer(3)).unwrap();
    net.side = vec![0, 0, 9];
    let floor = net.stores[0].remove_peer(peer(3)).unwrap();
    assert!(floor.entries.is_empty());
    net.send(0, floor);
    assert!(net.stores[0].lookup("db.weave.local").is_empty());
    assert!(net.stores[1].lookup("db.weave.local").is_empty());
    // Old gossip of the dead peer, delivered late, is refused.
    let m = net.stores[1].merge(&late, 0);
    assert!(!m.changed);
    assert!(net.stores[1].lookup("db.weave.local").is_empty());
    assert_eq!(net.stores[0].remove_peer(peer(1)), None, "not ourselves");
    assert_eq!(net.stores[0].remove_peer(peer(5)), None, "unknown peer");
}

#[test]
fn rmpeer_of_a_live_peer_is_answered_by_a_restatement() {
    let mut net = Net::new(3);
    net.add(2, "db.weave.local", "d1", "10.40.0.2");
    let floor = net.stores[0].remove_peer(peer(3)).unwrap();
    net.send(0, floor);
    net.assert_all_see(&[("db.weave.local", "10.40.0.2", 3)]);
}

#[test]
fn reset_removes_all_our_records_everywhere() {
    let mut net = Net::new(2);
    net.add(0, "a.weave.local", "c1", "10.0.0.1");
    net.add(0, "b.weave.local", "c2", "10.0.0.2");
    net.add(1, "c.weave.local", "c3", "10.0.0.3");
    let now = net.now();
    let u = net.stores[0].reset(now);
    net.send(0, u);
    net.assert_all_see(&[("c.weave.local", "10.0.0.3", 2)]);
    assert!(net.stores[0].persisted().records.is_empty());
}

#[test]
fn restart_reannounces_persisted_records() {
    let mut net = Net::new(2);
    net.add(0, "a.weave.local", "c1", "10.0.0.1");
    net.add(0, "b.weave.local", "c2", "10.0.0.2");
    // Peer 2 misses the removal of b, and peer 1 stops with only a persisted.
    net.side = vec![0, 1];
    net.remove(0, "c2");
    let saved = net.stores[0].persisted();
    assert_eq!(saved.records, [key("a.weave.local", "c1", "10.0.0.1")]);
    let json = serde_json::to_string(&saved).unwrap();
    let back: Persisted = serde_json::from_str(&json).unwrap();
    // Meanwhile peer 2 rmpeer'd it (it looked dead).
    let floor = net.stores[1].remove_peer(peer(1)).unwrap();
    let now = net.now();
    let (restored, announce) = Store::restore(peer(1), &back, now + 1_000).unwrap();
    net.stores[0] = restored;
    net.side = vec![0, 0];
    net.send(1, floor);
    net.send(0, announce);
    net.assert_all_see(&[("a.weave.local", "10.0.0.1", 1)]);

    let e = Store::restore(peer(2), &back, 0).unwrap_err();
    assert!(
        e.to_string().contains("belongs to peer 02:00:00:00:00:01"),
        "{e}"
    );
    let mut other = back.clone();
    other.version = 2;
    assert!(Store::restore(peer(1), &other, 0).is_err());
}

#[test]
fn a_peer_that_lost_its_state_kills_its_old_records() {
    let mut net = Net::new(2);
    net.add(0, "a.weave.local", "c1", "10.0.0.1");
    // Peer 1's data dir is wiped; it restarts empty (same name) and clock (time) moved on.
    net.stores[0] = Store::new(peer(1));
    net.now += 10_000;
    // Peer 2 still has the old record and relays it: peer 1 answers with a tombstone.
    let stale = net.stores[1].relay(peer(1)).unwrap();
    net.send(1, stale);
    net.assert_all_see(&[]);
}

#[test]
fn malformed_and_excess_gossip_is_refused() {
    let mut o = Store::new(peer(9));
    let bad = OwnerUpdate::delta(
        peer(1),
        vec![
            (
                RecordKey {
                    name: "UPPER.x.".into(),
                    container_id: "c".into(),
                    ip: ip("10.0.0.1"),
                },
                Stamp::live(3),
            ),
            (
                RecordKey {
                    name: "no-dot".into(),
                    container_id: "c".into(),
                    ip: ip("10.0.0.1"),
                },
                Stamp::live(3),
            ),
            (
                RecordKey {
                    name: "ok.x.".into(),
                    container_id: "a b".into(),
                    ip: ip("10.0.0.1"),
                },
                Stamp::live(3),
            ),
            (key("ok.x", "c", "10.0.0.1"), Stamp::live(0)),
        ],
    );
    let m = o.merge(&bad, 0);
    assert_eq!(m.rejected, 4);
    assert!(!m.changed);
    assert_eq!(
        o.owner_state(peer(1)),
        None,
        "nothing kept for a bogus owner"
    );

    let many: Vec<(RecordKey, Stamp)> = (0..MAX_ENTRIES_PER_OWNER + 10)
        .map(|i| (key(&format!("n{i}.x"), "c", "10.0.0.1"), Stamp::live(1)))
        .collect();
    let m = o.merge(&OwnerUpdate::delta(peer(1), many), 0);
    assert_eq!(m.rejected, 10);
    assert_eq!(o.records().len(), MAX_ENTRIES_PER_OWNER);
}

#[test]
fn several_addresses_under_one_name_across_owners() {
    let mut net = Net::new(3);
    net.add(0, "web.weave.local", "w1", "10.32.0.2");
    net.add(1, "web.weave.local", "w2", "10.40.0.2");
    for s in &net.stores {
        assert_eq!(
            s.lookup("web.weave.local"),
            [ip("10.32.0.2"), ip("10.40.0.2")]
        );
        assert_eq!(s.zone().by_name["web.weave.local."].len(), 2);
    }
    net.remove(0, "w1");
    for s in &net.stores {
        assert_eq!(s.lookup("web.weave.local"), [ip("10.40.0.2")]);
    }
}

#[test]
fn zone_from_pairs_indexes_both_ways() {
    let z = Zone::from_pairs([
        ("a.weave.local", ip("10.0.0.1")),
        ("A.weave.local.", ip("10.0.0.2")),
        ("b.weave.local", ip("10.0.0.1")),
    ])
    .unwrap();
    let mut a = z.by_name["a.weave.local."].clone();
    a.sort();
    assert_eq!(a, [ip("10.0.0.1"), ip("10.0.0.2")]);
    let mut names = z.by_ip[&ip("10.0.0.1")].clone();
    names.sort();
    assert_eq!(names, ["a.weave.local.", "b.weave.local."]);
    assert!(Zone::from_pairs([("bad name", ip("10.0.0.1"))]).is_err());
}

/// rmpeer by a peer that saw less of the dead owner than we did (our floor for it is
/// higher): its records still go.
#[test]
fn rmpeer_from_a_peer_behind_us_still_removes() {
    let mut owner = Store::new(peer(2));
    let u1 = owner
        .add(key("svc.weave.local", "c", "10.0.0.1"), 100)
        .unwrap()
        .unwrap();
    let s1 = owner.snapshot(200);
    let s2 = owner.snapshot(300);
    let mut behind = Store::new(peer(1));
    let mut ahead = Store::new(peer(3));
    for u in [&u1, &s1] {
        behind.merge(u, 0);
        ahead.merge(u, 0);
    }
    ahead.merge(&s2, 0);
    assert_eq!(ahead.owner_state(peer(2)).unwrap().0, s2.floor);
    let floor = behind.remove_peer(peer(2)).unwrap();
    assert!(floor.floor < s2.floor);
    assert!(ahead.merge(&floor, 0).changed);
    assert!(ahead.records().is_empty(), "{:?}", ahead.records());
    assert_eq!(
        ahead.owner_state(peer(2)).unwrap().0,
        s2.floor,
        "the higher floor stays"
    );
}
