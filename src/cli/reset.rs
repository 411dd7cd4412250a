//! `weave reset`: hand our address ranges to a peer, stop the router, and remove everything
//! it created on this host except the CNI plugins and config (port-mapping chains included:
//! they are `WEAVE*` chains like the router's, see [`super::iptables`]).

use super::{block_on, iptables, launch, CliResult, Ctx, Failure};
use crate::error::ErrorList;
use crate::netlink::Netlink;
use crate::{Context, Error, BRIDGE_NAME};
use std::fs;
use std::path::Path;
use std::time::Duration;

/// Files the router keeps in its data dir (the log stays for post-mortems).
pub const STATE_FILES: [&str; 4] = ["ipam.json", "peername", "weaver.pid", "targets.json"];
/// Links besides the bridge that a router may have created (Weave's fastdp names).
const OTHER_LINKS: [&str; 2] = ["datapath", "vxlan-6784"];
/// Prefix of every veth Weave creates (`vethwe-bridge`, `vethwepl<id>`, ...).
const VETH_PREFIX: &str = "vethwe";

pub(super) fn run(ctx: &Ctx, force: bool) -> CliResult {
    let probe = ctx
        .client
        .clone()
        .with_timeouts(Duration::from_millis(500), Duration::from_secs(1));
    let answering = probe.status(None).is_ok();
    if answering {
        // Give our ranges to another peer; the router broadcasts the change, let it go out.
        let leave = ctx
            .client
            .clone()
            .with_timeouts(Duration::from_secs(1), Duration::from_secs(10));
        if let Err(e) = leave.request("DELETE", "/peer", None) {
            eprintln!("warning: remove this peer from the cluster: {e}");
        }
        std::thread::sleep(Duration::from_millis(500));
    } else if !force && ctx.datadir.join("ipam.json").exists() {
        return Err(Failure::new(
            1,
            "ERROR: weave is not running; unable to remove from cluster.\n\
             Re-launch weave before reset or use --force to override.",
        ));
    }
    launch::stop(ctx)?;

    let mut errors = ErrorList::default();
    match block_on(remove_links()) {
        Ok(r) => {
            errors.push_err(r);
        }
        Err(f) => return Err(f),
    }
    errors.push_err(iptables::remove_weave_rules());
    errors.push_err(crate::nftables::delete_table(
        "ip",
        crate::dataplane::notrack::TABLE,
    ));
    errors.push_err(remove_state_files(&ctx.datadir));
    errors
        .into_result()
        .map_err(|e| Failure::new(1, format!("reset weave: {e}")))
}

/// Deletes the bridge, other router links, the routed path's routes and every `vethwe*`
/// link in this netns.
async fn remove_links() -> crate::Result<()> {
    let nl = Netlink::open()?;
    let mut errors = ErrorList::default();
    for name in std::iter::once(BRIDGE_NAME).chain(OTHER_LINKS) {
        errors.push_err(
            nl.delete_link(name)
                .await
                .with_context(|| format!("delete link {name:?}")),
        );
    }
    // The routed path's routes to neighbours (those on the bridge went with it).
    let proto = crate::dataplane::routed::ROUTE_PROTO;
    for r in nl.owned_routes(proto).await? {
        errors.push_err(nl.delete_owned_route(&r, proto).await);
    }
    for link in nl.links().await? {
        if link.name.starts_with(VETH_PREFIX) {
            // Deleting one end removes its peer too: absent is fine.
            errors.push_err(
                nl.delete_link(&link.name)
                    .await
                    .with_context(|| format!("delete link {:?}", link.name)),
            );
        }
    }
    errors.into_result()
}

fn remove_state_files(datadir: &Path) -> crate::Result<()> {
    let mut errors = ErrorList::default();
    for name in STATE_FILES {
        let path = datadir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                errors
                    .0
                    .push(Error::from(e).context(format!("remove {}", path.display())));
            }
        }
    }
    errors.into_result()
}

#[cfg(test)]
mod tests {
    use super::iptables::plan_for;

    /// The plugin's port-mapping chains, jumps and FORWARD rule all go with `weave reset`
    /// (input: `iptables -S` of the nat and filter tables).
    #[test]
    fn reset_removes_port_mappings() {
        let nat = r#"-P PREROUTING ACCEPT
-P OUTPUT ACCEPT
-P POSTROUTING ACCEPT
-N WEAVE-PORTMAP
-N WEAVE-PORTMAP-MASQ
-A PREROUTING -m addrtype --dst-type LOCAL -j WEAVE-PORTMAP
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j WEAVE-PORTMAP
-A POSTROUTING -j WEAVE-PORTMAP-MASQ
-A WEAVE-PORTMAP -p tcp -m tcp --dport 8080 -m comment --comment "weave-net portmap c1 eth0" -j DNAT --to-destination 10.32.0.5:80
"#;
        let cmds: Vec<String> = plan_for(nat).commands.iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            cmds,
            [
                "-D PREROUTING -m addrtype --dst-type LOCAL -j WEAVE-PORTMAP",
                "-D OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j WEAVE-PORTMAP",
                "-D POSTROUTING -j WEAVE-PORTMAP-MASQ",
                "-F WEAVE-PORTMAP",
                "-F WEAVE-PORTMAP-MASQ",
                "-X WEAVE-PORTMAP",
                "-X WEAVE-PORTMAP-MASQ",
            ]
        );
        let filter = "-A FORWARD -o weave -m conntrack --ctstate DNAT -m comment --comment \"weave-net port mappings\" -j ACCEPT\n";
        assert_eq!(plan_for(filter).commands.len(), 1);
    }
}
