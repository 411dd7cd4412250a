//! `NetworkInfo.port_mappings` under the real Mesos 1.11.0 agent of the mesos-fixture, with
//! our `weave-net` as the only CNI plugin (no `mesos-cni-port-mapper`): a simulated host
//! (netns `wvt-pm-<pid>`, underlay 100.64.1.1/24) runs our `weaver` and a master+agent
//! instance; a "remote host" (netns `wvt-pm-r-<pid>`, 100.64.1.2) connects to the host port.
//! Checks: the remote host reaches the task's `nc` listener through host port 8080; the rules
//! carry the task's Mesos ContainerID and go with the task (DEL); `weave-mesos execute
//! --port_mappings` sets them too (the task reaches its own listener through the host port).
//!
//! Needs root, a built fixture, and the root crate's binaries next to this test's target
//! dir: `cargo build --bins && cargo test -p weave-mesos --features mesos-fixture-tests`.

mod common;

use common::{bin, driver_in, run, secs, spawn_weaver, start_instance, stop_instance, wait_router};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use weave_mesos::driver::{parse_port_mappings, parse_resources, AgentChoice, Driver, TaskSpec};
use weave_mesos::http::Connector;
use weave_mesos::operator::OperatorClient;
use weave_mesos::proto::v1::TaskState;

const IP: &str = "100.64.1.1";
const REMOTE_IP: &str = "100.64.1.2";
const MASTER: &str = "100.64.1.1:5050";

/// Host, remote host, router and fixture instance; torn down on drop, even after a panic.
struct Hosts {
    netns: String,
    remote: String,
    instance: Option<String>,
    router: Option<Child>,
    datadir: tempfile::TempDir,
    bin_dir: tempfile::TempDir,
    conf_dir: tempfile::TempDir,
}

impl Hosts {
    fn new() -> Hosts {
        let netns = format!("wvt-pm-{}", std::process::id());
        let remote = format!("wvt-pm-r-{}", std::process::id());
        let h = Hosts {
            netns: netns.clone(),
            remote: remote.clone(),
            instance: None,
            router: None,
            datadir: tempfile::tempdir().unwrap(),
            bin_dir: tempfile::tempdir().unwrap(),
            conf_dir: tempfile::tempdir().unwrap(),
        };
        for ns in [&netns, &remote] {
            run(10, &["ip", "netns", "add", ns]);
            run(10, &["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        run(
            10,
            &[
                "ip", "-n", &netns, "link", "add", "wvt-pu0", "type", "veth", "peer", "name",
                "wvt-pu1", "netns", &remote,
            ],
        );
        let ip = format!("{IP}/24");
        let rip = format!("{REMOTE_IP}/24");
        run(
            10,
            &["ip", "-n", &netns, "addr", "add", &ip, "dev", "wvt-pu0"],
        );
        run(
            10,
            &["ip", "-n", &remote, "addr", "add", &rip, "dev", "wvt-pu1"],
        );
        run(10, &["ip", "-n", &netns, "link", "set", "wvt-pu0", "up"]);
        run(10, &["ip", "-n", &remote, "link", "set", "wvt-pu1", "up"]);
        h
    }

    fn start_router(&mut self) {
        self.router = Some(spawn_weaver(&self.netns, self.datadir.path()));
        wait_router(&self.netns);
    }

    fn try_sh(&self, cmd: &str) -> Option<String> {
        let out = Command::new("timeout")
            .args(["20", "ip", "netns", "exec", &self.netns, "sh", "-c", cmd])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn iptables_save(&self) -> String {
        self.try_sh("iptables-save -t nat").expect("iptables-save")
    }

    fn start_instance(&mut self, name: &str) {
        self.instance = Some(name.to_string());
        start_instance(
            name,
            &self.netns,
            IP,
            5050,
            self.conf_dir.path(),
            self.bin_dir.path(),
            &[],
        );
    }

    fn driver(&self) -> Driver {
        driver_in(&self.netns, MASTER, "weave portmap fixture test")
    }

    /// From the remote host: connect to `IP:port` and read what the listener sends.
    fn remote_get(&self, port: u16) -> Result<String, String> {
        let file = std::fs::File::open(format!("/var/run/netns/{}", self.remote)).unwrap();
        let addr: SocketAddr = format!("{IP}:{port}").parse().unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out)
                .map_err(|e| format!("read: {e}"))?;
            Ok(out)
        })
        .join()
        .unwrap()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Graceful stop tears the framework down: Mesos runs DEL while the router answers.
        if let Some(name) = &self.instance {
            stop_instance(name);
        }
        if let Some(mut r) = self.router.take() {
            let _ = r.kill();
            let _ = r.wait();
        }
        for ns in [&self.netns, &self.remote] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

#[test]
#[cfg_attr(
    not(feature = "mesos-fixture-tests"),
    ignore = "needs root and the Mesos fixture: cargo test -p weave-mesos --features mesos-fixture-tests"
)]
fn port_mappings_under_a_real_mesos_agent() {
    let started = Instant::now();
    let mut hosts = Hosts::new();
    hosts.start_router();
    let out = Command::new(bin("weave"))
        .args(["setup", "--cni-bin-dir"])
        .arg(hosts.bin_dir.path())
        .arg("--cni-conf-dir")
        .arg(hosts.conf_dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let plugins: Vec<String> = std::fs::read_dir(hosts.bin_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    println!("CNI plugins dir: {plugins:?}");
    assert!(
        !plugins.iter().any(|p| p.contains("port-mapper")),
        "{plugins:?}"
    );
    let instance = format!("wvt-pm-{}", std::process::id());
    hosts.start_instance(&instance);
    println!("fixture up after {:?}", started.elapsed());

    // A listener task with host port 8080 -> container port 1080.
    let mut d = hosts.driver();
    d.launch(TaskSpec {
        name: "wvt-pm-listener".into(),
        command: "while true; do echo wvt-pm-task | nc -l -N 1080; done".into(),
        shell: true,
        networks: vec!["weave".into()],
        resources: parse_resources("cpus:0.1;mem:32").unwrap(),
        agent: AgentChoice::Any,
        port_mappings: parse_port_mappings("8080:1080/tcp").unwrap(),
        ..Default::default()
    })
    .unwrap();
    let t = d
        .wait_for("wvt-pm-listener", TaskState::TaskRunning, secs(60))
        .unwrap();
    assert!(!t.is_terminal(), "{:?}", t.last());
    let cid = t
        .updates
        .iter()
        .rev()
        .find_map(|(_, s)| s.container_status.as_ref()?.container_id.clone())
        .map(|c| c.value)
        .expect("TASK_RUNNING carries the ContainerID");
    let tag = format!("weave-net portmap {cid} eth0");
    let saved = hosts.iptables_save();
    let rules: Vec<&str> = saved.lines().filter(|l| l.contains(&tag)).collect();
    println!("rules for container {cid}:\n{}", rules.join("\n"));
    assert_eq!(rules.len(), 2, "{saved}");
    assert!(rules.iter().any(|r| r.contains("--dport 8080")), "{saved}");

    // The remote host reaches the task through host port 8080 (the listener may need a moment).
    let t0 = Instant::now();
    let got = loop {
        match hosts.remote_get(8080) {
            Ok(s) if !s.is_empty() => break s,
            other => {
                assert!(
                    t0.elapsed() < Duration::from_secs(20),
                    "remote -> {IP}:8080: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    };
    println!(
        "remote {REMOTE_IP} -> {IP}:8080 answered {:?} after {:?}",
        got.trim(),
        t0.elapsed()
    );
    assert_eq!(got.trim(), "wvt-pm-task");

    // Killing the task makes Mesos run DEL: the rules go.
    d.kill("wvt-pm-listener").unwrap();
    let t = d.wait_terminal("wvt-pm-listener", secs(30)).unwrap();
    assert_eq!(t.state(), Some(TaskState::TaskKilled));
    let deadline = secs(20);
    while hosts.iptables_save().contains(&cid) {
        assert!(Instant::now() < deadline, "DEL left the rules of {cid}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = hosts.remote_get(8080);
    println!("remote -> {IP}:8080 after the task ended: {after:?}");
    assert!(after.is_err(), "{after:?}");
    d.teardown().unwrap();

    // `weave-mesos execute --port_mappings`: the task reaches its own listener through the
    // host port (hairpin), which nothing else serves.
    let out = Command::new("timeout")
        .args(["120", env!("CARGO_BIN_EXE_weave-mesos"), "execute"])
        .args(["--master", MASTER, "--netns", &hosts.netns])
        .args(["--name", "wvt-pm-self", "--networks", "weave"])
        .args([
            "--resources",
            "cpus:0.1;mem:32",
            "--port_mappings",
            "8090:90",
        ])
        .arg("--command")
        .arg(format!(
            "(nc -l 90 >/dev/null &) ; sleep 1; nc -z -w 3 {IP} 8090"
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("execute --port_mappings 8090:90:\n{text}");
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("TASK_FINISHED"), "{text}");
    let deadline = secs(20);
    while hosts.iptables_save().contains("weave-net portmap") {
        assert!(
            Instant::now() < deadline,
            "rules left after the execute task: {}",
            hosts.iptables_save()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let op = OperatorClient::new(MASTER)
        .unwrap()
        .with_timeout(Duration::from_secs(10))
        .with_connector(Connector::for_netns_name(&hosts.netns));
    println!(
        "agents: {}; test took {:?}",
        op.get_agents().unwrap().agents.len(),
        started.elapsed()
    );
}
