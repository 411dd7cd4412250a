//! `weave expose`, `weave hide` and `weave ps`: the host's own addresses on the bridge
//! (owned by the IPAM ID `weave:expose`) and the containers attached to it.

use super::{block_on, CliResult, Ctx, Failure};
use crate::attachment::format_mac;
use crate::netlink::Netlink;
use crate::{BRIDGE_NAME, EXPOSE_ID};
use clap::Args;
use ipnet::Ipv4Net;

#[derive(Debug, Clone, Args)]
pub struct ExposeArgs {
    /// `CIDR` or `ip:CIDR` (that address), `net:CIDR` (any address of that subnet) or
    /// `net:default` (the default subnet; used when none is given).
    #[arg(value_name = "ADDR")]
    pub addrs: Vec<String>,
    /// Do not masquerade traffic from containers to the outside through this address.
    #[arg(long)]
    pub without_masquerade: bool,
}

/// One address argument, as Weave's script reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrArg {
    /// `net:default`: allocate from the default subnet.
    DefaultSubnet,
    /// `net:CIDR`: allocate from this subnet.
    Subnet(Ipv4Net),
    /// `CIDR` or `ip:CIDR`: exactly this address.
    Address(Ipv4Net),
}

impl std::str::FromStr for AddrArg {
    type Err = String;

    fn from_str(s: &str) -> Result<AddrArg, String> {
        let parse = |c: &str| {
            c.parse::<Ipv4Net>().map_err(|_| {
                format!("invalid address {s:?}: expected an IPv4 CIDR like 10.2.1.1/24")
            })
        };
        if s == "net:default" {
            Ok(AddrArg::DefaultSubnet)
        } else if let Some(net) = s.strip_prefix("net:") {
            Ok(AddrArg::Subnet(parse(net)?.trunc()))
        } else {
            Ok(AddrArg::Address(parse(s.strip_prefix("ip:").unwrap_or(s))?))
        }
    }
}

/// Parses the arguments; none means `net:default`.
pub fn parse_addr_args(args: &[String]) -> Result<Vec<AddrArg>, Failure> {
    if args.is_empty() {
        return Ok(vec![AddrArg::DefaultSubnet]);
    }
    args.iter()
        .map(|a| a.parse().map_err(|e: String| Failure::new(1, e)))
        .collect()
}

/// Allocates (or claims) each address for `weave:expose` and puts it on the bridge. Both
/// steps are idempotent, so exposing again prints the same addresses.
pub(super) fn expose(ctx: &Ctx, args: &ExposeArgs) -> CliResult {
    let mut ips = Vec::new();
    for arg in parse_addr_args(&args.addrs)? {
        let cidr = match arg {
            AddrArg::DefaultSubnet => ctx.client.allocate(EXPOSE_ID, None)?,
            AddrArg::Subnet(net) => ctx.client.allocate(EXPOSE_ID, Some(net))?,
            AddrArg::Address(cidr) => {
                ctx.client.claim(EXPOSE_ID, cidr)?;
                cidr
            }
        };
        ctx.client.expose(cidr, args.without_masquerade)?;
        ips.push(cidr.addr().to_string());
    }
    println!("{}", ips.join(" "));
    Ok(())
}

/// Takes each address off the bridge (and its NAT rules), then frees it.
pub(super) fn hide(ctx: &Ctx, args: &[String]) -> CliResult {
    let mut ips = Vec::new();
    for arg in parse_addr_args(args)? {
        let cidrs = match arg {
            AddrArg::DefaultSubnet => ctx.client.lookup(EXPOSE_ID, None)?,
            AddrArg::Subnet(net) => ctx.client.lookup(EXPOSE_ID, Some(net))?,
            AddrArg::Address(cidr) => vec![cidr],
        };
        for cidr in cidrs {
            ctx.client.hide(cidr)?;
            ctx.client.release_one(EXPOSE_ID, cidr.addr())?;
            ips.push(cidr.addr().to_string());
        }
    }
    if !ips.is_empty() {
        println!("{}", ips.join(" "));
    }
    Ok(())
}

/// `weave:expose <bridge mac> <cidrs>`, then `<cid12> <ifname> <mac> <cidrs>` per attachment.
pub(super) fn ps(ctx: &Ctx) -> CliResult {
    let attachments = ctx.client.attachments()?;
    let bridge = block_on(async {
        let nl = Netlink::open()?;
        match nl.link(BRIDGE_NAME).await? {
            Some(link) => {
                let addrs = nl.addresses_v4(link.index).await?;
                Ok::<_, crate::Error>(Some((link.mac, addrs)))
            }
            None => Ok(None),
        }
    })??;
    if let Some((mac, addrs)) = bridge {
        let cidrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        println!(
            "{}",
            join_nonempty(&[EXPOSE_ID, &format_mac(&mac), &cidrs.join(" ")])
        );
    }
    for a in attachments {
        let id: String = a.container_id.chars().take(12).collect();
        println!(
            "{}",
            join_nonempty(&[&id, &a.ifname, &a.mac, &a.ips.join(" ")])
        );
    }
    Ok(())
}

fn join_nonempty(parts: &[&str]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_args_follow_weave_forms() {
        let a = |s: &str| s.parse::<AddrArg>();
        assert_eq!(a("net:default"), Ok(AddrArg::DefaultSubnet));
        assert_eq!(
            a("net:10.2.3.0/16"),
            Ok(AddrArg::Subnet("10.2.0.0/16".parse().unwrap()))
        );
        assert_eq!(
            a("ip:10.2.1.1/24"),
            Ok(AddrArg::Address("10.2.1.1/24".parse().unwrap()))
        );
        assert_eq!(
            a("10.2.1.1/24"),
            Ok(AddrArg::Address("10.2.1.1/24".parse().unwrap()))
        );
        assert!(a("10.2.1.1").is_err());
        assert!(a("net:bogus").is_err());
        assert_eq!(parse_addr_args(&[]).unwrap(), vec![AddrArg::DefaultSubnet]);
    }

    #[test]
    fn mac_is_lowercase_colon_hex() {
        assert_eq!(
            format_mac(&[0x0a, 0xbc, 0, 1, 2, 0xff]),
            "0a:bc:00:01:02:ff"
        );
    }
}
