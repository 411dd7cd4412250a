//! weaveDNS on three simulated hosts (`_3`), each with a meshed `weaver` whose DNS server
//! listens on its `weave` bridge: names registered on one router are answered by every
//! router's server to the containers; a partition with registrations and a removal on both
//! sides heals to one view with no stale record; `rmpeer` of a dead router removes its
//! names; CNI results name the nameserver. And the server facing bad input on a real
//! router: malformed, truncated and oversized queries, a flood (rate limited, the router's
//! memory flat), a source outside the weave network (REFUSED), an unreachable upstream
//! (SERVFAIL within the forward timeout); all counted in `/metrics`.

mod common;
#[path = "common/hosts.rs"]
mod hosts;

use common::{cni_env, in_ns, run_plugin, Netns};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use hosts::{cluster3, established, eventually, mesh_peer_name, req, router, Cluster};
use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

/// One DNS query from inside `ns` to `server:53`: the answer's code and A addresses
/// (sorted), or `None` when nothing answered in 3 s.
fn ask_in(ns: &str, server: Ipv4Addr, name: &str) -> Option<(ResponseCode, Vec<Ipv4Addr>)> {
    let name = name.to_string();
    in_ns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut q = Message::query();
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(
            Name::from_ascii(&name).unwrap(),
            RecordType::A,
        ));
        s.send_to(&q.to_vec().unwrap(), (server, 53)).unwrap();
        let mut buf = [0u8; 1500];
        let n = s.recv(&mut buf).ok()?;
        let r = Message::from_vec(&buf[..n]).ok()?;
        Some((
            r.metadata.response_code,
            weave::dns::answer::a_addresses(&r),
        ))
    })
}

/// Host k's bridge address (where its DNS server listens), from the router.
fn dns_address(c: &Cluster, k: usize) -> Ipv4Addr {
    let (code, body) = req(router(c, k), "GET", "/dns-address");
    assert_eq!(code, 200, "{body}");
    body.split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("host {k}: DNS listens nowhere"))
        .parse()
        .unwrap()
}

/// The addresses container `i` gets for `name` from its own host's DNS server.
fn resolve(c: &Cluster, i: usize, name: &str) -> Vec<Ipv4Addr> {
    let ct = &c.containers[i];
    let server = dns_address(c, ct.host);
    match ask_in(&ct.ns.name, server, name) {
        Some((ResponseCode::NoError, ips)) => ips,
        Some((ResponseCode::NXDomain, _)) => vec![],
        other => panic!("container {} asking {name}: {other:?}", ct.name),
    }
}

fn put_name(c: &Cluster, k: usize, id: &str, ip: Ipv4Addr, fqdn: &str) {
    let (code, body) = req(router(c, k), "PUT", &format!("/name/{id}/{ip}?fqdn={fqdn}"));
    assert_eq!(code, 204, "PUT on h{k}: {body}");
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Waits until every container resolves `name` to `want` (sorted).
fn all_resolve(c: &Cluster, name: &str, want: &[Ipv4Addr], limit: Duration) {
    for i in 0..c.containers.len() {
        let ok = eventually(limit, || resolve(c, i, name) == want);
        assert!(
            ok,
            "container {} resolves {name} to {:?}, want {want:?}",
            c.containers[i].name,
            resolve(c, i, name)
        );
    }
}

fn metric(c: &Cluster, k: usize, result: &str) -> u64 {
    let (_, text) = req(router(c, k), "GET", "/metrics");
    let key = format!("weave_dns_responses_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /metrics:\n{text}"))
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn names_are_answered_everywhere_and_survive_a_partition_3() {
    common::require_root();
    let mut c = cluster3(&[]);
    for k in 1..=3 {
        c.add_container(k, &format!("a{k}"));
    }
    // Every host's DNS server listens on its bridge address, the containers' gateway.
    for k in 1..=3 {
        let at = dns_address(&c, k);
        let gw = c.host(k).ns.sh("ip -4 -o addr show dev weave");
        assert!(gw.contains(&format!("inet {at}/")), "h{k}: {gw}");
    }
    let names: Vec<(usize, String, Ipv4Addr, String)> = (0..3)
        .map(|i| {
            let ct = &c.containers[i];
            (
                ct.host,
                ct.id.clone(),
                ct.ip,
                format!("a{}.weave.local", ct.host),
            )
        })
        .collect();
    for (k, id, addr, fqdn) in &names {
        put_name(&c, *k, id, *addr, fqdn);
    }
    let t0 = Instant::now();
    for (_, _, addr, fqdn) in &names {
        all_resolve(&c, fqdn, &[*addr], Duration::from_secs(10));
    }
    println!(
        "3 names registered on 3 routers answered by all 3 DNS servers in {:.2}s",
        t0.elapsed().as_secs_f64()
    );
    // The `weave` command: dns-add on h1 (an address outside any container), dns-lookup on
    // h3, `status dns` lists it with its owner, dns-remove takes it away everywhere.
    let weave = |k: usize, args: &[&str]| -> (i32, String) {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &c.host(k).ns.name,
                env!("CARGO_BIN_EXE_weave"),
            ])
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    };
    let (rc, out) = weave(1, &["dns-add", "10.32.9.9", "-h", "cli.weave.local"]);
    assert_eq!(rc, 0, "{out}");
    assert!(eventually(Duration::from_secs(10), || weave(
        3,
        &["dns-lookup", "cli.weave.local"]
    ) == (
        0,
        "10.32.9.9\n".to_string()
    )));
    let (rc, status) = weave(3, &["status", "dns"]);
    assert_eq!(rc, 0, "{status}");
    let line = status
        .lines()
        .find(|l| l.starts_with("cli.weave.local"))
        .unwrap_or_default();
    assert!(
        line.contains("10.32.9.9") && line.contains("weave:extern") && line.ends_with("(h1)"),
        "{status}"
    );
    println!("weave status dns on h3: {line}");
    let (rc, out) = weave(1, &["dns-remove", "10.32.9.9", "-h", "cli.weave.local"]);
    assert_eq!(rc, 0, "{out}");
    assert!(eventually(Duration::from_secs(10), || weave(
        3,
        &["dns-lookup", "cli.weave.local"]
    )
    .0 == 1));

    // Two instances under one name: both addresses.
    put_name(&c, 2, &names[0].1, names[0].2, "svc.weave.local");
    put_name(&c, 3, &names[2].1, names[2].2, "svc.weave.local");
    let mut both = vec![names[0].2, names[2].2];
    both.sort();
    all_resolve(&c, "svc.weave.local", &both, Duration::from_secs(10));

    // Partition h3 off; register on both sides; remove a3 and svc's h3 record on h3's side.
    c.cut_link(3);
    assert!(
        eventually(Duration::from_secs(30), || established(router(&c, 1)) == 1
            && established(router(&c, 3)) == 0),
        "the partition was not noticed"
    );
    let (code, _) = req(router(&c, 3), "DELETE", &format!("/name/{}", names[2].1));
    assert_eq!(code, 204);
    put_name(&c, 1, "p1-extra", names[0].2, "p1.weave.local");
    put_name(&c, 3, "p3-extra", names[2].2, "p3.weave.local");
    // Each side sees its own changes only.
    for i in [0, 1] {
        assert!(eventually(Duration::from_secs(5), || resolve(
            &c,
            i,
            "p1.weave.local"
        ) == [names[0].2]));
        assert_eq!(resolve(&c, i, "p3.weave.local"), Vec::<Ipv4Addr>::new());
        assert_eq!(
            resolve(&c, i, "a3.weave.local"),
            [names[2].2],
            "stale until healed"
        );
    }
    assert_eq!(resolve(&c, 2, "p3.weave.local"), [names[2].2]);
    assert_eq!(resolve(&c, 2, "a3.weave.local"), Vec::<Ipv4Addr>::new());
    assert_eq!(resolve(&c, 2, "p1.weave.local"), Vec::<Ipv4Addr>::new());
    println!("partitioned: h1/h2 see p1 and the old a3; h3 sees p3 and no a3");

    c.repair_link(3);
    assert!(
        eventually(Duration::from_secs(40), || established(router(&c, 3)) == 2),
        "h3 did not reconnect"
    );
    let healed = Instant::now();
    all_resolve(&c, "p1.weave.local", &[names[0].2], Duration::from_secs(20));
    all_resolve(&c, "p3.weave.local", &[names[2].2], Duration::from_secs(20));
    all_resolve(&c, "a3.weave.local", &[], Duration::from_secs(20));
    all_resolve(
        &c,
        "svc.weave.local",
        &[names[0].2],
        Duration::from_secs(20),
    );
    println!(
        "healed: every host sees p1 and p3, the tombstoned a3 and svc@h3 are gone everywhere ({:.2}s)",
        healed.elapsed().as_secs_f64()
    );
    // One view everywhere: the same records listed by every router.
    let listing = |k: usize| -> Vec<String> {
        let (_, t) = req(router(&c, k), "GET", "/status/dns");
        let mut v: Vec<String> = t.lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert!(eventually(Duration::from_secs(10), || listing(1)
        == listing(2)
        && listing(2) == listing(3)));
    println!("weave status dns on h1:\n{}", listing(1).join("\n"));

    // h2's router dies; rmpeer on h1: its names go on h1 and, by gossip, on h3.
    c.hosts[1].router.as_mut().unwrap().kill9();
    let (code, body) = req(
        router(&c, 1),
        "DELETE",
        &format!("/peer/{}", mesh_peer_name(2)),
    );
    assert_eq!(code, 200, "{body}");
    for i in [0, 2] {
        assert!(
            eventually(Duration::from_secs(10), || resolve(
                &c,
                i,
                "svc.weave.local"
            )
            .is_empty()),
            "h2's svc record survived rmpeer on container {i}"
        );
    }
    assert_eq!(resolve(&c, 2, "a2.weave.local"), Vec::<Ipv4Addr>::new());
    assert_eq!(resolve(&c, 0, "a1.weave.local"), [names[0].2]);
    println!("rmpeer h2 on h1: h2's names gone on h1 and h3");
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn bad_input_floods_foreign_sources_and_a_dead_upstream_3() {
    common::require_root();
    // Upstream: an address on the test's own underlay where nothing listens.
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 192.0.2.99\n").unwrap();
    let resolv_arg = resolv.display().to_string();
    let mut c = Cluster::new(1);
    c.start_meshed_router(
        1,
        &[
            "--resolv-conf",
            &resolv_arg,
            "--dns-forward-timeout-ms",
            "800",
            "--dns-rate-limit",
            "500",
        ],
    );
    c.add_container(1, "q");
    let ns = c.containers[0].ns.name.clone();
    let server = dns_address(&c, 1);
    put_name(&c, 1, "c1", ip("10.32.0.200"), "web.weave.local");
    assert_eq!(
        ask_in(&ns, server, "web.weave.local"),
        Some((ResponseCode::NoError, vec![ip("10.32.0.200")]))
    );

    // CNI's result names the nameserver and the search domain.
    let conf = r#"{"cniVersion":"1.0.0","name":"weave","type":"weave-net","ipam":{"subnet":"10.32.0.0/12"}}"#;
    let extra = Netns::new("dnsr");
    let path = extra.path().display().to_string();
    let run = run_plugin(
        &c.host(1).ns,
        env!("CARGO_BIN_EXE_weave-net"),
        &cni_env("ADD", "dns-result", &path, "eth0"),
        conf,
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let result = run.json();
    assert_eq!(
        result["dns"]["nameservers"][0],
        server.to_string(),
        "{result}"
    );
    assert_eq!(result["dns"]["search"][0], "weave.local", "{result}");
    println!("CNI result dns: {}", result["dns"]);

    // Upstream down: SERVFAIL within the forward timeout (800 ms), never a hang.
    let started = Instant::now();
    let got = ask_in(&ns, server, "example.com");
    let took = started.elapsed();
    assert_eq!(got.map(|g| g.0), Some(ResponseCode::ServFail));
    assert!(took < Duration::from_secs(3), "{took:?}");
    println!("upstream down: SERVFAIL after {:.2}s", took.as_secs_f64());

    // Malformed, truncated, oversized, and responses sent to the server.
    let good = {
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("web.weave.local.").unwrap(),
            RecordType::A,
        ));
        q.to_vec().unwrap()
    };
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 3);
    let mut oversized = good[..12].to_vec();
    for _ in 0..5 {
        oversized.push(63);
        oversized.extend(std::iter::repeat_n(b'x', 63));
    }
    oversized.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut response = good.clone();
    response[2] |= 0x80;
    let packets = vec![
        vec![],
        vec![1, 2, 3],
        truncated,
        oversized,
        response,
        vec![0xff; 2000],
    ];
    let before_formerr = metric(&c, 1, "formerr");
    let sent = packets.len();
    in_ns(&ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for p in &packets {
            s.send_to(p, (server, 53)).unwrap();
        }
    });
    // A flood from one container: 20,000 queries as fast as they go.
    let pid = c
        .host(1)
        .router
        .as_ref()
        .unwrap()
        .child
        .as_ref()
        .unwrap()
        .id();
    let rss = |pid: u32| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    // `ip netns exec` execs weaver in the same process.
    let weaver_pid = pid;
    let rss_before = rss(weaver_pid);
    let flood = good.clone();
    in_ns(&ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..20_000 {
            let _ = s.send_to(&flood, (server, 53));
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = rss(weaver_pid);
    let limited = metric(&c, 1, "rate_limited");
    println!(
        "flood of 20000 from one source: rate_limited {limited}, answered {}, weaver RSS {rss_before} -> {rss_after} KiB",
        metric(&c, 1, "answered")
    );
    // Some of the flood never reaches the server (the socket's queue overflows); of what
    // does, all past the burst (1000) and the rate (500/s) is dropped and counted.
    let answered = metric(&c, 1, "answered");
    assert!(limited >= 1_000, "{limited}");
    assert!(answered < 3_000, "{answered}");
    assert!(
        rss_after < rss_before + 20 * 1024,
        "{rss_before} -> {rss_after} KiB"
    );
    assert!(
        metric(&c, 1, "formerr") >= before_formerr + 2,
        "{sent} bad packets"
    );
    assert!(metric(&c, 1, "dropped") >= 2);
    // Still answering once the source's bucket refills.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        ask_in(&ns, server, "web.weave.local"),
        Some((ResponseCode::NoError, vec![ip("10.32.0.200")]))
    );

    // A source outside the weave network: the underlay, routed to the bridge address.
    c.underlay.sh("ip addr add 192.0.2.254/24 dev ulbr");
    c.underlay
        .sh(&format!("ip route add {server}/32 via 192.0.2.1"));
    let got = ask_in(&c.underlay.name, server, "web.weave.local");
    assert_eq!(got, Some((ResponseCode::Refused, vec![])));
    assert!(metric(&c, 1, "refused_source") >= 1);
    let (_, m) = req(router(&c, 1), "GET", "/metrics");
    println!(
        "{}",
        m.lines()
            .filter(|l| l.starts_with("weave_dns_"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
