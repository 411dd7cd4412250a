//! The scenario without Mesos: simulated hosts are network namespaces, each running the real
//! `weaver`; simulated agents live on a host; every listener and probe gets its own
//! container namespace attached by the real `weave-net` plugin, called exactly as a Mesos
//! agent calls it (same environment, stdin with `args["org.apache.mesos"]`), and runs `nc`
//! inside it. Hosts are a list so the multi-host work can add more and connect their
//! routers; today every agent is on host 1.

use crate::http::{self, Connector, Request, Url};
use crate::scenario::{AgentRef, Cluster, ProbeOutcome};
use crate::{Context, Error, ErrorKind, Result};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Deadline of one plugin call.
const PLUGIN_TIMEOUT_SECS: &str = "30";

/// What to build.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub agents: usize,
    /// Namespace names start with this (tests use `wvt-`).
    pub prefix: String,
    pub weaver: PathBuf,
    pub plugin: PathBuf,
}

impl LocalOptions {
    /// Binaries next to the running executable (a cargo target dir or an install dir).
    pub fn next_to_exe(agents: usize, prefix: &str) -> Result<LocalOptions> {
        let exe = std::env::current_exe().context("find the running executable")?;
        let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
        Ok(LocalOptions {
            agents,
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
        let mut c = LocalCluster {
            agent_hosts: vec![0; opts.agents.max(1)],
            opts,
            hosts: Vec::new(),
            containers: Vec::new(),
            counter: 0,
        };
        c.add_host()?;
        Ok(c)
    }

    /// A host namespace with `lo` up and a `weaver` answering on 127.0.0.1:6784 inside it.
    pub fn add_host(&mut self) -> Result<usize> {
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
            let child = Command::new("ip")
                .args(["netns", "exec", &netns])
                .arg(&self.opts.weaver)
                .arg("--datadir")
                .arg(host.datadir.path())
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

fn wait_router(netns: &str, deadline: Instant) -> Result<()> {
    let url = Url::parse(&format!("http://{}/status", weave::DEFAULT_HTTP_ADDR))?;
    let conn = Connector::for_netns_name(netns);
    loop {
        let req = Request {
            method: "GET",
            url: url.clone(),
            headers: Vec::new(),
            body: Vec::new(),
        };
        let attempt = Instant::now() + Duration::from_secs(2);
        match http::fetch(&conn, &req, attempt.min(deadline), 1 << 20) {
            Ok(r) if r.head.status == 200 => return Ok(()),
            Ok(_) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Ok(r) => {
                return Err(Error::new(
                    ErrorKind::Router,
                    format!("router answered {}", r.head.status),
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
