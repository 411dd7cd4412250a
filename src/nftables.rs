//! The only code that runs the `nft` binary. The router keeps its per-packet rules (the
//! connection-tracking exemptions) in a native nftables table of its own: no rule counters,
//! no xtables compatibility targets and no interface-name loads, which the same rules made
//! through iptables-nft cost on every bridged frame. A host without `nft` gets
//! [`ErrorKind::NotFound`] and the caller falls back to iptables.

use crate::{Error, ErrorKind, Result};
use std::process::Command;

/// Runs `nft -f -` fed `script`: one atomic transaction.
pub fn apply(script: &str) -> Result<()> {
    tracing::debug!("nft -f -:\n{script}");
    let mut cmd = Command::new("nft");
    cmd.args(["-f", "-"]);
    crate::iptables::feed(cmd, "nft", script)
}

/// Deletes table `name` of `family`; true if it existed. A host without `nft` has none.
pub fn delete_table(family: &str, name: &str) -> Result<bool> {
    let out = match Command::new("nft")
        .args(["delete", "table", family, name])
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::from(e).context("run nft")),
    };
    if out.status.success() {
        return Ok(true);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No such file or directory") {
        return Ok(false);
    }
    Err(Error::new(
        ErrorKind::Kernel,
        format!("delete nft table {family} {name}: {}", err.trim()),
    ))
}
