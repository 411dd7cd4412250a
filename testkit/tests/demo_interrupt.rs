//! The demo cleans up after itself when interrupted: started, sent SIGINT mid-run (as
//! Ctrl-C does), it must leave no namespace, no process and no host link; killed outright
//! (SIGKILL, no chance to clean), the next run must clear what it left; and a full run
//! afterwards must succeed. Root, and the weave binaries built (`cargo build --bins
//! --workspace`); under the shared lock like every netns test.

use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weave_testkit::{bins, ns};

const DEMO: &str = env!("CARGO_BIN_EXE_weave-demo");

fn host_links() -> BTreeSet<String> {
    weave_testkit::run_ok("ip", &["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

fn demo_namespaces() -> Vec<String> {
    ns::list()
        .into_iter()
        .filter(|n| n.starts_with("wvdemo-"))
        .collect()
}

/// PIDs running in the demo's namespaces now.
fn demo_pids() -> BTreeSet<u32> {
    let mut pids = BTreeSet::new();
    for n in demo_namespaces() {
        let out = Command::new("ip")
            .args(["netns", "pids", &n])
            .output()
            .unwrap();
        pids.extend(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    pids
}

fn start_demo() -> Child {
    let bin_dir = bins::bin("weave").parent().unwrap().to_path_buf();
    assert!(
        bins::find("weave-net").is_some(),
        "build the weave binaries first"
    );
    Command::new(DEMO)
        .env("WEAVE_BIN_DIR", bin_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start weave-demo")
}

/// Waits (at most 120 s) until the demo has routers running and containers attached.
fn wait_mid_run(demo: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !demo_namespaces().iter().any(|n| n == "wvdemo-h2-c1") {
        assert!(demo.try_wait().unwrap().is_none(), "demo ended early");
        assert!(
            Instant::now() < deadline,
            "demo never reached its containers"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn finish(mut demo: Child, limit: Duration) -> (Option<i32>, String) {
    let status = weave_testkit::process::wait_timeout(&mut demo, limit);
    if status.is_none() {
        let _ = demo.kill();
        let _ = demo.wait();
    }
    let mut out = String::new();
    demo.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    demo.stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (status.and_then(|s| s.code()), out)
}

fn alive(pid: u32) -> bool {
    ns::running(pid as i32)
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test -p weave-testkit --features netns-tests"
)]
fn demo_cleans_up_on_sigint_and_after_sigkill_then_runs_to_success() {
    weave_testkit::require_root();
    assert!(
        demo_namespaces().is_empty(),
        "a demo is running: {:?}",
        demo_namespaces()
    );
    let links_before = host_links();

    // 1. Ctrl-C mid-run: nothing is left.
    let mut demo = start_demo();
    wait_mid_run(&mut demo);
    let pids = demo_pids();
    let routers = pids.len();
    assert!(routers >= 3, "routers and listeners inside: {pids:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let (code, out) = finish(demo, Duration::from_secs(30));
    println!("--- interrupted run:\n{out}");
    assert_eq!(code, Some(130), "exit code after SIGINT:\n{out}");
    assert!(out.contains("SIGINT received: cleaning up"), "{out}");
    assert_eq!(demo_namespaces(), Vec::<String>::new(), "namespaces left");
    let survivors: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    assert_eq!(survivors, Vec::<u32>::new(), "processes left of {pids:?}");
    assert_eq!(host_links(), links_before, "host links changed");
    println!(
        "after SIGINT: 0 namespaces, 0 of {} processes, host links unchanged",
        pids.len()
    );

    // 2. SIGKILL mid-run leaves everything; the next run clears it first.
    let mut demo = start_demo();
    wait_mid_run(&mut demo);
    let left_pids = demo_pids();
    demo.kill().unwrap();
    let _ = finish(demo, Duration::from_secs(10));
    let left = demo_namespaces();
    assert!(!left.is_empty(), "SIGKILL leaves the namespaces");
    println!("after SIGKILL: {} namespaces left: {left:?}", left.len());

    // 3. A full run clears them and succeeds.
    let (code, out) = finish(start_demo(), Duration::from_secs(240));
    println!("--- full run:\n{out}");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "== cleared {} namespaces an earlier run left",
            left.len()
        )),
        "{out}"
    );
    assert!(
        out.contains("demo OK: 3 hosts, 6 containers, 30/30 probes OK, negative probe refused"),
        "{out}"
    );
    assert_eq!(demo_namespaces(), Vec::<String>::new());
    let survivors: Vec<u32> = left_pids.iter().copied().filter(|p| alive(*p)).collect();
    assert_eq!(
        survivors,
        Vec::<u32>::new(),
        "processes of the killed run left"
    );
    assert_eq!(host_links(), links_before, "host links changed");
}
