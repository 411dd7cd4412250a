//! Where `weave-net` gets a container's address, decided once per call: [`Ipam::Router`]
//! when the config names no IPAM plugin (the router allocates and records the attachment
//! in one call), [`Ipam::Delegated`] when `ipam.type` names one (it is executed as CNI
//! says, and the attachment is registered with the router separately).

use super::delegate;
use crate::api::Client;
use crate::attachment::Attachment;
use crate::cni::{AddResult, CmdArgs, Command, NetConf, Route};
use crate::{Context, Error, ErrorKind, Result};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// An address and what IPAM said about reaching the world from it.
pub struct Allocation {
    pub address: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    /// `None`: no routes given (the default route is added).
    pub routes: Option<Vec<Route>>,
    /// The router's DNS domain when its DNS server is on (the router's IPAM says so).
    pub dns_domain: Option<String>,
}

/// The IPAM strategy of one plugin call.
pub enum Ipam<'a> {
    /// The router's own IPAM (`ipam.type` empty).
    Router {
        client: &'a Client,
        conf: &'a NetConf,
    },
    /// A standard IPAM plugin from `CNI_PATH`; the router only hears of the attachment.
    Delegated {
        client: &'a Client,
        args: &'a CmdArgs,
        conf: &'a NetConf,
    },
}

fn no_address() -> Error {
    Error::new(ErrorKind::Router, "IPAM plugin returned no IP address")
}

impl<'a> Ipam<'a> {
    pub fn of(client: &'a Client, args: &'a CmdArgs, conf: &'a NetConf) -> Ipam<'a> {
        if conf.ipam.ipam_type.is_empty() {
            Ipam::Router { client, conf }
        } else {
            Ipam::Delegated { client, args, conf }
        }
    }

    /// True when the router learns of the attachment only through
    /// [`Ipam::register_attachment`] (it did not make the allocation).
    pub fn is_delegated(&self) -> bool {
        matches!(self, Ipam::Delegated { .. })
    }

    /// An address for `id`; the router's IPAM records `record` with it in the same call.
    pub fn allocate(&self, id: &str, record: &Attachment) -> Result<Allocation> {
        let what = || format!("allocate IP address for {id:?}");
        match self {
            Ipam::Router { client, conf } => {
                let a = client
                    .allocate_attached(id, conf.ipam.subnet, record)
                    .with_context(what)?;
                Ok(Allocation {
                    address: a.cidr,
                    gateway: conf.ipam.gateway,
                    routes: conf.ipam.routes.clone(),
                    dns_domain: a.dns_domain,
                })
            }
            Ipam::Delegated { args, conf, .. } => {
                let result = delegate::exec(args, conf, Command::Add, id)
                    .and_then(|v| AddResult::parse(&v))
                    .with_context(what)?;
                let ip = result
                    .ips
                    .first()
                    .ok_or_else(|| no_address().context(what()))?;
                // An empty list cannot be told from an absent one in a result: both mean
                // "default".
                let routes = (!result.routes.is_empty()).then_some(result.routes.clone());
                Ok(Allocation {
                    address: ip.address,
                    gateway: ip.gateway,
                    routes,
                    dns_domain: None,
                })
            }
        }
    }

    /// An address for the bridge itself (`weave:expose`) in `subnet`.
    pub fn allocate_bridge(&self, subnet: Option<Ipv4Net>) -> Result<Ipv4Net> {
        match self {
            Ipam::Router { client, .. } => client.allocate(crate::EXPOSE_ID, subnet),
            Ipam::Delegated { args, conf, .. } => {
                delegate::exec(args, conf, Command::Add, crate::EXPOSE_ID)
                    .and_then(|v| AddResult::parse(&v))
                    .and_then(|r| r.ips.first().map(|ip| ip.address).ok_or_else(no_address))
            }
        }
        .context("allocate IP address for bridge")
    }

    /// Frees `id`'s addresses; nothing allocated is fine (what DEL wants anyway). The
    /// router drops the attachments recorded with them.
    pub fn release(&self, id: &str) -> Result<()> {
        match self {
            Ipam::Router { client, .. } => client
                .release(id)
                .map(drop)
                .with_context(|| format!("release IP address of {id:?}")),
            Ipam::Delegated { args, conf, .. } => {
                delegate::exec(args, conf, Command::Del, id).map(drop)
            }
        }
    }

    /// Tells the router of an attachment whose address it did not allocate; the router's
    /// DNS domain when its DNS server is on.
    pub fn register_attachment(&self, record: &Attachment) -> Result<Option<String>> {
        match self {
            Ipam::Router { .. } => Ok(None),
            Ipam::Delegated { client, .. } => match client.register_attachment(record) {
                // Weave Net's router (a rolling upgrade from it) has no /cni/attachments:
                // attach without the record; only GC's view of this attachment is lost.
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    tracing::warn!(
                        "router has no /cni/attachments (Weave Net's router?): attachment \
                         {}/{} not recorded; CNI GC will not know it",
                        record.container_id,
                        record.ifname
                    );
                    Ok(None)
                }
                r => r.context("register attachment"),
            },
        }
    }

    /// Drops the router's record of an attachment it did not allocate; absent is fine.
    pub fn unregister_attachment(&self, container_id: &str, ifname: &str) -> Result<()> {
        match self {
            Ipam::Router { .. } => Ok(()),
            Ipam::Delegated { client, .. } => {
                match client.unregister_attachment(container_id, ifname) {
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                    r => r,
                }
            }
        }
    }

    /// The address CHECK expects on the interface: with the router's IPAM, one it holds for
    /// `id` (the previous result's if given); with a delegated one, the plugin's CHECK passes
    /// and the previous result names it.
    pub fn expected_address(&self, id: &str, previous: Option<Ipv4Net>) -> Result<Ipv4Net> {
        match self {
            Ipam::Router { client, conf } => {
                let owned = client.lookup(id, conf.ipam.subnet).context("check")?;
                match previous {
                    Some(a) if !owned.contains(&a) => Err(Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "check: router has no allocation of {a} for {id:?} (it has {owned:?})"
                        ),
                    )),
                    Some(a) => Ok(a),
                    None => owned.first().copied().ok_or_else(|| {
                        Error::new(
                            ErrorKind::NotFound,
                            format!("check: router has no address for {id:?}"),
                        )
                    }),
                }
            }
            Ipam::Delegated { args, conf, .. } => {
                delegate::exec(args, conf, Command::Check, id)?;
                previous.ok_or_else(|| {
                    Error::new(ErrorKind::InvalidConfig, "check: prevResult has no address")
                })
            }
        }
    }
}
