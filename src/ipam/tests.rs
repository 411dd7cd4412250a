use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn default_ipam() -> Ipam {
    Ipam::new(net("10.32.0.0/12"), net("10.32.0.0/12")).unwrap()
}

#[test]
fn first_allocation_skips_network_address() {
    let mut ipam = default_ipam();
    let (c, new) = ipam.allocate("c1", net("10.32.0.0/12")).unwrap();
    assert_eq!(c.to_string(), "10.32.0.1/12");
    assert!(new);
    let (c2, _) = ipam.allocate("c2", net("10.32.0.0/12")).unwrap();
    assert_eq!(c2.to_string(), "10.32.0.2/12");
}

#[test]
fn allocate_is_idempotent_per_id_and_subnet() {
    let mut ipam = default_ipam();
    let (a, _) = ipam.allocate("c1", net("10.32.0.0/12")).unwrap();
    let (b, new) = ipam.allocate("c1", net("10.32.0.0/12")).unwrap();
    assert_eq!(a, b);
    assert!(!new);
    // Another subnet gives the same id a second address.
    let (c, new) = ipam.allocate("c1", net("10.40.0.0/24")).unwrap();
    assert_eq!(c.to_string(), "10.40.0.1/24");
    assert!(new);
    assert_eq!(ipam.owned()["c1"].len(), 2);
    assert_eq!(ipam.lookup("c1", net("10.40.0.0/24")), vec![c]);
    assert_eq!(ipam.lookup("c1", net("10.32.0.0/12")).len(), 2);
    assert!(ipam.lookup("nobody", net("10.32.0.0/12")).is_empty());
}

#[test]
fn small_subnet_excludes_network_and_broadcast_then_runs_out() {
    let mut ipam = default_ipam();
    let s = net("10.33.0.0/30");
    assert_eq!(ipam.allocate("a", s).unwrap().0.to_string(), "10.33.0.1/30");
    assert_eq!(ipam.allocate("b", s).unwrap().0.to_string(), "10.33.0.2/30");
    let e = ipam.allocate("c", s).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TryAgainLater);
    assert_eq!(e.to_string(), "no free addresses in subnet 10.33.0.0/30");
    ipam.free("a").unwrap();
    assert_eq!(ipam.allocate("c", s).unwrap().0.to_string(), "10.33.0.1/30");
}

#[test]
fn subnet_validation_messages() {
    let u = net("10.32.0.0/12");
    assert_eq!(
        validate_subnet(net("10.32.0.1/12"), u)
            .unwrap_err()
            .to_string(),
        "invalid subnet - bits after network prefix are not all zero: 10.32.0.1/12"
    );
    assert_eq!(
        validate_subnet(net("10.32.0.0/31"), u)
            .unwrap_err()
            .to_string(),
        "invalid subnet - smaller than minimum size 4: 10.32.0.0/31"
    );
    assert_eq!(
        validate_subnet(net("192.168.0.0/24"), u)
            .unwrap_err()
            .to_string(),
        "range 192.168.0.0/24 out of bounds: 10.32.0.0/12"
    );
    validate_subnet(net("10.32.0.0/30"), u).unwrap();
    validate_subnet(net("10.0.0.0/8"), u).unwrap();
    let mut ipam = default_ipam();
    assert!(ipam.allocate("x", net("192.168.0.0/24")).is_err());
    assert_eq!(ipam.active(), 0);
}

#[test]
fn id_validation() {
    for ok in ["abc", "weave:expose", "_", &"a".repeat(255)] {
        validate_id(ok).unwrap();
    }
    for badid in ["", "a/b", "a b", "tab\t", "é", &"a".repeat(256)] {
        let e = validate_id(badid).unwrap_err();
        assert!(e.to_string().starts_with("invalid container id"), "{e}");
    }
}

#[test]
fn claim_conflicts_and_idempotence() {
    let mut ipam = default_ipam();
    assert!(ipam.claim("c1", net("10.32.0.5/12")).unwrap());
    assert!(!ipam.claim("c1", net("10.32.0.5/12")).unwrap());
    assert_eq!(
        ipam.claim("c2", net("10.32.0.5/12"))
            .unwrap_err()
            .to_string(),
        "address 10.32.0.5 is already owned by c1"
    );
    // Allocation skips the claimed address.
    for i in 1..=5 {
        let (c, _) = ipam
            .allocate(&format!("x{i}"), net("10.32.0.0/12"))
            .unwrap();
        assert_ne!(c.addr(), "10.32.0.5".parse::<Ipv4Addr>().unwrap());
    }
    assert_eq!(
        ipam.lookup("x5", net("10.32.0.0/12"))[0].to_string(),
        "10.32.0.6/12"
    );
}

#[test]
fn underscore_claims_under_ip_and_reclaims_owned() {
    let mut ipam = default_ipam();
    assert!(ipam.claim("_", net("10.32.1.1/12")).unwrap());
    assert_eq!(
        ipam.owner_of("10.32.1.1".parse().unwrap()),
        Some("10.32.1.1")
    );
    assert_eq!(ipam.owned()["10.32.1.1"], vec![net("10.32.1.1/12")]);
    ipam.claim("c1", net("10.32.1.2/12")).unwrap();
    // `_` may re-claim an address a container owns: no change (Weave #2548).
    assert!(!ipam.claim("_", net("10.32.1.2/12")).unwrap());
    assert_eq!(ipam.owner_of("10.32.1.2".parse().unwrap()), Some("c1"));
    ipam.free_one("_", "10.32.1.1".parse().unwrap()).unwrap();
    assert_eq!(ipam.active(), 1);
}

#[test]
fn claim_outside_universe_is_recorded_but_never_freed_into_space() {
    let mut ipam = default_ipam();
    ipam.claim("c", net("192.168.1.1/24")).unwrap();
    assert_eq!(ipam.free_count(), size_of(net("10.32.0.0/12")));
    ipam.free("c").unwrap();
    assert_eq!(ipam.free_count(), size_of(net("10.32.0.0/12")));
}

#[test]
fn free_messages() {
    let mut ipam = default_ipam();
    assert_eq!(
        ipam.free("nope").unwrap_err().to_string(),
        "Delete: no addresses for nope"
    );
    ipam.allocate("c", net("10.32.0.0/12")).unwrap();
    assert_eq!(
        ipam.free_one("c", "10.32.0.9".parse().unwrap())
            .unwrap_err()
            .to_string(),
        "Free: address 10.32.0.9 not found for c"
    );
    assert_eq!(
        ipam.free_one("other", "10.32.0.1".parse().unwrap())
            .unwrap_err()
            .to_string(),
        "Free: address 10.32.0.1 not found for other"
    );
    assert_eq!(
        ipam.free_one("c", "10.32.0.1".parse().unwrap()).unwrap(),
        net("10.32.0.1/12")
    );
    assert!(ipam.owned().is_empty());
    assert_eq!(
        ipam.free("c").unwrap_err().to_string(),
        "Delete: no addresses for c"
    );
}

#[test]
fn free_returns_count_and_restore_undoes_it() {
    let mut ipam = default_ipam();
    ipam.allocate("c", net("10.32.0.0/12")).unwrap();
    ipam.allocate("c", net("10.33.0.0/16")).unwrap();
    let freed = ipam.free("c").unwrap();
    assert_eq!(freed.len(), 2);
    assert_eq!(ipam.active(), 0);
    ipam.restore("c", &freed).unwrap();
    assert_eq!(ipam.owned()["c"], freed);
    assert_eq!(
        ipam.allocate("d", net("10.32.0.0/12"))
            .unwrap()
            .0
            .to_string(),
        "10.32.0.2/12"
    );
}

#[test]
fn freed_address_is_reused_lowest_first() {
    let mut ipam = default_ipam();
    for i in 0..10 {
        ipam.allocate(&format!("c{i}"), net("10.32.0.0/12"))
            .unwrap();
    }
    ipam.free("c7").unwrap();
    ipam.free("c3").unwrap();
    assert_eq!(
        ipam.allocate("n1", net("10.32.0.0/12"))
            .unwrap()
            .0
            .to_string(),
        "10.32.0.4/12"
    );
    assert_eq!(
        ipam.allocate("n2", net("10.32.0.0/12"))
            .unwrap()
            .0
            .to_string(),
        "10.32.0.8/12"
    );
    assert_eq!(
        ipam.allocate("n3", net("10.32.0.0/12"))
            .unwrap()
            .0
            .to_string(),
        "10.32.0.11/12"
    );
}

#[test]
fn from_owned_round_trips_and_rejects_duplicates() {
    let mut ipam = default_ipam();
    for i in 0..50 {
        ipam.allocate(&format!("c{i}"), net("10.32.0.0/12"))
            .unwrap();
    }
    ipam.claim("_", net("10.32.5.5/12")).unwrap();
    let copy = Ipam::from_owned(ipam.universe(), ipam.default_subnet(), ipam.owned()).unwrap();
    assert_eq!(copy.owned(), ipam.owned());
    assert_eq!(copy.free_count(), ipam.free_count());
    let mut dup = BTreeMap::new();
    dup.insert("a".to_string(), vec![net("10.32.0.1/12")]);
    dup.insert("b".to_string(), vec![net("10.32.0.1/12")]);
    assert!(Ipam::from_owned(ipam.universe(), ipam.default_subnet(), &dup).is_err());
}

/// Reference model: the lowest address of `[lo, hi]` not in `used`.
fn model_lowest(used: &HashSet<u32>, lo: u32, hi: u32) -> Option<u32> {
    (lo..=hi).find(|a| !used.contains(a))
}

#[test]
fn random_operations_match_a_simple_model() {
    for seed in 0..8u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        // A small universe so it fills up and frees get reused.
        let universe = net("10.32.0.0/24");
        let subnets = [
            net("10.32.0.0/24"),
            net("10.32.0.0/26"),
            net("10.32.0.64/28"),
        ];
        let mut ipam = Ipam::new(universe, universe).unwrap();
        let mut used: HashMap<u32, String> = HashMap::new();
        for step in 0..3000 {
            let id = format!("c{}", rng.random_range(0..80));
            match rng.random_range(0..10) {
                0..=5 => {
                    let s = subnets[rng.random_range(0..subnets.len())];
                    let existing = ipam.lookup(&id, s);
                    let lo = u32::from(s.network()) + 1;
                    let hi = u32::from(s.broadcast()) - 1;
                    let set: HashSet<u32> = used.keys().copied().collect();
                    match ipam.allocate(&id, s) {
                        Ok((c, new)) => {
                            let a = u32::from(c.addr());
                            if let Some(e) = existing.first() {
                                assert_eq!(e.addr(), c.addr(), "seed {seed} step {step}");
                                assert!(!new);
                            } else {
                                assert!(new);
                                assert_eq!(
                                    Some(a),
                                    model_lowest(&set, lo, hi),
                                    "seed {seed} step {step}"
                                );
                                assert!(
                                    used.insert(a, id.clone()).is_none(),
                                    "address given twice"
                                );
                            }
                        }
                        Err(_) => {
                            assert!(existing.is_empty());
                            assert_eq!(model_lowest(&set, lo, hi), None, "seed {seed} step {step}");
                        }
                    }
                }
                6..=7 => {
                    let expect: Vec<u32> = used
                        .iter()
                        .filter(|(_, o)| **o == id)
                        .map(|(a, _)| *a)
                        .collect();
                    match ipam.free(&id) {
                        Ok(freed) => {
                            assert_eq!(freed.len(), expect.len());
                            used.retain(|_, o| *o != id);
                        }
                        Err(_) => assert!(expect.is_empty()),
                    }
                }
                _ => {
                    let a = u32::from(universe.network()) + rng.random_range(0..256);
                    let cidr = Ipv4Net::new(Ipv4Addr::from(a), 24).unwrap();
                    match ipam.claim(&id, cidr) {
                        Ok(_) => {
                            let owner = used.entry(a).or_insert_with(|| id.clone());
                            assert_eq!(*owner, id);
                        }
                        Err(_) => assert!(used.get(&a).is_some_and(|o| *o != id)),
                    }
                }
            }
            assert_eq!(ipam.active(), used.len());
            assert_eq!(ipam.free_count(), 256 - used.len() as u64);
        }
    }
}

#[test]
fn ten_thousand_allocations_are_fast_and_unique() {
    let mut ipam = default_ipam();
    let start = std::time::Instant::now();
    let mut seen = HashSet::new();
    for i in 0..10_000 {
        let (c, _) = ipam
            .allocate(&format!("container-{i}"), net("10.32.0.0/12"))
            .unwrap();
        assert!(seen.insert(c.addr()));
    }
    for i in (0..10_000).step_by(2) {
        ipam.free(&format!("container-{i}")).unwrap();
    }
    for i in 0..5_000 {
        let (c, _) = ipam
            .allocate(&format!("again-{i}"), net("10.32.0.0/12"))
            .unwrap();
        // Every freed (even) slot is reused before anything new.
        assert_eq!(
            u32::from(c.addr()),
            u32::from(net("10.32.0.0/12").network()) + 1 + 2 * i
        );
    }
    assert_eq!(ipam.active(), 10_000);
    // Generous even for a debug build; a linear scan per allocation would take far longer.
    assert!(
        start.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}
