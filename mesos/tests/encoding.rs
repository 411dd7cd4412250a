//! Our prost encoding of protos/ against an independent implementation: Google's Python
//! protobuf with code from Debian's protoc. Byte-identical Calls (deterministic
//! serialization), a Python-built Response decoded in Rust, and Python's JSON of a Call
//! read by our JSON path. Without protoc or python3-protobuf this test FAILS.

use prost::Message;
use std::path::{Path, PathBuf};
use std::process::Command;
use weave_mesos::proto::v1::master::{self, response};
use weave_mesos::proto::v1::scheduler::{self, call};
use weave_mesos::proto::v1::*;
use weave_mesos::proto::{self, Encoding};

/// A python3 that can import google.protobuf (pyenv shims may hide Debian's).
fn python() -> String {
    let mut candidates: Vec<String> = std::env::var("PYTHON").into_iter().collect();
    candidates.extend(["/usr/bin/python3".to_string(), "python3".to_string()]);
    for py in &candidates {
        let ok = Command::new(py)
            .args(["-c", "import google.protobuf"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return py.clone();
        }
    }
    panic!(
        "no python3 with google.protobuf among {candidates:?}: apt-get install python3-protobuf"
    );
}

fn protoc_python_out(dir: &Path) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../protos");
    let out = Command::new("protoc")
        .arg("-I")
        .arg(&root)
        .arg(format!("--python_out={}", dir.display()))
        .args([
            "mesos/v1/mesos.proto",
            "mesos/v1/master/master.proto",
            "mesos/v1/scheduler/scheduler.proto",
        ])
        .output()
        .unwrap_or_else(|e| panic!("run protoc: {e}: apt-get install protobuf-compiler"));
    assert!(
        out.status.success(),
        "protoc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Python side: builds the same messages and prints `name hex` lines.
const PY: &str = r#"
import sys
from google.protobuf import json_format
from mesos.v1 import mesos_pb2 as m
from mesos.v1.master import master_pb2 as ms
from mesos.v1.scheduler import scheduler_pb2 as sc

def out(name, data):
    print(name, data.hex())

def ser(msg):
    return msg.SerializeToString(deterministic=True)

c = ms.Call(); c.type = ms.Call.GET_AGENTS
out("get_agents", ser(c))

s = sc.Call(); s.type = sc.Call.SUBSCRIBE
fi = s.subscribe.framework_info
fi.user = "root"; fi.name = "weave-mesos"; fi.failover_timeout = 60.0; fi.checkpoint = False
fi.capabilities.add().type = m.FrameworkInfo.Capability.TASK_KILLING_STATE
fi.capabilities.add().type = m.FrameworkInfo.Capability.PARTITION_AWARE
fi.roles.append("*")
out("subscribe", ser(s))

a = sc.Call(); a.framework_id.value = "fw-1"; a.type = sc.Call.ACCEPT
a.accept.offer_ids.add().value = "offer-7"
op = a.accept.operations.add(); op.type = m.Offer.Operation.LAUNCH
t = op.launch.task_infos.add()
t.name = "probe"; t.task_id.value = "t1"; t.agent_id.value = "agent-S0"
r = t.resources.add(); r.name = "cpus"; r.type = m.Value.SCALAR; r.scalar.value = 0.1
r = t.resources.add(); r.name = "mem"; r.type = m.Value.SCALAR; r.scalar.value = 32
r = t.resources.add(); r.name = "ports"; r.type = m.Value.RANGES
rg = r.ranges.range.add(); rg.begin = 31000; rg.end = 31000
t.command.shell = True; t.command.value = "ip addr; sleep 30"
t.container.type = m.ContainerInfo.MESOS
n = t.container.network_infos.add(); n.name = "weave"
l = n.labels.labels.add(); l.key = "app"; l.value = "web"
pm = n.port_mappings.add(); pm.host_port = 31000; pm.container_port = 80; pm.protocol = "tcp"
a.accept.filters.refuse_seconds = 5.0
out("accept", ser(a))
print("accept_json", json_format.MessageToJson(a, preserving_proto_field_name=True, indent=None).encode().hex())

k = sc.Call(); k.framework_id.value = "fw-1"; k.type = sc.Call.ACKNOWLEDGE
k.acknowledge.agent_id.value = "agent-S0"; k.acknowledge.task_id.value = "t1"
k.acknowledge.uuid = bytes(range(16))
out("acknowledge", ser(k))

k = sc.Call(); k.framework_id.value = "fw-1"; k.type = sc.Call.KILL
k.kill.task_id.value = "t1"; k.kill.agent_id.value = "agent-S0"
out("kill", ser(k))

d = sc.Call(); d.framework_id.value = "fw-1"; d.type = sc.Call.DECLINE
d.decline.offer_ids.add().value = "offer-8"; d.decline.filters.refuse_seconds = 3600
out("decline", ser(d))

d = sc.Call(); d.framework_id.value = "fw-1"; d.type = sc.Call.TEARDOWN
out("teardown", ser(d))

resp = ms.Response(); resp.type = ms.Response.GET_TASKS
task = resp.get_tasks.tasks.add()
task.name = "probe"; task.task_id.value = "t1"; task.framework_id.value = "fw-1"
task.agent_id.value = "agent-S0"; task.state = m.TASK_RUNNING
st = task.statuses.add(); st.task_id.value = "t1"; st.state = m.TASK_STARTING
st = task.statuses.add(); st.task_id.value = "t1"; st.state = m.TASK_RUNNING
st.source = m.TaskStatus.SOURCE_EXECUTOR; st.uuid = b"\x01\x02\xff"; st.timestamp = 1795822229.5
ni = st.container_status.network_infos.add(); ni.name = "weave"
ip = ni.ip_addresses.add(); ip.protocol = m.NetworkInfo.IPv4; ip.ip_address = "10.32.0.5"
st.container_status.container_id.value = "5baff64c-d028-47ba-864e-a5ee679fc069"
st.container_status.executor_pid = 4242
failed = resp.get_tasks.completed_tasks.add()
failed.name = "bad"; failed.task_id.value = "t0"; failed.framework_id.value = "fw-1"
failed.agent_id.value = "agent-S0"; failed.state = m.TASK_FAILED
fs = failed.statuses.add(); fs.task_id.value = "t0"; fs.state = m.TASK_FAILED
fs.reason = m.TaskStatus.REASON_CONTAINER_LAUNCH_FAILED; fs.message = "Failed to launch container"
out("get_tasks_response", ser(resp))
"#;

fn python_outputs() -> std::collections::BTreeMap<String, Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    protoc_python_out(dir.path());
    let out = Command::new(python())
        .args(["-c", PY])
        .env("PYTHONPATH", dir.path())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (name, hex) = l.split_once(' ').unwrap();
            (name.to_string(), decode_hex(hex))
        })
        .collect()
}

fn decode_hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn id<T: Default>(f: impl FnOnce(&mut T)) -> T {
    let mut t = T::default();
    f(&mut t);
    t
}

fn scalar(name: &str, v: f64) -> Resource {
    Resource {
        name: name.into(),
        r#type: value::Type::Scalar as i32,
        scalar: Some(value::Scalar { value: v }),
        ..Default::default()
    }
}

fn fw() -> Option<FrameworkId> {
    Some(FrameworkId {
        value: "fw-1".into(),
    })
}

fn accept_call() -> scheduler::Call {
    let task = TaskInfo {
        name: "probe".into(),
        task_id: TaskId { value: "t1".into() },
        agent_id: AgentId {
            value: "agent-S0".into(),
        },
        resources: vec![
            scalar("cpus", 0.1),
            scalar("mem", 32.0),
            Resource {
                name: "ports".into(),
                r#type: value::Type::Ranges as i32,
                ranges: Some(value::Ranges {
                    range: vec![value::Range {
                        begin: 31000,
                        end: 31000,
                    }],
                }),
                ..Default::default()
            },
        ],
        command: Some(CommandInfo {
            shell: Some(true),
            value: Some("ip addr; sleep 30".into()),
            ..Default::default()
        }),
        container: Some(ContainerInfo {
            r#type: container_info::Type::Mesos as i32,
            network_infos: vec![NetworkInfo {
                name: Some("weave".into()),
                labels: Some(Labels {
                    labels: vec![Label {
                        key: "app".into(),
                        value: Some("web".into()),
                    }],
                }),
                port_mappings: vec![network_info::PortMapping {
                    host_port: 31000,
                    container_port: 80,
                    protocol: Some("tcp".into()),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    scheduler::Call {
        framework_id: fw(),
        r#type: Some(call::Type::Accept as i32),
        accept: Some(call::Accept {
            offer_ids: vec![OfferId {
                value: "offer-7".into(),
            }],
            operations: vec![offer::Operation {
                r#type: Some(offer::operation::Type::Launch as i32),
                launch: Some(offer::operation::Launch {
                    task_infos: vec![task],
                }),
            }],
            filters: Some(Filters {
                refuse_seconds: Some(5.0),
            }),
        }),
        ..Default::default()
    }
}

#[test]
fn prost_encoding_matches_python_protobuf() {
    let py = python_outputs();
    let get_agents = weave_mesos::operator::simple(master::call::Type::GetAgents);
    let cap = |t: framework_info::capability::Type| framework_info::Capability {
        r#type: Some(t as i32),
    };
    let subscribe = scheduler::Call {
        r#type: Some(call::Type::Subscribe as i32),
        subscribe: Some(call::Subscribe {
            framework_info: FrameworkInfo {
                user: "root".into(),
                name: "weave-mesos".into(),
                failover_timeout: Some(60.0),
                checkpoint: Some(false),
                capabilities: vec![
                    cap(framework_info::capability::Type::TaskKillingState),
                    cap(framework_info::capability::Type::PartitionAware),
                ],
                roles: vec!["*".into()],
                ..Default::default()
            },
            suppressed_roles: vec![],
        }),
        ..Default::default()
    };
    let acknowledge = scheduler::Call {
        framework_id: fw(),
        r#type: Some(call::Type::Acknowledge as i32),
        acknowledge: Some(call::Acknowledge {
            agent_id: AgentId {
                value: "agent-S0".into(),
            },
            task_id: TaskId { value: "t1".into() },
            uuid: (0u8..16).collect(),
        }),
        ..Default::default()
    };
    let kill = scheduler::Call {
        framework_id: fw(),
        r#type: Some(call::Type::Kill as i32),
        kill: Some(call::Kill {
            task_id: TaskId { value: "t1".into() },
            agent_id: Some(AgentId {
                value: "agent-S0".into(),
            }),
        }),
        ..Default::default()
    };
    let decline = scheduler::Call {
        framework_id: fw(),
        r#type: Some(call::Type::Decline as i32),
        decline: Some(call::Decline {
            offer_ids: vec![OfferId {
                value: "offer-8".into(),
            }],
            filters: Some(Filters {
                refuse_seconds: Some(3600.0),
            }),
        }),
        ..Default::default()
    };
    let teardown = id(|c: &mut scheduler::Call| {
        c.framework_id = fw();
        c.r#type = Some(call::Type::Teardown as i32);
    });
    let ours = [
        ("get_agents", get_agents.encode_to_vec()),
        ("subscribe", subscribe.encode_to_vec()),
        ("accept", accept_call().encode_to_vec()),
        ("acknowledge", acknowledge.encode_to_vec()),
        ("kill", kill.encode_to_vec()),
        ("decline", decline.encode_to_vec()),
        ("teardown", teardown.encode_to_vec()),
    ];
    for (name, bytes) in ours {
        assert_eq!(
            hex(&bytes),
            hex(&py[name]),
            "{name}: prost vs python protobuf"
        );
    }
}

#[test]
fn python_response_decodes_in_rust() {
    let py = python_outputs();
    let raw = &py["get_tasks_response"];
    let resp = master::Response::decode(raw.as_slice()).unwrap();
    assert_eq!(resp.r#type, Some(response::Type::GetTasks as i32));
    let tasks = resp.get_tasks.as_ref().unwrap();
    let t = &tasks.tasks[0];
    assert_eq!(
        (t.task_id.value.as_str(), t.agent_id.value.as_str()),
        ("t1", "agent-S0")
    );
    assert_eq!(t.state, TaskState::TaskRunning as i32);
    let last = t.statuses.last().unwrap();
    assert_eq!(last.uuid.as_deref(), Some(&[1u8, 2, 255][..]));
    assert_eq!(last.source, Some(task_status::Source::Executor as i32));
    assert_eq!(last.timestamp, Some(1795822229.5));
    let cs = last.container_status.as_ref().unwrap();
    assert_eq!(cs.executor_pid, Some(4242));
    assert_eq!(
        weave_mesos::operator::task_ips(t),
        vec![("weave".to_string(), "10.32.0.5".to_string())]
    );
    assert_eq!(
        cs.network_infos[0].ip_addresses[0].protocol(),
        network_info::Protocol::IPv4
    );
    let failed = &tasks.completed_tasks[0].statuses[0];
    assert_eq!(
        failed.reason,
        Some(task_status::Reason::ContainerLaunchFailed as i32)
    );
    assert_eq!(failed.state, TaskState::TaskFailed as i32);
    // And back: prost re-encodes Python's bytes identically.
    assert_eq!(hex(&resp.encode_to_vec()), hex(raw));
}

#[test]
fn python_json_of_a_call_reads_as_the_same_message() {
    let py = python_outputs();
    let json = &py["accept_json"];
    let from_py: scheduler::Call = proto::decode(json, Encoding::Json).unwrap();
    assert_eq!(
        from_py,
        accept_call(),
        "JSON from python: {}",
        String::from_utf8_lossy(json)
    );
    // Our JSON uses proto field names and enum names, as Mesos expects.
    let ours = String::from_utf8(proto::encode(&accept_call(), Encoding::Json).unwrap()).unwrap();
    for needle in [
        r#""type":"ACCEPT""#,
        r#""offer_ids":[{"value":"offer-7"}]"#,
        r#""type":"MESOS""#,
        r#""network_infos":[{"#,
        r#""name":"weave""#,
        r#""type":"LAUNCH""#,
    ] {
        assert!(ours.contains(needle), "{needle} not in {ours}");
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
