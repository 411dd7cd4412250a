//! Mesos `NetworkInfo.port_mappings` through the real `weave-net` plugin and router, with no
//! port-mapper plugin: a simulated host (`wvt-pm-h-*`) with its underlay 100.64.0.1/24 on a
//! veth to a "remote host" (`wvt-pm-r-*`, 100.64.0.2), containers in `wvt-pm-c-*`.
//! Listeners are real sockets inside the container namespaces that answer with their name
//! and remember who connected (so masquerading shows).

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HOST_IP: &str = "100.64.0.1";
const REMOTE_IP: &str = "100.64.0.2";

/// A host with a router and a remote peer on the underlay; dropped last-to-first.
struct Setup {
    router: Router,
    remote: Netns,
    host: Netns,
}

fn setup() -> Setup {
    let host = Netns::new("pm-h");
    let remote = Netns::new("pm-r");
    host.sh(&format!(
        "ip link add pmu0 type veth peer name pmu1 netns {r} && ip addr add {HOST_IP}/24 dev pmu0 \
         && ip link set pmu0 up",
        r = remote.name
    ));
    remote.sh(&format!(
        "ip addr add {REMOTE_IP}/24 dev pmu1 && ip link set pmu1 up"
    ));
    let router = Router::start(&host, &[]);
    Setup {
        router,
        remote,
        host,
    }
}

fn mesos_conf(mappings: Value) -> String {
    json!({
        "cniVersion": "0.2.0",
        "name": "weave",
        "type": "weave-net",
        "args": {"org.apache.mesos": {"network_info": {"name": "weave", "port_mappings": mappings}}}
    })
    .to_string()
}

fn plain_conf() -> String {
    json!({"cniVersion": "0.2.0", "name": "weave", "type": "weave-net"}).to_string()
}

fn add(host: &Netns, id: &str, c: &Netns, stdin: &str) -> (PluginRun, Duration) {
    let path = c.path();
    let env = cni_env("ADD", id, path.to_str().unwrap(), "eth0");
    let t = Instant::now();
    let r = run_plugin(host, plugin_bin("weave-net"), &env, stdin);
    (r, t.elapsed())
}

fn del(host: &Netns, id: &str, c: Option<&Netns>, stdin: &str) -> PluginRun {
    let path = c
        .map(|n| n.path().to_str().unwrap().to_string())
        .unwrap_or_default();
    let env = cni_env("DEL", id, &path, "eth0");
    run_plugin(host, plugin_bin("weave-net"), &env, stdin)
}

fn save(host: &Netns) -> String {
    host.sh("iptables-save")
}

fn ip4(r: &PluginRun) -> String {
    let ip = r.json()["ip4"]["ip"].as_str().unwrap().to_string();
    ip.split('/').next().unwrap().to_string()
}

/// TCP and UDP listeners inside a namespace, answering `name`; stopped on drop.
struct Listener {
    stop: Arc<AtomicBool>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn start(ns: &Netns, name: &str, tcp_port: u16, udp_port: u16) -> Listener {
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for udp in [false, true] {
            let file = std::fs::File::open(ns.path()).unwrap();
            let (stop, peers, name, ready) = (
                stop.clone(),
                peers.clone(),
                name.to_string(),
                ready_tx.clone(),
            );
            threads.push(std::thread::spawn(move || {
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                if udp {
                    let s = UdpSocket::bind(("0.0.0.0", udp_port)).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                    ready.send(()).unwrap();
                    let mut buf = [0u8; 64];
                    while !stop.load(Ordering::SeqCst) {
                        if let Ok((_, from)) = s.recv_from(&mut buf) {
                            peers.lock().unwrap().push(from);
                            let _ = s.send_to(name.as_bytes(), from);
                        }
                    }
                } else {
                    let l = TcpListener::bind(("0.0.0.0", tcp_port)).unwrap();
                    l.set_nonblocking(true).unwrap();
                    ready.send(()).unwrap();
                    while !stop.load(Ordering::SeqCst) {
                        match l.accept() {
                            Ok((mut s, from)) => {
                                peers.lock().unwrap().push(from);
                                let _ = s.write_all(name.as_bytes());
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(10)),
                        }
                    }
                }
            }));
        }
        for _ in 0..2 {
            ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        Listener {
            stop,
            peers,
            threads,
        }
    }

    fn last_peer(&self) -> Option<SocketAddr> {
        self.peers.lock().unwrap().last().copied()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// From inside `ns`: connect to `addr` over TCP and read the answer (Err: what failed).
fn tcp_get(ns: &str, addr: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out)
            .map_err(|e| format!("read: {e}"))?;
        Ok(out)
    })
}

fn udp_get(ns: &str, addr: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    in_ns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..4 {
            s.send_to(b"ping", addr).map_err(|e| format!("send: {e}"))?;
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        Err("no answer".to_string())
    })
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn mesos_port_mappings_reach_the_task() {
    let started = Instant::now();
    let s = setup();
    let mappings = json!([
        {"host_port": 8080, "container_port": 80, "protocol": "tcp"},
        {"host_port": 8053, "container_port": 53, "protocol": "udp"},
        {"host_port": 8081, "container_port": 80}
    ]);
    let c1 = Netns::new("pm-c");
    let (r, t_map) = add(&s.host, "pm-c1", &c1, &mesos_conf(mappings.clone()));
    assert_eq!(r.code, 0, "{r:?}");
    let c1_ip = ip4(&r);
    println!("ADD with 3 mappings: {t_map:?}, container {c1_ip}");
    let l1 = Listener::start(&c1, "c1", 80, 53);
    assert_eq!(
        s.host.sh("cat /proc/sys/net/ipv4/ip_forward").trim(),
        "1",
        "ADD with mappings turns forwarding on"
    );
    let saved = save(&s.host);
    let tagged = saved
        .lines()
        .filter(|l| l.contains("weave-net portmap pm-c1 eth0"))
        .count();
    println!("rules tagged for pm-c1: {tagged}");
    assert_eq!(tagged, 6, "{saved}");

    // From the remote host over the underlay: TCP (both mappings) and UDP.
    let hp = |p: u16| format!("{HOST_IP}:{p}");
    assert_eq!(tcp_get(&s.remote.name, &hp(8080)).as_deref(), Ok("c1"));
    println!("remote -> {}: c1 saw peer {:?}", hp(8080), l1.last_peer());
    assert_eq!(tcp_get(&s.remote.name, &hp(8081)).as_deref(), Ok("c1"));
    assert_eq!(udp_get(&s.remote.name, &hp(8053)).as_deref(), Ok("c1"));
    println!(
        "remote -> {} udp: c1 saw peer {:?}",
        hp(8053),
        l1.last_peer()
    );
    // From the host itself, to its underlay address; 127.0.0.1 is not mapped (documented).
    assert_eq!(tcp_get(&s.host.name, &hp(8080)).as_deref(), Ok("c1"));
    println!("host -> {}: c1 saw peer {:?}", hp(8080), l1.last_peer());
    let lo = tcp_get(&s.host.name, "127.0.0.1:8080");
    println!("host -> 127.0.0.1:8080: {lo:?} (not supported: no route_localnet)");
    assert!(lo.is_err(), "{lo:?}");

    // Another container on the same host, and the task itself (hairpin), via the host port.
    let c2 = Netns::new("pm-c");
    let (r, t_plain) = add(&s.host, "pm-c2", &c2, &plain_conf());
    assert_eq!(r.code, 0, "{r:?}");
    let c2_ip = ip4(&r);
    assert_eq!(tcp_get(&c2.name, &hp(8080)).as_deref(), Ok("c1"));
    let seen = l1.last_peer().unwrap();
    println!("c2 ({c2_ip}) -> {}: c1 saw peer {seen}", hp(8080));
    assert_ne!(seen.ip().to_string(), c2_ip, "hairpin must be masqueraded");
    assert_eq!(udp_get(&c2.name, &hp(8053)).as_deref(), Ok("c1"));
    assert_eq!(tcp_get(&c1.name, &hp(8080)).as_deref(), Ok("c1"));
    println!(
        "c1 -> itself via {}: ok, peer {:?}",
        hp(8080),
        l1.last_peer()
    );

    // Conflict: 8080/tcp is taken. The error names the owner; nothing of c3 remains.
    let c3 = Netns::new("pm-c");
    let before = s.host.links().len();
    let (r, _) = add(
        &s.host,
        "pm-c3",
        &c3,
        &mesos_conf(
            json!([{"host_port": 9090, "container_port": 90}, {"host_port": 8080, "container_port": 80}]),
        ),
    );
    println!(
        "conflicting ADD: code {} stdout {}",
        r.code,
        r.stdout.trim()
    );
    assert_ne!(r.code, 0);
    let err = r.json();
    assert_eq!(err["code"], 104, "{err}");
    assert_eq!(
        err["msg"],
        "map host port 8080/tcp: already mapped for container \"pm-c1 eth0\""
    );
    let saved = save(&s.host);
    assert!(!saved.contains("pm-c3"), "{saved}");
    assert!(!saved.contains("9090"), "{saved}");
    assert_eq!(s.host.links().len(), before, "c3's veth was removed");
    let owned = s.router.call(|c| c.request("GET", "/ip", None).unwrap().1);
    assert!(!owned.contains("pm-c3"), "{owned}");
    // UDP 8080 is a different port: no conflict.
    let (r, _) = add(
        &s.host,
        "pm-c3",
        &c3,
        &mesos_conf(json!([{"host_port": 8080, "container_port": 80, "protocol": "udp"}])),
    );
    assert_eq!(r.code, 0, "{r:?}");

    // Repeated ADD is idempotent: still 6 rules for c1.
    let (r, _) = add(&s.host, "pm-c1", &c1, &mesos_conf(mappings.clone()));
    assert_eq!(r.code, 0, "{r:?}");
    let n = save(&s.host)
        .lines()
        .filter(|l| l.contains("weave-net portmap pm-c1 eth0"))
        .count();
    assert_eq!(n, 6);

    // DEL removes exactly c1's rules; again with no netns is fine.
    let r = del(&s.host, "pm-c1", Some(&c1), &mesos_conf(mappings.clone()));
    assert_eq!(r.code, 0, "{r:?}");
    let saved = save(&s.host);
    assert!(!saved.contains("pm-c1"), "{saved}");
    assert!(saved.contains("weave-net portmap pm-c3 eth0"), "{saved}");
    let r = del(&s.host, "pm-c1", None, &mesos_conf(mappings));
    assert_eq!(r.code, 0, "{r:?}");
    let gone = tcp_get(&s.remote.name, &hp(8080));
    println!("remote -> {} after DEL: {gone:?}", hp(8080));
    assert!(gone.is_err());
    let r = del(&s.host, "pm-c3", None, "not json");
    assert_eq!(r.code, 0, "DEL with an unreadable config: {r:?}");
    assert!(!save(&s.host).contains("weave-net portmap"));
    drop(l1);
    println!(
        "ADD plain {t_plain:?} vs with mappings {t_map:?}; test took {:?}",
        started.elapsed()
    );
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn gc_removes_mappings_of_gone_containers_and_add_cost() {
    let s = setup();
    let c4 = Netns::new("pm-c");
    let c5 = Netns::new("pm-c");
    for (id, c, port) in [("pm-c4", &c4, 7070), ("pm-c5", &c5, 7071)] {
        let (r, _) = add(
            &s.host,
            id,
            c,
            &mesos_conf(json!([{"host_port": port, "container_port": 80}])),
        );
        assert_eq!(r.code, 0, "{r:?}");
    }
    let l5 = Listener::start(&c5, "c5", 80, 53);
    let gc = json!({
        "cniVersion": "1.1.0", "name": "weave", "type": "weave-net",
        "cni.dev/valid-attachments": [{"containerID": "pm-c5", "ifname": "eth0"}]
    })
    .to_string();
    let r = run_plugin(
        &s.host,
        plugin_bin("weave-net"),
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")],
        &gc,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let saved = save(&s.host);
    assert!(!saved.contains("pm-c4"), "{saved}");
    assert_eq!(
        saved.lines().filter(|l| l.contains("pm-c5")).count(),
        2,
        "{saved}"
    );
    assert_eq!(
        tcp_get(&s.remote.name, "100.64.0.1:7071").as_deref(),
        Ok("c5")
    );
    assert!(tcp_get(&s.remote.name, "100.64.0.1:7070").is_err());
    drop(l5);

    // ADD cost with and without mappings (information, not an assertion).
    let n = 8;
    let mut plain = Vec::new();
    let mut mapped = Vec::new();
    let mut nss = Vec::new();
    for i in 0..n {
        let a = Netns::new("pm-c");
        let b = Netns::new("pm-c");
        let (r, t) = add(&s.host, &format!("pm-plain{i}"), &a, &plain_conf());
        assert_eq!(r.code, 0, "{r:?}");
        plain.push(t);
        let conf = mesos_conf(json!([{"host_port": 10000 + i, "container_port": 80}]));
        let (r, t) = add(&s.host, &format!("pm-map{i}"), &b, &conf);
        assert_eq!(r.code, 0, "{r:?}");
        mapped.push(t);
        nss.push((a, b));
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "ADD median over {n}: plain {:?}, with 1 mapping {:?} (each includes `ip netns exec`)",
        median(&mut plain),
        median(&mut mapped)
    );
    let t = Instant::now();
    for i in 0..n {
        let conf = mesos_conf(json!([{"host_port": 10000 + i, "container_port": 80}]));
        let r = del(&s.host, &format!("pm-map{i}"), None, &conf);
        assert_eq!(r.code, 0, "{r:?}");
    }
    println!("DEL with mappings: {:?} each", t.elapsed() / n as u32);
    assert!(!save(&s.host).contains("pm-map"));
}
