//! Plugin dispatch: read env and stdin, call the plugin, print the result or the error JSON.
//! `main` is a three-line shim over [`dispatch`]; tests call it directly.
//!
//! stdout carries exactly one JSON document (result or error) or nothing; logs go to stderr
//! through `tracing`, because runtimes parse stdout.

use super::config::{NetConf, MESOS_ARGS_KEY};
use super::env::{CmdArgs, Command};
use super::error::CniError;
use super::json::CONFIG;
use super::result::AddResult;
use super::version::{self, CniVersion, CURRENT_VERSION};
use crate::{Error, ErrorKind, Result};
use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// One `cni.dev/valid-attachments` entry of a GC request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcAttachment {
    pub container_id: String,
    pub ifname: String,
}

/// What a plugin implements; dispatch handles VERSION and all encoding.
pub trait CniPlugin {
    fn add(&self, args: &CmdArgs, conf: &NetConf) -> Result<AddResult>;
    fn del(&self, args: &CmdArgs, conf: &NetConf) -> Result<()>;
    fn check(&self, args: &CmdArgs, conf: &NetConf) -> Result<()>;
    fn status(&self, conf: &NetConf) -> Result<()>;
    fn gc(&self, conf: &NetConf, valid: &[GcAttachment]) -> Result<()>;
}

/// The key under which a GC request lists the attachments to keep.
pub const VALID_ATTACHMENTS_KEY: &str = "cni.dev/valid-attachments";

/// Reads `cni.dev/valid-attachments` from a GC config; absent means none are valid.
pub fn parse_valid_attachments(raw: &serde_json::Value) -> Result<Vec<GcAttachment>> {
    let Some(top) = raw.as_object() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, v) in CONFIG
        .opt_array(top, VALID_ATTACHMENTS_KEY, "")?
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("{VALID_ATTACHMENTS_KEY}[{i}]");
        let o = CONFIG.object(v, &path)?;
        out.push(GcAttachment {
            container_id: CONFIG.req_str(o, "containerID", &path)?.to_string(),
            ifname: CONFIG.req_str(o, "ifname", &path)?.to_string(),
        });
    }
    Ok(out)
}

/// The `cniVersion` a stdin document claims, if it is one we speak; used to label errors and
/// answer VERSION even when the rest of the document is unusable.
fn claimed_version(stdin: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(stdin).ok()?;
    let claimed = v.get("cniVersion")?.as_str()?;
    version::is_supported(claimed).then(|| claimed.to_string())
}

/// Turns a plugin panic into an `Internal` error so the runtime still gets an error JSON.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let cause = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        Err(Error::new(
            ErrorKind::Internal,
            format!("{what}: plugin panicked: {cause}"),
        ))
    })
}

/// Whether the config came from a Mesos agent: it injects `args["org.apache.mesos"]`.
pub fn is_from_mesos(conf: &NetConf) -> bool {
    conf.mesos.is_some()
        || conf
            .raw
            .get("args")
            .and_then(|a| a.get(MESOS_ARGS_KEY))
            .is_some()
}

/// The version whose shape an ADD result is encoded in. Mesos (up to 1.11 and HEAD) parses
/// only the 0.1/0.2 shape (`ip4`) whatever `cniVersion` the file says, and reports no IP
/// for a newer one; so a config that `weave setup` wrote as 1.0.0 for libcni is answered
/// in the 0.2.0 shape when Mesos is the caller.
pub fn result_version_for(conf: &NetConf) -> CniVersion {
    let v = conf.result_version();
    if is_from_mesos(conf) && !v.has_legacy_result() {
        CniVersion::V0_2_0
    } else {
        v
    }
}

/// What one command produced: a document for stdout, or nothing.
fn run(
    get_env: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
    plugin: &dyn CniPlugin,
) -> Result<Option<serde_json::Value>> {
    let args = CmdArgs::from_env(get_env)?;
    if args.command == Command::Version {
        return Ok(Some(version::version_info(
            claimed_version(stdin).as_deref(),
        )));
    }
    let conf = match NetConf::parse(stdin) {
        Ok(conf) => conf,
        // A DEL whose config cannot be used must not wedge the runtime's teardown (Mesos
        // calls DEL even after a failed ADD, with the same config): clean up by container ID
        // and interface name with weave's defaults instead, and fail only if that fails.
        Err(e) if args.command == Command::Del => {
            tracing::warn!(container_id = %args.container_id, "DEL with unusable network config, cleaning up with defaults: {e}");
            NetConf::fallback_for_del()
        }
        Err(e) => return Err(e),
    };
    let what = args.command.as_str();
    tracing::debug!(command = what, container_id = %args.container_id, ifname = %args.ifname, network = %conf.name, "cni request");
    match args.command {
        Command::Add => {
            let result = guarded(what, || plugin.add(&args, &conf))?;
            Ok(Some(result.encode_for(result_version_for(&conf))))
        }
        Command::Del => guarded(what, || plugin.del(&args, &conf)).map(|()| None),
        Command::Check => guarded(what, || plugin.check(&args, &conf)).map(|()| None),
        Command::Status => guarded(what, || plugin.status(&conf)).map(|()| None),
        Command::Gc => {
            let valid = parse_valid_attachments(&conf.raw)?;
            guarded(what, || plugin.gc(&conf, &valid)).map(|()| None)
        }
        Command::Version => unreachable!("handled above"),
    }
}

fn write_json(stdout: &mut dyn Write, v: &serde_json::Value) -> bool {
    let written = serde_json::to_writer_pretty(&mut *stdout, v)
        .map_err(std::io::Error::from)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    if let Err(e) = &written {
        tracing::error!("write to stdout: {e}");
    }
    written.is_ok()
}

/// Runs one CNI command. Writes only the result or the error JSON to `stdout`; returns the
/// process exit code (0 or 1).
pub fn dispatch(
    get_env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    plugin: &dyn CniPlugin,
) -> i32 {
    // Read stdin whatever the command: a runtime writing a config we never read would see EPIPE.
    let mut input = Vec::new();
    let outcome = match stdin.read_to_end(&mut input) {
        Ok(_) => run(get_env, &input, plugin),
        Err(e) => Err(Error::from(e).context("read stdin")),
    };
    match outcome {
        Ok(None) => 0,
        Ok(Some(doc)) => {
            if write_json(stdout, &doc) {
                0
            } else {
                1
            }
        }
        Err(e) => {
            let command = get_env("CNI_COMMAND").unwrap_or_default();
            tracing::error!(command = %command, "{e}");
            let label = claimed_version(&input).unwrap_or_else(|| CURRENT_VERSION.to_string());
            write_json(stdout, &CniError::from_error(&e).to_json(&label));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn valid_attachments_absent_present_and_malformed() {
        assert_eq!(parse_valid_attachments(&json!({})).unwrap(), []);
        let v = json!({"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]});
        assert_eq!(
            parse_valid_attachments(&v).unwrap(),
            [GcAttachment {
                container_id: "a".into(),
                ifname: "eth0".into()
            }]
        );
        let bad = json!({"cni.dev/valid-attachments":[{"containerID":"a"}]});
        assert_eq!(
            parse_valid_attachments(&bad).unwrap_err().kind(),
            ErrorKind::InvalidConfig
        );
    }

    #[test]
    fn claimed_version_only_when_supported() {
        assert_eq!(
            claimed_version(br#"{"cniVersion":"0.4.0"}"#).as_deref(),
            Some("0.4.0")
        );
        assert_eq!(claimed_version(br#"{"cniVersion":"9.0.0"}"#), None);
        assert_eq!(claimed_version(b""), None);
    }

    #[test]
    fn panics_become_internal_errors() {
        let e = guarded::<()>("ADD", || panic!("boom")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert_eq!(e.message(), "ADD: plugin panicked: boom");
    }
}
