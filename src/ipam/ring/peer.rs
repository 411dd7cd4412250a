//! Peer names: 48-bit identifiers written like MAC addresses, as Weave's mesh does.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A peer's 48-bit name. Ordered numerically, which is the order the initial split uses.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct PeerName(u64);

impl PeerName {
    /// Largest value a peer name can hold (48 bits).
    pub const MAX: u64 = (1 << 48) - 1;

    /// A name from its numeric value; `None` if it does not fit in 48 bits.
    pub fn new(value: u64) -> Option<Self> {
        (value <= Self::MAX).then_some(PeerName(value))
    }

    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0.to_be_bytes();
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[2], b[3], b[4], b[5], b[6], b[7]
        )
    }
}

impl fmt::Debug for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PeerName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("invalid peer name {s:?}, should be like aa:bb:cc:dd:ee:ff");
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(invalid());
        }
        let mut value = 0u64;
        for part in parts {
            if part.is_empty() || part.len() > 2 {
                return Err(invalid());
            }
            let byte = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
            value = (value << 8) | u64::from(byte);
        }
        Ok(PeerName(value))
    }
}

impl From<PeerName> for String {
    fn from(p: PeerName) -> String {
        p.to_string()
    }
}

impl TryFrom<String> for PeerName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let p = PeerName::new(0x0123_4567_89ab).unwrap();
        assert_eq!(p.to_string(), "01:23:45:67:89:ab");
        assert_eq!("01:23:45:67:89:AB".parse::<PeerName>().unwrap(), p);
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"01:23:45:67:89:ab\"");
    }

    #[test]
    fn rejects_malformed_names() {
        for bad in [
            "",
            "01:23:45:67:89",
            "01:23:45:67:89:ab:cd",
            "0g:00:00:00:00:00",
            "123:0:0:0:0:0",
        ] {
            assert!(bad.parse::<PeerName>().is_err(), "{bad}");
        }
        assert!(PeerName::new(1 << 48).is_none());
    }
}
