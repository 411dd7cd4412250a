//! The reachability scenario: an `nc -k -l` listener task on the weave network on each
//! chosen agent, `nc -z` probe tasks from every agent to every listener, one negative probe
//! to a closed port (must fail), and an agent × agent matrix with latencies. The same runner
//! and report serve a real Mesos cluster ([`crate::mesos_cluster`]) and the local cluster of
//! network namespaces ([`crate::local_cluster`]), through [`Cluster`].

use crate::Result;
use serde_json::json;
use std::time::Duration;

/// Port the listeners bind; the negative probe uses the next one.
pub const LISTEN_PORT: u16 = 1080;

/// An agent as the report names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRef {
    pub id: String,
    pub hostname: String,
}

/// How one probe ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeOutcome {
    /// `nc -z` exited 0 (Mesos: TASK_FINISHED).
    pub connected: bool,
    /// The terminal state or exit status, and any message.
    pub detail: String,
    /// From the probe's start (Mesos: TASK_RUNNING) to its end.
    pub latency: Option<Duration>,
}

/// What a cluster must do for the scenario; implemented for Mesos and for namespaces.
pub trait Cluster {
    /// `"mesos"` or `"local"`.
    fn kind(&self) -> &'static str;
    fn agents(&self) -> Vec<AgentRef>;
    /// Starts `nc -k -l 0.0.0.0 <port>` on `agent`'s weave network; returns its IP.
    fn start_listener(&mut self, agent: &AgentRef, port: u16) -> Result<String>;
    /// Runs `nc -z -w 3 <ip> <port>` from each `(agent, ip, port)` at once.
    fn probe_all(&mut self, probes: &[(AgentRef, String, u16)]) -> Result<Vec<ProbeOutcome>>;
    /// Stops listeners and removes everything the scenario created.
    fn cleanup(&mut self) -> Result<()>;
}

/// One probe in the report.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRow {
    pub from: AgentRef,
    pub to: AgentRef,
    pub target: String,
    pub expect_open: bool,
    pub outcome: Option<ProbeOutcome>,
    pub error: Option<String>,
}

impl ProbeRow {
    pub fn ok(&self) -> bool {
        self.outcome
            .as_ref()
            .is_some_and(|o| o.connected == self.expect_open)
    }
}

/// The scenario's result.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub kind: String,
    pub agents: Vec<AgentRef>,
    /// `(agent, listener IP)`.
    pub listeners: Vec<(AgentRef, String)>,
    pub probes: Vec<ProbeRow>,
    /// Setup or cleanup failures.
    pub errors: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
            && !self.listeners.is_empty()
            && !self.probes.is_empty()
            && self.probes.iter().all(ProbeRow::ok)
    }

    fn cell(&self, from: &AgentRef, to: &AgentRef) -> String {
        match self
            .probes
            .iter()
            .find(|p| p.expect_open && &p.from == from && &p.to == to)
        {
            None => "-".to_string(),
            Some(p) => {
                let verdict = if p.ok() { "OK" } else { "FAIL" };
                match p.outcome.as_ref().and_then(|o| o.latency) {
                    Some(l) => format!("{verdict} {:.0}ms", l.as_secs_f64() * 1e3),
                    None => verdict.to_string(),
                }
            }
        }
    }

    /// The matrix (rows: probing agent, columns: listener agent), then the negative
    /// probes and any error, then the verdict.
    pub fn text(&self) -> String {
        let mut out = format!("weave reachability ({} cluster)\n", self.kind);
        for (a, ip) in &self.listeners {
            out.push_str(&format!("listener on {}: {ip}:{LISTEN_PORT}\n", a.hostname));
        }
        let cols: Vec<&AgentRef> = self.listeners.iter().map(|(a, _)| a).collect();
        let width = self
            .agents
            .iter()
            .map(|a| a.hostname.len())
            .chain(cols.iter().map(|a| a.hostname.len()))
            .max()
            .unwrap_or(4)
            .max(12);
        out.push_str(&format!("{:<width$}", "from \\ to"));
        for c in &cols {
            out.push_str(&format!("  {:<width$}", c.hostname));
        }
        out.push('\n');
        for from in &self.agents {
            out.push_str(&format!("{:<width$}", from.hostname));
            for to in &cols {
                out.push_str(&format!("  {:<width$}", self.cell(from, to)));
            }
            out.push('\n');
        }
        for p in self.probes.iter().filter(|p| !p.expect_open) {
            let got = p
                .outcome
                .as_ref()
                .map_or("no outcome".to_string(), |o| o.detail.clone());
            out.push_str(&format!(
                "negative probe {} -> {} (closed): {} ({got})\n",
                p.from.hostname,
                p.target,
                if p.ok() { "OK, refused" } else { "FAIL" }
            ));
        }
        for p in self.probes.iter().filter(|p| !p.ok()) {
            let why = p
                .error
                .clone()
                .or_else(|| p.outcome.as_ref().map(|o| o.detail.clone()))
                .unwrap_or_default();
            out.push_str(&format!(
                "FAILED: {} -> {}: {why}\n",
                p.from.hostname, p.target
            ));
        }
        for e in &self.errors {
            out.push_str(&format!("ERROR: {e}\n"));
        }
        out.push_str(if self.ok() {
            "result: PASS\n"
        } else {
            "result: FAIL\n"
        });
        out
    }

    pub fn json(&self) -> serde_json::Value {
        let agent = |a: &AgentRef| json!({"id": a.id, "hostname": a.hostname});
        json!({
            "cluster": self.kind,
            "ok": self.ok(),
            "agents": self.agents.iter().map(agent).collect::<Vec<_>>(),
            "listeners": self.listeners.iter().map(|(a, ip)| json!({
                "agent": agent(a), "ip": ip, "port": LISTEN_PORT})).collect::<Vec<_>>(),
            "probes": self.probes.iter().map(|p| json!({
                "from": agent(&p.from),
                "to": agent(&p.to),
                "target": p.target,
                "expect": if p.expect_open { "open" } else { "closed" },
                "connected": p.outcome.as_ref().map(|o| o.connected),
                "ok": p.ok(),
                "latency_ms": p.outcome.as_ref().and_then(|o| o.latency)
                    .map(|l| (l.as_secs_f64() * 1e4).round() / 10.0),
                "detail": p.outcome.as_ref().map(|o| o.detail.clone()),
                "error": p.error,
            })).collect::<Vec<_>>(),
            "errors": self.errors,
        })
    }
}

/// Which agents get a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listeners {
    /// One per agent: the full agent × agent matrix.
    All,
    /// Only on this agent (hostname or ID): one column.
    On(String),
}

/// Runs the scenario; cleanup always runs, its failure is reported too.
pub fn run(cluster: &mut dyn Cluster, listeners: &Listeners) -> Report {
    let mut report = Report {
        kind: cluster.kind().to_string(),
        agents: cluster.agents(),
        ..Default::default()
    };
    if let Err(e) = run_probes(cluster, listeners, &mut report) {
        report.errors.push(e.to_string());
    }
    if let Err(e) = cluster.cleanup() {
        report.errors.push(format!("cleanup: {e}"));
    }
    report
}

fn run_probes(cluster: &mut dyn Cluster, which: &Listeners, report: &mut Report) -> Result<()> {
    let targets: Vec<AgentRef> = match which {
        Listeners::All => report.agents.clone(),
        Listeners::On(name) => report
            .agents
            .iter()
            .filter(|a| a.hostname == *name || a.id == *name)
            .cloned()
            .collect(),
    };
    if targets.is_empty() {
        return Err(crate::Error::new(
            crate::ErrorKind::NotFound,
            format!("choose listener agent: none matches {which:?}"),
        ));
    }
    for a in &targets {
        let ip = cluster.start_listener(a, LISTEN_PORT)?;
        report.listeners.push((a.clone(), ip));
    }
    let mut rows = Vec::new();
    for (to, ip) in &report.listeners {
        for from in &report.agents {
            rows.push((from.clone(), to.clone(), ip.clone(), LISTEN_PORT, true));
        }
    }
    // Negative: from another agent than the first listener's, when there is one.
    let (to, ip) = report.listeners[0].clone();
    let from = report
        .agents
        .iter()
        .find(|a| **a != to)
        .cloned()
        .unwrap_or_else(|| to.clone());
    rows.push((from, to, ip, LISTEN_PORT + 1, false));

    let probes: Vec<(AgentRef, String, u16)> = rows
        .iter()
        .map(|(from, _, ip, port, _)| (from.clone(), ip.clone(), *port))
        .collect();
    let outcomes = cluster.probe_all(&probes);
    for (i, (from, to, ip, port, expect_open)) in rows.into_iter().enumerate() {
        let (outcome, error) = match &outcomes {
            Ok(o) => (o.get(i).cloned(), None),
            Err(e) => (None, Some(e.to_string())),
        };
        report.probes.push(ProbeRow {
            from,
            to,
            target: format!("{ip}:{port}"),
            expect_open,
            outcome,
            error,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster where agent "b" cannot reach "a".
    struct Fake {
        cleaned: bool,
    }

    fn agent(n: &str) -> AgentRef {
        AgentRef {
            id: format!("id-{n}"),
            hostname: n.to_string(),
        }
    }

    impl Cluster for Fake {
        fn kind(&self) -> &'static str {
            "fake"
        }
        fn agents(&self) -> Vec<AgentRef> {
            vec![agent("a"), agent("b")]
        }
        fn start_listener(&mut self, a: &AgentRef, _port: u16) -> Result<String> {
            Ok(format!("10.32.0.{}", if a.hostname == "a" { 1 } else { 2 }))
        }
        fn probe_all(&mut self, probes: &[(AgentRef, String, u16)]) -> Result<Vec<ProbeOutcome>> {
            Ok(probes
                .iter()
                .map(|(from, ip, port)| {
                    let connected =
                        *port == LISTEN_PORT && !(from.hostname == "b" && ip == "10.32.0.1");
                    ProbeOutcome {
                        connected,
                        detail: if connected {
                            "TASK_FINISHED"
                        } else {
                            "TASK_FAILED"
                        }
                        .into(),
                        latency: Some(Duration::from_millis(12)),
                    }
                })
                .collect())
        }
        fn cleanup(&mut self) -> Result<()> {
            self.cleaned = true;
            Ok(())
        }
    }

    #[test]
    fn matrix_marks_the_broken_pair_and_fails() {
        let mut c = Fake { cleaned: false };
        let r = run(&mut c, &Listeners::All);
        assert!(c.cleaned);
        assert_eq!(r.probes.len(), 5);
        assert!(!r.ok());
        let text = r.text();
        assert!(text.contains("FAILED: b -> 10.32.0.1:1080"), "{text}");
        assert!(
            text.contains("negative probe b -> 10.32.0.1:1081 (closed): OK"),
            "{text}"
        );
        assert!(text.ends_with("result: FAIL\n"), "{text}");
        let j = r.json();
        assert_eq!(j["ok"], false);
        assert_eq!(j["probes"][0]["latency_ms"], 12.0);
        assert_eq!(j["probes"][4]["expect"], "closed");

        let one = run(&mut c, &Listeners::On("b".into()));
        assert!(one.ok(), "{}", one.text());
        assert_eq!(one.listeners.len(), 1);
        let none = run(&mut c, &Listeners::On("zz".into()));
        assert!(!none.ok() && none.errors[0].contains("none matches"));
    }
}
