//! Blocking HTTP/1.1 client for the router, with a connect timeout and a total deadline on
//! every call (Weave's client had none, so a hung router hung every container launch).
//! No async runtime: the CNI plugins stay small and start fast.

use super::wire::Attachment;
use crate::Result;
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use std::time::Duration;

/// A typed client for one router.
#[derive(Debug, Clone)]
pub struct Client {
    /// `host:port`.
    addr: String,
    connect_timeout: Duration,
    total_timeout: Duration,
}

impl Client {
    /// Address from `WEAVE_HTTP_ADDR` (`host`, `host:port` or `:port`), else 127.0.0.1:6784.
    pub fn from_env() -> Client {
        todo!()
    }

    pub fn new(addr: &str) -> Client {
        let _ = addr;
        todo!()
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn with_timeouts(mut self, connect: Duration, total: Duration) -> Client {
        self.connect_timeout = connect;
        self.total_timeout = total;
        self
    }

    /// `POST /ip/<id>[/<subnet>]` → the allocated CIDR (prefix of the subnet).
    pub fn allocate(&self, id: &str, subnet: Option<Ipv4Net>) -> Result<Ipv4Net> {
        let _ = (id, subnet);
        todo!()
    }

    /// `GET /ip/<id>[/<subnet>]` → the CIDRs `id` owns (empty if none).
    pub fn lookup(&self, id: &str, subnet: Option<Ipv4Net>) -> Result<Vec<Ipv4Net>> {
        let _ = (id, subnet);
        todo!()
    }

    /// `PUT /ip/<id>/<cidr>`: claim a specific address.
    pub fn claim(&self, id: &str, cidr: Ipv4Net) -> Result<()> {
        let _ = (id, cidr);
        todo!()
    }

    /// `DELETE /ip/<id>`: frees every address of `id`. `Ok(false)` when it had none.
    pub fn release(&self, id: &str) -> Result<bool> {
        let _ = id;
        todo!()
    }

    /// `DELETE /ip/<id>/<ip>`: frees one address.
    pub fn release_one(&self, id: &str, ip: Ipv4Addr) -> Result<()> {
        let _ = (id, ip);
        todo!()
    }

    /// `GET /ipinfo/defaultsubnet`.
    pub fn default_subnet(&self) -> Result<Ipv4Net> {
        todo!()
    }

    /// `POST /expose/<ip>/<len>[?skipNAT=true]`: put the address on the bridge (+ NAT).
    pub fn expose(&self, cidr: Ipv4Net, skip_nat: bool) -> Result<()> {
        let _ = (cidr, skip_nat);
        todo!()
    }

    /// `DELETE /expose/<ip>/<len>`: take the address off the bridge and remove its NAT rules.
    pub fn hide(&self, cidr: Ipv4Net) -> Result<()> {
        let _ = cidr;
        todo!()
    }

    /// `GET /status[/<sub>]`: the text body (503 while not ready is returned as text too).
    pub fn status(&self, sub: Option<&str>) -> Result<(u16, String)> {
        let _ = sub;
        todo!()
    }

    /// `GET /report`: JSON.
    pub fn report(&self) -> Result<serde_json::Value> {
        todo!()
    }

    /// `POST /cni/attachments`.
    pub fn register_attachment(&self, a: &Attachment) -> Result<()> {
        let _ = a;
        todo!()
    }

    /// `DELETE /cni/attachments/<id>/<ifname>`.
    pub fn unregister_attachment(&self, container_id: &str, ifname: &str) -> Result<()> {
        let _ = (container_id, ifname);
        todo!()
    }

    /// `GET /cni/attachments`.
    pub fn attachments(&self) -> Result<Vec<Attachment>> {
        todo!()
    }

    /// Any call: `(status, body)`; transport failures are `TryAgainLater`.
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<(u16, String)> {
        let _ = (method, path, body);
        todo!()
    }
}
