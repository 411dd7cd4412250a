//! Three simulated hosts (`wvt-mh-*` namespaces) on one underlay bridge (192.0.2.1-3/24), a
//! real `weaver` per host launched with the other two as peers: the mesh forms, and heals
//! after one router is killed with SIGKILL and restarted.

mod common;

use common::{Netns, Router, RouterApi};
use std::time::{Duration, Instant};

/// Names of peers in `GET /status/peers` (lines that are not indented).
fn peer_lines(r: &Router) -> Vec<String> {
    let text = r.call(|c| {
        c.request("GET", "/status/peers", None)
            .map(|(_, body)| body)
            .unwrap_or_default()
    });
    text.lines()
        .filter(|l| !l.starts_with(' ') && !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn wait_for_peers(routers: &[&Router], n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(40);
    for r in routers {
        loop {
            let got = peer_lines(r);
            if got.len() == n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {} sees {got:?}; log:\n{}",
                r.host,
                r.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn mesh_forms_and_heals_after_kill9_3() {
    let underlay = Netns::new("mh");
    underlay.sh("ip link add br0 type bridge && ip link set br0 up");
    let hosts: Vec<Netns> = (1..=3).map(|_| Netns::new("mh")).collect();
    for (i, h) in hosts.iter().enumerate() {
        let n = i + 1;
        underlay.sh(&format!(
            "ip link add ul{n} type veth peer name eth0 netns {} && ip link set ul{n} master br0 up",
            h.name
        ));
        h.sh(&format!(
            "ip addr add 192.0.2.{n}/24 dev eth0 && ip link set eth0 up"
        ));
    }
    hosts[0].sh("ping -c1 -W2 192.0.2.3");

    let mut routers: Vec<Router> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let n = i + 1;
            let mut args = vec![
                format!("--name=0a:00:00:00:00:0{n}"),
                format!("--nickname=host{n}"),
            ];
            args.extend((1..=3).filter(|&m| m != n).map(|m| format!("192.0.2.{m}")));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Router::start(h, &args)
        })
        .collect();
    let all: Vec<&Router> = routers.iter().collect();
    wait_for_peers(&all, 3, "mesh forms");
    let status = routers[0].call(|c| c.request("GET", "/status", None).unwrap().1);
    assert!(status.contains("Peers: 3 (with 6 established"), "{status}");
    assert!(status.contains("Encryption: disabled"), "{status}");
    let conns = routers[1].call(|c| c.request("GET", "/status/connections", None).unwrap().1);
    assert_eq!(
        conns.lines().filter(|l| l.contains("established")).count(),
        2,
        "{conns}"
    );

    routers[1].kill9();
    let others: Vec<&Router> = vec![&routers[0], &routers[2]];
    wait_for_peers(&others, 2, "dead host dropped");
    routers[1].spawn();
    let all: Vec<&Router> = routers.iter().collect();
    wait_for_peers(&all, 3, "mesh heals after restart");
    let peers = peer_lines(&routers[0]);
    assert!(
        peers.iter().any(|p| p == "0a:00:00:00:00:02(host2)"),
        "{peers:?}"
    );
}
