//! `weave-mesos`: agent flags and host check for running weave under Mesos' `network/cni`
//! isolator, and a read-only view of a cluster through the master operator API v1.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use weave_mesos::check::{check_host, DEFAULT_ROUTER_STATUS_URL};
use weave_mesos::flags::{agent_flags, render, AgentFlagsConfig, FlagFormat};
use weave_mesos::http::Connector;
use weave_mesos::operator::{event_type_name, task_ips, task_state_name, OperatorClient};
use weave_mesos::proto::v1::master::{event, Event};
use weave_mesos::proto::{self, Encoding};
use weave_mesos::Result;

#[derive(Parser)]
#[command(
    name = "weave-mesos",
    version,
    about = "Run weave under Apache Mesos (network/cni)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the agent flags that enable weave through the network/cni isolator.
    AgentFlags(AgentFlagsArgs),
    /// List the agents registered with the master: id, hostname, pid, version.
    Agents(MasterArgs),
    /// List tasks: id, state, agent, container IPs reported by the CNI isolator.
    Tasks(MasterArgs),
    /// Print the master's GET_STATE as JSON.
    State(MasterArgs),
    /// Print the operator event stream (SUBSCRIBED, HEARTBEAT, TASK_UPDATED, ...).
    Subscribe {
        #[command(flatten)]
        master: MasterArgs,
        /// Stop after this many events.
        #[arg(long)]
        max_events: Option<usize>,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 60)]
        duration: u64,
    },
}

#[derive(Args)]
struct AgentFlagsArgs {
    #[arg(long, value_enum, default_value = "flags")]
    format: FlagFormat,
    /// Isolators (comma-separated, repeatable); network/cni is always added.
    #[arg(long, default_value = "filesystem/linux,network/cni")]
    isolation: Vec<String>,
    #[arg(long, default_value = weave_mesos::flags::DEFAULT_CNI_CONFIG_DIR)]
    cni_config_dir: PathBuf,
    /// Colon-separated plugin search path.
    #[arg(long, default_value = weave_mesos::flags::DEFAULT_CNI_PLUGINS_DIR)]
    cni_plugins_dir: String,
    /// Keep CNI state in work_dir so DEL runs after a reboot.
    #[arg(long)]
    root_dir_persist: bool,
    #[arg(long, default_value = "linux")]
    launcher: String,
    /// Allow container images (adds docker/runtime and --image_providers=docker).
    #[arg(long)]
    images: bool,
    /// Also check this host: plugin, config and router; exit 1 if anything is missing.
    #[arg(long)]
    check: bool,
    #[arg(long, default_value = DEFAULT_ROUTER_STATUS_URL)]
    router_status_url: String,
}

#[derive(Args)]
struct MasterArgs {
    /// Master address: http://host:port, host:port or host.
    #[arg(long, env = "MESOS_MASTER_URL")]
    master: String,
    /// Speak JSON instead of protobuf.
    #[arg(long)]
    json: bool,
    #[arg(long, requires = "secret")]
    principal: Option<String>,
    #[arg(
        long,
        requires = "principal",
        env = "MESOS_SECRET",
        hide_env_values = true
    )]
    secret: Option<String>,
    /// Deadline of each call, in seconds.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Connect from this network namespace (`ip netns` name or path).
    #[arg(long)]
    netns: Option<String>,
}

impl MasterArgs {
    fn client(&self) -> Result<OperatorClient> {
        let mut c = OperatorClient::new(&self.master)?
            .with_timeout(Duration::from_secs(self.timeout))
            .with_encoding(if self.json {
                Encoding::Json
            } else {
                Encoding::Protobuf
            });
        if let (Some(p), Some(s)) = (&self.principal, &self.secret) {
            c = c.with_basic_auth(p, s);
        }
        if let Some(ns) = &self.netns {
            c = c.with_connector(Connector::for_netns_name(ns));
        }
        Ok(c)
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weave-mesos: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::AgentFlags(a) => agent_flags_cmd(a),
        Command::Agents(m) => {
            let agents = m.client()?.get_agents()?;
            println!("{:<44} {:<20} {:<28} VERSION", "ID", "HOSTNAME", "PID");
            for a in agents.agents {
                let id = a
                    .agent_info
                    .id
                    .as_ref()
                    .map(|i| i.value.as_str())
                    .unwrap_or("-");
                let pid = a.pid.as_deref().unwrap_or("-");
                println!(
                    "{id:<44} {:<20} {pid:<28} {}",
                    a.agent_info.hostname, a.version
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Tasks(m) => {
            let client = m.client()?;
            let tasks = client.get_tasks()?;
            let agents = client.get_agents()?;
            let hostname = |id: &str| {
                agents
                    .agents
                    .iter()
                    .find(|a| a.agent_info.id.as_ref().is_some_and(|i| i.value == id))
                    .map(|a| a.agent_info.hostname.clone())
                    .unwrap_or_else(|| id.to_string())
            };
            println!("{:<32} {:<16} {:<20} IPS", "TASK", "STATE", "AGENT");
            for t in tasks
                .tasks
                .iter()
                .chain(&tasks.completed_tasks)
                .chain(&tasks.unreachable_tasks)
            {
                let ips: Vec<String> = task_ips(t)
                    .into_iter()
                    .map(|(n, ip)| {
                        if n.is_empty() {
                            ip
                        } else {
                            format!("{n}={ip}")
                        }
                    })
                    .collect();
                let ips = if ips.is_empty() {
                    "-".to_string()
                } else {
                    ips.join(",")
                };
                println!(
                    "{:<32} {:<16} {:<20} {ips}",
                    t.task_id.value,
                    task_state_name(t.state),
                    hostname(&t.agent_id.value)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::State(m) => {
            let state = m.client()?.get_state()?;
            let json = proto::encode(&state, Encoding::Json)?;
            println!("{}", String::from_utf8_lossy(&json));
            Ok(ExitCode::SUCCESS)
        }
        Command::Subscribe {
            master,
            max_events,
            duration,
        } => {
            let deadline = Instant::now() + Duration::from_secs(duration);
            let stream = master.client()?.subscribe(deadline)?;
            for (n, event) in stream.enumerate() {
                match event {
                    Ok(e) => println!("{}", describe(&e)),
                    // Reaching --duration is the normal end of a bounded watch.
                    Err(_) if Instant::now() >= deadline => break,
                    Err(e) => return Err(e),
                }
                if max_events.is_some_and(|m| n + 1 >= m) {
                    break;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn agent_flags_cmd(a: AgentFlagsArgs) -> Result<ExitCode> {
    let cfg = AgentFlagsConfig {
        isolation: a.isolation,
        cni_config_dir: a.cni_config_dir,
        cni_plugins_dir: a.cni_plugins_dir,
        root_dir_persist: a.root_dir_persist,
        launcher: a.launcher,
        images: a.images,
    };
    print!("{}", render(&agent_flags(&cfg)?, a.format));
    if !a.check {
        return Ok(ExitCode::SUCCESS);
    }
    let report = check_host(&cfg, &a.router_status_url, Duration::from_secs(2));
    eprint!("{report}");
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One line per event: its type and what it is about.
fn describe(e: &Event) -> String {
    let name = event_type_name(e);
    let detail = match e.r#type.and_then(|t| event::Type::try_from(t).ok()) {
        Some(event::Type::Subscribed) => e.subscribed.as_ref().map(|s| {
            let state = s.get_state.as_ref();
            let agents = state
                .and_then(|s| s.get_agents.as_ref())
                .map_or(0, |a| a.agents.len());
            let tasks = state
                .and_then(|s| s.get_tasks.as_ref())
                .map_or(0, |t| t.tasks.len());
            format!(
                "agents={agents} tasks={tasks} heartbeat={}s",
                s.heartbeat_interval_seconds.unwrap_or(0.0)
            )
        }),
        Some(event::Type::TaskAdded) => e.task_added.as_ref().map(|t| {
            format!(
                "task={} state={}",
                t.task.task_id.value,
                task_state_name(t.task.state)
            )
        }),
        Some(event::Type::TaskUpdated) => e.task_updated.as_ref().map(|t| {
            format!(
                "task={} state={}",
                t.status.task_id.value,
                task_state_name(t.state)
            )
        }),
        Some(event::Type::AgentAdded) => e.agent_added.as_ref().map(|a| {
            format!(
                "agent={} pid={}",
                a.agent
                    .agent_info
                    .id
                    .as_ref()
                    .map_or("-", |i| i.value.as_str()),
                a.agent.pid.as_deref().unwrap_or("-")
            )
        }),
        Some(event::Type::AgentRemoved) => e
            .agent_removed
            .as_ref()
            .map(|a| format!("agent={}", a.agent_id.value)),
        _ => None,
    };
    match detail {
        Some(d) => format!("{name} {d}"),
        None => name.to_string(),
    }
}
