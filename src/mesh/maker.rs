//! The connection maker's bookkeeping: explicit targets (from flags and `weave connect`),
//! discovered ones (addresses other peers reach peers at), and per-target backoff. No I/O:
//! the actor asks what is due and reports what happened.

use super::status::ConnectionStatus;
use super::DEFAULT_PORT;
use crate::peer::PeerName;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::time::Instant;

/// The mesh's timers; `default()` is Weave's, tests shorten them.
#[derive(Debug, Clone, Copy)]
pub struct MeshTimers {
    pub heartbeat: Duration,
    /// Silence after which a connection counts as dead.
    pub dead_after: Duration,
    /// Periodic full topology gossip (changes are sent at once).
    pub gossip_interval: Duration,
    pub handshake_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// A connection that lived this long resets its target's backoff.
    pub backoff_reset: Duration,
}

impl Default for MeshTimers {
    fn default() -> MeshTimers {
        MeshTimers {
            heartbeat: Duration::from_secs(30),
            dead_after: Duration::from_secs(75),
            gossip_interval: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(2),
            backoff_max: Duration::from_secs(360),
            backoff_reset: Duration::from_secs(60),
        }
    }
}

impl MeshTimers {
    /// The one short preset (tests; `weaver --fast-mesh-timers`): heartbeat 0.5 s, dead
    /// after 3 s, backoff 0.2-2 s. Short enough for tests, long enough for routers in
    /// namespaces on a loaded machine.
    pub fn fast() -> MeshTimers {
        MeshTimers {
            heartbeat: Duration::from_millis(500),
            dead_after: Duration::from_secs(3),
            gossip_interval: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(3),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(2),
            backoff_reset: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub explicit: bool,
    pub discovered_for: Option<PeerName>,
    /// Addresses it resolved to (last attempt, or parsed when it is an IP).
    pub resolved: Vec<SocketAddr>,
    pub attempting: bool,
    next: Instant,
    backoff: Duration,
    last_error: Option<String>,
    refused: bool,
}

/// `host` or `host:port` with the mesh port filled in.
pub fn with_port(t: &str) -> String {
    if t.parse::<SocketAddr>().is_ok() {
        return t.to_string();
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return SocketAddr::new(ip, DEFAULT_PORT).to_string();
    }
    if t.starts_with('[') && t.ends_with(']') || !t.contains(':') {
        return format!("{t}:{DEFAULT_PORT}");
    }
    t.to_string()
}

impl Target {
    fn new(name: &str, explicit: bool, for_peer: Option<PeerName>, timers: &MeshTimers) -> Target {
        Target {
            name: name.into(),
            explicit,
            discovered_for: for_peer,
            resolved: with_port(name).parse().into_iter().collect(),
            attempting: false,
            next: Instant::now(),
            backoff: timers.backoff_initial,
            last_error: None,
            refused: false,
        }
    }
}

pub struct Maker {
    explicit: Vec<String>,
    targets: BTreeMap<String, Target>,
    timers: MeshTimers,
}

impl Maker {
    pub fn new(explicit: &[String], timers: MeshTimers) -> Maker {
        let mut m = Maker {
            explicit: vec![],
            targets: BTreeMap::new(),
            timers,
        };
        m.set(explicit.to_vec(), false, false);
        m
    }

    pub fn explicit(&self) -> Vec<String> {
        self.explicit.clone()
    }

    /// Adds, replaces or removes explicit targets.
    pub fn set(&mut self, list: Vec<String>, replace: bool, remove: bool) {
        if replace {
            self.explicit.clear();
        }
        for t in list {
            if remove {
                self.explicit.retain(|x| *x != t);
            } else if !self.explicit.contains(&t) {
                self.explicit.push(t);
            }
        }
        let explicit = self.explicit.clone();
        self.targets
            .retain(|k, t| !t.explicit || explicit.contains(k) || t.attempting);
        for t in &explicit {
            let timers = self.timers;
            let e = self
                .targets
                .entry(t.clone())
                .or_insert_with(|| Target::new(t, true, None, &timers));
            e.explicit = true;
        }
    }

    /// Brings discovered targets in line with `candidates` (peer, address) for peers we are
    /// not connected to, then returns the targets due for a dial (now marked attempting).
    pub fn due(
        &mut self,
        candidates: &[(PeerName, SocketAddr)],
        satisfied: impl Fn(&Target) -> bool,
        room: bool,
    ) -> Vec<String> {
        let explicit_addrs: Vec<SocketAddr> = self
            .targets
            .values()
            .filter(|t| t.explicit)
            .flat_map(|t| t.resolved.clone())
            .collect();
        let wanted: Vec<(PeerName, SocketAddr)> = candidates
            .iter()
            .filter(|(_, a)| !explicit_addrs.contains(a))
            .copied()
            .collect();
        self.targets.retain(|k, t| {
            t.explicit || t.attempting || wanted.iter().any(|(_, a)| a.to_string() == *k)
        });
        for (peer, addr) in wanted {
            let timers = self.timers;
            self.targets
                .entry(addr.to_string())
                .or_insert_with(|| Target::new(&addr.to_string(), false, Some(peer), &timers));
        }
        let now = Instant::now();
        let mut out = Vec::new();
        for t in self.targets.values_mut() {
            if t.attempting || now < t.next || satisfied(t) {
                continue;
            }
            if !room {
                t.last_error = Some("Connection limit reached".into());
                continue;
            }
            t.attempting = true;
            out.push(t.name.clone());
        }
        out
    }

    fn schedule(&mut self, name: &str, error: String, refused: bool, reset: bool) {
        let timers = self.timers;
        if let Some(t) = self.targets.get_mut(name) {
            t.attempting = false;
            if reset {
                t.backoff = timers.backoff_initial;
            }
            t.next = Instant::now() + t.backoff;
            t.backoff = (t.backoff * 2).min(timers.backoff_max);
            t.last_error = Some(error);
            t.refused = refused;
        }
    }

    /// A dial failed (connect, handshake, or refused by us after the handshake).
    pub fn failed(&mut self, name: &str, error: String, refused: bool, resolved: Vec<SocketAddr>) {
        if let Some(t) = self.targets.get_mut(name) {
            if !resolved.is_empty() {
                t.resolved = resolved;
            }
        }
        self.schedule(name, error, refused, false);
    }

    /// A dial succeeded and its connection was registered.
    pub fn connected(&mut self, name: &str, resolved: Vec<SocketAddr>) {
        if let Some(t) = self.targets.get_mut(name) {
            t.attempting = false;
            t.resolved = resolved;
            t.last_error = None;
            t.refused = false;
        }
    }

    /// A connection we dialled ended after `lived`; retry after the backoff.
    pub fn closed(&mut self, name: &str, lived: Duration, reason: String) {
        let reset = lived >= self.timers.backoff_reset;
        self.schedule(name, reason, false, reset);
    }

    /// Status lines for targets that have no connection.
    pub fn statuses(&self, satisfied: impl Fn(&Target) -> bool) -> Vec<ConnectionStatus> {
        let now = Instant::now();
        self.targets
            .values()
            .filter(|t| !satisfied(t))
            .map(|t| {
                let (state, info) = if t.attempting {
                    ("connecting", String::new())
                } else if t.refused {
                    ("failed", t.last_error.clone().unwrap_or_default())
                } else {
                    let wait = t.next.saturating_duration_since(now).as_secs_f32();
                    let err = t
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "not yet tried".into());
                    ("retrying", format!("{err}, retry in {wait:.1}s"))
                };
                ConnectionStatus {
                    address: with_port(&t.name),
                    outbound: true,
                    state: state.into(),
                    info,
                    peer: None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_to_the_cap_and_resets_after_a_long_connection() {
        let timers = MeshTimers::default();
        let mut m = Maker::new(&["192.0.2.9".to_string()], timers);
        let never = |_: &Target| false;
        assert_eq!(m.due(&[], never, true), vec!["192.0.2.9"]);
        assert!(m.due(&[], never, true).is_empty(), "dialled twice");
        let mut waits = vec![];
        for _ in 0..10 {
            m.failed("192.0.2.9", "refused".into(), false, vec![]);
            let t = &m.targets["192.0.2.9"];
            waits.push(t.next.duration_since(Instant::now()).as_secs());
            tokio::time::advance(t.next.duration_since(Instant::now())).await;
            assert_eq!(m.due(&[], never, true).len(), 1);
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 360, 360]);
        m.connected("192.0.2.9", vec!["192.0.2.9:6783".parse().unwrap()]);
        m.closed("192.0.2.9", Duration::from_secs(61), "gone".into());
        let t = &m.targets["192.0.2.9"];
        assert_eq!(t.next.duration_since(Instant::now()).as_secs(), 2);
        let st = m.statuses(never);
        assert_eq!(st[0].state, "retrying");
        assert!(st[0].info.starts_with("gone, retry in"), "{}", st[0].info);
        assert_eq!(st[0].address, "192.0.2.9:6783");
    }

    #[tokio::test]
    async fn discovery_adds_and_drops_candidates_and_skips_explicit_ones() {
        let mut m = Maker::new(&["192.0.2.1:6783".to_string()], MeshTimers::default());
        let p = PeerName::from_u64(7).unwrap();
        let c = [
            (p, "192.0.2.7:6783".parse().unwrap()),
            (p, "192.0.2.1:6783".parse().unwrap()),
        ];
        let due = m.due(&c, |_| false, true);
        assert_eq!(due, vec!["192.0.2.1:6783", "192.0.2.7:6783"]);
        m.failed("192.0.2.7:6783", "x".into(), false, vec![]);
        m.due(&[], |_| false, true);
        assert!(!m.targets.contains_key("192.0.2.7:6783"));
        m.set(vec!["192.0.2.1:6783".into()], false, true);
        assert!(m.explicit().is_empty());
        assert_eq!(with_port("h"), "h:6783");
        assert_eq!(with_port("[::1]"), "[::1]:6783");
        assert_eq!(with_port("::1"), "[::1]:6783");
        assert_eq!(with_port("h:1"), "h:1");
    }
}
