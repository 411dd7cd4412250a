//! The client against real servers on loopback: a scripted plain-TCP server (canned
//! answers, so redirects, chunking, auth and silence are exact) and, with the `tls`
//! feature, a TLS server whose self-signed certificate is made by the test.

use super::blocking;
use super::*;
use std::io::Write;
use std::net::TcpListener;

use weave_testkit::canned_http::{answer, closed_port, read_request, serve};

fn client() -> blocking::Client {
    blocking::Client::new(Client::new()).unwrap()
}

fn url(port: u16, path: &str) -> Url {
    Url::parse(&format!("http://127.0.0.1:{port}{path}"), 80).unwrap()
}

#[test]
fn url_forms() {
    let u = Url::parse("http://10.0.0.1:5050", 1).unwrap();
    assert_eq!(
        (u.scheme, u.host.as_str(), u.port, u.path.as_str()),
        (Scheme::Http, "10.0.0.1", 5050, "/")
    );
    assert_eq!(Url::parse("master.local", 5050).unwrap().port, 5050);
    assert_eq!(Url::parse("h:81/x?y", 1).unwrap().path, "/x?y");
    let s = Url::parse("https://m.example:8443/api", 1).unwrap();
    assert_eq!((s.scheme, s.port), (Scheme::Https, 8443));
    assert_eq!(Url::parse("https://m", 5050).unwrap().port, 5050);
    let v6 = Url::parse("[fd00::1]:6784", 1).unwrap();
    assert_eq!(
        (v6.host.as_str(), v6.authority()),
        ("fd00::1", "[fd00::1]:6784".into())
    );
    let j = u.join_location("//192.0.2.2:5051/api/v1").unwrap();
    assert_eq!(j.to_string(), "http://192.0.2.2:5051/api/v1");
    let j = s.join_location("//192.0.2.2:5051/api/v1").unwrap();
    assert_eq!(j.to_string(), "https://192.0.2.2:5051/api/v1");
    assert_eq!(
        u.join_location("/api/v1").unwrap().to_string(),
        "http://10.0.0.1:5050/api/v1"
    );
    assert!(Url::parse("ftp://x", 1).is_err());
    assert!(Url::parse("h:notaport", 1).is_err());
    assert!(Url::parse("http://", 1).is_err());
}

#[test]
fn chunked_body_is_reassembled_and_headers_are_sent_as_written() {
    let body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: y\r\n\r\n";
    let (port, server) = serve(vec![body.to_vec()]);
    let req = Request::post(url(port, "/api/v1?x=1"), &b"\x08\x01"[..])
        .header("Content-Type", "application/x-protobuf");
    let resp = client().fetch(&req, 1024).unwrap();
    assert_eq!(
        (resp.status(), resp.body.as_slice()),
        (200, &b"hello world"[..])
    );
    let raw = server.join().unwrap().remove(0);
    assert!(raw.starts_with("POST /api/v1?x=1 HTTP/1.1\r\n"), "{raw}");
    for h in [
        format!("\r\nHost: 127.0.0.1:{port}\r\n"),
        "\r\nContent-Type: application/x-protobuf\r\n".to_string(),
        "\r\nContent-Length: 2\r\n".to_string(),
        "\r\nConnection: close\r\n".to_string(),
    ] {
        assert!(raw.contains(&h), "{h:?} missing in {raw:?}");
    }
    assert!(raw.ends_with("\r\n\r\n\x08\x01"), "{raw:?}");
}

#[test]
fn basic_auth_follows_rfc7617() {
    let (port, server) = serve(vec![answer("204 No Content", &[], b"")]);
    let c = client().map(|c| c.with_basic_auth("Aladdin", "open sesame"));
    let resp = c.fetch(&Request::get(url(port, "/")), 1024).unwrap();
    assert_eq!(resp.status(), 204);
    let raw = server.join().unwrap().remove(0);
    // RFC 7617's own example.
    assert!(
        raw.contains("\r\nAuthorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n"),
        "{raw}"
    );
}

#[test]
fn follows_protocol_relative_307_and_reports_the_final_url() {
    let (leader_port, leader) = serve(vec![answer("200 OK", &[], b"leader")]);
    let location = format!("Location: //127.0.0.1:{leader_port}/api/v1");
    let (port, follower) = serve(vec![answer("307 Temporary Redirect", &[&location], b"")]);
    let req = Request::post(url(port, "/api/v1"), "call");
    let resp = client().fetch(&req, 1024).unwrap();
    assert_eq!(resp.text(), "leader");
    assert_eq!(resp.head.url, url(leader_port, "/api/v1"));
    // The body goes again to the new place (307 keeps method and body).
    assert!(leader.join().unwrap()[0].ends_with("\r\n\r\ncall"));
    assert_eq!(follower.join().unwrap().len(), 1);
}

#[test]
fn redirects_stop_at_the_limit() {
    let (port, server) = serve(vec![
        answer("307 Temporary Redirect", &["Location: /a"], b""),
        answer("307 Temporary Redirect", &["Location: /b"], b""),
    ]);
    let c = client().map(|c| c.with_redirects(1));
    let resp = c.fetch(&Request::get(url(port, "/")), 1024).unwrap();
    assert_eq!(
        (resp.status(), resp.head.header("location")),
        (307, Some("/b"))
    );
    assert_eq!(resp.head.url.path, "/a");
    server.join().unwrap();
}

#[test]
fn silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let c = client().map(|c| c.with_timeouts(Duration::from_secs(1), Duration::from_millis(300)));
    let start = std::time::Instant::now();
    let e = c
        .fetch(&Request::get(url(port, "/status")), 1024)
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(e.kind(), ErrorKind::TryAgainLater, "{e}");
    assert_eq!(
        e.to_string(),
        format!("GET http://127.0.0.1:{port}/status: no answer within 300ms")
    );
    drop(listener);
}

#[test]
fn refused_connection_is_try_again_later() {
    let port = closed_port();
    let e = client()
        .fetch(&Request::get(url(port, "/")), 1024)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TryAgainLater, "{e}");
    assert!(
        e.to_string().starts_with(&format!(
            "GET http://127.0.0.1:{port}/: connect to 127.0.0.1:{port}: "
        )),
        "{e}"
    );
}

#[test]
fn stream_pieces_arrive_before_the_end_and_reads_have_deadlines() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        read_request(&mut conn);
        conn.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n1\nA\r\n")
            .unwrap();
        // The second record only once the client has read the first.
        go_rx.recv().unwrap();
        conn.write_all(b"3\r\n1\nB\r\n0\r\n\r\n").unwrap();
    });
    let c = client();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (head, mut body) = c
        .send_until(&Request::post(url(port, "/api/v1"), "s"), deadline)
        .unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(&body.read_some(deadline).unwrap().unwrap()[..], b"1\nA");
    // Nothing more until the server sends: a short deadline times out, and the stream
    // stays usable afterwards.
    let short = std::time::Instant::now() + Duration::from_millis(100);
    let e = body.read_some(short).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TryAgainLater, "{e}");
    go_tx.send(()).unwrap();
    assert_eq!(&body.read_some(deadline).unwrap().unwrap()[..], b"1\nB");
    assert!(body.read_some(deadline).unwrap().is_none());
    server.join().unwrap();
}

#[test]
fn oversized_body_is_refused() {
    let (port, server) = serve(vec![answer("200 OK", &[], &[b'x'; 100])]);
    let e = client()
        .fetch(&Request::get(url(port, "/")), 10)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    assert!(
        e.to_string().ends_with("read body: larger than 10 bytes"),
        "{e}"
    );
    server.join().unwrap();
}

#[test]
fn garbage_answer_is_a_decode_error() {
    let (port, server) = serve(vec![b"SSH-2.0-OpenSSH\r\n\r\n".to_vec()]);
    let e = client()
        .fetch(&Request::get(url(port, "/")), 10)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode, "{e}");
    server.join().unwrap();
}

#[cfg(not(feature = "tls"))]
#[test]
fn https_without_the_feature_says_so() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let u = Url::parse(&format!("https://127.0.0.1:{port}/"), 1).unwrap();
    let e = client().fetch(&Request::get(u), 10).unwrap_err();
    assert!(e.to_string().contains("built without TLS"), "{e}");
}

#[cfg(feature = "tls")]
mod tls {
    use super::*;
    use std::sync::Arc;

    /// A TLS server for `localhost` with a fresh self-signed certificate: answers each
    /// connection with `answer` (401 unless the request carries `Authorization: Basic
    /// dXNlcjpwdw==`, i.e. user:pw, when `auth` is set). Returns the port, the
    /// certificate's PEM and the requests seen.
    fn tls_server(
        connections: usize,
        auth: bool,
    ) -> (
        u16,
        String,
        std::thread::JoinHandle<Vec<std::result::Result<String, String>>>,
    ) {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert_pem = key.cert.pem();
        let cert_der = key.cert.der().clone();
        let key_der =
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert_der], key_der)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = Arc::new(config);
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..connections {
                let (mut tcp, _) = listener.accept().unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
                let req = read_request(&mut tls);
                if req.is_empty() {
                    // The client gave up during the handshake (untrusted certificate).
                    seen.push(Err("no request".to_string()));
                    continue;
                }
                let ok = !auth || req.contains("\r\nAuthorization: Basic dXNlcjpwdw==\r\n");
                let reply = if ok {
                    answer("200 OK", &[], b"over tls")
                } else {
                    answer(
                        "401 Unauthorized",
                        &["WWW-Authenticate: Basic realm=\"t\""],
                        b"",
                    )
                };
                let _ = tls.write_all(&reply);
                let _ = tls.flush();
                conn.send_close_notify();
                let _ = conn.write_tls(&mut tcp);
                seen.push(Ok(req));
            }
            seen
        });
        (port, cert_pem, handle)
    }

    fn https(port: u16) -> Url {
        Url::parse(&format!("https://localhost:{port}/state"), 1).unwrap()
    }

    #[test]
    fn trusted_self_signed_server_answers_with_basic_auth() {
        let (port, pem, server) = tls_server(2, true);
        let tls = Tls::default().with_root_pem(pem.as_bytes()).unwrap();
        let c = client().map(|c| c.with_tls(tls));
        let resp = c.fetch(&Request::get(https(port)), 1024).unwrap();
        assert_eq!(resp.status(), 401);
        let c = c.map(|c| c.with_basic_auth("user", "pw"));
        let resp = c.fetch(&Request::get(https(port)), 1024).unwrap();
        assert_eq!((resp.status(), resp.text().as_str()), (200, "over tls"));
        let seen = server.join().unwrap();
        assert!(seen[1]
            .as_ref()
            .unwrap()
            .starts_with("GET /state HTTP/1.1\r\n"));
    }

    #[test]
    fn untrusted_certificate_is_refused() {
        let (port, _pem, server) = tls_server(1, false);
        let e = client()
            .fetch(&Request::get(https(port)), 1024)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("TLS handshake with localhost: invalid peer certificate"),
            "{e}"
        );
        assert!(server.join().unwrap()[0].is_err());
    }

    #[test]
    fn silent_tls_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let c =
            client().map(|c| c.with_timeouts(Duration::from_secs(1), Duration::from_millis(300)));
        let e = c.fetch(&Request::get(https(port)), 1024).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TryAgainLater, "{e}");
        drop(listener);
    }

    #[test]
    fn bad_pem_is_a_config_error() {
        let e = Tls::default().with_root_pem(b"not a pem").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    }
}
