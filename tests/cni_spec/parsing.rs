//! Fixtures as runtimes send them, result shapes per version.

use super::*;

// ----- fixtures -----

/// `Ok` when the fixture must parse; else the error kind and a piece of its message.
type Expectation = std::result::Result<(), (ErrorKind, &'static str)>;

#[test]
fn every_fixture_parses_or_fails_as_expected() {
    use ErrorKind::*;
    let expected: &[(&str, Expectation)] = &[
        ("minimal.json", Ok(())),
        ("version-0.1.0.json", Ok(())),
        ("version-0.2.0.json", Ok(())),
        ("version-0.3.0.json", Ok(())),
        ("version-0.3.1.json", Ok(())),
        ("version-0.4.0.json", Ok(())),
        ("version-1.0.0.json", Ok(())),
        ("version-1.1.0.json", Ok(())),
        ("conflist-member-weave.json", Ok(())),
        ("conflist-member-prevresult.json", Ok(())),
        ("mesos-h1-add.json", Ok(())),
        ("mesos-doc-labels-ports.json", Ok(())),
        ("mesos-weave-no-version.json", Ok(())),
        ("mesos-weave-conflist.json", Ok(())),
        ("containerd-portmappings.json", Ok(())),
        ("podman.json", Ok(())),
        ("routes-empty.json", Ok(())),
        ("routes-given.json", Ok(())),
        ("unknown-keys.json", Ok(())),
        ("hairpin-off-mtu.json", Ok(())),
        ("is-gateway-ipmasq.json", Ok(())),
        ("dns.json", Ok(())),
        ("delegated-ipam.json", Ok(())),
        ("gc-valid-attachments.json", Ok(())),
        (
            "mesos-malformed.json",
            Err((
                InvalidConfig,
                "network_info.port_mappings[0].container_port",
            )),
        ),
        ("subnet-host-bits.json", Err((InvalidConfig, "host bits"))),
        (
            "subnet-too-small.json",
            Err((InvalidConfig, "minimum of 4 addresses")),
        ),
        (
            "ipv6-subnet.json",
            Err((InvalidConfig, "IPv6 is not supported")),
        ),
        (
            "ipv6-route.json",
            Err((InvalidConfig, "IPv6 is not supported")),
        ),
        (
            "bad-type-mtu.json",
            Err((
                InvalidConfig,
                "\"mtu\" must be a non-negative integer, got a string",
            )),
        ),
        (
            "bad-type-hairpin.json",
            Err((
                InvalidConfig,
                "\"hairpinMode\" must be a boolean, got a string",
            )),
        ),
        (
            "bad-type-ipam.json",
            Err((InvalidConfig, "\"ipam\" must be an object, got a string")),
        ),
        ("bad-json.json", Err((Decode, "decode network config: "))),
        (
            "unsupported-version.json",
            Err((
                IncompatibleVersion,
                "incompatible CNI version \"9.9.9\": plugin supports 0.1.0, 0.2.0, 0.3.0",
            )),
        ),
        (
            "missing-type.json",
            Err((InvalidConfig, "\"type\" is required")),
        ),
        ("mtu-too-small.json", Err((InvalidConfig, "\"mtu\" is 60"))),
        (
            "portmapping-sctp.json",
            Err((InvalidConfig, "only tcp and udp")),
        ),
    ];
    let mut on_disk: Vec<String> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = expected.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "every fixture needs an expectation");

    for (name, want) in expected {
        let got = NetConf::parse(&fixture(name));
        match (want, got) {
            (Ok(()), Ok(_)) => {}
            (Err((kind, text)), Err(e)) => {
                assert_eq!(e.kind(), *kind, "{name}: {e}");
                assert!(e.message().contains(text), "{name}: {e}");
            }
            (want, got) => panic!("{name}: wanted {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn every_version_fixture_keeps_its_version() {
    for v in SUPPORTED_VERSIONS {
        let conf = parse_fixture(&format!("version-{v}.json"));
        assert_eq!(conf.cni_version.as_deref(), Some(*v));
        assert_eq!(conf.result_version(), *v);
    }
    assert_eq!(parse_fixture("minimal.json").result_version(), "0.2.0");
}

#[test]
fn mesos_stdin_as_the_agent_sends_it() {
    let c = parse_fixture("mesos-h1-add.json");
    assert_eq!(c.cni_version.as_deref(), Some("0.2.0"));
    assert_eq!(
        (c.name.as_str(), c.plugin_type.as_str(), c.bridge.as_str()),
        ("mf-net", "weave-net", "mfbr0")
    );
    assert!(c.is_gateway, "parsed; the plugin rejects it later");
    assert!(!c.ip_masq);
    assert_eq!(c.ipam.ipam_type, "host-local");
    assert_eq!(c.ipam.subnet, Some("10.99.1.0/24".parse().unwrap()));
    assert_eq!(c.ipam.gateway, Some("10.99.1.1".parse().unwrap()));
    assert_eq!(
        c.ipam.routes,
        Some(vec![Route {
            dst: "0.0.0.0/0".parse().unwrap(),
            gw: None
        }])
    );
    assert_eq!(
        c.mesos,
        Some(MesosNetworkInfo {
            name: Some("mf-net".into()),
            ..Default::default()
        })
    );
    assert_eq!(
        c.raw["ipam"]["dataDir"], "/tmp/mesos-fixture-selftest.YwDFmq/h1/ipam",
        "raw kept for delegation"
    );

    let doc = parse_fixture("mesos-doc-labels-ports.json").mesos.unwrap();
    assert_eq!(doc.name.as_deref(), Some("mynet"));
    assert_eq!(doc.labels, [("app".to_string(), "myapp".to_string())]);
    assert_eq!(
        doc.port_mappings,
        [PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: None
        }]
    );
}

#[test]
fn runtime_port_mappings_from_containerd_and_podman() {
    let c = parse_fixture("containerd-portmappings.json");
    assert_eq!(
        c.port_mappings,
        [
            PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: None
            },
            PortMapping {
                host_port: 5353,
                container_port: 53,
                protocol: "udp".into(),
                host_ip: Some("127.0.0.1".into())
            },
        ]
    );
    let p = parse_fixture("podman.json");
    assert_eq!(p.name, "podman");
    assert_eq!(
        p.port_mappings,
        [PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: None
        }]
    );
    assert_eq!(p.ipam, IpamConf::default());
}

#[test]
fn ipam_routes_dns_and_weave_keys() {
    let empty = parse_fixture("routes-empty.json");
    assert_eq!(empty.ipam.routes, Some(vec![]));
    assert_eq!(empty.ipam.gateway, Some("10.40.0.1".parse().unwrap()));
    assert_eq!(parse_fixture("version-0.3.0.json").ipam.routes, None);
    let given = parse_fixture("routes-given.json").ipam.routes.unwrap();
    assert_eq!(
        given[1],
        Route {
            dst: "192.168.0.0/16".parse().unwrap(),
            gw: Some("10.40.0.254".parse().unwrap())
        }
    );

    let dns = parse_fixture("dns.json").dns;
    assert_eq!(
        dns,
        Dns {
            nameservers: vec!["10.96.0.10".into()],
            domain: Some("cluster.local".into()),
            search: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into()
            ],
            options: vec!["ndots:5".into()],
        }
    );
    let h = parse_fixture("hairpin-off-mtu.json");
    assert!(!h.hairpin_mode);
    assert_eq!((h.mtu, h.bridge.as_str()), (8916, "weave2"));
    let g = parse_fixture("is-gateway-ipmasq.json");
    assert!(g.is_gateway && g.ip_masq);
    let u = parse_fixture("unknown-keys.json");
    assert_eq!(u.dns.nameservers, ["10.0.0.10".to_string()]);
    assert_eq!(u.ipam.ipam_type, "");
    assert_eq!(
        parse_fixture("delegated-ipam.json").ipam.ipam_type,
        "host-local"
    );
}

#[test]
fn prev_result_is_kept_verbatim_and_parses() {
    let c = parse_fixture("conflist-member-prevresult.json");
    let prev = c.prev_result.clone().unwrap();
    assert_eq!(prev, c.raw["prevResult"]);
    let r = AddResult::parse(&prev).unwrap();
    assert_eq!(r.interfaces.len(), 2);
    assert_eq!(
        r.interfaces[1].sandbox.as_deref(),
        Some("/var/run/netns/cni-1234")
    );
    assert_eq!(r.ips[0].interface, Some(1));
    assert_eq!(r.ips[0].address, "10.32.0.5/12".parse().unwrap());
    assert_eq!(r.routes.len(), 1);
}

#[test]
fn result_parse_reads_the_legacy_shape_mesos_logged() {
    // The 0.2.0 stdout recorded from the bridge plugin in the Mesos fixture.
    let v: Value = serde_json::from_str(
        r#"{    "cniVersion": "0.2.0",    "ip4": {        "ip": "10.99.1.10/24",        "gateway": "10.99.1.1",        "routes": [            {                "dst": "0.0.0.0/0"            }        ]    },    "dns": {}}"#,
    )
    .unwrap();
    let r = AddResult::parse(&v).unwrap();
    assert_eq!(
        r,
        AddResult {
            interfaces: vec![],
            ips: vec![IpConfig {
                address: "10.99.1.10/24".parse().unwrap(),
                gateway: Some("10.99.1.1".parse().unwrap()),
                interface: None
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: None
            }],
            dns: Dns::default(),
        }
    );
    assert_eq!(
        AddResult::parse(&json!({"ip4": {"ip": 5}}))
            .unwrap_err()
            .kind(),
        ErrorKind::Decode
    );
}

// ----- result encoding, exact JSON per version -----

#[test]
fn result_encoding_for_every_version() {
    let r = sample_result();
    let dns = json!({"nameservers": ["10.96.0.10"], "search": ["svc"]});
    let legacy = |v: &str| {
        json!({"cniVersion": v,
               "ip4": {"ip": "10.32.0.5/12", "gateway": "10.32.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
               "dns": dns})
    };
    let ifaces = json!([
        {"name": "vethwepl5baff64", "mac": "6a:1f:00:00:00:01"},
        {"name": "eth0", "mac": "6a:1f:00:00:00:02", "sandbox": "/run/netns/x"}
    ]);
    let v03 = |v: &str| {
        json!({"cniVersion": v, "interfaces": ifaces,
               "ips": [{"version": "4", "interface": 1, "address": "10.32.0.5/12", "gateway": "10.32.0.1"}],
               "routes": [{"dst": "0.0.0.0/0"}], "dns": dns})
    };
    assert_eq!(r.encode("0.1.0"), legacy("0.1.0"));
    assert_eq!(r.encode("0.2.0"), legacy("0.2.0"));
    assert_eq!(r.encode("0.3.0"), v03("0.3.0"));
    assert_eq!(r.encode("0.3.1"), v03("0.3.1"));
    assert_eq!(r.encode("0.4.0"), v03("0.4.0"));
    assert_eq!(
        r.encode("1.0.0"),
        json!({"cniVersion": "1.0.0", "interfaces": ifaces,
               "ips": [{"interface": 1, "address": "10.32.0.5/12", "gateway": "10.32.0.1"}],
               "routes": [{"dst": "0.0.0.0/0"}], "dns": dns})
    );
    assert_eq!(
        r.encode("1.1.0"),
        json!({"cniVersion": "1.1.0",
               "interfaces": [
                   {"name": "vethwepl5baff64", "mac": "6a:1f:00:00:00:01", "mtu": 1376},
                   {"name": "eth0", "mac": "6a:1f:00:00:00:02", "sandbox": "/run/netns/x", "mtu": 1376}],
               "ips": [{"interface": 1, "address": "10.32.0.5/12", "gateway": "10.32.0.1"}],
               "routes": [{"dst": "0.0.0.0/0"}], "dns": dns})
    );
}

#[test]
fn result_encoding_omits_empty_fields() {
    let r = AddResult {
        ips: vec![IpConfig {
            address: "10.32.0.5/12".parse().unwrap(),
            gateway: None,
            interface: None,
        }],
        ..AddResult::default()
    };
    assert_eq!(
        r.encode("0.2.0"),
        json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.32.0.5/12"}, "dns": {}})
    );
    assert_eq!(
        r.encode("0.3.1"),
        json!({"cniVersion": "0.3.1", "interfaces": [], "ips": [{"version": "4", "address": "10.32.0.5/12"}], "routes": [], "dns": {}})
    );
}
