//! Which packets skip connection tracking, and where that rule lives; with nftables, also the
//! guard on the API port.
//!
//! Nothing NATs traffic between two container addresses, nor the data plane's own UDP (VXLAN,
//! the encrypted path): tracking them costs a lookup per packet on both hosts whenever
//! conntrack is loaded in the namespace (Docker, NAT rules, portmap), and br_netfilter sends
//! every bridged frame through it. Packets to the bridge's own addresses (an exposed subnet)
//! stay tracked: NAT replies and portmap's hairpin need them.
//!
//! The rules go into the native nftables table `ip weave` ([`TABLE`]) when `nft` is installed:
//! at raw priority, no counters, compared with the same rules through iptables-nft
//! (`WEAVE-NOTRACK*` chains, kept as the fallback) that saves a share of the netfilter work
//! per bridged frame. A matching packet leaves the chain at once (`notrack accept`). The guard
//! that keeps other hosts off the API port on 127.0.0.1 (Weave's INPUT rule) is the chain's
//! last rule there: no INPUT hook for every VXLAN packet that reaches the host. Without `nft`
//! it stays in iptables' INPUT. Blocking: call from `spawn_blocking`.

use super::iptables::{delete_rule, ensure_chain, ensure_rule, strs};
use crate::{Context, ErrorKind, Result, BRIDGE_NAME};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// The router's nftables table (family `ip`).
pub const TABLE: &str = "weave";
/// Fallback raw chain, jumped from PREROUTING for container-to-container packets.
pub const NOTRACK_CHAIN: &str = "WEAVE-NOTRACK";
/// Fallback raw chain, jumped from PREROUTING and OUTPUT: the data plane's UDP.
pub const NOTRACK_UDP_CHAIN: &str = "WEAVE-NOTRACK-UDP";

/// Where the rules went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Nftables,
    Iptables,
}

/// The exemptions of one router: the allocation range and the data plane's UDP ports.
#[derive(Debug, Clone)]
pub struct Notrack {
    range: Ipv4Net,
    udp_ports: Vec<u16>,
    /// The API port guarded on 127.0.0.1 (the API listens on loopback).
    guard: Option<u16>,
    backend: Backend,
}

impl Notrack {
    /// Installs the rules (nftables, else iptables), keeping `tracked` (the bridge's own
    /// addresses) tracked. Idempotent: a restarted router replaces its table's rules. With
    /// the iptables backend the guard is the caller's (see [`Notrack::backend`]).
    pub fn install(
        range: Ipv4Net,
        udp_ports: &[u16],
        guard: Option<u16>,
        tracked: &[Ipv4Addr],
    ) -> Result<Notrack> {
        let mut n = Notrack {
            range: range.trunc(),
            udp_ports: udp_ports.to_vec(),
            guard,
            backend: Backend::Nftables,
        };
        match crate::nftables::apply(&n.nft_script(tracked)) {
            Ok(()) => {
                remove_iptables_rules().context("remove the older iptables notrack rules")?;
                if let Some(port) = guard {
                    super::iptables::remove_input_guard(port)
                        .context("remove the iptables guard")?;
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                tracing::info!("no nft binary: connection-tracking exemptions go through iptables");
                n.backend = Backend::Iptables;
                n.install_iptables(tracked)?;
            }
            Err(e) => return Err(e.context("install the nftables notrack table")),
        }
        Ok(n)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Keeps `addr` (a new bridge address) tracked; `tracked` is every bridge address now.
    pub fn track(&self, addr: Ipv4Addr, tracked: &[Ipv4Addr]) -> Result<()> {
        match self.backend {
            Backend::Nftables => crate::nftables::apply(&self.nft_script(tracked)),
            Backend::Iptables => {
                ensure_rule("raw", NOTRACK_CHAIN, &strs(&tracked_rule(addr)), true)
            }
        }
    }

    /// Forgets `addr` (a removed bridge address); `tracked` is every bridge address now.
    pub fn untrack(&self, addr: Ipv4Addr, tracked: &[Ipv4Addr]) -> Result<()> {
        match self.backend {
            Backend::Nftables => crate::nftables::apply(&self.nft_script(tracked)),
            Backend::Iptables => delete_rule("raw", NOTRACK_CHAIN, &strs(&tracked_rule(addr))),
        }
    }

    /// The whole table as one transaction: created if missing, its chains' rules replaced.
    /// Rules are ordered for the common packet: cross-host container traffic matches the
    /// first; the exception for the bridge's addresses is compared only when there is one.
    pub fn nft_script(&self, tracked: &[Ipv4Addr]) -> String {
        let t = TABLE;
        let range = self.range;
        let mut s = format!(
            "add table ip {t}\n\
             add chain ip {t} prerouting {{ type filter hook prerouting priority raw; policy accept; }}\n\
             add chain ip {t} output {{ type filter hook output priority raw; policy accept; }}\n\
             flush chain ip {t} prerouting\n\
             flush chain ip {t} output\n"
        );
        let except = nft_set(tracked).map_or(String::new(), |a| format!(" ip daddr != {a}"));
        s += &format!(
            "add rule ip {t} prerouting ip saddr {range} ip daddr {range}{except} notrack accept\n"
        );
        if let Some(ports) = nft_set(&self.udp_ports) {
            for chain in ["prerouting", "output"] {
                s += &format!("add rule ip {t} {chain} udp dport {ports} notrack accept\n");
            }
        }
        if let Some(port) = self.guard {
            s += &format!(
                "add rule ip {t} prerouting ip daddr 127.0.0.1 tcp dport {port} \
                 fib saddr type != local drop\n"
            );
        }
        s
    }

    fn install_iptables(&self, tracked: &[Ipv4Addr]) -> Result<()> {
        let b = BRIDGE_NAME;
        let range = self.range.to_string();
        ensure_chain("raw", NOTRACK_CHAIN)?;
        let notrack = ["-s", &range, "-d", &range, "-j", "CT", "--notrack"];
        ensure_rule("raw", NOTRACK_CHAIN, &notrack, false)?;
        for addr in tracked {
            ensure_rule("raw", NOTRACK_CHAIN, &strs(&tracked_rule(*addr)), true)?;
        }
        ensure_rule("raw", "PREROUTING", &["-i", b, "-j", NOTRACK_CHAIN], false)?;
        // Container traffic routed in from a neighbour (routed path) arrives on the underlay.
        let routed_in = [
            "!",
            "-i",
            b,
            "-s",
            &range,
            "-d",
            &range,
            "-j",
            NOTRACK_CHAIN,
        ];
        ensure_rule("raw", "PREROUTING", &routed_in, false)?;
        if self.udp_ports.is_empty() {
            return Ok(());
        }
        ensure_chain("raw", NOTRACK_UDP_CHAIN)?;
        for port in &self.udp_ports {
            let port = port.to_string();
            let rule = ["-p", "udp", "--dport", &port, "-j", "CT", "--notrack"];
            ensure_rule("raw", NOTRACK_UDP_CHAIN, &rule, false)?;
        }
        for hook in ["PREROUTING", "OUTPUT"] {
            ensure_rule("raw", hook, &["-j", NOTRACK_UDP_CHAIN], false)?;
        }
        Ok(())
    }
}

/// `items` as an nftables value: one alone, several as an anonymous set; none: None.
fn nft_set(items: &[impl ToString]) -> Option<String> {
    match items {
        [] => None,
        [one] => Some(one.to_string()),
        many => {
            let all: Vec<String> = many.iter().map(ToString::to_string).collect();
            Some(format!("{{ {} }}", all.join(", ")))
        }
    }
}

/// The fallback's rule keeping packets to a bridge address tracked.
fn tracked_rule(addr: Ipv4Addr) -> [String; 4] {
    [
        "-d".into(),
        format!("{addr}/32"),
        "-j".into(),
        "RETURN".into(),
    ]
}

/// Removes the iptables notrack chains a router without `nft` (or an older version) left,
/// so a packet is not walked through both. One listing when there is nothing to remove.
fn remove_iptables_rules() -> Result<()> {
    let listing = match crate::iptables::run(&["-t", "raw", "-S"]) {
        Ok(l) => l,
        // No iptables, or no raw table: nothing of ours there.
        Err(_) => return Ok(()),
    };
    if !listing.contains(NOTRACK_CHAIN) {
        return Ok(());
    }
    for line in listing.lines() {
        let Some(words) = crate::iptables::split_rule(line) else {
            continue;
        };
        let ours = words.iter().any(|w| w.starts_with(NOTRACK_CHAIN));
        if ours && words.len() > 2 && words[0] == "-A" && !words[1].starts_with(NOTRACK_CHAIN) {
            let rule: Vec<&str> = words[2..].iter().map(String::as_str).collect();
            delete_rule("raw", &words[1], &rule)?;
        }
    }
    for chain in [NOTRACK_CHAIN, NOTRACK_UDP_CHAIN] {
        if listing.contains(&format!("-N {chain}")) {
            crate::iptables::run(&["-t", "raw", "-F", chain])?;
            crate::iptables::run(&["-t", "raw", "-X", chain])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notrack(ports: &[u16]) -> Notrack {
        Notrack {
            range: "10.32.0.0/12".parse().unwrap(),
            udp_ports: ports.to_vec(),
            guard: None,
            backend: Backend::Nftables,
        }
    }

    #[test]
    fn the_table_exempts_container_traffic_and_the_data_plane_udp() {
        let mut n = notrack(&[6784]);
        n.guard = Some(6784);
        let s = n.nft_script(&[]);
        let rules: Vec<&str> = s.lines().filter(|l| l.starts_with("add rule")).collect();
        assert_eq!(
            rules,
            [
                "add rule ip weave prerouting ip saddr 10.32.0.0/12 ip daddr 10.32.0.0/12 notrack accept",
                "add rule ip weave prerouting udp dport 6784 notrack accept",
                "add rule ip weave output udp dport 6784 notrack accept",
                "add rule ip weave prerouting ip daddr 127.0.0.1 tcp dport 6784 \
                 fib saddr type != local drop",
            ]
        );
        // Replacing, not appending: a restarted router does not double its rules.
        assert!(s.contains("flush chain ip weave prerouting\n"));
        assert!(s.contains("flush chain ip weave output\n"));
    }

    #[test]
    fn bridge_addresses_stay_tracked_and_ports_are_a_set() {
        let one = notrack(&[6784, 6786]).nft_script(&["10.32.0.1".parse().unwrap()]);
        assert!(one.contains("ip daddr 10.32.0.0/12 ip daddr != 10.32.0.1 notrack accept"));
        assert!(one.contains("add rule ip weave output udp dport { 6784, 6786 } notrack accept"));
        let two =
            notrack(&[]).nft_script(&["10.32.0.1".parse().unwrap(), "10.33.0.1".parse().unwrap()]);
        assert!(two.contains("ip daddr != { 10.32.0.1, 10.33.0.1 } notrack accept"));
        assert!(!two.contains("udp dport"), "no ports, no UDP rule:\n{two}");
    }
}
