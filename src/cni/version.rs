//! Spec versions we speak: [`CniVersion`], parsed once from the config, with predicates for
//! what each version's results carry, so no code compares version strings.

use crate::{Error, ErrorKind, Result};
use serde_json::json;
use std::fmt;
use std::str::FromStr;

/// A CNI spec version we speak. Ordered by age.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_1_0,
    V0_2_0,
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    /// Every version, oldest first.
    pub const ALL: [CniVersion; 7] = [
        CniVersion::V0_1_0,
        CniVersion::V0_2_0,
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];

    /// The version we prefer to report.
    pub const CURRENT: CniVersion = CniVersion::V1_1_0;

    /// The version a config without `cniVersion` gets its results in: the 0.2.0 shape, the
    /// one Mesos reads.
    pub const UNVERSIONED: CniVersion = CniVersion::V0_2_0;

    pub const fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_1_0 => "0.1.0",
            CniVersion::V0_2_0 => "0.2.0",
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Results in the 0.1/0.2 shape: `ip4` (address, gateway, routes), no interfaces.
    pub fn has_legacy_result(self) -> bool {
        self <= CniVersion::V0_2_0
    }

    /// `ips[].version: "4"` (0.3.0 to 0.4.0; 1.0.0 dropped it).
    pub fn has_ip_version_field(self) -> bool {
        (CniVersion::V0_3_0..=CniVersion::V0_4_0).contains(&self)
    }

    /// `interfaces[].mtu` (1.1.0 on).
    pub fn has_interface_mtu(self) -> bool {
        self >= CniVersion::V1_1_0
    }
}

impl FromStr for CniVersion {
    type Err = Error;

    /// A version we speak, or an `IncompatibleVersion` error naming those we do.
    fn from_str(v: &str) -> Result<CniVersion> {
        CniVersion::ALL
            .into_iter()
            .find(|c| c.as_str() == v)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::IncompatibleVersion,
                    format!(
                        "incompatible CNI version \"{v}\": plugin supports {}",
                        SUPPORTED_VERSIONS.join(", ")
                    ),
                )
            })
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version reads as its spelling (`conf.cni_version.as_deref()`, comparisons with text).
impl std::ops::Deref for CniVersion {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<&str> for CniVersion {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for CniVersion {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

/// Every version VERSION reports (podman drops a conflist whose version is not listed).
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// The version we prefer to report in VERSION output.
pub const CURRENT_VERSION: &str = CniVersion::CURRENT.as_str();

/// True if `v` is one we speak.
pub fn is_supported(v: &str) -> bool {
    v.parse::<CniVersion>().is_ok()
}

/// Error of kind `IncompatibleVersion` unless `v` is supported.
pub fn check(v: &str) -> Result<()> {
    v.parse::<CniVersion>().map(drop)
}

/// True for versions whose results use the 0.2.0 shape (`ip4`).
pub fn is_legacy(v: &str) -> bool {
    v.parse::<CniVersion>()
        .is_ok_and(CniVersion::has_legacy_result)
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
    fn the_typed_versions_are_the_listed_ones_with_their_result_shapes() {
        let spelled: Vec<&str> = CniVersion::ALL.iter().map(|v| v.as_str()).collect();
        assert_eq!(spelled, SUPPORTED_VERSIONS);
        for v in CniVersion::ALL {
            assert_eq!(v.as_str().parse::<CniVersion>().unwrap(), v);
        }
        let with = |f: fn(CniVersion) -> bool| -> Vec<&str> {
            CniVersion::ALL
                .into_iter()
                .filter(|v| f(*v))
                .map(|v| v.as_str())
                .collect()
        };
        assert_eq!(with(CniVersion::has_legacy_result), ["0.1.0", "0.2.0"]);
        assert_eq!(
            with(CniVersion::has_ip_version_field),
            ["0.3.0", "0.3.1", "0.4.0"]
        );
        assert_eq!(with(CniVersion::has_interface_mtu), ["1.1.0"]);
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
