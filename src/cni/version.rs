//! Spec versions we speak.

use crate::{Error, ErrorKind, Result};
use serde_json::json;

/// Every version VERSION reports (podman drops a conflist whose version is not listed).
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// The version we prefer to report in VERSION output.
pub const CURRENT_VERSION: &str = "1.1.0";

/// True if `v` is one of [`SUPPORTED_VERSIONS`].
pub fn is_supported(v: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&v)
}

/// Error of kind `IncompatibleVersion` unless `v` is supported.
pub fn check(v: &str) -> Result<()> {
    if is_supported(v) {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::IncompatibleVersion,
        format!(
            "incompatible CNI version \"{v}\": plugin supports {}",
            SUPPORTED_VERSIONS.join(", ")
        ),
    ))
}

/// True for versions whose results use the 0.2.0 shape (`ip4`).
pub fn is_legacy(v: &str) -> bool {
    matches!(v, "0.1.0" | "0.2.0")
}

/// The VERSION command's output: the config's version echoed back when we speak it, so a
/// runtime probing with its own version sees it confirmed.
pub fn version_info(config_version: Option<&str>) -> serde_json::Value {
    let reported = config_version
        .filter(|v| is_supported(v))
        .unwrap_or(CURRENT_VERSION);
    json!({"cniVersion": reported, "supportedVersions": SUPPORTED_VERSIONS})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_accepts_every_listed_version_and_names_them_on_failure() {
        for v in SUPPORTED_VERSIONS {
            check(v).unwrap();
        }
        let e = check("9.9.9").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::IncompatibleVersion);
        assert_eq!(
            e.message(),
            "incompatible CNI version \"9.9.9\": plugin supports 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"
        );
        assert!(check("").is_err());
    }

    #[test]
    fn only_0_1_and_0_2_are_legacy() {
        let legacy: Vec<_> = SUPPORTED_VERSIONS.iter().filter(|v| is_legacy(v)).collect();
        assert_eq!(legacy, [&"0.1.0", &"0.2.0"]);
    }

    #[test]
    fn version_info_echoes_supported_config_version() {
        assert_eq!(version_info(Some("0.3.1"))["cniVersion"], "0.3.1");
        assert_eq!(version_info(Some("7.0.0"))["cniVersion"], CURRENT_VERSION);
        assert_eq!(version_info(None)["cniVersion"], CURRENT_VERSION);
        assert_eq!(
            version_info(None)["supportedVersions"]
                .as_array()
                .unwrap()
                .len(),
            7
        );
    }
}
