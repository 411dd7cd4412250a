use super::*;
use crate::proto::v1::{
    network_info::IpAddress, ContainerId, ContainerInfo, ContainerStatus, FrameworkId,
    FrameworkInfo, Label, Labels, NetworkInfo, TaskId,
};

const D: &str = "weave.local.";

fn nets() -> Vec<String> {
    vec!["weave".to_string()]
}

fn status(id: &str, state: TaskState, cid: Option<&str>, ips: &[(&str, &str)]) -> TaskStatus {
    let infos = ips
        .iter()
        .map(|(net, ip)| NetworkInfo {
            name: Some(net.to_string()),
            ip_addresses: vec![IpAddress {
                ip_address: Some(ip.to_string()),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    TaskStatus {
        task_id: TaskId { value: id.into() },
        state: state as i32,
        container_status: Some(ContainerStatus {
            network_infos: infos,
            container_id: cid.map(|c| ContainerId {
                value: c.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn task(fw: &str, id: &str, name: &str, state: TaskState, statuses: Vec<TaskStatus>) -> Task {
    Task {
        name: name.into(),
        task_id: TaskId { value: id.into() },
        framework_id: FrameworkId { value: fw.into() },
        state: state as i32,
        statuses,
        ..Default::default()
    }
}

fn with_label(mut t: Task, net: &str, value: &str) -> Task {
    t.container = Some(ContainerInfo {
        network_infos: vec![NetworkInfo {
            name: Some(net.into()),
            labels: Some(Labels {
                labels: vec![Label {
                    key: NAME_LABEL.into(),
                    value: Some(value.into()),
                }],
            }),
            ..Default::default()
        }],
        ..Default::default()
    });
    t
}

fn framework(id: &str, name: &str) -> response::get_frameworks::Framework {
    response::get_frameworks::Framework {
        framework_info: FrameworkInfo {
            name: name.into(),
            id: Some(FrameworkId { value: id.into() }),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn subscribed(fws: &[(&str, &str)], tasks: Vec<Task>) -> Event {
    Event {
        r#type: Some(event::Type::Subscribed as i32),
        subscribed: Some(event::Subscribed {
            get_state: Some(response::GetState {
                get_tasks: Some(response::GetTasks {
                    tasks,
                    ..Default::default()
                }),
                get_frameworks: Some(response::GetFrameworks {
                    frameworks: fws.iter().map(|(i, n)| framework(i, n)).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            heartbeat_interval_seconds: Some(15.0),
        }),
        ..Default::default()
    }
}

fn added(t: Task) -> Event {
    Event {
        r#type: Some(event::Type::TaskAdded as i32),
        task_added: Some(event::TaskAdded { task: t }),
        ..Default::default()
    }
}

fn updated(fw: &str, s: TaskStatus) -> Event {
    let state = s.state;
    Event {
        r#type: Some(event::Type::TaskUpdated as i32),
        task_updated: Some(event::TaskUpdated {
            framework_id: FrameworkId { value: fw.into() },
            status: s,
            state,
        }),
        ..Default::default()
    }
}

/// (name, address, container), sorted by name.
fn names(b: &Book) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = b
        .wanted(&nets(), D)
        .into_iter()
        .map(|w| (w.fqdn, w.ip.to_string(), w.container_id))
        .collect();
    v.sort();
    v
}

fn own(v: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    v.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

#[test]
fn running_tasks_with_weave_addresses_get_names() {
    let running = task(
        "fw1",
        "web.1",
        "web",
        TaskState::TaskRunning,
        vec![status(
            "web.1",
            TaskState::TaskRunning,
            Some("c1"),
            &[("weave", "10.32.0.2")],
        )],
    );
    // Staging (no address yet), another network, no container ID: no names.
    let staging = task("fw1", "s", "s", TaskState::TaskStaging, vec![]);
    let other_net = task(
        "fw1",
        "o",
        "o",
        TaskState::TaskRunning,
        vec![status(
            "o",
            TaskState::TaskRunning,
            Some("c2"),
            &[("mf-net", "10.99.0.2")],
        )],
    );
    let no_cid = task(
        "fw1",
        "n",
        "n",
        TaskState::TaskRunning,
        vec![status(
            "n",
            TaskState::TaskRunning,
            None,
            &[("weave", "10.32.0.9")],
        )],
    );
    let mut b = Book::default();
    b.apply(&subscribed(
        &[("fw1", "My Framework")],
        vec![running, staging, other_net, no_cid],
    ));
    assert_eq!(
        names(&b),
        own(&[("web.myframework.weave.local.", "10.32.0.2", "c1")])
    );
    assert_eq!(b.len(), 4);
}

#[test]
fn tasks_come_and_go_with_events() {
    let mut b = Book::default();
    b.apply(&subscribed(&[("fw1", "shop")], vec![]));
    // A framework registered after we subscribed.
    b.apply(&Event {
        r#type: Some(event::Type::FrameworkAdded as i32),
        framework_added: Some(event::FrameworkAdded {
            framework: framework("fw2", "batch"),
        }),
        ..Default::default()
    });
    b.apply(&added(task(
        "fw2",
        "t1",
        "web",
        TaskState::TaskStaging,
        vec![],
    )));
    assert!(names(&b).is_empty());
    b.apply(&updated(
        "fw2",
        status(
            "t1",
            TaskState::TaskStarting,
            Some("c1"),
            &[("weave", "10.32.0.2")],
        ),
    ));
    assert!(names(&b).is_empty(), "only TASK_RUNNING tasks have names");
    // RUNNING without addresses in this status: the earlier ones still count.
    b.apply(&updated(
        "fw2",
        status("t1", TaskState::TaskRunning, None, &[]),
    ));
    assert_eq!(
        names(&b),
        own(&[("web.batch.weave.local.", "10.32.0.2", "c1")])
    );
    // A second instance under the same name: both addresses.
    b.apply(&added(task(
        "fw2",
        "t2",
        "web",
        TaskState::TaskStaging,
        vec![],
    )));
    b.apply(&updated(
        "fw2",
        status(
            "t2",
            TaskState::TaskRunning,
            Some("c2"),
            &[("weave", "10.40.0.2")],
        ),
    ));
    assert_eq!(
        names(&b),
        own(&[
            ("web.batch.weave.local.", "10.32.0.2", "c1"),
            ("web.batch.weave.local.", "10.40.0.2", "c2"),
        ])
    );
    // Killed, lost: gone.
    b.apply(&updated(
        "fw2",
        status("t1", TaskState::TaskKilled, None, &[]),
    ));
    assert_eq!(
        names(&b),
        own(&[("web.batch.weave.local.", "10.40.0.2", "c2")])
    );
    b.apply(&updated(
        "fw2",
        status("t2", TaskState::TaskLost, None, &[]),
    ));
    assert!(names(&b).is_empty());
    assert!(b.is_empty(), "terminal tasks are forgotten");
    // An update for a task we never saw is ignored.
    b.apply(&updated(
        "fw2",
        status(
            "zz",
            TaskState::TaskRunning,
            Some("c9"),
            &[("weave", "10.32.0.9")],
        ),
    ));
    assert!(b.is_empty());
}

#[test]
fn killing_and_unreachable_tasks_lose_their_names() {
    let mut b = Book::default();
    let t = task(
        "fw1",
        "t",
        "web",
        TaskState::TaskRunning,
        vec![status(
            "t",
            TaskState::TaskRunning,
            Some("c1"),
            &[("weave", "10.32.0.2")],
        )],
    );
    b.apply(&subscribed(&[("fw1", "fw")], vec![t]));
    assert_eq!(names(&b).len(), 1);
    b.apply(&updated(
        "fw1",
        status("t", TaskState::TaskKilling, None, &[]),
    ));
    assert!(names(&b).is_empty(), "draining tasks are not offered");
    b.apply(&updated(
        "fw1",
        status("t", TaskState::TaskUnreachable, None, &[]),
    ));
    assert!(b.is_empty());
}

#[test]
fn a_label_chooses_the_name() {
    let t = with_label(
        task(
            "fw1",
            "t",
            "web",
            TaskState::TaskRunning,
            vec![status(
                "t",
                TaskState::TaskRunning,
                Some("c1"),
                &[("weave", "10.32.0.2")],
            )],
        ),
        "weave",
        "Frontend",
    );
    let bad = with_label(
        task(
            "fw1",
            "u",
            "api",
            TaskState::TaskRunning,
            vec![status(
                "u",
                TaskState::TaskRunning,
                Some("c2"),
                &[("weave", "10.32.0.3")],
            )],
        ),
        "weave",
        "not a name",
    );
    let mut b = Book::default();
    b.apply(&subscribed(&[("fw1", "fw")], vec![t, bad]));
    assert_eq!(
        names(&b),
        own(&[
            ("api.fw.weave.local.", "10.32.0.3", "c2"),
            ("frontend.weave.local.", "10.32.0.2", "c1"),
        ])
    );
}

#[test]
fn a_framework_removed_takes_its_tasks_and_resubscribing_starts_over() {
    let t = task(
        "fw1",
        "t",
        "web",
        TaskState::TaskRunning,
        vec![status(
            "t",
            TaskState::TaskRunning,
            Some("c1"),
            &[("weave", "10.32.0.2")],
        )],
    );
    let mut b = Book::default();
    b.apply(&subscribed(&[("fw1", "fw")], vec![t]));
    b.apply(&Event {
        r#type: Some(event::Type::FrameworkRemoved as i32),
        framework_removed: Some(event::FrameworkRemoved {
            framework_info: framework("fw1", "fw").framework_info,
        }),
        ..Default::default()
    });
    assert!(b.is_empty());
    b.apply(&added(task(
        "fw1",
        "x",
        "x",
        TaskState::TaskStaging,
        vec![],
    )));
    assert_eq!(b.len(), 1);
    // A new SUBSCRIBED (after a reconnect) replaces everything.
    b.apply(&subscribed(&[], vec![]));
    assert!(b.is_empty());
    // HEARTBEAT changes nothing.
    b.apply(&Event {
        r#type: Some(event::Type::Heartbeat as i32),
        ..Default::default()
    });
    assert!(b.is_empty());
}
