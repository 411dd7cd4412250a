//! Forwarding of names that are not ours to the host's resolvers (`nameserver` lines of
//! `/etc/resolv.conf`, re-read when the file changes), with one deadline for the whole
//! exchange: the caller answers SERVFAIL when it passes, never hangs.
//!
//! Each UDP forward uses its own socket (a fresh source port) and a fresh random ID, and
//! takes only an answer with that ID from that server, so a spoofed answer must guess both.

use crate::{Context, Error, ErrorKind, Result};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Default deadline of one forwarded query (all servers tried within it).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// The resolver file is checked for changes at most this often.
const RECHECK: Duration = Duration::from_secs(5);

/// The `nameserver` addresses of a resolv.conf text (port 53).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then(|| w.next())?
        })
        // A scope suffix (fe80::1%eth0) is not something we can dial portably: skip it.
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_unspecified())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Where upstream resolvers come from.
#[derive(Debug, Clone)]
pub enum Servers {
    /// Fixed addresses (tests, or an operator's choice).
    Fixed(Vec<SocketAddr>),
    /// A resolv.conf, re-read when its modification time changes.
    ResolvConf(PathBuf),
}

#[derive(Debug)]
struct Cached {
    checked: Option<Instant>,
    mtime: Option<SystemTime>,
    servers: Vec<SocketAddr>,
}

/// The forwarder.
#[derive(Debug)]
pub struct Upstream {
    source: Servers,
    /// Our own listen addresses: forwarding to them would loop.
    exclude: Mutex<Vec<SocketAddr>>,
    timeout: Duration,
    cache: Mutex<Cached>,
}

impl Upstream {
    pub fn new(source: Servers, exclude: Vec<SocketAddr>, timeout: Duration) -> Upstream {
        Upstream {
            source,
            exclude: Mutex::new(exclude),
            timeout,
            cache: Mutex::new(Cached {
                checked: None,
                mtime: None,
                servers: vec![],
            }),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Never forwards to `addr` (one of our own listen addresses: that would loop).
    pub fn exclude(&self, addr: SocketAddr) {
        let mut ex = self.exclude.lock().unwrap_or_else(|e| e.into_inner());
        if !ex.contains(&addr) {
            ex.push(addr);
        }
        // Re-read the file at the next query, without the new address.
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        c.checked = None;
        c.mtime = None;
    }

    /// The servers to ask now.
    pub fn servers(&self) -> Vec<SocketAddr> {
        let path = match &self.source {
            Servers::Fixed(v) => return self.without_ours(v.clone()),
            Servers::ResolvConf(p) => p,
        };
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if c.checked.is_some_and(|t| now.duration_since(t) < RECHECK) {
            return c.servers.clone();
        }
        c.checked = Some(now);
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if mtime != c.mtime || mtime.is_none() {
            c.mtime = mtime;
            c.servers = match std::fs::read_to_string(path) {
                Ok(t) => self.without_ours(parse_resolv_conf(&t)),
                Err(e) => {
                    tracing::warn!("dns: read {}: {e}", path.display());
                    vec![]
                }
            };
            tracing::info!("dns: upstream resolvers {:?}", c.servers);
        }
        c.servers.clone()
    }

    fn without_ours(&self, mut v: Vec<SocketAddr>) -> Vec<SocketAddr> {
        let ex = self.exclude.lock().unwrap_or_else(|e| e.into_inner());
        v.retain(|a| !ex.contains(a));
        v
    }

    /// Sends `query` over UDP to each server in turn, each getting an equal share of the
    /// deadline; the first answer wins. The answer carries the query's own ID.
    pub async fn query_udp(&self, query: &[u8]) -> Result<Vec<u8>> {
        self.each_server(query, |server, q, budget| async move {
            exchange_udp(server, &q, budget).await
        })
        .await
    }

    /// The same over TCP (for TCP clients, whose answers may be large).
    pub async fn query_tcp(&self, query: &[u8]) -> Result<Vec<u8>> {
        self.each_server(query, |server, q, budget| async move {
            exchange_tcp(server, &q, budget).await
        })
        .await
    }

    async fn each_server<F, Fut>(&self, query: &[u8], ask: F) -> Result<Vec<u8>>
    where
        F: Fn(SocketAddr, Vec<u8>, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>>>,
    {
        if query.len() < 12 {
            return Err(Error::new(ErrorKind::Decode, "forward: query too short"));
        }
        let servers = self.servers();
        if servers.is_empty() {
            return Err(Error::new(
                ErrorKind::NotFound,
                "forward: no upstream resolvers",
            ));
        }
        let deadline = Instant::now() + self.timeout;
        let share = self.timeout / servers.len() as u32;
        let client_id = [query[0], query[1]];
        let mut last = None;
        for server in servers {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let id: u16 = rand::random();
            let mut q = query.to_vec();
            q[..2].copy_from_slice(&id.to_be_bytes());
            match ask(server, q, share.min(left)).await {
                Ok(mut a) if a.len() >= 12 && a[..2] == id.to_be_bytes() => {
                    a[..2].copy_from_slice(&client_id);
                    return Ok(a);
                }
                Ok(_) => last = Some(Error::new(ErrorKind::Decode, "forward: bad answer")),
                Err(e) => last = Some(e.context(format!("forward to {server}"))),
            }
        }
        Err(last.unwrap_or_else(|| Error::new(ErrorKind::TryAgainLater, "forward: timed out")))
    }
}

fn timed_out(server: SocketAddr) -> Error {
    Error::new(
        ErrorKind::TryAgainLater,
        format!("no answer from {server} in time"),
    )
}

async fn exchange_udp(server: SocketAddr, q: &[u8], budget: Duration) -> Result<Vec<u8>> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let work = async {
        let sock = UdpSocket::bind(local).await.context("bind")?;
        sock.connect(server).await.context("connect")?;
        sock.send(q).await.context("send")?;
        let mut buf = vec![0u8; 65535];
        loop {
            let n = sock.recv(&mut buf).await.context("receive")?;
            // Only an answer to this question (same ID, QR set) counts; others are ignored.
            if n >= 12 && buf[..2] == q[..2] && buf[2] & 0x80 != 0 {
                buf.truncate(n);
                return Ok(buf);
            }
        }
    };
    tokio::time::timeout(budget, work)
        .await
        .map_err(|_| timed_out(server))?
}

async fn exchange_tcp(server: SocketAddr, q: &[u8], budget: Duration) -> Result<Vec<u8>> {
    let work = async {
        let mut s = TcpStream::connect(server).await.context("connect")?;
        let len =
            u16::try_from(q.len()).map_err(|_| Error::new(ErrorKind::Decode, "query too long"))?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(q);
        s.write_all(&framed).await.context("send")?;
        let n = s.read_u16().await.context("receive")? as usize;
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf).await.context("receive")?;
        Ok(buf)
    };
    tokio::time::timeout(budget, work)
        .await
        .map_err(|_| timed_out(server))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.2\nnameserver  ::1 \n\
                    nameserver fe80::1%eth0\nnameserver 10.32.0.1\noptions ndots:2\nnameserver\n\
                    nameserver 0.0.0.0\n";
        let want: Vec<SocketAddr> = ["10.0.0.2:53", "[::1]:53", "10.32.0.1:53"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(parse_resolv_conf(text), want);
        // Our own listen address is never an upstream.
        let up = Upstream::new(
            Servers::Fixed(want.clone()),
            vec!["10.32.0.1:53".parse().unwrap()],
            DEFAULT_TIMEOUT,
        );
        assert_eq!(up.servers(), want[..2]);
        up.exclude("10.0.0.2:53".parse().unwrap());
        assert_eq!(up.servers(), want[1..2]);
    }

    #[test]
    fn resolv_conf_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 127.0.0.9\n").unwrap();
        let up = Upstream::new(Servers::ResolvConf(path.clone()), vec![], DEFAULT_TIMEOUT);
        assert_eq!(
            up.servers(),
            ["127.0.0.9:53".parse::<SocketAddr>().unwrap()]
        );
        // Missing file: no servers (the caller answers SERVFAIL), checked again later.
        let gone = Upstream::new(
            Servers::ResolvConf(dir.path().join("nope")),
            vec![],
            DEFAULT_TIMEOUT,
        );
        assert!(gone.servers().is_empty());
    }
}
