//! Three simulated hosts, one `weaver` per host launched with the other two as peers (IPAM by
//! consensus, VXLAN data plane programmed by the router from the mesh's live peers), and
//! containers attached with the real `weave-net` plugin: reachability, unique allocations,
//! kill -9, an underlay cut, rmpeer of a destroyed host, a wrong password; plus the bounds of
//! a lone router and of one whose peers never come.

mod common;
#[path = "common/hosts.rs"]
mod hosts;

use common::{cni_env, run_plugin, Netns, Router};
use hosts::{
    assert_full_matrix, cluster3, established, eventually, req, router, Cluster, FLAT_SUBNET,
};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

fn peer_name(k: usize) -> String {
    hosts::mesh_peer_name(k)
}

/// Every container's address, checked unique.
fn assert_unique(c: &Cluster) -> Vec<Ipv4Addr> {
    let ips: Vec<Ipv4Addr> = c.containers.iter().map(|x| x.ip).collect();
    let set: BTreeSet<Ipv4Addr> = ips.iter().copied().collect();
    assert_eq!(set.len(), ips.len(), "duplicate addresses: {ips:?}");
    ips
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn containers_on_three_hosts_reach_each_other_with_unique_addresses_3() {
    let mut c = cluster3(&[]);
    for k in 1..=3 {
        c.add_container(k, &format!("a{k}"));
        c.add_container(k, &format!("b{k}"));
    }
    let ips = assert_unique(&c);
    for ip in &ips {
        assert!(FLAT_SUBNET.parse::<ipnet::Ipv4Net>().unwrap().contains(ip));
    }
    assert_full_matrix(&mut c, "3 hosts x 2 containers");
    // Every peer's view of the ring: three owners, each about a third, all reachable.
    let (code, text) = req(router(&c, 1), "GET", "/status/ipam");
    assert_eq!(code, 200);
    assert_eq!(text.lines().count(), 3, "{text}");
    // Our line first, with our active count (two containers, plus the bridge's address the
    // plugin exposes as weave:expose).
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("{}(h1)", peer_name(1))),
        "{text}"
    );
    assert!(first.ends_with("(3 active)"), "{text}");
    assert!(!text.contains("unreachable"), "{text}");
    let (_, status) = req(router(&c, 2), "GET", "/status");
    assert!(status.contains("         Status: ready\n"), "{status}");
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn router_killed_9_comes_back_with_allocations_and_connections_3() {
    let mut c = cluster3(&[]);
    for k in 1..=3 {
        c.add_container(k, &format!("a{k}"));
    }
    let before = (c.containers[1].id.clone(), c.containers[1].ip);
    let r2 = c.hosts[1].router.as_mut().unwrap();
    r2.kill9();
    r2.spawn();
    let r2 = router(&c, 2);
    let (code, body) = req(r2, "GET", &format!("/ip/{}/{FLAT_SUBNET}", before.0));
    assert_eq!((code, body), (200, format!("{}/12", before.1)));
    assert!(
        eventually(Duration::from_secs(30), || established(router(&c, 2)) == 2),
        "h2 did not reconnect:\n{}",
        req(router(&c, 2), "GET", "/status/connections").1
    );
    c.add_container(2, "b2");
    assert_unique(&c);
    assert_full_matrix(&mut c, "after kill -9 of h2's router");
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn cut_underlay_link_heals_without_duplicates_3() {
    let mut c = cluster3(&[]);
    for k in 1..=3 {
        c.add_container(k, &format!("a{k}"));
    }
    assert_full_matrix(&mut c, "before the cut");
    c.cut_link(3);
    assert!(
        eventually(Duration::from_secs(20), || req(
            router(&c, 1),
            "GET",
            "/status/ipam"
        )
        .1
        .contains("unreachable!")),
        "h1 never noticed the cut"
    );
    // Both sides keep allocating from their own ranges while apart.
    c.add_container(1, "cut1");
    c.add_container(3, "cut3");
    c.repair_link(3);
    assert!(
        eventually(Duration::from_secs(40), || established(router(&c, 3)) == 2),
        "h3 did not reconnect:\n{}",
        req(router(&c, 3), "GET", "/status/connections").1
    );
    assert_unique(&c);
    assert_full_matrix(&mut c, "after repairing h3's link");
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn rmpeer_of_a_destroyed_host_frees_its_space_3() {
    let mut c = cluster3(&[]);
    // h3 allocates, so it surely owns part of the ring (the first two electors may have split
    // the ring between themselves; h3 then got space by donation).
    c.add_container(3, "a3");
    let mut h3_ranges: Vec<(u32, u64)> = Vec::new();
    assert!(
        eventually(Duration::from_secs(15), || {
            let (_, body) = req(router(&c, 1), "GET", "/report");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            h3_ranges = v["IPAM"]["Entries"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["Peer"] == peer_name(3))
                .map(|e| {
                    let t: Ipv4Addr = e["Token"].as_str().unwrap().parse().unwrap();
                    (u32::from(t), e["Size"].as_u64().unwrap())
                })
                .collect();
            !h3_ranges.is_empty()
        }),
        "h1 never saw h3 own a range"
    );
    let h3_size: u64 = h3_ranges.iter().map(|r| r.1).sum();
    // The last address of one of h3's ranges: free (h3 allocates lowest first).
    let (token, size) = h3_ranges[0];
    let h3_addr = Ipv4Addr::from(token + size as u32 - 2).to_string();
    let (code, body) = req(router(&c, 1), "PUT", &format!("/ip/x/{h3_addr}/12"));
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        body,
        format!(
            "Unable to claim: address {h3_addr} is owned by other peer {}",
            peer_name(3)
        )
    );
    // Destroy host 3: its router dies and it leaves the underlay.
    c.hosts[2].router.as_mut().unwrap().kill9();
    c.cut_link(3);
    assert!(
        eventually(Duration::from_secs(30), || req(
            router(&c, 1),
            "GET",
            "/status/ipam"
        )
        .1
        .contains("unreachable!")),
        "h3 never became unreachable"
    );
    let (code, text) = req(router(&c, 1), "DELETE", &format!("/peer/{}", peer_name(3)));
    assert_eq!(code, 200);
    let n: u64 = text.split(' ').next().unwrap().parse().unwrap();
    assert_eq!(n, h3_size, "{text}");
    assert_eq!(text, format!("{n} IPs taken over from {}\n", peer_name(3)));
    let (code, body) = req(router(&c, 1), "PUT", &format!("/ip/x/{h3_addr}/12"));
    assert_eq!(code, 204, "{body}");
    // Host 2 learns the transfer by gossip: h3's range is now owned by h1 there too.
    assert!(
        eventually(Duration::from_secs(15), || {
            let (code, body) = req(router(&c, 2), "PUT", &format!("/ip/y/{h3_addr}/12"));
            code == 400 && body.ends_with(&format!("owned by other peer {}", peer_name(1)))
        }),
        "h2 did not learn the rmpeer"
    );
    let (_, text) = req(router(&c, 2), "GET", "/status/ipam");
    assert_eq!(text.lines().count(), 2, "{text}");
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn a_peer_with_the_wrong_password_is_refused_3() {
    let mut c = Cluster::new(3);
    c.start_meshed_router(1, &["--password", "right"]);
    c.start_meshed_router(2, &["--password", "right"]);
    c.start_meshed_router(3, &["--password", "wrong"]);
    for k in [1, 2] {
        let (code, body) = req(router(&c, k), "GET", "/ring");
        assert_eq!(code, 200, "ring on h{k} (quorum 2 of h1, h2): {body}");
    }
    assert!(eventually(Duration::from_secs(20), || established(router(
        &c, 1
    )) == 1));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(established(router(&c, 3)), 0);
    let (_, peers) = req(router(&c, 1), "GET", "/status/peers");
    assert!(!peers.contains(&peer_name(3)), "{peers}");
    let log = router(&c, 3).log() + &router(&c, 1).log();
    assert!(
        log.contains("password mismatch"),
        "no refusal logged:\n{log}"
    );
    // h3 is alone and needs 2 votes: its allocations answer 503 within the bound.
    let started = Instant::now();
    let (code, body) = req(router(&c, 3), "POST", "/ip/c1");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.starts_with("IP allocation not ready: awaiting consensus (quorum: 2"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn a_lone_router_allocates_at_once_1() {
    let ns = Netns::new("lone");
    let r = Router::start(&ns, &[]);
    let started = Instant::now();
    assert_eq!(req(&r, "POST", "/ip/c1"), (200, "10.32.0.1/12".into()));
    assert!(started.elapsed() < Duration::from_secs(1));
    let (_, s) = req(&r, "GET", "/status");
    assert!(s.contains("         Status: ready\n"), "{s}");
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn a_router_whose_peers_never_come_answers_503_and_the_plugin_code_11_1() {
    let ns = Netns::new("alone");
    // Two peers that do not exist: quorum 2, never reached.
    let r = Router::start(&ns, &["192.0.2.201", "192.0.2.202"]);
    let started = Instant::now();
    let (code, body) = req(&r, "POST", "/ip/c1");
    assert_eq!(code, 503, "{body}");
    assert_eq!(
        body,
        "IP allocation not ready: awaiting consensus (quorum: 2, known: 1)"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // The plugin reports CNI code 11 (try again later), not a hang.
    let cont = Netns::new("alonec");
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "weave", "type": "weave-net"})
        .to_string();
    let netns = cont.path().display().to_string();
    let env = cni_env("ADD", "c2", &netns, "eth0");
    let started = Instant::now();
    let run = run_plugin(&ns, env!("CARGO_BIN_EXE_weave-net"), &env, &conf);
    assert_ne!(run.code, 0);
    assert_eq!(run.json()["code"], 11, "{}", run.stdout);
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn reset_hands_our_ranges_to_a_live_peer_3() {
    let mut c = cluster3(&[]);
    c.add_container(2, "a2");
    let owners = |k: usize| -> BTreeSet<String> {
        let (_, body) = req(router(&c, k), "GET", "/report");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["IPAM"]["Entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["Peer"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(15), || owners(1)
            .contains(&peer_name(2))),
        "h1 never saw h2 own a range"
    );
    assert_eq!(req(router(&c, 2), "DELETE", "/peer"), (204, String::new()));
    for k in [1, 3] {
        assert!(
            eventually(Duration::from_secs(15), || !owners(k)
                .contains(&peer_name(2))),
            "h{k} still sees h2 owning ranges: {:?}",
            owners(k)
        );
    }
    // The survivors' ring covers everything and still hands out unique addresses.
    c.add_container(1, "b1");
    c.add_container(3, "b3");
    assert_unique(&c);
}
