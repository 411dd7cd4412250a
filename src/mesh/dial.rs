//! Outbound dials and the inbound listener: both end in a handshaken connection (or a
//! refusal) that goes to the actor.

use super::command::{Cmd, NewConn};
use super::connection::{self, HandshakeError};
use super::maker::{with_port, MeshTimers};
use super::protocol::Hello;
use super::ratelimit::{AcceptLimiter, AcceptLimits};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

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

/// Releases a connection's admission slot when its handshake task ends, however it ends.
struct Admitted {
    limiter: Arc<Mutex<AcceptLimiter>>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        lock(&self.limiter).finished(self.ip);
    }
}

fn lock(l: &Mutex<AcceptLimiter>) -> std::sync::MutexGuard<'_, AcceptLimiter> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

/// Accepts inbound connections and handshakes each in its own task. Before any handshake
/// work, the [`AcceptLimiter`] decides; a refused connection is closed at once, unanswered.
pub(super) async fn accept_loop(
    listener: TcpListener,
    tx: mpsc::Sender<Cmd>,
    hello: Hello,
    psk: Option<[u8; 32]>,
    timers: MeshTimers,
    limits: AcceptLimits,
) {
    let limiter = Arc::new(Mutex::new(AcceptLimiter::new(limits, Instant::now())));
    loop {
        let (mut stream, remote) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // E.g. out of file descriptors: do not spin.
                tracing::warn!("mesh accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let verdict = {
            let mut l = lock(&limiter);
            let now = Instant::now();
            l.admit(remote.ip(), now)
                .map_err(|why| (why, l.log_refusal(now)))
        };
        if let Err((why, log)) = verdict {
            if let Some(unlogged) = log {
                tracing::warn!(
                    "mesh: refusing connection from {remote} before handshake: {why} \
                     ({unlogged} more refused since the last such message)"
                );
            }
            drop(stream);
            continue;
        }
        let slot = Admitted {
            limiter: limiter.clone(),
            ip: remote.ip(),
        };
        let _ = stream.set_nodelay(true);
        let (tx, mut hello) = (tx.clone(), hello.clone());
        hello.conn_id = rand::random();
        tokio::spawn(async move {
            let result = connection::handshake(
                &mut stream,
                &hello,
                false,
                psk.as_ref(),
                timers.handshake_timeout,
            )
            .await;
            drop(slot);
            match result {
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
