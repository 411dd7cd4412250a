//! The DNS server's counters, rendered for `/metrics` (Prometheus text format).

use super::answer::Outcome;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters shared by the listeners; all monotonic.
#[derive(Debug, Default)]
pub struct DnsMetrics {
    pub udp_queries: AtomicU64,
    pub tcp_queries: AtomicU64,
    pub answered: AtomicU64,
    pub nodata: AtomicU64,
    pub nxdomain: AtomicU64,
    pub forwarded: AtomicU64,
    /// Forwarded queries that got SERVFAIL (upstream down, slow, or none configured).
    pub servfail: AtomicU64,
    /// Forwards refused because too many were in flight (answered SERVFAIL at once).
    pub forward_overload: AtomicU64,
    pub formerr: AtomicU64,
    pub notimp: AtomicU64,
    /// Packets not answered at all: shorter than a header, or responses sent to us.
    pub dropped: AtomicU64,
    /// Queries dropped by the per-source rate limit.
    pub rate_limited: AtomicU64,
    /// Queries from sources outside the served networks (answered REFUSED).
    pub refused_source: AtomicU64,
    /// TCP connections closed at once because too many were open.
    pub tcp_rejected: AtomicU64,
}

impl DnsMetrics {
    pub fn count(&self, o: Outcome) {
        let c = match o {
            Outcome::Answered => &self.answered,
            Outcome::NoData => &self.nodata,
            Outcome::NxDomain => &self.nxdomain,
            Outcome::Forward => &self.forwarded,
            Outcome::FormErr => &self.formerr,
            Outcome::NotImp => &self.notimp,
            Outcome::Dropped => &self.dropped,
        };
        c.fetch_add(1, Relaxed);
    }

    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    /// `name value` pairs, in a fixed order.
    pub fn values(&self) -> Vec<(&'static str, u64)> {
        [
            ("udp_queries", &self.udp_queries),
            ("tcp_queries", &self.tcp_queries),
            ("answered", &self.answered),
            ("nodata", &self.nodata),
            ("nxdomain", &self.nxdomain),
            ("forwarded", &self.forwarded),
            ("servfail", &self.servfail),
            ("forward_overload", &self.forward_overload),
            ("formerr", &self.formerr),
            ("notimp", &self.notimp),
            ("dropped", &self.dropped),
            ("rate_limited", &self.rate_limited),
            ("refused_source", &self.refused_source),
            ("tcp_rejected", &self.tcp_rejected),
        ]
        .into_iter()
        .map(|(n, c)| (n, c.load(Relaxed)))
        .collect()
    }

    /// Prometheus lines: `weave_dns_queries_total{transport=...}` and
    /// `weave_dns_responses_total{result=...}`, plus the refusals.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let v: std::collections::HashMap<&str, u64> = self.values().into_iter().collect();
        let _ = writeln!(
            s,
            "# HELP weave_dns_queries_total DNS packets received, by transport.\n\
             # TYPE weave_dns_queries_total counter"
        );
        for t in ["udp", "tcp"] {
            let _ = writeln!(
                s,
                "weave_dns_queries_total{{transport=\"{t}\"}} {}",
                v[format!("{t}_queries").as_str()]
            );
        }
        let _ = writeln!(
            s,
            "# HELP weave_dns_responses_total What became of DNS queries.\n\
             # TYPE weave_dns_responses_total counter"
        );
        for r in [
            "answered",
            "nodata",
            "nxdomain",
            "forwarded",
            "servfail",
            "forward_overload",
            "formerr",
            "notimp",
            "dropped",
            "rate_limited",
            "refused_source",
            "tcp_rejected",
        ] {
            let _ = writeln!(s, "weave_dns_responses_total{{result=\"{r}\"}} {}", v[r]);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter() {
        let m = DnsMetrics::default();
        m.count(Outcome::Answered);
        m.count(Outcome::Answered);
        m.count(Outcome::FormErr);
        DnsMetrics::inc(&m.rate_limited);
        DnsMetrics::inc(&m.udp_queries);
        let text = m.render();
        assert!(text.contains("weave_dns_responses_total{result=\"answered\"} 2\n"));
        assert!(text.contains("weave_dns_responses_total{result=\"formerr\"} 1\n"));
        assert!(text.contains("weave_dns_responses_total{result=\"rate_limited\"} 1\n"));
        assert!(text.contains("weave_dns_queries_total{transport=\"udp\"} 1\n"));
        assert!(text.contains("weave_dns_queries_total{transport=\"tcp\"} 0\n"));
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 14);
    }
}
