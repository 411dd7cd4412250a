//! The router's files in its data directory. Whole files are written atomically (temp file
//! in the same directory, fsync, rename, fsync of the directory) so a crash leaves the old or
//! the new version, never a torn one:
//! - `ipam.json`: peer name, range, every owner's CIDRs, the ring and the attachments: a
//!   snapshot line ([`super::file::IpamFile`]) followed by appended change records (see
//!   [`super::journal`]);
//! - `peername`: our MAC-like peer name;
//! - `targets.json`: connect targets (CNI attachments live in `ipam.json`).

use super::file::{Owned, IPAM_FILE_VERSION};
use crate::attachment::Attachment;
use crate::peer::PeerName;
use crate::{Context, Error, ErrorKind, Result};
use ipnet::Ipv4Net;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("create temp file in {}", dir.display()))?;
    // Through the File: NamedTempFile's own Write repeats the path in its errors.
    tmp.as_file_mut()
        .write_all(bytes)
        .with_context(|| format!("write {}", tmp.path().display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("fsync {}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| Error::from(e.error))
        .with_context(|| format!("rename to {}", path.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync {}", dir.display()))
}

/// Reads and decodes a JSON file; `Ok(None)` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .with_context(|| format!("decode {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::from(e).context(format!("read {}", path.display()))),
    }
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).context("encode json")?;
    write_atomic(path, &bytes)
}

/// What `ipam.json` holds besides its header.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Persisted {
    pub owned: Owned,
    pub attachments: Vec<Attachment>,
    /// [`crate::ipam::ring::Allocator::persist`] bytes, if the file has them.
    pub allocator: Option<Vec<u8>>,
}

/// Paths of the router's files in one data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    dir: PathBuf,
}

impl DataDir {
    /// Creates the directory if needed.
    pub fn open(dir: impl Into<PathBuf>) -> Result<DataDir> {
        let dir = dir.into();
        fs::create_dir_all(&dir).with_context(|| format!("create data dir {}", dir.display()))?;
        Ok(DataDir { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn ipam_path(&self) -> PathBuf {
        self.dir.join("ipam.json")
    }

    pub fn targets_path(&self) -> PathBuf {
        self.dir.join("targets.json")
    }

    pub fn pid_path(&self) -> PathBuf {
        self.dir.join("weaver.pid")
    }

    /// Loads persisted ownership. Data for another peer name or another range is discarded
    /// (as Weave does), with the reason, so the caller can log it.
    /// The persisted allocations and attachments, and why they were discarded if they were.
    pub fn load_ipam(&self, peername: &str, range: Ipv4Net) -> Result<(Persisted, Option<String>)> {
        let path = self.ipam_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Persisted::default(), None))
            }
            Err(e) => return Err(Error::from(e).context(format!("read {}", path.display()))),
        };
        let replayed = super::journal::replay(&bytes, &path.display().to_string())?;
        if replayed.torn {
            tracing::warn!(
                "{}: dropped a torn last record (a write the router died in)",
                path.display()
            );
        }
        tracing::debug!("{}: {} records replayed", path.display(), replayed.records);
        let file = replayed.file;
        if file.version != IPAM_FILE_VERSION {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "load {}: unsupported version {}",
                    path.display(),
                    file.version
                ),
            ));
        }
        let discard = if file.peername != peername {
            Some(format!(
                "peer name changed from {} to {peername}",
                file.peername
            ))
        } else if file.range != range {
            Some(format!("range changed from {} to {range}", file.range))
        } else {
            None
        };
        match discard {
            Some(why) => Ok((
                Persisted::default(),
                Some(format!("discarding persisted IPAM data: {why}")),
            )),
            None => Ok((
                Persisted {
                    owned: file.owned,
                    attachments: file.attachments,
                    allocator: file
                        .allocator
                        .map(|v| serde_json::to_vec(&v).expect("json value serialises")),
                },
                None,
            )),
        }
    }

    /// Encodes the whole multi-host IPAM state as one snapshot line: every id's CIDRs
    /// (including claims outside the range), the allocator's own state and the attachments.
    pub fn encode_ipam(
        peername: &str,
        range: Ipv4Net,
        owned: &Owned,
        allocator: &[u8],
        attachments: &[&Attachment],
    ) -> Result<Vec<u8>> {
        #[derive(Serialize)]
        struct Borrowed<'a> {
            version: u32,
            peername: &'a str,
            range: Ipv4Net,
            owned: &'a Owned,
            attachments: &'a [&'a Attachment],
            allocator: &'a serde_json::value::RawValue,
        }
        // Embedded as is (checked, not re-parsed into a tree): this runs on every allocation.
        let allocator: &serde_json::value::RawValue =
            serde_json::from_slice(allocator).context("decode allocator state")?;
        let doc = Borrowed {
            version: IPAM_FILE_VERSION,
            peername,
            range,
            owned,
            attachments,
            allocator,
        };
        let mut line = serde_json::to_vec(&doc).context("encode ipam state")?;
        line.push(b'\n');
        Ok(line)
    }

    /// Replaces `ipam.json` (snapshot and records) with bytes from [`DataDir::encode_ipam`],
    /// atomically.
    pub fn write_ipam(&self, bytes: &[u8]) -> Result<()> {
        write_atomic(&self.ipam_path(), bytes).context("save ipam state")
    }

    /// The peer name: `requested` if given (and then remembered), else the stored one, else a
    /// new random MAC-like name with the locally-administered bit set.
    pub fn peer_name(&self, requested: Option<&str>) -> Result<String> {
        let path = self.dir.join("peername");
        let stored = match fs::read_to_string(&path) {
            Ok(s) => Some(s.trim().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::from(e).context(format!("read {}", path.display()))),
        };
        let name = match requested {
            Some(r) => parse_peer_name(r)?,
            None => match stored.as_deref().map(parse_peer_name) {
                Some(Ok(n)) => n,
                _ => random_peer_name(),
            },
        };
        if stored.as_deref() != Some(name.as_str()) {
            write_atomic(&path, format!("{name}\n").as_bytes()).context("save peer name")?;
        }
        Ok(name)
    }
}

/// Accepts `aa:bb:cc:dd:ee:ff` (any case); returns it lowercased.
pub fn parse_peer_name(s: &str) -> Result<String> {
    s.parse::<PeerName>().map(|p| p.to_string())
}

/// A random unicast MAC with the locally-administered bit.
pub fn random_peer_name() -> String {
    PeerName::random().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipam_round_trip_and_discard_rules() {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::open(tmp.path().join("d")).unwrap();
        let range: Ipv4Net = "10.32.0.0/12".parse().unwrap();
        let mut owned = Owned::new();
        owned.insert("c1".into(), vec!["10.32.0.1/12".parse().unwrap()]);
        owned.insert("10.32.9.9".into(), vec!["10.32.9.9/12".parse().unwrap()]);
        let att = Attachment {
            container_id: "c1".into(),
            ifname: "eth0".into(),
            host_veth: "vethwepl0000001".into(),
            mac: "0e:57:0a:20:00:01".into(),
            ips: vec!["10.32.0.1/12".into()],
            netns: "/var/run/netns/x".into(),
            ipam_id: "c1".into(),
        };
        let bytes =
            DataDir::encode_ipam("02:00:00:00:00:01", range, &owned, b"{}", &[&att]).unwrap();
        dd.write_ipam(&bytes).unwrap();
        let (p, why) = dd.load_ipam("02:00:00:00:00:01", range).unwrap();
        assert_eq!(p.owned, owned);
        assert_eq!(p.attachments, vec![att]);
        assert!(why.is_none());
        let (p, why) = dd.load_ipam("02:00:00:00:00:02", range).unwrap();
        assert!(p.owned.is_empty() && p.attachments.is_empty());
        assert!(why.unwrap().contains("peer name changed"));
        let (p, why) = dd
            .load_ipam("02:00:00:00:00:01", "10.0.0.0/8".parse().unwrap())
            .unwrap();
        assert!(p.owned.is_empty() && why.unwrap().contains("range changed"));
        // No temp files are left behind.
        let names: Vec<_> = fs::read_dir(dd.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ipam.json")]);
    }

    #[test]
    fn failed_write_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::open(tmp.path()).unwrap();
        // A non-empty directory where the file should be makes the rename fail.
        fs::create_dir_all(dd.ipam_path().join("x")).unwrap();
        let e = dd.write_ipam(b"{}").unwrap_err();
        assert!(
            e.to_string().starts_with("save ipam state: rename to"),
            "{e}"
        );
    }

    #[test]
    fn peer_name_is_stable_and_overridable() {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::open(tmp.path()).unwrap();
        let a = dd.peer_name(None).unwrap();
        assert_eq!(parse_peer_name(&a).unwrap(), a);
        assert_eq!(u8::from_str_radix(&a[..2], 16).unwrap() & 0x03, 0x02, "{a}");
        assert_eq!(dd.peer_name(None).unwrap(), a);
        assert_eq!(
            dd.peer_name(Some("AA:BB:CC:DD:EE:FF")).unwrap(),
            "aa:bb:cc:dd:ee:ff"
        );
        assert_eq!(dd.peer_name(None).unwrap(), "aa:bb:cc:dd:ee:ff");
        assert!(dd.peer_name(Some("nope")).is_err());
        assert!(parse_peer_name("aa:bb:cc:dd:ee").is_err());
    }

    #[test]
    fn read_json_missing_is_none() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(read_json::<Vec<String>>(&tmp.path().join("none"))
            .unwrap()
            .is_none());
        write_json(&tmp.path().join("t.json"), &vec!["a".to_string()]).unwrap();
        assert_eq!(
            read_json::<Vec<String>>(&tmp.path().join("t.json"))
                .unwrap()
                .unwrap(),
            vec!["a"]
        );
    }
}
