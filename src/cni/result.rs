//! The ADD result, encoded in the shape of the config's version.
//!
//! Shapes (keys with no value are left out, `dns` is `{}` when empty):
//! - 0.1.0, 0.2.0: `{cniVersion, ip4: {ip, gateway, routes}, dns}`; Mesos reads only this.
//! - 0.3.0, 0.3.1, 0.4.0: `{cniVersion, interfaces, ips: [{version: "4", interface, address,
//!   gateway}], routes, dns}`.
//! - 1.0.0: as 0.4.0 without `ips[].version`; 1.1.0 adds `interfaces[].mtu`.

use super::config::{parse_dns, parse_route, Dns, Ipv6, Route};
use super::json::{self, RESULT};
use super::version::CniVersion;
use crate::Result;
use ipnet::{IpNet, Ipv4Net};
use serde_json::{json, Map, Value};
use std::net::{IpAddr, Ipv4Addr};

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

fn route_json(r: &Route) -> Value {
    let mut o = Map::new();
    o.insert("dst".into(), json!(r.dst.to_string()));
    if let Some(gw) = r.gw {
        o.insert("gw".into(), json!(gw.to_string()));
    }
    Value::Object(o)
}

fn dns_json(d: &Dns) -> Value {
    let mut o = Map::new();
    if !d.nameservers.is_empty() {
        o.insert("nameservers".into(), json!(d.nameservers));
    }
    if let Some(domain) = &d.domain {
        o.insert("domain".into(), json!(domain));
    }
    if !d.search.is_empty() {
        o.insert("search".into(), json!(d.search));
    }
    if !d.options.is_empty() {
        o.insert("options".into(), json!(d.options));
    }
    Value::Object(o)
}

impl AddResult {
    /// Encodes for `version`: 0.1.0/0.2.0 give `{cniVersion, ip4:{ip,gateway,routes}, dns}`;
    /// 0.3.0+ give `{cniVersion, interfaces, ips, routes, dns}` (0.3.x/0.4.0 `ips[].version: "4"`).
    /// `cniVersion` is always present.
    pub fn encode_for(&self, version: CniVersion) -> serde_json::Value {
        self.encode_shaped(version, version.as_str())
    }

    /// [`AddResult::encode_for`] the version spelled `version`; a spelling we do not know
    /// gets the current version's shape under its own label.
    pub fn encode(&self, version: &str) -> serde_json::Value {
        let shape = version.parse().unwrap_or(CniVersion::CURRENT);
        self.encode_shaped(shape, version)
    }

    fn encode_shaped(&self, version: CniVersion, label: &str) -> serde_json::Value {
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(label));
        out.insert("dns".into(), dns_json(&self.dns));
        if version.has_legacy_result() {
            if let Some(ip) = self.ips.first() {
                let mut ip4 = Map::new();
                ip4.insert("ip".into(), json!(ip.address.to_string()));
                if let Some(gw) = ip.gateway {
                    ip4.insert("gateway".into(), json!(gw.to_string()));
                }
                if !self.routes.is_empty() {
                    ip4.insert(
                        "routes".into(),
                        self.routes.iter().map(route_json).collect(),
                    );
                }
                out.insert("ip4".into(), Value::Object(ip4));
            }
            return Value::Object(out);
        }

        let with_ip_version = version.has_ip_version_field();
        let with_mtu = version.has_interface_mtu();
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut o = Map::new();
                o.insert("name".into(), json!(i.name));
                if !i.mac.is_empty() {
                    o.insert("mac".into(), json!(i.mac));
                }
                if let Some(sandbox) = &i.sandbox {
                    o.insert("sandbox".into(), json!(sandbox));
                }
                if let (true, Some(mtu)) = (with_mtu, i.mtu) {
                    o.insert("mtu".into(), json!(mtu));
                }
                Value::Object(o)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = Map::new();
                if with_ip_version {
                    o.insert("version".into(), json!("4"));
                }
                if let Some(index) = ip.interface {
                    o.insert("interface".into(), json!(index));
                }
                o.insert("address".into(), json!(ip.address.to_string()));
                if let Some(gw) = ip.gateway {
                    o.insert("gateway".into(), json!(gw.to_string()));
                }
                Value::Object(o)
            })
            .collect();
        out.insert("interfaces".into(), Value::Array(interfaces));
        out.insert("ips".into(), Value::Array(ips));
        out.insert(
            "routes".into(),
            self.routes.iter().map(route_json).collect(),
        );
        Value::Object(out)
    }

    /// Parses a result of any version (e.g. `prevResult`, or a delegated IPAM plugin's output).
    /// IPv6 addresses and routes are skipped: we act on IPv4 only. Errors are `Decode`.
    pub fn parse(value: &serde_json::Value) -> Result<AddResult> {
        let r = RESULT;
        let top = r.object(value, "result")?;
        let dns = match r.opt_object(top, "dns", "")? {
            Some(d) => parse_dns(r, d, "dns")?,
            None => Dns::default(),
        };
        let parse_routes = |obj: &Map<String, Value>, path: &str| -> Result<Vec<Route>> {
            let mut routes = Vec::new();
            for (i, v) in r
                .opt_array(obj, "routes", path)?
                .into_iter()
                .flatten()
                .enumerate()
            {
                let rpath = format!("{}[{i}]", json::join(path, "routes"));
                routes.extend(parse_route(r, v, &rpath, Ipv6::Skip)?);
            }
            Ok(routes)
        };
        let parse_gateway = |obj: &Map<String, Value>, path: &str| -> Result<Option<Ipv4Addr>> {
            match r.opt_str(obj, "gateway", path)? {
                None | Some("") => Ok(None),
                Some(s) => match s.parse::<IpAddr>() {
                    Ok(IpAddr::V4(a)) => Ok(Some(a)),
                    Ok(IpAddr::V6(_)) => Ok(None),
                    Err(_) => Err(r.err(format!(
                        "\"{}\" is not an IP address: {s:?}",
                        json::join(path, "gateway")
                    ))),
                },
            }
        };

        let legacy = r.get(top, "ips").is_none() && r.get(top, "interfaces").is_none();
        if legacy {
            let mut result = AddResult {
                dns,
                ..AddResult::default()
            };
            if let Some(ip4) = r.opt_object(top, "ip4", "")? {
                let s = r.req_str(ip4, "ip", "ip4")?;
                let address = s
                    .parse::<Ipv4Net>()
                    .map_err(|_| r.err(format!("\"ip4.ip\" is not an IPv4 CIDR: {s:?}")))?;
                result.ips.push(IpConfig {
                    address,
                    gateway: parse_gateway(ip4, "ip4")?,
                    interface: None,
                });
                result.routes = parse_routes(ip4, "ip4")?;
            }
            return Ok(result);
        }

        let mut interfaces = Vec::new();
        for (i, v) in r
            .opt_array(top, "interfaces", "")?
            .into_iter()
            .flatten()
            .enumerate()
        {
            let path = format!("interfaces[{i}]");
            let o = r.object(v, &path)?;
            let mtu = match r.opt_u64(o, "mtu", &path)? {
                None | Some(0) => None,
                Some(m) => Some(
                    u32::try_from(m)
                        .map_err(|_| r.err(format!("\"{path}.mtu\" is too large: {m}")))?,
                ),
            };
            interfaces.push(Interface {
                name: r.req_str(o, "name", &path)?.to_string(),
                mac: r.opt_str(o, "mac", &path)?.unwrap_or_default().to_string(),
                sandbox: r
                    .opt_str(o, "sandbox", &path)?
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
                mtu,
            });
        }
        let mut ips = Vec::new();
        for (i, v) in r
            .opt_array(top, "ips", "")?
            .into_iter()
            .flatten()
            .enumerate()
        {
            let path = format!("ips[{i}]");
            let o = r.object(v, &path)?;
            let s = r.req_str(o, "address", &path)?;
            let address = match s.parse::<IpNet>() {
                Ok(IpNet::V4(net)) => net,
                Ok(IpNet::V6(_)) => continue,
                Err(_) => return Err(r.err(format!("\"{path}.address\" is not a CIDR: {s:?}"))),
            };
            let interface = match r.opt_u64(o, "interface", &path)? {
                None => None,
                Some(index) if (index as usize) < interfaces.len() => Some(index as usize),
                Some(index) => {
                    return Err(r.err(format!(
                        "\"{path}.interface\" is {index} but there are {} interfaces",
                        interfaces.len()
                    )))
                }
            };
            ips.push(IpConfig {
                address,
                gateway: parse_gateway(o, &path)?,
                interface,
            });
        }
        Ok(AddResult {
            interfaces,
            ips,
            routes: parse_routes(top, "")?,
            dns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::version;

    fn sample() -> AddResult {
        AddResult {
            interfaces: vec![
                Interface {
                    name: "vethwepl1234567".into(),
                    mac: "aa:bb:cc:dd:ee:01".into(),
                    sandbox: None,
                    mtu: Some(1376),
                },
                Interface {
                    name: "eth0".into(),
                    mac: "aa:bb:cc:dd:ee:02".into(),
                    sandbox: Some("/proc/1/ns/net".into()),
                    mtu: Some(1376),
                },
            ],
            ips: vec![IpConfig {
                address: "10.32.0.3/12".parse().unwrap(),
                gateway: Some("10.32.0.1".parse().unwrap()),
                interface: Some(1),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: None,
            }],
            dns: Dns {
                nameservers: vec!["10.0.0.2".into()],
                ..Dns::default()
            },
        }
    }

    #[test]
    fn legacy_and_modern_shapes_round_trip() {
        for v in version::SUPPORTED_VERSIONS {
            let encoded = sample().encode(v);
            assert_eq!(encoded["cniVersion"], *v);
            let back = AddResult::parse(&encoded).unwrap();
            if version::is_legacy(v) {
                assert!(back.interfaces.is_empty(), "{v}");
                assert_eq!(back.ips[0].address, sample().ips[0].address, "{v}");
                assert_eq!(back.routes, sample().routes, "{v}");
            } else if *v == "1.1.0" {
                assert_eq!(back, sample(), "{v}");
            } else {
                assert_eq!(back.interfaces[1].mtu, None, "{v}: mtu only from 1.1.0");
                assert_eq!(back.ips, sample().ips, "{v}");
            }
        }
    }

    #[test]
    fn empty_result_still_has_every_modern_key() {
        assert_eq!(
            AddResult::default().encode("1.0.0"),
            json!({"cniVersion":"1.0.0","interfaces":[],"ips":[],"routes":[],"dns":{}})
        );
        assert_eq!(
            AddResult::default().encode("0.2.0"),
            json!({"cniVersion":"0.2.0","dns":{}})
        );
    }

    #[test]
    fn parse_skips_ipv6_and_checks_interface_index() {
        let v = json!({"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],
            "ips":[{"address":"fd00::2/64","interface":0},{"address":"10.0.0.2/24","interface":0,"gateway":"10.0.0.1"}],
            "routes":[{"dst":"::/0"},{"dst":"0.0.0.0/0"}]});
        let r = AddResult::parse(&v).unwrap();
        assert_eq!(r.ips.len(), 1);
        assert_eq!(r.routes.len(), 1);
        let bad = json!({"interfaces":[],"ips":[{"address":"10.0.0.2/24","interface":3}]});
        let e = AddResult::parse(&bad).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Decode);
        assert!(e.message().contains("interface"), "{e}");
    }
}
