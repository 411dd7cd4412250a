//! The routed data path (`--dataplane auto`, the default) on four simulated hosts: h1-h3
//! share the underlay subnet 192.0.2.0/24 (neighbours), h4 sits on 198.51.100.0/24 behind a
//! router namespace. Neighbours route container traffic to each other without
//! encapsulation; every pair with h4 uses VXLAN. Checked through the kernel (routes, a
//! packet capture on the underlay bridge) and the status API, with the full reachability
//! matrix; then ranges taken over with rmpeer, a neighbour killed and restarted, and one cut
//! off the underlay and back.

mod common;
#[path = "common/hosts.rs"]
mod hosts;

use hosts::{assert_full_matrix, eventually, mesh_peer_name, req, router, Cluster};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weave_testkit::cluster::ClusterSpec;
use weave_testkit::process::Guard;

/// The far host's subnet (TEST-NET-2).
const FAR: [u8; 3] = [198, 51, 100];
/// How long the routers get to agree on paths after a change.
const SETTLE: Duration = Duration::from_secs(20);

fn routed_pair(a: usize, b: usize) -> bool {
    a <= 3 && b <= 3
}

/// h1-h3 on the underlay, h4 behind the gateway; meshed routers, ring formed, one container
/// per host.
fn cluster4() -> Cluster {
    let mut c = Cluster::build(ClusterSpec::test("rt"), 3).unwrap_or_else(|e| panic!("{e}"));
    c.add_far_host(4, FAR).unwrap_or_else(|e| panic!("{e}"));
    for k in 1..=4 {
        c.start_meshed_router(k, &[]);
    }
    for k in 1..=4 {
        let (code, body) = req(router(&c, k), "GET", "/ring");
        assert_eq!(code, 200, "ring on h{k}: {body}\n{}", router(&c, k).log());
    }
    for k in 1..=4 {
        c.add_container(k, &format!("c{k}"));
    }
    c
}

/// The connection line of h`k`'s status that names peer h`j` with `path`.
fn shows_path(c: &Cluster, k: usize, j: usize, path: &str) -> bool {
    let peer = format!("unencrypted {}(h{j})", mesh_peer_name(j));
    let data = format!(", data: {path}");
    req(router(c, k), "GET", "/status/connections")
        .1
        .lines()
        .any(|l| l.contains("established") && l.contains(&peer) && l.ends_with(&data))
}

fn expected_path(k: usize, j: usize) -> &'static str {
    if routed_pair(k, j) {
        "routed"
    } else {
        "vxlan"
    }
}

/// Waits until every router shows the expected path to every other.
fn assert_paths(c: &Cluster) {
    for k in 1..=4 {
        for j in (1..=4).filter(|&j| j != k) {
            let path = expected_path(k, j);
            assert!(
                eventually(SETTLE, || shows_path(c, k, j, path)),
                "h{k} never showed {path} to h{j}:\n{}\n{}",
                req(router(c, k), "GET", "/status/connections").1,
                router(c, k).log()
            );
        }
    }
}

/// `ip route get ADDR` on host k.
fn route_get(c: &Cluster, k: usize, addr: Ipv4Addr) -> String {
    c.host(k).ns.sh(&format!("ip -4 route get {addr}"))
}

/// True once host k sends `addr` to `via` (an underlay address) or, with `None`, onto the
/// bridge.
fn routes_to(c: &Cluster, k: usize, addr: Ipv4Addr, via: Option<Ipv4Addr>) -> bool {
    let r = route_get(c, k, addr);
    match via {
        Some(gw) => r.contains(&format!("via {gw} dev ul0")),
        None => r.contains("dev weave") && !r.contains(" via "),
    }
}

fn ip_of(c: &Cluster, k: usize) -> Ipv4Addr {
    c.containers
        .iter()
        .find(|x| x.host == k)
        .expect("container")
        .ip
}

/// Runs `traffic` while tcpdump listens on the underlay bridge's port of host k; returns
/// the one-line packet summaries.
fn capture(c: &Cluster, k: usize, filter: &str, traffic: impl FnOnce()) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &c.underlay.name, "tcpdump", "-i"])
        .arg(format!("h{k}"))
        .args(["-nn", "-l", "-c", "5000"])
        .arg(filter)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("capture file"))
        .stderr(std::fs::File::create(&err).expect("capture log"));
    let mut guard = Guard::spawn(&mut cmd).unwrap_or_else(|e| panic!("{e}"));
    let listening = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&err).is_ok_and(|s| s.contains("listening on"))
    });
    assert!(
        listening,
        "tcpdump did not start: {}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    traffic();
    std::thread::sleep(Duration::from_millis(500));
    guard.stop(Duration::from_secs(2));
    std::fs::read_to_string(&out)
        .expect("read capture")
        .lines()
        .map(str::to_string)
        .collect()
}

fn ping(c: &Cluster, from: usize, to: Ipv4Addr) {
    let idx = c.containers.iter().position(|x| x.host == from).unwrap();
    let out = c.containers[idx]
        .ns
        .try_sh(&format!("ping -c 5 -i 0.2 -W 2 {to}"));
    assert_eq!(out.0, 0, "ping {to} from h{from}: {}{}", out.1, out.2);
}

/// Packets host `k`'s IP stack has forwarded (`Ip: ForwDatagrams` of its namespace).
fn forwarded(c: &Cluster, k: usize) -> u64 {
    let snmp = c.host(k).ns.sh("cat /proc/net/snmp");
    let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip.next().unwrap_or(""), ip.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ForwDatagrams")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no ForwDatagrams in h{k}'s /proc/net/snmp:\n{snmp}"))
}

/// Packets host `k` sent into its containers through their host veths (the bridge's way
/// in; the forwarder's goes past it, straight to each veth's peer). Fails if the host has
/// no container veth to count.
fn sent_by_veths(c: &Cluster, k: usize) -> u64 {
    let ns = &c.host(k).ns;
    let veths: Vec<String> = ns
        .links()
        .into_iter()
        .filter(|l| l.starts_with("vethwepl"))
        .collect();
    assert!(!veths.is_empty(), "no container veth on h{k}");
    veths.iter().map(|v| ns.tx_packets(v)).sum()
}

/// Frames host `k`'s bridge passed up to its IP stack (or to a program on its ingress).
fn passed_up(c: &Cluster, k: usize) -> u64 {
    c.host(k).ns.rx_packets("weave")
}

/// One echo from host `from`'s container to `to` answered within a second.
fn answers(c: &Cluster, from: usize, to: Ipv4Addr) -> bool {
    let idx = c.containers.iter().position(|x| x.host == from).unwrap();
    c.containers[idx]
        .ns
        .try_sh(&format!("ping -c 1 -W 1 {to}"))
        .0
        == 0
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn neighbours_are_routed_without_vxlan_and_the_far_host_uses_vxlan_4() {
    let mut c = cluster4();
    assert_paths(&c);
    // The kernel's view on every host: neighbours' containers via the neighbour's underlay
    // address, the far host's onto the bridge (VXLAN).
    for k in 1..=4 {
        for j in (1..=4).filter(|&j| j != k) {
            let via = routed_pair(k, j).then(|| c.host(j).ip);
            let addr = ip_of(&c, j);
            assert!(
                eventually(SETTLE, || routes_to(&c, k, addr, via)),
                "h{k} -> c{j} {addr}: want {via:?}, got {}\n{}",
                route_get(&c, k, addr),
                c.host(k).ns.sh("ip route show proto 87")
            );
        }
    }
    assert_full_matrix(&mut c, "4 hosts, 3 routed + 1 over VXLAN");
    // On the wire from h1: container packets to neighbours as plain IP, none in VXLAN; to h4
    // in VXLAN.
    let (c1, c2, c3, c4) = (ip_of(&c, 1), ip_of(&c, 2), ip_of(&c, 3), ip_of(&c, 4));
    let lines = capture(&c, 1, "icmp or udp port 6784", || {
        ping(&c, 1, c2);
        ping(&c, 1, c3);
        ping(&c, 1, c4);
    });
    // Outer headers only: the text right after the timestamp.
    let outer = |pat: &str| {
        lines
            .iter()
            .filter(|l| {
                l.split_once(' ')
                    .is_some_and(|(_, rest)| rest.starts_with(pat))
            })
            .count()
    };
    let plain = outer(&format!("IP {c1} > {c2}: ICMP echo request"))
        + outer(&format!("IP {c1} > {c3}: ICMP echo request"));
    let far = c.host(4).ip.to_string();
    let vxlan_neighbours = lines
        .iter()
        .filter(|l| l.contains(".6784: ") && !l.contains(&far))
        .count();
    // Both ways: at least the five echo requests and their replies.
    let vxlan_far = lines
        .iter()
        .filter(|l| l.contains(".6784: ") && l.contains(&far))
        .count();
    println!(
        "capture on h1's underlay port: {} packets; routed echo requests to neighbours: \
         {plain}; VXLAN packets to neighbours: {vxlan_neighbours}; VXLAN packets with h4: \
         {vxlan_far}",
        lines.len()
    );
    assert_eq!(
        plain,
        10,
        "plain echo requests to c2 and c3:\n{}",
        lines.join("\n")
    );
    assert_eq!(
        vxlan_neighbours,
        0,
        "VXLAN between neighbours:\n{}",
        lines.join("\n")
    );
    assert!(vxlan_far >= 10, "VXLAN to h4:\n{}", lines.join("\n"));
    assert_eq!(
        outer(&format!("IP {c1} > {c4}")),
        0,
        "h4's traffic left unencapsulated"
    );
    // Between neighbours the forwarder routes container packets: neither host's IP stack
    // forwards them (only a first packet may, before the neighbour's MAC is known).
    let before = [forwarded(&c, 1), forwarded(&c, 2)];
    let veths_before = [sent_by_veths(&c, 1), sent_by_veths(&c, 2)];
    let up_before = [passed_up(&c, 1), passed_up(&c, 2)];
    let idx = c.containers.iter().position(|x| x.host == 1).unwrap();
    let out = c.containers[idx]
        .ns
        .try_sh(&format!("ping -c 50 -i 0.01 -W 2 {c2}"));
    assert_eq!(out.0, 0, "ping {c2} from h1: {}{}", out.1, out.2);
    let by_stack = [forwarded(&c, 1) - before[0], forwarded(&c, 2) - before[1]];
    println!("50 echoes h1 -> c2: forwarded by the IP stack of h1, h2: {by_stack:?}");
    assert!(
        by_stack.iter().all(|&n| n < 5),
        "the hosts' IP stacks forwarded {by_stack:?} of 100 packets: the forwarder is not on"
    );
    // And hands each packet straight to the container, not through the bridge.
    let by_veths = [
        sent_by_veths(&c, 1) - veths_before[0],
        sent_by_veths(&c, 2) - veths_before[1],
    ];
    println!("50 echoes h1 -> c2: sent through the host veths of h1, h2: {by_veths:?}");
    assert!(
        by_veths.iter().all(|&n| n < 5),
        "{by_veths:?} of 100 packets went through the bridge to the containers' host veths"
    );
    // And on the sending side from the container's host veth, not through the bridge (one
    // frame in 64 still takes it, so the bridge keeps learning the container's MAC).
    let up = [
        passed_up(&c, 1) - up_before[0],
        passed_up(&c, 2) - up_before[1],
    ];
    println!("50 echoes h1 -> c2: passed up by the bridges of h1, h2: {up:?}");
    assert!(
        up.iter().all(|&n| n < 10),
        "the bridges passed up {up:?} of 100 packets: the port forwarder is not on"
    );
    // /report shows each peer's path too (`Router.DataPaths`).
    let (_, report) = req(router(&c, 1), "GET", "/report");
    for (j, path) in [(2, "routed"), (3, "routed"), (4, "vxlan")] {
        let info = format!("\"{}\": \"{path}\"", mesh_peer_name(j));
        assert!(report.contains(&info), "{info} not in {report}");
    }
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn routes_follow_rmpeer_restarts_and_underlay_cuts_4() {
    let mut c = cluster4();
    assert_paths(&c);
    let (c1, c2, c3) = (ip_of(&c, 1), ip_of(&c, 2), ip_of(&c, 3));
    let (h1, h2, h3) = (c.host(1).ip, c.host(2).ip, c.host(3).ip);
    assert!(eventually(SETTLE, || routes_to(&c, 1, c2, Some(h2))));

    // A neighbour's router killed: its routes go with its connection; restarted, they come
    // back and traffic resumes.
    c.hosts[1].router.as_mut().unwrap().kill9();
    assert!(
        eventually(SETTLE, || routes_to(&c, 1, c2, None)),
        "h1 kept routing to a dead neighbour: {}",
        route_get(&c, 1, c2)
    );
    c.hosts[1].router.as_mut().unwrap().spawn();
    assert!(eventually(SETTLE, || shows_path(&c, 1, 2, "routed")));
    assert!(eventually(SETTLE, || routes_to(&c, 1, c2, Some(h2))));
    assert!(eventually(SETTLE, || answers(&c, 1, c2)));

    // A neighbour cut off the underlay: dropped when the mesh gives up on it, routed again
    // once it is back.
    c.cut_link(3);
    assert!(
        eventually(SETTLE, || routes_to(&c, 1, c3, None)),
        "h1 kept routing to an unreachable neighbour: {}",
        route_get(&c, 1, c3)
    );
    c.repair_link(3);
    assert!(eventually(SETTLE, || shows_path(&c, 1, 3, "routed")));
    assert!(eventually(SETTLE, || routes_to(&c, 2, c3, Some(h3))));
    assert!(eventually(SETTLE, || answers(&c, 2, c3)));

    // h3 destroyed and removed with rmpeer on h1: h1 takes over its ranges, and h2 routes
    // them to h1 within one gossip interval (1 s with the tests' fast timers).
    c.hosts[2].router.as_mut().unwrap().kill9();
    assert!(eventually(SETTLE, || routes_to(&c, 2, c3, None)));
    let (code, text) = req(
        router(&c, 1),
        "DELETE",
        &format!("/peer/{}", mesh_peer_name(3)),
    );
    assert_eq!(code, 200, "{text}");
    let t0 = Instant::now();
    assert!(
        eventually(SETTLE, || routes_to(&c, 2, c3, Some(h1))),
        "h2 never routed h3's old range to h1: {}",
        route_get(&c, 2, c3)
    );
    let took = t0.elapsed();
    println!("rmpeer on h1 -> h2 routes h3's old range via h1 after {took:?}");
    assert!(
        took <= Duration::from_millis(2000),
        "took {took:?}, more than one gossip interval"
    );
    // h1 now owns that range itself: its own containers' block stays on the bridge.
    assert!(routes_to(&c, 1, c3, None), "{}", route_get(&c, 1, c3));
    assert!(eventually(SETTLE, || answers(&c, 2, c1)));

    // h2 leaves as `weave reset` makes it (DELETE /peer: its ranges go to a live peer, h1
    // or h4) and stays up: h1 stops routing them to h2 within one gossip interval.
    assert!(routes_to(&c, 1, c2, Some(h2)), "{}", route_get(&c, 1, c2));
    assert_eq!(req(router(&c, 2), "DELETE", "/peer"), (204, String::new()));
    let t0 = Instant::now();
    assert!(
        eventually(SETTLE, || routes_to(&c, 1, c2, None)),
        "h1 still routes h2's given-away range to h2: {}",
        route_get(&c, 1, c2)
    );
    let took = t0.elapsed();
    println!("h2 left (DELETE /peer) -> h1 stops routing its old range to h2 after {took:?}");
    assert!(took <= Duration::from_millis(2000), "took {took:?}");
}

/// The via-route of `routes` (`ip route show proto 87` lines) whose block holds `addr`: the
/// underlay address of the peer that owned `addr` when the routes were read.
fn owner_in(routes: &str, addr: Ipv4Addr) -> Option<Ipv4Addr> {
    routes.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        let net: ipnet::Ipv4Net = words.next()?.parse().ok()?;
        let via = words.next()? == "via";
        (via && net.contains(&addr))
            .then(|| words.next()?.parse().ok())
            .flatten()
    })
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn a_donor_routes_a_donated_range_before_the_receiver_uses_it_3() {
    // Three neighbours; the ring's first owner donates to the others as their first
    // containers need addresses. The donor must route the block to the receiver before the
    // receiver's ADD returns (else a first packet from the donor's side goes onto its bridge
    // and nowhere), and the third neighbour within one gossip interval.
    let mut c = Cluster::build(ClusterSpec::test("rd"), 3).unwrap_or_else(|e| panic!("{e}"));
    for k in 1..=3 {
        c.start_meshed_router(k, &[]);
    }
    for k in 1..=3 {
        assert!(eventually(SETTLE, || shows_path(
            &c,
            k,
            k % 3 + 1,
            "routed"
        )));
        let (code, body) = req(router(&c, k), "GET", "/ring");
        assert_eq!(code, 200, "ring on h{k}: {body}");
    }
    let mut donations = 0;
    for k in 1..=3 {
        let before = c.host(k).ns.sh("ip -4 route show proto 87");
        let idx = c.add_container(k, &format!("d{k}"));
        let addr = c.containers[idx].ip;
        let Some(donor_ip) = owner_in(&before, addr) else {
            continue; // h`k` owned it already: no donation
        };
        donations += 1;
        let donor = (1..=3).find(|&j| c.host(j).ip == donor_ip).expect("donor");
        let receiver = c.host(k).ip;
        assert!(
            routes_to(&c, donor, addr, Some(receiver)),
            "h{k}'s ADD returned {addr} (donated by h{donor}) before h{donor} routed it: {}",
            route_get(&c, donor, addr)
        );
        let third = (1..=3).find(|&j| j != k && j != donor).expect("third");
        assert!(
            eventually(Duration::from_secs(2), || routes_to(
                &c,
                third,
                addr,
                Some(receiver)
            )),
            "h{third} never routed {addr} to h{k}: {}",
            route_get(&c, third, addr)
        );
        println!("h{donor} donated {addr} to h{k}: routed by the donor before the ADD returned");
    }
    assert!(donations >= 1, "no container needed a donation");
}
