//! Named network namespaces (`ip netns add`): the only thing the kit builds hosts and
//! containers from. Each is deleted with everything running inside on drop (a panic
//! unwinds through the drop too), and registered so that [`crate::cleanup`] can delete
//! what is left when a guard never drops (a signal, a panic hook).

use crate::{Error, Result};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// Prefix of [`Netns::new`] names: tests are `wvt-*` (scripts/test checks none is left).
pub const TEST_PREFIX: &str = "wvt";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Namespaces this process created and has not deleted yet.
static CREATED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Set once [`crate::cleanup`] has run: no namespace is created after it.
pub(crate) static STOPPING: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Fails (never passes silently) when the netns tests run without the privileges they need.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "netns tests need root (CAP_NET_ADMIN)"
    );
}

/// A named network namespace, deleted with everything in it on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// `wvt-<tag>-<pid>-<n>`, unique in this process, with `lo` up; panics on failure.
    pub fn new(tag: &str) -> Netns {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("{TEST_PREFIX}-{tag}-{}-{n}", std::process::id());
        Netns::create(&name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A namespace named exactly `name`, with `lo` up. Fails if it exists.
    pub fn create(name: &str) -> Result<Netns> {
        if STOPPING.load(Ordering::SeqCst) {
            return Err(Error::new(format!("create netns {name}: cleaning up")));
        }
        ip(&["netns", "add", name]).map_err(|e| e.context(format!("create netns {name}")))?;
        CREATED.lock().unwrap().push(name.to_string());
        let ns = Netns {
            name: name.to_string(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"])
            .map_err(|e| e.context(format!("set lo up in {name}")))?;
        Ok(ns)
    }

    /// Like [`Netns::create`], deleting a namespace of that name left by an earlier run.
    pub fn replace(name: &str) -> Result<Netns> {
        delete_netns(name);
        Netns::create(name)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }

    /// Runs a shell command inside the namespace (20 s at most); returns (exit code,
    /// stdout, stderr).
    pub fn try_sh(&self, cmd: &str) -> (i32, String, String) {
        let out = Command::new("timeout")
            .args(["20", "ip", "netns", "exec", &self.name, "sh", "-c", cmd])
            .stdin(Stdio::null())
            .output()
            .expect("run ip netns exec");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs a shell command inside the namespace and panics unless it succeeds.
    pub fn sh(&self, cmd: &str) -> String {
        self.check_sh(cmd).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs a shell command inside the namespace: its stdout, or an error with its output.
    pub fn check_sh(&self, cmd: &str) -> Result<String> {
        let (code, out, err) = self.try_sh(cmd);
        if code == 0 {
            Ok(out)
        } else {
            Err(Error::new(format!(
                "in {}: `{cmd}` failed: {err}{out}",
                self.name
            )))
        }
    }

    /// Link names in this namespace.
    pub fn links(&self) -> Vec<String> {
        let out = self.sh("ip -o link show");
        out.lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    /// Packets link `dev` has transmitted (its kernel counter).
    pub fn tx_packets(&self, dev: &str) -> u64 {
        self.link_counter(dev, "tx_packets")
    }

    /// Packets link `dev` has received (its kernel counter; a bridge counts the frames it
    /// passes up to the host).
    pub fn rx_packets(&self, dev: &str) -> u64 {
        self.link_counter(dev, "rx_packets")
    }

    fn link_counter(&self, dev: &str, counter: &str) -> u64 {
        let n = self.sh(&format!("cat /sys/class/net/{dev}/statistics/{counter}"));
        n.trim()
            .parse()
            .unwrap_or_else(|_| panic!("in {}: {counter} of {dev}: {n:?}", self.name))
    }

    /// IPv4 CIDRs on a link, empty if the link is absent.
    pub fn addrs(&self, dev: &str) -> Vec<String> {
        let (_, out, _) = self.try_sh(&format!("ip -o -4 addr show dev {dev}"));
        out.lines()
            .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
            .map(str::to_string)
            .collect()
    }

    /// Runs `f` on a thread that has entered this namespace (sockets it opens stay there).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_ns(&self.name, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete_netns(&self.name);
    }
}

/// Runs `f` on a fresh thread inside the named namespace.
pub fn in_ns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(format!("/var/run/netns/{name}")).expect("open netns");
    std::thread::spawn(move || {
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("thread in netns panicked")
}

/// Kills whatever runs in the namespace (except this process, should it be inside), then
/// deletes it; quiet if it does not exist.
pub fn delete_netns(name: &str) {
    let me = std::process::id().to_string();
    let mut killed = Vec::new();
    if let Ok(out) = Command::new("ip")
        .args(["netns", "pids", name])
        .stderr(Stdio::null())
        .output()
    {
        for pid in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter(|p| *p != me)
        {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                killed.push(pid);
            }
        }
    }
    // SIGKILL is delivered asynchronously: wait (briefly) until they are gone or zombies.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while killed.iter().any(|p| running(*p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
    if let Ok(mut created) = CREATED.lock() {
        created.retain(|n| n != name);
    }
}

/// Names of the namespaces that exist now (`ip netns list`).
pub fn list() -> Vec<String> {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Deletes every namespace whose name starts with `prefix` (and what runs inside): what an
/// earlier, interrupted run left. Returns their names.
pub fn sweep(prefix: &str) -> Vec<String> {
    let stale: Vec<String> = list()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    for n in &stale {
        delete_netns(n);
    }
    stale
}

/// The namespaces this process made and has not deleted (for [`crate::cleanup`]).
pub(crate) fn registered() -> Vec<String> {
    CREATED.lock().map(|v| v.clone()).unwrap_or_default()
}

/// Runs `ip ARGS`: its stdout, or an error with its stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    command_ok("ip", args)
}

/// Runs `cmd ARGS`: its stdout, or an error with its stderr.
pub fn command_ok(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(format!("run {cmd}: {e}")))?;
    if !out.status.success() {
        return Err(Error::new(format!(
            "{cmd} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd ARGS` and panics unless it succeeds; its stdout.
pub fn run_ok(cmd: &str, args: &[&str]) -> String {
    command_ok(cmd, args).unwrap_or_else(|e| panic!("{e}"))
}

/// True while process `pid` exists and is not a zombie.
pub fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses: `pid (comm) S ...`.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}
