//! The `weaver` daemon core: configuration, the bridge, expose/NAT, the VXLAN data plane,
//! the multi-host IPAM actor, the mesh, connect targets and CNI attachments. [`run`] starts everything and serves
//! the HTTP API until the shutdown future completes.

pub mod datapath;
mod ipam_actor;
pub mod ipam_core;
pub mod iptables;
pub mod state;
pub mod status;
pub mod sweep;

use crate::api::Attachment;
use crate::ipam::ring::{InitMode, PeerName as RingPeer};
use crate::ipam::store::{self, DataDir};
use crate::ipam::validate_id;
use crate::netlink::Netlink;
use crate::{Context, Error, ErrorKind, Result, BRIDGE_NAME, EXPOSE_ID};
use ipnet::Ipv4Net;
use state::{IpamHandle, IpamOptions};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Daemon settings (from `weaver`'s flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// Peer name (`aa:bb:cc:dd:ee:ff`); stored or random when absent.
    pub name: Option<String>,
    pub nickname: String,
    pub ipalloc_range: Ipv4Net,
    pub default_subnet: Ipv4Net,
    /// Full API listener; `None` disables it.
    pub http_addr: Option<SocketAddr>,
    /// Read-only status listener; `None` disables it.
    pub status_addr: Option<SocketAddr>,
    pub mtu: u32,
    pub datadir: PathBuf,
    /// Mesh (control) port; the mesh listens on all addresses.
    pub port: u16,
    /// Initial connect targets.
    pub peers: Vec<String>,
    /// Mesh flags (password, discovery, conn-limit, trusted subnets).
    pub mesh: MeshFlags,
    /// `--ipalloc-init`: `consensus[=N]`, `seed=<names>`, `observer`; "" is consensus over
    /// the initial peers.
    pub ipalloc_init: String,
    /// Longest an allocation waits for the ring or for space before 503.
    pub alloc_wait: std::time::Duration,
}

/// Parses `--ipalloc-init`. Without N, the quorum counts us and the initial peers, as Weave.
pub fn parse_ipalloc_init(s: &str, initial_peers: usize) -> Result<InitMode> {
    let bad = || {
        invalid(format!(
            "--ipalloc-init {s:?}: want consensus[=N], seed=<peer names> or observer"
        ))
    };
    match s.split_once('=') {
        None if s.is_empty() || s == "consensus" => Ok(InitMode::consensus(initial_peers + 1)),
        None if s == "observer" => Ok(InitMode::Observer),
        Some(("consensus", n)) => match n.parse::<usize>() {
            Ok(n) if n > 0 => Ok(InitMode::consensus(n)),
            _ => Err(bad()),
        },
        Some(("seed", names)) => {
            let mut seeds = names
                .split(',')
                .map(|n| {
                    n.parse::<RingPeer>()
                        .map_err(|e| invalid(format!("--ipalloc-init: {e}")))
                })
                .collect::<Result<Vec<_>>>()?;
            seeds.sort();
            seeds.dedup();
            if seeds.is_empty() {
                return Err(bad());
            }
            Ok(InitMode::Seed(seeds))
        }
        _ => Err(bad()),
    }
}

/// `weaver`'s mesh flags.
#[derive(Debug, Clone)]
pub struct MeshFlags {
    pub password: Option<String>,
    pub discovery: bool,
    pub conn_limit: usize,
    pub trusted_subnets: Vec<String>,
    /// Short heartbeats, dead-peer detection and reconnect backoff (tests; hidden flag).
    pub fast_timers: bool,
    /// Longest a peer may take over its handshake (hidden flag; default 10 s, 3 s with fast
    /// timers): a connection that says nothing is closed after it.
    pub handshake_timeout: Option<std::time::Duration>,
}

impl Default for MeshFlags {
    fn default() -> MeshFlags {
        MeshFlags {
            password: None,
            discovery: true,
            conn_limit: crate::mesh::DEFAULT_CONN_LIMIT,
            trusted_subnets: vec![],
            fast_timers: false,
            handshake_timeout: None,
        }
    }
}

impl Config {
    /// Checks what the flags cannot: the range is CIDR-aligned, the subnet lies inside it, the
    /// peers are `host[:port]`.
    pub fn validate(&self) -> Result<()> {
        let r = self.ipalloc_range;
        if r.addr() != r.network() {
            return Err(invalid(format!(
                "--ipalloc-range {r}: must be CIDR-aligned (bits after the prefix set)"
            )));
        }
        if !r.contains(&self.default_subnet) {
            return Err(invalid(format!(
                "--ipalloc-default-subnet {}: must lie inside --ipalloc-range {r}",
                self.default_subnet
            )));
        }
        crate::ipam::validate_subnet(self.default_subnet, r).context("--ipalloc-default-subnet")?;
        parse_ipalloc_init(&self.ipalloc_init, self.peers.len())?;
        if self.mtu < 576 || self.mtu > 65535 {
            return Err(invalid(format!(
                "--mtu {}: must be between 576 and 65535",
                self.mtu
            )));
        }
        for p in &self.peers {
            validate_peer(p)?;
        }
        Ok(())
    }
}

fn invalid(m: String) -> Error {
    Error::new(ErrorKind::InvalidConfig, m)
}

/// Accepts `host`, `host:port` and `[v6]:port`, with Weave's message otherwise.
pub fn validate_peer(peer: &str) -> Result<()> {
    let bad = || invalid(format!("invalid peer name {peer:?}, should be host[:port]"));
    let (host, port) = if let Some(rest) = peer.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (h, None),
            _ => (h, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match peer.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (peer, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Checks what a plugin says about an attachment before it is recorded.
pub fn validate_attachment(a: &Attachment) -> Result<()> {
    validate_id(&a.container_id)?;
    if a.ifname.is_empty() || a.ifname.len() > 15 || a.ifname.contains(['/', ' ']) {
        return Err(invalid(format!("invalid interface name {:?}", a.ifname)));
    }
    Ok(())
}

/// The running daemon's state, shared by the HTTP handlers.
pub struct Router {
    pub config: Config,
    pub peer_name: String,
    pub datadir: DataDir,
    pub ipam: IpamHandle,
    /// The peer mesh (gossip API for IPAM and the data plane).
    pub mesh: crate::mesh::MeshHandle,
    targets: Mutex<Vec<String>>,
    /// Also serializes expose/hide, so check-then-add on rules cannot race.
    netlink: Mutex<Netlink>,
    bridge_index: u32,
}

impl Router {
    /// Prepares everything but the listeners: data dir, pid file, state, bridge, iptables,
    /// re-exposing bridge addresses.
    pub async fn start(config: Config) -> Result<Arc<Router>> {
        config.validate()?;
        let datadir = DataDir::open(&config.datadir)?;
        std::fs::write(datadir.pid_path(), format!("{}\n", std::process::id()))
            .with_context(|| format!("write {}", datadir.pid_path().display()))?;
        let peer_name = datadir.peer_name(config.name.as_deref())?;
        let (persisted, discarded) = datadir.load_ipam(&peer_name, config.ipalloc_range)?;
        if let Some(why) = discarded {
            tracing::warn!("{why}");
        }
        let mode = parse_ipalloc_init(&config.ipalloc_init, config.peers.len())?;
        let me: RingPeer = peer_name.parse().map_err(invalid)?;
        let core = ipam_core::load(
            me,
            config.ipalloc_range,
            config.default_subnet,
            mode.clone(),
            persisted,
        )
        .context("load ipam state")?;
        tracing::info!(
            "ipam: {} ids, {} addresses in use in {} ({})",
            core.owned().len(),
            core.active(),
            config.ipalloc_range,
            if core.alloc.has_ring() {
                "ring restored"
            } else {
                "no ring yet"
            }
        );

        let mut targets: Vec<String> =
            store::read_json(&datadir.targets_path())?.unwrap_or_default();
        for p in &config.peers {
            if !targets.contains(p) {
                targets.push(p.clone());
            }
        }
        store::write_json(&datadir.targets_path(), &targets)?;

        let netlink = Netlink::open().context("open netlink")?;
        let bridge = netlink
            .ensure_bridge(BRIDGE_NAME, config.mtu)
            .await
            .context("ensure bridge")?;
        let protect = config
            .http_addr
            .filter(|a| a.ip().is_loopback())
            .map(|a| a.port());
        let range = config.ipalloc_range;
        blocking(move || iptables::configure_base(protect, range))
            .await
            .context("configure iptables")?;

        let mesh = start_mesh(&config, &peer_name, &targets).await?;
        // The data plane: VXLAN on port+1, flooding to every live peer as the mesh sees them.
        let dp = datapath::Datapath::ensure(
            &netlink,
            bridge.index,
            datapath::udp_port(config.port),
            config.mtu,
            None,
        )
        .await
        .context("start data plane")?;
        let dp_netlink = Netlink::open().context("open netlink")?;
        tokio::spawn(dp.follow(dp_netlink, mesh.peers()));
        let opts = IpamOptions {
            mode,
            alloc_wait: config.alloc_wait,
            ..IpamOptions::default()
        };
        let ipam = IpamHandle::spawn(
            core,
            datadir.clone(),
            peer_name.clone(),
            Some(mesh.clone()),
            opts,
        );
        let router = Arc::new(Router {
            mesh,
            ipam,
            config,
            peer_name,
            datadir,
            targets: Mutex::new(targets),
            netlink: Mutex::new(netlink),
            bridge_index: bridge.index,
        });
        router.reexpose().await?;
        Ok(router)
    }

    /// Re-applies NAT for the bridge's addresses and records them as `weave:expose`'s.
    async fn reexpose(&self) -> Result<()> {
        let addrs = self
            .netlink
            .lock()
            .await
            .addresses_v4(self.bridge_index)
            .await
            .context("list bridge addresses")?;
        let mut claims = Vec::new();
        for cidr in addrs {
            tracing::info!("re-exposing {cidr}");
            if let Err(e) = self.expose(cidr, false).await {
                tracing::warn!("re-expose {cidr}: {e}");
            }
            if self.config.ipalloc_range.contains(&cidr.addr()) {
                claims.push(cidr);
            }
        }
        // Claims may wait for the ring (other peers): retry in the background, never block
        // the start.
        let ipam = self.ipam.clone();
        tokio::spawn(async move {
            for cidr in claims {
                for attempt in 1..=20 {
                    match ipam.claim(EXPOSE_ID, cidr).await {
                        Ok(_) => break,
                        Err(e) if e.kind() == ErrorKind::TryAgainLater && attempt < 20 => {
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        }
                        Err(e) => {
                            tracing::warn!("claim bridge address {cidr}: {e}");
                            break;
                        }
                    }
                }
            }
        });
        Ok(())
    }

    /// Puts `cidr` on the bridge and, unless `skip_nat`, masquerades it.
    pub async fn expose(&self, cidr: Ipv4Net, skip_nat: bool) -> Result<()> {
        let nl = self.netlink.lock().await;
        nl.add_address(self.bridge_index, cidr)
            .await
            .with_context(|| format!("add {cidr} to bridge"))?;
        blocking(move || iptables::expose(cidr, skip_nat)).await
    }

    /// Takes `cidr` off the bridge and removes its rules.
    pub async fn hide(&self, cidr: Ipv4Net) -> Result<()> {
        let nl = self.netlink.lock().await;
        nl.delete_address(self.bridge_index, cidr)
            .await
            .with_context(|| format!("remove {cidr} from bridge"))?;
        blocking(move || iptables::hide(cidr)).await
    }

    pub async fn targets(&self) -> Vec<String> {
        self.targets.lock().await.clone()
    }

    /// `POST /connect`: adds (or with `replace`, sets) targets; persisted before answering.
    pub async fn connect(&self, peers: &[String], replace: bool) -> Result<()> {
        let errors: Vec<String> = peers
            .iter()
            .filter_map(|p| validate_peer(p).err())
            .map(|e| e.to_string())
            .collect();
        if !errors.is_empty() {
            return Err(invalid(errors.join("\n")));
        }
        self.update_targets(|t| {
            if replace {
                t.clear();
            }
            for p in peers {
                if !t.contains(p) {
                    t.push(p.clone());
                }
            }
        })
        .await?;
        self.mesh.connect(peers.to_vec(), replace).await
    }

    /// `POST /forget`.
    pub async fn forget(&self, peers: &[String]) -> Result<()> {
        self.update_targets(|t| t.retain(|x| !peers.contains(x)))
            .await?;
        self.mesh.forget(peers.to_vec()).await
    }

    async fn update_targets(&self, change: impl FnOnce(&mut Vec<String>)) -> Result<()> {
        let mut guard = self.targets.lock().await;
        let mut next = guard.clone();
        change(&mut next);
        let path = self.datadir.targets_path();
        let copy = next.clone();
        blocking(move || store::write_json(&path, &copy))
            .await
            .context("save targets")?;
        *guard = next;
        Ok(())
    }

    pub async fn attachments(&self) -> Result<Vec<Attachment>> {
        self.ipam.attachments().await
    }

    /// Inserts or replaces the attachment with the same (container id, ifname).
    pub async fn upsert_attachment(&self, a: Attachment) -> Result<()> {
        validate_attachment(&a)?;
        self.ipam.put_attachment(a).await
    }

    /// Removes the attachment; absent is fine.
    pub async fn remove_attachment(&self, container_id: &str, ifname: &str) -> Result<()> {
        self.ipam.remove_attachment(container_id, ifname).await
    }

    /// A snapshot for the status pages.
    pub async fn view(&self) -> Result<status::View> {
        Ok(status::View {
            peer_name: self.peer_name.clone(),
            nickname: self.config.nickname.clone(),
            port: self.config.port,
            targets: self.targets().await,
            mesh: Some(self.mesh.status().await?),
            ipam: self.ipam.summary().await?,
            attachments: self.attachments().await?,
            pid: std::process::id(),
            datadir: self.datadir.path().display().to_string(),
            http_addr: self
                .config
                .http_addr
                .map(|a| a.to_string())
                .unwrap_or_default(),
        })
    }
}

/// Starts the mesh on `--port` (all addresses) with the persisted targets.
async fn start_mesh(
    config: &Config,
    peer_name: &str,
    targets: &[String],
) -> Result<crate::mesh::MeshHandle> {
    let name: crate::mesh::PeerName = peer_name.parse()?;
    let listen = SocketAddr::from(([0, 0, 0, 0], config.port));
    let mut m = crate::mesh::MeshConfig::new(name, &config.nickname, listen);
    m.password = config.mesh.password.clone().filter(|p| !p.is_empty());
    m.discovery = config.mesh.discovery;
    m.conn_limit = config.mesh.conn_limit;
    m.trusted_subnets = config.mesh.trusted_subnets.clone();
    m.targets = targets.to_vec();
    if config.mesh.fast_timers {
        use std::time::Duration;
        m.timers = crate::mesh::MeshTimers {
            heartbeat: Duration::from_millis(500),
            dead_after: Duration::from_secs(3),
            gossip_interval: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(3),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(2),
            backoff_reset: Duration::from_secs(5),
        };
    }
    if let Some(t) = config.mesh.handshake_timeout {
        m.timers.handshake_timeout = t;
    }
    crate::mesh::MeshRouter::start(m)
        .await
        .context("start mesh")
}

/// Runs blocking work (iptables, fsync) off the runtime's workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::Internal, format!("blocking task: {e}")))?
}

/// Starts the router, serves its listeners until `shutdown` completes, removes the pid file.
/// The bridge, its addresses and the state files stay.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (http_addr, status_addr) = (config.http_addr, config.status_addr);
    let router = Router::start(config).await?;
    tokio::spawn(sweep::run(router.clone(), sweep::interval_from_env()));
    let bind = |a: Option<SocketAddr>| async move {
        match a {
            Some(a) => tokio::net::TcpListener::bind(a)
                .await
                .map(Some)
                .with_context(|| format!("listen on {a}")),
            None => Ok(None),
        }
    };
    let http = bind(http_addr).await?;
    let status = bind(status_addr).await?;
    for l in http.iter().chain(status.iter()) {
        tracing::info!("weaver listening on {}", l.local_addr()?);
    }
    crate::api::server::serve(router.clone(), http, status, shutdown).await;
    router.mesh.shutdown().await;
    let pid = router.datadir.pid_path();
    if let Err(e) = std::fs::remove_file(&pid) {
        tracing::warn!("remove {}: {e}", pid.display());
    }
    tracing::info!("weaver stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_validation() {
        for ok in [
            "10.0.0.1",
            "host-a",
            "host.example:6783",
            "[fe80::1]:6783",
            "[fe80::1]",
        ] {
            validate_peer(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["", "x:y", "a:0", "a:70000", "a b", "a/b", "[::1]x", ":6783"] {
            let e = validate_peer(bad).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("invalid peer name {bad:?}, should be host[:port]")
            );
        }
    }

    #[test]
    fn ipalloc_init_modes() {
        assert_eq!(
            parse_ipalloc_init("", 0).unwrap(),
            InitMode::Consensus { quorum: 1 }
        );
        // Weave: (initial peers + 1) / 2 + 1.
        assert_eq!(
            parse_ipalloc_init("consensus", 2).unwrap(),
            InitMode::Consensus { quorum: 2 }
        );
        assert_eq!(
            parse_ipalloc_init("consensus=5", 0).unwrap(),
            InitMode::Consensus { quorum: 3 }
        );
        assert_eq!(
            parse_ipalloc_init("observer", 3).unwrap(),
            InitMode::Observer
        );
        let seed = parse_ipalloc_init("seed=02:00:00:00:00:02,02:00:00:00:00:01", 0).unwrap();
        let names: Vec<String> = match seed {
            InitMode::Seed(v) => v.iter().map(|p| p.to_string()).collect(),
            other => panic!("{other:?}"),
        };
        assert_eq!(names, ["02:00:00:00:00:01", "02:00:00:00:00:02"]);
        for bad in ["consensus=0", "consensus=x", "seed=", "seed=nope", "vote"] {
            assert!(parse_ipalloc_init(bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_validation() {
        let mut c = Config {
            name: None,
            nickname: "h".into(),
            ipalloc_range: "10.32.0.0/12".parse().unwrap(),
            default_subnet: "10.32.0.0/12".parse().unwrap(),
            http_addr: None,
            status_addr: None,
            mtu: 1376,
            datadir: "/tmp/x".into(),
            port: 6783,
            peers: vec![],
            mesh: MeshFlags::default(),
            ipalloc_init: String::new(),
            alloc_wait: std::time::Duration::from_secs(3),
        };
        c.validate().unwrap();
        c.ipalloc_range = "10.32.0.1/12".parse().unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("CIDR-aligned"));
        c.ipalloc_range = "10.32.0.0/12".parse().unwrap();
        c.default_subnet = "10.64.0.0/16".parse().unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("inside"));
        c.default_subnet = "10.33.0.0/16".parse().unwrap();
        c.validate().unwrap();
    }
}
