//! `weave-mesos scenario` without a master: simulated agents in `wvt-ls-<pid>-*` namespaces,
//! the real weaver and weave-net; every namespace is gone afterwards. Needs root and the
//! root crate's binaries (`cargo build --bins`).

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

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test -p weave-mesos --features netns-tests"
)]
fn local_scenario_matrix_passes_and_cleans_up() {
    let prefix = format!("wvt-ls-{}", std::process::id());
    let out = Command::new("timeout")
        .args([
            "120",
            env!("CARGO_BIN_EXE_weave-mesos"),
            "scenario",
            "--agents",
            "3",
            "--json",
        ])
        .args(["--prefix", &prefix, "--weaver"])
        .arg(bin("weaver"))
        .arg("--plugin")
        .arg(bin("weave-net"))
        .output()
        .unwrap();
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
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["ok"], true);
    assert_eq!(r["cluster"], "local");
    // 3 listeners × 3 agents, plus the negative probe, which must have been refused.
    assert_eq!(r["probes"].as_array().unwrap().len(), 10);
    assert_eq!(r["probes"][9]["expect"], "closed");
    assert_eq!(r["probes"][9]["connected"], false);
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}
