//! CNI ADD and DEL latency, process start to exit: our `weave-net` (router running) beside
//! the reference `bridge` + `host-local` plugins (Debian's containernetworking-plugins, with
//! and without ipMasq, and with portmap chained) and the bare `loopback` plugin as the
//! process-start floor. Runs on a simulated host (a `wvb-*` namespace); prints a table and
//! writes JSON. Needs root. `bench/run` is the front door.
//!
//! Usage: cargo bench --bench cni_latency -- [--iterations N] [--json FILE]

mod common;

use common::{call, cni_env as env, stats, Ns, REF_DIR};
use std::os::fd::OwnedFd;

use std::time::{Duration, Instant};

/// Wall time of one plugin run, from spawn to exit.
fn timed(host: &OwnedFd, bin: &str, env: &[(&str, &str)], stdin: &str) -> Duration {
    call(host, bin, env, stdin).1
}

#[derive(Default)]
struct Series {
    add: Vec<f64>,
    del: Vec<f64>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let n: usize = arg("--iterations")
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let json_out = arg("--json");
    assert!(
        nix::unistd::geteuid().is_root(),
        "the CNI benchmark needs root"
    );
    for p in ["bridge", "host-local", "loopback", "portmap"] {
        assert!(
            std::path::Path::new(REF_DIR).join(p).exists(),
            "reference plugin {REF_DIR}/{p} missing: apt-get install containernetworking-plugins"
        );
    }
    let weave_net = env!("CARGO_BIN_EXE_weave-net");
    let weaver = env!("CARGO_BIN_EXE_weaver");

    let host = Ns::new(format!("wvb-host-{}", std::process::id()));
    let host_fd: OwnedFd = std::fs::File::open(host.path()).unwrap().into();
    let data = tempfile::Builder::new().prefix("wvb-").tempdir().unwrap();
    let mut router = common::start_weaver(&host, weaver, data.path());

    let ours = r#"{"cniVersion":"1.0.0","name":"weave","type":"weave-net","hairpinMode":true}"#
        .to_string();
    let hl_dir = data.path().join("host-local");
    let bridge_conf = |masq: bool| {
        serde_json::json!({"cniVersion":"1.0.0","name":"refnet","type":"bridge","bridge":"cni-ref0",
            "isGateway":true,"ipMasq":masq,"hairpinMode":true,
            "ipam":{"type":"host-local","subnet":"10.88.0.0/16","dataDir":hl_dir}})
        .to_string()
    };
    let (plain, masq) = (bridge_conf(false), bridge_conf(true));
    let lo = r#"{"cniVersion":"1.0.0","name":"lo","type":"loopback"}"#;

    let names = [
        "weave-net",
        "bridge+host-local",
        "bridge+host-local+ipMasq",
        "bridge+host-local+portmap",
        "loopback",
    ];
    let mut series: Vec<Series> = names.iter().map(|_| Series::default()).collect();
    let ref_bin = |p: &str| format!("{REF_DIR}/{p}");
    let (bridge_bin, portmap_bin, lo_bin) =
        (ref_bin("bridge"), ref_bin("portmap"), ref_bin("loopback"));

    // Warm-up: creates bridges and caches, not measured.
    {
        let c = Ns::new(format!("wvb-warm-{}", std::process::id()));
        let p = c.path();
        timed(&host_fd, weave_net, &env("ADD", "warm", &p), &ours);
        timed(&host_fd, weave_net, &env("DEL", "warm", &p), &ours);
        timed(&host_fd, &bridge_bin, &env("ADD", "warm", &p), &plain);
        timed(&host_fd, &bridge_bin, &env("DEL", "warm", &p), &plain);
    }
    for i in 0..n {
        // One fresh container namespace per variant per iteration; variants interleaved.
        let cs: Vec<Ns> = (0..names.len())
            .map(|k| Ns::new(format!("wvb-c{k}-{i}-{}", std::process::id())))
            .collect();
        let id = format!("bench-{i}");
        for (k, name) in names.iter().enumerate() {
            let p = cs[k].path();
            let (add, del) = match *name {
                "weave-net" => (
                    timed(&host_fd, weave_net, &env("ADD", &id, &p), &ours),
                    timed(&host_fd, weave_net, &env("DEL", &id, &p), &ours),
                ),
                "bridge+host-local" => (
                    timed(&host_fd, &bridge_bin, &env("ADD", &id, &p), &plain),
                    timed(&host_fd, &bridge_bin, &env("DEL", &id, &p), &plain),
                ),
                "bridge+host-local+ipMasq" => (
                    timed(&host_fd, &bridge_bin, &env("ADD", &id, &p), &masq),
                    timed(&host_fd, &bridge_bin, &env("DEL", &id, &p), &masq),
                ),
                "bridge+host-local+portmap" => {
                    let t0 = Instant::now();
                    let out = call(&host_fd, &bridge_bin, &env("ADD", &id, &p), &plain).0;
                    let pm = serde_json::json!({"cniVersion":"1.0.0","name":"refnet","type":"portmap",
                        "capabilities":{"portMappings":true},"snat":true,
                        "runtimeConfig":{"portMappings":[{"hostPort":20000 + i as u16,"containerPort":80,"protocol":"tcp"}]},
                        "prevResult": serde_json::from_str::<serde_json::Value>(&out).unwrap()})
                    .to_string();
                    timed(&host_fd, &portmap_bin, &env("ADD", &id, &p), &pm);
                    let add = t0.elapsed();
                    let t1 = Instant::now();
                    timed(&host_fd, &portmap_bin, &env("DEL", &id, &p), &pm);
                    timed(&host_fd, &bridge_bin, &env("DEL", &id, &p), &plain);
                    (add, t1.elapsed())
                }
                _ => (
                    timed(&host_fd, &lo_bin, &env("ADD", &id, &p), lo),
                    timed(&host_fd, &lo_bin, &env("DEL", &id, &p), lo),
                ),
            };
            series[k].add.push(add.as_secs_f64() * 1e3);
            series[k].del.push(del.as_secs_f64() * 1e3);
        }
    }
    let _ = router.kill();
    let _ = router.wait();

    println!(
        "\nCNI latency, process start to exit, {n} sequential containers (ms: median [p10-p90])"
    );
    println!("{:<28} {:>24} {:>24}", "plugin", "ADD", "DEL");
    let mut report = serde_json::Map::new();
    for (k, name) in names.iter().enumerate() {
        let (am, a10, a90) = stats(&series[k].add);
        let (dm, d10, d90) = stats(&series[k].del);
        println!(
            "{name:<28} {:>24} {:>24}",
            format!("{am:.2} [{a10:.2}-{a90:.2}]"),
            format!("{dm:.2} [{d10:.2}-{d90:.2}]")
        );
        report.insert(name.to_string(), serde_json::json!({"add_ms":{"median":am,"p10":a10,"p90":a90},"del_ms":{"median":dm,"p10":d10,"p90":d90}}));
    }
    let (ours_add, _, _) = stats(&series[0].add);
    let (ours_del, _, _) = stats(&series[0].del);
    let (ref_add, _, _) = stats(&series[1].add);
    let (ref_del, _, _) = stats(&series[1].del);
    let (ra, rd) = (ours_add / ref_add, ours_del / ref_del);
    let met = |r: f64, target: f64| if r <= target { "met" } else { "NOT met" };
    println!("\nweave-net / bridge+host-local: ADD {ra:.3} (target <= 0.4: {}), DEL {rd:.3} (target <= 0.4: {}; issue 15: <= 0.6: {})",
        met(ra, 0.4), met(rd, 0.4), met(rd, 0.6));
    report.insert(
        "ratio".into(),
        serde_json::json!({"add": ra, "del": rd, "iterations": n}),
    );
    if let Some(path) = json_out {
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
        println!("JSON written to {path}");
    }
}
