//! The mesh wire protocol, sans I/O: bytes in, values or errors out, never a panic and never an
//! allocation bigger than the frame limit.
//!
//! A connection starts with a 7-byte header, `"weave"` + min version + max version, from each
//! side. Then each side sends one length-prefixed frame of handshake fields ([`Hello`]). With a
//! password, a Noise handshake follows (see [`super::crypto`]). After that, every frame is one
//! [`Message`] (encrypted frames carry Noise chunks instead, which decrypt to a message).
//!
//! Frames are a big-endian `u32` length and that many bytes. Integers are big-endian; strings
//! are a length (u8 or u16) and UTF-8 bytes; peer names are 6 bytes.

use crate::peer::PeerName;
use std::fmt;
use std::net::SocketAddr;

mod entries;
mod frames;
pub use entries::{Entries, EntryRef};
pub use frames::{encode_entry, topology_frames};

pub const MAGIC: &[u8; 5] = b"weave";
pub const PROTOCOL_MIN_VERSION: u8 = 1;
pub const PROTOCOL_MAX_VERSION: u8 = 2;
pub const HEADER_LEN: usize = 7;
/// Hard limit of one frame after the handshake; a longer length prefix closes the connection.
pub const MAX_FRAME: usize = 1 << 20;
/// Limit of frames before the peer is authenticated, so strangers cannot make us buffer much.
pub const MAX_HANDSHAKE_FRAME: usize = 4096;
pub const MAX_NICKNAME: usize = 255;
pub const MAX_CHANNEL: usize = 64;
/// Hops a unicast may take before it is dropped (protects against routing loops).
pub const DEFAULT_TTL: u8 = 32;

/// Why bytes from the network were refused. Any of these closes that one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    BadMagic,
    VersionMismatch { theirs: (u8, u8) },
    FrameTooLarge { len: usize, max: usize },
    Truncated(&'static str),
    Invalid(String),
    UnknownMessage(u8),
    TrailingBytes(&'static str),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::BadMagic => write!(f, "not a weave peer (bad protocol header)"),
            ProtocolError::VersionMismatch { theirs } => write!(
                f,
                "protocol version mismatch: ours {PROTOCOL_MIN_VERSION}..{PROTOCOL_MAX_VERSION}, theirs {}..{}",
                theirs.0, theirs.1
            ),
            ProtocolError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max}")
            }
            ProtocolError::Truncated(what) => write!(f, "truncated {what}"),
            ProtocolError::Invalid(m) => write!(f, "{m}"),
            ProtocolError::UnknownMessage(t) => write!(f, "unknown message type {t}"),
            ProtocolError::TrailingBytes(what) => write!(f, "trailing bytes after {what}"),
        }
    }
}

impl std::error::Error for ProtocolError {}

type PResult<T> = Result<T, ProtocolError>;

/// Our header: magic and the versions we speak.
pub fn encode_header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..5].copy_from_slice(MAGIC);
    h[5] = PROTOCOL_MIN_VERSION;
    h[6] = PROTOCOL_MAX_VERSION;
    h
}

/// Checks the remote header; the version both speak (the highest common one).
pub fn decode_header(h: &[u8]) -> PResult<u8> {
    if h.len() < HEADER_LEN {
        return Err(ProtocolError::Truncated("header"));
    }
    if &h[..5] != MAGIC {
        return Err(ProtocolError::BadMagic);
    }
    let (min, max) = (h[5], h[6]);
    if min > max || max < PROTOCOL_MIN_VERSION || min > PROTOCOL_MAX_VERSION {
        return Err(ProtocolError::VersionMismatch { theirs: (min, max) });
    }
    Ok(max.min(PROTOCOL_MAX_VERSION))
}

/// Appends one frame (length prefix and body) to `out`.
pub fn encode_frame(body: &[u8], out: &mut Vec<u8>) -> PResult<()> {
    if body.len() > MAX_FRAME {
        return Err(ProtocolError::FrameTooLarge {
            len: body.len(),
            max: MAX_FRAME,
        });
    }
    out.reserve(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// Splits a byte stream into frames. The buffer never holds more than one frame's worth
/// beyond what was pushed, because an oversized length is an error before anything is kept.
/// Frames are taken from the front without moving the bytes after them; what is left moves
/// to the front only when more is read.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Where the bytes not yet returned as frames begin.
    start: usize,
    max: usize,
}

/// Room [`FrameDecoder::read_buffer`] leaves for one read.
const READ_ROOM: usize = 16 * 1024;

impl FrameDecoder {
    pub fn new(max: usize) -> FrameDecoder {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            max,
        }
    }

    /// Raises (or lowers) the limit, e.g. once the handshake is over.
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read more bytes into (appending, e.g. with `read_buf`), with room for
    /// one read: reading straight into it spares a copy through a buffer of the caller's.
    pub fn read_buffer(&mut self) -> &mut Vec<u8> {
        self.compact();
        // A whole topology can be a megabyte: its room is not kept for the frames after.
        if self.buf.is_empty() && self.buf.capacity() > 4 * READ_ROOM {
            self.buf = Vec::new();
        }
        self.buf.reserve(READ_ROOM);
        &mut self.buf
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// Bytes pushed but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> PResult<Option<Vec<u8>>> {
        let b = &self.buf[self.start..];
        if b.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len > self.max {
            return Err(ProtocolError::FrameTooLarge { len, max: self.max });
        }
        if b.len() < 4 + len {
            return Ok(None);
        }
        let frame = b[4..4 + len].to_vec();
        self.start += 4 + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(frame))
    }
}

/// The handshake fields each side sends after the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub name: PeerName,
    pub nickname: String,
    /// Random per launch: tells a restarted peer from its previous life.
    pub uid: u64,
    /// Random per connection, for logs and duplicate detection.
    pub conn_id: u64,
    /// The port this peer listens on, so inbound connections tell a dialable address.
    pub listen_port: u16,
    /// True when this peer has a password and will only talk encrypted.
    pub encrypted: bool,
}

const HELLO_KEYS: [&str; 6] = [
    "Name",
    "NickName",
    "UID",
    "ConnID",
    "ListenPort",
    "Encryption",
];

impl Hello {
    /// Key/value pairs (`u8` key length, key, `u16` value length, value); unknown keys are
    /// ignored by the receiver so later versions can add fields.
    pub fn encode(&self) -> Vec<u8> {
        let values = [
            self.name.to_string(),
            self.nickname.clone(),
            self.uid.to_string(),
            self.conn_id.to_string(),
            self.listen_port.to_string(),
            if self.encrypted { "noise" } else { "none" }.to_string(),
        ];
        let mut out = Vec::new();
        for (k, v) in HELLO_KEYS.iter().zip(values.iter()) {
            put_str8(&mut out, k);
            out.extend_from_slice(&(v.len() as u16).to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }

    pub fn decode(b: &[u8]) -> PResult<Hello> {
        let mut r = Reader::new(b);
        let mut found: [Option<String>; 6] = Default::default();
        let mut entries = 0;
        while !r.is_empty() {
            entries += 1;
            if entries > 32 {
                return Err(invalid("too many handshake fields"));
            }
            let key = r.str8("handshake field name")?;
            let len = r.u16("handshake field length")? as usize;
            let value = r.utf8(len, "handshake field value")?;
            if let Some(i) = HELLO_KEYS.iter().position(|k| *k == key) {
                if found[i].replace(value).is_some() {
                    return Err(invalid(format!("duplicate handshake field {key}")));
                }
            }
        }
        let mut take = |i: usize| {
            found[i]
                .take()
                .ok_or_else(|| invalid(format!("missing handshake field {}", HELLO_KEYS[i])))
        };
        let name = take(0)?;
        let name: PeerName = name
            .parse()
            .map_err(|_| invalid(format!("invalid peer name {name:?}")))?;
        let nickname = take(1)?;
        check_nickname(&nickname)?;
        let num = |s: String, what: &str| {
            s.parse::<u64>()
                .map_err(|_| invalid(format!("invalid {what} {s:?}")))
        };
        let uid = num(take(2)?, "UID")?;
        let conn_id = num(take(3)?, "ConnID")?;
        let port = take(4)?;
        let listen_port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| invalid(format!("invalid ListenPort {port:?}")))?;
        let encrypted = match take(5)?.as_str() {
            "noise" => true,
            "none" => false,
            other => return Err(invalid(format!("unknown Encryption {other:?}"))),
        };
        Ok(Hello {
            name,
            nickname,
            uid,
            conn_id,
            listen_port,
            encrypted,
        })
    }
}

/// One connection as its owner reports it in topology gossip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub peer: PeerName,
    /// The remote's dialable address (for inbound connections: its IP and listen port).
    pub addr: SocketAddr,
    pub outbound: bool,
    pub established: bool,
}

/// One peer's entry in topology gossip; a higher version replaces a lower one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub name: PeerName,
    pub nickname: String,
    pub uid: u64,
    pub version: u64,
    pub connections: Vec<ConnectionInfo>,
}

/// A message after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Heartbeat,
    Topology(Entries),
    /// Flooded to every peer; `(origin, origin_uid, seq)` identifies it for deduplication.
    Broadcast {
        origin: PeerName,
        origin_uid: u64,
        seq: u64,
        channel: String,
        payload: Vec<u8>,
    },
    /// Routed hop by hop towards `dest`.
    Unicast {
        origin: PeerName,
        dest: PeerName,
        ttl: u8,
        channel: String,
        payload: Vec<u8>,
    },
    /// The sender is leaving the mesh on purpose (`DELETE /peer`); do not wait for a timeout.
    Goodbye,
}

const TAG_HEARTBEAT: u8 = 1;
const TAG_TOPOLOGY: u8 = 2;
const TAG_BROADCAST: u8 = 3;
const TAG_UNICAST: u8 = 4;
const TAG_GOODBYE: u8 = 5;

/// Bytes a message adds around a gossip payload at most (tag, names, numbers, channel).
pub const GOSSIP_OVERHEAD: usize = 1 + 6 + 8 + 8 + 1 + MAX_CHANNEL + 4;
/// Largest gossip payload that fits in one frame.
pub const MAX_GOSSIP_PAYLOAD: usize = MAX_FRAME - GOSSIP_OVERHEAD;

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Message::Heartbeat => out.push(TAG_HEARTBEAT),
            Message::Goodbye => out.push(TAG_GOODBYE),
            Message::Topology(entries) => {
                out.push(TAG_TOPOLOGY);
                entries.encode(&mut out);
            }
            Message::Broadcast {
                origin,
                origin_uid,
                seq,
                channel,
                payload,
            } => {
                out.push(TAG_BROADCAST);
                out.extend_from_slice(&origin.to_bytes());
                out.extend_from_slice(&origin_uid.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                put_str8(&mut out, channel);
                out.extend_from_slice(payload);
            }
            Message::Unicast {
                origin,
                dest,
                ttl,
                channel,
                payload,
            } => {
                out.push(TAG_UNICAST);
                out.extend_from_slice(&origin.to_bytes());
                out.extend_from_slice(&dest.to_bytes());
                out.push(*ttl);
                put_str8(&mut out, channel);
                out.extend_from_slice(payload);
            }
        }
        out
    }

    pub fn decode(b: &[u8]) -> PResult<Message> {
        let mut r = Reader::new(b);
        let tag = r.u8("message type")?;
        let msg = match tag {
            TAG_HEARTBEAT => Message::Heartbeat,
            TAG_GOODBYE => Message::Goodbye,
            TAG_TOPOLOGY => {
                let n = r.u16("peer count")? as usize;
                Message::Topology(Entries::read(&mut r, n)?)
            }
            TAG_BROADCAST => {
                let origin = r.peer_name("broadcast origin")?;
                let origin_uid = r.u64("broadcast uid")?;
                let seq = r.u64("broadcast sequence")?;
                let channel = r.channel()?;
                Message::Broadcast {
                    origin,
                    origin_uid,
                    seq,
                    channel,
                    payload: r.rest().to_vec(),
                }
            }
            TAG_UNICAST => {
                let origin = r.peer_name("unicast origin")?;
                let dest = r.peer_name("unicast destination")?;
                let ttl = r.u8("unicast ttl")?;
                let channel = r.channel()?;
                Message::Unicast {
                    origin,
                    dest,
                    ttl,
                    channel,
                    payload: r.rest().to_vec(),
                }
            }
            other => return Err(ProtocolError::UnknownMessage(other)),
        };
        if !r.is_empty() {
            return Err(ProtocolError::TrailingBytes("message"));
        }
        Ok(msg)
    }
}

/// Topology messages that each fit in a frame, splitting the peer list as needed (merging is
/// per peer, so a split list means the same as a whole one).
pub fn topology_messages(peers: &[PeerInfo]) -> Vec<Message> {
    let mut out = Vec::new();
    let mut chunk = Entries::default();
    let mut size = 3;
    for p in peers {
        let one = encode_entry(p);
        if !chunk.is_empty() && (size + one.len() > MAX_FRAME || chunk.len() == u16::MAX as usize) {
            out.push(Message::Topology(std::mem::take(&mut chunk)));
            size = 3;
        }
        size += one.len();
        chunk.push_encoded(p.name, p.version, &one);
    }
    if !chunk.is_empty() {
        out.push(Message::Topology(chunk));
    }
    out
}

/// Channel names: 1..=64 bytes of `[A-Za-z0-9._-]`.
pub fn check_channel(c: &str) -> PResult<()> {
    let ok = !c.is_empty()
        && c.len() <= MAX_CHANNEL
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("invalid channel name {c:?}")))
    }
}

/// Nicknames: at most 255 bytes, no control characters (they end up in status text).
pub fn check_nickname(n: &str) -> PResult<()> {
    if n.len() > MAX_NICKNAME || n.chars().any(char::is_control) {
        return Err(invalid(format!("invalid nickname {n:?}")));
    }
    Ok(())
}

fn invalid(m: impl Into<String>) -> ProtocolError {
    ProtocolError::Invalid(m.into())
}

fn put_str8(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(255)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

/// A bounds-checked cursor: every read says what it was reading when bytes run out.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b, pos: 0 }
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.b.len()
    }

    fn need(&self, n: usize, what: &'static str) -> PResult<()> {
        if self.b.len() - self.pos < n {
            Err(ProtocolError::Truncated(what))
        } else {
            Ok(())
        }
    }

    fn take(&mut self, n: usize, what: &'static str) -> PResult<&'a [u8]> {
        self.need(n, what)?;
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> PResult<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> PResult<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> PResult<u16> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> PResult<u64> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn peer_name(&mut self, what: &'static str) -> PResult<PeerName> {
        Ok(PeerName::from_bytes(self.array(what)?))
    }

    fn utf8(&mut self, len: usize, what: &'static str) -> PResult<String> {
        let b = self.take(len, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| invalid(format!("{what} is not UTF-8")))
    }

    fn str8(&mut self, what: &'static str) -> PResult<String> {
        let len = self.u8(what)? as usize;
        self.utf8(len, what)
    }

    fn channel(&mut self) -> PResult<String> {
        let c = self.str8("channel name")?;
        check_channel(&c)?;
        Ok(c)
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = &self.b[self.pos..];
        self.pos = self.b.len();
        s
    }
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
