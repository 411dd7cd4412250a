//! The daemon's configuration: [`Config`], parsed once at the edge (`weaver`'s flags, or a
//! test building one) and checked by [`Config::validate`] before anything starts. Nothing
//! below the binary reads the environment.

use crate::ipam::ring::{InitMode, PeerName};
use crate::{Context, Error, ErrorKind, Result};
use ipnet::Ipv4Net;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

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
    /// Mesh (control) port; 0 picks a free one (in-process tests).
    pub port: u16,
    /// Address the mesh listens on: all of them, unless a test keeps it on loopback.
    pub mesh_ip: IpAddr,
    /// Initial connect targets.
    pub peers: Vec<String>,
    /// Mesh flags (password, discovery, conn-limit, trusted subnets).
    pub mesh: MeshFlags,
    /// `--ipalloc-init`, parsed ([`parse_ipalloc_init`]).
    pub ipalloc_init: InitMode,
    /// Longest an allocation waits for the ring or for space before 503.
    pub alloc_wait: Duration,
    /// Time between sweeps of attachments whose container is gone (see [`super::sweep`]).
    pub sweep_interval: Duration,
    /// The DNS server (`--dns-domain`, `--dns-ttl`, ...); `None` with `--no-dns`. The
    /// records and their gossip run either way.
    pub dns: Option<crate::dns::DnsFlags>,
    /// `--dataplane`: routed to neighbours and VXLAN to the rest (auto), or one of them.
    pub dataplane: crate::dataplane::routed::Mode,
}

impl Config {
    /// Weave's defaults with the given data dir: range `10.32.0.0/12`, API on
    /// `127.0.0.1:6784`, status on `127.0.0.1:6782`, mesh on port 6783, consensus over the
    /// peers given.
    pub fn new(datadir: impl Into<PathBuf>) -> Config {
        let range: Ipv4Net = crate::DEFAULT_IPALLOC_RANGE.parse().expect("default range");
        Config {
            name: None,
            nickname: "weave".into(),
            ipalloc_range: range,
            default_subnet: range,
            http_addr: crate::DEFAULT_HTTP_ADDR.parse().ok(),
            status_addr: crate::DEFAULT_STATUS_ADDR.parse().ok(),
            mtu: crate::DEFAULT_MTU,
            datadir: datadir.into(),
            port: crate::mesh::DEFAULT_PORT,
            mesh_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            peers: vec![],
            mesh: MeshFlags::default(),
            ipalloc_init: InitMode::consensus(1),
            alloc_wait: Duration::from_secs(3),
            sweep_interval: super::sweep::DEFAULT_INTERVAL,
            dns: Some(crate::dns::DnsFlags::default()),
            dataplane: crate::dataplane::routed::Mode::Auto,
        }
    }
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
                .map(|n| n.parse::<PeerName>().context("--ipalloc-init"))
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
    /// [`crate::mesh::MeshTimers::fast`] (tests; hidden flag).
    pub fast_timers: bool,
    /// Longest a peer may take over its handshake (hidden flag; default 10 s, 3 s with fast
    /// timers): a connection that says nothing is closed after it.
    pub handshake_timeout: Option<Duration>,
    /// Datagrams per key on the encrypted path before it rekeys (hidden flag, for tests).
    pub rekey_after_packets: Option<u64>,
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
            rekey_after_packets: None,
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
        let password = self.mesh.password.as_deref().is_some_and(|p| !p.is_empty());
        if self.dataplane == crate::dataplane::routed::Mode::Routed && password {
            return Err(invalid(
                "--dataplane routed: not with --password (the routed path is not encrypted)".into(),
            ));
        }
        if self.mtu < 576 || self.mtu > 65535 {
            return Err(invalid(format!(
                "--mtu {}: must be between 576 and 65535",
                self.mtu
            )));
        }
        for p in &self.peers {
            crate::peer::validate_target(p)?;
        }
        if let Some(d) = &self.dns {
            crate::dns::name::normalize(&d.domain).context("--dns-domain")?;
        }
        Ok(())
    }
}

pub(super) fn invalid(m: String) -> Error {
    Error::new(ErrorKind::InvalidConfig, m)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // What the mesh is told it will reach: the quorum, the seeds, or nothing.
        let least = |s: &str, initial| parse_ipalloc_init(s, initial).unwrap().least_peers();
        assert_eq!(least("consensus=500", 0), 251);
        assert_eq!(least("", 4), 3);
        assert_eq!(least("seed=02:00:00:00:00:02,02:00:00:00:00:01", 0), 2);
        assert_eq!(least("observer", 9), 0);
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
            ..Config::new("/tmp/x")
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
