//! Process-wide counts of the topology gossip the actors take in and send out, read by the
//! scale bench and its bounded test to show where a join storm's work goes: how many entries
//! each peer receives, how many of them are news, and how many flushes send news on.

use std::sync::atomic::{AtomicU64, Ordering};

/// Topology gossip of every actor in this process since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopologyTotals {
    /// Entries received in topology messages (whole topologies and deltas).
    pub received: u64,
    /// Of those, entries newer than the one held: taken in.
    pub taken: u64,
    /// Of those, entries at exactly the version held (the rest are older, or our own).
    pub same: u64,
    /// Flushes that sent changed entries on to the neighbours.
    pub flushes: u64,
}

impl TopologyTotals {
    /// What happened between `earlier` and this.
    pub fn since(&self, earlier: &TopologyTotals) -> TopologyTotals {
        TopologyTotals {
            received: self.received - earlier.received,
            taken: self.taken - earlier.taken,
            same: self.same - earlier.same,
            flushes: self.flushes - earlier.flushes,
        }
    }
}

static RECEIVED: AtomicU64 = AtomicU64::new(0);
static TAKEN: AtomicU64 = AtomicU64::new(0);
static SAME: AtomicU64 = AtomicU64::new(0);
static FLUSHES: AtomicU64 = AtomicU64::new(0);

/// The counts so far.
pub fn topology_totals() -> TopologyTotals {
    TopologyTotals {
        received: RECEIVED.load(Ordering::Relaxed),
        taken: TAKEN.load(Ordering::Relaxed),
        same: SAME.load(Ordering::Relaxed),
        flushes: FLUSHES.load(Ordering::Relaxed),
    }
}

/// One topology message: `received` entries, `taken` of them taken in, `same` already held.
pub(super) fn count_message(received: usize, taken: usize, same: usize) {
    RECEIVED.fetch_add(received as u64, Ordering::Relaxed);
    TAKEN.fetch_add(taken as u64, Ordering::Relaxed);
    SAME.fetch_add(same as u64, Ordering::Relaxed);
}

/// One flush that sent changes on.
pub(super) fn count_flush() {
    FLUSHES.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_differences_are_what_happened_between() {
        let before = topology_totals();
        count_message(5, 2, 1);
        count_message(3, 0, 3);
        count_flush();
        let d = topology_totals().since(&before);
        // Other tests in this process may count too: at least ours.
        assert!(
            d.received >= 8 && d.taken >= 2 && d.same >= 4 && d.flushes >= 1,
            "{d:?}"
        );
        let a = TopologyTotals {
            received: 10,
            taken: 4,
            same: 3,
            flushes: 2,
        };
        let b = TopologyTotals {
            received: 25,
            taken: 9,
            same: 10,
            flushes: 7,
        };
        let want = TopologyTotals {
            received: 15,
            taken: 5,
            same: 7,
            flushes: 5,
        };
        assert_eq!(b.since(&a), want);
    }
}
