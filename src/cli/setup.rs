//! `weave setup`: install the CNI plugin binaries and the network config.
//!
//! Binaries are replaced atomically (a runtime may exec them at any moment); the config is
//! written only when absent so user edits survive upgrades, as Weave's script did.

use super::{CliResult, Failure};
use crate::{Context, Error, Result};
use serde::Serialize;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Plugin binaries shipped next to the `weave` executable.
pub const PLUGIN_BINARIES: [&str; 2] = ["weave-net", "weave-ipam"];
/// The network config list we write.
pub const CONFLIST_NAME: &str = "10-weave.conflist";
/// Weave's pre-2.5 single-plugin config, replaced by the conflist.
pub const LEGACY_CONF_NAME: &str = "10-weave.conf";

/// Where to install. The one conflist serves libcni runtimes and Mesos alike (see
/// [`default_conflist`]).
#[derive(Debug, Clone)]
pub struct SetupOptions {
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
}

/// One network config file `weave setup` owns: written if absent, plus legacy files it
/// replaces (removed only if they still hold exactly what Weave once wrote).
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub name: &'static str,
    pub content: String,
    pub legacy: Vec<(&'static str, serde_json::Value)>,
}

impl SetupOptions {
    /// The config files to write for these options.
    pub fn config_files(&self) -> Vec<ConfigFile> {
        vec![ConfigFile {
            name: CONFLIST_NAME,
            content: default_conflist(),
            legacy: vec![(
                LEGACY_CONF_NAME,
                serde_json::json!({"name": "weave", "type": "weave-net"}),
            )],
        }]
    }
}

/// What `install` did, one line per file, for the user.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SetupReport {
    pub lines: Vec<String>,
}

/// One file for every runtime: libcni (containerd, podman, CRI-O) reads a `.conflist` as
/// `{cniVersion, name, plugins}` and ignores other top-level keys; a Mesos agent reads every
/// file in the directory as a single-plugin config (top-level `name` and `type`, the rest
/// ignored) and skips files without `type`. The top-level `type` and `hairpinMode` make the
/// conflist a valid Mesos config too; the plugin answers Mesos in the 0.2.0 result shape
/// whatever `cniVersion` says (see `cni::skel::result_version_for`).
#[derive(Serialize)]
struct ConfList {
    #[serde(rename = "cniVersion")]
    cni_version: &'static str,
    name: &'static str,
    /// Read by Mesos only.
    #[serde(rename = "type")]
    plugin_type: &'static str,
    /// Read by Mesos only (libcni takes it from `plugins[0]`).
    #[serde(rename = "hairpinMode")]
    hairpin_mode: bool,
    plugins: (WeavePlugin, PortmapPlugin),
}

#[derive(Serialize)]
struct WeavePlugin {
    name: &'static str,
    #[serde(rename = "type")]
    plugin_type: &'static str,
    #[serde(rename = "hairpinMode")]
    hairpin_mode: bool,
}

#[derive(Serialize)]
struct PortmapPlugin {
    #[serde(rename = "type")]
    plugin_type: &'static str,
    capabilities: PortmapCapabilities,
    snat: bool,
}

#[derive(Serialize)]
struct PortmapCapabilities {
    #[serde(rename = "portMappings")]
    port_mappings: bool,
}

/// The `10-weave.conflist` content, pretty-printed with a trailing newline (keys in the
/// order Weave wrote them).
pub fn default_conflist() -> String {
    let list = ConfList {
        cni_version: "1.0.0",
        name: "weave",
        plugin_type: "weave-net",
        hairpin_mode: true,
        plugins: (
            WeavePlugin {
                name: "weave",
                plugin_type: "weave-net",
                hairpin_mode: true,
            },
            PortmapPlugin {
                plugin_type: "portmap",
                capabilities: PortmapCapabilities {
                    port_mappings: true,
                },
                snat: true,
            },
        ),
    };
    let mut s = serde_json::to_string_pretty(&list).expect("static conflist serializes");
    s.push('\n');
    s
}

/// `weave setup`.
pub(super) fn run(opts: &SetupOptions) -> CliResult {
    let report = install(opts).map_err(|e| Failure::new(1, e.to_string()))?;
    for line in report.lines {
        println!("{line}");
    }
    Ok(())
}

/// Installs the plugins found next to the running executable, and the network config.
pub fn install(opts: &SetupOptions) -> Result<SetupReport> {
    let exe = std::env::current_exe().context("find the weave executable")?;
    let source_dir = exe.parent().unwrap_or(Path::new("/")).to_path_buf();
    install_from(&source_dir, opts)
}

/// Installs the plugin binaries from `source_dir`, then the configs.
pub fn install_from(source_dir: &Path, opts: &SetupOptions) -> Result<SetupReport> {
    let mut report = SetupReport::default();
    for dir in [&opts.bin_dir, &opts.conf_dir] {
        fs::create_dir_all(dir).with_context(|| format!("create directory {}", dir.display()))?;
    }
    for name in PLUGIN_BINARIES {
        let src = source_dir.join(name);
        let dst = opts.bin_dir.join(name);
        if install_binary(&src, &dst)? {
            report.lines.push(format!("Installed {}", dst.display()));
        } else {
            report.lines.push(format!("Up to date {}", dst.display()));
        }
    }
    for file in opts.config_files() {
        for (legacy_name, legacy_content) in &file.legacy {
            let path = opts.conf_dir.join(legacy_name);
            if remove_if_content(&path, legacy_content)? {
                report
                    .lines
                    .push(format!("Removed legacy {}", path.display()));
            }
        }
        let path = opts.conf_dir.join(file.name);
        if write_if_absent(&path, file.content.as_bytes())? {
            report.lines.push(format!("Wrote {}", path.display()));
        } else {
            report
                .lines
                .push(format!("Kept existing {}", path.display()));
        }
    }
    Ok(report)
}

/// Copies `src` over `dst` atomically (`dst.tmp`, fsync, chmod 755, rename). Returns false
/// when `dst` is already a regular file with the same bytes and mode 755.
fn install_binary(src: &Path, dst: &Path) -> Result<bool> {
    let bytes = fs::read(src).with_context(|| format!("read plugin binary {}", src.display()))?;
    if let Ok(meta) = fs::symlink_metadata(dst) {
        if meta.file_type().is_file()
            && meta.permissions().mode() & 0o777 == 0o755
            && meta.len() == bytes.len() as u64
            && fs::read(dst).map(|old| old == bytes).unwrap_or(false)
        {
            return Ok(false);
        }
    }
    let tmp = tmp_path(dst);
    remove_if_exists(&tmp)?;
    write_synced(&tmp, &bytes, 0o755)?;
    fs::rename(&tmp, dst)
        .with_context(|| format!("rename {} to {}", tmp.display(), dst.display()))?;
    sync_dir(dst);
    Ok(true)
}

/// Writes `path` only if nothing is there: a complete temp file is hard-linked into place,
/// which fails rather than clobbers if someone created the file meanwhile.
fn write_if_absent(path: &Path, content: &[u8]) -> Result<bool> {
    if fs::symlink_metadata(path).is_ok() {
        return Ok(false);
    }
    let tmp = tmp_path(path);
    remove_if_exists(&tmp)?;
    write_synced(&tmp, content, 0o644)?;
    let linked = match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        // Filesystems without hard links: fall back to rename (a tiny clobber window).
        Err(_) => fs::rename(&tmp, path)
            .with_context(|| format!("rename {} to {}", tmp.display(), path.display()))
            .map(|()| true),
    };
    remove_if_exists(&tmp)?;
    sync_dir(path);
    linked
}

/// Removes `path` if it parses as JSON equal to `expected`; anything else is the user's.
fn remove_if_content(path: &Path, expected: &serde_json::Value) -> Result<bool> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::from(e).context(format!("read {}", path.display()))),
    };
    match serde_json::from_slice::<serde_json::Value>(&text) {
        Ok(v) if &v == expected => {
            fs::remove_file(path).with_context(|| format!("remove {}", path.display()))?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::from(e).context(format!("remove {}", path.display()))),
    }
}

fn write_synced(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(path)?;
        f.write_all(content)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()
    };
    write().with_context(|| format!("write {}", path.display()))
}

/// Makes the rename durable; best effort (some filesystems refuse to fsync a directory).
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_has_weave_order_and_content() {
        let text = default_conflist();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion":"1.0.0","name":"weave","type":"weave-net",
                "hairpinMode":true,"plugins":[
                {"name":"weave","type":"weave-net","hairpinMode":true},
                {"type":"portmap","capabilities":{"portMappings":true},"snat":true}]})
        );
        let cni = text.find("cniVersion").unwrap();
        let plugins = text.find("plugins").unwrap();
        assert!(
            cni < plugins
                && text.find("\"type\": \"weave-net\"").unwrap()
                    < text.find("hairpinMode").unwrap()
        );
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn tmp_path_is_in_same_dir() {
        assert_eq!(
            tmp_path(Path::new("/a/b/weave-net")),
            Path::new("/a/b/weave-net.tmp")
        );
    }
}
