//! Reachability with `nc`: listeners inside container namespaces, probes
//! (`nc -z -w 3 ADDR PORT`) run in parallel, and the matrix of who reached whom.

use crate::process::{self, Guard};
use crate::{Error, Result};
use std::fmt;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `nc -lk PORT` inside namespace `ns` (kept until the guard drops).
pub fn listen(ns: &str, port: u16) -> Result<Guard> {
    Guard::spawn(
        Command::new("ip")
            .args(["netns", "exec", ns, "nc", "-lk"])
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

/// Waits until something listens on TCP `port` inside `ns` (`ss -Hltn`).
pub fn wait_listening(ns: &str, port: u16, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    let want = format!(":{port} ");
    loop {
        let out = crate::ns::command_ok("ip", &["netns", "exec", ns, "ss", "-Hltn"])?;
        if out.contains(&want) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::new(format!(
                "wait for a listener on port {port} in {ns}: timed out"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `nc -z -w 3 ADDR PORT` inside `ns` (stderr piped, for the reason of a failure).
pub fn spawn_probe(ns: &str, addr: &str, port: u16) -> Result<Child> {
    Command::new("timeout")
        .args(["10", "ip", "netns", "exec", ns, "nc", "-z", "-w", "3", addr])
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::new(format!("start nc probe: {e}")))
}

/// `nc -z -w 3 ADDR PORT` from inside `ns`: true if it connected.
pub fn probe(ns: &str, addr: Ipv4Addr, port: u16) -> bool {
    spawn_probe(ns, &addr.to_string(), port)
        .ok()
        .and_then(|mut c| process::wait_timeout(&mut c, Duration::from_secs(10)))
        .is_some_and(|s| s.success())
}

/// Probes every ordered pair of `(name, namespace, address)` on `port`, all at once;
/// listeners must run already.
pub fn matrix(members: &[(String, String, Ipv4Addr)], port: u16) -> Matrix {
    let mut probes = Vec::new();
    for (i, from) in members.iter().enumerate() {
        for (j, to) in members.iter().enumerate() {
            if i != j {
                probes.push((i, j, spawn_probe(&from.1, &to.2.to_string(), port)));
            }
        }
    }
    let n = members.len();
    let mut ok = vec![vec![None; n]; n];
    for (i, j, child) in probes {
        // nc gives up after 3 s; the bound here only guards against a stuck process.
        ok[i][j] = Some(child.ok().is_some_and(|mut c| {
            let got = process::wait_timeout(&mut c, Duration::from_secs(10));
            if got.is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
            got.is_some_and(|s| s.success())
        }));
    }
    Matrix {
        names: members.iter().map(|m| m.0.clone()).collect(),
        ok,
    }
}

/// Who reached whom: `ok[i][j]` is the probe from member i to member j (`None` on the
/// diagonal).
#[derive(Debug, Clone)]
pub struct Matrix {
    pub names: Vec<String>,
    pub ok: Vec<Vec<Option<bool>>>,
}

impl Matrix {
    /// Ordered pairs that failed, by name.
    pub fn failures(&self) -> Vec<(String, String)> {
        self.pairs(false)
    }

    /// Ordered pairs that succeeded, by name.
    pub fn successes(&self) -> Vec<(String, String)> {
        self.pairs(true)
    }

    fn pairs(&self, want: bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, row) in self.ok.iter().enumerate() {
            for (j, cell) in row.iter().enumerate() {
                if *cell == Some(want) {
                    out.push((self.names[i].clone(), self.names[j].clone()));
                }
            }
        }
        out
    }

    pub fn all_ok(&self) -> bool {
        self.failures().is_empty()
    }
}

impl fmt::Display for Matrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.names.iter().map(String::len).max().unwrap_or(0).max(7);
        write!(f, "{:w$}", "from\\to")?;
        for n in &self.names {
            write!(f, " {n:>w$}")?;
        }
        writeln!(f)?;
        for (i, row) in self.ok.iter().enumerate() {
            write!(f, "{:w$}", self.names[i])?;
            for cell in row {
                let s = match cell {
                    None => "-",
                    Some(true) => "ok",
                    Some(false) => "FAIL",
                };
                write!(f, " {s:>w$}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
