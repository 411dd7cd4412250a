//! One TCP control connection: the handshake (header, hello, optional Noise), then a reader and
//! a writer that run until either side fails, the peer goes silent, or the router drops us.
//! Every error here ends only this connection.

use super::crypto::{self, Session, MAX_SEALED_FRAME};
use super::protocol::{
    decode_header, encode_frame, encode_header, FrameDecoder, Hello, Message, ProtocolError,
    HEADER_LEN, MAX_FRAME, MAX_HANDSHAKE_FRAME,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

/// What a finished handshake yields.
pub struct Handshaken {
    pub remote: Hello,
    pub session: Option<Session>,
    pub decoder: FrameDecoder,
}

/// Why a handshake failed; `Refused` is a policy decision (password), worth a clear log line.
#[derive(Debug)]
pub enum HandshakeError {
    Refused(String),
    Failed(String),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Refused(m) | HandshakeError::Failed(m) => f.write_str(m),
        }
    }
}

fn failed(e: impl std::fmt::Display) -> HandshakeError {
    HandshakeError::Failed(e.to_string())
}

/// Runs the whole handshake within `limit`. The dialler (`outbound`) is the Noise initiator.
pub async fn handshake(
    stream: &mut TcpStream,
    ours: &Hello,
    outbound: bool,
    psk: Option<&[u8; 32]>,
    limit: Duration,
) -> Result<Handshaken, HandshakeError> {
    match timeout(limit, handshake_inner(stream, ours, outbound, psk)).await {
        Ok(r) => r,
        Err(_) => Err(failed(format!(
            "handshake timed out after {}s",
            limit.as_secs_f32()
        ))),
    }
}

async fn handshake_inner(
    stream: &mut TcpStream,
    ours: &Hello,
    outbound: bool,
    psk: Option<&[u8; 32]>,
) -> Result<Handshaken, HandshakeError> {
    let our_hello = ours.encode();
    let mut out = encode_header().to_vec();
    encode_frame(&our_hello, &mut out).map_err(failed)?;
    stream.write_all(&out).await.map_err(failed)?;

    let mut header = [0u8; HEADER_LEN];
    stream
        .read_exact(&mut header)
        .await
        .map_err(|e| failed(format!("read header: {e}")))?;
    decode_header(&header).map_err(failed)?;
    let mut decoder = FrameDecoder::new(MAX_HANDSHAKE_FRAME);
    let their_hello = read_frame(stream, &mut decoder).await?;
    let remote = Hello::decode(&their_hello).map_err(failed)?;

    match (psk.is_some(), remote.encrypted) {
        (true, false) => {
            return Err(HandshakeError::Refused(
                "peer requested an unencrypted connection but a password is set".into(),
            ))
        }
        (false, true) => {
            return Err(HandshakeError::Refused(
                "peer requires an encrypted connection but no password is set".into(),
            ))
        }
        _ => {}
    }
    let session = match psk {
        None => None,
        Some(psk) => {
            // Both sides' header and hello, dialler first, bind the handshake to what was said.
            let mut prologue = Vec::new();
            let (first, second) = if outbound {
                (&our_hello, &their_hello)
            } else {
                (&their_hello, &our_hello)
            };
            for h in [first, second] {
                prologue.extend_from_slice(&encode_header());
                prologue.extend_from_slice(h);
            }
            let refused = |_| HandshakeError::Refused("password mismatch".into());
            Some(if outbound {
                let (init, m1) = crypto::initiate(psk, &prologue).map_err(failed)?;
                write_frame(stream, &m1).await?;
                let m2 = read_frame(stream, &mut decoder)
                    .await
                    .map_err(|e| match e {
                        // The listener closes on a bad first message: that is the mismatch.
                        HandshakeError::Failed(_) => HandshakeError::Refused(
                            "password mismatch (the peer closed the encrypted handshake)".into(),
                        ),
                        r => r,
                    })?;
                init.finish(&m2).map_err(refused)?
            } else {
                let m1 = read_frame(stream, &mut decoder).await?;
                let (s, m2) = crypto::respond(psk, &prologue, &m1).map_err(refused)?;
                write_frame(stream, &m2).await?;
                s
            })
        }
    };
    decoder.set_max(if session.is_some() {
        MAX_SEALED_FRAME
    } else {
        MAX_FRAME
    });
    Ok(Handshaken {
        remote,
        session,
        decoder,
    })
}

async fn write_frame(stream: &mut TcpStream, body: &[u8]) -> Result<(), HandshakeError> {
    let mut out = Vec::with_capacity(body.len() + 4);
    encode_frame(body, &mut out).map_err(failed)?;
    stream.write_all(&out).await.map_err(failed)
}

async fn read_frame(
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder,
) -> Result<Vec<u8>, HandshakeError> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(f) = decoder.next_frame().map_err(failed)? {
            return Ok(f);
        }
        let n = stream.read(&mut buf).await.map_err(failed)?;
        if n == 0 {
            return Err(failed("connection closed during handshake"));
        }
        decoder.push(&buf[..n]);
    }
}

/// Messages (heartbeats left out) and their frame bytes written by every mesh connection of
/// this process since it started: what the in-process scale benchmarks report per peer.
static SENT_MESSAGES: AtomicU64 = AtomicU64::new(0);
static SENT_BYTES: AtomicU64 = AtomicU64::new(0);
/// The same messages counted by their first byte, the message kind (topology 2, broadcast 3,
/// unicast 4, goodbye 5; others in slot 0).
static SENT_BY_KIND: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];

/// (messages, bytes) sent by all mesh connections of this process; see [`SENT_MESSAGES`].
pub fn sent_totals() -> (u64, u64) {
    (
        SENT_MESSAGES.load(Ordering::Relaxed),
        SENT_BYTES.load(Ordering::Relaxed),
    )
}

/// Messages sent by all mesh connections of this process, by kind: index 2 topology, 3
/// broadcast, 4 unicast, 5 goodbye, 0 anything else (see [`SENT_MESSAGES`]).
pub fn sent_by_kind() -> [u64; 6] {
    std::array::from_fn(|i| SENT_BY_KIND[i].load(Ordering::Relaxed))
}

/// What the connection reports to the router.
pub enum ConnEvent {
    Message(u64, Message),
    Closed(u64, String),
}

/// Timers of a running connection.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    pub heartbeat: Duration,
    /// Silence (no frame at all) after which the peer counts as dead.
    pub dead_after: Duration,
}

/// Runs an established connection until it ends, then reports why. Outgoing frames arrive on
/// `out` as encoded messages; dropping the sender closes the connection after the queue.
pub async fn run(
    key: u64,
    stream: TcpStream,
    hs: Handshaken,
    mut out: mpsc::Receiver<Arc<Vec<u8>>>,
    events: mpsc::Sender<ConnEvent>,
    timers: Timers,
) {
    let session = hs.session.map(|s| Arc::new(Mutex::new(s)));
    let (mut rd, mut wr) = stream.into_split();
    let mut decoder = hs.decoder;
    let seal = session.clone();
    let writer = async move {
        let mut tick = tokio::time::interval(timers.heartbeat);
        let heartbeat = Arc::new(Message::Heartbeat.encode());
        let mut frame = Vec::new();
        loop {
            let (plain, counted) = tokio::select! {
                m = out.recv() => match m {
                    Some(m) => (m, true),
                    None => return "closed by us".to_string(),
                },
                _ = tick.tick() => (heartbeat.clone(), false),
            };
            let sealed = match &seal {
                Some(s) => match s.lock().expect("session lock").seal(&plain) {
                    Ok(b) => Some(b),
                    Err(e) => return format!("encrypt: {e}"),
                },
                None => None,
            };
            let body = sealed.as_deref().unwrap_or(&plain[..]);
            // One buffer for every frame: no allocation per message once it is big enough.
            frame.clear();
            if let Err(e) = encode_frame(body, &mut frame) {
                return format!("send: {e}");
            }
            match timeout(timers.dead_after, wr.write_all(&frame)).await {
                Ok(Ok(())) if counted => {
                    SENT_MESSAGES.fetch_add(1, Ordering::Relaxed);
                    SENT_BYTES.fetch_add(frame.len() as u64, Ordering::Relaxed);
                    let kind = plain.first().map_or(0, |&k| k as usize);
                    SENT_BY_KIND[if kind < 6 { kind } else { 0 }].fetch_add(1, Ordering::Relaxed);
                }
                Ok(Ok(())) => {}
                Ok(Err(e)) => return format!("write: {e}"),
                Err(_) => return "write timed out (peer not reading)".to_string(),
            }
            // A whole topology is big: its buffer is not kept for the small frames after.
            if frame.capacity() > 16 * 1024 {
                frame = Vec::new();
            }
        }
    };
    let ev = events.clone();
    let reader = async move {
        let mut last = Instant::now();
        loop {
            loop {
                let frame = match decoder.next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => return e.to_string(),
                };
                let plain = match &session {
                    Some(s) => match s.lock().expect("session lock").open(&frame) {
                        Ok(p) => p,
                        Err(e) => return e.to_string(),
                    },
                    None => frame,
                };
                let msg = match Message::decode(&plain) {
                    Ok(m) => m,
                    Err(e) => return invalid_message(e),
                };
                if ev.send(ConnEvent::Message(key, msg)).await.is_err() {
                    return "router stopped".into();
                }
            }
            let wait = timers.dead_after.saturating_sub(last.elapsed());
            match timeout(wait, rd.read_buf(decoder.read_buffer())).await {
                Ok(Ok(0)) => return "connection closed by peer".into(),
                Ok(Ok(_)) => last = Instant::now(),
                Ok(Err(e)) => return format!("read: {e}"),
                Err(_) => {
                    return format!(
                        "no heartbeat from peer for {}s",
                        timers.dead_after.as_secs_f32()
                    )
                }
            }
        }
    };
    let reason = tokio::select! {
        r = writer => r,
        r = reader => r,
    };
    let _ = events.send(ConnEvent::Closed(key, reason)).await;
}

fn invalid_message(e: ProtocolError) -> String {
    format!("invalid message: {e}")
}
