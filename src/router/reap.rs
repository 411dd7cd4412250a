//! Deletes the veths a DEL retired (see [`crate::plugin::attach::retire`]).
//!
//! Deleting a veth makes the caller wait for an RCU grace period (15-45 ms here), most of
//! what a DEL cost. The plugin therefore only renames the pair out of the way and returns;
//! the router, which is running anyway, deletes every `vethwepd*` link in its namespace as
//! the kernel announces the rename, and lists its links at start and every
//! [`RESCAN`] in case an announcement was lost or came while it was not running. A retired
//! veth therefore lives until the router next runs, never longer.

use crate::netlink::{LinkEvent, Netlink};
use crate::{Result, RETIRED_GROUP, RETIRED_VETH_PREFIX};
use std::time::Duration;

/// How often the links are listed besides reacting to announcements.
pub const RESCAN: Duration = Duration::from_secs(30);
/// How soon they are listed again after a round that deleted something.
pub const FOLLOW_UP: Duration = Duration::from_secs(1);

/// True for a link a DEL retired.
pub fn is_retired(name: &str) -> bool {
    name.starts_with(RETIRED_VETH_PREFIX)
}

/// How long after a retirement the reaper waits before deleting: the DEL that retired the
/// veth is still talking to the router then, and a deletion blocks the thread that sends it
/// (and takes the kernel's lock) for the grace period. Retirements within it share one round.
pub const DELAY: Duration = Duration::from_millis(100);

/// Starts the reaper on a thread of its own: the kernel runs a deletion inside the sending
/// system call, so on the router's runtime it would stall a worker for the grace period.
pub fn start() {
    let spawned = std::thread::Builder::new()
        .name("weave-reaper".into())
        .spawn(|| {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(run()),
                Err(e) => tracing::warn!("start the veth reaper: {e}"),
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("start the veth reaper: {e}");
    }
}

/// Reaps forever; a failed round (e.g. netlink trouble) is logged and retried.
async fn run() {
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
        // After a round that found work, look again soon: a burst is when announcements
        // get lost.
        let next_scan = if delete_retired(&nl).await? {
            FOLLOW_UP
        } else {
            RESCAN
        };
        let rescan = tokio::time::sleep(next_scan);
        tokio::pin!(rescan);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(LinkEvent::Changed(l)) if is_retired(&l.name) => {
                        tokio::time::sleep(DELAY).await;
                        // The listing below covers whatever was announced meanwhile;
                        // reacting to each of those again would fall behind a burst.
                        events.discard_pending();
                        break;
                    }
                    Some(LinkEvent::Lost) => {
                        tracing::debug!("link announcements lost: listing links");
                        events.discard_pending();
                        break;
                    }
                    Some(LinkEvent::Changed(_)) => {}
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

/// Deletes every retired veth there is now; returns whether there was any. One request
/// deletes the whole group (one grace period for a burst of DELs: deleting them one by one,
/// 15-45 ms each, fell behind 80 DELs a second and filled the bridge's 1,024 ports); a
/// retired name outside the group (renamed by hand or by an older plugin) goes by name.
async fn delete_retired(nl: &Netlink) -> Result<bool> {
    let retired: Vec<String> = nl
        .links()
        .await?
        .into_iter()
        .map(|l| l.name)
        .filter(|n| is_retired(n))
        .collect();
    if retired.is_empty() {
        return Ok(false);
    }
    nl.delete_group(RETIRED_GROUP).await?;
    for name in &retired {
        if nl.delete_link(name).await? {
            tracing::debug!("deleted retired veth {name} by name");
        }
    }
    tracing::debug!("deleted {} retired veths", retired.len());
    Ok(true)
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
