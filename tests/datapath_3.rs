//! The kernel data plane across 3 simulated hosts: one `weaver` per host, containers attached
//! by the real `weave-net` plugin, and `vxlan-6784` on each `weave` bridge set up through
//! `Datapath` (the mesh will call it with live peers; here the test does).
//!
//! Until the IPAM ring lands, each router owns a disjoint /24 of 10.32.0.0/12 as its
//! `--ipalloc-range` and containers ask for the whole /12 (see `hosts::host_range`), so all
//! containers share one flat subnet with unique addresses.

mod common;
#[path = "common/hosts.rs"]
mod hosts;

use hosts::{underlay_ip, Cluster, ClusterDatapaths, HostNetlink, UNDERLAY_DEV};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;
use weave::dataplane::vxlan::{self as datapath, Datapath};
use weave::netlink::{Netlink, VxlanSpec, FLOOD_MAC};
use weave::ErrorKind;

/// 3 hosts, routers, data plane on each, two containers per host.
fn three_hosts() -> Cluster {
    let mut c = Cluster::new(3);
    c.start_routers(&[]);
    c.datapaths();
    for k in 1..=3 {
        c.add_container(k, &format!("a{k}"));
        c.add_container(k, &format!("b{k}"));
    }
    c
}

fn flood_peers(host: &hosts::Host) -> BTreeSet<Ipv4Addr> {
    host.netlink(async |nl: &Netlink| {
        let dev = nl.link("vxlan-6784").await.unwrap().expect("vxlan-6784");
        nl.fdb_list(dev.index)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.is_flood())
            .filter_map(|e| e.dst)
            .collect()
    })
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn datapath_3_hosts_full_matrix_flat_arp_and_exposed_bridge() {
    let mut c = three_hosts();

    // The device is what Weave's fastdp would give: port 6784, on the bridge, bridge MTU.
    let dev = c.host(1).ns.sh("ip -d link show vxlan-6784");
    for want in [
        "mtu 1376",
        "master weave",
        &format!("vxlan id {} ", datapath::VNI),
        "local 192.0.2.1",
        "dstport 6784",
    ] {
        assert!(dev.contains(want), "{want:?} missing in:\n{dev}");
    }
    assert!(!dev.contains("nolearning"), "learning must be on:\n{dev}");
    assert_eq!(
        flood_peers(c.host(1)),
        [underlay_ip(2), underlay_ip(3)].into()
    );

    // Addresses: unique, all in the one flat /12.
    let ips: BTreeSet<Ipv4Addr> = c.containers.iter().map(|x| x.ip).collect();
    assert_eq!(ips.len(), c.containers.len(), "duplicate addresses");
    for x in &c.containers {
        let cidr = x.ns.addrs("eth0");
        assert_eq!(cidr, vec![format!("{}/12", x.ip)], "{}", x.name);
    }

    let m = c.reachability();
    println!("reachability, 3 hosts x 2 containers:\n{m}");
    assert!(m.all_ok(), "unreachable pairs: {:?}\n{m}", m.failures());

    // ARP went across: a1 knows b2's MAC itself (same L2 segment, no gateway in between).
    let (a1, b2) = (&c.containers[0], &c.containers[3]);
    let neigh = a1.ns.sh(&format!("ip neigh show {} dev eth0", b2.ip));
    assert!(
        neigh.contains(&b2.mac),
        "a1 has no ARP entry with b2's MAC {}: {neigh:?}",
        b2.mac
    );
    // ...and host 1's bridge learnt b2's MAC behind the VXLAN port, sent to host 2.
    let fdb = c.host(1).ns.sh("bridge fdb show dev vxlan-6784");
    assert!(
        fdb.contains(&format!("{} dst {}", b2.mac, underlay_ip(2))),
        "b2's MAC not learnt towards host 2:\n{fdb}"
    );

    // Host 1's exposed bridge address answers a container on host 2.
    let bridge_addr = c.host(1).ns.addrs("weave");
    let bridge_ip: Ipv4Addr = bridge_addr
        .first()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("host 1 bridge has no address: {bridge_addr:?}"));
    assert!(
        bridge_addr[0].ends_with("/12"),
        "bridge not on the flat subnet: {bridge_addr:?}"
    );
    let mut listener = Command::new("ip")
        .args(["netns", "exec", &c.host(1).ns.name, "nc", "-lk"])
        .arg(bridge_ip.to_string())
        .arg("5002")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let reached = c.probe(3, bridge_ip, 5002);
    let _ = listener.kill();
    let _ = listener.wait();
    assert!(
        reached,
        "host 1's bridge {bridge_ip} unreachable from b2 on host 2"
    );
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn datapath_3_hosts_link_cut_and_repair() {
    let mut c = three_hosts();
    let before = c.reachability();
    assert!(before.all_ok(), "before the cut:\n{before}");

    c.cut_link(3);
    let cut = c.reachability();
    println!("host 3's underlay cut:\n{cut}");
    for (i, row) in cut.ok.iter().enumerate() {
        for (j, cell) in row.iter().enumerate() {
            let Some(ok) = cell else { continue };
            let (hi, hj) = (c.containers[i].host, c.containers[j].host);
            // Containers on host 3 still reach each other through its own bridge.
            let expect = (hi == 3) == (hj == 3);
            assert_eq!(
                *ok, expect,
                "{} -> {} during the cut\n{cut}",
                cut.names[i], cut.names[j]
            );
        }
    }

    c.repair_link(3);
    assert!(c
        .host(3)
        .ns
        .addrs(UNDERLAY_DEV)
        .contains(&"192.0.2.3/24".into()));
    let after = c.reachability();
    println!("host 3's underlay repaired:\n{after}");
    assert!(
        after.all_ok(),
        "after the repair: {:?}\n{after}",
        after.failures()
    );
    // Nothing duplicated: each host still floods once to each other host.
    for k in 1..=3 {
        let flood = c
            .host(k)
            .ns
            .sh("bridge fdb show dev vxlan-6784 | grep -c '^00:00:00:00:00:00'");
        assert_eq!(flood.trim(), "2", "flood entries on host {k}");
    }
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn datapath_3_hosts_set_peers_reconciles_fdb() {
    let mut c = three_hosts();
    assert!(c.reachability().all_ok());
    let (h1, h2, h3) = (underlay_ip(1), underlay_ip(2), underlay_ip(3));

    // Hosts 1 and 3 drop each other (as the mesh does when the connection dies): the flood
    // entries and what was learnt behind the other host go, so 1 and 3 are cut apart while
    // both still reach host 2.
    c.host(1).datapath(&[h2]);
    c.host(3).datapath(&[h2]);
    assert_eq!(flood_peers(c.host(1)), [h2].into());
    assert_eq!(flood_peers(c.host(3)), [h2].into());
    for (k, gone) in [(1, h3), (3, h1)] {
        let fdb = c.host(k).ns.sh("bridge fdb show dev vxlan-6784");
        assert!(
            !fdb.contains(&format!("dst {gone}")),
            "host {k} kept entries towards {gone}:\n{fdb}"
        );
    }
    let m = c.reachability();
    println!("hosts 1 and 3 no longer flood to each other:\n{m}");
    let (a1, a2, a3) = (0, 2, 4);
    for (from, to, want) in [
        (a1, a2, true),
        (a2, a3, true),
        (a3, a2, true),
        (a1, a3, false),
        (a3, a1, false),
    ] {
        assert_eq!(m.ok[from][to], Some(want), "{from} -> {to}\n{m}");
    }

    // Idempotent, ourselves and 0.0.0.0 ignored, and peers come back.
    let dp = c.host(1).datapath(&[h2, h2, h1, Ipv4Addr::UNSPECIFIED]);
    assert_eq!(flood_peers(c.host(1)), [h2].into());
    c.host(1).datapath(&[h3, h2]);
    c.host(1).datapath(&[h3, h2]);
    c.host(3).datapath(&[h1, h2]);
    assert_eq!(flood_peers(c.host(1)), [h2, h3].into());
    assert!(c.reachability().all_ok());

    // Ensure adopts the existing device (same index, FDB kept); remove deletes it.
    let again = c.host(1).datapath(&[h3, h2]);
    assert_eq!(again.index(), dp.index());
    let removed = c
        .host(1)
        .netlink(async |nl: &Netlink| Datapath::remove(nl, 6784).await.unwrap());
    assert!(removed);
    assert!(!c.host(1).ns.links().contains(&"vxlan-6784".to_string()));
    let twice = c
        .host(1)
        .netlink(async |nl: &Netlink| Datapath::remove(nl, 6784).await.unwrap());
    assert!(!twice);
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn datapath_1_host_netlink_vxlan_and_fdb_errors() {
    let c = Cluster::new(1);
    let out = c.host(1).netlink(async |nl: &Netlink| {
        let spec = VxlanSpec {
            name: "vxt0",
            vni: 42,
            dstport: 7000,
            local: None,
            learning: false,
            mtu: 1400,
        };
        let index = nl.create_vxlan(&spec).await.unwrap();
        let config = nl.vxlan_config(index).await.unwrap().expect("vxlan config");
        assert!(spec.matches(&config), "{config:?}");
        let dup = nl.create_vxlan(&spec).await.unwrap_err();
        assert_eq!(dup.kind(), ErrorKind::AlreadyExists);
        assert!(
            dup.to_string()
                .starts_with("create vxlan \"vxt0\": File exists"),
            "{dup}"
        );

        // Two flood entries for one MAC: only possible with APPEND.
        let (a, b) = (underlay_ip(7), underlay_ip(8));
        nl.fdb_append(index, FLOOD_MAC, a).await.unwrap();
        nl.fdb_append(index, FLOOD_MAC, b).await.unwrap();
        nl.fdb_append(index, FLOOD_MAC, b).await.unwrap();
        let mac = [0x02, 0, 0, 0, 0, 9];
        nl.fdb_append(index, mac, a).await.unwrap();
        let mut listed = nl.fdb_list(index).await.unwrap();
        listed.sort_by_key(|e| (e.mac, e.dst));
        let got: Vec<_> = listed.iter().map(|e| (e.mac, e.dst, e.permanent)).collect();
        assert_eq!(
            got,
            vec![
                (FLOOD_MAC, Some(a), true),
                (FLOOD_MAC, Some(b), true),
                (mac, Some(a), true)
            ]
        );
        assert!(nl.fdb_delete(index, FLOOD_MAC, a).await.unwrap());
        assert!(!nl.fdb_delete(index, FLOOD_MAC, a).await.unwrap());
        assert_eq!(nl.fdb_list(index).await.unwrap().len(), 2);

        let missing = nl.fdb_append(9999, FLOOD_MAC, a).await.unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("append fdb entry 00:00:00:00:00:00 dst 192.0.2.7 on link 9999: "),
            "{missing}"
        );
        assert!(missing.errno().is_some(), "{missing:?}");
        // A leftover device with other settings (here: no learning) is replaced by ensure.
        let bridge = nl.ensure_bridge("weave", 1376).await.unwrap();
        let stale = VxlanSpec {
            name: "vxlan-6784",
            dstport: 6784,
            ..spec.clone()
        };
        let stale_index = nl.create_vxlan(&stale).await.unwrap();
        let dp = Datapath::ensure(nl, bridge.index, 6784, 1376, None)
            .await
            .unwrap();
        assert_ne!(dp.index(), stale_index);
        let now = nl.vxlan_config(dp.index()).await.unwrap().unwrap();
        assert_eq!((now.vni, now.learning), (datapath::VNI, true));
        let link = nl.link_by_index(dp.index()).await.unwrap().unwrap();
        assert_eq!(
            (link.master, link.mtu, link.up),
            (Some(bridge.index), 1376, true)
        );

        // Remove refuses a device of the wrong kind.
        nl.delete_link("vxt0").await.unwrap();
        nl.ensure_bridge("vxlan-7001", 1376).await.unwrap();
        let wrong = Datapath::remove(nl, 7001).await.unwrap_err();
        wrong.to_string()
    });
    assert!(out.contains("not vxlan"), "{out}");
    assert!(c.host(1).ns.links().contains(&"vxlan-7001".to_string()));
}

/// `follow` tracks the mesh's live peers: what the watch channel says is what the FDB floods
/// to (IPv6 and address-less peers skipped); the task ends when the sender goes.
#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn datapath_1_host_follows_live_peers() {
    let mut c = Cluster::new(1);
    c.start_router(1, &[]);
    let dp = c.host(1).datapath(&[]);
    let peer = |n: u64, addr: Option<std::net::IpAddr>| weave::mesh::LivePeer {
        name: weave::mesh::PeerName::from_u64(n).unwrap(),
        nickname: format!("p{n}"),
        uid: n,
        address: addr,
        direct: true,
        data_keys: None,
    };
    let (h2, h3) = (underlay_ip(2), underlay_ip(3));
    let seen = c.host(1).netlink(async move |nl: &Netlink| {
        let (tx, rx) = tokio::sync::watch::channel(vec![peer(2, Some(h2.into()))]);
        let task = tokio::spawn(dp.clone().follow(Netlink::open().unwrap(), rx));
        let wait_for = async |want: BTreeSet<Ipv4Addr>| {
            for _ in 0..200 {
                let got: BTreeSet<Ipv4Addr> = dp.peers(nl).await.unwrap().into_iter().collect();
                if got == want {
                    return got;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            dp.peers(nl).await.unwrap().into_iter().collect()
        };
        let mut seen = vec![wait_for([h2].into()).await];
        tx.send_replace(vec![
            peer(2, Some(h2.into())),
            peer(3, Some(h3.into())),
            peer(4, None),
            peer(5, Some("2001:db8::5".parse().unwrap())),
        ]);
        seen.push(wait_for([h2, h3].into()).await);
        tx.send_replace(vec![peer(3, Some(h3.into()))]);
        seen.push(wait_for([h3].into()).await);
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("follow did not end when the sender went")
            .unwrap();
        seen
    });
    assert_eq!(
        seen,
        vec![
            BTreeSet::from([h2]),
            BTreeSet::from([h2, h3]),
            BTreeSet::from([h3])
        ]
    );
}
