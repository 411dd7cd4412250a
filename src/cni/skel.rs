//! Plugin dispatch: read env and stdin, call the plugin, print the result or the error JSON.
//! `main` is a three-line shim over [`dispatch`]; tests call it directly.

use super::config::NetConf;
use super::env::CmdArgs;
use super::result::AddResult;
use crate::Result;
use std::io::{Read, Write};

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

/// Runs one CNI command. Writes only the result or the error JSON to `stdout`; returns the
/// process exit code (0 or 1).
pub fn dispatch(
    get_env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    plugin: &dyn CniPlugin,
) -> i32 {
    let _ = (get_env, stdin, stdout, plugin);
    todo!("cni: dispatch")
}
