//! The router's HTTP API: Weave-compatible paths and text formats, a server over the
//! router's state, and a typed blocking client with timeouts for the plugins and the CLI.

pub mod client;
mod names;
pub mod request;
pub mod server;
pub mod wire;

pub use client::Client;
pub use wire::Attachment;
