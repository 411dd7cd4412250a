//! The mesh's state for `/status`, `/status/connections`, `/status/peers` and `/report`, and
//! Weave's text formats for them.

use super::protocol::{PeerInfo, PROTOCOL_MAX_VERSION, PROTOCOL_MIN_VERSION};
use crate::peer::PeerName;
use serde_json::{json, Value};
use std::fmt::Write;

/// One line of `/status/connections`: a live connection or a target being attempted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionStatus {
    pub address: String,
    pub outbound: bool,
    /// established, pending, retrying, failed or connecting.
    pub state: String,
    pub info: String,
    /// The peer at the other end, once handshaken.
    pub peer: Option<PeerName>,
}

/// A snapshot of the mesh.
#[derive(Debug, Clone)]
pub struct MeshStatus {
    pub name: PeerName,
    pub nickname: String,
    pub uid: u64,
    pub port: u16,
    pub encryption: bool,
    pub discovery: bool,
    pub conn_limit: usize,
    pub trusted_subnets: Vec<String>,
    /// Every known peer (ourselves first).
    pub peers: Vec<PeerInfo>,
    pub connections: Vec<ConnectionStatus>,
    pub targets: Vec<String>,
    pub termination_count: u64,
}

impl MeshStatus {
    fn label(&self, name: &PeerName) -> String {
        let nick = self
            .peers
            .iter()
            .find(|p| p.name == *name)
            .map(|p| p.nickname.as_str())
            .unwrap_or("");
        format!("{name}({nick})")
    }

    fn count(&self, state: &str) -> usize {
        self.connections.iter().filter(|c| c.state == state).count()
    }

    /// `Encryption:` says which planes are protected, so nobody assumes more than is true.
    pub fn encryption_text(&self) -> &'static str {
        if self.encryption && self.trusted_subnets.is_empty() {
            "enabled (control plane and container traffic)"
        } else if self.encryption {
            "enabled (control plane and container traffic; VXLAN in clear to trusted subnets)"
        } else {
            "disabled"
        }
    }

    /// The router lines of `GET /status` after `Name:` (Encryption to TrustedSubnets).
    pub fn summary_lines(&self) -> Vec<(&'static str, String)> {
        let conns = format!(
            "{} ({} established, {} pending, {} retrying, {} failed, {} connecting)",
            self.connections.len(),
            self.count("established"),
            self.count("pending"),
            self.count("retrying"),
            self.count("failed"),
            self.count("connecting"),
        );
        let all: Vec<_> = self.peers.iter().flat_map(|p| &p.connections).collect();
        let est = all.iter().filter(|c| c.established).count();
        let peers = format!(
            "{} (with {} established, {} pending connections)",
            self.peers.len(),
            est,
            all.len() - est
        );
        let trusted = if self.trusted_subnets.is_empty() {
            "none".to_string()
        } else {
            self.trusted_subnets.join(", ")
        };
        vec![
            ("Encryption", self.encryption_text().to_string()),
            (
                "PeerDiscovery",
                if self.discovery {
                    "enabled"
                } else {
                    "disabled"
                }
                .to_string(),
            ),
            ("Targets", self.targets.len().to_string()),
            ("Connections", conns),
            ("Peers", peers),
            ("TrustedSubnets", trusted),
        ]
    }

    /// `GET /status/connections`: `<dir> <addr %-21> <state %-11> <info>`.
    pub fn connections_text(&self) -> String {
        self.connections_text_with(|_| None)
    }

    /// Like [`MeshStatus::connections_text`], with `, data: <what data(peer) says>` after
    /// each connection whose peer it knows something about (the data path).
    pub fn connections_text_with(&self, data: impl Fn(&PeerName) -> Option<String>) -> String {
        let mut s = String::new();
        for c in &self.connections {
            let dir = if c.outbound { "->" } else { "<-" };
            let _ = write!(s, "{dir} {:<21} {:<11} {}", c.address, c.state, c.info);
            if let Some(d) = c.peer.as_ref().and_then(&data) {
                let _ = write!(s, ", data: {d}");
            }
            s.push('\n');
        }
        s
    }

    /// `GET /status/peers`: each peer, then its connections indented.
    pub fn peers_text(&self) -> String {
        let mut s = String::new();
        for p in &self.peers {
            let _ = writeln!(s, "{}({})", p.name, p.nickname);
            for c in &p.connections {
                let dir = if c.outbound { "->" } else { "<-" };
                let state = if c.established {
                    "established"
                } else {
                    "pending"
                };
                let _ = writeln!(
                    s,
                    "   {dir} {:<21} {:<35} {state}",
                    c.addr.to_string(),
                    self.label(&c.peer)
                );
            }
        }
        s
    }

    /// The `Router` fields of `/report` that come from the mesh.
    pub fn report(&self) -> Value {
        let peers: Vec<Value> = self
            .peers
            .iter()
            .map(|p| {
                json!({
                    "Name": p.name.to_string(),
                    "NickName": p.nickname,
                    "UID": p.uid,
                    "ShortID": p.name.as_u64() & 0xfff,
                    "Version": p.version,
                    "Connections": p.connections.iter().map(|c| json!({
                        "Name": c.peer.to_string(),
                        "NickName": self.peers.iter().find(|x| x.name == c.peer).map(|x| x.nickname.clone()).unwrap_or_default(),
                        "Address": c.addr.to_string(),
                        "Outbound": c.outbound,
                        "Established": c.established,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let conns: Vec<Value> = self
            .connections
            .iter()
            .map(|c| {
                json!({
                    "Address": c.address,
                    "Outbound": c.outbound,
                    "State": c.state,
                    "Info": c.info,
                    "Attrs": null,
                })
            })
            .collect();
        json!({
            "Protocol": "weave",
            "ProtocolMinVersion": PROTOCOL_MIN_VERSION,
            "ProtocolMaxVersion": PROTOCOL_MAX_VERSION,
            "Encryption": self.encryption,
            "EncryptionScope": self.encryption_text(),
            "PeerDiscovery": self.discovery,
            "Name": self.name.to_string(),
            "NickName": self.nickname,
            "Port": self.port,
            "ConnLimit": self.conn_limit,
            "Peers": peers,
            "UnicastRoutes": [],
            "BroadcastRoutes": [],
            "Connections": conns,
            "TerminationCount": self.termination_count,
            "Targets": self.targets,
            "OverlayDiagnostics": null,
            "TrustedSubnets": self.trusted_subnets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::protocol::ConnectionInfo;

    #[test]
    fn formats_follow_weave() {
        let a: PeerName = "aa:00:00:00:00:01".parse().unwrap();
        let b: PeerName = "bb:00:00:00:00:02".parse().unwrap();
        let st = MeshStatus {
            name: a,
            nickname: "h1".into(),
            uid: 1,
            port: 6783,
            encryption: true,
            discovery: true,
            conn_limit: 200,
            trusted_subnets: vec![],
            peers: vec![
                PeerInfo {
                    name: a,
                    nickname: "h1".into(),
                    uid: 1,
                    version: 2,
                    connections: vec![ConnectionInfo {
                        peer: b,
                        addr: "192.0.2.2:6783".parse().unwrap(),
                        outbound: true,
                        established: true,
                    }],
                },
                PeerInfo {
                    name: b,
                    nickname: "h2".into(),
                    uid: 2,
                    version: 2,
                    connections: vec![],
                },
            ],
            connections: vec![ConnectionStatus {
                address: "192.0.2.2:6783".into(),
                outbound: true,
                state: "established".into(),
                info: "encrypted bb:00:00:00:00:02(h2)".into(),
                peer: Some(b),
            }],
            targets: vec!["192.0.2.2".into()],
            termination_count: 0,
        };
        assert_eq!(
            st.connections_text(),
            "-> 192.0.2.2:6783        established encrypted bb:00:00:00:00:02(h2)\n"
        );
        assert_eq!(
            st.peers_text(),
            format!(
                "aa:00:00:00:00:01(h1)\n   -> 192.0.2.2:6783        {:<35} established\nbb:00:00:00:00:02(h2)\n",
                "bb:00:00:00:00:02(h2)"
            )
        );
        let lines = st.summary_lines();
        assert_eq!(lines[0].1, "enabled (control plane and container traffic)");
        assert_eq!(
            st.connections_text_with(|p| (*p == b).then(|| "encrypted".to_string())),
            "-> 192.0.2.2:6783        established encrypted bb:00:00:00:00:02(h2), data: encrypted\n"
        );
        assert_eq!(
            lines[3].1,
            "1 (1 established, 0 pending, 0 retrying, 0 failed, 0 connecting)"
        );
        assert_eq!(lines[4].1, "2 (with 1 established, 0 pending connections)");
        assert_eq!(st.report()["Peers"][0]["Connections"][0]["NickName"], "h2");
    }
}
