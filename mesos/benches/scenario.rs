//! Wall time of the reachability scenario on the local cluster (`weave-mesos scenario`
//! without `--master`: simulated hosts and agents in namespaces, real `weaver` and
//! `weave-net`, a listener on every agent and probes from every agent), with 3 and 6
//! agents, median of 3. The whole command is timed: cluster build, probes, cleanup. Needs
//! root and the release `weaver`/`weave-net` next to `weave-mesos` (bench/run builds them).
//!
//! Usage: cargo bench -p weave-mesos --bench scenario -- [--agents 3,6] [--repeat N] [--json FILE]

use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest one scenario may take before it is killed and the bench fails.
const TIMEOUT: Duration = Duration::from_secs(180);

/// Deletes every namespace whose name starts with the prefix (listeners, probes, hosts),
/// killing what runs in them; on drop, so a failed or killed scenario leaves nothing.
struct PrefixGuard(String);

impl Drop for PrefixGuard {
    fn drop(&mut self) {
        weave_testkit::ns::sweep(&self.0);
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// Runs one scenario; returns its wall time in ms and the number of probes.
fn scenario(agents: usize, run: usize) -> (f64, usize) {
    let prefix = format!("wvb-m{agents}r{run}-{}", std::process::id());
    let _guard = PrefixGuard(prefix.clone());
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_weave-mesos"))
        .args(["scenario", "--json", "--agents", &agents.to_string()])
        .args(["--prefix", &prefix])
        .env_remove("MESOS_MASTER_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start weave-mesos scenario");
    loop {
        if child.try_wait().expect("poll scenario").is_some() {
            break;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("scenario with {agents} agents took over {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = started.elapsed().as_secs_f64() * 1e3;
    let out = child.wait_with_output().expect("scenario output");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "scenario printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success() && report["ok"] == true,
        "scenario with {agents} agents failed: {report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let probes = report["probes"].as_array().map_or(0, Vec::len);
    (took, probes)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[s.len() / 2]
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the Mesos scenario benchmark needs root"
    );
    let sizes: Vec<usize> = arg("--agents")
        .unwrap_or_else(|| "3,6".into())
        .split(',')
        .map(|s| s.parse().expect("--agents: numbers"))
        .collect();
    let repeat: usize = arg("--repeat").and_then(|s| s.parse().ok()).unwrap_or(3);
    let json_out = arg("--json");

    let mut results = Vec::new();
    for &n in &sizes {
        let runs: Vec<(f64, usize)> = (0..repeat).map(|r| scenario(n, r)).collect();
        let times: Vec<f64> = runs.iter().map(|r| r.0).collect();
        results.push((n, median(&times), runs[0].1, times));
    }

    let title = format!(
        "Mesos: local-cluster scenario wall time (build, listeners, probes, cleanup), median of {repeat}"
    );
    println!("\n{title}");
    println!(
        "{:<44} {:>12} {:>28} {:>8} {:>7} {:>7}",
        "metric", "ours", "reference", "ratio", "target", "met"
    );
    let mut rows = Vec::new();
    for (i, (n, ms, probes, _)) in results.iter().enumerate() {
        let metric = format!("scenario, {n} agents ({probes} probes)");
        // The smallest size is the reference for growth.
        let reference = (i > 0).then(|| (format!("{} agents", results[0].0), results[0].1));
        let ratio = reference.as_ref().map(|(_, r)| ms / r);
        println!(
            "{:<44} {:>12.0} {:>28} {:>8} {:>7} {:>7}",
            format!("{metric} [ms]"),
            ms,
            reference
                .as_ref()
                .map(|(name, r)| format!("{r:.0} ({name})"))
                .unwrap_or("-".into()),
            ratio.map(|r| format!("{r:.3}")).unwrap_or("-".into()),
            "-",
            "-"
        );
        rows.push(json!({"metric": metric, "unit": "ms", "ours": ms,
            "reference_name": reference.as_ref().map(|r| r.0.clone()),
            "reference": reference.as_ref().map(|r| r.1), "ratio": ratio,
            "target": "-", "met": null}));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let doc = json!({"part": "mesos", "title": title, "host_note": format!("loadavg {}", load.trim()),
        "rows": rows,
        "details": results.iter().map(|(n, ms, p, t)| json!({"agents": n, "median_ms": ms, "probes": p, "runs_ms": t})).collect::<Vec<_>>()});
    if let Some(path) = json_out {
        std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).expect("write JSON");
        println!("JSON written to {path}");
    }
}
