//! The operator client against the real Mesos 1.11.0 master+agent of the mesos-fixture,
//! started in a network namespace this test creates (`wvt-mesos-<pid>`), in protobuf and
//! JSON. Needs root and a built fixture (`mesos-fixture build`).

mod common;

use common::{run, start_instance, stop_instance};
use std::process::Command;
use std::time::{Duration, Instant};
use weave_mesos::http::Connector;
use weave_mesos::operator::{event_type_name, OperatorClient};
use weave_mesos::proto::Encoding;

const IP: &str = "127.0.0.1";
const PORT: u16 = 5050;

/// A netns with lo up and a fixture instance inside it; both removed on drop, even when
/// the test panics.
struct Fixture {
    name: String,
    netns: String,
    conf: tempfile::TempDir,
    _plugins: tempfile::TempDir,
    started: bool,
}

impl Fixture {
    fn start() -> Fixture {
        let name = format!("wvt-mesos-{}", std::process::id());
        let mut f = Fixture {
            netns: name.clone(),
            name,
            conf: tempfile::tempdir().unwrap(),
            _plugins: tempfile::tempdir().unwrap(),
            started: false,
        };
        run(10, &["ip", "netns", "add", &f.netns]);
        run(10, &["ip", "-n", &f.netns, "link", "set", "lo", "up"]);
        f.started = true;
        let out = start_instance(
            &f.name,
            &f.netns,
            IP,
            PORT,
            f.conf.path(),
            f._plugins.path(),
            &[],
        );
        assert!(out.contains(&format!("http://{IP}:{PORT}")), "{out}");
        f
    }

    fn client(&self, enc: Encoding) -> OperatorClient {
        OperatorClient::new(&format!("http://{IP}:{PORT}"))
            .unwrap()
            .with_encoding(enc)
            .with_timeout(Duration::from_secs(10))
            .with_connector(Connector::for_netns_name(&self.netns))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if self.started {
            stop_instance(&self.name);
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

fn check_operator_api(f: &Fixture, enc: Encoding) {
    let c = f.client(enc);
    assert!(c.get_health().unwrap(), "{enc:?}");
    assert_eq!(c.get_version().unwrap().version, "1.11.0", "{enc:?}");

    let flags = c.get_flags().unwrap();
    let flag = |n: &str| {
        flags
            .iter()
            .find(|f| f.name == n)
            .and_then(|f| f.value.clone())
    };
    assert!(
        flag("work_dir").is_some_and(|w| !w.is_empty()),
        "{enc:?}: no work_dir in {flags:?}"
    );
    assert_eq!(flag("port").as_deref(), Some("5050"), "{enc:?}");

    let agents = c.get_agents().unwrap();
    assert_eq!(agents.agents.len(), 1, "{enc:?}: {agents:?}");
    let agent = &agents.agents[0];
    // A local-mode fixture runs master and agent in one libprocess: one port.
    assert_eq!(
        agent.pid.as_deref(),
        Some(format!("slave(1)@{IP}:{PORT}").as_str()),
        "{enc:?}"
    );
    assert_eq!(agent.version, "1.11.0");
    assert!(agent.active);
    assert_eq!(agent.agent_info.hostname, IP);
    let cpus = agent
        .total_resources
        .iter()
        .find(|r| r.name == "cpus")
        .expect("cpus resource");
    assert_eq!(cpus.scalar.as_ref().map(|s| s.value), Some(2.0));
    let ports = agent
        .total_resources
        .iter()
        .find(|r| r.name == "ports")
        .expect("ports resource");
    let range = &ports.ranges.as_ref().expect("ports ranges").range[0];
    assert_eq!((range.begin, range.end), (31000, 31999));

    let state = c.get_state().unwrap();
    let state_agents = state.get_agents.expect("GET_STATE has get_agents");
    assert_eq!(state_agents.agents[0].agent_info.id, agent.agent_info.id);
    c.get_tasks().unwrap();
    c.get_frameworks().unwrap();

    // SUBSCRIBED with the full state, then an immediate HEARTBEAT, then nothing for 15 s.
    let mut events = c
        .subscribe(Instant::now() + Duration::from_secs(20))
        .unwrap();
    let first = events.next().expect("a first event").unwrap();
    assert_eq!(event_type_name(&first), "SUBSCRIBED", "{enc:?}: {first:?}");
    let sub = first.subscribed.expect("subscribed");
    assert_eq!(sub.heartbeat_interval_seconds, Some(15.0));
    let sub_agents = sub
        .get_state
        .and_then(|s| s.get_agents)
        .expect("state in SUBSCRIBED");
    assert_eq!(sub_agents.agents[0].pid, agent.pid);
    let second = events.next().expect("a second event").unwrap();
    assert_eq!(event_type_name(&second), "HEARTBEAT", "{enc:?}");
    // The deadline bounds the wait for the next heartbeat.
    let start = Instant::now();
    let err = events
        .next_event(Instant::now() + Duration::from_millis(500))
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[test]
#[cfg_attr(
    not(feature = "mesos-fixture-tests"),
    ignore = "needs root and the Mesos fixture: cargo test -p weave-mesos --features mesos-fixture-tests"
)]
fn operator_api_against_real_mesos_1_11() {
    let f = Fixture::start();
    check_operator_api(&f, Encoding::Protobuf);
    check_operator_api(&f, Encoding::Json);

    // The binary, as an operator would run it.
    let out = Command::new(env!("CARGO_BIN_EXE_weave-mesos"))
        .args([
            "agents",
            "--master",
            &format!("{IP}:{PORT}"),
            "--netns",
            &f.netns,
            "--timeout",
            "10",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("slave(1)@{IP}:{PORT}")) && text.contains("1.11.0"),
        "{text}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_weave-mesos"))
        .args([
            "subscribe",
            "--json",
            "--master",
            &format!("{IP}:{PORT}"),
            "--netns",
            &f.netns,
            "--max-events",
            "2",
            "--duration",
            "20",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.lines()
            .map(|l| l.split(' ').next().unwrap())
            .collect::<Vec<_>>(),
        ["SUBSCRIBED", "HEARTBEAT"],
        "{text}"
    );
}
