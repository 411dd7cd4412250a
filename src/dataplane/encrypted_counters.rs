//! The encrypted path's counters: per peer (bytes, frames, drops by reason, rekeys), and
//! the reports status and metrics read from them.

use crate::peer::PeerName;
use crate::sleeve::Reject;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// One peer's counters, kept across key changes (a peer's restart).
#[derive(Debug, Default)]
pub struct PathCounters {
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub rekeys: AtomicU64,
    /// Indexed like [`Reject::ALL`], plus one for frames the underlay refused (path MTU).
    pub drops: [AtomicU64; Reject::ALL.len() + 1],
    pub(super) pmtu_logged: AtomicBool,
}

/// The name of the extra drop counter: datagrams the underlay would not take (too big).
pub const DROP_PMTU: &str = "pmtu";

impl PathCounters {
    pub(super) fn reject(&self, d: Reject) {
        self.rejects(d, 1);
    }

    pub(super) fn rejects(&self, d: Reject, n: u64) {
        let i = Reject::ALL.iter().position(|x| *x == d).unwrap_or(0);
        self.drops[i].fetch_add(n, Relaxed);
    }

    /// Reject counts by name (only the non-zero ones).
    pub fn drops_by_name(&self) -> BTreeMap<&'static str, u64> {
        let names = Reject::ALL.iter().map(|d| d.name()).chain([DROP_PMTU]);
        names
            .zip(&self.drops)
            .map(|(n, c)| (n, c.load(Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect()
    }

    pub fn drops_total(&self) -> u64 {
        self.drops.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// One peer's encrypted-path counters, as status shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PathReport {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rekeys: u64,
    /// Non-zero drop counts by reason.
    pub drops: BTreeMap<&'static str, u64>,
}

/// The whole encrypted path's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EncryptedReport {
    /// Every peer seen since the start (current or not), by name.
    pub peers: BTreeMap<PeerName, PathReport>,
    /// Datagrams from addresses that are not peers'.
    pub not_peer_drops: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_counted_by_reason_and_pmtu_last() {
        let c = PathCounters::default();
        c.reject(Reject::Forged);
        c.reject(Reject::Forged);
        c.reject(Reject::NotPeer);
        c.drops[Reject::ALL.len()].fetch_add(1, Relaxed);
        let want: BTreeMap<&str, u64> = [("forged", 2), ("not_peer", 1), (DROP_PMTU, 1)].into();
        assert_eq!(c.drops_by_name(), want);
        assert_eq!(c.drops_total(), 4);
    }
}
