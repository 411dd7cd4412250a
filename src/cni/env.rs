//! The CNI_* environment, validated all at once.

use crate::Result;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

/// The runtime's request, from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdArgs {
    pub command: Command,
    /// Empty only for VERSION, STATUS and GC.
    pub container_id: String,
    /// May be absent for DEL (Mesos after a reboot) and for VERSION/STATUS/GC.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_PATH`, split on `:`.
    pub path: Vec<PathBuf>,
    /// `CNI_ARGS` as key/value pairs (`IgnoreUnknown=1;K8S_POD_NAME=x`).
    pub args: Vec<(String, String)>,
}

impl CmdArgs {
    /// Reads and validates the environment through `get`. Every missing variable is named in
    /// one error of kind `Env`.
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<CmdArgs> {
        let _ = get;
        todo!("cni: CmdArgs::from_env")
    }
}
