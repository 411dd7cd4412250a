//! Per-source rate limiting of queries, pure (the caller passes the time in), in bounded
//! memory: a token bucket per source address, at most `max_sources` of them; when the table
//! is full, sources whose buckets have refilled (idle ones) are forgotten, and if none are,
//! newcomers share one overflow bucket. A flood from many spoofed addresses therefore costs
//! a fixed amount of memory and gets the overflow bucket's rate, not more.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The limits; `Default` leaves room for a busy client doing a lookup per request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryLimits {
    /// Queries per second one source may send in the long run; 0 turns limiting off.
    pub per_source_rate: f64,
    /// Queries one source may send at once.
    pub per_source_burst: f64,
    /// Most sources tracked at once.
    pub max_sources: usize,
}

impl Default for QueryLimits {
    fn default() -> QueryLimits {
        QueryLimits {
            per_source_rate: 2000.0,
            per_source_burst: 4000.0,
            max_sources: 8192,
        }
    }
}

impl QueryLimits {
    /// No limit (benchmarks against servers that have none).
    pub fn off() -> QueryLimits {
        QueryLimits {
            per_source_rate: 0.0,
            ..QueryLimits::default()
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(l: &QueryLimits, now: Instant) -> Bucket {
        Bucket {
            tokens: l.per_source_burst,
            at: now,
        }
    }

    fn refill(&mut self, l: &QueryLimits, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * l.per_source_rate).min(l.per_source_burst);
        self.at = now;
    }

    fn take(&mut self, l: &QueryLimits, now: Instant) -> bool {
        self.refill(l, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Sweeps of idle sources happen at most this often (each is O(sources)).
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct RateLimiter {
    limits: QueryLimits,
    buckets: HashMap<IpAddr, Bucket>,
    overflow: Bucket,
    last_sweep: Option<Instant>,
}

impl RateLimiter {
    pub fn new(limits: QueryLimits, now: Instant) -> RateLimiter {
        RateLimiter {
            limits,
            buckets: HashMap::new(),
            overflow: Bucket::full(&limits, now),
            last_sweep: None,
        }
    }

    /// True if a query from `src` may be served now (and counts it).
    pub fn allow(&mut self, src: IpAddr, now: Instant) -> bool {
        let l = self.limits;
        if l.per_source_rate <= 0.0 {
            return true;
        }
        if let Some(b) = self.buckets.get_mut(&src) {
            return b.take(&l, now);
        }
        if self.buckets.len() >= l.max_sources {
            self.sweep(now);
        }
        if self.buckets.len() >= l.max_sources {
            return self.overflow.take(&l, now);
        }
        let mut b = Bucket::full(&l, now);
        let ok = b.take(&l, now);
        self.buckets.insert(src, b);
        ok
    }

    /// Forgets sources whose buckets are full again (idle for burst/rate seconds).
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < SWEEP_INTERVAL)
        {
            return;
        }
        self.last_sweep = Some(now);
        let l = self.limits;
        self.buckets.retain(|_, b| {
            b.refill(&l, now);
            b.tokens < l.per_source_burst
        });
    }

    /// Sources tracked now (bounded by `max_sources`).
    pub fn sources(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    fn limits() -> QueryLimits {
        QueryLimits {
            per_source_rate: 10.0,
            per_source_burst: 20.0,
            max_sources: 4,
        }
    }

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(limits(), t0);
        let allowed = (0..100).filter(|_| r.allow(ip(1), t0)).count();
        assert_eq!(allowed, 20);
        // Another source has its own bucket.
        assert!(r.allow(ip(2), t0));
        // One second later: 10 more.
        let t1 = t0 + Duration::from_secs(1);
        let allowed = (0..100).filter(|_| r.allow(ip(1), t1)).count();
        assert_eq!(allowed, 10);
    }

    #[test]
    fn memory_is_bounded_and_idle_sources_are_forgotten() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(limits(), t0);
        // A spoofed flood from 10,000 sources: the table never grows past 4, and the
        // newcomers share one overflow bucket (20 then 10/s), not 10,000 buckets.
        let allowed = (0..10_000).filter(|i| r.allow(ip(*i), t0)).count();
        assert_eq!(r.sources(), 4);
        assert_eq!(allowed, 4 + 20);
        // Once the tracked sources are idle long enough, new ones get their own buckets.
        let later = t0 + Duration::from_secs(5);
        assert!(r.allow(ip(50_000), later));
        assert_eq!(r.sources(), 1);
    }

    #[test]
    fn off_allows_everything() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(QueryLimits::off(), t0);
        assert!((0..100_000).all(|i| r.allow(ip(i % 7), t0)));
        assert_eq!(r.sources(), 0);
    }
}
