//! The router: allocations per second through the HTTP API over loopback inside a `wvb-*`
//! namespace (sequential, and 16 concurrent clients), beside the reference `host-local`
//! IPAM plugin run once per allocation (what `bridge` does); resident memory of `weaver`
//! idle, after 10,000 allocations, and after 1,000 attachments more (issue 15: at most
//! 15 MB); time from `weave launch` to ready (`/status` 200),
//! beside starting `weaver` by hand and polling it, median of 5. Needs root.
//!
//! Usage: cargo bench --bench router -- [--allocations N] [--reference-allocations N]
//!        [--attachments N] [--launches N] [--json FILE]

mod common;

use common::{call, cni_env, median, report, Ns, Row, Target, REF_DIR};
use serde_json::json;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weave::api::Client;

const CLIENTS: usize = 16;
/// Issue 15: the router stays within 15 MB RSS with 10,000 allocations and 1,000 attachments.
const RSS_LIMIT_KIB: f64 = 15.0 * 1024.0;

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> f64 {
    common::proc_status_kib(&pid.to_string(), "VmRSS").expect("VmRSS in /proc/<pid>/status") as f64
}

/// `n` allocations spread over `clients` threads; returns allocations per second and the
/// addresses (checked unique by the caller).
fn allocate_many(prefix: &str, n: usize, clients: usize) -> (f64, Vec<String>) {
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let prefix = prefix.to_string();
            std::thread::spawn(move || {
                let client = Client::new("127.0.0.1:6784")
                    .with_timeouts(Duration::from_secs(2), Duration::from_secs(10));
                (0..n)
                    .filter(|i| i % clients == c)
                    .map(|i| {
                        let id = format!("{prefix}-{i}");
                        client
                            .allocate(&id, None)
                            .unwrap_or_else(|e| panic!("allocate {id}: {e}"))
                            .to_string()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ips: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("an allocation failed (see above)"))
        .collect();
    (n as f64 / started.elapsed().as_secs_f64(), ips)
}

/// `n` containers attached the way `weave-net` ADD does it (one call: address and record),
/// all in `netns` and with host veths that exist nowhere (the sweep needs two sightings 30 s
/// apart before it would release them, longer than this takes).
fn attach_many(n: usize, netns: &str) {
    let client = Client::new("127.0.0.1:6784")
        .with_timeouts(Duration::from_secs(2), Duration::from_secs(10));
    for i in 0..n {
        let id = format!("{i:064x}");
        let a = weave::attachment::Attachment {
            container_id: id.clone(),
            ifname: "eth0".into(),
            host_veth: format!("vethwepl{i}"),
            mac: String::new(),
            ips: Vec::new(),
            netns: netns.into(),
            ipam_id: String::new(),
        };
        client
            .allocate_attached(&id, None, &a)
            .unwrap_or_else(|e| panic!("attach {id}: {e}"));
    }
}

/// The reference: `host-local` ADDs, one process per allocation, from `clients` threads.
fn host_local_many(host: &Ns, dir: &std::path::Path, n: usize, clients: usize) -> f64 {
    let fd = Arc::new(host.fd());
    let conf = json!({"cniVersion":"1.0.0","name":"refipam","type":"host-local",
        "ipam":{"type":"host-local","subnet":"10.90.0.0/16","dataDir":dir}})
    .to_string();
    // host-local reads its config from `ipam`, as bridge passes it.
    let conf = Arc::new(conf);
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (fd, conf) = (fd.clone(), conf.clone());
            let bin = format!("{REF_DIR}/host-local");
            std::thread::spawn(move || {
                for i in (0..n).filter(|i| i % clients == c) {
                    let id = format!("ref-{i}");
                    call(&fd, &bin, &cni_env("ADD", &id, "/dev/null"), &conf);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a host-local call failed (see above)");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn assert_unique(ips: &[String]) {
    let mut sorted = ips.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        ips.len(),
        "the router handed an address out twice"
    );
}

/// Milliseconds from spawning `cmd` (in `ns`) until `/status` answers 200. `weave launch`
/// leaves its detached router running (killed with the namespace); a router started by
/// hand is stopped once measured.
fn launch_to_ready(ns: &Ns, cmd: &[&str], datadir: &std::path::Path, wait_ready: bool) -> f64 {
    let started = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .args(cmd)
        .env("WEAVE_DATADIR", datadir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn launch");
    if !wait_ready {
        // `weave launch` returns once `/status` is 200.
        let out = child.wait_with_output().expect("wait for weave launch");
        assert!(
            out.status.success(),
            "weave launch failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return started.elapsed().as_secs_f64() * 1e3;
    }
    let client = Client::new("127.0.0.1:6784")
        .with_timeouts(Duration::from_millis(200), Duration::from_secs(1));
    let deadline = started + Duration::from_secs(20);
    let ready = loop {
        if let Ok((200, _)) = client.status(None) {
            break Ok(started.elapsed().as_secs_f64() * 1e3);
        }
        if child.try_wait().ok().flatten().is_some() {
            break Err("weaver exited before it was ready");
        }
        if Instant::now() >= deadline {
            break Err("weaver not ready after 20 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // Measured: the router is not needed any more.
    let _ = child.kill();
    let _ = child.wait();
    ready.unwrap_or_else(|e| panic!("{e}"))
}

fn main() {
    common::cleanup_on_panic();
    common::require_root("the router benchmark");
    common::require_reference_plugins(&["host-local"]);
    let total: usize = common::arg("--allocations")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let ref_n: usize = common::arg("--reference-allocations")
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let attachments: usize = common::arg("--attachments")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let launches: usize = common::arg("--launches")
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let json_out = common::arg("--json");
    let (weave_cli, weaver) = (env!("CARGO_BIN_EXE_weave"), env!("CARGO_BIN_EXE_weaver"));
    let tag = std::process::id();
    let data = tempfile::Builder::new().prefix("wvb-").tempdir().unwrap();

    // Allocation throughput and memory: one router, the bench's threads in its namespace.
    let host = Ns::new(format!("wvb-rt-{tag}"));
    let mut router = common::start_weaver(&host, weaver, data.path());
    let pid = router.id();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(
        comm.trim(),
        "weaver",
        "pid {pid} is weaver (ip netns exec execs it)"
    );
    common::enter(&host);
    allocate_many("warm", 10, 1);
    let rss_idle = rss_kib(pid);
    let half = total / 2;
    let (seq_rate, mut ips) = allocate_many("seq", half, 1);
    let (conc_rate, more) = allocate_many("conc", total - half, CLIENTS);
    ips.extend(more);
    assert_unique(&ips);
    std::thread::sleep(Duration::from_millis(200));
    let rss_after = rss_kib(pid);
    attach_many(attachments, &format!("/var/run/netns/{}", host.0));
    std::thread::sleep(Duration::from_millis(200));
    let rss_attached = rss_kib(pid);
    let _ = router.kill();
    let _ = router.wait();
    common::leave();

    let hl = data.path().join("host-local");
    let ref_seq = host_local_many(&host, &hl.join("seq"), ref_n, 1);
    let ref_conc = host_local_many(&host, &hl.join("conc"), ref_n, CLIENTS);
    drop(host);

    // Launch to ready: a fresh namespace each time so every launch starts cold.
    let (mut cli_ms, mut direct_ms) = (Vec::new(), Vec::new());
    for i in 0..launches {
        let ns = Ns::new(format!("wvb-rl-{i}-{tag}"));
        common::enter(&ns);
        let dir = data.path().join(format!("launch-{i}"));
        cli_ms.push(launch_to_ready(
            &ns,
            &[weave_cli, "launch", "--no-cni-setup"],
            &dir,
            false,
        ));
        let _ = Command::new("ip")
            .args(["netns", "exec", &ns.0, weave_cli, "stop"])
            .env("WEAVE_DATADIR", &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        common::leave();
        drop(ns);
        let ns = Ns::new(format!("wvb-rd-{i}-{tag}"));
        common::enter(&ns);
        let dir = data.path().join(format!("direct-{i}"));
        let dir_arg = format!("--datadir={}", dir.display());
        direct_ms.push(launch_to_ready(&ns, &[weaver, &dir_arg], &dir, true));
        common::leave();
        drop(ns);
    }

    let rows = vec![
        Row::new("allocations/s, sequential", "1/s", seq_rate).vs(
            "host-local",
            ref_seq,
            Target::None,
        ),
        Row::new(
            format!("allocations/s, {CLIENTS} clients"),
            "1/s",
            conc_rate,
        )
        .vs("host-local", ref_conc, Target::None),
        Row::new("weaver VmRSS idle", "KiB", rss_idle),
        Row::new(
            format!("weaver VmRSS after {total} allocations"),
            "KiB",
            rss_after,
        )
        .vs("idle", rss_idle, Target::None),
        Row::new(
            format!("weaver VmRSS after {total} allocations and {attachments} attachments"),
            "KiB",
            rss_attached,
        )
        .vs("issue 15 limit", RSS_LIMIT_KIB, Target::AtMost(1.0)),
        Row::new("weave launch to ready (median)", "ms", median(&cli_ms)).vs(
            "weaver by hand",
            median(&direct_ms),
            Target::None,
        ),
    ];
    report(
        "router",
        &format!(
            "Router: HTTP API allocations over loopback ({total} in all, half sequential, half \
             from {CLIENTS} clients; host-local: {ref_n} each), memory (then {attachments} \
             attachments), launch (median of {launches})"
        ),
        &rows,
        json!({"allocations": total, "reference_allocations": ref_n, "launch_ms": cli_ms,
               "weaver_by_hand_ms": direct_ms, "rss_idle_kib": rss_idle, "rss_after_kib": rss_after,
               "attachments": attachments, "rss_attached_kib": rss_attached}),
        json_out.as_deref(),
    );
}
