//! `ipam.json` as a journal: one snapshot line (the whole state, written atomically by
//! `super::store::write_atomic`) followed by change records, one JSON object per line, each
//! appended with a single `fdatasync`. Rewriting the whole file on every allocation cost a
//! temp file, two fsyncs, a rename and a re-encode of everything; an append costs one write
//! and one data sync, shared by every request of a batch (group commit).
//!
//! A record holds what a batch changed: the ring and election state (when it changed; it is
//! small whatever the number of containers), each id whose addresses changed and each
//! attachment that changed, `null` for removed ones. Every record carries a CRC-32 of its
//! body. Replay applies complete records in order; a last line that is incomplete or fails
//! its check is a torn append (the process died while writing it, so nobody was told it
//! succeeded) and is dropped. A bad record followed by more records is corruption: refused,
//! since dropping acknowledged records could hand an address out twice.
//!
//! The writer never appends after a failed append: the next write is a snapshot, which
//! replaces the file and so any torn tail. The snapshot is rewritten (compaction) when the
//! records outgrow it, and is the first write after every start.

use super::file::{IpamFile, Owned};
use crate::attachment::{Attachment, AttachmentKey};
use crate::{Context, Error, ErrorKind, Result};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Records are appended until they amount to this much, or to [`COMPACT_FACTOR`] times the
/// snapshot if that is more; then the next write is a snapshot.
pub const COMPACT_MIN_BYTES: u64 = 1 << 20;
pub const COMPACT_FACTOR: u64 = 4;

/// CRC-32 (IEEE) of a record's body.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// The state as the file last made it durable.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Saved {
    /// [`crate::ipam::ring::Allocator::persist_without_addresses`] bytes.
    pub ring: Vec<u8>,
    pub owned: Owned,
    pub attachments: BTreeMap<AttachmentKey, Attachment>,
}

/// What one batch changed; `None` values are removals.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Delta {
    pub ring: Option<Vec<u8>>,
    pub owned: BTreeMap<String, Option<Vec<Ipv4Net>>>,
    pub attachments: Vec<(AttachmentKey, Option<Attachment>)>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.ring.is_none() && self.owned.is_empty() && self.attachments.is_empty()
    }

    /// The record line, newline included.
    pub fn encode(&self) -> Result<Vec<u8>> {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            ring: Option<&'a RawValue>,
            owned: &'a BTreeMap<String, Option<Vec<Ipv4Net>>>,
            att: Vec<(&'a str, &'a str, Option<&'a Attachment>)>,
        }
        let ring = match &self.ring {
            Some(r) => Some(serde_json::from_slice::<&RawValue>(r).context("decode ring state")?),
            None => None,
        };
        let body = Body {
            ring,
            owned: &self.owned,
            att: self
                .attachments
                .iter()
                .map(|((c, i), a)| (c.as_str(), i.as_str(), a.as_ref()))
                .collect(),
        };
        let body = serde_json::to_vec(&body).context("encode ipam record")?;
        let mut line = Vec::with_capacity(body.len() + 32);
        write!(line, "{{\"crc\":{},\"rec\":", crc32(&body)).expect("write to vec");
        line.extend_from_slice(&body);
        line.extend_from_slice(b"}\n");
        Ok(line)
    }
}

/// The changes from `old` to `new`, walking both maps in key order.
fn diff_maps<K: Ord + Clone, V: PartialEq + Clone>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    mut out: impl FnMut(K, Option<V>),
) {
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (o.peek(), n.peek()) {
            (None, None) => return,
            (Some((ok, _)), None) => {
                out((*ok).clone(), None);
                o.next();
            }
            (None, Some((nk, nv))) => {
                out((*nk).clone(), Some((*nv).clone()));
                n.next();
            }
            (Some((ok, ov)), Some((nk, nv))) => match ok.cmp(nk) {
                std::cmp::Ordering::Less => {
                    out((*ok).clone(), None);
                    o.next();
                }
                std::cmp::Ordering::Greater => {
                    out((*nk).clone(), Some((*nv).clone()));
                    n.next();
                }
                std::cmp::Ordering::Equal => {
                    if ov != nv {
                        out((*nk).clone(), Some((*nv).clone()));
                    }
                    o.next();
                    n.next();
                }
            },
        }
    }
}

/// The whole-state comparison of `old` and `new` (tests and tools; the actor knows what a
/// batch changed and calls [`Journal::delta`]).
pub fn diff(old: &Saved, new: &Saved) -> Delta {
    let mut d = Delta {
        ring: (new.ring != old.ring).then(|| new.ring.clone()),
        ..Delta::default()
    };
    diff_maps(&old.owned, &new.owned, |k, v| {
        d.owned.insert(k, v);
    });
    diff_maps(&old.attachments, &new.attachments, |k, v| {
        d.attachments.push((k, v))
    });
    d
}

/// The writer's bookkeeping: the ring state on disk and whether the next write may be an
/// append. It keeps no copy of the allocations and attachments (that copy cost the router
/// about 1 KB per attachment): the caller's tracked maps say what a batch really changed.
#[derive(Debug)]
pub struct Journal {
    /// [`Saved::ring`] as the file last made it durable.
    ring: Vec<u8>,
    /// Record bytes appended since the last snapshot.
    appended: u64,
    snapshot_len: u64,
    /// No snapshot written by this process yet, or an append failed.
    needs_snapshot: bool,
}

impl Journal {
    /// Starts from the ring state as loaded; the first write will be a snapshot.
    pub fn new(ring: Vec<u8>) -> Journal {
        Journal {
            ring,
            appended: 0,
            snapshot_len: 0,
            needs_snapshot: true,
        }
    }

    /// What a batch changed: the ring state now (left out when unchanged), and the ids and
    /// attachment keys whose values changed, with their values now (`None`: gone). Costs
    /// what the batch changed.
    pub fn delta(
        &self,
        ring: &[u8],
        owned: impl IntoIterator<Item = (String, Option<Vec<Ipv4Net>>)>,
        attachments: impl IntoIterator<Item = (AttachmentKey, Option<Attachment>)>,
    ) -> Delta {
        Delta {
            ring: (ring != self.ring.as_slice()).then(|| ring.to_vec()),
            owned: owned.into_iter().collect(),
            attachments: attachments.into_iter().collect(),
        }
    }

    /// The record to append for `delta`, or `None` when the next write must be a snapshot
    /// (first write, after a failed append, or compaction due).
    pub fn record(&self, delta: &Delta) -> Result<Option<Vec<u8>>> {
        if self.needs_snapshot {
            return Ok(None);
        }
        let line = delta.encode()?;
        let limit = COMPACT_MIN_BYTES.max(COMPACT_FACTOR * self.snapshot_len);
        Ok((self.appended + line.len() as u64 <= limit).then_some(line))
    }

    /// `delta` was appended as `len` bytes.
    pub fn appended(&mut self, delta: Delta, len: usize) {
        self.appended += len as u64;
        if let Some(r) = delta.ring {
            self.ring = r;
        }
    }

    /// An append failed: the file may end in a partial record.
    pub fn append_failed(&mut self) {
        self.needs_snapshot = true;
    }

    /// A snapshot with ring state `ring`, `len` bytes, replaced the file.
    pub fn snapshotted(&mut self, ring: Vec<u8>, len: usize) {
        self.ring = ring;
        self.snapshot_len = len as u64;
        self.appended = 0;
        self.needs_snapshot = false;
    }

    /// The ring state the file holds.
    pub fn ring(&self) -> &[u8] {
        &self.ring
    }
}

/// Appends `line` to the existing file at `path` and syncs its data (and size).
pub fn append(path: &Path, line: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("append to {}", path.display()))?;
    f.write_all(line)
        .and_then(|()| f.sync_data())
        .with_context(|| format!("append to {}", path.display()))
}

/// The file's state with its records applied, and what replay found.
#[derive(Debug)]
pub struct Replayed {
    pub file: IpamFile,
    pub records: usize,
    /// A torn last record was dropped.
    pub torn: bool,
}

#[derive(Deserialize)]
struct Line<'a> {
    crc: u32,
    #[serde(borrow)]
    rec: &'a RawValue,
}

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    ring: Option<Box<RawValue>>,
    #[serde(default)]
    owned: BTreeMap<String, Option<Vec<Ipv4Net>>>,
    #[serde(default)]
    att: Vec<(String, String, Option<Attachment>)>,
}

fn decode_record(line: &[u8]) -> std::result::Result<Body, String> {
    let l: Line = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let body = l.rec.get().as_bytes();
    let crc = crc32(body);
    if crc != l.crc {
        return Err(format!("checksum {crc} != {}", l.crc));
    }
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

/// Decodes the snapshot line of `bytes` and applies the records after it. `what` names the
/// file in errors.
pub fn replay(bytes: &[u8], what: &str) -> Result<Replayed> {
    let (first, mut rest) = match bytes.iter().position(|b| *b == b'\n') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &[][..]),
    };
    let mut file: IpamFile =
        serde_json::from_slice(first).with_context(|| format!("decode {what}"))?;
    let mut attachments: BTreeMap<AttachmentKey, Attachment> =
        std::mem::take(&mut file.attachments)
            .into_iter()
            .map(|a| ((a.container_id.clone(), a.ifname.clone()), a))
            .collect();
    let (mut records, mut torn, mut line_no) = (0, false, 1);
    while !rest.is_empty() {
        line_no += 1;
        let (line, complete, next) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], true, &rest[i + 1..]),
            None => (rest, false, &[][..]),
        };
        let body = match complete.then(|| decode_record(line)) {
            Some(Ok(b)) => b,
            bad => {
                if !next.is_empty() {
                    let why = match bad {
                        Some(Err(e)) => e,
                        _ => "incomplete".into(),
                    };
                    return Err(Error::new(
                        ErrorKind::InvalidConfig,
                        format!("load {what}: corrupt record on line {line_no} ({why}) followed by more records"),
                    ));
                }
                torn = true;
                break;
            }
        };
        if let Some(r) = body.ring {
            file.allocator =
                Some(serde_json::from_str(r.get()).with_context(|| format!("decode {what}"))?);
        }
        for (id, v) in body.owned {
            match v {
                Some(v) => file.owned.insert(id, v),
                None => file.owned.remove(&id),
            };
        }
        for (c, i, a) in body.att {
            match a {
                Some(a) => attachments.insert((c, i), a),
                None => attachments.remove(&(c, i)),
            };
        }
        records += 1;
        rest = next;
    }
    file.attachments = attachments.into_values().collect();
    if records > 0 {
        // Records carry the ring without addresses: the allocator's own address lists are
        // the ids' addresses inside the range.
        if let Some(serde_json::Value::Object(alloc)) = &mut file.allocator {
            let range = file.range;
            let owned: BTreeMap<&String, Vec<u32>> = file
                .owned
                .iter()
                .map(|(id, cidrs)| {
                    let inside = cidrs
                        .iter()
                        .filter(|c| range.contains(&c.addr()))
                        .map(|c| u32::from(c.addr()))
                        .collect::<Vec<_>>();
                    (id, inside)
                })
                .filter(|(_, a)| !a.is_empty())
                .collect();
            alloc.insert(
                "owned".into(),
                serde_json::to_value(owned).context("encode owned addresses")?,
            );
        }
    }
    Ok(Replayed {
        file,
        records,
        torn,
    })
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
