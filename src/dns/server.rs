//! The DNS server: UDP and TCP listeners on the given addresses (the router passes the weave
//! bridge's), answering from the current [`Zone`] and forwarding the rest.
//!
//! Every resource a client can make us spend is bounded: queries per source (token buckets
//! in a bounded table), forwards in flight (beyond: SERVFAIL at once), TCP connections (beyond:
//! closed at once), TCP idle time, packet sizes. Sources outside the served networks get
//! REFUSED. Everything counted in [`DnsMetrics`].

use super::answer::{fit_udp, Answerer, Verdict};
use super::forward::{Servers, Upstream};
use super::metrics::DnsMetrics;
use super::ratelimit::{QueryLimits, RateLimiter};
use super::store::Zone;
use crate::{Context, Result};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// The current zone, swapped whole when records change; readers take a cheap `Arc`.
#[derive(Debug, Default)]
pub struct ZoneCell(RwLock<Arc<Zone>>);

impl ZoneCell {
    pub fn new(z: Zone) -> ZoneCell {
        ZoneCell(RwLock::new(Arc::new(z)))
    }

    pub fn load(&self) -> Arc<Zone> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn store(&self, z: Zone) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(z);
    }
}

/// How the server runs (from `weaver`'s flags).
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// UDP and TCP on each; port 0 picks one (the same for both).
    pub listen: Vec<SocketAddr>,
    pub domain: String,
    pub ttl: u32,
    pub upstream: Servers,
    pub forward_timeout: Duration,
    pub limits: QueryLimits,
    /// Sources served; others get REFUSED. Empty: everyone.
    pub allowed_sources: Vec<IpNet>,
    pub max_tcp_connections: usize,
    pub tcp_idle: Duration,
    pub max_forwards: usize,
    /// Tasks receiving on each UDP socket.
    pub udp_workers: usize,
}

impl DnsConfig {
    pub fn new(listen: Vec<SocketAddr>) -> DnsConfig {
        DnsConfig {
            listen,
            domain: super::DEFAULT_DOMAIN.into(),
            ttl: super::DEFAULT_TTL,
            upstream: Servers::ResolvConf("/etc/resolv.conf".into()),
            forward_timeout: super::forward::DEFAULT_TIMEOUT,
            limits: QueryLimits::default(),
            allowed_sources: vec![],
            max_tcp_connections: 256,
            tcp_idle: Duration::from_secs(10),
            max_forwards: 512,
            udp_workers: 2,
        }
    }
}

struct Shared {
    answerer: Answerer,
    zone: Arc<ZoneCell>,
    metrics: Arc<DnsMetrics>,
    limiter: Mutex<RateLimiter>,
    upstream: Upstream,
    forwards: Arc<Semaphore>,
    /// Empty: everyone.
    allowed: RwLock<Vec<IpNet>>,
    tcp_idle: Duration,
}

impl Shared {
    /// Rate limit first (cheapest), then the source check.
    fn admit(&self, src: IpAddr) -> Admit {
        let ok = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(src, Instant::now());
        if !ok {
            DnsMetrics::inc(&self.metrics.rate_limited);
            return Admit::Drop;
        }
        let src = match src {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(src),
            v4 => v4,
        };
        let allowed = self.allowed.read().unwrap_or_else(|e| e.into_inner());
        if allowed.is_empty() || allowed.iter().any(|n| n.contains(&src)) {
            Admit::Serve
        } else {
            Admit::Refuse
        }
    }

    fn refuse(&self, packet: &[u8]) -> Option<Vec<u8>> {
        DnsMetrics::inc(&self.metrics.refused_source);
        let m = hickory_proto::op::Message::from_vec(packet).ok()?;
        (m.metadata.message_type == hickory_proto::op::MessageType::Query)
            .then(|| self.answerer.refused(&m))
    }

    /// Answers one query (forwarding if need be); `None` when nothing is to be sent.
    async fn respond(&self, packet: &[u8], src: IpAddr, udp: bool) -> Option<Vec<u8>> {
        match self.admit(src) {
            Admit::Drop => return None,
            Admit::Refuse => return self.refuse(packet),
            Admit::Serve => {}
        }
        let zone = self.zone.load();
        match self.answerer.answer(packet, &zone, udp) {
            Verdict::Reply(b, o) => {
                self.metrics.count(o);
                Some(b)
            }
            Verdict::Drop => {
                DnsMetrics::inc(&self.metrics.dropped);
                None
            }
            Verdict::Forward(q) => Some(self.forward(packet, &q, udp).await),
        }
    }

    async fn forward(&self, packet: &[u8], q: &hickory_proto::op::Message, udp: bool) -> Vec<u8> {
        DnsMetrics::inc(&self.metrics.forwarded);
        let Ok(_permit) = self.forwards.clone().try_acquire_owned() else {
            DnsMetrics::inc(&self.metrics.forward_overload);
            DnsMetrics::inc(&self.metrics.servfail);
            return self.answerer.servfail(q);
        };
        let got = if udp {
            self.upstream.query_udp(packet).await
        } else {
            self.upstream.query_tcp(packet).await
        };
        match got {
            Ok(a) if udp => fit_udp(q, a),
            Ok(a) => a,
            Err(e) => {
                tracing::debug!("dns: {e}");
                DnsMetrics::inc(&self.metrics.servfail);
                self.answerer.servfail(q)
            }
        }
    }
}

enum Admit {
    Serve,
    Refuse,
    Drop,
}

/// A running server; dropping it stops the listeners. Listeners can be added and removed
/// while it runs (the router follows the weave bridge's addresses).
pub struct DnsServer {
    shared: Arc<Shared>,
    tcp_slots: Arc<Semaphore>,
    udp_workers: usize,
    listeners: std::sync::Mutex<Vec<Listener>>,
}

struct Listener {
    /// What was asked for (port 0 included), and what was bound.
    asked: SocketAddr,
    bound: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl DnsServer {
    /// Binds every listener in `cfg.listen` (a busy address fails here) and starts serving.
    pub async fn start(cfg: DnsConfig, zone: Arc<ZoneCell>) -> Result<DnsServer> {
        let answerer = Answerer::new(&cfg.domain, cfg.ttl)?;
        let exclude: Vec<SocketAddr> = cfg.listen.clone();
        let shared = Arc::new(Shared {
            answerer,
            zone,
            metrics: Arc::new(DnsMetrics::default()),
            limiter: Mutex::new(RateLimiter::new(cfg.limits, Instant::now())),
            upstream: Upstream::new(cfg.upstream.clone(), exclude, cfg.forward_timeout),
            forwards: Arc::new(Semaphore::new(cfg.max_forwards.max(1))),
            allowed: RwLock::new(cfg.allowed_sources.clone()),
            tcp_idle: cfg.tcp_idle,
        });
        let server = DnsServer {
            shared,
            tcp_slots: Arc::new(Semaphore::new(cfg.max_tcp_connections.max(1))),
            udp_workers: cfg.udp_workers.max(1),
            listeners: std::sync::Mutex::new(Vec::new()),
        };
        for addr in &cfg.listen {
            server.listen(*addr).await?;
        }
        Ok(server)
    }

    /// Serves UDP and TCP on `addr` too; already listening there is fine. Returns the
    /// address bound.
    pub async fn listen(&self, addr: SocketAddr) -> Result<SocketAddr> {
        let same = |l: &&Listener| l.bound == addr || (l.asked == addr && addr.port() != 0);
        if let Some(l) = self.lock().iter().find(same) {
            return Ok(l.bound);
        }
        let (udp, tcp) = bind_pair(addr).await?;
        let bound = udp.local_addr()?;
        self.shared.upstream.exclude(bound);
        tracing::info!("dns: listening on {bound} (udp, tcp)");
        let udp = Arc::new(udp);
        let mut tasks: Vec<JoinHandle<()>> = (0..self.udp_workers)
            .map(|_| tokio::spawn(udp_loop(udp.clone(), self.shared.clone())))
            .collect();
        tasks.push(tokio::spawn(tcp_loop(
            tcp,
            self.shared.clone(),
            self.tcp_slots.clone(),
        )));
        self.lock().push(Listener {
            asked: addr,
            bound,
            tasks,
        });
        Ok(bound)
    }

    /// Stops serving on `ip` (every port); true if something listened there.
    pub fn unlisten(&self, ip: IpAddr) -> bool {
        let mut ls = self.lock();
        let before = ls.len();
        ls.retain(|l| l.bound.ip() != ip);
        if ls.len() != before {
            tracing::info!("dns: stopped listening on {ip}");
        }
        ls.len() != before
    }

    /// Serves sources in `net` too (when the served sources are restricted at all).
    pub fn allow(&self, net: IpNet) {
        let mut a = self
            .shared
            .allowed
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if !a.is_empty() && !a.contains(&net) {
            a.push(net);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Listener>> {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The addresses actually bound (the real ports when configured with 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.lock().iter().map(|l| l.bound).collect()
    }

    pub fn metrics(&self) -> Arc<DnsMetrics> {
        self.shared.metrics.clone()
    }
}

/// UDP and TCP on the same address and port (with port 0: a port free for both).
async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("listen on udp {addr}"))?;
        let at = udp.local_addr()?;
        match TcpListener::bind(at).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => return Err(crate::Error::from(e).context(format!("listen on tcp {at}"))),
        }
    }
    Err(crate::Error::from(last.expect("tried")).context(format!("listen on tcp {addr}")))
}

async fn udp_loop(sock: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, src) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors of earlier sends surface here; nothing is wrong with us.
                tracing::debug!("dns: udp receive: {e}");
                continue;
            }
        };
        DnsMetrics::inc(&shared.metrics.udp_queries);
        let packet = &buf[..n];
        // Local answers inline (no task per query); forwards in their own task so one slow
        // upstream never holds up local answers.
        let local = {
            let zone = shared.zone.load();
            match shared.admit(src.ip()) {
                Admit::Drop => continue,
                Admit::Refuse => Err(shared.refuse(packet)),
                Admit::Serve => Ok(shared.answerer.answer(packet, &zone, true)),
            }
        };
        let reply = match local {
            Err(refused) => refused,
            Ok(Verdict::Reply(b, o)) => {
                shared.metrics.count(o);
                Some(b)
            }
            Ok(Verdict::Drop) => {
                DnsMetrics::inc(&shared.metrics.dropped);
                None
            }
            Ok(Verdict::Forward(q)) => {
                let (sock, shared, packet) = (sock.clone(), shared.clone(), packet.to_vec());
                tokio::spawn(async move {
                    let a = shared.forward(&packet, &q, true).await;
                    let _ = sock.send_to(&a, src).await;
                });
                None
            }
        };
        if let Some(b) = reply {
            if let Err(e) = sock.send_to(&b, src).await {
                tracing::debug!("dns: udp send to {src}: {e}");
            }
        }
    }
}

async fn tcp_loop(listener: TcpListener, shared: Arc<Shared>, slots: Arc<Semaphore>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("dns: tcp accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            DnsMetrics::inc(&shared.metrics.tcp_rejected);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = tcp_conn(stream, peer.ip(), &shared).await {
                tracing::debug!("dns: tcp {peer}: {e}");
            }
            drop(permit);
        });
    }
}

/// Length-prefixed queries on one connection until the client is idle for `tcp_idle`.
async fn tcp_conn(mut s: TcpStream, peer: IpAddr, shared: &Shared) -> std::io::Result<()> {
    let idle = shared.tcp_idle;
    loop {
        let len = match tokio::time::timeout(idle, s.read_u16()).await {
            Ok(Ok(n)) => n as usize,
            _ => return Ok(()),
        };
        let mut q = vec![0u8; len];
        match tokio::time::timeout(idle, s.read_exact(&mut q)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        DnsMetrics::inc(&shared.metrics.tcp_queries);
        let Some(a) = shared.respond(&q, peer, false).await else {
            continue;
        };
        let Ok(n) = u16::try_from(a.len()) else {
            continue;
        };
        let mut framed = n.to_be_bytes().to_vec();
        framed.extend_from_slice(&a);
        tokio::time::timeout(idle, s.write_all(&framed))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
