//! End-to-end against the real router, each test in its own `wvt-cli-*` network namespace.

use super::*;

const WEAVER: &str = env!("CARGO_BIN_EXE_weaver");

/// A `wvt-cli-*` netns with loopback up and a private data dir; on drop, every process in
/// it is killed and the namespace deleted.
struct Host {
    ns: String,
    datadir: tempfile::TempDir,
}

impl Host {
    fn new(tag: &str) -> Host {
        assert!(Path::new(WEAVER).exists(), "weaver not built");
        let ns = format!("wvt-cli-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {ns}");
        let host = Host {
            ns,
            datadir: tempfile::tempdir().unwrap(),
        };
        host.sh(&["ip", "link", "set", "lo", "up"]);
        host
    }

    /// `weave ARGS` inside the namespace.
    fn weave(&self, args: &[&str]) -> Output {
        self.weave_within(args, Duration::from_secs(30))
    }

    fn weave_within(&self, args: &[&str], limit: Duration) -> Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, WEAVE])
            .env_remove("WEAVE_HTTP_ADDR")
            .env_remove("WEAVE_DATADIR")
            .arg(format!("--datadir={}", self.datadir.path().display()))
            .args(args);
        run_bounded(cmd, limit)
    }

    fn weave_ok(&self, args: &[&str]) -> String {
        let out = self.weave(args);
        assert!(
            out.status.success(),
            "weave {args:?} failed ({:?}): {}{}",
            out.status,
            stderr(&out),
            self.log()
        );
        stdout(&out)
    }

    /// Any command inside the namespace; panics unless it succeeds.
    fn sh(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).args(args);
        let out = run_bounded(cmd, Duration::from_secs(10));
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    }

    fn link_exists(&self, name: &str) -> bool {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "ip", "link", "show", name]);
        run_bounded(cmd, Duration::from_secs(10)).status.success()
    }

    fn router_pid(&self) -> Option<i32> {
        fs::read_to_string(self.datadir.path().join("weaver.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn log(&self) -> String {
        let log = fs::read_to_string(self.datadir.path().join("weaver.log")).unwrap_or_default();
        format!("\n--- weaver.log ---\n{log}")
    }

    fn pids(&self) -> Vec<i32> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output();
        out.map(|o| {
            stdout(&o)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for pid in self.pids() {
            // SAFETY: plain syscall on processes living in the namespace this test made.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn launch_status_stop() {
    let host = Host::new("ls");
    let name = host.weave_ok(&["launch", "--no-cni-setup"]);
    assert!(!name.trim().is_empty(), "launch printed no peer name");
    let pid = host.router_pid().expect("weaver.pid written");
    assert!(!gone(pid));

    let status = host.weave_ok(&["status"]);
    assert!(
        status.starts_with('\n') && status.ends_with("\n\n"),
        "not between blank lines: {status:?}"
    );
    assert!(
        status.contains(name.trim()),
        "status does not name the peer {name:?}: {status}"
    );
    host.weave_ok(&["status", "ipam"]);
    let report: serde_json::Value = serde_json::from_str(&host.weave_ok(&["report"])).unwrap();
    assert_eq!(report["Pid"].as_i64(), Some(pid as i64));

    let again = host.weave(&["launch", "--no-cni-setup"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("weave is already running; you can stop it with 'weave stop'"));

    host.weave_ok(&["connect", "10.9.9.9", "10.9.9.10:6783"]);
    let targets = host.weave_ok(&["status", "targets"]);
    assert!(
        targets.contains("10.9.9.9") && targets.contains("10.9.9.10"),
        "targets: {targets}"
    );
    host.weave_ok(&["connect", "--replace", "10.9.9.11"]);
    host.weave_ok(&["forget", "10.9.9.11"]);
    let targets = host.weave_ok(&["status", "targets"]);
    assert!(!targets.contains("10.9.9."), "targets left: {targets}");
    let bad = host.weave(&["connect", "bad:name:x"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("invalid peer name"),
        "stderr: {}",
        stderr(&bad)
    );
    let taken = host.weave_ok(&["rmpeer", "aa:bb:cc:dd:ee:ff"]);
    assert_eq!(taken, "0 IPs taken over from aa:bb:cc:dd:ee:ff\n");

    let version = host.weave_ok(&["version"]);
    assert!(
        version.lines().count() == 2,
        "router version missing: {version}"
    );

    host.weave_ok(&["stop"]);
    assert!(gone(pid), "router still running after stop");
    let status = host.weave(&["status"]);
    assert_eq!(status.status.code(), Some(1));
    assert!(stderr(&status).contains("weave is not running"));
    let stop = host.weave(&["stop"]);
    assert!(stop.status.success());
    assert!(stderr(&stop).contains("Weave is not running."));
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn launch_reports_a_router_that_dies() {
    let host = Host::new("die");
    let out = host.weave(&["launch", "--no-cni-setup", "--ipalloc-range=not-a-range"]);
    assert_eq!(out.status.code(), Some(1), "stdout: {}", stdout(&out));
    let log = host.datadir.path().join("weaver.log");
    assert!(
        stderr(&out).contains(&format!(
            "The weave router has died. Consult {} for details.",
            log.display()
        )),
        "stderr: {}",
        stderr(&out)
    );
    assert!(log.exists());
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn launch_runs_setup_unless_told_not_to() {
    let host = Host::new("setup");
    let cni = tempfile::tempdir().unwrap();
    let (bin, conf) = (cni.path().join("bin"), cni.path().join("conf"));
    host.weave_ok(&[
        "launch",
        &format!("--cni-bin-dir={}", bin.display()),
        &format!("--cni-conf-dir={}", conf.display()),
    ]);
    assert!(bin.join("weave-net").exists() && conf.join("10-weave.conflist").exists());
    host.weave_ok(&["stop"]);
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn expose_ps_hide() {
    let host = Host::new("exp");
    host.weave_ok(&["launch", "--no-cni-setup", "--ipalloc-range=10.40.0.0/16"]);
    let ip = host.weave_ok(&["expose"]);
    let ip = ip.trim().to_string();
    assert!(ip.starts_with("10.40."), "exposed {ip:?}");
    assert_eq!(
        host.weave_ok(&["expose"]).trim(),
        ip,
        "expose is not idempotent"
    );

    let ps = host.weave_ok(&["ps"]);
    let first = ps.lines().next().unwrap_or_default().to_string();
    let fields: Vec<&str> = first.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&"weave:expose"), "ps: {ps}");
    assert_eq!(
        fields.get(1).map(|m| m.len()),
        Some(17),
        "no MAC in {first:?}"
    );
    assert_eq!(
        fields.get(2),
        Some(&format!("{ip}/16").as_str()),
        "ps: {ps}"
    );
    assert!(host
        .sh(&["ip", "-4", "addr", "show", "dev", "weave"])
        .contains(&format!("{ip}/16")));

    assert_eq!(host.weave_ok(&["hide"]).trim(), ip);
    assert!(!host
        .sh(&["ip", "-4", "addr", "show", "dev", "weave"])
        .contains(&ip));
    let ps = host.weave_ok(&["ps"]);
    assert!(!ps.contains(&ip), "still exposed: {ps}");

    let explicit = host.weave_ok(&["expose", "ip:10.40.7.7/16", "--without-masquerade"]);
    assert_eq!(explicit.trim(), "10.40.7.7");
    host.weave_ok(&["stop"]);
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn reset_removes_bridge_veths_rules_and_state() {
    let host = Host::new("rst");
    host.weave_ok(&["launch", "--no-cni-setup"]);
    host.weave_ok(&["expose"]);
    // A CNI container's leftover host veth.
    host.sh(&[
        "ip",
        "link",
        "add",
        "vethwepl1234567",
        "type",
        "veth",
        "peer",
        "name",
        "vethwepg1234567",
    ]);
    host.weave_ok(&["connect", "10.9.9.9"]);
    let pid = host.router_pid().expect("weaver.pid");
    assert!(host.link_exists("weave"));
    for f in ["ipam.json", "targets.json"] {
        assert!(host.datadir.path().join(f).exists(), "router wrote no {f}");
    }

    let tables = host.sh(&["nft", "list", "tables"]);
    assert!(tables.contains("table ip weave"), "no nft table:\n{tables}");
    host.weave_ok(&["reset"]);
    assert!(gone(pid), "router still running after reset");
    assert!(!host.link_exists("weave"), "bridge left");
    assert!(!host.link_exists("vethwepl1234567"), "container veth left");
    for table in ["filter", "nat", "raw"] {
        let rules = host.sh(&["iptables", "-w", "-t", table, "-S"]);
        assert!(
            !rules.to_lowercase().contains("weave"),
            "{table} rules left:\n{rules}"
        );
    }
    let tables = host.sh(&["nft", "list", "tables"]);
    assert!(
        !tables.contains("table ip weave"),
        "nft table left:\n{tables}"
    );
    for f in ["ipam.json", "peername", "weaver.pid", "targets.json"] {
        assert!(!host.datadir.path().join(f).exists(), "{f} left");
    }
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn reset_without_router_needs_force_when_ranges_would_be_lost() {
    let host = Host::new("rsf");
    let ipam = host.datadir.path().join("ipam.json");
    fs::write(&ipam, "{}").unwrap();
    host.sh(&["ip", "link", "add", "weave", "type", "bridge"]);
    let out = host.weave(&["reset"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("use --force to override"),
        "stderr: {}",
        stderr(&out)
    );
    assert!(
        ipam.exists() && host.link_exists("weave"),
        "refused reset changed something"
    );

    host.weave_ok(&["reset", "--force"]);
    assert!(!ipam.exists());
    assert!(!host.link_exists("weave"));
}
