//! The operator client against a scripted server on loopback: real TCP, canned answers, so
//! redirects, auth and errors are tested without a master.

use super::*;
use crate::proto::v1::master::Response;
use crate::proto::Encoding;
use prost::Message;
use std::net::TcpListener;
use std::time::Duration;

use weave_testkit::canned_http::{answer, serve};

fn health_answer(healthy: bool) -> Vec<u8> {
    let resp = Response {
        r#type: Some(response::Type::GetHealth as i32),
        get_health: Some(response::GetHealth { healthy }),
        ..Default::default()
    };
    answer(
        "200 OK",
        &["Content-Type: application/x-protobuf"],
        &resp.encode_to_vec(),
    )
}

#[test]
fn operator_call_sends_exact_content_type_and_basic_auth() {
    let (port, server) = serve(vec![health_answer(true)]);
    let client = OperatorClient::new(&format!("http://127.0.0.1:{port}"))
        .unwrap()
        .with_basic_auth("ops", "s3cret");
    assert!(client.get_health().unwrap());
    let reqs = server.join().unwrap();
    let req = &reqs[0];
    assert!(req.starts_with("POST /api/v1 HTTP/1.1\r\n"), "{req}");
    assert!(
        req.contains("\r\nContent-Type: application/x-protobuf\r\n"),
        "{req}"
    );
    assert!(
        req.contains("\r\nAccept: application/x-protobuf\r\n"),
        "{req}"
    );
    assert!(
        // base64("ops:s3cret")
        req.contains("\r\nAuthorization: Basic b3BzOnMzY3JldA==\r\n"),
        "{req}"
    );
    // The body is Call{type: GET_HEALTH}: field 1, varint 1.
    assert!(req.ends_with("\r\n\r\n\x08\x01"), "{req:?}");
}

#[test]
fn operator_follows_protocol_relative_leader_redirect() {
    let (leader_port, leader) = serve(vec![health_answer(true)]);
    let location = format!("Location: //127.0.0.1:{leader_port}/api/v1");
    let (port, follower) = serve(vec![answer("307 Temporary Redirect", &[&location], b"")]);
    let client = OperatorClient::new(&format!("127.0.0.1:{port}")).unwrap();
    assert!(client.get_health().unwrap());
    assert_eq!(follower.join().unwrap().len(), 1);
    assert_eq!(leader.join().unwrap().len(), 1);
}

#[test]
fn operator_errors_name_the_call_and_status() {
    let (port, server) = serve(vec![
        answer("503 Service Unavailable", &[], b"No leader elected"),
        answer(
            "401 Unauthorized",
            &["WWW-Authenticate: Basic realm=\"mesos-master-readwrite\""],
            b"",
        ),
        answer(
            "415 Unsupported Media Type",
            &[],
            b"Expecting 'Content-Type' of application/json or application/x-protobuf",
        ),
        answer("403 Forbidden", &[], b""),
    ]);
    let client = OperatorClient::new(&format!("127.0.0.1:{port}")).unwrap();
    let e = client.get_agents().unwrap_err();
    assert_eq!(
        e.to_string(),
        "GET_AGENTS: master answered 503: No leader elected"
    );
    assert_eq!(e.kind(), ErrorKind::TryAgainLater);
    let e = client.get_tasks().unwrap_err().to_string();
    assert_eq!(e, "GET_TASKS: master answered 401: Unauthorized (needs credentials: Basic realm=\"mesos-master-readwrite\"; pass --principal and --secret)");
    let e = client.get_flags().unwrap_err().to_string();
    assert!(
        e.starts_with("GET_FLAGS: master answered 415: Expecting 'Content-Type'"),
        "{e}"
    );
    let e = client.get_state().unwrap_err().to_string();
    assert_eq!(
        e,
        "GET_STATE: master answered 403: Forbidden (the principal is not authorized for this call)"
    );
    server.join().unwrap();
}

#[test]
fn json_mode_sends_json_and_decodes_json_with_unknown_fields() {
    let body =
        br#"{"type":"GET_HEALTH","get_health":{"healthy":true,"extra":1},"not_ours":{"a":[1]}}"#;
    let (port, server) = serve(vec![answer(
        "200 OK",
        &["Content-Type: application/json"],
        body,
    )]);
    let client = OperatorClient::new(&format!("127.0.0.1:{port}"))
        .unwrap()
        .with_encoding(Encoding::Json);
    assert!(client.get_health().unwrap());
    let req = server.join().unwrap().remove(0);
    assert!(
        req.contains("\r\nContent-Type: application/json\r\n"),
        "{req}"
    );
    assert!(req.ends_with(r#"{"type":"GET_HEALTH"}"#), "{req}");
}

#[test]
fn silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = OperatorClient::new(&format!("127.0.0.1:{port}"))
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    let start = Instant::now();
    let e = client.get_health().unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(e.kind(), ErrorKind::TryAgainLater, "{e}");
    assert!(e.to_string().starts_with("GET_HEALTH: "), "{e}");
    drop(listener);
}
