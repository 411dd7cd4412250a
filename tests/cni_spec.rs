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
            Interface {
                name: "vethwepl5baff64".into(),
                mac: "6a:1f:00:00:00:01".into(),
                sandbox: None,
                mtu: Some(1376),
            },
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
        routes: vec![Route {
            dst: "0.0.0.0/0".parse().unwrap(),
            gw: None,
        }],
        dns: Dns {
            nameservers: vec!["10.96.0.10".into()],
            search: vec!["svc".into()],
            ..Dns::default()
        },
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
        RecordingPlugin {
            behaviour,
            calls: RefCell::new(Vec::new()),
        }
    }

    fn outcome<T>(&self, call: String, ok: T) -> Result<T> {
        self.calls.borrow_mut().push(call);
        match self.behaviour {
            Behaviour::Succeed => Ok(ok),
            Behaviour::Fail(kind) => Err(Error::new(kind, "connect router: connection refused")
                .context("allocate IP for \"c1\"")),
            Behaviour::Panic => panic!("plugin bug"),
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
}

impl CniPlugin for RecordingPlugin {
    fn add(&self, args: &CmdArgs, conf: &NetConf) -> Result<AddResult> {
        self.outcome(
            format!("ADD {} {} {}", args.container_id, args.ifname, conf.name),
            sample_result(),
        )
    }
    fn del(&self, args: &CmdArgs, conf: &NetConf) -> Result<()> {
        let netns = args
            .netns
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or("-".into());
        self.outcome(
            format!(
                "DEL {} {} {} {netns}",
                args.container_id, args.ifname, conf.name
            ),
            (),
        )
    }
    fn check(&self, args: &CmdArgs, conf: &NetConf) -> Result<()> {
        self.outcome(
            format!("CHECK {} {} {}", args.container_id, args.ifname, conf.name),
            (),
        )
    }
    fn status(&self, conf: &NetConf) -> Result<()> {
        self.outcome(format!("STATUS {}", conf.name), ())
    }
    fn gc(&self, conf: &NetConf, valid: &[GcAttachment]) -> Result<()> {
        let keep: Vec<String> = valid
            .iter()
            .map(|a| format!("{}/{}", a.container_id, a.ifname))
            .collect();
        self.outcome(format!("GC {} [{}]", conf.name, keep.join(",")), ())
    }
}

fn env_of(vars: &[(&str, &str)]) -> HashMap<String, String> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
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
    serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {stdout:?}"))
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

#[path = "cni_spec/dispatching.rs"]
mod dispatching;
#[path = "cni_spec/parsing.rs"]
mod parsing;
