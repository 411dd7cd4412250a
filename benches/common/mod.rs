//! What the benches share: namespace guards (`wvb-*`, removed on drop and on panic),
//! plugin calls made from a simulated host's namespace and the router, all from the shared
//! kit (`weave-testkit`); statistics, and the one report shape that `bench/run` gathers
//! into its summary (`{"part", "rows": [...], "details"}`).
#![allow(dead_code)] // each bench uses a different part of this module

use serde_json::{json, Value};
use std::os::fd::OwnedFd;
use std::sync::OnceLock;
use weave_testkit::Netns;

#[allow(unused_imports)]
pub use weave_testkit::ns::delete_netns;
#[allow(unused_imports)]
pub use weave_testkit::plugin::call_timed as call;

/// Debian's containernetworking-plugins, the reference.
pub const REF_DIR: &str = "/usr/lib/cni";

/// A network namespace named exactly as given (`wvb-*`), deleted (its processes killed
/// first) when dropped; one left by an earlier run is deleted first.
pub struct Ns(pub String, Netns);

impl Ns {
    pub fn new(name: String) -> Ns {
        assert!(name.starts_with("wvb-"), "bench namespaces start with wvb-");
        let ns = Netns::replace(&name).unwrap_or_else(|e| panic!("{e}"));
        Ns(name, ns)
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }

    pub fn fd(&self) -> OwnedFd {
        std::fs::File::open(self.path()).expect("open netns").into()
    }
}

/// On panic, deletes every namespace this process still holds, then reports as usual.
pub fn cleanup_on_panic() {
    weave_testkit::cleanup::on_panic();
}

pub fn run(args: &[&str]) {
    weave_testkit::run_ok(args[0], &args[1..]);
}

pub fn require_root(what: &str) {
    assert!(nix::unistd::geteuid().is_root(), "{what} needs root");
}

pub fn require_reference_plugins(names: &[&str]) {
    for p in names {
        assert!(
            std::path::Path::new(REF_DIR).join(p).exists(),
            "reference plugin {REF_DIR}/{p} missing: apt-get install containernetworking-plugins"
        );
    }
}

/// The namespace the bench started in, saved by the first [`enter`].
static ORIGINAL: OnceLock<OwnedFd> = OnceLock::new();

/// Moves the calling thread into `ns` (threads it spawns later inherit it). Call [`leave`]
/// before the namespace drops.
pub fn enter(ns: &Ns) {
    ORIGINAL.get_or_init(|| {
        std::fs::File::open("/proc/thread-self/ns/net")
            .expect("open own netns")
            .into()
    });
    let fd = ns.fd();
    nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

/// Back to the namespace the bench started in.
pub fn leave() {
    if let Some(fd) = ORIGINAL.get() {
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns back");
    }
}

/// The CNI environment of one call.
pub fn cni_env<'a>(cmd: &'a str, id: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", REF_DIR),
    ]
}

/// Starts `weaver` inside `ns` (data in `datadir/weave`, log `weaver.log` there) and waits
/// until its API answers. The caller owns the child and waits on it; the namespace guard
/// kills it in any case.
pub fn start_weaver(ns: &Ns, weaver: &str, datadir: &std::path::Path) -> std::process::Child {
    let mut r = weave_testkit::Router::new(&ns.0, Some(&datadir.join("weave")), &[])
        .unwrap_or_else(|e| panic!("{e}"));
    r.weaver = weaver.into();
    r.log_name = "weaver.log".into();
    r.spawn();
    r.into_child().expect("router running")
}

/// Median, p10 and p90 (nearest rank).
pub fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize];
    (q(0.5), q(0.1), q(0.9))
}

/// A field counted in kB (`VmRSS`, `VmHWM`, ...) of `/proc/<pid>/status`, in KiB; `pid`
/// "self" for this process.
pub fn proc_status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    value.split_whitespace().next()?.parse().ok()
}

pub fn median(v: &[f64]) -> f64 {
    stats(v).0
}

/// Which way a figure is better, for the ratio's target.
#[derive(Clone, Copy)]
pub enum Target {
    /// No target set (informative).
    None,
    /// ours / reference must be at most this.
    AtMost(f64),
    /// ours / reference must be at least this.
    AtLeast(f64),
}

/// One line of a part's table.
pub struct Row {
    pub metric: String,
    pub unit: &'static str,
    pub ours: f64,
    pub reference: Option<(String, f64)>,
    pub target: Target,
}

impl Row {
    pub fn new(metric: impl Into<String>, unit: &'static str, ours: f64) -> Row {
        Row {
            metric: metric.into(),
            unit,
            ours,
            reference: None,
            target: Target::None,
        }
    }

    pub fn vs(mut self, name: impl Into<String>, value: f64, target: Target) -> Row {
        self.reference = Some((name.into(), value));
        self.target = target;
        self
    }

    fn ratio(&self) -> Option<f64> {
        self.reference
            .as_ref()
            .filter(|(_, r)| *r != 0.0)
            .map(|(_, r)| self.ours / r)
    }

    fn met(&self) -> Option<bool> {
        let r = self.ratio()?;
        match self.target {
            Target::None => None,
            Target::AtMost(t) => Some(r <= t),
            Target::AtLeast(t) => Some(r >= t),
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::None => "-".into(),
            Target::AtMost(t) => format!("<= {t}"),
            Target::AtLeast(t) => format!(">= {t}"),
        }
    }

    fn json(&self) -> Value {
        json!({
            "metric": self.metric, "unit": self.unit, "ours": self.ours,
            "reference_name": self.reference.as_ref().map(|r| r.0.clone()),
            "reference": self.reference.as_ref().map(|r| r.1),
            "ratio": self.ratio(), "target": self.target_text(), "met": self.met(),
        })
    }
}

/// Prints the part's table and writes `{"part", "rows", "details"}` to `json_path`.
pub fn report(part: &str, title: &str, rows: &[Row], details: Value, json_path: Option<&str>) {
    println!("\n{title}");
    println!(
        "{:<44} {:>12} {:>28} {:>8} {:>7} {:>7}",
        "metric", "ours", "reference", "ratio", "target", "met"
    );
    for r in rows {
        let reference = r
            .reference
            .as_ref()
            .map(|(n, v)| format!("{} ({n})", num(*v)))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<44} {:>12} {:>28} {:>8} {:>7} {:>7}",
            format!("{} [{}]", r.metric, r.unit),
            num(r.ours),
            reference,
            r.ratio().map(|x| format!("{x:.3}")).unwrap_or("-".into()),
            r.target_text(),
            match r.met() {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            }
        );
    }
    let doc = json!({
        "part": part,
        "title": title,
        "host_note": host_note(),
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "details": details,
    });
    if let Some(path) = json_path {
        std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap()).expect("write JSON");
        println!("JSON written to {path}");
    }
}

/// Compact number: integers without decimals, small values with three.
pub fn num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// Load and cores when measured: this machine is often busy, so absolute figures vary.
pub fn host_note() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!(
        "{cores} cores, loadavg {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// `--name VALUE` from the command line.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

pub fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}
