//! The real `weave-net` and `weave-ipam` plugins against the real router, on one simulated
//! host (a network namespace) with containers (more namespaces), as a runtime calls them.
//! Host count in the name, as Weave's tests do: `_1`.

mod common;
use common::*;
use serde_json::{json, Value};

const VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

fn conf(version: Option<&str>) -> String {
    let mut c = json!({"name": "weave", "type": "weave-net"});
    if let Some(v) = version {
        c["cniVersion"] = json!(v);
    }
    c.to_string()
}

fn host_with_router() -> (Netns, Router) {
    let host = Netns::new("h1");
    let router = Router::start(&host, &[]);
    (host, router)
}

fn add(host: &Netns, id: &str, ns: &Netns, ifname: &str, stdin: &str) -> PluginRun {
    let path = ns.path();
    let env = cni_env("ADD", id, path.to_str().unwrap(), ifname);
    run_plugin(host, plugin_bin("weave-net"), &env, stdin)
}

fn del(host: &Netns, id: &str, ns: Option<&Netns>, ifname: &str, stdin: &str) -> PluginRun {
    let path = ns
        .map(|n| n.path().to_str().unwrap().to_string())
        .unwrap_or_default();
    let env = cni_env("DEL", id, &path, ifname);
    run_plugin(host, plugin_bin("weave-net"), &env, stdin)
}

fn owned(router: &Router) -> Value {
    router.call(|c| {
        let (code, body) = c.request("GET", "/ip", None).unwrap();
        assert_eq!(code, 200);
        serde_json::from_str::<Value>(&body).unwrap()
    })
}

fn owned_ids(router: &Router) -> Vec<String> {
    owned(router)["owned"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| o["containerid"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn host_veths(host: &Netns) -> Vec<String> {
    host.links()
        .into_iter()
        .filter(|l| l.starts_with("vethwepl"))
        .collect()
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn add_check_del_every_version_1() {
    let (host, router) = host_with_router();
    for (i, v) in VERSIONS.iter().enumerate() {
        let c = Netns::new("c");
        let id = format!("ctr-{i}-{}", v.replace('.', ""));
        let stdin = conf(Some(v));
        let r = add(&host, &id, &c, "eth0", &stdin);
        assert_eq!(r.code, 0, "ADD {v}: {r:?}");
        let res = r.json();
        assert_eq!(res["cniVersion"], json!(v), "{res}");
        let addr = if *v == "0.1.0" || *v == "0.2.0" {
            assert!(res.get("ips").is_none(), "legacy shape only: {res}");
            res["ip4"]["ip"].as_str().unwrap().to_string()
        } else {
            let ifs = res["interfaces"].as_array().unwrap();
            assert_eq!(ifs.len(), 2, "{res}");
            assert!(ifs[0]["name"].as_str().unwrap().starts_with("vethwepl"));
            assert_eq!(ifs[1]["name"], "eth0");
            assert_eq!(ifs[1]["sandbox"], json!(c.path().to_str().unwrap()));
            let ip = &res["ips"][0];
            assert_eq!(ip["interface"], 1);
            assert_eq!(ip.get("version").is_some(), v.starts_with("0."), "{res}");
            assert!(res["dns"].is_object());
            ip["address"].as_str().unwrap().to_string()
        };
        assert!(addr.starts_with("10.3") && addr.ends_with("/12"), "{addr}");
        assert_eq!(c.addrs("eth0"), vec![addr.clone()]);
        let routes = c.sh("ip route show default");
        assert!(
            routes.contains("via 10.32.0.1"),
            "default route via the bridge: {routes}"
        );
        // The bridge was exposed for the gateway.
        assert_eq!(host.addrs("weave"), vec!["10.32.0.1/12".to_string()]);

        if !(*v == "0.1.0" || *v == "0.2.0" || *v == "0.3.0" || *v == "0.3.1") {
            let mut chk: Value = serde_json::from_str(&stdin).unwrap();
            chk["prevResult"] = res.clone();
            let p = c.path();
            let env = cni_env("CHECK", &id, p.to_str().unwrap(), "eth0");
            let r = run_plugin(&host, plugin_bin("weave-net"), &env, &chk.to_string());
            assert_eq!(r.code, 0, "CHECK {v}: {r:?}");
            assert!(r.stdout.trim().is_empty(), "CHECK prints nothing: {r:?}");
        }

        let r = del(&host, &id, Some(&c), "eth0", &stdin);
        assert_eq!(r.code, 0, "DEL {v}: {r:?}");
        assert!(r.stdout.trim().is_empty(), "DEL prints nothing: {r:?}");
        assert!(!c.links().contains(&"eth0".to_string()));
        assert!(!owned_ids(&router).contains(&id));
        // DEL again: idempotent.
        let r = del(&host, &id, Some(&c), "eth0", &stdin);
        assert_eq!(r.code, 0, "second DEL {v}: {r:?}");
    }
    assert_eq!(host_veths(&host), Vec::<String>::new(), "no veth left");
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn two_containers_reach_each_other_and_the_bridge_1() {
    let (host, _router) = host_with_router();
    let (c1, c2) = (Netns::new("c1"), Netns::new("c2"));
    let stdin = conf(Some("1.0.0"));
    let r1 = add(&host, "first", &c1, "eth0", &stdin);
    assert_eq!(r1.code, 0, "{r1:?}");
    let r2 = add(&host, "second", &c2, "eth0", &stdin);
    assert_eq!(r2.code, 0, "{r2:?}");
    let ip1 = r1.json()["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let ip2 = r2.json()["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert_ne!(ip1, ip2);

    let listener = std::process::Command::new("ip")
        .args([
            "netns", "exec", &c1.name, "timeout", "15", "nc", "-l", "1080",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    c2.sh(&format!("echo hello-from-c2 | nc -w 3 -N {ip1} 1080"));
    let out = listener.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello-from-c2");

    // The exposed bridge answers both containers; a closed port is refused.
    c1.sh("ping -c 1 -W 2 10.32.0.1");
    c2.sh(&format!("ping -c 1 -W 2 {ip1}"));
    let (code, _, _) = c2.try_sh(&format!("nc -z -w 2 {ip1} 1081"));
    assert_ne!(code, 0, "nothing listens on 1081");
    // Hairpin is on by default on the host veth port.
    let veth = &r1.json()["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        host.sh(&format!("cat /sys/class/net/{veth}/brport/hairpin_mode"))
            .trim(),
        "1"
    );
    let _ = ip2;
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn two_interfaces_in_one_container_do_not_collide_1() {
    let (host, router) = host_with_router();
    let c = Netns::new("c");
    let stdin = conf(Some("1.0.0"));
    // Same container, two interfaces (Weave bug #3343), and a second container whose ID
    // shares the first 7 characters.
    let r = add(&host, "abcdefg-1", &c, "eth0", &stdin);
    assert_eq!(r.code, 0, "{r:?}");
    let r = add(&host, "abcdefg-1", &c, "net1", &stdin);
    assert_eq!(r.code, 0, "{r:?}");
    let c2 = Netns::new("c");
    let r = add(&host, "abcdefg-2", &c2, "eth0", &stdin);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(host_veths(&host).len(), 3, "{:?}", host.links());
    for (ns, id, ifname) in [
        (&c, "abcdefg-1", "eth0"),
        (&c, "abcdefg-1", "net1"),
        (&c2, "abcdefg-2", "eth0"),
    ] {
        let r = del(&host, id, Some(ns), ifname, &stdin);
        assert_eq!(r.code, 0, "{r:?}");
    }
    assert!(host_veths(&host).is_empty());
    let ids = owned_ids(&router);
    assert!(!ids.iter().any(|i| i.starts_with("abcdefg")), "{ids:?}");
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn add_is_rerunnable_and_del_tolerates_missing_things_1() {
    let (host, router) = host_with_router();
    let c = Netns::new("c");
    let stdin = conf(Some("0.4.0"));
    let a = add(&host, "rerun", &c, "eth0", &stdin);
    assert_eq!(a.code, 0, "{a:?}");
    let b = add(&host, "rerun", &c, "eth0", &stdin);
    assert_eq!(b.code, 0, "{b:?}");
    assert_eq!(
        a.json()["ips"],
        b.json()["ips"],
        "same address on a repeated ADD"
    );
    // DEL without CNI_NETNS (Mesos after a reboot) frees the allocation.
    let r = del(&host, "rerun", None, "eth0", &stdin);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!owned_ids(&router).contains(&"rerun".to_string()));
    // Unknown ID, vanished netns path.
    let r = del(&host, "never-added", None, "eth0", &stdin);
    assert_eq!(r.code, 0, "{r:?}");
    let gone = Netns::new("gone");
    let path = gone.path();
    drop(gone);
    let env = cni_env("DEL", "never-added", path.to_str().unwrap(), "eth0");
    let r = run_plugin(&host, plugin_bin("weave-net"), &env, &stdin);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn routes_and_mtu_follow_the_config_1() {
    let (host, _router) = host_with_router();
    let c = Netns::new("c");
    let stdin = json!({"cniVersion": "1.0.0", "name": "weave", "type": "weave-net", "mtu": 1300,
        "ipam": {"routes": []}, "dns": {"nameservers": ["10.32.0.1"], "search": ["weave.local"]}})
    .to_string();
    let r = add(&host, "noroute", &c, "eth0", &stdin);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["dns"]["nameservers"], json!(["10.32.0.1"]));
    assert!(
        c.sh("ip route show default").trim().is_empty(),
        "routes: [] means no default route"
    );
    assert!(c.sh("ip link show eth0").contains("mtu 1300"));
    let c2 = Netns::new("c");
    let r = add(&host, "bridge-mtu", &c2, "eth0", &conf(Some("1.0.0")));
    assert_eq!(r.code, 0, "{r:?}");
    let link = c2.sh("ip link show eth0");
    assert!(
        link.contains("mtu 1376"),
        "the bridge's MTU by default: {link} / {}",
        host.sh("ip link show weave")
    );
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn weave_ipam_allocates_and_releases_1() {
    let (host, router) = host_with_router();
    let c = Netns::new("c");
    let stdin = json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge",
        "ipam": {"type": "weave-ipam", "subnet": "10.40.0.0/24", "gateway": "10.40.0.1"}})
    .to_string();
    let p = c.path();
    let env = cni_env("ADD", "ipam-only", p.to_str().unwrap(), "eth0");
    let r = run_plugin(&host, plugin_bin("weave-ipam"), &env, &stdin);
    assert_eq!(r.code, 0, "{r:?}");
    let res = r.json();
    assert_eq!(res["cniVersion"], "1.0.0");
    assert_eq!(res["ips"][0]["gateway"], "10.40.0.1");
    let addr = res["ips"][0]["address"].as_str().unwrap();
    assert!(
        addr.starts_with("10.40.0.") && addr.ends_with("/24"),
        "{addr}"
    );
    assert!(owned_ids(&router).contains(&"ipam-only".to_string()));
    let env = cni_env("DEL", "ipam-only", p.to_str().unwrap(), "eth0");
    let r = run_plugin(&host, plugin_bin("weave-ipam"), &env, &stdin);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!owned_ids(&router).contains(&"ipam-only".to_string()));
    let r = run_plugin(&host, plugin_bin("weave-ipam"), &env, &stdin);
    assert_eq!(r.code, 0, "DEL again is idempotent: {r:?}");
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn portmap_chained_after_weave_net_maps_a_host_port_1() {
    let portmap = reference_plugin_dir().join("portmap");
    assert!(
        portmap.exists(),
        "install containernetworking-plugins (Debian) for {}",
        portmap.display()
    );
    let (host, _router) = host_with_router();
    // A client namespace reaches the host over an underlay veth (192.0.2.0/24, test-only).
    let client = Netns::new("cl");
    host.sh(&format!(
        "ip link add wvt-up type veth peer name wvt-down netns {}",
        client.name
    ));
    host.sh("ip addr add 192.0.2.1/24 dev wvt-up && ip link set wvt-up up");
    client.sh("ip addr add 192.0.2.2/24 dev wvt-down && ip link set wvt-down up");
    host.sh("sysctl -qw net.ipv4.ip_forward=1");

    let c = Netns::new("c");
    let version = "1.0.0";
    let weave_conf = json!({"cniVersion": version, "name": "weave", "type": "weave-net"});
    let r = add(&host, "mapped", &c, "eth0", &weave_conf.to_string());
    assert_eq!(r.code, 0, "{r:?}");
    let prev = r.json();
    let ip = prev["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let pm_conf = json!({"cniVersion": version, "name": "weave", "type": "portmap",
        "capabilities": {"portMappings": true}, "snat": true,
        "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]},
        "prevResult": prev});
    let p = c.path();
    let env = cni_env("ADD", "mapped", p.to_str().unwrap(), "eth0");
    let r = run_plugin(&host, portmap.to_str().unwrap(), &env, &pm_conf.to_string());
    assert_eq!(r.code, 0, "portmap ADD: {r:?}");

    let listener = std::process::Command::new("ip")
        .args(["netns", "exec", &c.name, "timeout", "15", "nc", "-l", "80"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    client.sh("ip route add 10.32.0.0/12 via 192.0.2.1 || true");
    client.sh("echo via-hostport | nc -w 3 -N 192.0.2.1 18080");
    let out = listener.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "via-hostport",
        "container {ip} got it"
    );

    let env = cni_env("DEL", "mapped", p.to_str().unwrap(), "eth0");
    let r = run_plugin(&host, portmap.to_str().unwrap(), &env, &pm_conf.to_string());
    assert_eq!(r.code, 0, "portmap DEL: {r:?}");
    let r = del(&host, "mapped", Some(&c), "eth0", &weave_conf.to_string());
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn version_lists_every_supported_version_1() {
    let host = Netns::new("h1");
    let env = [("CNI_COMMAND", "VERSION")];
    for bin in ["weave-net", "weave-ipam"] {
        let r = run_plugin(&host, plugin_bin(bin), &env, r#"{"cniVersion":"1.0.0"}"#);
        assert_eq!(r.code, 0, "{r:?}");
        let v = r.json();
        assert_eq!(v["supportedVersions"], json!(VERSIONS), "{v}");
    }
}
