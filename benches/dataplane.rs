//! Cross-host data plane throughput and latency, 2 simulated hosts: iperf3 TCP (1 and 4
//! streams) and ping RTT between containers on different hosts over
//! - ours as an operator runs it: two meshed routers (one ring over the whole allocation
//!   range) with `--dataplane vxlan`, containers attached by the `weave-net` plugin;
//! - a plain kernel VXLAN set up by hand with `ip`/`bridge` commands (same MTU, learning and
//!   flood entry), in its own namespaces, in the same run;
//! - the raw underlay veth between the two hosts (the ceiling);
//! - ours with `--password` on another pair: the encrypted user-space path (TAP + UDP,
//!   AES-256-GCM), with the CPU the two routers use during the single-stream run;
//! - ours again on a pair of hosts whose router iptables rules (filter, nat) are flushed and
//!   bridge-nf-call-iptables is off: how much of any gap is netfilter, not the VXLAN path;
//! - ours with the VXLAN packets tracked by conntrack again (the `udp dport` notrack rules of
//!   the router's nftables table removed): what that rule buys;
//! - ours with the VXLAN receive bypass off (`WEAVE_VXLAN_BPF=off`): the bridge and its
//!   netfilter hooks carry every frame from the other host, as before the bypass;
//! - the routed path (`--dataplane auto` between two meshed routers on one subnet: no
//!   encapsulation), against the raw underlay veth; and the same with the forwarder off
//!   (`WEAVE_ROUTED_BPF=off`: the hosts' IP stacks forward), and with the forwarder on the
//!   bridge only (`WEAVE_ROUTED_BPF=bridge`: a container's packets cross the sending host's
//!   bridge, as before the forwarder went on the bridge's ports);
//! - three hosts: ours (three meshed routers, `--dataplane vxlan`) against a hand-made VXLAN
//!   flooding to two peers, between hosts 1 and 2.
//!
//! Until issue 15's last session "ours" was two unmeshed routers with a range each (a test
//! fixture's shortcut): their NOTRACK rule covered only their own range, so cross-host
//! container traffic went through conntrack, which no operator's cluster (one range) does.
//!
//! Prints a table with the ratios ours / hand-made VXLAN (2 and 3 hosts, target: at least
//! 0.95; the single stream also as the median of 7 back-to-back pairs, the steadier figure)
//! and routed / underlay (single stream, target: at least 0.9), met or not, and writes JSON.
//! Needs root.
//! `bench/run` is the front door.
//!
//! Usage: cargo bench --bench dataplane -- [--smoke] [--seconds N] [--rounds N] [--json FILE]
//!   [--encrypted-only]   (only our VXLAN and the encrypted path: quick runs while tuning it)
//!   [--trace]   (the encrypted routers trace each ping's stages; prints their timeline)
//!   [--hold FILE]   (only sets up ours, the hand-made VXLAN and the routed pair on two
//!                    hosts, prints their namespaces and waits while FILE exists: for
//!                    `perf` and iperf3 by hand)

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/hand_vxlan.rs"]
mod hand_vxlan;
#[path = "../tests/common/hosts.rs"]
mod hosts;
#[path = "common/sleeve_trace.rs"]
mod sleeve_trace;

use hand_vxlan::HandVxlan;
use hosts::{underlay_ip, Cluster};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const IPERF_PORT: u16 = 5201;

/// One place to measure between: the namespace of the client and of the server, the
/// server's address.
struct Path<'a> {
    client: &'a str,
    server: &'a str,
    addr: Ipv4Addr,
    /// The routers' pids, whose CPU the single-stream run measures (none: not measured).
    routers: Vec<u32>,
}

/// CPU seconds (user + system) process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn router_pids(c: &Cluster) -> Vec<u32> {
    c.hosts
        .iter()
        .filter_map(|h| h.router.as_ref()?.child.as_ref().map(|ch| ch.id()))
        .collect()
}

/// Ours as an operator runs it: `n` fresh hosts with meshed routers (one ring, one
/// allocation range for the whole cluster) launched with `flags`, one container per host.
fn meshed(n: usize, flags: &[&str]) -> Cluster {
    let mut c = Cluster::new(n);
    for k in 1..=n {
        c.start_meshed_router(k, flags);
    }
    for k in 1..=n {
        let r = c.host(k).router.as_ref().unwrap();
        let ok = (0..80).any(|_| {
            let (code, _) = hosts::req(r, "GET", "/ring");
            code == 200 || {
                std::thread::sleep(Duration::from_millis(250));
                false
            }
        });
        assert!(ok, "no IPAM ring on host {k} of {n} ({flags:?})");
    }
    for (k, name) in (1..=n).zip(["a", "b", "c"]) {
        c.add_container(k, name);
    }
    c
}

/// Ours with a password on two hosts (the encrypted path).
fn encrypted_pair() -> Cluster {
    meshed(2, &["--password", "wvt-bench-password"])
}

/// An `iperf3 -s` inside a namespace, killed on drop.
struct IperfServer(Child);

impl IperfServer {
    fn start(ns: &str) -> IperfServer {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "iperf3", "-s", "-p"])
            .arg(IPERF_PORT.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn iperf3 server");
        IperfServer(child)
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Several streams, with two CPUs or more: iperf3's client on CPU 0 and its server on CPU 1
/// (`-A 0,1`), the same placement for every path. Left to the scheduler, four-stream runs
/// were bimodal on a 2-CPU machine (client and server sharing a CPU or not), which flipped a
/// median of three. A single stream is left alone: unpinned it was steady (the scheduler
/// keeps client and server together), pinned apart it ran at half the speed.
fn pinning() -> Vec<&'static str> {
    match std::thread::available_parallelism() {
        Ok(n) if n.get() >= 2 => vec!["-A", "0,1"],
        _ => vec![],
    }
}

/// TCP throughput in Gbit/s (receiver side) of `streams` parallel streams for `seconds`.
fn iperf(path: &Path, streams: u32, seconds: u32) -> f64 {
    let _server = IperfServer::start(path.server);
    let limit = (seconds + 15).to_string();
    for attempt in 0.. {
        let out = Command::new("timeout")
            .args([
                limit.as_str(),
                "ip",
                "netns",
                "exec",
                path.client,
                "iperf3",
                "-J",
            ])
            .args(["-c", &path.addr.to_string(), "-p", &IPERF_PORT.to_string()])
            .args(["-t", &seconds.to_string(), "-P", &streams.to_string()])
            .args(if streams > 1 { pinning() } else { vec![] })
            .output()
            .expect("run iperf3 client");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(bps) = json["end"]["sum_received"]["bits_per_second"].as_f64() {
            return bps / 1e9;
        }
        // The server may not be listening yet: retry a few times, then give up loudly.
        assert!(
            attempt < 20,
            "iperf3 to {} failed: {}{}",
            path.addr,
            json["error"],
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    unreachable!()
}

/// Single-stream throughput of `ours` over `hand` in `pairs` back-to-back pairs of runs (who
/// goes first alternates): each pair's ratio, and their median. One stream's rate on this
/// two-core machine swings by 10-20% from run to run, and the machine itself speeds up and
/// slows down over minutes; the rounds above run a path's single stream several minutes
/// apart from its reference's, where a pair is seconds apart.
fn paired_ratio(ours: &Path, hand: &Path, pairs: usize, seconds: u32) -> (f64, Vec<f64>) {
    let ratios: Vec<f64> = (0..pairs)
        .map(|k| {
            if k % 2 == 0 {
                let a = iperf(ours, 1, seconds);
                a / iperf(hand, 1, seconds)
            } else {
                let b = iperf(hand, 1, seconds);
                iperf(ours, 1, seconds) / b
            }
        })
        .collect();
    (median(&ratios), ratios)
}

/// Average ping RTT in milliseconds.
fn ping_ms(path: &Path, count: u32) -> f64 {
    let out = Command::new("timeout")
        .args([
            "30",
            "ip",
            "netns",
            "exec",
            path.client,
            "ping",
            "-q",
            "-i",
            "0.01",
        ])
        .args(["-c", &count.to_string(), "-w", "20", &path.addr.to_string()])
        .output()
        .expect("run ping");
    let text = String::from_utf8_lossy(&out.stdout);
    // rtt min/avg/max/mdev = 0.031/0.045/0.090/0.012 ms
    text.lines()
        .find_map(|l| l.split_once(" = ").filter(|(k, _)| k.starts_with("rtt")))
        .and_then(|(_, v)| v.split('/').nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("ping to {} failed: {text}", path.addr))
}

/// Ours on two hosts with the kernel VXLAN (`--dataplane vxlan`: no routed path between
/// these neighbours).
fn weave_pair() -> Cluster {
    meshed(2, &["--dataplane", "vxlan"])
}

/// The routed path: two meshed routers (ring by consensus, `--dataplane auto`) on one
/// subnet, one container each; waits until each routes the other's container.
fn routed_pair() -> Cluster {
    let c = meshed(2, &["--dataplane", "auto"]);
    for (k, other) in [(1, 1), (2, 0)] {
        let addr = c.containers[other].ip;
        let gw = underlay_ip(3 - k);
        let routed = (0..200).any(|_| {
            let r = c.host(k).ns.sh(&format!("ip -4 route get {addr}"));
            r.contains(&format!("via {gw} ")) || {
                std::thread::sleep(Duration::from_millis(100));
                false
            }
        });
        assert!(routed, "h{k} never routed {addr} via {gw}");
    }
    c
}

/// Ours on three hosts of one subnet with `--dataplane vxlan`, measured between the first
/// two (issue 15: ">= 0.95 of a hand-built VXLAN, three hosts as well as two").
fn vxlan_trio() -> Cluster {
    meshed(3, &["--dataplane", "vxlan"])
}

/// `--hold FILE`: ours, the hand-made VXLAN and the routed pair, kept until FILE is deleted.
fn hold(file: &str) {
    let ours = weave_pair();
    let c = &ours.containers;
    let mtu: u32 = c[0]
        .ns
        .sh("cat /sys/class/net/eth0/mtu")
        .trim()
        .parse()
        .unwrap();
    let hand = HandVxlan::new(mtu, 2);
    let h = hand.path();
    let routed = routed_pair();
    // A pair of ours: its containers, the server's address, its hosts.
    let describe = |name: &str, p: &Cluster| {
        let c = &p.containers;
        println!(
            "{name}: {} -> {} {} (hosts {} {})",
            c[0].ns.name,
            c[1].ns.name,
            c[1].ip,
            p.host(1).ns.name,
            p.host(2).ns.name
        );
    };
    describe("routed", &routed);
    describe("ours", &ours);
    println!("hand: {} -> {} {}", h.client, h.server, h.addr);
    while std::path::Path::new(file).exists() {
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Between a cluster's two containers, measuring its routers' CPU or not.
fn pair_path(c: &Cluster, cpu: bool) -> Path<'_> {
    Path {
        client: &c.containers[0].ns.name,
        server: &c.containers[1].ns.name,
        addr: c.containers[1].ip,
        routers: if cpu { router_pids(c) } else { vec![] },
    }
}

struct Row {
    name: &'static str,
    tcp1: Vec<f64>,
    tcp4: Vec<f64>,
    ping: Vec<f64>,
    /// Both routers' CPU during the single-stream run, % of one core.
    cpu: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let smoke = args.iter().any(|a| a == "--smoke");
    let seconds: u32 = arg("--seconds")
        .map(|s| s.parse().expect("--seconds N"))
        .unwrap_or(if smoke { 1 } else { 5 });
    let rounds: usize = arg("--rounds")
        .map(|s| s.parse().expect("--rounds N"))
        .unwrap_or(if smoke { 1 } else { 3 });
    let json_out = arg("--json").unwrap_or_else(|| "target/bench/dataplane.json".into());
    let pings = if smoke { 10 } else { 200 };
    // Only our VXLAN and the encrypted path (their ratio), for quick runs while tuning it.
    let encrypted_only = args.iter().any(|a| a == "--encrypted-only");

    if let Some(file) = arg("--hold") {
        hold(&file);
        return;
    }
    let ours = weave_pair();
    let a = 0;
    let full = !encrypted_only;
    let bare = full.then(weave_pair);
    for k in 1..=2 {
        if let Some(bare) = &bare {
            bare.host(k).ns.sh(
                "sysctl -qw net.bridge.bridge-nf-call-iptables=0 2>/dev/null; \
                 nft delete table ip weave; iptables -w 10 -F && iptables -w 10 -t nat -F",
            );
        }
    }
    let mtu: u32 = ours.containers[a]
        .ns
        .sh("cat /sys/class/net/eth0/mtu")
        .trim()
        .parse()
        .unwrap();
    let hand = full.then(|| HandVxlan::new(mtu, 2));
    let hand3 = full.then(|| HandVxlan::new(mtu, 3));
    let trio = full.then(vxlan_trio);
    // The encrypted routers inherit it (set before they start, read once by each).
    let trace = args.iter().any(|a| a == "--trace").then(|| {
        let prefix = std::env::current_dir()
            .expect("current dir")
            .join("target/bench/sleeve-trace");
        std::fs::create_dir_all(prefix.parent().unwrap()).expect("create trace dir");
        std::env::set_var("WEAVE_SLEEVE_TRACE", &prefix);
        prefix
    });
    let enc = encrypted_pair();
    std::env::remove_var("WEAVE_SLEEVE_TRACE");
    let tracked = full.then(weave_pair);
    for k in 1..=2 {
        if let Some(tracked) = &tracked {
            tracked
                .host(k)
                .ns
                .sh("nft flush chain ip weave prerouting && nft flush chain ip weave output && \
                 nft add rule ip weave prerouting ip saddr 10.32.0.0/12 ip daddr 10.32.0.0/12 notrack");
        }
    }
    // Ours without the VXLAN receive bypass: the bridge forwards every frame.
    std::env::set_var("WEAVE_VXLAN_BPF", "off");
    let unbypassed = full.then(weave_pair);
    std::env::remove_var("WEAVE_VXLAN_BPF");
    let routed = full.then(routed_pair);
    // The same routed pair without the forwarder: the kernel's IP stack forwards.
    std::env::set_var("WEAVE_ROUTED_BPF", "off");
    let routed_kernel = full.then(routed_pair);
    std::env::set_var("WEAVE_ROUTED_BPF", "bridge");
    let routed_bridge = full.then(routed_pair);
    std::env::remove_var("WEAVE_ROUTED_BPF");

    let mut paths = vec![("weave (ours)", pair_path(&ours, true))];
    if let (
        Some(hand),
        Some(bare),
        Some(tracked),
        Some(unbypassed),
        Some(routed),
        Some(routed_kernel),
        Some(routed_bridge),
        Some(hand3),
        Some(trio),
    ) = (
        &hand,
        &bare,
        &tracked,
        &unbypassed,
        &routed,
        &routed_kernel,
        &routed_bridge,
        &hand3,
        &trio,
    ) {
        paths.extend([
            ("hand vxlan", hand.path()),
            ("ours, no netfilter", pair_path(bare, false)),
            (
                "underlay veth",
                Path {
                    client: &ours.host(1).ns.name,
                    server: &ours.host(2).ns.name,
                    addr: underlay_ip(2),
                    routers: vec![],
                },
            ),
            ("ours, vxlan tracked", pair_path(tracked, true)),
            ("ours, no bypass", pair_path(unbypassed, true)),
            ("routed (ours)", pair_path(routed, true)),
            ("routed, kernel fwd", pair_path(routed_kernel, true)),
            ("routed, bridge only", pair_path(routed_bridge, true)),
            ("ours, 3 hosts", pair_path(trio, true)),
            ("hand vxlan, 3 hosts", hand3.path()),
        ]);
    }
    paths.push(("encrypted (ours)", pair_path(&enc, true)));
    let mut rows: Vec<Row> = paths
        .iter()
        .map(|(name, _)| Row {
            name,
            tcp1: vec![],
            tcp4: vec![],
            ping: vec![],
            cpu: vec![],
        })
        .collect();
    // Warm up ARP/FDB on every path, then interleave the variants round by round so a noisy
    // moment on this machine hits them all alike.
    for (_, p) in &paths {
        ping_ms(p, 3);
    }
    for round in 1..=rounds {
        eprintln!("dataplane: round {round}/{rounds} ({seconds} s per iperf3 run)");
        // Rotate who goes first, so no variant always gets the warm (or the cold) slot.
        for i in 0..paths.len() {
            let v = (i + round) % paths.len();
            let p = &paths[v].1;
            let cpu0: f64 = p.routers.iter().map(|&pid| cpu_seconds(pid)).sum();
            rows[v].tcp1.push(iperf(p, 1, seconds));
            if !p.routers.is_empty() {
                let used = p.routers.iter().map(|&pid| cpu_seconds(pid)).sum::<f64>() - cpu0;
                rows[v].cpu.push(100.0 * used / f64::from(seconds));
            }
            rows[v].tcp4.push(iperf(p, 4, seconds));
            rows[v].ping.push(ping_ms(p, pings));
        }
    }

    println!(
        "\ncross-host data plane, 2 hosts (3 where named), MTU {mtu}, median of {rounds} round(s) of {seconds} s"
    );
    println!(
        "{:<20} {:>14} {:>14} {:>12} {:>16}",
        "path", "tcp 1 (Gb/s)", "tcp 4 (Gb/s)", "ping (ms)", "router cpu (%)"
    );
    let mut report = serde_json::Map::new();
    for r in &rows {
        let (t1, t4, p) = (median(&r.tcp1), median(&r.tcp4), median(&r.ping));
        let cpu = (!r.cpu.is_empty()).then(|| median(&r.cpu));
        let cpu_text = cpu.map_or("-".to_string(), |c| format!("{c:.0}"));
        println!(
            "{:<20} {t1:>14.2} {t4:>14.2} {p:>12.3} {cpu_text:>16}",
            r.name
        );
        report.insert(
            r.name.to_string(),
            serde_json::json!({
                "tcp1_gbps": t1, "tcp4_gbps": t4, "ping_avg_ms": p,
                "tcp1_runs": r.tcp1, "tcp4_runs": r.tcp4, "ping_runs": r.ping,
                "router_cpu_pct_tcp1": cpu,
            }),
        );
    }
    // The encrypted path against our plain VXLAN (index 0) in the same run.
    let e = rows.len() - 1;
    let over_ours = |f: fn(&Row) -> &Vec<f64>| median(f(&rows[e])) / median(f(&rows[0]));
    let (e1, e4) = (over_ours(|r| &r.tcp1), over_ours(|r| &r.tcp4));
    let added_ms = median(&rows[e].ping) - median(&rows[0].ping);
    println!(
        "{:<20} {e1:>14.3} {e4:>14.3} {added_ms:>+12.3}   (target: tcp 1 >= 0.3: {}; added latency < 0.1 ms: {})",
        "encrypted/ours",
        if e1 >= 0.3 { "ok" } else { "BELOW" },
        if added_ms < 0.1 { "ok" } else { "ABOVE" }
    );
    report.insert(
        "ratio_encrypted_over_ours".into(),
        serde_json::json!({"tcp1": e1, "tcp4": e4, "added_ping_ms": added_ms, "target_tcp1": 0.3}),
    );
    if !encrypted_only {
        let over = |i: usize, j: usize, f: fn(&Row) -> &Vec<f64>| {
            median(f(&rows[i])) / median(f(&rows[j]))
        };
        let at = |name: &str| rows.iter().position(|r| r.name == name).expect("row");
        let (ours_i, hand_i) = (at("weave (ours)"), at("hand vxlan"));
        let ratio = |i: usize, f: fn(&Row) -> &Vec<f64>| over(i, hand_i, f);
        let (r1, r4) = (ratio(ours_i, |r| &r.tcp1), ratio(ours_i, |r| &r.tcp4));
        let bare_i = at("ours, no netfilter");
        let (b1, b4) = (ratio(bare_i, |r| &r.tcp1), ratio(bare_i, |r| &r.tcp4));
        let tracked_i = at("ours, vxlan tracked");
        let (t1, t4) = (ratio(tracked_i, |r| &r.tcp1), ratio(tracked_i, |r| &r.tcp4));
        let (routed_i, underlay_i) = (at("routed (ours)"), at("underlay veth"));
        let (u1, u4) = (
            over(routed_i, underlay_i, |r| &r.tcp1),
            over(routed_i, underlay_i, |r| &r.tcp4),
        );
        let (trio_i, hand3_i) = (at("ours, 3 hosts"), at("hand vxlan, 3 hosts"));
        let (h1, h4) = (
            over(trio_i, hand3_i, |r| &r.tcp1),
            over(trio_i, hand3_i, |r| &r.tcp4),
        );
        let verdict = |r: f64, target: f64| if r >= target { "met" } else { "NOT MET" };
        println!(
            "{:<20} {:>14.3} {:>14.3}   (target tcp >= 0.95: {}, {})",
            "ours/hand",
            r1,
            r4,
            verdict(r1, 0.95),
            verdict(r4, 0.95)
        );
        println!(
            "{:<20} {:>14.3} {:>14.3}   (target tcp >= 0.95: {}, {})",
            "ours/hand, 3 hosts",
            h1,
            h4,
            verdict(h1, 0.95),
            verdict(h4, 0.95)
        );
        report.insert(
            "ratio_ours_over_hand_3_hosts".into(),
            serde_json::json!({"tcp1": h1, "tcp4": h4, "target": 0.95, "met": h1 >= 0.95 && h4 >= 0.95}),
        );
        // The single stream again, in back-to-back pairs (see `paired_ratio`).
        let pairs = if smoke { 1 } else { 7 };
        let pair_seconds = seconds.min(3);
        // The bypass against ours without it has no target: it is how the VXLAN path gets
        // to its own.
        let unbypassed_i = at("ours, no bypass");
        let bridge_only_i = at("routed, bridge only");
        for (label, key, ours_p, other_p, target) in [
            (
                "ours/hand, paired",
                "ratio_ours_over_hand_paired",
                &paths[ours_i].1,
                &paths[hand_i].1,
                Some(0.95),
            ),
            (
                "ours/hand, 3h, paired",
                "ratio_ours_over_hand_3_hosts_paired",
                &paths[trio_i].1,
                &paths[hand3_i].1,
                Some(0.95),
            ),
            (
                "bypass/none, paired",
                "ratio_bypass_over_no_bypass_paired",
                &paths[ours_i].1,
                &paths[unbypassed_i].1,
                None,
            ),
            (
                "routed/underlay, paired",
                "ratio_routed_over_underlay_paired",
                &paths[routed_i].1,
                &paths[underlay_i].1,
                Some(0.9),
            ),
            // The forwarder on the ports against the bridge only: what skipping the sending
            // host's bridge gives.
            (
                "ports/bridge, paired",
                "ratio_ports_over_bridge_only_paired",
                &paths[routed_i].1,
                &paths[bridge_only_i].1,
                None,
            ),
        ] {
            let (m, all) = paired_ratio(ours_p, other_p, pairs, pair_seconds);
            let each: Vec<String> = all.iter().map(|r| format!("{r:.3}")).collect();
            let judged = target
                .map(|t| format!("; target >= {t}: {}", verdict(m, t)))
                .unwrap_or_default();
            println!(
                "{label:<23} {m:>11.3} {:>14}   (tcp 1, median of {pairs} back-to-back pairs of \
                 {pair_seconds} s: {}{judged})",
                "-",
                each.join(" "),
            );
            let mut entry = serde_json::json!({"tcp1": m, "pairs": all, "seconds": pair_seconds});
            if let Some(t) = target {
                entry["target"] = t.into();
                entry["met"] = (m >= t).into();
            }
            report.insert(key.into(), entry);
        }
        println!(
            "{:<20} {b1:>14.3} {b4:>14.3}   (the VXLAN path alone)",
            "no-nf/hand"
        );
        println!(
            "{:<20} {t1:>14.3} {t4:>14.3}   (VXLAN packets through conntrack, as before)",
            "tracked/hand"
        );
        println!(
            "{:<20} {u1:>14.3} {u4:>14.3}   (target tcp 1 >= 0.9: {})",
            "routed/underlay",
            verdict(u1, 0.9)
        );
        let kernel_i = at("routed, kernel fwd");
        let (k1, k4) = (
            over(kernel_i, underlay_i, |r| &r.tcp1),
            over(kernel_i, underlay_i, |r| &r.tcp4),
        );
        println!(
            "{:<20} {k1:>14.3} {k4:>14.3}   (without the forwarder: the hosts' IP stacks forward)",
            "kernel fwd/underlay"
        );
        report.insert(
            "ratio_routed_over_underlay".into(),
            serde_json::json!({"tcp1": u1, "tcp4": u4, "target_tcp1": 0.9, "met": u1 >= 0.9}),
        );
        report.insert(
            "ratio_routed_kernel_forwarding_over_underlay".into(),
            serde_json::json!({"tcp1": k1, "tcp4": k4}),
        );
        report.insert(
            "ratio_ours_tracked_over_hand".into(),
            serde_json::json!({"tcp1": t1, "tcp4": t4}),
        );
        report.insert(
            "ratio_ours_no_netfilter_over_hand".into(),
            serde_json::json!({"tcp1": b1, "tcp4": b4}),
        );
        report.insert(
        "ratio_ours_over_hand".into(),
        serde_json::json!({"tcp1": r1, "tcp4": r4, "target": 0.95, "met": r1 >= 0.95 && r4 >= 0.95}),
    );
    }
    if let Some(prefix) = &trace {
        // Give the routers' trace threads time to write out the last pings.
        std::thread::sleep(Duration::from_millis(500));
        let pids = router_pids(&enc);
        let span = sleeve_trace::report(prefix, [pids[0], pids[1]]);
        println!(
            "median span from the request's TAP read to the reply's TAP write: {span:.3} ms \
             (encrypted ping median {:.3} ms)",
            median(&rows[e].ping)
        );
    }
    report.insert(
        "settings".into(),
        serde_json::json!({"seconds": seconds, "rounds": rounds, "mtu": mtu, "pings": pings}),
    );
    if let Some(dir) = std::path::Path::new(&json_out).parent() {
        std::fs::create_dir_all(dir).expect("create json dir");
    }
    std::fs::write(
        &json_out,
        serde_json::to_string_pretty(&report).expect("encode json"),
    )
    .unwrap_or_else(|e| panic!("write {json_out}: {e}"));
    println!("wrote {json_out}");
}
