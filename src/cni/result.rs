//! The ADD result, encoded in the shape of the config's version.

use super::config::{Dns, Route};
use crate::Result;
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Netns path for the container interface; `None` for the host veth.
    pub sandbox: Option<String>,
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    pub address: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

/// What ADD returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

impl AddResult {
    /// Encodes for `version`: 0.1.0/0.2.0 give `{cniVersion, ip4:{ip,gateway,routes}, dns}`;
    /// 0.3.0+ give `{cniVersion, interfaces, ips, routes, dns}` (0.3.x `ips[].version: "4"`).
    /// `cniVersion` is always present.
    pub fn encode(&self, version: &str) -> serde_json::Value {
        let _ = version;
        todo!("cni: AddResult::encode")
    }

    /// Parses a result of any version (e.g. `prevResult`, or a delegated IPAM plugin's output).
    pub fn parse(value: &serde_json::Value) -> Result<AddResult> {
        let _ = value;
        todo!("cni: AddResult::parse")
    }
}
