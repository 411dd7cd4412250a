//! Real-kernel tests of `weave::netlink` and `weave::netns`, each inside throw-away `wvt-nl-*`
//! namespaces so the host is never touched.

use ipnet::Ipv4Net;
use std::future::Future;
use std::net::Ipv4Addr;
use std::time::Duration;
use weave::netlink::{Netlink, RouteInfo};
use weave::netns::NetNs;
use weave::ErrorKind;

mod common;

/// A `wvt-` namespace from the shared fixture (deleted on drop, also on panic) with a
/// handle for the crate's netns/netlink code.
struct TestNs {
    base: common::Netns,
    ns: NetNs,
}

impl TestNs {
    fn new(tag: &str) -> TestNs {
        let base = common::Netns::new(&format!("nl-{tag}"));
        let ns = NetNs::open(base.path()).unwrap();
        TestNs { base, ns }
    }

    fn netlink(&self) -> Netlink {
        Netlink::open_in(&self.ns).unwrap()
    }

    /// Runs a shell command inside the namespace (with its own /sys); trimmed stdout.
    fn exec(&self, cmd: &str) -> String {
        self.base.sh(cmd).trim().to_string()
    }
}

/// Runs a test body on a current-thread runtime (setns is per thread), bounded in time.
fn run<F: Future>(body: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), body)
            .await
            .expect("test timed out")
    })
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn bridge_create_is_idempotent() {
    let host = TestNs::new("br");
    run(async {
        let nl = host.netlink();
        let first = nl.ensure_bridge("wvtbr", 1400).await.unwrap();
        assert_eq!(first.kind.as_deref(), Some("bridge"));
        assert_eq!(first.mtu, 1400);
        assert!(first.up);
        let again = nl.ensure_bridge("wvtbr", 1400).await.unwrap();
        assert_eq!(again.index, first.index);
        assert_eq!(
            nl.link_by_index(first.index).await.unwrap().unwrap().name,
            "wvtbr"
        );
        assert!(nl.links().await.unwrap().iter().any(|l| l.name == "wvtbr"));

        nl.set_down(first.index).await.unwrap();
        assert!(
            nl.ensure_bridge("wvtbr", 1400).await.unwrap().up,
            "ensure_bridge brings it up"
        );

        let e = nl.ensure_bridge("lo", 1400).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
        assert!(e.message().starts_with("create bridge \"lo\""), "{e}");
    });
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn veth_is_created_into_other_ns_with_mtu_and_master() {
    let (host, cont) = (TestNs::new("vh"), TestNs::new("vc"));
    run(async {
        let (nlh, nlc) = (host.netlink(), cont.netlink());
        let br = nlh.ensure_bridge("wvtbr", 1500).await.unwrap();
        let idx = nlh
            .create_veth_into(
                "vethwvt1",
                "eth0",
                1376,
                Some(br.index),
                &cont.ns,
                Some([0x0e, 0x57, 10, 32, 0, 9]),
            )
            .await
            .unwrap();

        let h = nlh.link("vethwvt1").await.unwrap().unwrap();
        assert_eq!(
            (h.index, h.mtu, h.master, h.up),
            (idx, 1376, Some(br.index), true)
        );
        assert_eq!(h.kind.as_deref(), Some("veth"));
        let c = nlc
            .link("eth0")
            .await
            .unwrap()
            .expect("peer inside the container ns");
        assert_eq!(c.mtu, 1376);
        assert_eq!(c.mac, [0x0e, 0x57, 10, 32, 0, 9], "the MAC asked for");
        assert!(
            nlh.link("eth0").await.unwrap().is_none(),
            "peer must not be in the host ns"
        );
        assert!(nlc.link("vethwvt1").await.unwrap().is_none());

        let e = nlh
            .create_veth_into("vethwvt1", "eth1", 1376, None, &cont.ns, None)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
        assert_eq!(e.errno(), Some(libc::EEXIST));
        assert!(
            e.message()
                .starts_with("create veth \"vethwvt1\": File exists"),
            "{e}"
        );

        // Deleting one end removes the pair.
        assert!(nlh.delete_link("vethwvt1").await.unwrap());
        assert!(nlc.link("eth0").await.unwrap().is_none());
    });
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn addresses_add_and_delete() {
    let host = TestNs::new("ad");
    run(async {
        let nl = host.netlink();
        let br = nl.ensure_bridge("wvtbr", 1376).await.unwrap();
        let addr = net("10.32.0.5/12");
        nl.add_address(br.index, addr).await.unwrap();
        nl.add_address(br.index, addr)
            .await
            .expect("an existing address is fine");
        assert_eq!(nl.addresses_v4(br.index).await.unwrap(), vec![addr]);
        assert!(host
            .exec("ip -4 addr show dev wvtbr")
            .contains("10.32.0.5/12"));
        assert!(nl.delete_address(br.index, addr).await.unwrap());
        assert!(!nl.delete_address(br.index, addr).await.unwrap());
        assert!(nl.addresses_v4(br.index).await.unwrap().is_empty());
    });
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn routes_via_gateway_inside_and_outside_subnet() {
    let (host, cont) = (TestNs::new("rh"), TestNs::new("rc"));
    run(async {
        let (nlh, nlc) = (host.netlink(), cont.netlink());
        let hidx = nlh
            .create_veth_into("vethwvt2", "eth0", 1376, None, &cont.ns, None)
            .await
            .unwrap();
        nlh.set_up(hidx).await.unwrap();
        let eth0 = nlc.link("eth0").await.unwrap().unwrap();
        nlc.set_up(eth0.index).await.unwrap();
        nlc.add_address(eth0.index, net("10.32.0.5/12"))
            .await
            .unwrap();

        nlc.add_route_v4(net("10.40.0.1/32"), None, eth0.index, true)
            .await
            .unwrap();
        nlc.add_route_v4(
            net("0.0.0.0/0"),
            Some("10.40.0.1".parse().unwrap()),
            eth0.index,
            false,
        )
        .await
        .unwrap();
        nlc.add_route_v4(
            net("0.0.0.0/0"),
            Some("10.40.0.1".parse().unwrap()),
            eth0.index,
            false,
        )
        .await
        .expect("an existing route is fine");
        nlc.add_route_v4(
            net("10.96.0.0/16"),
            Some("10.32.0.1".parse().unwrap()),
            eth0.index,
            false,
        )
        .await
        .unwrap();

        let routes = nlc.routes_v4().await.unwrap();
        let has = |r: RouteInfo| routes.contains(&r);
        let gw = |s: &str| Some(s.parse::<Ipv4Addr>().unwrap());
        assert!(
            has(RouteInfo {
                dst: net("0.0.0.0/0"),
                gateway: gw("10.40.0.1"),
                oif: Some(eth0.index)
            }),
            "{routes:?}"
        );
        assert!(
            has(RouteInfo {
                dst: net("10.40.0.1/32"),
                gateway: None,
                oif: Some(eth0.index)
            }),
            "{routes:?}"
        );
        assert!(
            has(RouteInfo {
                dst: net("10.96.0.0/16"),
                gateway: gw("10.32.0.1"),
                oif: Some(eth0.index)
            }),
            "{routes:?}"
        );
        assert!(
            has(RouteInfo {
                dst: net("10.32.0.0/12"),
                gateway: None,
                oif: Some(eth0.index)
            }),
            "{routes:?}"
        );
        assert!(cont
            .exec("ip route show default")
            .contains("via 10.40.0.1 dev eth0"));

        let e = nlc
            .add_route_v4(
                net("10.97.0.0/16"),
                Some("192.168.77.1".parse().unwrap()),
                eth0.index,
                false,
            )
            .await
            .unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENETUNREACH), "{e}");
        assert!(
            e.message()
                .starts_with("add route 10.97.0.0/16 via 192.168.77.1"),
            "{e}"
        );

        assert!(nlc
            .delete_route_v4(net("10.96.0.0/16"), gw("10.32.0.1"), eth0.index)
            .await
            .unwrap());
        assert!(!nlc
            .delete_route_v4(net("10.96.0.0/16"), gw("10.32.0.1"), eth0.index)
            .await
            .unwrap());
    });
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn hairpin_mode_is_set_on_bridge_port() {
    let (host, cont) = (TestNs::new("hh"), TestNs::new("hc"));
    run(async {
        let nl = host.netlink();
        let br = nl.ensure_bridge("wvtbr", 1376).await.unwrap();
        let idx = nl
            .create_veth_into("vethwvt3", "eth0", 1376, Some(br.index), &cont.ns, None)
            .await
            .unwrap();
        let sysfs = "cat /sys/class/net/vethwvt3/brport/hairpin_mode";
        assert_eq!(host.exec(sysfs), "0");
        nl.set_hairpin(idx, true).await.unwrap();
        assert_eq!(host.exec(sysfs), "1");
        nl.set_hairpin(idx, false).await.unwrap();
        assert_eq!(host.exec(sysfs), "0");
    });
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn deleting_a_missing_link_is_ok_false() {
    let host = TestNs::new("dl");
    run(async {
        let nl = host.netlink();
        assert!(!nl.delete_link("wvt-nothere").await.unwrap());
        assert!(nl.link("wvt-nothere").await.unwrap().is_none());
        nl.ensure_bridge("wvtbr", 1376).await.unwrap();
        assert!(nl.delete_link("wvtbr").await.unwrap());
        assert!(!nl.delete_link("wvtbr").await.unwrap());
    });
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn netns_identity_sysctl_and_open_errors() {
    let (a, b) = (TestNs::new("ia"), TestNs::new("ib"));
    let own = NetNs::current().unwrap();
    assert!(!a.ns.same_as(&b.ns).unwrap());
    assert!(!a.ns.same_as(&own).unwrap());
    let again = NetNs::open(a.ns.path()).unwrap();
    assert!(a.ns.same_as(&again).unwrap());
    let inside = a.ns.run(|| NetNs::current().unwrap()).unwrap();
    assert!(a.ns.same_as(&inside).unwrap());
    assert!(
        NetNs::current().unwrap().same_as(&own).unwrap(),
        "run switches back"
    );

    // A new namespace starts from the host's value (1 on a host running Docker), so write the
    // other value into a and check that b keeps its own.
    let before = b.exec("cat /proc/sys/net/ipv4/ip_forward");
    let flipped = if before == "1" { "0" } else { "1" };
    assert!(a.ns.write_sysctl("net/ipv4/ip_forward", flipped).unwrap());
    assert_eq!(a.exec("cat /proc/sys/net/ipv4/ip_forward"), flipped);
    assert_eq!(
        b.exec("cat /proc/sys/net/ipv4/ip_forward"),
        before,
        "written only inside a"
    );
    assert!(!a
        .ns
        .write_sysctl("net/ipv4/neigh/nosuchif/ucast_solicit", "1")
        .unwrap());

    let file = tempfile::NamedTempFile::new().unwrap();
    let e = NetNs::open(file.path()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NetNs);
    assert_eq!(
        e.to_string(),
        format!(
            "open netns \"{}\": not a network namespace",
            file.path().display()
        )
    );
}

/// Frames the TAP queue `q` holds now: (ARP target address) for each ARP request.
fn arp_targets(q: &std::fs::File) -> Vec<Ipv4Addr> {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = (&*q).read(&mut buf) {
        // Ethernet (14) + ARP: op at 20..22, target IP at 38..42.
        if n >= 42 && buf[12..14] == [0x08, 0x06] && buf[20..22] == [0, 1] {
            got.push(Ipv4Addr::new(buf[38], buf[39], buf[40], buf[41]));
        }
    }
    got
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn a_steered_tap_hands_each_frame_to_the_queue_of_its_senders_cpu() {
    use std::os::fd::AsRawFd;
    let ns = TestNs::new("tq");
    let queues = ns
        .ns
        .run(|| weave::netlink::open_tap_queues("wvtq", 0, 2))
        .unwrap()
        .unwrap();
    weave::netlink::steer_tap_by_cpu(&queues[0], 2).unwrap();
    for q in &queues {
        // SAFETY: fcntl on the test's own descriptors.
        unsafe {
            let fl = libc::fcntl(q.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(q.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
    ns.exec("sysctl -qw net.ipv6.conf.all.disable_ipv6=1; ip addr add 10.77.0.1/24 dev wvtq; ip link set wvtq up");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for cpu in 0..cpus {
        let target = Ipv4Addr::new(10, 77, 0, 10 + cpu as u8);
        // The ARP request for an unknown neighbour leaves from the pinging process's CPU.
        ns.exec(&format!(
            "taskset -c {cpu} ping -c 1 -W 0.3 {target} || true"
        ));
        let mine = arp_targets(&queues[cpu % 2]);
        let other = arp_targets(&queues[(cpu + 1) % 2]);
        assert!(mine.contains(&target), "cpu {cpu}: {mine:?} / {other:?}");
        assert!(!other.contains(&target), "cpu {cpu}: {mine:?} / {other:?}");
    }
}
