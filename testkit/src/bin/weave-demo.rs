//! The main job (`scripts/demo`): weave on three simulated hosts, as an operator and a
//! runtime would use it. The kit builds the hosts (`wvdemo-h1..3`, 192.0.2.1-3/24 on one
//! underlay bridge in `wvdemo-ul`; TEST-NET-1, never routed); on each host `weave setup`
//! installs the plugins and the conflist and `weave launch` starts the router with the other
//! two as peers; the real `weave-net` attaches two containers per host exactly as a runtime
//! would. The routers form one mesh, share one IPAM ring and carry traffic over VXLAN: an nc
//! matrix proves that every container reaches every other, and a probe to a closed port is
//! refused. Then everything is detached and removed.
//!
//! Everything it creates is named `wvdemo-*`. It cleans up on exit, on a failure, and on
//! SIGINT/SIGTERM/SIGHUP (Ctrl-C), and first clears what an earlier run that was killed
//! outright left. Needs root; finds `weave` and `weave-net` beside itself (or in
//! `WEAVE_BIN_DIR`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use weave_testkit::cluster::ClusterSpec;
use weave_testkit::{bins, cleanup, nc, ns, Cluster, Error, Result};

const PREFIX: &str = "wvdemo";
const HOSTS: usize = 3;
const PER_HOST: usize = 2;
/// Every container listens here.
const PORT: u16 = 1080;
/// Nobody listens here (the negative probe).
const CLOSED_PORT: u16 = 1081;
/// How long the mesh may take to connect.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Work directories are `<tmp>/weave-demo.<pid>`.
const WORK_PREFIX: &str = "weave-demo.";

fn main() -> ExitCode {
    // First, before any thread: Ctrl-C and kill clean up instead of leaving hosts behind.
    cleanup::on_signals(|| {
        ns::sweep(&format!("{PREFIX}-"));
        remove_work_dirs();
    });
    if !nix::unistd::geteuid().is_root() {
        eprintln!("run as root (network namespaces need CAP_NET_ADMIN)");
        return ExitCode::FAILURE;
    }
    clear_earlier_run();
    let work = std::env::temp_dir().join(format!("{WORK_PREFIX}{}", std::process::id()));
    let result = demo(&work);
    cleanup::wait_if_stopping();
    // The cluster was dropped inside `demo`: its namespaces and processes are gone.
    let _ = std::fs::remove_dir_all(&work);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("FAIL: {e}");
            eprintln!("demo FAILED");
            ExitCode::FAILURE
        }
    }
}

/// What an interrupted or killed run left: `wvdemo-*` namespaces (with the routers and
/// listeners inside) and work directories.
fn clear_earlier_run() {
    let stale = ns::sweep(&format!("{PREFIX}-"));
    if !stale.is_empty() {
        println!(
            "== cleared {} namespaces an earlier run left: {}",
            stale.len(),
            stale.join(" ")
        );
    }
    remove_work_dirs();
}

/// Removes `<tmp>/weave-demo.<pid>` directories of demos that no longer run.
fn remove_work_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let me = std::process::id().to_string();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(WORK_PREFIX) else {
            continue;
        };
        let alive = pid != me && Path::new("/proc").join(pid).exists();
        if pid == me || !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// `weave` on host k with its own data dir: stdout, or an error with its output.
fn weave(c: &Cluster, work: &Path, k: usize, args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", &c.host(k).ns.name])
        .arg(bins::bin("weave"))
        .arg("--datadir")
        .arg(work.join(format!("h{k}/data")))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(format!("run weave {}: {e}", args.join(" "))))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(Error::new(format!(
            "h{k}: weave {} failed ({}): {stdout}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(stdout)
}

fn cni_bin_dir(work: &Path, k: usize) -> PathBuf {
    work.join(format!("h{k}/opt/cni/bin"))
}

fn conflist(work: &Path, k: usize) -> PathBuf {
    work.join(format!("h{k}/etc/cni/net.d/10-weave.conflist"))
}

/// The weave-net member of host k's installed conflist, as a runtime hands it to the plugin.
fn member_conf(work: &Path, k: usize) -> Result<String> {
    let path = conflist(work, k);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::new(format!("read {}: {e}", path.display())))?;
    let list: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::new(format!("parse {}: {e}", path.display())))?;
    let mut member = list["plugins"][0].clone();
    member["name"] = list["name"].clone();
    member["cniVersion"] = list["cniVersion"].clone();
    Ok(member.to_string())
}

fn demo(work: &Path) -> Result<()> {
    let ul = |k: usize| format!("192.0.2.{k}");
    println!(
        "== underlay {PREFIX}-ul: bridge ulbr, hosts {}-{}/24",
        ul(1),
        ul(HOSTS)
    );
    let mut c = Cluster::build(ClusterSpec::exact(PREFIX, [192, 0, 2]), HOSTS)?;

    for k in 1..=HOSTS {
        let peers = c.peers_of(k);
        println!(
            "== {}: weave setup; weave launch {}",
            c.host(k).ns.name,
            peers.join(" ")
        );
        let (bin_dir, conf) = (cni_bin_dir(work, k), conflist(work, k));
        let conf_dir = conf.parent().unwrap().display().to_string();
        weave(
            &c,
            work,
            k,
            &[
                "setup",
                "--cni-bin-dir",
                &bin_dir.display().to_string(),
                "--cni-conf-dir",
                &conf_dir,
            ],
        )?;
        let nick = format!("h{k}");
        let mut args = vec!["launch", "--no-cni-setup", "--nickname", &nick];
        args.extend(peers.iter().map(String::as_str));
        weave(&c, work, k, &args)?;
    }

    // Ready: every router has established connections to both others. The IPAM ring is
    // created lazily, by consensus, on the first allocation (as in Weave).
    println!(
        "== waiting for the mesh (at most {}s)",
        READY_TIMEOUT.as_secs()
    );
    let start = Instant::now();
    let want = format!("Connections: {0} ({0} established", HOSTS - 1);
    for k in 1..=HOSTS {
        while !weave(&c, work, k, &["status"]).is_ok_and(|s| s.contains(&want)) {
            if start.elapsed() > READY_TIMEOUT {
                let status = weave(&c, work, k, &["status"]).unwrap_or_else(|e| e.to_string());
                return Err(Error::new(format!(
                    "{}: mesh not connected after {}s (log: {}):\n{status}",
                    c.host(k).ns.name,
                    READY_TIMEOUT.as_secs(),
                    work.join(format!("h{k}/data/weaver.log")).display()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    println!("mesh connected after {:.1}s", start.elapsed().as_secs_f64());
    println!("--- {}: 10-weave.conflist", c.host(1).ns.name);
    println!(
        "{}",
        std::fs::read_to_string(conflist(work, 1))
            .unwrap_or_default()
            .trim_end()
    );

    for k in 1..=HOSTS {
        let (conf, bin_dir) = (member_conf(work, k)?, cni_bin_dir(work, k));
        let cni_path = bin_dir.display().to_string();
        for j in 1..=PER_HOST {
            let name = format!("h{k}-c{j}");
            let ns = c.spec.netns(&name)?;
            let id = format!("{}-id", ns.name);
            let full = ns.name.clone();
            let idx = c.attach(
                k,
                &name,
                ns,
                &id,
                &bin_dir.join("weave-net"),
                &conf,
                &[("CNI_PATH", &cni_path)],
            )?;
            println!("CNI ADD {full} -> {}", c.containers[idx].ip);
        }
    }
    let mut ips: Vec<Ipv4Addr> = c.containers.iter().map(|x| x.ip).collect();
    ips.sort();
    ips.dedup();
    if ips.len() != c.containers.len() {
        return Err(Error::new("duplicate addresses"));
    }
    for k in 1..=HOSTS {
        let status = weave(&c, work, k, &["status"])?;
        if !status.contains("Status: ready") {
            return Err(Error::new(format!("h{k}: IPAM not ready:\n{status}")));
        }
    }
    let h1 = c.host(1).ns.name.clone();
    println!(
        "== {h1}: weave status\n{}",
        weave(&c, work, 1, &["status"])?.trim_end()
    );
    println!(
        "== {h1}: weave status peers\n{}",
        weave(&c, work, 1, &["status", "peers"])?.trim_end()
    );
    println!(
        "== {h1}: weave status ipam\n{}",
        weave(&c, work, 1, &["status", "ipam"])?.trim_end()
    );
    for k in 1..=HOSTS {
        println!(
            "== {}: weave ps\n{}",
            c.host(k).ns.name,
            weave(&c, work, k, &["ps"])?.trim_end()
        );
    }

    println!("== nc matrix: nc -z -w 3 from every container to every other on port {PORT}");
    for x in &mut c.containers {
        x.listen_on(PORT)?;
    }
    let members: Vec<(String, String, Ipv4Addr)> = c
        .containers
        .iter()
        .map(|x| (x.name.clone(), x.ns.name.clone(), x.ip))
        .collect();
    let matrix = nc::matrix(&members, PORT);
    print!("{matrix}");
    let total = members.len() * (members.len() - 1);
    let failed = matrix.failures().len();
    if failed > 0 {
        return Err(Error::new(format!(
            "{failed} of {total} probes failed: {:?}",
            matrix.failures()
        )));
    }
    let (a, b) = (0, c.containers.len() - 1);
    let (from, to) = (&c.containers[a], &c.containers[b]);
    if nc::probe(&from.ns.name, to.ip, CLOSED_PORT) {
        return Err(Error::new(format!(
            "negative probe {} -> {}:{CLOSED_PORT} unexpectedly succeeded",
            from.name, to.ip
        )));
    }
    println!(
        "negative probe: {} -> {} ({}:{CLOSED_PORT}) refused, as expected",
        from.name, to.name, to.ip
    );

    let n = c.containers.len();
    while !c.containers.is_empty() {
        let k = c.containers[0].host;
        let (conf, bin_dir) = (member_conf(work, k)?, cni_bin_dir(work, k));
        let cni_path = bin_dir.display().to_string();
        let name = c.containers[0].ns.name.clone();
        c.detach(
            0,
            &bin_dir.join("weave-net"),
            &conf,
            &[("CNI_PATH", &cni_path)],
        )
        .map_err(|e| e.context(format!("CNI DEL {name}")))?;
    }
    println!(
        "== CNI DEL of all {n} containers; {h1}: weave status ipam\n{}",
        weave(&c, work, 1, &["status", "ipam"])?.trim_end()
    );
    for k in 1..=HOSTS {
        weave(&c, work, k, &["stop"])?;
    }
    drop(c);
    println!(
        "demo OK: {HOSTS} hosts, {n} containers, {total}/{total} probes OK, negative probe refused"
    );
    Ok(())
}
