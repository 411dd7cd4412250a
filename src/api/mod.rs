//! The router's HTTP API: Weave-compatible paths and text formats, a server over a narrow
//! [`Backend`], and a typed blocking client with timeouts for the plugins and the CLI.
//!
//! - [`request`]: pure parsing and validation, `(method, path, query, body)` →
//!   [`request::ApiRequest`] or a rejection (fuzzed, unit-tested without a router).
//! - [`backend`]: what the server needs from the daemon ([`Backend`]); the router
//!   implements it, tests can run a whole router in-process behind it.
//! - [`server`]: hyper listeners; executes a parsed request against the backend and maps
//!   errors to statuses in one place.
//! - [`status`]: Weave's status texts, `/report` and `/metrics` from a [`status::View`].
//! - [`client`]: the typed blocking client (connect and total timeouts on every call).
//!
//! Adding a route: a variant of `ApiRequest` and its arm in `request::route` (pure, with a
//! unit test), an arm in `server::execute` that calls the subsystem, and, if the subsystem
//! is new, an accessor for its handle on [`Backend`] (as [`Backend::ipam`]); then a typed
//! method on [`Client`].

pub mod backend;
pub mod client;
mod names;
pub mod request;
pub mod server;
pub mod status;
pub mod status_datapath;

pub use crate::attachment::Attachment;
pub use backend::Backend;
pub use client::Client;

/// Answer header naming the DNS domain when the router's DNS server is on, sent with the
/// answers a CNI plugin gets for a container (allocation, attachment); see
/// [`Client::allocate_attached`].
pub const DNS_DOMAIN_HEADER: &str = "x-weave-dns-domain";
