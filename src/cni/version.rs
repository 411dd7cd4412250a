//! Spec versions we speak.

use crate::Result;

/// Every version VERSION reports (podman drops a conflist whose version is not listed).
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// The version we prefer to report in VERSION output.
pub const CURRENT_VERSION: &str = "1.1.0";

/// Error of kind `IncompatibleVersion` unless `v` is supported.
pub fn check(v: &str) -> Result<()> {
    let _ = v;
    todo!("cni: version::check")
}

/// True for versions whose results use the 0.2.0 shape (`ip4`).
pub fn is_legacy(v: &str) -> bool {
    let _ = v;
    todo!("cni: version::is_legacy")
}

/// The VERSION command's output.
pub fn version_info(config_version: Option<&str>) -> serde_json::Value {
    let _ = config_version;
    todo!("cni: version::version_info")
}
