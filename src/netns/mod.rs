//! Network namespace handles. This module and [`crate::netlink`] are the only code that calls
//! `setns`; it does so on the calling thread only, and always switches back.
//! Never call [`NetNs::run`] from a multi-threaded tokio worker: use a current-thread runtime
//! or a dedicated std thread.

use crate::Result;
use std::fs::File;
use std::path::{Path, PathBuf};

/// An open network namespace (any nsfs path: `/proc/<pid>/ns/net`, `/var/run/netns/x`,
/// or Mesos' bind-mounted `<runtime_dir>/isolators/network/cni/<id>/ns`).
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens `path` and checks it is a network namespace. Failure has kind `NetNs`.
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs> {
        let _ = path;
        todo!("netns: open")
    }

    /// The calling thread's current network namespace.
    pub fn current() -> Result<NetNs> {
        todo!("netns: current")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// True if both handles refer to the same namespace (same device and inode).
    pub fn same_as(&self, other: &NetNs) -> Result<bool> {
        let _ = other;
        todo!("netns: same_as")
    }

    /// Runs `f` with the calling thread inside this namespace, then switches back.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        let _ = f;
        todo!("netns: run")
    }
}
