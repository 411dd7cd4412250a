//! Runs command tasks through a scheduler [`Session`]: each queued task waits for an offer
//! from an agent it may run on (any agent, or one chosen by hostname or ID) that holds its
//! resources; offers nobody needs are declined; every status update is acknowledged and
//! recorded with the time it arrived, so callers can wait for states and time them.

use crate::proto::v1::scheduler::event;
use crate::proto::v1::{
    container_info, environment, image, network_info, value, AgentId, CommandInfo, ContainerInfo,
    Environment, Image, NetworkInfo, Offer, OfferId, Resource, TaskId, TaskInfo, TaskState,
    TaskStatus,
};
use crate::scheduler::{event_type, Session};
use crate::{Context, Error, ErrorKind, Result};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// mesos-execute's default `--resources`.
pub const DEFAULT_RESOURCES: &str = "cpus:1;mem:128";
/// Seconds a declined offer stays away; short, since queued tasks may want it soon.
const DECLINE_SECONDS: f64 = 1.0;

/// Where a task may run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AgentChoice {
    #[default]
    Any,
    /// Matches the agent's hostname or its agent ID.
    Named(String),
}

impl AgentChoice {
    fn accepts(&self, offer: &Offer) -> bool {
        match self {
            AgentChoice::Any => true,
            AgentChoice::Named(n) => offer.hostname == *n || offer.agent_id.value == *n,
        }
    }
}

/// A command task to launch.
#[derive(Debug, Clone, Default)]
pub struct TaskSpec {
    /// Used as both the task's name and its ID, as mesos-execute does.
    pub name: String,
    pub command: String,
    /// `false` runs the command without a shell (mesos-execute then drops the value).
    pub shell: bool,
    /// CNI networks (`ContainerInfo.network_infos[].name`); empty means the host network.
    pub networks: Vec<String>,
    /// Scalar resources, e.g. `[("cpus", 0.1), ("mem", 32.0)]`.
    pub resources: Vec<(String, f64)>,
    pub agent: AgentChoice,
    /// `NetworkInfo.port_mappings`, put on every network of the task (the CNI plugin, not
    /// Mesos, installs them).
    pub port_mappings: Vec<PortMap>,
    /// A Docker image the Mesos containerizer provisions as the task's root filesystem
    /// (`ContainerInfo.mesos.image`); `None` runs the task on the agent's filesystem.
    pub image: Option<String>,
    /// `CommandInfo.environment`, in order.
    pub env: Vec<(String, String)>,
}

/// One host port forwarded to a container port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMap {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`; `None` leaves Mesos' field unset (plugins then use tcp).
    pub protocol: Option<String>,
}

/// Parses `HOST:CONTAINER[/PROTO]` items separated by `,`, e.g. `8080:80,8053:53/udp`.
pub fn parse_port_mappings(s: &str) -> Result<Vec<PortMap>> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = |why: &str| {
            Error::new(
                ErrorKind::InvalidConfig,
                format!("parse port mappings {s:?}: {item:?} {why}"),
            )
        };
        let (ports, protocol) = match item.split_once('/') {
            Some((p, proto)) => (p, Some(proto.trim().to_ascii_lowercase())),
            None => (item, None),
        };
        if protocol
            .as_deref()
            .is_some_and(|p| p != "tcp" && p != "udp")
        {
            return Err(bad("has a protocol other than tcp or udp"));
        }
        let (host, container) = ports
            .split_once(':')
            .ok_or_else(|| bad("is not HOST:CONTAINER[/PROTO]"))?;
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("has a port outside 1-65535"))
        };
        out.push(PortMap {
            host_port: port(host)?,
            container_port: port(container)?,
            protocol,
        });
    }
    Ok(out)
}

/// Parses a Mesos resource string of scalars: `cpus:1;mem:128` (`,` works as separator too).
pub fn parse_resources(s: &str) -> Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for item in s.split([';', ',']).map(str::trim).filter(|i| !i.is_empty()) {
        let bad = |why: &str| {
            Error::new(
                ErrorKind::InvalidConfig,
                format!("parse resources {s:?}: {item:?} {why}"),
            )
        };
        let (name, amount) = item
            .split_once(':')
            .ok_or_else(|| bad("is not name:value"))?;
        let name = name.split('(').next().unwrap_or(name).trim();
        let amount: f64 = amount
            .trim()
            .parse()
            .map_err(|_| bad("is not a scalar (ranges and sets are not supported)"))?;
        if !(amount.is_finite() && amount > 0.0) {
            return Err(bad("must be positive"));
        }
        out.push((name.to_string(), amount));
    }
    if out.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!("parse resources {s:?}: no resources"),
        ));
    }
    Ok(out)
}

/// Unreserved scalar amount of `name` in `offer` (reserved and non-scalar entries skipped).
fn offered(offer: &Offer, name: &str) -> f64 {
    offer
        .resources
        .iter()
        .filter(|r| r.name == name && r.r#type == value::Type::Scalar as i32)
        .filter(|r| r.reservations.is_empty() && r.role.as_deref().unwrap_or("*") == "*")
        .filter_map(|r| r.scalar.as_ref().map(|s| s.value))
        .sum()
}

fn fits(offer: &Offer, want: &[(String, f64)]) -> bool {
    want.iter().all(|(n, a)| offered(offer, n) + 1e-9 >= *a)
}

impl TaskSpec {
    /// The TaskInfo for an offer from `agent_id`; resources carry the offer's allocation
    /// info so that multi-role masters accept them as well.
    fn task_info(&self, offer: &Offer) -> TaskInfo {
        let allocation = offer
            .resources
            .iter()
            .find_map(|r| r.allocation_info.clone());
        let resources = self
            .resources
            .iter()
            .map(|(name, amount)| Resource {
                name: name.clone(),
                r#type: value::Type::Scalar as i32,
                scalar: Some(value::Scalar { value: *amount }),
                allocation_info: allocation.clone(),
                ..Default::default()
            })
            .collect();
        // As mesos-execute: a ContainerInfo only when a container option is set.
        let has_container = !self.networks.is_empty() || self.image.is_some();
        let container = has_container.then(|| ContainerInfo {
            r#type: container_info::Type::Mesos as i32,
            mesos: self.image.as_ref().map(|name| container_info::MesosInfo {
                image: Some(Image {
                    r#type: image::Type::Docker as i32,
                    docker: Some(image::Docker { name: name.clone() }),
                    cached: None,
                }),
            }),
            network_infos: self
                .networks
                .iter()
                .map(|n| NetworkInfo {
                    name: Some(n.clone()),
                    port_mappings: self
                        .port_mappings
                        .iter()
                        .map(|m| network_info::PortMapping {
                            host_port: m.host_port.into(),
                            container_port: m.container_port.into(),
                            protocol: m.protocol.clone(),
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        TaskInfo {
            name: self.name.clone(),
            task_id: TaskId {
                value: self.name.clone(),
            },
            agent_id: offer.agent_id.clone(),
            resources,
            command: Some(CommandInfo {
                shell: Some(self.shell),
                value: self.shell.then(|| self.command.clone()),
                environment: (!self.env.is_empty()).then(|| Environment {
                    variables: self
                        .env
                        .iter()
                        .map(|(name, value)| environment::Variable {
                            name: name.clone(),
                            value: Some(value.clone()),
                        })
                        .collect(),
                }),
                ..Default::default()
            }),
            container,
            ..Default::default()
        }
    }
}

/// What happened to one task so far.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub agent_id: String,
    pub agent_hostname: String,
    pub submitted: Instant,
    /// Every update in arrival order, with the time it arrived.
    pub updates: Vec<(Instant, TaskStatus)>,
}

impl TaskRecord {
    pub fn last(&self) -> Option<&TaskStatus> {
        self.updates.last().map(|(_, s)| s)
    }

    pub fn state(&self) -> Option<TaskState> {
        self.last().and_then(|s| TaskState::try_from(s.state).ok())
    }

    /// When the update with `state` first arrived.
    pub fn reached(&self, state: TaskState) -> Option<Instant> {
        self.updates
            .iter()
            .find(|(_, s)| s.state == state as i32)
            .map(|(t, _)| *t)
    }

    pub fn is_terminal(&self) -> bool {
        self.state().is_some_and(is_terminal)
    }
}

/// The states mesos-execute stops at. UNREACHABLE and UNKNOWN may still change.
pub fn is_terminal(s: TaskState) -> bool {
    use TaskState::*;
    matches!(
        s,
        TaskFinished
            | TaskFailed
            | TaskKilled
            | TaskLost
            | TaskError
            | TaskDropped
            | TaskGone
            | TaskGoneByOperator
    )
}

/// Something the driver did or saw, in order, for callers that print progress.
#[derive(Debug, Clone)]
pub enum Progress {
    Submitted { task: String, agent_id: String },
    Update(Box<TaskStatus>),
    Killed { task: String, agent_id: String },
}

/// Tasks over one session.
#[derive(Debug)]
pub struct Driver {
    session: Session,
    queued: Vec<TaskSpec>,
    tasks: BTreeMap<String, TaskRecord>,
    log: Vec<Progress>,
}

impl Driver {
    pub fn new(session: Session) -> Driver {
        Driver {
            session,
            queued: Vec::new(),
            tasks: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Queues `spec`; it is launched on the first fitting offer. Task names must be unique.
    pub fn launch(&mut self, spec: TaskSpec) -> Result<()> {
        if self.tasks.contains_key(&spec.name) || self.queued.iter().any(|q| q.name == spec.name) {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("launch task {:?}: a task with that ID exists", spec.name),
            ));
        }
        self.queued.push(spec);
        Ok(())
    }

    pub fn task(&self, name: &str) -> Option<&TaskRecord> {
        self.tasks.get(name)
    }

    /// Whether progress is waiting to be drained.
    pub fn has_progress(&self) -> bool {
        !self.log.is_empty()
    }

    /// Progress since the last call.
    pub fn drain_progress(&mut self) -> Vec<Progress> {
        std::mem::take(&mut self.log)
    }

    /// Handles events until `done(self)` holds or `deadline` passes (then `TryAgainLater`).
    pub fn run_until(
        &mut self,
        deadline: Instant,
        what: &str,
        done: impl Fn(&Driver) -> bool,
    ) -> Result<()> {
        while !done(self) {
            if Instant::now() >= deadline {
                return Err(self.timeout_error(what));
            }
            let ev = match self.session.next_event(deadline) {
                Ok(Some(ev)) => ev,
                Ok(None) => {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!("{what}: master closed the event stream"),
                    ))
                }
                Err(e) if e.kind() == ErrorKind::TryAgainLater => {
                    return Err(self.timeout_error(what))
                }
                Err(e) => return Err(e.context(what)),
            };
            self.handle(ev).context(what)?;
        }
        Ok(())
    }

    fn timeout_error(&self, what: &str) -> Error {
        let queued: Vec<&str> = self.queued.iter().map(|q| q.name.as_str()).collect();
        let hint = if queued.is_empty() {
            String::new()
        } else {
            format!(" (no fitting offer yet for {})", queued.join(", "))
        };
        Error::new(ErrorKind::TryAgainLater, format!("{what}: timed out{hint}"))
    }

    /// Waits until task `name` is in a terminal state or in `state`, whichever first.
    pub fn wait_for(
        &mut self,
        name: &str,
        state: TaskState,
        deadline: Instant,
    ) -> Result<TaskRecord> {
        let what = format!("wait for task {name:?} to reach {}", state.as_str_name());
        self.run_until(deadline, &what, |d| {
            d.task(name)
                .is_some_and(|t| t.is_terminal() || t.reached(state).is_some())
        })?;
        Ok(self.tasks[name].clone())
    }

    /// Waits until task `name` is terminal.
    pub fn wait_terminal(&mut self, name: &str, deadline: Instant) -> Result<TaskRecord> {
        let what = format!("wait for task {name:?} to end");
        self.run_until(deadline, &what, |d| {
            d.task(name).is_some_and(TaskRecord::is_terminal)
        })?;
        Ok(self.tasks[name].clone())
    }

    /// Asks the agent to kill a launched task.
    pub fn kill(&mut self, name: &str) -> Result<()> {
        let agent = self.tasks.get(name).map(|t| t.agent_id.clone());
        self.session.kill(name, agent.as_deref())?;
        self.log.push(Progress::Killed {
            task: name.to_string(),
            agent_id: agent.unwrap_or_default(),
        });
        Ok(())
    }

    /// Ends the framework: Mesos kills what still runs.
    pub fn teardown(&self) -> Result<()> {
        self.session.teardown()
    }

    fn handle(&mut self, ev: crate::proto::v1::scheduler::Event) -> Result<()> {
        match event_type(&ev) {
            Some(event::Type::Offers) => {
                let offers = ev.offers.map(|o| o.offers).unwrap_or_default();
                self.handle_offers(offers)
            }
            Some(event::Type::Update) => {
                let Some(update) = ev.update else {
                    return Ok(());
                };
                let status = update.status;
                self.session.acknowledge(&status)?;
                if let Some(t) = self.tasks.get_mut(&status.task_id.value) {
                    t.updates.push((Instant::now(), status.clone()));
                }
                self.log.push(Progress::Update(Box::new(status)));
                Ok(())
            }
            Some(event::Type::Error) => Err(Error::new(
                ErrorKind::Router,
                format!(
                    "master sent ERROR: {}",
                    ev.error.map(|e| e.message).unwrap_or_default()
                ),
            )),
            _ => Ok(()),
        }
    }

    fn handle_offers(&mut self, offers: Vec<Offer>) -> Result<()> {
        let mut unused: Vec<OfferId> = Vec::new();
        for offer in offers {
            // Several queued tasks may share one offer while its resources last.
            let mut left = offer.clone();
            let mut take = Vec::new();
            let mut i = 0;
            while i < self.queued.len() {
                let spec = &self.queued[i];
                if spec.agent.accepts(&left) && fits(&left, &spec.resources) {
                    let spec = self.queued.remove(i);
                    subtract(&mut left, &spec.resources);
                    take.push(spec);
                } else {
                    i += 1;
                }
            }
            if take.is_empty() {
                unused.push(offer.id.clone());
                continue;
            }
            let infos: Vec<TaskInfo> = take.iter().map(|s| s.task_info(&offer)).collect();
            self.session
                .accept(vec![offer.id.clone()], infos, DECLINE_SECONDS)?;
            for spec in take {
                self.log.push(Progress::Submitted {
                    task: spec.name.clone(),
                    agent_id: offer.agent_id.value.clone(),
                });
                self.tasks.insert(
                    spec.name.clone(),
                    TaskRecord {
                        agent_id: offer.agent_id.value.clone(),
                        agent_hostname: offer.hostname.clone(),
                        submitted: Instant::now(),
                        updates: Vec::new(),
                    },
                );
            }
        }
        if !unused.is_empty() {
            self.session.decline(unused, DECLINE_SECONDS)?;
        }
        Ok(())
    }
}

fn subtract(offer: &mut Offer, used: &[(String, f64)]) {
    for (name, mut amount) in used.iter().cloned() {
        for r in offer.resources.iter_mut().filter(|r| r.name == name) {
            if let Some(s) = r.scalar.as_mut() {
                let d = s.value.min(amount);
                s.value -= d;
                amount -= d;
            }
        }
    }
}

/// The agent of `id` in an offer-less form, for callers that know only IDs.
pub fn agent_id(id: &str) -> AgentId {
    AgentId {
        value: id.to_string(),
    }
}

/// Seconds between two instants, for reports.
pub fn secs(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64()
}

/// Default deadline for one task to reach a terminal state.
pub const DEFAULT_TASK_TIMEOUT: Duration = Duration::from_secs(90);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{AgentId, FrameworkId};

    fn offer(host: &str, cpus: f64, mem: f64) -> Offer {
        let scalar = |name: &str, v: f64| Resource {
            name: name.into(),
            r#type: value::Type::Scalar as i32,
            scalar: Some(value::Scalar { value: v }),
            ..Default::default()
        };
        Offer {
            id: OfferId { value: "o1".into() },
            framework_id: FrameworkId { value: "f".into() },
            agent_id: AgentId {
                value: format!("id-{host}"),
            },
            hostname: host.into(),
            resources: vec![scalar("cpus", cpus), scalar("mem", mem)],
            ..Default::default()
        }
    }

    #[test]
    fn resources_parse_like_mesos_execute() {
        assert_eq!(
            parse_resources(DEFAULT_RESOURCES).unwrap(),
            [("cpus".to_string(), 1.0), ("mem".to_string(), 128.0)]
        );
        assert_eq!(parse_resources("cpus(*):0.1, mem:32").unwrap().len(), 2);
        for bad in ["", "cpus", "ports:[31000-31001]", "cpus:-1", "mem:nan"] {
            assert!(parse_resources(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn offers_are_matched_by_agent_and_resources() {
        let o = offer("192.0.2.1", 2.0, 2048.0);
        let want = parse_resources("cpus:1;mem:128").unwrap();
        assert!(fits(&o, &want));
        assert!(!fits(&o, &parse_resources("cpus:3").unwrap()));
        assert!(AgentChoice::Named("192.0.2.1".into()).accepts(&o));
        assert!(AgentChoice::Named("id-192.0.2.1".into()).accepts(&o));
        assert!(!AgentChoice::Named("192.0.2.2".into()).accepts(&o));
        let mut left = o.clone();
        subtract(&mut left, &want);
        subtract(&mut left, &want);
        assert!(!fits(&left, &want));
    }

    #[test]
    fn task_info_is_a_mesos_container_on_the_named_networks() {
        let spec = TaskSpec {
            name: "t1".into(),
            command: "nc -z 10.32.0.2 1080".into(),
            shell: true,
            networks: vec!["weave".into()],
            resources: parse_resources("cpus:0.1;mem:32").unwrap(),
            agent: AgentChoice::Any,
            port_mappings: parse_port_mappings("8080:80, 8053:53/UDP").unwrap(),
            ..Default::default()
        };
        let info = spec.task_info(&offer("h", 1.0, 64.0));
        let pm = &info.container.as_ref().unwrap().network_infos[0].port_mappings;
        assert_eq!(
            pm.iter()
                .map(|m| (m.host_port, m.container_port, m.protocol.as_deref()))
                .collect::<Vec<_>>(),
            [(8080, 80, None), (8053, 53, Some("udp"))]
        );
        assert_eq!(info.task_id.value, "t1");
        assert_eq!(info.agent_id.value, "id-h");
        let c = info.container.unwrap();
        assert_eq!(c.r#type, container_info::Type::Mesos as i32);
        assert_eq!(c.network_infos[0].name.as_deref(), Some("weave"));
        let cmd = info.command.unwrap();
        assert_eq!(
            (cmd.shell, cmd.value.as_deref()),
            (Some(true), Some("nc -z 10.32.0.2 1080"))
        );
        let host = TaskSpec {
            networks: vec![],
            shell: false,
            ..spec
        }
        .task_info(&offer("h", 1.0, 64.0));
        assert!(host.container.is_none());
        assert_eq!(host.command.unwrap().value, None);
    }

    #[test]
    fn image_task_is_a_mesos_container_with_a_docker_image() {
        let spec = TaskSpec {
            name: "img".into(),
            command: "ifconfig".into(),
            shell: true,
            resources: parse_resources("cpus:0.1").unwrap(),
            image: Some("alpine".into()),
            env: vec![("A".into(), "1".into()), ("B".into(), "two words".into())],
            ..Default::default()
        };
        // An image alone makes a ContainerInfo (host network), as in mesos-execute.
        let info = spec.task_info(&offer("h", 1.0, 64.0));
        let c = info.container.as_ref().unwrap();
        assert_eq!(c.r#type, container_info::Type::Mesos as i32);
        assert!(c.network_infos.is_empty());
        let image = c.mesos.as_ref().unwrap().image.as_ref().unwrap();
        assert_eq!(image.r#type, image::Type::Docker as i32);
        assert_eq!(image.docker.as_ref().unwrap().name, "alpine");
        let env = &info.command.as_ref().unwrap().environment.as_ref().unwrap();
        let vars: Vec<(&str, Option<&str>)> = env
            .variables
            .iter()
            .map(|v| (v.name.as_str(), v.value.as_deref()))
            .collect();
        assert_eq!(vars, [("A", Some("1")), ("B", Some("two words"))]);
        // The wire form carries Image.type = DOCKER (2) and docker.name (field 3, then 1).
        let json = crate::proto::encode(&info, crate::proto::Encoding::Json).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["container"]["mesos"]["image"]["type"], "DOCKER");
        assert_eq!(v["container"]["mesos"]["image"]["docker"]["name"], "alpine");
        // --no-shell: no value, so the image's entrypoint runs.
        let entry = TaskSpec {
            shell: false,
            networks: vec!["weave".into()],
            env: vec![],
            ..spec
        }
        .task_info(&offer("h", 1.0, 64.0));
        let cmd = entry.command.unwrap();
        assert_eq!(
            (cmd.shell, cmd.value, cmd.environment),
            (Some(false), None, None)
        );
        let c = entry.container.unwrap();
        assert_eq!(c.network_infos[0].name.as_deref(), Some("weave"));
        assert!(c.mesos.is_some());
    }

    #[test]
    fn port_mappings_parse_or_say_why_not() {
        assert_eq!(parse_port_mappings("").unwrap(), []);
        for (bad, why) in [
            ("8080", "is not HOST:CONTAINER[/PROTO]"),
            ("0:80", "has a port outside 1-65535"),
            ("8080:70000", "has a port outside 1-65535"),
            ("8080:80/sctp", "has a protocol other than tcp or udp"),
        ] {
            let e = parse_port_mappings(bad).unwrap_err();
            assert_eq!(
                e.message(),
                format!("parse port mappings {bad:?}: {bad:?} {why}")
            );
        }
    }
}
