//! `weave launch` and `weave stop`: the router runs as a detached `weaver` process found
//! next to the `weave` executable, logging to `<datadir>/weaver.log`.

use super::{CliResult, Ctx, Failure, SetupArgs};
use clap::Args;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `launch` waits for the router to answer `/status` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `stop` waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Args)]
pub struct LaunchArgs {
    /// This peer's name (a MAC-like `aa:bb:cc:dd:ee:ff`); derived by the router if absent.
    #[arg(long)]
    pub name: Option<String>,
    /// Human-friendly peer name (default: the host name).
    #[arg(long)]
    pub nickname: Option<String>,
    /// Range all peers allocate container addresses from.
    #[arg(long, alias = "iprange")]
    pub ipalloc_range: Option<String>,
    /// Subnet allocations come from when none is asked for.
    #[arg(long)]
    pub ipalloc_default_subnet: Option<String>,
    /// How the allocation ring is formed: `consensus[=N]`, `seed=<peer names>`, `observer`.
    #[arg(long)]
    pub ipalloc_init: Option<String>,
    /// Read-only status address.
    #[arg(long)]
    pub status_addr: Option<String>,
    /// MTU of the bridge and container interfaces.
    #[arg(long)]
    pub mtu: Option<u32>,
    /// Mesh TCP/UDP port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Control-plane password (default: $WEAVE_PASSWORD, which weaver reads itself).
    #[arg(long)]
    pub password: Option<String>,
    /// Do not connect to peers that other peers are connected to.
    #[arg(long)]
    pub no_discovery: bool,
    /// Most mesh connections (0: unlimited).
    #[arg(long)]
    pub conn_limit: Option<usize>,
    /// Comma-separated CIDRs of trusted networks.
    #[arg(long)]
    pub trusted_subnets: Option<String>,
    /// No DNS server on the bridge (names registered here still reach other routers).
    #[arg(long)]
    pub no_dns: bool,
    /// DNS domain (default weave.local.).
    #[arg(long)]
    pub dns_domain: Option<String>,
    /// TTL of local DNS answers in seconds (default 1).
    #[arg(long)]
    pub dns_ttl: Option<u32>,
    /// Upstream resolvers for other names (default /etc/resolv.conf).
    #[arg(long)]
    pub resolv_conf: Option<String>,
    /// Data path to other hosts: auto (routed to neighbours, VXLAN to others), vxlan, routed.
    #[arg(long)]
    pub dataplane: Option<String>,
    /// Do not install the CNI plugins and config first.
    #[arg(long)]
    pub no_cni_setup: bool,
    #[command(flatten)]
    pub setup: SetupArgs,
    /// Peers to connect to (`host[:port]`).
    #[arg(value_name = "PEER")]
    pub peers: Vec<String>,
}

impl LaunchArgs {
    /// The `weaver` command line for these flags (without `--datadir`/`--http-addr`).
    pub fn weaver_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut flag = |name: &str, value: Option<String>| {
            if let Some(v) = value {
                out.push(format!("--{name}={v}"));
            }
        };
        flag("name", self.name.clone());
        flag("nickname", self.nickname.clone());
        flag("ipalloc-range", self.ipalloc_range.clone());
        flag(
            "ipalloc-default-subnet",
            self.ipalloc_default_subnet.clone(),
        );
        flag("ipalloc-init", self.ipalloc_init.clone());
        flag("status-addr", self.status_addr.clone());
        flag("mtu", self.mtu.map(|m| m.to_string()));
        flag("port", self.port.map(|p| p.to_string()));
        flag("password", self.password.clone());
        flag("conn-limit", self.conn_limit.map(|n| n.to_string()));
        flag("trusted-subnets", self.trusted_subnets.clone());
        flag("dns-domain", self.dns_domain.clone());
        flag("dns-ttl", self.dns_ttl.map(|t| t.to_string()));
        flag("resolv-conf", self.resolv_conf.clone());
        flag("dataplane", self.dataplane.clone());
        if self.no_discovery {
            out.push("--no-discovery".into());
        }
        if self.no_dns {
            out.push("--no-dns".into());
        }
        out.extend(self.peers.iter().cloned());
        out
    }
}

pub(super) fn launch(ctx: &Ctx, args: &LaunchArgs) -> CliResult {
    if !args.no_cni_setup {
        super::setup::run(&args.setup.options())?;
    }
    let quick = quick_client(ctx);
    // A router that answers, or a live one from our pid file that is still starting.
    if quick.status(None).is_ok() || router_from_pid_file(ctx).is_some() {
        return Err(Failure::new(
            1,
            "weave is already running; you can stop it with 'weave stop'",
        ));
    }
    let weaver = sibling_executable("weaver")?;
    fs::create_dir_all(&ctx.datadir).map_err(|e| {
        Failure::new(
            1,
            format!("create directory {}: {e}", ctx.datadir.display()),
        )
    })?;
    let log_path = ctx.datadir.join("weaver.log");
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Failure::new(1, format!("open {}: {e}", log_path.display())))?;
    let log_err = log
        .try_clone()
        .map_err(|e| Failure::new(1, format!("open {}: {e}", log_path.display())))?;

    let mut cmd = Command::new(&weaver);
    cmd.arg(format!("--datadir={}", ctx.datadir.display()))
        .arg(format!("--http-addr={}", ctx.http_addr))
        .args(args.weaver_args())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Failure::new(1, format!("start {}: {e}", weaver.display())))?;
    wait_ready(ctx, &mut child, &log_path)?;

    let name = quick.report().ok().and_then(|r| {
        r.pointer("/Router/Name")
            .and_then(|n| n.as_str())
            .map(str::to_string)
    });
    println!("{}", name.unwrap_or_else(|| child.id().to_string()));
    Ok(())
}

/// Polls `/status` until 200; fails as soon as the router exits.
fn wait_ready(ctx: &Ctx, child: &mut Child, log_path: &Path) -> CliResult {
    let quick = quick_client(ctx);
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return Err(Failure::new(
                1,
                format!(
                    "The weave router has died. Consult {} for details.",
                    log_path.display()
                ),
            ));
        }
        if let Ok((200, _)) = quick.status(None) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Failure::new(
                1,
                format!(
                    "The weave router (pid {}) did not become ready within {}s; it is still \
                     running. Consult {} for details, or stop it with 'weave stop'.",
                    child.id(),
                    READY_TIMEOUT.as_secs(),
                    log_path.display()
                ),
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// A client for probes: a router that does not answer within a second is not ready.
fn quick_client(ctx: &Ctx) -> crate::api::Client {
    ctx.client
        .clone()
        .with_timeouts(Duration::from_millis(500), Duration::from_secs(1))
}

/// `name` in the directory of the running executable.
pub(super) fn sibling_executable(name: &str) -> Result<PathBuf, Failure> {
    let exe = std::env::current_exe()
        .map_err(|e| Failure::new(1, format!("find the weave executable: {e}")))?;
    let path = exe.parent().unwrap_or(Path::new("/")).join(name);
    if !path.is_file() {
        return Err(Failure::new(
            1,
            format!("find {name}: {} does not exist", path.display()),
        ));
    }
    Ok(path)
}

pub(super) fn stop(ctx: &Ctx) -> CliResult {
    match find_router(ctx) {
        Some(pid) => terminate(pid),
        None => {
            eprintln!("Weave is not running.");
            Ok(())
        }
    }
}

/// The router serving this netns: the pid it reports, else a live `weaver` from the pid file
/// that is in our network namespace.
pub(super) fn find_router(ctx: &Ctx) -> Option<i32> {
    let reported = quick_client(ctx)
        .report()
        .ok()
        .and_then(|r| r.get("Pid").and_then(|p| p.as_i64()))
        .map(|p| p as i32);
    reported
        .filter(|&p| p > 0 && alive(p))
        .or_else(|| router_from_pid_file(ctx))
}

/// A live `weaver` in our network namespace named by `<datadir>/weaver.pid` (a stale file
/// whose pid was reused by another process does not count).
fn router_from_pid_file(ctx: &Ctx) -> Option<i32> {
    let text = fs::read_to_string(ctx.datadir.join("weaver.pid")).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    (pid > 0 && alive(pid) && is_weaver(pid) && same_netns(pid)).then_some(pid)
}

/// SIGTERM, up to [`STOP_TIMEOUT`] to exit, then SIGKILL.
fn terminate(pid: i32) -> CliResult {
    // SAFETY: plain syscall; pid was checked to be a live weaver.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    if wait_gone(pid, STOP_TIMEOUT) {
        return Ok(());
    }
    eprintln!(
        "weave router (pid {pid}) did not stop within {}s; killing it",
        STOP_TIMEOUT.as_secs()
    );
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    if wait_gone(pid, Duration::from_secs(5)) {
        Ok(())
    } else {
        Err(Failure::new(
            1,
            format!("stop weave router (pid {pid}): still running after SIGKILL"),
        ))
    }
}

fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !alive(pid)
}

/// True if `pid` exists and is not a zombie (an exited router waiting to be reaped is gone).
pub(super) fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain ')'.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(
                stat[i + 1..].trim_start().chars().next(),
                Some('Z') | Some('X')
            ),
            None => true,
        },
        Err(_) => false,
    }
}

fn is_weaver(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim() == "weaver")
        .unwrap_or(false)
}

fn same_netns(pid: i32) -> bool {
    match (
        fs::read_link(format!("/proc/{pid}/ns/net")),
        fs::read_link("/proc/self/ns/net"),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weaver_args_pass_flags_and_peers() {
        use clap::Parser;
        let cli = super::super::Cli::try_parse_from([
            "weave",
            "launch",
            "--no-cni-setup",
            "--ipalloc-range",
            "10.40.0.0/16",
            "--mtu",
            "1400",
            "--ipalloc-init",
            "observer",
            "--nickname",
            "h1",
            "--dns-domain",
            "mesos.local",
            "--dataplane",
            "vxlan",
            "--no-dns",
            "10.0.0.2",
            "10.0.0.3:6783",
        ])
        .unwrap();
        let super::super::Command::Launch(args) = cli.command else {
            panic!("not launch")
        };
        assert!(args.no_cni_setup);
        assert_eq!(
            args.weaver_args(),
            [
                "--nickname=h1",
                "--ipalloc-range=10.40.0.0/16",
                "--ipalloc-init=observer",
                "--mtu=1400",
                "--dns-domain=mesos.local",
                "--dataplane=vxlan",
                "--no-dns",
                "10.0.0.2",
                "10.0.0.3:6783"
            ]
        );
    }

    #[test]
    fn own_process_is_alive_and_not_weaver() {
        let me = std::process::id() as i32;
        assert!(alive(me));
        assert!(!is_weaver(me));
        assert!(same_netns(me));
        assert!(!alive(i32::MAX));
    }
}
