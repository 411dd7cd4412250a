//! The Mesos docs' operator flow, word for word, with tasks in a container image under the
//! real Mesos 1.11 agent (mesos-fixture): three simulated hosts (`wvt-mm<k>-<pid>`, underlay
//! 198.18.0.k) with our `weaver` on each, `weave setup` output as each agent's CNI config,
//! a master-only instance on host 1 and one agent per host started with the flags
//! `weave-mesos agent-flags --images` prints. The image `alpine` is built here by
//! `scripts/build-image` from Debian packages (a `docker save` tarball; no registry).
//!
//! 1. `weave-mesos execute --command="ifconfig; nc -k -l 0.0.0.0 1080" --docker_image=alpine
//!    --networks=weave --resources=cpus:0.1 --shell --name=example` on agent 1: the task runs
//!    in the image rootfs, its sandbox stdout has the `ifconfig` address Mesos reports (and
//!    `execute` prints), host 1's router owns it under the task's ContainerID; `nc -z -v IP
//!    1080` from hosts 2 and 3 and from an image task on agent 3 succeeds, a closed port is
//!    refused; the framework's teardown frees the address and the rootfs.
//! 2. `weave-mesos scenario --docker_image alpine`: the 3 × 3 matrix and the negative probe.
//! 3. Kill: DEL frees the address on the right router, the rootfs and the container's
//!    mounts are gone, no veth is left.
//! 4. Mixed: an image task and a task without an image on one agent reach each other.
//! 5. Bad image: TASK_FAILED with Mesos' reason in `execute`'s output, exit 1, no address.
//! 6. Inside the image: hostname and /etc/hosts as Mesos writes them from our result, the
//!    default route via the weave bridge, the agent reachable from the task's network,
//!    `--env`; /etc/resolv.conf from our result's `dns`: the router's DNS server on the
//!    bridge, or what an operator put in the config's `dns`; `--no-shell` runs the image's
//!    entrypoint.
//!
//! Launch-to-RUNNING times (cold and warm image store, and without an image) are printed.
//!
//! Needs root, a built fixture, busybox-static and netcat-openbsd (scripts/install-deps),
//! and the root crate's binaries: `cargo build --workspace --bins && cargo test -p
//! weave-mesos --features mesos-fixture-tests --test fixture_images -- --nocapture`.

mod common;
mod image_kit;

use common::hosts::Hosts;
use common::{bin, run, secs, task_address};
use image_kit::*;
use std::path::Path;
use std::time::{Duration, Instant};
use weave_mesos::operator::{task_state_name, OperatorClient};
use weave_mesos::proto::v1::TaskState;

const HOSTS: usize = 3;

#[test]
#[cfg_attr(
    not(feature = "mesos-fixture-tests"),
    ignore = "needs root and the Mesos fixture: cargo test -p weave-mesos --features mesos-fixture-tests"
)]
fn the_docs_flow_in_container_images_on_three_hosts() {
    let t0 = Instant::now();
    let registry = tempfile::tempdir().unwrap();
    let stores = tempfile::tempdir().unwrap();
    println!("{}", build_image(registry.path(), &[]));
    println!(
        "{}",
        build_image(
            registry.path(),
            &[
                "--name",
                "hello",
                "--cmd",
                r#"["/bin/cat","/etc/weave-image"]"#
            ]
        )
    );
    let built = t0.elapsed();
    let mut hs = Hosts::new(HOSTS);
    hs.start_master();
    let mut agents = ImageAgents(Vec::new());

    // `agent-flags --images --check` on host 1 (router, plugin, config, registry, store).
    let store1 = stores.path().join("h1");
    let flags_args = [
        "--images",
        "--check",
        "--cni-config-dir",
        hs.host(1).conf_dir.path().to_str().unwrap(),
        "--cni-plugins-dir",
        hs.host(1).bin_dir.path().to_str().unwrap(),
        "--docker-registry",
        registry.path().to_str().unwrap(),
        "--docker-store-dir",
        store1.to_str().unwrap(),
    ];
    let check = Cli::spawn(&hs, &[&["agent-flags"], &flags_args[..]].concat());
    let (rc, text) = check.finish(Duration::from_secs(30));
    println!("agent-flags --images --check (rc {rc}):\n{text}");
    assert_eq!(rc, 0, "{text}");
    for want in [
        "--isolation=filesystem/linux,network/cni,docker/runtime",
        "--image_providers=docker",
        "--image_provisioner_backend=copy",
        &format!("--docker_registry={}", registry.path().display()),
        &format!("--docker_store_dir={}", store1.display()),
        &format!(
            "ok:      image alpine in {}",
            registry.path().join("alpine.tar").display()
        ),
        "ok:      image hello in",
        "ok:      router answers GET",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    for k in 1..=HOSTS {
        let env = image_agent_env(
            hs.host(k),
            registry.path(),
            &stores.path().join(format!("h{k}")),
        );
        if k == 1 {
            println!("agent env (from agent-flags --images --format env): {env:?}");
        }
        start_image_agent(&hs, &mut agents, k, &env);
    }
    let op = hs.operator();
    assert_eq!(op.get_agents().unwrap().agents.len(), HOSTS);
    println!(
        "images built in {:.1}s; cluster up in {:.1}s",
        built.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );

    launch_times(&hs);
    docs_flow(&hs, &op);
    scenario(&hs);
    kill_frees_everything(&hs, &op);
    mixed_tasks_on_one_agent(&hs, &op);
    bad_image(&hs);
    inside_the_image(&hs);
    no_shell_runs_the_entrypoint(&hs);
    println!("total {:.1}s", t0.elapsed().as_secs_f64());
    drop(agents);
}

/// LAUNCH (offer accepted) to TASK_RUNNING on host 2: image tasks with a cold and a warm
/// image store, then a task without an image. Printed, not asserted.
fn launch_times(hs: &Hosts) {
    let mut d = driver(hs, "wvt-img timing");
    for (name, image) in [
        ("wvt-img-cold", Some("alpine")),
        ("wvt-img-warm", Some("alpine")),
        ("wvt-img-noimage", None),
    ] {
        d.launch(image_task(name, "true", 2, image)).unwrap();
        let t = d.wait_terminal(name, secs(90)).unwrap();
        assert_eq!(
            t.state(),
            Some(TaskState::TaskFinished),
            "{name}: {:?}",
            t.last()
        );
        let running = t.reached(TaskState::TaskRunning).expect("TASK_RUNNING");
        println!(
            "timing: {name}: LAUNCH -> TASK_RUNNING {:.0} ms",
            running.duration_since(t.submitted).as_secs_f64() * 1e3
        );
    }
    d.teardown().unwrap();
}

/// Check 1: The docs' flow.
fn docs_flow(hs: &Hosts, op: &OperatorClient) {
    let (h1, h2, h3) = (hs.host(1), hs.host(2), hs.host(3));
    let started = Instant::now();
    let example = Cli::spawn(
        hs,
        &[
            "execute",
            &format!("--master={}", hs.master()),
            "--command=ifconfig; nc -k -l 0.0.0.0 1080",
            "--docker_image=alpine",
            "--name=example",
            "--networks=weave",
            "--resources=cpus:0.1",
            "--shell",
            &format!("--agent={}", h1.ip),
        ],
    );
    example.wait_line("TASK_RUNNING", Duration::from_secs(90), |l| {
        l.contains("TASK_RUNNING for task 'example'")
    });
    let ip_line = example.wait_line("the task IP", Duration::from_secs(10), |l| {
        l.starts_with("  ip_address: ")
    });
    println!(
        "docs flow: TASK_RUNNING {:.1}s after `execute` started",
        started.elapsed().as_secs_f64()
    );
    assert!(ip_line.ends_with(" (network 'weave')"), "{ip_line}");
    let ip = ip_line["  ip_address: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let fid = framework_id(&example.text());

    // Mesos' GET_TASKS agrees; host 1's router owns the IP under the task's ContainerID.
    let (net, mesos_ip, cid) = task_address(op, "example");
    assert_eq!((net.as_str(), mesos_ip.as_str()), ("weave", ip.as_str()));
    let owned = h1.owned_by(&cid);
    println!("docs flow: task example ip {ip} container {cid}; host 1 router: {owned}");
    assert!(owned.contains(&format!("{ip}/")), "{owned}");
    assert_eq!(h2.owned_by(&cid), "");
    assert_eq!(h3.owned_by(&cid), "");

    // The sandbox stdout has the ifconfig output with exactly that address on eth0.
    let stdout = sandbox_file(h1, &fid, "example", "stdout", "inet addr:");
    let eth0: Vec<&str> = stdout
        .split("\n\n")
        .find(|b| b.starts_with("eth0"))
        .unwrap_or_else(|| panic!("no eth0 in ifconfig output:\n{stdout}"))
        .lines()
        .collect();
    let inet = eth0
        .iter()
        .find(|l| l.trim_start().starts_with("inet addr:"))
        .unwrap()
        .trim()
        .to_string();
    println!("docs flow: ifconfig eth0: {inet}");
    assert!(
        inet.starts_with(&format!("inet addr:{ip} ")),
        "{inet} vs {ip}"
    );

    // The task's processes run in the image rootfs: the marker, not the host's /etc.
    let pids = container_pids(h1, &cid);
    let nc = pids
        .iter()
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c == b"nc\0-k\0-l\x000.0.0.0\x001080\0")
        })
        .unwrap_or_else(|| panic!("no `nc -k -l 0.0.0.0 1080` among {pids:?}"));
    let marker = std::fs::read_to_string(format!("/proc/{nc}/root/etc/weave-image")).unwrap();
    println!(
        "docs flow: nc (pid {nc}) sees /etc/weave-image: {}",
        marker.lines().next().unwrap()
    );
    assert!(marker.starts_with("weave-mesos image alpine,"), "{marker}");
    assert!(marker.contains("netcat-openbsd"), "{marker}");
    assert!(!Path::new("/etc/weave-image").exists());
    let rootfs = rootfs_of(h1, &cid).expect("the provisioned rootfs");
    println!("docs flow: rootfs {}", rootfs.display());

    // `nc -z -v <IP FROM LOGS> 1080` from the other agents' hosts (a host reaches container
    // addresses once it has an address on the weave bridge: `weave expose`, as with Weave
    // Net; an agent that ran a weave task has the bridge's gateway address already)...
    for h in [h2, h3] {
        let out = run(
            30,
            &[
                "ip",
                "netns",
                "exec",
                &h.netns,
                bin("weave").to_str().unwrap(),
                "--datadir",
                h.datadir.path().to_str().unwrap(),
                "expose",
            ],
        );
        println!("docs flow: host {}: weave expose: {}", h.k, out.trim());
    }
    for h in [h2, h3] {
        let (ok, line) = nc_from_host(h, &ip, 1080);
        println!("docs flow: host {}: nc -z -v {ip} 1080: {line}", h.k);
        assert!(ok && line.contains("succeeded"), "{line}");
    }
    // ... and from an image task on agent 3.
    let probe_cmd = format!("--command=nc -z -v -w 3 {ip} 1080");
    let (rc, text) = execute(
        hs,
        &[
            &probe_cmd,
            "--docker_image=alpine",
            "--name=probe",
            "--networks=weave",
            "--resources=cpus:0.1",
            &format!("--agent={}", h3.ip),
        ],
    );
    println!("docs flow: image probe on agent 3: execute exited {rc}");
    assert_eq!(rc, 0, "{text}");
    assert!(text.contains("TASK_FINISHED for task 'probe'"), "{text}");
    let probe_err = sandbox_file(h3, &framework_id(&text), "probe", "stderr", "succeeded");
    let line = probe_err.lines().find(|l| l.contains("succeeded")).unwrap();
    println!("docs flow: probe task's stderr: {line}");
    assert!(
        line.contains(&format!("Connection to {ip} 1080 port")),
        "{line}"
    );
    // A closed port is refused.
    let (ok, line) = nc_from_host(h2, &ip, 1081);
    println!("docs flow: host 2: nc -z -v {ip} 1081: {line}");
    assert!(!ok && line.contains("Connection refused"), "{line}");

    // The operator ends the framework: Mesos kills the task and destroys the container.
    teardown_framework(op, &fid);
    let (rc, text) = example.finish(Duration::from_secs(60));
    println!("docs flow: execute after the framework's TEARDOWN: rc {rc}");
    assert_ne!(rc, 0, "{text}");
    let freed = wait_until("DEL of example", Duration::from_secs(30), || {
        h1.owned_by(&cid).is_empty()
    });
    wait_until("rootfs of example removed", Duration::from_secs(30), || {
        !rootfs.exists()
    });
    println!(
        "docs flow: {ip} freed {:.1}s after execute exited; rootfs gone",
        freed.as_secs_f64()
    );
    assert_eq!(
        plugin_calls(h1, &cid),
        ["ADD rc=0 fs=nsfs", "DEL rc=0 fs=nsfs"]
    );
}

/// Check 2: `weave-mesos scenario --docker_image alpine` through the real master.
fn scenario(hs: &Hosts) {
    let started = Instant::now();
    let (rc, text) = Cli::spawn(
        hs,
        &[
            "scenario",
            "--master",
            &hs.master(),
            "--agents",
            "3",
            "--docker_image",
            "alpine",
        ],
    )
    .finish(Duration::from_secs(240));
    println!(
        "scenario --docker_image alpine: rc {rc} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(rc, 0, "{text}");
    assert!(text.ends_with("result: PASS"), "{text}");
    let ok_cells = text.matches("OK ").count();
    // 9 matrix cells plus "OK, refused" of the negative probe.
    assert_eq!(ok_cells, HOSTS * HOSTS, "{text}");
    assert!(text.contains("(closed): OK, refused"), "{text}");
    wait_until(
        "DEL of the scenario's containers",
        Duration::from_secs(30),
        || {
            hs.hosts
                .iter()
                .all(|h| h.owners().is_empty() && h.weave_veths().is_empty())
        },
    );
}

/// Check 3: Kill an image task on host 2: DEL frees its address on host 2's router, the rootfs
/// and its mounts are gone, no veth is left.
fn kill_frees_everything(hs: &Hosts, op: &OperatorClient) {
    let h2 = hs.host(2);
    let mut d = driver(hs, "wvt-img kill");
    let name = "wvt-img-kill";
    d.launch(image_task(name, "sleep 600", 2, Some("alpine")))
        .unwrap();
    let t = d.wait_for(name, TaskState::TaskRunning, secs(60)).unwrap();
    assert!(!t.is_terminal(), "{:?}", t.last());
    let (_, ip, cid) = task_address(op, name);
    assert!(h2.owned_by(&cid).contains(&format!("{ip}/")));
    let rootfs = rootfs_of(h2, &cid).expect("rootfs while running");
    assert_eq!(h2.weave_veths().len(), 1);
    let agent_pid = std::fs::read_to_string(run_dir(&h2.agent).join("pid")).unwrap();
    let mounts = || {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", agent_pid.trim()))
            .unwrap()
            .lines()
            .filter(|l| l.contains(&cid))
            .count()
    };
    let mounted = mounts();
    println!("kill: {name} ip {ip} container {cid}: {mounted} mounts in the agent's namespace, rootfs {}", rootfs.display());
    assert!(mounted > 0);
    d.kill(name).unwrap();
    let t = d.wait_terminal(name, secs(30)).unwrap();
    assert_eq!(t.state(), Some(TaskState::TaskKilled));
    let freed = wait_until(
        "DEL frees the kill task's IP",
        Duration::from_secs(30),
        || h2.owned_by(&cid).is_empty(),
    );
    wait_until("the rootfs goes", Duration::from_secs(30), || {
        !rootfs.exists()
    });
    wait_until("the container's mounts go", Duration::from_secs(10), || {
        mounts() == 0
    });
    println!(
        "kill: {ip} freed on host 2 {:.1}s after TASK_KILLED; rootfs and {mounted} mounts gone; veths {:?}",
        freed.as_secs_f64(),
        h2.weave_veths()
    );
    assert!(h2.weave_veths().is_empty());
    assert!(container_pids(h2, &cid).is_empty());
    assert_eq!(
        plugin_calls(h2, &cid),
        ["ADD rc=0 fs=nsfs", "DEL rc=0 fs=nsfs"]
    );
    for k in [1, 3] {
        assert_eq!(hs.host(k).owned_by(&cid), "");
    }
    d.teardown().unwrap();
}

/// Check 4: On agent 2: a listener in the image, probed by a task without an image, and the
/// other way round.
fn mixed_tasks_on_one_agent(hs: &Hosts, op: &OperatorClient) {
    let mut d = driver(hs, "wvt-img mixed");
    let pairs = [
        ("wvt-img-l-image", Some("alpine"), "wvt-img-p-plain", None),
        ("wvt-img-l-plain", None, "wvt-img-p-image", Some("alpine")),
    ];
    for (listener, limage, probe, pimage) in pairs {
        d.launch(image_task(listener, "nc -k -l 0.0.0.0 1090", 2, limage))
            .unwrap();
        let t = d
            .wait_for(listener, TaskState::TaskRunning, secs(60))
            .unwrap();
        assert!(!t.is_terminal(), "{listener}: {:?}", t.last());
        let (_, ip, _) = task_address(op, listener);
        d.launch(image_task(
            probe,
            &format!("nc -z -w 3 {ip} 1090"),
            2,
            pimage,
        ))
        .unwrap();
        let p = d.wait_terminal(probe, secs(60)).unwrap();
        let last = p.last().unwrap();
        println!(
            "mixed: {probe} -> {listener} ({ip}:1090) on agent 2: {} {}",
            task_state_name(last.state),
            last.message.clone().unwrap_or_default()
        );
        assert_eq!(p.state(), Some(TaskState::TaskFinished));
        d.kill(listener).unwrap();
        d.wait_terminal(listener, secs(30)).unwrap();
    }
    d.teardown().unwrap();
    wait_until("DEL of the mixed tasks", Duration::from_secs(30), || {
        hs.host(2).owners().is_empty()
    });
}

/// Check 5: An image that is not in the local registry.
fn bad_image(hs: &Hosts) {
    let h3 = hs.host(3);
    let calls_before = h3.cni_calls().len();
    let (rc, text) = execute(
        hs,
        &[
            "--command=true",
            "--docker_image=nosuchimage",
            "--name=badimage",
            "--networks=weave",
            "--resources=cpus:0.1",
            &format!("--agent={}", h3.ip),
        ],
    );
    println!("bad image: execute exited {rc}");
    assert_eq!(rc, 1, "{text}");
    assert!(
        text.contains("Received status update TASK_FAILED for task 'badimage'"),
        "{text}"
    );
    assert!(
        text.contains("  reason: REASON_CONTAINER_LAUNCH_FAILED"),
        "{text}"
    );
    assert!(
        text.contains("nosuchimage"),
        "Mesos' message names the image:\n{text}"
    );
    let calls: Vec<String> = h3.cni_calls().split_off(calls_before);
    println!("bad image: plugin calls on host 3: {calls:?}");
    assert!(h3.owners().is_empty());
    assert!(h3.weave_veths().is_empty());
}

/// The shell script of the in-image checks; `set -e` so any failing step fails the task.
const CHECKS: &str = "set -e; cat /etc/weave-image; echo \"hostname=$(hostname)\"; \
    echo '--- hosts'; cat /etc/hosts; echo '--- resolv.conf'; cat /etc/resolv.conf; \
    echo '--- route'; ip route; echo \"greeting=$GREETING\"; \
    getent hosts \"$(hostname)\" | sed 's/^/getent: /'; \
    nc -z -w 3 198.18.0.3 5051; echo agent-reachable";

/// Runs [`CHECKS`] in an image task on agent 3; returns (container id, IP, sandbox stdout).
fn run_checks(hs: &Hosts, name: &str) -> (String, String, String) {
    let cmd = format!("--command={CHECKS}");
    let (rc, text) = execute(
        hs,
        &[
            &cmd,
            "--docker_image=alpine",
            &format!("--name={name}"),
            "--networks=weave",
            "--resources=cpus:0.1;mem:32",
            "--env={\"GREETING\":\"hello from weave\"}",
            &format!("--agent={}", hs.host(3).ip),
        ],
    );
    assert_eq!(rc, 0, "{text}");
    let ip = weave_mesos::execute::parse_execute_output(&text).ips[0]
        .1
        .clone();
    let out = sandbox_file(
        hs.host(3),
        &framework_id(&text),
        name,
        "stdout",
        "agent-reachable",
    );
    let cid = out
        .lines()
        .find_map(|l| l.strip_prefix("hostname="))
        .unwrap()
        .to_string();
    (cid, ip, out)
}

/// Check 6: Hostname, /etc/hosts, default route, agent reachability and `--env` in the image;
/// then /etc/resolv.conf from our result's `dns`.
fn inside_the_image(hs: &Hosts) {
    let h3 = hs.host(3);
    let (cid, ip, out) = run_checks(hs, "checks");
    println!("inside the image (weave setup's config):\n{out}");
    // Mesos names the container's host after its ContainerID and writes it into /etc/hosts
    // with the address our plugin returned.
    assert_eq!(cid.len(), 36, "{out}");
    assert!(
        out.contains(&format!("\n127.0.0.1 localhost\n{ip} {cid}\n")),
        "{out}"
    );
    assert!(out.contains(&format!("getent: {ip}")), "{out}");
    assert!(out.contains("greeting=hello from weave"), "{out}");
    // The default route goes via the weave bridge's address on host 3.
    let gw = out
        .lines()
        .find_map(|l| l.strip_prefix("default via "))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no default route:\n{out}"));
    let bridge = run(
        10,
        &[
            "ip", "-n", &h3.netns, "-o", "-4", "addr", "show", "dev", "weave",
        ],
    );
    println!(
        "inside the image: default via {gw}; host 3 weave bridge: {}",
        bridge.trim()
    );
    assert!(bridge.contains(&format!("inet {gw}/")), "{bridge}");
    // weave setup's config has no `dns`: the plugin's result names the router's DNS server
    // (the bridge address, the gateway) and the search domain, and Mesos writes them.
    let resolv = section(&out, "resolv.conf");
    println!("inside the image (weave setup's config): /etc/resolv.conf:\n{resolv}");
    assert_eq!(
        resolv.trim(),
        format!("search weave.local\nnameserver {gw}"),
        "{out}"
    );

    // An operator adds `dns` to host 3's config (weave setup keeps user edits; Mesos re-reads
    // the file on every launch); the plugin passes it on in its result and Mesos writes it.
    let conf = h3.conf_dir.path().join("10-weave.conflist");
    let original = std::fs::read_to_string(&conf).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&original).unwrap();
    v["dns"] = serde_json::json!({
        "nameservers": ["10.32.0.53"], "domain": "weave.local",
        "search": ["weave.local", "example.org"], "options": ["ndots:2"]});
    std::fs::write(&conf, v.to_string()).unwrap();
    let (_, _, out) = run_checks(hs, "checks-dns");
    std::fs::write(&conf, &original).unwrap();
    let resolv = section(&out, "resolv.conf");
    println!("inside the image, with dns in the config: /etc/resolv.conf:\n{resolv}");
    assert_eq!(
        resolv.trim(),
        "domain weave.local\nsearch weave.local example.org\noptions ndots:2\nnameserver 10.32.0.53"
    );
    wait_until("DEL of the check tasks", Duration::from_secs(30), || {
        h3.owners().is_empty()
    });
}

/// The lines of `out` after `--- name` up to the next `---` section.
fn section(out: &str, name: &str) -> String {
    out.split(&format!("--- {name}\n"))
        .nth(1)
        .and_then(|r| r.split("\n---").next())
        .unwrap_or_default()
        .to_string()
}

/// Check 7: `--no-shell`: no command; the image's Cmd (`cat /etc/weave-image`) runs.
fn no_shell_runs_the_entrypoint(hs: &Hosts) {
    let (rc, text) = execute(
        hs,
        &[
            "--docker_image=hello",
            "--no-shell",
            "--name=entrypoint",
            "--networks=weave",
            "--resources=cpus:0.1;mem:32",
            &format!("--agent={}", hs.host(3).ip),
        ],
    );
    assert_eq!(rc, 0, "{text}");
    let out = sandbox_file(
        hs.host(3),
        &framework_id(&text),
        "entrypoint",
        "stdout",
        "weave-mesos image hello",
    );
    println!(
        "--no-shell: the image's Cmd printed: {}",
        out.lines()
            .find(|l| l.contains("weave-mesos image"))
            .unwrap()
    );
}
