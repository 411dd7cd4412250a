use super::*;
use crate::ipam::core::{universe_of, Core};
use crate::ipam::ring::{Allocator, InitMode, PeerName};
use crate::ErrorKind;
use std::collections::BTreeMap;
use std::time::Duration;

const ME: &str = "02:00:00:00:00:01";

fn setup(dir: &std::path::Path, mode: InitMode, wait: Duration) -> IpamHandle {
    let range: Ipv4Net = "10.32.0.0/12".parse().unwrap();
    let dd = DataDir::open(dir).unwrap();
    let me: PeerName = ME.parse().unwrap();
    let alloc = Allocator::new(me, universe_of(range).unwrap(), mode.clone());
    let core = Core::new(alloc, range, range, &BTreeMap::new(), Vec::new());
    let opts = IpamOptions {
        mode,
        alloc_wait: wait,
        ring_wait: wait,
        ..IpamOptions::default()
    };
    IpamHandle::spawn(core, dd, ME.into(), None, opts)
}

fn lone(dir: &std::path::Path) -> IpamHandle {
    setup(dir, InitMode::consensus(1), Duration::from_secs(3))
}

fn load(dir: &std::path::Path) -> crate::ipam::store::Persisted {
    DataDir::open(dir)
        .unwrap()
        .load_ipam(ME, "10.32.0.0/12".parse().unwrap())
        .unwrap()
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_allocations_are_unique_and_persisted() {
    let tmp = tempfile::tempdir().unwrap();
    let h = lone(tmp.path());
    let mut tasks = Vec::new();
    for i in 0..200 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.allocate(&format!("c{i}"), None).await.unwrap()
        }));
    }
    let mut addrs = std::collections::HashSet::new();
    for t in tasks {
        assert!(addrs.insert(t.await.unwrap()));
    }
    let persisted = load(tmp.path());
    assert_eq!(persisted.owned.len(), 200);
    assert_eq!(persisted.owned, h.owned().await.unwrap());
    assert!(persisted.allocator.is_some(), "the ring is saved too");
}

#[tokio::test]
async fn failed_write_rolls_back_and_is_not_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let h = lone(tmp.path());
    let first = h.allocate("keep", None).await.unwrap();
    let blocker = tmp.path().join("ipam.json");
    std::fs::remove_file(&blocker).unwrap();
    std::fs::create_dir_all(blocker.join("x")).unwrap();
    let e = h.allocate("lost", None).await.unwrap_err();
    assert!(e.to_string().contains("save ipam state"), "{e}");
    assert!(h.lookup("lost", None).await.unwrap().is_empty());
    assert!(h.free("keep").await.is_err());
    assert_eq!(h.lookup("keep", None).await.unwrap(), vec![first]);
    // Reads still work, and after the disk recovers the same address is handed out again.
    std::fs::remove_dir_all(&blocker).unwrap();
    let again = h.allocate("lost", None).await.unwrap();
    assert_eq!(again.to_string(), "10.32.0.2/12");
    assert_eq!(h.summary().await.unwrap().active, 2);
}

#[tokio::test]
async fn an_allocation_and_its_attachment_are_written_and_freed_together() {
    let tmp = tempfile::tempdir().unwrap();
    let h = lone(tmp.path());
    let att = Attachment {
        container_id: "c1".into(),
        ifname: "eth0".into(),
        host_veth: "vethwepl0000001".into(),
        mac: String::new(),
        ips: Vec::new(),
        netns: "/var/run/netns/x".into(),
        ipam_id: String::new(),
    };
    let cidr = h.allocate_attached("c1", None, Some(att)).await.unwrap();
    let list = h.attachments().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].ips, vec![cidr.to_string()]);
    assert_eq!(list[0].mac, "0e:57:0a:20:00:01");
    assert_eq!(list[0].ipam_id, "c1");
    assert_eq!(
        load(tmp.path()).attachments,
        list,
        "persisted in the same file"
    );
    assert_eq!(h.free("c1").await.unwrap(), 1);
    assert!(h.attachments().await.unwrap().is_empty());
    let p = load(tmp.path());
    assert!(p.attachments.is_empty() && p.owned.is_empty());
}

#[tokio::test]
async fn without_peers_an_allocation_answers_503_within_the_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let h = setup(
        tmp.path(),
        InitMode::consensus(3),
        Duration::from_millis(300),
    );
    let started = std::time::Instant::now();
    let e = h.allocate("c1", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TryAgainLater);
    assert_eq!(
        e.to_string(),
        "IP allocation not ready: awaiting consensus (quorum: 2, known: 1)"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let e = h
        .claim("c2", "10.32.0.9/12".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TryAgainLater);
    assert!(h.ring().await.is_err());
    let s = h.summary().await.unwrap();
    assert!(
        s.pending_allocates.is_empty(),
        "timed-out requests are cancelled"
    );
}

#[tokio::test]
async fn restart_restores_the_ring_and_allocations() {
    let tmp = tempfile::tempdir().unwrap();
    let range: Ipv4Net = "10.32.0.0/12".parse().unwrap();
    {
        let h = lone(tmp.path());
        h.allocate("c1", None).await.unwrap();
        h.claim("c2", "10.32.0.9/12".parse().unwrap())
            .await
            .unwrap();
        h.claim("_", "192.168.1.1/24".parse().unwrap())
            .await
            .unwrap();
    }
    let me: PeerName = ME.parse().unwrap();
    let core = crate::ipam::core::load(me, range, range, InitMode::consensus(3), load(tmp.path()))
        .unwrap();
    assert!(
        core.alloc.has_ring(),
        "the saved ring wins over the election"
    );
    let owned = core.owned();
    assert_eq!(
        owned["c1"],
        vec!["10.32.0.1/12".parse::<Ipv4Net>().unwrap()]
    );
    assert_eq!(
        owned["c2"],
        vec!["10.32.0.9/12".parse::<Ipv4Net>().unwrap()]
    );
    assert_eq!(
        owned["192.168.1.1"],
        vec!["192.168.1.1/24".parse::<Ipv4Net>().unwrap()]
    );
}

#[tokio::test]
async fn a_failed_write_takes_back_attachments_claims_and_frees_of_its_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let h = lone(tmp.path());
    let att = |id: &str| Attachment {
        container_id: id.into(),
        ifname: "eth0".into(),
        host_veth: format!("vethwepl{id}"),
        mac: String::new(),
        ips: Vec::new(),
        netns: "/var/run/netns/x".into(),
        ipam_id: id.into(),
    };
    h.allocate_attached("keep", None, Some(att("keep")))
        .await
        .unwrap();
    h.claim("_", "192.168.1.1/24".parse().unwrap())
        .await
        .unwrap();
    let before = (h.owned().await.unwrap(), h.attachments().await.unwrap());
    let blocker = tmp.path().join("ipam.json");
    std::fs::remove_file(&blocker).unwrap();
    std::fs::create_dir_all(blocker.join("x")).unwrap();
    assert!(h
        .allocate_attached("lost", None, Some(att("lost")))
        .await
        .is_err());
    assert!(h.free("keep").await.is_err());
    assert!(h
        .claim("c9", "10.32.0.9/12".parse().unwrap())
        .await
        .is_err());
    assert!(h
        .free_one("192.168.1.1", "192.168.1.1".parse().unwrap())
        .await
        .is_err());
    assert!(h.remove_attachment("keep", "eth0").await.is_err());
    assert_eq!(
        (h.owned().await.unwrap(), h.attachments().await.unwrap()),
        before,
        "nothing of the failed batches stayed"
    );
    // Once the disk is back, the next write carries exactly the later changes.
    std::fs::remove_dir_all(&blocker).unwrap();
    assert_eq!(h.free("keep").await.unwrap(), 1);
    let p = load(tmp.path());
    assert!(!p.owned.contains_key("keep") && p.attachments.is_empty());
    assert!(p.owned.contains_key("192.168.1.1"));
}
