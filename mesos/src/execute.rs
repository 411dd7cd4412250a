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
    pub docker_image: Option<String>,
    pub agent: Option<String>,
    pub kill_after: Option<Duration>,
    pub timeout: Duration,
    /// `HOST:CONTAINER[/PROTO],...` for every network (our extension of mesos-execute).
    pub port_mappings: Option<String>,
}

impl ExecuteOptions {
    /// The task, or the usage error mesos-execute would give.
    pub fn task_spec(&self) -> Result<TaskSpec> {
        let usage = |m: String| Error::new(ErrorKind::InvalidConfig, m);
        if let Some(image) = &self.docker_image {
            return Err(usage(format!(
                "--docker_image={image}: container images are not supported by weave-mesos \
                 execute (the Mesos fixture has no image store); run the command on the \
                 agent's filesystem instead"
            )));
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
            network_labels: vec![],
        })
    }
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
    let deadline = Instant::now() + opts.timeout;
    let terminal = |d: &Driver| d.task(&name).is_some_and(|t| t.is_terminal());
    let running = |d: &Driver| {
        d.task(&name)
            .is_some_and(|t| t.reached(TaskState::TaskRunning).is_some())
    };
    let flush = |driver: &mut Driver, print: &mut dyn FnMut(&str)| {
        for p in driver.drain_progress() {
            for l in progress_lines(&p) {
                print(&l);
            }
        }
    };

    // Until the end, or (with --kill_after) until TASK_RUNNING.
    let r = driver.run_until(deadline, &what, |d| {
        terminal(d) || (opts.kill_after.is_some() && running(d))
    });
    flush(driver, print);
    r?;
    if let (Some(after), false) = (opts.kill_after, terminal(driver)) {
        let kill_at = Instant::now() + after;
        match driver.run_until(kill_at.min(deadline), &what, terminal) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::TryAgainLater && Instant::now() < deadline => {}
            Err(e) => return Err(e),
        }
        flush(driver, print);
        if !terminal(driver) {
            driver.kill(&name)?;
            flush(driver, print);
        }
    }
    let r = driver.run_until(deadline, &what, terminal);
    flush(driver, print);
    r?;
    Ok(driver
        .task(&name)
        .and_then(|t| t.last().cloned())
        .expect("terminal task has a status"))
}

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

    #[test]
    fn docker_image_is_refused_clearly() {
        let opts = ExecuteOptions {
            name: "t".into(),
            command: Some("true".into()),
            shell: true,
            networks: vec!["weave,other".into()],
            resources: "cpus:0.1;mem:32".into(),
            docker_image: Some("ubuntu".into()),
            agent: None,
            kill_after: None,
            timeout: Duration::from_secs(1),
            port_mappings: Some("8080:80/tcp".into()),
        };
        let e = opts.task_spec().unwrap_err();
        assert!(
            e.to_string().contains("container images are not supported"),
            "{e}"
        );
        let spec = ExecuteOptions {
            docker_image: None,
            ..opts.clone()
        }
        .task_spec()
        .unwrap();
        assert_eq!(spec.networks, ["weave", "other"]);
        assert_eq!(spec.port_mappings[0].host_port, 8080);
        let e = ExecuteOptions {
            docker_image: None,
            command: None,
            ..opts
        }
        .task_spec()
        .unwrap_err();
        assert!(e.to_string().contains("--command is required"), "{e}");
    }
}
