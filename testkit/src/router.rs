//! The real `weaver` running inside a host namespace with its own data dir, killed on drop.
//! Ready when `GET /status` on its HTTP address answers 200, probed from inside the host.

use crate::ns::{in_ns, Netns};
use crate::process;
use crate::{Error, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The router's default API address inside its namespace.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:6784";
/// How long a router may take to answer after it starts.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A `weaver` in a host namespace.
#[derive(Debug)]
pub struct Router {
    pub child: Option<Child>,
    pub datadir: PathBuf,
    /// The host namespace's name.
    pub host: String,
    pub http_addr: String,
    /// Flags after `--datadir`/`--http-addr` (and `--status-addr ""` when `quiet_status`).
    pub extra: Vec<String>,
    /// Extra environment for the `weaver` process.
    pub env: Vec<(String, String)>,
    /// The `weaver` binary.
    pub weaver: PathBuf,
    /// File name of its log (stdout and stderr) in the data dir.
    pub log_name: String,
    /// Passes `--status-addr ""` (no status listener), as the tests always did.
    pub quiet_status: bool,
    _tmp: Option<tempfile::TempDir>,
}

impl Router {
    /// Not started yet: `weaver` from [`crate::bins`] in `host` with data in `datadir`
    /// (a new temporary directory when `None`, removed on drop).
    pub fn new(host: &str, datadir: Option<&Path>, extra: &[&str]) -> Result<Router> {
        let (tmp, datadir) = match datadir {
            Some(d) => (None, d.to_path_buf()),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("wvt-data-")
                    .tempdir()
                    .map_err(|e| Error::new(format!("create router data dir: {e}")))?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        Ok(Router {
            child: None,
            datadir,
            host: host.to_string(),
            http_addr: DEFAULT_HTTP_ADDR.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            weaver: crate::bins::bin("weaver"),
            log_name: "test-weaver.log".to_string(),
            quiet_status: true,
            _tmp: tmp,
        })
    }

    /// Started in `host` with `extra` flags, ready; panics on failure.
    pub fn start(host: &Netns, extra: &[&str]) -> Router {
        Router::start_with_env(host, extra, &[])
    }

    /// Like [`Router::start`], with extra environment variables for `weaver`.
    pub fn start_with_env(host: &Netns, extra: &[&str], env: &[(&str, &str)]) -> Router {
        let mut r = Router::new(&host.name, None, extra).unwrap_or_else(|e| panic!("{e}"));
        r.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        r.spawn();
        r
    }

    /// Like [`Router::start`] with a data dir the caller made (e.g. a small tmpfs) and keeps.
    pub fn start_in(host: &Netns, datadir: &Path, extra: &[&str]) -> Router {
        let mut r = Router::new(&host.name, Some(datadir), extra).unwrap_or_else(|e| panic!("{e}"));
        r.spawn();
        r
    }

    /// Starts (again) with the same data dir and flags, and waits until it is ready;
    /// panics with its log otherwise.
    pub fn spawn(&mut self) {
        self.try_spawn().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts (again) with the same data dir and flags and waits until it is ready.
    pub fn try_spawn(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.datadir)
            .map_err(|e| Error::new(format!("create {}: {e}", self.datadir.display())))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| Error::new(format!("open router log: {e}")))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::new(format!("open router log: {e}")))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host])
            .arg(&self.weaver)
            .arg("--datadir")
            .arg(&self.datadir)
            .args(["--http-addr", &self.http_addr]);
        if self.quiet_status {
            cmd.args(["--status-addr", ""]);
        }
        cmd.args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log2)
            .stderr(log);
        let child = cmd
            .spawn()
            .map_err(|e| Error::new(format!("start {}: {e}", self.weaver.display())))?;
        process::register(child.id());
        self.child = Some(child);
        self.wait_ready(READY_TIMEOUT)
    }

    /// Waits until `GET /status` answers 200 (or the process exits, or `limit` passes).
    pub fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(Error::new(format!(
                    "weaver exited early ({status}); log:\n{}",
                    self.log()
                )));
            }
            if status_code(&self.host, &self.http_addr, "/status") == Some(200) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::new(format!(
                    "weaver not ready in {limit:?}; log:\n{}",
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.datadir.join(&self.log_name)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            process::unregister(c.id());
        }
    }

    /// SIGTERM (the router says goodbye and removes its pid file), SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(c) = self.child.as_mut() {
            // `ip netns exec` execs weaver, so this PID is the router itself.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = process::wait_timeout(c, grace);
        }
        self.kill9();
    }

    /// The running process, for a caller that waits on it itself (the router no longer
    /// kills it on drop; its namespace's guard still does).
    pub fn into_child(mut self) -> Option<Child> {
        let c = self.child.take()?;
        process::unregister(c.id());
        Some(c)
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The status code of `GET path` on `addr` from inside namespace `host`, `None` when
/// nothing answers within a second. A readiness probe only (status line, no body): the
/// kit drives the router as a black box, and weave's HTTP client lives in the crate the
/// kit must not depend on.
pub fn status_code(host: &str, addr: &str, path: &str) -> Option<u16> {
    let addr: SocketAddr = addr.parse().ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    in_ns(host, move || {
        let limit = Duration::from_secs(1);
        let mut s = TcpStream::connect_timeout(&addr, limit).ok()?;
        s.set_read_timeout(Some(limit)).ok()?;
        s.set_write_timeout(Some(limit)).ok()?;
        s.write_all(request.as_bytes()).ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).ok()?;
        // "HTTP/1.1 200"
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    })
}
