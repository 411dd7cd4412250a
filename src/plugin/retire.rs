//! A DEL that does not wait for the kernel to free the veth (issue 15).
//!
//! Deleting a veth makes the caller wait for an RCU grace period (15-45 ms here), nearly all
//! of a DEL. [`retire`] instead takes the pair out of use in a few cheap requests and leaves
//! the deletion to whoever deletes [`crate::RETIRED_GROUP`] next: the router's reaper
//! ([`crate::router::reap`]) every fraction of a second and when it starts, or a DEL that
//! finds the backlog full.
//!
//! Bounded by construction: a retired host end must take one of [`crate::RETIRED_SLOTS`]
//! names (`vethwepd00`..), and the kernel refuses a name that is taken. A DEL that finds no
//! free name deletes the group itself, its own veth included, so however far churn outruns
//! the reaper, no more than that many retired veths exist; the DELs that find the backlog
//! full pay one grace period for the whole batch (back-pressure, not growth).

use super::attach::detach;
use crate::netlink::Netlink;
use crate::{ErrorKind, Result};
use crate::{RETIRED_GROUP, RETIRED_IF_PREFIX, RETIRED_SLOTS, RETIRED_VETH_PREFIX};

/// The name of retired slot `slot` (`vethwepd00`..`vethwepd31`).
pub fn retired_veth_name(slot: u32) -> String {
    format!("{RETIRED_VETH_PREFIX}{slot:02}")
}

/// True for a host veth a DEL retired.
pub fn is_retired(name: &str) -> bool {
    name.strip_prefix(RETIRED_VETH_PREFIX)
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n < RETIRED_SLOTS)
}

/// What became of a host veth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retired {
    /// Renamed into a free slot: the reaper deletes it.
    Slot(u32),
    /// Every slot was taken: deleted here, with the whole backlog.
    DeletedBacklog,
    /// Deleted by somebody else meanwhile (a reaper, or its container's namespace going).
    Gone,
    /// Deleted here as before: no host veth of that name, no container namespace to detach
    /// the other end from (its `ifname` would stay taken), or a step failed.
    Deleted,
}

/// Takes the attachment out of use without waiting for the kernel to free its veth:
/// 1. the host end joins [`RETIRED_GROUP`] (from here on nothing can leak it: every reaper
///    deletes the group);
/// 2. the container's end goes down (its routes go with it) and is renamed `wvdel<index>`,
///    so `ifname` is free for the next ADD at once;
/// 3. the host end leaves the bridge under the first free slot name, which frees its own
///    name for the next ADD; with no slot free the group is deleted here.
///
/// Without the container's namespace, or when a step fails for another reason than the pair
/// being gone, it falls back to [`detach`].
pub async fn retire(
    host: &Netlink,
    container: Option<&Netlink>,
    ifname: &str,
    host_veth: &str,
) -> Result<Retired> {
    let host_end = match container {
        Some(_) => host.link(host_veth).await?,
        None => None,
    };
    let (Some(c), Some(host_end)) = (container, host_end) else {
        detach(host, container, ifname, host_veth).await?;
        return Ok(Retired::Deleted);
    };
    match retire_pair(host, c, ifname, host_end.index).await {
        Ok(r) => Ok(r),
        Err(e) => {
            tracing::warn!("retire {host_veth:?}: {e}; deleting it now");
            // It is in the group unless joining it failed: deleting the group covers it.
            let _ = host.delete_group(RETIRED_GROUP).await;
            detach(host, container, ifname, host_veth).await?;
            Ok(Retired::Deleted)
        }
    }
}

async fn retire_pair(host: &Netlink, c: &Netlink, ifname: &str, index: u32) -> Result<Retired> {
    if gone(host.set_group(index, RETIRED_GROUP).await)? {
        return Ok(Retired::Gone);
    }
    if let Some(inner) = c.link(ifname).await? {
        let name = format!("{RETIRED_IF_PREFIX}{:x}", inner.index);
        if gone(c.set_down(inner.index).await)? || gone(c.rename_link(inner.index, &name).await)? {
            return Ok(Retired::Gone);
        }
    }
    // Start at a slot of our own, so concurrent DELs rarely try the same names.
    let first = std::process::id() % RETIRED_SLOTS;
    for k in 0..RETIRED_SLOTS {
        let slot = (first + k) % RETIRED_SLOTS;
        match host.unbridge_as(index, &retired_veth_name(slot)).await {
            Ok(()) => return Ok(Retired::Slot(slot)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) if e.errno() == Some(libc::ENODEV) => return Ok(Retired::Gone),
            Err(e) => return Err(e),
        }
    }
    // The backlog is full: delete it, ours included, in one request.
    host.delete_group(RETIRED_GROUP).await?;
    Ok(Retired::DeletedBacklog)
}

/// `Ok(true)` if a request failed because the link no longer exists (the pair was deleted
/// meanwhile, which is what retiring it is for), `Ok(false)` if it succeeded.
fn gone(r: Result<()>) -> Result<bool> {
    match r {
        Ok(()) => Ok(false),
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(true),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_are_recognised_and_fit_ifnamsiz() {
        for slot in [0, 7, RETIRED_SLOTS - 1] {
            let n = retired_veth_name(slot);
            assert!(n.len() <= 15, "{n}");
            assert!(is_retired(&n), "{n}");
        }
        for keep in [
            "vethwepl1234567",
            "weave",
            "vethwe-bridge",
            "vxlan-6784",
            "wvdel5",
            &retired_veth_name(RETIRED_SLOTS),
            "vethwepdx",
        ] {
            assert!(!is_retired(keep), "{keep}");
        }
    }
}
