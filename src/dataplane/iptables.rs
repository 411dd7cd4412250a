//! The router's iptables rules, through [`crate::iptables`] (blocking: call from
//! `spawn_blocking`).
//! Every change checks first (`-C`), so applying the same rule twice is harmless.

use crate::{Result, BRIDGE_NAME};
use ipnet::Ipv4Net;

/// NAT chain for exposed subnets, jumped from POSTROUTING.
pub const NAT_CHAIN: &str = "WEAVE";
/// Filter chain accepting traffic to exposed subnets, jumped from FORWARD for `-o weave`.
pub const EXPOSE_CHAIN: &str = "WEAVE-EXPOSE";
/// Raw chain, jumped from PREROUTING for packets arriving on the bridge: traffic between two
/// container addresses skips connection tracking (nothing NATs it, and br_netfilter would
/// otherwise track every bridged frame, local and from VXLAN peers: ~10% of cross-host
/// throughput). Packets to the bridge's own addresses stay tracked (NAT replies, portmap's
/// hairpin SNAT).
pub const NOTRACK_CHAIN: &str = "WEAVE-NOTRACK";
/// Raw chain, jumped from PREROUTING and OUTPUT: the VXLAN packets themselves (UDP to the
/// data-plane port, both ways) and the encrypted path's datagrams skip connection tracking. Nothing NATs them, and tracking
/// every encapsulated packet (one conntrack lookup on send, one on receive, on top of the
/// filter chains) costs throughput once conntrack is loaded (Docker, our NAT rules).
pub const NOTRACK_UDP_CHAIN: &str = "WEAVE-NOTRACK-UDP";

use crate::iptables::output as iptables;

fn run_ok(args: &[&str]) -> Result<()> {
    crate::iptables::run(args).map(drop)
}

/// True if the rule exists (`-C`).
pub fn rule_exists(table: &str, chain: &str, rule: &[&str]) -> Result<bool> {
    let mut args = vec!["-t", table, "-C", chain];
    args.extend_from_slice(rule);
    let out = iptables(&args)?;
    Ok(out.status.success())
}

/// Creates `chain` in `table` unless it exists.
pub fn ensure_chain(table: &str, chain: &str) -> Result<()> {
    if iptables(&["-t", table, "-S", chain])?.status.success() {
        return Ok(());
    }
    run_ok(&["-t", table, "-N", chain])
}

/// Appends (or, with `insert`, inserts at the top) the rule unless it exists.
pub fn ensure_rule(table: &str, chain: &str, rule: &[&str], insert: bool) -> Result<()> {
    if rule_exists(table, chain, rule)? {
        return Ok(());
    }
    let mut args = vec!["-t", table, if insert { "-I" } else { "-A" }, chain];
    args.extend_from_slice(rule);
    run_ok(&args)
}

/// Deletes every copy of the rule; a missing rule or chain is fine.
pub fn delete_rule(table: &str, chain: &str, rule: &[&str]) -> Result<()> {
    while rule_exists(table, chain, rule)? {
        let mut args = vec!["-t", table, "-D", chain];
        args.extend_from_slice(rule);
        run_ok(&args)?;
    }
    Ok(())
}

/// The rules the router always wants: forwarding for the bridge, the NAT and expose chains,
/// and (when the API listens on loopback) the INPUT rule keeping other hosts off the API port.
pub fn configure_base(protect_port: Option<u16>, range: Ipv4Net, udp_ports: &[u16]) -> Result<()> {
    let b = BRIDGE_NAME;
    ensure_chain("raw", NOTRACK_CHAIN)?;
    let range = range.trunc().to_string();
    ensure_rule(
        "raw",
        NOTRACK_CHAIN,
        &["-s", &range, "-d", &range, "-j", "CT", "--notrack"],
        false,
    )?;
    ensure_rule("raw", "PREROUTING", &["-i", b, "-j", NOTRACK_CHAIN], false)?;
    // Container traffic routed in from a neighbour (routed path) arrives on the underlay.
    ensure_rule(
        "raw",
        "PREROUTING",
        &[
            "!",
            "-i",
            b,
            "-s",
            &range,
            "-d",
            &range,
            "-j",
            NOTRACK_CHAIN,
        ],
        false,
    )?;
    if !udp_ports.is_empty() {
        ensure_chain("raw", NOTRACK_UDP_CHAIN)?;
    }
    for port in udp_ports {
        let port = port.to_string();
        ensure_rule(
            "raw",
            NOTRACK_UDP_CHAIN,
            &["-p", "udp", "--dport", &port, "-j", "CT", "--notrack"],
            false,
        )?;
    }
    if !udp_ports.is_empty() {
        for hook in ["PREROUTING", "OUTPUT"] {
            ensure_rule("raw", hook, &["-j", NOTRACK_UDP_CHAIN], false)?;
        }
    }
    ensure_chain("filter", EXPOSE_CHAIN)?;
    ensure_rule(
        "filter",
        "FORWARD",
        &["-i", b, "!", "-o", b, "-j", "ACCEPT"],
        false,
    )?;
    ensure_rule(
        "filter",
        "FORWARD",
        &[
            "-o",
            b,
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            "-j",
            "ACCEPT",
        ],
        false,
    )?;
    ensure_rule(
        "filter",
        "FORWARD",
        &["-i", b, "-o", b, "-j", "ACCEPT"],
        false,
    )?;
    ensure_rule("filter", "FORWARD", &["-o", b, "-j", EXPOSE_CHAIN], false)?;
    ensure_chain("nat", NAT_CHAIN)?;
    ensure_rule("nat", "POSTROUTING", &["-j", NAT_CHAIN], false)?;
    if let Some(port) = protect_port {
        let port = port.to_string();
        ensure_rule("filter", "INPUT", &input_guard(&port), true)?;
    }
    Ok(())
}

/// Weave's rule: drop new connections to the control port on 127.0.0.1 that do not come from
/// a local address (e.g. routed in by a container with route_localnet tricks).
pub fn input_guard(port: &str) -> Vec<&str> {
    vec![
        "-p",
        "tcp",
        "-d",
        "127.0.0.1/32",
        "--dport",
        port,
        "-m",
        "addrtype",
        "!",
        "--src-type",
        "LOCAL",
        "-m",
        "conntrack",
        "!",
        "--ctstate",
        "RELATED,ESTABLISHED",
        "-m",
        "comment",
        "--comment",
        "Block non-local access to Weave Net control port",
        "-j",
        "DROP",
    ]
}

/// The three NAT rules of an exposed subnet, as argument lists.
pub fn nat_rules(cidr: Ipv4Net) -> [Vec<String>; 3] {
    let c = cidr.trunc().to_string();
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    [
        v(&["-s", &c, "-d", "224.0.0.0/4", "-j", "RETURN"]),
        v(&["-d", &c, "!", "-s", &c, "-j", "MASQUERADE"]),
        v(&["-s", &c, "!", "-d", &c, "-j", "MASQUERADE"]),
    ]
}

fn expose_rule(cidr: Ipv4Net) -> Vec<String> {
    vec![
        "-d".into(),
        cidr.trunc().to_string(),
        "-j".into(),
        "ACCEPT".into(),
    ]
}

/// Keeps packets to the bridge address `cidr.addr()` tracked (see [`NOTRACK_CHAIN`]).
fn tracked_rule(cidr: Ipv4Net) -> Vec<String> {
    vec![
        "-d".into(),
        format!("{}/32", cidr.addr()),
        "-j".into(),
        "RETURN".into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Firewall side of `expose`: accept forwarding to the subnet and, unless `skip_nat`,
/// masquerade traffic leaving or entering it.
pub fn expose(cidr: Ipv4Net, skip_nat: bool) -> Result<()> {
    ensure_rule("filter", EXPOSE_CHAIN, &strs(&expose_rule(cidr)), false)?;
    ensure_rule("raw", NOTRACK_CHAIN, &strs(&tracked_rule(cidr)), true)?;
    if !skip_nat {
        for r in nat_rules(cidr) {
            ensure_rule("nat", NAT_CHAIN, &strs(&r), false)?;
        }
    }
    Ok(())
}

/// Undoes [`expose`] (whether or not NAT had been skipped).
pub fn hide(cidr: Ipv4Net) -> Result<()> {
    delete_rule("filter", EXPOSE_CHAIN, &strs(&expose_rule(cidr)))?;
    delete_rule("raw", NOTRACK_CHAIN, &strs(&tracked_rule(cidr)))?;
    for r in nat_rules(cidr) {
        delete_rule("nat", NAT_CHAIN, &strs(&r))?;
    }
    Ok(())
}

/// The routed path's forwarding rule: container traffic routed in from a neighbour (on the
/// underlay, so not `-i weave`) to a container here. A new connection would otherwise only be
/// accepted for exposed subnets.
pub fn allow_routed(range: Ipv4Net) -> Result<()> {
    let range = range.trunc().to_string();
    ensure_rule(
        "filter",
        "FORWARD",
        &[
            "-s",
            &range,
            "-d",
            &range,
            "-o",
            BRIDGE_NAME,
            "-j",
            "ACCEPT",
        ],
        false,
    )
}
