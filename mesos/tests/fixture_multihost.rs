//! Weave under a real multi-host Mesos 1.11 cluster (the mesos-fixture): three simulated
//! hosts (`wvt-mm<k>-<pid>`, underlay 198.18.0.k), our `weaver` on each meshed with the
//! others, `weave setup` output as each agent's only CNI config, a master-only instance on
//! host 1 and an agent-only instance (`--join`) per host. Checks:
//! 1. a `weave` task per agent: Mesos reports its IP, that host's router owns it under the
//!    task's ContainerID, the addresses are unique across hosts;
//! 2. the harness's scenario (full 3 × 3 matrix + negative probe) through the real master,
//!    across hosts: other hosts' container addresses are routed to the owning agent's
//!    underlay address (the hosts are neighbours: the routed path), `vxlan-6784` packet
//!    counters printed;
//! 3. DEL on task end frees each IP;
//! 4. faults: (a) router down → TASK_FAILED with our error text, nothing leaked after the
//!    router is back; (b) SIGKILL + restart of an agent with a running task: Mesos recovers
//!    the agent, fails the task (the stand-in executor died with the agent connection) and
//!    destroys the container with a DEL that has no CNI_NETNS; the plugin frees the IP;
//!    (c) the same DEL without CNI_NETNS driven directly, after the netns is gone.
//!
//! Needs root, a built fixture and the root crate's binaries next to this test's target
//! dir: `cargo build --workspace --bins && cargo test -p weave-mesos --features
//! mesos-fixture-tests --test fixture_multihost -- --nocapture`.

mod common;

use common::hosts::Hosts;
use common::{bin, run, secs, task, task_address};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weave_mesos::driver::{AgentChoice, Driver};
use weave_mesos::mesos_cluster::MesosCluster;
use weave_mesos::operator::{task_state_name, OperatorClient};
use weave_mesos::proto::v1::task_status::{Reason, Source};
use weave_mesos::proto::v1::{TaskState, TaskStatus};
use weave_mesos::scenario::{self, Listeners};
use weave_mesos::scheduler::{framework_info, SchedulerClient};

const HOSTS: usize = 3;

fn scheduler(hs: &Hosts) -> SchedulerClient {
    SchedulerClient::new(&hs.master())
        .unwrap()
        .with_connector(hs.connector())
}

/// A framework; `checkpoint` lets its tasks outlive an agent restart in Mesos' eyes.
fn driver(hs: &Hosts, name: &str, checkpoint: bool) -> Driver {
    let mut info = framework_info(name);
    info.checkpoint = Some(checkpoint);
    Driver::new(scheduler(hs).subscribe(info, secs(30)).unwrap())
}

/// `(ip, container id)` of a running task on the `weave` network, from GET_TASKS.
fn task_ip_cid(op: &OperatorClient, name: &str) -> (String, String) {
    let (net, ip, cid) = task_address(op, name);
    assert_eq!(net, "weave", "task {name}");
    (ip, cid)
}

/// `TASK_X REASON_Y (SOURCE_Z): message` of one status update.
fn describe(s: &TaskStatus) -> String {
    let reason = s
        .reason
        .and_then(|r| Reason::try_from(r).ok())
        .map_or("-", |r| r.as_str_name());
    let source = s
        .source
        .and_then(|r| Source::try_from(r).ok())
        .map_or("-", |r| r.as_str_name());
    format!(
        "{} {reason} ({source}): {}",
        task_state_name(s.state),
        s.message.clone().unwrap_or_default()
    )
}

/// The agent ID the master knows for `hostname`.
fn agent_id(op: &OperatorClient, hostname: &str) -> String {
    op.get_agents()
        .unwrap()
        .agents
        .into_iter()
        .find(|a| a.agent_info.hostname == hostname)
        .and_then(|a| a.agent_info.id)
        .map(|i| i.value)
        .unwrap_or_else(|| panic!("no agent {hostname}"))
}

/// Waits until `cond` holds, polling; panics with `what` at the deadline.
fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
    start.elapsed()
}

/// Packets through host k's `vxlan-6784` (tx + rx).
fn vxlan_packets(hs: &Hosts, k: usize) -> u64 {
    let out = run(
        10,
        &[
            "ip",
            "-n",
            &hs.host(k).netns,
            "-s",
            "-j",
            "link",
            "show",
            "vxlan-6784",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s = &v[0]["stats64"];
    s["rx"]["packets"].as_u64().unwrap() + s["tx"]["packets"].as_u64().unwrap()
}

#[test]
#[cfg_attr(
    not(feature = "mesos-fixture-tests"),
    ignore = "needs root and the Mesos fixture: cargo test -p weave-mesos --features mesos-fixture-tests"
)]
fn weave_on_a_three_host_mesos_cluster() {
    let t0 = Instant::now();
    let mut hs = Hosts::new(HOSTS);
    hs.start_master();
    for k in 1..=HOSTS {
        hs.start_agent(k);
    }
    let op = hs.operator();
    let agents = op.get_agents().unwrap().agents;
    let mut names: Vec<String> = agents
        .iter()
        .map(|a| a.agent_info.hostname.clone())
        .collect();
    names.sort();
    println!(
        "cluster up in {:.1}s: master {} agents {names:?}",
        t0.elapsed().as_secs_f64(),
        hs.master()
    );
    assert_eq!(names, ["198.18.0.1", "198.18.0.2", "198.18.0.3"]);

    // 1. One task per agent: IP from Mesos, owned by that host's router, unique.
    let t1 = Instant::now();
    let mut d = driver(&hs, "wvt-mm tasks", false);
    for k in 1..=HOSTS {
        let agent = AgentChoice::Named(hs.host(k).ip.clone());
        d.launch(task(&format!("wvt-mm-t{k}"), "sleep 600", agent))
            .unwrap();
    }
    let mut placed = Vec::new();
    for k in 1..=HOSTS {
        let name = format!("wvt-mm-t{k}");
        let t = d.wait_for(&name, TaskState::TaskRunning, secs(60)).unwrap();
        assert!(!t.is_terminal(), "{name}: {:?}", t.last());
        assert_eq!(t.agent_hostname, hs.host(k).ip);
        let (ip, cid) = task_ip_cid(&op, &name);
        let owned = hs.host(k).owned_by(&cid);
        println!("host {k}: task {name} ip {ip} container {cid}; router GET /ip/<cid>: {owned}");
        assert!(owned.contains(&format!("{ip}/")), "host {k}: {owned}");
        for j in (1..=HOSTS).filter(|j| *j != k) {
            assert_eq!(hs.host(j).owned_by(&cid), "", "host {j} owns {cid}");
        }
        placed.push((k, name, ip, cid));
    }
    let mut ips: Vec<&String> = placed.iter().map(|p| &p.2).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), HOSTS, "addresses not unique: {placed:?}");
    println!(
        "check 1: {HOSTS} tasks placed in {:.1}s",
        t1.elapsed().as_secs_f64()
    );

    // 3. DEL on task end frees each address on its host.
    let t3 = Instant::now();
    for (_, name, _, _) in &placed {
        d.kill(name).unwrap();
    }
    for (k, name, ip, cid) in &placed {
        let t = d.wait_terminal(name, secs(30)).unwrap();
        assert_eq!(t.state(), Some(TaskState::TaskKilled), "{name}");
        let took = wait_until(&format!("DEL frees {ip}"), Duration::from_secs(20), || {
            hs.host(*k).owned_by(cid).is_empty()
        });
        println!(
            "check 3: host {k}: {ip} of {cid} freed {:.1}s after TASK_KILLED arrived",
            took.as_secs_f64()
        );
    }
    // Mesos called the plugin once each way, with a live netns handle both times.
    for (k, _, _, cid) in &placed {
        let calls: Vec<String> = hs
            .host(*k)
            .cni_calls()
            .into_iter()
            .filter(|l| l.contains(cid.as_str()))
            .map(|l| {
                let tail: Vec<&str> = l.rsplit(' ').take(2).collect();
                format!("{} {}", &l[..3], tail.join(" "))
            })
            .collect();
        assert_eq!(calls, ["ADD rc=0 fs=nsfs", "DEL rc=0 fs=nsfs"], "host {k}");
    }
    for k in 1..=HOSTS {
        assert_eq!(
            hs.host(k).owners(),
            Vec::<String>::new(),
            "host {k} holds addresses"
        );
        assert_eq!(hs.host(k).weave_veths(), Vec::<String>::new(), "host {k}");
    }
    println!("check 3 in {:.1}s", t3.elapsed().as_secs_f64());

    // A framework holds the offers it has not declined: only one at a time from here.
    d.teardown().unwrap();

    // 2. The scenario through the real master: every agent probes every listener.
    let before: Vec<u64> = (1..=HOSTS).map(|k| vxlan_packets(&hs, k)).collect();
    let t2 = Instant::now();
    let mut cluster =
        MesosCluster::connect(hs.operator(), scheduler(&hs), "weave", HOSTS, secs(60)).unwrap();
    let report = scenario::run(&mut cluster, &Listeners::All);
    println!("{}", report.text());
    let after: Vec<u64> = (1..=HOSTS).map(|k| vxlan_packets(&hs, k)).collect();
    println!(
        "check 2: scenario in {:.1}s; vxlan-6784 packets per host before {before:?} after {after:?}",
        t2.elapsed().as_secs_f64()
    );
    assert!(report.ok(), "{}", report.text());
    assert_eq!(report.agents.len(), HOSTS);
    assert_eq!(report.listeners.len(), HOSTS);
    assert_eq!(report.probes.len(), HOSTS * HOSTS + 1);
    let cross = report
        .probes
        .iter()
        .filter(|p| p.expect_open && p.from != p.to)
        .count();
    assert_eq!(cross, HOSTS * (HOSTS - 1));
    // The hosts share one underlay subnet, so the default data path (`--dataplane auto`)
    // routes a container address of another host to that host's underlay address, without
    // VXLAN (tests/routed_4.rs covers both paths; the counters above are only printed).
    for (agent, ip) in &report.listeners {
        for h in hs.hosts.iter().filter(|h| h.ip != agent.hostname) {
            let route = run(10, &["ip", "-n", &h.netns, "route", "get", ip]);
            let via = format!("via {} ", agent.hostname);
            assert!(route.contains(&via), "host {}: {route}", h.k);
        }
    }
    // The scenario's containers end (probes) or are torn down (listeners); Mesos' DELs
    // then free all of their addresses and veths.
    let took = wait_until(
        "DEL of the scenario's containers",
        Duration::from_secs(30),
        || {
            (1..=HOSTS)
                .all(|k| hs.host(k).owners().is_empty() && hs.host(k).weave_veths().is_empty())
        },
    );
    println!(
        "check 3: all {} scenario addresses and veths gone {:.1}s after the scenario returned",
        report.listeners.len() + report.probes.len(),
        took.as_secs_f64()
    );

    let mut d = driver(&hs, "wvt-mm faults", false);
    router_down_fails_the_task_cleanly(&mut hs, &mut d);
    router_down_when_the_task_ends(&mut hs, &mut d);
    d.teardown().unwrap();
    agent_restart(&mut hs);
    del_without_netns(&mut hs, 3);
    println!("total {:.1}s", t0.elapsed().as_secs_f64());
}

/// 4a. Router stopped on host 2: the launch fails with our error in the TaskStatus; once
/// the router is back nothing is left (no veth, no allocation).
fn router_down_fails_the_task_cleanly(hs: &mut Hosts, d: &mut Driver) {
    hs.host_mut(2).stop_router();
    let name = "wvt-mm-norouter";
    d.launch(task(
        name,
        "sleep 600",
        AgentChoice::Named(hs.host(2).ip.clone()),
    ))
    .unwrap();
    let t = d.wait_terminal(name, secs(60)).unwrap();
    let last = t.last().unwrap();
    let msg = last.message.clone().unwrap_or_default();
    println!("4a: router down on host 2: {}", describe(last));
    assert_eq!(t.state(), Some(TaskState::TaskFailed));
    assert_eq!(last.reason, Some(Reason::ContainerLaunchFailed as i32));
    // Our ADD error (CNI code 11, try again later) as Mesos quotes it.
    assert!(msg.contains("\"code\": 11"), "{msg}");
    assert!(
        msg.contains("connect 127.0.0.1:6784: Connection refused"),
        "{msg}"
    );
    // Mesos names the container it tried to attach; TaskStatus has no container_status.
    let cid = msg
        .split("failed to attach container ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no container ID in {msg}"))
        .to_string();
    // Mesos' DEL while destroying the container hit the stopped router too, and Mesos
    // does not retry it: only ADD must not have left anything behind.
    assert!(
        msg.contains(&format!("failed to detach container {cid}")),
        "{msg}"
    );
    let calls: Vec<String> = hs
        .host(2)
        .cni_calls()
        .into_iter()
        .filter(|l| l.contains(&cid))
        .collect();
    println!("4a: plugin calls for {cid}: {calls:?}");
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[0].starts_with("ADD ") && !calls[0].ends_with(" rc=0"));
    assert!(calls[1].starts_with("DEL ") && !calls[1].ends_with(" rc=0"));
    hs.host_mut(2).start_router();
    let veths = hs.host(2).weave_veths();
    let owned = hs.host(2).owners();
    println!("4a: container {cid}; after the router restart: veths {veths:?} owners {owned:?}");
    assert!(veths.is_empty(), "{veths:?}");
    assert!(owned.is_empty(), "{owned:?}");
    assert_eq!(hs.host(2).owned_by(&cid), "");
}

/// 4d. The router dies while a task runs and the task is killed: Mesos' DEL fails and is
/// never retried, the netns goes away with the container. The restarted router's sweep
/// finds the attachment's veth gone and releases the address.
fn router_down_when_the_task_ends(hs: &mut Hosts, d: &mut Driver) {
    let op = hs.operator();
    let name = "wvt-mm-orphan";
    d.launch(task(
        name,
        "sleep 600",
        AgentChoice::Named(hs.host(2).ip.clone()),
    ))
    .unwrap();
    d.wait_for(name, TaskState::TaskRunning, secs(60)).unwrap();
    let (ip, cid) = task_ip_cid(&op, name);
    assert!(hs.host(2).owned_by(&cid).contains(&format!("{ip}/")));
    hs.host_mut(2).stop_router();
    d.kill(name).unwrap();
    let t = d.wait_terminal(name, secs(60)).unwrap();
    println!(
        "4d: router down, task killed: {}",
        describe(t.last().unwrap())
    );
    // TASK_KILLED comes from the executor; the agent destroys the container (DEL) after.
    let calls_for = |hs: &Hosts| -> Vec<String> {
        hs.host(2)
            .cni_calls()
            .into_iter()
            .filter(|l| l.contains(&cid))
            .collect()
    };
    let killed = Instant::now();
    while !calls_for(hs).iter().any(|c| c.starts_with("DEL ")) {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no DEL for {cid} 30 s after TASK_KILLED: {:?}",
            calls_for(hs)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Give Mesos time to retry, if it ever did.
    std::thread::sleep(Duration::from_secs(2));
    let calls = calls_for(hs);
    println!("4d: plugin calls for {cid}: {calls:?}");
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("DEL ") && !c.ends_with(" rc=0")),
        "Mesos' DEL must have failed against the stopped router: {calls:?}"
    );
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("DEL ")).count(),
        1,
        "Mesos retried the DEL: {calls:?}"
    );
    hs.host_mut(2).start_router();
    let restarted = Instant::now();
    while !hs.host(2).owned_by(&cid).is_empty() {
        assert!(
            restarted.elapsed() < Duration::from_secs(15),
            "sweep did not release {ip} of {cid} in 15 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "4d: {ip} of {cid} released by the sweep {:.1}s after the router restart",
        restarted.elapsed().as_secs_f64()
    );
    assert!(hs.host(2).weave_veths().is_empty());
}

/// 4b. SIGKILL host 3's agent while a checkpointed task runs, restart it on the same work
/// dir, and see what Mesos recovery does with the container and our plugin.
fn agent_restart(hs: &mut Hosts) {
    let op = hs.operator();
    let mut d = driver(hs, "wvt-mm checkpointed", true);
    let name = "wvt-mm-survivor";
    d.launch(task(
        name,
        "nc -k -l 0.0.0.0 1090",
        AgentChoice::Named(hs.host(3).ip.clone()),
    ))
    .unwrap();
    d.wait_for(name, TaskState::TaskRunning, secs(60)).unwrap();
    let (ip, cid) = task_ip_cid(&op, name);
    assert!(hs.host(3).owned_by(&cid).contains(&format!("{ip}/")));
    let veths = hs.host(3).weave_veths();
    assert_eq!(veths.len(), 1, "{veths:?}");
    let id_before = agent_id(&op, &hs.host(3).ip);
    let pid = hs.kill_agent(3);
    let killed = Instant::now();
    println!("4b: task {name} ip {ip} container {cid}; agent pid {pid} SIGKILLed");
    hs.restart_agent(3);
    println!(
        "4b: agent restarted and re-registered {:.1}s after the kill",
        killed.elapsed().as_secs_f64()
    );
    let t = d.wait_terminal(name, secs(90)).unwrap_or_else(|e| {
        panic!(
            "{name} after the restart: {e}\n{}",
            hs.host(3).agent_log_tail(40)
        )
    });
    for (at, s) in &t.updates {
        println!(
            "4b: update +{:.1}s {}",
            at.saturating_duration_since(killed).as_secs_f64(),
            describe(s)
        );
    }
    // Mesos recovered the agent (same ID, checkpointed framework) and its container; the
    // fixture's stand-in executor had exited when its agent connection broke, so the agent
    // ended the task and destroyed the container, and that destroy's DEL freed the IP.
    // (Mesos' real command executor would wait for the agent and keep the task.) Which end
    // the agent reports is a race inside Mesos: it sees the executor's exit (TASK_FAILED,
    // executor terminated) or, on a slow host, its 2 s reregistration timeout fires first
    // (TASK_GONE, reregistration timeout); both destroy the container.
    assert_eq!(
        agent_id(&op, &hs.host(3).ip),
        id_before,
        "agent not recovered"
    );
    let last = t.last().unwrap();
    let ended = (t.state(), last.reason);
    assert!(
        ended
            == (
                Some(TaskState::TaskFailed),
                Some(Reason::ExecutorTerminated as i32)
            )
            || ended
                == (
                    Some(TaskState::TaskGone),
                    Some(Reason::ExecutorReregistrationTimeout as i32)
                ),
        "{}",
        describe(last)
    );
    assert_eq!(last.source, Some(Source::Agent as i32));
    let freed = wait_until(&format!("DEL frees {ip}"), Duration::from_secs(30), || {
        hs.host(3).owned_by(&cid).is_empty()
    });
    let veths = hs.host(3).weave_veths();
    println!(
        "4b: agent {id_before} recovered; {ip} freed {:.1}s after the task ended; veths left {veths:?}",
        freed.as_secs_f64()
    );
    assert!(veths.is_empty(), "{veths:?}");
    let calls: Vec<String> = hs
        .host(3)
        .cni_calls()
        .into_iter()
        .filter(|l| l.contains(&cid))
        .collect();
    println!("4b: plugin calls for {cid}: {calls:?}");
    assert!(calls[0].starts_with("ADD ") && calls[0].ends_with(" rc=0"));
    let del = calls.last().unwrap();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(del.starts_with("DEL ") && del.ends_with(" rc=0"), "{del}");
    // The new agent has no handle for the old container's netns (it was a bind mount in
    // the killed agent's mount namespace), so Mesos sends DEL without CNI_NETNS, as after
    // a reboot (4c), and the plugin frees the address by container ID.
    assert!(del.contains(" netns=none "), "{del}");
    let log = hs.host(3).agent_log();
    for l in log.lines().filter(|l| {
        l.contains(&cid) && (l.contains("ecover") || l.contains("cleanup") || l.contains("Destroy"))
    }) {
        println!("4b: agent log: {}", l.chars().take(200).collect::<String>());
    }
    d.teardown().unwrap();
}

/// 4c. After a "reboot" the container's netns is gone; Mesos' DEL then has no CNI_NETNS.
/// The plugin must still free the address by container ID (and say so with exit 0).
fn del_without_netns(hs: &mut Hosts, k: usize) {
    let ns = hs.add_netns(&format!("{k}c"));
    let host = hs.host(k);
    let cid = format!("wvt-mm-reboot-{}", std::process::id());
    let conflist = std::fs::read_to_string(host.conf_dir.path().join("10-weave.conflist")).unwrap();
    let mut conf: serde_json::Value = serde_json::from_str(&conflist).unwrap();
    conf["args"] = serde_json::json!({"org.apache.mesos": {"network_info": {"name": "weave"}}});
    let conf = conf.to_string();
    let add = plugin(hs, k, "ADD", &cid, Some(&format!("/run/netns/{ns}")), &conf);
    let owned = host.owned_by(&cid);
    println!("4c: ADD in {ns}: rc {} owned {owned}", add.0);
    assert_eq!(add.0, 0, "{add:?}");
    assert!(!owned.is_empty());
    assert_eq!(host.weave_veths().len(), 1);
    // The "reboot": the namespace (and the veth pair with it) is gone.
    run(10, &["ip", "netns", "del", &ns]);
    let del = plugin(hs, k, "DEL", &cid, None, &conf);
    println!("4c: DEL without CNI_NETNS: rc {} {}", del.0, del.1.trim());
    assert_eq!(del.0, 0, "{del:?}");
    assert_eq!(host.owned_by(&cid), "");
    wait_until("the veth goes", Duration::from_secs(5), || {
        host.weave_veths().is_empty()
    });
    let again = plugin(hs, k, "DEL", &cid, None, &conf);
    assert_eq!(again.0, 0, "second DEL: {again:?}");
}

/// Runs `weave-net` in host k with the env a Mesos agent gives it: (exit code, stdout+stderr).
fn plugin(
    hs: &Hosts,
    k: usize,
    command: &str,
    cid: &str,
    netns: Option<&str>,
    conf: &str,
) -> (i32, String) {
    let host = hs.host(k);
    let mut cmd = Command::new("timeout");
    cmd.args(["20", "ip", "netns", "exec", &host.netns])
        .arg(bin("weave-net"))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", host.bin_dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(n) = netns {
        cmd.env("CNI_NETNS", n);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
