//! Outbound dials and the inbound listener: both end in a handshaken connection (or a
//! refusal) that goes to the actor.

use super::actor::{Cmd, NewConn};
use super::connection::{self, HandshakeError};
use super::maker::{with_port, MeshTimers};
use super::protocol::Hello;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

/// Resolves, connects and handshakes one target, then hands the result to the actor.
pub(super) async fn dial(
    target: String,
    hello: Hello,
    psk: Option<[u8; 32]>,
    timers: MeshTimers,
    tx: mpsc::Sender<Cmd>,
) {
    let limit = timers.handshake_timeout;
    let addr_text = with_port(&target);
    let resolved: Vec<SocketAddr> =
        match timeout(limit, tokio::net::lookup_host(addr_text.clone())).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => {
                let e = HandshakeError::Failed(format!("resolve {addr_text}: {e}"));
                let _ = tx.send(Cmd::DialFailed(target, e, vec![])).await;
                return;
            }
            Err(_) => {
                let e = HandshakeError::Failed(format!("resolve {addr_text}: timed out"));
                let _ = tx.send(Cmd::DialFailed(target, e, vec![])).await;
                return;
            }
        };
    let Some(addr) = resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
    else {
        let e = HandshakeError::Failed(format!("resolve {addr_text}: no addresses"));
        let _ = tx.send(Cmd::DialFailed(target, e, resolved)).await;
        return;
    };
    let result = async {
        let mut stream = match timeout(limit, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(HandshakeError::Failed(format!("connect to {addr}: {e}"))),
            Err(_) => {
                return Err(HandshakeError::Failed(format!(
                    "connect to {addr}: timed out"
                )))
            }
        };
        let _ = stream.set_nodelay(true);
        let hs = connection::handshake(&mut stream, &hello, true, psk.as_ref(), limit).await?;
        Ok((stream, hs))
    }
    .await;
    let cmd = match result {
        Ok((stream, hs)) => Cmd::Handshaken(Box::new(NewConn {
            stream,
            hs,
            remote: addr,
            target: Some((target, vec![addr])),
        })),
        Err(e) => Cmd::DialFailed(target, e, vec![addr]),
    };
    let _ = tx.send(cmd).await;
}

/// Accepts inbound connections, throttled by a token bucket (20 tokens, one more every 50 ms),
/// and handshakes each in its own task.
pub(super) async fn accept_loop(
    listener: TcpListener,
    tx: mpsc::Sender<Cmd>,
    hello: Hello,
    psk: Option<[u8; 32]>,
    timers: MeshTimers,
) {
    const BURST: f64 = 20.0;
    const REFILL: Duration = Duration::from_millis(50);
    let mut tokens = BURST;
    let mut last = Instant::now();
    loop {
        tokens = (tokens + last.elapsed().as_secs_f64() / REFILL.as_secs_f64()).min(BURST);
        last = Instant::now();
        if tokens < 1.0 {
            tokio::time::sleep(REFILL.mul_f64(1.0 - tokens)).await;
            continue;
        }
        let (mut stream, remote) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("mesh accept: {e}");
                tokio::time::sleep(REFILL).await;
                continue;
            }
        };
        tokens -= 1.0;
        let _ = stream.set_nodelay(true);
        let (tx, mut hello) = (tx.clone(), hello.clone());
        hello.conn_id = rand::random();
        tokio::spawn(async move {
            match connection::handshake(
                &mut stream,
                &hello,
                false,
                psk.as_ref(),
                timers.handshake_timeout,
            )
            .await
            {
                Ok(hs) => {
                    let _ = tx
                        .send(Cmd::Handshaken(Box::new(NewConn {
                            stream,
                            hs,
                            remote,
                            target: None,
                        })))
                        .await;
                }
                Err(HandshakeError::Refused(why)) => tracing::warn!("peer {remote} refused: {why}"),
                Err(e) => tracing::info!("handshake with {remote}: {e}"),
            }
        });
    }
}
