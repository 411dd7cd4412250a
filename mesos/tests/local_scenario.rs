//! `weave-mesos scenario` without a master: simulated hosts and agents in `wvt-ls-<pid>-*`
//! namespaces, one meshed `weaver` per host, containers attached by the real weave-net on
//! their agent's host; every namespace is gone afterwards. Needs root and the root crate's
//! binaries (`cargo build --bins`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(
        p.is_file(),
        "{} missing: run `cargo build --bins`",
        p.display()
    );
    p
}

/// Runs the local scenario; returns its JSON report and the namespaces it left (removed).
fn scenario(tag: &str, extra: &[&str]) -> (serde_json::Value, Vec<String>, std::time::Duration) {
    let prefix = format!("wvt-ls-{}-{tag}", std::process::id());
    let started = std::time::Instant::now();
    let out = Command::new("timeout")
        .args([
            "180",
            env!("CARGO_BIN_EXE_weave-mesos"),
            "scenario",
            "--json",
        ])
        .args(extra)
        .args(["--prefix", &prefix, "--weaver"])
        .arg(bin("weaver"))
        .arg("--plugin")
        .arg(bin("weave-net"))
        .output()
        .unwrap();
    let took = started.elapsed();
    let left = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .filter(|l| l.starts_with(&prefix))
    .map(|l| l.split(' ').next().unwrap().to_string())
    .collect::<Vec<_>>();
    for ns in &left {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (serde_json::from_str(&text).unwrap(), left, took)
}

/// The simulated host of an agent (`agentN@<host netns>`).
fn host_of(agent: &serde_json::Value) -> String {
    let h = agent["hostname"].as_str().unwrap();
    h.split_once('@').unwrap().1.to_string()
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test -p weave-mesos --features netns-tests"
)]
fn local_scenario_matrix_spans_hosts_and_cleans_up() {
    let (r, left, took) = scenario("m", &["--agents", "3"]);
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(r["cluster"], "local");
    let hosts: std::collections::BTreeSet<String> = r["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(host_of)
        .collect();
    println!("3 agents on hosts {hosts:?}");
    assert_eq!(hosts.len(), 3, "one host per agent by default: {r:#}");
    // 3 listeners × 3 agents, plus the negative probe, which must have been refused.
    let probes = r["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 10);
    assert_eq!(probes[9]["expect"], "closed");
    assert_eq!(probes[9]["connected"], false);
    let cross: Vec<&serde_json::Value> = probes
        .iter()
        .filter(|p| p["expect"] == "open" && host_of(&p["from"]) != host_of(&p["to"]))
        .collect();
    assert_eq!(cross.len(), 6, "cross-host probes");
    assert!(cross.iter().all(|p| p["connected"] == true), "{r:#}");
    let lat: Vec<f64> = cross
        .iter()
        .filter_map(|p| p["latency_ms"].as_f64())
        .collect();
    println!("cross-host probe latencies (ms): {lat:?}; scenario took {took:?}");
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test -p weave-mesos --features netns-tests"
)]
fn local_scenario_two_agents_per_host() {
    let (r, left, took) = scenario("s", &["--agents", "4", "--hosts", "2"]);
    assert_eq!(r["ok"], true, "{r:#}");
    let agents = r["agents"].as_array().unwrap();
    let hosts: Vec<String> = agents.iter().map(host_of).collect();
    println!("4 agents on hosts {hosts:?}; scenario took {took:?}");
    assert_eq!(hosts[0], hosts[2]);
    assert_eq!(hosts[1], hosts[3]);
    assert_ne!(hosts[0], hosts[1]);
    let probes = r["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 17, "4 × 4 + the negative probe");
    let same = probes
        .iter()
        .filter(|p| p["expect"] == "open" && host_of(&p["from"]) == host_of(&p["to"]))
        .count();
    assert_eq!(same, 8, "same-host probes");
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}
