//! The encrypted path's UDP socket calls, batched: one sealed frame goes out as all its
//! datagrams in one `sendmmsg`, each message a run of equal datagrams handed to the kernel
//! as one UDP GSO buffer (`UDP_SEGMENT`); datagrams come in as GRO batches (`UDP_GRO`), several
//! same-size datagrams per `recvmsg`. The kernel cuts and joins at datagram boundaries, so
//! the wire carries exactly the datagrams of `crate::sleeve::datagram`, whatever the batching.

use crate::sleeve::datagram::{DATAGRAM_HEADER_LEN, MAX_DATAGRAM, MAX_FRAGMENTS};
use crate::{Error, Result};
use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

/// Most datagrams the kernel takes in one UDP GSO buffer (`UDP_MAX_SEGMENTS`).
const MAX_SEGMENTS: usize = 64;
/// Socket buffer sizes: room for a few bursts of 64 KiB frames.
const SOCKET_BUFFER: libc::c_int = 4 << 20;

fn setsockopt(
    udp: &UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt with a c_int value of the right size on our own socket.
    let rc = unsafe {
        libc::setsockopt(
            udp.as_raw_fd(),
            level,
            name,
            &v as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets up the socket: no fragmentation (a too-small path MTU shows as EMSGSIZE, logged and
/// counted, instead of silent loss), GRO batches on receive, and large buffers.
pub fn configure(udp: &UdpSocket) -> Result<()> {
    let fail = |what: &str, e: io::Error| {
        Error::kernel(
            e.raw_os_error().unwrap_or(0),
            format!("set {what} on the encrypted path's socket: {e}"),
        )
    };
    setsockopt(
        udp,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_DO,
    )
    .map_err(|e| fail("IP_MTU_DISCOVER", e))?;
    setsockopt(udp, libc::SOL_UDP, libc::UDP_GRO, 1).map_err(|e| fail("UDP_GRO", e))?;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        // Forcing needs CAP_NET_ADMIN (the router has it); else what the sysctl allows.
        if setsockopt(udp, libc::SOL_SOCKET, force, SOCKET_BUFFER).is_err() {
            let _ = setsockopt(udp, libc::SOL_SOCKET, plain, SOCKET_BUFFER);
        }
    }
    Ok(())
}

/// Asks the kernel to stamp received datagrams (SO_TIMESTAMPNS), for the stage trace.
pub fn stamp(udp: &UdpSocket) -> Result<()> {
    setsockopt(udp, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1).map_err(|e| {
        Error::kernel(
            e.raw_os_error().unwrap_or(0),
            format!("set SO_TIMESTAMPNS on the encrypted path's socket: {e}"),
        )
    })
}

/// Asks the scheduler for a short time slice (0.1 ms) for the calling thread (EEVDF's
/// per-task slice, Linux 6.12+). A worker woken by a packet then preempts a busy CPU's
/// current task at once instead of waiting for that task's slice to run out (up to a few
/// ms), which a round trip would otherwise pay at each of its four hand-offs to user space.
/// Its weight (nice) is unchanged, so it gets no more CPU than before. Older kernels refuse
/// it: nothing changes then.
pub fn short_slice() {
    // SAFETY: getpriority has no preconditions; errno is not needed (a failure reads as 0).
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    // SAFETY: a zeroed sched_attr is valid; every field used is set below.
    let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
    attr.size = std::mem::size_of::<libc::sched_attr>() as u32;
    attr.sched_policy = libc::SCHED_OTHER as u32;
    attr.sched_nice = nice;
    attr.sched_runtime = 100_000;
    // SAFETY: sched_setattr on the calling thread (0) with a filled-in attribute block.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const _, 0) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        tracing::debug!("encrypted path: no short scheduler slice for the worker: {e}");
    }
}

/// How many lanes (worker, TAP queue, UDP socket) the encrypted path runs: one per CPU this
/// process may use, at most [`MAX_LANES`].
pub fn lane_count() -> usize {
    let allowed = allowed_cpus();
    // SAFETY: CPU_COUNT reads the set.
    let n = unsafe { libc::CPU_COUNT(&allowed) } as usize;
    n.clamp(1, MAX_LANES)
}

/// Most lanes: beyond this, more threads buy little on the hosts we know of.
const MAX_LANES: usize = 16;

fn allowed_cpus() -> libc::cpu_set_t {
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the calling thread (0) and a set of the stated size.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc < 0 {
        // SAFETY: as above; CPU 0 alone stands for "unknown".
        unsafe { libc::CPU_SET(0, &mut set) };
    }
    set
}

/// Binds `lanes` UDP sockets to `port` as one `SO_REUSEPORT` group, steered so that a
/// datagram goes to the socket of the lane whose CPU receives it (`cpu % lanes`). Steering
/// needs BPF; without it the kernel spreads by flow hash (correct, slower to wake).
pub fn bind_lanes(port: u16, lanes: usize) -> Result<Vec<UdpSocket>> {
    let fail = |what: String, e: io::Error| Error::kernel(e.raw_os_error().unwrap_or(0), what);
    let mut socks = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        // SAFETY: socket() has no preconditions; the descriptor is owned at once below.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(fail(format!("create the encrypted path's socket: {e}"), e));
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let udp = unsafe { UdpSocket::from_raw_fd(fd) };
        if lanes > 1 {
            setsockopt(&udp, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1).map_err(|e| {
                fail(
                    format!("set SO_REUSEPORT on the encrypted path's socket: {e}"),
                    e,
                )
            })?;
        }
        let sa = sockaddr(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, port));
        // SAFETY: bind reads one sockaddr_in of the stated size.
        let rc = unsafe {
            libc::bind(
                fd,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(fail(
                format!("bind encrypted path to udp port {port}: {e}"),
                e,
            ));
        }
        socks.push(udp);
    }
    if lanes > 1 {
        if let Err(e) = crate::netlink::steer_reuseport_by_cpu(socks[0].as_raw_fd(), lanes) {
            tracing::info!("encrypted path: udp sockets not steered by cpu ({e}); by flow hash");
        }
    }
    Ok(socks)
}

/// Where a lane's worker sleeps. A thread woken on another, idle CPU waits for that CPU to
/// come out of halt (about 50 us on a virtual machine whose idle vCPUs halt); a lane's TAP
/// queue and socket are fed by its own CPUs (see [`bind_lanes`]), so a worker asleep there is
/// woken by a CPU that is running. The worker pins itself while its work comes in short
/// exchanges and lets go when it gets busy, so the scheduler still spreads a busy path.
pub struct LaneCpus {
    allowed: libc::cpu_set_t,
    lane: Option<libc::cpu_set_t>,
    pinned: bool,
}

impl LaneCpus {
    /// Lane `lane` of `lanes`: the allowed CPUs `c` with `c % lanes == lane`.
    pub fn new(lane: usize, lanes: usize) -> LaneCpus {
        let allowed = allowed_cpus();
        // SAFETY: an empty set, filled from `allowed` below.
        let mut mine: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let mut any = false;
        for c in 0..libc::CPU_SETSIZE as usize {
            // SAFETY: c is below the set's size.
            if c % lanes == lane && unsafe { libc::CPU_ISSET(c, &allowed) } {
                // SAFETY: as above.
                unsafe { libc::CPU_SET(c, &mut mine) };
                any = true;
            }
        }
        LaneCpus {
            allowed,
            lane: (any && lanes > 1).then_some(mine),
            pinned: false,
        }
    }

    /// Keeps the calling thread to its lane's CPUs (a no-op if it already is).
    pub fn pin(&mut self) {
        if let (Some(mine), false) = (&self.lane, self.pinned) {
            self.pinned = set_affinity(mine);
        }
    }

    /// Lets the calling thread run on all its allowed CPUs again (a no-op if it already may).
    pub fn release(&mut self) {
        if std::mem::take(&mut self.pinned) {
            set_affinity(&self.allowed);
        }
    }
}

fn set_affinity(set: &libc::cpu_set_t) -> bool {
    // SAFETY: the calling thread and a set of the stated size.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) == 0 }
}

/// Reusable message arrays for [`Batch::send`] (sized once, no allocation per frame).
pub struct Batch {
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    ctl: Vec<[u64; 4]>,
}

// SAFETY: the raw pointers in the arrays point at the caller's buffers only during one
// `send` call, which rebuilds them first; between calls they are never read.
unsafe impl Send for Batch {}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            iov: Vec::with_capacity(2 * MAX_FRAGMENTS),
            msgs: Vec::with_capacity(MAX_FRAGMENTS),
            ctl: vec![[0; 4]; MAX_FRAGMENTS],
        }
    }
}

/// Waits until one of `fds` has one of `events`, or `ms` milliseconds pass.
pub fn wait_for<const N: usize>(fds: [RawFd; N], events: libc::c_short, ms: libc::c_int) {
    let mut p = fds.map(|fd| libc::pollfd {
        fd,
        events,
        revents: 0,
    });
    // SAFETY: N valid pollfds.
    unsafe { libc::poll(p.as_mut_ptr(), N as libc::nfds_t, ms) };
}

impl Batch {
    /// Sends datagram `i` = `headers[i]` then `body[i * chunk..]` (at most `chunk` bytes) for
    /// every header, to `to`, in one `sendmmsg` (more if the socket's buffer is full: then it
    /// waits for room, as a blocking send would, so a busy path slows the sender instead of
    /// dropping). A single datagram goes without GSO, so an MTU problem reads EMSGSIZE.
    pub fn send(
        &mut self,
        fd: RawFd,
        to: SocketAddr,
        headers: &[[u8; DATAGRAM_HEADER_LEN]],
        body: &[u8],
        chunk: usize,
    ) -> io::Result<()> {
        let SocketAddr::V4(to) = to else {
            return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT));
        };
        let sa = sockaddr(to);
        let seg = chunk + DATAGRAM_HEADER_LEN;
        let per_msg = MAX_SEGMENTS.min(MAX_DATAGRAM / seg).max(1);
        assert!(
            headers.len() <= MAX_FRAGMENTS,
            "too many datagrams for one frame"
        );
        self.iov.clear();
        for (i, h) in headers.iter().enumerate() {
            let slice = &body[(i * chunk).min(body.len())..((i + 1) * chunk).min(body.len())];
            self.iov.push(iovec(h));
            self.iov.push(iovec(slice));
        }
        self.msgs.clear();
        for (m, group) in (0..headers.len()).step_by(per_msg).enumerate() {
            let k = per_msg.min(headers.len() - group);
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_name = &sa as *const _ as *mut libc::c_void;
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdr.msg_iov = self.iov[2 * group..].as_mut_ptr();
            hdr.msg_iovlen = 2 * k;
            if k > 1 {
                let c = self.ctl[m].as_mut_ptr() as *mut libc::cmsghdr;
                // SAFETY: the control buffer (32 bytes, 8-aligned) holds one cmsghdr with a u16.
                unsafe {
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = libc::UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(2) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, seg as u16);
                    hdr.msg_controllen = libc::CMSG_SPACE(2) as _;
                }
                hdr.msg_control = c as *mut libc::c_void;
            }
            self.msgs.push(libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            });
        }
        let mut done = 0;
        let mut waits = 0;
        while done < self.msgs.len() {
            let left = self.msgs.len() - done;
            // SAFETY: every message points at `sa`, `self.iov` and `self.ctl`, alive and
            // unmoved for the call.
            let n = unsafe {
                libc::sendmmsg(fd, self.msgs[done..].as_mut_ptr(), left as libc::c_uint, 0)
            };
            if n >= 0 {
                done += n as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock if waits < 50 => {
                    waits += 1;
                    wait_for([fd], libc::POLLOUT, 200);
                }
                _ => return Err(e),
            }
        }
        Ok(())
    }
}

fn iovec(b: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_ptr() as *mut libc::c_void,
        iov_len: b.len(),
    }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// What one `recvmsg` brought: `len` bytes from `from`, datagrams of `segment` bytes each
/// (the last may be shorter), stamped by the kernel at `stamp` (CLOCK_REALTIME ns) if asked.
pub struct Received {
    pub len: usize,
    pub from: SocketAddr,
    pub segment: usize,
    pub stamp: Option<u64>,
}

/// Receives one datagram or GRO batch into `buf` (non-blocking: WouldBlock when none).
/// A batch longer than `buf` is an error (InvalidData), not a silent truncation.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    // SAFETY: zeroed sockaddr_storage and msghdr are valid; the kernel fills them in.
    let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut ctl = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_name = &mut from as *mut _ as *mut libc::c_void;
    hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = ctl.as_mut_ptr() as *mut libc::c_void;
    hdr.msg_controllen = std::mem::size_of_val(&ctl) as _;
    // SAFETY: `hdr` points at live buffers of the sizes it states.
    let n = unsafe { libc::recvmsg(fd, &mut hdr, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = n as usize;
    if hdr.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "datagram longer than the receive buffer",
        ));
    }
    let mut segment = len;
    let mut stamp = None;
    // SAFETY: walking the control messages the kernel wrote, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                let s = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
                if s > 0 {
                    segment = s as usize;
                }
            }
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let t = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                stamp = Some(t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(&hdr, c);
        }
    }
    let from = if from.ss_family == libc::AF_INET as libc::sa_family_t {
        // SAFETY: the kernel wrote a sockaddr_in (family checked).
        let sin = unsafe { &*(&from as *const _ as *const libc::sockaddr_in) };
        SocketAddr::new(
            std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).into(),
            u16::from_be(sin.sin_port),
        )
    } else {
        return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT));
    };
    Ok(Received {
        len,
        from,
        segment,
        stamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn pin_to(cpu: usize) {
        // SAFETY: an empty set with one CPU added.
        let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(cpu, &mut one) };
        assert!(set_affinity(&one), "pin the test thread to cpu {cpu}");
    }

    /// Real loopback sockets: a datagram sent from CPU c reaches lane `c % 2` (loopback
    /// receives on the sending CPU), on every CPU this test may use.
    #[test]
    fn two_lanes_get_the_datagrams_of_their_cpus() {
        let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let lanes = bind_lanes(port, 2).unwrap();
        let allowed = allowed_cpus();
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: c is below the set's size.
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &allowed) })
            .collect();
        for &cpu in &cpus {
            std::thread::spawn(move || {
                pin_to(cpu);
                let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
                tx.send_to(&[cpu as u8], (Ipv4Addr::LOCALHOST, port))
                    .unwrap();
            })
            .join()
            .unwrap();
            let mut buf = [0u8; 16];
            let mine = &lanes[cpu % 2];
            wait_for([mine.as_raw_fd()], libc::POLLIN, 2000);
            let r = recv(mine.as_raw_fd(), &mut buf).expect("the datagram on its cpu's lane");
            assert_eq!(&buf[..r.len], &[cpu as u8]);
            let other = recv(lanes[(cpu + 1) % 2].as_raw_fd(), &mut buf);
            assert!(
                other.is_err(),
                "cpu {cpu}: a datagram on the other lane too"
            );
        }
    }

    #[test]
    fn a_lane_pins_to_its_own_cpus_and_releases_to_all_allowed() {
        let mut lane = LaneCpus::new(0, 2);
        let before = allowed_cpus();
        lane.pin();
        let pinned = allowed_cpus();
        lane.release();
        let after = allowed_cpus();
        // SAFETY: CPU_COUNT and CPU_ISSET read the sets.
        unsafe {
            assert!(libc::CPU_EQUAL(&before, &after));
            if libc::CPU_COUNT(&before) > 1 {
                assert!(libc::CPU_COUNT(&pinned) >= 1);
                for c in 0..libc::CPU_SETSIZE as usize {
                    if libc::CPU_ISSET(c, &pinned) {
                        assert!(c % 2 == 0 && libc::CPU_ISSET(c, &before), "cpu {c}");
                    }
                }
            }
        }
    }

    /// Real loopback sockets: one frame's datagrams go out in one call and come back as
    /// the same datagrams, however the kernel batched them.
    #[test]
    fn a_frame_of_many_datagrams_arrives_as_those_datagrams() {
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        configure(&rx).unwrap();
        let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        configure(&tx).unwrap();
        let chunk = 1400;
        let body: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let count = body.len().div_ceil(chunk);
        let headers: Vec<[u8; DATAGRAM_HEADER_LEN]> =
            (0..count).map(|i| [i as u8; DATAGRAM_HEADER_LEN]).collect();
        let mut b = Batch::default();
        let to = rx.local_addr().unwrap();
        b.send(tx.as_raw_fd(), to, &headers, &body, chunk).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 70_000];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < count && std::time::Instant::now() < deadline {
            match recv(rx.as_raw_fd(), &mut buf) {
                Ok(r) => {
                    assert_eq!(r.from, tx.local_addr().unwrap());
                    got.extend(buf[..r.len].chunks(r.segment).map(|d| d.to_vec()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_for([rx.as_raw_fd()], libc::POLLIN, 100)
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
        assert_eq!(got.len(), count);
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d[..DATAGRAM_HEADER_LEN], headers[i]);
            let at = i * chunk;
            assert_eq!(
                &d[DATAGRAM_HEADER_LEN..],
                &body[at..(at + chunk).min(body.len())]
            );
        }
    }
}
