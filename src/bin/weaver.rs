//! `weaver`: the router daemon (bridge, IPAM, expose/NAT, HTTP API on 127.0.0.1:6784).

use clap::Parser;
use ipnet::Ipv4Net;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use weave::router::{self, parse_ipalloc_init, Config};

#[derive(Parser, Debug)]
#[command(
    name = "weaver",
    version,
    about = "Weave Net router daemon",
    args_override_self = true
)]
struct Args {
    /// Peer name (MAC-like aa:bb:cc:dd:ee:ff); default: stored in the data dir, else random.
    #[arg(long)]
    name: Option<String>,
    /// Nickname shown next to the peer name (default: hostname).
    #[arg(long)]
    nickname: Option<String>,
    /// Range of addresses IPAM hands out (CIDR-aligned).
    #[arg(long, default_value = weave::DEFAULT_IPALLOC_RANGE)]
    ipalloc_range: Ipv4Net,
    /// Subnet used when a request names none (default: the whole range).
    #[arg(long)]
    ipalloc_default_subnet: Option<Ipv4Net>,
    /// Full control API listener ("" disables).
    #[arg(long, default_value = weave::DEFAULT_HTTP_ADDR)]
    http_addr: String,
    /// Read-only status listener ("" disables).
    #[arg(long, default_value = weave::DEFAULT_STATUS_ADDR)]
    status_addr: String,
    /// MTU of the weave bridge.
    #[arg(long, default_value_t = weave::DEFAULT_MTU)]
    mtu: u32,
    /// Where state (ipam.json, peername, ...) lives.
    #[arg(long, env = "WEAVE_DATADIR", default_value = "/var/lib/weave")]
    datadir: PathBuf,
    /// Mesh (control) port; VXLAN uses port+1.
    #[arg(long, default_value_t = 6783)]
    port: u16,
    /// Encrypt and authenticate the control plane with this password.
    #[arg(long, env = "WEAVE_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Do not connect to peers that other peers are connected to.
    #[arg(long)]
    no_discovery: bool,
    /// Most mesh connections (0: unlimited).
    #[arg(long, default_value_t = weave::mesh::DEFAULT_CONN_LIMIT)]
    conn_limit: usize,
    /// Comma-separated CIDRs of trusted networks: with a password, peers there use plain
    /// VXLAN instead of the encrypted path.
    #[arg(long, value_delimiter = ',')]
    trusted_subnets: Vec<ipnet::IpNet>,
    /// How the IP allocation ring is first created: consensus[=N], seed=<peer names>
    /// (comma-separated) or observer. Default: consensus over the peers given here.
    #[arg(long, default_value = "")]
    ipalloc_init: String,
    /// Longest an allocation waits for the ring or for space before answering 503 (ms).
    #[arg(long, default_value_t = 3000, hide = true)]
    ipalloc_wait_ms: u64,
    /// Frames per key on the encrypted path before it rekeys (tests).
    #[arg(long, env = "WEAVE_REKEY_AFTER_PACKETS", hide = true)]
    rekey_after_packets: Option<u64>,
    /// Short mesh timers (heartbeat 0.5 s, dead after 3 s, backoff up to 2 s): tests.
    #[arg(long, hide = true)]
    fast_mesh_timers: bool,
    /// Longest an inbound or outbound mesh handshake may take (ms); default 10000.
    #[arg(long, env = "WEAVE_MESH_HANDSHAKE_TIMEOUT_MS", hide = true)]
    mesh_handshake_timeout_ms: Option<u64>,
    /// No DNS server (the names registered here still reach other routers).
    #[arg(long)]
    no_dns: bool,
    /// Domain the DNS server answers for; other names go to the resolvers of --resolv-conf.
    #[arg(long, default_value = weave::dns::DEFAULT_DOMAIN)]
    dns_domain: String,
    /// TTL of local DNS answers, in seconds.
    #[arg(long, default_value_t = weave::dns::DEFAULT_TTL)]
    dns_ttl: u32,
    /// Where the upstream resolvers are listed.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// Longest wait for an upstream resolver before answering SERVFAIL (ms).
    #[arg(long, default_value_t = 2000)]
    dns_forward_timeout_ms: u64,
    /// Queries per second one source may send to the DNS server (0: no limit).
    #[arg(long, default_value_t = 2000.0)]
    dns_rate_limit: f64,
    /// Port of the DNS server on the bridge addresses.
    #[arg(long, default_value_t = 53, hide = true)]
    dns_port: u16,
    /// How container traffic reaches other hosts: auto (routed, without encapsulation, to
    /// peers on a directly connected subnet; VXLAN to the others), vxlan, or routed (only).
    #[arg(long, default_value = "auto")]
    dataplane: String,
    /// Peers to connect to (host[:port]).
    peers: Vec<String>,
}

/// The DNS server's flags, or `None` with `--no-dns`.
fn dns_flags(a: &Args) -> Result<Option<weave::dns::DnsFlags>, String> {
    if a.no_dns {
        return Ok(None);
    }
    let domain =
        weave::dns::name::normalize(&a.dns_domain).map_err(|e| format!("--dns-domain: {e}"))?;
    if !(a.dns_rate_limit >= 0.0 && a.dns_rate_limit.is_finite()) {
        return Err(format!(
            "--dns-rate-limit {}: want a number >= 0",
            a.dns_rate_limit
        ));
    }
    let limits = weave::dns::ratelimit::QueryLimits {
        per_source_rate: a.dns_rate_limit,
        per_source_burst: (a.dns_rate_limit * 2.0).max(1.0),
        ..Default::default()
    };
    Ok(Some(weave::dns::DnsFlags {
        domain,
        ttl: a.dns_ttl,
        resolv_conf: a.resolv_conf.clone(),
        forward_timeout: Duration::from_millis(a.dns_forward_timeout_ms.max(1)),
        limits,
        port: a.dns_port,
    }))
}

fn addr(flag: &str, s: &str) -> Result<Option<SocketAddr>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| format!("--{flag} {s:?}: want ip:port"))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "weave".into())
}

/// `WEAVE_SWEEP_INTERVAL_MS` (tests), else the default.
fn sweep_interval() -> Duration {
    std::env::var("WEAVE_SWEEP_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
        .unwrap_or(router::sweep::DEFAULT_INTERVAL)
}

fn config(a: Args) -> Result<Config, String> {
    let ipalloc_init =
        parse_ipalloc_init(&a.ipalloc_init, a.peers.len()).map_err(|e| e.to_string())?;
    let dns = dns_flags(&a)?;
    let dataplane = a
        .dataplane
        .parse()
        .map_err(|e: weave::Error| e.to_string())?;
    Ok(Config {
        dns,
        dataplane,
        name: a.name,
        nickname: a.nickname.unwrap_or_else(hostname),
        default_subnet: a.ipalloc_default_subnet.unwrap_or(a.ipalloc_range),
        ipalloc_range: a.ipalloc_range,
        http_addr: addr("http-addr", &a.http_addr)?,
        status_addr: addr("status-addr", &a.status_addr)?,
        mtu: a.mtu,
        datadir: a.datadir,
        port: a.port,
        peers: a.peers,
        mesh_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        ipalloc_init,
        alloc_wait: Duration::from_millis(a.ipalloc_wait_ms),
        sweep_interval: sweep_interval(),
        mesh: router::MeshFlags {
            password: a.password,
            discovery: !a.no_discovery,
            conn_limit: a.conn_limit,
            trusted_subnets: a.trusted_subnets.iter().map(|n| n.to_string()).collect(),
            fast_timers: a.fast_mesh_timers,
            handshake_timeout: a.mesh_handshake_timeout_ms.map(Duration::from_millis),
            rekey_after_packets: a.rekey_after_packets,
        },
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let cfg = match config(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weaver: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weaver: start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(weave::daemon::run(cfg, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("weaver: {e}");
            ExitCode::FAILURE
        }
    }
}
