//! Releases the addresses of containers that went away while nobody told the router.
//!
//! A runtime's DEL fails when the router is down, and Mesos never retries it (seen with the
//! real 1.11 agent): the container's namespace is destroyed, its veth pair with it, and the
//! allocation would stay forever. The router therefore looks at its attachments from time to
//! time: one whose host veth has been missing on two consecutive sweeps, an interval apart,
//! belongs to a container that is gone (a veth pair cannot lose only one end), so its
//! addresses and record are released. Two sightings, not one, because an ADD records the
//! attachment while its veth is still being created.

use crate::attachment::Attachment;
use crate::dataplane::DataPlane;
use crate::ipam::IpamHandle;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Default time between sweeps (`weaver` takes `WEAVE_SWEEP_INTERVAL_MS` for tests).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// An attachment, as a sweep remembers it between rounds.
pub type Key = (String, String);

/// One sweep's decision, without I/O: which attachments to release now, and which to
/// remember as missing for the next round.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub release: Vec<Attachment>,
    pub missing: BTreeSet<Key>,
}

/// Compares the attachments with the links that exist now and the ones missing last round.
pub fn decide(
    attachments: &[Attachment],
    links: &BTreeSet<String>,
    missing_before: &BTreeSet<Key>,
) -> Decision {
    let mut d = Decision::default();
    for a in attachments {
        if links.contains(&a.host_veth) {
            continue;
        }
        let key = (a.container_id.clone(), a.ifname.clone());
        if missing_before.contains(&key) {
            d.release.push(a.clone());
        } else {
            d.missing.insert(key);
        }
    }
    d
}

/// Sweeps forever, every `every`; the first round runs at once (a router that restarts
/// after containers were removed finds them within two intervals).
pub async fn run(ipam: IpamHandle, plane: Arc<dyn DataPlane>, every: Duration) {
    let mut missing = BTreeSet::new();
    loop {
        match sweep_once(&ipam, plane.as_ref(), &missing).await {
            Ok(next) => missing = next,
            Err(e) => tracing::warn!("sweep attachments: {e}"),
        }
        tokio::time::sleep(every).await;
    }
}

async fn sweep_once(
    ipam: &IpamHandle,
    plane: &dyn DataPlane,
    missing: &BTreeSet<Key>,
) -> crate::Result<BTreeSet<Key>> {
    let attachments = ipam.attachments().await?;
    if attachments.is_empty() {
        return Ok(BTreeSet::new());
    }
    let links = plane.link_names().await?;
    let d = decide(&attachments, &links, missing);
    for a in d.release {
        let id = if a.ipam_id.is_empty() {
            a.container_id.clone()
        } else {
            a.ipam_id.clone()
        };
        tracing::warn!(
            "container {:?} interface {:?} is gone (host veth {:?} vanished): releasing {:?}",
            a.container_id,
            a.ifname,
            a.host_veth,
            a.ips
        );
        ipam.free(&id).await?;
        ipam.remove_attachment(&a.container_id, &a.ifname).await?;
    }
    Ok(d.missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(cid: &str, veth: &str) -> Attachment {
        Attachment {
            container_id: cid.into(),
            ifname: "eth0".into(),
            host_veth: veth.into(),
            mac: "0e:57:0a:20:00:01".into(),
            ips: vec!["10.32.0.1/12".into()],
            netns: "/run/netns/x".into(),
            ipam_id: cid.into(),
        }
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn present_veth_is_kept_and_forgotten() {
        let before: BTreeSet<Key> = [("a".into(), "eth0".into())].into();
        let d = decide(&[att("a", "vethwepla")], &set(&["vethwepla"]), &before);
        assert_eq!(d, Decision::default());
    }

    #[test]
    fn first_miss_is_remembered_second_releases() {
        let atts = [att("a", "vethwepla"), att("b", "vethweplb")];
        let links = set(&["vethweplb", "weave"]);
        let d1 = decide(&atts, &links, &BTreeSet::new());
        assert!(d1.release.is_empty());
        assert_eq!(d1.missing, [("a".to_string(), "eth0".to_string())].into());
        let d2 = decide(&atts, &links, &d1.missing);
        assert_eq!(d2.release, vec![atts[0].clone()]);
        assert!(d2.missing.is_empty());
    }

    #[test]
    fn veth_that_reappears_resets_the_count() {
        let atts = [att("a", "vethwepla")];
        let d1 = decide(&atts, &set(&[]), &BTreeSet::new());
        let d2 = decide(&atts, &set(&["vethwepla"]), &d1.missing);
        let d3 = decide(&atts, &set(&[]), &d2.missing);
        assert!(d2.release.is_empty() && d3.release.is_empty());
        assert_eq!(d3.missing.len(), 1);
    }

    #[test]
    fn same_container_two_interfaces_are_separate() {
        let mut b = att("a", "vethweplb");
        b.ifname = "net1".into();
        let atts = [att("a", "vethwepla"), b.clone()];
        let d1 = decide(&atts, &set(&["vethwepla"]), &BTreeSet::new());
        let d2 = decide(&atts, &set(&["vethwepla"]), &d1.missing);
        assert_eq!(d2.release, vec![b]);
    }
}
