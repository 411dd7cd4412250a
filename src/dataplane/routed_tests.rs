use super::*;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn name(n: u64) -> PeerName {
    PeerName::from_u64(n).unwrap()
}

fn peer(n: u64, ip: &str, direct: bool) -> Peer {
    Peer {
        name: name(n),
        nickname: format!("p{n}"),
        underlay: Some(ip.parse().unwrap()),
        direct,
        keys: None,
    }
}

fn link(index: u32, name: &str, up: bool, master: Option<u32>, kind: Option<&str>) -> LinkInfo {
    LinkInfo {
        index,
        name: name.into(),
        mtu: 1500,
        mac: [0; 6],
        up,
        master,
        kind: kind.map(str::to_string),
    }
}

#[test]
fn only_direct_unencrypted_peers_on_a_connected_subnet_are_routed() {
    let subnets = [
        Connected {
            net: net("192.0.2.1/24"),
            oif: 2,
        },
        Connected {
            net: net("192.0.2.1/26"),
            oif: 3,
        },
        Connected {
            net: net("203.0.113.7/32"),
            oif: 4,
        },
    ];
    assert_eq!(
        routed_path(&peer(1, "192.0.2.9", true), false, &subnets),
        Some(3),
        "longest prefix"
    );
    assert_eq!(
        routed_path(&peer(1, "192.0.2.99", true), false, &subnets),
        Some(2)
    );
    assert_eq!(
        routed_path(&peer(1, "192.0.2.9", true), true, &subnets),
        None,
        "password"
    );
    assert_eq!(
        routed_path(&peer(1, "192.0.2.9", false), false, &subnets),
        None,
        "not direct"
    );
    assert_eq!(
        routed_path(&peer(1, "198.51.100.4", true), false, &subnets),
        None,
        "far"
    );
    assert_eq!(
        routed_path(&peer(1, "192.0.2.1", true), false, &subnets),
        None,
        "ourselves"
    );
    assert_eq!(
        routed_path(&peer(1, "203.0.113.7", true), false, &subnets),
        None,
        "/32"
    );
    assert_eq!(
        routed_path(&peer(1, "2001:db8::1", true), false, &subnets),
        None,
        "IPv6"
    );
    let mut none = peer(1, "192.0.2.9", true);
    none.underlay = None;
    assert_eq!(routed_path(&none, false, &subnets), None);
}

#[test]
fn the_underlay_excludes_the_bridge_its_ports_loopback_vxlan_and_down_links() {
    let links = [
        link(1, "lo", true, None, None),
        link(2, "eth0", true, None, Some("veth")),
        link(3, "weave", true, None, Some("bridge")),
        link(4, "vethwepl1", true, Some(3), Some("veth")),
        link(5, "vxlan-6784", true, Some(3), Some("vxlan")),
        link(6, "eth1", false, None, None),
        link(7, "vx", true, None, Some("vxlan")),
    ];
    let addrs = [
        (1, net("127.0.0.1/8")),
        (2, net("192.0.2.1/24")),
        (3, net("10.32.0.1/12")),
        (4, net("10.40.0.1/24")),
        (6, net("198.51.100.1/24")),
        (7, net("203.0.113.1/24")),
    ];
    assert_eq!(
        connected_subnets(&links, &addrs, 3),
        vec![Connected {
            net: net("192.0.2.1/24"),
            oif: 2
        }]
    );
}

#[test]
fn cidrs_cover_exactly_the_range() {
    let ip = |s: &str| u64::from(u32::from(s.parse::<Ipv4Addr>().unwrap()));
    assert_eq!(
        cidrs(ip("10.32.0.0"), ip("10.48.0.0")),
        vec![net("10.32.0.0/12")]
    );
    assert_eq!(
        cidrs(ip("10.32.0.0"), ip("10.37.85.85")),
        vec![
            net("10.32.0.0/14"),
            net("10.36.0.0/16"),
            net("10.37.0.0/18"),
            net("10.37.64.0/20"),
            net("10.37.80.0/22"),
            net("10.37.84.0/24"),
            net("10.37.85.0/26"),
            net("10.37.85.64/28"),
            net("10.37.85.80/30"),
            net("10.37.85.84/32"),
        ]
    );
    assert_eq!(cidrs(0, 1 << 32), vec![net("0.0.0.0/0")]);
    assert!(cidrs(5, 5).is_empty());
    // Exhaustive on a small span: blocks are aligned, disjoint, in order and cover it all.
    for start in 0..64u64 {
        for end in start..64u64 {
            let blocks = cidrs(start, end);
            let mut at = start;
            for b in &blocks {
                let (s, n) = (
                    u64::from(u32::from(b.network())),
                    1u64 << (32 - b.prefix_len()),
                );
                assert_eq!(s, at, "{start}..{end}: {blocks:?}");
                assert_eq!(s % n, 0);
                at += n;
            }
            assert_eq!(at, end);
        }
    }
}

#[test]
fn ring_entries_become_blocks_per_owner_with_the_last_one_wrapping() {
    let e = |token: &str, size: u64, peer: u64| RingEntry {
        token: token.parse().unwrap(),
        size,
        peer: name(peer),
        version: 0,
        free: 0,
    };
    let universe = net("10.32.0.0/12");
    // Tokens not at the universe's start: the last entry wraps round to the first token
    // (10.44.0.0..10.48.0.0, then 10.32.0.0..10.32.0.1).
    let entries = [
        e("10.32.0.1", 0x40000 - 1, 1),
        e("10.36.0.0", 0x40000, 2),
        e("10.40.0.0", 0x40000, 2),
        e("10.42.0.0", 0, 3),
        e("10.44.0.0", 0x40000 + 1, 1),
    ];
    let got = ring_ranges(&entries, universe);
    assert_eq!(
        got.get(&name(1)),
        Some(&vec![net("10.32.0.0/14"), net("10.44.0.0/14")])
    );
    assert_eq!(
        got.get(&name(2)),
        Some(&vec![net("10.36.0.0/14"), net("10.40.0.0/14")])
    );
    assert_eq!(got.get(&name(3)), None, "empty entries own nothing");
}

#[test]
fn the_plan_keeps_the_range_on_the_bridge_and_routes_each_peers_blocks() {
    let universe = net("10.32.0.0/12");
    let hops = [Hop {
        name: name(2),
        gateway: "192.0.2.2".parse().unwrap(),
        oif: 7,
    }];
    let ranges: BTreeMap<PeerName, Vec<Ipv4Net>> = [
        (name(2), vec![net("10.36.0.0/14"), net("10.32.0.0/12")]),
        (name(3), vec![net("10.40.0.0/14")]),
    ]
    .into();
    let want = plan(universe, 3, &hops, &ranges);
    let r = |dst: &str, gw: Option<&str>, oif| OwnedRoute {
        dst: net(dst),
        gateway: gw.map(|g| g.parse().unwrap()),
        oif,
        metric: ROUTE_METRIC,
    };
    assert_eq!(
        want,
        [
            r("10.32.0.0/12", None, 3),
            r("10.36.0.0/14", Some("192.0.2.2"), 7)
        ]
        .into()
    );
}

#[test]
fn modes_parse_and_print() {
    for m in [Mode::Auto, Mode::Vxlan, Mode::Routed] {
        assert_eq!(m.to_string().parse::<Mode>().unwrap(), m);
    }
    let e = "host-gw".parse::<Mode>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "--dataplane \"host-gw\": want auto, vxlan or routed"
    );
}
