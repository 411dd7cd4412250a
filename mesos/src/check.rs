//! Host check before starting an agent with weave: the plugin is where Mesos looks for it,
//! a config Mesos will load names it, and the router answers. Each finding says what is
//! missing and where, because Mesos itself only logs and skips a bad config.

use crate::flags::AgentFlagsConfig;
use crate::http::{self, Request, Url};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The CNI plugin type weave's config must name.
pub const PLUGIN_TYPE: &str = "weave-net";
/// Where the router's status is read.
pub const DEFAULT_ROUTER_STATUS_URL: &str = "http://127.0.0.1:6784/status";

/// One finding: `ok` or a sentence saying what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub ok: bool,
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
        self.findings.push(Finding { ok, message });
    }
}

impl std::fmt::Display for HostReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for x in &self.findings {
            writeln!(
                f,
                "{} {}",
                if x.ok { "ok:     " } else { "MISSING:" },
                x.message
            )?;
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
    report
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
