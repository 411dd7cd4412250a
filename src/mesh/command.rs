//! The messages the mesh actor receives: from [`super::MeshHandle`] (the API), from dials
//! and the listener (finished handshakes). Kept apart from the actor so that the dialer and
//! the handle depend on the vocabulary, not on the actor (no import cycle).

use super::config::GossipMessage;
use super::connection::{HandshakeError, Handshaken};
use super::status::MeshStatus;
use crate::peer::PeerName;
use crate::Result;
use std::net::SocketAddr;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

pub(super) enum Cmd {
    Broadcast(String, Vec<u8>),
    Unicast(PeerName, String, Vec<u8>, oneshot::Sender<Result<()>>),
    /// Answered once subscribed, so that nothing arriving after the answer is missed.
    Subscribe(String, mpsc::Sender<GossipMessage>, oneshot::Sender<()>),
    /// (targets, replace, remove)
    Targets(Vec<String>, bool, bool),
    Status(oneshot::Sender<MeshStatus>),
    Leave(oneshot::Sender<()>),
    Shutdown,
    Handshaken(Box<NewConn>),
    DialFailed(String, HandshakeError, Vec<SocketAddr>),
}

/// A connection whose handshake succeeded, waiting for the actor's yes or no.
pub(super) struct NewConn {
    pub(super) stream: TcpStream,
    pub(super) hs: Handshaken,
    pub(super) remote: SocketAddr,
    /// For dials: the target and what it resolved to.
    pub(super) target: Option<(String, Vec<SocketAddr>)>,
}
