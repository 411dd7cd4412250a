//! What the actor shows of its state: the live peers it publishes and its status.

use super::Actor;
use crate::mesh::config::LivePeer;
use crate::mesh::maker::Target;
use crate::mesh::protocol::PeerInfo;
use crate::mesh::status::{ConnectionStatus, MeshStatus};
use crate::peer::PeerName;

impl Actor {
    /// Publishes what changed in the live peers: the peers the topology names as possibly
    /// changed (see [`crate::mesh::topology::Topology::take_live_changes`]) and those whose
    /// connection of ours came or went, each looked up alone and put in place in the list
    /// (kept in name order); the whole list only after a whole walk of the topology.
    pub(super) fn publish_peers(&mut self) {
        let ours = std::mem::take(&mut self.live_dirty);
        let Some(mut names) = self.topology.take_live_changes() else {
            return self.publish_all_peers();
        };
        names.extend(ours);
        if names.is_empty() {
            return;
        }
        names.sort_unstable();
        names.dedup();
        self.peers_tx.send_if_modified(|list| {
            let mut changed = false;
            for name in names {
                let now = self.live_peer(&name);
                match (list.binary_search_by_key(&name, |p| p.name), now) {
                    (Ok(i), Some(p)) if list[i] != p => list[i] = p,
                    (Ok(_), Some(_)) | (Err(_), None) => continue,
                    (Ok(i), None) => {
                        list.remove(i);
                    }
                    (Err(i), Some(p)) => list.insert(i, p),
                }
                changed = true;
            }
            changed
        });
    }

    /// The live peers from scratch (one pass over the topology).
    fn publish_all_peers(&mut self) {
        let live: Vec<LivePeer> = self
            .topology
            .peers()
            .filter_map(|p| self.live_peer(&p.name))
            .collect();
        self.peers_tx.send_if_modified(|old| {
            let changed = *old != live;
            *old = live;
            changed
        });
    }

    /// `name` as a live peer, if it is one (reachable, and not us).
    fn live_peer(&self, name: &PeerName) -> Option<LivePeer> {
        if *name == self.hello.name {
            return None;
        }
        let p = self.topology.get(name)?;
        let direct = self.conns.values().find(|c| c.peer == *name);
        Some(LivePeer {
            name: p.name,
            nickname: p.nickname.clone(),
            uid: p.uid,
            address: direct
                .map(|c| c.remote.ip())
                .or_else(|| self.topology.address_of(name)),
            direct: direct.is_some(),
            data_keys: direct.and_then(|c| c.data_keys.clone()),
        })
    }

    fn satisfied(&self, t: &Target) -> bool {
        self.conns
            .values()
            .any(|c| t.resolved.contains(&c.listen) || t.discovered_for == Some(c.peer))
    }

    pub(super) fn status(&self) -> MeshStatus {
        let mut connections: Vec<ConnectionStatus> = self
            .conns
            .values()
            .map(|c| ConnectionStatus {
                address: c.remote.to_string(),
                outbound: c.outbound,
                state: if c.established {
                    "established"
                } else {
                    "pending"
                }
                .into(),
                info: format!(
                    "{} {}({})",
                    if c.encrypted {
                        "encrypted"
                    } else {
                        "unencrypted"
                    },
                    c.peer,
                    c.nickname
                ),
                peer: Some(c.peer),
            })
            .collect();
        connections.sort_by(|a, b| a.address.cmp(&b.address));
        connections.extend(self.maker.statuses(|t| self.satisfied(t)));
        let mut peers: Vec<PeerInfo> = self.topology.peers().cloned().collect();
        peers.sort_by_key(|p| p.name != self.hello.name);
        MeshStatus {
            name: self.hello.name,
            nickname: self.hello.nickname.clone(),
            uid: self.hello.uid,
            port: self.hello.listen_port,
            encryption: self.psk.is_some(),
            discovery: self.config.discovery,
            conn_limit: self.config.conn_limit,
            trusted_subnets: self.config.trusted_subnets.clone(),
            peers,
            connections,
            targets: self.maker.explicit(),
            termination_count: self.terminations,
        }
    }
}
