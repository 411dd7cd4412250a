//! The one kit for everything that builds simulated hosts: weave's integration tests and
//! benches, the harness' tests and its local cluster (`weave-mesos scenario` without
//! `--master`), and the demo.
//!
//! - [`ns`]: named network namespaces (`ip netns`), deleted with their processes on drop;
//!   every one this process made is also in a registry that [`cleanup`] empties on a panic
//!   hook or on SIGINT/SIGTERM.
//! - [`process`]: child processes killed on drop, bounded waits, bounded command runs.
//! - [`router`]: the real `weaver` in a host namespace, with a readiness wait.
//! - [`plugin`]: CNI plugin calls with the CNI environment, as a runtime on a host makes them.
//! - [`cluster`]: N simulated hosts on one underlay bridge, routers on them, containers
//!   attached by the real plugin, link cuts, and the `nc` reachability [`nc::Matrix`].
//! - [`bins`]: where the built binaries are.
//! - [`canned_http`]: a scripted HTTP server on loopback for client tests.
//!
//! It depends on no `weave` crate: it drives the binaries and uses iproute2, so the
//! crates it tests can dev-depend on it without a cycle. Everything it creates is named
//! with a prefix (`wvt-` in tests, `wvb-` in benches, `wvdemo-` in the demo) so that a
//! sweep ([`ns::sweep`]) can clear what an interrupted run left.

pub mod bins;
pub mod canned_http;
pub mod cleanup;
pub mod cluster;
pub mod nc;
pub mod ns;
pub mod plugin;
pub mod process;
pub mod router;

pub use cluster::{Cluster, ClusterSpec, Container, Host};
pub use nc::Matrix;
pub use ns::{in_ns, require_root, run_ok, Netns};
pub use plugin::{cni_env, run_plugin, PluginRun};
pub use process::Guard;
pub use router::Router;

/// The kit's error: what failed, with the command's output where there is one. Builders
/// used by product code (the harness' local cluster, the demo) return it; test-style
/// helpers panic with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl Error {
    pub fn new(msg: impl Into<String>) -> Error {
        Error(msg.into())
    }

    /// `what: self`.
    pub fn context(self, what: impl std::fmt::Display) -> Error {
        Error(format!("{what}: {}", self.0))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
