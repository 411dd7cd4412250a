//! Child processes that cannot outlive their guard: killed (SIGKILL) and reaped on drop,
//! and registered so that [`crate::cleanup`] kills them if the guard never drops.

use crate::{Error, Result};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// PIDs of guarded children still running.
static GUARDED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A child process, killed on drop.
#[derive(Debug)]
pub struct Guard {
    child: Option<Child>,
}

impl Guard {
    pub fn new(child: Child) -> Guard {
        GUARDED.lock().unwrap().push(child.id());
        Guard { child: Some(child) }
    }

    /// Spawns `cmd` under a guard.
    pub fn spawn(cmd: &mut Command) -> Result<Guard> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        cmd.spawn()
            .map(Guard::new)
            .map_err(|e| Error::new(format!("start {program}: {e}")))
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("guarded child")
    }

    /// `Some(status)` once it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Waits at most `limit` for it to exit by itself; kills it after that (`None`).
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let got = wait_timeout(child, limit);
        if got.is_none() {
            self.kill();
        }
        got
    }

    /// SIGTERM, then SIGKILL after `grace` if it is still running.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(c) = self.child.as_mut() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = wait_timeout(c, grace);
        }
        self.kill();
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            GUARDED.lock().unwrap().retain(|p| *p != c.id());
        }
    }

    /// Takes the child out of the guard (the caller waits for it).
    pub fn into_inner(mut self) -> Child {
        let c = self.child.take().expect("guarded child");
        GUARDED.lock().unwrap().retain(|p| *p != c.id());
        c
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits at most `limit` for `child`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `cmd` under `timeout SECS` with stdin from /dev/null: its output.
pub fn run_bounded(secs: u64, cmd: &[&str]) -> Result<Output> {
    Command::new("timeout")
        .arg(secs.to_string())
        .args(cmd)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(format!("run {cmd:?}: {e}")))
}

/// PIDs of guarded children (for [`crate::cleanup`]).
pub(crate) fn guarded() -> Vec<u32> {
    GUARDED.lock().map(|v| v.clone()).unwrap_or_default()
}

/// Adds a child that is guarded elsewhere (e.g. [`crate::Router`]) to the registry.
pub(crate) fn register(pid: u32) {
    GUARDED.lock().unwrap().push(pid);
}

pub(crate) fn unregister(pid: u32) {
    if let Ok(mut g) = GUARDED.lock() {
        g.retain(|p| *p != pid);
    }
}
