//! N simulated hosts for the real Mesos fixture, built by the shared kit
//! (`weave_testkit::Cluster`): namespaces `wvt-mm<k>-*` whose `ul0` veths (198.18.0.k/24)
//! hang off one bridge in `wvt-mmul-*`. Each host runs its own `weaver` (meshed with the
//! others, own data dir) and, once started, one agent-only fixture instance whose only CNI
//! config is `weave setup` output; host 1 also runs a master-only instance. Everything
//! (instances, routers, namespaces) is removed on drop, even after a panic.

use super::{fixture_script, router_get, run, start_instance, stop_instance, weave_setup};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use weave_mesos::http::Connector;
use weave_mesos::operator::OperatorClient;
use weave_testkit::{Cluster, ClusterSpec, Netns, Router};

/// The harness tests' underlay (RFC 2544 benchmarking space).
const SUBNET: [u8; 3] = [198, 18, 0];

pub const MASTER_PORT: u16 = 5050;
pub const AGENT_PORT: u16 = 5051;

/// Host k's underlay address.
pub fn underlay_ip(k: usize) -> String {
    format!("198.18.0.{k}")
}

/// One simulated host.
pub struct Host {
    pub k: usize,
    pub netns: String,
    pub ip: String,
    /// Fixture instance name of this host's agent.
    pub agent: String,
    pub datadir: tempfile::TempDir,
    pub bin_dir: tempfile::TempDir,
    pub conf_dir: tempfile::TempDir,
    router: Option<Router>,
    peers: Vec<String>,
}

impl Host {
    /// Starts `weaver` here as `weave launch <peers>` would (fixed peer name, so a restart
    /// with the same data dir is the same peer); waits until its API answers.
    pub fn start_router(&mut self) {
        assert!(self.router.is_none(), "router on host {} runs", self.k);
        let mut args = vec![
            "--name".to_string(),
            format!("02:00:00:00:4d:{:02x}", self.k),
            "--nickname".to_string(),
            format!("mm{}", self.k),
            "--fast-mesh-timers".to_string(),
        ];
        args.extend(self.peers.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut r = Router::new(&self.netns, Some(self.datadir.path()), &refs).unwrap();
        r.log_name = "weaver.log".into();
        r.quiet_status = false;
        // Sweep for vanished containers every half second instead of every 30 s.
        r.env = vec![("WEAVE_SWEEP_INTERVAL_MS".into(), "500".into())];
        let started = r.try_spawn();
        self.router = Some(r);
        if let Err(e) = started {
            panic!("router on host {} silent: {e}", self.k);
        }
    }

    /// Kills the router (SIGKILL: no goodbye to the mesh, state stays in the data dir).
    pub fn stop_router(&mut self) {
        if let Some(mut r) = self.router.take() {
            r.kill9();
        }
    }

    /// The router's answer to a GET, when it answers 200.
    pub fn get(&self, path: &str) -> Option<String> {
        router_get(&self.netns, path).and_then(|(s, b)| (s == 200).then_some(b))
    }

    /// The container IDs the router holds addresses for (`GET /ip`), without the router's
    /// own (`weave:expose`, the bridge's gateway address).
    pub fn owners(&self) -> Vec<String> {
        let body = self.get("/ip").expect("GET /ip");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["owned"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["containerid"].as_str().unwrap().to_string())
            .filter(|id| !id.starts_with("weave:"))
            .collect()
    }

    /// The CIDRs the router says `id` owns (`GET /ip/<id>`), empty if none.
    pub fn owned_by(&self, id: &str) -> String {
        let (status, body) = router_get(&self.netns, &format!("/ip/{id}"))
            .unwrap_or_else(|| panic!("router on host {} silent", self.k));
        match status {
            200 => body.trim().to_string(),
            404 => String::new(),
            s => panic!("GET /ip/{id} on host {}: {s} {body}", self.k),
        }
    }

    /// Host-side weave veths (`vethwepl*`) in this host.
    pub fn weave_veths(&self) -> Vec<String> {
        run(10, &["ip", "-n", &self.netns, "-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap().to_string())
            .filter(|n| n.starts_with("vethwepl"))
            .collect()
    }

    /// Wraps the installed `weave-net` in a script that appends one line per call to
    /// [`Host::cni_calls`]: command, container, CNI_NETNS and the filesystem type there
    /// (`nsfs` when it is a live namespace handle), exit code.
    fn log_cni_calls(&self) {
        let plugin = self.bin_dir.path().join("weave-net");
        let real = self.bin_dir.path().join("weave-net.real");
        std::fs::rename(&plugin, &real).unwrap();
        let log = self.datadir.path().join("cni-calls.log");
        let script = format!(
            "#!/bin/sh\n\
             fs=$(stat -f -c %T \"${{CNI_NETNS:-/nonexistent}}\" 2>/dev/null || echo missing)\n\
             {real} \"$@\"; rc=$?\n\
             echo \"$CNI_COMMAND $CNI_CONTAINERID netns=${{CNI_NETNS:-none}} fs=$fs rc=$rc\" >> {log}\n\
             exit $rc\n",
            real = real.display(),
            log = log.display()
        );
        std::fs::write(&plugin, script).unwrap();
        run(5, &["chmod", "755", plugin.to_str().unwrap()]);
    }

    /// The plugin calls logged so far, one line each (see `log_cni_calls`).
    pub fn cni_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.datadir.path().join("cni-calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// PID of this host's agent process, from the fixture's run dir.
    pub fn agent_pid(&self) -> Option<i32> {
        std::fs::read_to_string(run_dir(&self.agent).join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// This host's agent log (the current instance's).
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(run_dir(&self.agent).join("mesos.log")).unwrap_or_default()
    }

    /// The tail of this host's agent log (for failure messages).
    pub fn agent_log_tail(&self, lines: usize) -> String {
        let log = self.agent_log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

fn run_dir(instance: &str) -> PathBuf {
    std::env::var_os("MESOS_FIXTURE_RUN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/mesos-fixture"))
        .join(instance)
}

/// The hosts, the underlay, and the master instance. Drop stops agents, master, routers,
/// then deletes the namespaces.
pub struct Hosts {
    pub hosts: Vec<Host>,
    pub master_instance: String,
    started: Vec<String>,
    /// Container namespaces a test made itself (deleted on drop too).
    extra_netns: Vec<Netns>,
    cluster: Cluster,
}

impl Hosts {
    /// `n` hosts on the underlay, each with a running router meshed with the others and
    /// `weave setup` output in its CNI dirs. No Mesos yet.
    pub fn new(n: usize) -> Hosts {
        let pid = std::process::id();
        let spec = ClusterSpec {
            subnet: SUBNET,
            ..ClusterSpec::test("mm")
        };
        let cluster = Cluster::build(spec, n).unwrap_or_else(|e| panic!("{e}"));
        let mut hs = Hosts {
            hosts: Vec::new(),
            master_instance: format!("wvt-mm-{pid}-m"),
            started: Vec::new(),
            extra_netns: Vec::new(),
            cluster,
        };
        for k in 1..=n {
            let h = Host {
                k,
                netns: hs.cluster.host(k).ns.name.clone(),
                ip: underlay_ip(k),
                agent: format!("wvt-mm-{pid}-a{k}"),
                datadir: tempfile::tempdir().unwrap(),
                bin_dir: tempfile::tempdir().unwrap(),
                conf_dir: tempfile::tempdir().unwrap(),
                router: None,
                peers: hs.cluster.peers_of(k),
            };
            hs.hosts.push(h);
        }
        for h in &mut hs.hosts {
            weave_setup(h.bin_dir.path(), h.conf_dir.path());
            h.log_cni_calls();
            h.start_router();
        }
        hs
    }

    pub fn host(&self, k: usize) -> &Host {
        &self.hosts[k - 1]
    }

    pub fn host_mut(&mut self, k: usize) -> &mut Host {
        &mut self.hosts[k - 1]
    }

    /// A new empty namespace `wvt-mm<tag>-*`, deleted on drop; returns its name.
    pub fn add_netns(&mut self, tag: &str) -> String {
        let ns = self.cluster.spec.netns(tag).unwrap();
        let name = ns.name.clone();
        self.extra_netns.push(ns);
        name
    }

    /// `host:port` of the master (host 1).
    pub fn master(&self) -> String {
        format!("{}:{MASTER_PORT}", underlay_ip(1))
    }

    /// A connector that reaches the master: from inside host 1.
    pub fn connector(&self) -> Connector {
        Connector::for_netns_name(&self.hosts[0].netns)
    }

    pub fn operator(&self) -> OperatorClient {
        OperatorClient::new(&self.master())
            .unwrap()
            .with_timeout(Duration::from_secs(10))
            .with_connector(self.connector())
    }

    /// The master-only instance on host 1.
    pub fn start_master(&mut self) {
        let script = fixture_script();
        let (netns, ip) = (self.hosts[0].netns.clone(), self.hosts[0].ip.clone());
        let name = self.master_instance.clone();
        self.started.push(name.clone());
        let port = MASTER_PORT.to_string();
        run(
            150,
            &[
                script.to_str().unwrap(),
                "start",
                "--name",
                &name,
                "--netns",
                &netns,
                "--ip",
                &ip,
                "--port",
                &port,
                "--no-agent",
            ],
        );
    }

    /// Host k's agent-only instance, joined to the master; returns when the master lists it.
    pub fn start_agent(&mut self, k: usize) {
        let master = self.master();
        let h = &self.hosts[k - 1];
        if !self.started.contains(&h.agent) {
            self.started.push(h.agent.clone());
        }
        start_instance(
            &h.agent,
            &h.netns,
            &h.ip,
            AGENT_PORT,
            h.conf_dir.path(),
            h.bin_dir.path(),
            &["--join", &master],
        );
    }

    /// SIGKILLs host k's agent process (containers stay) and waits until it is gone.
    pub fn kill_agent(&mut self, k: usize) -> i32 {
        let h = &self.hosts[k - 1];
        let pid = h.agent_pid().expect("agent pid");
        run(5, &["kill", "-KILL", &pid.to_string()]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < deadline, "agent {pid} survived SIGKILL");
            std::thread::sleep(Duration::from_millis(50));
        }
        pid
    }

    /// Starts host k's agent again on the same work dir, as an operator restarting a
    /// crashed agent would. The fixture's `start` cleans a stale instance of the same name
    /// (killing its containers); forgetting its `meta` first keeps the containers, the
    /// cgroups and the checkpoints for Mesos' own recovery.
    pub fn restart_agent(&mut self, k: usize) {
        let dir = run_dir(&self.hosts[k - 1].agent);
        std::fs::remove_file(dir.join("meta")).unwrap();
        let _ = std::fs::remove_file(dir.join("pid"));
        self.start_agent(k);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Agents first (they then kill their containers), the master last.
        for name in self.started.iter().rev() {
            stop_instance(name);
        }
        for h in &mut self.hosts {
            h.stop_router();
        }
        // Then the namespaces: the test's own, the hosts and the underlay (the kit's guards).
        self.extra_netns.clear();
    }
}
