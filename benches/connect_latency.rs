//! `weave connect` to the first cross-host TCP connection, on two simulated hosts.
//!
//! Each run builds two fresh hosts (the multi-host fixture of the tests: `wvt-mh*`
//! namespaces on one underlay bridge, 192.0.2.1-2) and launches both routers WITHOUT peers:
//! - host 1: `--ipalloc-init consensus=1`, so it forms the ring alone; one container is
//!   attached (real `weave-net` plugin) and listens on TCP `PROBE_PORT`;
//! - host 2: `--ipalloc-init observer`: it never claims address space itself, so joining
//!   host 1 cannot produce a second ring or duplicate addresses. An observer cannot
//!   allocate before it has joined a ring, so host 2's container is attached only after
//!   `weave connect` returns (the plugin's ADD waits for the ring and for space that host 1
//!   donates).
//!
//! Measured, per run: t0 = just before `weave connect 192.0.2.1` is spawned on host 2;
//! then the connect command's exit, the ADD of host 2's container (started right after),
//! and the first successful TCP connect from that container to host 1's container
//! (attempts with a 100 ms timeout, 10 ms apart). The figure is t(first TCP) - t0, i.e.
//! mesh handshake + ring gossip + space donation + plugin ADD + VXLAN flood entries + the
//! first SYN/ACK. Median of `--runs` (default 5).
//!
//! Reference, same runs count: two hosts launched with each other as peers from the start
//! (already one mesh and one ring); from the start of host 2's ADD to the first TCP
//! connect. The ratio shows what joining costs over an attach in an existing network.
//!
//! Usage: cargo bench --bench connect_latency -- [--runs N] [--json FILE]
//! `bench/run connect` is the front door. Needs root.

#[path = "common/mod.rs"]
mod bench;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/hosts.rs"]
mod hosts;

use bench::{median, Row, Target};
use common::{in_ns, Router};
use hosts::{mesh_peer_name, underlay_ip, Cluster, FLAT_SUBNET, PROBE_PORT};
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long one run may take to reach host 1's container before it fails.
const REACH_LIMIT: Duration = Duration::from_secs(30);
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(100);
const POLL: Duration = Duration::from_millis(10);

/// Starts `weaver` on host k with a fixed name, the flat range and `extra`.
fn start(c: &mut Cluster, k: usize, extra: &[&str]) {
    let name = mesh_peer_name(k);
    let nick = format!("h{k}");
    let mut args = vec![
        "--ipalloc-range",
        FLAT_SUBNET,
        "--name",
        &name,
        "--nickname",
        &nick,
    ];
    args.extend_from_slice(extra);
    let router = Router::start(&c.hosts[k - 1].ns, &args);
    c.hosts[k - 1].router = Some(router);
}

/// Polls TCP connects from inside `ns` to `to` until one succeeds; when it succeeded.
fn first_tcp(ns: &str, to: Ipv4Addr) -> Instant {
    let addr = SocketAddr::from((to, PROBE_PORT));
    let ns_name = ns.to_string();
    in_ns(ns, move || {
        let deadline = Instant::now() + REACH_LIMIT;
        loop {
            if TcpStream::connect_timeout(&addr, ATTEMPT_TIMEOUT).is_ok() {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "{ns_name} never reached {addr} within {REACH_LIMIT:?}"
            );
            std::thread::sleep(POLL);
        }
    })
}

/// Milliseconds between two instants.
fn ms(from: Instant, to: Instant) -> f64 {
    to.duration_since(from).as_secs_f64() * 1e3
}

struct Join {
    connect_cmd: f64,
    attach: f64,
    total: f64,
}

/// One run of the measured scenario on fresh hosts.
fn join_run() -> Join {
    let mut c = Cluster::new(2);
    start(&mut c, 1, &["--ipalloc-init", "consensus=1"]);
    start(&mut c, 2, &["--ipalloc-init", "observer"]);
    let target = c.add_container(1, "a");
    c.containers[target].listen();
    let target_ip = c.containers[target].ip;
    std::thread::sleep(Duration::from_millis(200)); // the listener binds

    let t0 = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", &c.host(2).ns.name])
        .arg(env!("CARGO_BIN_EXE_weave"))
        .args(["connect", &underlay_ip(1).to_string()])
        .output()
        .expect("run weave connect");
    let connected = Instant::now();
    assert!(
        out.status.success(),
        "weave connect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from = c.add_container(2, "b");
    let attached = Instant::now();
    let reached = first_tcp(&c.containers[from].ns.name, target_ip);
    let ips: Vec<Ipv4Addr> = c.containers.iter().map(|x| x.ip).collect();
    assert_ne!(ips[0], ips[1], "duplicate addresses after the join");
    Join {
        connect_cmd: ms(t0, connected),
        attach: ms(connected, attached),
        total: ms(t0, reached),
    }
}

/// The reference: an attach on host 2 of two hosts meshed from the start; ADD start to
/// first TCP, in ms.
fn meshed_attach_run() -> f64 {
    let mut c = Cluster::new(2);
    start(&mut c, 1, &[&underlay_ip(2).to_string()]);
    start(&mut c, 2, &[&underlay_ip(1).to_string()]);
    let target = c.add_container(1, "a"); // forms the ring (consensus of both)
    c.containers[target].listen();
    let target_ip = c.containers[target].ip;
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    let from = c.add_container(2, "b");
    let reached = first_tcp(&c.containers[from].ns.name, target_ip);
    ms(t0, reached)
}

fn main() {
    bench::require_root("connect_latency");
    bench::cleanup_on_panic();
    let runs: usize = bench::arg("--runs")
        .map(|s| s.parse().expect("--runs N"))
        .unwrap_or(5);
    let json_out = bench::arg("--json");

    let mut joins = Vec::new();
    let mut meshed = Vec::new();
    for i in 1..=runs {
        let j = join_run();
        let m = meshed_attach_run();
        println!(
            "run {i}: connect cmd {:.1} ms, then ADD {:.1} ms, connect -> first TCP {:.1} ms; \
             meshed ADD -> first TCP {m:.1} ms",
            j.connect_cmd, j.attach, j.total
        );
        joins.push(j);
        meshed.push(m);
    }
    let col = |f: fn(&Join) -> f64| joins.iter().map(f).collect::<Vec<f64>>();
    let (total, attach, cmd) = (col(|j| j.total), col(|j| j.attach), col(|j| j.connect_cmd));
    let rows = [
        Row::new(
            "weave connect -> first cross-host TCP",
            "ms",
            median(&total),
        )
        .vs("meshed: ADD -> TCP", median(&meshed), Target::None),
        Row::new("  of which: weave connect command", "ms", median(&cmd)),
        Row::new(
            "  of which: ADD on host 2 (waits for ring)",
            "ms",
            median(&attach),
        ),
    ];
    bench::report(
        "connect",
        &format!("weave connect to the first cross-host packet, 2 hosts, median of {runs}"),
        &rows,
        json!({
            "runs": runs,
            "measured": "t0 = spawn of `weave connect 192.0.2.1` on host 2 (routers launched \
                without peers; host 1 consensus=1 with a listening container, host 2 observer); \
                host 2's container is attached right after connect returns; end = first \
                successful TCP connect from it to host 1's container (100 ms attempts, 10 ms apart)",
            "connect_to_first_tcp_ms": total,
            "connect_command_ms": cmd,
            "add_after_connect_ms": attach,
            "reference_meshed_add_to_first_tcp_ms": meshed,
        }),
        json_out.as_deref(),
    );
}
