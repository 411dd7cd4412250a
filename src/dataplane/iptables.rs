//! The router's iptables rules, through [`crate::iptables`] (blocking: call from
//! `spawn_blocking`).
//! Every change checks first (`-C`), so applying the same rule twice is harmless.

use crate::{Result, BRIDGE_NAME};
use ipnet::Ipv4Net;

/// NAT chain for exposed subnets, jumped from POSTROUTING.
pub const NAT_CHAIN: &str = "WEAVE";
/// Filter chain accepting traffic to exposed subnets, jumped from FORWARD for `-o weave`.
pub const EXPOSE_CHAIN: &str = "WEAVE-EXPOSE";
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

/// The rules the router always wants in iptables: forwarding for the bridge, and the guard
/// keeping other hosts off the API port (`guard`: the API listens on loopback and there is
/// no nftables table to hold it; see [`super::notrack`]). Bridge-to-bridge comes first:
/// with br_netfilter every bridged frame, local or from a VXLAN peer, walks FORWARD. Nothing
/// here needs connection tracking, so a namespace without other users of conntrack does not
/// load it for us; the rules that need it come with the first [`expose`].
pub fn configure_base(guard: Option<u16>) -> Result<()> {
    let b = BRIDGE_NAME;
    ensure_chain("filter", EXPOSE_CHAIN)?;
    ensure_rule(
        "filter",
        "FORWARD",
        &["-i", b, "-o", b, "-j", "ACCEPT"],
        false,
    )?;
    ensure_rule(
        "filter",
        "FORWARD",
        &["-i", b, "!", "-o", b, "-j", "ACCEPT"],
        false,
    )?;
    ensure_rule("filter", "FORWARD", &["-o", b, "-j", EXPOSE_CHAIN], false)?;
    if let Some(port) = guard {
        let port = port.to_string();
        // An older router's form of the guard matched conntrack state too.
        delete_rule("filter", "INPUT", &tracked_input_guard(&port))?;
        ensure_rule("filter", "INPUT", &input_guard(&port), true)?;
    }
    Ok(())
}

/// Removes the iptables forms of the guard on `port` (the nftables table holds it now).
pub fn remove_input_guard(port: u16) -> Result<()> {
    let port = port.to_string();
    delete_rule("filter", "INPUT", &tracked_input_guard(&port))?;
    delete_rule("filter", "INPUT", &input_guard(&port))
}

/// The rules an exposed subnet needs besides its own: replies to connections the hosts'
/// masquerading (or portmap) made come back into the bridge; the NAT chain.
fn configure_exposed(skip_nat: bool) -> Result<()> {
    let b = BRIDGE_NAME;
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
    if !skip_nat {
        ensure_chain("nat", NAT_CHAIN)?;
        ensure_rule("nat", "POSTROUTING", &["-j", NAT_CHAIN], false)?;
    }
    Ok(())
}

/// Weave's guard on the control port: drop connections to it on 127.0.0.1 that do not come
/// from a local address (e.g. routed in by a container with route_localnet tricks). Weave's
/// rule also spares established connections, which loads conntrack; a packet to this port
/// is always client to server, and a foreign client's first packet is already dropped.
pub fn input_guard(port: &str) -> Vec<&str> {
    let mut rule = vec![
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
    ];
    rule.extend(GUARD_TAIL);
    rule
}

const GUARD_TAIL: [&str; 6] = [
    "-m",
    "comment",
    "--comment",
    "Block non-local access to Weave Net control port",
    "-j",
    "DROP",
];

/// The guard as routers before this one installed it (with conntrack state).
fn tracked_input_guard(port: &str) -> Vec<&str> {
    let mut rule = input_guard(port);
    rule.truncate(rule.len() - GUARD_TAIL.len());
    rule.extend(["-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED"]);
    rule.extend(GUARD_TAIL);
    rule
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

/// Borrowed views of owned rule words, for [`ensure_rule`] and [`delete_rule`].
pub(super) fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Firewall side of `expose`: accept forwarding to the subnet and, unless `skip_nat`,
/// masquerade traffic leaving or entering it.
pub fn expose(cidr: Ipv4Net, skip_nat: bool) -> Result<()> {
    configure_exposed(skip_nat)?;
    ensure_rule("filter", EXPOSE_CHAIN, &strs(&expose_rule(cidr)), false)?;
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
