//! The CNI contract: spec types, config parsing, env dispatch, result encoding per version,
//! and the error JSON. Pure: no kernel, no router.

pub mod config;
pub mod env;
pub mod error;
mod json;
pub mod result;
pub mod skel;
pub mod version;

pub use config::{Dns, IpamConf, MesosNetworkInfo, NetConf, PortMapping, Route};
pub use env::{CmdArgs, Command};
pub use error::{code_for, CniError};
pub use result::{AddResult, Interface, IpConfig};
pub use skel::{dispatch, CniPlugin, GcAttachment};
