//! Many real peers in this one process: each a mesh router on 127.0.0.1 (real TCP, real
//! handshakes, topology gossip and routing) with its IPAM service on the mesh's gossip
//! channel, as the daemon wires them, and its own data dir. The topology is sparse: peer i
//! dials a few earlier peers, discovery is off, so connections grow as n, not n^2. Shared by
//! the bounded test (tests/mesh_scale.rs) and the scale benchmark (benches/scale.rs).

// Each of the two users takes part of it.
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};
use weave::ipam::core as ipam_core;
use weave::ipam::ring::InitMode;
use weave::ipam::store::{DataDir, Persisted};
use weave::ipam::{IpamHandle, IpamOptions};
use weave::mesh::{MeshConfig, MeshHandle, MeshRouter, MeshTimers, PeerName};

pub struct Peer {
    pub mesh: MeshHandle,
    pub ipam: IpamHandle,
    _dir: tempfile::TempDir,
}

/// How `n` real peers came to agree.
#[derive(Debug, Clone, Copy)]
pub struct Agreement {
    pub peers: usize,
    /// Mesh connections (each counted once).
    pub connections: usize,
    /// From the first router's start until every peer knows every other.
    pub mesh_ms: f64,
    /// Of that, starting the peers: the routers one after another (the start loop), then
    /// waiting for their IPAM services; and the slowest single router start.
    pub start_ms: f64,
    pub slowest_start_ms: f64,
    /// Mesh messages until every peer knows every other, by kind: topology, broadcast,
    /// unicast.
    pub mesh_kinds: [u64; 3],
    /// Mesh messages and bytes sent until then (all peers together).
    pub mesh_messages: u64,
    pub mesh_bytes: u64,
    /// Topology gossip until then: entries received, taken in, already held, and flushes
    /// that sent news on (all peers together).
    pub topology: weave::mesh::actor::TopologyTotals,
    /// From priming one peer until every peer holds the same ring.
    pub ring_ms: f64,
    pub ring_messages: u64,
    pub ring_bytes: u64,
    /// Peers the ring was first split among.
    pub owners: usize,
}

/// Raises this process's open-file limit towards `want` (each peer holds a listener and
/// two ends of every connection here). Returns the soft limit now in force.
pub fn raise_fd_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

fn peer_name(i: usize) -> PeerName {
    PeerName::from_u64(0x0e00_0000_0000 + i as u64).expect("valid peer name")
}

/// Starts peer `i` of `n`'s mesh router, dialling `targets`.
async fn start_router(i: usize, n: usize, targets: Vec<String>) -> weave::Result<MeshHandle> {
    let any_port = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let mut c = MeshConfig::new(peer_name(i), &format!("s{i}"), any_port);
    // The router's own timers: with hundreds of peers sharing two cores, the short test
    // preset (heartbeat 0.5 s, dead after 3 s) declares busy peers dead and churns. The full
    // topology goes out every 30 s as in production: updates that arrive before the path to
    // their peer are held, not lost, so convergence does not wait for it (with it every 2 s,
    // 500 peers spent their CPU decoding whole topologies and never got there).
    c.timers = MeshTimers::default();
    c.discovery = false;
    c.targets = targets;
    // As the daemon tells it from `--ipalloc-init consensus=n`.
    c.least_peers = InitMode::consensus(n).least_peers();
    MeshRouter::start(c).await
}

/// Peer `i`'s IPAM service on `mesh`'s gossip channel, in its data dir `dir`; every peer is
/// an elector of a consensus of `n`.
async fn start_ipam(
    i: usize,
    n: usize,
    mesh: MeshHandle,
    dir: tempfile::TempDir,
) -> Result<Peer, String> {
    let fail = |e: &dyn std::fmt::Display| format!("start the IPAM service of peer {i}: {e}");
    let name = peer_name(i);
    let datadir = DataDir::open(dir.path()).map_err(|e| fail(&e))?;
    let universe = "10.32.0.0/12".parse().map_err(|e| fail(&e))?;
    let mode = InitMode::consensus(n);
    let core = ipam_core::load(name, universe, universe, mode.clone(), Persisted::default())
        .map_err(|e| fail(&e))?;
    let gossip = mesh
        .channel(weave::ipam::CHANNEL)
        .await
        .map_err(|e| fail(&e))?;
    let opts = IpamOptions {
        mode,
        ..IpamOptions::default()
    };
    let ipam = IpamHandle::spawn(core, datadir, name.to_string(), Some(gossip), opts);
    Ok(Peer {
        mesh,
        ipam,
        _dir: dir,
    })
}

/// Polls `done` every `every` until it holds or `deadline` passes.
async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    deadline: Instant,
    every: Duration,
    mut done: impl FnMut() -> F,
) -> Result<(), String> {
    while !done().await {
        if Instant::now() > deadline {
            return Err(format!("wait for {what}: timed out"));
        }
        tokio::time::sleep(every).await;
    }
    Ok(())
}

/// Starts `n` peers, each dialling up to `dials` earlier ones (always its predecessor, the
/// rest at random), waits until every peer knows every other, then primes one peer's ring and
/// waits until all hold the same ring. Everything within `limit`. Stops the peers after.
pub async fn agree(n: usize, dials: usize, limit: Duration) -> Result<Agreement, String> {
    let deadline = Instant::now() + limit;
    let mut rng = StdRng::seed_from_u64(n as u64);
    let sent = weave::mesh::connection::sent_totals();
    let kinds = weave::mesh::connection::sent_by_kind();
    let topology = weave::mesh::actor::topology_totals();
    // Every host's disk is there before its router starts: the data dirs are made before the
    // clock starts (making 500 took a tenth of the CPU of the time measured).
    let mut dirs = (0..n)
        .map(|i| tempfile::tempdir().map_err(|e| format!("make a data dir for peer {i}: {e}")))
        .collect::<Result<Vec<_>, String>>()?
        .into_iter();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    // The start loop waits only for each router to listen (the next peers dial it): the
    // IPAM service (a data dir, a round trip to the router for its channel) starts in a task
    // of its own, as on a host of its own. Awaited in the loop, those round trips queued
    // behind the running peers' gossip in this one runtime: 7 ms a start at 500 peers.
    let mut routers: Vec<MeshHandle> = Vec::with_capacity(n);
    let mut ipams = Vec::with_capacity(n);
    let mut connections = 0;
    for i in 0..n {
        let mut chosen: Vec<usize> = Vec::new();
        if i > 0 {
            chosen.push(i - 1);
        }
        while chosen.len() < dials.min(i) {
            let j = rng.random_range(0..i);
            if !chosen.contains(&j) {
                chosen.push(j);
            }
        }
        connections += chosen.len();
        let targets = chosen
            .iter()
            .map(|&j| routers[j].local_addr().to_string())
            .collect();
        let one = Instant::now();
        let mesh = start_router(i, n, targets)
            .await
            .map_err(|e| format!("start peer {i}: {e}"))?;
        slowest = slowest.max(one.elapsed());
        let dir = dirs.next().expect("a data dir per peer");
        ipams.push(tokio::spawn(start_ipam(i, n, mesh.clone(), dir)));
        routers.push(mesh);
    }
    let mut peers: Vec<Peer> = Vec::with_capacity(n);
    for (i, ipam) in ipams.into_iter().enumerate() {
        match ipam.await {
            Ok(Ok(peer)) => peers.push(peer),
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(format!("start the IPAM service of peer {i}: {e}")),
        }
    }
    let start = Start {
        at: started,
        sent,
        kinds,
        topology,
        ms: started.elapsed().as_secs_f64() * 1e3,
        slowest_ms: slowest.as_secs_f64() * 1e3,
    };
    let result = measure(&peers, n, connections, &start, deadline).await;
    for p in &peers {
        p.mesh.shutdown().await;
    }
    result
}

/// What the start loop saw: when it began, the mesh counters then, and how long starting the
/// peers took.
struct Start {
    at: Instant,
    sent: (u64, u64),
    kinds: [u64; 6],
    topology: weave::mesh::actor::TopologyTotals,
    ms: f64,
    slowest_ms: f64,
}

async fn measure(
    peers: &[Peer],
    n: usize,
    connections: usize,
    start: &Start,
    deadline: Instant,
) -> Result<Agreement, String> {
    let (m0, b0) = start.sent;
    let every = Duration::from_millis(50);
    until(
        "every peer to know every other",
        deadline,
        every,
        || async { peers.iter().all(|p| p.mesh.peers().borrow().len() == n - 1) },
    )
    .await
    .map_err(|e| {
        let known: Vec<usize> = peers
            .iter()
            .map(|p| p.mesh.peers().borrow().len())
            .collect();
        let all = known.iter().filter(|k| **k == n - 1).count();
        let least = known.iter().min().copied().unwrap_or(0);
        format!("{e} ({all} of {n} know all, the least informed knows {least})")
    })?;
    let mesh_ms = start.at.elapsed().as_secs_f64() * 1e3;
    let (m1, b1) = weave::mesh::connection::sent_totals();
    let k1 = weave::mesh::connection::sent_by_kind();
    let topology = weave::mesh::actor::topology_totals().since(&start.topology);
    let primed = Instant::now();
    let first = peers[0].ipam.clone();
    let prime = tokio::spawn(async move { first.ring().await });
    let owners = loop {
        if let Some(owners) = same_ring(peers).await {
            break owners;
        }
        if Instant::now() > deadline {
            prime.abort();
            return Err("wait for every peer to hold the same ring: timed out".into());
        }
        tokio::time::sleep(every).await;
    };
    let ring_ms = primed.elapsed().as_secs_f64() * 1e3;
    let (m2, b2) = weave::mesh::connection::sent_totals();
    prime.abort();
    Ok(Agreement {
        peers: n,
        connections,
        mesh_ms,
        start_ms: start.ms,
        slowest_start_ms: start.slowest_ms,
        // Topology 2, broadcast 3, unicast 4 (see `sent_by_kind`).
        mesh_kinds: [2, 3, 4].map(|k| k1[k] - start.kinds[k]),
        mesh_messages: m1 - m0,
        mesh_bytes: b1 - b0,
        topology,
        ring_ms,
        ring_messages: m2 - m1,
        ring_bytes: b2 - b1,
        owners,
    })
}

/// The number of ring owners when every peer holds the same non-empty ring.
async fn same_ring(peers: &[Peer]) -> Option<usize> {
    let mut first: Option<Vec<weave::ipam::core::RingEntry>> = None;
    for p in peers {
        let s = p.ipam.summary().await.ok()?;
        if s.entries.is_empty() {
            return None;
        }
        match &first {
            None => first = Some(s.entries),
            Some(f) if *f != s.entries => return None,
            Some(_) => {}
        }
    }
    let mut owners: Vec<PeerName> = first?.iter().map(|e| e.peer).collect();
    owners.sort();
    owners.dedup();
    Some(owners.len())
}
