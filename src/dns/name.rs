//! DNS names as weaveDNS keeps them: ASCII lowercase, absolute (one trailing dot), within
//! RFC 1035's limits. One spelling per name, so the store, the gossip and the query path
//! compare names as plain strings.

use crate::{Error, ErrorKind, Result};
use std::net::Ipv4Addr;

/// Longest name in presentation form, without the trailing dot (RFC 1035 2.3.4).
pub const MAX_NAME: usize = 253;
/// Longest label.
pub const MAX_LABEL: usize = 63;

/// `s` lowercased with a trailing dot. Labels are 1-63 bytes of letters, digits, `-` and
/// `_`; the whole name at most 253 bytes.
pub fn normalize(s: &str) -> Result<String> {
    let bad = |why: &str| {
        Error::new(
            ErrorKind::InvalidConfig,
            format!("invalid DNS name {s:?}: {why}"),
        )
    };
    let body = s.strip_suffix('.').unwrap_or(s);
    if body.is_empty() {
        return Err(bad("empty"));
    }
    if body.len() > MAX_NAME {
        return Err(bad("longer than 253 bytes"));
    }
    for label in body.split('.') {
        if label.is_empty() {
            return Err(bad("empty label"));
        }
        if label.len() > MAX_LABEL {
            return Err(bad("label longer than 63 bytes"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad("labels may hold only letters, digits, '-' and '_'"));
        }
    }
    let mut out = body.to_ascii_lowercase();
    out.push('.');
    Ok(out)
}

/// True if `name` lies strictly below `domain` (both normalised): `web.weave.local.` is in
/// `weave.local.`, `weave.local.` itself is not.
pub fn in_domain(name: &str, domain: &str) -> bool {
    name.len() > domain.len()
        && name.ends_with(domain)
        && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
}

/// `d.c.b.a.in-addr.arpa.` for `a.b.c.d`.
pub fn reverse_name(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
}

/// The address of a normalised `d.c.b.a.in-addr.arpa.` name; `None` for anything else
/// (partial reverse zones included).
pub fn parse_reverse(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa.")?;
    let mut octets = [0u8; 4];
    let mut n = 0;
    for part in rest.split('.') {
        if n == 4 || part.is_empty() || part.len() > 3 || (part.len() > 1 && part.starts_with('0'))
        {
            return None;
        }
        octets[3 - n] = part.parse().ok()?;
        n += 1;
    }
    (n == 4).then(|| Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercased_and_made_absolute() {
        assert_eq!(normalize("Web.Weave.Local").unwrap(), "web.weave.local.");
        assert_eq!(normalize("web.weave.local.").unwrap(), "web.weave.local.");
        assert_eq!(normalize("a_b-1.x").unwrap(), "a_b-1.x.");
    }

    #[test]
    fn bad_names_say_why() {
        let long_label = format!("{}.x", "a".repeat(64));
        let long_name = vec!["abcdefghi"; 26].join(".");
        for (input, why) in [
            ("", "empty"),
            (".", "empty"),
            ("a..b", "empty label"),
            (".a", "empty label"),
            (long_label.as_str(), "label longer than 63 bytes"),
            (long_name.as_str(), "longer than 253 bytes"),
            ("a b.c", "labels may hold only"),
            ("a/b", "labels may hold only"),
            ("é.x", "labels may hold only"),
        ] {
            let e = normalize(input).unwrap_err();
            assert!(e.to_string().contains(why), "{input:?}: {e}");
            assert!(e.to_string().starts_with("invalid DNS name "), "{e}");
        }
        // The limits themselves are fine.
        normalize(&"a".repeat(63)).unwrap();
        let max = format!("{}.{}", vec!["a".repeat(63); 3].join("."), "b".repeat(61));
        assert_eq!(max.len(), 253);
        normalize(&max).unwrap();
    }

    #[test]
    fn domain_membership_is_by_whole_labels() {
        let d = "weave.local.";
        assert!(in_domain("web.weave.local.", d));
        assert!(in_domain("a.b.weave.local.", d));
        assert!(!in_domain("weave.local.", d));
        assert!(!in_domain("xweave.local.", d));
        assert!(!in_domain("example.com.", d));
    }

    #[test]
    fn reverse_names_round_trip() {
        let ip: Ipv4Addr = "10.32.0.7".parse().unwrap();
        assert_eq!(reverse_name(ip), "7.0.32.10.in-addr.arpa.");
        assert_eq!(parse_reverse(&reverse_name(ip)), Some(ip));
        for bad in [
            "0.32.10.in-addr.arpa.",
            "1.7.0.32.10.in-addr.arpa.",
            "07.0.32.10.in-addr.arpa.",
            "256.0.32.10.in-addr.arpa.",
            "x.0.32.10.in-addr.arpa.",
            "7.0.32.10.ip6.arpa.",
            "in-addr.arpa.",
        ] {
            assert_eq!(parse_reverse(bad), None, "{bad}");
        }
    }
}
