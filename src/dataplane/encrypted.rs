//! The encrypted data path between hosts, in user space (this kernel has no ESP AEAD nor
//! WireGuard): a TAP port on the `weave` bridge and UDP on the mesh port, in lanes: one per
//! CPU, each a worker thread with its own TAP queue and UDP socket, both steered by CPU (see
//! [`sleeve_io::bind_lanes`], [`crate::netlink::steer_tap_by_cpu`]). A frame or datagram is
//! handled by the lane of the CPU it arrives on, whose worker sleeps there: waking it needs
//! no idle CPU brought out of halt, and a request's answer, made by the kernel while the
//! worker writes the request to the TAP, lands in that worker's own queue.
//!
//! - Outbound: a frame the bridge sends to the TAP goes to the peer that owns its
//!   destination MAC (learned from what peers sent us), or to every peer when the destination
//!   is broadcast, multicast or unknown; it is sealed with that peer's send key
//!   ([`crate::sleeve`]) and sent as one or more UDP datagrams in one `sendmmsg`.
//! - Inbound: datagrams are matched to a peer by their source address (else dropped as
//!   `not_peer`), gathered into their frame, opened (authenticated, replay-checked) and the
//!   frame written to the TAP.
//!
//! The TAP has checksum and TCP segmentation offload on, so a TCP stream crosses it as 64 KiB
//! super-frames: one read, one AEAD operation, one send call and one TAP write each way per
//! super-frame, not per MTU-sized packet; the kernel cuts and joins the datagrams (UDP GSO
//! and GRO) and segments the super-frame where it must. Each frame carries its
//! `virtio_net_hdr` inside the ciphertext, so the offload fields are authenticated too.
//! Buffers are allocated once per thread (and per peer for reassembly). Counters per peer:
//! bytes, frames, drops by reason, rekeys.

pub use super::encrypted_counters::{EncryptedReport, PathCounters, PathReport, DROP_PMTU};
use super::sleeve_io::{self, Batch};
use crate::netlink::Netlink;
use crate::netlink::{TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, VNET_HDR_LEN};
use crate::peer::PeerName;
use crate::sleeve::datagram::{DATAGRAM_HEADER_LEN, HEADER_LEN, MAX_FRAME, MAX_SEALED, TAG_LEN};
use crate::sleeve::fragments::{self, Reassembly};
use crate::sleeve::{Fragment, Limits, Opener, Reject, SealError, Sealer};
use crate::{Context, Error, ErrorKind, Result};
use pattern::Pattern;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use trace::Stage;

#[path = "encrypted_overlay.rs"]
mod overlay;
#[path = "encrypted_pattern.rs"]
mod pattern;
#[path = "encrypted_trace.rs"]
mod trace;

/// The TAP port's name on the bridge.
pub const TAP_NAME: &str = "weave-sleeve";
/// Most MACs remembered (an authenticated peer cannot grow the table without bound).
const MAX_MACS: usize = 65_536;
/// What a container frame grows by on the underlay: its Ethernet and offload headers, the
/// datagram's header and tag, UDP and IPv4 headers (the container MTU plus this must fit the
/// underlay).
pub const UNDERLAY_OVERHEAD: u32 =
    14 + VNET_HDR_LEN as u32 + crate::sleeve::OVERHEAD as u32 + 8 + 20;
/// The underlay MTU most networks have.
const COMMON_UNDERLAY_MTU: u32 = 1500;
/// Most frames a worker sends on from its TAP queue after a write (see [`receive`]).
const PULL_AFTER_WRITE: usize = 4;
/// Most frames a worker takes from one side (TAP or UDP) before it looks at the other.
const BUDGET: usize = 16;
/// How long a worker waits in `poll` before checking whether to stop.
const POLL: Duration = Duration::from_millis(200);
/// Receive buffer: a GRO batch is at most one 64 KiB IP packet's payload.
const RECV_BUFFER: usize = 1 << 17;

/// A peer as the workers see it.
struct PeerLink {
    name: PeerName,
    nickname: String,
    addr: SocketAddr,
    session: u32,
    sealer: Mutex<Sealer>,
    receiver: Mutex<Receiver>,
    counters: Arc<PathCounters>,
}

/// A peer's receiving side: its keys and the frames it is sending us in pieces.
struct Receiver {
    opener: Opener,
    frames: Reassembly,
}

struct Shared {
    port: u16,
    /// Bytes of sealed frame per datagram: a whole MTU-sized frame fits one.
    chunk: usize,
    limits: Limits,
    peers: RwLock<HashMap<IpAddr, Arc<PeerLink>>>,
    macs: RwLock<HashMap<[u8; 6], IpAddr>>,
    counters: Mutex<BTreeMap<PeerName, Arc<PathCounters>>>,
    /// Datagrams from addresses that are not peers'.
    not_peer: AtomicU64,
    stop: AtomicBool,
}

/// One lane's descriptors: its TAP queue and its UDP socket.
struct Lane {
    tap: File,
    udp: UdpSocket,
}

/// The encrypted path as an [`super::Overlay`]; its workers stop when it is dropped.
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
        // The sealed length of a full-MTU frame: every datagram is at most that plus its header.
        let chunk = mtu as usize + 14 + VNET_HDR_LEN + TAG_LEN;
        // Super-frames only when one fits the datagrams allowed per frame (a tiny MTU: no TSO).
        let tso = Fragment::count(MAX_SEALED, chunk).is_some();
        let offloads = TUN_F_CSUM
            | if tso {
                TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
            } else {
                0
            };
        let lanes = sleeve_io::lane_count();
        let taps = crate::netlink::open_tap_queues(TAP_NAME, offloads, lanes)?;
        if lanes > 1 {
            if let Err(e) = crate::netlink::steer_tap_by_cpu(&taps[0], lanes) {
                tracing::info!("encrypted path: {e}; tap queues by flow hash");
            }
        }
        let link = nl
            .link(TAP_NAME)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("find link {TAP_NAME}")))?;
        nl.set_mtu(link.index, mtu).await?;
        nl.set_master(link.index, bridge_index).await?;
        nl.set_up(link.index).await?;
        let socks = sleeve_io::bind_lanes(port, lanes)?;
        for udp in &socks {
            sleeve_io::configure(udp)?;
            if trace::on() {
                sleeve_io::stamp(udp)?;
            }
        }
        for tap in &taps {
            set_nonblocking(tap)?;
        }
        let shared = Arc::new(Shared {
            port,
            chunk,
            limits,
            peers: RwLock::new(HashMap::new()),
            macs: RwLock::new(HashMap::new()),
            counters: Mutex::new(BTreeMap::new()),
            not_peer: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let mut workers = Vec::with_capacity(lanes);
        for (index, (tap, udp)) in taps.into_iter().zip(socks).enumerate() {
            let s = shared.clone();
            let name = format!("sleeve-{index}");
            let spawned = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    sleeve_io::short_slice();
                    run_lane(&s, &Lane { tap, udp }, index, lanes)
                })
                .with_context(|| format!("start thread {name}"));
            match spawned {
                Ok(w) => workers.push(w),
                Err(e) => {
                    // Stop the lanes already running before reporting.
                    drop(EncryptedOverlay { shared, workers });
                    return Err(e);
                }
            }
        }
        tracing::info!(
            "encrypted data path on udp port {port}, tap {TAP_NAME} mtu {mtu}, {lanes} lane(s){}",
            if tso { ", tcp super-frames" } else { "" }
        );
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

/// A lane's worker: frames from its TAP queue go to peers, datagrams from its socket go to
/// the TAP, a budget of each in turn; with neither waiting, it sleeps on its lane's CPUs.
fn run_lane(s: &Shared, lane: &Lane, index: usize, lanes: usize) {
    let mut out = Outbound::default();
    let mut rx = vec![0u8; RECV_BUFFER];
    let mut cpus = sleeve_io::LaneCpus::new(index, lanes);
    let mut pattern = Pattern::default();
    while !s.stop.load(Relaxed) {
        let mut busy = false;
        for _ in 0..BUDGET {
            match pull(s, lane, &mut out) {
                Ok(()) => busy = true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("encrypted path: read {TAP_NAME}: {e}");
                    std::thread::sleep(POLL);
                    break;
                }
            }
        }
        for _ in 0..BUDGET {
            match sleeve_io::recv(lane.udp.as_raw_fd(), &mut rx) {
                Ok(r) => {
                    deliver(s, lane, &mut out, r, &mut rx);
                    busy = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!("encrypted path: receive: {e}");
                    break;
                }
            }
        }
        if busy {
            if pattern.worked() {
                cpus.release();
            }
            continue;
        }
        expire(s);
        if pattern.pin_to_sleep() {
            cpus.pin();
        } else {
            cpus.release();
        }
        let slept = Instant::now();
        sleeve_io::wait_for(
            [lane.tap.as_raw_fd(), lane.udp.as_raw_fd()],
            libc::POLLIN,
            POLL.as_millis() as libc::c_int,
        );
        trace::woke();
        if pattern.woke(slept.elapsed()) {
            cpus.release();
        }
    }
}

/// A worker's sending buffers.
struct Outbound {
    buf: Vec<u8>,
    copy: Vec<u8>,
    tx: Sender,
}

impl Default for Outbound {
    fn default() -> Self {
        // Read with one byte to spare: a read that fills it was too long to seal.
        let size = HEADER_LEN + MAX_FRAME + 1 + TAG_LEN;
        Outbound {
            buf: vec![0u8; size],
            copy: vec![0u8; size],
            tx: Sender::default(),
        }
    }
}

/// Reads one frame from the lane's TAP queue (WouldBlock: none waiting) and sends it to its
/// peer, or to every peer.
fn pull(s: &Shared, lane: &Lane, o: &mut Outbound) -> std::io::Result<()> {
    let Outbound { buf, copy, tx } = o;
    let n = (&lane.tap).read(&mut buf[HEADER_LEN..HEADER_LEN + MAX_FRAME + 1])?;
    if !(VNET_HDR_LEN + 14..=MAX_FRAME).contains(&n) {
        return Ok(());
    }
    trace::tap_read(&buf[HEADER_LEN + VNET_HDR_LEN..HEADER_LEN + n]);
    let at = HEADER_LEN + VNET_HDR_LEN;
    let dst: [u8; 6] = buf[at..at + 6].try_into().expect("6 bytes");
    let peers = s.peers.read().unwrap_or_else(|p| p.into_inner());
    let owner = if dst[0] & 1 == 0 {
        let macs = s.macs.read().unwrap_or_else(|p| p.into_inner());
        macs.get(&dst).and_then(|ip| peers.get(ip))
    } else {
        None
    };
    match owner {
        Some(p) => tx.send(s, lane, p, buf, n),
        None => {
            for p in peers.values() {
                copy[HEADER_LEN..HEADER_LEN + n].copy_from_slice(&buf[HEADER_LEN..HEADER_LEN + n]);
                tx.send(s, lane, p, copy, n);
            }
        }
    }
    Ok(())
}

/// The sending thread's reusable state.
#[derive(Default)]
struct Sender {
    batch: Batch,
    headers: Vec<[u8; DATAGRAM_HEADER_LEN]>,
}

impl Sender {
    /// Seals the `n`-byte frame in `buf[HEADER_LEN..]` for `p` and sends its datagrams.
    fn send(&mut self, s: &Shared, lane: &Lane, p: &PeerLink, buf: &mut [u8], n: usize) {
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
        trace::mark(Stage::Sealed);
        let body = &buf[HEADER_LEN..len];
        let Some(count) = Fragment::count(body.len(), s.chunk) else {
            return;
        };
        let head: &[u8; HEADER_LEN] = buf[..HEADER_LEN].try_into().expect("header length");
        self.headers.clear();
        self.headers
            .extend((0..count).map(|i| Fragment::encode(head, i, count, s.chunk as u16)));
        let sent = self
            .batch
            .send(lane.udp.as_raw_fd(), p.addr, &self.headers, body, s.chunk);
        trace::mark(Stage::Sent);
        match sent {
            Ok(()) => {
                p.counters.tx_packets.fetch_add(1, Relaxed);
                p.counters
                    .tx_bytes
                    .fetch_add((n - VNET_HDR_LEN) as u64, Relaxed);
            }
            // A datagram over the path MTU: EMSGSIZE, or EINVAL from a GSO send.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMSGSIZE | libc::EINVAL)) => {
                p.counters.drops[Reject::ALL.len()].fetch_add(1, Relaxed);
                if !p.counters.pmtu_logged.swap(true, Relaxed) {
                    let biggest = body.len().min(s.chunk) + DATAGRAM_HEADER_LEN;
                    tracing::warn!(
                        "encrypted path: a {}-byte frame to {}({}) at {} does not fit the \
                         path MTU once encrypted ({biggest} bytes of UDP payload); lower \
                         --mtu (dropped)",
                        n - VNET_HDR_LEN,
                        p.name,
                        p.nickname,
                        p.addr
                    );
                }
            }
            Err(e) => tracing::debug!("encrypted path: send to {}: {e}", p.addr),
        }
    }
}

/// What one receive brought (in `buf`): matched to its peer, and each datagram received.
fn deliver(s: &Shared, lane: &Lane, out: &mut Outbound, r: sleeve_io::Received, buf: &mut [u8]) {
    trace::received(r.stamp);
    let from = r.from;
    let peer = {
        let peers = s.peers.read().unwrap_or_else(|p| p.into_inner());
        peers.get(&from.ip()).filter(|p| p.addr == from).cloned()
    };
    let Some(p) = peer else {
        if s.not_peer.fetch_add(1, Relaxed) == 0 {
            tracing::info!("encrypted path: dropped a datagram from {from}, not a peer");
        }
        return;
    };
    let mut rx = lock(&p.receiver);
    for d in buf[..r.len].chunks_mut(r.segment.max(1)) {
        if let Err(why) = receive(s, lane, out, &p, &mut rx, d) {
            p.counters.reject(why);
        }
    }
    p.counters
        .rejects(Reject::Incomplete, rx.frames.take_gave_up());
}

/// Gives up, on an idle path, frames whose datagrams stopped coming.
fn expire(s: &Shared) {
    let now = Instant::now();
    let peers = s.peers.read().unwrap_or_else(|p| p.into_inner());
    for p in peers.values() {
        let mut rx = lock(&p.receiver);
        rx.frames.expire(now);
        p.counters
            .rejects(Reject::Incomplete, rx.frames.take_gave_up());
    }
}

/// One datagram from peer `p`: gathered, and once its frame is whole, opened and written to
/// the TAP.
fn receive(
    s: &Shared,
    lane: &Lane,
    out: &mut Outbound,
    p: &PeerLink,
    rx: &mut Receiver,
    d: &mut [u8],
) -> Result<(), Reject> {
    let Receiver { opener, frames } = rx;
    let before = opener.rekeys();
    let opened = fragments::receive(opener, frames, Instant::now(), d);
    let after = opener.rekeys();
    if after > before {
        p.counters.rekeys.fetch_add(after - before, Relaxed);
    }
    let Some(frame) = opened? else {
        return Ok(());
    };
    let m = frame.len();
    if m < VNET_HDR_LEN + 14 {
        return Err(Reject::Truncated);
    }
    trace::opened(&frame[VNET_HDR_LEN..]);
    learn(s, &frame[VNET_HDR_LEN..], p.addr.ip());
    // A TAP write takes the whole frame (offload header first) or fails.
    match (&lane.tap).write_all(frame) {
        Ok(_) => {
            p.counters.rx_packets.fetch_add(1, Relaxed);
            p.counters
                .rx_bytes
                .fetch_add((m - VNET_HDR_LEN) as u64, Relaxed);
        }
        Err(e) => tracing::debug!("encrypted path: write {TAP_NAME}: {e}"),
    }
    trace::mark(Stage::TapWritten);
    // The write ran the bridge and the container's stack on this CPU, so its answer (an
    // echo reply, a TCP ACK) may already wait in this lane's queue: send it now, before the
    // rest of the batch.
    for _ in 0..PULL_AFTER_WRITE {
        if pull(s, lane, out).is_err() {
            break;
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_mtu_fits_a_common_underlay_once_encrypted() {
        assert_eq!(UNDERLAY_OVERHEAD, 88);
        const { assert!(crate::DEFAULT_MTU + UNDERLAY_OVERHEAD <= COMMON_UNDERLAY_MTU) };
    }
}
