//! Host check before starting an agent with weave: the plugin is where Mesos looks for it,
//! a config Mesos will load names it, and the router answers; with images, the local docker
//! registry holds tarballs Mesos can read. Each finding says what is missing and where,
//! because Mesos itself only logs and skips a bad config.

use crate::flags::{AgentFlagsConfig, ImageFlags};
use crate::http::{self, Request, Url};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The CNI plugin type weave's config must name.
pub const PLUGIN_TYPE: &str = "weave-net";
/// Where the router's status is read.
pub const DEFAULT_ROUTER_STATUS_URL: &str = "http://127.0.0.1:6784/status";

/// One finding: `ok` or a sentence saying what is wrong. A warning is `ok` (the agent
/// starts) but names something that may still fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub ok: bool,
    pub warning: bool,
    pub message: String,
}

/// All findings of a host check.
#[derive(Debug, Clone, Default)]
pub struct HostReport {
    pub findings: Vec<Finding>,
}

impl HostReport {
    pub fn ok(&self) -> bool {
        self.findings.iter().all(|f| f.ok)
    }

    fn push(&mut self, ok: bool, message: String) {
        self.findings.push(Finding {
            ok,
            warning: false,
            message,
        });
    }

    fn warn(&mut self, message: String) {
        self.findings.push(Finding {
            ok: true,
            warning: true,
            message,
        });
    }
}

impl std::fmt::Display for HostReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for x in &self.findings {
            let tag = match (x.ok, x.warning) {
                (false, _) => "MISSING:",
                (true, true) => "WARNING:",
                (true, false) => "ok:     ",
            };
            writeln!(f, "{tag} {}", x.message)?;
        }
        Ok(())
    }
}

/// Checks plugins, config and router for an agent started with `cfg`.
pub fn check_host(
    cfg: &AgentFlagsConfig,
    router_status_url: &str,
    timeout: Duration,
) -> HostReport {
    let mut report = HostReport::default();
    match which(PLUGIN_TYPE, &cfg.cni_plugins_dir) {
        Ok(p) => report.push(true, format!("plugin {PLUGIN_TYPE} at {}", p.display())),
        Err(e) => report.push(false, e),
    }
    match find_weave_config(&cfg.cni_config_dir) {
        Ok((path, name, ipam)) => {
            report.push(
                true,
                format!(
                    "CNI network {name:?} of type {PLUGIN_TYPE} in {}",
                    path.display()
                ),
            );
            if let Some(ipam) = ipam {
                match which(&ipam, &cfg.cni_plugins_dir) {
                    Ok(p) => report.push(true, format!("IPAM plugin {ipam} at {}", p.display())),
                    Err(e) => report.push(
                        false,
                        format!("{e} (named by ipam.type in {})", path.display()),
                    ),
                }
            }
        }
        Err(e) => report.push(false, e),
    }
    match router_status(router_status_url, timeout) {
        Ok(()) => report.push(true, format!("router answers GET {router_status_url}")),
        Err(e) => report.push(
            false,
            format!("router does not answer GET {router_status_url}: {e}"),
        ),
    }
    if let Some(images) = &cfg.images {
        check_images(images, &mut report);
    }
    report
}

/// What an agent with `--image_providers=docker` needs: readable image tarballs in a local
/// `--docker_registry`, a usable `--docker_store_dir`, `tar` (Mesos' local puller untars
/// with it), and `/proc/sysrq-trigger`, which Mesos 1.11 bind-mounts into every image
/// container.
fn check_images(img: &ImageFlags, report: &mut HostReport) {
    let registry = img
        .docker_registry
        .strip_prefix("file://")
        .unwrap_or(&img.docker_registry);
    if !registry.starts_with('/') {
        report.push(
            true,
            format!(
                "--docker_registry {registry} is remote: images are pulled from it (not checked)"
            ),
        );
    } else {
        for (ok, message) in local_images(Path::new(registry)) {
            report.push(ok, message);
        }
    }
    let store = &img.docker_store_dir;
    match store.ancestors().find(|a| a.exists()) {
        Some(a) if a.is_dir() => report.push(
            true,
            format!(
                "--docker_store_dir {} (under {})",
                store.display(),
                a.display()
            ),
        ),
        Some(a) => report.push(
            false,
            format!(
                "--docker_store_dir {}: {} is not a directory",
                store.display(),
                a.display()
            ),
        ),
        None => report.push(
            false,
            format!("--docker_store_dir {}: no such path", store.display()),
        ),
    }
    let path = std::env::var("PATH").unwrap_or_default();
    match which("tar", &path) {
        Ok(p) => report.push(
            true,
            format!("tar at {} (unpacks image layers)", p.display()),
        ),
        Err(_) => report.push(
            false,
            format!("tar not found in PATH {path}: Mesos' local docker puller needs it"),
        ),
    }
    if !Path::new("/proc/sysrq-trigger").exists() {
        report.warn(
            "/proc/sysrq-trigger is missing (kernel without CONFIG_MAGIC_SYSRQ): Mesos 1.11 \
             bind-mounts it read-only into every image container, so a stock agent fails \
             image launches on this kernel"
                .to_string(),
        );
    }
}

/// One finding per `NAME.tar` in a local registry dir: Mesos reads `<dir>/<name>.tar` for
/// `docker.name=<name>` and looks the name up in the tarball's `repositories`.
pub fn local_images(dir: &Path) -> Vec<(bool, String)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            return vec![(
                false,
                format!("read --docker_registry {}: {e}", dir.display()),
            )]
        }
    };
    let mut tars: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "tar"))
        .collect();
    tars.sort();
    if tars.is_empty() {
        return vec![(
            false,
            format!(
                "no image tarballs (NAME.tar, `docker save` format) in --docker_registry {}",
                dir.display()
            ),
        )];
    }
    tars.iter()
        .map(|tar| {
            let name = tar
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            match image_names(tar) {
                Ok(names) if names.contains(&name) => {
                    (true, format!("image {name} in {}", tar.display()))
                }
                Ok(names) => (
                    false,
                    format!(
                        "{}: its repositories name {names:?}, but Mesos looks up {name:?} \
                         (the file name without .tar)",
                        tar.display()
                    ),
                ),
                Err(e) => (false, format!("{}: {e}", tar.display())),
            }
        })
        .collect()
}

/// The image names (keys of `repositories`) in a `docker save` tarball.
fn image_names(tar: &Path) -> Result<Vec<String>, String> {
    let mut last = String::new();
    for member in ["repositories", "./repositories"] {
        let out = std::process::Command::new("tar")
            .arg("-xOf")
            .arg(tar)
            .arg(member)
            .output()
            .map_err(|e| format!("run tar: {e}"))?;
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .map_err(|e| format!("repositories is not JSON: {e}"))?;
            let obj = v.as_object().ok_or("repositories is not a JSON object")?;
            return Ok(obj.keys().cloned().collect());
        }
        last = String::from_utf8_lossy(&out.stderr).trim().to_string();
    }
    Err(format!(
        "not a `docker save` tarball (no repositories file: {last})"
    ))
}

/// Mesos' `os::which`: the first directory of the colon-separated `path` holding a file
/// `name` with any execute bit.
pub fn which(name: &str, path: &str) -> Result<PathBuf, String> {
    let mut not_exec = Vec::new();
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
            not_exec.push(candidate.display().to_string());
        }
    }
    if not_exec.is_empty() {
        Err(format!(
            "plugin {name} not found in --network_cni_plugins_dir {path}"
        ))
    } else {
        Err(format!(
            "plugin {name} is not an executable file: {}",
            not_exec.join(", ")
        ))
    }
}

/// The first file in `dir` (readdir order, every non-directory, as Mesos reads them) whose
/// top-level `type` is weave-net: its path, network name and `ipam.type`.
pub fn find_weave_config(dir: &Path) -> Result<(PathBuf, String, Option<String>), String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("read --network_cni_config_dir {}: {e}", dir.display()))?;
    let mut skipped = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            continue;
        }
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&text) else {
            continue;
        };
        let ty = json.get("type").and_then(|t| t.as_str());
        let plugins = json.get("plugins").and_then(|p| p.as_array());
        if ty.is_none() && plugins.is_some_and(|p| p.iter().any(|x| x["type"] == PLUGIN_TYPE)) {
            skipped.push(format!(
                "{} is a conflist (no top-level type): Mesos skips conflists, install a single-plugin .conf",
                path.display()
            ));
            continue;
        }
        if ty != Some(PLUGIN_TYPE) {
            continue;
        }
        match json.get("name").and_then(|n| n.as_str()) {
            Some(name) => {
                let ipam = json
                    .pointer("/ipam/type")
                    .and_then(|t| t.as_str())
                    .map(str::to_string);
                return Ok((path, name.to_string(), ipam));
            }
            None => skipped.push(format!(
                "{} has no \"name\": Mesos skips it",
                path.display()
            )),
        }
    }
    let mut msg = format!(
        "no CNI config with \"type\": \"{PLUGIN_TYPE}\" in {}",
        dir.display()
    );
    for s in skipped {
        msg.push_str("; ");
        msg.push_str(&s);
    }
    Err(msg)
}

fn router_status(url: &str, timeout: Duration) -> crate::Result<()> {
    let url = Url::parse(url, 6784)?;
    let client = http::blocking::Client::new(http::Client::new().with_timeouts(timeout, timeout))?;
    let resp = client.fetch(&Request::get(url), 1 << 20)?;
    if resp.head.status == 200 {
        Ok(())
    } else {
        Err(crate::Error::new(
            crate::ErrorKind::Router,
            format!("answered {} {}", resp.head.status, resp.head.reason),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn exec_file(path: &Path, mode: u32) {
        fs::write(path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn which_follows_the_search_path_and_needs_an_x_bit() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let path = format!("{}:{}", a.path().display(), b.path().display());
        let err = which("weave-net", &path).unwrap_err();
        assert!(
            err.starts_with("plugin weave-net not found in --network_cni_plugins_dir"),
            "{err}"
        );
        exec_file(&a.path().join("weave-net"), 0o644);
        let err = which("weave-net", &path).unwrap_err();
        assert!(
            err.starts_with("plugin weave-net is not an executable file"),
            "{err}"
        );
        exec_file(&b.path().join("weave-net"), 0o755);
        assert_eq!(
            which("weave-net", &path).unwrap(),
            b.path().join("weave-net")
        );
    }

    #[test]
    fn config_must_be_single_plugin_weave_net() {
        let d = tempfile::tempdir().unwrap();
        let err = find_weave_config(d.path()).unwrap_err();
        assert!(
            err.starts_with("no CNI config with \"type\": \"weave-net\""),
            "{err}"
        );
        fs::write(
            d.path().join("10-weave.conflist"),
            r#"{"cniVersion":"0.4.0","name":"weave","plugins":[{"type":"weave-net"}]}"#,
        )
        .unwrap();
        fs::write(
            d.path().join("other.conf"),
            r#"{"name":"b","type":"bridge"}"#,
        )
        .unwrap();
        let err = find_weave_config(d.path()).unwrap_err();
        assert!(
            err.contains("is a conflist (no top-level type): Mesos skips conflists"),
            "{err}"
        );
        fs::write(
            d.path().join("weave.conf"),
            r#"{"cniVersion":"0.2.0","name":"weave","type":"weave-net","ipam":{"type":"weave-ipam"}}"#,
        )
        .unwrap();
        let (path, name, ipam) = find_weave_config(d.path()).unwrap();
        assert_eq!(
            (path, name.as_str(), ipam.as_deref()),
            (d.path().join("weave.conf"), "weave", Some("weave-ipam"))
        );
    }

    /// A tarball whose `repositories` (written with or without `./`) names `keys`.
    fn tarball(dir: &Path, file: &str, keys: &[&str], dot: bool) {
        let src = tempfile::tempdir().unwrap();
        let repos: serde_json::Map<String, serde_json::Value> = keys
            .iter()
            .map(|k| (k.to_string(), serde_json::json!({"latest": "abc"})))
            .collect();
        fs::write(
            src.path().join("repositories"),
            serde_json::Value::Object(repos).to_string(),
        )
        .unwrap();
        let member = if dot {
            "./repositories"
        } else {
            "repositories"
        };
        let ok = std::process::Command::new("tar")
            .arg("-C")
            .arg(src.path())
            .arg("-cf")
            .arg(dir.join(file))
            .arg(member)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    #[test]
    fn local_registry_tarballs_must_name_their_image() {
        let d = tempfile::tempdir().unwrap();
        let found = local_images(d.path());
        assert_eq!(found.len(), 1);
        assert!(
            !found[0].0 && found[0].1.starts_with("no image tarballs"),
            "{found:?}"
        );
        tarball(d.path(), "alpine.tar", &["alpine"], false);
        tarball(d.path(), "busy.tar", &["busybox"], true);
        fs::write(d.path().join("junk.tar"), "not a tarball").unwrap();
        fs::write(d.path().join("README"), "ignored").unwrap();
        let found = local_images(d.path());
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(
            found[0],
            (
                true,
                format!("image alpine in {}", d.path().join("alpine.tar").display())
            )
        );
        assert!(!found[1].0, "{found:?}");
        assert!(
            found[1]
                .1
                .ends_with("its repositories name [\"busybox\"], but Mesos looks up \"busy\" (the file name without .tar)"),
            "{found:?}"
        );
        assert!(!found[2].0);
        assert!(
            found[2].1.contains("not a `docker save` tarball"),
            "{found:?}"
        );
    }

    #[test]
    fn report_names_every_missing_piece() {
        let d = tempfile::tempdir().unwrap();
        // Nothing listens on port 1 of loopback: the router check must fail fast.
        let cfg = AgentFlagsConfig {
            cni_config_dir: d.path().join("conf"),
            cni_plugins_dir: d.path().join("bin").display().to_string(),
            ..Default::default()
        };
        let report = check_host(&cfg, "http://127.0.0.1:1/status", Duration::from_secs(2));
        assert!(!report.ok());
        let text = report.to_string();
        assert_eq!(text.lines().count(), 3, "{text}");
        let with_images = AgentFlagsConfig {
            images: Some(ImageFlags {
                docker_registry: d.path().join("registry").display().to_string(),
                docker_store_dir: d.path().join("store/docker"),
                ..Default::default()
            }),
            ..cfg
        };
        let text = check_host(
            &with_images,
            "http://127.0.0.1:1/status",
            Duration::from_secs(2),
        )
        .to_string();
        assert!(text.contains("MISSING: read --docker_registry"), "{text}");
        assert!(text.contains("ok:      --docker_store_dir"), "{text}");
        assert!(
            text.contains("MISSING: plugin weave-net not found"),
            "{text}"
        );
        assert!(
            text.contains("MISSING: read --network_cni_config_dir"),
            "{text}"
        );
        assert!(
            text.contains("MISSING: router does not answer GET http://127.0.0.1:1/status"),
            "{text}"
        );
    }
}
