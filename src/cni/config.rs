//! Network configuration as runtimes send it on stdin (a single config or one conflist member).

use super::json::{self, Reader, CONFIG};
use super::version::CniVersion;
use crate::{Error, ErrorKind, Result};
use ipnet::{IpNet, Ipv4Net};
use serde_json::{Map, Value};
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
    pub cni_version: Option<CniVersion>,
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

/// Where Mesos puts its per-network data inside `args`.
pub const MESOS_ARGS_KEY: &str = "org.apache.mesos";

/// Smallest MTU an IPv4 interface may have (RFC 791).
const MIN_MTU: u64 = 68;
/// Largest MTU a veth accepts.
const MAX_MTU: u64 = 65535;
/// Longest prefix we accept for `ipam.subnet`: /30 has the router's minimum of 4 addresses.
const MAX_SUBNET_PREFIX: u8 = 30;

/// What to do with IPv6 entries: a config asking for IPv6 is refused, while IPv6 entries in a
/// result another plugin produced are skipped (we only act on IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ipv6 {
    Reject,
    Skip,
}

fn ipv6_unsupported(r: Reader, path: &str, value: &str) -> Error {
    r.err(format!("\"{path}\" is {value:?}: IPv6 is not supported"))
}

/// Parses `{"dst", "gw"?}`. `None` for a skipped IPv6 route. Host bits in `dst` are cleared,
/// as Go's ParseCIDR does.
pub(crate) fn parse_route(r: Reader, v: &Value, path: &str, v6: Ipv6) -> Result<Option<Route>> {
    let obj = r.object(v, path)?;
    let dst_str = r.req_str(obj, "dst", path)?;
    let dst = match dst_str.parse::<IpNet>() {
        Ok(IpNet::V4(net)) => net.trunc(),
        Ok(IpNet::V6(_)) if v6 == Ipv6::Skip => return Ok(None),
        Ok(IpNet::V6(_)) => return Err(ipv6_unsupported(r, &json::join(path, "dst"), dst_str)),
        Err(_) => {
            return Err(r.err(format!(
                "\"{}\" is not a CIDR: {dst_str:?}",
                json::join(path, "dst")
            )))
        }
    };
    let gw = match r.opt_str(obj, "gw", path)? {
        None | Some("") => None,
        Some(s) => match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => Some(IpAddr::V4(a)),
            Ok(IpAddr::V6(_)) if v6 == Ipv6::Skip => return Ok(None),
            Ok(IpAddr::V6(_)) => return Err(ipv6_unsupported(r, &json::join(path, "gw"), s)),
            Err(_) => {
                return Err(r.err(format!(
                    "\"{}\" is not an IP address: {s:?}",
                    json::join(path, "gw")
                )))
            }
        },
    };
    Ok(Some(Route { dst, gw }))
}

/// Parses a `dns` object; absent keys are empty.
pub(crate) fn parse_dns(r: Reader, obj: &Map<String, Value>, path: &str) -> Result<Dns> {
    Ok(Dns {
        nameservers: r.str_list(obj, "nameservers", path)?,
        domain: r
            .opt_str(obj, "domain", path)?
            .filter(|d| !d.is_empty())
            .map(str::to_string),
        search: r.str_list(obj, "search", path)?,
        options: r.str_list(obj, "options", path)?,
    })
}

fn parse_subnet(s: &str) -> Result<Ipv4Net> {
    let path = "ipam.subnet";
    let net = match s.parse::<IpNet>() {
        Ok(IpNet::V4(net)) => net,
        Ok(IpNet::V6(_)) => return Err(ipv6_unsupported(CONFIG, path, s)),
        Err(_) => return Err(CONFIG.err(format!("\"{path}\" is not a CIDR: {s:?}"))),
    };
    if net.trunc() != net {
        return Err(CONFIG.err(format!(
            "\"{path}\" {s:?} has host bits set after the prefix; did you mean \"{}\"?",
            net.trunc()
        )));
    }
    if net.prefix_len() > MAX_SUBNET_PREFIX {
        return Err(CONFIG.err(format!(
            "\"{path}\" {s:?} is smaller than the minimum of 4 addresses (/{MAX_SUBNET_PREFIX})"
        )));
    }
    Ok(net)
}

fn parse_ipam(obj: &Map<String, Value>) -> Result<IpamConf> {
    let path = "ipam";
    let gateway = match CONFIG.opt_str(obj, "gateway", path)? {
        None | Some("") => None,
        Some(s) => match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => Some(a),
            Ok(IpAddr::V6(_)) => return Err(ipv6_unsupported(CONFIG, "ipam.gateway", s)),
            Err(_) => {
                return Err(CONFIG.err(format!("\"ipam.gateway\" is not an IP address: {s:?}")))
            }
        },
    };
    let routes = match CONFIG.opt_array(obj, "routes", path)? {
        None => None,
        Some(items) => Some(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    parse_route(CONFIG, v, &format!("ipam.routes[{i}]"), Ipv6::Reject).transpose()
                })
                .collect::<Result<Vec<_>>>()?,
        ),
    };
    Ok(IpamConf {
        ipam_type: CONFIG
            .opt_str(obj, "type", path)?
            .unwrap_or_default()
            .to_string(),
        subnet: CONFIG
            .opt_str(obj, "subnet", path)?
            .filter(|s| !s.is_empty())
            .map(parse_subnet)
            .transpose()?,
        gateway,
        routes,
    })
}

fn port(r: Reader, obj: &Map<String, Value>, keys: &[&str], path: &str) -> Result<u16> {
    let key = keys
        .iter()
        .copied()
        .find(|k| r.get(obj, k).is_some())
        .unwrap_or(keys[0]);
    match r.opt_u64(obj, key, path)? {
        Some(p @ 1..=65535) => Ok(p as u16),
        Some(p) => Err(r.err(format!(
            "\"{}\" is {p}, not a port (1-65535)",
            json::join(path, key)
        ))),
        None => Err(r.err(format!("\"{}\" is required", json::join(path, key)))),
    }
}

fn protocol(r: Reader, obj: &Map<String, Value>, keys: &[&str], path: &str) -> Result<String> {
    let key = keys
        .iter()
        .copied()
        .find(|k| r.get(obj, k).is_some())
        .unwrap_or(keys[0]);
    let proto = r
        .opt_str(obj, key, path)?
        .unwrap_or("")
        .to_ascii_lowercase();
    match proto.as_str() {
        "" => Ok("tcp".to_string()),
        "tcp" | "udp" => Ok(proto),
        other => Err(r.err(format!(
            "\"{}\" is {other:?}: only tcp and udp port mappings are supported",
            json::join(path, key)
        ))),
    }
}

/// One `runtimeConfig.portMappings` entry; containerd spells the keys with capitals.
fn parse_runtime_port_mapping(v: &Value, path: &str) -> Result<PortMapping> {
    let obj = CONFIG.object(v, path)?;
    let host_ip_key = if CONFIG.get(obj, "hostIP").is_some() {
        "hostIP"
    } else {
        "HostIP"
    };
    let host_ip = match CONFIG.opt_str(obj, host_ip_key, path)? {
        None | Some("") => None,
        Some(s) => {
            s.parse::<IpAddr>().map_err(|_| {
                CONFIG.err(format!(
                    "\"{}\" is not an IP address: {s:?}",
                    json::join(path, host_ip_key)
                ))
            })?;
            Some(s.to_string())
        }
    };
    Ok(PortMapping {
        host_port: port(CONFIG, obj, &["hostPort", "HostPort"], path)?,
        container_port: port(CONFIG, obj, &["containerPort", "ContainerPort"], path)?,
        protocol: protocol(CONFIG, obj, &["protocol", "Protocol"], path)?,
        host_ip,
    })
}

/// `network_info` as Mesos serialises its NetworkInfo proto (proto field names).
fn parse_mesos(info: &Map<String, Value>) -> Result<MesosNetworkInfo> {
    let path = format!("args.\"{MESOS_ARGS_KEY}\".network_info");
    let r = CONFIG;
    let mut labels = Vec::new();
    if let Some(l) = r.opt_object(info, "labels", &path)? {
        let lpath = json::join(&path, "labels");
        for (i, v) in r
            .opt_array(l, "labels", &lpath)?
            .into_iter()
            .flatten()
            .enumerate()
        {
            let ipath = format!("{lpath}.labels[{i}]");
            let label = r.object(v, &ipath)?;
            let key = r.req_str(label, "key", &ipath)?.to_string();
            let value = r
                .opt_str(label, "value", &ipath)?
                .unwrap_or_default()
                .to_string();
            labels.push((key, value));
        }
    }
    let mut port_mappings = Vec::new();
    for (i, v) in r
        .opt_array(info, "port_mappings", &path)?
        .into_iter()
        .flatten()
        .enumerate()
    {
        let ppath = format!("{path}.port_mappings[{i}]");
        let obj = r.object(v, &ppath)?;
        port_mappings.push(PortMapping {
            host_port: port(r, obj, &["host_port"], &ppath)?,
            container_port: port(r, obj, &["container_port"], &ppath)?,
            protocol: protocol(r, obj, &["protocol"], &ppath)?,
            host_ip: None,
        });
    }
    Ok(MesosNetworkInfo {
        name: r.opt_str(info, "name", &path)?.map(str::to_string),
        labels,
        port_mappings,
    })
}

impl NetConf {
    /// The config DEL falls back to when stdin cannot be used: weave's defaults, so that the
    /// plugin can still clean up by container ID and interface name (bridge `weave`,
    /// built-in IPAM).
    pub fn fallback_for_del() -> NetConf {
        NetConf {
            cni_version: None,
            name: String::new(),
            plugin_type: String::new(),
            bridge: crate::BRIDGE_NAME.to_string(),
            mtu: 0,
            hairpin_mode: true,
            is_gateway: false,
            ip_masq: false,
            ipam: IpamConf::default(),
            dns: Dns::default(),
            port_mappings: Vec::new(),
            mesos: None,
            prev_result: None,
            raw: serde_json::Value::Object(Default::default()),
        }
    }

    /// Parses stdin. Bad JSON is `Decode`; wrong field types or values are `InvalidConfig`;
    /// an unsupported `cniVersion` is `IncompatibleVersion`.
    pub fn parse(bytes: &[u8]) -> Result<NetConf> {
        let decode =
            |msg: String| Error::new(ErrorKind::Decode, format!("decode network config: {msg}"));
        let raw: Value = serde_json::from_slice(bytes).map_err(|e| decode(e.to_string()))?;
        let top = raw.as_object().ok_or_else(|| {
            decode(format!(
                "expected a JSON object, got {}",
                json::type_name(&raw)
            ))
        })?;
        let r = CONFIG;

        // The version first: a config from a newer spec may use shapes we would misreport.
        let cni_version = r
            .opt_str(top, "cniVersion", "")?
            .filter(|v| !v.is_empty())
            .map(str::parse::<CniVersion>)
            .transpose()?;

        let bridge = match r.opt_str(top, "bridge", "")? {
            None | Some("") => crate::BRIDGE_NAME.to_string(),
            Some(b) => {
                super::env::validate_ifname(b).map_err(|why| {
                    r.err(format!("\"bridge\" {b:?} is not an interface name: {why}"))
                })?;
                b.to_string()
            }
        };
        let mtu = match r.opt_u64(top, "mtu", "")?.unwrap_or(0) {
            0 => 0,
            m @ MIN_MTU..=MAX_MTU => m as u32,
            m => {
                return Err(r.err(format!(
                    "\"mtu\" is {m}, outside {MIN_MTU}-{MAX_MTU} (0 uses the bridge's)"
                )))
            }
        };

        let ipam = match r.opt_object(top, "ipam", "")? {
            Some(obj) => parse_ipam(obj)?,
            None => IpamConf::default(),
        };
        let dns = match r.opt_object(top, "dns", "")? {
            Some(obj) => parse_dns(r, obj, "dns")?,
            None => Dns::default(),
        };

        let mut port_mappings = Vec::new();
        if let Some(rc) = r.opt_object(top, "runtimeConfig", "")? {
            let items = r.opt_array(rc, "portMappings", "runtimeConfig")?;
            for (i, v) in items.into_iter().flatten().enumerate() {
                port_mappings.push(parse_runtime_port_mapping(
                    v,
                    &format!("runtimeConfig.portMappings[{i}]"),
                )?);
            }
        }

        let mut mesos = None;
        if let Some(args) = r.opt_object(top, "args", "")? {
            if let Some(m) = r.opt_object(args, MESOS_ARGS_KEY, "args")? {
                let path = format!("args.\"{MESOS_ARGS_KEY}\"");
                if let Some(info) = r.opt_object(m, "network_info", &path)? {
                    mesos = Some(parse_mesos(info)?);
                }
            }
        }

        let prev_result = match r.get(top, "prevResult") {
            None => None,
            Some(v) => Some(Value::Object(r.object(v, "prevResult")?.clone())),
        };

        Ok(NetConf {
            cni_version,
            name: r.req_str(top, "name", "")?.to_string(),
            plugin_type: r.req_str(top, "type", "")?.to_string(),
            bridge,
            mtu,
            hairpin_mode: r.opt_bool(top, "hairpinMode", "")?.unwrap_or(true),
            is_gateway: r.opt_bool(top, "isGateway", "")?.unwrap_or(false),
            ip_masq: r.opt_bool(top, "ipMasq", "")?.unwrap_or(false),
            ipam,
            dns,
            port_mappings,
            mesos,
            prev_result,
            raw,
        })
    }

    /// The version results are encoded in: the config's, or `0.2.0` when absent (the shape a
    /// version-less config, as Mesos sends, has always received).
    pub fn result_version(&self) -> CniVersion {
        self.cni_version.unwrap_or(CniVersion::UNVERSIONED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetConf> {
        NetConf::parse(s.as_bytes())
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(r#"{"name":"weave","type":"weave-net"}"#).unwrap();
        assert_eq!(c.cni_version, None);
        assert_eq!(c.result_version(), "0.2.0");
        assert_eq!(c.bridge, "weave");
        assert_eq!(c.mtu, 0);
        assert!(c.hairpin_mode);
        assert!(!c.is_gateway && !c.ip_masq);
        assert_eq!(c.ipam, IpamConf::default());
        assert_eq!(c.mesos, None);
        assert_eq!(c.prev_result, None);
    }

    #[test]
    fn decode_and_type_errors_have_their_kinds() {
        let e = parse("{nope").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Decode);
        assert!(e.message().starts_with("decode network config: "), "{e}");
        assert_eq!(parse("[]").unwrap_err().kind(), ErrorKind::Decode);
        let e = parse(r#"{"name":"w","type":"weave-net","mtu":"1500"}"#).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert_eq!(
            e.message(),
            "invalid network config: \"mtu\" must be a non-negative integer, got a string"
        );
        let e = parse(r#"{"type":"weave-net"}"#).unwrap_err();
        assert_eq!(e.message(), "invalid network config: \"name\" is required");
    }

    #[test]
    fn subnet_rules() {
        let conf = |s: &str| {
            parse(&format!(
                r#"{{"name":"w","type":"weave-net","ipam":{{"subnet":"{s}"}}}}"#
            ))
        };
        assert_eq!(
            conf("10.32.0.0/12").unwrap().ipam.subnet,
            Some("10.32.0.0/12".parse().unwrap())
        );
        assert_eq!(
            conf("10.0.0.0/30")
                .unwrap()
                .ipam
                .subnet
                .unwrap()
                .prefix_len(),
            30
        );
        let e = conf("10.32.0.1/12").unwrap_err();
        assert!(
            e.message().contains("host bits") && e.message().contains("10.32.0.0/12"),
            "{e}"
        );
        let e = conf("10.0.0.0/31").unwrap_err();
        assert!(e.message().contains("minimum of 4 addresses"), "{e}");
        let e = conf("fd00::/64").unwrap_err();
        assert!(e.message().ends_with("IPv6 is not supported"), "{e}");
        assert!(conf("banana").unwrap_err().message().contains("not a CIDR"));
    }

    #[test]
    fn routes_absent_empty_and_given() {
        let base = r#"{"name":"w","type":"weave-net","ipam":"#;
        assert_eq!(parse(&format!("{base}{{}}}}")).unwrap().ipam.routes, None);
        assert_eq!(
            parse(&format!(r#"{base}{{"routes":[]}}}}"#))
                .unwrap()
                .ipam
                .routes,
            Some(vec![])
        );
        let c = parse(&format!(
            r#"{base}{{"routes":[{{"dst":"0.0.0.0/0"}},{{"dst":"10.1.2.3/8","gw":"10.0.0.1"}}]}}}}"#
        ))
        .unwrap();
        let routes = c.ipam.routes.unwrap();
        assert_eq!(
            routes[0],
            Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: None
            }
        );
        assert_eq!(routes[1].dst, "10.0.0.0/8".parse::<Ipv4Net>().unwrap());
        assert_eq!(routes[1].gw, Some("10.0.0.1".parse().unwrap()));
        let e = parse(&format!(r#"{base}{{"routes":[{{"dst":"::/0"}}]}}}}"#)).unwrap_err();
        assert_eq!(
            e.message(),
            "invalid network config: \"ipam.routes[0].dst\" is \"::/0\": IPv6 is not supported"
        );
    }

    #[test]
    fn port_mappings_both_spellings() {
        let c = parse(
            r#"{"name":"w","type":"weave-net","runtimeConfig":{"portMappings":[
                {"hostPort":8080,"containerPort":80,"protocol":"TCP"},
                {"HostPort":53,"ContainerPort":5353,"Protocol":"udp","HostIP":"127.0.0.1"}]}}"#,
        )
        .unwrap();
        assert_eq!(
            c.port_mappings,
            [
                PortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_ip: None
                },
                PortMapping {
                    host_port: 53,
                    container_port: 5353,
                    protocol: "udp".into(),
                    host_ip: Some("127.0.0.1".into())
                },
            ]
        );
        let e = parse(r#"{"name":"w","type":"weave-net","runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":1}]}}"#)
            .unwrap_err();
        assert!(e.message().contains("not a port"), "{e}");
    }

    #[test]
    fn mesos_network_info() {
        let c = parse(
            r#"{"args":{"org.apache.mesos":{"network_info":{"labels":{"labels":[{"key":"app","value":"web"},{"key":"solo"}]},"name":"mynet","port_mappings":[{"container_port":80,"host_port":31000}]}}},"name":"mynet","type":"weave-net"}"#,
        )
        .unwrap();
        let m = c.mesos.unwrap();
        assert_eq!(m.name.as_deref(), Some("mynet"));
        assert_eq!(
            m.labels,
            [("app".into(), "web".into()), ("solo".into(), "".into())]
        );
        assert_eq!(m.port_mappings[0].protocol, "tcp");
        assert_eq!(m.port_mappings[0].host_port, 31000);
        let e = parse(r#"{"args":{"org.apache.mesos":{"network_info":{"labels":[]}}},"name":"n","type":"weave-net"}"#)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert!(e.message().contains("network_info.labels"), "{e}");
    }

    #[test]
    fn bad_versions() {
        let e = parse(r#"{"cniVersion":"9.9.9","name":"w","type":"weave-net"}"#).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::IncompatibleVersion);
        let e = parse(r#"{"cniVersion":1,"name":"w","type":"weave-net"}"#).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    }
}
