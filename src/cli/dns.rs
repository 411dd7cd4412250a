//! `weave dns-add`, `dns-remove` and `dns-lookup`, with Weave's argument forms:
//! `weave dns-add [IP...] [CONTAINER] -h FQDN` (no container: `weave:extern`, a name for
//! addresses outside any container; no IP: the container's own addresses from IPAM),
//! `weave dns-remove [IP...] [CONTAINER] [-h FQDN]`, `weave dns-lookup NAME`.

use super::{CliResult, Ctx, Failure};
use clap::Args;
use std::net::Ipv4Addr;

/// Container ID of names registered for addresses outside any container (Weave's).
pub const EXTERN_ID: &str = "weave:extern";

#[derive(Debug, Args)]
pub struct DnsArgs {
    /// Addresses (IPv4), then optionally the container ID.
    #[arg(value_name = "IP... [CONTAINER]")]
    pub args: Vec<String>,
    /// The name (made absolute; `web` alone is not completed with the domain).
    #[arg(short = 'h', long = "fqdn", value_name = "FQDN")]
    pub fqdn: Option<String>,
    /// Print help (`-h` is the name, as in Weave).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

/// The addresses and the container of `args`: every IPv4 address, and at most one other
/// word, the container.
fn split(cmd: &str, args: &[String]) -> Result<(Vec<Ipv4Addr>, Option<String>), Failure> {
    let mut ips = Vec::new();
    let mut container = None;
    for a in args {
        match a.parse::<Ipv4Addr>() {
            Ok(ip) => ips.push(ip),
            Err(_) if container.is_none() => container = Some(a.clone()),
            Err(_) => {
                return Err(Failure::new(
                    1,
                    format!("weave {cmd}: more than one container given ({a:?})"),
                ))
            }
        }
    }
    Ok((ips, container))
}

/// The container's addresses as the router's IPAM holds them.
fn container_ips(ctx: &Ctx, id: &str) -> Result<Vec<Ipv4Addr>, Failure> {
    Ok(ctx
        .client
        .lookup(id, None)?
        .into_iter()
        .map(|c| c.addr())
        .collect())
}

pub(super) fn add(ctx: &Ctx, a: &DnsArgs) -> CliResult {
    let (mut ips, container) = split("dns-add", &a.args)?;
    let Some(fqdn) = &a.fqdn else {
        return Err(Failure::new(1, "weave dns-add: -h FQDN is required"));
    };
    let id = container.unwrap_or_else(|| EXTERN_ID.to_string());
    if ips.is_empty() {
        if id == EXTERN_ID {
            return Err(Failure::new(
                1,
                "weave dns-add: give the addresses, the container, or both",
            ));
        }
        ips = container_ips(ctx, &id)?;
        if ips.is_empty() {
            return Err(Failure::new(
                1,
                format!("weave dns-add: container {id} has no weave addresses"),
            ));
        }
    }
    for ip in ips {
        ctx.client.dns_add(&id, ip, fqdn)?;
    }
    Ok(())
}

pub(super) fn remove(ctx: &Ctx, a: &DnsArgs) -> CliResult {
    let (ips, container) = split("dns-remove", &a.args)?;
    let id = container.unwrap_or_else(|| EXTERN_ID.to_string());
    if ips.is_empty() {
        ctx.client.dns_remove(&id, None, a.fqdn.as_deref())?;
    }
    for ip in ips {
        ctx.client.dns_remove(&id, Some(ip), a.fqdn.as_deref())?;
    }
    Ok(())
}

/// Prints the addresses of `name`, one per line; exit 1 when it has none.
pub(super) fn lookup(ctx: &Ctx, name: &str) -> CliResult {
    let ips = ctx.client.dns_lookup(name)?;
    if ips.is_empty() {
        return Err(Failure::new(1, ""));
    }
    for ip in ips {
        println!("{ip}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn dash_h_is_the_name() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "weave",
            "dns-add",
            "10.32.0.2",
            "c1",
            "-h",
            "web.weave.local",
        ])
        .unwrap();
        match cli.command {
            crate::cli::Command::DnsAdd(a) => {
                assert_eq!(a.fqdn.as_deref(), Some("web.weave.local"));
                assert_eq!(a.args, ["10.32.0.2", "c1"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn arguments_split_into_addresses_and_one_container() {
        let (ips, c) = split("dns-add", &v(&["10.32.0.2", "abc", "10.32.0.3"])).unwrap();
        assert_eq!(ips.len(), 2);
        assert_eq!(c.as_deref(), Some("abc"));
        let (ips, c) = split("dns-add", &v(&["10.32.0.2"])).unwrap();
        assert_eq!((ips.len(), c), (1, None));
        let e = split("dns-add", &v(&["a", "b"])).unwrap_err();
        assert_eq!(
            e.message,
            "weave dns-add: more than one container given (\"b\")"
        );
    }
}
