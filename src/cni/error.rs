//! The CNI error JSON, and the one place where an [`ErrorKind`] becomes a CNI code.

use crate::{Error, ErrorKind};

/// `{"cniVersion", "code", "msg", "details"}` as printed on stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

/// The CNI code for an error kind: 1 version, 4 env, 6 decode, 7 config, 8 netns,
/// 11 try again later, 100+ ours, 999 internal.
pub fn code_for(kind: ErrorKind) -> u32 {
    let _ = kind;
    todo!("cni: code_for")
}

impl CniError {
    pub fn from_error(e: &Error) -> CniError {
        let _ = e;
        todo!("cni: CniError::from_error")
    }

    /// The JSON object, with `cniVersion` set to `version`.
    pub fn to_json(&self, version: &str) -> serde_json::Value {
        let _ = version;
        todo!("cni: CniError::to_json")
    }
}
