//! Gratuitous ARP: tells the bridge and peers the (possibly reused) IP now lives at a new MAC,
//! so stale neighbour entries elsewhere do not black-hole the new container.

use crate::netns::NetNs;
use crate::{Context, Error, Result};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const ETH_P_ARP: u16 = 0x0806;

/// Broadcasts an ARP request for `ip` from `ip`/`mac` out of link `ifindex` inside `ns`.
pub fn send_gratuitous_arp(ns: &NetNs, ifindex: u32, mac: [u8; 6], ip: Ipv4Addr) -> Result<()> {
    // The socket is bound to the namespace it is created in; sending can happen from anywhere.
    let sock = ns.run(packet_socket)?.context("open packet socket")?;
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETH_P_ARP.to_be();
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    let frame = arp_request(mac, ip);
    // SAFETY: frame and addr outlive the call; lengths are theirs.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if sent < 0 {
        return Err(Error::from(std::io::Error::last_os_error()))
            .with_context(|| format!("send gratuitous ARP for {ip}"));
    }
    Ok(())
}

fn packet_socket() -> Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            ETH_P_ARP.to_be() as i32,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The ARP payload (the kernel adds the Ethernet header for SOCK_DGRAM): a request whose
/// sender and target IP are both `ip`, as Linux's own `arping -U` sends.
fn arp_request(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&1u16.to_be_bytes()); // request
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&ip.octets());
    // Target hardware address stays zero.
    p[24..28].copy_from_slice(&ip.octets());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_request_layout() {
        let p = arp_request([2, 0, 0, 0, 0, 9], Ipv4Addr::new(10, 32, 0, 5));
        assert_eq!(&p[0..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&p[8..14], &[2, 0, 0, 0, 0, 9]);
        assert_eq!(&p[14..18], &[10, 32, 0, 5]);
        assert_eq!(&p[18..24], &[0; 6]);
        assert_eq!(&p[24..28], &[10, 32, 0, 5]);
    }
}
