//! weaveDNS over a real mesh in one process: three peers on 127.0.0.1 (real TCP, the mesh
//! protocol, short timers), each with the records actor and a DNS server on loopback.
//! Records registered on one peer are answered by every peer's DNS server; removals and
//! rmpeer propagate; a restarted peer re-announces its persisted records; reset withdraws
//! them. (Partitions are exercised with real routers in `dns_3`.)

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use weave::dns::forward::Servers;
use weave::dns::{service, DnsConfig, DnsHandle, DnsServer, ServiceConfig};
use weave::mesh::{MeshConfig, MeshHandle, MeshRouter, MeshTimers, PeerName};

fn name(i: u64) -> PeerName {
    PeerName::from_u64(0x0a00_0000_0d00 + i).unwrap()
}

struct Peer {
    mesh: MeshHandle,
    dns: DnsHandle,
    server: DnsServer,
}

async fn peer(i: u64, targets: &[SocketAddr], datadir: Option<&std::path::Path>) -> Peer {
    let mut c = MeshConfig::new(name(i), &format!("d{i}"), "127.0.0.1:0".parse().unwrap());
    c.timers = MeshTimers::fast();
    c.targets = targets.iter().map(|a| a.to_string()).collect();
    let mesh = MeshRouter::start(c).await.expect("start mesh");
    let dns = service::spawn(
        ServiceConfig {
            me: name(i),
            datadir: datadir.map(|d| d.to_path_buf()),
            gossip_interval: Duration::from_millis(500),
        },
        Some(mesh.channel(weave::dns::CHANNEL).await.unwrap()),
    )
    .await
    .unwrap();
    let mut cfg = DnsConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
    cfg.upstream = Servers::Fixed(vec![]);
    let server = DnsServer::start(cfg, dns.zone()).await.unwrap();
    Peer { mesh, dns, server }
}

/// The A answer of `p`'s DNS server for `fqdn`, sorted; NXDOMAIN is empty.
async fn resolve(p: &Peer, fqdn: &str) -> Vec<Ipv4Addr> {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut q = Message::query();
    q.add_query(Query::query(Name::from_ascii(fqdn).unwrap(), RecordType::A));
    s.send_to(&q.to_vec().unwrap(), p.server.local_addrs()[0])
        .await
        .unwrap();
    let mut buf = vec![0u8; 1500];
    let n = tokio::time::timeout(Duration::from_secs(3), s.recv(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let r = Message::from_vec(&buf[..n]).unwrap();
    assert!(matches!(
        r.metadata.response_code,
        ResponseCode::NoError | ResponseCode::NXDomain
    ));
    weave::dns::answer::a_addresses(&r)
}

async fn eventually_resolves(peers: &[&Peer], fqdn: &str, want: &[&str]) {
    let want: Vec<Ipv4Addr> = want.iter().map(|s| s.parse().unwrap()).collect();
    for (i, p) in peers.iter().enumerate() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let got = resolve(p, fqdn).await;
            if got == want {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "peer {i}: {fqdn} is {got:?}, want {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn meshed(peers: &[&Peer]) {
    for p in peers {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while p.mesh.peers().borrow().len() < peers.len() - 1 {
            assert!(tokio::time::Instant::now() < deadline, "mesh did not form");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_answered_by_every_peer_and_follow_removals() {
    let a = peer(1, &[], None).await;
    let b = peer(2, &[a.mesh.local_addr()], None).await;
    let c = peer(3, &[a.mesh.local_addr()], None).await;
    meshed(&[&a, &b, &c]).await;
    let all = [&a, &b, &c];

    assert!(a
        .dns
        .add("c1", "10.32.0.2".parse().unwrap(), "web.weave.local")
        .await
        .unwrap());
    assert!(!a
        .dns
        .add("c1", "10.32.0.2".parse().unwrap(), "web.weave.local.")
        .await
        .unwrap());
    eventually_resolves(&all, "web.weave.local.", &["10.32.0.2"]).await;
    // A second instance on another peer: both addresses everywhere.
    c.dns
        .add("c7", "10.40.0.2".parse().unwrap(), "web.weave.local")
        .await
        .unwrap();
    eventually_resolves(&all, "web.weave.local.", &["10.32.0.2", "10.40.0.2"]).await;
    let recs = b.dns.records().await.unwrap();
    let owners: Vec<(String, PeerName)> =
        recs.iter().map(|r| (r.ip.to_string(), r.owner)).collect();
    assert_eq!(
        owners,
        [
            ("10.32.0.2".to_string(), name(1)),
            ("10.40.0.2".to_string(), name(3))
        ]
    );
    assert_eq!(
        b.dns.lookup("WEB.weave.local"),
        recs.iter().map(|r| r.ip).collect::<Vec<_>>()
    );
    // Only the owner removes its records.
    assert_eq!(b.dns.remove("c1", None, None).await.unwrap(), 0);
    assert_eq!(
        a.dns
            .remove("c1", Some("10.32.0.2".parse().unwrap()), None)
            .await
            .unwrap(),
        1
    );
    eventually_resolves(&all, "web.weave.local.", &["10.40.0.2"]).await;
    // rmpeer of c on a while c is alive: a drops its record, c restates it at once.
    assert_eq!(a.dns.remove_peer(name(3)).await.unwrap(), 1);
    eventually_resolves(&all, "web.weave.local.", &["10.40.0.2"]).await;
    // Reset withdraws all of c's records.
    c.dns.reset().await.unwrap();
    eventually_resolves(&all, "web.weave.local.", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_reannounces_and_a_dead_one_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let a = peer(1, &[], None).await;
    let c = peer(3, &[a.mesh.local_addr()], None).await;
    let b = peer(2, &[a.mesh.local_addr()], Some(dir.path())).await;
    meshed(&[&a, &b, &c]).await;
    b.dns
        .add("cb", "10.40.0.9".parse().unwrap(), "db.weave.local")
        .await
        .unwrap();
    eventually_resolves(&[&a, &b, &c], "db.weave.local.", &["10.40.0.9"]).await;
    let saved = std::fs::read_to_string(dir.path().join(service::FILE)).unwrap();
    assert!(saved.contains("db.weave.local."), "{saved}");

    // b dies (mesh gone): its record stays until rmpeer, which a runs and c learns by
    // gossip.
    b.mesh.shutdown().await;
    drop(b);
    tokio::time::sleep(Duration::from_secs(2)).await;
    eventually_resolves(&[&a, &c], "db.weave.local.", &["10.40.0.9"]).await;
    assert_eq!(a.dns.remove_peer(name(2)).await.unwrap(), 1);
    eventually_resolves(&[&a, &c], "db.weave.local.", &[]).await;

    // b comes back with its data dir: it re-announces at fresh versions, which beat the
    // rmpeer floor.
    let b = peer(2, &[a.mesh.local_addr()], Some(dir.path())).await;
    meshed(&[&a, &b, &c]).await;
    eventually_resolves(&[&a, &b, &c], "db.weave.local.", &["10.40.0.9"]).await;
    b.dns.reset().await.unwrap();
    assert!(!dir.path().join(service::FILE).exists());
    eventually_resolves(&[&a, &b, &c], "db.weave.local.", &[]).await;
}
