//! `weave-mesos`: agent flags and host check for running weave under Mesos' `network/cni`
//! isolator, and a read-only view of a cluster through the master operator API v1.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use weave_mesos::check::{check_host, DEFAULT_ROUTER_STATUS_URL};
use weave_mesos::client::MasterClient;
use weave_mesos::driver::Driver;
use weave_mesos::execute::{execute, ExecuteOptions};
use weave_mesos::flags::{agent_flags, render, AgentFlagsConfig, FlagFormat, ImageFlags};
use weave_mesos::http::Connector;
use weave_mesos::local_cluster::{LocalCluster, LocalOptions};
use weave_mesos::mesos_cluster::MesosCluster;
use weave_mesos::operator::{event_type_name, task_ips, task_state_name, OperatorClient};
use weave_mesos::proto::v1::master::{event, Event};
use weave_mesos::proto::v1::TaskState;
use weave_mesos::proto::{self, Encoding};
use weave_mesos::scenario::{self, Listeners};
use weave_mesos::scheduler::{framework_info, SchedulerClient};
use weave_mesos::{Context, Result};

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
    /// Run one command task like mesos-execute; exit 0 only if it reaches TASK_FINISHED.
    Execute(ExecuteArgs),
    /// Reachability matrix: nc listener tasks on weave, nc -z probes from every agent.
    Scenario(ScenarioArgs),
    /// Read a real mesos-execute's stdout; exit 0 only if its task reached TASK_FINISHED.
    ExecuteStatus,
    /// Keep weaveDNS names for this agent's running tasks (run one per agent, next to its
    /// router): <task>.<framework>.weave.local, or the task's weave.dns.name label.
    DnsSync(DnsSyncArgs),
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
    /// Allow container images: adds docker/runtime, --image_providers=docker and the
    /// image flags below.
    #[arg(long)]
    images: bool,
    /// With --images: --image_provisioner_backend (copy, overlay, bind, aufs).
    #[arg(long, default_value = weave_mesos::flags::DEFAULT_PROVISIONER_BACKEND)]
    image_provisioner_backend: String,
    /// With --images: --docker_registry, a directory of `docker save` tarballs NAME.tar
    /// (scripts/build-image writes one) or a registry URL.
    #[arg(long, default_value = weave_mesos::flags::DEFAULT_DOCKER_REGISTRY)]
    docker_registry: String,
    /// With --images: --docker_store_dir, where unpacked layers are cached.
    #[arg(long, default_value = weave_mesos::flags::DEFAULT_DOCKER_STORE_DIR)]
    docker_store_dir: PathBuf,
    /// Also check this host: plugin, config and router (with --images: registry, store,
    /// tar); exit 1 if anything is missing.
    #[arg(long)]
    check: bool,
    #[arg(long, default_value = DEFAULT_ROUTER_STATUS_URL)]
    router_status_url: String,
}

/// mesos-execute's flags (stout style: `--flag=value`, `--no-shell`).
#[derive(Args)]
struct ExecuteArgs {
    #[command(flatten)]
    master: MasterArgs,
    /// Task name, also used as the task ID.
    #[arg(long)]
    name: String,
    #[arg(long)]
    command: Option<String>,
    /// Run the command through a shell (`--shell=false` or `--no-shell` drops --command).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    shell: bool,
    #[arg(long = "no-shell", conflicts_with = "shell")]
    no_shell: bool,
    /// CNI networks, comma-separated.
    #[arg(long)]
    networks: Vec<String>,
    #[arg(long, default_value = weave_mesos::driver::DEFAULT_RESOURCES)]
    resources: String,
    /// Environment of the command: a JSON object of strings, or a file holding one.
    #[arg(long)]
    env: Option<String>,
    /// Run the task in this Docker image (Mesos containerizer; the agent needs the flags of
    /// `weave-mesos agent-flags --images`). With --no-shell the image's entrypoint runs.
    #[arg(long = "docker_image", alias = "docker-image")]
    docker_image: Option<String>,
    /// Refused with an error: AppC images are not supported.
    #[arg(
        long = "appc_image",
        alias = "appc-image",
        conflicts_with = "docker_image"
    )]
    appc_image: Option<String>,
    /// `mesos` (the default); `docker` is refused with an error.
    #[arg(long)]
    containerizer: Option<String>,
    /// Only accept offers from this agent (hostname or agent ID).
    #[arg(long)]
    agent: Option<String>,
    /// Kill the task this long after TASK_RUNNING (e.g. 10secs, 500ms, 2mins).
    #[arg(long = "kill_after", alias = "kill-after", value_parser = parse_duration)]
    kill_after: Option<Duration>,
    /// Give up (and tear the framework down) after this many seconds; by default a task
    /// that reached TASK_RUNNING is followed until it ends, as mesos-execute does.
    #[arg(long = "task-timeout")]
    task_timeout: Option<u64>,
    /// Give up if the task has neither started nor ended after this many seconds.
    #[arg(long = "launch-timeout", default_value_t = 120)]
    launch_timeout: u64,
    /// Host ports for the task on every network: HOST:CONTAINER[/tcp|udp],... (sets
    /// NetworkInfo.port_mappings; our extension of mesos-execute).
    #[arg(long = "port_mappings", alias = "port-mappings")]
    port_mappings: Option<String>,
}

/// A stout-style duration: `<number><unit>`, unit ns, us, ms, secs, mins, hrs, days
/// (`s`, `m`, `h` accepted too); a bare number is seconds.
fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "" | "s" | "secs" => n,
        "m" | "mins" => n * 60.0,
        "h" | "hrs" => n * 3600.0,
        "days" => n * 86400.0,
        _ => return Err(format!("bad duration unit in {s:?}")),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Args)]
struct ScenarioArgs {
    /// Master address; without it a local cluster of network namespaces is built.
    #[arg(long, env = "MESOS_MASTER_URL")]
    master: Option<String>,
    /// Machine-readable report.
    #[arg(long)]
    json: bool,
    /// Agents needed (Mesos: wait until this many registered; local: how many to build).
    #[arg(long)]
    agents: Option<usize>,
    /// CNI network the tasks join.
    #[arg(long, default_value = "weave")]
    network: String,
    /// Put the only listener on this agent (hostname or ID); default: one on every agent.
    #[arg(long)]
    listener_agent: Option<String>,
    /// Run listeners and probes in this Docker image (needs --master and agents started
    /// with `weave-mesos agent-flags --images`; the image needs OpenBSD-style `nc`).
    #[arg(long = "docker_image", alias = "docker-image")]
    docker_image: Option<String>,
    /// Connect to the master from this network namespace.
    #[arg(long)]
    netns: Option<String>,
    /// Seconds to wait for agents and the subscription.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Local mode: simulated hosts, meshed over an underlay (default: one per agent).
    #[arg(long)]
    hosts: Option<usize>,
    /// Local mode: namespace name prefix.
    #[arg(long, default_value = "wvt-scn")]
    prefix: String,
    /// Local mode: the router binary (default: next to this executable).
    #[arg(long)]
    weaver: Option<PathBuf>,
    /// Local mode: the weave-net plugin (default: next to this executable).
    #[arg(long)]
    plugin: Option<PathBuf>,
}

#[derive(Args)]
struct DnsSyncArgs {
    /// Masters as with --master; several may be given comma-separated (tried in turn).
    #[command(flatten)]
    master: MasterArgs,
    /// The local router's API (host:port).
    #[arg(long, env = "WEAVE_HTTP_ADDR", default_value = weave::DEFAULT_HTTP_ADDR)]
    router: String,
    /// DNS domain the names live under.
    #[arg(long, default_value = weave::dns::DEFAULT_DOMAIN)]
    domain: String,
    /// CNI networks whose task addresses get names (repeatable).
    #[arg(long = "network", default_value = "weave")]
    networks: Vec<String>,
    /// Where the registered names are kept across restarts ("" keeps them in memory).
    #[arg(long, default_value = "/var/lib/weave/dns-sync.json")]
    state_file: PathBuf,
    /// Seconds between re-registering every name (repairs a router that lost them).
    #[arg(long, default_value_t = 60)]
    reassert: u64,
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
    /// PEM file of the CA that signed an `https://` master's certificate (the system's
    /// roots are trusted too).
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
}

impl MasterArgs {
    fn scheduler_client(&self) -> Result<SchedulerClient> {
        self.configure(SchedulerClient::new(&self.master)?)
    }

    fn client(&self) -> Result<OperatorClient> {
        self.configure(OperatorClient::new(&self.master)?)
    }

    /// The flags every master client takes: timeout, encoding, credentials, netns, CA.
    fn configure<K>(&self, c: MasterClient<K>) -> Result<MasterClient<K>> {
        let mut c = c
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
        if let Some(path) = &self.ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("read --ca-cert {}", path.display()))?;
            c = c.with_ca_pem(&pem)?;
        }
        Ok(c)
    }
}

fn dns_sync_cmd(a: DnsSyncArgs) -> Result<ExitCode> {
    use weave_mesos::dns_sync::{SyncConfig, Syncer};
    let masters = a
        .master
        .master
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(|m| a.master.configure(OperatorClient::new(m)?))
        .collect::<Result<Vec<_>>>()?;
    if masters.is_empty() {
        return Err(weave::Error::new(
            weave::ErrorKind::InvalidConfig,
            "--master: no master address",
        ));
    }
    let domain = weave::dns::name::normalize(&a.domain)?;
    let state_file = (!a.state_file.as_os_str().is_empty()).then_some(a.state_file);
    let mut syncer = Syncer::new(SyncConfig {
        masters,
        router: weave::api::Client::new(&a.router),
        domain,
        networks: a.networks,
        state_file,
        reassert: Duration::from_secs(a.reassert.max(1)),
        max_backoff: Duration::from_secs(10),
    })?;
    syncer.run()
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
        Command::DnsSync(a) => dns_sync_cmd(a),
        Command::Execute(a) => execute_cmd(a),
        Command::Scenario(a) => scenario_cmd(a),
        Command::ExecuteStatus => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
            let out = weave_mesos::execute::parse_execute_output(&text);
            println!("{}", out.terminal.as_deref().unwrap_or("NO_TERMINAL_STATE"));
            Ok(if out.succeeded() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
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

fn scenario_cmd(a: ScenarioArgs) -> Result<ExitCode> {
    let listeners = match &a.listener_agent {
        Some(n) => Listeners::On(n.clone()),
        None => Listeners::All,
    };
    let report = match &a.master {
        Some(master) => {
            let connector = a
                .netns
                .as_deref()
                .map_or_else(Connector::direct, Connector::for_netns_name);
            let operator = OperatorClient::new(master)?.with_connector(connector.clone());
            let scheduler = SchedulerClient::new(master)?.with_connector(connector);
            let deadline = Instant::now() + Duration::from_secs(a.timeout);
            let mut cluster = MesosCluster::connect(
                operator,
                scheduler,
                &a.network,
                a.agents.unwrap_or(1),
                deadline,
            )?
            .with_image(a.docker_image.clone());
            scenario::run(&mut cluster, &listeners)
        }
        None if a.docker_image.is_some() => {
            return Err(weave_mesos::Error::new(
                weave_mesos::ErrorKind::InvalidConfig,
                "--docker_image needs --master: the local cluster runs tasks in plain \
                 network namespaces, with no Mesos containerizer to provision an image",
            ))
        }
        None => {
            // Ctrl-C or a kill must not leave the simulated hosts behind.
            let prefix = a.prefix.clone();
            weave_testkit::cleanup::on_signals(move || {
                weave_testkit::ns::sweep(&format!("{prefix}-"));
            });
            let mut opts = LocalOptions::next_to_exe(a.agents.unwrap_or(2), &a.prefix)?;
            if let Some(w) = a.weaver {
                opts.weaver = w;
            }
            if let Some(p) = a.plugin {
                opts.plugin = p;
            }
            if let Some(h) = a.hosts {
                opts.hosts = h;
            }
            let mut cluster = LocalCluster::build(opts)?;
            scenario::run(&mut cluster, &listeners)
        }
    };
    if a.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn execute_cmd(a: ExecuteArgs) -> Result<ExitCode> {
    let opts = ExecuteOptions {
        name: a.name,
        command: a.command,
        shell: a.shell && !a.no_shell,
        networks: a.networks,
        resources: a.resources,
        docker_image: a.docker_image,
        appc_image: a.appc_image,
        containerizer: a.containerizer,
        env: a.env,
        agent: a.agent,
        kill_after: a.kill_after,
        timeout: a.task_timeout.map(Duration::from_secs),
        launch_timeout: Duration::from_secs(a.launch_timeout),
        port_mappings: a.port_mappings,
    };
    // Usage errors before touching the master.
    opts.task_spec()?;
    let client = a.master.scheduler_client()?;
    let session = client.subscribe(
        framework_info("weave-mesos execute"),
        Instant::now() + Duration::from_secs(a.master.timeout.max(1) * 3),
    )?;
    let mut driver = Driver::new(session);
    let status = execute(&mut driver, &opts, &mut |l| println!("{l}"))?;
    Ok(if status.state == TaskState::TaskFinished as i32 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn agent_flags_cmd(a: AgentFlagsArgs) -> Result<ExitCode> {
    let cfg = AgentFlagsConfig {
        isolation: a.isolation,
        cni_config_dir: a.cni_config_dir,
        cni_plugins_dir: a.cni_plugins_dir,
        root_dir_persist: a.root_dir_persist,
        launcher: a.launcher,
        images: a.images.then_some(ImageFlags {
            provisioner_backend: a.image_provisioner_backend,
            docker_registry: a.docker_registry,
            docker_store_dir: a.docker_store_dir,
        }),
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
