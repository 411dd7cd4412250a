//! Weave's status texts, `/report` JSON and Prometheus metrics, rendered from a [`View`]: a
//! snapshot the backend ([`super::Backend::view`]) gathers once per request.

use crate::attachment::Attachment;
use crate::ipam::IpamSummary;
use ipnet::Ipv4Net;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Everything the status pages show, gathered once per request.
#[derive(Debug, Clone)]
pub struct View {
    pub peer_name: String,
    pub nickname: String,
    pub port: u16,
    pub targets: Vec<String>,
    /// The mesh's state; `None` only in unit tests of the formats.
    pub mesh: Option<crate::mesh::MeshStatus>,
    pub ipam: IpamSummary,
    pub attachments: Vec<Attachment>,
    pub pid: u32,
    pub datadir: String,
    pub http_addr: String,
    pub dns: DnsView,
    /// The path carrying each peer's container traffic, and the encrypted path's counters.
    pub data: super::status_datapath::DataView,
}

/// weaveDNS as the status pages show it.
#[derive(Debug, Clone, Default)]
pub struct DnsView {
    /// `None` when the server is off (`--no-dns`).
    pub domain: Option<String>,
    pub ttl: u32,
    /// Where the server listens.
    pub listen: Vec<String>,
    /// Live records, every owner's.
    pub records: usize,
    /// The server's counters, Prometheus text.
    pub metrics: String,
}

impl View {
    fn peer_label(&self) -> String {
        format!("{}({})", self.peer_name, self.nickname)
    }
}

fn line(out: &mut String, key: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{key:>15}: {value}");
}

/// `GET /status`.
pub fn status_text(v: &View) -> String {
    let mut s = String::new();
    line(
        &mut s,
        "Version",
        format_args!("{} (version check update disabled)", crate::VERSION),
    );
    s.push('\n');
    line(&mut s, "Service", "router");
    line(&mut s, "Protocol", "weave 1..2");
    line(&mut s, "Name", v.peer_label());
    match &v.mesh {
        Some(m) => {
            for (k, val) in m.summary_lines() {
                line(&mut s, k, val);
            }
        }
        None => {
            line(&mut s, "Encryption", "disabled");
            line(&mut s, "PeerDiscovery", "enabled");
            line(&mut s, "Targets", v.targets.len());
            line(
                &mut s,
                "Connections",
                "0 (0 established, 0 pending, 0 retrying, 0 failed, 0 connecting)",
            );
            line(
                &mut s,
                "Peers",
                "1 (with 0 established, 0 pending connections)",
            );
            line(&mut s, "TrustedSubnets", "none");
        }
    }
    s.push('\n');
    line(&mut s, "Service", "ipam");
    line(&mut s, "Status", &v.ipam.status);
    line(&mut s, "Range", v.ipam.universe);
    line(&mut s, "DefaultSubnet", v.ipam.default_subnet);
    s.push('\n');
    line(&mut s, "Service", "dns");
    match &v.dns.domain {
        Some(d) => {
            line(&mut s, "Domain", d);
            line(&mut s, "TTL", v.dns.ttl);
            let listen = if v.dns.listen.is_empty() {
                "none yet (no bridge address)".to_string()
            } else {
                v.dns.listen.join(", ")
            };
            line(&mut s, "Listen", listen);
        }
        None => line(&mut s, "Status", "no DNS server (--no-dns)"),
    }
    line(&mut s, "Entries", v.dns.records);
    s
}

/// `GET /status/dns`: every live record, one per line: name, address, container (first
/// 12 characters), owner peer and nickname.
pub fn dns_text(records: &[crate::dns::Record], mesh: Option<&crate::mesh::MeshStatus>) -> String {
    let nick = |p: &crate::peer::PeerName| {
        mesh.and_then(|m| m.peers.iter().find(|i| i.name == *p))
            .map(|i| format!("{p}({})", i.nickname))
            .unwrap_or_else(|| p.to_string())
    };
    let mut s = String::new();
    for r in records {
        let name = r.name.strip_suffix('.').unwrap_or(&r.name);
        let cid: String = r.container_id.chars().take(12).collect();
        let _ = writeln!(
            s,
            "{name:<32} {:<15} {cid:<12} {}",
            r.ip.to_string(),
            nick(&r.owner)
        );
    }
    s
}

/// `GET /status/targets`: one per line.
pub fn targets_text(v: &View) -> String {
    v.targets.iter().map(|t| format!("{t}\n")).collect()
}

/// `GET /status/peers`: every peer and its connections.
pub fn peers_text(v: &View) -> String {
    match &v.mesh {
        Some(m) => m.peers_text(),
        None => format!("{}\n", v.peer_label()),
    }
}

/// `GET /status/connections`: one line per connection or target being attempted.
pub fn connections_text(v: &View) -> String {
    v.mesh
        .as_ref()
        .map(|m| m.connections_text_with(|p| v.data.describe(p)))
        .unwrap_or_default()
}

/// `GET /status/ipam`: one line per peer of the ring, ours first, `%-37v %8d IPs
/// (%04.1f%% of total) ...`: ours with `(N active)`, others `- unreachable!` when not live.
pub fn ipam_text(v: &View) -> String {
    let total = crate::ipam::size_of(v.ipam.universe) as f64;
    let mut out = String::new();
    let sizes = if v.ipam.peer_sizes.is_empty() {
        vec![(v.ipam.me, v.ipam.owned_size)]
    } else {
        v.ipam.peer_sizes.clone()
    };
    for (peer, size) in sizes {
        let pct = size as f64 * 100.0 / total;
        let (label, tail) = if peer == v.ipam.me {
            (v.peer_label(), format!("({} active)", v.ipam.active))
        } else {
            let nick = v.ipam.nicknames.get(&peer).cloned().unwrap_or_default();
            let tail = if v.ipam.live.contains(&peer) {
                String::new()
            } else {
                "- unreachable!".to_string()
            };
            (format!("{peer}({nick})"), tail)
        };
        let _ = writeln!(
            out,
            "{label:<37} {size:>8} IPs ({pct:04.1}% of total) {tail}"
        );
    }
    out.lines().map(|l| format!("{}\n", l.trim_end())).collect()
}

/// `GET /report`: Weave's `WeaveStatus` fields we can fill, plus ours (Pid, DataDir, ...).
pub fn report(v: &View, owned: &BTreeMap<String, Vec<Ipv4Net>>) -> Value {
    let entries: Vec<Value> = v
        .ipam
        .entries
        .iter()
        .map(|e| {
            json!({
                "Token": e.token.to_string(),
                "Size": e.size,
                "Peer": e.peer.to_string(),
                "Nickname": if e.peer == v.ipam.me {
                    v.nickname.clone()
                } else {
                    v.ipam.nicknames.get(&e.peer).cloned().unwrap_or_default()
                },
                "IsKnownPeer": e.peer == v.ipam.me || v.ipam.live.contains(&e.peer),
                "Version": e.version,
                "Free": e.free,
            })
        })
        .collect();
    let owned: Vec<Value> = owned
        .iter()
        .map(|(id, cidrs)| json!({"ContainerID": id, "Addrs": cidrs.iter().map(|c| c.to_string()).collect::<Vec<_>>()}))
        .collect();
    let mut doc = json!({
        "Ready": true,
        "Version": crate::VERSION,
        "VersionCheck": {"Enabled": false, "Success": false, "NewVersion": "", "NextCheckAt": ""},
        "Router": {
            "Protocol": "weave",
            "ProtocolMinVersion": 1,
            "ProtocolMaxVersion": 2,
            "Encryption": false,
            "PeerDiscovery": true,
            "Name": v.peer_name,
            "NickName": v.nickname,
            "Port": v.port,
            "Peers": [{
                "Name": v.peer_name,
                "NickName": v.nickname,
                "Connections": [],
            }],
            "UnicastRoutes": [],
            "BroadcastRoutes": [],
            "Connections": [],
            "TerminationCount": 0,
            "Targets": v.targets,
            "TrustedSubnets": [],
            "Interface": crate::BRIDGE_NAME,
        },
        "IPAM": {
            "Paxos": null,
            "Status": v.ipam.status,
            "Range": v.ipam.universe.to_string(),
            "RangeNumIPs": crate::ipam::size_of(v.ipam.universe),
            "ActiveIPs": v.ipam.active,
            "DefaultSubnet": v.ipam.default_subnet.to_string(),
            "Entries": entries,
            "PendingClaims": v.ipam.pending_claims,
            "PendingAllocates": v.ipam.pending_allocates,
            "Owned": owned,
        },
        "Pid": v.pid,
        "DataDir": v.datadir,
        "HTTPAddr": v.http_addr,
        "Attachments": v.attachments,
    });
    if let (Some(m), Some(router)) = (&v.mesh, doc["Router"].as_object_mut()) {
        if let Some(fields) = m.report().as_object() {
            for (k, val) in fields {
                router.insert(k.clone(), val.clone());
            }
        }
    }
    if let Some(router) = doc["Router"].as_object_mut() {
        v.data.report_into(router);
    }
    doc
}

/// `GET /metrics` in the Prometheus text format.
pub fn metrics(v: &View) -> String {
    let mut s = String::new();
    s.push_str(&v.dns.metrics);
    s.push_str(&v.data.metrics());
    let mut gauge = |name: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(s, "{name}{labels} {value}");
        }
    };
    let unreachable: Vec<u64> = v
        .ipam
        .peer_sizes
        .iter()
        .filter(|(p, _)| *p != v.ipam.me && !v.ipam.live.contains(p))
        .map(|(_, size)| *size)
        .collect();
    let total = crate::ipam::size_of(v.ipam.universe);
    gauge(
        "weave_ipam_unreachable_count",
        "Number of unreachable peers.",
        &[("", unreachable.len() as u64)],
    );
    gauge(
        "weave_ipam_unreachable_percentage",
        "Percentage of IP addresses owned by unreachable peers.",
        &[("", unreachable.iter().sum::<u64>() * 100 / total.max(1))],
    );
    gauge(
        "weave_ipam_pending_allocates",
        "Number of pending allocates.",
        &[("", v.ipam.pending_allocates.len() as u64)],
    );
    gauge(
        "weave_ipam_pending_claims",
        "Number of pending claims.",
        &[("", v.ipam.pending_claims.len() as u64)],
    );
    gauge(
        "weave_ips",
        "Number of IP addresses.",
        &[
            ("{state=\"local-used\"}", v.ipam.active as u64),
            ("{state=\"local-free\"}", v.ipam.free),
            ("{state=\"local-owned\"}", v.ipam.owned_size),
            ("{state=\"total\"}", crate::ipam::size_of(v.ipam.universe)),
        ],
    );
    let states = ["established", "pending", "retrying", "failed", "connecting"];
    let conns: Vec<(String, u64)> = states
        .iter()
        .map(|st| {
            let n = v.mesh.as_ref().map_or(0, |m| {
                m.connections.iter().filter(|c| c.state == *st).count() as u64
            });
            (format!("{{state=\"{st}\"}}"), n)
        })
        .collect();
    let conns: Vec<(&str, u64)> = conns.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    gauge(
        "weave_connections",
        "Number of peer-to-peer connections.",
        &conns,
    );
    gauge(
        "weave_connection_terminations_total",
        "Number of connections terminated.",
        &[("", 0)],
    );
    gauge(
        "weave_attachments",
        "Number of CNI attachments registered.",
        &[("", v.attachments.len() as u64)],
    );
    s
}

/// A tiny subset of Go templates for `/report?format=`: text with `{{.A.B}}` and
/// `{{json .A.B}}`. Anything else is an error, so callers see it is unsupported.
pub fn render_template(tmpl: &str, doc: &Value) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = tmpl;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed action in template {tmpl:?}"))?;
        let action = after[..end].trim();
        let (as_json, path) = match action.strip_prefix("json ") {
            Some(p) => (true, p.trim()),
            None => (false, action),
        };
        let path = path
            .strip_prefix('.')
            .ok_or_else(|| format!("unsupported template action {action:?}"))?;
        let mut value = doc;
        for key in path.split('.').filter(|k| !k.is_empty()) {
            value = value
                .get(key)
                .ok_or_else(|| format!("template: no field {key:?} in {action:?}"))?;
        }
        match (as_json, value) {
            (false, Value::String(s)) => out.push_str(s),
            _ => out.push_str(&value.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> View {
        let r: Ipv4Net = "10.32.0.0/12".parse().unwrap();
        View {
            peer_name: "aa:bb:cc:dd:ee:ff".into(),
            nickname: "host1".into(),
            port: 6783,
            targets: vec!["10.0.0.2".into()],
            mesh: None,
            ipam: IpamSummary {
                universe: r,
                default_subnet: r,
                owned_size: 1 << 20,
                active: 3,
                free: (1 << 20) - 3,
                ids: 3,
                status: "ready".into(),
                entries: vec![],
                peer_sizes: vec![],
                me: "aa:bb:cc:dd:ee:ff".parse().unwrap(),
                nicknames: Default::default(),
                live: Default::default(),
                pending_allocates: vec![],
                pending_claims: vec![],
            },
            attachments: vec![],
            pid: 1,
            datadir: "/d".into(),
            http_addr: "127.0.0.1:6784".into(),
            dns: DnsView {
                domain: Some("weave.local.".into()),
                ttl: 1,
                listen: vec!["10.32.0.1:53".into()],
                records: 2,
                metrics: String::new(),
            },
            data: Default::default(),
        }
    }

    #[test]
    fn dns_section_and_records() {
        let t = status_text(&view());
        assert!(
            t.contains("\n        Service: dns\n         Domain: weave.local.\n"),
            "{t}"
        );
        assert!(t.contains("\n         Listen: 10.32.0.1:53\n"), "{t}");
        assert!(t.contains("\n        Entries: 2\n"), "{t}");
        let mut off = view();
        off.dns.domain = None;
        assert!(status_text(&off).contains("Status: no DNS server (--no-dns)"));
        let r = crate::dns::Record {
            name: "web.fw.weave.local.".into(),
            ip: "10.32.0.2".parse().unwrap(),
            container_id: "0123456789abcdef".into(),
            owner: "02:00:00:00:00:01".parse().unwrap(),
            version: 5,
        };
        assert_eq!(
            dns_text(&[r], None),
            format!(
                "{:<32} {:<15} {:<12} 02:00:00:00:00:01\n",
                "web.fw.weave.local", "10.32.0.2", "0123456789ab"
            )
        );
    }

    #[test]
    fn status_keys_are_right_aligned() {
        let t = status_text(&view());
        assert!(t.contains("\n        Service: router\n"), "{t}");
        assert!(t.contains("\n  PeerDiscovery: enabled\n"));
        assert!(t.contains("\n           Name: aa:bb:cc:dd:ee:ff(host1)\n"));
        assert!(t.contains("\n        Targets: 1\n"));
        assert!(t.contains("\n  DefaultSubnet: 10.32.0.0/12\n"));
    }

    #[test]
    fn ipam_line_matches_weave_format() {
        assert_eq!(
            ipam_text(&view()),
            format!(
                "{:<37}  1048576 IPs (100.0% of total) (3 active)\n",
                "aa:bb:cc:dd:ee:ff(host1)"
            )
        );
    }

    #[test]
    fn templates() {
        let doc = json!({"Version": "1.2", "IPAM": {"Range": "10.32.0.0/12", "N": 3}});
        assert_eq!(render_template("v{{.Version}}!", &doc).unwrap(), "v1.2!");
        assert_eq!(render_template("{{json .IPAM.N}}", &doc).unwrap(), "3");
        assert!(render_template("{{range .X}}", &doc).is_err());
        assert!(render_template("{{.Nope}}", &doc).is_err());
    }
}
