//! Fixtures for tests that build real hosts and containers out of network namespaces.
//! Every namespace is named `wvt-*` and deleted on drop; every process is killed on drop.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Fails (never passes silently) when the netns tests run without the privileges they need.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "netns tests need root (CAP_NET_ADMIN)"
    );
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named network namespace (`ip netns add`), deleted with everything in it on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("wvt-{tag}-{}-{n}", std::process::id());
        run_ok("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.sh("ip link set lo up");
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }

    /// Runs a shell command inside the namespace; returns (exit code, stdout, stderr).
    pub fn try_sh(&self, cmd: &str) -> (i32, String, String) {
        let out = Command::new("timeout")
            .args(["20", "ip", "netns", "exec", &self.name, "sh", "-c", cmd])
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
        let (code, out, err) = self.try_sh(cmd);
        assert_eq!(code, 0, "in {}: `{cmd}` failed: {err}{out}", self.name);
        out
    }

    /// Link names in this namespace.
    pub fn links(&self) -> Vec<String> {
        let out = self.sh("ip -o link show");
        out.lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
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
        let file = std::fs::File::open(self.path()).expect("open netns");
        std::thread::spawn(move || {
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread in netns panicked")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill anything still running inside, then delete the namespace.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `weaver` router running inside a host namespace with its own data dir; killed on drop.
pub struct Router {
    pub child: Option<Child>,
    pub datadir: PathBuf,
    pub host: String,
    pub http_addr: String,
    pub extra: Vec<String>,
    /// Extra environment for the `weaver` process.
    pub env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

impl Router {
    pub fn start(host: &Netns, extra: &[&str]) -> Router {
        Router::start_with_env(host, extra, &[])
    }

    /// Like [`Router::start`], with extra environment variables for `weaver`.
    pub fn start_with_env(host: &Netns, extra: &[&str], env: &[(&str, &str)]) -> Router {
        let tmp = tempfile::Builder::new()
            .prefix("wvt-data-")
            .tempdir()
            .expect("tempdir");
        let datadir = tmp.path().to_path_buf();
        let mut r = Router {
            child: None,
            datadir,
            host: host.name.clone(),
            http_addr: weave::DEFAULT_HTTP_ADDR.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            _tmp: Some(tmp),
        };
        r.spawn();
        r
    }

    /// Like [`Router::start`] with a data dir the caller made (e.g. a small tmpfs) and keeps.
    pub fn start_in(host: &Netns, datadir: &Path, extra: &[&str]) -> Router {
        let mut r = Router {
            child: None,
            datadir: datadir.to_path_buf(),
            host: host.name.clone(),
            http_addr: weave::DEFAULT_HTTP_ADDR.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            _tmp: None,
        };
        r.spawn();
        r
    }

    /// Starts (again) with the same data dir and flags.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.datadir.join("test-weaver.log"))
            .expect("open router log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host, env!("CARGO_BIN_EXE_weaver")])
            .arg("--datadir")
            .arg(&self.datadir)
            .args(["--http-addr", &self.http_addr, "--status-addr", ""])
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn weaver"));
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let host = self.host.clone();
        let addr = self.http_addr.clone();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("weaver exited early ({status}); log:\n{}", self.log());
            }
            let a = addr.clone();
            let ok = in_ns(&host, move || {
                weave::api::Client::new(&a)
                    .with_timeouts(Duration::from_millis(200), Duration::from_millis(500))
                    .status(None)
                    .map(|(code, _)| code == 200)
                    .unwrap_or(false)
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "weaver not ready in 20 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.datadir.join("test-weaver.log")).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A client for this router, usable from a thread inside the host namespace.
    pub fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(weave::api::Client) -> T + Send + 'static,
    ) -> T {
        let a = self.http_addr.clone();
        in_ns(&self.host, move || f(weave::api::Client::new(&a)))
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `f` on a thread inside the named namespace.
pub fn in_ns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(format!("/var/run/netns/{name}")).expect("open netns");
    std::thread::spawn(move || {
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("thread in netns panicked")
}

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
}

/// Path of a built plugin binary.
pub fn plugin_bin(name: &str) -> &'static str {
    match name {
        "weave-net" => env!("CARGO_BIN_EXE_weave-net"),
        "weave-ipam" => env!("CARGO_BIN_EXE_weave-ipam"),
        other => panic!("unknown plugin {other}"),
    }
}

/// Directory holding the reference plugins from Debian's containernetworking-plugins.
pub fn reference_plugin_dir() -> &'static Path {
    Path::new("/usr/lib/cni")
}

/// Runs a plugin binary inside `host` (as a runtime on that host would) with exactly `env`
/// (plus PATH) and `stdin`, killing it after 20 s.
pub fn run_plugin(host: &Netns, bin: &str, env: &[(&str, &str)], stdin: &str) -> PluginRun {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &host.name, bin])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn plugin");
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
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("plugin {bin} did not finish in 20 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    PluginRun {
        code: status.code().unwrap_or(-1),
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

/// The standard CNI environment for one call.
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

// Calls and router queries the single-host `weave-net` tests share.

/// The smallest `weave-net` network config (CNI 1.0.0, network "weave").
pub fn conf() -> String {
    serde_json::json!({"cniVersion": "1.0.0", "name": "weave", "type": "weave-net"}).to_string()
}

/// One `weave-net` call (`cmd`: ADD, DEL, CHECK) for container `id` with `eth0` in `ns`.
pub fn weave_net(cmd: &str, host: &Netns, id: &str, ns: &Netns) -> PluginRun {
    let path = ns.path();
    let env = cni_env(cmd, id, path.to_str().unwrap(), "eth0");
    run_plugin(host, plugin_bin("weave-net"), &env, &conf())
}

/// Owner id → addresses, from the router's `GET /ip`; the bridge's own address shows as
/// owner `weave:expose`.
pub fn owned(router: &Router) -> std::collections::BTreeMap<String, Vec<String>> {
    let body = router.call(|c| {
        let (code, body) = c.request("GET", "/ip", None).unwrap();
        assert_eq!(code, 200, "{body}");
        body
    });
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["owned"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let addrs = o["addrs"].as_array().unwrap().iter();
            let addrs = addrs.map(|a| a.as_str().unwrap().to_string());
            (
                o["containerid"].as_str().unwrap().to_string(),
                addrs.collect(),
            )
        })
        .collect()
}

/// The owners in [`owned`] that are containers (without `weave:expose`), sorted.
pub fn container_owners(router: &Router) -> Vec<String> {
    owned(router)
        .into_keys()
        .filter(|id| id != "weave:expose")
        .collect()
}

/// The router's `GET /cni/attachments`, as JSON objects.
pub fn attachments(router: &Router) -> Vec<serde_json::Value> {
    let body = router.call(|c| c.request("GET", "/cni/attachments", None).unwrap().1);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v.as_array().unwrap_or_else(|| panic!("{body}")).clone()
}

/// The container ids of [`attachments`], in the router's order.
pub fn attachment_ids(router: &Router) -> Vec<String> {
    attachments(router)
        .iter()
        .map(|a| a["container_id"].as_str().unwrap().to_string())
        .collect()
}

/// The host ends of the container veths `weave-net` made on `host`.
pub fn host_veths(host: &Netns) -> Vec<String> {
    host.links()
        .into_iter()
        .filter(|l| l.starts_with("vethwepl"))
        .collect()
}
