//! Host port mappings for Mesos tasks: `args["org.apache.mesos"].network_info.port_mappings`
//! become DNAT rules, so that Mesos users need neither `mesos-cni-port-mapper` nor a chained
//! `portmap` plugin. (`runtimeConfig.portMappings` stays the chained `portmap` plugin's job:
//! `weave setup` declares that capability for it, not for us.)
//!
//! Rules, all in the current (host) network namespace, each tagged with a comment naming the
//! container ID and interface ([`tag`]):
//! - nat `WEAVE-PORTMAP` (from `PREROUTING` and from `OUTPUT` for local destinations, as
//!   Mesos' own port-mapper does): `-p <proto> --dport <host port> -j DNAT` to the container.
//! - nat `WEAVE-PORTMAP-MASQ` (from `POSTROUTING`): connections whose source is in the
//!   container's subnet (another container on this host, the container itself, a container
//!   on another host of the same flat subnet) are masqueraded to the bridge, else the reply
//!   would go straight over the bridge/overlay and never be un-DNATed.
//! - filter `FORWARD -o <bridge> --ctstate DNAT -j ACCEPT`, once, for hosts whose FORWARD
//!   policy drops (the router only accepts exposed subnets); and `net.ipv4.ip_forward=1`.
//!
//! Not supported: `127.0.0.1:<host port>` from the host itself (that needs `route_localnet`
//! on the bridge, which would let containers reach loopback-only services such as the
//! router's API); the host's other addresses work. `OUTPUT` skips 127.0.0.0/8 like Mesos.
//!
//! Cost: nothing without mappings. With mappings, ADD runs `iptables-save` once and
//! `iptables-restore --noflush` once (one atomic transaction per table, so a failed ADD leaves
//! no rule behind) under a file lock that also makes the conflict check race-free. DEL lists
//! the nat table only when its config carries mappings (Mesos passes DEL the ADD config) or
//! could not be read; GC always does.

use crate::cni::{CmdArgs, GcAttachment, NetConf, PortMapping};
use crate::iptables::{restore_noflush as restore, split_rule};
use crate::{Error, ErrorKind, Result};
use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// nat chain holding one DNAT rule per mapping.
pub const CHAIN: &str = "WEAVE-PORTMAP";
/// nat chain holding one hairpin MASQUERADE rule per mapping.
pub const MASQ_CHAIN: &str = "WEAVE-PORTMAP-MASQ";
/// Every tag starts with this (also what `weave reset` and humans grep for).
pub const TAG_PREFIX: &str = "weave-net portmap";
const FORWARD_COMMENT: &str = "weave-net port mappings";
const LOCK_PATH: &str = "/run/weave/portmap.lock";
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// iptables comments hold at most 255 bytes.
const MAX_COMMENT: usize = 255;

/// The comment that marks a container interface's rules. Long IDs (CNI allows 255 bytes) or
/// unusual interface names are replaced by a hash, still unique per (ID, ifname).
pub fn tag(container_id: &str, ifname: &str) -> String {
    let plain = format!("{TAG_PREFIX} {container_id} {ifname}");
    let safe = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    };
    if plain.len() <= MAX_COMMENT && safe(container_id) && safe(ifname) {
        return plain;
    }
    let mut h = Sha256::new();
    h.update(container_id.as_bytes());
    h.update([0]);
    h.update(ifname.as_bytes());
    let hex: String = h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{TAG_PREFIX} sha256:{hex}")
}

/// The mappings this plugin installs: Mesos' only.
pub fn mappings(conf: &NetConf) -> &[PortMapping] {
    conf.mesos
        .as_ref()
        .map(|m| m.port_mappings.as_slice())
        .unwrap_or_default()
}

/// One rule from `iptables-save`: table, chain and the words after `-A <chain>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRule {
    pub table: String,
    pub chain: String,
    pub spec: Vec<String>,
}

impl SavedRule {
    fn value_of(&self, flag: &str) -> Option<&str> {
        let i = self.spec.iter().position(|w| w == flag)?;
        self.spec.get(i + 1).map(String::as_str)
    }

    fn comment(&self) -> Option<&str> {
        self.value_of("--comment")
    }

    fn jumps_to(&self, target: &str) -> bool {
        self.value_of("-j") == Some(target)
    }
}

/// What `iptables-save` showed: declared chains per table and their rules.
#[derive(Debug, Default)]
pub struct Listing {
    pub chains: Vec<(String, String)>,
    pub rules: Vec<SavedRule>,
}

impl Listing {
    pub fn parse(text: &str) -> Listing {
        let mut l = Listing::default();
        let mut table = String::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.trim().to_string();
            } else if let Some(c) = line.strip_prefix(':') {
                if let Some(name) = c.split_whitespace().next() {
                    l.chains.push((table.clone(), name.to_string()));
                }
            } else if line.starts_with("-A ") {
                let Some(mut words) = split_rule(line) else {
                    continue;
                };
                if words.len() < 2 {
                    continue;
                }
                let spec = words.split_off(2);
                l.rules.push(SavedRule {
                    table: table.clone(),
                    chain: words.pop().unwrap_or_default(),
                    spec,
                });
            }
        }
        l
    }

    fn has_chain(&self, table: &str, chain: &str) -> bool {
        self.chains.iter().any(|(t, c)| t == table && c == chain)
    }

    fn has_jump(&self, table: &str, from: &str, to: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.table == table && r.chain == from && r.jumps_to(to))
    }

    /// Our tagged rules (in our nat chains) whose tag satisfies `pick`.
    fn tagged<'a>(
        &'a self,
        pick: impl Fn(&str) -> bool + 'a,
    ) -> impl Iterator<Item = &'a SavedRule> {
        self.rules.iter().filter(move |r| {
            r.table == "nat"
                && (r.chain == CHAIN || r.chain == MASQ_CHAIN)
                && r.comment()
                    .is_some_and(|c| c.starts_with(TAG_PREFIX) && pick(c))
        })
    }
}

/// Quotes a word for `iptables-restore` when it holds spaces or quotes.
fn quote(w: &str) -> String {
    if !w.is_empty()
        && !w
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\\')
    {
        return w.to_string();
    }
    let mut s = String::from("\"");
    for c in w.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

fn line(op: &str, chain: &str, spec: &[String]) -> String {
    let mut l = format!("{op} {chain}");
    for w in spec {
        l.push(' ');
        l.push_str(&quote(w));
    }
    l
}

fn words(s: &[&str]) -> Vec<String> {
    s.iter().map(|w| w.to_string()).collect()
}

fn dnat_spec(m: &PortMapping, tag: &str, address: Ipv4Net) -> Vec<String> {
    let (dport, to) = (
        m.host_port.to_string(),
        format!("{}:{}", address.addr(), m.container_port),
    );
    let p = m.protocol.as_str();
    words(&[
        "-p",
        p,
        "-m",
        p,
        "--dport",
        &dport,
        "-m",
        "comment",
        "--comment",
        tag,
        "-j",
        "DNAT",
        "--to-destination",
        &to,
    ])
}

fn masq_spec(m: &PortMapping, tag: &str, address: Ipv4Net) -> Vec<String> {
    let (src, dst, dport) = (
        address.trunc().to_string(),
        format!("{}/32", address.addr()),
        m.container_port.to_string(),
    );
    let p = m.protocol.as_str();
    words(&[
        "-s",
        &src,
        "-d",
        &dst,
        "-p",
        p,
        "-m",
        p,
        "--dport",
        &dport,
        "-m",
        "conntrack",
        "--ctstate",
        "DNAT",
        "-m",
        "comment",
        "--comment",
        tag,
        "-j",
        "MASQUERADE",
    ])
}

fn forward_spec(bridge: &str) -> Vec<String> {
    words(&[
        "-o",
        bridge,
        "-m",
        "conntrack",
        "--ctstate",
        "DNAT",
        "-m",
        "comment",
        "--comment",
        FORWARD_COMMENT,
        "-j",
        "ACCEPT",
    ])
}

/// The `iptables-restore --noflush` input that installs `mappings` for `tag` (replacing what
/// that tag had, so a repeated ADD is idempotent), creating chains and jumps that are
/// missing. Fails, changing nothing, on a host port another tag already maps.
pub fn plan_add(
    listing: &Listing,
    tag: &str,
    mappings: &[PortMapping],
    address: Ipv4Net,
    bridge: &str,
) -> Result<String> {
    for (i, m) in mappings.iter().enumerate() {
        if mappings[..i]
            .iter()
            .any(|o| o.host_port == m.host_port && o.protocol == m.protocol)
        {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "map host port {}/{}: listed twice in port_mappings",
                    m.host_port, m.protocol
                ),
            ));
        }
        let taken = listing.tagged(|c| c != tag).find(|r| {
            r.chain == CHAIN
                && r.value_of("-p") == Some(m.protocol.as_str())
                && r.value_of("--dport") == Some(m.host_port.to_string().as_str())
        });
        if let Some(r) = taken {
            let owner = r.comment().unwrap_or_default();
            let owner = owner.strip_prefix(TAG_PREFIX).unwrap_or(owner).trim();
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "map host port {}/{}: already mapped for container {owner:?}",
                    m.host_port, m.protocol
                ),
            ));
        }
    }
    let mut nat = vec!["*nat".to_string()];
    for chain in [CHAIN, MASQ_CHAIN] {
        if !listing.has_chain("nat", chain) {
            nat.push(format!(":{chain} - [0:0]"));
        }
    }
    let local = words(&["-m", "addrtype", "--dst-type", "LOCAL", "-j", CHAIN]);
    if !listing.has_jump("nat", "PREROUTING", CHAIN) {
        nat.push(line("-A", "PREROUTING", &local));
    }
    if !listing.has_jump("nat", "OUTPUT", CHAIN) {
        let mut out = words(&["!", "-d", "127.0.0.0/8"]);
        out.extend(local);
        nat.push(line("-A", "OUTPUT", &out));
    }
    if !listing.has_jump("nat", "POSTROUTING", MASQ_CHAIN) {
        nat.push(line("-A", "POSTROUTING", &words(&["-j", MASQ_CHAIN])));
    }
    for r in listing.tagged(|c| c == tag) {
        nat.push(line("-D", &r.chain, &r.spec));
    }
    for m in mappings {
        nat.push(line("-A", CHAIN, &dnat_spec(m, tag, address)));
        nat.push(line("-A", MASQ_CHAIN, &masq_spec(m, tag, address)));
    }
    nat.push("COMMIT".to_string());
    let forward_present = listing.rules.iter().any(|r| {
        r.table == "filter"
            && r.chain == "FORWARD"
            && r.comment() == Some(FORWARD_COMMENT)
            && r.value_of("-o") == Some(bridge)
    });
    let mut script = Vec::new();
    if !forward_present {
        script.push("*filter".to_string());
        script.push(line("-A", "FORWARD", &forward_spec(bridge)));
        script.push("COMMIT".to_string());
    }
    script.extend(nat);
    Ok(script.join("\n") + "\n")
}

/// The input that deletes every tagged rule whose tag fails `keep`; `None` if there is none.
pub fn plan_remove(listing: &Listing, keep: impl Fn(&str) -> bool) -> Option<String> {
    let dels: Vec<String> = listing
        .tagged(|c| !keep(c))
        .map(|r| line("-D", &r.chain, &r.spec))
        .collect();
    if dels.is_empty() {
        return None;
    }
    Some(format!("*nat\n{}\nCOMMIT\n", dels.join("\n")))
}

/// ADD: installs the container's mappings (no-op without any). `address` is the container's.
pub fn add(args: &CmdArgs, conf: &NetConf, address: Ipv4Net) -> Result<()> {
    let maps = mappings(conf);
    if maps.is_empty() {
        return Ok(());
    }
    enable_forwarding()?;
    let tag = tag(&args.container_id, &args.ifname);
    let _lock = lock()?;
    let listing = save(None)?;
    let script = plan_add(&listing, &tag, maps, address, &conf.bridge)?;
    restore(&script).map_err(|e| e.context("install port mappings"))
}

/// DEL: removes the container interface's rules; idempotent, needs no netns.
pub fn del(args: &CmdArgs, conf: &NetConf) -> Result<()> {
    // A config that could not be read (fallback: no type) may have carried mappings.
    if mappings(conf).is_empty() && !conf.plugin_type.is_empty() {
        return Ok(());
    }
    let tag = tag(&args.container_id, &args.ifname);
    remove(|t| t != tag).map_err(|e| e.context("remove port mappings"))
}

/// GC: removes the rules of every container interface not in `valid`.
pub fn gc(valid: &[GcAttachment]) -> Result<()> {
    let keep: Vec<String> = valid
        .iter()
        .map(|v| tag(&v.container_id, &v.ifname))
        .collect();
    remove(|t| keep.iter().any(|k| k == t)).map_err(|e| e.context("remove stale port mappings"))
}

fn remove(keep: impl Fn(&str) -> bool) -> Result<()> {
    let _lock = lock()?;
    let listing = match save(Some("nat")) {
        Ok(l) => l,
        // No iptables on this host: no rules of ours either.
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    match plan_remove(&listing, keep) {
        Some(script) => restore(&script),
        None => Ok(()),
    }
}

/// A mapping from another host is forwarded to the bridge: the user asked for it, so turn
/// forwarding on as Docker does for its published ports (a no-op when it is on already).
fn enable_forwarding() -> Result<()> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    let on = std::fs::read_to_string(PATH)
        .map_err(|e| Error::from(e).context(format!("read {PATH}")))?;
    if on.trim() == "1" {
        return Ok(());
    }
    tracing::info!("port mappings: enabling net.ipv4.ip_forward");
    std::fs::write(PATH, "1").map_err(|e| Error::from(e).context(format!("write {PATH}")))
}

/// Serialises port-mapping changes of concurrent plugin runs (check + install must not
/// interleave, or two containers could both win one host port). Released on drop.
fn lock() -> Result<std::fs::File> {
    let path = std::path::Path::new(LOCK_PATH);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::from(e).context(format!("create {}", dir.display())))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::from(e).context(format!("open {LOCK_PATH}")))?;
    let deadline = Instant::now() + LOCK_TIMEOUT;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::new(
                    ErrorKind::TryAgainLater,
                    format!("lock {LOCK_PATH}: still held after {LOCK_TIMEOUT:?}"),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::from(e).context(format!("lock {LOCK_PATH}")))
            }
        }
    }
}

fn save(table: Option<&str>) -> Result<Listing> {
    Ok(Listing::parse(&crate::iptables::save(table)?))
}

#[cfg(test)]
#[path = "portmap_tests.rs"]
mod tests;
