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
    let bad = |why: &str| Error::new(ErrorKind::InvalidConfig, format!("tap {name:?}: {why}"));
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
        return Err(bad("not a valid interface name"));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| Error::new(ErrorKind::Io, format!("open /dev/net/tun: {e}")))?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | if offloads != 0 { IFF_VNET_HDR } else { 0 },
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
