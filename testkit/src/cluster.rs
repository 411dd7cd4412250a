//! N simulated hosts on one underlay: the only builder of them. Host k (1-based) is a
//! namespace whose `ul0` veth (`<subnet>.k/24`) hangs off the bridge `ulbr` in an underlay
//! namespace (its port there is `h<k>`). Routers run on hosts ([`Router`]); containers are
//! namespaces attached by the real `weave-net` plugin on their host. Everything is deleted
//! on drop: containers (and their listeners), then hosts (routers killed with them), then
//! the underlay.

use crate::nc::{self, Matrix};
use crate::ns::{ip, Netns};
use crate::plugin::{cni_env, run_plugin_in, PLUGIN_TIMEOUT};
use crate::process::Guard;
use crate::router::Router;
use crate::{Error, Result};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Prefix length of the underlay.
pub const UNDERLAY_PREFIX: u8 = 24;
/// The underlay bridge (in the underlay namespace).
pub const UNDERLAY_BRIDGE: &str = "ulbr";
/// Name of a host's underlay interface.
pub const UNDERLAY_DEV: &str = "ul0";
/// The flat container subnet shared by every host.
pub const FLAT_SUBNET: &str = "10.32.0.0/12";
/// Port every container listener of the matrix uses.
pub const PROBE_PORT: u16 = 5001;
/// The gateway's host number on the underlay (`<subnet>.254`), see [`Cluster::add_far_host`].
pub const GATEWAY_HOST: usize = 254;
/// The tests' underlay: TEST-NET-1.
pub const TEST_SUBNET: [u8; 3] = [192, 0, 2];

/// The network configuration [`Cluster::add_container`] attaches with: `weave-net` with
/// the whole [`FLAT_SUBNET`].
fn flat_conf() -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "weave",
        "type": "weave-net",
        "ipam": {"subnet": FLAT_SUBNET},
    })
    .to_string()
}

/// Host k's underlay address on the tests' underlay (192.0.2.k).
pub fn underlay_ip(k: usize) -> Ipv4Addr {
    subnet_ip(TEST_SUBNET, k)
}

/// `<subnet>.k`.
pub fn subnet_ip(subnet: [u8; 3], k: usize) -> Ipv4Addr {
    let [a, b, c] = subnet;
    Ipv4Addr::new(a, b, c, k as u8)
}

/// For data-plane tests without the ring: a slice of the flat /12 given to host k's router
/// as its whole `--ipalloc-range` ([`Cluster::start_meshed_router`] uses the ring instead).
/// Containers ask for the whole [`FLAT_SUBNET`] through the plugin's `ipam.subnet`, so they
/// get /12 addresses (one flat L2 segment) that never collide across hosts.
pub fn host_range(k: usize) -> String {
    format!("10.32.{k}.0/24")
}

/// Host k's fixed peer name in the tests (so `rmpeer` and ring entries can name it).
pub fn mesh_peer_name(k: usize) -> String {
    format!("02:00:00:00:00:{k:02x}")
}

/// How the cluster's namespaces are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Naming {
    /// Unique per test: `wvt-<tag>ul-<pid>-<n>`, `wvt-<tag><k>-<pid>-<n>`, ...
    Unique(String),
    /// Fixed: `<prefix>-ul`, `<prefix>-h<k>`, `<prefix>-<suffix>`; a namespace of that
    /// name left by an interrupted run is deleted first.
    Exact(String),
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    pub naming: Naming,
    /// Host k is `<subnet>.k/24`.
    pub subnet: [u8; 3],
}

impl ClusterSpec {
    /// Unique `wvt-<tag>*` names on 192.0.2.0/24.
    pub fn test(tag: &str) -> ClusterSpec {
        ClusterSpec {
            naming: Naming::Unique(tag.to_string()),
            subnet: TEST_SUBNET,
        }
    }

    /// Fixed `<prefix>-*` names on `<subnet>.0/24`.
    pub fn exact(prefix: &str, subnet: [u8; 3]) -> ClusterSpec {
        ClusterSpec {
            naming: Naming::Exact(prefix.to_string()),
            subnet,
        }
    }

    /// A namespace for this cluster: `suffix` after the tag or the prefix.
    pub fn netns(&self, suffix: &str) -> Result<Netns> {
        match &self.naming {
            Naming::Unique(tag) => Ok(Netns::new(&format!("{tag}{suffix}"))),
            Naming::Exact(prefix) => Netns::replace(&format!("{prefix}-{suffix}")),
        }
    }

    fn host_suffix(&self, k: usize) -> String {
        match self.naming {
            Naming::Unique(_) => format!("{k}"),
            Naming::Exact(_) => format!("h{k}"),
        }
    }
}

/// A container: its namespace, where it lives and what the plugin gave it.
#[derive(Debug)]
pub struct Container {
    pub name: String,
    /// Its host's k.
    pub host: usize,
    pub id: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub ns: Netns,
    listener: Option<Guard>,
}

impl Container {
    /// Starts `nc -lk PROBE_PORT` inside (kept until drop).
    pub fn listen(&mut self) {
        self.listen_on(PROBE_PORT).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts `nc -lk PORT` inside (kept until drop) and waits until it listens.
    pub fn listen_on(&mut self, port: u16) -> Result<()> {
        if self.listener.is_none() {
            self.listener = Some(nc::listen(&self.ns.name, port)?);
        }
        nc::wait_listening(&self.ns.name, port, Duration::from_secs(10))
    }

    /// Stops its listener.
    pub fn stop_listening(&mut self) {
        self.listener = None;
    }
}

/// One simulated host: a namespace with an underlay veth and (once started) a router.
#[derive(Debug)]
pub struct Host {
    pub k: usize,
    pub router: Option<Router>,
    pub ns: Netns,
    pub ip: Ipv4Addr,
}

impl Host {
    pub fn underlay_ip(&self) -> Ipv4Addr {
        self.ip
    }
}

/// N hosts on one underlay. Field order is drop order: containers, then hosts (routers
/// are killed with them), then the underlay.
#[derive(Debug)]
pub struct Cluster {
    pub containers: Vec<Container>,
    pub hosts: Vec<Host>,
    /// The router namespace far hosts sit behind ([`Cluster::add_far_host`]), if any.
    pub gateway: Option<Netns>,
    pub underlay: Netns,
    pub spec: ClusterSpec,
}

impl Cluster {
    /// `n` test hosts `wvt-mh1-*`..`wvt-mhN-*`, host k at 192.0.2.k/24 on its `ul0`, all
    /// ports of one bridge in the underlay namespace. No routers yet. Panics on failure.
    pub fn new(n: usize) -> Cluster {
        Cluster::build(ClusterSpec::test("mh"), n).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `n` hosts as `spec` says. On failure what was built is removed.
    pub fn build(spec: ClusterSpec, n: usize) -> Result<Cluster> {
        let underlay = spec.netns("ul")?;
        ip(&[
            "-n",
            &underlay.name,
            "link",
            "add",
            UNDERLAY_BRIDGE,
            "type",
            "bridge",
        ])
        .and_then(|_| ip(&["-n", &underlay.name, "link", "set", UNDERLAY_BRIDGE, "up"]))
        .map_err(|e| e.context("create underlay bridge"))?;
        let mut c = Cluster {
            containers: Vec::new(),
            hosts: Vec::new(),
            gateway: None,
            underlay,
            spec,
        };
        for k in 1..=n {
            c.add_host(k)?;
        }
        Ok(c)
    }

    fn add_host(&mut self, k: usize) -> Result<()> {
        let ns = self.spec.netns(&self.spec.host_suffix(k))?;
        let ip_k = subnet_ip(self.spec.subnet, k);
        self.plug_into_underlay(&format!("h{k}"), &ns.name, ip_k)
            .map_err(|e| e.context(format!("connect host {k} to the underlay")))?;
        self.hosts.push(Host {
            k,
            router: None,
            ns,
            ip: ip_k,
        });
        Ok(())
    }

    /// A veth from the underlay bridge (port `port`) into namespace `ns` as [`UNDERLAY_DEV`]
    /// with address `addr`, both ends up.
    fn plug_into_underlay(&self, port: &str, ns: &str, addr: Ipv4Addr) -> Result<()> {
        let ul = self.underlay.name.as_str();
        let cidr = format!("{addr}/{UNDERLAY_PREFIX}");
        let steps: [&[&str]; 4] = [
            &[
                "-n",
                ul,
                "link",
                "add",
                port,
                "master",
                UNDERLAY_BRIDGE,
                "type",
                "veth",
                "peer",
                "name",
                UNDERLAY_DEV,
                "netns",
                ns,
            ],
            &["-n", ul, "link", "set", port, "up"],
            &["-n", ns, "addr", "add", &cidr, "dev", UNDERLAY_DEV],
            &["-n", ns, "link", "set", UNDERLAY_DEV, "up"],
        ];
        for args in steps {
            ip(args)?;
        }
        Ok(())
    }

    /// Adds host k (the next one) on another subnet, `<far>.k/24`, one IP hop away: behind a
    /// router namespace that has [`GATEWAY_HOST`] on the underlay bridge and `<far>.1`
    /// towards the far hosts. The underlay hosts route `<far>.0/24` through it and the far
    /// host routes everything through it, so it is no neighbour of theirs.
    pub fn add_far_host(&mut self, k: usize, far: [u8; 3]) -> Result<()> {
        if k != self.hosts.len() + 1 {
            return Err(Error::new(format!(
                "add far host {k}: next host is {}",
                self.hosts.len() + 1
            )));
        }
        let gw_ul = subnet_ip(self.spec.subnet, GATEWAY_HOST);
        let gw_far = subnet_ip(far, 1);
        let first = self.gateway.is_none();
        if first {
            let gw = self.spec.netns("gw")?;
            let gw_name = gw.name.clone();
            self.gateway = Some(gw);
            self.plug_into_underlay("gw", &gw_name, gw_ul)
                .map_err(|e| e.context("connect the gateway to the underlay"))?;
            crate::ns::in_ns(&gw_name, || {
                std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            })
            .map_err(|e| Error::new(format!("enable forwarding on the gateway: {e}")))?;
        }
        let gw = self.gateway.as_ref().expect("gateway").name.clone();
        let ns = self.spec.netns(&self.spec.host_suffix(k))?;
        let ip_k = subnet_ip(far, k);
        let (port, far_net) = (
            format!("f{k}"),
            format!("{}/{UNDERLAY_PREFIX}", subnet_ip(far, 0)),
        );
        let host_cidr = format!("{ip_k}/{UNDERLAY_PREFIX}");
        let gw_cidr = format!("{gw_far}/{UNDERLAY_PREFIX}");
        let gw_far_s = gw_far.to_string();
        let steps: [&[&str]; 6] = [
            &[
                "-n",
                &gw,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                UNDERLAY_DEV,
                "netns",
                &ns.name,
            ],
            &["-n", &gw, "addr", "add", &gw_cidr, "dev", &port],
            &["-n", &gw, "link", "set", &port, "up"],
            &[
                "-n",
                &ns.name,
                "addr",
                "add",
                &host_cidr,
                "dev",
                UNDERLAY_DEV,
            ],
            &["-n", &ns.name, "link", "set", UNDERLAY_DEV, "up"],
            &["-n", &ns.name, "route", "add", "default", "via", &gw_far_s],
        ];
        for args in steps {
            ip(args).map_err(|e| e.context(format!("connect far host {k}")))?;
        }
        let gw_ul_s = gw_ul.to_string();
        for h in &self.hosts {
            ip(&[
                "-n", &h.ns.name, "route", "replace", &far_net, "via", &gw_ul_s,
            ])
            .map_err(|e| e.context(format!("route host {} to the far subnet", h.k)))?;
        }
        self.hosts.push(Host {
            k,
            router: None,
            ns,
            ip: ip_k,
        });
        Ok(())
    }

    /// Host k (1-based).
    pub fn host(&self, k: usize) -> &Host {
        &self.hosts[k - 1]
    }

    pub fn host_mut(&mut self, k: usize) -> &mut Host {
        &mut self.hosts[k - 1]
    }

    /// The other hosts' underlay addresses, as `weave launch <peers>` takes them.
    pub fn peers_of(&self, k: usize) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|h| h.k != k)
            .map(|h| h.ip.to_string())
            .collect()
    }

    /// A router for host k, not started: its own data dir (or `datadir`), `args`.
    pub fn router_for(&self, k: usize, datadir: Option<&Path>, args: &[String]) -> Result<Router> {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Router::new(&self.host(k).ns.name, datadir, &refs)
    }

    /// Starts `router` on host k (replacing a running one) and waits until it is ready.
    pub fn launch(&mut self, k: usize, mut router: Router) -> Result<()> {
        let started = router.try_spawn();
        self.hosts[k - 1].router = Some(router);
        started.map_err(|e| e.context(format!("start router on host {k}")))
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
        args.extend(self.peers_of(k));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let router = Router::start(&self.hosts[k - 1].ns, &refs);
        self.hosts[k - 1].router = Some(router);
    }

    pub fn start_routers(&mut self, extra: &[&str]) {
        for k in 1..=self.hosts.len() {
            self.start_router(k, extra);
        }
    }

    /// Attaches a new container on host k through the real `weave-net` plugin (addresses from
    /// that host's router, in the flat subnet); returns its index in `containers`. Panics on
    /// failure.
    pub fn add_container(&mut self, k: usize, name: &str) -> usize {
        let conf = flat_conf();
        let ns = self
            .spec
            .netns(&format!("{k}c"))
            .unwrap_or_else(|e| panic!("{e}"));
        let id = format!("{name}-{}", ns.name);
        let plugin = crate::bins::bin("weave-net");
        self.attach(k, name, ns, &id, &plugin, &conf, &[])
            .unwrap_or_else(|e| panic!("weave-net ADD on host {k}: {e}"))
    }

    /// Attaches container namespace `ns` on host k: `plugin` ADD with `conf` on stdin and
    /// the CNI environment (plus `env`, which may override it); returns its index in
    /// `containers`. A failed ADD leaves no container behind (the namespace is deleted).
    #[allow(clippy::too_many_arguments)]
    pub fn attach(
        &mut self,
        k: usize,
        name: &str,
        ns: Netns,
        id: &str,
        plugin: &Path,
        conf: &str,
        env: &[(&str, &str)],
    ) -> Result<usize> {
        let netns_path = ns.path().display().to_string();
        let mut all = cni_env("ADD", id, &netns_path, "eth0");
        all.extend_from_slice(env);
        let run = run_plugin_in(&self.host(k).ns.name, plugin, &all, conf, PLUGIN_TIMEOUT)?;
        if run.code != 0 {
            return Err(Error::new(format!(
                "{} ADD {id}: exit {}: {}{}",
                plugin.display(),
                run.code,
                run.stdout,
                run.stderr
            )));
        }
        let ip = run.address()?;
        let mac = ns
            .check_sh("cat /sys/class/net/eth0/address")?
            .trim()
            .to_string();
        self.containers.push(Container {
            name: name.to_string(),
            host: k,
            id: id.to_string(),
            ip,
            mac,
            ns,
            listener: None,
        });
        Ok(self.containers.len() - 1)
    }

    /// Detaches container `idx` as [`Cluster::add_container`] attached it (`weave-net` DEL)
    /// and removes it. Panics on failure.
    pub fn remove_container(&mut self, idx: usize) {
        let plugin = crate::bins::bin("weave-net");
        self.detach(idx, &plugin, &flat_conf(), &[])
            .unwrap_or_else(|e| panic!("weave-net DEL: {e}"))
    }

    /// Runs `plugin` DEL for container `idx` (with `conf` and `env` as at ADD) and removes
    /// the container (its namespace and listener) whatever DEL says.
    pub fn detach(
        &mut self,
        idx: usize,
        plugin: &Path,
        conf: &str,
        env: &[(&str, &str)],
    ) -> Result<()> {
        let c = self.containers.remove(idx);
        let netns_path = c.ns.path().display().to_string();
        let mut all = cni_env("DEL", &c.id, &netns_path, "eth0");
        all.extend_from_slice(env);
        let run = run_plugin_in(
            &self.host(c.host).ns.name,
            plugin,
            &all,
            conf,
            PLUGIN_TIMEOUT,
        )?;
        if run.code != 0 {
            return Err(Error::new(format!(
                "{} DEL {}: exit {}: {}{}",
                plugin.display(),
                c.id,
                run.code,
                run.stdout,
                run.stderr
            )));
        }
        Ok(())
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

    /// Probes every ordered pair of containers with `nc -z -w 3` on [`PROBE_PORT`] (all in
    /// parallel, after starting a listener in each); returns the matrix.
    pub fn reachability(&mut self) -> Matrix {
        for c in &mut self.containers {
            c.listen();
        }
        let members: Vec<(String, String, Ipv4Addr)> = self
            .containers
            .iter()
            .map(|c| (format!("{}@h{}", c.name, c.host), c.ns.name.clone(), c.ip))
            .collect();
        nc::matrix(&members, PROBE_PORT)
    }

    /// `nc -z -w 3 ADDR PORT` from container `from`.
    pub fn probe(&self, from: usize, addr: Ipv4Addr, port: u16) -> bool {
        nc::probe(&self.containers[from].ns.name, addr, port)
    }

    /// The data dirs of the routers (for messages).
    pub fn datadirs(&self) -> Vec<PathBuf> {
        self.hosts
            .iter()
            .filter_map(|h| h.router.as_ref().map(|r| r.datadir.clone()))
            .collect()
    }
}
