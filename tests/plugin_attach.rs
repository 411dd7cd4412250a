//! The kernel half of the weave-net plugin (attach/detach), against a bridge in a throw-away
//! `wvt-pa-*` "host" namespace and containers in further namespaces. No router involved.

use ipnet::Ipv4Net;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use weave::cni::Route;
use weave::netlink::{format_mac, Netlink, RouteInfo};
use weave::netns::NetNs;
use weave::plugin::{
    attach, detach, host_veth_name, retire, AttachRequest, LinkRequest, Retired, Sides,
};
use weave::ErrorKind;

mod common;

/// A `wvt-` namespace from the shared fixture (deleted on drop, also on panic) with a
/// handle and a netlink connection for the crate's code.
struct TestNs {
    base: common::Netns,
    ns: NetNs,
    nl: Netlink,
}

impl TestNs {
    /// Must be called inside the test's runtime (the netlink connection is spawned on it).
    fn new(tag: &str) -> TestNs {
        let base = common::Netns::new(&format!("pa-{tag}"));
        let ns = NetNs::open(base.path()).unwrap();
        let nl = Netlink::open_in(&ns).unwrap();
        TestNs { base, ns, nl }
    }

    /// This namespace as the host side of an attach, `c` as the container's.
    fn sides_with<'a>(&'a self, c: &'a TestNs) -> Sides<'a> {
        Sides {
            host_ns: &self.ns,
            host: &self.nl,
            container_ns: &c.ns,
            container: &c.nl,
        }
    }

    /// Runs a shell command inside the namespace; trimmed stdout.
    fn sh(&self, cmd: &str) -> String {
        self.base.sh(cmd).trim().to_string()
    }

    fn links(&self) -> Vec<String> {
        self.base.links()
    }
}

fn run<F: Future>(body: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), body)
            .await
            .expect("test timed out")
    })
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A "host" with bridge `wvtbr` at 10.32.0.1/12.
async fn host_with_bridge() -> (TestNs, u32) {
    let host = TestNs::new("h");
    let br = host.nl.ensure_bridge("wvtbr", 1376).await.unwrap();
    host.nl
        .add_address(br.index, net("10.32.0.1/12"))
        .await
        .unwrap();
    (host, br.index)
}

fn request<'a>(
    veth: &'a str,
    bridge: u32,
    address: &str,
    gateway: &str,
    routes: Option<&'a [Route]>,
) -> AttachRequest<'a> {
    AttachRequest {
        link: LinkRequest {
            host_veth: veth,
            ifname: "eth0",
            mtu: 1376,
            bridge_index: bridge,
            hairpin: true,
        },
        address: net(address),
        gateway: Some(ip(gateway)),
        routes,
    }
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn attach_builds_a_working_interface_and_is_rerunnable() {
    run(async {
        let (host, bridge) = host_with_bridge().await;
        let c = TestNs::new("c");
        let veth = host_veth_name("ctr-1", "eth0");
        let sides = host.sides_with(&c);
        let req = request(&veth, bridge, "10.32.0.5/12", "10.32.0.1", None);
        let a = attach(&sides, &req).await.unwrap();
        assert!(a.created);
        let h = a.host.clone().expect("host end");
        assert_eq!(
            (h.name.as_str(), h.master, h.mtu),
            (veth.as_str(), Some(bridge), 1376)
        );
        assert_eq!(a.container.name, "eth0");
        assert_eq!(
            a.routes,
            vec![Route {
                dst: net("0.0.0.0/0"),
                gw: Some(IpAddr::V4(ip("10.32.0.1")))
            }]
        );

        // The container's MAC is derived from its address (0e:57 + the four bytes).
        assert_eq!(format_mac(&a.container.mac), "0e:57:0a:20:00:05");
        assert_eq!(a.container.mac, weave::netlink::mac_for_ip(ip("10.32.0.5")));

        assert_eq!(
            c.sh("ip -o -4 addr show dev eth0 | awk '{print $4}'"),
            "10.32.0.5/12"
        );
        assert!(c.sh("ip link show eth0").contains("mtu 1376"));
        assert!(c
            .sh("ip route show default")
            .contains("via 10.32.0.1 dev eth0"));
        assert_eq!(
            host.sh(&format!("cat /sys/class/net/{veth}/brport/hairpin_mode")),
            "1"
        );
        assert!(host
            .sh(&format!("ip link show {veth}"))
            .contains("state UP"));
        for (key, want) in [
            ("base_reachable_time", "5"),
            ("delay_first_probe_time", "2"),
            ("ucast_solicit", "1"),
        ] {
            assert_eq!(
                c.sh(&format!("cat /proc/sys/net/ipv4/neigh/eth0/{key}")),
                want,
                "{key}"
            );
        }
        if std::path::Path::new("/proc/sys/net/ipv6").exists() {
            assert_eq!(c.sh("cat /proc/sys/net/ipv6/conf/eth0/accept_ra"), "0");
            assert_eq!(
                host.sh(&format!("cat /proc/sys/net/ipv6/conf/{veth}/accept_ra")),
                "0"
            );
        }
        // Traffic flows: a TCP connect from the container to a listener on the bridge address.
        let listener = host
            .ns
            .run(|| std::net::TcpListener::bind("10.32.0.1:0"))
            .unwrap()
            .unwrap();
        let target = listener.local_addr().unwrap();
        c.ns.run(|| std::net::TcpStream::connect_timeout(&target, Duration::from_secs(3)))
            .unwrap()
            .expect("container reaches the bridge");

        let again = attach(&sides, &req).await.expect("a repeated ADD succeeds");
        assert!(!again.created);
        assert_eq!(again.container.index, a.container.index);
        assert_eq!(again.host.map(|h| h.index), Some(h.index));
        assert_eq!(c.sh("ip -o -4 addr show dev eth0 | wc -l"), "1");
    });
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn routes_follow_ipam_gateway_outside_explicit_and_none() {
    run(async {
        let (host, bridge) = host_with_bridge().await;
        let (c1, c2, c3) = (TestNs::new("r1"), TestNs::new("r2"), TestNs::new("r3"));

        // Gateway outside the container's subnet: a link route to it first.
        let v1 = host_veth_name("r1", "eth0");
        let sides = host.sides_with(&c1);
        let a = attach(
            &sides,
            &request(&v1, bridge, "10.32.0.5/24", "10.32.9.1", None),
        )
        .await
        .unwrap();
        let gw = Some(IpAddr::V4(ip("10.32.9.1")));
        assert_eq!(
            a.routes,
            vec![
                Route {
                    dst: net("10.32.9.1/32"),
                    gw: None
                },
                Route {
                    dst: net("0.0.0.0/0"),
                    gw
                }
            ]
        );
        assert!(c1.sh("ip route show 10.32.9.1").contains("scope link"));
        assert!(c1.sh("ip route show default").contains("via 10.32.9.1"));

        // Explicit routes: exactly those, via their own gateway or the IPAM one.
        let v2 = host_veth_name("r2", "eth0");
        let routes = [
            Route {
                dst: net("10.96.0.0/16"),
                gw: None,
            },
            Route {
                dst: net("10.97.0.0/16"),
                gw: Some(IpAddr::V4(ip("10.32.0.9"))),
            },
        ];
        let sides = host.sides_with(&c2);
        let a = attach(
            &sides,
            &request(&v2, bridge, "10.32.0.6/12", "10.32.0.1", Some(&routes)),
        )
        .await
        .unwrap();
        assert_eq!(a.routes[0].gw, Some(IpAddr::V4(ip("10.32.0.1"))));
        let eth0 = a.container.index;
        let have = c2.nl.routes_v4().await.unwrap();
        assert!(have.contains(&RouteInfo {
            dst: net("10.96.0.0/16"),
            gateway: Some(ip("10.32.0.1")),
            oif: Some(eth0)
        }));
        assert!(have.contains(&RouteInfo {
            dst: net("10.97.0.0/16"),
            gateway: Some(ip("10.32.0.9")),
            oif: Some(eth0)
        }));
        assert!(c2.sh("ip route show default").is_empty());

        // `routes: []`: no routes at all.
        let v3 = host_veth_name("r3", "eth0");
        let sides = host.sides_with(&c3);
        let a = attach(
            &sides,
            &request(&v3, bridge, "10.32.0.7/12", "10.32.0.1", Some(&[])),
        )
        .await
        .unwrap();
        assert!(a.routes.is_empty());
        assert!(c3.sh("ip route show default").is_empty());
    });
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn failed_attach_leaves_nothing_behind() {
    run(async {
        let (host, bridge) = host_with_bridge().await;
        let c = TestNs::new("f");
        let before = host.links();
        let veth = host_veth_name("fail", "eth0");
        let sides = host.sides_with(&c);

        // Fails after the veth exists: an unreachable route gateway.
        let bad = [Route {
            dst: net("10.97.0.0/16"),
            gw: Some(IpAddr::V4(ip("192.168.77.1"))),
        }];
        let e = attach(
            &sides,
            &request(&veth, bridge, "10.32.0.5/12", "10.32.0.1", Some(&bad)),
        )
        .await
        .unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENETUNREACH), "{e}");
        assert!(
            e.message()
                .starts_with("add route 10.97.0.0/16 via 192.168.77.1"),
            "{e}"
        );
        assert_eq!(host.links(), before);
        assert_eq!(c.links(), vec!["lo".to_string()]);

        // Fails at creation: an MTU the kernel refuses.
        let mut req = request(&veth, bridge, "10.32.0.5/12", "10.32.0.1", None);
        req.link.mtu = 70000;
        let e = attach(&sides, &req).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Kernel, "{e}");
        assert!(
            e.message().starts_with(&format!("create veth \"{veth}\"")),
            "{e}"
        );
        assert_eq!(host.links(), before);

        // The host name is taken by something else: AlreadyExists, and it is left alone.
        host.sh(&format!("ip link add {veth} type bridge"));
        let e = attach(
            &sides,
            &request(&veth, bridge, "10.32.0.5/12", "10.32.0.1", None),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
        assert!(host.links().contains(&veth));
        assert_eq!(c.links(), vec!["lo".to_string()]);
    });
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn detach_removes_both_ends_and_is_idempotent() {
    run(async {
        let (host, bridge) = host_with_bridge().await;
        let c = TestNs::new("d");
        let veth = host_veth_name("det", "eth0");
        let sides = host.sides_with(&c);
        attach(
            &sides,
            &request(&veth, bridge, "10.32.0.5/12", "10.32.0.1", None),
        )
        .await
        .unwrap();
        assert!(detach(&host.nl, Some(&c.nl), "eth0", &veth).await.unwrap());
        assert!(!host.links().contains(&veth));
        assert_eq!(c.links(), vec!["lo".to_string()]);
        assert!(!detach(&host.nl, Some(&c.nl), "eth0", &veth).await.unwrap());

        // Without the container namespace (gone, or DEL without CNI_NETNS): the host end.
        attach(
            &sides,
            &request(&veth, bridge, "10.32.0.5/12", "10.32.0.1", None),
        )
        .await
        .unwrap();
        assert!(detach(&host.nl, None, "eth0", &veth).await.unwrap());
        assert!(!host.links().contains(&veth));
        assert_eq!(c.links(), vec!["lo".to_string()]);
    });
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn retire_frees_both_names_at_once_and_the_group_delete_takes_the_pair() {
    run(async {
        let (host, bridge) = host_with_bridge().await;
        let c = TestNs::new("r");
        let veth = host_veth_name("ret", "eth0");
        let sides = host.sides_with(&c);
        let req = request(&veth, bridge, "10.32.0.5/12", "10.32.0.1", None);
        attach(&sides, &req).await.unwrap();
        let how = retire(&host.nl, Some(&c.nl), "eth0", &veth).await.unwrap();
        let Retired::Slot(slot) = how else {
            panic!("not retired into a slot: {how:?}")
        };
        let name = weave::plugin::retire::retired_veth_name(slot);
        // Host end: renamed, off the bridge, in the retired group; container end: down,
        // renamed, without routes.
        let show = host.sh(&format!("ip -d -o link show dev {name}"));
        assert!(!show.contains("master"), "{show}");
        assert!(
            show.contains(&format!("group {}", weave::RETIRED_GROUP))
                || show.contains(&format!("group {:#x}", weave::RETIRED_GROUP)),
            "{show}"
        );
        assert!(!host.links().contains(&veth));
        let inner: Vec<String> = c.links().into_iter().filter(|l| l != "lo").collect();
        assert_eq!(inner.len(), 1, "{inner:?}");
        assert!(inner[0].starts_with(weave::RETIRED_IF_PREFIX), "{inner:?}");
        let show = c.sh(&format!("ip -o link show dev {}", inner[0]));
        assert!(show.contains("state DOWN"), "{show}");
        assert_eq!(c.sh("ip route show"), "");

        // Both names are free: the same container and interface attach again at once.
        attach(&sides, &req).await.unwrap();
        assert!(host.links().contains(&veth));
        c.sh("ping -c 1 -W 2 10.32.0.1");

        // One request deletes the retired pair, both ends; the new one stays.
        assert!(host.nl.delete_group(weave::RETIRED_GROUP).await.unwrap());
        assert!(!host.links().contains(&name));
        let mut links = c.links();
        links.sort();
        assert_eq!(links, vec!["eth0".to_string(), "lo".to_string()]);
        assert!(!host.nl.delete_group(weave::RETIRED_GROUP).await.unwrap());

        // Without the container's namespace: deleted here (its end would keep the name).
        assert_eq!(
            retire(&host.nl, None, "eth0", &veth).await.unwrap(),
            Retired::Deleted
        );
        assert!(!host.links().contains(&veth));
        assert_eq!(c.links(), vec!["lo".to_string()]);

        // Nothing of ours to retire: the container's interface is deleted as before.
        attach(&sides, &req).await.unwrap();
        assert_eq!(
            retire(&host.nl, Some(&c.nl), "eth0", "vethweplmissing")
                .await
                .unwrap(),
            Retired::Deleted
        );
        assert_eq!(c.links(), vec!["lo".to_string()]);
        assert!(!host.links().contains(&veth), "a veth dies as a pair");
    });
}
