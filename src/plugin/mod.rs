//! The `weave-net` and `weave-ipam` CNI plugins. Each binary is a thin `main` over
//! [`crate::cni::dispatch`] with [`WeaveNet`] or [`WeaveIpam`].
//!
//! - [`net`]: `weave-net`; its ADD is a short sequence of steps, each registering its undo in
//!   an [`undo::Undo`] guard (dropped uncommitted, it takes back what the call did).
//! - [`addressing`]: where addresses come from, decided once per call: the router's IPAM or a
//!   delegated IPAM plugin ([`delegate`]).
//! - [`attach`]: the veth pair, addresses and routes (through [`crate::netlink`]).
//! - [`portmap`]: Mesos port mappings as DNAT rules; [`ipam`]: `weave-ipam`.
//!
//! The router is reached through the blocking [`crate::api::Client`]; the kernel through
//! [`crate::netlink`] on one current-thread tokio runtime per invocation (setns is per
//! thread, so a multi-threaded runtime would be wrong here).

pub mod addressing;
pub mod attach;
pub mod delegate;
pub mod ipam;
pub mod net;
pub mod portmap;
pub mod retire;
pub mod undo;

pub use attach::{attach, detach, host_veth_name, AttachRequest, Attached, LinkRequest, Sides};
pub use ipam::WeaveIpam;
pub use net::WeaveNet;
pub use retire::{retire, Retired};

use crate::{Context, Error, ErrorKind, Result};

/// The single-threaded runtime the netlink connections run on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("start runtime")
}

/// The IPAM owner ID of an interface: the container ID for `eth0` (as Weave and every
/// single-interface runtime use, so `weave ps` and existing tooling find it), and
/// `<container ID>:<ifname>` for further interfaces, so each gets its own address and a DEL
/// of one interface does not free the others'.
pub fn ipam_id(container_id: &str, ifname: &str) -> String {
    if ifname == "eth0" {
        container_id.to_string()
    } else {
        format!("{container_id}:{ifname}")
    }
}

/// Logs go to stderr only (stdout carries the CNI result). `WEAVE_DEBUG=1` for debug level.
pub fn init_logging() {
    let debug = std::env::var("WEAVE_DEBUG").is_ok_and(|v| !v.is_empty() && v != "0");
    let level = if debug {
        tracing::Level::DEBUG
    } else {
        tracing::Level::WARN
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(false)
        .try_init();
}

/// `CNI_NETNS` is required for this command.
pub(crate) fn require_netns(args: &crate::cni::CmdArgs) -> Result<&std::path::Path> {
    args.netns
        .as_deref()
        .ok_or_else(|| Error::new(ErrorKind::Env, "CNI_NETNS is required"))
}
