//! Faults across three simulated hosts (`_3`), each with a meshed `weaver` (IPAM ring by
//! consensus): a peer that vanishes without `reset` and is removed with `weave rmpeer`, a
//! partition that heals, and two routers killed at once. After each, addresses are unique
//! across hosts, every host's ring agrees, and containers reach each other.

mod common;
#[path = "common/hosts.rs"]
mod hosts;

use common::Router;
use hosts::{
    assert_full_matrix, cluster3, established, eventually, mesh_peer_name, req, router, Cluster,
    FLAT_SUBNET,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

/// One ring entry as `/report` shows it: (token, owner, version, size).
type Entry = (Ipv4Addr, String, u64, u64);

fn ring(r: &Router) -> Vec<Entry> {
    let (code, body) = req(r, "GET", "/report");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["IPAM"]["Entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["Token"].as_str().unwrap().parse().unwrap(),
                e["Peer"].as_str().unwrap().to_string(),
                e["Version"].as_u64().unwrap(),
                e["Size"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Waits until every host in `hosts` shows the same ring, covering `universe` addresses;
/// returns it with its owners.
fn rings_agree(c: &Cluster, hosts: &[usize], universe: u64) -> Vec<Entry> {
    let mut last = Vec::new();
    let ok = eventually(Duration::from_secs(30), || {
        last = hosts.iter().map(|k| ring(router(c, *k))).collect();
        last.windows(2).all(|w| w[0] == w[1])
            && last[0].iter().map(|e| e.3).sum::<u64>() == universe
    });
    assert!(ok, "rings of {hosts:?} disagree or leave gaps: {last:#?}");
    for k in hosts {
        let (_, text) = req(router(c, *k), "GET", "/status/ipam");
        println!("h{k} /status/ipam:\n{text}");
    }
    last.swap_remove(0)
}

fn owners(entries: &[Entry]) -> BTreeSet<String> {
    entries.iter().map(|e| e.1.clone()).collect()
}

/// `POST /ip/<id>` on host k: Some(address) on 200, None on 503 (no space, or not ready).
fn allocate(r: &Router, id: &str) -> Option<Ipv4Addr> {
    let (code, body) = req(r, "POST", &format!("/ip/{id}"));
    match code {
        200 => Some(body.split('/').next().unwrap().parse().unwrap()),
        503 => None,
        _ => panic!("POST /ip/{id}: {code} {body}"),
    }
}

/// Allocates on every host in `hosts` at once, one request after another per host, until
/// each answers 503 (or `cap` succeed); returns id → address per host and the 503 bodies.
fn allocate_until_full(
    c: &Cluster,
    hosts: &[usize],
    tag: &str,
    cap: usize,
) -> (BTreeMap<String, Ipv4Addr>, Vec<String>) {
    std::thread::scope(|s| {
        let threads: Vec<_> = hosts
            .iter()
            .map(|&k| {
                let r = router(c, k);
                s.spawn(move || {
                    let mut got = BTreeMap::new();
                    for i in 0..cap {
                        let id = format!("{tag}-h{k}-{i}");
                        match allocate(r, &id) {
                            Some(ip) => {
                                got.insert(id, ip);
                            }
                            None => {
                                let (_, body) = req(r, "GET", "/status/ipam");
                                return (got, format!("h{k} full after {i}:\n{body}"));
                            }
                        }
                    }
                    (got, format!("h{k} reached the cap {cap}"))
                })
            })
            .collect();
        let mut all = BTreeMap::new();
        let mut why = Vec::new();
        for t in threads {
            let (got, w) = t.join().unwrap();
            all.extend(got);
            why.push(w);
        }
        (all, why)
    })
}

/// No address appears twice among `ips`.
fn assert_unique<'a>(ips: impl IntoIterator<Item = &'a Ipv4Addr>, what: &str) -> usize {
    let mut seen = BTreeSet::new();
    let mut n = 0;
    for ip in ips {
        assert!(seen.insert(*ip), "{what}: {ip} handed out twice");
        n += 1;
    }
    n
}

fn unreachable_seen(c: &Cluster, k: usize) -> bool {
    req(router(c, k), "GET", "/status/ipam")
        .1
        .contains("unreachable!")
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn vanished_peer_is_removed_by_rmpeer_and_its_range_reused_3() {
    // A /25 the three peers split: small enough to run out of, so that the vanished peer's
    // share is visibly reclaimed. 1.5 s allocation wait keeps the 503s quick.
    const RANGE: &str = "10.40.0.0/25";
    let mut c = cluster3(&["--ipalloc-range", RANGE, "--ipalloc-wait-ms", "1500"]);
    let universe = 128;
    let mut before: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
    for k in 1..=3 {
        for i in 0..4 {
            let id = format!("pre-h{k}-{i}");
            let ip = allocate(router(&c, k), &id).unwrap_or_else(|| panic!("{id}: 503"));
            before.insert(id, ip);
        }
    }
    assert_unique(before.values(), "before the vanish");
    let ring0 = rings_agree(&c, &[1, 2, 3], universe);
    let h3 = mesh_peer_name(3);
    let h3_size: u64 = ring0.iter().filter(|e| e.1 == h3).map(|e| e.3).sum();
    assert!(h3_size > 0, "h3 owns nothing: {ring0:?}");

    // h3 vanishes without `reset`: its router is killed and its link to the underlay deleted.
    c.hosts[2].router.as_mut().unwrap().kill9();
    c.underlay.sh("ip link del h3");
    assert!(
        eventually(Duration::from_secs(30), || unreachable_seen(&c, 1)
            && unreachable_seen(&c, 2)),
        "h1/h2 never saw h3 unreachable"
    );
    // The others keep allocating. h2 alone first: once its own space is used it needs
    // donations from h1, the only live peer with space (asking the vanished h3 would stall it
    // until the request times out); it must get all of h1's free space before its first 503.
    let started = Instant::now();
    let (mut during, why) = allocate_until_full(&c, &[2], "during", 200);
    println!(
        "with h3 gone, h2 alone: {} allocations in {:.1?}, then 503\n{}",
        during.len(),
        started.elapsed(),
        why.join("\n")
    );
    let (h1_after, why) = allocate_until_full(&c, &[1], "during", 200);
    assert!(
        h1_after.is_empty(),
        "h2 was refused while h1 still had {} free addresses:\n{}\nh2 log:\n{}",
        h1_after.len(),
        why.join("\n"),
        router(&c, 2).log()
    );
    during.extend(h1_after);
    let h3_ips: BTreeSet<Ipv4Addr> = before
        .iter()
        .filter(|(id, _)| id.starts_with("pre-h3"))
        .map(|(_, ip)| *ip)
        .collect();
    let live: Vec<&Ipv4Addr> = before
        .iter()
        .filter(|(id, _)| !id.starts_with("pre-h3"))
        .map(|(_, ip)| ip)
        .chain(during.values())
        .collect();
    let n = assert_unique(live.iter().copied().chain(&h3_ips), "h3 gone");
    assert!(
        live.iter().all(|ip| !h3_ips.contains(ip)),
        "h3's addresses reused before rmpeer"
    );
    // What is left is h3's share: h1 and h2 used all of theirs (but the range's network and
    // broadcast addresses, which are never handed out).
    let net: ipnet::Ipv4Net = RANGE.parse().unwrap();
    let reserved_theirs = [net.network(), net.broadcast()]
        .iter()
        .filter(|ip| owner_of(&ring0, **ip) != h3)
        .count();
    assert_eq!(
        live.len() + reserved_theirs,
        (universe - h3_size) as usize,
        "h1+h2 allocated {n} addresses (h3's {} included) of their {}",
        h3_ips.len(),
        universe - h3_size
    );

    // `weave rmpeer` on h1 takes over h3's ranges.
    let out = Command::new("ip")
        .args(["netns", "exec", &c.host(1).ns.name])
        .args([env!("CARGO_BIN_EXE_weave"), "rmpeer", &h3])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "weave rmpeer: {out:?}");
    assert_eq!(text, format!("{h3_size} IPs taken over from {h3}\n"));
    let ring1 = rings_agree(&c, &[1, 2], universe);
    assert!(
        !owners(&ring1).contains(&h3),
        "h3 still in the ring: {ring1:?}"
    );

    // h2 first, alone: it can only get the reclaimed space by donation from h1; then both
    // at once until the range is exhausted.
    let (mut after, why) = allocate_until_full(&c, &[2], "after2", 200);
    println!(
        "after rmpeer, h2 alone: {} allocations\n{}",
        after.len(),
        why.join("\n")
    );
    assert!(!after.is_empty(), "h2 got none of the reclaimed space");
    let (both, why) = allocate_until_full(&c, &[1, 2], "after", 200);
    println!(
        "then h1 and h2 at once: {} allocations\n{}",
        both.len(),
        why.join("\n")
    );
    after.extend(both);
    let all: Vec<&Ipv4Addr> = live.iter().copied().chain(after.values()).collect();
    let n = assert_unique(all.iter().copied(), "after rmpeer");
    // Every address of the range but the network and broadcast ones, h3's old ones included.
    assert_eq!(n as u64, universe - 2, "allocated {n} of {universe}");
    let reused: BTreeSet<Ipv4Addr> = after.values().copied().collect();
    assert!(
        h3_ips.is_subset(&reused),
        "h3's addresses {h3_ips:?} were not reclaimed"
    );
    assert!(all.iter().all(|ip| net.contains(*ip)));
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn partition_heals_with_unique_addresses_and_full_reachability_3() {
    let mut c = cluster3(&[]);
    for k in 1..=3 {
        c.add_container(k, &format!("a{k}"));
    }
    assert_full_matrix(&mut c, "before the partition");
    let universe = 1u64 << 20;
    let ring0 = rings_agree(&c, &[1, 2, 3], universe);

    c.cut_link(3);
    assert!(
        eventually(Duration::from_secs(30), || unreachable_seen(&c, 1)
            && unreachable_seen(&c, 3)),
        "the partition was not noticed"
    );
    // Both sides allocate at once: 30 addresses per host through the API, plus a container
    // per host through the plugin. h3, alone, allocates from the ranges it owns.
    let (api, why) = allocate_until_full(&c, &[1, 2, 3], "split", 30);
    for w in &why {
        assert!(w.ends_with("reached the cap 30"), "{w}");
    }
    for k in 1..=3 {
        c.add_container(k, &format!("split{k}"));
    }
    // The minority's ring did not change while apart: it only used its own ranges.
    assert_eq!(
        ring(router(&c, 3))
            .iter()
            .map(|e| (e.0, e.1.clone()))
            .collect::<Vec<_>>(),
        ring0.iter().map(|e| (e.0, e.1.clone())).collect::<Vec<_>>()
    );

    c.repair_link(3);
    assert!(
        eventually(Duration::from_secs(40), || established(router(&c, 3)) == 2),
        "h3 did not reconnect:\n{}",
        req(router(&c, 3), "GET", "/status/connections").1
    );
    let ring1 = rings_agree(&c, &[1, 2, 3], universe);
    assert_eq!(owners(&ring1).len(), 3);
    let ips: Vec<Ipv4Addr> = c
        .containers
        .iter()
        .map(|x| x.ip)
        .chain(api.values().copied())
        .collect();
    let n = assert_unique(&ips, "after the partition healed");
    println!("{n} addresses unique across the healed partition");
    // Each host's allocations lie in ranges the agreed ring gives it.
    for (id, ip) in &api {
        let k: usize = id["split-h".len()..]
            .split('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(owner_of(&ring1, *ip), mesh_peer_name(k), "{id} {ip}");
    }
    assert_full_matrix(&mut c, "after the partition healed");
}

/// The owner of `ip` in a ring.
fn owner_of(entries: &[Entry], ip: Ipv4Addr) -> String {
    let a = u32::from(ip);
    entries
        .iter()
        .find(|e| {
            let t = u32::from(e.0);
            a >= t && u64::from(a - t) < e.3
        })
        .map(|e| e.1.clone())
        .unwrap_or_default()
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn two_routers_killed_at_once_restart_with_their_allocations_3() {
    let mut c = cluster3(&[]);
    for k in 1..=3 {
        c.add_container(k, &format!("a{k}"));
        c.add_container(k, &format!("b{k}"));
    }
    assert_full_matrix(&mut c, "before the kills");
    let universe = 1u64 << 20;
    let ring0 = rings_agree(&c, &[1, 2, 3], universe);

    // kill -9 two routers at once, then start both again from their data dirs.
    std::thread::scope(|s| {
        for h in c.hosts[1..].iter_mut() {
            s.spawn(move || h.router.as_mut().unwrap().kill9());
        }
    });
    std::thread::scope(|s| {
        for h in c.hosts[1..].iter_mut() {
            s.spawn(move || h.router.as_mut().unwrap().spawn());
        }
    });
    // Allocations persisted, on the hosts that made them.
    for x in &c.containers {
        let (code, body) = req(
            router(&c, x.host),
            "GET",
            &format!("/ip/{}/{FLAT_SUBNET}", x.id),
        );
        assert_eq!((code, body), (200, format!("{}/12", x.ip)), "{}", x.name);
    }
    for k in 1..=3 {
        assert!(
            eventually(Duration::from_secs(30), || established(router(&c, k)) == 2),
            "h{k} did not reconnect:\n{}",
            req(router(&c, k), "GET", "/status/connections").1
        );
    }
    let ring1 = rings_agree(&c, &[1, 2, 3], universe);
    let tokens = |r: &[Entry]| r.iter().map(|e| (e.0, e.1.clone())).collect::<Vec<_>>();
    assert_eq!(tokens(&ring1), tokens(&ring0), "the ring changed");
    for k in 1..=3 {
        c.add_container(k, &format!("c{k}"));
    }
    let ips: Vec<Ipv4Addr> = c.containers.iter().map(|x| x.ip).collect();
    assert_unique(&ips, "after the restarts");
    assert_full_matrix(&mut c, "after two routers were killed and restarted");
}
