//! Network namespace handles. This module and [`crate::netlink`] are the only code that calls
//! `setns`; it does so on the calling thread only, and always switches back.
//! Never call [`NetNs::run`] from a multi-threaded tokio worker: use a current-thread runtime
//! or a dedicated std thread.

use crate::{Context, Error, ErrorKind, Result};
use nix::sched::{setns, CloneFlags};
use nix::sys::stat::fstat;
use nix::sys::statfs::{fstatfs, NSFS_MAGIC};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// `NS_GET_NSTYPE` ioctl (linux/nsfs.h): tells a network namespace from other nsfs files.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

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
        let path = path.as_ref();
        let what = || format!("open netns {:?}", path.display().to_string());
        let file = File::open(path)
            .map_err(|e| Error::from(e).with_kind(ErrorKind::NetNs))
            .with_context(what)?;
        let not_netns = || Error::new(ErrorKind::NetNs, "not a network namespace").context(what());
        let fs = fstatfs(&file)
            .map_err(|e| Error::kernel(e as i32, e.desc()).with_kind(ErrorKind::NetNs))
            .with_context(what)?;
        if fs.filesystem_type() != NSFS_MAGIC {
            return Err(not_netns());
        }
        // SAFETY: NS_GET_NSTYPE takes no argument and only inspects the descriptor.
        let nstype = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
        // Kernels before 4.11 lack the ioctl (ENOTTY); nsfs alone has to do there.
        if nstype >= 0 && nstype != libc::CLONE_NEWNET {
            return Err(not_netns());
        }
        Ok(NetNs {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The calling thread's current network namespace.
    pub fn current() -> Result<NetNs> {
        // thread-self, not self: setns is per thread.
        NetNs::open("/proc/thread-self/ns/net")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// True if both handles refer to the same namespace (same device and inode).
    pub fn same_as(&self, other: &NetNs) -> Result<bool> {
        let id = |ns: &NetNs| {
            fstat(&ns.file)
                .map(|st| (st.st_dev, st.st_ino))
                .map_err(|e| Error::kernel(e as i32, e.desc()))
                .with_context(|| format!("stat netns {:?}", ns.path.display().to_string()))
        };
        Ok(id(self)? == id(other)?)
    }

    /// Runs `f` with the calling thread inside this namespace, then switches back.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        let home = NetNs::current()?;
        enter(&self.file)
            .with_context(|| format!("enter netns {:?}", self.path.display().to_string()))?;
        let _back = ReturnGuard(home);
        Ok(f())
    }

    /// Writes a `net.*` sysctl (`key` relative to `/proc/sys`, e.g. `net/ipv6/conf/eth0/accept_ra`)
    /// inside this namespace. `Ok(false)` if the key does not exist (e.g. IPv6 disabled).
    pub fn write_sysctl(&self, key: &str, value: &str) -> Result<bool> {
        self.run(|| write_net_sysctl(key, value))?
    }
}

/// Writes a sysctl of the calling thread's current network namespace (net sysctls are
/// resolved against the opening thread's namespace). `Ok(false)` if the key does not exist.
pub fn write_net_sysctl(key: &str, value: &str) -> Result<bool> {
    let path = Path::new("/proc/sys").join(key);
    let what = || format!("write sysctl {key:?}");
    let mut file = match std::fs::OpenOptions::new().write(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::from(e).context(what())),
    };
    file.write_all(value.as_bytes()).with_context(what)?;
    Ok(true)
}

fn enter(file: &File) -> Result<()> {
    setns(file, CloneFlags::CLONE_NEWNET).map_err(|e| Error::kernel(e as i32, e.desc()))
}

/// Switches the thread back to its namespace, even when the closure panicked. A thread that
/// cannot get back would do all later work in the wrong namespace: abort instead.
struct ReturnGuard(NetNs);

impl Drop for ReturnGuard {
    fn drop(&mut self) {
        if let Err(e) = enter(&self.0.file) {
            eprintln!(
                "return to netns {:?}: {e}; aborting",
                self.0.path.display().to_string()
            );
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_file_is_not_a_netns() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = NetNs::open(f.path()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NetNs);
        assert!(e.message().ends_with("not a network namespace"), "{e}");
        assert!(e.message().starts_with("open netns \""), "{e}");
    }

    #[test]
    fn missing_path_is_netns_error_with_cause() {
        let e = NetNs::open("/nonexistent/wvt-ns").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NetNs);
        assert_eq!(e.errno(), Some(libc::ENOENT));
        assert!(
            e.message()
                .starts_with("open netns \"/nonexistent/wvt-ns\": No such file"),
            "{e}"
        );
    }

    #[test]
    fn other_namespace_kind_is_rejected() {
        let e = NetNs::open("/proc/self/ns/mnt").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NetNs);
        assert!(e.message().ends_with("not a network namespace"), "{e}");
    }

    #[test]
    fn current_is_same_as_own_process() {
        let a = NetNs::current().unwrap();
        let b = NetNs::open("/proc/self/ns/net").unwrap();
        assert!(a.same_as(&b).unwrap());
        assert_eq!(a.run(|| 7).unwrap(), 7);
    }
}
