//! The composition root: the one place that builds a router daemon out of its parts and
//! runs it. `weaver` calls [`run`]; tests call [`Daemon::start`] with an in-memory data plane
//! and serve it on loopback ports, several in one process.
//!
//! [`Daemon::start`], in order:
//! 1. the data dir (pid file, peer name, `ipam.json`, connect targets);
//! 2. the data plane (the kernel one unless one is given);
//! 3. the mesh, and a task handing its live peers to the data plane;
//! 4. the IPAM service on its gossip channel;
//! 5. weaveDNS: the records on their gossip channel, the DNS server (unless `--no-dns`);
//! 6. the [`Router`] over them (re-exposing the bridge's addresses), the sweep, and the
//!    HTTP listeners.
//!
//! A new subsystem (e.g. DNS) joins here: open its gossip channel with
//! [`MeshHandle::channel`] (name in [`crate::mesh::channel::names`]), spawn its actor with it,
//! give its handle to the router through [`Parts`] (and the API through a
//! [`crate::api::Backend`] accessor). A new data-plane path is an [`crate::dataplane::Overlay`] added to the kernel
//! data plane's switch; nothing here changes for it.

use crate::api::server;
use crate::dataplane::kernel::{KernelDataPlane, KernelOptions};
use crate::dataplane::path::PathPolicy;
use crate::dataplane::{vxlan, DataPlane};
use crate::dns::Dns;
use crate::ipam::core::{self as ipam_core, Core};
use crate::ipam::store::{self, DataDir};
use crate::ipam::{IpamHandle, IpamOptions};
use crate::mesh::{MeshConfig, MeshHandle, MeshRouter, MeshTimers};
use crate::router::{reap, sweep, Config, Parts, Router};
use crate::{Context, Result, BRIDGE_NAME};
use ipnet::{IpNet, Ipv4Net};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tokio::net::TcpListener;

/// A started daemon: its router and its bound (not yet serving) listeners.
pub struct Daemon {
    router: Arc<Router>,
    http: Option<TcpListener>,
    status: Option<TcpListener>,
}

impl Daemon {
    /// Builds every part (see the module doc); `plane` replaces the kernel data plane.
    pub async fn start(config: Config, plane: Option<Arc<dyn DataPlane>>) -> Result<Daemon> {
        config.validate()?;
        let state = open_state(&config)?;
        let plane = match plane {
            Some(p) => p,
            None => {
                let kernel = Arc::new(kernel_plane(&config).await?);
                // Containers are attached in this namespace only with the kernel plane.
                reap::start();
                kernel
            }
        };
        let mesh = start_mesh(&config, &state.peer_name, &state.targets).await?;
        let follow = plane.clone();
        tokio::spawn(crate::dataplane::follow(mesh.peers(), move |peers| {
            let plane = follow.clone();
            async move { plane.set_peers(peers).await }
        }));
        let ring_routes = plane.wants_ranges().then(|| {
            Arc::new(RingRoutes {
                plane: plane.clone(),
                universe: config.ipalloc_range,
                last: tokio::sync::Mutex::new(None),
            })
        });
        let opts = IpamOptions {
            mode: config.ipalloc_init.clone(),
            alloc_wait: config.alloc_wait,
            ring_listener: ring_routes.as_ref().map(|r| r.listener()),
            ..IpamOptions::default()
        };
        let gossip = mesh.channel(crate::ipam::CHANNEL).await?;
        let ipam = IpamHandle::spawn(
            state.core,
            state.datadir.clone(),
            state.peer_name.clone(),
            Some(gossip),
            opts,
        );
        let dns = Arc::new(start_dns(&config, &state.peer_name, &state.datadir, &mesh).await?);
        let sweep_every = config.sweep_interval;
        let (http_addr, status_addr) = (config.http_addr, config.status_addr);
        let router = Arc::new(Router::new(Parts {
            config,
            peer_name: state.peer_name,
            datadir: state.datadir,
            ipam: ipam.clone(),
            mesh,
            plane: plane.clone(),
            targets: state.targets,
            dns,
        }));
        router.reexpose().await?;
        if let Some(r) = ring_routes {
            tokio::spawn(RingRoutes::heal(Arc::downgrade(&r)));
        }
        tokio::spawn(sweep::run(ipam, plane, sweep_every));
        let http = bind(http_addr).await?;
        let status = bind(status_addr).await?;
        for l in http.iter().chain(status.iter()) {
            tracing::info!("weaver listening on {}", l.local_addr()?);
        }
        Ok(Daemon {
            router,
            http,
            status,
        })
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Where the full API listens (the real port when configured with 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Where the read-only status API listens.
    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Where the mesh listens.
    pub fn mesh_addr(&self) -> SocketAddr {
        self.router.mesh().local_addr()
    }

    /// Serves the HTTP API until `shutdown` completes, then stops the mesh and removes the
    /// pid file. The bridge, its addresses and the state files stay.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        server::serve(self.router.clone(), self.http, self.status, shutdown).await;
        self.router.mesh().shutdown().await;
        let pid = self.router.datadir().pid_path();
        if let Err(e) = std::fs::remove_file(&pid) {
            tracing::warn!("remove {}: {e}", pid.display());
        }
        tracing::info!("weaver stopped");
    }
}

/// Starts the router with the kernel data plane and serves it until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    raise_open_file_limit();
    Daemon::start(config, None).await?.serve(shutdown).await;
    Ok(())
}

/// Raises this process's soft limit on open descriptors to its hard limit: the routed
/// forwarder holds one per container port (a host with 1,000 containers outgrows the usual
/// soft 1,024). Failing to is logged; ports beyond the limit keep the bridge path.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let raised = getrlimit(Resource::RLIMIT_NOFILE).and_then(|(soft, hard)| match soft < hard {
        true => setrlimit(Resource::RLIMIT_NOFILE, hard, hard),
        false => Ok(()),
    });
    if let Err(e) = raised {
        tracing::warn!("raise the open-file limit: {e}");
    }
}

/// What the data dir gives a starting router.
struct State {
    datadir: DataDir,
    peer_name: String,
    core: Core,
    targets: Vec<String>,
}

/// Opens the data dir: pid file, peer name, IPAM state, connect targets (flags merged in).
fn open_state(config: &Config) -> Result<State> {
    let datadir = DataDir::open(&config.datadir)?;
    std::fs::write(datadir.pid_path(), format!("{}\n", std::process::id()))
        .with_context(|| format!("write {}", datadir.pid_path().display()))?;
    let peer_name = datadir.peer_name(config.name.as_deref())?;
    let (persisted, discarded) = datadir.load_ipam(&peer_name, config.ipalloc_range)?;
    if let Some(why) = discarded {
        tracing::warn!("{why}");
    }
    let core = ipam_core::load(
        peer_name.parse()?,
        config.ipalloc_range,
        config.default_subnet,
        config.ipalloc_init.clone(),
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
    let mut targets: Vec<String> = store::read_json(&datadir.targets_path())?.unwrap_or_default();
    for p in &config.peers {
        if !targets.contains(p) {
            targets.push(p.clone());
        }
    }
    store::write_json(&datadir.targets_path(), &targets)?;
    Ok(State {
        datadir,
        peer_name,
        core,
        targets,
    })
}

/// The bridge, the base iptables rules and VXLAN on the mesh port + 1.
async fn kernel_plane(config: &Config) -> Result<KernelDataPlane> {
    KernelDataPlane::start(KernelOptions {
        bridge: BRIDGE_NAME.into(),
        mtu: config.mtu,
        udp_port: vxlan::udp_port(config.port),
        protect_port: config
            .http_addr
            .filter(|a| a.ip().is_loopback())
            .map(|a| a.port()),
        range: config.ipalloc_range,
        policy: path_policy(config)?,
        encrypted_port: config.port,
        rekey: crate::sleeve::Limits {
            packets: config
                .mesh
                .rekey_after_packets
                .unwrap_or(crate::sleeve::Limits::default().packets),
            ..Default::default()
        },
        mode: config.dataplane,
        password: config
            .mesh
            .password
            .as_deref()
            .is_some_and(|p| !p.is_empty()),
    })
    .await
}

/// With a password, container traffic is encrypted except to peers in trusted subnets.
fn path_policy(config: &Config) -> Result<PathPolicy> {
    let trusted = config
        .mesh
        .trusted_subnets
        .iter()
        .map(|s| {
            s.parse::<IpNet>().map_err(|e| {
                crate::Error::new(
                    crate::ErrorKind::InvalidConfig,
                    format!("parse trusted subnet {s:?}: {e}"),
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(PathPolicy {
        encrypt: config
            .mesh
            .password
            .as_deref()
            .is_some_and(|p| !p.is_empty()),
        trusted,
    })
}

/// How often the data plane re-reads the kernel's routes even when the ring did not change
/// (someone may have deleted ours, or an update failed).
const RING_HEAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Hands the ring's owners (as CIDR blocks) to the data plane. Routes by owner
/// ([`crate::dataplane::routed`]) follow donations, `rmpeer` and resets this way: the IPAM
/// actor calls [`RingRoutes::listener`] on every change of owners and waits for it before
/// its messages leave; [`RingRoutes::heal`] re-applies the last ranges periodically.
struct RingRoutes {
    plane: Arc<dyn DataPlane>,
    universe: Ipv4Net,
    last: tokio::sync::Mutex<Option<RangesByPeer>>,
}

type RangesByPeer = std::collections::BTreeMap<crate::peer::PeerName, Vec<Ipv4Net>>;

impl RingRoutes {
    fn listener(self: &Arc<Self>) -> crate::ipam::RingListener {
        let me = self.clone();
        crate::ipam::RingListener(Arc::new(move |entries| {
            let me = me.clone();
            Box::pin(async move {
                let ranges = crate::dataplane::routed::ring_ranges(&entries, me.universe);
                me.apply(Some(ranges), false).await;
            })
        }))
    }

    /// Gives the data plane `ranges` (or the last ones again: a failed update is retried at
    /// the next heal).
    async fn apply(&self, ranges: Option<RangesByPeer>, heal: bool) {
        let mut last = self.last.lock().await;
        let Some(ranges) = ranges.or_else(|| last.clone()) else {
            return;
        };
        if let Err(e) = self.plane.set_ranges(ranges.clone(), heal).await {
            tracing::warn!("data plane: {e}");
        }
        *last = Some(ranges);
    }

    /// Re-applies the last ranges every [`RING_HEAL`], checking the kernel's routes, until
    /// the IPAM actor (which holds the listener) is gone.
    async fn heal(me: std::sync::Weak<Self>) {
        let mut every = tokio::time::interval(RING_HEAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let Some(me) = me.upgrade() else { return };
            me.apply(None, true).await;
        }
    }
}

/// The DNS records on their channel, persisted in the data dir, gossiped at the mesh's
/// interval; the server (if on) serves the allocation range and loopback.
async fn start_dns(
    config: &Config,
    peer_name: &str,
    datadir: &DataDir,
    mesh: &MeshHandle,
) -> Result<Dns> {
    let channel = mesh.channel(crate::dns::CHANNEL).await?;
    let interval = if config.mesh.fast_timers {
        MeshTimers::fast().gossip_interval
    } else {
        MeshTimers::default().gossip_interval
    };
    let allowed = vec![
        IpNet::V4(config.ipalloc_range),
        IpNet::V4(Ipv4Net::new(Ipv4Addr::LOCALHOST, 8).expect("loopback")),
    ];
    Dns::start(
        peer_name.parse()?,
        Some(datadir.path().to_path_buf()),
        Some(channel),
        interval,
        config.dns.clone(),
        allowed,
    )
    .await
    .context("start dns")
}

/// Starts the mesh on `--port` with the persisted targets.
async fn start_mesh(config: &Config, peer_name: &str, targets: &[String]) -> Result<MeshHandle> {
    let listen = SocketAddr::new(config.mesh_ip, config.port);
    let mut m = MeshConfig::new(peer_name.parse()?, &config.nickname, listen);
    m.password = config.mesh.password.clone().filter(|p| !p.is_empty());
    m.discovery = config.mesh.discovery;
    m.conn_limit = config.mesh.conn_limit;
    m.trusted_subnets = config.mesh.trusted_subnets.clone();
    m.targets = targets.to_vec();
    m.least_peers = config.ipalloc_init.least_peers();
    if config.mesh.fast_timers {
        m.timers = MeshTimers::fast();
    }
    if let Some(t) = config.mesh.handshake_timeout {
        m.timers.handshake_timeout = t;
    }
    MeshRouter::start(m).await.context("start mesh")
}

async fn bind(addr: Option<SocketAddr>) -> Result<Option<TcpListener>> {
    match addr {
        Some(a) => TcpListener::bind(a)
            .await
            .map(Some)
            .with_context(|| format!("listen on {a}")),
        None => Ok(None),
    }
}
