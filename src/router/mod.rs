//! The router: what the daemon does between its parts. [`Router`] holds the connect targets
//! and handles to the IPAM service, the mesh and the data plane, and answers the HTTP API
//! through [`crate::api::Backend`] (expose/hide, connect/forget, leave, status views).
//!
//! - [`config`]: [`Config`], parsed once at the edge.
//! - [`sweep`]: releases the addresses of containers that went away unannounced.
//! - [`reap`]: deletes the veths a DEL retired (DEL does not wait for the kernel).
//!
//! It does not build itself: the composition root, [`crate::daemon`], starts the parts and
//! hands them to [`Router::new`].

pub mod config;
pub mod reap;
pub mod sweep;

pub use config::{parse_ipalloc_init, Config, MeshFlags};

use crate::api::status::View;
use crate::api::Backend;
use crate::dataplane::DataPlane;
use crate::dns::Dns;
use crate::ipam::store::{self, DataDir};
use crate::ipam::IpamHandle;
use crate::mesh::MeshHandle;
use crate::task::blocking;
use crate::{Context, ErrorKind, Result, EXPOSE_ID};
use config::invalid;
use ipnet::Ipv4Net;
use std::sync::Arc;
use tokio::sync::Mutex;

/// The running daemon's state, shared by the HTTP handlers and the sweep.
pub struct Router {
    config: Config,
    peer_name: String,
    datadir: DataDir,
    ipam: IpamHandle,
    /// The peer mesh (gossip API for IPAM and the data plane).
    mesh: MeshHandle,
    plane: Arc<dyn DataPlane>,
    targets: Mutex<Vec<String>>,
    dns: Arc<Dns>,
}

/// The parts a [`Router`] is made of, started by the composition root.
pub struct Parts {
    pub config: Config,
    pub peer_name: String,
    pub datadir: DataDir,
    pub ipam: IpamHandle,
    pub mesh: MeshHandle,
    pub plane: Arc<dyn DataPlane>,
    /// Connect targets as persisted (flags merged in).
    pub targets: Vec<String>,
    /// weaveDNS: the records and (unless `--no-dns`) the server.
    pub dns: Arc<Dns>,
}

impl Router {
    pub fn new(p: Parts) -> Router {
        Router {
            config: p.config,
            peer_name: p.peer_name,
            datadir: p.datadir,
            ipam: p.ipam,
            mesh: p.mesh,
            plane: p.plane,
            targets: Mutex::new(p.targets),
            dns: p.dns,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn peer_name(&self) -> &str {
        &self.peer_name
    }

    pub fn datadir(&self) -> &DataDir {
        &self.datadir
    }

    pub fn mesh(&self) -> &MeshHandle {
        &self.mesh
    }

    pub fn plane(&self) -> &Arc<dyn DataPlane> {
        &self.plane
    }

    /// Re-applies NAT for the bridge's addresses and records them as `weave:expose`'s; the
    /// DNS server listens on them.
    pub async fn reexpose(&self) -> Result<()> {
        let addrs = self.plane.bridge_addresses().await?;
        let mut claims = Vec::new();
        for cidr in addrs {
            tracing::info!("re-exposing {cidr}");
            if let Err(e) = self.plane.expose(cidr, false).await {
                tracing::warn!("re-expose {cidr}: {e}");
            }
            self.dns.listen_on(cidr).await;
            if self.config.ipalloc_range.contains(&cidr.addr()) {
                claims.push(cidr);
            }
        }
        // Claims may wait for the ring (other peers): retry in the background, never block
        // the start.
        let ipam = self.ipam.clone();
        tokio::spawn(async move {
            for cidr in claims {
                for attempt in 1..=20 {
                    match ipam.claim(EXPOSE_ID, cidr).await {
                        Ok(_) => break,
                        Err(e) if e.kind() == ErrorKind::TryAgainLater && attempt < 20 => {
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        }
                        Err(e) => {
                            tracing::warn!("claim bridge address {cidr}: {e}");
                            break;
                        }
                    }
                }
            }
        });
        Ok(())
    }

    pub async fn targets(&self) -> Vec<String> {
        self.targets.lock().await.clone()
    }

    async fn update_targets(&self, change: impl FnOnce(&mut Vec<String>)) -> Result<()> {
        let mut guard = self.targets.lock().await;
        let mut next = guard.clone();
        change(&mut next);
        let path = self.datadir.targets_path();
        let copy = next.clone();
        blocking(move || store::write_json(&path, &copy))
            .await
            .context("save targets")?;
        *guard = next;
        Ok(())
    }
}

impl Backend for Router {
    fn ipam(&self) -> &IpamHandle {
        &self.ipam
    }

    fn default_subnet(&self) -> Ipv4Net {
        self.config.default_subnet
    }

    /// A snapshot for the status pages.
    async fn view(&self) -> Result<View> {
        Ok(View {
            peer_name: self.peer_name.clone(),
            nickname: self.config.nickname.clone(),
            port: self.mesh.local_addr().port(),
            targets: self.targets().await,
            mesh: Some(self.mesh.status().await?),
            ipam: self.ipam.summary().await?,
            attachments: self.ipam.attachments().await?,
            pid: std::process::id(),
            datadir: self.datadir.path().display().to_string(),
            http_addr: self
                .config
                .http_addr
                .map(|a| a.to_string())
                .unwrap_or_default(),
            dns: crate::api::status::DnsView {
                domain: self.dns.domain().map(str::to_string),
                ttl: self.dns.flags().map_or(0, |f| f.ttl),
                listen: self.dns.addresses().iter().map(|a| a.to_string()).collect(),
                records: self.dns.records().records().await?.len(),
                metrics: self.dns.metrics_text(),
            },
            data: crate::api::status_datapath::DataView {
                paths: self.plane.paths(),
                encrypted: self.plane.encrypted_stats(),
            },
        })
    }

    fn dns(&self) -> &Dns {
        &self.dns
    }

    /// Puts `cidr` on the bridge and, unless `skip_nat`, masquerades it; DNS listens there.
    async fn expose(&self, cidr: Ipv4Net, skip_nat: bool) -> Result<()> {
        self.plane.expose(cidr, skip_nat).await?;
        self.dns.listen_on(cidr).await;
        Ok(())
    }

    /// Takes `cidr` off the bridge and removes its rules; DNS stops listening there.
    async fn hide(&self, cidr: Ipv4Net) -> Result<()> {
        self.dns.unlisten(cidr.addr());
        self.plane.hide(cidr).await
    }

    /// Adds (or with `replace`, sets) targets; persisted before answering.
    async fn connect(&self, peers: &[String], replace: bool) -> Result<()> {
        let errors: Vec<String> = peers
            .iter()
            .filter_map(|p| crate::peer::validate_target(p).err())
            .map(|e| e.to_string())
            .collect();
        if !errors.is_empty() {
            return Err(invalid(errors.join("\n")));
        }
        self.update_targets(|t| {
            if replace {
                t.clear();
            }
            for p in peers {
                if !t.contains(p) {
                    t.push(p.clone());
                }
            }
        })
        .await?;
        self.mesh.connect(peers.to_vec(), replace).await
    }

    async fn forget(&self, peers: &[String]) -> Result<()> {
        self.update_targets(|t| t.retain(|x| !peers.contains(x)))
            .await?;
        self.mesh.forget(peers.to_vec()).await
    }

    /// `weave reset`: our names are withdrawn and our ranges go to a live peer (both
    /// gossiped), then we leave the mesh.
    async fn leave(&self) -> Result<()> {
        if let Err(e) = self.dns.records().reset().await {
            tracing::warn!("dns reset: {e}");
        }
        self.ipam.shutdown().await?;
        self.mesh.leave().await
    }
}
