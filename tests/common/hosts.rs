//! A multi-host fixture: N simulated hosts (`wvt-mh<k>-*` namespaces) on one underlay
//! (a `wvt-mhul-*` namespace holding a bridge), each with its own `weaver`, containers
//! attached by the real `weave-net` plugin, link cuts, and an `nc` reachability matrix.
//!
//! Include it next to `common`: `mod common; #[path = "common/hosts.rs"] mod hosts;`.
//! Everything is deleted on drop (namespaces, the processes inside them, data dirs).
#![allow(dead_code)]

use crate::common::{cni_env, in_ns, run_plugin, Netns, Router};
use std::fmt;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use weave::dataplane::vxlan::{self as datapath, Datapath};
use weave::netlink::Netlink;

/// Underlay subnet: host k (1-based) is 192.0.2.k (TEST-NET-1).
pub const UNDERLAY_PREFIX: u8 = 24;
/// The flat container subnet shared by every host.
pub const FLAT_SUBNET: &str = "10.32.0.0/12";
/// Name of a host's underlay interface.
pub const UNDERLAY_DEV: &str = "ul0";
/// Port every container listener of the matrix uses.
pub const PROBE_PORT: u16 = 5001;

/// Host k's underlay address.
pub fn underlay_ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, k as u8)
}

/// For data-plane tests without the ring: a slice of the flat /12 given to host k's router
/// as its whole `--ipalloc-range` ([`Cluster::start_meshed_router`] uses the ring instead). Containers ask for the whole
/// [`FLAT_SUBNET`] through the plugin's `ipam.subnet`, so they get /12 addresses (one flat
/// L2 segment) that never collide across hosts.
pub fn host_range(k: usize) -> String {
    format!("10.32.{k}.0/24")
}

/// Host k's fixed peer name (so `rmpeer` and ring entries can name it).
pub fn mesh_peer_name(k: usize) -> String {
    format!("02:00:00:00:00:{k:02x}")
}

/// A container: its namespace, where it lives and what the plugin gave it.
pub struct Container {
    pub name: String,
    pub host: usize,
    pub id: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub ns: Netns,
    listener: Option<Child>,
}

impl Container {
    /// Starts `nc -lk PROBE_PORT` inside (kept until drop).
    pub fn listen(&mut self) {
        if self.listener.is_some() {
            return;
        }
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns.name, "nc", "-lk"])
            .arg(PROBE_PORT.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nc listener");
        self.listener = Some(child);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(mut c) = self.listener.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One simulated host: a namespace with an underlay veth and (once started) a router.
pub struct Host {
    pub k: usize,
    pub router: Option<Router>,
    pub ns: Netns,
}

impl Host {
    pub fn underlay_ip(&self) -> Ipv4Addr {
        underlay_ip(self.k)
    }

    /// Runs `f` with a netlink connection inside this host (on its own thread and runtime).
    pub fn netlink<T: Send + 'static>(
        &self,
        f: impl AsyncFnOnce(&Netlink) -> T + Send + 'static,
    ) -> T {
        in_ns(&self.ns.name, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let nl = Netlink::open().expect("open netlink");
                tokio::time::timeout(Duration::from_secs(20), f(&nl))
                    .await
                    .expect("netlink work timed out")
            })
        })
    }

    /// Sets up the data plane on this host's `weave` bridge flooding to `peers`.
    pub fn datapath(&self, peers: &[Ipv4Addr]) -> Datapath {
        let peers = peers.to_vec();
        let local = self.underlay_ip();
        self.netlink(async move |nl: &Netlink| {
            let bridge = nl
                .link(weave::BRIDGE_NAME)
                .await
                .unwrap()
                .expect("weave bridge (start the router first)");
            let dp = Datapath::ensure(
                nl,
                bridge.index,
                datapath::DEFAULT_UDP_PORT,
                bridge.mtu,
                Some(local),
            )
            .await
            .unwrap_or_else(|e| panic!("ensure datapath: {e}"));
            dp.set_peers(nl, &peers)
                .await
                .unwrap_or_else(|e| panic!("set peers: {e}"));
            dp
        })
    }
}

/// N hosts on one underlay. Field order is drop order: containers, then hosts (routers are
/// killed with them), then the underlay.
pub struct Cluster {
    pub containers: Vec<Container>,
    pub hosts: Vec<Host>,
    pub underlay: Netns,
}

impl Cluster {
    /// `n` hosts `wvt-mh1-*`..`wvt-mhN-*`, host k at 192.0.2.k/24 on its `ul0`, all ports of
    /// one bridge in the underlay namespace. No routers yet.
    pub fn new(n: usize) -> Cluster {
        let underlay = Netns::new("mhul");
        underlay.sh("ip link add ulbr type bridge && ip link set ulbr up");
        let mut hosts = Vec::new();
        for k in 1..=n {
            let ns = Netns::new(&format!("mh{k}"));
            underlay.sh(&format!(
                "ip link add h{k} master ulbr type veth peer name {UNDERLAY_DEV} netns {host} \
                 && ip link set h{k} up",
                host = ns.name
            ));
            ns.sh(&format!(
                "ip addr add {}/{UNDERLAY_PREFIX} dev {UNDERLAY_DEV} && ip link set {UNDERLAY_DEV} up",
                underlay_ip(k)
            ));
            hosts.push(Host {
                k,
                router: None,
                ns,
            });
        }
        Cluster {
            containers: Vec::new(),
            hosts,
            underlay,
        }
    }

    /// Host k (1-based).
    pub fn host(&self, k: usize) -> &Host {
        &self.hosts[k - 1]
    }

    /// Starts `weaver` on host k with its own data dir, its slice of the flat range, and
    /// `extra` flags.
    pub fn start_router(&mut self, k: usize, extra: &[&str]) {
        let range = host_range(k);
        let mut args = vec!["--ipalloc-range", range.as_str()];
        args.extend_from_slice(extra);
        let router = Router::start(&self.hosts[k - 1].ns, &args);
        self.hosts[k - 1].router = Some(router);
    }

    /// Starts `weaver` on host k as `weave launch <other hosts>` would: the whole flat range
    /// shared through the IPAM ring (consensus over the initial peers), peer name
    /// [`mesh_peer_name`]`(k)`, nickname `h<k>`, short mesh timers, plus `extra` flags. The
    /// router programs its own data plane from the mesh's live peers.
    pub fn start_meshed_router(&mut self, k: usize, extra: &[&str]) {
        let n = self.hosts.len();
        let mut args: Vec<String> = vec![
            "--ipalloc-range".into(),
            FLAT_SUBNET.into(),
            "--name".into(),
            mesh_peer_name(k),
            "--nickname".into(),
            format!("h{k}"),
            "--fast-mesh-timers".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(
            (1..=n)
                .filter(|j| *j != k)
                .map(|j| underlay_ip(j).to_string()),
        );
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let router = Router::start(&self.hosts[k - 1].ns, &refs);
        self.hosts[k - 1].router = Some(router);
    }

    pub fn start_routers(&mut self, extra: &[&str]) {
        for k in 1..=self.hosts.len() {
            self.start_router(k, extra);
        }
    }

    /// On every host, the data plane flooding to every other host.
    pub fn datapaths(&self) -> Vec<Datapath> {
        let all: Vec<Ipv4Addr> = self.hosts.iter().map(Host::underlay_ip).collect();
        self.hosts
            .iter()
            .map(|h| {
                let others: Vec<Ipv4Addr> = all
                    .iter()
                    .copied()
                    .filter(|ip| *ip != h.underlay_ip())
                    .collect();
                h.datapath(&others)
            })
            .collect()
    }

    /// Attaches a new container on host k through the real `weave-net` plugin (addresses from
    /// that host's router, in the flat subnet); returns its index in `containers`.
    pub fn add_container(&mut self, k: usize, name: &str) -> usize {
        let ns = Netns::new(&format!("mh{k}c"));
        let id = format!("{name}-{}", ns.name);
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "weave",
            "type": "weave-net",
            "ipam": {"subnet": FLAT_SUBNET},
        })
        .to_string();
        let netns_path = ns.path().display().to_string();
        let env = cni_env("ADD", &id, &netns_path, "eth0");
        let run = run_plugin(
            &self.hosts[k - 1].ns,
            env!("CARGO_BIN_EXE_weave-net"),
            &env,
            &conf,
        );
        assert_eq!(
            run.code, 0,
            "weave-net ADD on host {k}: {}{}",
            run.stdout, run.stderr
        );
        let result = run.json();
        let cidr = result["ips"][0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address in {result}"));
        let ip: Ipv4Addr = cidr.split('/').next().unwrap().parse().unwrap();
        let mac = ns.sh("cat /sys/class/net/eth0/address").trim().to_string();
        self.containers.push(Container {
            name: name.to_string(),
            host: k,
            id,
            ip,
            mac,
            ns,
            listener: None,
        });
        self.containers.len() - 1
    }

    /// `ip link set ul0 down` on host k: it drops off the underlay.
    pub fn cut_link(&self, k: usize) {
        self.host(k)
            .ns
            .sh(&format!("ip link set {UNDERLAY_DEV} down"));
    }

    /// `ip link set ul0 up` (and the address back: the kernel keeps it, but be explicit).
    pub fn repair_link(&self, k: usize) {
        self.host(k)
            .ns
            .sh(&format!("ip link set {UNDERLAY_DEV} up"));
    }

    /// Probes every ordered pair of containers with `nc -z -w 3` (all in parallel, after
    /// starting a listener in each); returns the matrix.
    pub fn reachability(&mut self) -> Matrix {
        for c in &mut self.containers {
            c.listen();
        }
        // Give the listeners a moment to bind (they are plain processes).
        std::thread::sleep(Duration::from_millis(200));
        let names: Vec<String> = self
            .containers
            .iter()
            .map(|c| format!("{}@h{}", c.name, c.host))
            .collect();
        let mut probes = Vec::new();
        for (i, from) in self.containers.iter().enumerate() {
            for (j, to) in self.containers.iter().enumerate() {
                if i == j {
                    continue;
                }
                let child = Command::new("ip")
                    .args(["netns", "exec", &from.ns.name])
                    .args(["nc", "-z", "-w", "3", &to.ip.to_string()])
                    .arg(PROBE_PORT.to_string())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn nc probe");
                probes.push((i, j, child));
            }
        }
        let n = self.containers.len();
        let mut ok = vec![vec![None; n]; n];
        for (i, j, mut child) in probes {
            // nc gives up after 3 s; the timeout here only guards against a stuck process.
            ok[i][j] = Some(wait_with_timeout(&mut child, Duration::from_secs(10)));
        }
        Matrix { names, ok }
    }

    /// `nc -z -w 3 ADDR PORT` from container `from`.
    pub fn probe(&self, from: usize, addr: Ipv4Addr, port: u16) -> bool {
        let (code, _, _) = self.containers[from]
            .ns
            .try_sh(&format!("nc -z -w 3 {addr} {port}"));
        code == 0
    }
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait nc") {
            return status.success();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Who reached whom: `ok[i][j]` is the probe from container i to container j (`None` on the
/// diagonal).
#[derive(Debug, Clone)]
pub struct Matrix {
    pub names: Vec<String>,
    pub ok: Vec<Vec<Option<bool>>>,
}

impl Matrix {
    /// Ordered pairs that failed, by name.
    pub fn failures(&self) -> Vec<(String, String)> {
        self.pairs(false)
    }

    /// Ordered pairs that succeeded, by name.
    pub fn successes(&self) -> Vec<(String, String)> {
        self.pairs(true)
    }

    fn pairs(&self, want: bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, row) in self.ok.iter().enumerate() {
            for (j, cell) in row.iter().enumerate() {
                if *cell == Some(want) {
                    out.push((self.names[i].clone(), self.names[j].clone()));
                }
            }
        }
        out
    }

    pub fn all_ok(&self) -> bool {
        self.failures().is_empty()
    }
}

impl fmt::Display for Matrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.names.iter().map(String::len).max().unwrap_or(0).max(7);
        write!(f, "{:w$}", "from\\to")?;
        for n in &self.names {
            write!(f, " {n:>w$}")?;
        }
        writeln!(f)?;
        for (i, row) in self.ok.iter().enumerate() {
            write!(f, "{:w$}", self.names[i])?;
            for cell in row {
                let s = match cell {
                    None => "-",
                    Some(true) => "ok",
                    Some(false) => "FAIL",
                };
                write!(f, " {s:>w$}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

// Helpers the three-host tests share: their routers, HTTP calls and mesh-wide checks.

/// The router of host k (started).
pub fn router(c: &Cluster, k: usize) -> &Router {
    c.host(k).router.as_ref().expect("router started")
}

/// One HTTP call to a router with a 40 s reply timeout (consensus may take a while).
pub fn req(r: &Router, method: &str, path: &str) -> (u16, String) {
    let (m, p) = (method.to_string(), path.to_string());
    r.call(move |cl| {
        cl.with_timeouts(Duration::from_secs(2), Duration::from_secs(40))
            .request(&m, &p, None)
            .unwrap_or_else(|e| panic!("{m} {p}: {e}"))
    })
}

/// Polls `f` until it is true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Three meshed hosts (plus `extra` router flags) whose ring exists on every one.
pub fn cluster3(extra: &[&str]) -> Cluster {
    let mut c = Cluster::new(3);
    for k in 1..=3 {
        c.start_meshed_router(k, extra);
    }
    for k in 1..=3 {
        let (code, body) = req(router(&c, k), "GET", "/ring");
        assert_eq!(code, 200, "ring on h{k}: {body}\n{}", router(&c, k).log());
    }
    c
}

/// How many mesh connections of the router are established.
pub fn established(r: &Router) -> usize {
    req(r, "GET", "/status/connections")
        .1
        .lines()
        .filter(|l| l.contains("established"))
        .count()
}

/// Every container reaches every other (printed), after at most 3 retries.
pub fn assert_full_matrix(c: &mut Cluster, what: &str) {
    // The first probes across hosts may race the flood entries of a peer that just came.
    let mut m = c.reachability();
    for _ in 0..3 {
        if m.all_ok() {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
        m = c.reachability();
    }
    println!("{what}:\n{m}");
    assert!(m.all_ok(), "{what}: unreachable {:?}\n{m}", m.failures());
}
