//! The scenario without Mesos: simulated hosts are network namespaces on one underlay (a
//! bridge in its own namespace, host k at 100.64.10.k/24 on its `ul0`), each running the real
//! `weaver` meshed with the other hosts' routers (one IPAM ring, VXLAN between hosts);
//! simulated agents are spread over the hosts round-robin; every listener and probe gets its
//! own container namespace attached by the real `weave-net` plugin on its agent's host,
//! called exactly as a Mesos agent calls it (same environment, stdin with
//! `args["org.apache.mesos"]`), and runs `nc` inside it. With one host there is no underlay
//! and the router runs alone.

use crate::http::{self, Connector, Request, Url};
use crate::scenario::{AgentRef, Cluster, ProbeOutcome};
use crate::{Context, Error, ErrorKind, Result};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Deadline of one plugin call.
const PLUGIN_TIMEOUT_SECS: &str = "30";
/// Host k's underlay address is this /24 plus k (RFC 6598 space, unused by other tests).
const UNDERLAY_NET: [u8; 3] = [100, 64, 10];
/// The underlay bridge (in the underlay namespace) and each host's interface on it.
const UNDERLAY_BRIDGE: &str = "ulbr";
const UNDERLAY_DEV: &str = "ul0";

/// Host k's (1-based) underlay address.
pub fn underlay_ip(k: usize) -> std::net::Ipv4Addr {
    let [a, b, c] = UNDERLAY_NET;
    std::net::Ipv4Addr::new(a, b, c, k as u8)
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

struct Host {
    netns: String,
    datadir: tempfile::TempDir,
    router: Option<Child>,
}

struct Container {
    netns: String,
    id: String,
    host: usize,
    process: Option<Child>,
}

/// Simulated hosts and agents; everything is removed by `cleanup` or on drop.
pub struct LocalCluster {
    opts: LocalOptions,
    /// The underlay namespace, when there is more than one host.
    underlay: Option<String>,
    hosts: Vec<Host>,
    /// Agent index → host index.
    agent_hosts: Vec<usize>,
    containers: Vec<Container>,
    counter: usize,
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| what.to_string())?;
    if !out.status.success() {
        return Err(Error::new(
            ErrorKind::Internal,
            format!(
                "{what}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str], what: &str) -> Result<String> {
    run_ok(Command::new("ip").args(args), what)
}

impl LocalCluster {
    /// Builds host 1 with its router, and `opts.agents` agents on it.
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
        let mut c = LocalCluster {
            agent_hosts: (0..opts.agents.max(1)).map(|i| i % hosts).collect(),
            opts,
            underlay: None,
            hosts: Vec::new(),
            containers: Vec::new(),
            counter: 0,
        };
        // On error the cluster is dropped, which removes what was built.
        if hosts > 1 {
            let netns = format!("{}-ul", c.opts.prefix);
            ip(&["netns", "add", &netns], &format!("create netns {netns}"))?;
            c.underlay = Some(netns.clone());
            ip(
                &[
                    "-n",
                    &netns,
                    "link",
                    "add",
                    UNDERLAY_BRIDGE,
                    "type",
                    "bridge",
                ],
                "create underlay bridge",
            )?;
            ip(
                &["-n", &netns, "link", "set", UNDERLAY_BRIDGE, "up"],
                "set underlay bridge up",
            )?;
        }
        for _ in 0..hosts {
            c.add_host(hosts)?;
        }
        if hosts > 1 {
            c.wait_mesh(Instant::now() + Duration::from_secs(60))?;
        }
        Ok(c)
    }

    /// Host namespace k (1-based) with `lo` up, its underlay link (several hosts), and a
    /// `weaver` answering on 127.0.0.1:6784 inside it, given the other hosts as peers.
    fn add_host(&mut self, of: usize) -> Result<usize> {
        let n = self.hosts.len() + 1;
        let netns = format!("{}-h{n}", self.opts.prefix);
        ip(&["netns", "add", &netns], &format!("create netns {netns}"))?;
        let mut host = Host {
            netns: netns.clone(),
            datadir: tempfile::tempdir().context("create router data dir")?,
            router: None,
        };
        let started = (|| -> Result<()> {
            ip(&["-n", &netns, "link", "set", "lo", "up"], "set lo up")?;
            let mut peers = Vec::new();
            if let Some(ul) = &self.underlay {
                let port = format!("h{n}");
                ip(
                    &[
                        "-n",
                        ul,
                        "link",
                        "add",
                        &port,
                        "master",
                        UNDERLAY_BRIDGE,
                        "type",
                        "veth",
                        "peer",
                        "name",
                        UNDERLAY_DEV,
                        "netns",
                        &netns,
                    ],
                    "create underlay link",
                )?;
                ip(
                    &["-n", ul, "link", "set", &port, "up"],
                    "set underlay port up",
                )?;
                let cidr = format!("{}/24", underlay_ip(n));
                ip(
                    &["-n", &netns, "addr", "add", &cidr, "dev", UNDERLAY_DEV],
                    "address underlay link",
                )?;
                ip(
                    &["-n", &netns, "link", "set", UNDERLAY_DEV, "up"],
                    "set underlay link up",
                )?;
                peers = (1..=of)
                    .filter(|k| *k != n)
                    .map(|k| underlay_ip(k).to_string())
                    .collect();
            }
            let child = Command::new("ip")
                .args(["netns", "exec", &netns])
                .arg(&self.opts.weaver)
                .arg("--datadir")
                .arg(host.datadir.path())
                .args(["--nickname", &format!("h{n}")])
                .args(&peers)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(
                    host.datadir.path().join("weaver.log"),
                )?)
                .spawn()
                .context("start weaver")?;
            host.router = Some(child);
            wait_router(&netns, Instant::now() + Duration::from_secs(15))
        })();
        self.hosts.push(host);
        started.with_context(|| format!("start router in {netns}"))?;
        Ok(self.hosts.len() - 1)
    }

    /// A container namespace on `host`, attached by the plugin; returns it and its IP.
    fn attach(&mut self, host: usize) -> Result<(usize, String)> {
        self.counter += 1;
        let netns = format!("{}-c{}", self.opts.prefix, self.counter);
        let id = format!("{}-{}", self.opts.prefix, self.counter);
        ip(&["netns", "add", &netns], &format!("create netns {netns}"))?;
        self.containers.push(Container {
            netns: netns.clone(),
            id,
            host,
            process: None,
        });
        let idx = self.containers.len() - 1;
        let out = self.plugin(idx, "ADD")?;
        let v: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| Error::new(ErrorKind::Decode, format!("parse ADD result: {e}: {out}")))?;
        let cidr = v["ip4"]["ip"].as_str().ok_or_else(|| {
            Error::new(
                ErrorKind::Decode,
                format!("ADD result has no ip4.ip (the shape Mesos reads): {out}"),
            )
        })?;
        let addr = cidr.split('/').next().unwrap_or(cidr).to_string();
        Ok((idx, addr))
    }

    /// Runs the plugin in the container's host namespace as a Mesos agent would.
    fn plugin(&self, idx: usize, command: &str) -> Result<String> {
        let c = &self.containers[idx];
        let host = &self.hosts[c.host];
        let stdin = serde_json::json!({
            "args": {"org.apache.mesos": {"network_info": {"name": "weave"}}},
            "cniVersion": "1.0.0", "hairpinMode": true, "name": "weave", "type": "weave-net",
        })
        .to_string();
        let plugin_dir = self
            .opts
            .plugin
            .parent()
            .unwrap_or(std::path::Path::new("/"));
        let mut child = Command::new("timeout")
            .args([PLUGIN_TIMEOUT_SECS, "ip", "netns", "exec", &host.netns])
            .arg(&self.opts.plugin)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &c.id)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_NETNS", format!("/run/netns/{}", c.netns))
            .env("CNI_PATH", plugin_dir)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run weave-net")?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(stdin.as_bytes())
            .context("write plugin stdin")?;
        let out = child.wait_with_output().context("wait for weave-net")?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(Error::new(
                ErrorKind::Router,
                format!(
                    "weave-net {command} for {}: {}: {} {}",
                    c.id,
                    out.status,
                    stdout.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok(stdout)
    }

    fn detach(&mut self, idx: usize) -> Result<()> {
        if let Some(mut p) = self.containers[idx].process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        let del = self.plugin(idx, "DEL");
        let netns = self.containers[idx].netns.clone();
        let removed = ip(&["netns", "del", &netns], &format!("delete netns {netns}"));
        del.and(removed).map(|_| ())
    }
}

impl LocalCluster {
    /// Every router has a connection to every other one and the IPAM ring (consensus needs
    /// all initial peers), so the first ADD on any host gets an address at once.
    fn wait_mesh(&self, deadline: Instant) -> Result<()> {
        let others = self.hosts.len() - 1;
        for h in &self.hosts {
            loop {
                let conns = get(&h.netns, "/status/connections", deadline)
                    .map(|(_, b)| b.lines().filter(|l| l.contains("established")).count())
                    .unwrap_or(0);
                let ring = get(&h.netns, "/ring", deadline).is_ok_and(|(c, _)| c == 200);
                if conns >= others && ring {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(Error::new(
                        ErrorKind::TryAgainLater,
                        format!(
                            "wait for the mesh in {}: {conns} of {others} connections \
                             established, ring {}",
                            h.netns,
                            if ring { "ready" } else { "not ready" }
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(())
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

fn wait_router(netns: &str, deadline: Instant) -> Result<()> {
    loop {
        match get(netns, "/status", deadline) {
            Ok((200, _)) => return Ok(()),
            Ok(_) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Ok((status, _)) => {
                return Err(Error::new(
                    ErrorKind::Router,
                    format!("router answered {status}"),
                ))
            }
            Err(e) => return Err(e.context("wait for router")),
        }
    }
}

impl Cluster for LocalCluster {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn agents(&self) -> Vec<AgentRef> {
        self.agent_hosts
            .iter()
            .enumerate()
            .map(|(i, h)| AgentRef {
                id: format!("local-agent-{}", i + 1),
                hostname: format!("agent{}@{}", i + 1, self.hosts[*h].netns),
            })
            .collect()
    }

    fn start_listener(&mut self, agent: &AgentRef, port: u16) -> Result<String> {
        let host = self.host_of(agent)?;
        let (idx, addr) = self.attach(host)?;
        let netns = self.containers[idx].netns.clone();
        let child = Command::new("ip")
            .args(["netns", "exec", &netns, "nc", "-k", "-l", "0.0.0.0"])
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start nc listener")?;
        self.containers[idx].process = Some(child);
        // Ready when `ss` in the container shows the socket listening.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !run_ok(
            Command::new("ip").args(["netns", "exec", &netns, "ss", "-Hltn"]),
            "list listeners",
        )?
        .contains(&format!(":{port}"))
        {
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::TryAgainLater,
                    "wait for nc to listen: timed out",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(addr)
    }

    fn probe_all(&mut self, probes: &[(AgentRef, String, u16)]) -> Result<Vec<ProbeOutcome>> {
        let mut running = Vec::new();
        for (agent, ip, port) in probes {
            let host = self.host_of(agent)?;
            let (idx, _) = self.attach(host)?;
            let child = Command::new("timeout")
                .args(["10", "ip", "netns", "exec", &self.containers[idx].netns])
                .args(["nc", "-z", "-w", "3", ip, &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("start nc probe")?;
            running.push((idx, Instant::now(), child));
        }
        let mut out = Vec::new();
        for (idx, started, child) in running {
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
            self.detach(idx)?;
        }
        Ok(out)
    }

    fn cleanup(&mut self) -> Result<()> {
        let mut first_err = None;
        while let Some(c) = self.containers.last() {
            let idx = self.containers.len() - 1;
            let exists = std::path::Path::new("/run/netns").join(&c.netns).exists();
            if exists {
                if let Err(e) = self.detach(idx) {
                    first_err.get_or_insert(e);
                }
            }
            self.containers.pop();
        }
        for mut h in self.hosts.drain(..) {
            if let Some(mut r) = h.router.take() {
                // `ip netns exec` execs weaver, so this PID is the router itself.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(r.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                let deadline = Instant::now() + Duration::from_secs(5);
                while r.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = r.kill();
                let _ = r.wait();
            }
            if let Err(e) = ip(&["netns", "del", &h.netns], "delete host netns") {
                first_err.get_or_insert(e);
            }
            drop(h.datadir);
        }
        if let Some(ul) = self.underlay.take() {
            if let Err(e) = ip(&["netns", "del", &ul], "delete underlay netns") {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl LocalCluster {
    fn host_of(&self, agent: &AgentRef) -> Result<usize> {
        self.agents()
            .iter()
            .position(|a| a == agent)
            .map(|i| self.agent_hosts[i])
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("find agent {}", agent.id)))
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = self.cleanup();
    }
}
