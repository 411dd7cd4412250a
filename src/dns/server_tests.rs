//! The server on loopback with real sockets: local answers, forwarding to a second server
//! of ours (a real upstream, not a mock), upstream down, bad input, floods, refusals.

use super::super::answer::a_addresses as addrs;
use super::*;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;

fn zone(pairs: &[(&str, &str)]) -> Arc<ZoneCell> {
    let z = Zone::from_pairs(pairs.iter().map(|(n, a)| (*n, a.parse().unwrap()))).unwrap();
    Arc::new(ZoneCell::new(z))
}

fn config() -> DnsConfig {
    let mut c = DnsConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
    c.upstream = Servers::Fixed(vec![]);
    c.forward_timeout = Duration::from_millis(400);
    c.tcp_idle = Duration::from_secs(1);
    c
}

fn query(name: &str, t: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m
}

async fn udp_raw(server: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(wait, s.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(n);
    Some(buf)
}

async fn udp_ask(server: SocketAddr, q: &Message) -> Message {
    let b = udp_raw(server, &q.to_vec().unwrap(), Duration::from_secs(5))
        .await
        .expect("an answer");
    Message::from_vec(&b).unwrap()
}

async fn tcp_ask(s: &mut TcpStream, q: &Message) -> Message {
    let b = q.to_vec().unwrap();
    let mut framed = (b.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&b);
    s.write_all(&framed).await.unwrap();
    let n = s.read_u16().await.unwrap() as usize;
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

#[tokio::test]
async fn answers_over_udp_and_tcp_and_sees_zone_changes() {
    let z = zone(&[("web.weave.local", "10.32.0.2")]);
    let srv = DnsServer::start(config(), z.clone()).await.unwrap();
    let at = srv.local_addrs()[0];
    let r = udp_ask(at, &query("web.weave.local.", RecordType::A)).await;
    assert_eq!(addrs(&r), ["10.32.0.2".parse::<Ipv4Addr>().unwrap()]);
    let mut t = TcpStream::connect(at).await.unwrap();
    // Two queries on one connection.
    for _ in 0..2 {
        let r = tcp_ask(&mut t, &query("web.weave.local.", RecordType::A)).await;
        assert_eq!(addrs(&r).len(), 1);
    }
    // The zone is swapped: the next query sees it.
    z.store(
        Zone::from_pairs([
            ("web.weave.local", "10.32.0.2".parse().unwrap()),
            ("web.weave.local", "10.32.0.3".parse().unwrap()),
        ])
        .unwrap(),
    );
    let r = udp_ask(at, &query("web.weave.local.", RecordType::A)).await;
    assert_eq!(addrs(&r).len(), 2);
    let m = srv.metrics();
    assert_eq!(m.udp_queries.load(Relaxed), 2);
    assert_eq!(m.tcp_queries.load(Relaxed), 2);
    assert_eq!(m.answered.load(Relaxed), 4);
}

#[tokio::test]
async fn forwards_other_names_to_the_upstream() {
    // The upstream is a second server of ours, authoritative for example.test.
    let up_zone = zone(&[("www.example.test", "192.0.2.80")]);
    let mut up_cfg = config();
    up_cfg.domain = "example.test".into();
    let up = DnsServer::start(up_cfg, up_zone).await.unwrap();
    let mut cfg = config();
    cfg.upstream = Servers::Fixed(vec![up.local_addrs()[0]]);
    let srv = DnsServer::start(cfg, zone(&[])).await.unwrap();
    let at = srv.local_addrs()[0];
    let q = query("www.example.test.", RecordType::A);
    let r = udp_ask(at, &q).await;
    assert_eq!(
        r.metadata.id, q.metadata.id,
        "the client's own ID comes back"
    );
    assert_eq!(addrs(&r), ["192.0.2.80".parse::<Ipv4Addr>().unwrap()]);
    let r = udp_ask(at, &query("nope.example.test.", RecordType::A)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    let mut t = TcpStream::connect(at).await.unwrap();
    let r = tcp_ask(&mut t, &query("www.example.test.", RecordType::A)).await;
    assert_eq!(addrs(&r).len(), 1);
    assert_eq!(srv.metrics().forwarded.load(Relaxed), 3);
    assert_eq!(srv.metrics().servfail.load(Relaxed), 0);
}

#[tokio::test]
async fn upstream_down_gives_servfail_within_the_timeout() {
    // A silent upstream (bound, never answers) and a closed port.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let closed = {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.local_addr().unwrap()
    };
    for upstream in [vec![silent.local_addr().unwrap()], vec![closed], vec![]] {
        let mut cfg = config();
        cfg.upstream = Servers::Fixed(upstream.clone());
        let srv = DnsServer::start(cfg, zone(&[])).await.unwrap();
        let at = srv.local_addrs()[0];
        let started = Instant::now();
        let r = udp_ask(at, &query("www.example.test.", RecordType::A)).await;
        let took = started.elapsed();
        assert_eq!(
            r.metadata.response_code,
            ResponseCode::ServFail,
            "{upstream:?}"
        );
        // The bound is the forward timeout (400 ms), with slack for a loaded machine.
        assert!(took < Duration::from_secs(3), "{upstream:?}: {took:?}");
        let mut t = TcpStream::connect(at).await.unwrap();
        let r = tcp_ask(&mut t, &query("www.example.test.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(srv.metrics().servfail.load(Relaxed), 2);
        // Local names are answered all the while.
        let r = udp_ask(at, &query("x.weave.local.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
}

#[tokio::test]
async fn bad_input_is_counted_and_never_stops_the_server() {
    let srv = DnsServer::start(config(), zone(&[("web.weave.local", "10.32.0.2")]))
        .await
        .unwrap();
    let at = srv.local_addrs()[0];
    let good = query("web.weave.local.", RecordType::A).to_vec().unwrap();
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 3);
    let mut long_label = good.clone();
    long_label[12] = 63 + 1;
    let mut oversized = good[..12].to_vec();
    oversized[5] = 1;
    for _ in 0..200 {
        oversized.extend_from_slice(&[63]);
        oversized.extend(std::iter::repeat_n(b'a', 63));
    }
    oversized.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut response = good.clone();
    response[2] |= 0x80;
    let cases: Vec<(&str, Vec<u8>, Option<ResponseCode>)> = vec![
        ("empty", vec![], None),
        ("short", vec![0xab; 5], None),
        ("truncated", truncated, Some(ResponseCode::FormErr)),
        ("label > 63", long_label, Some(ResponseCode::FormErr)),
        ("name > 255", oversized, Some(ResponseCode::FormErr)),
        ("a response", response, None),
        ("garbage", (0..=255u8).cycle().take(3000).collect(), None),
    ];
    for (what, bytes, want) in &cases {
        let got = udp_raw(at, bytes, Duration::from_millis(300)).await;
        match (want, got) {
            (None, None) => {}
            (Some(code), Some(b)) => {
                let r = Message::from_vec(&b).unwrap();
                assert_eq!(r.metadata.response_code, *code, "{what}");
            }
            (w, g) => {
                // Garbage with a readable header may get FORMERR; anything else is a bug.
                assert!(
                    *what == "garbage" && w.is_none(),
                    "{what}: want {w:?}, got {g:?}"
                );
            }
        }
    }
    // TCP: a length prefix promising more than is sent, then silence: the connection is
    // closed after the idle time, not held.
    let mut t = TcpStream::connect(at).await.unwrap();
    t.write_all(&[0x10, 0x00, 1, 2, 3]).await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(15), t.read_to_end(&mut rest))
        .await
        .expect("closed after the idle time")
        .unwrap();
    assert_eq!(n, 0);
    // Still serving.
    let r = udp_ask(at, &query("web.weave.local.", RecordType::A)).await;
    assert_eq!(addrs(&r).len(), 1);
    let m = srv.metrics();
    assert!(m.formerr.load(Relaxed) >= 3, "{}", m.render());
    assert!(m.dropped.load(Relaxed) >= 3, "{}", m.render());
}

#[tokio::test]
async fn a_flood_is_rate_limited_and_others_are_still_served() {
    let mut cfg = config();
    cfg.limits = QueryLimits {
        per_source_rate: 100.0,
        per_source_burst: 200.0,
        max_sources: 16,
    };
    let srv = DnsServer::start(cfg, zone(&[("web.weave.local", "10.32.0.2")]))
        .await
        .unwrap();
    let at = srv.local_addrs()[0];
    let flood = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let q = query("web.weave.local.", RecordType::A).to_vec().unwrap();
    for _ in 0..5_000 {
        flood.send_to(&q, at).await.unwrap();
    }
    // Another source (127.0.0.2) is not affected by the flood from 127.0.0.1.
    let other = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    other.send_to(&q, at).await.unwrap();
    let mut buf = vec![0u8; 1500];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), other.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let r = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(addrs(&r).len(), 1);
    // Let the server drain the flood.
    let m = srv.metrics();
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.udp_queries.load(Relaxed) < 5_001 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let limited = m.rate_limited.load(Relaxed);
    let answered = m.answered.load(Relaxed);
    println!("flood: {}", m.render());
    assert!(limited > 0, "{}", m.render());
    assert_eq!(answered + limited, m.udp_queries.load(Relaxed));
    assert!(answered <= 200 + 1 + 100 * 10, "{answered}");
}

#[tokio::test]
async fn sources_outside_the_served_networks_are_refused() {
    let mut cfg = config();
    cfg.allowed_sources = vec!["10.32.0.0/12".parse().unwrap()];
    let srv = DnsServer::start(cfg, zone(&[("web.weave.local", "10.32.0.2")]))
        .await
        .unwrap();
    let at = srv.local_addrs()[0];
    let r = udp_ask(at, &query("web.weave.local.", RecordType::A)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert!(r.answers.is_empty());
    let mut t = TcpStream::connect(at).await.unwrap();
    let r = tcp_ask(&mut t, &query("web.weave.local.", RecordType::A)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert_eq!(srv.metrics().refused_source.load(Relaxed), 2);
    assert_eq!(srv.metrics().answered.load(Relaxed), 0);
}

#[tokio::test]
async fn tcp_connections_are_capped() {
    let mut cfg = config();
    cfg.max_tcp_connections = 2;
    let srv = DnsServer::start(cfg, zone(&[("web.weave.local", "10.32.0.2")]))
        .await
        .unwrap();
    let at = srv.local_addrs()[0];
    let mut a = TcpStream::connect(at).await.unwrap();
    let mut b = TcpStream::connect(at).await.unwrap();
    tcp_ask(&mut a, &query("web.weave.local.", RecordType::A)).await;
    tcp_ask(&mut b, &query("web.weave.local.", RecordType::A)).await;
    let mut c = TcpStream::connect(at).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the third connection is closed at once");
    assert_eq!(srv.metrics().tcp_rejected.load(Relaxed), 1);
    drop(a);
    // A slot frees up once a connection ends.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut d = TcpStream::connect(at).await.unwrap();
        let q = query("web.weave.local.", RecordType::A).to_vec().unwrap();
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        d.write_all(&framed).await.unwrap();
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), d.read_u16()).await {
            break;
        }
        assert!(Instant::now() < deadline, "no slot freed");
    }
}

#[tokio::test]
async fn busy_address_is_an_error() {
    let srv = DnsServer::start(config(), zone(&[])).await.unwrap();
    let e = DnsServer::start(DnsConfig::new(srv.local_addrs()), zone(&[]))
        .await
        .err()
        .expect("port taken");
    assert!(e.to_string().starts_with("listen on udp 127.0.0.1:"), "{e}");
}

#[tokio::test]
async fn listeners_come_and_go_while_serving() {
    let mut cfg = config();
    cfg.listen = vec![];
    let srv = DnsServer::start(cfg, zone(&[("web.weave.local", "10.32.0.2")]))
        .await
        .unwrap();
    assert!(srv.local_addrs().is_empty());
    let a = srv.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let b = srv.listen("127.0.0.3:0".parse().unwrap()).await.unwrap();
    assert_eq!(srv.listen(a).await.unwrap(), a, "listening twice is fine");
    assert_eq!(srv.local_addrs().len(), 2);
    for at in [a, b] {
        let r = udp_ask(at, &query("web.weave.local.", RecordType::A)).await;
        assert_eq!(addrs(&r).len(), 1);
    }
    assert!(srv.unlisten(b.ip()));
    assert!(!srv.unlisten(b.ip()));
    assert_eq!(srv.local_addrs(), [a]);
    // Nothing answers there any more (the port is free again).
    assert!(udp_raw(
        b,
        &query("web.weave.local.", RecordType::A).to_vec().unwrap(),
        Duration::from_millis(300)
    )
    .await
    .is_none());
    // The aborted tasks drop the socket on their next turn: the port is free soon.
    let deadline = Instant::now() + Duration::from_secs(5);
    while UdpSocket::bind(b).await.is_err() {
        assert!(Instant::now() < deadline, "port {b} never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
