//! Load soak on one host (`_1`): a real `weaver` and the real `weave-net` plugin attach and
//! detach containers in waves of 32 concurrent calls for `WEAVE_SOAK_SECS` (default 300).
//!
//! Design: a rolling population. The first waves fill it to 200 attached containers; every
//! later wave is 16 DELs of the oldest plus 16 ADDs of new containers, all 32 at once, so the
//! router always holds ~200 attachments while it churns; the last waves drain it to zero.
//! Container namespaces come from a fixed pool of 216 (`wvt-` guards, deleted on drop even on
//! panic) and are reused after DEL, so an interface a DEL left behind fails the next ADD.
//! Asserted: zero failed calls, addresses unique at every moment and equal to the router's
//! `GET /ip` every 10 waves, and never more retired veths (`vethwepd*`, waiting for the
//! router's reaper) than the plugin's slots; at the end no `vethwepl*` link, every retired
//! link (host and container ends) deleted within seconds, no allocation but the bridge's,
//! no attachment, the same iptables-save line count as after the first wave, and the router's
//! fd count and VmRSS flat between the end of warm-up and the end of the churn.

mod common;
use common::*;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

const POPULATION: usize = 200;
const WAVE: usize = 32;
const POOL: usize = POPULATION + WAVE / 2;
/// fds may differ by a connection the server has not yet reaped when sampled.
const FD_SLACK: i64 = 2;
/// RSS may grow by a quarter: allocator arenas of the tokio workers settle over minutes,
/// while a per-call leak of even 1 KiB over ~10,000 calls (10 MiB) would exceed it.
const RSS_GROWTH: f64 = 0.25;

fn soak_duration() -> Duration {
    let secs = std::env::var("WEAVE_SOAK_SECS")
        .ok()
        .map(|s| s.parse::<u64>().expect("WEAVE_SOAK_SECS: seconds"))
        .unwrap_or(300);
    Duration::from_secs(secs)
}

/// (open fds, VmRSS in KiB) of a process.
fn fds_and_rss(pid: u32) -> (i64, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read router fds")
        .count() as i64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("router status");
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    (fds, rss)
}

fn iptables_lines(host: &Netns) -> usize {
    // Counters ([0:0]) and the timestamp comments change; rules and chains are what count.
    host.sh("iptables-save")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count()
}

/// The p-th percentile in milliseconds.
fn percentile(sorted: &[Duration], p: usize) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let d = sorted[((sorted.len() - 1) * p) / 100];
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

struct Attached {
    id: String,
    slot: usize,
    ip: String,
}

enum Call {
    Add { id: String, slot: usize },
    Del(Attached),
}

/// Figures of one reporting period (a minute).
#[derive(Default)]
struct Period {
    waves: usize,
    calls: usize,
    failures: usize,
    times: Vec<Duration>,
}

impl Period {
    fn print(&mut self, label: &str, pid: u32, attached: usize) {
        self.times.sort();
        let (fds, rss) = fds_and_rss(pid);
        println!(
            "{label}: waves {} calls {} failures {} p50 {} p90 {} attached {attached} \
             router fds {fds} rss {rss} KiB",
            self.waves,
            self.calls,
            self.failures,
            percentile(&self.times, 50),
            percentile(&self.times, 90),
        );
        *self = Period::default();
    }
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn soak_200_containers_in_waves_of_32_1() {
    let duration = soak_duration();
    let host = Arc::new(Netns::new("ls"));
    let router = Router::start(&host, &[]);
    let pid = router.child.as_ref().unwrap().id();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "weaver", "pid {pid} is not the router");
    let pool: Vec<Arc<Netns>> = (0..POOL).map(|_| Arc::new(Netns::new("lsc"))).collect();
    let (fds0, rss0) = fds_and_rss(pid);
    let ipt0 = iptables_lines(&host);
    println!(
        "soak for {duration:?}: population {POPULATION}, waves of {WAVE}; router pid {pid} \
         at start: fds {fds0} rss {rss0} KiB"
    );

    let mut free: Vec<usize> = (0..POOL).collect();
    let mut live: VecDeque<Attached> = VecDeque::new();
    let mut ips: BTreeSet<String> = BTreeSet::new();
    let mut failures: Vec<String> = Vec::new();
    let mut seq = 0usize;
    let mut waves = 0usize;
    let mut period = Period::default();
    let mut total_calls = 0usize;
    let mut all_times: Vec<Duration> = Vec::new();
    let mut iptables_after_first: Option<usize> = None;
    let mut baseline: Option<(i64, u64, Duration)> = None;
    let mut end_sample: Option<(i64, u64)> = None;
    let mut max_retired = 0usize;
    let started = Instant::now();
    let warmup = Duration::from_secs(60).min(duration / 4);
    let mut next_report = Duration::from_secs(60);
    let mut draining = false;

    loop {
        let elapsed = started.elapsed();
        if !draining && elapsed >= duration {
            draining = true;
            end_sample = Some(fds_and_rss(pid));
        }
        if draining && live.is_empty() {
            break;
        }
        if failures.len() >= 5 {
            break;
        }
        // What this wave does.
        let (dels, adds) = if draining {
            (live.len().min(WAVE), 0)
        } else if live.len() < POPULATION {
            (0, (POPULATION - live.len()).min(WAVE))
        } else {
            (WAVE / 2, WAVE / 2)
        };
        let mut calls: Vec<Call> = (0..dels)
            .map(|_| Call::Del(live.pop_front().unwrap()))
            .collect();
        for _ in 0..adds {
            seq += 1;
            let slot = free.pop().expect("a free namespace");
            calls.push(Call::Add {
                id: format!("soak-{seq}"),
                slot,
            });
        }
        let threads: Vec<_> = calls
            .into_iter()
            .map(|call| {
                let host = host.clone();
                let pool_ns = match &call {
                    Call::Add { slot, .. } => pool[*slot].clone(),
                    Call::Del(a) => pool[a.slot].clone(),
                };
                std::thread::spawn(move || {
                    let path = pool_ns.path().display().to_string();
                    let (cmd, id) = match &call {
                        Call::Add { id, .. } => ("ADD", id.clone()),
                        Call::Del(a) => ("DEL", a.id.clone()),
                    };
                    let env = cni_env(cmd, &id, &path, "eth0");
                    let t = Instant::now();
                    let run = run_plugin(&host, plugin_bin("weave-net"), &env, &conf());
                    (call, run, t.elapsed())
                })
            })
            .collect();
        for t in threads {
            let (call, run, took) = t.join().expect("plugin thread");
            period.times.push(took);
            all_times.push(took);
            period.calls += 1;
            total_calls += 1;
            match call {
                Call::Add { id, slot } => {
                    if run.code != 0 {
                        period.failures += 1;
                        failures.push(format!("ADD {id}: {run:?}"));
                        continue;
                    }
                    let ip = run.json()["ips"][0]["address"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if !ips.insert(ip.clone()) {
                        period.failures += 1;
                        failures.push(format!("ADD {id}: {ip} is already attached"));
                    }
                    live.push_back(Attached { id, slot, ip });
                }
                Call::Del(a) => {
                    if run.code != 0 {
                        period.failures += 1;
                        failures.push(format!("DEL {}: {run:?}", a.id));
                        continue;
                    }
                    ips.remove(&a.ip);
                    free.push(a.slot);
                }
            }
        }
        waves += 1;
        period.waves += 1;
        if iptables_after_first.is_none() {
            iptables_after_first = Some(iptables_lines(&host));
        }
        // The router's view equals ours.
        if waves.is_multiple_of(10) {
            max_retired = max_retired.max(retired(&host).len());
            let o = owned(&router);
            let theirs: BTreeSet<String> = o
                .iter()
                .filter(|(id, _)| id.starts_with("soak-"))
                .flat_map(|(_, a)| a.iter().cloned())
                .collect();
            if theirs != ips {
                failures.push(format!(
                    "wave {waves}: router owns {} soak addresses, {} attached; \
                     only router: {:?}; only attached: {:?}",
                    theirs.len(),
                    ips.len(),
                    theirs.difference(&ips).take(5).collect::<Vec<_>>(),
                    ips.difference(&theirs).take(5).collect::<Vec<_>>()
                ));
            }
        }
        let elapsed = started.elapsed();
        if baseline.is_none() && !draining && live.len() >= POPULATION && elapsed >= warmup {
            let (f, r) = fds_and_rss(pid);
            println!("warm-up done at {elapsed:.1?} after {waves} waves: fds {f} rss {r} KiB");
            baseline = Some((f, r, elapsed));
        }
        if elapsed >= next_report {
            period.print(
                &format!("minute {}", next_report.as_secs() / 60),
                pid,
                live.len(),
            );
            next_report += Duration::from_secs(60);
        }
    }
    period.print("last period (incl. drain)", pid, live.len());
    all_times.sort();
    println!(
        "total: {waves} waves, {total_calls} calls, {} failures in {:.1?}; \
         p50 {} p90 {} p99 {} max {}",
        failures.len(),
        started.elapsed(),
        percentile(&all_times, 50),
        percentile(&all_times, 90),
        percentile(&all_times, 99),
        percentile(&all_times, 100)
    );
    assert!(failures.is_empty(), "failures: {failures:#?}");

    // Leaks.
    let veths: Vec<String> = host
        .links()
        .into_iter()
        .filter(|l| l.starts_with("vethwepl"))
        .collect();
    assert!(veths.is_empty(), "veths left: {veths:?}");
    let retired_at_end = retired(&host).len();
    println!(
        "retired veths: at most {max_retired} seen (every 10 waves), {retired_at_end} right \
         after the drain"
    );
    assert!(
        max_retired <= weave::RETIRED_SLOTS as usize,
        "{max_retired} retired veths"
    );
    let mut all: Vec<&Netns> = pool.iter().map(|ns| &**ns).collect();
    all.push(&host);
    assert_reaped(&all);
    let left = owned(&router);
    let ids: Vec<&String> = left.keys().collect();
    assert_eq!(ids, vec!["weave:expose"], "allocations left: {left:?}");
    let atts = attachments(&router);
    assert!(atts.is_empty(), "attachments left: {atts:?}");
    let ipt_end = iptables_lines(&host);
    let ipt_first = iptables_after_first.expect("a first wave");
    println!(
        "iptables-save lines: before any ADD {ipt0}, after the first wave {ipt_first} \
         (the bridge exposed), at the end {ipt_end}"
    );
    assert_eq!(ipt_end, ipt_first, "iptables rules changed");
    let (fds_drained, rss_drained) = fds_and_rss(pid);

    let (bf, br, at) = baseline.expect("the soak never got past warm-up: raise WEAVE_SOAK_SECS");
    let (ef, er) = end_sample.unwrap();
    println!(
        "router after warm-up ({at:.1?}): fds {bf} rss {br} KiB; end of churn: fds {ef} rss {er} \
         KiB ({:+.1}%); drained: fds {fds_drained} rss {rss_drained} KiB; start: fds {fds0} rss \
         {rss0} KiB",
        (er as f64 / br as f64 - 1.0) * 100.0
    );
    assert!((ef - bf).abs() <= FD_SLACK, "router fds {bf} -> {ef}");
    assert!(
        (fds_drained - fds0).abs() <= FD_SLACK,
        "router fds at start {fds0}, drained {fds_drained}"
    );
    assert!(
        er as f64 <= br as f64 * (1.0 + RSS_GROWTH),
        "router RSS {br} KiB -> {er} KiB"
    );
    // Still serving.
    let (code, _) = router.call(|c| c.status(None).unwrap());
    assert_eq!(code, 200);
}
