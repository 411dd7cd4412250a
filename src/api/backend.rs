//! [`Backend`]: the narrow interface the HTTP server executes requests against. The server
//! knows requests and status formats; the backend (the router, `crate::router::Router`)
//! knows the daemon's parts. IPAM requests go straight to the IPAM service's handle.

use super::status::View;
use crate::ipam::IpamHandle;
use crate::Result;
use ipnet::Ipv4Net;
use std::future::Future;

/// What the HTTP API needs from the daemon.
pub trait Backend: Send + Sync + 'static {
    /// The IPAM service: `/ip*`, `/ring`, `/peer*`, `/cni/attachments`.
    fn ipam(&self) -> &IpamHandle;

    /// weaveDNS: `/name*`, `/domain`, `/dns-address`, `/status/dns`.
    fn dns(&self) -> &crate::dns::Dns;

    /// `GET /ipinfo/defaultsubnet`.
    fn default_subnet(&self) -> Ipv4Net;

    /// A snapshot for `/status*`, `/report` and `/metrics`.
    fn view(&self) -> impl Future<Output = Result<View>> + Send;

    /// `POST /expose/<cidr>`: the address on the bridge, NATed unless `skip_nat`.
    fn expose(&self, cidr: Ipv4Net, skip_nat: bool) -> impl Future<Output = Result<()>> + Send;

    /// `DELETE /expose/<cidr>`.
    fn hide(&self, cidr: Ipv4Net) -> impl Future<Output = Result<()>> + Send;

    /// `POST /connect`: adds (or with `replace`, sets) connect targets, persisted first.
    fn connect(&self, peers: &[String], replace: bool) -> impl Future<Output = Result<()>> + Send;

    /// `POST /forget`.
    fn forget(&self, peers: &[String]) -> impl Future<Output = Result<()>> + Send;

    /// `DELETE /peer` (`weave reset`): our ranges to a live peer, then leave the mesh.
    fn leave(&self) -> impl Future<Output = Result<()>> + Send;
}
