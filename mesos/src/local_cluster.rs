//! The scenario without Mesos: simulated hosts are network namespaces on one underlay (a
//! bridge in its own namespace, host k at 100.64.10.k/24 on its `ul0`), built by the shared
//! kit (`weave_testkit::Cluster`), each running the real `weaver` meshed with the other
//! hosts' routers (one IPAM ring, VXLAN between hosts); simulated agents are spread over the
//! hosts round-robin; every listener and probe gets its own container namespace attached by
//! the real `weave-net` plugin on its agent's host, called exactly as a Mesos agent calls it
//! (same environment, stdin with `args["org.apache.mesos"]`), and runs `nc` inside it.

use crate::http::{self, Connector, Request, Url};
use crate::scenario::{AgentRef, Cluster, ProbeOutcome};
use crate::{Context, Error, ErrorKind, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use weave_testkit::cluster::ClusterSpec;
use weave_testkit::nc;

/// Host k's underlay address is this /24 plus k (RFC 6598 space, unused by other tests).
const UNDERLAY_NET: [u8; 3] = [100, 64, 10];

/// Host k's (1-based) underlay address.
pub fn underlay_ip(k: usize) -> std::net::Ipv4Addr {
    weave_testkit::cluster::subnet_ip(UNDERLAY_NET, k)
}

/// What to build.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub agents: usize,
    /// Simulated hosts (at least 1); agent i runs on host i mod hosts.
    pub hosts: usize,
    /// Namespace names start with this (tests use `wvt-`).
    pub prefix: String,
    pub weaver: PathBuf,
    pub plugin: PathBuf,
}

impl LocalOptions {
    /// Binaries next to the running executable (a cargo target dir or an install dir); one
    /// host per agent, as in a real cluster.
    pub fn next_to_exe(agents: usize, prefix: &str) -> Result<LocalOptions> {
        let exe = std::env::current_exe().context("find the running executable")?;
        let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
        Ok(LocalOptions {
            agents,
            hosts: agents.max(1),
            prefix: prefix.to_string(),
            weaver: dir.join("weaver"),
            plugin: dir.join("weave-net"),
        })
    }
}

/// Simulated hosts and agents; everything is removed by `cleanup` or on drop.
pub struct LocalCluster {
    opts: LocalOptions,
    /// The kit's hosts, routers and containers (`None` once cleaned up).
    sim: Option<weave_testkit::Cluster>,
    /// Agent index → host k (1-based).
    agent_hosts: Vec<usize>,
    counter: usize,
}

/// A kit failure as the harness reports it.
fn kit(e: weave_testkit::Error) -> Error {
    Error::new(ErrorKind::Internal, e.to_string())
}

impl LocalCluster {
    /// Builds the hosts with their routers, meshed, and spreads `opts.agents` agents on them.
    pub fn build(opts: LocalOptions) -> Result<LocalCluster> {
        for (what, p) in [("router", &opts.weaver), ("plugin", &opts.plugin)] {
            if !p.is_file() {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "find {what} binary {}: not a file (build it or pass its path)",
                        p.display()
                    ),
                ));
            }
        }
        let hosts = opts.hosts.clamp(1, 250);
        let spec = ClusterSpec::exact(&opts.prefix, UNDERLAY_NET);
        // On error what was built is dropped, which removes it.
        let sim = weave_testkit::Cluster::build(spec, hosts).map_err(kit)?;
        let mut c = LocalCluster {
            agent_hosts: (0..opts.agents.max(1)).map(|i| i % hosts + 1).collect(),
            opts,
            sim: Some(sim),
            counter: 0,
        };
        for k in 1..=hosts {
            c.start_router(k)?;
        }
        if hosts > 1 {
            c.wait_mesh(Instant::now() + Duration::from_secs(60))?;
        }
        Ok(c)
    }

    fn sim(&mut self) -> &mut weave_testkit::Cluster {
        self.sim.as_mut().expect("cluster not cleaned up")
    }

    /// `weaver` on host k answering on 127.0.0.1:6784 inside it, given the other hosts as
    /// peers.
    fn start_router(&mut self, k: usize) -> Result<()> {
        let weaver = self.opts.weaver.clone();
        let sim = self.sim();
        let mut args = vec!["--nickname".to_string(), format!("h{k}")];
        args.extend(sim.peers_of(k));
        let mut router = sim.router_for(k, None, &args).map_err(kit)?;
        router.weaver = weaver;
        router.log_name = "weaver.log".into();
        router.quiet_status = false;
        let netns = sim.host(k).ns.name.clone();
        sim.launch(k, router)
            .map_err(kit)
            .with_context(|| format!("start router in {netns}"))
    }

    /// The plugin's stdin: the network config as a Mesos agent passes it.
    fn conf() -> String {
        serde_json::json!({
            "args": {"org.apache.mesos": {"network_info": {"name": "weave"}}},
            "cniVersion": "1.0.0", "hairpinMode": true, "name": "weave", "type": "weave-net",
        })
        .to_string()
    }

    /// CNI_PATH (the plugin's directory) and PATH, as an agent sets them.
    fn plugin_env(&self) -> Vec<(String, String)> {
        let dir = self
            .opts
            .plugin
            .parent()
            .unwrap_or(std::path::Path::new("/"));
        vec![
            ("CNI_PATH".into(), dir.display().to_string()),
            ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
        ]
    }

    /// A container namespace on host k, attached by the plugin; returns its id and IP.
    fn attach(&mut self, k: usize) -> Result<(String, String)> {
        self.counter += 1;
        let n = self.counter;
        let id = format!("{}-{n}", self.opts.prefix);
        let (plugin, env) = (self.opts.plugin.clone(), self.plugin_env());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let sim = self.sim();
        let ns = sim.spec.netns(&format!("c{n}")).map_err(kit)?;
        let idx = sim
            .attach(k, &id, ns, &id, &plugin, &Self::conf(), &env)
            .map_err(|e| Error::new(ErrorKind::Router, e.to_string()))?;
        let ip = sim.containers[idx].ip.to_string();
        Ok((id, ip))
    }

    fn container(&mut self, id: &str) -> Result<usize> {
        self.sim()
            .containers
            .iter()
            .position(|c| c.id == id)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("find container {id}")))
    }

    /// DEL for container `id` and its namespace removed.
    fn detach(&mut self, id: &str) -> Result<()> {
        let idx = self.container(id)?;
        let (plugin, env) = (self.opts.plugin.clone(), self.plugin_env());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.sim()
            .detach(idx, &plugin, &Self::conf(), &env)
            .map_err(|e| Error::new(ErrorKind::Router, e.to_string()))
    }

    /// Every router has a connection to every other one and the IPAM ring (consensus needs
    /// all initial peers), so the first ADD on any host gets an address at once.
    fn wait_mesh(&mut self, deadline: Instant) -> Result<()> {
        let names: Vec<String> = self.sim().hosts.iter().map(|h| h.ns.name.clone()).collect();
        let others = names.len() - 1;
        for netns in &names {
            loop {
                let conns = get(netns, "/status/connections", deadline)
                    .map(|(_, b)| b.lines().filter(|l| l.contains("established")).count())
                    .unwrap_or(0);
                let ring = get(netns, "/ring", deadline).is_ok_and(|(c, _)| c == 200);
                if conns >= others && ring {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(Error::new(
                        ErrorKind::TryAgainLater,
                        format!(
                            "wait for the mesh in {netns}: {conns} of {others} connections \
                             established, ring {}",
                            if ring { "ready" } else { "not ready" }
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(())
    }

    fn host_of(&self, agent: &AgentRef) -> Result<usize> {
        self.agents()
            .iter()
            .position(|a| a == agent)
            .map(|i| self.agent_hosts[i])
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("find agent {}", agent.id)))
    }
}

/// GET `path` from the router in `netns`: status and body.
fn get(netns: &str, path: &str, deadline: Instant) -> Result<(u16, String)> {
    let url = Url::parse(&format!("http://{}{path}", weave::DEFAULT_HTTP_ADDR), 6784)?;
    let client = http::blocking::Client::new(
        http::Client::new().with_connector(Connector::for_netns_name(netns)),
    )?;
    let attempt = Instant::now() + Duration::from_secs(2);
    let r = client.fetch_until(&Request::get(url), attempt.min(deadline), 1 << 20)?;
    Ok((r.head.status, r.text()))
}

impl Cluster for LocalCluster {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn agents(&self) -> Vec<AgentRef> {
        let sim = self.sim.as_ref();
        self.agent_hosts
            .iter()
            .enumerate()
            .map(|(i, k)| AgentRef {
                id: format!("local-agent-{}", i + 1),
                hostname: format!(
                    "agent{}@{}",
                    i + 1,
                    sim.map(|s| s.host(*k).ns.name.clone()).unwrap_or_default()
                ),
            })
            .collect()
    }

    fn start_listener(&mut self, agent: &AgentRef, port: u16) -> Result<String> {
        let host = self.host_of(agent)?;
        let (id, addr) = self.attach(host)?;
        let idx = self.container(&id)?;
        self.sim().containers[idx]
            .listen_on(port)
            .map_err(|e| Error::new(ErrorKind::TryAgainLater, e.to_string()))?;
        Ok(addr)
    }

    fn probe_all(&mut self, probes: &[(AgentRef, String, u16)]) -> Result<Vec<ProbeOutcome>> {
        let mut running = Vec::new();
        for (agent, ip, port) in probes {
            let host = self.host_of(agent)?;
            let (id, _) = self.attach(host)?;
            let idx = self.container(&id)?;
            let ns = self.sim().containers[idx].ns.name.clone();
            let child = nc::spawn_probe(&ns, ip, *port).map_err(kit)?;
            running.push((id, Instant::now(), child));
        }
        let mut out = Vec::new();
        for (id, started, child) in running {
            let done = child.wait_with_output().context("wait for nc probe")?;
            let latency = started.elapsed();
            let connected = done.status.success();
            let detail = match done.status.code() {
                Some(0) => "exit 0".to_string(),
                Some(c) => format!("exit {c} {}", String::from_utf8_lossy(&done.stderr).trim()),
                None => "killed".to_string(),
            };
            out.push(ProbeOutcome {
                connected,
                detail: detail.trim().to_string(),
                latency: Some(latency),
            });
            self.detach(&id)?;
        }
        Ok(out)
    }

    fn cleanup(&mut self) -> Result<()> {
        let mut first_err = None;
        if self.sim.is_none() {
            return Ok(());
        }
        let ids: Vec<String> = self
            .sim()
            .containers
            .iter()
            .rev()
            .map(|c| c.id.clone())
            .collect();
        for id in ids {
            if let Err(e) = self.detach(&id) {
                first_err.get_or_insert(e);
            }
        }
        if let Some(mut sim) = self.sim.take() {
            for h in &mut sim.hosts {
                if let Some(r) = h.router.as_mut() {
                    r.stop(Duration::from_secs(5));
                }
            }
            // The kit's guards delete the host and underlay namespaces.
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = self.cleanup();
    }
}
