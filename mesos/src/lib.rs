//! Mesos harness for weave: agent flags and host checks for the `network/cni` isolator, and
//! clients for the Mesos v1 HTTP APIs (operator API now; scheduler API types are generated
//! for the scenario runner).
//!
//! - [`proto`]: Rust types generated from the hand-written `protos/` (Mesos 1.11.0 numbers).
//! - [`http`]: weave's HTTP client (`weave::http`: timeouts, basic auth, redirects, streamed
//!   bodies, netns sockets, TLS), re-exported.
//! - [`recordio`]: the `<len>\n<bytes>` framing of Mesos event streams.
//! - [`operator`]: the master operator API (`POST /api/v1`) in protobuf or JSON.
//! - [`flags`] and [`check`]: agent flags to enable weave on an agent, and a host check.
//! - [`scheduler`], [`driver`], [`execute`]: the v1 scheduler API, tasks on chosen agents,
//!   and a mesos-execute work-alike (plus a parser for the real one's output).
//! - [`dns_sync`]: `dns-sync`, weaveDNS names for running tasks from the SUBSCRIBE stream.
//! - [`scenario`] with [`mesos_cluster`] and [`local_cluster`]: the nc reachability matrix on
//!   a real cluster or on simulated agents in network namespaces.

pub mod check;
pub mod client;
pub mod dns_sync;
pub mod driver;
pub mod execute;
pub mod flags;
pub mod local_cluster;
pub mod mesos_cluster;
pub mod operator;
pub mod proto;
pub mod recordio;
pub mod scenario;
pub mod scheduler;

pub use weave::http;
pub use weave::{Context, Error, ErrorKind, Result};
