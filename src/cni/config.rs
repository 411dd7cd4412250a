//! Network configuration as runtimes send it on stdin (a single config or one conflist member).

use crate::Result;
use ipnet::Ipv4Net;
use std::net::{IpAddr, Ipv4Addr};

/// A route from config or result: `{"dst": "...", "gw": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Net,
    pub gw: Option<IpAddr>,
}

/// DNS settings, copied into the result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: Option<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

/// The `ipam` section. With an empty `ipam_type`, weave's built-in IPAM (the router) is used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpamConf {
    pub ipam_type: String,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    /// `None` when the key is absent (default route added); `Some(vec![])` means no routes.
    pub routes: Option<Vec<Route>>,
}

/// A port mapping from `runtimeConfig.portMappings` or Mesos' `network_info.port_mappings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`, lower case.
    pub protocol: String,
    pub host_ip: Option<String>,
}

/// What Mesos puts in `args["org.apache.mesos"].network_info`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MesosNetworkInfo {
    pub name: Option<String>,
    pub labels: Vec<(String, String)>,
    pub port_mappings: Vec<PortMapping>,
}

/// A parsed network configuration. Unknown keys are ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// `None` when absent: treated as 0.1.0 (0.2.0 result shape).
    pub cni_version: Option<String>,
    pub name: String,
    pub plugin_type: String,
    /// Bridge to attach to; default `weave`.
    pub bridge: String,
    /// 0 means "use the bridge's MTU".
    pub mtu: u32,
    /// Default true.
    pub hairpin_mode: bool,
    pub is_gateway: bool,
    pub ip_masq: bool,
    pub ipam: IpamConf,
    pub dns: Dns,
    /// `runtimeConfig.portMappings` (keys such as `HostPort` accepted too).
    pub port_mappings: Vec<PortMapping>,
    pub mesos: Option<MesosNetworkInfo>,
    /// `prevResult` when chained, verbatim.
    pub prev_result: Option<serde_json::Value>,
    /// The whole input, for plugins that pass it on (e.g. delegated IPAM).
    pub raw: serde_json::Value,
}

impl NetConf {
    /// Parses stdin. Bad JSON is `Decode`; wrong field types or values are `InvalidConfig`;
    /// an unsupported `cniVersion` is `IncompatibleVersion`.
    pub fn parse(bytes: &[u8]) -> Result<NetConf> {
        let _ = bytes;
        todo!("cni: NetConf::parse")
    }

    /// The version results are encoded in (`0.1.0` when absent).
    pub fn result_version(&self) -> &str {
        self.cni_version.as_deref().unwrap_or("0.1.0")
    }
}
