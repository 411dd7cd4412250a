//! Unit tests of the rule planning in [`super`] (no iptables run).

use super::*;

fn pm(host: u16, cont: u16, proto: &str) -> PortMapping {
    PortMapping {
        host_port: host,
        container_port: cont,
        protocol: proto.to_string(),
        host_ip: None,
    }
}

const SAVED: &str = r#"*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -o weave -m conntrack --ctstate DNAT -m comment --comment "weave-net port mappings" -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:WEAVE-PORTMAP - [0:0]
:WEAVE-PORTMAP-MASQ - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j WEAVE-PORTMAP
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j WEAVE-PORTMAP
-A POSTROUTING -j WEAVE-PORTMAP-MASQ
-A WEAVE-PORTMAP -p tcp -m tcp --dport 8080 -m comment --comment "weave-net portmap c1 eth0" -j DNAT --to-destination 10.32.0.5:80
-A WEAVE-PORTMAP-MASQ -s 10.32.0.0/12 -d 10.32.0.5/32 -p tcp -m tcp --dport 80 -m conntrack --ctstate DNAT -m comment --comment "weave-net portmap c1 eth0" -j MASQUERADE
COMMIT
"#;

fn addr() -> Ipv4Net {
    "10.32.0.9/12".parse().unwrap()
}

#[test]
fn fresh_host_gets_chains_jumps_and_rules() {
    let l = Listing::parse("");
    let s = plan_add(
        &l,
        "weave-net portmap c2 eth0",
        &[pm(8081, 80, "udp")],
        addr(),
        "weave",
    )
    .unwrap();
    let expect = [
        "*filter",
        "-A FORWARD -o weave -m conntrack --ctstate DNAT -m comment --comment \"weave-net port mappings\" -j ACCEPT",
        "COMMIT",
        "*nat",
        ":WEAVE-PORTMAP - [0:0]",
        ":WEAVE-PORTMAP-MASQ - [0:0]",
        "-A PREROUTING -m addrtype --dst-type LOCAL -j WEAVE-PORTMAP",
        "-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j WEAVE-PORTMAP",
        "-A POSTROUTING -j WEAVE-PORTMAP-MASQ",
        "-A WEAVE-PORTMAP -p udp -m udp --dport 8081 -m comment --comment \"weave-net portmap c2 eth0\" -j DNAT --to-destination 10.32.0.9:80",
        "-A WEAVE-PORTMAP-MASQ -s 10.32.0.0/12 -d 10.32.0.9/32 -p udp -m udp --dport 80 -m conntrack --ctstate DNAT -m comment --comment \"weave-net portmap c2 eth0\" -j MASQUERADE",
        "COMMIT",
    ];
    assert_eq!(s.lines().collect::<Vec<_>>(), expect);
}

#[test]
fn existing_setup_is_not_declared_again() {
    // Declaring an existing chain under --noflush would flush it.
    let l = Listing::parse(SAVED);
    let s = plan_add(
        &l,
        "weave-net portmap c2 eth0",
        &[pm(8081, 80, "tcp")],
        addr(),
        "weave",
    )
    .unwrap();
    assert!(!s.contains(":WEAVE"), "{s}");
    assert!(!s.contains("*filter"), "{s}");
    assert!(!s.contains("PREROUTING") && !s.contains("-A OUTPUT"), "{s}");
    assert_eq!(s.lines().filter(|l| l.starts_with("-A WEAVE")).count(), 2);
    assert!(!s.contains("-D "), "{s}");
}

#[test]
fn taken_port_is_a_conflict_but_udp_is_not() {
    let l = Listing::parse(SAVED);
    let e = plan_add(
        &l,
        "weave-net portmap c2 eth0",
        &[pm(9, 9, "tcp"), pm(8080, 80, "tcp")],
        addr(),
        "weave",
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert_eq!(
        e.message(),
        "map host port 8080/tcp: already mapped for container \"c1 eth0\""
    );
    assert!(plan_add(
        &l,
        "weave-net portmap c2 eth0",
        &[pm(8080, 80, "udp")],
        addr(),
        "weave"
    )
    .is_ok());
    let e = plan_add(
        &l,
        "t",
        &[pm(1, 1, "tcp"), pm(1, 2, "tcp")],
        addr(),
        "weave",
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
}

#[test]
fn repeated_add_replaces_its_own_rules() {
    let l = Listing::parse(SAVED);
    let s = plan_add(
        &l,
        "weave-net portmap c1 eth0",
        &[pm(8080, 80, "tcp")],
        addr(),
        "weave",
    )
    .unwrap();
    assert_eq!(
        s.lines().filter(|l| l.starts_with("-D WEAVE")).count(),
        2,
        "{s}"
    );
    assert!(s.contains("-D WEAVE-PORTMAP -p tcp -m tcp --dport 8080 -m comment --comment \"weave-net portmap c1 eth0\" -j DNAT --to-destination 10.32.0.5:80"));
    assert!(s.contains("--to-destination 10.32.0.9:80"));
}

#[test]
fn remove_deletes_only_unkept_tags() {
    let l = Listing::parse(SAVED);
    assert!(plan_remove(&l, |t| t == "weave-net portmap c1 eth0").is_none());
    let s = plan_remove(&l, |_| false).unwrap();
    assert_eq!(s.lines().filter(|l| l.starts_with("-D ")).count(), 2);
    assert!(s.starts_with("*nat\n") && s.ends_with("COMMIT\n"));
}

#[test]
fn long_or_odd_names_are_hashed() {
    assert_eq!(tag("abc", "eth0"), "weave-net portmap abc eth0");
    let long = "a".repeat(255);
    let t = tag(&long, "eth0");
    assert!(
        t.starts_with("weave-net portmap sha256:") && t.len() < 80,
        "{t}"
    );
    assert_ne!(t, tag(&long, "eth1"));
    assert!(tag("abc", "e\"x").contains("sha256:"));
}
