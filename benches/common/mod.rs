//! What the benches share: namespace guards (`wvb-*`, removed on drop and on panic), plugin
//! calls made from a simulated host's namespace, statistics, and the one report shape that
//! `bench/run` gathers into its summary (`{"part", "rows": [...], "details"}`).
#![allow(dead_code)] // each bench uses a different part of this module

use serde_json::{json, Value};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Debian's containernetworking-plugins, the reference.
pub const REF_DIR: &str = "/usr/lib/cni";

/// Namespaces created by this process, deleted by the panic hook if a guard never drops
/// (a panic in another thread aborts nothing, but a panic while unwinding would).
static CREATED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A network namespace that is deleted (its processes killed first) when dropped.
pub struct Ns(pub String);

impl Ns {
    pub fn new(name: String) -> Ns {
        assert!(name.starts_with("wvb-"), "bench namespaces start with wvb-");
        delete_netns(&name);
        run(&["ip", "netns", "add", &name]);
        CREATED.lock().unwrap().push(name.clone());
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Ns(name)
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }

    pub fn fd(&self) -> OwnedFd {
        std::fs::File::open(self.path()).expect("open netns").into()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        delete_netns(&self.0);
        CREATED.lock().unwrap().retain(|n| *n != self.0);
    }
}

/// Kills whatever runs in the namespace (except this bench, should it still be inside),
/// then deletes it; quiet if it does not exist.
pub fn delete_netns(name: &str) {
    let me = std::process::id().to_string();
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter(|p| *p != me)
        {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
}

/// On panic, deletes every namespace this process still holds, then reports as usual.
pub fn cleanup_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        let names = CREATED.lock().map(|v| v.clone()).unwrap_or_default();
        for n in names {
            delete_netns(&n);
        }
    }));
}

pub fn run(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .expect("spawn");
    assert!(st.success(), "{args:?} failed");
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

/// Runs a plugin in the host namespace (setns before exec, like a runtime living there);
/// returns its stdout and its wall time from spawn to exit. Panics if it fails.
pub fn call(host: &OwnedFd, bin: &str, env: &[(&str, &str)], stdin: &str) -> (String, Duration) {
    let fd = host.as_raw_fd();
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setns is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn plugin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{bin} {env:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (String::from_utf8_lossy(&out.stdout).into_owned(), took)
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

/// Starts `weaver` inside `ns` (data in `datadir`) and waits until its API port answers.
/// The caller owns the child and waits on it; the namespace guard kills it in any case.
#[allow(clippy::zombie_processes)]
pub fn start_weaver(ns: &Ns, weaver: &str, datadir: &std::path::Path) -> std::process::Child {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.0, weaver, "--status-addr", ""])
        .arg("--datadir")
        .arg(datadir.join("weave"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(datadir.join("weaver.log")).unwrap())
        .spawn()
        .expect("start weaver");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = Command::new("ip")
            .args(["netns", "exec", &ns.0, "nc", "-z", "127.0.0.1", "6784"])
            .stderr(Stdio::null())
            .status();
        if st.map(|s| s.success()).unwrap_or(false) {
            return child;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("router did not start within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Median, p10 and p90 (nearest rank).
pub fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize];
    (q(0.5), q(0.1), q(0.9))
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
