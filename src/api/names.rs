//! The client side of the router's weaveDNS API (`/name`), for `weave dns-*` and
//! `weave-mesos dns-sync`.

use super::client::{encode_segment, Client};
use crate::{Context, Error, ErrorKind, Result};
use std::net::Ipv4Addr;

impl Client {
    /// `PUT /name/<container-id>/<ip>?fqdn=<name>`: registers the name (idempotent).
    pub fn dns_add(&self, container_id: &str, ip: Ipv4Addr, fqdn: &str) -> Result<()> {
        let path = format!(
            "/name/{}/{ip}?fqdn={}",
            encode_segment(container_id),
            encode_segment(fqdn)
        );
        self.expect_ok("PUT", &path, Some(b"")).map(drop)
    }

    /// `DELETE /name/<container-id>[/<ip>][?fqdn=<name>]`: removes this router's records of
    /// the container, narrowed to an address and a name when given. Removing nothing is
    /// not an error.
    pub fn dns_remove(
        &self,
        container_id: &str,
        ip: Option<Ipv4Addr>,
        fqdn: Option<&str>,
    ) -> Result<()> {
        let mut path = format!("/name/{}", encode_segment(container_id));
        if let Some(ip) = ip {
            path.push_str(&format!("/{ip}"));
        }
        if let Some(n) = fqdn {
            path.push_str(&format!("?fqdn={}", encode_segment(n)));
        }
        self.expect_ok("DELETE", &path, None).map(drop)
    }

    /// `GET /name/<fqdn>`: the addresses the name resolves to (any peer's records).
    pub fn dns_lookup(&self, fqdn: &str) -> Result<Vec<Ipv4Addr>> {
        let path = format!("/name/{}", encode_segment(fqdn));
        let body = self.expect_ok("GET", &path, None)?;
        body.split_whitespace()
            .map(|s| {
                s.parse().map_err(|_| {
                    Error::new(
                        ErrorKind::Router,
                        format!("unexpected answer {s:?}: not an IPv4 address"),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("GET {path}"))
    }
}
