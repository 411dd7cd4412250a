//! Standard IPAM delegation: run the plugin named by `ipam.type` from `CNI_PATH` with the
//! same config on stdin and the same CNI_* environment (container ID overridable).

use crate::cni::{CmdArgs, Command, NetConf};
use crate::{Context, Error, ErrorKind, Result};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A delegated IPAM plugin may talk to a server of its own; it gets this long.
const DELEGATE_TIMEOUT: Duration = Duration::from_secs(60);

fn command_name(c: Command) -> &'static str {
    match c {
        Command::Add => "ADD",
        Command::Del => "DEL",
        Command::Check => "CHECK",
        Command::Version => "VERSION",
        Command::Status => "STATUS",
        Command::Gc => "GC",
    }
}

/// Finds `plugin_type` in `CNI_PATH`.
fn find(args: &CmdArgs, plugin_type: &str) -> Result<PathBuf> {
    if plugin_type.contains('/') || plugin_type.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!("bad IPAM plugin name {plugin_type:?}"),
        ));
    }
    args.path
        .iter()
        .map(|dir| dir.join(plugin_type))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            let dirs: Vec<String> = args.path.iter().map(|d| d.display().to_string()).collect();
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "find IPAM plugin {plugin_type:?} in CNI_PATH {:?}: not found",
                    dirs.join(":")
                ),
            )
        })
}

/// Runs the delegated IPAM plugin for `command` and returns its stdout JSON (`Null` if empty).
/// A non-zero exit becomes an error carrying the plugin's own message.
pub fn exec(
    args: &CmdArgs,
    conf: &NetConf,
    command: Command,
    container_id: &str,
) -> Result<serde_json::Value> {
    let plugin_type = conf.ipam.ipam_type.as_str();
    let what = || {
        format!(
            "run IPAM plugin {plugin_type:?} ({})",
            command_name(command)
        )
    };
    let bin = find(args, plugin_type)?;
    let cni_args: Vec<String> = args.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let cni_path: Vec<String> = args.path.iter().map(|p| p.display().to_string()).collect();
    let mut cmd = std::process::Command::new(&bin);
    cmd.env("CNI_COMMAND", command_name(command))
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_IFNAME", &args.ifname)
        .env("CNI_PATH", cni_path.join(":"))
        .env("CNI_ARGS", cni_args.join(";"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    match &args.netns {
        Some(ns) => cmd.env("CNI_NETNS", ns),
        None => cmd.env_remove("CNI_NETNS"),
    };
    let mut child = cmd.spawn().with_context(what)?;
    let stdin = serde_json::to_vec(&conf.raw)?;
    // A plugin that exits without reading stdin closes the pipe: not our error.
    let _ = child.stdin.take().map(|mut s| s.write_all(&stdin));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).map(|_| out)
    });
    let deadline = Instant::now() + DELEGATE_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().with_context(what)? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::new(
                ErrorKind::TryAgainLater,
                format!("no answer within {DELEGATE_TIMEOUT:?}"),
            )
            .context(what()));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let out = reader
        .join()
        .map_err(|_| Error::new(ErrorKind::Internal, "stdout reader panicked"))?;
    let out = out.with_context(what)?;
    let value: serde_json::Value = if out.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&out).context(what())?
    };
    if status.success() {
        return Ok(value);
    }
    let code = value.get("code").and_then(|c| c.as_u64());
    let msg = value.get("msg").and_then(|m| m.as_str()).unwrap_or("");
    let kind = if code == Some(11) {
        ErrorKind::TryAgainLater
    } else {
        ErrorKind::Router
    };
    let detail = match code {
        Some(c) => format!("code {c}: {msg}"),
        None => format!("exited with {status}"),
    };
    Err(Error::new(kind, detail).context(what()))
}
