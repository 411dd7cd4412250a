//! The `weave` binary as a user runs it: setup into temp dirs, usage errors, behaviour
//! without a router, and (root, `netns-tests`) launch/stop/expose/ps/reset against a real
//! `weaver` inside a throwaway `wvt-cli-*` network namespace.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const WEAVE: &str = env!("CARGO_BIN_EXE_weave");

/// Runs `cmd` to completion, killing it and failing the test if it takes longer than `limit`.
fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "{shown} took longer than {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A loopback port nobody listens on (bound then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `weave` with a router address nobody serves and a private data dir.
fn weave_offline(datadir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(WEAVE);
    cmd.env_remove("WEAVE_HTTP_ADDR")
        .env_remove("WEAVE_DATADIR")
        .arg(format!("--http-addr=127.0.0.1:{}", free_port()))
        .arg(format!("--datadir={}", datadir.display()))
        .args(args);
    run_bounded(cmd, Duration::from_secs(10))
}

fn setup(bin: &Path, conf: &Path) -> Output {
    let mut cmd = Command::new(WEAVE);
    cmd.arg("setup")
        .arg(format!("--cni-bin-dir={}", bin.display()))
        .arg(format!("--cni-conf-dir={}", conf.display()));
    run_bounded(cmd, Duration::from_secs(10))
}

fn built_binary(name: &str) -> PathBuf {
    Path::new(WEAVE).parent().unwrap().join(name)
}

/// One file for both readers: libcni runtimes read `plugins`; a Mesos agent reads the
/// top-level `type` (it skips files without one).
const EXPECTED_CONFLIST: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "weave",
  "type": "weave-net",
  "hairpinMode": true,
  "plugins": [
    {
      "name": "weave",
      "type": "weave-net",
      "hairpinMode": true
    },
    {
      "type": "portmap",
      "capabilities": {
        "portMappings": true
      },
      "snat": true
    }
  ]
}
"#;

#[test]
fn setup_installs_plugins_and_conflist() {
    let tmp = tempfile::tempdir().unwrap();
    let (bin, conf) = (
        tmp.path().join("opt/cni/bin"),
        tmp.path().join("etc/cni/net.d"),
    );
    let out = setup(&bin, &conf);
    assert!(out.status.success(), "setup failed: {}", stderr(&out));
    for name in ["weave-net", "weave-ipam"] {
        let installed = bin.join(name);
        let meta = fs::symlink_metadata(&installed).unwrap();
        assert!(meta.file_type().is_file(), "{name} is not a regular file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o755, "{name} mode");
        assert!(
            fs::read(&installed).unwrap() == fs::read(built_binary(name)).unwrap(),
            "{name} content differs"
        );
        assert!(
            !bin.join(format!("{name}.tmp")).exists(),
            "{name}.tmp left behind"
        );
        assert!(
            stdout(&out).contains(&installed.display().to_string()),
            "output: {}",
            stdout(&out)
        );
    }
    assert_eq!(
        fs::read_to_string(conf.join("10-weave.conflist")).unwrap(),
        EXPECTED_CONFLIST
    );
    let names: Vec<_> = fs::read_dir(&conf)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["10-weave.conflist"], "stray files in conf dir");
}

#[test]
fn setup_preserves_an_edited_conflist() {
    let tmp = tempfile::tempdir().unwrap();
    let (bin, conf) = (tmp.path().join("bin"), tmp.path().join("conf"));
    fs::create_dir_all(&conf).unwrap();
    let edited =
        r#"{"cniVersion":"0.4.0","name":"weave","plugins":[{"type":"weave-net","mtu":1200}]}"#;
    fs::write(conf.join("10-weave.conflist"), edited).unwrap();
    let out = setup(&bin, &conf);
    assert!(out.status.success(), "setup failed: {}", stderr(&out));
    assert_eq!(
        fs::read_to_string(conf.join("10-weave.conflist")).unwrap(),
        edited
    );
}

#[test]
fn setup_removes_only_weaves_own_legacy_conf() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    let (legacy, custom) = (tmp.path().join("legacy"), tmp.path().join("custom"));
    fs::create_dir_all(&legacy).unwrap();
    fs::create_dir_all(&custom).unwrap();
    fs::write(
        legacy.join("10-weave.conf"),
        "{\n  \"name\": \"weave\", \"type\": \"weave-net\"\n}\n",
    )
    .unwrap();
    let hand_written = r#"{"name":"weave","type":"weave-net","ipam":{"type":"weave-ipam"}}"#;
    fs::write(custom.join("10-weave.conf"), hand_written).unwrap();

    assert!(setup(&bin, &legacy).status.success());
    assert!(!legacy.join("10-weave.conf").exists(), "legacy conf kept");
    assert!(legacy.join("10-weave.conflist").exists());

    assert!(setup(&bin, &custom).status.success());
    assert_eq!(
        fs::read_to_string(custom.join("10-weave.conf")).unwrap(),
        hand_written
    );
}

#[test]
fn setup_is_idempotent_and_replaces_stale_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (bin, conf) = (tmp.path().join("bin"), tmp.path().join("conf"));
    fs::create_dir_all(&bin).unwrap();
    // A leftover temp file and an old (legacy, symlinked) plugin must be replaced.
    fs::write(bin.join("weave-net.tmp"), b"half written").unwrap();
    fs::write(tmp.path().join("weave-plugin-2.8.1"), b"old").unwrap();
    std::os::unix::fs::symlink(
        tmp.path().join("weave-plugin-2.8.1"),
        bin.join("weave-ipam"),
    )
    .unwrap();

    for round in 0..2 {
        let out = setup(&bin, &conf);
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
        for name in ["weave-net", "weave-ipam"] {
            let meta = fs::symlink_metadata(bin.join(name)).unwrap();
            assert!(
                meta.file_type().is_file(),
                "round {round}: {name} not a regular file"
            );
            assert!(fs::read(bin.join(name)).unwrap() == fs::read(built_binary(name)).unwrap());
            assert!(!bin.join(format!("{name}.tmp")).exists());
        }
        assert_eq!(
            fs::read_to_string(conf.join("10-weave.conflist")).unwrap(),
            EXPECTED_CONFLIST
        );
    }
    assert_eq!(
        fs::read(tmp.path().join("weave-plugin-2.8.1")).unwrap(),
        b"old",
        "symlink target was written through"
    );
}

#[test]
fn unknown_status_subcommand_fails_with_usage() {
    let tmp = tempfile::tempdir().unwrap();
    let out = weave_offline(tmp.path(), &["status", "bogus"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("Invalid 'weave status' sub-command: bogus"),
        "stderr: {err}"
    );
    assert!(err.contains("Usage:"), "no usage in: {err}");
    assert!(stdout(&out).is_empty());
}

#[test]
fn connect_without_peers_prints_usage() {
    let tmp = tempfile::tempdir().unwrap();
    let out = weave_offline(tmp.path(), &["connect"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("Usage: weave connect"),
        "stderr: {}",
        stderr(&out)
    );
}

#[test]
fn version_works_without_a_router() {
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = weave_offline(tmp.path(), &["version"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("weave {}\n", env!("CARGO_PKG_VERSION"))
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn status_without_a_router_says_not_running() {
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = weave_offline(tmp.path(), &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("weave is not running"),
        "stderr: {}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn stop_without_a_router_is_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = weave_offline(tmp.path(), &["stop"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(stderr(&out), "Weave is not running.\n");
}

#[test]
fn router_commands_without_a_router_fail() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &["report"][..],
        &["ps"],
        &["expose"],
        &["connect", "10.0.0.9"],
        &["rmpeer", "x"],
    ] {
        let out = weave_offline(tmp.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("weave is not running"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

/// A process whose name is `weaver` (a copy of `sleep`), killed on drop.
struct FakeRouter {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl FakeRouter {
    fn start() -> FakeRouter {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("weaver");
        fs::copy("/bin/sleep", &exe).unwrap();
        let child = Command::new(&exe)
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        FakeRouter { child, _dir: dir }
    }
}

impl Drop for FakeRouter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn stop_falls_back_to_the_pid_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut router = FakeRouter::start();
    fs::write(
        tmp.path().join("weaver.pid"),
        format!("{}\n", router.child.id()),
    )
    .unwrap();

    let launch = weave_offline(tmp.path(), &["launch", "--no-cni-setup"]);
    assert_eq!(launch.status.code(), Some(1));
    assert!(
        stderr(&launch).contains("weave is already running"),
        "stderr: {}",
        stderr(&launch)
    );

    let out = weave_offline(tmp.path(), &["stop"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let status = router.child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGTERM),
        "not stopped by SIGTERM: {status:?}"
    );
}

#[test]
fn stop_ignores_a_stale_pid_file() {
    let tmp = tempfile::tempdir().unwrap();
    // Our own pid: alive, but not a weaver; stop must not signal it.
    fs::write(
        tmp.path().join("weaver.pid"),
        std::process::id().to_string(),
    )
    .unwrap();
    let out = weave_offline(tmp.path(), &["stop"]);
    assert!(out.status.success());
    assert_eq!(stderr(&out), "Weave is not running.\n");
}

/// End-to-end against the real router, each test in its own network namespace.
#[path = "cli/e2e.rs"]
mod e2e;
