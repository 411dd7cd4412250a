//! The real `weaver` binary inside a fresh `wvt-rt-*` namespace, driven over HTTP from a
//! thread inside that namespace: Weave's IPAM paths and messages, expose/hide on the bridge
//! and in iptables, status formats, attachments, and state surviving `kill -9`.

mod common;

use common::{Netns, Router, RouterApi};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// One request through the crate's client (which sends `Connection: close`).
fn req(r: &Router, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let (m, p, b) = (
        method.to_string(),
        path.to_string(),
        body.map(|s| s.as_bytes().to_vec()),
    );
    r.call(move |c| {
        c.request(&m, &p, b.as_deref())
            .unwrap_or_else(|e| panic!("{m} {p}: {e}"))
    })
}

fn expect(r: &Router, method: &str, path: &str, body: Option<&str>, code: u16, text: &str) {
    let got = req(r, method, path, body);
    assert_eq!(got, (code, text.to_string()), "{method} {path}");
}

fn start(ns: &Netns, extra: &[&str]) -> Router {
    Router::start(ns, extra)
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn ipam_endpoints_follow_weave() {
    let ns = Netns::new("rt");
    let r = start(&ns, &[]);
    expect(&r, "POST", "/ip/c1", None, 200, "10.32.0.1/12");
    expect(&r, "POST", "/ip/c1", None, 200, "10.32.0.1/12");
    expect(&r, "POST", "/ip/c2", None, 200, "10.32.0.2/12");
    expect(&r, "GET", "/ip/c1", None, 200, "10.32.0.1/12");
    expect(&r, "GET", "/ip/nobody", None, 200, "");
    expect(&r, "POST", "/ip/c1/10.40.0.0/16", None, 200, "10.40.0.1/16");
    expect(&r, "GET", "/ip/c1/10.40.0.0/16", None, 200, "10.40.0.1/16");
    expect(
        &r,
        "GET",
        "/ip/c1/10.32.0.0/12",
        None,
        200,
        "10.32.0.1/12 10.40.0.1/16",
    );

    let bits = "invalid subnet - bits after network prefix are not all zero: 10.40.0.1/16";
    expect(&r, "POST", "/ip/c3/10.40.0.1/16", None, 400, bits);
    let small = "invalid subnet - smaller than minimum size 4: 10.40.0.0/31";
    expect(&r, "POST", "/ip/c3/10.40.0.0/31", None, 400, small);
    let oob = "range 192.168.0.0/24 out of bounds: 10.32.0.0/12";
    expect(&r, "POST", "/ip/c3/192.168.0.0/24", None, 400, oob);
    expect(
        &r,
        "POST",
        "/ip/c3/10.40.0.0/99",
        None,
        400,
        "invalid CIDR address: 10.40.0.0/99",
    );

    expect(&r, "PUT", "/ip/c4/10.32.0.9/12", None, 204, "");
    let owned = "Unable to claim: address 10.32.0.9 is already owned by c4";
    expect(&r, "PUT", "/ip/c5/10.32.0.9/12", None, 400, owned);
    expect(&r, "PUT", "/ip/_/10.32.0.9/12", None, 204, "");
    expect(&r, "PUT", "/ip/_/10.32.0.10/12", None, 204, "");

    expect(&r, "DELETE", "/ip/c2", None, 204, "");
    expect(
        &r,
        "DELETE",
        "/ip/c2",
        None,
        400,
        "Delete: no addresses for c2",
    );
    expect(&r, "POST", "/ip/c6", None, 200, "10.32.0.2/12"); // lowest free, reused
    expect(&r, "POST", "/ip/c7", None, 200, "10.32.0.3/12");
    expect(&r, "DELETE", "/ip/c1/10.40.0.1", None, 204, "");
    let nf = "Unable to free: Free: address 10.40.0.1 not found for c1";
    expect(&r, "DELETE", "/ip/c1/10.40.0.1", None, 400, nf);

    let (code, body) = req(&r, "GET", "/ip", None);
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let owned = v["owned"].as_array().unwrap();
    let find = |id: &str| {
        owned
            .iter()
            .find(|o| o["containerid"] == id)
            .map(|o| o["addrs"].clone())
    };
    assert_eq!(find("c1").unwrap(), serde_json::json!(["10.32.0.1/12"]));
    assert_eq!(
        find("10.32.0.10").unwrap(),
        serde_json::json!(["10.32.0.10/12"])
    );
    assert!(find("c2").is_none());

    expect(
        &r,
        "GET",
        "/ipinfo/defaultsubnet",
        None,
        200,
        "10.32.0.0/12",
    );
    expect(&r, "GET", "/ipinfo/tracker", None, 200, "\n");
    expect(&r, "GET", "/ring", None, 200, "");
    let (code, body) = req(&r, "POST", "/ip/a%20b", None);
    assert_eq!(code, 400);
    assert!(body.starts_with("invalid container id \"a b\""), "{body}");
    expect(&r, "GET", "/nope", None, 404, "unknown path");
    expect(
        &r,
        "PATCH",
        "/ip/c1",
        None,
        405,
        "method PATCH not allowed on this path (allowed: GET, POST, DELETE)",
    );
    expect(
        &r,
        "DELETE",
        "/peer/somebody",
        None,
        200,
        "0 IPs taken over from somebody\n",
    );
    expect(&r, "DELETE", "/peer", None, 204, "");
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn connect_forget_and_targets() {
    let ns = Netns::new("rt");
    let r = start(&ns, &["10.0.0.9"]);
    expect(&r, "GET", "/status/targets", None, 200, "10.0.0.9\n");
    let msg = "invalid peer name \"x:y\", should be host[:port]\ninvalid peer name \"a b\", should be host[:port]";
    expect(
        &r,
        "POST",
        "/connect",
        Some("peer=x%3Ay&peer=a+b"),
        400,
        msg,
    );
    expect(
        &r,
        "POST",
        "/connect",
        Some("peer=10.0.0.2%3A6783"),
        200,
        "",
    );
    expect(
        &r,
        "GET",
        "/status/targets",
        None,
        200,
        "10.0.0.9\n10.0.0.2:6783\n",
    );
    expect(
        &r,
        "POST",
        "/connect",
        Some("peer=h1&replace=true"),
        200,
        "",
    );
    expect(&r, "GET", "/status/targets", None, 200, "h1\n");
    expect(&r, "POST", "/forget", Some("peer=h1"), 200, "");
    expect(&r, "GET", "/status/targets", None, 200, "");
    let saved = std::fs::read_to_string(r.datadir.join("targets.json")).unwrap();
    assert_eq!(
        serde_json::from_str::<Vec<String>>(&saved).unwrap(),
        Vec::<String>::new()
    );
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn expose_and_hide_change_bridge_and_iptables() {
    let ns = Netns::new("rt");
    let r = start(&ns, &[]);
    assert!(ns.sh("ip -o link show weave").contains("mtu 1376"));
    // Base rules, including the guard on the API port; bridge to bridge first. Nothing
    // needs conntrack before an expose.
    let forward = ns.sh("iptables -w -S FORWARD");
    let forward: Vec<&str> = forward.lines().skip(1).collect();
    assert_eq!(
        forward,
        [
            "-A FORWARD -i weave -o weave -j ACCEPT",
            "-A FORWARD -i weave ! -o weave -j ACCEPT",
            "-A FORWARD -o weave -j WEAVE-EXPOSE",
            // Containers routed in from a neighbour (the routed path).
            "-A FORWARD -s 10.32.0.0/12 -d 10.32.0.0/12 -o weave -j ACCEPT",
        ],
        "{forward:#?}"
    );
    assert!(!ns.sh("iptables -w -S INPUT").contains("6784"));
    assert!(!ns.sh("iptables -w -t nat -S").contains("WEAVE"));
    // Container-to-container traffic and the VXLAN packets skip conntrack, in our own
    // nftables table, which also holds the guard on the API port.
    let table = ns.sh("nft list table ip weave");
    assert!(
        table.contains("ip saddr 10.32.0.0/12 ip daddr 10.32.0.0/12 notrack accept"),
        "{table}"
    );
    assert_eq!(
        table.matches("udp dport 6784 notrack accept").count(),
        2,
        "{table}"
    );
    let guard = "ip daddr 127.0.0.1 tcp dport 6784 fib saddr type != local drop";
    assert!(table.contains(guard), "{table}");
    assert!(!ns.sh("iptables -w -t raw -S").contains("WEAVE"));

    expect(&r, "POST", "/ip/weave:expose", None, 200, "10.32.0.1/12");
    expect(&r, "POST", "/expose/10.32.0.1/12", None, 204, "");
    expect(&r, "POST", "/expose/10.32.0.1/12", None, 204, ""); // idempotent
    assert_eq!(ns.addrs("weave"), vec!["10.32.0.1/12"]);
    ns.sh("iptables -w -C FORWARD -o weave -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT");
    ns.sh("iptables -w -t nat -C POSTROUTING -j WEAVE");
    let masq = "iptables -w -t nat -C WEAVE -s 10.32.0.0/12 ! -d 10.32.0.0/12 -j MASQUERADE";
    ns.sh(masq);
    ns.sh("iptables -w -t nat -C WEAVE ! -s 10.32.0.0/12 -d 10.32.0.0/12 -j MASQUERADE");
    ns.sh("iptables -w -t nat -C WEAVE -s 10.32.0.0/12 -d 224.0.0.0/4 -j RETURN");
    let nat_rules = ns.sh("iptables -w -t nat -S WEAVE");
    assert_eq!(
        nat_rules.lines().count(),
        4,
        "one copy of each rule:\n{nat_rules}"
    );

    // The bridge's own address stays tracked (NAT replies, portmap's hairpin).
    let keep_tracked =
        "ip saddr 10.32.0.0/12 ip daddr 10.32.0.0/12 ip daddr != 10.32.0.1 notrack accept";
    let table = ns.sh("nft list table ip weave");
    assert!(table.contains(keep_tracked), "{table}");

    expect(&r, "DELETE", "/expose/10.32.0.1/12", None, 204, "");
    assert!(ns.addrs("weave").is_empty());
    assert_ne!(ns.try_sh(masq).0, 0, "rule still there");
    let table = ns.sh("nft list table ip weave");
    assert!(!table.contains("10.32.0.1"), "still tracked:\n{table}");
    assert!(
        table.contains("ip daddr 10.32.0.0/12 notrack accept"),
        "{table}"
    );

    expect(
        &r,
        "POST",
        "/expose/10.33.0.1/16?skipNAT=true",
        None,
        204,
        "",
    );
    assert_eq!(ns.addrs("weave"), vec!["10.33.0.1/16"]);
    assert_eq!(
        ns.sh("iptables -w -t nat -S WEAVE").lines().count(),
        1,
        "no NAT with skipNAT"
    );
    let (code, body) = req(&r, "POST", "/expose/10.33.0.x/16", None);
    assert_eq!(
        (code, body.starts_with("unable to parse ip addr")),
        (400, true),
        "{body}"
    );
}

/// A host without the `nft` binary gets the same exemptions as iptables raw chains; a
/// router that later finds `nft` moves them into its table and removes the chains.
#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn without_nft_the_notrack_rules_go_through_iptables() {
    let ns = Netns::new("rt");
    // A PATH with what the router and `ip netns exec` run, but no nft.
    let bin = tempfile::tempdir().unwrap();
    for tool in ["ip", "iptables", "iptables-save", "iptables-restore"] {
        let found = ns.sh(&format!("command -v {tool}"));
        std::os::unix::fs::symlink(found.trim(), bin.path().join(tool)).unwrap();
    }
    let path = bin.path().to_str().unwrap();
    let mut r = Router::start_with_env(&ns, &[], &[("PATH", path)]);
    let raw = ns.sh("iptables -w -t raw -S");
    for rule in [
        "-A PREROUTING -i weave -j WEAVE-NOTRACK",
        "-A PREROUTING -s 10.32.0.0/12 -d 10.32.0.0/12 ! -i weave -j WEAVE-NOTRACK",
        "-A PREROUTING -j WEAVE-NOTRACK-UDP",
        "-A OUTPUT -j WEAVE-NOTRACK-UDP",
        "-A WEAVE-NOTRACK -s 10.32.0.0/12 -d 10.32.0.0/12 -j CT --notrack",
        "-A WEAVE-NOTRACK-UDP -p udp -m udp --dport 6784 -j CT --notrack",
    ] {
        assert!(raw.lines().any(|l| l == rule), "no {rule:?} in:\n{raw}");
    }
    assert!(!ns.sh("nft list tables").contains("weave"));
    assert!(ns.sh("iptables -w -S INPUT").contains("--dport 6784"));
    expect(&r, "POST", "/expose/10.32.0.1/12", None, 204, "");
    ns.sh("iptables -w -t raw -C WEAVE-NOTRACK -d 10.32.0.1/32 -j RETURN");

    r.stop(Duration::from_secs(5));
    r.env.clear();
    r.spawn();
    assert!(!ns.sh("iptables -w -t raw -S").contains("WEAVE"));
    assert!(!ns.sh("iptables -w -S INPUT").contains("6784"));
    let table = ns.sh("nft list table ip weave");
    assert!(
        table.contains("ip daddr != 10.32.0.1 notrack accept"),
        "{table}"
    );
    assert!(table.contains("tcp dport 6784 fib saddr type != local drop"));
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn status_report_metrics_and_read_only_listener() {
    let ns = Netns::new("rt");
    let name = "aa:bb:cc:00:11:22";
    let r = start(
        &ns,
        &[
            "--name",
            name,
            "--nickname",
            "host1",
            "--status-addr",
            "127.0.0.1:6782",
        ],
    );
    req(&r, "POST", "/ip/c1", None);
    let (code, status) = req(&r, "GET", "/status", None);
    assert_eq!(code, 200);
    for line in [
        "        Service: router\n",
        "       Protocol: weave 1..2\n",
        "           Name: aa:bb:cc:00:11:22(host1)\n",
        "     Encryption: disabled\n",
        "  PeerDiscovery: enabled\n",
        "        Targets: 0\n",
        "    Connections: 0 (0 established, 0 pending, 0 retrying, 0 failed, 0 connecting)\n",
        "          Peers: 1 (with 0 established, 0 pending connections)\n",
        " TrustedSubnets: none\n",
        "        Service: ipam\n",
        "         Status: ready\n",
        "          Range: 10.32.0.0/12\n",
        "  DefaultSubnet: 10.32.0.0/12\n",
    ] {
        assert!(status.contains(line), "missing {line:?} in\n{status}");
    }
    expect(
        &r,
        "GET",
        "/status/peers",
        None,
        200,
        "aa:bb:cc:00:11:22(host1)\n",
    );
    expect(&r, "GET", "/status/connections", None, 200, "");
    let ipam_line = format!(
        "{:<37}  1048576 IPs (100.0% of total) (1 active)\n",
        "aa:bb:cc:00:11:22(host1)"
    );
    expect(&r, "GET", "/status/ipam", None, 200, &ipam_line);
    expect(&r, "GET", "/status/bogus", None, 404, "unknown path");

    let (code, body) = req(&r, "GET", "/report", None);
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["Ready"], true);
    assert_eq!(v["Router"]["Name"], name);
    assert_eq!(v["Router"]["NickName"], "host1");
    assert_eq!(v["Router"]["Port"], 6783);
    assert_eq!(v["IPAM"]["Range"], "10.32.0.0/12");
    assert_eq!(v["IPAM"]["RangeNumIPs"], 1048576);
    assert_eq!(v["IPAM"]["ActiveIPs"], 1);
    assert_eq!(v["IPAM"]["Entries"][0]["Token"], "10.32.0.0");
    assert_eq!(v["DataDir"], r.datadir.display().to_string());
    assert!(v["Pid"].as_u64().unwrap() > 1);
    expect(
        &r,
        "GET",
        "/report?format=%7B%7B.Version%7D%7D",
        None,
        200,
        weave::VERSION,
    );

    let (code, m) = req(&r, "GET", "/metrics", None);
    assert_eq!(code, 200);
    for line in [
        "weave_ipam_unreachable_count 0\n",
        "weave_ips{state=\"local-used\"} 1\n",
    ] {
        assert!(m.contains(line), "missing {line:?} in\n{m}");
    }
    assert!(m.contains("weave_connections{state=\"established\"} 0\n"));
    assert!(m.contains("weave_attachments 0\n"));

    // The status listener serves only read-only paths.
    let ro = |method: &'static str, path: &'static str| {
        r.call(move |_| {
            weave::api::Client::new("127.0.0.1:6782")
                .request(method, path, None)
                .unwrap()
        })
    };
    assert_eq!(
        ro("GET", "/status/peers"),
        (200, "aa:bb:cc:00:11:22(host1)\n".to_string())
    );
    assert_eq!(ro("GET", "/metrics").0, 200);
    assert_eq!(ro("POST", "/ip/c9"), (404, "unknown path".to_string()));
    assert_eq!(ro("GET", "/ip"), (404, "unknown path".to_string()));
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn attachments_crud_and_body_limit() {
    let ns = Netns::new("rt");
    let r = start(&ns, &[]);
    let a = |mac: &str| {
        format!(
            r#"{{"container_id":"c1","ifname":"eth0","host_veth":"vethwepl1","mac":"{mac}","ips":["10.32.0.1/12"],"netns":"/proc/1/ns/net"}}"#
        )
    };
    expect(&r, "GET", "/cni/attachments", None, 200, "[]\n");
    expect(
        &r,
        "POST",
        "/cni/attachments",
        Some(&a("aa:aa:aa:aa:aa:01")),
        204,
        "",
    );
    expect(
        &r,
        "POST",
        "/cni/attachments",
        Some(&a("aa:aa:aa:aa:aa:02")),
        204,
        "",
    );
    let (_, body) = req(&r, "GET", "/cni/attachments", None);
    let list: Vec<weave::api::Attachment> = serde_json::from_str(&body).unwrap();
    assert_eq!(list.len(), 1, "upsert by (container id, ifname)");
    assert_eq!(list[0].mac, "aa:aa:aa:aa:aa:02");
    let saved = std::fs::read_to_string(r.datadir.join("ipam.json")).unwrap();
    assert!(saved.contains("aa:aa:aa:aa:aa:02"));
    let (code, m) = req(&r, "GET", "/metrics", None);
    assert!(code == 200 && m.contains("weave_attachments 1\n"));
    let (code, body) = req(&r, "POST", "/cni/attachments", Some("{\"nope\":1}"));
    assert_eq!(code, 400);
    assert!(body.starts_with("decode attachment"), "{body}");
    expect(&r, "DELETE", "/cni/attachments/c1/eth0", None, 204, "");
    expect(&r, "DELETE", "/cni/attachments/c1/eth0", None, 204, "");
    expect(&r, "GET", "/cni/attachments", None, 200, "[]\n");

    // A body over 64 KiB is refused with 413 (raw socket: the client would send it whole too).
    let status_line = r.call(|_| {
        let mut s = std::net::TcpStream::connect("127.0.0.1:6784").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let body = vec![b'x'; 100 * 1024];
        let head = format!(
            "POST /cni/attachments HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        let _ = s.write_all(&body);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.lines().next().unwrap_or_default().to_string()
    });
    assert_eq!(status_line, "HTTP/1.1 413 Payload Too Large");
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn state_survives_kill9_and_sigterm_removes_pid_file() {
    let ns = Netns::new("rt");
    let mut r = start(&ns, &[]);
    let name_before = std::fs::read_to_string(r.datadir.join("peername")).unwrap();
    for i in 1..=20 {
        expect(
            &r,
            "POST",
            &format!("/ip/c{i}"),
            None,
            200,
            &format!("10.32.0.{i}/12"),
        );
    }
    expect(&r, "PUT", "/ip/_/10.32.1.1/12", None, 204, "");
    expect(&r, "DELETE", "/ip/c5", None, 204, "");
    expect(&r, "POST", "/ip/weave:expose", None, 200, "10.32.0.5/12");
    expect(&r, "POST", "/expose/10.32.0.5/12", None, 204, "");
    let (_, before) = req(&r, "GET", "/ip", None);
    assert!(r.datadir.join("weaver.pid").exists());

    r.kill9();
    r.spawn();
    let (_, after) = req(&r, "GET", "/ip", None);
    assert_eq!(before, after);
    assert_eq!(
        std::fs::read_to_string(r.datadir.join("peername")).unwrap(),
        name_before
    );
    expect(&r, "POST", "/ip/c1", None, 200, "10.32.0.1/12");
    expect(&r, "POST", "/ip/new", None, 200, "10.32.0.21/12");
    expect(&r, "POST", "/ip/weave:expose", None, 200, "10.32.0.5/12");
    // Re-exposed at start: the NAT rule is there (and still only once).
    let nat = ns.sh("iptables -w -t nat -S WEAVE");
    assert_eq!(
        nat.matches("-s 10.32.0.0/12 ! -d 10.32.0.0/12 -j MASQUERADE")
            .count(),
        1,
        "{nat}"
    );

    let pid = r.child.as_ref().unwrap().id() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = r.child.as_mut().unwrap().try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "weaver ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}; log:\n{}", r.log());
    assert!(!r.datadir.join("weaver.pid").exists());
    assert!(r.datadir.join("ipam.json").exists());
    assert!(ns.links().contains(&"weave".to_string()), "bridge stays");
}

/// Prints the median latency of `POST /ip` (new id each time) over 1000 calls, each on a new
/// connection as the plugin makes them. Informational: nothing is asserted about the time.
#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn a_thousand_allocations_are_unique_and_lowest_first() {
    let ns = Netns::new("rt");
    let r = start(&ns, &[]);
    let addrs = r.call(|c| {
        (0..1000)
            .map(|i| {
                let (code, body) = c.request("POST", &format!("/ip/many{i}"), None).unwrap();
                assert_eq!(code, 200, "{body}");
                body.trim().to_string()
            })
            .collect::<Vec<_>>()
    });
    let unique: std::collections::BTreeSet<&String> = addrs.iter().collect();
    assert_eq!(unique.len(), 1000, "every allocation is unique");
    // Lowest free first: the first container gets 10.32.0.1 (10.32.0.0 is the network).
    assert_eq!(addrs[0], "10.32.0.1/12");
    assert_eq!(addrs[999], "10.32.3.232/12");
}
