//! The CNI contract end to end through `weave::cni`: fixtures as runtimes send them, the env
//! rules, result shapes per version, the error JSON, and `dispatch` driving a recording plugin
//! (this tests dispatch, not networking).

use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use weave::cni::version::{CURRENT_VERSION, SUPPORTED_VERSIONS};
use weave::cni::*;
use weave::{Error, ErrorKind, Result};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cni")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir().join(name)).unwrap_or_else(|e| panic!("read fixture {name}: {e}"))
}

fn parse_fixture(name: &str) -> NetConf {
    NetConf::parse(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A fixed result: host veth, container eth0 with a sandbox, one address, default route.
fn sample_result() -> AddResult {
    AddResult {
        interfaces: vec![
            Interface { name: "vethwepl5baff64".into(), mac: "6a:1f:00:00:00:01".into(), sandbox: None, mtu: Some(1376) },
            Interface {
                name: "eth0".into(),
                mac: "6a:1f:00:00:00:02".into(),
                sandbox: Some("/run/netns/x".into()),
                mtu: Some(1376),
            },
        ],
        ips: vec![IpConfig {
            address: "10.32.0.5/12".parse().unwrap(),
            gateway: Some("10.32.0.1".parse().unwrap()),
            interface: Some(1),
        }],
        routes: vec![Route { dst: "0.0.0.0/0".parse().unwrap(), gw: None }],
        dns: Dns { nameservers: vec!["10.96.0.10".into()], search: vec!["svc".into()], ..Dns::default() },
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Succeed,
    Fail(ErrorKind),
    Panic,
}

/// Records each call as `COMMAND container ifname network` (plus GC attachments).
struct RecordingPlugin {
    behaviour: Behaviour,
    calls: RefCell<Vec<String>>,
}

impl RecordingPlugin {
    fn new(behaviour: Behaviour) -> Self {
        RecordingPlugin { behaviour, calls: RefCell::new(Vec::new()) }
    }

    fn outcome<T>(&self, call: String, ok: T) -> Result<T> {
        self.calls.borrow_mut().push(call);
        match self.behaviour {
            Behaviour::Succeed => Ok(ok),
            Behaviour::Fail(kind) => {
                Err(Error::new(kind, "connect router: connection refused").context("allocate IP for \"c1\""))
            }
            Behaviour::Panic => panic!("plugin bug"),
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
}

impl CniPlugin for RecordingPlugin {
    fn add(&self, args: &CmdArgs, conf: &NetConf) -> Result<AddResult> {
        self.outcome(format!("ADD {} {} {}", args.container_id, args.ifname, conf.name), sample_result())
    }
    fn del(&self, args: &CmdArgs, conf: &NetConf) -> Result<()> {
        let netns = args.netns.as_ref().map(|p| p.display().to_string()).unwrap_or("-".into());
        self.outcome(format!("DEL {} {} {} {netns}", args.container_id, args.ifname, conf.name), ())
    }
    fn check(&self, args: &CmdArgs, conf: &NetConf) -> Result<()> {
        self.outcome(format!("CHECK {} {} {}", args.container_id, args.ifname, conf.name), ())
    }
    fn status(&self, conf: &NetConf) -> Result<()> {
        self.outcome(format!("STATUS {}", conf.name), ())
    }
    fn gc(&self, conf: &NetConf, valid: &[GcAttachment]) -> Result<()> {
        let keep: Vec<String> = valid.iter().map(|a| format!("{}/{}", a.container_id, a.ifname)).collect();
        self.outcome(format!("GC {} [{}]", conf.name, keep.join(",")), ())
    }
}

fn env_of(vars: &[(&str, &str)]) -> HashMap<String, String> {
    vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn full_env(command: &str) -> HashMap<String, String> {
    env_of(&[
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "5baff64c-d028-47ba-864e-a5ee679fc069"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ])
}

/// Runs dispatch; returns the exit code and stdout.
fn run(env: &HashMap<String, String>, stdin: &[u8], plugin: &RecordingPlugin) -> (i32, String) {
    let mut out = Vec::new();
    let code = dispatch(&|k| env.get(k).cloned(), &mut &stdin[..], &mut out, plugin);
    (code, String::from_utf8(out).expect("stdout is UTF-8"))
}

/// stdout must be exactly one JSON document.
fn one_json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {stdout:?}"))
}

fn assert_error(stdout: &str, code: u64, version: &str, msg_contains: &str) -> Value {
    let v = one_json(stdout);
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["cniVersion", "code", "details", "msg"], "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["cniVersion"], version, "{v}");
    assert!(v["msg"].as_str().unwrap().contains(msg_contains), "{v}");
    v
}

// ----- fixtures -----

#[test]
fn every_fixture_parses_or_fails_as_expected() {
    use ErrorKind::*;
    let expected: &[(&str, std::result::Result<(), (ErrorKind, &str)>)] = &[
        ("minimal.json", Ok(())),
        ("version-0.1.0.json", Ok(())),
        ("version-0.2.0.json", Ok(())),
        ("version-0.3.0.json", Ok(())),
        ("version-0.3.1.json", Ok(())),
        ("version-0.4.0.json", Ok(())),
        ("version-1.0.0.json", Ok(())),
        ("version-1.1.0.json", Ok(())),
        ("conflist-member-weave.json", Ok(())),
        ("conflist-member-prevresult.json", Ok(())),
        ("mesos-h1-add.json", Ok(())),
        ("mesos-doc-labels-ports.json", Ok(())),
        ("mesos-weave-no-version.json", Ok(())),
        ("containerd-portmappings.json", Ok(())),
        ("podman.json", Ok(())),
        ("routes-empty.json", Ok(())),
        ("routes-given.json", Ok(())),
        ("unknown-keys.json", Ok(())),
        ("hairpin-off-mtu.json", Ok(())),
        ("is-gateway-ipmasq.json", Ok(())),
        ("dns.json", Ok(())),
        ("delegated-ipam.json", Ok(())),
        ("gc-valid-attachments.json", Ok(())),
        ("mesos-malformed.json", Err((InvalidConfig, "network_info.port_mappings[0].container_port"))),
        ("subnet-host-bits.json", Err((InvalidConfig, "host bits"))),
        ("subnet-too-small.json", Err((InvalidConfig, "minimum of 4 addresses"))),
        ("ipv6-subnet.json", Err((InvalidConfig, "IPv6 is not supported"))),
        ("ipv6-route.json", Err((InvalidConfig, "IPv6 is not supported"))),
        ("bad-type-mtu.json", Err((InvalidConfig, "\"mtu\" must be a non-negative integer, got a string"))),
        ("bad-type-hairpin.json", Err((InvalidConfig, "\"hairpinMode\" must be a boolean, got a string"))),
        ("bad-type-ipam.json", Err((InvalidConfig, "\"ipam\" must be an object, got a string"))),
        ("bad-json.json", Err((Decode, "decode network config: "))),
        ("unsupported-version.json", Err((IncompatibleVersion, "incompatible CNI version \"9.9.9\": plugin supports 0.1.0, 0.2.0, 0.3.0"))),
        ("missing-type.json", Err((InvalidConfig, "\"type\" is required"))),
        ("mtu-too-small.json", Err((InvalidConfig, "\"mtu\" is 60"))),
        ("portmapping-sctp.json", Err((InvalidConfig, "only tcp and udp"))),
    ];
    let mut on_disk: Vec<String> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = expected.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "every fixture needs an expectation");

    for (name, want) in expected {
        let got = NetConf::parse(&fixture(name));
        match (want, got) {
            (Ok(()), Ok(_)) => {}
            (Err((kind, text)), Err(e)) => {
                assert_eq!(e.kind(), *kind, "{name}: {e}");
                assert!(e.message().contains(text), "{name}: {e}");
            }
            (want, got) => panic!("{name}: wanted {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn every_version_fixture_keeps_its_version() {
    for v in SUPPORTED_VERSIONS {
        let conf = parse_fixture(&format!("version-{v}.json"));
        assert_eq!(conf.cni_version.as_deref(), Some(*v));
        assert_eq!(conf.result_version(), *v);
    }
    assert_eq!(parse_fixture("minimal.json").result_version(), "0.2.0");
}

#[test]
fn mesos_stdin_as_the_agent_sends_it() {
    let c = parse_fixture("mesos-h1-add.json");
    assert_eq!(c.cni_version.as_deref(), Some("0.2.0"));
    assert_eq!((c.name.as_str(), c.plugin_type.as_str(), c.bridge.as_str()), ("mf-net", "weave-net", "mfbr0"));
    assert!(c.is_gateway, "parsed; the plugin rejects it later");
    assert!(!c.ip_masq);
    assert_eq!(c.ipam.ipam_type, "host-local");
    assert_eq!(c.ipam.subnet, Some("10.99.1.0/24".parse().unwrap()));
    assert_eq!(c.ipam.gateway, Some("10.99.1.1".parse().unwrap()));
    assert_eq!(c.ipam.routes, Some(vec![Route { dst: "0.0.0.0/0".parse().unwrap(), gw: None }]));
    assert_eq!(c.mesos, Some(MesosNetworkInfo { name: Some("mf-net".into()), ..Default::default() }));
    assert_eq!(c.raw["ipam"]["dataDir"], "/tmp/mesos-fixture-selftest.YwDFmq/h1/ipam", "raw kept for delegation");

    let doc = parse_fixture("mesos-doc-labels-ports.json").mesos.unwrap();
    assert_eq!(doc.name.as_deref(), Some("mynet"));
    assert_eq!(doc.labels, [("app".to_string(), "myapp".to_string())]);
    assert_eq!(
        doc.port_mappings,
        [PortMapping { host_port: 8080, container_port: 80, protocol: "tcp".into(), host_ip: None }]
    );
}

#[test]
fn runtime_port_mappings_from_containerd_and_podman() {
    let c = parse_fixture("containerd-portmappings.json");
    assert_eq!(
        c.port_mappings,
        [
            PortMapping { host_port: 8080, container_port: 80, protocol: "tcp".into(), host_ip: None },
            PortMapping { host_port: 5353, container_port: 53, protocol: "udp".into(), host_ip: Some("127.0.0.1".into()) },
        ]
    );
    let p = parse_fixture("podman.json");
    assert_eq!(p.name, "podman");
    assert_eq!(
        p.port_mappings,
        [PortMapping { host_port: 8080, container_port: 80, protocol: "tcp".into(), host_ip: None }]
    );
    assert_eq!(p.ipam, IpamConf::default());
}

#[test]
fn ipam_routes_dns_and_weave_keys() {
    let empty = parse_fixture("routes-empty.json");
    assert_eq!(empty.ipam.routes, Some(vec![]));
    assert_eq!(empty.ipam.gateway, Some("10.40.0.1".parse().unwrap()));
    assert_eq!(parse_fixture("version-0.3.0.json").ipam.routes, None);
    let given = parse_fixture("routes-given.json").ipam.routes.unwrap();
    assert_eq!(given[1], Route { dst: "192.168.0.0/16".parse().unwrap(), gw: Some("10.40.0.254".parse().unwrap()) });

    let dns = parse_fixture("dns.json").dns;
    assert_eq!(
        dns,
        Dns {
            nameservers: vec!["10.96.0.10".into()],
            domain: Some("cluster.local".into()),
            search: vec!["default.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }
    );
    let h = parse_fixture("hairpin-off-mtu.json");
    assert!(!h.hairpin_mode);
    assert_eq!((h.mtu, h.bridge.as_str()), (8916, "weave2"));
    let g = parse_fixture("is-gateway-ipmasq.json");
    assert!(g.is_gateway && g.ip_masq);
    let u = parse_fixture("unknown-keys.json");
    assert_eq!(u.dns.nameservers, ["10.0.0.10".to_string()]);
    assert_eq!(u.ipam.ipam_type, "");
    assert_eq!(parse_fixture("delegated-ipam.json").ipam.ipam_type, "host-local");
}

#[test]
fn prev_result_is_kept_verbatim_and_parses() {
    let c = parse_fixture("conflist-member-prevresult.json");
    let prev = c.prev_result.clone().unwrap();
    assert_eq!(prev, c.raw["prevResult"]);
    let r = AddResult::parse(&prev).unwrap();
    assert_eq!(r.interfaces.len(), 2);
    assert_eq!(r.interfaces[1].sandbox.as_deref(), Some("/var/run/netns/cni-1234"));
    assert_eq!(r.ips[0].interface, Some(1));
    assert_eq!(r.ips[0].address, "10.32.0.5/12".parse().unwrap());
    assert_eq!(r.routes.len(), 1);
}

#[test]
fn result_parse_reads_the_legacy_shape_mesos_logged() {
    // The 0.2.0 stdout recorded from the bridge plugin in the Mesos fixture.
    let v: Value = serde_json::from_str(
        r#"{    "cniVersion": "0.2.0",    "ip4": {        "ip": "10.99.1.10/24",        "gateway": "10.99.1.1",        "routes": [            {                "dst": "0.0.0.0/0"            }        ]    },    "dns": {}}"#,
    )
    .unwrap();
    let r = AddResult::parse(&v).unwrap();
    assert_eq!(
        r,
        AddResult {
            interfaces: vec![],
            ips: vec![IpConfig { address: "10.99.1.10/24".parse().unwrap(), gateway: Some("10.99.1.1".parse().unwrap()), interface: None }],
            routes: vec![Route { dst: "0.0.0.0/0".parse().unwrap(), gw: None }],
            dns: Dns::default(),
        }
    );
    assert_eq!(AddResult::parse(&json!({"ip4": {"ip": 5}})).unwrap_err().kind(), ErrorKind::Decode);
}

// ----- result encoding, exact JSON per version -----

#[test]
fn result_encoding_for_every_version() {
    let r = sample_result();
    let dns = json!({"nameservers": ["10.96.0.10"], "search": ["svc"]});
    let legacy = |v: &str| {
        json!({"cniVersion": v,
               "ip4": {"ip": "10.32.0.5/12", "gateway": "10.32.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
               "dns": dns})
    };
    let ifaces = json!([
        {"name": "vethwepl5baff64", "mac": "6a:1f:00:00:00:01"},
        {"name": "eth0", "mac": "6a:1f:00:00:00:02", "sandbox": "/run/netns/x"}
    ]);
    let v03 = |v: &str| {
        json!({"cniVersion": v, "interfaces": ifaces,
               "ips": [{"version": "4", "interface": 1, "address": "10.32.0.5/12", "gateway": "10.32.0.1"}],
               "routes": [{"dst": "0.0.0.0/0"}], "dns": dns})
    };
    assert_eq!(r.encode("0.1.0"), legacy("0.1.0"));
    assert_eq!(r.encode("0.2.0"), legacy("0.2.0"));
    assert_eq!(r.encode("0.3.0"), v03("0.3.0"));
    assert_eq!(r.encode("0.3.1"), v03("0.3.1"));
    assert_eq!(r.encode("0.4.0"), v03("0.4.0"));
    assert_eq!(
        r.encode("1.0.0"),
        json!({"cniVersion": "1.0.0", "interfaces": ifaces,
               "ips": [{"interface": 1, "address": "10.32.0.5/12", "gateway": "10.32.0.1"}],
               "routes": [{"dst": "0.0.0.0/0"}], "dns": dns})
    );
    assert_eq!(
        r.encode("1.1.0"),
        json!({"cniVersion": "1.1.0",
               "interfaces": [
                   {"name": "vethwepl5baff64", "mac": "6a:1f:00:00:00:01", "mtu": 1376},
                   {"name": "eth0", "mac": "6a:1f:00:00:00:02", "sandbox": "/run/netns/x", "mtu": 1376}],
               "ips": [{"interface": 1, "address": "10.32.0.5/12", "gateway": "10.32.0.1"}],
               "routes": [{"dst": "0.0.0.0/0"}], "dns": dns})
    );
}

#[test]
fn result_encoding_omits_empty_fields() {
    let r = AddResult {
        ips: vec![IpConfig { address: "10.32.0.5/12".parse().unwrap(), gateway: None, interface: None }],
        ..AddResult::default()
    };
    assert_eq!(r.encode("0.2.0"), json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.32.0.5/12"}, "dns": {}}));
    assert_eq!(
        r.encode("0.3.1"),
        json!({"cniVersion": "0.3.1", "interfaces": [], "ips": [{"version": "4", "address": "10.32.0.5/12"}], "routes": [], "dns": {}})
    );
}

// ----- environment -----

fn from_env(env: &HashMap<String, String>) -> Result<CmdArgs> {
    CmdArgs::from_env(&|k| env.get(k).cloned())
}

#[test]
fn every_missing_env_combination_is_reported_at_once() {
    let required: &[(&str, &[&str])] = &[
        ("ADD", &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]),
        ("CHECK", &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]),
        ("DEL", &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"]),
    ];
    for (command, vars) in required {
        for mask in 0u32..(1 << vars.len()) {
            for blank in [false, true] {
                let mut env = full_env(command);
                let mut missing = Vec::new();
                for (i, var) in vars.iter().enumerate() {
                    if mask & (1 << i) != 0 {
                        if blank {
                            env.insert(var.to_string(), String::new());
                        } else {
                            env.remove(*var);
                        }
                        missing.push(*var);
                    }
                }
                let got = from_env(&env);
                if missing.is_empty() {
                    got.unwrap_or_else(|e| panic!("{command}: {e}"));
                    continue;
                }
                let e = got.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Env);
                assert_eq!(e.message(), format!("required environment variables missing: {}", missing.join(", ")));
            }
        }
    }
}

#[test]
fn del_netns_may_be_empty_and_version_status_gc_need_nothing() {
    let mut env = full_env("DEL");
    env.insert("CNI_NETNS".into(), String::new());
    assert_eq!(from_env(&env).unwrap().netns, None);
    env.remove("CNI_NETNS");
    assert_eq!(from_env(&env).unwrap().netns, None);
    for command in ["VERSION", "STATUS", "GC"] {
        let a = from_env(&env_of(&[("CNI_COMMAND", command)])).unwrap_or_else(|e| panic!("{command}: {e}"));
        assert_eq!((a.container_id.as_str(), a.netns.clone(), a.path.len()), ("", None, 0));
    }
    let gc = from_env(&env_of(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/a:/b")])).unwrap();
    assert_eq!(gc.path, [PathBuf::from("/a"), PathBuf::from("/b")]);
}

#[test]
fn command_and_values_are_validated_naming_the_variable() {
    let e = from_env(&env_of(&[])).unwrap_err();
    assert_eq!(e.message(), "required environment variables missing: CNI_COMMAND");
    let e = from_env(&env_of(&[("CNI_COMMAND", "FROB")])).unwrap_err();
    assert_eq!((e.kind(), e.message()), (ErrorKind::Env, "unknown CNI_COMMAND \"FROB\""));

    let cases = [
        ("CNI_CONTAINERID", "-leading-dash"),
        ("CNI_CONTAINERID", "has space"),
        ("CNI_IFNAME", "averyveryverylongname"),
        ("CNI_IFNAME", "eth:0"),
        ("CNI_IFNAME", ".."),
    ];
    for (var, value) in cases {
        let mut env = full_env("ADD");
        env.insert(var.into(), value.into());
        let e = from_env(&env).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Env, "{var}={value}");
        assert!(e.message().starts_with(&format!("invalid {var} {value:?}: ")), "{e}");
    }
    // Mesos nested containers: dot-joined UUIDs.
    let mut env = full_env("ADD");
    env.insert("CNI_CONTAINERID".into(), "5baff64c-d028-47ba-864e-a5ee679fc069.0a1b2c3d-0000-4000-8000-000000000001".into());
    env.insert("CNI_PATH".into(), "/usr/libexec/mesos/cni:/opt/cni/bin".into());
    let a = from_env(&env).unwrap();
    assert_eq!(a.path.len(), 2);
}

#[test]
fn cni_args_are_parsed_into_pairs() {
    let mut env = full_env("ADD");
    env.insert("CNI_ARGS".into(), "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0".into());
    let a = from_env(&env).unwrap();
    assert_eq!(
        a.args,
        [
            ("IgnoreUnknown".to_string(), "1".to_string()),
            ("K8S_POD_NAMESPACE".to_string(), "default".to_string()),
            ("K8S_POD_NAME".to_string(), "web-0".to_string()),
        ]
    );
    assert_eq!(a.arg("K8S_POD_NAME"), Some("web-0"));

    env.insert("CNI_ARGS".into(), "IgnoreUnknown=1;oops".into());
    let plugin = RecordingPlugin::new(Behaviour::Succeed);
    let (code, out) = run(&env, &fixture("version-0.4.0.json"), &plugin);
    assert_eq!(code, 1);
    assert_error(&out, 4, "0.4.0", "invalid CNI_ARGS");
    assert!(plugin.calls().is_empty());
}

// ----- dispatch -----

#[test]
fn version_needs_no_config() {
    let env = env_of(&[("CNI_COMMAND", "VERSION")]);
    let plugin = RecordingPlugin::new(Behaviour::Succeed);
    let all: Vec<&str> = SUPPORTED_VERSIONS.to_vec();
    for (stdin, reported) in [
        (&b""[..], CURRENT_VERSION),
        (br#"{"cniVersion":"0.3.1"}"#, "0.3.1"),
        (br#"{"cniVersion":"42.0.0"}"#, CURRENT_VERSION),
        (b"not json", CURRENT_VERSION),
    ] {
        let (code, out) = run(&env, stdin, &plugin);
        assert_eq!(code, 0);
        assert_eq!(one_json(&out), json!({"cniVersion": reported, "supportedVersions": all}));
    }
    assert!(plugin.calls().is_empty());
}

#[test]
fn add_prints_the_result_in_the_config_version() {
    let plugin = RecordingPlugin::new(Behaviour::Succeed);
    for v in SUPPORTED_VERSIONS {
        let (code, out) = run(&full_env("ADD"), &fixture(&format!("version-{v}.json")), &plugin);
        assert_eq!(code, 0, "{out}");
        assert_eq!(one_json(&out), sample_result().encode(v));
    }
    // No cniVersion (a hand-written Mesos .conf): the 0.2.0 shape, labelled 0.2.0.
    let (code, out) = run(&full_env("ADD"), &fixture("mesos-weave-no-version.json"), &plugin);
    assert_eq!(code, 0);
    let v = one_json(&out);
    assert_eq!(v["cniVersion"], "0.2.0");
    assert_eq!(v["ip4"]["ip"], "10.32.0.5/12");
    assert!(v.get("ips").is_none());
    assert_eq!(plugin.calls().len(), SUPPORTED_VERSIONS.len() + 1);
    assert_eq!(plugin.calls()[0], "ADD 5baff64c-d028-47ba-864e-a5ee679fc069 eth0 weave");
}

#[test]
fn mesos_add_and_del_exactly_as_the_agent_calls() {
    let plugin = RecordingPlugin::new(Behaviour::Succeed);
    let id = "779fe970-e07e-42a6-ac44-dd92f5c83aa7";
    let netns = format!("/run/mesos-fixture/mf-h1/work/agents/0/run/isolators/network/cni/{id}/ns");
    let mut env = env_of(&[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", id),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", &netns),
        ("CNI_PATH", "/usr/libexec/mesos/cni:/opt/cni/bin"),
        ("PATH", "/usr/bin:/bin"),
    ]);
    let stdin = fixture("mesos-h1-add.json");
    let (code, out) = run(&env, &stdin, &plugin);
    assert_eq!(code, 0);
    let v = one_json(&out);
    assert_eq!(v["cniVersion"], "0.2.0");
    assert_eq!(v["ip4"], json!({"ip": "10.32.0.5/12", "gateway": "10.32.0.1", "routes": [{"dst": "0.0.0.0/0"}]}));

    env.insert("CNI_COMMAND".into(), "DEL".into());
    let (code, out) = run(&env, &stdin, &plugin);
    assert_eq!((code, out.as_str()), (0, ""));
    assert_eq!(plugin.calls()[1], format!("DEL {id} eth0 mf-net {netns}"));
}

#[test]
fn del_check_status_gc_print_nothing_on_success() {
    let plugin = RecordingPlugin::new(Behaviour::Succeed);
    let mut del_env = full_env("DEL");
    del_env.insert("CNI_NETNS".into(), String::new());
    let status_env = env_of(&[("CNI_COMMAND", "STATUS")]);
    let gc_env = env_of(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")]);
    for (env, stdin) in [
        (&del_env, fixture("version-0.3.0.json")),
        (&full_env("CHECK"), fixture("conflist-member-prevresult.json")),
        (&status_env, fixture("version-1.1.0.json")),
        (&gc_env, fixture("gc-valid-attachments.json")),
        (&gc_env, fixture("version-1.1.0.json")),
    ] {
        let (code, out) = run(env, &stdin, &plugin);
        assert_eq!((code, out.as_str()), (0, ""));
    }
    assert_eq!(
        plugin.calls(),
        [
            "DEL 5baff64c-d028-47ba-864e-a5ee679fc069 eth0 weave -",
            "CHECK 5baff64c-d028-47ba-864e-a5ee679fc069 eth0 weave",
            "STATUS weave",
            "GC weave [aaa/eth0,bbb/net1]",
            "GC weave []",
        ]
    );
}

#[test]
fn plugin_errors_become_error_json_with_the_config_version() {
    let cases = [
        (ErrorKind::TryAgainLater, 11, "weave launch"),
        (ErrorKind::Router, 100, ""),
        (ErrorKind::NetNs, 8, "not a network namespace"),
        (ErrorKind::Internal, 999, ""),
    ];
    for (kind, code, hint) in cases {
        let plugin = RecordingPlugin::new(Behaviour::Fail(kind));
        let (exit, out) = run(&full_env("ADD"), &fixture("version-0.4.0.json"), &plugin);
        assert_eq!(exit, 1);
        let v = assert_error(&out, code, "0.4.0", "allocate IP for \"c1\": connect router: connection refused");
        assert!(v["details"].as_str().unwrap().contains(hint), "{v}");
    }
    let plugin = RecordingPlugin::new(Behaviour::Fail(ErrorKind::Io));
    let (exit, out) = run(&full_env("DEL"), &fixture("version-1.0.0.json"), &plugin);
    assert_eq!(exit, 1);
    assert_error(&out, 102, "1.0.0", "connection refused");
}

#[test]
fn config_errors_are_reported_before_calling_the_plugin() {
    let plugin = RecordingPlugin::new(Behaviour::Succeed);
    let (code, out) = run(&full_env("ADD"), &fixture("bad-json.json"), &plugin);
    assert_eq!(code, 1);
    assert_error(&out, 6, CURRENT_VERSION, "decode network config: ");
    let (_, out) = run(&full_env("ADD"), &fixture("unsupported-version.json"), &plugin);
    assert_error(&out, 1, CURRENT_VERSION, "incompatible CNI version \"9.9.9\"");
    let (_, out) = run(&full_env("ADD"), &fixture("subnet-host-bits.json"), &plugin);
    let v = assert_error(&out, 7, "0.3.0", "host bits");
    assert!(!v["details"].as_str().unwrap().is_empty());
    let (_, out) = run(&full_env("ADD"), b"", &plugin);
    assert_error(&out, 6, CURRENT_VERSION, "decode network config");
    let (_, out) = run(&full_env("GC"), br#"{"cniVersion":"1.1.0","name":"w","type":"weave-net","cni.dev/valid-attachments":[{"ifname":"eth0"}]}"#, &plugin);
    assert_error(&out, 7, "1.1.0", "containerID");
    assert!(plugin.calls().is_empty());
}

#[test]
fn env_errors_come_first() {
    let plugin = RecordingPlugin::new(Behaviour::Succeed);
    let mut env = full_env("ADD");
    env.remove("CNI_NETNS");
    env.remove("CNI_IFNAME");
    let (code, out) = run(&env, &fixture("bad-json.json"), &plugin);
    assert_eq!(code, 1);
    let v = assert_error(&out, 4, CURRENT_VERSION, "required environment variables missing: CNI_NETNS, CNI_IFNAME");
    assert_eq!(v["msg"], "required environment variables missing: CNI_NETNS, CNI_IFNAME");
    let (_, out) = run(&env_of(&[("CNI_COMMAND", "frob")]), &fixture("version-0.3.1.json"), &plugin);
    assert_error(&out, 4, "0.3.1", "unknown CNI_COMMAND \"frob\"");
    assert!(plugin.calls().is_empty());
}

#[test]
fn a_panicking_plugin_still_yields_error_json() {
    let plugin = RecordingPlugin::new(Behaviour::Panic);
    for command in ["ADD", "DEL", "CHECK"] {
        let (code, out) = run(&full_env(command), &fixture("version-1.1.0.json"), &plugin);
        assert_eq!(code, 1);
        assert_error(&out, 999, "1.1.0", &format!("{command}: plugin panicked: plugin bug"));
    }
}

#[test]
fn unreadable_stdin_is_an_io_error() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("pipe broke"))
        }
    }
    let plugin = RecordingPlugin::new(Behaviour::Succeed);
    let env = full_env("ADD");
    let mut out = Vec::new();
    let code = dispatch(&|k| env.get(k).cloned(), &mut Broken, &mut out, &plugin);
    assert_eq!(code, 1);
    assert_error(std::str::from_utf8(&out).unwrap(), 102, CURRENT_VERSION, "read stdin: pipe broke");
}

#[test]
fn error_codes_table() {
    let table = [
        (ErrorKind::IncompatibleVersion, 1),
        (ErrorKind::Env, 4),
        (ErrorKind::Decode, 6),
        (ErrorKind::InvalidConfig, 7),
        (ErrorKind::NetNs, 8),
        (ErrorKind::TryAgainLater, 11),
        (ErrorKind::Router, 100),
        (ErrorKind::Kernel, 101),
        (ErrorKind::Io, 102),
        (ErrorKind::NotFound, 103),
        (ErrorKind::AlreadyExists, 104),
        (ErrorKind::Internal, 999),
    ];
    for (kind, code) in table {
        assert_eq!(code_for(kind), code);
        let e = CniError::from_error(&Error::new(kind, "what: why"));
        assert_eq!((e.code, e.msg.as_str()), (code, "what: why"));
        assert_eq!(e.to_json("0.2.0")["code"], code);
    }
}
