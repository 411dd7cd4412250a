//! Admission of inbound mesh connections, as pure logic (the caller passes the time in).
//!
//! Every accepted TCP connection costs a task, a handshake and, with a password, a Diffie-Hellman
//! operation. A stranger who opens connections in a loop, or opens many and sends nothing, must
//! not be able to starve real peers or the rest of the daemon. So before any handshake work a
//! connection must pass, in order:
//! - a cap on handshakes in progress, per source address and in total (half-open connections
//!   otherwise pile up until their handshake timeout);
//! - a token bucket per source address (one noisy host cannot use up the global budget alone);
//! - a global token bucket (many hosts together cannot either).
//!
//! A refused connection is closed at once, before we send our header. Real peers dial each
//! target once and back off exponentially after a failure, so they stay far below the limits.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most source addresses remembered; past this, idle ones are forgotten first.
pub const MAX_SOURCES: usize = 4096;
/// Refusals are logged at most this often (with the count of those not logged).
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// The admission limits. `Default` suits a mesh of hundreds of hosts; tests that run many
/// peers on one loopback address raise the per-source ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AcceptLimits {
    /// Connections one address may open at once before it is throttled.
    pub per_source_burst: u32,
    /// Connections per second one address may open in the long run.
    pub per_source_rate: f64,
    pub global_burst: u32,
    pub global_rate: f64,
    /// Handshakes in progress at once, in total.
    pub max_pending: usize,
    /// Handshakes in progress at once from one address.
    pub max_pending_per_source: usize,
}

impl Default for AcceptLimits {
    fn default() -> AcceptLimits {
        AcceptLimits {
            per_source_burst: 10,
            per_source_rate: 2.0,
            global_burst: 100,
            global_rate: 50.0,
            max_pending: 128,
            max_pending_per_source: 16,
        }
    }
}

impl AcceptLimits {
    /// No limits at all (for in-process tests that are not about admission).
    pub fn unlimited() -> AcceptLimits {
        AcceptLimits {
            per_source_burst: u32::MAX,
            per_source_rate: f64::INFINITY,
            global_burst: u32::MAX,
            global_rate: f64::INFINITY,
            max_pending: usize::MAX,
            max_pending_per_source: usize::MAX,
        }
    }
}

/// Why a connection was refused before its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    SourceRate,
    GlobalRate,
    SourcePending,
    TooManyPending,
    TooManySources,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::SourceRate => "too many connection attempts from this address",
            Refusal::GlobalRate => "too many connection attempts overall",
            Refusal::SourcePending => "too many handshakes in progress from this address",
            Refusal::TooManyPending => "too many handshakes in progress",
            Refusal::TooManySources => "too many source addresses to track",
        })
    }
}

/// A token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: burst as f64,
            last: now,
        }
    }

    fn refill(&mut self, burst: u32, rate: f64, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        // `rate` may be infinite: then any elapsed time (or none) fills the bucket.
        let add = if dt > 0.0 { dt * rate } else { 0.0 };
        if add.is_nan() || add >= burst as f64 || rate.is_infinite() {
            self.tokens = burst as f64;
        } else {
            self.tokens = (self.tokens + add).min(burst as f64);
        }
        self.last = now;
    }
}

#[derive(Debug)]
struct Source {
    bucket: Bucket,
    pending: usize,
}

/// The admission state of one listener.
#[derive(Debug)]
pub struct AcceptLimiter {
    limits: AcceptLimits,
    global: Bucket,
    sources: HashMap<IpAddr, Source>,
    pending: usize,
    unlogged: u64,
    last_log: Option<Instant>,
}

impl AcceptLimiter {
    pub fn new(limits: AcceptLimits, now: Instant) -> AcceptLimiter {
        AcceptLimiter {
            global: Bucket::full(limits.global_burst, now),
            limits,
            sources: HashMap::new(),
            pending: 0,
            unlogged: 0,
            last_log: None,
        }
    }

    /// Handshakes in progress (admitted and not yet [`finished`](Self::finished)).
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Source addresses currently remembered.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// Admits a connection from `ip` (then the caller must call `finished` when its handshake
    /// ends, however it ends) or says why not. A refusal consumes nothing.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        let l = self.limits;
        if self.pending >= l.max_pending {
            return Err(Refusal::TooManyPending);
        }
        if !self.sources.contains_key(&ip) && self.sources.len() >= MAX_SOURCES {
            self.forget_idle(now);
            if self.sources.len() >= MAX_SOURCES {
                return Err(Refusal::TooManySources);
            }
        }
        let src = self.sources.entry(ip).or_insert_with(|| Source {
            bucket: Bucket::full(l.per_source_burst, now),
            pending: 0,
        });
        if src.pending >= l.max_pending_per_source {
            return Err(Refusal::SourcePending);
        }
        src.bucket
            .refill(l.per_source_burst, l.per_source_rate, now);
        if src.bucket.tokens < 1.0 {
            return Err(Refusal::SourceRate);
        }
        self.global.refill(l.global_burst, l.global_rate, now);
        if self.global.tokens < 1.0 {
            return Err(Refusal::GlobalRate);
        }
        src.bucket.tokens -= 1.0;
        src.pending += 1;
        self.global.tokens -= 1.0;
        self.pending += 1;
        Ok(())
    }

    /// The handshake of a connection admitted from `ip` is over.
    pub fn finished(&mut self, ip: IpAddr) {
        if let Some(s) = self.sources.get_mut(&ip) {
            s.pending = s.pending.saturating_sub(1);
            self.pending = self.pending.saturating_sub(1);
        }
    }

    /// Drops sources with no handshake in progress whose bucket has refilled: remembering them
    /// changes nothing.
    fn forget_idle(&mut self, now: Instant) {
        let l = self.limits;
        self.sources.retain(|_, s| {
            s.bucket.refill(l.per_source_burst, l.per_source_rate, now);
            s.pending > 0 || s.bucket.tokens < l.per_source_burst as f64
        });
    }

    /// Counts a refusal; `Some(n)` when it should be logged now, `n` being the refusals since
    /// the last logged one that were not logged. Keeps a flood from flooding the log too.
    pub fn log_refusal(&mut self, now: Instant) -> Option<u64> {
        match self.last_log {
            Some(t) if now.saturating_duration_since(t) < LOG_INTERVAL => {
                self.unlogged += 1;
                None
            }
            _ => {
                self.last_log = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn limits() -> AcceptLimits {
        AcceptLimits {
            per_source_burst: 3,
            per_source_rate: 2.0,
            global_burst: 5,
            global_rate: 10.0,
            max_pending: 100,
            max_pending_per_source: 100,
        }
    }

    #[test]
    fn per_source_burst_then_refill_at_the_rate() {
        let t0 = Instant::now();
        let mut l = AcceptLimiter::new(limits(), t0);
        for _ in 0..3 {
            assert_eq!(l.admit(ip(1), t0), Ok(()));
        }
        assert_eq!(l.admit(ip(1), t0), Err(Refusal::SourceRate));
        // Another address still gets in: one host cannot lock out the others.
        assert_eq!(l.admit(ip(2), t0), Ok(()));
        // 2 per second: after 0.4 s nothing, after 0.5 s exactly one more.
        assert_eq!(
            l.admit(ip(1), t0 + Duration::from_millis(400)),
            Err(Refusal::SourceRate)
        );
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(l.admit(ip(1), t1), Ok(()));
        assert_eq!(l.admit(ip(1), t1), Err(Refusal::SourceRate));
        // Never more than the burst, however long the pause.
        let t2 = t0 + Duration::from_secs(3600);
        let admitted = (0..10).filter(|_| l.admit(ip(1), t2).is_ok()).count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn global_bucket_caps_many_sources_and_refusals_consume_nothing() {
        let t0 = Instant::now();
        let mut l = AcceptLimiter::new(limits(), t0);
        let ok = (1..=20).filter(|k| l.admit(ip(*k), t0).is_ok()).count();
        assert_eq!(ok, 5);
        assert_eq!(l.admit(ip(99), t0), Err(Refusal::GlobalRate));
        // The refused sources kept their own tokens: once the global bucket has one, they pass.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(l.admit(ip(20), t1), Ok(()));
        assert_eq!(l.admit(ip(20), t1), Err(Refusal::GlobalRate));
    }

    #[test]
    fn pending_handshakes_are_capped_per_source_and_in_total() {
        let t0 = Instant::now();
        let mut l = AcceptLimiter::new(
            AcceptLimits {
                max_pending: 3,
                max_pending_per_source: 2,
                ..AcceptLimits::unlimited()
            },
            t0,
        );
        assert_eq!(l.admit(ip(1), t0), Ok(()));
        assert_eq!(l.admit(ip(1), t0), Ok(()));
        assert_eq!(l.admit(ip(1), t0), Err(Refusal::SourcePending));
        assert_eq!(l.admit(ip(2), t0), Ok(()));
        assert_eq!(l.admit(ip(3), t0), Err(Refusal::TooManyPending));
        assert_eq!(l.pending(), 3);
        l.finished(ip(1));
        assert_eq!(l.admit(ip(1), t0), Ok(()));
        for k in [1, 1, 2] {
            l.finished(ip(k));
        }
        // Finishing more than was admitted, or for a stranger, cannot go below zero.
        l.finished(ip(1));
        l.finished(ip(77));
        assert_eq!(l.pending(), 0);
    }

    #[test]
    fn unlimited_admits_everything() {
        let t0 = Instant::now();
        let mut l = AcceptLimiter::new(AcceptLimits::unlimited(), t0);
        for k in 0..10_000u32 {
            let a = IpAddr::from((0x0a00_0000u32 + k % 50).to_be_bytes());
            assert_eq!(l.admit(a, t0), Ok(()), "{k}");
            l.finished(a);
        }
    }

    #[test]
    fn sources_are_bounded_and_idle_ones_forgotten() {
        let t0 = Instant::now();
        let mut l = AcceptLimiter::new(
            AcceptLimits {
                per_source_burst: 1,
                per_source_rate: 1.0,
                ..AcceptLimits::unlimited()
            },
            t0,
        );
        let addr = |k: usize| IpAddr::from((0x0a00_0000u32 + k as u32).to_be_bytes());
        for k in 0..MAX_SOURCES {
            assert_eq!(l.admit(addr(k), t0), Ok(()));
            l.finished(addr(k));
        }
        // Every bucket is empty right now: a new address cannot be tracked.
        assert_eq!(l.admit(addr(MAX_SOURCES), t0), Err(Refusal::TooManySources));
        // A second later they have refilled and are forgotten to make room.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(l.admit(addr(MAX_SOURCES), t1), Ok(()));
        assert_eq!(l.sources(), 1);
    }

    #[test]
    fn refusal_logging_is_throttled_and_counts_what_it_skipped() {
        let t0 = Instant::now();
        let mut l = AcceptLimiter::new(limits(), t0);
        assert_eq!(l.log_refusal(t0), Some(0));
        for i in 1..=4 {
            assert_eq!(l.log_refusal(t0 + Duration::from_millis(100 * i)), None);
        }
        assert_eq!(l.log_refusal(t0 + LOG_INTERVAL), Some(4));
        assert_eq!(l.log_refusal(t0 + LOG_INTERVAL), None);
    }
}
