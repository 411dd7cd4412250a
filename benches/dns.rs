//! weaveDNS: local answers per second and their latency, ours beside dnsmasq (Debian)
//! answering the same zone in the same run, both driven by dnsperf (Debian) over loopback.
//!
//! The zone: `--names` task names (`task-<i>.fw<i%10>.weave.local`, one address each) plus
//! `svc.weave.local` with four addresses; TTL 1 s on both servers. Our server runs in this
//! process (the router's own `DnsServer`, 2 runtime workers, rate limiting off as dnsmasq
//! has none); dnsmasq reads the same records from a hosts file (`--addn-hosts`,
//! `--local=/weave.local/`, no upstream). Both are first checked to give the same answers.
//! Then rounds alternate which server goes first: dnsperf at full speed (`-c 4 -q 200`)
//! for throughput, then at a fixed rate with per-query latencies (`-v`) for p50/p99.
//!
//! Usage: cargo bench --bench dns -- [--seconds N] [--names N] [--rounds N] [--rate QPS]
//!        [--smoke] [--json FILE]

mod common;

use common::{arg, flag, report, Row, Target};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use weave::dns::forward::Servers;
use weave::dns::ratelimit::QueryLimits;
use weave::dns::{DnsConfig, DnsServer, Zone, ZoneCell};

/// The zone's (name, address) pairs.
fn records(names: usize) -> Vec<(String, Ipv4Addr)> {
    let mut v: Vec<(String, Ipv4Addr)> = (0..names)
        .map(|i| {
            (
                format!("task-{i}.fw{}.weave.local", i % 10),
                Ipv4Addr::new(10, 32, (i / 250) as u8, (i % 250 + 1) as u8),
            )
        })
        .collect();
    for k in 1..=4 {
        v.push(("svc.weave.local".into(), Ipv4Addr::new(10, 40, 0, k)));
    }
    v
}

fn free_port() -> u16 {
    // A port free for UDP and TCP right now (dnsmasq binds both).
    for _ in 0..50 {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no free port");
}

struct Dnsmasq(Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_dnsmasq(dir: &std::path::Path, recs: &[(String, Ipv4Addr)]) -> (Dnsmasq, SocketAddr) {
    let hosts = dir.join("hosts");
    let text: String = recs.iter().map(|(n, a)| format!("{a} {n}\n")).collect();
    std::fs::write(&hosts, text).unwrap();
    let port = free_port();
    let child = Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
        ])
        .args([
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
        ])
        .args([
            "--local-ttl=1",
            "--local=/weave.local/",
            "--user=root",
            "--pid-file=",
        ])
        .arg(format!("--addn-hosts={}", hosts.display()))
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dnsmasq (apt-get install dnsmasq-base)");
    let at: SocketAddr = ([127, 0, 0, 1], port).into();
    let guard = Dnsmasq(child);
    for _ in 0..100 {
        if ask(at, "svc.weave.local.").is_some() {
            return (guard, at);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("dnsmasq did not answer on {at}");
}

/// The sorted A addresses `server` gives for `name`, `None` when it does not answer.
fn ask(server: SocketAddr, name: &str) -> Option<Vec<Ipv4Addr>> {
    let s = UdpSocket::bind("127.0.0.1:0").ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    let mut q = Message::query();
    q.add_query(Query::query(Name::from_ascii(name).ok()?, RecordType::A));
    s.send_to(&q.to_vec().ok()?, server).ok()?;
    let mut buf = [0u8; 1500];
    let n = s.recv(&mut buf).ok()?;
    let r = Message::from_vec(&buf[..n]).ok()?;
    Some(weave::dns::answer::a_addresses(&r))
}

/// What one dnsperf run printed.
#[derive(Debug, Default, Clone)]
struct Perf {
    qps: f64,
    sent: u64,
    lost: u64,
    noerror: u64,
    /// Per-query latencies in ms (with `-v` only).
    latencies: Vec<f64>,
}

fn dnsperf(server: SocketAddr, data: &std::path::Path, secs: u64, rate: Option<u64>) -> Perf {
    let mut cmd = Command::new("dnsperf");
    cmd.args(["-s", "127.0.0.1", "-p", &server.port().to_string()])
        .arg("-d")
        .arg(data)
        .args(["-l", &secs.to_string(), "-t", "2"]);
    match rate {
        Some(r) => cmd.args(["-Q", &r.to_string(), "-c", "1", "-q", "100", "-v"]),
        None => cmd.args(["-c", "4", "-q", "200"]),
    };
    let out = cmd.output().expect("run dnsperf (apt-get install dnsperf)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "dnsperf failed: {text}");
    let field = |label: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {label:?} in dnsperf output:\n{text}"))
    };
    let noerror = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Response codes:"))
        .and_then(|v| {
            v.split(',')
                .find_map(|c| c.trim().strip_prefix("NOERROR "))
                .and_then(|n| n.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0);
    let latencies = text
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|s| s * 1000.0)
        .collect();
    Perf {
        qps: field("Queries per second:"),
        sent: field("Queries sent:") as u64,
        lost: field("Queries lost:") as u64,
        noerror,
        latencies,
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[((s.len() - 1) as f64 * p).round() as usize]
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn main() {
    if flag("--list") {
        return;
    }
    let smoke = flag("--smoke");
    let secs: u64 = arg("--seconds").map_or(if smoke { 1 } else { 8 }, |s| s.parse().unwrap());
    let names: usize = arg("--names").map_or(1000, |s| s.parse().unwrap());
    let rounds: usize = arg("--rounds").map_or(if smoke { 1 } else { 3 }, |s| s.parse().unwrap());
    let json_path = arg("--json");
    let recs = records(names);
    let dir = tempfile::tempdir().unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let zone = Zone::from_pairs(recs.iter().map(|(n, a)| (n.as_str(), *a))).unwrap();
    let mut cfg = DnsConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
    cfg.limits = QueryLimits::off();
    cfg.upstream = Servers::Fixed(vec![]);
    let ours = rt
        .block_on(DnsServer::start(cfg, Arc::new(ZoneCell::new(zone))))
        .expect("start our DNS server");
    let ours_at = ours.local_addrs()[0];
    let (_dnsmasq, ref_at) = start_dnsmasq(dir.path(), &recs);

    // The same answers from both, or the comparison means nothing.
    for name in [
        "task-0.fw0.weave.local.",
        "task-7.fw7.weave.local.",
        "svc.weave.local.",
    ] {
        let a = ask(ours_at, name).expect("ours answers");
        let b = ask(ref_at, name).expect("dnsmasq answers");
        assert_eq!(a, b, "{name}: ours {a:?}, dnsmasq {b:?}");
        assert!(!a.is_empty(), "{name}");
    }
    assert_eq!(ask(ours_at, "svc.weave.local.").unwrap().len(), 4);

    let data = dir.path().join("queries");
    let mut lines: Vec<String> = recs
        .iter()
        .map(|(n, _)| format!("{n} A\n"))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    // A fixed shuffle (no randomness in what is measured).
    lines.sort_by_key(|l| l.bytes().fold(7u64, |h, b| h.wrapping_mul(31) ^ b as u64));
    std::fs::write(&data, lines.concat()).unwrap();

    let mut tput: [Vec<f64>; 2] = [vec![], vec![]];
    let mut lost: [u64; 2] = [0, 0];
    for r in 0..rounds {
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for who in order {
            let at = [ours_at, ref_at][who];
            let p = dnsperf(at, &data, secs, None);
            assert!(
                p.noerror + p.lost >= p.sent.saturating_sub(p.sent / 100),
                "{}: answers other than NOERROR: {p:?}",
                ["ours", "dnsmasq"][who]
            );
            println!(
                "round {r} {:<8} {:>9.0} queries/s ({} sent, {} lost)",
                ["ours", "dnsmasq"][who],
                p.qps,
                p.sent,
                p.lost
            );
            tput[who].push(p.qps);
            lost[who] += p.lost;
        }
    }
    let max_ours = median(&tput[0]);
    let max_ref = median(&tput[1]);
    let rate: u64 = arg("--rate").map_or_else(
        || ((max_ours.min(max_ref) * 0.5) as u64).clamp(500, 20_000),
        |s| s.parse().unwrap(),
    );
    let mut lat: [Vec<f64>; 2] = [vec![], vec![]];
    for r in 0..rounds {
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for who in order {
            let p = dnsperf([ours_at, ref_at][who], &data, secs, Some(rate));
            assert!(!p.latencies.is_empty(), "no per-query latencies");
            lat[who].extend(p.latencies);
        }
    }
    let p50 = |w: usize| percentile(&lat[w], 0.5);
    let p99 = |w: usize| percentile(&lat[w], 0.99);
    let m = ours.metrics();
    let rows = vec![
        Row::new(
            "local answers per second (dnsperf -c 4 -q 200)",
            "qps",
            max_ours,
        )
        .vs("dnsmasq", max_ref, Target::AtLeast(1.0)),
        Row::new(format!("p50 latency at {rate} qps"), "ms", p50(0)).vs(
            "dnsmasq",
            p50(1),
            Target::None,
        ),
        Row::new(format!("p99 latency at {rate} qps"), "ms", p99(0)).vs(
            "dnsmasq",
            p99(1),
            Target::None,
        ),
    ];
    report(
        "dns",
        &format!(
            "weaveDNS local answers vs dnsmasq: {} names, {rounds} round(s) of {secs} s, medians",
            names + 1
        ),
        &rows,
        json!({
            "throughput_qps": {"ours": tput[0], "dnsmasq": tput[1]},
            "lost": {"ours": lost[0], "dnsmasq": lost[1]},
            "latency_samples": {"ours": lat[0].len(), "dnsmasq": lat[1].len()},
            "fixed_rate_qps": rate,
            "our_counters": m.values().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        }),
        json_path.as_deref(),
    );
}
