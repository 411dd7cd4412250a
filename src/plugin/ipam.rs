//! `weave-ipam`: the router's IPAM as a standard CNI IPAM plugin, for other main plugins
//! (e.g. `bridge`) that want addresses from Weave's ring.

use super::net::router_ready;
use crate::api::Client;
use crate::cni::{AddResult, CmdArgs, CniPlugin, GcAttachment, IpConfig, NetConf};
use crate::{Context, Error, ErrorKind, Result};

/// The `weave-ipam` plugin.
pub struct WeaveIpam {
    client: Client,
}

impl WeaveIpam {
    pub fn new(client: Client) -> WeaveIpam {
        WeaveIpam { client }
    }

    /// Router address from `WEAVE_HTTP_ADDR`, else 127.0.0.1:6784.
    pub fn from_env() -> WeaveIpam {
        WeaveIpam::new(Client::from_env())
    }
}

impl CniPlugin for WeaveIpam {
    fn add(&self, args: &CmdArgs, conf: &NetConf) -> Result<AddResult> {
        let id = &args.container_id;
        let address = self
            .client
            .allocate(id, conf.ipam.subnet)
            .with_context(|| format!("allocate IP address for {id:?}"))?;
        Ok(AddResult {
            interfaces: Vec::new(),
            ips: vec![IpConfig {
                address,
                gateway: conf.ipam.gateway,
                interface: None,
            }],
            routes: conf.ipam.routes.clone().unwrap_or_default(),
            dns: conf.dns.clone(),
        })
    }

    /// Releasing an ID without addresses succeeds: DEL must be idempotent.
    fn del(&self, args: &CmdArgs, _conf: &NetConf) -> Result<()> {
        let id = &args.container_id;
        self.client
            .release(id)
            .with_context(|| format!("release IP address of {id:?}"))?;
        Ok(())
    }

    fn check(&self, args: &CmdArgs, conf: &NetConf) -> Result<()> {
        let id = &args.container_id;
        let owned = self.client.lookup(id, conf.ipam.subnet).context("check")?;
        if owned.is_empty() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("check: router has no address for {id:?}"),
            ));
        }
        if let Some(prev) = &conf.prev_result {
            let prev = AddResult::parse(prev).context("check: decode prevResult")?;
            for ip in &prev.ips {
                if !owned.contains(&ip.address) {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "check: router has no allocation of {} for {id:?} (it has {owned:?})",
                            ip.address
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn status(&self, _conf: &NetConf) -> Result<()> {
        router_ready(&self.client)
    }

    /// Nothing to do: the router cannot tell which of its allocations came through this
    /// plugin, so collecting them here could free addresses of non-CNI containers.
    fn gc(&self, _conf: &NetConf, _valid: &[GcAttachment]) -> Result<()> {
        Ok(())
    }
}
