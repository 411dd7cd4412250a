//! `weave-mesos execute`: mesos-execute's flags and stdout lines, for clusters without the
//! binary, but exiting non-zero unless the task finished. Also the parser for the real
//! mesos-execute's stdout: it exits 0 even when its task failed, so the final state must be
//! read from what it printed.

use crate::driver::{AgentChoice, Driver, Progress, TaskSpec};
use crate::operator::task_state_name;
use crate::proto::v1::{task_status, TaskState, TaskStatus};
use crate::{Error, ErrorKind, Result};
use std::time::{Duration, Instant};

/// mesos-execute's stdout lines for one step.
pub fn progress_lines(p: &Progress) -> Vec<String> {
    match p {
        Progress::Submitted { task, agent_id } => {
            vec![format!("Submitted task '{task}' to agent '{agent_id}'")]
        }
        Progress::Killed { task, agent_id } => {
            vec![format!("Asked to kill task '{task}' on agent '{agent_id}'")]
        }
        Progress::Update(s) => status_lines(s),
    }
}

/// `Received status update TASK_X for task 'id'` plus message/source/reason lines.
pub fn status_lines(s: &TaskStatus) -> Vec<String> {
    let mut out = vec![format!(
        "Received status update {} for task '{}'",
        task_state_name(s.state),
        s.task_id.value
    )];
    if let Some(m) = &s.message {
        out.push(format!("  message: '{m}'"));
    }
    if let Some(src) = s.source {
        let name = task_status::Source::try_from(src)
            .map(|x| x.as_str_name().to_string())
            .unwrap_or_else(|_| format!("SOURCE_{src}"));
        out.push(format!("  source: {name}"));
    }
    if let Some(r) = s.reason {
        let name = task_status::Reason::try_from(r)
            .map(|x| x.as_str_name().to_string())
            .unwrap_or_else(|_| format!("REASON_{r}"));
        out.push(format!("  reason: {name}"));
    }
    if let Some(h) = s.healthy {
        out.push(format!("  healthy?: {}", u8::from(h)));
    }
    // Not a mesos-execute line: the container's addresses as the agent reports them
    // (`container_status.network_infos`), the "IP from the logs" an operator probes.
    for ni in s.container_status.iter().flat_map(|c| &c.network_infos) {
        let network = ni.name.as_deref().unwrap_or("");
        for ip in ni
            .ip_addresses
            .iter()
            .filter_map(|a| a.ip_address.as_deref())
        {
            out.push(format!("  ip_address: {ip} (network '{network}')"));
        }
    }
    out
}

/// What a mesos-execute run printed, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecuteOutput {
    pub framework_id: Option<String>,
    /// `(task, agent_id)` from `Submitted task ...`.
    pub submitted: Option<(String, String)>,
    /// Every update: `(state name, task id, message)`.
    pub updates: Vec<(String, String, Option<String>)>,
    /// The first terminal state, where mesos-execute stops.
    pub terminal: Option<String>,
    /// `Received an ERROR event: ...`.
    pub error: Option<String>,
    /// `(network, ip)` from our `  ip_address:` lines, first seen first, without repeats.
    pub ips: Vec<(String, String)>,
}

impl ExecuteOutput {
    /// True only for TASK_FINISHED: the exit status mesos-execute does not give.
    pub fn succeeded(&self) -> bool {
        self.terminal.as_deref() == Some("TASK_FINISHED") && self.error.is_none()
    }
}

/// Parses mesos-execute's stdout (log lines on stderr are not needed; others are skipped).
pub fn parse_execute_output(text: &str) -> ExecuteOutput {
    let mut out = ExecuteOutput::default();
    let quoted = |s: &str| s.trim().trim_matches('\'').to_string();
    for line in text.lines() {
        if let Some(id) = line.strip_prefix("Subscribed with ID ") {
            out.framework_id = Some(id.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("Submitted task ") {
            if let Some((task, agent)) = rest.split_once(" to agent ") {
                out.submitted = Some((quoted(task), quoted(agent)));
            }
        } else if let Some(rest) = line.strip_prefix("Received status update ") {
            if let Some((state, task)) = rest.split_once(" for task ") {
                out.updates
                    .push((state.trim().to_string(), quoted(task), None));
                let terminal =
                    TaskState::from_str_name(state.trim()).is_some_and(crate::driver::is_terminal);
                if terminal && out.terminal.is_none() {
                    out.terminal = Some(state.trim().to_string());
                }
            }
        } else if let Some(m) = line.strip_prefix("  message: ") {
            if let Some(last) = out.updates.last_mut() {
                last.2 = Some(quoted(m));
            }
        } else if let Some(e) = line.strip_prefix("Received an ERROR event: ") {
            out.error = Some(e.to_string());
        } else if let Some(rest) = line.strip_prefix("  ip_address: ") {
            if let Some((ip, net)) = rest.split_once(" (network ") {
                let pair = (quoted(net.trim_end_matches(')')), ip.trim().to_string());
                if !out.ips.contains(&pair) {
                    out.ips.push(pair);
                }
            }
        }
    }
    out
}

/// mesos-execute's options that `weave-mesos execute` takes.
#[derive(Debug, Clone)]
pub struct ExecuteOptions {
    pub name: String,
    pub command: Option<String>,
    pub shell: bool,
    pub networks: Vec<String>,
    pub resources: String,
    /// `--docker_image`: the task runs in this image (Mesos containerizer, `docker` provider).
    pub docker_image: Option<String>,
    /// `--appc_image`: refused with a message naming what is supported.
    pub appc_image: Option<String>,
    /// `--containerizer`: `mesos` (mesos-execute's default) or, refused, `docker`.
    pub containerizer: Option<String>,
    /// `--env`: a JSON object of strings, or a file (`file://PATH` or a path) holding one.
    pub env: Option<String>,
    pub agent: Option<String>,
    pub kill_after: Option<Duration>,
    /// Bound on the whole run; `None` waits as long as the task runs (mesos-execute).
    pub timeout: Option<Duration>,
    /// Bound on reaching TASK_RUNNING or an end ([`DEFAULT_LAUNCH_TIMEOUT`]).
    pub launch_timeout: Duration,
    /// `HOST:CONTAINER[/PROTO],...` for every network (our extension of mesos-execute).
    pub port_mappings: Option<String>,
}

impl Default for ExecuteOptions {
    /// mesos-execute's defaults (`--shell`, `--resources=cpus:1;mem:128`), no name yet.
    fn default() -> Self {
        ExecuteOptions {
            name: String::new(),
            command: None,
            shell: true,
            networks: Vec::new(),
            resources: crate::driver::DEFAULT_RESOURCES.to_string(),
            docker_image: None,
            appc_image: None,
            containerizer: None,
            env: None,
            agent: None,
            kill_after: None,
            timeout: None,
            launch_timeout: DEFAULT_LAUNCH_TIMEOUT,
            port_mappings: None,
        }
    }
}

impl ExecuteOptions {
    /// The task, or the usage error mesos-execute would give.
    pub fn task_spec(&self) -> Result<TaskSpec> {
        let usage = |m: String| Error::new(ErrorKind::InvalidConfig, m);
        match self.containerizer.as_deref() {
            None | Some("mesos") => {}
            Some("docker") => {
                return Err(usage(
                    "--containerizer=docker: the Docker containerizer is not supported: weave \
                     attaches containers through the Mesos containerizer's network/cni \
                     isolator; use --containerizer=mesos (the default) with --docker_image"
                        .into(),
                ))
            }
            Some(other) => {
                return Err(usage(format!(
                    "--containerizer={other}: unknown containerizer (supported: mesos)"
                )))
            }
        }
        if let Some(image) = &self.appc_image {
            return Err(usage(format!(
                "--appc_image={image}: AppC images are not supported: use --docker_image=NAME \
                 (the Mesos containerizer with --image_providers=docker)"
            )));
        }
        if let Some(image) = &self.docker_image {
            if image.trim().is_empty() {
                return Err(usage("--docker_image: empty image name".into()));
            }
        }
        if self.shell && self.command.as_deref().unwrap_or("").is_empty() {
            return Err(usage("--command is required when --shell is true".into()));
        }
        Ok(TaskSpec {
            name: self.name.clone(),
            command: self.command.clone().unwrap_or_default(),
            shell: self.shell,
            networks: self
                .networks
                .iter()
                .flat_map(|n| n.split(','))
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect(),
            resources: crate::driver::parse_resources(&self.resources)?,
            agent: match &self.agent {
                Some(a) => AgentChoice::Named(a.clone()),
                None => AgentChoice::Any,
            },
            port_mappings: match &self.port_mappings {
                Some(p) => crate::driver::parse_port_mappings(p)?,
                None => Vec::new(),
            },
            image: self.docker_image.clone(),
            env: match &self.env {
                Some(e) => parse_env(e)?,
                None => Vec::new(),
            },
        })
    }
}

/// mesos-execute's `--env`: a JSON object whose values are strings, given inline or as a
/// file (`file://PATH`, or a path to an existing file). Sorted by name.
pub fn parse_env(arg: &str) -> Result<Vec<(String, String)>> {
    let text = match arg.trim_start().strip_prefix("file://") {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Error::new(ErrorKind::InvalidConfig, format!("read --env {path}: {e}")))?,
        None if !arg.trim_start().starts_with('{') && std::path::Path::new(arg).is_file() => {
            std::fs::read_to_string(arg).map_err(|e| {
                Error::new(ErrorKind::InvalidConfig, format!("read --env {arg}: {e}"))
            })?
        }
        None => arg.to_string(),
    };
    let bad = |why: String| Error::new(ErrorKind::InvalidConfig, format!("parse --env: {why}"));
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        bad(format!(
            "not JSON ({e}); expected {{\"NAME\": \"value\", ...}}"
        ))
    })?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad("expected a JSON object of strings".into()))?;
    obj.iter()
        .map(|(k, v)| match v.as_str() {
            Some(s) => Ok((k.clone(), s.to_string())),
            None => Err(bad(format!("value of {k:?} is not a string: {v}"))),
        })
        .collect()
}

/// Runs one task to its end, printing mesos-execute's lines through `print`. Returns its
/// terminal status. The framework is torn down before returning, even on error.
pub fn execute(
    driver: &mut Driver,
    opts: &ExecuteOptions,
    print: &mut dyn FnMut(&str),
) -> Result<TaskStatus> {
    let result = run_one(driver, opts, print);
    let _ = driver.teardown();
    result
}

fn run_one(
    driver: &mut Driver,
    opts: &ExecuteOptions,
    print: &mut dyn FnMut(&str),
) -> Result<TaskStatus> {
    let spec = opts.task_spec()?;
    let name = spec.name.clone();
    let what = format!("run task {name:?}");
    print(&format!(
        "Subscribed with ID {}",
        driver.session().framework_id()
    ));
    driver.launch(spec)?;
    let started = Instant::now();
    let deadline = started + opts.timeout.unwrap_or(NO_LIMIT);
    let terminal = |d: &Driver| d.task(&name).is_some_and(|t| t.is_terminal());
    let running = |d: &Driver| {
        d.task(&name)
            .is_some_and(|t| t.reached(TaskState::TaskRunning).is_some())
    };
    // Handles events until `stop` or `until`, printing every step as it happens (a
    // long-running task's IP must show while it runs).
    let mut wait = |driver: &mut Driver, until: Instant, stop: &dyn Fn(&Driver) -> bool| loop {
        let r = driver.run_until(until, &what, |d| stop(d) || d.has_progress());
        for p in driver.drain_progress() {
            for l in progress_lines(&p) {
                print(&l);
            }
        }
        r?;
        if stop(driver) {
            return Ok::<(), Error>(());
        }
    };

    // Until TASK_RUNNING (bounded by the launch timeout) or the end.
    let launch_deadline = deadline.min(started + opts.launch_timeout);
    wait(driver, launch_deadline, &|d| terminal(d) || running(d))?;
    if let (Some(after), false) = (opts.kill_after, terminal(driver)) {
        let kill_at = Instant::now() + after;
        match wait(driver, kill_at.min(deadline), &terminal) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::TryAgainLater && Instant::now() < deadline => {}
            Err(e) => return Err(e),
        }
        if !terminal(driver) {
            driver.kill(&name)?;
        }
    }
    wait(driver, deadline, &terminal)?;
    Ok(driver
        .task(&name)
        .and_then(|t| t.last().cloned())
        .expect("terminal task has a status"))
}

/// "No deadline" for a task that may run until it is killed, as with mesos-execute.
const NO_LIMIT: Duration = Duration::from_secs(100 * 365 * 86400);
/// Default bound on reaching TASK_RUNNING (offer, image provisioning, CNI ADD).
pub const DEFAULT_LAUNCH_TIMEOUT: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_mesos_execute_output() {
        let text = "I1127 12:00:00 scheduler.cpp:189] Version: 1.11.0\n\
            Subscribed with ID 1172e898-0000\n\
            Submitted task 'probe' to agent '1172e898-S0'\n\
            Received status update TASK_STARTING for task 'probe'\n  source: SOURCE_EXECUTOR\n\
            Received status update TASK_RUNNING for task 'probe'\n  source: SOURCE_EXECUTOR\n\
            Received status update TASK_FAILED for task 'probe'\n  message: 'Command exited with status 1'\n  source: SOURCE_EXECUTOR\n";
        let o = parse_execute_output(text);
        assert_eq!(o.framework_id.as_deref(), Some("1172e898-0000"));
        assert_eq!(
            o.submitted,
            Some(("probe".to_string(), "1172e898-S0".to_string()))
        );
        assert_eq!(o.updates.len(), 3);
        assert_eq!(
            o.updates[2].2.as_deref(),
            Some("Command exited with status 1")
        );
        assert_eq!(o.terminal.as_deref(), Some("TASK_FAILED"));
        assert!(!o.succeeded());
        let ok = parse_execute_output(
            "Received status update TASK_FINISHED for task 't'\nReceived status update TASK_FAILED for task 't'\n",
        );
        assert_eq!(ok.terminal.as_deref(), Some("TASK_FINISHED"));
        assert!(ok.succeeded());
        assert_eq!(parse_execute_output("").terminal, None);
    }

    #[test]
    fn status_lines_match_mesos_execute() {
        let s = TaskStatus {
            task_id: crate::proto::v1::TaskId { value: "t".into() },
            state: TaskState::TaskFailed as i32,
            message: Some("Failed to launch container".into()),
            source: Some(task_status::Source::Agent as i32),
            reason: Some(task_status::Reason::ContainerLaunchFailed as i32),
            ..Default::default()
        };
        assert_eq!(
            status_lines(&s),
            [
                "Received status update TASK_FAILED for task 't'",
                "  message: 'Failed to launch container'",
                "  source: SOURCE_AGENT",
                "  reason: REASON_CONTAINER_LAUNCH_FAILED"
            ]
        );
        // Our own lines parse back.
        let o = parse_execute_output(&status_lines(&s).join("\n"));
        assert_eq!(o.terminal.as_deref(), Some("TASK_FAILED"));
    }

    fn opts() -> ExecuteOptions {
        ExecuteOptions {
            name: "t".into(),
            command: Some("true".into()),
            shell: true,
            networks: vec!["weave,other".into()],
            resources: "cpus:0.1;mem:32".into(),
            timeout: Some(Duration::from_secs(1)),
            port_mappings: Some("8080:80/tcp".into()),
            ..Default::default()
        }
    }

    #[test]
    fn docker_image_makes_an_image_task() {
        let spec = ExecuteOptions {
            docker_image: Some("alpine".into()),
            env: Some(r#"{"B":"2","A":"x y"}"#.into()),
            ..opts()
        }
        .task_spec()
        .unwrap();
        assert_eq!(spec.image.as_deref(), Some("alpine"));
        assert_eq!(spec.networks, ["weave", "other"]);
        assert_eq!(spec.port_mappings[0].host_port, 8080);
        assert_eq!(
            spec.env,
            [("A".into(), "x y".into()), ("B".into(), "2".into())]
        );
        // --no-shell needs no --command: the image's entrypoint runs.
        let entry = ExecuteOptions {
            docker_image: Some("alpine".into()),
            command: None,
            shell: false,
            ..opts()
        }
        .task_spec()
        .unwrap();
        assert!(!entry.shell);
        let e = ExecuteOptions {
            command: None,
            ..opts()
        }
        .task_spec()
        .unwrap_err();
        assert!(e.to_string().contains("--command is required"), "{e}");
    }

    #[test]
    fn unsupported_image_kinds_are_refused_clearly() {
        let cases = [
            (
                ExecuteOptions {
                    appc_image: Some("coreos.com/etcd".into()),
                    ..opts()
                },
                "--appc_image=coreos.com/etcd: AppC images are not supported: use \
                 --docker_image=NAME (the Mesos containerizer with --image_providers=docker)",
            ),
            (
                ExecuteOptions {
                    containerizer: Some("docker".into()),
                    docker_image: Some("alpine".into()),
                    ..opts()
                },
                "--containerizer=docker: the Docker containerizer is not supported: weave \
                 attaches containers through the Mesos containerizer's network/cni isolator; \
                 use --containerizer=mesos (the default) with --docker_image",
            ),
            (
                ExecuteOptions {
                    containerizer: Some("lxc".into()),
                    ..opts()
                },
                "--containerizer=lxc: unknown containerizer (supported: mesos)",
            ),
            (
                ExecuteOptions {
                    docker_image: Some(" ".into()),
                    ..opts()
                },
                "--docker_image: empty image name",
            ),
        ];
        for (o, want) in cases {
            assert_eq!(o.task_spec().unwrap_err().message(), want);
        }
        let mesos = ExecuteOptions {
            containerizer: Some("mesos".into()),
            ..opts()
        };
        assert!(mesos.task_spec().is_ok());
    }

    #[test]
    fn env_is_json_inline_or_in_a_file() {
        assert_eq!(
            parse_env(r#"{"GREETING":"hello weave"}"#).unwrap(),
            [("GREETING".into(), "hello weave".into())]
        );
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("env.json");
        std::fs::write(&f, r#"{"K":"v"}"#).unwrap();
        let want = [("K".to_string(), "v".to_string())];
        assert_eq!(parse_env(f.to_str().unwrap()).unwrap(), want);
        assert_eq!(parse_env(&format!("file://{}", f.display())).unwrap(), want);
        for (bad, why) in [
            ("K=v", "parse --env: not JSON"),
            ("[1]", "parse --env: expected a JSON object of strings"),
            (
                r#"{"N":1}"#,
                "parse --env: value of \"N\" is not a string: 1",
            ),
            ("file:///nonexistent/env", "read --env /nonexistent/env: "),
        ] {
            let e = parse_env(bad).unwrap_err();
            assert!(e.message().starts_with(why), "{bad}: {e}");
        }
    }

    #[test]
    fn task_ips_are_printed_and_parsed_back() {
        use crate::proto::v1::{network_info::IpAddress, ContainerStatus, NetworkInfo};
        let s = TaskStatus {
            task_id: crate::proto::v1::TaskId {
                value: "example".into(),
            },
            state: TaskState::TaskRunning as i32,
            source: Some(task_status::Source::Executor as i32),
            container_status: Some(ContainerStatus {
                network_infos: vec![NetworkInfo {
                    name: Some("weave".into()),
                    ip_addresses: vec![IpAddress {
                        protocol: None,
                        ip_address: Some("10.32.0.5".into()),
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let lines = status_lines(&s);
        assert_eq!(
            lines,
            [
                "Received status update TASK_RUNNING for task 'example'",
                "  source: SOURCE_EXECUTOR",
                "  ip_address: 10.32.0.5 (network 'weave')"
            ]
        );
        let twice = format!("{}\n{}\n", lines.join("\n"), lines.join("\n"));
        let o = parse_execute_output(&twice);
        assert_eq!(o.ips, [("weave".to_string(), "10.32.0.5".to_string())]);
        assert_eq!(o.terminal, None);
    }
}
