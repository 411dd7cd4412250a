//! The scenario on a real Mesos cluster: agents from GET_AGENTS, tasks through the v1
//! scheduler API (one framework for the whole run), listener IPs from the operator API's
//! GET_TASKS (`statuses[].container_status.network_infos[].ip_addresses`, where the CNI
//! isolator reports what our plugin returned as `ip4`).

use crate::driver::{AgentChoice, Driver, TaskSpec};
use crate::operator::{task_ips, OperatorClient};
use crate::proto::v1::TaskState;
use crate::scenario::{AgentRef, Cluster, ProbeOutcome};
use crate::scheduler::{framework_info, SchedulerClient};
use crate::{Error, ErrorKind, Result};
use std::time::{Duration, Instant};

/// Resources of each scenario task: small, so many fit on one agent.
const TASK_RESOURCES: &str = "cpus:0.1;mem:32";

/// A connected scenario run against one master.
pub struct MesosCluster {
    operator: OperatorClient,
    driver: Driver,
    agents: Vec<AgentRef>,
    network: String,
    listeners: Vec<String>,
    run_id: String,
    counter: usize,
    task_timeout: Duration,
    /// Docker image every scenario task runs in (`None`: the agent's filesystem).
    image: Option<String>,
}

impl MesosCluster {
    /// Waits (until `deadline`) for at least `min_agents` active agents, then subscribes.
    pub fn connect(
        operator: OperatorClient,
        scheduler: SchedulerClient,
        network: &str,
        min_agents: usize,
        deadline: Instant,
    ) -> Result<MesosCluster> {
        let agents = loop {
            let active: Vec<_> = operator
                .get_agents()?
                .agents
                .into_iter()
                .filter(|a| a.active)
                .map(|a| a.agent_info)
                .collect();
            // Several agents on one host (the fixture, docker-compose) share a hostname:
            // the report then names them host:port.
            let shared = |h: &str| active.iter().filter(|a| a.hostname == h).count() > 1;
            let found: Vec<AgentRef> = active
                .iter()
                .map(|a| AgentRef {
                    id: a.id.as_ref().map(|i| i.value.clone()).unwrap_or_default(),
                    hostname: if shared(&a.hostname) {
                        format!("{}:{}", a.hostname, a.port.unwrap_or(5051))
                    } else {
                        a.hostname.clone()
                    },
                })
                .collect();
            if found.len() >= min_agents.max(1) {
                break found;
            }
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::TryAgainLater,
                    format!(
                        "wait for {min_agents} agents: only {} registered",
                        found.len()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        let session = scheduler.subscribe(framework_info("weave-mesos scenario"), deadline)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Ok(MesosCluster {
            operator,
            driver: Driver::new(session),
            agents,
            network: network.to_string(),
            listeners: Vec::new(),
            run_id: format!("{:x}{:x}", std::process::id(), nanos),
            counter: 0,
            task_timeout: crate::driver::DEFAULT_TASK_TIMEOUT,
            image: None,
        })
    }

    /// Runs listeners and probes in Docker image `image` (the agents need
    /// `--image_providers=docker`; the image needs `nc` with `-k`, e.g. OpenBSD netcat).
    pub fn with_image(mut self, image: Option<String>) -> MesosCluster {
        self.image = image;
        self
    }

    pub fn framework_id(&self) -> &str {
        self.driver.session().framework_id()
    }

    fn spec(&mut self, role: &str, agent: &AgentRef, command: String) -> Result<TaskSpec> {
        self.counter += 1;
        Ok(TaskSpec {
            name: format!("weave-{role}-{}-{}", self.run_id, self.counter),
            command,
            shell: true,
            networks: vec![self.network.clone()],
            resources: crate::driver::parse_resources(TASK_RESOURCES)?,
            agent: AgentChoice::Named(agent.id.clone()),
            image: self.image.clone(),
            ..Default::default()
        })
    }

    /// The task's IP on our network as GET_TASKS reports it, polled until `deadline`.
    fn task_ip(&self, task: &str, deadline: Instant) -> Result<String> {
        loop {
            let tasks = self.operator.get_tasks()?;
            let ip = tasks
                .tasks
                .iter()
                .filter(|t| t.task_id.value == task)
                .flat_map(task_ips)
                .find(|(net, _)| net.is_empty() || *net == self.network)
                .map(|(_, ip)| ip);
            if let Some(ip) = ip {
                return Ok(ip);
            }
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "read IP of task {task:?} from GET_TASKS: no ip_addresses on network {:?} (does the plugin answer with ip4?)",
                        self.network
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Cluster for MesosCluster {
    fn kind(&self) -> &'static str {
        "mesos"
    }

    fn agents(&self) -> Vec<AgentRef> {
        self.agents.clone()
    }

    fn start_listener(&mut self, agent: &AgentRef, port: u16) -> Result<String> {
        let spec = self.spec("listener", agent, format!("nc -k -l 0.0.0.0 {port}"))?;
        let name = spec.name.clone();
        self.driver.launch(spec)?;
        self.listeners.push(name.clone());
        let deadline = Instant::now() + self.task_timeout;
        let t = self
            .driver
            .wait_for(&name, TaskState::TaskRunning, deadline)?;
        if t.is_terminal() {
            let s = t.last().expect("terminal task has a status");
            return Err(Error::new(
                ErrorKind::Router,
                format!(
                    "start listener on {}: {} {}",
                    agent.hostname,
                    crate::operator::task_state_name(s.state),
                    s.message.clone().unwrap_or_default()
                ),
            ));
        }
        self.task_ip(&name, deadline)
    }

    fn probe_all(&mut self, probes: &[(AgentRef, String, u16)]) -> Result<Vec<ProbeOutcome>> {
        let mut names = Vec::new();
        for (agent, ip, port) in probes {
            let spec = self.spec("probe", agent, format!("nc -z -w 3 {ip} {port}"))?;
            names.push(spec.name.clone());
            self.driver.launch(spec)?;
        }
        let deadline = Instant::now() + self.task_timeout;
        self.driver.run_until(deadline, "run probes", |d| {
            names
                .iter()
                .all(|n| d.task(n).is_some_and(|t| t.is_terminal()))
        })?;
        Ok(names
            .iter()
            .map(|n| {
                let t = self.driver.task(n).expect("probe ran");
                let last = t.last().expect("terminal task has a status");
                let end = t.updates.last().map(|(at, _)| *at);
                let start = t.reached(TaskState::TaskRunning).unwrap_or(t.submitted);
                ProbeOutcome {
                    connected: last.state == TaskState::TaskFinished as i32,
                    detail: format!(
                        "{}{}",
                        crate::operator::task_state_name(last.state),
                        last.message
                            .as_ref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    ),
                    latency: end.map(|e| e.saturating_duration_since(start)),
                }
            })
            .collect())
    }

    fn cleanup(&mut self) -> Result<()> {
        let listeners = std::mem::take(&mut self.listeners);
        for l in &listeners {
            if self.driver.task(l).is_some_and(|t| !t.is_terminal()) {
                self.driver.kill(l)?;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let killed = self.driver.run_until(deadline, "kill listeners", |d| {
            listeners
                .iter()
                .all(|n| d.task(n).is_none_or(|t| t.is_terminal()))
        });
        let torn = self.driver.teardown();
        killed.and(torn)
    }
}
