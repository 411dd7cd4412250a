//! The replay window of one receive key: a counter is accepted once, and only if it is newer
//! than the highest seen minus [`WINDOW`] (so reordering up to that distance is tolerated).
//!
//! Checking and marking are separate so that a datagram is marked only after it
//! authenticated: a forged datagram must not move the window.

/// How far behind the highest counter seen a datagram may still arrive.
pub const WINDOW: u64 = 2048;
const WORDS: usize = (WINDOW / 64) as usize;

#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Bit `c % WINDOW` is set when counter `c` (within the window) was seen.
    bits: [u64; WORDS],
    /// Highest counter seen; meaningless while `empty`.
    top: u64,
    empty: bool,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            bits: [0; WORDS],
            top: 0,
            empty: true,
        }
    }
}

fn slot(c: u64) -> (usize, u64) {
    let i = c % WINDOW;
    ((i / 64) as usize, 1u64 << (i % 64))
}

impl ReplayWindow {
    /// Whether `counter` would be accepted now.
    pub fn check(&self, counter: u64) -> bool {
        if self.empty || counter > self.top {
            return true;
        }
        if self.top - counter >= WINDOW {
            return false;
        }
        let (w, b) = slot(counter);
        self.bits[w] & b == 0
    }

    /// Records `counter` as seen (call only after [`ReplayWindow::check`] and authentication).
    pub fn mark(&mut self, counter: u64) {
        if self.empty {
            self.empty = false;
            self.top = counter;
        } else if counter > self.top {
            let ahead = counter - self.top;
            if ahead >= WINDOW {
                self.bits = [0; WORDS];
            } else {
                // Forget the counters the window slides past (they share slots with the new).
                for c in self.top + 1..=counter {
                    let (w, b) = slot(c);
                    self.bits[w] &= !b;
                }
            }
            self.top = counter;
        } else if self.top - counter >= WINDOW {
            return;
        }
        let (w, b) = slot(counter);
        self.bits[w] |= b;
    }

    /// Highest counter seen, if any.
    pub fn top(&self) -> Option<u64> {
        (!self.empty).then_some(self.top)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeSet;

    /// The rule stated plainly, for comparison.
    #[derive(Default)]
    struct Model {
        seen: BTreeSet<u64>,
    }

    impl Model {
        fn accept(&mut self, c: u64) -> bool {
            let top = self.seen.iter().next_back().copied();
            let ok = match top {
                None => true,
                Some(t) => c > t || (t - c < WINDOW && !self.seen.contains(&c)),
            };
            if ok {
                self.seen.insert(c);
            }
            ok
        }
    }

    fn accept(w: &mut ReplayWindow, c: u64) -> bool {
        let ok = w.check(c);
        if ok {
            w.mark(c);
        }
        ok
    }

    #[test]
    fn in_order_once_each() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.top(), None);
        for c in 0..10_000 {
            assert!(accept(&mut w, c), "{c}");
            assert!(!w.check(c), "replay of {c}");
        }
        assert_eq!(w.top(), Some(9_999));
        assert!(!w.check(0));
        assert!(!w.check(9_999 - WINDOW + 1), "seen, inside the window");
        assert!(!w.check(9_999 - WINDOW), "outside the window");
    }

    #[test]
    fn reordering_inside_the_window_is_accepted_once() {
        let mut w = ReplayWindow::default();
        assert!(accept(&mut w, 5000));
        assert!(accept(&mut w, 5000 - WINDOW + 1), "oldest in the window");
        assert!(!accept(&mut w, 5000 - WINDOW), "just outside");
        assert!(accept(&mut w, 4999));
        assert!(!accept(&mut w, 4999));
        // A big jump forgets everything behind the new window.
        assert!(accept(&mut w, 5000 + 10 * WINDOW));
        assert!(!accept(&mut w, 5000));
        assert!(accept(&mut w, 5000 + 9 * WINDOW + 1));
    }

    #[test]
    fn sliding_clears_the_slots_it_reuses() {
        let mut w = ReplayWindow::default();
        assert!(accept(&mut w, 0));
        assert!(accept(&mut w, 1));
        // 1 + WINDOW shares 1's slot: it is new, and afterwards 1 is out of the window.
        assert!(accept(&mut w, 1 + WINDOW));
        assert!(!accept(&mut w, 1 + WINDOW));
        assert!(!accept(&mut w, 1));
        // A counter between the old top and the new one that was never seen is accepted.
        assert!(accept(&mut w, WINDOW));
    }

    #[test]
    fn counters_near_the_top_of_u64() {
        let mut w = ReplayWindow::default();
        assert!(accept(&mut w, u64::MAX - 1));
        assert!(accept(&mut w, u64::MAX));
        assert!(!accept(&mut w, u64::MAX));
        assert!(!accept(&mut w, u64::MAX - 1));
        assert!(accept(&mut w, u64::MAX - 2));
        assert!(!accept(&mut w, 0));
    }

    #[test]
    fn matches_the_model_on_random_traffic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        for round in 0..200 {
            let mut w = ReplayWindow::default();
            let mut m = Model::default();
            let mut next = rng.random_range(0..1_000_000u64);
            for _ in 0..2_000 {
                // Mostly forward, with reordering, duplicates, stale and far-ahead counters.
                let c = match rng.random_range(0..10) {
                    0..=4 => {
                        next += 1;
                        next
                    }
                    5 | 6 => next.saturating_sub(rng.random_range(0..WINDOW + 64)),
                    7 => next.saturating_sub(rng.random_range(0..4)),
                    8 => next + rng.random_range(0..3 * WINDOW),
                    _ => next.saturating_sub(rng.random_range(WINDOW - 2..WINDOW + 2)),
                };
                next = next.max(c);
                assert_eq!(accept(&mut w, c), m.accept(c), "round {round}, counter {c}");
            }
        }
    }
}
