//! Whole routers (IPAM service, mesh, HTTP API, sweep) in this one test process, without
//! root: each on 127.0.0.1 ephemeral ports with its own data dir and the in-memory data plane.
//! They test the HTTP API's behaviour and its error mapping (statuses, texts, the typed
//! client's error kinds) and what the router tells the data plane; the namespace tests
//! (`router_api`, `multihost_3`, ...) keep what touches the kernel.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use weave::api::Client;
use weave::daemon::Daemon;
use weave::dataplane::memory::MemoryDataPlane;
use weave::ipam::ring::InitMode;
use weave::router::Config;
use weave::ErrorKind;

/// One router of the test, stopped (its serve task ends) when dropped.
struct Node {
    name: String,
    http: SocketAddr,
    status: SocketAddr,
    mesh: SocketAddr,
    plane: Arc<MemoryDataPlane>,
    datadir: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Stops serving and waits until the mesh and the listeners are down.
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.served.take() {
            t.await.unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn config(i: u8, dir: &std::path::Path, peers: &[SocketAddr], init: InitMode) -> Config {
    let mut c = Config::new(dir.join("weave"));
    c.name = Some(format!("02:00:00:00:00:{i:02x}"));
    c.nickname = format!("n{i}");
    c.http_addr = Some("127.0.0.1:0".parse().unwrap());
    c.status_addr = Some("127.0.0.1:0".parse().unwrap());
    c.port = 0;
    c.mesh_ip = "127.0.0.1".parse().unwrap();
    c.peers = peers.iter().map(|p| p.to_string()).collect();
    c.mesh.fast_timers = true;
    c.ipalloc_init = init;
    c
}

async fn start(c: Config, dir: tempfile::TempDir) -> Node {
    start_on(c, dir, Arc::new(MemoryDataPlane::new())).await
}

/// A router over an existing data plane (a restart finds what the last run left there).
async fn start_on(c: Config, dir: tempfile::TempDir, plane: Arc<MemoryDataPlane>) -> Node {
    let name = c.name.clone().unwrap();
    let datadir = c.datadir.clone();
    let d = Daemon::start(c, Some(plane.clone()))
        .await
        .expect("start router");
    let (http, status, mesh) = (
        d.http_addr().unwrap(),
        d.status_addr().unwrap(),
        d.mesh_addr(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(d.serve(async move {
        let _ = stopped.await;
    }));
    Node {
        name,
        http,
        status,
        mesh: SocketAddr::new("127.0.0.1".parse().unwrap(), mesh.port()),
        plane,
        datadir,
        stop: Some(stop),
        served: Some(served),
        _dir: dir,
    }
}

/// A router alone (quorum 1: it forms the ring by itself).
async fn lone(i: u8) -> Node {
    let dir = tempfile::tempdir().unwrap();
    start(config(i, dir.path(), &[], InitMode::consensus(1)), dir).await
}

/// `n` routers, each connected to the ones before it, electing the ring together.
async fn cluster(n: u8) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for i in 1..=n {
        let dir = tempfile::tempdir().unwrap();
        let peers: Vec<SocketAddr> = nodes.iter().map(|x| x.mesh).collect();
        let c = config(i, dir.path(), &peers, InitMode::consensus(n as usize));
        nodes.push(start(c, dir).await);
    }
    nodes
}

/// The crate's blocking client, off the runtime's workers.
async fn with_client<T: Send + 'static>(
    addr: SocketAddr,
    f: impl FnOnce(Client) -> T + Send + 'static,
) -> T {
    tokio::task::spawn_blocking(move || f(Client::new(&addr.to_string())))
        .await
        .unwrap()
}

/// One request: (status, body).
async fn req(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let (m, p, b) = (
        method.to_string(),
        path.to_string(),
        body.map(|s| s.as_bytes().to_vec()),
    );
    with_client(addr, move |c| {
        c.request(&m, &p, b.as_deref())
            .unwrap_or_else(|e| panic!("{m} {p}: {e}"))
    })
    .await
}

async fn expect(n: &Node, method: &str, path: &str, body: Option<&str>, code: u16, text: &str) {
    let got = req(n.http, method, path, body).await;
    assert_eq!(got, (code, text.to_string()), "{method} {path}");
}

/// Polls `f` every 50 ms until it holds, for at most 20 s.
async fn eventually<F: Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every test ends within this bound, whatever happens.
async fn bounded(test: impl Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(90), test)
        .await
        .expect("test did not finish within 90 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipam_paths_answer_weaves_texts_and_statuses() {
    bounded(async {
        let r = lone(1).await;
        expect(&r, "POST", "/ip/c1", None, 200, "10.32.0.1/12").await;
        expect(&r, "POST", "/ip/c1", None, 200, "10.32.0.1/12").await;
        expect(&r, "POST", "/ip/c2", None, 200, "10.32.0.2/12").await;
        expect(&r, "GET", "/ip/c1", None, 200, "10.32.0.1/12").await;
        expect(&r, "GET", "/ip/nobody", None, 200, "").await;
        expect(&r, "POST", "/ip/c1/10.40.0.0/16", None, 200, "10.40.0.1/16").await;
        expect(
            &r,
            "GET",
            "/ip/c1/10.32.0.0/12",
            None,
            200,
            "10.32.0.1/12 10.40.0.1/16",
        )
        .await;
        let bits = "invalid subnet - bits after network prefix are not all zero: 10.40.0.1/16";
        expect(&r, "POST", "/ip/c3/10.40.0.1/16", None, 400, bits).await;
        let oob = "range 192.168.0.0/24 out of bounds: 10.32.0.0/12";
        expect(&r, "POST", "/ip/c3/192.168.0.0/24", None, 400, oob).await;
        expect(&r, "PUT", "/ip/c4/10.32.0.9/12", None, 204, "").await;
        let owned = "Unable to claim: address 10.32.0.9 is already owned by c4";
        expect(&r, "PUT", "/ip/c5/10.32.0.9/12", None, 400, owned).await;
        expect(&r, "PUT", "/ip/_/10.32.0.9/12", None, 204, "").await;
        expect(&r, "DELETE", "/ip/c2", None, 204, "").await;
        let none = "Delete: no addresses for c2";
        expect(&r, "DELETE", "/ip/c2", None, 400, none).await;
        expect(&r, "POST", "/ip/c6", None, 200, "10.32.0.2/12").await;
        let nf = "Unable to free: Free: address 10.32.0.99 not found for c1";
        expect(&r, "DELETE", "/ip/c1/10.32.0.99", None, 400, nf).await;
        expect(
            &r,
            "GET",
            "/ipinfo/defaultsubnet",
            None,
            200,
            "10.32.0.0/12",
        )
        .await;
        expect(&r, "GET", "/ring", None, 200, "").await;
        expect(&r, "GET", "/nope", None, 404, "unknown path").await;
        let method = "method PATCH not allowed on this path (allowed: GET, POST, DELETE)";
        expect(&r, "PATCH", "/ip/c1", None, 405, method).await;
        let (code, body) = req(r.http, "POST", "/ip/a%20b", None).await;
        assert_eq!(code, 400);
        assert!(body.starts_with("invalid container id \"a b\""), "{body}");
        let big = "x".repeat(64 * 1024 + 1);
        let (code, body) = req(r.http, "POST", "/connect", Some(&big)).await;
        assert_eq!(
            (code, body.as_str()),
            (413, "request body larger than 65536 bytes")
        );
        let (code, body) = req(r.http, "GET", "/ip", None).await;
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let ids: Vec<&str> = v["owned"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["containerid"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["c1", "c4", "c6"]);
        r.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typed_client_maps_answers_to_error_kinds() {
    bounded(async {
        let r = lone(1).await;
        let http = r.http;
        let errors = with_client(http, |c| {
            let bad = c.allocate("c1", Some("192.168.0.0/24".parse().unwrap()));
            let missing = c.request("GET", "/nope", None).map(|(s, _)| s);
            let not_found = c.unregister_attachment("c9", "eth0");
            let released = c.release("never-allocated");
            (bad, missing, not_found, released)
        })
        .await;
        let e = errors.0.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Router);
        assert_eq!(
            e.to_string(),
            "POST /ip/c1/192.168.0.0/24: router answered 400: range 192.168.0.0/24 out of bounds: 10.32.0.0/12"
        );
        assert_eq!(errors.1.unwrap(), 404, "request() hands back any status");
        // An absent attachment is fine (204), an absent allocation is Ok(false).
        errors.2.unwrap();
        assert!(!errors.3.unwrap());
        // A router that is gone: transient, not a refusal.
        r.stop().await;
        let e = with_client(http, |c| c.allocate("c1", None))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TryAgainLater);
        assert!(
            e.to_string()
                .starts_with(&format!("POST /ip/c1: connect {http}: ")),
            "{e}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quorum_an_allocation_answers_503_within_the_bound() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(1, dir.path(), &[], InitMode::consensus(3));
        c.alloc_wait = Duration::from_millis(300);
        let r = start(c, dir).await;
        let started = std::time::Instant::now();
        let (code, body) = req(r.http, "POST", "/ip/c1", None).await;
        assert_eq!(
            (code, body.as_str()),
            (
                503,
                "IP allocation not ready: awaiting consensus (quorum: 2, known: 1)"
            )
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        let e = with_client(r.http, |c| c.allocate("c1", None))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TryAgainLater);
        assert!(e.to_string().contains("router answered 503"), "{e}");
        let (code, status) = req(r.http, "GET", "/status", None).await;
        assert_eq!(code, 200);
        assert!(
            status.contains("Status: awaiting consensus (quorum: 2, known: 1)"),
            "{status}"
        );
        r.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expose_and_hide_reach_the_data_plane() {
    bounded(async {
        let r = lone(1).await;
        expect(&r, "POST", "/ip/weave:expose", None, 200, "10.32.0.1/12").await;
        expect(&r, "POST", "/expose/10.32.0.1/12", None, 204, "").await;
        expect(&r, "POST", "/expose/10.32.0.1/12", None, 204, "").await;
        let s = r.plane.state();
        assert_eq!(s.bridge, vec!["10.32.0.1/12".parse().unwrap()]);
        assert!(s.nat.contains(&"10.32.0.1/12".parse().unwrap()));
        expect(
            &r,
            "POST",
            "/expose/10.33.0.1/16?skipNAT=true",
            None,
            204,
            "",
        )
        .await;
        let s = r.plane.state();
        assert_eq!(s.bridge.len(), 2);
        assert!(!s.nat.contains(&"10.33.0.1/16".parse().unwrap()));
        expect(&r, "DELETE", "/expose/10.32.0.1/12", None, 204, "").await;
        assert_eq!(
            r.plane.state().bridge,
            vec!["10.33.0.1/16".parse().unwrap()]
        );
        let (code, body) = req(r.http, "POST", "/expose/10.33.0.x/16", None).await;
        assert_eq!(code, 400);
        assert!(body.starts_with("unable to parse ip addr"), "{body}");
        r.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_listener_is_read_only_and_the_pages_render() {
    bounded(async {
        let r = lone(1).await;
        expect(&r, "POST", "/ip/c1", None, 200, "10.32.0.1/12").await;
        let (code, status) = req(r.status, "GET", "/status", None).await;
        assert_eq!(code, 200);
        for line in [
            "        Service: router\n",
            &format!("           Name: {}(n1)\n", r.name),
            "    Connections: 0 (0 established, 0 pending, 0 retrying, 0 failed, 0 connecting)\n",
            "        Service: ipam\n",
            "         Status: ready\n",
        ] {
            assert!(status.contains(line), "missing {line:?} in\n{status}");
        }
        let ipam_line = format!(
            "{:<37}  1048576 IPs (100.0% of total) (1 active)\n",
            format!("{}(n1)", r.name)
        );
        assert_eq!(
            req(r.status, "GET", "/status/ipam", None).await,
            (200, ipam_line)
        );
        let (code, body) = req(r.status, "GET", "/report", None).await;
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["Router"]["Name"], r.name.as_str());
        assert_eq!(v["Router"]["Port"], r.mesh.port());
        assert_eq!(v["IPAM"]["ActiveIPs"], 1);
        assert_eq!(v["DataDir"], r.datadir.display().to_string());
        let (code, m) = req(r.status, "GET", "/metrics", None).await;
        assert_eq!(code, 200);
        assert!(m.contains("weave_ips{state=\"local-used\"} 1\n"), "{m}");
        for (method, path) in [("POST", "/ip/c2"), ("DELETE", "/peer"), ("GET", "/ip/c1")] {
            assert_eq!(
                req(r.status, method, path, None).await,
                (404, "unknown path".to_string()),
                "{method} {path} on the status listener"
            );
        }
        r.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_forget_persist_targets() {
    bounded(async {
        let r = lone(1).await;
        let msg = "invalid peer name \"x:y\", should be host[:port]\ninvalid peer name \"a b\", should be host[:port]";
        expect(&r, "POST", "/connect", Some("peer=x%3Ay&peer=a+b"), 400, msg).await;
        expect(&r, "POST", "/connect", Some("peer=192.0.2.7%3A6783"), 200, "").await;
        expect(&r, "GET", "/status/targets", None, 200, "192.0.2.7:6783\n").await;
        expect(&r, "POST", "/connect", Some("peer=h1&replace=true"), 200, "").await;
        expect(&r, "GET", "/status/targets", None, 200, "h1\n").await;
        let saved = std::fs::read_to_string(r.datadir.join("targets.json")).unwrap();
        assert_eq!(serde_json::from_str::<Vec<String>>(&saved).unwrap(), ["h1"]);
        expect(&r, "POST", "/forget", Some("peer=h1"), 200, "").await;
        expect(&r, "GET", "/status/targets", None, 200, "").await;
        r.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_routers_elect_a_ring_and_allocate_uniquely() {
    bounded(async {
        let nodes = cluster(3).await;
        // The mesh's live peers reach every data plane.
        for n in &nodes {
            eventually("two peers in the data plane", || async {
                n.plane.peers().len() == 2
            })
            .await;
        }
        let mut tasks = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            for k in 0..10 {
                let http = n.http;
                tasks.push(tokio::spawn(async move {
                    req(http, "POST", &format!("/ip/c{i}-{k}"), None).await
                }));
            }
        }
        let mut addrs = std::collections::BTreeSet::new();
        for t in tasks {
            let (code, body) = t.await.unwrap();
            assert_eq!(code, 200, "{body}");
            assert!(addrs.insert(body.clone()), "{body} handed out twice");
        }
        assert_eq!(addrs.len(), 30);
        // Every router answers for every peer, and the ring is split among all three.
        let (code, peers) = req(nodes[0].http, "GET", "/status/peers", None).await;
        assert_eq!(code, 200);
        for n in &nodes {
            assert!(peers.contains(&n.name), "{peers}");
        }
        let carried = nodes[0].plane.peers();
        assert!(carried.iter().all(|p| p.underlay.is_some()));
        for n in nodes {
            n.stop().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_hands_ranges_over_and_rmpeer_takes_them() {
    bounded(async {
        let mut nodes = cluster(2).await;
        eventually("connected", || async {
            nodes[0].plane.peers().len() == 1 && nodes[1].plane.peers().len() == 1
        })
        .await;
        let (code, body) = req(nodes[1].http, "POST", "/ip/c1", None).await;
        assert_eq!(code, 200, "{body}");
        // `weave reset` on the second router: its ranges go to the first.
        expect(&nodes[1], "DELETE", "/peer", None, 204, "").await;
        let leaver = nodes.pop().unwrap();
        let first = &nodes[0];
        eventually("ranges handed over", || async {
            let (_, t) = req(first.http, "GET", "/status/ipam", None).await;
            t.lines().count() == 1 && t.contains("1048576 IPs (100.0% of total)")
        })
        .await;
        leaver.stop().await;
        expect(
            first,
            "DELETE",
            "/peer/nobody",
            None,
            200,
            "0 IPs taken over from nobody\n",
        )
        .await;
        nodes.pop().unwrap().stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_are_recorded_with_allocations_and_swept_when_their_veth_goes() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(1, dir.path(), &[], InitMode::consensus(1));
        c.sweep_interval = Duration::from_millis(200);
        let r = start(c, dir).await;
        r.plane.add_link("vethwepl1");
        let att = |id: &str, veth: &str| {
            serde_json::json!({
                "container_id": id, "ifname": "eth0", "host_veth": veth,
                "mac": "", "ips": [], "netns": "/run/netns/x", "ipam_id": id
            })
            .to_string()
        };
        let a1 = att("c1", "vethwepl1");
        let a2 = att("c2", "vethwepl2");
        expect(&r, "POST", "/ip/c1", Some(&a1), 200, "10.32.0.1/12").await;
        expect(&r, "POST", "/ip/c2", Some(&a2), 200, "10.32.0.2/12").await;
        let (code, body) = req(r.http, "GET", "/cni/attachments", None).await;
        assert_eq!(code, 200);
        let list: Vec<weave::api::Attachment> = serde_json::from_str(&body).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].mac, "0e:57:0a:20:00:01");
        // c2's veth never existed: two sweeps later its address and record are gone.
        eventually("c2 swept", || async {
            req(r.http, "GET", "/ip/c2", None).await == (200, String::new())
        })
        .await;
        expect(&r, "GET", "/ip/c1", None, 200, "10.32.0.1/12").await;
        let (_, body) = req(r.http, "GET", "/cni/attachments", None).await;
        let list: Vec<weave::api::Attachment> = serde_json::from_str(&body).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].container_id, "c1");
        let bad = "invalid interface name \" \"";
        expect(&r, "DELETE", "/cni/attachments/c1/%20", None, 400, bad).await;
        expect(&r, "DELETE", "/cni/attachments/c1/eth0", None, 204, "").await;
        r.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_router_keeps_its_allocations_and_re_exposes() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        let unused = || tempfile::tempdir().unwrap();
        let r = start(config(1, &base, &[], InitMode::consensus(1)), unused()).await;
        expect(&r, "POST", "/ip/c1", None, 200, "10.32.0.1/12").await;
        expect(&r, "POST", "/ip/c2", None, 200, "10.32.0.2/12").await;
        expect(&r, "DELETE", "/ip/c1", None, 204, "").await;
        expect(&r, "POST", "/expose/10.32.0.7/12", None, 204, "").await;
        assert!(base.join("weave/weaver.pid").exists(), "pid file written");
        let plane = r.plane.clone();
        r.stop().await;
        assert!(!base.join("weave/weaver.pid").exists(), "pid file removed");
        // Same data dir and host: the allocations come back, and the bridge's address is
        // re-exposed and claimed for `weave:expose`.
        let c = config(1, &base, &[], InitMode::consensus(1));
        let r = start_on(c, unused(), plane).await;
        expect(&r, "GET", "/ip/c2", None, 200, "10.32.0.2/12").await;
        expect(&r, "GET", "/ip/c1", None, 200, "").await;
        eventually("bridge address claimed", || async {
            req(r.http, "GET", "/ip/weave:expose", None).await == (200, "10.32.0.7/12".into())
        })
        .await;
        expect(&r, "POST", "/ip/c3", None, 200, "10.32.0.1/12").await;
        r.stop().await;
    })
    .await;
}
