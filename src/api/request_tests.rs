use super::*;

fn p(method: &str, path: &str) -> Parsed {
    parse_request(method, path, "", b"", true)
}

fn rejected(method: &str, path: &str) -> (u16, String) {
    let r = p(method, path).expect_err(path);
    (r.status, r.reason)
}

#[test]
fn decoding() {
    assert_eq!(percent_decode("weave%3Aexpose"), "weave:expose");
    assert_eq!(percent_decode("a%2"), "a%2");
    assert_eq!(percent_decode("%é1"), "%é1");
    assert_eq!(percent_decode("%41"), "A");
    let pairs = form_pairs("skipNAT=true", b"peer=10.0.0.1&peer=h%3A6783&replace=true");
    assert_eq!(form_values(&pairs, "peer"), vec!["10.0.0.1", "h:6783"]);
    assert!(query_flag("skipNAT=true", "skipNAT"));
    assert!(!query_flag("", "skipNAT"));
}

#[test]
fn valid_requests() {
    assert_eq!(
        p("POST", "/ip/weave%3Aexpose"),
        Ok(ApiRequest::Allocate {
            id: "weave:expose".into(),
            subnet: None,
            attachment: None
        })
    );
    assert_eq!(
        p("GET", "/ip/c1/10.40.0.0/16"),
        Ok(ApiRequest::Lookup {
            id: "c1".into(),
            subnet: Some("10.40.0.0/16".parse().unwrap())
        })
    );
    assert_eq!(
        p("PUT", "/ip/c1/10.32.0.9/12"),
        Ok(ApiRequest::Claim {
            id: "c1".into(),
            cidr: "10.32.0.9/12".parse().unwrap()
        })
    );
    assert_eq!(
        parse_request("POST", "/expose/10.32.0.1/12", "skipNAT=true", b"", true),
        Ok(ApiRequest::Expose {
            cidr: "10.32.0.1/12".parse().unwrap(),
            skip_nat: true
        })
    );
    assert_eq!(
        p("GET", "/status/ipam"),
        Ok(ApiRequest::Status(StatusPage::Ipam))
    );
    assert_eq!(
        parse_request("GET", "/status", "", b"", false),
        Ok(ApiRequest::Status(StatusPage::Summary))
    );
}

#[test]
fn container_ids_are_checked() {
    let long = format!("/ip/{}", "a".repeat(256));
    assert_eq!(rejected("POST", &long).0, 400);
    assert!(rejected("POST", &long).1.contains("longer than 255 bytes"));
    assert!(rejected("POST", "/ip/a%20b")
        .1
        .starts_with("invalid container id \"a b\""));
    assert!(rejected("POST", "/ip/a%2Fb").1.contains("without '/'"));
    assert!(rejected("DELETE", "/ip/").1.contains("empty"));
    assert!(rejected("GET", "/ip/%FF")
        .1
        .starts_with("invalid container id"));
    assert!(rejected("DELETE", "/cni/attachments/c1/a%2Fb")
        .1
        .contains("invalid interface name"));
}

#[test]
fn cidrs_are_checked() {
    let bits = "invalid subnet - bits after network prefix are not all zero: 10.40.0.1/16";
    assert_eq!(rejected("POST", "/ip/c/10.40.0.1/16"), (400, bits.into()));
    let small = "invalid subnet - smaller than minimum size 4: 10.40.0.0/31";
    assert_eq!(rejected("GET", "/ip/c/10.40.0.0/31"), (400, small.into()));
    for (path, why) in [
        ("/ip/c/10.40.0.0/99", "invalid CIDR address: 10.40.0.0/99"),
        ("/ip/c/10.40.0.0/+8", "invalid CIDR address: 10.40.0.0/+8"),
        ("/ip/c/10.40.0.0/008", "invalid CIDR address: 10.40.0.0/008"),
        ("/ip/c/010.40.0.0/8", "invalid CIDR address: 010.40.0.0/8"),
        ("/ip/c/10.40.0/8", "invalid CIDR address: 10.40.0/8"),
    ] {
        assert_eq!(rejected("POST", path), (400, why.into()), "{path}");
    }
    assert!(rejected("PUT", "/ip/c/10.32.0.0/12")
        .1
        .contains("network or broadcast"));
    assert!(rejected("PUT", "/ip/c/10.47.255.255/12")
        .1
        .contains("network or broadcast"));
    assert!(rejected("PUT", "/ip/c/10.0.0.1/0")
        .1
        .contains("prefix length 0"));
    assert!(rejected("POST", "/expose/10.33.0.x/16")
        .1
        .starts_with("unable to parse ip addr: invalid CIDR address"));
    assert_eq!(
        rejected("DELETE", "/ip/c/10.1.1"),
        (400, "invalid IP address: 10.1.1".into())
    );
    // /31 and /32 have no network or broadcast address to protect.
    assert!(p("PUT", "/ip/c/10.32.0.0/32").is_ok());
}

#[test]
fn unknown_paths_and_methods() {
    assert_eq!(rejected("GET", "/nope"), (404, "unknown path".into()));
    assert_eq!(rejected("GET", "//ip"), (404, "unknown path".into()));
    assert_eq!(rejected("GET", "/status/"), (404, "unknown path".into()));
    assert_eq!(rejected("GET", "/ip/a/b/c/d"), (404, "unknown path".into()));
    let (code, why) = rejected("PATCH", "/ip/c1");
    assert_eq!(code, 405);
    assert_eq!(
        why,
        "method PATCH not allowed on this path (allowed: GET, POST, DELETE)"
    );
    assert_eq!(rejected("POST", "/status").0, 405);
    // The status listener knows only read-only paths, whatever the method.
    let ro = parse_request("POST", "/ip/c9", "", b"", false).unwrap_err();
    assert_eq!((ro.status, ro.reason.as_str()), (404, "unknown path"));
}

#[test]
fn bodies_and_forms_are_checked() {
    let r = parse_request("POST", "/ip/c1", "", b"{\"container_id\":1}", true).unwrap_err();
    assert!(r.reason.starts_with("decode attachment:"), "{}", r.reason);
    let bad_if =
        br#"{"container_id":"c1","ifname":"a b","host_veth":"v","mac":"m","ips":[],"netns":"/n"}"#;
    let r = parse_request("POST", "/cni/attachments", "", bad_if, true).unwrap_err();
    assert_eq!(r.status, 400);
    assert!(r.reason.contains("invalid interface name"), "{}", r.reason);
    let r = parse_request("POST", "/connect", "", b"peer=x:y", true).unwrap_err();
    assert_eq!(r.reason, "invalid peer name \"x:y\", should be host[:port]");
    // Weave's check-alive form is accepted and ignored.
    assert!(parse_request("POST", "/ip/c1", "", b"check-alive=true", true).is_ok());
    assert!(rejected("DELETE", "/peer/a%0Ab")
        .1
        .starts_with("invalid peer name"));
}

/// Found by the http_request fuzzer: `/connect` with many bad peers echoed each in full, so
/// a 64 KiB body came back as a reason of unbounded size.
#[test]
fn reasons_are_bounded() {
    let input = include_bytes!("fuzz_regressions/http_request-connect-many-peers.bin");
    let mut parts = input[1..].splitn(3, |&b| b == 0);
    let path = String::from_utf8_lossy(parts.next().unwrap()).into_owned();
    let query = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let body = parts.next().unwrap_or_default();
    let r = parse_request("POST", &path, &query, body, true).unwrap_err();
    assert!(r.reason.len() <= MAX_REASON + 3, "{} bytes", r.reason.len());

    let many = vec!["peer=a%20b"; 2000].join("&");
    let r = parse_request("POST", "/connect", "", many.as_bytes(), true).unwrap_err();
    assert!(
        r.reason.ends_with("(and 1992 more invalid peers)"),
        "{}",
        r.reason
    );
    let huge_id = format!("/ip/{}", "x".repeat(60_000));
    let r = p("POST", &huge_id).unwrap_err();
    assert!(r.reason.starts_with("invalid container id"));
    assert!(r.reason.len() <= MAX_REASON + 3);
}
