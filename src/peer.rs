//! Peers, as every layer names them: [`PeerName`], the 48-bit identifier written like a MAC
//! address that the mesh handshakes with, the IPAM ring records as range owner and the data
//! dir stores; and connect targets (`host[:port]`), checked by [`validate_target`].
//!
//! A leaf: it depends on nothing in the crate but the error type, so the mesh, IPAM, the
//! HTTP API and the store share one type instead of converting between their own.

use crate::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A peer's 48-bit name, shown MAC-like (`aa:bb:cc:dd:ee:ff`), stable across restarts.
/// Ordered numerically, which is the order the ring's initial split uses.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PeerName(u64);

impl PeerName {
    /// Largest value a peer name can hold (48 bits).
    pub const MAX: u64 = (1 << 48) - 1;

    /// The name from its 48 low bits; `None` if higher bits are set.
    pub fn from_u64(v: u64) -> Option<PeerName> {
        (v <= Self::MAX).then_some(PeerName(v))
    }

    pub fn as_u64(self) -> u64 {
        self.0
    }

    pub fn to_bytes(self) -> [u8; 6] {
        let b = self.0.to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    }

    pub fn from_bytes(b: [u8; 6]) -> PeerName {
        PeerName(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
    }

    /// A random unicast name with the locally-administered bit set (a new router's name).
    pub fn random() -> PeerName {
        let mut b: [u8; 6] = rand::random();
        b[0] = (b[0] & 0xfe) | 0x02;
        PeerName::from_bytes(b)
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.text();
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PeerName {
    type Err = Error;

    /// Exactly six `:`-separated two-digit hex octets, any case.
    fn from_str(s: &str) -> Result<PeerName> {
        let bad = || {
            Error::new(
                ErrorKind::InvalidConfig,
                format!("invalid peer name {s:?}: want a MAC address like aa:bb:cc:dd:ee:ff"),
            )
        };
        let mut b = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut b {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(PeerName::from_bytes(b))
    }
}

impl PeerName {
    /// The written form in a buffer of its own: IPAM's gossip and saved state write a name
    /// per ring entry, and a string allocated for each was a tenth of 500 peers' ring work.
    fn text(self) -> [u8; 17] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b':'; 17];
        for (i, b) in self.to_bytes().into_iter().enumerate() {
            out[i * 3] = HEX[usize::from(b >> 4)];
            out[i * 3 + 1] = HEX[usize::from(b & 15)];
        }
        out
    }
}

impl Serialize for PeerName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let text = self.text();
        s.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for PeerName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = PeerName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a peer name like aa:bb:cc:dd:ee:ff")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<PeerName, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Name)
    }
}

/// Accepts a connect target `host`, `host:port` or `[v6]:port`, with Weave's message
/// otherwise.
pub fn validate_target(peer: &str) -> Result<()> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidConfig,
            format!("invalid peer name {peer:?}, should be host[:port]"),
        )
    };
    let (host, port) = if let Some(rest) = peer.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (h, None),
            _ => (h, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match peer.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (peer, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_name_round_trips() {
        let n: PeerName = "AA:bb:0c:dd:ee:0f".parse().unwrap();
        assert_eq!(n.to_string(), "aa:bb:0c:dd:ee:0f");
        assert_eq!(PeerName::from_bytes(n.to_bytes()), n);
        assert_eq!(PeerName::from_u64(n.as_u64()), Some(n));
        assert_eq!(PeerName::from_u64(1 << 48), None);
        let p = PeerName::from_u64(0x0123_4567_89ab).unwrap();
        assert_eq!(p.to_string(), "01:23:45:67:89:ab");
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"01:23:45:67:89:ab\"");
        assert_eq!(
            serde_json::from_str::<PeerName>("\"01:23:45:67:89:AB\"").unwrap(),
            p
        );
        for bad in [
            "",
            "aa:bb",
            "aa:bb:cc:dd:ee:fg",
            "aaa:bb:cc:dd:ee:f",
            "a:b:c:d:e:f:0",
            "01:23:45:67:89:ab:cd",
            "123:0:0:0:0:0",
        ] {
            let e = bad.parse::<PeerName>().unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("invalid peer name {bad:?}: want a MAC address like aa:bb:cc:dd:ee:ff")
            );
        }
    }

    #[test]
    fn peer_names_serialize_as_strings_also_as_map_keys() {
        let a = PeerName::from_u64(0x0a0b_0c0d_0e0f).unwrap();
        let b = PeerName::from_u64(1).unwrap();
        let map = std::collections::BTreeMap::from([(a, vec![b]), (b, vec![])]);
        let text = serde_json::to_string(&map).unwrap();
        assert_eq!(
            text,
            r#"{"00:00:00:00:00:01":[],"0a:0b:0c:0d:0e:0f":["00:00:00:00:00:01"]}"#
        );
        let back: std::collections::BTreeMap<PeerName, Vec<PeerName>> =
            serde_json::from_str(&text).unwrap();
        assert_eq!(back, map);
        let e = serde_json::from_str::<PeerName>("\"aa:bb\"").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid peer name \"aa:bb\": want a MAC address"),
            "{e}"
        );
        let e = serde_json::from_str::<PeerName>("7").unwrap_err();
        assert!(
            e.to_string().contains("a peer name like aa:bb:cc:dd:ee:ff"),
            "{e}"
        );
        for v in [0, 1, 0xfe, 0x1234_5678_9abc, PeerName::MAX] {
            let p = PeerName::from_u64(v).unwrap();
            let b = p.to_bytes();
            let want = format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                b[0], b[1], b[2], b[3], b[4], b[5]
            );
            assert_eq!(p.to_string(), want);
            assert_eq!(format!("{p:?}"), want);
        }
    }

    #[test]
    fn random_names_are_local_unicast() {
        let n = PeerName::random().to_bytes();
        assert_eq!(n[0] & 0x03, 0x02);
    }

    #[test]
    fn target_validation() {
        for ok in [
            "10.0.0.1",
            "host-a",
            "host.example:6783",
            "[fe80::1]:6783",
            "[fe80::1]",
        ] {
            validate_target(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["", "x:y", "a:0", "a:70000", "a b", "a/b", "[::1]x", ":6783"] {
            let e = validate_target(bad).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("invalid peer name {bad:?}, should be host[:port]")
            );
        }
    }
}
