//! Agent flags that make a Mesos agent run weave through its `network/cni` isolator, printed
//! as command-line flags, `MESOS_*` environment lines (the agent reads every flag from
//! `MESOS_<NAME>`), or a systemd drop-in for the agent unit.

use crate::{Error, ErrorKind, Result};
use std::path::PathBuf;

/// Isolators listed by default: `filesystem/linux` gives the container its own mounts
/// (/etc/hosts, resolv.conf), `network/cni` runs the plugin.
pub const DEFAULT_ISOLATION: &[&str] = &["filesystem/linux", "network/cni"];
/// Where weave's CNI config is installed.
pub const DEFAULT_CNI_CONFIG_DIR: &str = "/etc/cni/net.d";
/// Where weave's CNI plugins are installed.
pub const DEFAULT_CNI_PLUGINS_DIR: &str = "/opt/cni/bin";
/// Local directory of `docker save` tarballs (`NAME.tar`) the agent provisions images from.
pub const DEFAULT_DOCKER_REGISTRY: &str = "/var/lib/mesos/docker-registry";
/// Where the agent keeps unpacked image layers (Mesos' default is under /tmp).
pub const DEFAULT_DOCKER_STORE_DIR: &str = "/var/lib/mesos/store/docker";
/// `copy` works on every filesystem; `overlay` is faster where overlayfs is available.
pub const DEFAULT_PROVISIONER_BACKEND: &str = "copy";

/// The agent's image flags (with `--images`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFlags {
    /// `--image_provisioner_backend`: copy, overlay, bind or aufs.
    pub provisioner_backend: String,
    /// `--docker_registry`: a local directory of tarballs, or a registry URL.
    pub docker_registry: String,
    /// `--docker_store_dir`.
    pub docker_store_dir: PathBuf,
}

impl Default for ImageFlags {
    fn default() -> Self {
        ImageFlags {
            provisioner_backend: DEFAULT_PROVISIONER_BACKEND.to_string(),
            docker_registry: DEFAULT_DOCKER_REGISTRY.to_string(),
            docker_store_dir: PathBuf::from(DEFAULT_DOCKER_STORE_DIR),
        }
    }
}

/// What the agent should be started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentFlagsConfig {
    /// Isolators, in order; `network/cni` is added if missing.
    pub isolation: Vec<String>,
    pub cni_config_dir: PathBuf,
    /// Colon-separated search path, passed to plugins verbatim as `CNI_PATH`.
    pub cni_plugins_dir: String,
    /// Keep CNI state under work_dir so DEL still runs after a reboot (Mesos >= 1.8).
    pub root_dir_persist: bool,
    pub launcher: String,
    /// Container images: adds `docker/runtime`, `--image_providers=docker` and these.
    pub images: Option<ImageFlags>,
}

impl Default for AgentFlagsConfig {
    fn default() -> Self {
        AgentFlagsConfig {
            isolation: DEFAULT_ISOLATION.iter().map(|s| s.to_string()).collect(),
            cni_config_dir: PathBuf::from(DEFAULT_CNI_CONFIG_DIR),
            cni_plugins_dir: DEFAULT_CNI_PLUGINS_DIR.to_string(),
            root_dir_persist: false,
            launcher: "linux".to_string(),
            images: None,
        }
    }
}

/// How the flags are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlagFormat {
    /// `--name=value`, one per line.
    Flags,
    /// `MESOS_NAME=value`, one per line (an EnvironmentFile or /etc/default file).
    Env,
    /// A systemd drop-in: `[Service]` and one `Environment="MESOS_NAME=value"` per flag.
    Systemd,
}

/// The agent flags as `(name, value)` pairs, in a fixed order.
pub fn agent_flags(cfg: &AgentFlagsConfig) -> Result<Vec<(String, String)>> {
    let mut isolation: Vec<String> = Vec::new();
    let mut add = |iso: &str| {
        if !isolation.iter().any(|i| i == iso) {
            isolation.push(iso.to_string());
        }
    };
    for iso in cfg.isolation.iter().flat_map(|s| s.split(',')) {
        let iso = iso.trim();
        if !iso.is_empty() {
            add(iso);
        }
    }
    if cfg.images.is_some() {
        // filesystem/linux pivots into the image rootfs; docker/runtime applies the image's
        // Env, WorkingDir and Entrypoint/Cmd (the agent refuses docker images without it).
        add("filesystem/linux");
        add("docker/runtime");
    }
    add("network/cni");
    let other_net: Vec<&String> = isolation
        .iter()
        .filter(|i| i.starts_with("network/") && *i != "network/cni" && *i != "network/ports")
        .collect();
    if !other_net.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!("isolation {other_net:?} conflicts with network/cni: Mesos allows one network isolator"),
        ));
    }
    let dir = cfg
        .cni_config_dir
        .to_str()
        .ok_or_else(|| Error::new(ErrorKind::InvalidConfig, "CNI config dir is not UTF-8"))?;
    let mut flags = vec![
        ("isolation".to_string(), isolation.join(",")),
        ("launcher".to_string(), cfg.launcher.clone()),
        ("network_cni_config_dir".to_string(), dir.to_string()),
        (
            "network_cni_plugins_dir".to_string(),
            cfg.cni_plugins_dir.clone(),
        ),
    ];
    if cfg.root_dir_persist {
        flags.push((
            "network_cni_root_dir_persist".to_string(),
            "true".to_string(),
        ));
    }
    if let Some(img) = &cfg.images {
        const BACKENDS: &[&str] = &["copy", "overlay", "bind", "aufs"];
        if !BACKENDS.contains(&img.provisioner_backend.as_str()) {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "image provisioner backend {:?}: Mesos knows {}",
                    img.provisioner_backend,
                    BACKENDS.join(", ")
                ),
            ));
        }
        let store = img
            .docker_store_dir
            .to_str()
            .ok_or_else(|| Error::new(ErrorKind::InvalidConfig, "docker store dir is not UTF-8"))?;
        flags.extend([
            ("image_providers".to_string(), "docker".to_string()),
            (
                "image_provisioner_backend".to_string(),
                img.provisioner_backend.clone(),
            ),
            ("docker_registry".to_string(), img.docker_registry.clone()),
            ("docker_store_dir".to_string(), store.to_string()),
        ]);
    }
    for (name, value) in &flags {
        if value.is_empty() || value.contains(['\n', '"', '\\']) {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("agent flag --{name}: value {value:?} is empty or has a newline, quote or backslash"),
            ));
        }
    }
    Ok(flags)
}

/// Prints `flags` in `format`; every line ends with a newline.
pub fn render(flags: &[(String, String)], format: FlagFormat) -> String {
    let env = |name: &str| format!("MESOS_{}", name.to_ascii_uppercase());
    let mut out = String::new();
    if format == FlagFormat::Systemd {
        out.push_str("# Drop-in for the Mesos agent unit, e.g. /etc/systemd/system/mesos-agent.service.d/weave.conf\n[Service]\n");
    }
    for (name, value) in flags {
        let line = match format {
            FlagFormat::Flags => format!("--{name}={value}"),
            FlagFormat::Env => format!("{}={value}", env(name)),
            FlagFormat::Systemd => format!("Environment=\"{}={value}\"", env(name)),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(cfg: &AgentFlagsConfig, format: FlagFormat) -> String {
        render(&agent_flags(cfg).unwrap(), format)
    }

    #[test]
    fn default_flags_golden() {
        assert_eq!(
            rendered(&AgentFlagsConfig::default(), FlagFormat::Flags),
            "--isolation=filesystem/linux,network/cni\n\
             --launcher=linux\n\
             --network_cni_config_dir=/etc/cni/net.d\n\
             --network_cni_plugins_dir=/opt/cni/bin\n"
        );
    }

    #[test]
    fn env_golden_with_persist() {
        let cfg = AgentFlagsConfig {
            root_dir_persist: true,
            cni_plugins_dir: "/opt/cni/bin:/usr/libexec/mesos".into(),
            ..Default::default()
        };
        assert_eq!(
            rendered(&cfg, FlagFormat::Env),
            "MESOS_ISOLATION=filesystem/linux,network/cni\n\
             MESOS_LAUNCHER=linux\n\
             MESOS_NETWORK_CNI_CONFIG_DIR=/etc/cni/net.d\n\
             MESOS_NETWORK_CNI_PLUGINS_DIR=/opt/cni/bin:/usr/libexec/mesos\n\
             MESOS_NETWORK_CNI_ROOT_DIR_PERSIST=true\n"
        );
    }

    #[test]
    fn systemd_golden_with_images() {
        let cfg = AgentFlagsConfig {
            isolation: vec!["posix/cpu,posix/mem".into()],
            images: Some(ImageFlags::default()),
            ..Default::default()
        };
        assert_eq!(
            rendered(&cfg, FlagFormat::Systemd),
            "# Drop-in for the Mesos agent unit, e.g. /etc/systemd/system/mesos-agent.service.d/weave.conf\n\
             [Service]\n\
             Environment=\"MESOS_ISOLATION=posix/cpu,posix/mem,filesystem/linux,docker/runtime,network/cni\"\n\
             Environment=\"MESOS_LAUNCHER=linux\"\n\
             Environment=\"MESOS_NETWORK_CNI_CONFIG_DIR=/etc/cni/net.d\"\n\
             Environment=\"MESOS_NETWORK_CNI_PLUGINS_DIR=/opt/cni/bin\"\n\
             Environment=\"MESOS_IMAGE_PROVIDERS=docker\"\n\
             Environment=\"MESOS_IMAGE_PROVISIONER_BACKEND=copy\"\n\
             Environment=\"MESOS_DOCKER_REGISTRY=/var/lib/mesos/docker-registry\"\n\
             Environment=\"MESOS_DOCKER_STORE_DIR=/var/lib/mesos/store/docker\"\n"
        );
    }

    #[test]
    fn isolators_are_not_duplicated() {
        let cfg = AgentFlagsConfig {
            isolation: vec!["network/cni".into(), "filesystem/linux,network/cni".into()],
            images: Some(ImageFlags::default()),
            ..Default::default()
        };
        let flags = agent_flags(&cfg).unwrap();
        assert_eq!(flags[0].1, "network/cni,filesystem/linux,docker/runtime");
    }

    #[test]
    fn second_network_isolator_is_refused() {
        let cfg = AgentFlagsConfig {
            isolation: vec!["network/port_mapping".into()],
            ..Default::default()
        };
        let err = agent_flags(&cfg).unwrap_err();
        assert!(err.message().contains("network/port_mapping"), "{err}");
        let ok = AgentFlagsConfig {
            isolation: vec!["network/ports".into()],
            ..Default::default()
        };
        assert_eq!(agent_flags(&ok).unwrap()[0].1, "network/ports,network/cni");
    }

    #[test]
    fn image_flags_golden_and_backend_checked() {
        let cfg = AgentFlagsConfig {
            images: Some(ImageFlags {
                provisioner_backend: "overlay".into(),
                docker_registry: "/srv/images".into(),
                docker_store_dir: "/srv/store".into(),
            }),
            ..Default::default()
        };
        assert_eq!(
            rendered(&cfg, FlagFormat::Flags),
            "--isolation=filesystem/linux,network/cni,docker/runtime\n\
             --launcher=linux\n\
             --network_cni_config_dir=/etc/cni/net.d\n\
             --network_cni_plugins_dir=/opt/cni/bin\n\
             --image_providers=docker\n\
             --image_provisioner_backend=overlay\n\
             --docker_registry=/srv/images\n\
             --docker_store_dir=/srv/store\n"
        );
        let bad = AgentFlagsConfig {
            images: Some(ImageFlags {
                provisioner_backend: "zfs".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = agent_flags(&bad).unwrap_err();
        assert_eq!(
            e.message(),
            "image provisioner backend \"zfs\": Mesos knows copy, overlay, bind, aufs"
        );
    }

    #[test]
    fn values_that_break_the_formats_are_refused() {
        let cfg = AgentFlagsConfig {
            cni_plugins_dir: "/opt/cni\nbin".into(),
            ..Default::default()
        };
        assert!(agent_flags(&cfg).is_err());
    }
}
