//! CNI ADD and DEL latency, process start to exit: our `weave-net` (router running) beside
//! the reference `bridge` + `host-local` plugins (Debian's containernetworking-plugins, with
//! and without ipMasq, and with portmap chained) and the bare `loopback` plugin as the
//! process-start floor. Runs on a simulated host (a `wvb-*` namespace); prints a table and
//! writes JSON. Needs root. `bench/run` is the front door.
//!
//! Usage: cargo bench --bench cni_latency -- [--iterations N] [--json FILE]

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REF_DIR: &str = "/usr/lib/cni";

struct Ns(String);

impl Ns {
    fn new(name: String) -> Ns {
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Ns(name)
    }
    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.0]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .expect("spawn");
    assert!(st.success(), "{args:?} failed");
}

/// Runs a plugin in the host namespace (setns before exec, like a runtime living there)
/// and returns its wall time from spawn to exit.
fn call(host: &OwnedFd, bin: &str, env: &[(&str, &str)], stdin: &str) -> Duration {
    let fd = host.as_raw_fd();
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn plugin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{bin} {env:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn env<'a>(cmd: &'a str, id: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", REF_DIR),
    ]
}

#[derive(Default)]
struct Series {
    add: Vec<f64>,
    del: Vec<f64>,
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize];
    (q(0.5), q(0.1), q(0.9))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let n: usize = arg("--iterations")
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let json_out = arg("--json");
    assert!(
        nix::unistd::geteuid().is_root(),
        "the CNI benchmark needs root"
    );
    for p in ["bridge", "host-local", "loopback", "portmap"] {
        assert!(
            std::path::Path::new(REF_DIR).join(p).exists(),
            "reference plugin {REF_DIR}/{p} missing: apt-get install containernetworking-plugins"
        );
    }
    let weave_net = env!("CARGO_BIN_EXE_weave-net");
    let weaver = env!("CARGO_BIN_EXE_weaver");

    let host = Ns::new(format!("wvb-host-{}", std::process::id()));
    let host_fd: OwnedFd = std::fs::File::open(host.path()).unwrap().into();
    let data = tempfile::Builder::new().prefix("wvb-").tempdir().unwrap();
    let mut router = Command::new("ip")
        .args(["netns", "exec", &host.0, weaver, "--status-addr", ""])
        .arg("--datadir")
        .arg(data.path().join("weave"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data.path().join("weaver.log")).unwrap())
        .spawn()
        .expect("start weaver");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = Command::new("ip")
            .args(["netns", "exec", &host.0, "nc", "-z", "127.0.0.1", "6784"])
            .stderr(Stdio::null())
            .status();
        if st.map(|s| s.success()).unwrap_or(false) {
            break;
        }
        assert!(Instant::now() < deadline, "router did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let ours = r#"{"cniVersion":"1.0.0","name":"weave","type":"weave-net","hairpinMode":true}"#
        .to_string();
    let hl_dir = data.path().join("host-local");
    let bridge_conf = |masq: bool| {
        serde_json::json!({"cniVersion":"1.0.0","name":"refnet","type":"bridge","bridge":"cni-ref0",
            "isGateway":true,"ipMasq":masq,"hairpinMode":true,
            "ipam":{"type":"host-local","subnet":"10.88.0.0/16","dataDir":hl_dir}})
        .to_string()
    };
    let (plain, masq) = (bridge_conf(false), bridge_conf(true));
    let lo = r#"{"cniVersion":"1.0.0","name":"lo","type":"loopback"}"#;

    let names = [
        "weave-net",
        "bridge+host-local",
        "bridge+host-local+ipMasq",
        "bridge+host-local+portmap",
        "loopback",
    ];
    let mut series: Vec<Series> = names.iter().map(|_| Series::default()).collect();
    let ref_bin = |p: &str| format!("{REF_DIR}/{p}");
    let (bridge_bin, portmap_bin, lo_bin) =
        (ref_bin("bridge"), ref_bin("portmap"), ref_bin("loopback"));

    // Warm-up: creates bridges and caches, not measured.
    {
        let c = Ns::new(format!("wvb-warm-{}", std::process::id()));
        let p = c.path();
        call(&host_fd, weave_net, &env("ADD", "warm", &p), &ours);
        call(&host_fd, weave_net, &env("DEL", "warm", &p), &ours);
        call(&host_fd, &bridge_bin, &env("ADD", "warm", &p), &plain);
        call(&host_fd, &bridge_bin, &env("DEL", "warm", &p), &plain);
    }
    for i in 0..n {
        // One fresh container namespace per variant per iteration; variants interleaved.
        let cs: Vec<Ns> = (0..names.len())
            .map(|k| Ns::new(format!("wvb-c{k}-{i}-{}", std::process::id())))
            .collect();
        let id = format!("bench-{i}");
        for (k, name) in names.iter().enumerate() {
            let p = cs[k].path();
            let (add, del) = match *name {
                "weave-net" => (
                    call(&host_fd, weave_net, &env("ADD", &id, &p), &ours),
                    call(&host_fd, weave_net, &env("DEL", &id, &p), &ours),
                ),
                "bridge+host-local" => (
                    call(&host_fd, &bridge_bin, &env("ADD", &id, &p), &plain),
                    call(&host_fd, &bridge_bin, &env("DEL", &id, &p), &plain),
                ),
                "bridge+host-local+ipMasq" => (
                    call(&host_fd, &bridge_bin, &env("ADD", &id, &p), &masq),
                    call(&host_fd, &bridge_bin, &env("DEL", &id, &p), &masq),
                ),
                "bridge+host-local+portmap" => {
                    let t0 = Instant::now();
                    let out = run_capture(&host_fd, &bridge_bin, &env("ADD", &id, &p), &plain);
                    let pm = serde_json::json!({"cniVersion":"1.0.0","name":"refnet","type":"portmap",
                        "capabilities":{"portMappings":true},"snat":true,
                        "runtimeConfig":{"portMappings":[{"hostPort":20000 + i as u16,"containerPort":80,"protocol":"tcp"}]},
                        "prevResult": serde_json::from_str::<serde_json::Value>(&out).unwrap()})
                    .to_string();
                    call(&host_fd, &portmap_bin, &env("ADD", &id, &p), &pm);
                    let add = t0.elapsed();
                    let t1 = Instant::now();
                    call(&host_fd, &portmap_bin, &env("DEL", &id, &p), &pm);
                    call(&host_fd, &bridge_bin, &env("DEL", &id, &p), &plain);
                    (add, t1.elapsed())
                }
                _ => (
                    call(&host_fd, &lo_bin, &env("ADD", &id, &p), lo),
                    call(&host_fd, &lo_bin, &env("DEL", &id, &p), lo),
                ),
            };
            series[k].add.push(add.as_secs_f64() * 1e3);
            series[k].del.push(del.as_secs_f64() * 1e3);
        }
    }
    let _ = router.kill();
    let _ = router.wait();

    println!(
        "\nCNI latency, process start to exit, {n} sequential containers (ms: median [p10-p90])"
    );
    println!("{:<28} {:>24} {:>24}", "plugin", "ADD", "DEL");
    let mut report = serde_json::Map::new();
    for (k, name) in names.iter().enumerate() {
        let (am, a10, a90) = stats(&series[k].add);
        let (dm, d10, d90) = stats(&series[k].del);
        println!(
            "{name:<28} {:>24} {:>24}",
            format!("{am:.2} [{a10:.2}-{a90:.2}]"),
            format!("{dm:.2} [{d10:.2}-{d90:.2}]")
        );
        report.insert(name.to_string(), serde_json::json!({"add_ms":{"median":am,"p10":a10,"p90":a90},"del_ms":{"median":dm,"p10":d10,"p90":d90}}));
    }
    let (ours_add, _, _) = stats(&series[0].add);
    let (ours_del, _, _) = stats(&series[0].del);
    let (ref_add, _, _) = stats(&series[1].add);
    let (ref_del, _, _) = stats(&series[1].del);
    let (ra, rd) = (ours_add / ref_add, ours_del / ref_del);
    println!("\nweave-net / bridge+host-local: ADD {ra:.3} (target <= 0.4: {}), DEL {rd:.3} (target <= 0.4: {})",
        if ra <= 0.4 { "met" } else { "NOT met" }, if rd <= 0.4 { "met" } else { "NOT met" });
    report.insert(
        "ratio".into(),
        serde_json::json!({"add": ra, "del": rd, "iterations": n}),
    );
    if let Some(path) = json_out {
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
        println!("JSON written to {path}");
    }
}

fn run_capture(host: &OwnedFd, bin: &str, env: &[(&str, &str)], stdin: &str) -> String {
    let fd = host.as_raw_fd();
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied());
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{bin}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
