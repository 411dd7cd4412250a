//! Tools for tests/mesh_security.rs: an attacker that speaks the mesh wire protocol by hand over
//! blocking sockets (so every byte is the test's choice), and a TCP relay that records what two
//! routers say to each other.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use weave::mesh::crypto::{self, Session};
use weave::mesh::protocol::{
    encode_frame, encode_header, ConnectionInfo, Entries, FrameDecoder, Hello, Message, PeerInfo,
    HEADER_LEN, MAX_FRAME, MAX_HANDSHAKE_FRAME,
};
use weave::mesh::PeerName;

/// The attacker's peer name, and a peer that exists only in its forged gossip.
pub const MALLORY: &str = "0e:00:00:00:00:0e";
pub const PHANTOM: &str = "0e:00:00:00:00:0f";

pub fn name(s: &str) -> PeerName {
    s.parse().unwrap()
}

pub fn mallory_hello(encrypted: bool) -> Hello {
    Hello {
        name: name(MALLORY),
        nickname: "mallory".into(),
        uid: 0x5eed,
        conn_id: 1,
        listen_port: 6783,
        encrypted,
    }
}

/// One frame as it goes on the wire (length prefix and body).
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(body, &mut out).unwrap();
    out
}

/// Forged gossip: a topology in which mallory is connected to `victim` and to a phantom peer,
/// and an IPAM ring (the router's own JSON format on its `IPallocation` channel) giving the
/// whole default range to mallory.
pub fn forged_messages(victim: PeerName, victim_addr: SocketAddr) -> Vec<Message> {
    let conn = |peer: PeerName, addr: SocketAddr| ConnectionInfo {
        peer,
        addr,
        outbound: true,
        established: true,
    };
    let elsewhere: SocketAddr = "192.0.2.2:9".parse().unwrap();
    let topology = Message::Topology(Entries::from(vec![
        PeerInfo {
            name: name(MALLORY),
            nickname: "mallory".into(),
            uid: 0x5eed,
            version: u64::MAX / 2,
            connections: vec![conn(victim, victim_addr), conn(name(PHANTOM), elsewhere)],
        },
        PeerInfo {
            name: name(PHANTOM),
            nickname: "phantom".into(),
            uid: 7,
            version: u64::MAX / 2,
            connections: vec![conn(name(MALLORY), elsewhere)],
        },
    ]));
    let start = u32::from(Ipv4Addr::new(10, 32, 0, 0));
    let ring = serde_json::json!({"Ring": {
        "start": start, "end": start + (1 << 20), "me": MALLORY,
        "entries": [{"token": start, "peer": MALLORY, "version": 1_000_000, "free": 1 << 20}],
        "seeds": [MALLORY],
    }});
    let ipam = Message::Broadcast {
        origin: name(MALLORY),
        origin_uid: 0x5eed,
        seq: 1,
        channel: "IPallocation".into(),
        payload: serde_json::to_vec(&ring).unwrap(),
    };
    vec![topology, ipam]
}

/// A blocking connection to a router with a frame decoder over what it sends.
pub struct Wire {
    pub s: TcpStream,
    dec: FrameDecoder,
    /// Everything the router sent so far.
    pub received: Vec<u8>,
}

impl Wire {
    pub fn connect(addr: SocketAddr) -> Wire {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Wire {
            s,
            dec: FrameDecoder::new(MAX_HANDSHAKE_FRAME),
            received: Vec::new(),
        }
    }

    /// Sends bytes; a router that already closed is not an error here (that is the point).
    pub fn send(&mut self, b: &[u8]) {
        let _ = self.s.write_all(b);
    }

    /// Reads what is available within `wait`; false once the router closed (EOF or reset).
    fn pump(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 65536];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    self.received.extend_from_slice(&buf[..n]);
                    self.dec.push(&buf[..n]);
                    return true;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if Instant::now() >= deadline {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// The router's header: its first 7 bytes.
    pub fn read_header(&mut self, wait: Duration) -> Option<[u8; HEADER_LEN]> {
        let deadline = Instant::now() + wait;
        while self.received.len() < HEADER_LEN {
            if !self.pump(deadline.saturating_duration_since(Instant::now())) {
                return None;
            }
            if Instant::now() >= deadline && self.received.len() < HEADER_LEN {
                return None;
            }
        }
        // The decoder must not see the header as a frame.
        let mut rest = FrameDecoder::new(MAX_HANDSHAKE_FRAME);
        rest.push(&self.received[HEADER_LEN..]);
        self.dec = rest;
        Some(self.received[..HEADER_LEN].try_into().unwrap())
    }

    /// The next frame from the router, `None` if it closed or sent none within `wait`.
    pub fn read_frame(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(f) = self.dec.next_frame().expect("router sent a bad frame") {
                return Some(f);
            }
            if Instant::now() >= deadline || !self.pump(Duration::from_millis(100)) {
                return None;
            }
        }
    }

    /// Waits until the router closes; the time it took, `None` if still open after `limit`.
    pub fn wait_closed(&mut self, limit: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if !self.pump(Duration::from_millis(100)) {
                return Some(t0.elapsed());
            }
        }
        None
    }

    pub fn allow_big_frames(&mut self) {
        self.dec.set_max(crypto::MAX_SEALED_FRAME.max(MAX_FRAME));
    }
}

/// The Noise prologue both sides compute: header and hello of the dialler, then the listener's.
pub fn prologue(dialler_hello: &[u8], listener_hello: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    for h in [dialler_hello, listener_hello] {
        p.extend_from_slice(&encode_header());
        p.extend_from_slice(h);
    }
    p
}

/// Dials as an encrypted peer whose key comes from `password`. Returns the wire and, when the
/// router answered the first Noise message, the session; `None` means the router refused.
pub fn noise_dial(addr: SocketAddr, password: &str) -> (Wire, Option<Session>) {
    let mut w = Wire::connect(addr);
    let hello = mallory_hello(true).encode();
    w.send(&[&encode_header()[..], &frame(&hello)].concat());
    w.read_header(Duration::from_secs(5))
        .expect("router header");
    let theirs = w.read_frame(Duration::from_secs(5)).expect("router hello");
    assert!(Hello::decode(&theirs).unwrap().encrypted);
    let psk = crypto::psk_from_password(password.as_bytes());
    let (init, m1) = crypto::initiate(&psk, &prologue(&hello, &theirs)).unwrap();
    w.send(&frame(&m1));
    let session = w
        .read_frame(Duration::from_secs(5))
        .map(|m2| init.finish(&m2).expect("noise reply"));
    if session.is_some() {
        w.allow_big_frames();
    }
    (w, session)
}

/// Captured bytes of one relayed connection, each direction in order.
#[derive(Default, Clone)]
pub struct Capture {
    pub dialler_to_listener: Vec<u8>,
    pub listener_to_dialler: Vec<u8>,
}

/// A TCP relay inside a namespace: accepts on `listen`, connects each connection to `upstream`,
/// copies both ways and records everything. Stops (and joins its threads) on drop.
pub struct Relay {
    stop: Arc<AtomicBool>,
    pub captures: Arc<Mutex<Vec<Capture>>>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    pub fn start(netns: &str, listen: SocketAddr, upstream: SocketAddr) -> Relay {
        let stop = Arc::new(AtomicBool::new(false));
        let captures: Arc<Mutex<Vec<Capture>>> = Arc::default();
        let file = std::fs::File::open(format!("/var/run/netns/{netns}")).expect("open netns");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (st, caps) = (stop.clone(), captures.clone());
        let thread = std::thread::spawn(move || {
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let l = TcpListener::bind(listen).expect("relay listen");
            l.set_nonblocking(true).unwrap();
            ready_tx.send(()).unwrap();
            let mut pumps = Vec::new();
            while !st.load(Ordering::SeqCst) {
                let (down, _) = match l.accept() {
                    Ok(x) => x,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                down.set_nonblocking(false).unwrap();
                let Ok(up) = TcpStream::connect_timeout(&upstream, Duration::from_secs(3)) else {
                    continue;
                };
                let idx = {
                    let mut c = caps.lock().unwrap();
                    c.push(Capture::default());
                    c.len() - 1
                };
                for (from, to, forward) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap(), true),
                    (up, down, false),
                ] {
                    let (st, caps) = (st.clone(), caps.clone());
                    pumps.push(std::thread::spawn(move || {
                        pump(from, to, &st, |b| {
                            let mut c = caps.lock().unwrap();
                            let c = &mut c[idx];
                            if forward {
                                c.dialler_to_listener.extend_from_slice(b)
                            } else {
                                c.listener_to_dialler.extend_from_slice(b)
                            }
                        })
                    }));
                }
            }
            for p in pumps {
                let _ = p.join();
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("relay ready");
        Relay {
            stop,
            captures,
            thread: Some(thread),
        }
    }

    pub fn captures(&self) -> Vec<Capture> {
        self.captures.lock().unwrap().clone()
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, stop: &AtomicBool, mut record: impl FnMut(&[u8])) {
    from.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    to.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                record(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where `needle` occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Length of the unencrypted handshake prefix of one direction: header and hello frame.
pub fn hello_prefix_len(stream: &[u8]) -> usize {
    if stream.len() < HEADER_LEN + 4 {
        return stream.len();
    }
    let l = &stream[HEADER_LEN..HEADER_LEN + 4];
    let len = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
    (HEADER_LEN + 4 + len).min(stream.len())
}
