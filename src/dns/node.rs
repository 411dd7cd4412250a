//! weaveDNS as one part of the router: the records actor (always: names registered here are
//! answered by every peer) and, unless `--no-dns`, the DNS server on the weave bridge's
//! addresses, port 53, answering the containers on the weave network.

use super::forward::Servers;
use super::ratelimit::QueryLimits;
use super::service::{self, DnsHandle, ServiceConfig};
use super::{DnsConfig, DnsServer};
use crate::mesh::{GossipChannel, PeerName};
use crate::Result;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The DNS server's settings (`weaver --dns-*`); absent with `--no-dns`.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsFlags {
    /// Normalised (`weave.local.`).
    pub domain: String,
    pub ttl: u32,
    /// Where the upstream resolvers are read from.
    pub resolv_conf: PathBuf,
    pub forward_timeout: Duration,
    pub limits: QueryLimits,
    /// Port on the bridge addresses (53; tests may pick another).
    pub port: u16,
}

impl Default for DnsFlags {
    fn default() -> DnsFlags {
        DnsFlags {
            domain: super::DEFAULT_DOMAIN.into(),
            ttl: super::DEFAULT_TTL,
            resolv_conf: "/etc/resolv.conf".into(),
            forward_timeout: super::forward::DEFAULT_TIMEOUT,
            limits: QueryLimits::default(),
            port: 53,
        }
    }
}

/// The records and, when on, the server.
pub struct Dns {
    records: DnsHandle,
    server: Option<(DnsServer, DnsFlags)>,
}

impl Dns {
    /// Starts the records actor on `channel` and, with `flags`, the server (no listener yet:
    /// see [`Dns::listen_on`]) serving `allowed` sources.
    pub async fn start(
        me: PeerName,
        datadir: Option<PathBuf>,
        channel: Option<GossipChannel>,
        gossip_interval: Duration,
        flags: Option<DnsFlags>,
        allowed: Vec<IpNet>,
    ) -> Result<Dns> {
        let records = service::spawn(
            ServiceConfig {
                me,
                datadir,
                gossip_interval,
            },
            channel,
        )
        .await?;
        let server = match flags {
            Some(f) => {
                let mut cfg = DnsConfig::new(vec![]);
                cfg.domain = f.domain.clone();
                cfg.ttl = f.ttl;
                cfg.upstream = Servers::ResolvConf(f.resolv_conf.clone());
                cfg.forward_timeout = f.forward_timeout;
                cfg.limits = f.limits;
                cfg.allowed_sources = allowed;
                Some((DnsServer::start(cfg, records.zone()).await?, f))
            }
            None => None,
        };
        Ok(Dns { records, server })
    }

    pub fn records(&self) -> &DnsHandle {
        &self.records
    }

    /// The domain when the server runs (what CNI results and `/domain` tell).
    pub fn domain(&self) -> Option<&str> {
        self.server.as_ref().map(|(_, f)| f.domain.as_str())
    }

    pub fn flags(&self) -> Option<&DnsFlags> {
        self.server.as_ref().map(|(_, f)| f)
    }

    /// Serves on the bridge address `ip` too, and its network's containers. A failure is
    /// logged: the router works without DNS on that address.
    pub async fn listen_on(&self, cidr: ipnet::Ipv4Net) {
        let Some((s, f)) = &self.server else { return };
        s.allow(IpNet::V4(cidr.trunc()));
        let at = SocketAddr::new(IpAddr::V4(cidr.addr()), f.port);
        if let Err(e) = s.listen(at).await {
            tracing::warn!("dns: {e}");
        }
    }

    /// Stops serving on `ip` (hidden from the bridge).
    pub fn unlisten(&self, ip: Ipv4Addr) {
        if let Some((s, _)) = &self.server {
            s.unlisten(IpAddr::V4(ip));
        }
    }

    /// The addresses the server listens on.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.server
            .as_ref()
            .map(|(s, _)| s.local_addrs())
            .unwrap_or_default()
    }

    /// `/metrics` lines (none without a server).
    pub fn metrics_text(&self) -> String {
        self.server
            .as_ref()
            .map(|(s, _)| s.metrics().render())
            .unwrap_or_default()
    }

    /// The server's counters, if it runs.
    pub fn metrics(&self) -> Option<Arc<super::DnsMetrics>> {
        self.server.as_ref().map(|(s, _)| s.metrics())
    }
}
