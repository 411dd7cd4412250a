//! A TAP device (`/dev/net/tun`): the encrypted data path reads the frames the `weave`
//! bridge sends out of it and writes the frames peers sent. The device lives as long as its
//! file descriptor (not persistent), so a dead router leaves no device behind.

use crate::{Error, ErrorKind, Result};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
/// `_IOR('T', 224, int)`.
const TUNSETSTEERINGEBPF: libc::c_ulong = 0x8004_54e0;
/// Offloads the TAP's reader takes (`TUN_F_*`): partial checksums and TCP super-frames
/// (IPv4, IPv6, with ECN).
pub const TUN_F_CSUM: libc::c_uint = 0x01;
pub const TUN_F_TSO4: libc::c_uint = 0x02;
pub const TUN_F_TSO6: libc::c_uint = 0x04;
pub const TUN_F_TSO_ECN: libc::c_uint = 0x08;
/// The `struct virtio_net_hdr` before every frame read or written with offloads on.
pub const VNET_HDR_LEN: usize = 10;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens (creating) the TAP device `name`, without packet information headers: each read
/// or write is exactly one Ethernet frame. The file is blocking; wait with `poll`.
/// With `offloads` (`TUN_F_*`, non-zero), each frame comes after a [`VNET_HDR_LEN`]-byte
/// `virtio_net_hdr` (checksum and segmentation offload, both ways), and the kernel may hand
/// over unsegmented super-frames of the kinds `offloads` names.
pub fn open_tap(name: &str, offloads: libc::c_uint) -> Result<File> {
    let mut queues = open_tap_queues(name, offloads, 1)?;
    Ok(queues.remove(0))
}

/// Opens (creating) the TAP device `name` with `queues` queues (one file each; more than one
/// makes it a multi-queue device). A frame the bridge sends goes to one queue; a frame
/// written to any queue enters the bridge. See [`open_tap`] for `offloads`.
pub fn open_tap_queues(name: &str, offloads: libc::c_uint, queues: usize) -> Result<Vec<File>> {
    let bad = |why: &str| Error::new(ErrorKind::InvalidConfig, format!("tap {name:?}: {why}"));
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
        return Err(bad("not a valid interface name"));
    }
    if queues == 0 || queues > MAX_QUEUES {
        return Err(bad("queue count out of range"));
    }
    let multi = if queues > 1 { IFF_MULTI_QUEUE } else { 0 };
    let vnet = if offloads != 0 { IFF_VNET_HDR } else { 0 };
    (0..queues)
        .map(|_| open_queue(name, IFF_TAP | IFF_NO_PI | vnet | multi, offloads))
        .collect()
}

/// Most queues a TAP device takes (the kernel's `MAX_TAP_QUEUES`).
pub const MAX_QUEUES: usize = 256;

fn open_queue(name: &str, flags: libc::c_short, offloads: libc::c_uint) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| Error::new(ErrorKind::Io, format!("open /dev/net/tun: {e}")))?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `IfReq` lays out (40 bytes).
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::kernel(
            e.raw_os_error().unwrap_or(0),
            format!("create tap {name:?}: {e}"),
        ));
    }
    if offloads != 0 {
        // SAFETY: TUNSETOFFLOAD takes the flags as the argument itself.
        let rc = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                TUNSETOFFLOAD as _,
                offloads as libc::c_ulong,
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            return Err(Error::kernel(
                e.raw_os_error().unwrap_or(0),
                format!("set offloads {offloads:#x} on tap {name:?}: {e}"),
            ));
        }
    }
    Ok(file)
}

/// Makes the multi-queue TAP behind `queue` hand each frame to queue `cpu % queues`, `cpu`
/// being the CPU that sends it into the TAP: a worker that serves queue k and sleeps on CPU k
/// is then woken by a running CPU, not an idle one (see `crate::dataplane::sleeve_io`). The
/// steering program is 3 eBPF instructions; without it (no BPF here) the kernel picks queues
/// by flow hash, which is correct but wakes workers across CPUs.
pub fn steer_tap_by_cpu(queue: &File, queues: usize) -> Result<()> {
    let fail = |what: &str, e: std::io::Error| {
        Error::kernel(
            e.raw_os_error().unwrap_or(0),
            format!("{what} for the tap's queue steering: {e}"),
        )
    };
    let prog = super::bpf::load_socket_filter(&[
        super::bpf::call(super::bpf::FUNC_GET_SMP_PROCESSOR_ID),
        super::bpf::mod_r0(queues as i32),
        super::bpf::exit(),
    ])
    .map_err(|e| fail("load the eBPF program", e))?;
    let fd: libc::c_int = prog.as_raw_fd();
    // SAFETY: TUNSETSTEERINGEBPF reads an int (the program's descriptor) from the pointer.
    let rc = unsafe { libc::ioctl(queue.as_raw_fd(), TUNSETSTEERINGEBPF as _, &fd) };
    if rc < 0 {
        return Err(fail(
            "attach the eBPF program",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_is_the_kernel_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn bad_names_are_refused_before_the_kernel() {
        for n in ["", "a-name-far-too-long", "a/b", "a b"] {
            let e = open_tap(n, 0).unwrap_err().to_string();
            assert!(e.contains("not a valid interface name"), "{n}: {e}");
        }
    }
}
