//! The router's request validation (`weave::api::request::parse_request`), which runs on
//! every request before anything touches the router's state.
//! Input: one byte choosing the method and listener, then `path \0 query \0 body`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weave::api::request::{parse_request, ApiRequest};

const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "G\u{e9}T",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let method = METHODS[(sel & 7) as usize];
    let full = sel & 0x80 == 0;
    let mut parts = rest.splitn(3, |&b| b == 0);
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let query = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();
    match parse_request(method, &path, &query, body, full) {
        Ok(req) => check(&req),
        Err(rej) => {
            assert!(matches!(rej.status, 400 | 404 | 405), "{rej:?}");
            assert!(!rej.reason.is_empty());
            assert!(
                rej.reason.len() < 4096,
                "unbounded reason: {} bytes",
                rej.reason.len()
            );
        }
    }
});

/// What the handlers rely on once a request is accepted.
fn check(req: &ApiRequest) {
    use ApiRequest as R;
    match req {
        R::Allocate { id, subnet, .. } | R::Lookup { id, subnet } => {
            weave::ipam::validate_id(id).unwrap();
            if let Some(s) = subnet {
                assert_eq!(s.addr(), s.network(), "unaligned subnet {s}");
                assert!(s.prefix_len() <= 30);
            }
        }
        R::Claim { id, cidr } => {
            weave::ipam::validate_id(id).unwrap();
            assert!(cidr.prefix_len() > 0);
        }
        R::Free { id } | R::FreeOne { id, .. } => weave::ipam::validate_id(id).unwrap(),
        R::Expose { cidr, .. } | R::Hide { cidr } => assert!(cidr.prefix_len() > 0),
        R::Connect { peers, .. } => {
            for p in peers {
                weave::peer::validate_target(p).unwrap();
            }
        }
        R::PutAttachment(a) => a.validate().unwrap(),
        R::RemoveAttachment { id, ifname } => {
            weave::ipam::validate_id(id).unwrap();
            assert!(!ifname.is_empty() && ifname.len() <= 15);
        }
        R::RemovePeer { name } => assert!(!name.is_empty() && !name.contains('/')),
        _ => {}
    }
}
