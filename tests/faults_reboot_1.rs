//! DEL after a host reboot, as a Mesos agent with `--network_cni_root_dir_persist` sends it
//! (`_1`): the container's namespace, its veths, the weave bridge and the iptables rules are
//! gone (the host namespace is recreated empty), the router restarts from its data dir, and
//! the agent calls DEL with no `CNI_NETNS` and no `CNI_ARGS`, stdin in the Mesos shape
//! (`args["org.apache.mesos"]`). DEL must succeed and free the address by container ID.

mod common;
use common::*;
use serde_json::json;
use std::process::Command;

/// The Mesos agent's stdin: the config file's object (here `weave setup`'s conflist) with
/// `args["org.apache.mesos"].network_info` added, keys sorted, compact.
fn mesos_stdin() -> String {
    let v = json!({
        "args": {"org.apache.mesos": {"network_info": {
            "labels": {"labels": [{"key": "app", "value": "web"}]},
            "name": "weave"
        }}},
        "cniVersion": "1.0.0",
        "hairpinMode": true,
        "name": "weave",
        "plugins": [
            {"hairpinMode": true, "type": "weave-net"},
            {"capabilities": {"portMappings": true}, "snat": true, "type": "portmap"}
        ],
        "type": "weave-net"
    });
    serde_json::to_string(&v).unwrap()
}

/// Exactly the variables a Mesos agent sets (its environment replaces ours).
fn mesos_env<'a>(command: &'a str, id: &'a str, netns: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", id),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni:/opt/cni/bin"),
    ];
    if let Some(ns) = netns {
        env.push(("CNI_NETNS", ns));
    }
    env
}

/// Whether `weave ps` lists the container (by its id's first 12 characters, as Weave prints
/// it) with this address.
fn listed(ps: &str, id: &str, ip: &str) -> bool {
    ps.lines()
        .any(|l| l.starts_with(&format!("{} ", &id[..12])) && l.contains(ip))
}

/// `weave ps` on the host.
fn weave_ps(host: &Netns) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &host.name,
            env!("CARGO_BIN_EXE_weave"),
            "ps",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "weave ps: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn mesos_del_without_netns_after_reboot_frees_the_address_1() {
    let host = Netns::new("rb");
    let mut router = Router::start(&host, &[]);
    // Mesos container ids are UUIDs; this one is unique per run.
    let id = format!("5baff64c-d028-47ba-864e-{:012x}", std::process::id());
    let other = format!("7c1d9e20-0b4a-4c55-9d0e-{:012x}", std::process::id());
    let c = Netns::new("rbc");
    let c2 = Netns::new("rbc");
    let path = c.path().display().to_string();
    let path2 = c2.path().display().to_string();
    let run = run_plugin(
        &host,
        plugin_bin("weave-net"),
        &mesos_env("ADD", &id, Some(&path)),
        &mesos_stdin(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    // Mesos reads only the 0.2.0 shape.
    let ip = run.json()["ip4"]["ip"].as_str().unwrap().to_string();
    let run = run_plugin(
        &host,
        plugin_bin("weave-net"),
        &mesos_env("ADD", &other, Some(&path2)),
        &mesos_stdin(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    let ip2 = run.json()["ip4"]["ip"].as_str().unwrap().to_string();
    assert!(owned(&router).contains_key(&id));
    let ps = weave_ps(&host);
    assert!(listed(&ps, &id, &ip) && listed(&ps, &other, &ip2), "{ps}");

    // The reboot: the router dies, the container namespaces and the host's whole network
    // state (bridge, veths, iptables) are lost; the data dir persists.
    router.kill9();
    drop(c);
    drop(c2);
    run_ok("ip", &["netns", "del", &host.name]);
    run_ok("ip", &["netns", "add", &host.name]);
    host.sh("ip link set lo up");
    assert!(
        !host.links().iter().any(|l| l.starts_with("vethwepl")),
        "host veths survived the reboot"
    );
    router.spawn();
    assert!(
        owned(&router).contains_key(&id),
        "allocation not restored from the data dir"
    );
    assert!(attachment_ids(&router).contains(&id));

    // The agent recovers and cleans up: DEL without CNI_NETNS.
    let run = run_plugin(
        &host,
        plugin_bin("weave-net"),
        &mesos_env("DEL", &id, None),
        &mesos_stdin(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.trim().is_empty(), "DEL printed {:?}", run.stdout);
    assert!(
        !owned(&router).contains_key(&id),
        "{ip} still allocated to {id}"
    );
    assert!(!attachment_ids(&router).contains(&id), "attachment left");
    let ps = weave_ps(&host);
    assert!(!listed(&ps, &id, &ip), "weave ps still lists {id}:\n{ps}");
    // Only that container: the other one keeps its address until its own DEL.
    assert!(owned(&router).contains_key(&other));
    assert!(listed(&ps, &other, &ip2), "{ps}");
    // Repeated (Mesos retries a destroy): still success.
    let run = run_plugin(
        &host,
        plugin_bin("weave-net"),
        &mesos_env("DEL", &id, None),
        &mesos_stdin(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    let run = run_plugin(
        &host,
        plugin_bin("weave-net"),
        &mesos_env("DEL", &other, None),
        &mesos_stdin(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    let left: Vec<String> = owned(&router).into_keys().collect();
    assert_eq!(left, vec!["weave:expose".to_string()], "{left:?}");
    println!("after reboot: DEL without netns freed {ip} and {ip2}; allocations left: {left:?}");

    // The freed address is handed out again after the reboot, in a new namespace.
    let c3 = Netns::new("rbc");
    let path3 = c3.path().display().to_string();
    let run = run_plugin(
        &host,
        plugin_bin("weave-net"),
        &mesos_env("ADD", "after-reboot", Some(&path3)),
        &mesos_stdin(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(c3.addrs("eth0").len(), 1);
}
