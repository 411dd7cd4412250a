//! The `weave` command: one clap tree over the router's HTTP client and the kernel.
//!
//! Data goes to stdout, messages and errors to stderr. Exit codes follow Weave's script:
//! 0 success, 1 failure or usage error, 4 when the router answered 404 (its "no such thing").

mod dns;
mod expose;
mod iptables;
mod launch;
mod query;
mod reset;
mod setup;

pub use setup::{install, SetupOptions, SetupReport};

use crate::api::Client;
use crate::error::Detail;
use crate::Error;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Weave Net: container networking for Apache Mesos and every CNI runtime.
#[derive(Debug, Parser)]
#[command(name = "weave", version = crate::VERSION, disable_version_flag = true)]
pub struct Cli {
    /// Router HTTP API address (`host:port`, `host` or `:port`).
    #[arg(long, global = true, env = "WEAVE_HTTP_ADDR", default_value = crate::DEFAULT_HTTP_ADDR)]
    pub http_addr: String,
    /// Directory holding the router's state, pid file and log.
    #[arg(
        long,
        global = true,
        env = "WEAVE_DATADIR",
        default_value = "/var/lib/weave"
    )]
    pub datadir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install the CNI plugins and network config.
    #[command(alias = "setup-cni")]
    Setup(SetupArgs),
    /// Start the router (`weaver`) in the background.
    Launch(Box<launch::LaunchArgs>),
    /// Stop the router; addresses, bridge and CNI files stay.
    Stop,
    /// Leave the cluster, stop the router and remove the bridge, veths, rules and state.
    Reset {
        /// Reset even though the router is not running to hand its addresses over.
        #[arg(long)]
        force: bool,
    },
    /// Show the router's status, or one part of it.
    Status {
        /// targets, connections, peers, ipam or dns.
        sub: Option<String>,
    },
    /// Put addresses on the bridge so the host can reach containers (NAT to the outside).
    Expose(expose::ExposeArgs),
    /// Take exposed addresses off the bridge and free them.
    Hide {
        /// `CIDR`, `ip:CIDR`, `net:CIDR` or `net:default` (the default).
        addrs: Vec<String>,
    },
    /// List the bridge's and every attached container's addresses.
    Ps,
    /// Add peers to connect to.
    Connect {
        /// Replace the current set of peers instead of adding to it.
        #[arg(long)]
        replace: bool,
        #[arg(required = true, value_name = "PEER")]
        peers: Vec<String>,
    },
    /// Stop trying to connect to peers.
    Forget {
        #[arg(required = true, value_name = "PEER")]
        peers: Vec<String>,
    },
    /// Take over the address ranges of dead peers (run on one host only).
    Rmpeer {
        #[arg(required = true, value_name = "PEER")]
        peers: Vec<String>,
    },
    /// Print the router's full state as JSON.
    Report,
    /// Give addresses a name in weaveDNS: IP... [CONTAINER] -h FQDN.
    #[command(disable_help_flag = true)]
    DnsAdd(dns::DnsArgs),
    /// Remove names: IP... [CONTAINER] [-h FQDN] (this host's records only).
    #[command(disable_help_flag = true)]
    DnsRemove(dns::DnsArgs),
    /// Print the addresses a name resolves to, from every host's records.
    DnsLookup {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Print the versions of this command and of the running router.
    Version,
}

/// Where `weave setup` installs.
#[derive(Debug, Clone, Args)]
pub struct SetupArgs {
    /// Directory of CNI plugin binaries.
    #[arg(long, default_value = "/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    /// Directory of CNI network configs.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
}

impl SetupArgs {
    fn options(&self) -> SetupOptions {
        SetupOptions {
            bin_dir: self.cni_bin_dir.clone(),
            conf_dir: self.cni_conf_dir.clone(),
        }
    }
}

/// A command's failure: the exit code and what to tell the user (may be empty).
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    /// A router that cannot be reached is "not running"; anything else (a 503 included: the
    /// router answered) is reported as is.
    fn from(e: Error) -> Failure {
        if e.detail() == Some(Detail::Unreachable) {
            not_running(&e)
        } else {
            Failure::new(1, e.to_string())
        }
    }
}

fn not_running(cause: &Error) -> Failure {
    if cause.errno() == Some(libc::ECONNREFUSED) {
        Failure::new(1, "weave is not running")
    } else {
        Failure::new(1, format!("weave is not running ({cause})"))
    }
}

pub type CliResult = std::result::Result<(), Failure>;

/// Entry point of the `weave` binary: parses `std::env::args` and returns the exit code.
pub fn main() -> i32 {
    run(std::env::args_os())
}

/// Parses `args` (program name first), runs the command and returns the exit code.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help is not an error; every usage error exits 1 as Weave's `usage` did.
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    match dispatch(cli) {
        Ok(()) => 0,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("{}", f.message);
            }
            f.code
        }
    }
}

fn dispatch(cli: Cli) -> CliResult {
    if let Command::Setup(args) = &cli.command {
        // Needs no router: works before the first launch.
        return setup::run(&args.options());
    }
    let http_addr = normalize_http_addr(&cli.http_addr);
    // Long-lived and not latency-bound: the shared hyper client.
    let client = Client::new(&http_addr)
        .over_shared_http()
        .map_err(|e| Failure::new(1, e.to_string()))?;
    let ctx = Ctx {
        client,
        http_addr,
        datadir: cli.datadir,
    };
    match cli.command {
        Command::Setup(args) => setup::run(&args.options()),
        Command::Launch(args) => launch::launch(&ctx, &args),
        Command::Stop => launch::stop(&ctx),
        Command::Reset { force } => reset::run(&ctx, force),
        Command::Status { sub } => query::status(&ctx, sub.as_deref()),
        Command::Expose(args) => expose::expose(&ctx, &args),
        Command::Hide { addrs } => expose::hide(&ctx, &addrs),
        Command::Ps => expose::ps(&ctx),
        Command::Connect { replace, peers } => query::connect(&ctx, &peers, replace),
        Command::Forget { peers } => query::forget(&ctx, &peers),
        Command::Rmpeer { peers } => query::rmpeer(&ctx, &peers),
        Command::Report => query::report(&ctx),
        Command::DnsAdd(a) => dns::add(&ctx, &a),
        Command::DnsRemove(a) => dns::remove(&ctx, &a),
        Command::DnsLookup { name } => dns::lookup(&ctx, &name),
        Command::Version => query::version(&ctx),
    }
}

/// What every command needs: the router client and where the router keeps its files.
pub(crate) struct Ctx {
    pub client: Client,
    /// Normalized `host:port`, passed to `weaver --http-addr` as well.
    pub http_addr: String,
    pub datadir: PathBuf,
}

/// `host` → `host:6784`, `:port` → `127.0.0.1:port`, like `WEAVE_HTTP_ADDR` in Weave.
pub fn normalize_http_addr(addr: &str) -> String {
    let addr = addr.trim();
    if let Some(port) = addr.strip_prefix(':') {
        format!("127.0.0.1:{port}")
    } else if addr.contains(':') {
        addr.to_string()
    } else if addr.is_empty() {
        crate::DEFAULT_HTTP_ADDR.to_string()
    } else {
        format!("{addr}:6784")
    }
}

/// Usage text of one sub-command, for errors found after parsing.
fn usage_of(sub: &str) -> String {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    cmd.build(); // gives sub-commands their `weave <sub>` bin name
    match cmd.find_subcommand_mut(sub) {
        Some(c) => c.render_usage().to_string(),
        None => cmd.render_usage().to_string(),
    }
}

/// Runs `f` on a fresh current-thread runtime (netlink needs one; the CLI needs no more).
fn block_on<F: std::future::Future>(f: F) -> std::result::Result<F::Output, Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(1, format!("start runtime: {e}")))?;
    Ok(rt.block_on(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_addr_forms() {
        assert_eq!(normalize_http_addr(":7000"), "127.0.0.1:7000");
        assert_eq!(normalize_http_addr("10.0.0.1"), "10.0.0.1:6784");
        assert_eq!(normalize_http_addr("127.0.0.1:6784"), "127.0.0.1:6784");
        assert_eq!(normalize_http_addr(""), "127.0.0.1:6784");
    }

    #[test]
    fn clap_tree_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn connect_requires_a_peer() {
        assert!(Cli::try_parse_from(["weave", "connect"]).is_err());
        let cli = Cli::try_parse_from(["weave", "connect", "--replace", "a", "b:6783"]).unwrap();
        match cli.command {
            Command::Connect { replace, peers } => {
                assert!(replace);
                assert_eq!(peers, ["a", "b:6783"]);
            }
            other => panic!("parsed as {other:?}"),
        }
    }
}
