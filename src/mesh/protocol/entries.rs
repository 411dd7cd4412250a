//! Topology entries as a message carries them: checked when the frame arrives, decoded only
//! when taken in. Most entries a peer receives while a mesh forms are versions it already
//! holds (at 500 peers, 56 of every 100); comparing their name and version straight from the
//! bytes spares a copy of each one's nickname and connection list, made on the connection's
//! task and freed on the actor's.

use super::{check_nickname, invalid, put_str8, PResult, Reader};
use super::{ConnectionInfo, PeerInfo};
use crate::peer::PeerName;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The entries of one topology message: their bytes as received (or encoded), and where
/// each one lies in them with its name and version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries {
    raw: Vec<u8>,
    index: Vec<Slot>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    start: usize,
    end: usize,
    name: PeerName,
    version: u64,
}

/// One entry, not decoded: its name and version, and its bytes.
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    pub name: PeerName,
    pub version: u64,
    bytes: &'a [u8],
}

impl EntryRef<'_> {
    /// The whole entry. The bytes were checked on arrival, so this fails only if that check
    /// and this decoder disagree.
    pub fn decode(&self) -> PResult<PeerInfo> {
        let mut connections = Vec::new();
        let p = read_peer(&mut Reader::new(self.bytes), Some(&mut connections))?;
        Ok(PeerInfo {
            name: p.name,
            nickname: p.nickname.to_owned(),
            uid: p.uid,
            version: p.version,
            connections,
        })
    }

    /// The entry as it goes on the wire.
    pub fn bytes(&self) -> &[u8] {
        self.bytes
    }
}

impl Entries {
    /// Entries encoded from `peers` (as many as a message holds: see
    /// [`super::topology_messages`], which splits longer lists).
    pub fn from_peers(peers: &[PeerInfo]) -> Entries {
        let mut e = Entries::default();
        for p in peers {
            e.push_encoded(p.name, p.version, &super::encode_entry(p));
        }
        e
    }

    /// Appends an entry already encoded (by [`super::encode_entry`]) from `name`'s entry at
    /// `version`.
    pub(super) fn push_encoded(&mut self, name: PeerName, version: u64, bytes: &[u8]) {
        let start = self.raw.len();
        self.raw.extend_from_slice(bytes);
        self.index.push(Slot {
            start,
            end: self.raw.len(),
            name,
            version,
        });
    }

    /// Reads and checks `count` entries, every field as a decode would, decoding none: their
    /// bytes are kept in one piece.
    pub(super) fn read(r: &mut Reader<'_>, count: usize) -> PResult<Entries> {
        // The smallest entry is 6+1+8+8+2 bytes: refuse counts the bytes cannot hold.
        r.need(count * 25, "topology")?;
        let from = r.pos;
        let mut index = Vec::with_capacity(count);
        for _ in 0..count {
            let start = r.pos - from;
            let p = read_peer(r, None)?;
            index.push(Slot {
                start,
                end: r.pos - from,
                name: p.name,
                version: p.version,
            });
        }
        Ok(Entries {
            raw: r.b[from..r.pos].to_vec(),
            index,
        })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.index.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.raw);
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = EntryRef<'_>> {
        self.index.iter().map(|s| EntryRef {
            name: s.name,
            version: s.version,
            bytes: &self.raw[s.start..s.end],
        })
    }

    /// Every entry decoded.
    pub fn to_peers(&self) -> PResult<Vec<PeerInfo>> {
        self.iter().map(|e| e.decode()).collect()
    }
}

impl From<Vec<PeerInfo>> for Entries {
    fn from(peers: Vec<PeerInfo>) -> Entries {
        Entries::from_peers(&peers)
    }
}

/// One entry's fields but its connections, borrowed from the bytes.
struct RawPeer<'a> {
    name: PeerName,
    nickname: &'a str,
    uid: u64,
    version: u64,
}

/// Reads and checks one entry; its connections go into `keep` if given (a decode), else
/// they are only checked.
fn read_peer<'a>(
    r: &mut Reader<'a>,
    mut keep: Option<&mut Vec<ConnectionInfo>>,
) -> PResult<RawPeer<'a>> {
    let name = r.peer_name("peer name")?;
    let len = r.u8("nickname")? as usize;
    let nickname = std::str::from_utf8(r.take(len, "nickname")?)
        .map_err(|_| invalid("nickname is not UTF-8"))?;
    check_nickname(nickname)?;
    let uid = r.u64("peer uid")?;
    let version = r.u64("peer version")?;
    let count = r.u16("connection count")? as usize;
    // The smallest connection entry is 6+1+4+2+1 bytes.
    r.need(count * 14, "connection list")?;
    if let Some(k) = keep.as_deref_mut() {
        k.reserve(count);
    }
    for _ in 0..count {
        let c = read_connection(r)?;
        if let Some(k) = keep.as_deref_mut() {
            k.push(c);
        }
    }
    Ok(RawPeer {
        name,
        nickname,
        uid,
        version,
    })
}

fn read_connection(r: &mut Reader<'_>) -> PResult<ConnectionInfo> {
    let peer = r.peer_name("connection peer")?;
    let ip = match r.u8("address family")? {
        4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>("ipv4 address")?)),
        6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>("ipv6 address")?)),
        f => return Err(invalid(format!("unknown address family {f}"))),
    };
    let port = r.u16("port")?;
    let flags = r.u8("connection flags")?;
    if flags > 3 {
        return Err(invalid(format!("unknown connection flags {flags:#x}")));
    }
    Ok(ConnectionInfo {
        peer,
        addr: SocketAddr::new(ip, port),
        outbound: flags & 1 != 0,
        established: flags & 2 != 0,
    })
}

pub(super) fn encode_peer(p: &PeerInfo, out: &mut Vec<u8>) {
    out.extend_from_slice(&p.name.to_bytes());
    put_str8(out, &p.nickname);
    out.extend_from_slice(&p.uid.to_be_bytes());
    out.extend_from_slice(&p.version.to_be_bytes());
    out.extend_from_slice(&(p.connections.len() as u16).to_be_bytes());
    for c in &p.connections {
        out.extend_from_slice(&c.peer.to_bytes());
        match c.addr.ip() {
            IpAddr::V4(ip) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(6);
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(&c.addr.port().to_be_bytes());
        out.push(c.outbound as u8 | (c.established as u8) << 1);
    }
}
