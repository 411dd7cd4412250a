//! Broadcast deduplication: which sequence numbers of one origin were already seen.

/// Recently seen broadcast sequence numbers of one origin (a 128-wide sliding window).
#[derive(Default)]
pub(super) struct Seen {
    max: u64,
    mask: u128,
}

impl Seen {
    /// True the first time `seq` is offered.
    pub(super) fn first(&mut self, seq: u64) -> bool {
        if seq > self.max {
            let shift = seq - self.max;
            self.mask = if shift >= 128 { 0 } else { self.mask << shift };
            self.mask |= 1;
            self.max = seq;
            return true;
        }
        let back = self.max - seq;
        if back >= 128 || self.mask & (1 << back) != 0 {
            return false;
        }
        self.mask |= 1 << back;
        true
    }
}
