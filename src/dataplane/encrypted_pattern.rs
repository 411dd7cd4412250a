//! Where a lane's worker sleeps, decided from its recent work (see
//! `sleeve_io::LaneCpus`).

use std::time::Duration;

/// Most rounds with work between two sleeps that still count as a short exchange.
const SHORT_EXCHANGE: u32 = 2;
/// Shortest sleep that ends an isolated exchange (a ping 10 ms apart is; a stream is not).
const QUIET: Duration = Duration::from_millis(1);

/// A lane's recent work, which decides where its worker sleeps. Isolated short exchanges
/// (a request and its answer, after a quiet spell): on its own CPU, where the next one will
/// come from, staying pinned while they stay so. A stream (many rounds of work, or wake-ups
/// close together): unpinned, so that the scheduler may wake it on an idle CPU, in parallel
/// with its peer's work.
#[derive(Default)]
pub struct Pattern {
    /// Rounds with work since the worker last woke.
    rounds: u32,
    /// The last sleep ended sooner than [`QUIET`].
    streaming: bool,
}

impl Pattern {
    /// A round with work; true: the lane is busy now (let go of the CPU).
    pub fn worked(&mut self) -> bool {
        self.rounds += 1;
        self.rounds > SHORT_EXCHANGE
    }

    /// About to sleep; true: sleep pinned.
    pub fn pin_to_sleep(&mut self) -> bool {
        std::mem::take(&mut self.rounds) <= SHORT_EXCHANGE && !self.streaming
    }

    /// Woken after sleeping `slept`; true: too soon for an isolated exchange (let go).
    pub fn woke(&mut self, slept: Duration) -> bool {
        self.streaming = slept < QUIET;
        self.streaming
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_sleeps_pinned_only_after_isolated_short_exchanges() {
        let mut p = Pattern::default();
        // A ping: one round of work, then a long sleep, again and again.
        for _ in 0..3 {
            assert!(!p.worked());
            assert!(p.pin_to_sleep());
            assert!(!p.woke(Duration::from_millis(10)));
        }
        // A burst: many rounds without sleeping.
        assert!(!p.worked() && !p.worked());
        assert!(p.worked());
        assert!(!p.pin_to_sleep());
        // A stream with gaps: short rounds, but woken soon after each sleep.
        assert!(p.woke(Duration::from_micros(80)));
        assert!(!p.worked());
        assert!(!p.pin_to_sleep());
        // Quiet again: pinned after the next isolated exchange.
        assert!(!p.woke(Duration::from_millis(5)));
        assert!(!p.worked());
        assert!(p.pin_to_sleep());
    }
}
