//! The real `weaver`'s HTTP API under bad input: every request is validated (400/404/405/413
//! with a reason), nothing invalid reaches IPAM, and clients that are not local are refused
//! even when the API is bound to every address.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One raw HTTP/1.1 request (the target sent exactly as given); `None` when the server closed
/// the connection without answering.
fn raw(ns: &str, addr: &str, method: &str, target: &str, body: &[u8]) -> Option<(u16, String)> {
    let (addr, method, target, body) = (
        addr.to_string(),
        method.to_string(),
        target.to_string(),
        body.to_vec(),
    );
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3))
            .expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        // The server may close early (refused client, or a 413 before the body is read).
        let _ = s
            .write_all(head.as_bytes())
            .and_then(|_| s.write_all(&body));
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        if out.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(&out).into_owned();
        let code = text
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .expect("status line");
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
        Some((code, body.unwrap_or_default()))
    })
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn every_input_is_validated_with_a_reason() {
    let host = Netns::new("hh");
    let router = Router::start(&host, &[]);
    let call = |method: &str, target: &str, body: &[u8]| {
        raw(&host.name, "127.0.0.1:6784", method, target, body).expect("an answer")
    };
    let long_id = format!("/ip/{}", "a".repeat(256));
    let cases: Vec<(&str, String, &[u8], u16, &str)> = vec![
        ("POST", long_id, b"", 400, "longer than 255 bytes"),
        (
            "POST",
            "/ip/a%20b".into(),
            b"",
            400,
            "invalid container id \"a b\"",
        ),
        ("POST", "/ip/a%2Fb".into(), b"", 400, "without '/'"),
        ("POST", "/ip/%00x".into(), b"", 400, "invalid container id"),
        ("DELETE", "/ip/".into(), b"", 400, "empty"),
        (
            "POST",
            "/ip/c/10.40.0.1/16".into(),
            b"",
            400,
            "bits after network prefix",
        ),
        (
            "POST",
            "/ip/c/10.40.0.0/31".into(),
            b"",
            400,
            "smaller than minimum size",
        ),
        (
            "POST",
            "/ip/c/10.40.0.0/99".into(),
            b"",
            400,
            "invalid CIDR address",
        ),
        (
            "POST",
            "/ip/c/10.40.0.0/+16".into(),
            b"",
            400,
            "invalid CIDR address",
        ),
        (
            "POST",
            "/ip/c/192.168.0.0/24".into(),
            b"",
            400,
            "out of bounds",
        ),
        (
            "PUT",
            "/ip/c/10.32.0.0/12".into(),
            b"",
            400,
            "network or broadcast",
        ),
        (
            "PUT",
            "/ip/c/10.32.0.1/0".into(),
            b"",
            400,
            "prefix length 0",
        ),
        (
            "POST",
            "/expose/10.32.0.0/12".into(),
            b"",
            400,
            "unable to parse ip addr",
        ),
        (
            "DELETE",
            "/ip/c/10.32.0".into(),
            b"",
            400,
            "invalid IP address",
        ),
        (
            "POST",
            "/ip/c".into(),
            b"{\"container_id\":",
            400,
            "decode attachment",
        ),
        (
            "POST",
            "/connect".into(),
            b"peer=a%20b",
            400,
            "invalid peer name",
        ),
        (
            "DELETE",
            "/cni/attachments/c/a%20b".into(),
            b"",
            400,
            "invalid interface name",
        ),
        ("GET", "/nope".into(), b"", 404, "unknown path"),
        ("GET", "/ip/a/b/c/d/e".into(), b"", 404, "unknown path"),
        ("PATCH", "/ip/c1".into(), b"", 405, "not allowed"),
        ("DELETE", "/status".into(), b"", 405, "allowed: GET"),
    ];
    for (method, target, body, code, reason) in &cases {
        let (got, text) = call(method, target, body);
        assert_eq!(got, *code, "{method} {target}: {text}");
        assert!(
            text.contains(reason),
            "{method} {target}: {text:?} lacks {reason:?}"
        );
    }
    let big = vec![b'x'; 70 * 1024];
    let (code, text) = call("POST", "/ip/big", &big);
    assert_eq!(code, 413, "{text}");

    // Nothing invalid reached IPAM, and the router still answers.
    let (code, owned) = call("GET", "/ip", b"");
    assert_eq!(code, 200);
    assert_eq!(owned.trim(), "{\n  \"owned\": []\n}", "{owned}");
    assert_eq!(call("GET", "/status", b"").0, 200);
    drop(router);
}

#[test]
#[cfg_attr(
    not(feature = "netns-tests"),
    ignore = "needs root: cargo test --features netns-tests"
)]
fn non_local_clients_are_refused_even_when_bound_wide() {
    let host = Netns::new("hn");
    let client = Netns::new("hc");
    let veth = format!("wvthn{}", std::process::id() % 100000);
    host.sh(&format!(
        "ip link add {veth} type veth peer name eth9 netns {} && ip addr add 192.0.2.1/24 dev {veth} && ip link set {veth} up",
        client.name
    ));
    client.sh("ip addr add 192.0.2.2/24 dev eth9 && ip link set eth9 up");
    let mut router = Router::start(&host, &[]);
    router.kill9();
    router.http_addr = "0.0.0.0:6784".into();
    router.spawn();

    // From another host: the connection is accepted by the kernel and closed unanswered.
    for _ in 0..3 {
        let got = raw(&client.name, "192.0.2.1:6784", "GET", "/status", b"");
        assert_eq!(got, None, "a non-local client got an answer");
        let got = raw(&client.name, "192.0.2.1:6784", "POST", "/ip/evil", b"");
        assert_eq!(got, None, "a non-local client got an answer");
    }
    // From the host itself, over loopback and over its own underlay address: served.
    assert_eq!(
        raw(&host.name, "127.0.0.1:6784", "GET", "/status", b"")
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        raw(&host.name, "192.0.2.1:6784", "GET", "/status", b"")
            .unwrap()
            .0,
        200
    );
    let (code, owned) = raw(&host.name, "127.0.0.1:6784", "GET", "/ip", b"").unwrap();
    assert_eq!(code, 200);
    assert!(!owned.contains("evil"), "{owned}");
    assert!(
        router.log().contains("refusing HTTP client 192.0.2.2"),
        "{}",
        router.log()
    );
}
