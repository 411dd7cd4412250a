//! The CNI error JSON, and the one place where an [`ErrorKind`] becomes a CNI code.
//!
//! | kind                  | code | meaning                                        |
//! |-----------------------|------|------------------------------------------------|
//! | `IncompatibleVersion` | 1    | config `cniVersion` not supported (spec)       |
//! | `Env`                 | 4    | invalid or missing CNI_* variable (spec)       |
//! | `Decode`              | 6    | stdin or a result is not decodable (spec)      |
//! | `InvalidConfig`       | 7    | decoded but invalid network config (spec)      |
//! | `NetNs`               | 8    | netns missing or not a netns (1.1 spec)        |
//! | `TryAgainLater`       | 11   | transient: router down or not ready (spec)     |
//! | `Router`              | 100  | the weave router rejected the request          |
//! | `Kernel`              | 101  | a netlink or sysctl operation failed           |
//! | `Io`                  | 102  | a file or socket operation failed              |
//! | `NotFound`            | 103  | something that should exist does not           |
//! | `AlreadyExists`       | 104  | something that should not exist does           |
//! | `Internal`            | 999  | a bug, including a panic inside the plugin     |
//!
//! Codes 1-99 are reserved by the spec; 100+ are plugin-specific.

use crate::{Error, ErrorKind};
use serde_json::json;

/// `{"cniVersion", "code", "msg", "details"}` as printed on stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

/// The CNI code for an error kind: 1 version, 4 env, 6 decode, 7 config, 8 netns,
/// 11 try again later, 100+ ours, 999 internal (table in the module doc).
pub fn code_for(kind: ErrorKind) -> u32 {
    match kind {
        ErrorKind::IncompatibleVersion => 1,
        ErrorKind::Env => 4,
        ErrorKind::Decode => 6,
        ErrorKind::InvalidConfig => 7,
        ErrorKind::NetNs => 8,
        ErrorKind::TryAgainLater => 11,
        ErrorKind::Router => 100,
        ErrorKind::Kernel => 101,
        ErrorKind::Io => 102,
        ErrorKind::NotFound => 103,
        ErrorKind::AlreadyExists => 104,
        ErrorKind::Internal => 999,
    }
}

/// A short hint for the operator reading the runtime's log; empty when the message says it all.
fn details_for(code: u32) -> &'static str {
    match code {
        4 => "the container runtime must set CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME and CNI_PATH as the CNI spec requires",
        6 => "stdin must hold one JSON network configuration object",
        7 => "check the network configuration file in the CNI config directory (e.g. /etc/cni/net.d)",
        8 => "the network namespace does not exist or is not a network namespace",
        11 => "the weave router did not answer in time; is it running? (weave launch); try again later",
        _ => "",
    }
}

impl CniError {
    pub fn from_error(e: &Error) -> CniError {
        let code = code_for(e.kind());
        CniError {
            code,
            msg: e.message().to_string(),
            details: details_for(code).to_string(),
        }
    }

    /// The JSON object, with `cniVersion` set to `version`.
    pub fn to_json(&self, version: &str) -> serde_json::Value {
        json!({
            "cniVersion": version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_table() {
        let table = [
            (ErrorKind::IncompatibleVersion, 1),
            (ErrorKind::Env, 4),
            (ErrorKind::Decode, 6),
            (ErrorKind::InvalidConfig, 7),
            (ErrorKind::NetNs, 8),
            (ErrorKind::TryAgainLater, 11),
            (ErrorKind::Router, 100),
            (ErrorKind::Kernel, 101),
            (ErrorKind::Io, 102),
            (ErrorKind::NotFound, 103),
            (ErrorKind::AlreadyExists, 104),
            (ErrorKind::Internal, 999),
        ];
        for (kind, code) in table {
            assert_eq!(code_for(kind), code, "{kind:?}");
        }
    }

    #[test]
    fn from_error_keeps_the_full_message_and_adds_a_hint() {
        let e = Error::new(
            ErrorKind::TryAgainLater,
            "connect router: connection refused",
        )
        .context("allocate IP for \"abc\"");
        let c = CniError::from_error(&e);
        assert_eq!(c.code, 11);
        assert_eq!(
            c.msg,
            "allocate IP for \"abc\": connect router: connection refused"
        );
        assert!(c.details.contains("weave launch"), "{}", c.details);
        assert_eq!(
            CniError::from_error(&Error::new(ErrorKind::Kernel, "x")).details,
            ""
        );
        for kind in [
            ErrorKind::Env,
            ErrorKind::Decode,
            ErrorKind::InvalidConfig,
            ErrorKind::NetNs,
        ] {
            assert!(
                !CniError::from_error(&Error::new(kind, "x"))
                    .details
                    .is_empty(),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn json_has_exactly_four_keys() {
        let c = CniError {
            code: 7,
            msg: "m".into(),
            details: "d".into(),
        };
        assert_eq!(
            c.to_json("0.4.0"),
            json!({"cniVersion": "0.4.0", "code": 7, "msg": "m", "details": "d"})
        );
    }
}
