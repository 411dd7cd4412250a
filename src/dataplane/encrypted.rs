//! The encrypted data path between hosts, in user space (this kernel has no ESP AEAD nor
//! WireGuard): a TAP port on the `weave` bridge and a UDP socket on the mesh port, with two
//! worker threads.
//!
//! - Outbound: a frame the bridge sends to the TAP goes to the peer that owns its
//!   destination MAC (learned from what peers sent us), or to every peer when the destination
//!   is broadcast, multicast or unknown; it is sealed with that peer's send key
//!   ([`crate::sleeve`]) and sent in one UDP datagram.
//! - Inbound: a datagram is matched to a peer by its source address (else dropped as
//!   `not_peer`), opened (authenticated, replay-checked) and written to the TAP.
//!
//! Buffers are allocated once per thread; the per-packet work is one lookup, one AEAD
//! operation and one syscall each way. Counters per peer: bytes, packets, drops by reason,
//! rekeys.

use super::path::ENCRYPTED;
use super::{Overlay, Peer, PlaneFuture};
use crate::netlink::Netlink;
use crate::peer::PeerName;
use crate::sleeve::datagram::{HEADER_LEN, MAX_DATAGRAM};
use crate::sleeve::{Limits, Opener, Reject, SealError, Sealer};
use crate::{Context, Error, ErrorKind, Result};
use futures::FutureExt;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The TAP port's name on the bridge.
pub const TAP_NAME: &str = "weave-sleeve";
/// Most MACs remembered (an authenticated peer cannot grow the table without bound).
const MAX_MACS: usize = 65_536;
/// What a container frame grows by on the underlay: its Ethernet header, the datagram's
/// header and tag, UDP and IPv4 headers (the container MTU plus this must fit the underlay).
pub const UNDERLAY_OVERHEAD: u32 = 14 + crate::sleeve::OVERHEAD as u32 + 8 + 20;
/// The underlay MTU most networks have.
const COMMON_UNDERLAY_MTU: u32 = 1500;
/// How long a worker waits in `poll` before checking whether to stop.
const POLL: Duration = Duration::from_millis(200);

/// One peer's counters, kept across key changes (a peer's restart).
#[derive(Debug, Default)]
pub struct PathCounters {
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub rekeys: AtomicU64,
    /// Indexed like [`Reject::ALL`], plus one for frames the underlay refused (path MTU).
    pub drops: [AtomicU64; Reject::ALL.len() + 1],
    pmtu_logged: AtomicBool,
}

/// The name of the extra drop counter: datagrams the underlay would not take (too big).
pub const DROP_PMTU: &str = "pmtu";

impl PathCounters {
    fn reject(&self, d: Reject) {
        let i = Reject::ALL.iter().position(|x| *x == d).unwrap_or(0);
        self.drops[i].fetch_add(1, Relaxed);
    }

    /// Reject counts by name (only the non-zero ones).
    pub fn drops_by_name(&self) -> BTreeMap<&'static str, u64> {
        let names = Reject::ALL.iter().map(|d| d.name()).chain([DROP_PMTU]);
        names
            .zip(&self.drops)
            .map(|(n, c)| (n, c.load(Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect()
    }

    pub fn drops_total(&self) -> u64 {
        self.drops.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// A peer as the workers see it.
struct PeerLink {
    name: PeerName,
    nickname: String,
    addr: SocketAddr,
    session: u32,
    sealer: Mutex<Sealer>,
    opener: Mutex<Opener>,
    counters: Arc<PathCounters>,
}

struct Shared {
    tap: File,
    udp: UdpSocket,
    port: u16,
    limits: Limits,
    peers: RwLock<HashMap<IpAddr, Arc<PeerLink>>>,
    macs: RwLock<HashMap<[u8; 6], IpAddr>>,
    counters: Mutex<BTreeMap<PeerName, Arc<PathCounters>>>,
    /// Datagrams from addresses that are not peers'.
    not_peer: AtomicU64,
    stop: AtomicBool,
}

/// The encrypted path as an [`Overlay`]; its workers stop when it is dropped.
pub struct EncryptedOverlay {
    shared: Arc<Shared>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EncryptedOverlay {
    /// Creates the TAP port on bridge `bridge_index` with `mtu`, binds UDP `port` and starts
    /// the workers.
    pub async fn start(
        nl: &Netlink,
        bridge_index: u32,
        mtu: u32,
        port: u16,
        limits: Limits,
    ) -> Result<EncryptedOverlay> {
        let tap = crate::netlink::open_tap(TAP_NAME)?;
        let link = nl
            .link(TAP_NAME)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("find link {TAP_NAME}")))?;
        nl.set_mtu(link.index, mtu).await?;
        nl.set_master(link.index, bridge_index).await?;
        nl.set_up(link.index).await?;
        let udp = UdpSocket::bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port))
            .with_context(|| format!("bind encrypted path to udp port {port}"))?;
        set_pmtu_discovery(&udp)?;
        udp.set_nonblocking(true)
            .context("make the encrypted path's socket non-blocking")?;
        set_nonblocking(&tap)?;
        let shared = Arc::new(Shared {
            tap,
            udp,
            port,
            limits,
            peers: RwLock::new(HashMap::new()),
            macs: RwLock::new(HashMap::new()),
            counters: Mutex::new(BTreeMap::new()),
            not_peer: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let spawn = |name: &str, f: fn(&Shared)| {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || f(&s))
                .with_context(|| format!("start thread {name}"))
        };
        let workers = vec![spawn("sleeve-out", outbound)?, spawn("sleeve-in", inbound)?];
        tracing::info!("encrypted data path on udp port {port}, tap {TAP_NAME} mtu {mtu}");
        if mtu + UNDERLAY_OVERHEAD > COMMON_UNDERLAY_MTU {
            tracing::warn!(
                "encrypted data path: --mtu {mtu} plus {UNDERLAY_OVERHEAD} bytes of \
                 encapsulation exceeds a {COMMON_UNDERLAY_MTU}-byte underlay; full-size frames \
                 are dropped (counted as pmtu) unless the underlay's MTU is at least {}",
                mtu + UNDERLAY_OVERHEAD
            );
        }
        Ok(EncryptedOverlay { shared, workers })
    }

    /// A handle on the counters that outlives nothing: reading it costs a few loads.
    pub fn stats(&self) -> EncryptedStats {
        EncryptedStats(self.shared.clone())
    }
}

/// Reads the encrypted path's counters.
pub struct EncryptedStats(Arc<Shared>);

/// One peer's encrypted-path counters, as status shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PathReport {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rekeys: u64,
    /// Non-zero drop counts by reason.
    pub drops: BTreeMap<&'static str, u64>,
}

/// The whole encrypted path's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EncryptedReport {
    /// Every peer seen since the start (current or not), by name.
    pub peers: BTreeMap<PeerName, PathReport>,
    /// Datagrams from addresses that are not peers'.
    pub not_peer_drops: u64,
}

impl EncryptedStats {
    pub fn report(&self) -> EncryptedReport {
        let peers = lock(&self.0.counters)
            .iter()
            .map(|(name, c)| {
                let r = PathReport {
                    tx_packets: c.tx_packets.load(Relaxed),
                    tx_bytes: c.tx_bytes.load(Relaxed),
                    rx_packets: c.rx_packets.load(Relaxed),
                    rx_bytes: c.rx_bytes.load(Relaxed),
                    rekeys: c.rekeys.load(Relaxed),
                    drops: c.drops_by_name(),
                };
                (*name, r)
            })
            .collect();
        EncryptedReport {
            peers,
            not_peer_drops: self.0.not_peer.load(Relaxed),
        }
    }
}

impl Drop for EncryptedOverlay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Asks the kernel never to fragment our datagrams, so a too-small path MTU shows as
/// EMSGSIZE (logged and counted) instead of silent fragmentation or loss.
fn set_pmtu_discovery(udp: &UdpSocket) -> Result<()> {
    let v: libc::c_int = libc::IP_PMTUDISC_DO;
    // SAFETY: setsockopt with a c_int value of the right size on our own socket.
    let rc = unsafe {
        libc::setsockopt(
            udp.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            &v as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::kernel(
            e.raw_os_error().unwrap_or(0),
            format!("set IP_MTU_DISCOVER on the encrypted path's socket: {e}"),
        ));
    }
    Ok(())
}

fn set_nonblocking(f: &File) -> Result<()> {
    // SAFETY: fcntl on our own descriptor.
    let rc = unsafe {
        let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK)
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::kernel(
            e.raw_os_error().unwrap_or(0),
            format!("make {TAP_NAME} non-blocking: {e}"),
        ));
    }
    Ok(())
}

/// Waits until `fd` is readable or [`POLL`] passes.
fn readable(fd: &impl AsRawFd) {
    wait_for(fd, libc::POLLIN);
}

/// Waits until `fd` has one of `events` or [`POLL`] passes.
fn wait_for(fd: &impl AsRawFd, events: libc::c_short) {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, POLL.as_millis() as libc::c_int) };
}

/// TAP → peers.
fn outbound(s: &Shared) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut copy = vec![0u8; MAX_DATAGRAM];
    let room = MAX_DATAGRAM - crate::sleeve::OVERHEAD;
    while !s.stop.load(Relaxed) {
        // Non-blocking: poll only when the queue is empty, so a busy path costs one read per
        // frame rather than a poll and a read.
        let n = match (&s.tap).read(&mut buf[HEADER_LEN..HEADER_LEN + room]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                readable(&s.tap);
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!("encrypted path: read {TAP_NAME}: {e}");
                std::thread::sleep(POLL);
                continue;
            }
        };
        if n < 14 {
            continue;
        }
        let dst: [u8; 6] = buf[HEADER_LEN..HEADER_LEN + 6].try_into().expect("6 bytes");
        let peers = s.peers.read().unwrap_or_else(|p| p.into_inner());
        let owner = if dst[0] & 1 == 0 {
            let macs = s.macs.read().unwrap_or_else(|p| p.into_inner());
            macs.get(&dst).and_then(|ip| peers.get(ip))
        } else {
            None
        };
        match owner {
            Some(p) => send(s, p, &mut buf, n),
            None => {
                for p in peers.values() {
                    copy[HEADER_LEN..HEADER_LEN + n]
                        .copy_from_slice(&buf[HEADER_LEN..HEADER_LEN + n]);
                    send(s, p, &mut copy, n);
                }
            }
        }
    }
}

fn send(s: &Shared, p: &PeerLink, buf: &mut [u8], n: usize) {
    let now = Instant::now();
    let sealed = {
        let mut sealer = lock(&p.sealer);
        let before = sealer.rekeys();
        let r = sealer.seal(now, buf, n);
        let after = sealer.rekeys();
        if after > before {
            p.counters.rekeys.fetch_add(after - before, Relaxed);
            tracing::debug!(
                "encrypted path: rekeyed sending to {}({})",
                p.name,
                p.nickname
            );
        }
        r
    };
    let len = match sealed {
        Ok(len) => len,
        Err(SealError::TooLarge) => return,
        Err(SealError::Exhausted) => {
            tracing::warn!("encrypted path: keys to {} exhausted; reconnect it", p.name);
            return;
        }
    };
    let mut sent = s.udp.send_to(&buf[..len], p.addr);
    // The socket is non-blocking (for the receiver's sake): wait for room as a blocking send
    // would, so a full send buffer slows the sender down instead of dropping.
    for _ in 0..50 {
        match &sent {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                wait_for(&s.udp, libc::POLLOUT);
                sent = s.udp.send_to(&buf[..len], p.addr);
            }
            _ => break,
        }
    }
    match sent {
        Ok(_) => {
            p.counters.tx_packets.fetch_add(1, Relaxed);
            p.counters.tx_bytes.fetch_add(n as u64, Relaxed);
        }
        Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
            p.counters.drops[Reject::ALL.len()].fetch_add(1, Relaxed);
            if !p.counters.pmtu_logged.swap(true, Relaxed) {
                tracing::warn!(
                    "encrypted path: a {n}-byte frame to {}({}) at {} does not fit the path \
                     MTU once encrypted ({len} bytes of UDP payload); lower --mtu (dropped)",
                    p.name,
                    p.nickname,
                    p.addr
                );
            }
        }
        Err(e) => tracing::debug!("encrypted path: send to {}: {e}", p.addr),
    }
}

/// Peers → TAP.
fn inbound(s: &Shared) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    while !s.stop.load(Relaxed) {
        let (n, from) = match s.udp.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                readable(&s.udp);
                continue;
            }
            Err(e) => {
                tracing::debug!("encrypted path: receive: {e}");
                continue;
            }
        };
        let peer = {
            let peers = s.peers.read().unwrap_or_else(|p| p.into_inner());
            peers.get(&from.ip()).filter(|p| p.addr == from).cloned()
        };
        let Some(p) = peer else {
            if s.not_peer.fetch_add(1, Relaxed) == 0 {
                tracing::info!("encrypted path: dropped a datagram from {from}, not a peer");
            }
            continue;
        };
        let opened = {
            let mut opener = lock(&p.opener);
            let before = opener.rekeys();
            let r = opener.open(Instant::now(), &mut buf[..n]);
            let after = opener.rekeys();
            if after > before {
                p.counters.rekeys.fetch_add(after - before, Relaxed);
            }
            r
        };
        let m = match opened {
            Ok(m) if m >= 14 => m,
            Ok(_) => {
                p.counters.reject(Reject::Truncated);
                continue;
            }
            Err(d) => {
                p.counters.reject(d);
                continue;
            }
        };
        let frame = &buf[HEADER_LEN..HEADER_LEN + m];
        learn(s, frame, from.ip());
        // A TAP write takes the whole frame or fails.
        match (&s.tap).write_all(frame) {
            Ok(_) => {
                p.counters.rx_packets.fetch_add(1, Relaxed);
                p.counters.rx_bytes.fetch_add(m as u64, Relaxed);
            }
            Err(e) => tracing::debug!("encrypted path: write {TAP_NAME}: {e}"),
        }
    }
}

/// Remembers that the frame's source MAC lives behind `peer`.
fn learn(s: &Shared, frame: &[u8], peer: IpAddr) {
    let src: [u8; 6] = frame[6..12].try_into().expect("6 bytes");
    if src[0] & 1 != 0 {
        return;
    }
    let known = s.macs.read().unwrap_or_else(|p| p.into_inner()).get(&src) == Some(&peer);
    if !known {
        let mut macs = s.macs.write().unwrap_or_else(|p| p.into_inner());
        if macs.len() >= MAX_MACS {
            macs.clear();
        }
        macs.insert(src, peer);
    }
}

impl Overlay for EncryptedOverlay {
    fn name(&self) -> &'static str {
        ENCRYPTED
    }

    fn accepts(&self, peer: &Peer) -> bool {
        peer.underlay.is_some() && peer.keys.is_some()
    }

    fn set_peers<'a>(&'a self, peers: &'a [Peer]) -> PlaneFuture<'a, ()> {
        async move {
            let s = &self.shared;
            let now = Instant::now();
            let mut next = HashMap::new();
            let old = s.peers.read().unwrap_or_else(|p| p.into_inner()).clone();
            for p in peers {
                let (Some(ip), Some(keys)) = (p.underlay, p.keys.as_ref()) else {
                    continue;
                };
                let addr = SocketAddr::new(ip, s.port);
                let link = match old.get(&ip) {
                    Some(l) if l.name == p.name && l.session == keys.session && l.addr == addr => {
                        l.clone()
                    }
                    _ => {
                        let counters = lock(&s.counters).entry(p.name).or_default().clone();
                        tracing::info!(
                            "encrypted path: keys for {}({}) at {addr}, session {:06x}",
                            p.name,
                            p.nickname,
                            keys.session
                        );
                        Arc::new(PeerLink {
                            name: p.name,
                            nickname: p.nickname.clone(),
                            addr,
                            session: keys.session,
                            sealer: Mutex::new(Sealer::new(
                                &keys.send,
                                keys.session,
                                s.limits,
                                now,
                            )),
                            opener: Mutex::new(Opener::new(&keys.recv, keys.session)),
                            counters,
                        })
                    }
                };
                next.insert(ip, link);
            }
            *s.peers.write().unwrap_or_else(|p| p.into_inner()) = next;
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_mtu_fits_a_common_underlay_once_encrypted() {
        assert_eq!(UNDERLAY_OVERHEAD, 74);
        const { assert!(crate::DEFAULT_MTU + UNDERLAY_OVERHEAD <= COMMON_UNDERLAY_MTU) };
    }

    #[test]
    fn drops_are_counted_by_reason_and_pmtu_last() {
        let c = PathCounters::default();
        c.reject(Reject::Forged);
        c.reject(Reject::Forged);
        c.reject(Reject::NotPeer);
        c.drops[Reject::ALL.len()].fetch_add(1, Relaxed);
        let want: BTreeMap<&str, u64> = [("forged", 2), ("not_peer", 1), (DROP_PMTU, 1)].into();
        assert_eq!(c.drops_by_name(), want);
        assert_eq!(c.drops_total(), 4);
    }
}
