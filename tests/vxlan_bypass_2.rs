//! The VXLAN receive bypass on two simulated hosts (`--dataplane vxlan`): the plugin's ADD
//! routes the container's address to its host veth in the bypass table, the router's program
//! on the VXLAN device hands frames from the other host's containers straight to that veth,
//! so (but for the 1 in 64 sampled for the bridge's MAC learning) they never pass the bridge
//! and its netfilter hooks; DEL takes the route away with the veth.

mod common;
#[path = "common/hosts.rs"]
mod hosts;

use hosts::{assert_full_matrix, eventually, meshed_cluster, router, Cluster};
use std::time::Duration;
use weave::netlink::BYPASS_TABLE;

/// Pings sent across; a frame passes the bridge with probability 1/64 when bypassed.
const PINGS: usize = 300;
/// At most this many of them may show in FORWARD (expected about 5; all 300 without it).
const SAMPLED_AT_MOST: u64 = 40;

/// The bypass table of host k, as `ip route show table` prints it.
fn bypass_routes(c: &Cluster, k: usize) -> String {
    c.host(k)
        .ns
        .sh(&format!("ip -4 route show table {BYPASS_TABLE}"))
}

/// Packets counted by the FORWARD rule tagged `tag` on host k.
fn forwarded(c: &Cluster, k: usize, tag: &str) -> u64 {
    let listing = c.host(k).ns.sh("iptables -L FORWARD -v -n -x");
    let line = listing
        .lines()
        .find(|l| l.contains(tag))
        .unwrap_or_else(|| panic!("no rule {tag} in FORWARD:\n{listing}"));
    line.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in {line:?}"))
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn frames_from_a_vxlan_peer_skip_the_bridge_2() {
    let mut c = meshed_cluster(2, &["--dataplane", "vxlan"]);
    let a1 = c.add_container(1, "a1");
    let a2 = c.add_container(2, "a2");
    assert_full_matrix(&mut c, "two hosts over VXLAN");
    let (from, to) = (c.containers[a1].ip, c.containers[a2].ip);

    // ADD put the route there: the address, on a host veth.
    let routes = bypass_routes(&c, 2);
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with(&format!("{to} dev vethwepl"))),
        "no bypass route for {to} on h2:\n{routes}"
    );

    let veth = routes
        .split_whitespace()
        .find(|w| w.starts_with("vethwepl"))
        .expect("the route's veth")
        .to_string();
    let sent_by_veth = || c.host(2).ns.tx_packets(&veth);

    // Count what of a1 -> a2 walks h2's FORWARD chain (br_netfilter's bridged path), and
    // what a2's host veth sends it (the bypass goes past it, straight to its peer).
    let tag = "wvt-bypass-probe";
    let rule = format!("FORWARD -s {from} -d {to} -m comment --comment {tag}");
    c.host(2).ns.sh(&format!("iptables -I {rule}"));
    let veth_before = sent_by_veth();
    let out = c.containers[a1]
        .ns
        .sh(&format!("ping -q -c {PINGS} -i 0.005 -W 2 {to}"));
    let counted = forwarded(&c, 2, tag);
    let through_veth = sent_by_veth() - veth_before;
    c.host(2).ns.sh(&format!("iptables -D {rule}"));
    assert!(
        out.contains(&format!("{PINGS} received")),
        "pings lost across the bypass:\n{out}"
    );
    assert!(
        counted <= SAMPLED_AT_MOST,
        "{counted} of {PINGS} frames passed h2's bridge (bypass not taken)"
    );
    println!("{counted} of {PINGS} frames to {to} took h2's bridge");
    // The sampled frames, and the odd ARP exchange, go through the veth.
    assert!(
        through_veth <= SAMPLED_AT_MOST + 5,
        "{through_veth} of {PINGS} frames went through a2's host veth (not straight to a2)"
    );
    println!("{through_veth} frames went through a2's host veth");
    assert!(
        router(&c, 2)
            .log()
            .contains("datapath: bypass on vxlan-6784"),
        "h2's router did not attach the bypass:\n{}",
        router(&c, 2).log()
    );

    // DEL: the veth goes, and its route with it.
    c.remove_container(a2);
    assert!(
        eventually(Duration::from_secs(10), || !bypass_routes(&c, 2)
            .contains(&to.to_string())),
        "the bypass route for {to} outlived its veth:\n{}",
        bypass_routes(&c, 2)
    );
}
