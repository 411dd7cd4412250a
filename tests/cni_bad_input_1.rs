//! Bad input to the real plugin on one simulated host: each case gives the expected CNI error
//! code and a readable message on stdout, exits 1, and leaves no link, address or allocation.

mod common;
use common::*;
use serde_json::{json, Value};

struct Case {
    name: &'static str,
    /// Environment overrides: `None` removes the variable.
    env: Vec<(&'static str, Option<String>)>,
    stdin: String,
    code: u64,
    msg: &'static str,
}

fn good() -> Value {
    json!({"cniVersion": "1.0.0", "name": "weave", "type": "weave-net"})
}

fn with(f: impl FnOnce(&mut Value)) -> String {
    let mut v = good();
    f(&mut v);
    v.to_string()
}

fn cases(regular_file: &str, host_ns: &str) -> Vec<Case> {
    let g = good().to_string();
    let c = |name, env: Vec<(&'static str, Option<String>)>, stdin: String, code, msg| Case {
        name,
        env,
        stdin,
        code,
        msg,
    };
    let none = |k: &'static str| (k, None);
    let set = |k: &'static str, v: &str| (k, Some(v.to_string()));
    vec![
        c("malformed JSON", vec![], "{\"name\": ".into(), 6, "decode"),
        c("empty stdin", vec![], "".into(), 6, "decode"),
        c("not an object", vec![], "[1,2]".into(), 6, "decode"),
        c(
            "missing CNI_COMMAND",
            vec![none("CNI_COMMAND")],
            g.clone(),
            4,
            "CNI_COMMAND",
        ),
        c(
            "unknown CNI_COMMAND",
            vec![set("CNI_COMMAND", "FROB")],
            g.clone(),
            4,
            "FROB",
        ),
        c(
            "missing CNI_CONTAINERID",
            vec![none("CNI_CONTAINERID")],
            g.clone(),
            4,
            "CNI_CONTAINERID",
        ),
        c(
            "missing CNI_NETNS",
            vec![none("CNI_NETNS")],
            g.clone(),
            4,
            "CNI_NETNS",
        ),
        c(
            "missing CNI_IFNAME",
            vec![none("CNI_IFNAME")],
            g.clone(),
            4,
            "CNI_IFNAME",
        ),
        c(
            "missing CNI_PATH",
            vec![none("CNI_PATH")],
            g.clone(),
            4,
            "CNI_PATH",
        ),
        c(
            "two variables missing",
            vec![none("CNI_IFNAME"), none("CNI_PATH")],
            g.clone(),
            4,
            "CNI_IFNAME, CNI_PATH",
        ),
        c(
            "bad container ID",
            vec![set("CNI_CONTAINERID", "-no good")],
            g.clone(),
            4,
            "CNI_CONTAINERID",
        ),
        c(
            "interface name too long",
            vec![set("CNI_IFNAME", "eth0123456789012")],
            g.clone(),
            4,
            "CNI_IFNAME",
        ),
        c(
            "interface name with slash",
            vec![set("CNI_IFNAME", "eth/0")],
            g.clone(),
            4,
            "CNI_IFNAME",
        ),
        c(
            "malformed CNI_ARGS",
            vec![set("CNI_ARGS", "IgnoreUnknown")],
            g.clone(),
            4,
            "CNI_ARGS",
        ),
        c(
            "unknown cniVersion",
            vec![],
            with(|v| v["cniVersion"] = json!("9.9.9")),
            1,
            "9.9.9",
        ),
        c(
            "missing name",
            vec![],
            with(|v| drop(v.as_object_mut().unwrap().remove("name"))),
            7,
            "name",
        ),
        c(
            "missing type",
            vec![],
            with(|v| drop(v.as_object_mut().unwrap().remove("type"))),
            7,
            "type",
        ),
        c(
            "mtu of the wrong type",
            vec![],
            with(|v| v["mtu"] = json!("big")),
            7,
            "mtu",
        ),
        c(
            "subnet with host bits",
            vec![],
            with(|v| v["ipam"] = json!({"subnet": "10.32.0.5/24"})),
            7,
            "10.32.0.5/24",
        ),
        c(
            "IPv6 subnet",
            vec![],
            with(|v| v["ipam"] = json!({"subnet": "fd00::/64"})),
            7,
            "IPv6",
        ),
        c(
            "isGateway",
            vec![],
            with(|v| v["isGateway"] = json!(true)),
            7,
            "isGateway",
        ),
        c(
            "ipMasq",
            vec![],
            with(|v| v["ipMasq"] = json!(true)),
            7,
            "ipMasq",
        ),
        c(
            "subnet outside the range",
            vec![],
            with(|v| v["ipam"] = json!({"subnet": "192.168.77.0/24"})),
            100,
            "out of bounds",
        ),
        c(
            "netns path missing",
            vec![set("CNI_NETNS", "/var/run/netns/wvt-does-not-exist")],
            g.clone(),
            8,
            "wvt-does-not-exist",
        ),
        c(
            "netns is a regular file",
            vec![set("CNI_NETNS", regular_file)],
            g.clone(),
            8,
            "not a network namespace",
        ),
        c(
            "netns is the host's",
            vec![set("CNI_NETNS", host_ns)],
            g.clone(),
            8,
            "host network namespace",
        ),
        c(
            "bridge missing",
            vec![],
            with(|v| v["bridge"] = json!("wvt-nobr")),
            103,
            "wvt-nobr",
        ),
        c(
            "mtu out of range",
            vec![],
            with(|v| v["mtu"] = json!(70000)),
            7,
            "mtu",
        ),
        c(
            "route the kernel refuses",
            vec![],
            with(|v| {
                v["ipam"] = json!({"routes": [{"dst": "198.51.100.0/24", "gw": "203.0.113.1"}]})
            }),
            101,
            "198.51.100.0/24",
        ),
        c(
            "unknown IPAM plugin",
            vec![],
            with(|v| v["ipam"] = json!({"type": "wvt-no-such-ipam"})),
            103,
            "wvt-no-such-ipam",
        ),
    ]
}

fn owned_ids(router: &Router) -> Vec<String> {
    router.call(|c| {
        let (_, body) = c.request("GET", "/ip", None).unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        let mut ids: Vec<String> = v["owned"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|o| o["containerid"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    })
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn bad_inputs_give_cni_errors_and_leak_nothing_1() {
    let host = Netns::new("h1");
    let router = Router::start(&host, &[]);
    let c = Netns::new("c");
    let file = tempfile::NamedTempFile::new().unwrap();
    let regular = file.path().to_str().unwrap().to_string();
    // The plugin runs in the host namespace: its own netns, as a path.
    let host_ns = host.path().to_str().unwrap().to_string();

    // One good ADD/DEL first, so the bridge is exposed and the baseline is stable.
    let netns = c.path().to_str().unwrap().to_string();
    let base_env = cni_env("ADD", "baseline", &netns, "eth0");
    let r = run_plugin(
        &host,
        plugin_bin("weave-net"),
        &base_env,
        &good().to_string(),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = run_plugin(
        &host,
        plugin_bin("weave-net"),
        &cni_env("DEL", "baseline", &netns, "eth0"),
        &good().to_string(),
    );
    assert_eq!(r.code, 0, "{r:?}");
    // DEL retired the pair; the baseline is taken once the router's reaper deleted it.
    assert_reaped(&[&host, &c]);
    let baseline = owned_ids(&router);
    let host_links = host.links();

    let mut table = Vec::new();
    for case in cases(&regular, &host_ns) {
        let mut env: Vec<(&str, String)> = cni_env("ADD", "bad-input", &netns, "eth0")
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        for (k, v) in &case.env {
            env.retain(|(ek, _)| ek != k);
            if let Some(v) = v {
                env.push((k, v.clone()));
            }
        }
        let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = run_plugin(&host, plugin_bin("weave-net"), &env_ref, &case.stdin);
        assert_eq!(r.code, 1, "{}: exit code: {r:?}", case.name);
        let err = r.json();
        for key in ["cniVersion", "code", "msg", "details"] {
            assert!(
                err.get(key).is_some(),
                "{}: error JSON lacks {key}: {err}",
                case.name
            );
        }
        assert_eq!(err["code"], json!(case.code), "{}: {err}", case.name);
        let msg = err["msg"].as_str().unwrap();
        assert!(
            msg.contains(case.msg),
            "{}: msg {msg:?} should mention {:?}",
            case.name,
            case.msg
        );
        // Nothing leaked: no new host link, nothing in the container, no allocation.
        assert_eq!(
            host.links(),
            host_links,
            "{}: host links changed",
            case.name
        );
        assert_eq!(
            c.links(),
            vec!["lo".to_string()],
            "{}: container links",
            case.name
        );
        assert_eq!(
            owned_ids(&router),
            baseline,
            "{}: allocations leaked",
            case.name
        );
        table.push(format!("{:<28} code {:<4} {}", case.name, case.code, msg));
    }
    eprintln!(
        "bad-input table ({} cases):\n{}",
        table.len(),
        table.join("\n")
    );
    assert!(table.len() >= 20);
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn router_down_gives_try_again_later_quickly_1() {
    let host = Netns::new("h1");
    let c = Netns::new("c");
    // A bridge exists (as after a router stop) but nothing listens on 6784.
    host.sh("ip link add weave type bridge && ip addr add 10.32.0.1/12 dev weave && ip link set weave up");
    let netns = c.path().to_str().unwrap().to_string();
    for cmd in ["ADD", "DEL"] {
        let started = std::time::Instant::now();
        let r = run_plugin(
            &host,
            plugin_bin("weave-net"),
            &cni_env(cmd, "down", &netns, "eth0"),
            &good().to_string(),
        );
        let took = started.elapsed();
        assert_eq!(r.code, 1, "{cmd}: {r:?}");
        let err = r.json();
        assert_eq!(err["code"], 11, "{cmd}: {err}");
        assert!(
            err["msg"].as_str().unwrap().contains("127.0.0.1:6784"),
            "{err}"
        );
        eprintln!("{cmd} with the router down failed in {took:?}");
        assert_eq!(c.links(), vec!["lo".to_string()]);
    }
    // A router that accepts but never answers: bounded by the client's total timeout.
    let hung = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &host.name,
            "timeout",
            "30",
            "nc",
            "-l",
            "-k",
            "127.0.0.1",
            "6784",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = run_plugin(
        &host,
        plugin_bin("weave-net"),
        &cni_env("ADD", "hung", &netns, "eth0"),
        &good().to_string(),
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.json()["code"], 11, "{r:?}");
    let mut hung = hung;
    let _ = hung.kill();
    let _ = hung.wait();
}
