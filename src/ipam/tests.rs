//! Input checks shared by the HTTP API and the router.

use super::*;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

#[test]
fn subnet_validation_messages() {
    let u = net("10.32.0.0/12");
    assert_eq!(
        validate_subnet(net("10.32.0.1/12"), u)
            .unwrap_err()
            .to_string(),
        "invalid subnet - bits after network prefix are not all zero: 10.32.0.1/12"
    );
    assert_eq!(
        validate_subnet(net("10.32.0.0/31"), u)
            .unwrap_err()
            .to_string(),
        "invalid subnet - smaller than minimum size 4: 10.32.0.0/31"
    );
    assert_eq!(
        validate_subnet(net("192.168.0.0/24"), u)
            .unwrap_err()
            .to_string(),
        "range 192.168.0.0/24 out of bounds: 10.32.0.0/12"
    );
    validate_subnet(net("10.32.0.0/30"), u).unwrap();
    validate_subnet(net("10.0.0.0/8"), u).unwrap();
}

#[test]
fn id_validation() {
    for ok in ["abc", "weave:expose", "_", &"a".repeat(255)] {
        validate_id(ok).unwrap();
    }
    for badid in ["", "a/b", "a b", "tab\t", "é", &"a".repeat(256)] {
        let e = validate_id(badid).unwrap_err();
        assert!(e.to_string().starts_with("invalid container id"), "{e}");
    }
}
