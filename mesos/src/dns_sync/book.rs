//! What the master's event stream says about tasks and frameworks, kept just well enough to
//! know which names should exist (pure; fed by SUBSCRIBED's state and the events after it).

use super::names::{chosen_fqdn, task_fqdn};
use crate::proto::v1::master::{event, response, Event};
use crate::proto::v1::{NetworkInfo, Task, TaskState, TaskStatus};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

/// Label on a task's `NetworkInfo` that chooses its name on that network.
pub const NAME_LABEL: &str = "weave.dns.name";

/// One name to register: `fqdn` → `ip`, for the Mesos ContainerID that holds the address.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Want {
    pub container_id: String,
    pub ip: Ipv4Addr,
    pub fqdn: String,
}

#[derive(Debug, Clone, Default)]
struct TaskEntry {
    name: String,
    state: i32,
    container_id: Option<String>,
    /// (network name, address) from the newest status that reported addresses.
    ips: Vec<(String, String)>,
    /// `weave.dns.name` per network, from the task's ContainerInfo.
    chosen: HashMap<String, String>,
}

/// Frameworks by ID and running tasks by (framework ID, task ID).
#[derive(Debug, Clone, Default)]
pub struct Book {
    frameworks: HashMap<String, String>,
    tasks: BTreeMap<(String, String), TaskEntry>,
}

fn is_terminal(state: i32) -> bool {
    !matches!(
        TaskState::try_from(state),
        Ok(TaskState::TaskStaging
            | TaskState::TaskStarting
            | TaskState::TaskRunning
            | TaskState::TaskKilling)
    )
}

fn status_ips(s: &TaskStatus) -> Vec<(String, String)> {
    s.container_status
        .iter()
        .flat_map(|cs| &cs.network_infos)
        .flat_map(|n| {
            let net = n.name.clone().unwrap_or_default();
            n.ip_addresses
                .iter()
                .filter_map(move |a| a.ip_address.clone().map(|ip| (net.clone(), ip)))
        })
        .collect()
}

fn status_container(s: &TaskStatus) -> Option<String> {
    s.container_status
        .as_ref()?
        .container_id
        .as_ref()
        .map(|c| c.value.clone())
}

fn chosen(nets: &[NetworkInfo]) -> HashMap<String, String> {
    nets.iter()
        .filter_map(|n| {
            let v = n
                .labels
                .as_ref()?
                .labels
                .iter()
                .find(|l| l.key == NAME_LABEL)?
                .value
                .clone()?;
            Some((n.name.clone().unwrap_or_default(), v))
        })
        .collect()
}

impl Book {
    /// The book as of a SUBSCRIBED event's (or GET_STATE's) state.
    pub fn from_state(s: &response::GetState) -> Book {
        let mut b = Book::default();
        if let Some(f) = &s.get_frameworks {
            for fw in f.frameworks.iter().chain(&f.completed_frameworks) {
                b.framework(&fw.framework_info);
            }
        }
        if let Some(t) = &s.get_tasks {
            for task in t.tasks.iter().chain(&t.pending_tasks) {
                b.task(task);
            }
        }
        b
    }

    fn framework(&mut self, info: &crate::proto::v1::FrameworkInfo) {
        if let Some(id) = &info.id {
            self.frameworks.insert(id.value.clone(), info.name.clone());
        }
    }

    fn task(&mut self, t: &Task) {
        let key = (t.framework_id.value.clone(), t.task_id.value.clone());
        if is_terminal(t.state) {
            self.tasks.remove(&key);
            return;
        }
        let mut e = TaskEntry {
            name: t.name.clone(),
            state: t.state,
            chosen: chosen(t.container.as_ref().map_or(&[][..], |c| &c.network_infos)),
            ..TaskEntry::default()
        };
        for s in &t.statuses {
            let ips = status_ips(s);
            if !ips.is_empty() {
                e.ips = ips;
            }
            if let Some(c) = status_container(s) {
                e.container_id = Some(c);
            }
        }
        self.tasks.insert(key, e);
    }

    /// Applies one event; HEARTBEAT and the agent events change nothing here (an agent's
    /// tasks get their own TASK_UPDATED when it goes).
    pub fn apply(&mut self, e: &Event) {
        use event::Type;
        match e.r#type.and_then(|t| Type::try_from(t).ok()) {
            Some(Type::Subscribed) => {
                if let Some(s) = e.subscribed.as_ref().and_then(|s| s.get_state.as_ref()) {
                    *self = Book::from_state(s);
                }
            }
            Some(Type::TaskAdded) => {
                if let Some(a) = &e.task_added {
                    self.task(&a.task);
                }
            }
            Some(Type::TaskUpdated) => {
                if let Some(u) = &e.task_updated {
                    self.update(&u.framework_id.value, &u.status, u.state);
                }
            }
            Some(Type::FrameworkAdded) => {
                if let Some(f) = &e.framework_added {
                    self.framework(&f.framework.framework_info);
                }
            }
            Some(Type::FrameworkUpdated) => {
                if let Some(f) = &e.framework_updated {
                    self.framework(&f.framework.framework_info);
                }
            }
            Some(Type::FrameworkRemoved) => {
                if let Some(id) = e
                    .framework_removed
                    .as_ref()
                    .and_then(|f| f.framework_info.id.as_ref())
                {
                    self.tasks.retain(|(fw, _), _| *fw != id.value);
                }
            }
            _ => {}
        }
    }

    fn update(&mut self, framework: &str, status: &TaskStatus, state: i32) {
        let key = (framework.to_string(), status.task_id.value.clone());
        if is_terminal(state) {
            self.tasks.remove(&key);
            return;
        }
        // TASK_ADDED always comes first for tasks launched while we listen.
        let Some(e) = self.tasks.get_mut(&key) else {
            return;
        };
        e.state = state;
        let ips = status_ips(status);
        if !ips.is_empty() {
            e.ips = ips;
        }
        if let Some(c) = status_container(status) {
            e.container_id = Some(c);
        }
    }

    /// Tasks tracked (not terminal).
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The names that should exist: every TASK_RUNNING task with an IPv4 address on one of
    /// `networks`, under its chosen name or `<task>.<framework>.<domain>`.
    pub fn wanted(&self, networks: &[String], domain: &str) -> BTreeSet<Want> {
        let mut out = BTreeSet::new();
        for ((fw, _), t) in &self.tasks {
            if t.state != TaskState::TaskRunning as i32 {
                continue;
            }
            let Some(cid) = &t.container_id else {
                continue;
            };
            for (net, ip) in &t.ips {
                if !networks.iter().any(|n| n == net) {
                    continue;
                }
                let Ok(ip) = ip.parse::<Ipv4Addr>() else {
                    continue;
                };
                let fqdn = match t.chosen.get(net).and_then(|v| chosen_fqdn(v, domain)) {
                    Some(n) => Some(n),
                    None => self
                        .frameworks
                        .get(fw)
                        .and_then(|fname| task_fqdn(&t.name, fname, domain)),
                };
                if let Some(fqdn) = fqdn {
                    out.insert(Want {
                        container_id: cid.clone(),
                        ip,
                        fqdn,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "book_tests.rs"]
mod tests;
