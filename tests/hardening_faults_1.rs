//! Faults on one host (`_1`): the router killed during concurrent ADDs, the plugin killed in
//! the middle of ADD, and a data directory that cannot be written. Real `weaver`, real
//! `weave-net`, real namespaces; every check below fails if state leaks or is duplicated.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// CNI GC with the runtime's list of attachments that are still valid.
fn gc(host: &Netns, valid: &[&str]) -> PluginRun {
    let list: Vec<Value> = valid
        .iter()
        .map(|id| json!({"containerID": id, "ifname": "eth0"}))
        .collect();
    let stdin = json!({"cniVersion": "1.1.0", "name": "weave", "type": "weave-net",
        "cni.dev/valid-attachments": list})
    .to_string();
    let env = [("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")];
    run_plugin(host, plugin_bin("weave-net"), &env, &stdin)
}

/// No address is owned twice.
fn assert_no_duplicates(owned: &BTreeMap<String, Vec<String>>) {
    let mut seen = BTreeMap::new();
    for (id, addrs) in owned {
        for a in addrs {
            if let Some(other) = seen.insert(a.clone(), id.clone()) {
                panic!("{a} owned by both {other} and {id}");
            }
        }
    }
}

/// A failed ADD must be a CNI error on stdout, not a crash or a half-written result.
fn assert_clean_failure(run: &PluginRun) {
    assert_ne!(run.code, 0);
    let err = run.json();
    assert!(err["code"].as_u64().is_some(), "no error code: {err}");
    assert!(!err["msg"].as_str().unwrap_or("").is_empty(), "{err}");
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn router_killed_during_50_concurrent_adds_1() {
    const N: usize = 50;
    let host = Arc::new(Netns::new("fa"));
    let mut router = Router::start(&host, &[]);
    let containers: Vec<Arc<Netns>> = (0..N).map(|_| Arc::new(Netns::new("fc"))).collect();
    let done = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = containers
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let (host, ns, done) = (host.clone(), ns.clone(), done.clone());
            std::thread::spawn(move || {
                let run = weave_net("ADD", &host, &format!("crash-{i}"), &ns);
                done.fetch_add(1, Ordering::SeqCst);
                run
            })
        })
        .collect();
    // Kill once a few have finished, so the rest are in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    while done.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    router.kill9();
    let runs: Vec<PluginRun> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    let mut ok: BTreeMap<String, String> = BTreeMap::new();
    for (i, run) in runs.iter().enumerate() {
        let id = format!("crash-{i}");
        if run.code == 0 {
            let ip = run.json()["ips"][0]["address"]
                .as_str()
                .unwrap()
                .to_string();
            assert_eq!(containers[i].addrs("eth0"), vec![ip.clone()], "{id}");
            ok.insert(id, ip);
        } else {
            assert_clean_failure(run);
            assert!(
                !containers[i].links().contains(&"eth0".to_string()),
                "failed ADD {id} left an interface: {}",
                run.stdout
            );
        }
    }
    let unique: BTreeSet<&String> = ok.values().collect();
    assert_eq!(
        unique.len(),
        ok.len(),
        "an address handed out twice: {ok:?}"
    );
    eprintln!("{} of {N} ADDs succeeded before/around the kill", ok.len());

    router.spawn();
    let after = owned(&router);
    assert_no_duplicates(&after);
    for (id, ip) in &ok {
        assert_eq!(after.get(id), Some(&vec![ip.clone()]), "{id} lost {ip}");
    }
    // Every host veth belongs to an attachment whose id owns an address.
    let atts = attachments(&router);
    for veth in host_veths(&host) {
        let a = atts
            .iter()
            .find(|a| a["host_veth"] == veth.as_str())
            .unwrap_or_else(|| panic!("leaked veth {veth} with no attachment"));
        let id = a["ipam_id"].as_str().unwrap();
        assert!(
            after.contains_key(id),
            "veth {veth} of {id} has no allocation"
        );
    }
    // What a crash left behind (allocated, never answered) is collected by GC.
    let valid: Vec<&str> = ok.keys().map(String::as_str).collect();
    let run = gc(&host, &valid);
    assert_eq!(run.code, 0, "gc: {run:?}");
    let after_gc = owned(&router);
    let ids: BTreeSet<&String> = after_gc
        .keys()
        .filter(|k| k.starts_with("crash-"))
        .collect();
    assert_eq!(ids, ok.keys().collect(), "GC left or took the wrong ids");
    assert_eq!(host_veths(&host).len(), ok.len());
}

/// Starts an ADD and SIGKILLs it after `delay`; returns whether it had already finished.
fn add_killed_after(host: &Netns, id: &str, ns: &Netns, delay: Duration) -> bool {
    let path = ns.path();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &host.name, plugin_bin("weave-net")])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(cni_env("ADD", id, path.to_str().unwrap(), "eth0"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf().as_bytes())
        .ok();
    std::thread::sleep(delay);
    let finished = child.try_wait().unwrap().is_some();
    let _ = child.kill();
    let _ = child.wait();
    finished
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn plugin_killed_during_add_is_cleaned_by_del_or_gc_1() {
    let host = Netns::new("fk");
    let router = Router::start(&host, &[]);
    // Warm up the bridge address (weave:expose) so every kill lands on the container path.
    let warm = Netns::new("fw");
    assert_eq!(weave_net("ADD", &host, "warm", &warm).code, 0);
    let delays_ms = [0u64, 1, 2, 4, 6, 8, 10, 15, 20, 30, 45, 70, 100];
    let mut killed_midway = 0;
    let mut for_gc = Vec::new();
    for (i, ms) in delays_ms.iter().enumerate() {
        let id = format!("kill-{i}");
        let ns = Netns::new("fk");
        if !add_killed_after(&host, &id, &ns, Duration::from_millis(*ms)) {
            killed_midway += 1;
        }
        if i % 2 == 0 {
            let run = weave_net("DEL", &host, &id, &ns);
            assert_eq!(run.code, 0, "DEL after kill at {ms} ms: {run:?}");
            assert!(!owned(&router).contains_key(&id), "{id} still allocated");
            assert!(!ns.links().contains(&"eth0".to_string()), "{id}: eth0 left");
        } else {
            for_gc.push((id, ns));
        }
    }
    eprintln!(
        "{killed_midway} of {} ADDs were killed before finishing",
        delays_ms.len()
    );
    assert!(killed_midway > 0, "no kill landed during an ADD");
    let run = gc(&host, &["warm"]);
    assert_eq!(run.code, 0, "gc: {run:?}");
    let left = owned(&router);
    for (id, _) in &for_gc {
        assert!(!left.contains_key(id), "{id} still allocated after GC");
    }
    assert_no_duplicates(&left);
    let ids: Vec<String> = left
        .keys()
        .filter(|k| k.starts_with("kill-"))
        .cloned()
        .collect();
    assert!(ids.is_empty(), "{ids:?}");
    assert_eq!(host_veths(&host).len(), 1, "only warm's veth is left");
    let atts = attachments(&router);
    assert_eq!(atts.len(), 1, "{atts:?}");
    assert_eq!(atts[0]["container_id"], "warm");
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn unwritable_datadir_fails_add_cleanly_1() {
    let host = Netns::new("fd");
    let mut router = Router::start(&host, &[]);
    let c1 = Netns::new("fd");
    let run = weave_net("ADD", &host, "disk-1", &c1);
    assert_eq!(run.code, 0, "{run:?}");
    let ip1 = run.json()["ips"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let file = router.datadir.join("ipam.json");
    let on_disk = std::fs::read_to_string(&file).unwrap();
    assert!(on_disk.contains(&ip1), "acknowledged {ip1} is not on disk");

    // A directory where the state file goes: every write fails, even for root.
    let aside = router.datadir.join("ipam.json.aside");
    std::fs::rename(&file, &aside).unwrap();
    std::fs::create_dir(&file).unwrap();
    let c2 = Netns::new("fd");
    let run = weave_net("ADD", &host, "disk-2", &c2);
    assert_clean_failure(&run);
    let msg = run.json()["msg"].as_str().unwrap().to_string();
    assert!(msg.contains("ipam.json"), "unclear error: {msg}");
    assert!(
        !c2.links().contains(&"eth0".to_string()),
        "eth0 left behind"
    );
    assert!(
        !owned(&router).contains_key("disk-2"),
        "unpersisted allocation kept"
    );
    assert_eq!(host_veths(&host).len(), 1);

    std::fs::remove_dir(&file).unwrap();
    std::fs::rename(&aside, &file).unwrap();
    router.kill9();
    router.spawn();
    let after = owned(&router);
    assert_eq!(after.get("disk-1"), Some(&vec![ip1.clone()]));
    assert!(!after.contains_key("disk-2"));
    let run = weave_net("ADD", &host, "disk-2", &c2);
    assert_eq!(run.code, 0, "{run:?}");
    let ip2 = run.json()["ips"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(ip1, ip2);
    assert!(std::fs::read_to_string(&file).unwrap().contains(&ip2));
}
