//! `weave-net`: attaches a container to the `weave` bridge with an address from the router's
//! IPAM (or a delegated IPAM plugin).

use super::attach::{
    detach, finish, host_veth_name, prepare, undo_prepare, AttachRequest, LinkRequest, Sides,
};
use super::{delegate, ipam_id, require_netns, runtime};
use crate::api::{Attachment, Client};
use crate::cni::{
    AddResult, CmdArgs, CniPlugin, Command, GcAttachment, Interface, IpConfig, NetConf, Route,
};
use crate::error::ErrorList;
use crate::netlink::{format_mac, Netlink};
use crate::netns::NetNs;
use crate::{Context, Error, ErrorKind, Result};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// The `weave-net` plugin.
pub struct WeaveNet {
    client: Client,
}

/// An address and what IPAM said about reaching the world from it.
struct Allocation {
    address: Ipv4Net,
    gateway: Option<Ipv4Addr>,
    /// `None`: no routes given (the default route is added).
    routes: Option<Vec<Route>>,
    /// The router's DNS domain when its DNS server is on.
    dns_domain: Option<String>,
}

/// The result's `dns`: the config's when it names nameservers; else, when the router's DNS
/// server is on, the bridge address (the gateway, where it listens) and the domain to
/// search, so Mesos writes them into the task's resolv.conf and libcni runtimes get them.
fn result_dns(conf: &NetConf, domain: Option<&str>, gateway: Option<Ipv4Addr>) -> crate::cni::Dns {
    match (domain, gateway) {
        (Some(d), Some(gw)) if conf.dns.nameservers.is_empty() => crate::cni::Dns {
            nameservers: vec![gw.to_string()],
            search: vec![d.strip_suffix('.').unwrap_or(d).to_string()],
            ..conf.dns.clone()
        },
        _ => conf.dns.clone(),
    }
}

impl WeaveNet {
    pub fn new(client: Client) -> WeaveNet {
        WeaveNet { client }
    }

    /// Router address from `WEAVE_HTTP_ADDR`, else 127.0.0.1:6784.
    pub fn from_env() -> WeaveNet {
        WeaveNet::new(Client::from_env())
    }

    /// Allocates; with the built-in IPAM the router records `record` in the same call.
    fn allocate(
        &self,
        args: &CmdArgs,
        conf: &NetConf,
        id: &str,
        record: &Attachment,
    ) -> Result<Allocation> {
        let what = || format!("allocate IP address for {id:?}");
        if conf.ipam.ipam_type.is_empty() {
            let a = self
                .client
                .allocate_attached(id, conf.ipam.subnet, record)
                .with_context(what)?;
            return Ok(Allocation {
                address: a.cidr,
                gateway: conf.ipam.gateway,
                routes: conf.ipam.routes.clone(),
                dns_domain: a.dns_domain,
            });
        }
        let result = delegate::exec(args, conf, Command::Add, id)
            .and_then(|v| AddResult::parse(&v))
            .with_context(what)?;
        let ip = result.ips.first().ok_or_else(|| {
            Error::new(ErrorKind::Router, "IPAM plugin returned no IP address").context(what())
        })?;
        // An empty list cannot be told from an absent one in a result: both mean "default".
        let routes = (!result.routes.is_empty()).then_some(result.routes.clone());
        Ok(Allocation {
            address: ip.address,
            gateway: ip.gateway,
            routes,
            dns_domain: None,
        })
    }

    fn release(&self, args: &CmdArgs, conf: &NetConf, id: &str) -> Result<()> {
        if conf.ipam.ipam_type.is_empty() {
            // Ok(false): nothing was allocated, which is what DEL wants anyway.
            self.client
                .release(id)
                .with_context(|| format!("release IP address of {id:?}"))?;
        } else {
            delegate::exec(args, conf, Command::Del, id)?;
        }
        Ok(())
    }

    /// The gateway when IPAM gave neither a gateway nor routes: the bridge's address in the
    /// container's subnet (else its first), or a freshly allocated and exposed one.
    fn gateway(
        &self,
        addrs: &[Ipv4Net],
        alloc: &Allocation,
        args: &CmdArgs,
        conf: &NetConf,
    ) -> Result<Option<Ipv4Addr>> {
        if alloc.gateway.is_some() || alloc.routes.as_ref().is_some_and(|r| !r.is_empty()) {
            return Ok(alloc.gateway);
        }
        let inside = addrs.iter().find(|a| alloc.address.contains(&a.addr()));
        if let Some(a) = inside.or(addrs.first()) {
            return Ok(Some(a.addr()));
        }
        let subnet = alloc.address.trunc();
        let cidr = if conf.ipam.ipam_type.is_empty() {
            self.client.allocate(crate::EXPOSE_ID, Some(subnet))
        } else {
            delegate::exec(args, conf, Command::Add, crate::EXPOSE_ID)
                .and_then(|v| AddResult::parse(&v))
                .and_then(|r| {
                    r.ips.first().map(|ip| ip.address).ok_or_else(|| {
                        Error::new(ErrorKind::Router, "IPAM plugin returned no IP address")
                    })
                })
        }
        .context("allocate IP address for bridge")?;
        self.client
            .expose(cidr, false)
            .with_context(|| format!("expose bridge {:?}", conf.bridge))?;
        Ok(Some(cidr.addr()))
    }

    /// With the built-in IPAM the need for a gateway is known before allocating: when the
    /// bridge has no address yet, expose it first, so that it gets the lowest address of the
    /// subnet (the `.1` users expect, as after `weave expose`), not the container.
    /// Returns the address it put on the bridge, if it did.
    fn expose_bridge_first(
        &self,
        bridge_addrs: &[Ipv4Net],
        conf: &NetConf,
    ) -> Result<Option<Ipv4Net>> {
        let needs_gateway =
            conf.ipam.gateway.is_none() && conf.ipam.routes.as_ref().is_none_or(|r| r.is_empty());
        if !conf.ipam.ipam_type.is_empty() || !needs_gateway || !bridge_addrs.is_empty() {
            return Ok(None);
        }
        let cidr = self
            .client
            .allocate(crate::EXPOSE_ID, conf.ipam.subnet)
            .context("allocate IP address for bridge")?;
        self.client
            .expose(cidr, false)
            .with_context(|| format!("expose bridge {:?}", conf.bridge))?;
        Ok(Some(cidr))
    }

    /// Best-effort undo of a failed ADD; the original error is what the runtime sees.
    fn undo(
        &self,
        rt: &tokio::runtime::Runtime,
        host: &Netlink,
        args: &CmdArgs,
        conf: &NetConf,
        id: &str,
    ) {
        let host_veth = host_veth_name(&args.container_id, &args.ifname);
        if let Err(e) = rt.block_on(host.delete_link(&host_veth)) {
            tracing::warn!("undo ADD: {e}");
        }
        if let Err(e) = self.release(args, conf, id) {
            tracing::warn!("undo ADD: {e}");
        }
        if conf.ipam.ipam_type.is_empty() {
            return; // the release dropped the attachment too
        }
        if let Err(e) = self
            .client
            .unregister_attachment(&args.container_id, &args.ifname)
        {
            if e.kind() != ErrorKind::NotFound {
                tracing::warn!("undo ADD: {e}");
            }
        }
    }
}

fn reject_unsupported(conf: &NetConf) -> Result<()> {
    if conf.is_gateway {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            "isGateway is not supported: the weave bridge is the gateway",
        ));
    }
    if conf.ip_masq {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            "ipMasq is not supported: masquerading is set up by `weave expose`",
        ));
    }
    Ok(())
}

/// Opens the container namespace, refusing the plugin's own (it would rewire the host).
fn open_container_ns(path: &std::path::Path) -> Result<NetNs> {
    let ns = NetNs::open(path)?;
    if ns.same_as(&NetNs::current()?)? {
        return Err(Error::new(
            ErrorKind::NetNs,
            format!(
                "netns {:?} is the host network namespace; refusing to attach",
                path.display().to_string()
            ),
        ));
    }
    Ok(ns)
}

fn bridge_missing(name: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("bridge {name:?} not found; is the router running? (weave launch)"),
    )
}

impl CniPlugin for WeaveNet {
    fn add(&self, args: &CmdArgs, conf: &NetConf) -> Result<AddResult> {
        let started = std::time::Instant::now();
        reject_unsupported(conf)?;
        let netns_path = require_netns(args)?;
        let container_ns = open_container_ns(netns_path)?;
        let host_ns = NetNs::current()?;
        let rt = runtime()?;
        let _enter = rt.enter();
        let host = Netlink::open()?;
        let container = Netlink::open_in(&container_ns)?;
        // Checked before allocating, so a missing bridge costs no address.
        let bridge = rt
            .block_on(host.link(&conf.bridge))?
            .ok_or_else(|| bridge_missing(&conf.bridge))?;
        if !conf.port_mappings.is_empty() {
            // Mesos' mappings are ours (below); runtimeConfig ones belong to `portmap`.
            tracing::warn!(
                "runtimeConfig.portMappings are ignored by weave-net; chain the portmap plugin"
            );
        }

        let mut bridge_addrs = rt.block_on(host.addresses_v4(bridge.index))?;
        self.expose_bridge_first(&bridge_addrs, conf)?
            .into_iter()
            .for_each(|a| bridge_addrs.push(a));
        let id = ipam_id(&args.container_id, &args.ifname);
        let host_veth = host_veth_name(&args.container_id, &args.ifname);
        let netns_str = netns_path.display().to_string();
        // Recorded by the router with the allocation, before any kernel change, so leftovers
        // of a crash can be found (GC); the router fills in the address and MAC.
        let mut record = Attachment {
            container_id: args.container_id.clone(),
            ifname: args.ifname.clone(),
            host_veth: host_veth.clone(),
            mac: String::new(),
            ips: Vec::new(),
            netns: netns_str.clone(),
            ipam_id: id.clone(),
        };
        let sides = Sides {
            host_ns: &host_ns,
            host: &host,
            container_ns: &container_ns,
            container: &container,
        };
        let link = LinkRequest {
            host_veth: &host_veth,
            ifname: &args.ifname,
            mtu: if conf.mtu > 0 { conf.mtu } else { bridge.mtu },
            bridge_index: bridge.index,
            hairpin: conf.hairpin_mode,
        };
        // The router call and the veth creation do not depend on each other: overlap them
        // (each takes about a millisecond; together they were most of an ADD).
        let overlap = started.elapsed();
        let (alloc, prepared, router, veth) = std::thread::scope(|scope| {
            let allocating = scope.spawn(|| {
                let a = self.allocate(args, conf, &id, &record);
                (a, started.elapsed())
            });
            let prepared = rt.block_on(prepare(&sides, &link));
            let veth = started.elapsed();
            let (alloc, router) = allocating.join().unwrap_or_else(|_| {
                let e = Error::new(ErrorKind::Internal, "allocation thread panicked");
                (Err(e), started.elapsed())
            });
            (alloc, prepared, router, veth)
        });
        let (alloc, prepared) = match (alloc, prepared) {
            (Ok(a), Ok(p)) => (a, p),
            (Err(e), prepared) => {
                if prepared.is_ok_and(|p| p.created()) {
                    rt.block_on(undo_prepare(&sides, &host_veth));
                }
                return Err(e);
            }
            (Ok(_), Err(e)) => {
                // prepare removed what it made (it fails only while creating); give the
                // address back.
                self.undo(&rt, &host, args, conf, &id);
                return Err(e);
            }
        };
        let preexisting = !prepared.created();
        let delegated = !conf.ipam.ipam_type.is_empty();
        let attached = (|| {
            let gateway = self.gateway(&bridge_addrs, &alloc, args, conf)?;
            let req = AttachRequest {
                host_veth: &host_veth,
                ifname: &args.ifname,
                mtu: link.mtu,
                bridge_index: bridge.index,
                hairpin: conf.hairpin_mode,
                address: alloc.address,
                gateway,
                routes: alloc.routes.as_deref(),
            };
            let attached = rt.block_on(finish(&sides, &req, prepared))?;
            record.mac = format_mac(&attached.container.mac);
            record.ips = vec![alloc.address.to_string()];
            let mut dns_domain = alloc.dns_domain.clone();
            if delegated {
                // The router did not see this allocation: tell it about the attachment.
                dns_domain = self
                    .client
                    .register_attachment(&record)
                    .context("register attachment")?;
            }
            Ok((attached, gateway, dns_domain))
        })();
        // Mesos port mappings, last: their failure (e.g. a taken host port) undoes the
        // attachment above and leaves no rule behind. No mappings: no work at all.
        let attached = attached.and_then(|a| {
            super::portmap::add(args, conf, alloc.address)?;
            Ok(a)
        });
        let (attached, gateway, dns_domain) = match attached {
            Ok(a) => a,
            Err(e) => {
                // A repeated ADD found a working interface: leave it (and its address) alone.
                if !preexisting {
                    self.undo(&rt, &host, args, conf, &id);
                }
                return Err(e);
            }
        };

        // WEAVE_DEBUG=1 shows where an ADD spends its time.
        tracing::debug!(
            "add timing: overlap from {overlap:?}, router answered at {router:?}, veth ready at \
             {veth:?}, configured at {:?}",
            started.elapsed()
        );
        let mut interfaces = Vec::new();
        if let Some(h) = &attached.host {
            interfaces.push(Interface {
                name: h.name.clone(),
                mac: format_mac(&h.mac),
                sandbox: None,
                mtu: None,
            });
        }
        interfaces.push(Interface {
            name: args.ifname.clone(),
            mac: record.mac.clone(),
            sandbox: Some(netns_str),
            mtu: None,
        });
        let container_index = interfaces.len() - 1;
        Ok(AddResult {
            interfaces,
            ips: vec![IpConfig {
                address: alloc.address,
                gateway,
                interface: Some(container_index),
            }],
            routes: attached.routes,
            dns: result_dns(conf, dns_domain.as_deref(), gateway),
        })
    }

    fn del(&self, args: &CmdArgs, conf: &NetConf) -> Result<()> {
        // Before the address is freed: a rule left behind would send traffic to its next owner.
        super::portmap::del(args, conf)?;
        let rt = runtime()?;
        let _enter = rt.enter();
        let host = Netlink::open()?;
        let host_veth = host_veth_name(&args.container_id, &args.ifname);
        // A missing or unusable namespace took the interface with it: log and go on.
        let container = match args.netns.as_deref().map(open_container_ns) {
            Some(Ok(ns)) => match Netlink::open_in(&ns) {
                Ok(nl) => Some(nl),
                Err(e) => {
                    tracing::warn!("{e}");
                    None
                }
            },
            Some(Err(e)) => {
                tracing::warn!("{e}");
                None
            }
            None => None,
        };
        if let Err(e) = rt.block_on(detach(&host, container.as_ref(), &args.ifname, &host_veth)) {
            tracing::warn!("remove interface {:?}: {e}", args.ifname);
        }
        self.release(args, conf, &ipam_id(&args.container_id, &args.ifname))?;
        if conf.ipam.ipam_type.is_empty() {
            // The router dropped the attachment with its addresses.
            return Ok(());
        }
        match self
            .client
            .unregister_attachment(&args.container_id, &args.ifname)
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) if e.kind() == ErrorKind::TryAgainLater => Err(e),
            Err(e) => {
                tracing::warn!("{e}");
                Ok(())
            }
        }
    }

    fn check(&self, args: &CmdArgs, conf: &NetConf) -> Result<()> {
        let netns_path = require_netns(args)?;
        let ns = NetNs::open(netns_path)?;
        let rt = runtime()?;
        let _enter = rt.enter();
        let container = Netlink::open_in(&ns)?;
        let id = ipam_id(&args.container_id, &args.ifname);
        let in_ns = format!("in netns {:?}", netns_path.display().to_string());
        let link = rt.block_on(container.link(&args.ifname))?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("check: interface {:?} not found {in_ns}", args.ifname),
            )
        })?;
        let expected = match &conf.prev_result {
            Some(prev) => expected_address(
                &AddResult::parse(prev).context("check: decode prevResult")?,
                &args.ifname,
            ),
            None => None,
        };
        let expected = if conf.ipam.ipam_type.is_empty() {
            let owned = self.client.lookup(&id, conf.ipam.subnet).context("check")?;
            match expected {
                Some(a) if !owned.contains(&a) => {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "check: router has no allocation of {a} for {id:?} (it has {owned:?})"
                        ),
                    ))
                }
                Some(a) => a,
                None => *owned.first().ok_or_else(|| {
                    Error::new(
                        ErrorKind::NotFound,
                        format!("check: router has no address for {id:?}"),
                    )
                })?,
            }
        } else {
            delegate::exec(args, conf, Command::Check, &id)?;
            expected.ok_or_else(|| {
                Error::new(ErrorKind::InvalidConfig, "check: prevResult has no address")
            })?
        };
        let have = rt.block_on(container.addresses_v4(link.index))?;
        if !have.contains(&expected) {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "check: interface {:?} {in_ns} lacks address {expected} (has {have:?})",
                    args.ifname
                ),
            ));
        }
        Ok(())
    }

    fn status(&self, _conf: &NetConf) -> Result<()> {
        router_ready(&self.client)
    }

    fn gc(&self, conf: &NetConf, valid: &[GcAttachment]) -> Result<()> {
        let attachments = self.client.attachments()?;
        let stale: Vec<&Attachment> = attachments
            .iter()
            .filter(|a| {
                !valid
                    .iter()
                    .any(|v| v.container_id == a.container_id && v.ifname == a.ifname)
            })
            .collect();
        let rt = runtime()?;
        let _enter = rt.enter();
        let host = Netlink::open()?;
        let mut errors = ErrorList::default();
        errors.push_err(super::portmap::gc(valid));
        // Host veths on the bridge that no valid attachment accounts for: an ADD killed after
        // creating its veth but before the router recorded it leaves one of these.
        let keep: Vec<String> = valid
            .iter()
            .map(|v| host_veth_name(&v.container_id, &v.ifname))
            .collect();
        if let Some(bridge) = rt.block_on(host.link(&conf.bridge))? {
            for l in rt.block_on(host.links())? {
                let orphan = l.master == Some(bridge.index)
                    && l.name.starts_with(crate::HOST_VETH_PREFIX)
                    && !keep.contains(&l.name)
                    && !stale.iter().any(|a| a.host_veth == l.name);
                if orphan {
                    tracing::info!("gc: removing orphan veth {}", l.name);
                    errors.push_err(rt.block_on(host.delete_link(&l.name)));
                }
            }
        }
        for a in stale {
            tracing::info!(
                "gc: removing stale attachment {}/{}",
                a.container_id,
                a.ifname
            );
            errors.push_err(rt.block_on(host.delete_link(&a.host_veth)));
            let id = ipam_id(&a.container_id, &a.ifname);
            for ip in &a.ips {
                let Ok(cidr) = ip.parse::<Ipv4Net>() else {
                    continue;
                };
                match self.client.release_one(&id, cidr.addr()) {
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    r => {
                        errors.push_err(r);
                    }
                }
            }
            match self
                .client
                .unregister_attachment(&a.container_id, &a.ifname)
            {
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                r => {
                    errors.push_err(r);
                }
            }
        }
        errors.into_result()
    }
}

/// The address a previous result gave `ifname` (or its first address).
fn expected_address(prev: &AddResult, ifname: &str) -> Option<Ipv4Net> {
    let on_if = prev.ips.iter().find(|ip| {
        ip.interface
            .and_then(|i| prev.interfaces.get(i))
            .is_some_and(|i| i.name == ifname)
    });
    on_if.or(prev.ips.first()).map(|ip| ip.address)
}

/// STATUS for both plugins: the router answers and is ready.
pub(crate) fn router_ready(client: &Client) -> Result<()> {
    let (code, body) = client.status(None)?;
    if code == 503 {
        return Err(Error::new(
            ErrorKind::TryAgainLater,
            format!("router not ready: {}", body.trim()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_names_our_nameserver_unless_the_config_has_one() {
        let plain = NetConf::parse(br#"{"name":"weave","type":"weave-net"}"#).unwrap();
        let gw = Some("10.32.0.1".parse().unwrap());
        let d = result_dns(&plain, Some("weave.local."), gw);
        assert_eq!(d.nameservers, ["10.32.0.1"]);
        assert_eq!(d.search, ["weave.local"]);
        // DNS off, or no gateway: the config's (empty) dns.
        assert_eq!(result_dns(&plain, None, gw), plain.dns);
        assert_eq!(result_dns(&plain, Some("weave.local."), None), plain.dns);
        // The operator's own nameservers win.
        let own = NetConf::parse(
            br#"{"name":"weave","type":"weave-net","dns":{"nameservers":["192.0.2.53"]}}"#,
        )
        .unwrap();
        assert_eq!(
            result_dns(&own, Some("weave.local."), gw).nameservers,
            ["192.0.2.53"]
        );
    }
}
