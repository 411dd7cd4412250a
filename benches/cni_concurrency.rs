//! Concurrent CNI ADDs, then DELs, on one simulated host: our `weave-net` (router running)
//! beside the reference `bridge` + `host-local`. For 8 and 32 containers at once: wall time
//! of the burst, per-call latency (median, p90), and every address handed out exactly once
//! (asserted: the bench fails loudly otherwise). Needs root; `bench/run` is the front door.
//!
//! Usage: cargo bench --bench cni_concurrency -- [--sizes 8,32] [--rounds N] [--json FILE]

mod common;

use common::{call, cni_env, median, report, stats, Ns, Row, Target, REF_DIR};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// The issue's target for CNI calls: at most 0.4 of the reference bridge's time.
const TARGET: f64 = 0.4;

/// One plugin call: binary, environment, stdin.
type Job = (String, Vec<(String, String)>, String);

/// One burst's figures, in milliseconds.
struct Burst {
    wall: f64,
    calls: Vec<f64>,
    outputs: Vec<String>,
}

/// Runs `calls[i]` on its own thread, all released at once; wall time from release to the
/// last exit.
fn burst(host: &Arc<OwnedFd>, jobs: Vec<Job>) -> Burst {
    let gate = Arc::new(Barrier::new(jobs.len() + 1));
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|(bin, env, stdin)| {
            let (gate, host) = (gate.clone(), host.clone());
            std::thread::spawn(move || {
                let env: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                gate.wait();
                call(&host, &bin, &env, &stdin)
            })
        })
        .collect();
    gate.wait();
    let started = Instant::now();
    let results: Vec<(String, Duration)> = handles
        .into_iter()
        .map(|h| h.join().expect("a plugin call failed (see above)"))
        .collect();
    Burst {
        wall: started.elapsed().as_secs_f64() * 1e3,
        calls: results.iter().map(|r| r.1.as_secs_f64() * 1e3).collect(),
        outputs: results.into_iter().map(|r| r.0).collect(),
    }
}

/// The addresses in CNI results; panics unless each result has one and all differ.
fn assert_unique_ips(variant: &str, outputs: &[String]) -> usize {
    let mut seen = BTreeSet::new();
    for out in outputs {
        let v: Value = serde_json::from_str(out)
            .unwrap_or_else(|e| panic!("{variant}: ADD result is not JSON ({e}): {out}"));
        let ips = v["ips"].as_array().cloned().unwrap_or_default();
        assert!(
            !ips.is_empty(),
            "{variant}: ADD result without an IP: {out}"
        );
        for ip in ips {
            let addr = ip["address"].as_str().unwrap_or_default().to_string();
            assert!(
                seen.insert(addr.clone()),
                "{variant}: address {addr} handed out twice in one burst"
            );
        }
    }
    seen.len()
}

struct Variant {
    name: &'static str,
    /// For namespace names.
    short: &'static str,
    bin: String,
    conf: String,
}

/// ADD burst then DEL burst of `n` containers for one variant.
fn add_then_del(host: &Arc<OwnedFd>, v: &Variant, n: usize, round: usize) -> (Burst, Burst) {
    let tag = std::process::id();
    let containers: Vec<Ns> = (0..n)
        .map(|i| Ns::new(format!("wvb-cc{}-{round}-{i}-{tag}", v.short)))
        .collect();
    let jobs = |cmd: &str| -> Vec<Job> {
        containers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let id = format!("conc-{round}-{i}");
                let env = cni_env(cmd, &id, &c.path())
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                (v.bin.clone(), env, v.conf.clone())
            })
            .collect()
    };
    let add = burst(host, jobs("ADD"));
    let got = assert_unique_ips(v.name, &add.outputs);
    assert_eq!(got, n, "{}: {n} ADDs gave {got} addresses", v.name);
    let del = burst(host, jobs("DEL"));
    (add, del)
}

fn main() {
    common::cleanup_on_panic();
    common::require_root("the CNI concurrency benchmark");
    common::require_reference_plugins(&["bridge", "host-local"]);
    let sizes: Vec<usize> = common::arg("--sizes")
        .unwrap_or_else(|| "8,32".into())
        .split(',')
        .map(|s| s.parse().expect("--sizes: numbers"))
        .collect();
    let rounds: usize = common::arg("--rounds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let json_out = common::arg("--json");

    let host = Ns::new(format!("wvb-ch-{}", std::process::id()));
    let host_fd = Arc::new(host.fd());
    let data = tempfile::Builder::new().prefix("wvb-").tempdir().unwrap();
    let mut router = common::start_weaver(&host, env!("CARGO_BIN_EXE_weaver"), data.path());
    let variants = [
        Variant {
            name: "weave-net",
            short: "w",
            bin: env!("CARGO_BIN_EXE_weave-net").into(),
            conf: r#"{"cniVersion":"1.0.0","name":"weave","type":"weave-net","hairpinMode":true}"#
                .into(),
        },
        Variant {
            name: "bridge+host-local",
            short: "b",
            bin: format!("{REF_DIR}/bridge"),
            conf: json!({"cniVersion":"1.0.0","name":"refnet","type":"bridge","bridge":"cni-ref0",
                "isGateway":true,"ipMasq":false,"hairpinMode":true,
                "ipam":{"type":"host-local","subnet":"10.88.0.0/16","dataDir":data.path().join("host-local")}})
            .to_string(),
        },
    ];
    // Warm-up (bridges, caches), not measured.
    for v in &variants {
        add_then_del(&host_fd, v, 2, 0);
    }

    let mut rows = Vec::new();
    let mut details = serde_json::Map::new();
    for &n in &sizes {
        // [variant][add|del] → wall times and all per-call latencies over the rounds.
        let mut walls = [[vec![], vec![]], [vec![], vec![]]];
        let mut lat = [[vec![], vec![]], [vec![], vec![]]];
        for round in 1..=rounds {
            for (k, v) in variants.iter().enumerate() {
                let (add, del) = add_then_del(&host_fd, v, n, round);
                walls[k][0].push(add.wall);
                walls[k][1].push(del.wall);
                lat[k][0].extend(add.calls);
                lat[k][1].extend(del.calls);
            }
        }
        for (op, o) in [("ADD", 0), ("DEL", 1)] {
            let (ours_w, ref_w) = (median(&walls[0][o]), median(&walls[1][o]));
            let (om, _, o90) = stats(&lat[0][o]);
            let (rm, _, r90) = stats(&lat[1][o]);
            let reference = variants[1].name;
            rows.push(
                Row::new(format!("{n} concurrent {op}: wall"), "ms", ours_w).vs(
                    reference,
                    ref_w,
                    Target::AtMost(TARGET),
                ),
            );
            rows.push(
                Row::new(format!("{n} concurrent {op}: per-call median"), "ms", om).vs(
                    reference,
                    rm,
                    Target::AtMost(TARGET),
                ),
            );
            rows.push(
                Row::new(format!("{n} concurrent {op}: per-call p90"), "ms", o90).vs(
                    reference,
                    r90,
                    Target::None,
                ),
            );
            details.insert(
                format!("{n}_{}", op.to_lowercase()),
                json!({"weave-net": {"wall_ms": walls[0][o], "call_median_ms": om, "call_p90_ms": o90},
                       "bridge+host-local": {"wall_ms": walls[1][o], "call_median_ms": rm, "call_p90_ms": r90}}),
            );
        }
        rows.push(Row::new(
            format!("{n} concurrent ADD: unique IPs (asserted)"),
            "IPs",
            n as f64,
        ));
    }
    details.insert("rounds".into(), json!(rounds));
    let _ = router.kill();
    let _ = router.wait();
    report(
        "concurrency",
        &format!(
            "CNI concurrency: bursts of {sizes:?} ADDs then DELs, median over {rounds} rounds \
             (all IPs unique: asserted)"
        ),
        &rows,
        Value::Object(details),
        json_out.as_deref(),
    );
}
