//! Deletes the veths a DEL retired (see [`crate::plugin::retire`]).
//!
//! One request deletes the whole [`crate::RETIRED_GROUP`], so the kernel waits for one grace
//! period per round however many veths the round finds; the plugin bounds the backlog to
//! [`crate::RETIRED_SLOTS`], so a round never has more than that to do. The reaper keeps no
//! state and subscribes to nothing: it asks the kernel to delete the group every
//! [`ACTIVE`] while rounds find work and every [`IDLE`] otherwise, and at start (retired
//! veths a killed router left). A deletion blocks the thread that sends it for the grace
//! period, so the reaper has a thread and a current-thread runtime of its own.

use crate::netlink::Netlink;
use crate::Result;
use std::time::Duration;

/// Time between rounds after a round that deleted something.
pub const ACTIVE: Duration = Duration::from_millis(100);
/// Time between rounds after a round that found nothing.
pub const IDLE: Duration = Duration::from_secs(1);

/// Starts the reaper on a thread of its own, in the calling thread's network namespace.
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

/// Reaps forever; a failed round is logged and retried after [`IDLE`].
async fn run() {
    let mut nl: Option<Netlink> = None;
    loop {
        let pause = match round(&mut nl).await {
            Ok(true) => ACTIVE,
            Ok(false) => IDLE,
            Err(e) => {
                tracing::warn!("delete retired veths: {e}");
                nl = None;
                IDLE
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// One round: whether it deleted anything.
async fn round(nl: &mut Option<Netlink>) -> Result<bool> {
    if nl.is_none() {
        *nl = Some(Netlink::open()?);
    }
    let nl = nl.as_ref().expect("opened above");
    let deleted = nl.delete_group(crate::RETIRED_GROUP).await?;
    if deleted {
        tracing::debug!("deleted retired veths");
    }
    Ok(deleted)
}
