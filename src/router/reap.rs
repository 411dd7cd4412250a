//! Deletes the veths a DEL retired (see [`crate::plugin::attach::retire`]).
//!
//! Deleting a veth makes the caller wait for an RCU grace period (15-45 ms here), most of
//! what a DEL cost. The plugin therefore only renames the pair out of the way and returns;
//! the router, which is running anyway, deletes every `vethwepd*` link in its namespace as
//! the kernel announces the rename, and lists its links at start and every
//! [`RESCAN`] in case an announcement was lost or came while it was not running. A retired
//! veth therefore lives until the router next runs, never longer.

use crate::netlink::{LinkInfo, Netlink};
use crate::{Result, RETIRED_VETH_PREFIX};
use std::time::Duration;

/// How often the links are listed besides reacting to announcements.
pub const RESCAN: Duration = Duration::from_secs(30);

/// True for a link a DEL retired.
pub fn is_retired(name: &str) -> bool {
    name.starts_with(RETIRED_VETH_PREFIX)
}

/// Reaps forever; a failed round (e.g. netlink trouble) is logged and retried.
pub async fn run() {
    loop {
        if let Err(e) = reap_until_error().await {
            tracing::warn!("delete retired veths: {e}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn reap_until_error() -> Result<()> {
    // Subscribed before the first listing, so a rename in between is not missed.
    let (nl, mut events) = Netlink::open_with_link_events()?;
    loop {
        for l in nl.links().await? {
            delete_if_retired(&nl, &l).await?;
        }
        let rescan = tokio::time::sleep(RESCAN);
        tokio::pin!(rescan);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(l) => delete_if_retired(&nl, &l).await?,
                    None => return Err(crate::Error::new(
                        crate::ErrorKind::Kernel,
                        "link announcements ended",
                    )),
                },
                _ = &mut rescan => break,
            }
        }
    }
}

async fn delete_if_retired(nl: &Netlink, link: &LinkInfo) -> Result<()> {
    if !is_retired(&link.name) {
        return Ok(());
    }
    // Gone already (deleted with its container's namespace, or by an earlier round): fine.
    if nl.delete_link(&link.name).await? {
        tracing::debug!("deleted retired veth {}", link.name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_retired_veths_are_reaped() {
        assert!(is_retired(&crate::plugin::attach::retired_veth_name(42)));
        for keep in [
            "vethwepl1234567",
            "weave",
            "vethwe-bridge",
            "vxlan-6784",
            "wvdel5",
        ] {
            assert!(!is_retired(keep), "{keep}");
        }
    }
}
