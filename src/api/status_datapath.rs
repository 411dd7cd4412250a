//! What the status pages say about the data path: which path carries each peer's container
//! traffic (`encrypted` or `vxlan`) and, for the encrypted path, its counters, in
//! `/status/connections`, `/report` (`Router.DataPaths`, `Router.EncryptedPath`) and
//! `/metrics` (`weave_encrypted_*`, `weave_data_path`).

use crate::dataplane::EncryptedReport;
use crate::peer::PeerName;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The data path as the status pages see it.
#[derive(Debug, Clone, Default)]
pub struct DataView {
    pub paths: BTreeMap<PeerName, &'static str>,
    pub encrypted: Option<EncryptedReport>,
}

impl DataView {
    /// `encrypted (tx 10 pkts 1200 B, rx 9 pkts 1100 B, drops 0, rekeys 1)` or `vxlan`.
    pub fn describe(&self, peer: &PeerName) -> Option<String> {
        let path = self.paths.get(peer)?;
        let counters = self.encrypted.as_ref().and_then(|e| e.peers.get(peer));
        Some(match counters {
            Some(c) if *path == crate::dataplane::path::ENCRYPTED => format!(
                "{path} (tx {} pkts {} B, rx {} pkts {} B, drops {}, rekeys {})",
                c.tx_packets,
                c.tx_bytes,
                c.rx_packets,
                c.rx_bytes,
                c.drops.values().sum::<u64>(),
                c.rekeys
            ),
            _ => path.to_string(),
        })
    }

    /// Adds `DataPaths` and, when the encrypted path runs, `EncryptedPath` to `/report`'s
    /// `Router`.
    pub fn report_into(&self, router: &mut Map<String, Value>) {
        let paths: Map<String, Value> = self
            .paths
            .iter()
            .map(|(p, path)| (p.to_string(), json!(path)))
            .collect();
        router.insert("DataPaths".into(), Value::Object(paths));
        if let Some(e) = &self.encrypted {
            let peers: Map<String, Value> = e
                .peers
                .iter()
                .map(|(p, c)| (p.to_string(), json!(c)))
                .collect();
            router.insert(
                "EncryptedPath".into(),
                json!({"Peers": peers, "NotPeerDrops": e.not_peer_drops}),
            );
        }
    }

    /// Prometheus text for the data path.
    pub fn metrics(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP weave_data_path Path carrying container traffic to a peer (1 per peer).\n\
             # TYPE weave_data_path gauge"
        );
        for (p, path) in &self.paths {
            let _ = writeln!(s, "weave_data_path{{peer=\"{p}\",path=\"{path}\"}} 1");
        }
        let Some(e) = &self.encrypted else {
            return s;
        };
        let mut family = |name: &str, help: &str, rows: Vec<(String, u64)>| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in rows {
                let _ = writeln!(s, "{name}{{{labels}}} {v}");
            }
        };
        let per = |f: &dyn Fn(&crate::dataplane::encrypted::PathReport) -> Vec<(String, u64)>| {
            e.peers
                .iter()
                .flat_map(|(p, c)| {
                    f(c).into_iter()
                        .map(move |(l, v)| (format!("peer=\"{p}\"{l}"), v))
                })
                .collect::<Vec<_>>()
        };
        family(
            "weave_encrypted_bytes_total",
            "Frame bytes carried by the encrypted path.",
            per(&|c| {
                vec![
                    (",direction=\"tx\"".into(), c.tx_bytes),
                    (",direction=\"rx\"".into(), c.rx_bytes),
                ]
            }),
        );
        family(
            "weave_encrypted_packets_total",
            "Frames carried by the encrypted path.",
            per(&|c| {
                vec![
                    (",direction=\"tx\"".into(), c.tx_packets),
                    (",direction=\"rx\"".into(), c.rx_packets),
                ]
            }),
        );
        family(
            "weave_encrypted_drops_total",
            "Datagrams dropped by the encrypted path, by reason.",
            per(&|c| {
                c.drops
                    .iter()
                    .map(|(r, n)| (format!(",reason=\"{r}\""), *n))
                    .collect()
            }),
        );
        family(
            "weave_encrypted_rekeys_total",
            "Key epochs moved to on the encrypted path (both directions).",
            per(&|c| vec![(String::new(), c.rekeys)]),
        );
        let _ = writeln!(
            s,
            "# HELP weave_encrypted_not_peer_drops_total Datagrams from addresses that are not \
             peers'.\n# TYPE weave_encrypted_not_peer_drops_total counter\n\
             weave_encrypted_not_peer_drops_total {}",
            e.not_peer_drops
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::encrypted::PathReport;

    #[test]
    fn paths_and_counters_show_everywhere() {
        let (a, b): (PeerName, PeerName) = (
            "aa:00:00:00:00:01".parse().unwrap(),
            "bb:00:00:00:00:02".parse().unwrap(),
        );
        let mut report = EncryptedReport::default();
        report.peers.insert(
            a,
            PathReport {
                tx_packets: 3,
                tx_bytes: 300,
                rx_packets: 2,
                rx_bytes: 200,
                rekeys: 1,
                drops: [("forged", 4)].into(),
            },
        );
        report.not_peer_drops = 7;
        let v = DataView {
            paths: [(a, "encrypted"), (b, "vxlan")].into(),
            encrypted: Some(report),
        };
        assert_eq!(
            v.describe(&a).unwrap(),
            "encrypted (tx 3 pkts 300 B, rx 2 pkts 200 B, drops 4, rekeys 1)"
        );
        assert_eq!(v.describe(&b).unwrap(), "vxlan");
        let mut router = Map::new();
        v.report_into(&mut router);
        assert_eq!(router["DataPaths"][a.to_string()], "encrypted");
        let p = &router["EncryptedPath"]["Peers"][a.to_string()];
        assert_eq!(
            (p["tx_bytes"].as_u64(), p["drops"]["forged"].as_u64()),
            (Some(300), Some(4))
        );
        assert_eq!(router["EncryptedPath"]["NotPeerDrops"], 7);
        let m = v.metrics();
        for line in [
            format!("weave_data_path{{peer=\"{b}\",path=\"vxlan\"}} 1"),
            format!("weave_encrypted_bytes_total{{peer=\"{a}\",direction=\"tx\"}} 300"),
            format!("weave_encrypted_drops_total{{peer=\"{a}\",reason=\"forged\"}} 4"),
            format!("weave_encrypted_rekeys_total{{peer=\"{a}\"}} 1"),
            "weave_encrypted_not_peer_drops_total 7".to_string(),
        ] {
            assert!(m.lines().any(|l| l == line), "{line} missing:\n{m}");
        }
    }
}
