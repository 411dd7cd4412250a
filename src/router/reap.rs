//! Deletes the veths a DEL retired (see [`crate::plugin::attach::retire`]).
//!
//! Deleting a veth makes the caller wait for an RCU grace period (15-45 ms here), most of
//! what a DEL cost. The plugin therefore only renames the pair out of the way and returns;
//! the router, which is running anyway, deletes every `vethwepd*` link in its namespace as
//! the kernel announces the rename, and lists its links at start and every
//! [`RESCAN`] in case an announcement was lost or came while it was not running. A retired
//! veth therefore lives until the router next runs, never longer.

use crate::netlink::{LinkEvent, Netlink};
use crate::{Result, RETIRED_VETH_PREFIX};
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
                        break;
                    }
                    Some(LinkEvent::Lost) => {
                        tracing::debug!("link announcements lost: listing links");
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

/// Deletes every retired veth there is now; returns whether there was any.
async fn delete_retired(nl: &Netlink) -> Result<bool> {
    let mut found = false;
    for l in nl.links().await? {
        if is_retired(&l.name) {
            found = true;
            if nl.delete_link(&l.name).await? {
                tracing::debug!("deleted retired veth {}", l.name);
            }
        }
    }
    Ok(found)
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
