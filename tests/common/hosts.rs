//! The multi-host fixture: N simulated hosts (`wvt-mh<k>-*` namespaces) on one underlay
//! (a `wvt-mhul-*` namespace holding a bridge), each with its own `weaver`, containers
//! attached by the real `weave-net` plugin, link cuts, and an `nc` reachability matrix,
//! all from the shared kit (`weave_testkit::cluster`); here only what needs the `weave`
//! library: netlink and the data plane inside a host, and the router API calls the
//! three-host tests share.
//!
//! Include it next to `common`: `mod common; #[path = "common/hosts.rs"] mod hosts;`.
//! Everything is deleted on drop (namespaces, the processes inside them, data dirs).
#![allow(dead_code, unused_imports)]

pub use weave_testkit::cluster::{
    host_range, mesh_peer_name, underlay_ip, Cluster, Container, Host, FLAT_SUBNET, PROBE_PORT,
    UNDERLAY_DEV, UNDERLAY_PREFIX,
};
pub use weave_testkit::nc::Matrix;

use crate::common::{in_ns, Router, RouterApi};
use std::net::Ipv4Addr;
use std::time::Duration;
use weave::dataplane::vxlan::{self as datapath, Datapath};
use weave::netlink::Netlink;

/// Netlink and the data plane inside a simulated host.
pub trait HostNetlink {
    /// Runs `f` with a netlink connection inside this host (on its own thread and runtime).
    fn netlink<T: Send + 'static>(&self, f: impl AsyncFnOnce(&Netlink) -> T + Send + 'static) -> T;

    /// Sets up the data plane on this host's `weave` bridge flooding to `peers`.
    fn datapath(&self, peers: &[Ipv4Addr]) -> Datapath;
}

impl HostNetlink for Host {
    fn netlink<T: Send + 'static>(&self, f: impl AsyncFnOnce(&Netlink) -> T + Send + 'static) -> T {
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

    fn datapath(&self, peers: &[Ipv4Addr]) -> Datapath {
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

/// The data plane on every host of a cluster.
pub trait ClusterDatapaths {
    /// On every host, the data plane flooding to every other host.
    fn datapaths(&self) -> Vec<Datapath>;
}

impl ClusterDatapaths for Cluster {
    fn datapaths(&self) -> Vec<Datapath> {
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

pub use crate::common::eventually;

/// Three meshed hosts (plus `extra` router flags) whose ring exists on every one.
pub fn cluster3(extra: &[&str]) -> Cluster {
    meshed_cluster(3, extra)
}

/// `n` meshed hosts (plus `extra` router flags) whose ring exists on every one.
pub fn meshed_cluster(n: usize, extra: &[&str]) -> Cluster {
    let mut c = Cluster::new(n);
    for k in 1..=n {
        c.start_meshed_router(k, extra);
    }
    for k in 1..=n {
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
