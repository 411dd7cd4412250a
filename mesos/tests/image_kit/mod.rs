//! Helpers of the image tests (`fixture_images.rs`): the test image, agents started with
//! the image flags `weave-mesos agent-flags --images` prints, `weave-mesos` runs whose output
//! is read as it comes, and what Mesos leaves on a host (sandbox files, provisioned rootfs,
//! container cgroups, the router's addresses, the plugin calls).
#![allow(dead_code)]

use crate::common::hosts::{Host, Hosts, AGENT_PORT};
use crate::common::{fixture_script, run, secs, task, try_run};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weave_mesos::driver::{AgentChoice, Driver, TaskSpec};
use weave_mesos::operator::OperatorClient;
use weave_mesos::proto::v1::master::{call, Call};
use weave_mesos::proto::v1::FrameworkId;
use weave_mesos::scheduler::{framework_info, SchedulerClient};
pub const EXE: &str = env!("CARGO_BIN_EXE_weave-mesos");

/// `scripts/build-image [ARGS] DIR`: its output.
pub fn build_image(dir: &Path, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-image");
    let mut cmd = vec![script.to_str().unwrap()];
    cmd.extend(args);
    cmd.push(dir.to_str().unwrap());
    run(120, &cmd)
}

/// The fixture's run dir of instance `name`.
pub fn run_dir(name: &str) -> PathBuf {
    std::env::var_os("MESOS_FIXTURE_RUN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/mesos-fixture"))
        .join(name)
}

/// The agent-only instance's `--work_dir`.
pub fn agent_work(h: &Host) -> PathBuf {
    run_dir(&h.agent).join("work/agents/0/work")
}

/// The agents started here with image flags; stopped on drop, before `Hosts` stops the
/// master, routers and namespaces (declare after the `Hosts`).
pub struct ImageAgents(pub Vec<String>);

impl Drop for ImageAgents {
    fn drop(&mut self) {
        for name in self.0.iter().rev() {
            crate::common::stop_instance(name);
        }
    }
}

/// `weave-mesos agent-flags --images --format env ...` for host `h`: its `MESOS_*=v` lines,
/// which start that host's agent (the fixture passes `MESOS_*` through).
pub fn image_agent_env(h: &Host, registry: &Path, store: &Path) -> Vec<String> {
    let out = run(
        30,
        &[
            EXE,
            "agent-flags",
            "--images",
            "--format",
            "env",
            "--cni-config-dir",
            h.conf_dir.path().to_str().unwrap(),
            "--cni-plugins-dir",
            h.bin_dir.path().to_str().unwrap(),
            "--docker-registry",
            registry.to_str().unwrap(),
            "--docker-store-dir",
            store.to_str().unwrap(),
        ],
    );
    out.lines().map(str::to_string).collect()
}

pub fn start_image_agent(hs: &Hosts, agents: &mut ImageAgents, k: usize, env: &[String]) {
    let h = hs.host(k);
    let script = fixture_script();
    let master = hs.master();
    let port = AGENT_PORT.to_string();
    let mut cmd: Vec<&str> = vec!["env"];
    cmd.extend(env.iter().map(String::as_str));
    cmd.extend([
        script.to_str().unwrap(),
        "start",
        "--name",
        &h.agent,
        "--netns",
        &h.netns,
        "--ip",
        &h.ip,
        "--port",
        &port,
        "--cni-conf-dir",
        h.conf_dir.path().to_str().unwrap(),
        "--cni-plugins-dir",
        h.bin_dir.path().to_str().unwrap(),
        "--join",
        &master,
    ]);
    agents.0.push(h.agent.clone());
    run(150, &cmd);
}

/// A `weave-mesos execute` (or other) child whose stdout lines are collected as they come.
pub struct Cli {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Cli {
    /// Runs `weave-mesos ARGS` inside host 1 (where the master is), stderr merged.
    pub fn spawn(hs: &Hosts, args: &[&str]) -> Cli {
        let mut child = Command::new("timeout")
            .args(["300", "ip", "netns", "exec", &hs.host(1).netns, "sh", "-c"])
            .arg("exec \"$0\" \"$@\" 2>&1")
            .arg(EXE)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                println!("  | {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Cli {
            child,
            lines,
            reader: Some(reader),
        }
    }

    pub fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits until some line satisfies `pred`; returns that line.
    pub fn wait_line(&self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| pred(l)) {
                return l.clone();
            }
            assert!(
                start.elapsed() < limit,
                "timed out waiting for {what}:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the exit (within `limit`): (exit code, all output).
    pub fn finish(mut self, limit: Duration) -> (i32, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < limit,
                "still running after {limit:?}:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        (status.code().unwrap_or(-1), self.text())
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `weave-mesos execute ARGS` to its end: (exit code, output).
pub fn execute(hs: &Hosts, args: &[&str]) -> (i32, String) {
    Cli::spawn(hs, &[&["execute", "--master", &hs.master()], args].concat())
        .finish(Duration::from_secs(180))
}

/// `Subscribed with ID <fid>` from execute's output.
pub fn framework_id(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("Subscribed with ID "))
        .unwrap_or_else(|| panic!("no framework ID in:\n{text}"))
        .trim()
        .to_string()
}

/// A file of a task's sandbox on host `h`, once it exists and holds `until` (10 s).
pub fn sandbox_file(h: &Host, fid: &str, task: &str, file: &str, until: &str) -> String {
    let slaves = agent_work(h).join("slaves");
    let deadline = secs(10);
    loop {
        let found = std::fs::read_dir(&slaves)
            .into_iter()
            .flatten()
            .flatten()
            .find_map(|a| {
                let p = a
                    .path()
                    .join("frameworks")
                    .join(fid)
                    .join("executors")
                    .join(task)
                    .join("runs/latest")
                    .join(file);
                std::fs::read_to_string(p).ok()
            });
        match found {
            Some(text) if text.contains(until) => return text,
            other => assert!(
                Instant::now() < deadline,
                "sandbox {file} of {task} on host {} never held {until:?}: {other:?}",
                h.k
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The provisioned rootfs of container `cid` on host `h` (copy backend), if any: the
/// directory under `provisioner/containers/<cid>` holding the image's marker file.
pub fn rootfs_of(h: &Host, cid: &str) -> Option<PathBuf> {
    fn find(dir: &Path, depth: usize) -> Option<PathBuf> {
        if dir.join("etc/weave-image").is_file() {
            return Some(dir.to_path_buf());
        }
        if depth == 0 {
            return None;
        }
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .find_map(|e| find(&e.path(), depth - 1))
    }
    find(&agent_work(h).join("provisioner/containers").join(cid), 6)
}

/// PIDs in container `cid`'s freezer cgroup (the agent's cgroup root on this host).
pub fn container_pids(h: &Host, cid: &str) -> Vec<u32> {
    let root = Path::new("/sys/fs/cgroup/freezer")
        .join(format!("mesos-fixture-{}", h.agent))
        .join(cid);
    let mut pids = Vec::new();
    let mut dirs = vec![root];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path());
            }
        }
        if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
    }
    pids
}

pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// `nc -z -v -w 3 ip port` from host k's namespace: (success, nc's line).
pub fn nc_from_host(h: &Host, ip: &str, port: u16) -> (bool, String) {
    let (ok, text) = try_run(
        10,
        &[
            "ip",
            "netns",
            "exec",
            &h.netns,
            "nc",
            "-z",
            "-v",
            "-w",
            "3",
            ip,
            &port.to_string(),
        ],
    );
    (ok, text.trim().to_string())
}

pub fn image_task(name: &str, command: &str, k: usize, image: Option<&str>) -> TaskSpec {
    TaskSpec {
        image: image.map(str::to_string),
        ..task(name, command, AgentChoice::Named(format!("198.18.0.{k}")))
    }
}

pub fn driver(hs: &Hosts, name: &str) -> Driver {
    let s = SchedulerClient::new(&hs.master())
        .unwrap()
        .with_connector(hs.connector())
        .subscribe(framework_info(name), secs(30))
        .unwrap();
    Driver::new(s)
}

pub fn teardown_framework(op: &OperatorClient, fid: &str) {
    op.call(&Call {
        r#type: Some(call::Type::Teardown as i32),
        teardown: Some(call::Teardown {
            framework_id: FrameworkId {
                value: fid.to_string(),
            },
        }),
    })
    .unwrap();
}

/// The `ADD/DEL rc= fs=` summary of the plugin calls for `cid` on host `h`.
pub fn plugin_calls(h: &Host, cid: &str) -> Vec<String> {
    h.cni_calls()
        .into_iter()
        .filter(|l| l.contains(cid))
        .map(|l| {
            let tail: Vec<&str> = l.rsplit(' ').take(2).collect();
            format!("{} {}", &l[..3], tail.join(" "))
        })
        .collect()
}
