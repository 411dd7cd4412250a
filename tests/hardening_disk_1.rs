//! A full disk under the router's data dir (`_1`): a small tmpfs mounted as the data dir and
//! filled. ADD must fail with a CNI error that names the cause and leave nothing attached or
//! allocated; DEL on a full disk fails (so the runtime retries) without losing the address;
//! once space is back, the router's state holds exactly the acknowledged allocations, and
//! they all survive kill -9 and a restart. The router serves throughout.

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `size` mounted on a fresh temp dir; unmounted (lazily, so an open file in it
/// cannot keep it) and removed on drop.
struct Tmpfs {
    mnt: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        require_root();
        let tmp = tempfile::Builder::new()
            .prefix("wvt-tmpfs-")
            .tempdir()
            .unwrap();
        let mnt = tmp.path().join("data");
        std::fs::create_dir(&mnt).unwrap();
        let opts = format!("size={size},mode=0755");
        run_ok(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &opts,
                "wvt-tmpfs",
                mnt.to_str().unwrap(),
            ],
        );
        Tmpfs { mnt, _tmp: tmp }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

/// Fills the file system of `dir` with `dir/filler` until ENOSPC; returns the bytes written.
fn fill(dir: &Path) -> u64 {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("filler"))
        .unwrap();
    let chunk = vec![0xa5u8; 1024];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("fill {}: {e}", dir.display()),
        }
    }
    let _ = f.sync_all();
    n
}

/// Frees `bytes` of the filler (all of it with `u64::MAX`).
fn free(dir: &Path, bytes: u64) {
    let path = dir.join("filler");
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len.saturating_sub(bytes)).unwrap();
    f.sync_all().unwrap();
}

fn serving(router: &Router) {
    let (code, _) = router.call(|c| c.status(None).unwrap());
    assert_eq!(code, 200, "router stopped serving:\n{}", router.log());
}

/// ADD of a new container `id`; an acknowledged one is recorded in `acked` (with its address
/// checked on eth0), a failed one must leave no eth0 and no allocation.
fn add(
    host: &Netns,
    router: &Router,
    spaces: &mut Vec<(String, Netns)>,
    id: &str,
    acked: &mut BTreeMap<String, String>,
) -> PluginRun {
    let ns = Netns::new("dkc");
    let run = weave_net("ADD", host, id, &ns);
    if run.code == 0 {
        let ip = run.json()["ips"][0]["address"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(ns.addrs("eth0"), vec![ip.clone()], "{id}");
        acked.insert(id.to_string(), ip);
    } else {
        assert!(!ns.links().contains(&"eth0".into()), "{id}: eth0 left");
        assert!(!owned(router).contains_key(id), "{id}: unacked allocation");
    }
    spaces.push((id.to_string(), ns));
    run
}

/// The failure a full disk must give: the router's 500 (CNI 100) carrying the store's error,
/// e.g. `... router answered 500: save ipam state: write <datadir>/.tmp-XXXXXX: No space
/// left on device (os error 28)`: one layer of context per call, the data dir named once.
fn assert_disk_full_error(run: &PluginRun, id: &str, datadir: &Path) {
    assert_eq!(run.code, 1, "{id}: {run:?}");
    let err = run.json();
    assert_eq!(err["code"], 100, "{id}: {err}");
    let msg = err["msg"].as_str().unwrap();
    let cause = msg.split_once("router answered 500: ").map(|(_, c)| c);
    assert!(
        cause.is_some_and(|c| c.ends_with(": No space left on device (os error 28)")
            && c.matches(datadir.to_str().unwrap()).count() == 1),
        "{id}: unclear error: {msg}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn full_datadir_fails_add_cleanly_and_keeps_acknowledged_state_1() {
    let host = Netns::new("dk");
    let logs = tempfile::Builder::new()
        .prefix("wvt-log-")
        .tempdir()
        .unwrap();
    let disk = Tmpfs::mount("256k");
    // The test's router log lives outside the small disk.
    std::os::unix::fs::symlink(
        logs.path().join("weaver.log"),
        disk.mnt.join("test-weaver.log"),
    )
    .unwrap();
    let mut router = Router::start_in(&host, &disk.mnt, &[]);
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let mut spaces: Vec<(String, Netns)> = Vec::new();
    let run = add(&host, &router, &mut spaces, "disk-0", &mut acked);
    assert_eq!(run.code, 0, "{run:?}");

    // Completely full: ADD fails and leaves nothing behind.
    let filled = fill(&disk.mnt);
    println!("filled the 256 KiB tmpfs with {filled} bytes");
    // The state file's appended records may still fit in its last page for a few ADDs:
    // those are acknowledged (and must survive below); the first that does not fit fails.
    let mut full_failure = None;
    for i in 1..=64 {
        let id = format!("full-{i}");
        let veths = host_veths(&host).len();
        let run = add(&host, &router, &mut spaces, &id, &mut acked);
        if run.code != 0 {
            assert_disk_full_error(&run, &id, &disk.mnt);
            println!(
                "ADD on a full disk ({} fitted first): {}",
                i - 1,
                run.stdout.trim()
            );
            assert_eq!(host_veths(&host).len(), veths, "{id} left a host veth");
            assert!(!attachment_ids(&router).contains(&id));
            full_failure = Some(id);
            break;
        }
    }
    let full_failed = full_failure.expect("64 ADDs fitted on a full disk");
    serving(&router);
    // DEL on a full disk cannot record the release: it fails (the runtime retries) and the
    // address stays owned, never half-freed.
    let run = weave_net("DEL", &host, "disk-0", &spaces[0].1);
    assert_disk_full_error(&run, "DEL disk-0", &disk.mnt);
    assert_eq!(
        owned(&router).get("disk-0"),
        Some(&vec![acked["disk-0"].clone()])
    );

    // Nearly full: ADDs succeed until the state file no longer fits (its new copy is written
    // beside the old one), then fail cleanly.
    free(&disk.mnt, 12 * 1024);
    let mut first_failure = None;
    for i in 1..=200 {
        let id = format!("near-{i}");
        let run = add(&host, &router, &mut spaces, &id, &mut acked);
        if run.code != 0 {
            assert_disk_full_error(&run, &id, &disk.mnt);
            first_failure = Some(id);
            break;
        }
    }
    let failed = first_failure.expect("the state file outgrew 12 KiB without an error");
    let state_len = std::fs::metadata(disk.mnt.join("ipam.json")).unwrap().len();
    println!(
        "with 12 KiB freed: {} ADDs acknowledged, then {failed} failed; ipam.json {state_len} bytes",
        acked.keys().filter(|id| id.starts_with("near-")).count()
    );
    serving(&router);
    // The router's state is exactly what was acknowledged (plus the bridge's address).
    let mine = |o: &BTreeMap<String, Vec<String>>| -> BTreeMap<String, String> {
        o.iter()
            .filter(|(id, _)| *id != "weave:expose")
            .map(|(id, a)| (id.clone(), a.join(",")))
            .collect()
    };
    assert_eq!(mine(&owned(&router)), acked);
    let ids: BTreeSet<String> = acked.keys().cloned().collect();
    assert_eq!(
        attachment_ids(&router).into_iter().collect::<BTreeSet<_>>(),
        ids
    );
    // The failed DEL of disk-0 removed its interfaces before the release failed.
    assert_eq!(host_veths(&host).len(), acked.len() - 1);

    // Space back: kill -9 and restart; every acknowledged allocation and attachment is there.
    free(&disk.mnt, u64::MAX);
    router.kill9();
    router.spawn();
    assert_eq!(mine(&owned(&router)), acked, "after kill -9 and restart");
    assert_eq!(
        attachment_ids(&router).into_iter().collect::<BTreeSet<_>>(),
        ids
    );
    // The failed ones now succeed with fresh, unique addresses; DEL works again.
    for id in [full_failed.as_str(), failed.as_str()] {
        let (_, ns) = spaces.iter().find(|(i, _)| i == id).unwrap();
        let run = weave_net("ADD", &host, id, ns);
        assert_eq!(run.code, 0, "{id} after freeing space: {run:?}");
        let ip = run.json()["ips"][0]["address"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(!acked.values().any(|a| *a == ip), "{ip} handed out twice");
        acked.insert(id.to_string(), ip);
    }
    let run = weave_net("DEL", &host, "disk-0", &spaces[0].1);
    assert_eq!(run.code, 0, "{run:?}");
    acked.remove("disk-0");
    assert_eq!(mine(&owned(&router)), acked);
    serving(&router);
    drop(router);
}
