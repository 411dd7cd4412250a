//! The only code that runs the iptables binaries. Every call waits at most 10 s for the
//! xtables lock (`-w 10`), so a stuck holder cannot hang the router, the CLI or a CNI call.

use crate::{Error, ErrorKind, Result};
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Seconds to wait for the xtables lock.
const LOCK_WAIT: &str = "10";

/// `iptables -w 10 ARGS...`, whatever its exit status (`-C` answers through it).
pub fn output(args: &[&str]) -> Result<Output> {
    Command::new("iptables")
        .args(["-w", LOCK_WAIT])
        .args(args)
        .output()
        .map_err(|e| Error::from(e).context("run iptables"))
}

/// `iptables -w 10 ARGS...`: its stdout, or an error `iptables ARGS: <stderr>`.
pub fn run(args: &[&str]) -> Result<String> {
    let out = output(args)?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(Error::new(
        ErrorKind::Kernel,
        format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    ))
}

/// `iptables-save [-t TABLE]`.
pub fn save(table: Option<&str>) -> Result<String> {
    let mut cmd = Command::new("iptables-save");
    if let Some(t) = table {
        cmd.args(["-t", t]);
    }
    let out = cmd
        .output()
        .map_err(|e| Error::from(e).context("run iptables-save"))?;
    if !out.status.success() {
        return Err(Error::new(
            ErrorKind::Kernel,
            format!(
                "run iptables-save: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `iptables-restore -w 10 --noflush` fed `script`: one atomic transaction per table.
pub fn restore_noflush(script: &str) -> Result<()> {
    tracing::debug!("iptables-restore --noflush:\n{script}");
    let mut cmd = Command::new("iptables-restore");
    cmd.args(["-w", LOCK_WAIT, "--noflush"]);
    feed(cmd, "iptables-restore", script)
}

/// Runs `cmd` with `script` on its stdin; an error `run NAME: <stderr>` if it fails. Also
/// the runner of [`crate::nftables`].
pub(crate) fn feed(mut cmd: Command, name: &str, script: &str) -> Result<()> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::from(e).context(format!("run {name}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| Error::from(e).context(format!("write to {name}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::from(e).context(format!("run {name}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Kernel,
        format!(
            "run {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    ))
}

/// Splits one `iptables -S` line into words, honouring `"..."` with `\"` and `\\` escapes.
/// `None` for a line with an unterminated quote.
pub fn split_rule(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return None;
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}
