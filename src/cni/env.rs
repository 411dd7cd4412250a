//! The CNI_* environment, validated all at once.

use crate::{Error, ErrorKind, Result};
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

impl Command {
    /// Parses a `CNI_COMMAND` value (exact, upper case as the spec writes them).
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }

    /// Variables that must be set and non-empty for this command, in the order reported.
    fn required_vars(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => {
                &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
            }
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
            Command::Version | Command::Status | Command::Gc => &[],
        }
    }
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

/// Longest container ID we accept; IDs are used in file names and HTTP paths.
const MAX_CONTAINER_ID_LEN: usize = 255;

/// CNI spec rule: starts with an alphanumeric, then alphanumerics, `_`, `.` or `-`. This covers
/// Docker hex IDs, Kubernetes sandbox IDs and Mesos' dot-joined nested UUIDs.
pub fn validate_container_id(id: &str) -> std::result::Result<(), String> {
    if id.len() > MAX_CONTAINER_ID_LEN {
        return Err(format!("longer than {MAX_CONTAINER_ID_LEN} characters"));
    }
    let mut chars = id.chars();
    match chars.next() {
        None => return Err("empty".to_string()),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err("must start with a letter or digit".to_string())
        }
        Some(_) => {}
    }
    if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "character {bad:?} not allowed (letters, digits, '_', '.', '-')"
        ));
    }
    Ok(())
}

/// Linux interface name rule: 1 to 15 bytes, no `/`, `:` or whitespace, not `.` or `..`.
pub fn validate_ifname(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("empty".to_string());
    }
    if name.len() >= 16 {
        return Err(format!("{} bytes long, the maximum is 15", name.len()));
    }
    if name == "." || name == ".." {
        return Err("not a valid interface name".to_string());
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err("must not contain '/', ':' or whitespace".to_string());
    }
    Ok(())
}

/// Parses `K=V;K2=V2`. Empty segments (a trailing `;`) are skipped; a segment without `=` or
/// with an empty key is an error.
pub fn parse_cni_args(s: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for segment in s.split(';').filter(|seg| !seg.is_empty()) {
        match segment.split_once('=') {
            Some((k, v)) if !k.is_empty() => pairs.push((k.to_string(), v.to_string())),
            _ => {
                return Err(Error::new(
                    ErrorKind::Env,
                    format!("invalid CNI_ARGS {s:?}: {segment:?} is not KEY=VALUE"),
                ))
            }
        }
    }
    Ok(pairs)
}

fn env_error(var: &str, value: &str, why: &str) -> Error {
    Error::new(ErrorKind::Env, format!("invalid {var} {value:?}: {why}"))
}

impl CmdArgs {
    /// Reads and validates the environment through `get`. Every missing variable is named in
    /// one error of kind `Env`. VERSION reads nothing but `CNI_COMMAND`.
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<CmdArgs> {
        // Empty counts as unset: runtimes that build env lists often emit `CNI_NETNS=`.
        let var = |name: &str| get(name).filter(|v| !v.is_empty());
        let Some(command_str) = var("CNI_COMMAND") else {
            return Err(Error::new(
                ErrorKind::Env,
                "required environment variables missing: CNI_COMMAND",
            ));
        };
        let command = Command::parse(&command_str).ok_or_else(|| {
            Error::new(
                ErrorKind::Env,
                format!("unknown CNI_COMMAND {command_str:?}"),
            )
        })?;
        if command == Command::Version {
            return Ok(CmdArgs {
                command,
                container_id: String::new(),
                netns: None,
                ifname: String::new(),
                path: Vec::new(),
                args: Vec::new(),
            });
        }

        let missing: Vec<&str> = command
            .required_vars()
            .iter()
            .copied()
            .filter(|name| var(name).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(Error::new(
                ErrorKind::Env,
                format!(
                    "required environment variables missing: {}",
                    missing.join(", ")
                ),
            ));
        }

        let container_id = var("CNI_CONTAINERID").unwrap_or_default();
        if !container_id.is_empty() {
            validate_container_id(&container_id)
                .map_err(|why| env_error("CNI_CONTAINERID", &container_id, &why))?;
        }
        let ifname = var("CNI_IFNAME").unwrap_or_default();
        if !ifname.is_empty() {
            validate_ifname(&ifname).map_err(|why| env_error("CNI_IFNAME", &ifname, &why))?;
        }
        let netns = var("CNI_NETNS").map(PathBuf::from);
        let path = var("CNI_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        let args = match var("CNI_ARGS") {
            Some(s) => parse_cni_args(&s)?,
            None => Vec::new(),
        };
        Ok(CmdArgs {
            command,
            container_id,
            netns,
            ifname,
            path,
            args,
        })
    }

    /// The value of a `CNI_ARGS` key, if given.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<CmdArgs> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CmdArgs::from_env(&|k| map.get(k).cloned())
    }

    #[test]
    fn add_reads_everything() {
        let a = from(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc.def-1_2"),
            ("CNI_NETNS", "/proc/1/ns/net"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni:"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web-0;"),
        ])
        .unwrap();
        assert_eq!(a.command, Command::Add);
        assert_eq!(a.netns, Some(PathBuf::from("/proc/1/ns/net")));
        assert_eq!(
            a.path,
            [PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        assert_eq!(a.arg("K8S_POD_NAME"), Some("web-0"));
        assert_eq!(a.arg("nope"), None);
    }

    #[test]
    fn container_id_rule() {
        assert!(
            validate_container_id("5baff64c-d028-47ba-864e-a5ee679fc069.0d5f8a33-1b5c").is_ok()
        );
        assert!(validate_container_id("-x").is_err());
        assert!(validate_container_id("a b").is_err());
        assert!(validate_container_id("a/b").is_err());
        assert!(validate_container_id(&"a".repeat(255)).is_ok());
        assert!(validate_container_id(&"a".repeat(256)).is_err());
    }

    #[test]
    fn ifname_rule() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname(&"e".repeat(15)).is_ok());
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "a\tb", &"e".repeat(16)] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cni_args_pairs() {
        assert_eq!(parse_cni_args("").unwrap(), []);
        assert_eq!(
            parse_cni_args("A=1;B=x=y;C=").unwrap(),
            [
                ("A".into(), "1".into()),
                ("B".into(), "x=y".into()),
                ("C".into(), "".into())
            ]
        );
        let e = parse_cni_args("A=1;junk").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Env);
        assert_eq!(
            e.message(),
            "invalid CNI_ARGS \"A=1;junk\": \"junk\" is not KEY=VALUE"
        );
        assert!(parse_cni_args("=v").is_err());
    }
}
