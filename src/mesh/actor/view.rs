//! What the actor shows of its state: the live peers it publishes and its status.

use super::{Actor, Conn};
use crate::mesh::config::LivePeer;
use crate::mesh::maker::Target;
use crate::mesh::protocol::PeerInfo;
use crate::mesh::status::{ConnectionStatus, MeshStatus};
use crate::peer::PeerName;
use std::collections::HashMap;

impl Actor {
    /// Publishes the live peers if they changed (one pass over the topology).
    pub(super) fn publish_peers(&mut self) {
        let direct: HashMap<PeerName, &Conn> = self.conns.values().map(|c| (c.peer, c)).collect();
        let addresses = self.topology.addresses();
        let live: Vec<LivePeer> = self
            .topology
            .peers()
            .filter(|p| p.name != self.hello.name)
            .map(|p| {
                let direct = direct.get(&p.name);
                LivePeer {
                    name: p.name,
                    nickname: p.nickname.clone(),
                    uid: p.uid,
                    address: direct
                        .map(|c| c.remote.ip())
                        .or_else(|| addresses.get(&p.name).copied()),
                    direct: direct.is_some(),
                    data_keys: direct.and_then(|c| c.data_keys.clone()),
                }
            })
            .collect();
        self.peers_tx.send_if_modified(|old| {
            let changed = *old != live;
            *old = live;
            changed
        });
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
