//! The routed forwarder's port variant under churn, on two neighbours (`_2`, `--dataplane
//! auto`): containers attached to h1 and detached again, one after another, while h2 is
//! routed. Each new container's packets to h2's container leave from its host veth (h1's
//! bridge passes almost none of them up), and once all are detached the router holds no
//! more descriptors than when the first had come and gone (each port's attachment is
//! dropped when its veth leaves the bridge).

mod common;
#[path = "common/hosts.rs"]
mod hosts;

use hosts::{eventually, meshed_cluster, router};
use std::time::Duration;

/// Containers attached and detached in turn.
const CYCLES: usize = 12;
/// Echoes from each one to h2's container.
const PINGS: usize = 20;
/// Frames h1's bridge may pass up per container: its ARP request, the first echo if it
/// beat the attachment, and the one in 64 sampled (expected about 1; PINGS without it).
const PASSED_UP_AT_MOST: u64 = 6;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("router fds")
        .count()
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn the_port_forwarder_follows_containers_and_leaks_nothing_2() {
    let mut c = meshed_cluster(2, &[]);
    let c2 = c.add_container(2, "c2");
    let to = c.containers[c2].ip;
    // h1 routes h2's containers via h2's underlay address.
    let via = c.host(2).underlay_ip().to_string();
    assert!(
        eventually(Duration::from_secs(20), || c
            .host(1)
            .ns
            .sh(&format!("ip -4 route get {to}"))
            .contains(&format!("via {via}"))),
        "h1 does not route {to} via {via}:\n{}",
        router(&c, 1).log()
    );
    let pid = router(&c, 1).child.as_ref().expect("h1's router").id();
    let mut fds_before = 0;

    let mut passed_up = Vec::new();
    for i in 0..CYCLES {
        let idx = c.add_container(1, &format!("p{i}"));
        let up_before = c.host(1).ns.rx_packets("weave");
        let out = c.containers[idx]
            .ns
            .try_sh(&format!("ping -c {PINGS} -i 0.01 -W 2 {to}"));
        assert_eq!(out.0, 0, "ping {to} from p{i}: {}{}", out.1, out.2);
        passed_up.push(c.host(1).ns.rx_packets("weave") - up_before);
        c.remove_container(idx);
        // Counted once the first has come and gone: its ADD gives the bridge an address,
        // on which the DNS server then listens.
        if i == 0 {
            let first_gone = eventually(Duration::from_secs(10), || {
                c.host(1)
                    .ns
                    .links()
                    .iter()
                    .all(|l| !l.starts_with("vethwep"))
            });
            assert!(
                first_gone,
                "p0's veth outlived its DEL: {:?}",
                c.host(1).ns.links()
            );
            fds_before = open_fds(pid);
        }
    }
    println!(
        "{PINGS} echoes from each of {CYCLES} containers: passed up by h1's bridge {passed_up:?}"
    );
    assert!(
        passed_up.iter().all(|&n| n <= PASSED_UP_AT_MOST),
        "h1's bridge passed up {passed_up:?} of {PINGS} echoes per container: the port \
         forwarder did not follow the new containers"
    );
    // Every detached port's attachment is dropped (the retired veths leave the bridge, and
    // the router's reaper deletes them).
    let settled = eventually(Duration::from_secs(10), || open_fds(pid) <= fds_before);
    let fds_after = open_fds(pid);
    println!("h1's router: {fds_before} descriptors after the first container, {fds_after} after the last");
    assert!(
        settled,
        "h1's router holds {fds_after} descriptors after {CYCLES} containers came and went, \
         {fds_before} after the first"
    );
}
