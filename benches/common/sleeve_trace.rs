//! `--trace`: the encrypted routers record each ICMP echo frame's stages
//! (`WEAVE_SLEEVE_TRACE`, see `src/dataplane/encrypted_trace.rs`); this lines the two
//! routers' records up into one timeline per round trip and prints the median of each step.

use std::collections::HashMap;
use std::path::Path;

/// The round trip's steps in order: host (0: the pinging one, 1: the answering one), stage,
/// ICMP type (8: request, 0: reply).
const STEPS: [(usize, &str, u64); 17] = [
    (0, "woke", 8),
    (0, "tap_read", 8),
    (0, "sealed", 8),
    (0, "sent", 8),
    (1, "kernel_rx", 8),
    (1, "woke", 8),
    (1, "recv", 8),
    (1, "opened", 8),
    (1, "tap_written", 8),
    (1, "tap_read", 0),
    (1, "sealed", 0),
    (1, "sent", 0),
    (0, "kernel_rx", 0),
    (0, "woke", 0),
    (0, "recv", 0),
    (0, "opened", 0),
    (0, "tap_written", 0),
];

/// One record: when, which thread (o: sending worker, i: receiving worker), which CPU.
#[derive(Clone, Copy)]
struct At {
    ns: u64,
    thread: char,
    cpu: i32,
}

type Records = HashMap<(String, u64, u64, u64), At>;

fn load(file: &Path) -> Records {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut out = Records::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [stage, thread, cpu, ty, id, seq, ns] = f[..] else {
            continue;
        };
        let num = |s: &str| s.parse::<u64>().unwrap_or(0);
        let at = At {
            ns: num(ns),
            thread: thread.chars().next().unwrap_or('?'),
            cpu: cpu.parse().unwrap_or(-1),
        };
        // The first record wins (a broadcast frame is sent once per peer).
        out.entry((stage.to_string(), num(ty), num(id), num(seq)))
            .or_insert(at);
    }
    out
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Prints the timeline from `<prefix>.<pid>` of the pinging router `pids[0]` and the
/// answering one `pids[1]`; returns the median span from the request's TAP read to the
/// reply's TAP write, in ms.
pub fn report(prefix: &Path, pids: [u32; 2]) -> f64 {
    let hosts = pids.map(|pid| load(&prefix.with_extension(pid.to_string())));
    let trips: Vec<(u64, u64)> = hosts[0]
        .keys()
        .filter(|(stage, ty, _, _)| stage == "tap_read" && *ty == 8)
        .map(|(_, _, id, seq)| (*id, *seq))
        .collect();
    let mut timelines = Vec::new();
    for (id, seq) in trips {
        let row: Vec<Option<At>> = STEPS
            .iter()
            .map(|&(h, stage, ty)| hosts[h].get(&(stage.to_string(), ty, id, seq)).copied())
            .collect();
        let (Some(start), Some(end)) = (row[1], row[16]) else {
            continue;
        };
        // A reply that took a second is a lost frame retried, not a round trip.
        if end.ns > start.ns && end.ns - start.ns < 50_000_000 {
            timelines.push(row);
        }
    }
    println!(
        "\nencrypted path stage trace: {} round trips (medians, us; 'since' from the request's TAP read)",
        timelines.len()
    );
    println!(
        "{:<24} {:>8} {:>8} {:>6} {:>8} {:>10}",
        "step", "since", "gap", "seen", "thread", "on cpu 0"
    );
    let mut total = Vec::new();
    for (i, &(h, stage, ty)) in STEPS.iter().enumerate() {
        let mut since = Vec::new();
        let mut gap = Vec::new();
        let (mut seen, mut cpu0, mut threads) = (0, 0, String::new());
        for row in &timelines {
            let (Some(at), Some(start)) = (row[i], row[1]) else {
                continue;
            };
            seen += 1;
            cpu0 += usize::from(at.cpu == 0);
            if !threads.contains(at.thread) {
                threads.push(at.thread);
            }
            since.push((at.ns as f64 - start.ns as f64) / 1e3);
            if let Some(prev) = row[..i].iter().rev().flatten().next() {
                gap.push((at.ns as f64 - prev.ns as f64) / 1e3);
            }
            if i == 16 {
                total.push((at.ns - start.ns) as f64 / 1e6);
            }
        }
        let name = format!(
            "{} {} {stage}",
            ["A", "B"][h],
            if ty == 8 { "req" } else { "rep" }
        );
        let share = (100 * cpu0).checked_div(seen).unwrap_or(0);
        println!(
            "{name:<24} {:>8.1} {:>8.1} {seen:>6} {threads:>8} {share:>9}%",
            median(&mut since),
            median(&mut gap)
        );
    }
    median(&mut total)
}
