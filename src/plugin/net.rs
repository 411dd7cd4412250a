//! `weave-net`: attaches a container to the `weave` bridge with an address from the router's
//! IPAM (or a delegated IPAM plugin).

use super::addressing::{Allocation, Ipam};
use super::attach::{
    finish, host_veth_name, prepare, AttachRequest, Attached, LinkRequest, Prepared, Sides,
};
use super::retire::retire;
use super::undo::Undo;
use super::{ipam_id, require_netns, runtime};
use crate::api::{Attachment, Client};
use crate::cni::{AddResult, CmdArgs, CniPlugin, GcAttachment, Interface, IpConfig, NetConf};
use crate::error::ErrorList;
use crate::netlink::{format_mac, LinkInfo, Netlink};
use crate::netns::NetNs;
use crate::{Context, Error, ErrorKind, Result};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// The `weave-net` plugin.
pub struct WeaveNet {
    client: Client,
}

impl WeaveNet {
    pub fn new(client: Client) -> WeaveNet {
        WeaveNet { client }
    }

    /// Router address from `WEAVE_HTTP_ADDR`, else 127.0.0.1:6784.
    pub fn from_env() -> WeaveNet {
        WeaveNet::new(Client::from_env())
    }

    /// With the router's IPAM the need for a gateway is known before allocating: when the
    /// bridge has no address yet, expose it first, so that it gets the lowest address of the
    /// subnet (the `.1` users expect, as after `weave expose`), not the container.
    /// Returns the address it put on the bridge, if it did.
    fn expose_bridge_first(
        &self,
        ipam: &Ipam,
        bridge_addrs: &[Ipv4Net],
        conf: &NetConf,
    ) -> Result<Option<Ipv4Net>> {
        let needs_gateway =
            conf.ipam.gateway.is_none() && conf.ipam.routes.as_ref().is_none_or(|r| r.is_empty());
        if ipam.is_delegated() || !needs_gateway || !bridge_addrs.is_empty() {
            return Ok(None);
        }
        let cidr = ipam.allocate_bridge(conf.ipam.subnet)?;
        self.client
            .expose(cidr, false)
            .with_context(|| format!("expose bridge {:?}", conf.bridge))?;
        Ok(Some(cidr))
    }

    /// The gateway when IPAM gave neither a gateway nor routes: the bridge's address in the
    /// container's subnet (else its first), or a freshly allocated and exposed one.
    fn gateway(
        &self,
        ipam: &Ipam,
        addrs: &[Ipv4Net],
        alloc: &Allocation,
        conf: &NetConf,
    ) -> Result<Option<Ipv4Addr>> {
        if alloc.gateway.is_some() || alloc.routes.as_ref().is_some_and(|r| !r.is_empty()) {
            return Ok(alloc.gateway);
        }
        let inside = addrs.iter().find(|a| alloc.address.contains(&a.addr()));
        if let Some(a) = inside.or(addrs.first()) {
            return Ok(Some(a.addr()));
        }
        let cidr = ipam.allocate_bridge(Some(alloc.address.trunc()))?;
        self.client
            .expose(cidr, false)
            .with_context(|| format!("expose bridge {:?}", conf.bridge))?;
        Ok(Some(cidr.addr()))
    }
}

/// What an ADD works on once the namespaces, netlink connections and the bridge are known.
struct AddContext<'a> {
    args: &'a CmdArgs,
    conf: &'a NetConf,
    rt: &'a tokio::runtime::Runtime,
    sides: Sides<'a>,
    bridge: LinkInfo,
    ipam: Ipam<'a>,
    /// The IPAM owner ID and the host veth's name.
    id: String,
    host_veth: String,
    /// The container's netns path as the runtime gave it.
    netns: String,
}

/// How long an ADD's steps took (`WEAVE_DEBUG=1` logs it).
struct Timing {
    started: Instant,
    overlap: Duration,
    router: Duration,
    veth: Duration,
}

impl WeaveNet {
    /// ADD as a sequence: a bridge address if the gateway needs one, then the address and the
    /// veth at once, the gateway, the interface's configuration, the router's record and the
    /// port mappings. Every step that changed something registers its undo; an error on the
    /// way takes back what this call did (a repeated ADD that found its interface working
    /// leaves it, and its address, alone).
    fn add_in(&self, cx: &AddContext, started: Instant) -> Result<AddResult> {
        let (args, conf, rt, ipam) = (cx.args, cx.conf, cx.rt, &cx.ipam);
        let mut bridge_addrs = rt.block_on(cx.sides.host.addresses_v4(cx.bridge.index))?;
        bridge_addrs.extend(self.expose_bridge_first(ipam, &bridge_addrs, conf)?);
        // Recorded by the router with the allocation, before any kernel change, so leftovers
        // of a crash can be found (GC); the router fills in the address and MAC.
        let mut record = Attachment {
            container_id: args.container_id.clone(),
            ifname: args.ifname.clone(),
            host_veth: cx.host_veth.clone(),
            mac: String::new(),
            ips: Vec::new(),
            netns: cx.netns.clone(),
            ipam_id: cx.id.clone(),
        };
        let link = LinkRequest {
            host_veth: &cx.host_veth,
            ifname: &args.ifname,
            mtu: if conf.mtu > 0 {
                conf.mtu
            } else {
                cx.bridge.mtu
            },
            bridge_index: cx.bridge.index,
            hairpin: conf.hairpin_mode,
        };
        let mut undo = Undo::new();
        let (alloc, prepared, timing) = allocate_and_prepare(cx, &record, &link, started);
        if alloc.is_ok() {
            undo.push("release address", || ipam.release(&cx.id));
        }
        if prepared.as_ref().is_ok_and(Prepared::created) {
            undo.push("delete veth", || {
                rt.block_on(cx.sides.host.delete_link(&cx.host_veth))
                    .map(drop)
            });
        }
        let (alloc, prepared) = (alloc?, prepared?);
        if !prepared.created() {
            // A repeated ADD found a working interface: leave it (and its address) alone.
            undo.keep();
        }
        let gateway = self.gateway(ipam, &bridge_addrs, &alloc, conf)?;
        let req = AttachRequest {
            link,
            address: alloc.address,
            gateway,
            routes: alloc.routes.as_deref(),
        };
        let attached = rt.block_on(finish(&cx.sides, &req, prepared))?;
        record.mac = format_mac(&attached.container.mac);
        record.ips = vec![alloc.address.to_string()];
        // The router did not see a delegated allocation: tell it about the attachment.
        undo.push("unregister attachment", || {
            ipam.unregister_attachment(&args.container_id, &args.ifname)
        });
        let registered_dns = ipam.register_attachment(&record)?;
        // Mesos port mappings, last: their failure (e.g. a taken host port) undoes the
        // attachment above and leaves no rule behind. No mappings: no work at all.
        super::portmap::add(args, conf, alloc.address)?;
        undo.commit();
        tracing::debug!(
            "add timing: overlap from {:?}, router answered at {:?}, veth ready at {:?}, \
             configured at {:?}",
            timing.overlap,
            timing.router,
            timing.veth,
            timing.started.elapsed()
        );
        let dns_domain = alloc.dns_domain.clone().or(registered_dns);
        Ok(add_result(
            cx,
            &record,
            &alloc,
            gateway,
            attached,
            dns_domain.as_deref(),
        ))
    }
}

/// The router call and the veth creation do not depend on each other: overlapped (each
/// takes about a millisecond; together they were most of an ADD).
fn allocate_and_prepare(
    cx: &AddContext,
    record: &Attachment,
    link: &LinkRequest,
    started: Instant,
) -> (Result<Allocation>, Result<Prepared>, Timing) {
    let overlap = started.elapsed();
    std::thread::scope(|scope| {
        let allocating = scope.spawn(|| {
            let a = cx.ipam.allocate(&cx.id, record);
            (a, started.elapsed())
        });
        let prepared = cx.rt.block_on(prepare(&cx.sides, link));
        let veth = started.elapsed();
        let (alloc, router) = allocating.join().unwrap_or_else(|_| {
            let e = Error::new(ErrorKind::Internal, "allocation thread panicked");
            (Err(e), started.elapsed())
        });
        let timing = Timing {
            started,
            overlap,
            router,
            veth,
        };
        (alloc, prepared, timing)
    })
}

/// The CNI result of a finished ADD.
fn add_result(
    cx: &AddContext,
    record: &Attachment,
    alloc: &Allocation,
    gateway: Option<Ipv4Addr>,
    attached: Attached,
    dns_domain: Option<&str>,
) -> AddResult {
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
        name: cx.args.ifname.clone(),
        mac: record.mac.clone(),
        sandbox: Some(record.netns.clone()),
        mtu: None,
    });
    let container_index = interfaces.len() - 1;
    AddResult {
        interfaces,
        ips: vec![IpConfig {
            address: alloc.address,
            gateway,
            interface: Some(container_index),
        }],
        routes: attached.routes,
        dns: result_dns(cx.conf, dns_domain, gateway),
    }
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
    /// Opens the namespaces, then [`WeaveNet::add_in`] does the work.
    fn add(&self, args: &CmdArgs, conf: &NetConf) -> Result<AddResult> {
        let started = Instant::now();
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
        let cx = AddContext {
            args,
            conf,
            rt: &rt,
            sides: Sides {
                host_ns: &host_ns,
                host: &host,
                container_ns: &container_ns,
                container: &container,
            },
            bridge,
            ipam: Ipam::of(&self.client, args, conf),
            id: ipam_id(&args.container_id, &args.ifname),
            host_veth: host_veth_name(&args.container_id, &args.ifname),
            netns: netns_path.display().to_string(),
        };
        self.add_in(&cx, started)
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
        // Retired, not deleted: the kernel's grace period is paid by the reaper, not by us.
        match rt.block_on(retire(&host, container.as_ref(), &args.ifname, &host_veth)) {
            Ok(how) => tracing::debug!("interface {:?}: {how:?}", args.ifname),
            Err(e) => tracing::warn!("remove interface {:?}: {e}", args.ifname),
        }
        let ipam = Ipam::of(&self.client, args, conf);
        // With the router's IPAM, this also drops the attachment recorded with the address.
        ipam.release(&ipam_id(&args.container_id, &args.ifname))?;
        match ipam.unregister_attachment(&args.container_id, &args.ifname) {
            Ok(()) => Ok(()),
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
        let expected = Ipam::of(&self.client, args, conf).expected_address(&id, expected)?;
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
        let attachments = match self.client.attachments() {
            // Weave Net's router keeps no attachment list: GC the rest without it.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                tracing::warn!(
                    "router has no /cni/attachments (Weave Net's router?): GC without the \
                     router's attachment list (orphan veths and port mappings only)"
                );
                Vec::new()
            }
            r => r?,
        };
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
mod dns_tests {
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
