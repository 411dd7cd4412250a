//! CNI plugin calls as a runtime on a simulated host makes them: the binary runs in the
//! host's namespace with exactly the CNI environment (plus `PATH`), the network config on
//! stdin, a time bound, and stdout, stderr and the exit code kept apart.

use crate::ns::Netns;
use crate::{Error, Result};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `PATH` a plugin gets unless the caller passes its own.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Time bound of one plugin call in tests.
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(20);

/// The outcome of one plugin run.
#[derive(Debug)]
pub struct PluginRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl PluginRun {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?}; stderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    /// The first address of an ADD result, without its prefix length: `ips[0].address`
    /// (CNI 0.3+) or `ip4.ip` (0.1/0.2, the shape Mesos reads).
    pub fn address(&self) -> Result<std::net::Ipv4Addr> {
        let v: serde_json::Value = serde_json::from_str(&self.stdout)
            .map_err(|e| Error::new(format!("parse ADD result: {e}: {}", self.stdout)))?;
        let cidr = v["ips"][0]["address"]
            .as_str()
            .or_else(|| v["ip4"]["ip"].as_str())
            .ok_or_else(|| Error::new(format!("no address in ADD result {v}")))?;
        let ip = cidr.split('/').next().unwrap_or(cidr);
        ip.parse()
            .map_err(|_| Error::new(format!("bad address {cidr:?} in ADD result")))
    }
}

/// Runs a plugin binary inside `host` with exactly `env` (plus PATH) and `stdin`, killing
/// it after 20 s; panics if it cannot be run or hangs.
pub fn run_plugin(host: &Netns, bin: &str, env: &[(&str, &str)], stdin: &str) -> PluginRun {
    run_plugin_in(&host.name, Path::new(bin), env, stdin, PLUGIN_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a plugin binary inside namespace `host` with exactly `env` (plus `PATH`, unless
/// `env` has one) and `stdin`; an error if it cannot run or outlives `limit`.
pub fn run_plugin_in(
    host: &str,
    bin: &Path,
    env: &[(&str, &str)],
    stdin: &str,
    limit: Duration,
) -> Result<PluginRun> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", host])
        .arg(bin)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::new(format!("run {}: {e}", bin.display())))?;
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).ok();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).ok();
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).ok();
        s
    });
    let Some(status) = crate::process::wait_timeout(&mut child, limit) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::new(format!(
            "plugin {} did not finish in {} s",
            bin.display(),
            limit.as_secs()
        )));
    };
    Ok(PluginRun {
        code: status.code().unwrap_or(-1),
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    })
}

/// The standard CNI environment for one call (no `CNI_NETNS` when `netns` is empty).
pub fn cni_env<'a>(
    command: &'a str,
    id: &'a str,
    netns: &'a str,
    ifname: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", id),
        ("CNI_IFNAME", ifname),
        ("CNI_PATH", "/usr/lib/cni:/opt/cni/bin"),
    ];
    if !netns.is_empty() {
        env.push(("CNI_NETNS", netns));
    }
    env
}

/// Runs a plugin with the calling process' namespace switched to `host` between fork and
/// exec (no `ip netns exec` in between, so the wall time is the plugin's own, as benches
/// need); returns its stdout and the time from spawn to exit. Panics if it fails.
pub fn call_timed(
    host: &OwnedFd,
    bin: &str,
    env: &[(&str, &str)],
    stdin: &str,
) -> (String, Duration) {
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
