//! Several mesh routers in one process on 127.0.0.1 ephemeral ports, with short timers.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weave::mesh::{MeshConfig, MeshHandle, MeshRouter, MeshTimers, PeerName};

fn cfg(i: u64, targets: &[&MeshHandle]) -> MeshConfig {
    let name = PeerName::from_u64(0x0a00_0000_0000 + i).unwrap();
    let mut c = MeshConfig::new(name, &format!("h{i}"), "127.0.0.1:0".parse().unwrap());
    c.timers = MeshTimers::fast();
    c.targets = targets.iter().map(|h| h.local_addr().to_string()).collect();
    c
}

async fn start(c: MeshConfig) -> MeshHandle {
    MeshRouter::start(c).await.expect("start mesh")
}

/// Polls `f` until it holds, for at most 10 s.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn peers(h: &MeshHandle) -> usize {
    h.status().await.unwrap().peers.len()
}

/// The encrypted data path's keys `h` holds for `peer`.
fn live_keys(h: &MeshHandle, peer: PeerName) -> weave::sleeve::SessionKeys {
    let live = h.peers().borrow().clone();
    let p = live.iter().find(|p| p.name == peer).expect("peer is live");
    p.data_keys.clone().expect("data keys with a password")
}

async fn established(h: &MeshHandle) -> usize {
    let s = h.status().await.unwrap();
    s.connections
        .iter()
        .filter(|c| c.state == "established")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peers_converge_and_discover_each_other() {
    let a = start(cfg(1, &[])).await;
    let b = start(cfg(2, &[&a])).await;
    let c = start(cfg(3, &[&b])).await;
    for h in [&a, &b, &c] {
        eventually("3 peers everywhere", || async { peers(h).await == 3 }).await;
    }
    // Discovery: a and c connect although neither named the other.
    for h in [&a, &b, &c] {
        eventually("full mesh", || async { established(h).await == 2 }).await;
    }
    let live = a.peers().borrow().clone();
    assert_eq!(live.len(), 2);
    assert!(live
        .iter()
        .all(|p| p.direct && p.address == Some("127.0.0.1".parse().unwrap())));
    let st = a.status().await.unwrap();
    assert!(st.peers_text().contains("(h3)"), "{}", st.peers_text());
    assert!(st.connections_text().contains("unencrypted"));
    assert_eq!(st.encryption_text(), "disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_broadcast_and_routed_unicast_without_discovery() {
    let mut ca = cfg(1, &[]);
    ca.discovery = false;
    let a = start(ca).await;
    let mut cb = cfg(2, &[&a]);
    cb.discovery = false;
    let b = start(cb).await;
    let mut cc = cfg(3, &[&b]);
    cc.discovery = false;
    let c = start(cc).await;
    for h in [&a, &b, &c] {
        eventually("3 peers", || async { peers(h).await == 3 }).await;
    }
    assert_eq!(established(&a).await, 1, "a must not discover c");
    let mut rx_b = b.subscribe("ipam").await.unwrap();
    let mut rx_c = c.subscribe("ipam").await.unwrap();
    let mut rx_a = a.subscribe("ipam").await.unwrap();
    a.broadcast("ipam", b"hello all".to_vec()).await.unwrap();
    for rx in [&mut rx_b, &mut rx_c] {
        let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (m.from, m.broadcast, m.payload.as_slice()),
            (a.name(), true, &b"hello all"[..])
        );
    }
    // Unicast a -> c goes through b; c -> a comes back the same way.
    a.unicast(c.name(), "ipam", b"just c".to_vec())
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), rx_c.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (m.from, m.broadcast, m.payload),
        (a.name(), false, b"just c".to_vec())
    );
    c.unicast(a.name(), "ipam", vec![7]).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), rx_a.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.payload, vec![7]);
    // b saw only the broadcast, not the unicasts it relayed, and nothing twice.
    assert!(rx_b.try_recv().is_err());
    let unknown = PeerName::from_u64(0xffff).unwrap();
    assert!(a.unicast(unknown, "ipam", vec![]).await.is_err());
    assert!(a.broadcast("bad channel", vec![]).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_and_leaving_peers_are_dropped_and_restarts_reconnect() {
    let a = start(cfg(1, &[])).await;
    let b = start(cfg(2, &[&a])).await;
    let c = start(cfg(3, &[&a])).await;
    a.connect(vec![b.local_addr().to_string()], false)
        .await
        .unwrap();
    for h in [&a, &b, &c] {
        eventually("3 peers", || async { peers(h).await == 3 }).await;
    }
    // c leaves on purpose: the others drop it without waiting for a timeout.
    c.leave().await.unwrap();
    for h in [&a, &b] {
        eventually("c gone", || async { peers(h).await == 2 }).await;
    }
    c.shutdown().await;
    // b stops; a restart on the same port with the same name is found again by a's target.
    let b_addr = b.local_addr();
    let old_uid = b.status().await.unwrap().uid;
    b.shutdown().await;
    eventually("b gone", || async { peers(&a).await == 1 }).await;
    let mut cb = cfg(2, &[&a]);
    cb.targets.clear();
    cb.listen = b_addr;
    // The old listener closes asynchronously: retry the bind briefly.
    let mut b2 = None;
    for _ in 0..50 {
        match MeshRouter::start(cb.clone()).await {
            Ok(h) => {
                b2 = Some(h);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let b2 = b2.expect("restart b on its port");
    eventually("b back", || async {
        peers(&a).await == 2 && peers(&b2).await == 2
    })
    .await;
    // a may count b again as soon as b's new connection is up, from the entry of b's last
    // life it still held (unreachable until then); b's new entry, with its new uid, follows
    // in b's first topology message.
    eventually("b's new life in a's topology", || async {
        let st = a.status().await.unwrap();
        st.peers
            .iter()
            .any(|p| p.name == b2.name() && p.uid != old_uid)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_detected_dead() {
    let a = start(cfg(1, &[])).await;
    // A peer that completes the handshake and then says nothing at all.
    let mut s = tokio::net::TcpStream::connect(a.local_addr())
        .await
        .unwrap();
    let hello = weave::mesh::protocol::Hello {
        name: PeerName::from_u64(0x0b00_0000_0009).unwrap(),
        nickname: "mute".into(),
        uid: 1,
        conn_id: 1,
        listen_port: 1,
        encrypted: false,
    };
    let hs = weave::mesh::connection::handshake(&mut s, &hello, true, None, Duration::from_secs(2))
        .await;
    assert!(hs.is_ok());
    eventually("pending connection", || async {
        a.status().await.unwrap().connections.len() == 1
    })
    .await;
    eventually("silent peer dropped", || async {
        let st = a.status().await.unwrap();
        st.connections.is_empty() && st.termination_count == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_is_enforced() {
    let mut ca = cfg(1, &[]);
    ca.conn_limit = 1;
    ca.discovery = false;
    let a = start(ca).await;
    let b = start(cfg(2, &[&a])).await;
    eventually("b connected", || async { established(&a).await == 1 }).await;
    let c = start(cfg(3, &[&a])).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(a.status().await.unwrap().connections.len(), 1);
    let st = c.status().await.unwrap();
    assert_eq!(st.connections.len(), 1);
    assert_ne!(
        st.connections[0].state, "established",
        "{:?}",
        st.connections
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_encrypt_and_mismatches_are_refused() {
    let mut ca = cfg(1, &[]);
    ca.password = Some("right".into());
    let a = start(ca).await;
    let mut cb = cfg(2, &[&a]);
    cb.password = Some("right".into());
    let b = start(cb).await;
    eventually("encrypted connection", || async {
        established(&a).await == 1
    })
    .await;
    let st = b.status().await.unwrap();
    assert!(
        st.connections[0].info.starts_with("encrypted "),
        "{:?}",
        st.connections
    );
    assert_eq!(
        st.encryption_text(),
        "enabled (control plane and container traffic)"
    );
    // Both ends hold the same data-path keys for the pair, from the connection's handshake.
    // Each end sees the other live once it holds the other's entry naming the connection
    // established: one flush after its own end is.
    let (a_name, b_name) = (a.status().await.unwrap().name, st.name);
    eventually("each end to see the other live", || async {
        let live = |h: &MeshHandle, p: PeerName| h.peers().borrow().iter().any(|x| x.name == p);
        live(&a, b_name) && live(&b, a_name)
    })
    .await;
    let (ka, kb) = (live_keys(&a, b_name), live_keys(&b, a_name));
    assert_eq!(
        (ka.send, ka.recv, ka.session),
        (kb.recv, kb.send, kb.session)
    );

    let mut cw = cfg(3, &[&a]);
    cw.password = Some("wrong".into());
    cw.discovery = false;
    let wrong = start(cw).await;
    let mut cn = cfg(4, &[&a]);
    cn.discovery = false;
    let none = start(cn).await;
    eventually("refusals", || async {
        let w = wrong.status().await.unwrap();
        let n = none.status().await.unwrap();
        w.connections
            .iter()
            .any(|c| c.state == "failed" && c.info.contains("password mismatch"))
            && n.connections
                .iter()
                .any(|c| c.state == "failed" && c.info.contains("encrypted"))
    })
    .await;
    assert_eq!(peers(&a).await, 2);
    assert_eq!(peers(&wrong).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_senders_are_closed_and_the_router_lives_on() {
    let a = start(cfg(1, &[])).await;
    let inputs: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        [b"weave\x01\x02".to_vec(), vec![0xff, 0xff, 0xff, 0xff]].concat(),
        [b"weave\x01\x02".to_vec(), vec![0, 0, 0, 3, 1, 2, 3]].concat(),
        (0..5000).map(|i| (i * 7 % 251) as u8).collect(),
    ];
    for input in inputs {
        let mut s = tokio::net::TcpStream::connect(a.local_addr())
            .await
            .unwrap();
        let _ = s.write_all(&input).await;
        let mut buf = vec![0u8; 1024];
        // The router answers with its header and hello at most, then closes.
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "connection with garbage {:?} left open",
            &input[..8]
        );
    }
    let b = start(cfg(2, &[&a])).await;
    eventually("a still works", || async { established(&a).await == 1 }).await;
    drop(b);
    let _: SocketAddr = a.local_addr();
}
