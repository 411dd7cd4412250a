//! Our plugin under the real Mesos 1.11.0 agent of the mesos-fixture: a simulated host
//! (netns `wvt-mh-<pid>`, underlay 192.0.2.1 on a veth) runs our `weaver`; `weave setup`
//! output is the agent's only CNI config; a master+agent instance plus a second agent-only
//! instance (`--join`) run in that netns. Checks: IP reported by Mesos and owned by the task's
//! ContainerID in the router, freed by DEL; container → host underlay TCP; the scenario
//! matrix; TASK_FAILED with our error text when the router is down.
//!
//! Needs root, a built fixture, and the root crate's binaries next to this test's target
//! dir: `cargo build --bins && cargo test -p weave-mesos --features mesos-fixture-tests`.

mod common;

use common::{
    driver_in, router_get, run, secs, spawn_weaver, start_instance, stop_instance, task,
    task_address, wait_router, weave_setup,
};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use weave_mesos::driver::{AgentChoice, Driver};
use weave_mesos::http::Connector;
use weave_mesos::operator::OperatorClient;
use weave_mesos::proto::v1::TaskState;

const IP: &str = "192.0.2.1";
const MASTER: &str = "192.0.2.1:5050";

/// The simulated host and everything in it; torn down on drop, even after a panic.
struct Host {
    netns: String,
    instances: Vec<String>,
    router: Option<Child>,
    datadir: tempfile::TempDir,
    bin_dir: tempfile::TempDir,
    conf_dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let netns = format!("wvt-mh-{}", std::process::id());
        let h = Host {
            netns: netns.clone(),
            instances: Vec::new(),
            router: None,
            datadir: tempfile::tempdir().unwrap(),
            bin_dir: tempfile::tempdir().unwrap(),
            conf_dir: tempfile::tempdir().unwrap(),
        };
        run(10, &["ip", "netns", "add", &netns]);
        run(10, &["ip", "-n", &netns, "link", "set", "lo", "up"]);
        run(
            10,
            &[
                "ip", "-n", &netns, "link", "add", "wvt-u0", "type", "veth", "peer", "name",
                "wvt-u1",
            ],
        );
        run(
            10,
            &[
                "ip",
                "-n",
                &netns,
                "addr",
                "add",
                "192.0.2.1/24",
                "dev",
                "wvt-u0",
            ],
        );
        run(10, &["ip", "-n", &netns, "link", "set", "wvt-u0", "up"]);
        run(10, &["ip", "-n", &netns, "link", "set", "wvt-u1", "up"]);
        h
    }

    fn start_router(&mut self) {
        self.router = Some(spawn_weaver(&self.netns, self.datadir.path()));
        wait_router(&self.netns);
    }

    fn stop_router(&mut self) {
        if let Some(mut r) = self.router.take() {
            let _ = r.kill();
            let _ = r.wait();
        }
    }

    /// The body of a 200 answer to GET `path` on our router.
    fn router_get(&self, path: &str) -> Option<String> {
        let (status, body) = router_get(&self.netns, path)?;
        (status == 200).then_some(body)
    }

    fn start_instance(&mut self, name: &str, port: u16, join: bool) -> String {
        let extra: &[&str] = if join { &["--join", MASTER] } else { &[] };
        self.instances.push(name.to_string());
        start_instance(
            name,
            &self.netns,
            IP,
            port,
            self.conf_dir.path(),
            self.bin_dir.path(),
            extra,
        )
    }

    fn operator(&self) -> OperatorClient {
        OperatorClient::new(MASTER)
            .unwrap()
            .with_timeout(Duration::from_secs(10))
            .with_connector(Connector::for_netns_name(&self.netns))
    }

    fn driver(&self) -> Driver {
        driver_in(&self.netns, MASTER, "weave fixture test")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Agents first, then the master instance: graceful stop tears frameworks down, so
        // Mesos runs DEL while our router still answers.
        for name in self.instances.iter().rev() {
            stop_instance(name);
        }
        self.stop_router();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

#[test]
#[cfg_attr(
    not(feature = "mesos-fixture-tests"),
    ignore = "needs root and the Mesos fixture: cargo test -p weave-mesos --features mesos-fixture-tests"
)]
fn weave_under_a_real_mesos_agent() {
    let mut host = Host::new();
    host.start_router();

    // `weave setup` output is the agent's only CNI config.
    weave_setup(host.bin_dir.path(), host.conf_dir.path());

    let name1 = format!("wvt-mh-{}-a", std::process::id());
    let name2 = format!("wvt-mh-{}-b", std::process::id());
    host.start_instance(&name1, 5050, false);
    host.start_instance(&name2, 5052, true);
    let op = host.operator();
    let deadline = secs(60);
    while op.get_agents().unwrap().agents.len() < 2 {
        assert!(Instant::now() < deadline, "second agent did not register");
        std::thread::sleep(Duration::from_millis(300));
    }

    // (a) + (d): a task on weave; Mesos reports its IP, the router owns it under the
    // Mesos ContainerID, and from the container TCP reaches the host's underlay address.
    let mut d = host.driver();
    d.launch(task(
        "wvt-ip",
        &format!("nc -z -w 3 {IP} 5050 && echo underlay-ok && sleep 60"),
        AgentChoice::Any,
    ))
    .unwrap();
    let t = d
        .wait_for("wvt-ip", TaskState::TaskRunning, secs(60))
        .unwrap();
    assert!(!t.is_terminal(), "{:?}", t.last());
    let (net, ip, cid) = task_address(&op, "wvt-ip");
    println!("GET_TASKS: task wvt-ip network {net} ip {ip} container {cid}");
    assert_eq!(net, "weave");
    assert!(ip.starts_with("10.3"), "{ip}");
    let owned = host.router_get("/ip").unwrap();
    println!("router GET /ip while running: {owned}");
    assert!(
        owned.contains(&cid) && owned.contains(&format!("{ip}/")),
        "{owned}"
    );
    d.kill("wvt-ip").unwrap();
    let t = d.wait_terminal("wvt-ip", secs(30)).unwrap();
    assert_eq!(t.state(), Some(TaskState::TaskKilled));
    let deadline = secs(20);
    while host.router_get("/ip").unwrap().contains(&cid) {
        assert!(Instant::now() < deadline, "DEL did not free {ip}");
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "router GET /ip after the task ended: {}",
        host.router_get("/ip").unwrap()
    );

    d.launch(task(
        "wvt-underlay",
        &format!("nc -z -w 3 {IP} 5050"),
        AgentChoice::Any,
    ))
    .unwrap();
    let t = d.wait_terminal("wvt-underlay", secs(60)).unwrap();
    assert_eq!(t.state(), Some(TaskState::TaskFinished), "{:?}", t.last());
    d.teardown().unwrap();

    // (b) the scenario binary against this master: 2 agents, full matrix.
    let out = Command::new("timeout")
        .args([
            "180",
            env!("CARGO_BIN_EXE_weave-mesos"),
            "scenario",
            "--master",
            MASTER,
        ])
        .args(["--netns", &host.netns, "--agents", "2", "--json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("scenario --json: {text}");
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["agents"].as_array().unwrap().len(), 2);
    assert_eq!(report["probes"].as_array().unwrap().len(), 5);
    let out = Command::new("timeout")
        .args([
            "180",
            env!("CARGO_BIN_EXE_weave-mesos"),
            "scenario",
            "--master",
            MASTER,
        ])
        .args(["--netns", &host.netns])
        .output()
        .unwrap();
    println!("scenario:\n{}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success());

    // (c) router stopped: the launch fails and Mesos shows our error text.
    host.stop_router();
    let out = Command::new("timeout")
        .args(["120", env!("CARGO_BIN_EXE_weave-mesos"), "execute"])
        .args([
            "--master",
            MASTER,
            "--netns",
            &host.netns,
            "--name",
            "wvt-norouter",
        ])
        .args([
            "--command",
            "true",
            "--networks",
            "weave",
            "--resources",
            "cpus:0.1;mem:32",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("execute with the router stopped:\n{text}");
    assert!(!out.status.success());
    assert!(
        text.contains("Received status update TASK_FAILED"),
        "{text}"
    );
    assert!(text.contains("127.0.0.1:6784"), "{text}");
    assert!(text.contains("REASON_CONTAINER_LAUNCH_FAILED"), "{text}");
    // Let Mesos' DEL of the failed container reach a router again before teardown.
    host.start_router();
}
