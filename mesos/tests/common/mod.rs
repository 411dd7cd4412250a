//! Shared by the fixture tests: where the Mesos fixture and the root crate's binaries are,
//! bounded command runs, the router's HTTP API inside a host namespace, task specs.
//! [`hosts`] builds N simulated hosts on one underlay, each with a router and an agent.
#![allow(dead_code)]

pub mod hosts;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use weave_mesos::driver::{parse_resources, AgentChoice, Driver, TaskSpec};
use weave_mesos::http::{self, Connector, Request, Url};
use weave_mesos::operator::{task_ips, OperatorClient};
use weave_mesos::scheduler::{framework_info, SchedulerClient};

/// `mesos-fixture` (env `MESOS_FIXTURE_DIR` or the shared checkout next to the project).
pub fn fixture_script() -> PathBuf {
    std::env::var_os("MESOS_FIXTURE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/mesos-fixture")
        })
        .join("mesos-fixture")
}

/// The root crate's binaries (`weave`, `weaver`, `weave-net`) in this test's target dir.
pub fn bin(name: &str) -> PathBuf {
    weave_testkit::bins::find(name)
        .unwrap_or_else(|| panic!("{name} missing: run `cargo build --workspace --bins` first"))
}

/// Runs `cmd` under `timeout secs`; panics with its output unless it succeeds.
pub fn run(secs: u64, cmd: &[&str]) -> String {
    let (ok, text) = try_run(secs, cmd);
    assert!(ok, "{cmd:?} failed:\n{text}");
    text
}

/// Runs `cmd` under `timeout secs`: (success, stdout+stderr).
pub fn try_run(secs: u64, cmd: &[&str]) -> (bool, String) {
    let out = Command::new("timeout")
        .arg(secs.to_string())
        .args(cmd)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub fn secs(n: u64) -> Instant {
    Instant::now() + Duration::from_secs(n)
}

/// A small shell task on the `weave` CNI network.
pub fn task(name: &str, command: &str, agent: AgentChoice) -> TaskSpec {
    TaskSpec {
        name: name.to_string(),
        command: command.to_string(),
        shell: true,
        networks: vec!["weave".to_string()],
        resources: parse_resources("cpus:0.1;mem:32").unwrap(),
        agent,
        ..Default::default()
    }
}

/// GET on the router API (127.0.0.1:6784) inside `netns`: `(status, body)`, or None when
/// nothing answers.
pub fn router_get(netns: &str, path: &str) -> Option<(u16, String)> {
    let url = Url::parse(&format!("http://127.0.0.1:6784{path}"), 6784).unwrap();
    let client = http::blocking::Client::new(
        http::Client::new()
            .with_connector(Connector::for_netns_name(netns))
            .with_timeouts(Duration::from_secs(3), Duration::from_secs(3)),
    )
    .unwrap();
    let r = client.fetch(&Request::get(url), 1 << 20).ok()?;
    Some((r.head.status, r.text()))
}

/// `weave setup --cni-bin-dir BIN --cni-conf-dir CONF`; asserts the one conflist it writes.
pub fn weave_setup(bin_dir: &Path, conf_dir: &Path) {
    let out = Command::new(bin("weave"))
        .args(["setup", "--cni-bin-dir"])
        .arg(bin_dir)
        .arg("--cni-conf-dir")
        .arg(conf_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let confs: Vec<String> = std::fs::read_dir(conf_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(confs, ["10-weave.conflist"]);
}

/// Starts `weaver --datadir DIR` in `netns` (log DIR/weaver.log) through the kit and waits
/// until it answers; the caller owns the child (the namespace's guard kills it in any case).
pub fn spawn_weaver(netns: &str, datadir: &Path) -> Child {
    let mut r = weave_testkit::Router::new(netns, Some(datadir), &[]).unwrap();
    r.log_name = "weaver.log".into();
    r.quiet_status = false;
    r.spawn();
    r.into_child().expect("router running")
}

/// Waits up to 15 s until the router in `netns` answers `GET /status` with 200.
pub fn wait_router(netns: &str) {
    let deadline = secs(15);
    while !matches!(router_get(netns, "/status"), Some((200, _))) {
        assert!(Instant::now() < deadline, "router did not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `mesos-fixture stop --name NAME` (graceful: Mesos runs DEL for its tasks), for drop
/// guards: a failure is printed, not raised.
pub fn stop_instance(name: &str) {
    let script = fixture_script();
    let (ok, text) = try_run(120, &[script.to_str().unwrap(), "stop", "--name", name]);
    if !ok {
        eprintln!("stop {name}: {text}");
    }
}

/// `(network, ip, container id)` of task `name` once GET_TASKS shows both its first IP and
/// its ContainerID; waits up to 20 s.
pub fn task_address(op: &OperatorClient, name: &str) -> (String, String, String) {
    let deadline = secs(20);
    loop {
        let tasks = op.get_tasks().unwrap();
        if let Some(t) = tasks.tasks.iter().find(|t| t.task_id.value == name) {
            let cid = t
                .statuses
                .iter()
                .rev()
                .find_map(|s| s.container_status.as_ref()?.container_id.clone())
                .map(|c| c.value);
            if let (Some((net, ip)), Some(cid)) = (task_ips(t).into_iter().next(), cid) {
                return (net, ip, cid);
            }
        }
        assert!(
            Instant::now() < deadline,
            "GET_TASKS never showed {name}'s IP"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `mesos-fixture start` of instance `name` in `netns` on `ip:port`, whose agent takes its
/// CNI configs from `conf_dir` and plugins from `plugins_dir`, plus `extra` flags (e.g.
/// `--join MASTER`); its output.
pub fn start_instance(
    name: &str,
    netns: &str,
    ip: &str,
    port: u16,
    conf_dir: &Path,
    plugins_dir: &Path,
    extra: &[&str],
) -> String {
    let script = fixture_script();
    let port = port.to_string();
    let mut args = vec![
        script.to_str().unwrap(),
        "start",
        "--name",
        name,
        "--netns",
        netns,
        "--ip",
        ip,
        "--port",
        &port,
        "--cni-conf-dir",
        conf_dir.to_str().unwrap(),
        "--cni-plugins-dir",
        plugins_dir.to_str().unwrap(),
    ];
    args.extend(extra);
    run(150, &args)
}

/// A framework named `framework` subscribed (30 s) to the master at `master` in `netns`.
pub fn driver_in(netns: &str, master: &str, framework: &str) -> Driver {
    let s = SchedulerClient::new(master)
        .unwrap()
        .with_connector(Connector::for_netns_name(netns))
        .subscribe(framework_info(framework), secs(30))
        .unwrap();
    Driver::new(s)
}
