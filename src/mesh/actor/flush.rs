//! Sending topology: the flush of changes (once per batch, at most once per interval), the
//! periodic whole topology, what a new neighbour gets at once, and our own entry after our
//! connections change.

use super::Actor;
use crate::mesh::protocol::{encode_entry, topology_frames, topology_messages};
use crate::mesh::protocol::{ConnectionInfo, Message, PeerInfo};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Least time between two flushes of topology changes up to [`FLUSH_PEERS`] peers: changes
/// arriving meanwhile go out together, and the O(n) follow-ups run once for all of them.
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Mesh size from which the flush interval grows (see [`flush_interval`]).
const FLUSH_PEERS: f64 = 100.0;
/// The flush interval's ceiling, whatever the mesh size.
const FLUSH_MAX: Duration = Duration::from_secs(2);

/// Longest our own entry waits for a new connection's first message (see
/// [`Actor::own_entry_waits`]).
const PENDING_HOLD: Duration = Duration::from_millis(500);

/// The least time between two flushes for a mesh of `peers`: [`FLUSH_INTERVAL`], times
/// n / [`FLUSH_PEERS`] beyond it. While peers join, every peer has news in every interval;
/// with a fixed interval 500 peers on two cores spent all their CPU flushing, which made the
/// joins slower and the flushes (and messages) more numerous still. Growing the interval with
/// n keeps the whole mesh's flush work per second about constant, the messages per peer about
/// constant while peers join at a steady rate, and the time news needs to cross the mesh
/// (about ln n hops times the interval) at about n log n. The size is the peers heard of, or
/// those the mesh is sure to reach ([`MeshConfig::least_peers`]) while fewer are known.
///
/// [`MeshConfig::least_peers`]: crate::mesh::MeshConfig::least_peers
fn flush_interval(heard_of: usize, least_peers: usize) -> Duration {
    let n = (heard_of.max(least_peers) as f64).max(FLUSH_PEERS);
    FLUSH_INTERVAL.mul_f64(n / FLUSH_PEERS).min(FLUSH_MAX)
}

impl Actor {
    pub(super) fn send_topology(&mut self) {
        for m in self.snapshot(false) {
            self.send_all(&m, None);
        }
    }

    /// Every reachable entry (as of the last settle) as topology messages, at least one:
    /// knowing nobody else, an empty one, as the first message on a connection is what
    /// establishes it at the other end. A new neighbour gets it `without_own`: the new
    /// connection changes our entry, and the flush sends that version to every neighbour
    /// once the connection is established.
    pub(super) fn snapshot(&self, without_own: bool) -> Vec<Message> {
        let me = self.hello.name;
        let known: Vec<PeerInfo> = self
            .topology
            .peers()
            .filter(|p| !without_own || p.name != me)
            .cloned()
            .collect();
        let mut messages = topology_messages(&known);
        if messages.is_empty() {
            messages.push(Message::Topology(Default::default()));
        }
        messages
    }

    /// The follow-ups of topology changes, once per batch: what is reachable, the live peers,
    /// new connections, and (with `send_changes`) the changed entries to every neighbour as
    /// one delta (gone ones need no news: every peer stops counting what it cannot reach),
    /// less what that neighbour sent us itself.
    pub(super) fn flush(&mut self, send_changes: bool) {
        self.dirty = false;
        self.topology.settle();
        let interval = flush_interval(self.topology.heard_of(), self.config.least_peers);
        self.next_flush = Instant::now() + interval;
        self.publish_peers();
        self.make_connections();
        let holders = std::mem::take(&mut self.holders);
        if !send_changes {
            self.topology.clear_changes();
            return;
        }
        let mut changes = self.topology.take_changes();
        if self.own_entry_waits() {
            if let Some(i) = changes.iter().position(|p| p.name == self.hello.name) {
                changes.remove(i);
                self.topology.keep_own_change();
                self.dirty = true;
            }
        }
        if changes.is_empty() {
            return;
        }
        super::totals::count_flush();
        // Every entry encoded once; the same frames for the neighbours that need every
        // change, frames of the rest for the others.
        let entries: Vec<Vec<u8>> = changes.iter().map(encode_entry).collect();
        let mut all: Option<Vec<Arc<Vec<u8>>>> = None;
        for (k, c) in &self.conns {
            let held = |p: &PeerInfo| holders.get(&p.name).is_some_and(|h| h.contains(k));
            let frames = if changes.iter().any(held) {
                let rest = changes.iter().zip(&entries).filter(|(p, _)| !held(p));
                shared(topology_frames(rest.map(|(_, e)| &e[..])))
            } else {
                let every = || shared(topology_frames(entries.iter().map(|e| &e[..])));
                all.get_or_insert_with(every).clone()
            };
            for f in frames {
                if c.tx.try_send(f).is_err() {
                    tracing::warn!("send queue to {} full; message dropped", c.peer);
                }
            }
        }
    }

    /// Whether our own entry stays out of this flush: one of our connections is new and has
    /// not brought its first message yet. Its peer answers within a round trip, and the mesh
    /// then gets the connection once, established, instead of a version naming it pending and
    /// another naming it established, each copied to every peer (at 500 peers most of the
    /// gossip). A connection still silent after [`PENDING_HOLD`] goes out pending, as before.
    fn own_entry_waits(&self) -> bool {
        self.conns
            .values()
            .any(|c| !c.established && c.since.elapsed() < PENDING_HOLD)
    }

    /// Republishes our own connections after any change to them.
    pub(super) fn update_topology(&mut self) {
        let conns: Vec<ConnectionInfo> = self
            .conns
            .values()
            .map(|c| ConnectionInfo {
                peer: c.peer,
                addr: c.listen,
                outbound: c.outbound,
                established: c.established,
            })
            .collect();
        if self.topology.set_our_connections(conns) {
            self.dirty = true;
        }
    }
}

/// Frames to go to several neighbours.
fn shared(frames: Vec<Vec<u8>>) -> Vec<Arc<Vec<u8>>> {
    frames.into_iter().map(Arc::new).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flush_interval_grows_with_the_mesh_and_starts_at_the_size_it_is_sure_to_reach() {
        let ms = |heard_of, least| flush_interval(heard_of, least).as_millis();
        // Up to 100 peers, 50 ms; then in proportion; never over 2 s.
        assert_eq!(
            (ms(3, 0), ms(100, 0), ms(500, 0), ms(5000, 0)),
            (50, 50, 250, 2000)
        );
        // A peer of a 500-peer consensus (quorum 251) that has heard of 3 peers so far
        // already flushes at the pace of the mesh it will be part of.
        assert_eq!(ms(3, 251), 125);
        // What it has heard of wins once it is more.
        assert_eq!(ms(500, 251), 250);
    }
}
